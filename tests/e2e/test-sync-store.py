#!/usr/bin/python3
"""Peer sync into a replica whose snapshots the snapshot store moved off the
pool. The base of the next transfer is the newest snapshot both sides have,
which is not the replica's newest when the source deleted that one: the
receiver then reverts its image to a snapshot that is only in its store
(regression: it failed INTERNAL "revert to ...: No such file or directory",
found by the soak with the store on). It must bring it back, revert, and
receive the new snapshot byte-identical."""
import hashlib
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
MiB = 1 << 20


def write(d, vol, off, data):
    dev = d.ctl("volume", "attach", vol)["device"]
    fd = os.open(dev, os.O_WRONLY)
    try:
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    d.ctl("volume", "detach", vol)


def snap_sha(d, vol, snap, size):
    """Through attach: a moved snapshot is brought back for it."""
    dev = d.ctl("volume", "attach", vol, "--snapshot", snap)["device"]
    try:
        with open(dev, "rb") as f:
            return hashlib.sha256(f.read(size)).hexdigest()
    finally:
        d.ctl("volume", "detach", vol, "--snapshot", snap)


def test_pull_onto_a_moved_base():
    A = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"])
    B = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0", "--resident-snapshots", "1"])
    IA, IB = A.ctl("info"), B.ctl("info")
    A.ctl("peer", "add", "b", "--address", IB["peer_address"], "--fingerprint", IB["fingerprint"])
    B.ctl("peer", "add", "a", "--address", IA["peer_address"], "--fingerprint", IA["fingerprint"])
    A.ctl("volume", "create", "v", "--size", "16M")
    A.ctl("volume", "publish", "v", "--to", "b")
    write(A, "v", 0, os.urandom(2 * MiB))
    A.ctl("snapshot", "create", "v", "--name", "s1")
    write(A, "v", 4 * MiB, os.urandom(2 * MiB))
    A.ctl("snapshot", "create", "v", "--name", "s2")
    T.check_eq(B.ctl("sync", "pull", "a", "v")["snapshots_received"], 2)
    B.ctl("store", "status", "--wait")
    T.check(not B.ctl("snapshot", "show", "v@s1")["resident"], "B's store moved s1 off the pool")
    # The source drops s2: s1 becomes the base, and B's image (s2) must go
    # back to it first.
    A.ctl("snapshot", "delete", "v@s2")
    write(A, "v", 8 * MiB, os.urandom(2 * MiB))
    s3 = A.ctl("snapshot", "create", "v", "--name", "s3")
    r = B.ctl("sync", "pull", "a", "v")
    T.check_eq(r["snapshots_received"], 1, "s3 received onto the moved base: %r" % r)
    T.check_eq(snap_sha(B, "v", "s3", 16 * MiB), snap_sha(A, "v", "s3", 16 * MiB), "B's s3")
    T.check_eq(B.ctl("snapshot", "show", s3["id"])["state"], "ready")
    T.check_eq(A.stop(), 0)
    T.check_eq(B.stop(), 0)


sys.exit(T.Tests().run([test_pull_onto_a_moved_base]))
