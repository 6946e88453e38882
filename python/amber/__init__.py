"""amber: the Python client of Amber's snapshot API, for pipeline steps and
notebooks.

A pod that mounts an Amber API volume (a CSI inline volume of driver
amber.csi.dev with attribute amber.csi.dev/api: "true") finds a socket at
its mount path (by convention /amber/api.sock, exported as $AMBER_SOCKET)
that sees only its namespace's volumes, named pvc/NAME:

    import amber
    c = amber.Client()                      # $AMBER_SOCKET or /amber/api.sock
    snaps = c.snapshot(["pvc/data", "pvc/model"],
                       labels={"pipeline": "train", "run": run_id, "step": "fit"})
    for s in c.run_snapshots(run_id):
        print(s.labels["step"], s.volume, s.id)

Errors are AmberError subclasses (NotFound, PermissionDenied, ...).
Messages come from amber_pb2, generated from proto/amber.proto; see
client.py for where it is looked up.
"""
from .client import (AmberError, Aborted, AlreadyExists, Client, DeadlineExceeded,  # noqa: F401
                     FailedPrecondition, InvalidArgument, NotFound, PermissionDenied,
                     ResourceExhausted, Snapshot, Unavailable, Unimplemented, Volume, pb)

__all__ = ["Client", "Snapshot", "Volume", "AmberError", "NotFound", "PermissionDenied",
           "AlreadyExists", "InvalidArgument", "FailedPrecondition", "Aborted",
           "Unavailable", "Unimplemented", "DeadlineExceeded", "ResourceExhausted", "pb"]
