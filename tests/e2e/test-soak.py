#!/usr/bin/python3
"""A short chaos soak in make check (tests/lib/soak.py; `make soak` runs the
long one): concurrent CSI and amberctl clients against an amberd killed
with SIGKILL at seeded random moments, invariants checked after every
restart, the snapshot store on (SOAK_RESIDENT=2 newest resident: older snapshots
are moved off the pool and read back through it). SOAK_SECONDS (default here
75) and SEED replay a run."""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc  # noqa: F401
except ImportError:
    T.skip("python3-grpcio is not installed")
if not shutil.which("mkfs.btrfs"):
    T.skip("mkfs.btrfs is missing")
T.genproto()
import soak  # noqa: E402

sys.exit(soak.main(75))
