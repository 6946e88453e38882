"""amber: the Python client of Amber's snapshot API, for pipeline steps and
notebooks.

A pod that mounts an Amber API volume (a CSI inline volume of driver
amber.csi.dev with attribute amber.csi.dev/api: "true") finds a socket at
its mount path (by convention /amber/api.sock, exported as $AMBER_SOCKET)
that sees only its namespace's volumes, named pvc/NAME:

    import amber

    @amber.step(volumes=["pvc/data", "pvc/model"])     # start/end snapshots
    def train(): ...

    c = amber.Client()                       # $AMBER_SOCKET or /amber/api.sock
    c.snapshot(["pvc/data", "pvc/model"], labels={"run": run_id, "step": "fit"})
    amber.history_rows("pvc/data")           # a table for pandas
    print(amber.restore_manifest("pvc/data@before", pvc="data-restored"))

Errors are AmberError subclasses (NotFound, PermissionDenied, ...). The
messages are amber.pb (amber_pb2, generated at build time)."""
from ._pb import pb  # noqa: F401
from .client import (AmberError, Aborted, AlreadyExists, Client, DeadlineExceeded,  # noqa: F401
                     FailedPrecondition, HistoryEntry, Info, InvalidArgument, NotFound,
                     PermissionDenied, ResourceExhausted, Snapshot, Unavailable, Unimplemented,
                     Volume)
from .notebook import (Change, changed_files, diff_snapshots, history_rows,  # noqa: F401
                       history_table, k8s_manifest, mounted, restore_manifest)
from .step import Provenance, step  # noqa: F401

try:
    from importlib.metadata import PackageNotFoundError, version as _version
    try:
        __version__ = _version("amber-client")
    except PackageNotFoundError:
        __version__ = "0+source"
except ImportError:  # pragma: no cover
    __version__ = "0+source"

__all__ = ["Client", "Snapshot", "Volume", "HistoryEntry", "Info", "AmberError", "NotFound",
           "PermissionDenied", "AlreadyExists", "InvalidArgument", "FailedPrecondition", "Aborted",
           "Unavailable", "Unimplemented", "DeadlineExceeded", "ResourceExhausted", "pb",
           "step", "Provenance", "history_rows", "history_table", "changed_files", "Change",
           "diff_snapshots", "mounted", "k8s_manifest", "restore_manifest"]
