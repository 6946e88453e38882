#!/usr/bin/python3
"""amberd end to end, on real loop-mounted btrfs and XFS pools, through
amberctl and the gRPC API: exact changed extents, clones, 1000 snapshots,
snapshots under a verifying fio writer, crash injection at every step of
every operation, and bad input."""
import hashlib
import mmap
import os
import shutil
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
for tool in ("mkfs.btrfs", "mkfs.xfs", "losetup"):
    if not shutil.which(tool):
        T.skip("%s is missing" % tool)

MiB = 1 << 20
T.genproto()


def pwrite_direct(dev, off, data):
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, len(data))
        buf.write(data)
        os.pwritev(fd, [buf], off)
    finally:
        os.close(fd)


def pread_direct(dev, off, n):
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, n)
        os.preadv(fd, [buf], off)
        return bytes(buf)
    finally:
        os.close(fd)


def sha_dev(dev, size):
    h = hashlib.sha256()
    fd = os.open(dev, os.O_RDONLY)
    try:
        off = 0
        while off < size:
            b = os.pread(fd, min(8 * MiB, size - off), off)
            if not b:
                break
            h.update(b)
            off += len(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def covered(extents, off, length):
    """True if [off, off+length) lies within the union of extents."""
    end = off + length
    for e in sorted(extents, key=lambda e: e["offset"]):
        if e["offset"] <= off < e["offset"] + e["length"]:
            off = e["offset"] + e["length"]
            if off >= end:
                return True
    return off >= end


def overlaps(extents, off, length):
    return any(e["offset"] < off + length and off < e["offset"] + e["length"] for e in extents)


def diff_and_clone(d):
    size = 256 * MiB
    d.ctl("volume", "create", "v", "--size", "256M")
    dev = d.ctl("volume", "attach", "v")["device"]
    first = [(1 * MiB, 64 * 1024), (100 * MiB, 4096), (200 * MiB + 8192, 12288)]
    data1 = {}
    for off, n in first:
        data1[off] = os.urandom(n)
        pwrite_direct(dev, off, data1[off])
    s1 = d.ctl("snapshot", "create", "v", "--name", "s1", "--label", "step=1")
    T.check_eq(s1["labels"], {"step": "1"})
    second = [(5 * MiB, 4096), (150 * MiB, 128 * 1024), (100 * MiB, 4096)]
    for off, n in second:
        pwrite_direct(dev, off, os.urandom(n))
    s2 = d.ctl("snapshot", "create", "v", "--name", "s2")
    T.check_eq(s2["parent"], s1["id"], "parent of s2")
    diff = d.ctl("snapshot", "diff", "s1", "s2")
    ext = diff["extents"]
    for off, n in second:
        T.check(covered(ext, off, n), "diff misses the write at %d+%d: %r" % (off, n, ext))
    for off, n in first:
        if (off, n) not in second and not any(o == off for o, _ in second):
            T.check(not overlaps(ext, off, n), "diff reports unchanged range %d+%d" % (off, n))
    exact = sum(n for _, n in second)
    T.check(diff["changed_bytes"] <= exact + 2 * MiB,
            "diff reports %d bytes for %d changed" % (diff["changed_bytes"], exact))
    print("  %s diff: %d bytes reported for %d written (%s)" % (d.fs, diff["changed_bytes"], exact, diff["method"]))
    # The live volume against s2.
    pwrite_direct(dev, 7 * MiB, os.urandom(8192))
    live = d.ctl("snapshot", "diff", "v@s2")["extents"]
    T.check(covered(live, 7 * MiB, 8192), "live diff misses a write")
    T.check(not overlaps(live, 150 * MiB, 128 * 1024), "live diff reports s2's write")

    # A clone of s1 reads back s1's bytes, then lives on its own.
    d.ctl("volume", "create", "c1", "--from", "v@s1")
    cdev = d.ctl("volume", "attach", "c1")["device"]
    for off, n in first:
        T.check(pread_direct(cdev, off, n) == data1[off], "clone differs at %d" % off)
    sdev = d.ctl("volume", "attach", "v", "--snapshot", "s1")["device"]
    T.check_eq(sha_dev(cdev, size), sha_dev(sdev, size), "clone vs snapshot checksum")
    d.ctl("volume", "detach", "v", "--snapshot", "s1")
    before_live = pread_direct(dev, 1 * MiB, 4096)
    pwrite_direct(cdev, 1 * MiB, b"\x5a" * 4096)
    T.check_eq(pread_direct(dev, 1 * MiB, 4096), before_live, "a clone write reached the volume")
    pwrite_direct(dev, 2 * MiB, b"\xa5" * 4096)
    T.check(pread_direct(cdev, 2 * MiB, 4096) != b"\xa5" * 4096, "a volume write reached the clone")
    # Revert v to s1 (detached only).
    d.ctl_fail("FAILED_PRECONDITION", "volume", "revert", "v", "--to", "s1")
    d.ctl("volume", "detach", "v")
    d.ctl("volume", "revert", "v", "--to", "s1")
    dev = d.ctl("volume", "attach", "v")["device"]
    for off, n in first:
        T.check(pread_direct(dev, off, n) == data1[off], "revert: differs at %d" % off)
    T.check(pread_direct(dev, 150 * MiB, 4096) == b"\0" * 4096, "revert kept a later write")
    for v in ("v", "c1"):
        d.ctl("volume", "detach", v)
    T.check_eq(d.stop(), 0, "graceful stop")
    T.check(not T._loops_backed_under(d.dir), "loop devices left after stop")


def test_btrfs_diff_clone_revert():
    diff_and_clone(T.Amberd("btrfs"))


def test_xfs_diff_clone_revert():
    d = T.Amberd("xfs")
    T.check("XFS backend" in d.log(), "no XFS warning in the log")
    T.check_eq(d.ctl("info")["backend"], "xfs")
    diff_and_clone(d)


def test_1000_snapshots():
    import grpc
    import amber_pb2 as pb
    # The pool's own snapshots, counted on disk: the store would move them.
    d = T.Amberd("btrfs", extra=["--store-off"])
    d.ctl("volume", "create", "v", "--size", "64M")
    st = T.Stub(d.channel(), "amber.v1.Amber", pb)
    create = st.unary("CreateSnapshot", pb.CreateSnapshotRequest, pb.Snapshot)
    delete = st.unary("DeleteSnapshot", pb.SnapshotRef, pb.Empty)
    ids = [create(pb.CreateSnapshotRequest(volume="v", name="s%04d" % i), timeout=30).id for i in range(1000)]
    snaps = d.ctl("snapshot", "list", "--volume", "v")
    T.check_eq(len(snaps), 1000)
    T.check_eq(d.ctl("info")["snapshots"], 1000, "info counts the pool's snapshots")
    by = {s["id"]: s for s in snaps}
    for i in range(1, 1000):
        T.check_eq(by[ids[i]]["parent"], ids[i - 1], "parent chain")
    vols, disk = d.disk_ids()
    T.check_eq(len(disk[vols[0]]), 1000, "snapshots on disk")
    for i in ids:
        delete(pb.SnapshotRef(snapshot=i), timeout=30)
    T.check_eq(d.ctl("snapshot", "list", "--volume", "v"), [])
    T.check_eq(d.disk_ids()[1].get(vols[0], []), [], "snapshots left on disk")
    T.expect_status(grpc.StatusCode.NOT_FOUND, delete, pb.SnapshotRef(snapshot=ids[0]), timeout=60)
    d.ctl("volume", "delete", "v")
    T.check(vols[0] not in d.disk_ids()[1], "an empty snapshot directory outlived its volume")
    T.check_eq(d.stop(), 0)


def test_snapshots_under_verifying_fio():
    if not shutil.which("fio"):
        T.skip("fio is missing")
    d = T.Amberd("btrfs")
    d.ctl("volume", "create", "v", "--size", "128M")
    dev = d.ctl("volume", "attach", "v")["device"]
    stop = threading.Event()
    fio_pass = [0]          # the fio pass running now (0: none)
    taken = []              # snapshots made wholly within one fio pass
    errors = []

    def snapper():
        i = 0
        while not stop.is_set():
            before = fio_pass[0]
            try:
                sid = d.ctl("snapshot", "create", "v", "--name", "f%d" % i)["id"]
            except Exception as e:  # noqa: BLE001
                errors.append(e)
                return
            if before and fio_pass[0] == before:
                taken.append(sid)
            i += 1
    t = threading.Thread(target=snapper)
    t.start()
    # fio passes (each writing and verifying) until 3 snapshots landed while
    # one ran: a fast machine runs more passes, never fewer snapshots.
    try:
        for n in range(1, 31):
            fio_pass[0] = n
            p = subprocess.run(["fio", "--name=w", "--filename=" + dev, "--rw=randwrite", "--bs=4k",
                                "--size=64M", "--direct=1", "--ioengine=io_uring", "--iodepth=16",
                                "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                                "--verify_state_save=0", "--randseed=%d" % n,
                                "--output-format=terse"], capture_output=True, text=True, timeout=300)
            fio_pass[0] = 0
            if p.returncode != 0 or len(taken) >= 3 or errors:
                break
    finally:
        stop.set()
        t.join()
    T.check_eq(p.returncode, 0, "fio (with verification) failed: " + p.stderr[-2000:])
    T.check(not errors, "snapshot failed under load: %r" % errors)
    T.check(len(taken) >= 3, "only %d snapshots taken during fio" % len(taken))
    print("  %d snapshots while fio wrote and verified" % len(taken))
    last = d.ctl("snapshot", "create", "v", "--name", "after")
    sdev = d.ctl("volume", "attach", "v", "--snapshot", last["id"])["device"]
    T.check_eq(sha_dev(sdev, 128 * MiB), sha_dev(dev, 128 * MiB), "snapshot after fio vs live")
    d.ctl("volume", "detach", "v", "--snapshot", last["id"])
    d.ctl("volume", "detach", "v")
    T.check_eq(d.stop(), 0)


def consistent(d):
    """Catalog and disk name the same volumes and snapshots, no leftovers."""
    vols = d.ctl("volume", "list")
    snaps = d.ctl("snapshot", "list")
    dvols, dsnaps = d.disk_ids()
    T.check_eq(sorted(v["id"] for v in vols), dvols, "volumes: catalog vs disk")
    for v in vols:
        T.check_eq(v["state"], "ready", "volume state after recovery")
    want = {}
    for s in snaps:
        T.check_eq(s["state"], "ready", "snapshot state after recovery")
        want.setdefault(s["volume_id"], []).append(s["id"])
    got = {k: v for k, v in dsnaps.items() if v}
    T.check_eq({k: sorted(v) for k, v in want.items()}, got, "snapshots: catalog vs disk")
    hidden = [x for x in os.listdir(os.path.join(d.pool, "vols")) if x.startswith(".")]
    T.check_eq(hidden, [], "work in progress left in vols/")
    for v in vols:
        img = os.path.join(d.pool, "vols", v["id"], "disk")
        T.check_eq(os.path.getsize(img), v["size_bytes"], "image size of " + v["name"])


def test_crash_injection_every_step():
    d = T.Amberd("btrfs")
    d.ctl("volume", "create", "keep", "--size", "32M")
    dev = d.ctl("volume", "attach", "keep")["device"]
    kept = os.urandom(MiB)
    pwrite_direct(dev, 3 * MiB, kept)
    d.ctl("snapshot", "create", "keep", "--name", "keep-s")
    pwrite_direct(dev, 3 * MiB, os.urandom(MiB))
    d.ctl("volume", "detach", "keep")

    def crash(point, *args):
        d.stop()
        d.start({"AMBER_CRASH_AT": point})
        proc = d.proc
        p = d.ctl(*args, check=False)
        proc.wait(timeout=30)
        T.check_eq(proc.returncode, -9, "%s: the daemon was not killed at the point" % point)
        T.check(p.returncode != 0, "%s: %s succeeded though the daemon died" % (point, args))
        d.proc = None
        os.path.exists(d.sock) and os.unlink(d.sock)
        d.start()
        consistent(d)
        # What was acknowledged before is intact.
        s = d.ctl("snapshot", "show", "keep@keep-s")
        sdev = d.ctl("volume", "attach", "keep", "--snapshot", s["id"])["device"]
        T.check(pread_direct(sdev, 3 * MiB, MiB) == kept, "%s: acknowledged snapshot data lost" % point)
        d.ctl("volume", "detach", "keep", "--snapshot", s["id"])

    names = lambda: sorted(v["name"] for v in d.ctl("volume", "list"))  # noqa: E731
    snapnames = lambda: sorted(s["name"] for s in d.ctl("snapshot", "list", "--volume", "keep"))  # noqa: E731

    for point in ("volume-create:intent", "volume-create:pool"):
        crash(point, "volume", "create", "x", "--size", "16M")
        T.check_eq(names(), ["keep"], point + ": half-created volume left")
        d.ctl("volume", "create", "x", "--size", "16M")      # the retry works
        d.ctl("volume", "delete", "x")
    crash("volume-create:done", "volume", "create", "x", "--size", "16M")
    T.check_eq(names(), ["keep", "x"], "volume-create:done: committed volume lost")
    for point in ("volume-delete:intent", "volume-delete:pool"):
        crash(point, "volume", "delete", "x")
        T.check_eq(names(), ["keep"], point + ": delete not finished")
        d.ctl("volume", "create", "x", "--size", "16M")
    for point in ("volume-resize:intent", "volume-resize:pool"):
        crash(point, "volume", "resize", "x", "--size", "24M")
        T.check(d.ctl("volume", "show", "x")["size_bytes"] in (16 * MiB, 24 * MiB), point)
    d.ctl("volume", "delete", "x")
    for point in ("snapshot-create:intent", "snapshot-create:pool-one", "snapshot-create:pool"):
        crash(point, "snapshot", "create", "keep", "--name", "sx")
        T.check_eq(snapnames(), ["keep-s"], point + ": half-made snapshot left")
    crash("snapshot-create:done", "snapshot", "create", "keep", "--name", "sx")
    T.check_eq(snapnames(), ["keep-s", "sx"], "snapshot-create:done: committed snapshot lost")
    for point in ("snapshot-delete:intent", "snapshot-delete:pool"):
        crash(point, "snapshot", "delete", "keep@sx")
        T.check_eq(snapnames(), ["keep-s"], point + ": delete not finished")
        d.ctl("snapshot", "create", "keep", "--name", "sx")
    for point in ("volume-revert:intent", "volume-revert:pool"):
        crash(point, "volume", "revert", "keep", "--to", "keep-s")
    T.check_eq(d.stop(), 0)


def test_bad_input_changes_nothing():
    d = T.Amberd("btrfs", size="1G")
    d.ctl("volume", "create", "a", "--size", "16M")
    before = d.ctl("volume", "list")
    cases = [
        ("NOT_FOUND", "volume", "show", "nope"),
        ("NOT_FOUND", "volume", "delete", "nope"),
        ("NOT_FOUND", "snapshot", "show", "nope"),
        ("NOT_FOUND", "snapshot", "create", "nope"),
        ("NOT_FOUND", "volume", "create", "b", "--from", "nope"),
        ("ALREADY_EXISTS", "volume", "create", "a", "--size", "32M"),
        ("INVALID_ARGUMENT", "volume", "create", "b", "--size", "1000"),
        ("OUT_OF_RANGE", "volume", "create", "b", "--size", "1P"),
        ("INVALID_ARGUMENT", "volume", "create", "a/b", "--size", "16M"),
        ("INVALID_ARGUMENT", "volume", "create", "..", "--size", "16M"),
        ("INVALID_ARGUMENT", "volume", "create", "x" * 300, "--size", "16M"),
        ("INVALID_ARGUMENT", "snapshot", "create", "a", "--name", "../x"),
        ("RESOURCE_EXHAUSTED", "volume", "create", "huge", "--size", "2G"),
        ("OUT_OF_RANGE", "volume", "resize", "a", "--size", "8M"),
    ]
    for code, *args in cases:
        msg = d.ctl_fail(code, *args)
        T.check(len(msg.strip()) > len(code) + 12, "unclear error for %s: %r" % (args, msg))
    T.check_eq(d.ctl("volume", "list"), before, "bad input changed the volume list")
    T.check_eq(d.ctl("snapshot", "list"), [], "bad input made a snapshot")
    # The same create twice is one volume (idempotent).
    T.check_eq(d.ctl("volume", "create", "a", "--size", "16M")["id"], before[0]["id"])
    d.ctl("volume", "attach", "a")
    d.ctl_fail("FAILED_PRECONDITION", "volume", "delete", "a")
    T.check_eq(len(d.ctl("volume", "list")), 1)
    d.ctl("volume", "detach", "a")
    # usage errors: exit 2 with help, no call made
    p = d.ctl("volume", "create", check=False)
    T.check_eq(p.returncode, 2)
    p = d.ctl("volume", "create", "z", "--size", "ten", check=False)
    T.check_eq(p.returncode, 2)
    # A second amberd on the same pool is refused.
    p = subprocess.run([os.path.join(T.BUILD, "amberd"), "--pool", d.pool, "--socket",
                        os.path.join(d.dir, "second.sock")], capture_output=True, text=True, timeout=30)
    T.check(p.returncode != 0 and "in use" in p.stderr, "second daemon: %r" % p.stderr)
    T.check_eq(d.stop(), 0)


def test_info_json_and_help():
    d = T.Amberd("btrfs", size="1G")
    info = d.ctl("info")
    T.check(info["version"] and info["backend"] == "btrfs" and info["pool_total_bytes"] >= 1 << 30, info)
    for prog in ("amberd", "amberctl"):
        p = subprocess.run([os.path.join(T.BUILD, prog), "--help"], capture_output=True, text=True)
        T.check(p.returncode == 0 and "Usage" in p.stdout and len(p.stdout) > 500, prog + " --help")
    T.check_eq(d.stop(), 0)


def test_prometheus_metrics():
    import socket
    import urllib.request
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    d = T.Amberd("btrfs", size="1G", extra=["--metrics-listen", "127.0.0.1:%d" % port, "--node-name", "n7"])
    d.ctl("volume", "create", "m", "--size", "16M")
    d.ctl("snapshot", "create", "m")
    body = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=60).read().decode()
    T.check("amber_volumes 1\n" in body and "amber_snapshots 1\n" in body, body)
    T.check('node="n7"' in body and "amber_pool_size_bytes 1073741824" in body, body)
    T.check_eq(d.ctl("info")["node_id"], "n7")
    T.check_eq(d.stop(), 0)



def test_delete_refused_while_a_snapshot_is_attached():
    """Found by fuzz-api: a volume deleted while one of its snapshots was
    attached left a loop device nothing could detach (the volume was gone)
    and a pool that would not unmount."""
    d = T.Amberd("btrfs", size="1G")
    d.ctl("volume", "create", "v", "--size", "8M")
    s = d.ctl("snapshot", "create", "v", "--name", "s")
    d.ctl("volume", "attach", "v", "--snapshot", s["id"])
    err = d.ctl_fail("FAILED_PRECONDITION", "volume", "delete", "v")
    T.check("attached" in err, err)
    T.check_eq([v["name"] for v in d.ctl("volume", "list")], ["v"], "the refused delete changed nothing")
    d.ctl("volume", "detach", "v", "--snapshot", s["id"])
    d.ctl("volume", "delete", "v")
    T.check_eq(T._loops_backed_under(d.pool + "/"), [], "loop devices left")
    T.check_eq(d.stop(), 0)


sys.exit(T.Tests().run([v for k, v in sorted(globals().items()) if k.startswith("test_")]))
