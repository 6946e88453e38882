#!/usr/bin/python3
"""The snapshot store (snapd/store/): history moved off the live volume.

A chain of snapshots taken while a writer runs (every write logged with
its offset and content); then every snapshot, the ones whose subvolume the
mover dropped included, cloned and compared byte for byte with what the
writer had written at that instant, and the diff between every pair (and
against the live volume) compared with the writer's log, exactly. Deleting
snapshots in the middle of the chain keeps the diffs exact. kill -9 at
every crash point of the mover and of bringing a snapshot back: nothing
acknowledged is lost, no half-moved snapshot is visible, and the state
converges after a restart. A full pool stops the mover for that snapshot
(it stays resident and readable) until room is freed. Export to a
repository and peer sync of chains that mix resident and stored
snapshots. The mover is waited for with `amberctl store status --wait`,
never by sleeping."""
import hashlib
import mmap
import os
import random
import subprocess
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")

MiB = 1 << 20
BLK = 4096
SIZE = 32 * MiB
os.environ["AMBER_REPO_PASSWORD"] = "correct horse battery staple"


class Writer:
    """Writes fresh random data at random 4 KiB-aligned places with
    O_DIRECT, logging each write; snapshot() runs between two writes, so
    its instant is an exact prefix of the log."""

    def __init__(self, d, vol, dev, seed):
        self.d, self.vol, self.dev = d, vol, dev
        self.rnd = random.Random(seed)
        self.log = []               # (offset, bytes)
        self.marks = {}             # snapshot name -> len(log) at its instant
        self.lock = threading.Lock()
        self.progress = threading.Condition()
        self.stop = threading.Event()
        self.error = None
        self.fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
        self.buf = mmap.mmap(-1, 64 * BLK)
        self.t = threading.Thread(target=self.run)

    def write_one(self):
        nblk = self.rnd.choice([1, 1, 1, 2, 3, 8, 16])
        off = self.rnd.randrange(0, SIZE // BLK - nblk) * BLK
        data = self.rnd.randbytes(nblk * BLK)
        self.buf.seek(0)
        self.buf.write(data)
        n = os.pwritev(self.fd, [memoryview(self.buf)[:len(data)]], off)
        if n != len(data):
            raise RuntimeError("short write")
        self.log.append((off, data))

    def run(self):
        try:
            while not self.stop.is_set():
                with self.lock:
                    for _ in range(8):
                        self.write_one()
                with self.progress:
                    self.progress.notify_all()
        except Exception as e:  # noqa: BLE001
            self.error = e
            with self.progress:
                self.progress.notify_all()

    def start(self):
        self.t.start()

    def wait_writes(self, n):
        """Wait until the running writer has made n more writes."""
        want = len(self.log) + n
        with self.progress:
            self.progress.wait_for(lambda: len(self.log) >= want or self.error is not None, timeout=120)

    def snapshot(self, name):
        with self.lock:
            os.fsync(self.fd)
            # No write runs while we hold the lock: this is the instant,
            # also for a snapshot whose reply a crash cut off.
            self.marks[name] = len(self.log)
            return self.d.ctl("snapshot", "create", self.vol, "--name", name)

    def finish(self):
        self.stop.set()
        if self.t.is_alive():
            self.t.join()
        os.fsync(self.fd)
        os.close(self.fd)
        T.check(self.error is None, "writer failed: %r" % self.error)

    def put(self, off, data):
        """Write DATA at OFF (4 KiB-aligned) through the O_DIRECT buffer, logged."""
        for o in range(0, len(data), len(self.buf)):
            part = data[o:o + len(self.buf)]
            self.buf.seek(0)
            self.buf.write(part)
            n = os.pwritev(self.fd, [memoryview(self.buf)[:len(part)]], off + o)
            if n != len(part):
                raise RuntimeError("short write")
            self.log.append((off + o, part))

    def discard(self, off, length):
        """Discard a range (the image gets a hole there), logged as zeros."""
        os.fsync(self.fd)
        subprocess.run(["blkdiscard", "-o", str(off), "-l", str(length), self.dev], check=True)
        self.log.append((off, bytes(length)))

    def image_at(self, n, size=SIZE):
        img = bytearray(size)
        for off, data in self.log[:n]:
            if off < size:
                img[off:min(off + len(data), size)] = data[:size - off]
        return img

    def blocks_between(self, a, b):
        """Blocks written in log[a:b] (a <= b)."""
        s = set()
        for off, data in self.log[a:b]:
            s.update(range(off // BLK, (off + len(data)) // BLK))
        return s


def sha(b):
    return hashlib.sha256(b).hexdigest()


def read_dev(dev, size=SIZE):
    with open(dev, "rb") as f:
        return f.read(size)


def blocks_of(extents):
    s = set()
    for e in extents:
        T.check(e["offset"] % BLK == 0 and e["length"] % BLK == 0, "unaligned extent %r" % e)
        s.update(range(e["offset"] // BLK, (e["offset"] + e["length"]) // BLK))
    return s


def wait_store(d):
    return d.ctl("store", "status", "--wait")


def clone_sha(d, snap, name, size=SIZE):
    d.ctl("volume", "create", name, "--from", snap)
    dev = d.ctl("volume", "attach", name)["device"]
    try:
        return sha(read_dev(dev, size))
    finally:
        d.ctl("volume", "detach", name)
        d.ctl("volume", "delete", name)


def attach_sha(d, vol, snap):
    dev = d.ctl("volume", "attach", vol, "--snapshot", snap)["device"]
    try:
        return sha(read_dev(dev))
    finally:
        d.ctl("volume", "detach", vol, "--snapshot", snap)


def attach_sha_keep(d, vol, snap, size):
    """The content of an attached snapshot (left attached)."""
    dev = d.ctl("volume", "attach", vol, "--snapshot", snap)["device"]
    return sha(read_dev(dev, size))


def resident_on_disk(d, vol_id):
    return set(d.disk_ids()[1].get(vol_id, []))


def check_store_state(d, vol, keep=2):
    """After the mover settled: every snapshot stored, the newest resident,
    none but the `keep` newest resident (a deleted newest one does not bring
    an older one back), the pool holding exactly the resident ones."""
    st = wait_store(d)
    snaps = d.ctl("snapshot", "list", "--volume", vol)
    T.check_eq(st["backlog"], 0, "snapshots left to store")
    for s in snaps:
        T.check_eq(s["state"], "ready", "state of " + s["name"])
        T.check(s["stored"], "snapshot %s not stored" % s["name"])
    newest = {s["id"] for s in snaps[-keep:]}
    got = {s["id"] for s in snaps if s["resident"]}
    T.check(got <= newest, "resident snapshots beyond the %d newest: %r" % (keep, got - newest))
    T.check(not snaps or snaps[-1]["id"] in got, "the newest snapshot is resident")
    vid = d.ctl("volume", "show", vol)["id"]
    T.check_eq(resident_on_disk(d, vid), got, "resident snapshots: catalog vs pool")
    sd = os.path.join(d.pool, "snaps", vid)
    if os.path.isdir(sd):
        T.check_eq([x for x in os.listdir(sd) if x.startswith(".")], [], "work in progress in snaps/")
    return snaps


def test_chain_clones_and_exact_diffs():
    d = T.Amberd("btrfs", size="2G", extra=["--no-defrag"])
    d.ctl("volume", "create", "v", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "v")["device"]
    w = Writer(d, "v", dev, 1)
    w.start()
    names = []
    try:
        for i in range(10):
            w.wait_writes(40)       # the writer runs between snapshots
            names.append("s%02d" % i)
            w.snapshot(names[-1])
    finally:
        w.finish()
    live_mark = len(w.log)
    T.check(live_mark > 100, "the writer wrote only %d times" % live_mark)
    snaps = check_store_state(d, "v")
    T.check_eq(sum(1 for s in snaps if not s["resident"]), 8, "snapshots moved off the pool")
    # Every snapshot, moved ones included, cloned and compared.
    for n in names:
        want = sha(w.image_at(w.marks[n]))
        T.check_eq(clone_sha(d, "v@" + n, "c-" + n), want, "clone of " + n)
    T.check_eq(sha(read_dev(dev)), sha(w.image_at(live_mark)), "the live volume")
    # Diffs between every pair, and against the live volume, exact.
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            got = blocks_of(d.ctl("snapshot", "diff", "v@" + a, "v@" + b)["extents"])
            want = w.blocks_between(w.marks[a], w.marks[b])
            T.check_eq(got, want, "diff %s..%s (%d vs %d blocks)" % (a, b, len(got), len(want)))
        got = blocks_of(d.ctl("snapshot", "diff", "v@" + a)["extents"])
        T.check_eq(got, w.blocks_between(w.marks[a], live_mark), "diff %s..live" % a)
    # Reversed order gives the same ranges.
    T.check_eq(blocks_of(d.ctl("snapshot", "diff", "v@s07", "v@s02")["extents"]),
               w.blocks_between(w.marks["s02"], w.marks["s07"]), "diff s07..s02")
    # Delete in the middle (stored ones, and a resident one): still exact.
    for n in ("s03", "s04", "s08"):
        d.ctl("snapshot", "delete", "v@" + n)
        names.remove(n)
    check_store_state(d, "v")
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            got = blocks_of(d.ctl("snapshot", "diff", "v@" + a, "v@" + b)["extents"])
            T.check_eq(got, w.blocks_between(w.marks[a], w.marks[b]), "after deletes: diff %s..%s" % (a, b))
    # Attach (and so `snapshot mount`) and revert of a moved snapshot.
    T.check_eq(attach_sha(d, "v", "s01"), sha(w.image_at(w.marks["s01"])), "attach of moved s01")
    d.ctl("volume", "detach", "v")
    d.ctl("volume", "revert", "v", "--to", "s02")
    dev = d.ctl("volume", "attach", "v")["device"]
    T.check_eq(sha(read_dev(dev)), sha(w.image_at(w.marks["s02"])), "revert to moved s02")
    d.ctl("volume", "detach", "v")
    st = check_store_state(d, "v")
    T.check(len(st) == len(names), "snapshots after revert")
    T.check_eq(d.stop(), 0)


def hydrate_counters(d):
    st = d.ctl("store", "status")
    return st["hydrated"], st["hydrate_full"], st["hydrate_union_bytes"], st["hydrate_bytes_written"]


def test_hydration_rewrites_only_the_union():
    """An old snapshot differs from the resident one it is rebuilt on by
    scattered writes, a range written with zeros, discarded ranges (holes),
    holes filled in and a grown volume: cloned byte for byte, and only the
    union of the recorded extents between the two was written, give or
    take the small gaps written with it (a hydration that rewrote
    everything, or fell back to a whole restore, fails)."""
    d = T.Amberd("btrfs", size="1G", extra=["--no-defrag"])
    big = 40 * MiB
    d.ctl("volume", "create", "u", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "u")["device"]
    w = Writer(d, "u", dev, 6)
    rnd = random.Random(6)
    for off in range(0, SIZE, MiB):     # full, but for a hole and a zeroed range
        if not 20 * MiB <= off < 22 * MiB:
            w.put(off, rnd.randbytes(MiB))
    w.put(24 * MiB, bytes(256 << 10))
    w.snapshot("u0")
    # Grown between u0 and u1: u1 is larger than u0.
    d.ctl("volume", "resize", "u", "--size", str(big))
    w.put(33 * MiB, rnd.randbytes(MiB))
    w.put(big - BLK, rnd.randbytes(BLK))
    for _ in range(30):
        w.write_one()
    w.snapshot("u1")
    wait_store(d)
    # After u1: scattered writes, the hole and the zeros filled in, zeros
    # over data, discards, the grown part written.
    for _ in range(20):
        w.write_one()
    w.put(20 * MiB + 512 * 1024, rnd.randbytes(MiB))
    w.put(24 * MiB, rnd.randbytes(128 << 10))
    w.put(4 * MiB, bytes(256 << 10))
    w.discard(10 * MiB, MiB)
    w.discard(12 * MiB + BLK, BLK)
    w.put(36 * MiB, rnd.randbytes(MiB))
    w.snapshot("u2")
    wait_store(d)
    for i in (3, 4, 5):
        for _ in range(20):
            w.write_one()
        w.snapshot("u%d" % i)
        wait_store(d)
    w.finish()
    snaps = check_store_state(d, "u")
    ids = {s["name"]: s["id"] for s in snaps}
    T.check_eq([s["name"] for s in snaps if s["resident"]], ["u4", "u5"], "resident snapshots")
    sizes = {"u0": SIZE}

    def want(n):
        return sha(w.image_at(w.marks[n], sizes.get(n, big)))

    def union(a, b, size):
        return sum(BLK for blk in w.blocks_between(w.marks[a], w.marks[b]) if blk * BLK < size)

    # u1 rebuilt on u4 (newer): the union of u2..u4's extents.
    h0 = hydrate_counters(d)
    T.check_eq(clone_sha(d, "u@u1", "c-u1", big), want("u1"), "clone of u1 (on u4)")
    h1 = hydrate_counters(d)
    T.check_eq(h1[0] - h0[0], 1, "one hydration")
    T.check_eq(h1[1] - h0[1], 0, "no whole-image restore")
    T.check_eq(h1[2] - h0[2], union("u1", "u4", big), "union u1..u4")
    # Written: the union, and the gaps of at most 16 KiB between its
    # ranges (written as one); a whole rewrite would be 40 MiB, a rewrite
    # of the pieces the changes touch over 20 MiB.
    T.check(0 < h1[3] - h0[3] <= 2 * (h1[2] - h0[2]),
            "bytes written %d near the union %d" % (h1[3] - h0[3], h1[2] - h0[2]))
    T.check(h1[2] - h0[2] < big // 4, "the union is a small part of the volume")
    T.check_eq(clone_sha(d, "u@u2", "c-u2", big), want("u2"), "clone of u2 (holes, on u4)")
    wait_store(d)
    # u0 (smaller than its base u4) attached and so kept resident; then u1
    # is rebuilt on it (older and smaller than u1): u1's extents only.
    T.check_eq(attach_sha_keep(d, "u", "u0", SIZE), want("u0"), "attached u0 (on u4)")
    h0 = hydrate_counters(d)
    T.check_eq(clone_sha(d, "u@u1", "c-u1b", big), want("u1"), "clone of u1 (on u0)")
    h1 = hydrate_counters(d)
    T.check_eq(h1[1] - h0[1], 0, "no whole-image restore")
    T.check_eq(h1[2] - h0[2], union("u0", "u1", big), "union u0..u1")
    T.check("brought snapshot u1 (%s) back from the store on snapshot %s (union)" % (ids["u1"], ids["u0"])
            in d.log(), "u1 rebuilt on the older u0")
    d.ctl("volume", "detach", "u", "--snapshot", "u0")
    d.ctl("volume", "detach", "u")
    T.check_eq(hydrate_counters(d)[1], 0, "no hydration restored a whole image")
    check_store_state(d, "u")
    T.check_eq(d.stop(), 0)


def test_history_and_retention():
    d = T.Amberd("btrfs", size="1G", extra=["--no-defrag", "--resident-snapshots", "1"])
    d.ctl("volume", "create", "h", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "h")["device"]
    w = Writer(d, "h", dev, 2)
    for i in range(6):
        for _ in range(30):
            w.write_one()
        w.snapshot("h%d" % i)
    w.finish()
    check_store_state(d, "h", keep=1)
    hist = d.ctl("volume", "history", "h")
    entries = hist if isinstance(hist, list) else hist.get("entries", hist)
    T.check_eq(len(entries), 6, "history entries")
    for k, e in enumerate(entries[1:], 1):
        want = len(w.blocks_between(w.marks["h%d" % (k - 1)], w.marks["h%d" % k])) * BLK
        T.check_eq(e["changed_bytes"], want, "history of h%d" % k)
    d.ctl("volume", "detach", "h")
    T.check_eq(d.stop(), 0)


MOVER_POINTS = ["store-move:extents", "store-move:intent", "store-move:exported",
                "store-move:recorded", "store-move:done", "store-drop:intent", "store-drop:pool",
                "store-drop:done"]
HYDRATE_POINTS = ["store-hydrate:restored", "store-hydrate:built"]


def crash_case(point, nth):
    d = T.Amberd("btrfs", size="1G", extra=["--no-defrag"], env={"AMBER_CRASH_AT": "%s#%d" % (point, nth)})
    d.ctl("volume", "create", "k", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "k")["device"]
    w = Writer(d, "k", dev, sum(point.encode()))
    acked = []
    hydrate = point.startswith("store-hydrate")
    for i in range(8):
        for _ in range(10):
            w.write_one()
        try:
            w.snapshot("k%d" % i)
            acked.append("k%d" % i)
            wait_store(d)
        except AssertionError:
            break
        if d.proc.poll() is not None:
            break
    if hydrate and d.proc.poll() is None:
        d.ctl("volume", "attach", "k", "--snapshot", "k0", check=False)
        d.ctl("volume", "attach", "k", "--snapshot", "k1", check=False)
    w.stop.set()
    try:
        os.close(w.fd)
    except OSError:
        pass
    try:
        d.proc.wait(timeout=60)     # it died (a call failed) or dies now
    except subprocess.TimeoutExpired:
        raise AssertionError("%s#%d: the daemon did not crash" % (point, nth))
    T.check(d.proc.returncode != 0, "%s#%d: the daemon did not crash" % (point, nth))
    T.check("AMBER_CRASH_AT=%s" % point in d.log(), "%s: crashed elsewhere" % point)
    d.kill()
    d.start()
    snaps = check_store_state(d, "k")
    names = [s["name"] for s in snaps]
    for n in acked:
        T.check(n in names, "%s: acknowledged snapshot %s lost" % (point, n))
    for n in names:
        want = sha(w.image_at(w.marks[n])) if n in w.marks else None
        if want:
            T.check_eq(attach_sha(d, "k", n), want, "%s: content of %s" % (point, n))
    for a, b in zip(names, names[1:]):
        got = blocks_of(d.ctl("snapshot", "diff", "k@" + a, "k@" + b)["extents"])
        T.check_eq(got, w.blocks_between(w.marks[a], w.marks[b]), "%s: diff %s..%s" % (point, a, b))
    d.ctl("volume", "detach", "k", check=False)
    T.check_eq(d.stop(), 0)


def test_crash_at_every_mover_step():
    for point in MOVER_POINTS:
        crash_case(point, 3)
        print("  %s#3: recovered" % point, flush=True)


def test_crash_while_bringing_back():
    for point in HYDRATE_POINTS:
        crash_case(point, 1)
        print("  %s#1: recovered" % point, flush=True)


def test_full_pool_during_background_copy():
    d = T.Amberd("btrfs", size="768M", extra=["--no-defrag", "--reserve", "64M"])
    d.ctl("volume", "create", "f", "--size", str(64 * MiB))
    dev = d.ctl("volume", "attach", "f")["device"]
    fd = os.open(dev, os.O_WRONLY)
    os.pwrite(fd, os.urandom(48 * MiB), 0)
    os.fsync(fd)
    os.close(fd)
    # Eat the room the store would need: leave ~24 MiB above the reserve.
    info = d.ctl("info")
    fill = (info["pool_free_bytes"] - 64 * MiB - 24 * MiB) // MiB * MiB
    T.check(fill > 0, "pool too small for the test")
    d.ctl("volume", "create", "filler", "--size", str(fill))
    fdev = d.ctl("volume", "attach", "filler")["device"]
    fd = os.open(fdev, os.O_WRONLY)
    chunk = os.urandom(8 * MiB)
    for off in range(0, fill, len(chunk)):
        os.pwrite(fd, chunk[:min(len(chunk), fill - off)], off)
    os.fsync(fd)
    os.close(fd)
    d.ctl("volume", "detach", "filler")
    d.ctl("snapshot", "create", "f", "--name", "f0")
    st = wait_store(d)
    T.check_eq(st["blocked"], 1, "the snapshot waits for room")
    T.check_eq(st["backlog"], 1, "backlog")
    s = d.ctl("snapshot", "show", "f@f0")
    T.check(s["resident"] and not s["stored"], "the snapshot stays resident and unstored")
    with open(dev, "rb") as f:
        live = sha(f.read(64 * MiB))
    sdev = d.ctl("volume", "attach", "f", "--snapshot", "f0")["device"]
    T.check_eq(sha(read_dev(sdev, 64 * MiB)), live, "the blocked snapshot reads right")
    d.ctl("volume", "detach", "f", "--snapshot", "f0")
    T.check("no room in the pool to store it" in d.log(), "the full pool is logged")
    T.check_eq(d.log().count("no room in the pool to store it"), 1, "logged once")
    # Room again (the filler's blocks discarded): the mover finishes it.
    fdev = d.ctl("volume", "attach", "filler")["device"]
    T.check_eq(subprocess.run(["blkdiscard", fdev]).returncode, 0, "blkdiscard")
    d.ctl("volume", "detach", "filler")
    st = wait_store(d)
    T.check_eq((st["blocked"], st["backlog"]), (0, 0), "stored once room came back")
    T.check(d.ctl("snapshot", "show", "f@f0")["stored"], "f0 stored")
    d.ctl("volume", "detach", "f")
    T.check_eq(d.stop(), 0)


def test_export_and_sync_of_mixed_chains():
    A = T.Amberd("btrfs", size="1G", extra=["--no-defrag", "--peer-listen", "127.0.0.1:0"])
    B = T.Amberd("btrfs", size="1G", extra=["--no-defrag", "--peer-listen", "127.0.0.1:0"])
    IA, IB = A.ctl("info"), B.ctl("info")
    A.ctl("peer", "add", "b", "--address", IB["peer_address"], "--fingerprint", IB["fingerprint"])
    B.ctl("peer", "add", "a", "--address", IA["peer_address"], "--fingerprint", IA["fingerprint"])
    A.ctl("volume", "create", "data", "--size", str(SIZE))
    A.ctl("volume", "publish", "data", "--to", "b")
    dev = A.ctl("volume", "attach", "data")["device"]
    w = Writer(A, "data", dev, 3)
    names = []
    for i in range(6):
        for _ in range(25):
            w.write_one()
        names.append("d%d" % i)
        w.snapshot(names[-1])
    w.finish()
    snaps = check_store_state(A, "data")
    T.check(not snaps[0]["resident"] and snaps[-1]["resident"], "a mixed chain")
    # Export the whole chain (incremental, the moved ones read from the store).
    repo = "file://" + T.tmpdir("repo-")
    A.ctl("repo", "init", "--repo", repo)
    manifests = []
    for n in names:
        manifests.append(A.ctl("export", "data@" + n, "--repo", repo)["manifest"])
    for n, m in zip(names, manifests):
        A.ctl("restore", m, "--repo", repo, "--volume", "r-" + n)
        rdev = A.ctl("volume", "attach", "r-" + n)["device"]
        T.check_eq(sha(read_dev(rdev)), sha(w.image_at(w.marks[n])), "restore of exported " + n)
        A.ctl("volume", "detach", "r-" + n)
        A.ctl("volume", "delete", "r-" + n)
    # Peer sync of the mixed chain, then more snapshots and an incremental one.
    B.ctl("sync", "pull", "a", "data")
    check_store_state(B, "data")
    for n in names:
        T.check_eq(attach_sha(B, "data", n), sha(w.image_at(w.marks[n])), "synced " + n)
    dev = A.ctl("volume", "attach", "data")["device"]
    w2 = Writer(A, "data", dev, 4)
    w2.log = list(w.log)
    w2.marks = dict(w.marks)
    for i in range(6, 9):
        for _ in range(25):
            w2.write_one()
        names.append("d%d" % i)
        w2.snapshot(names[-1])
    w2.finish()
    check_store_state(A, "data")
    r = B.ctl("sync", "pull", "a", "data")
    T.check_eq(r["snapshots_received"], 3, "incremental sync")
    check_store_state(B, "data")
    for n in names[-4:]:
        T.check_eq(attach_sha(B, "data", n), sha(w2.image_at(w2.marks[n])), "synced " + n)
    for a, b in zip(names, names[1:]):
        got = blocks_of(B.ctl("snapshot", "diff", "data@" + a, "data@" + b)["extents"])
        T.check_eq(got, w2.blocks_between(w2.marks[a], w2.marks[b]), "replica diff %s..%s" % (a, b))
    A.ctl("volume", "detach", "data")
    T.check_eq(A.stop(), 0)
    T.check_eq(B.stop(), 0)


def test_defragmenter_and_store_off():
    d = T.Amberd("btrfs", size="1G", extra=["--defrag-threshold", "64"])
    d.ctl("volume", "create", "g", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "g")["device"]
    w = Writer(d, "g", dev, 5)
    w.snapshot("g0")
    for _ in range(600):        # scattered writes after a snapshot fragment the image
        w.write_one()
    w.snapshot("g1")
    for _ in range(50):
        w.write_one()
    w.snapshot("g2")
    w.finish()
    st = wait_store(d)
    T.check(st["defrag_steps"] > 0, "the defragmenter ran: %r" % st)
    T.check_eq(sha(read_dev(dev)), sha(w.image_at(len(w.log))), "live image after defragmenting")
    for n in ("g0", "g1", "g2"):
        T.check_eq(attach_sha(d, "g", n), sha(w.image_at(w.marks[n])), "snapshot %s" % n)
    # The recorded extents stay exact although the rewrite re-dated ranges.
    T.check_eq(blocks_of(d.ctl("snapshot", "diff", "g@g1", "g@g2")["extents"]),
               w.blocks_between(w.marks["g1"], w.marks["g2"]), "diff g1..g2")
    d.ctl("volume", "detach", "g")
    d.stop()
    # --store-off: nothing moves; the moved snapshot is still served.
    d.extra = ["--store-off"]
    d.start()
    st = d.ctl("store", "status")
    T.check(not st["enabled"], "mover off")
    T.check_eq(attach_sha(d, "g", "g0"), sha(w.image_at(w.marks["g0"])), "stored g0 with --store-off")
    d.ctl("snapshot", "create", "g", "--name", "g3")
    T.check(d.ctl("snapshot", "show", "g@g3")["resident"], "g3 resident")
    T.check(not d.ctl("snapshot", "show", "g@g3")["stored"], "g3 not stored with --store-off")
    T.check_eq(d.stop(), 0)


def image_extents(d, vol):
    """Extents of VOL's live image (filefrag: FIEMAP)."""
    vid = d.ctl("volume", "show", vol)["id"]
    out = subprocess.run(["filefrag", os.path.join(d.pool, "vols", vid, "disk")], check=True,
                         capture_output=True, text=True).stdout
    return int(out.rsplit(":", 1)[1].split()[0])


def test_gate_pauses_the_mover_for_a_create():
    # AMBER_TEST_GATE_HOLD: each create, once its gate is open, kicks the
    # mover and waits until the mover stands at the gate (it gives up after
    # 10 s if the mover never pauses there: without the gate, no pause is
    # counted and the check below fails).
    d = T.Amberd("btrfs", size="1G", extra=["--no-defrag"], env={"AMBER_TEST_GATE_HOLD": "1"})
    d.ctl("volume", "create", "q", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "q")["device"]
    w = Writer(d, "q", dev, 7)
    for i in range(4):
        for _ in range(200):
            w.write_one()
        w.snapshot("q%d" % i)
    w.finish()
    st = wait_store(d)
    T.check(st["gate_pauses"] >= 4, "the mover paused for each create: %r" % st)
    T.check_eq(st["backlog"], 0, "everything stored after the pauses")
    for i in range(4):
        T.check_eq(attach_sha(d, "q", "q%d" % i), sha(w.image_at(w.marks["q%d" % i])), "snapshot q%d" % i)
    d.ctl("volume", "detach", "q")
    T.check_eq(d.stop(), 0)


def test_sweep_after_snapshots_stop():
    # A threshold the image never reaches: only the full sweep once the
    # snapshots stopped defragments it; `--wait --settle` waits for it
    # (without the sweep: no sweep counted, the image stays fragmented).
    d = T.Amberd("btrfs", size="1G", extra=["--defrag-threshold", "100000000", "--defrag-sweep"])
    d.ctl("volume", "create", "f", "--size", str(SIZE))
    dev = d.ctl("volume", "attach", "f")["device"]
    # Written in full first (zeros: what the writer's model starts from), so
    # no holes split the image into pieces no defrag can join.
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, MiB)
    for off in range(0, SIZE, MiB):
        os.pwritev(fd, [buf], off)
    os.fsync(fd)
    os.close(fd)
    w = Writer(d, "f", dev, 9)
    w.snapshot("f0")
    for _ in range(800):        # scattered writes after a snapshot fragment the image
        w.write_one()
    # Stop with a snapshot: the fragments are then shared with it, which is
    # what makes btrfs rewrite them (a No_COW file's unshared extents are
    # written back in place by a defrag).
    w.snapshot("f1")
    w.finish()
    before = image_extents(d, "f")     # (the sweep may already have run: writes are in place after it)
    st = d.ctl("store", "status", "--wait", "--settle")
    T.check(st["settled"], "settled: %r" % st)
    T.check(st["defrag_sweeps"] >= 1, "a full sweep ran: %r" % st)
    after = image_extents(d, "f")
    # Without the sweep the 800 scattered writes leave hundreds of extents.
    T.check(after <= 2 * SIZE // (8 * MiB), "swept: %d -> %d extents" % (before, after))
    T.check_eq(sha(read_dev(dev)), sha(w.image_at(len(w.log))), "live image after the sweep")
    for n in ("f0", "f1"):
        T.check_eq(attach_sha(d, "f", n), sha(w.image_at(w.marks[n])), "snapshot %s" % n)
    # A new snapshot makes the volume due again; settling sweeps it again.
    w2 = Writer(d, "f", dev, 10)
    w2.log = list(w.log)
    for _ in range(400):
        w2.write_one()
    w2.snapshot("f2")
    w2.finish()
    st2 = d.ctl("store", "status", "--wait", "--settle")
    T.check(st2["defrag_sweeps"] > st["defrag_sweeps"], "swept again after a new snapshot: %r" % st2)
    T.check_eq(sha(read_dev(dev)), sha(w2.image_at(len(w2.log))), "live image after the second sweep")
    d.ctl("volume", "detach", "f")
    T.check_eq(d.stop(), 0)


if __name__ == "__main__":
    sys.exit(T.Tests().run([
        test_chain_clones_and_exact_diffs,
        test_history_and_retention,
        test_hydration_rewrites_only_the_union,
        test_full_pool_during_background_copy,
        test_export_and_sync_of_mixed_chains,
        test_defragmenter_and_store_off,
        test_gate_pauses_the_mover_for_a_create,
        test_sweep_after_snapshots_stop,
        test_crash_at_every_mover_step,
        test_crash_while_bringing_back,
    ]))
