#!/usr/bin/python3
"""The CSI SnapshotMetadata service (changed-block tracking) of amber-csi,
through a real gRPC client (python3-grpcio) on the plugin's socket.

Against a real amberd on a loop pool: allocated and delta metadata of
snapshots written at known offsets with direct I/O are exact (every
written 4 KiB block is reported, nothing else), resumption from a
starting_offset inside an extent cuts that extent at the offset,
max_results bounds every message, a delta stays exact when snapshots
between base and target are deleted, a delta from a deleted base is exact
(CSI and amberctl, before and after a restart; FAILED_PRECONDITION with
--store-off), and bad handles and offsets get the spec's codes.

Against a fake amberd (a Python gRPC server serving GetSnapshot and a Diff
of 4,000,000 extents generated on the fly): a client that stops reading
stalls the fake amberd (backpressure reaches the source: a relay between
them that keeps the HTTP/2 flow-control books sees the fake's window used
up) while amber-csi's resident memory stays bounded, then the whole stream arrives intact; a
client that cancels mid-stream cancels amber-csi's amberd stream."""
import concurrent.futures
import os
import sys
import threading
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices)")
try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
if not os.path.exists("/dev/loop-control"):
    T.skip("no /dev/loop-control")
T.genproto()
import csi_pb2 as pb  # noqa: E402
from cbt import (FAKE_ID, N_EXT, FakeDiff, H2Books, blocks_of, pwrite_direct, rss_kib,  # noqa: E402
                 tuples as tuples_)

KiB = 1 << 10
MiB = 1 << 20


PLUGIN = os.path.join(T.BUILD, "amber-csi")
Code = grpc.StatusCode
D = T.tmpdir("amber-cbt-")


def start_plugin(name, amberd_sock):
    sock = os.path.join(D, name + ".sock")
    env = dict(os.environ)
    # Under ASan, freed memory is kept in quarantine; keep it small so the
    # resident-memory check measures what the plugin holds, not ASan.
    env["ASAN_OPTIONS"] = (env.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
    log = open(os.path.join(D, name + ".log"), "ab")
    p = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", "cbt-node",
                 "--amberd", amberd_sock, "--log-level", "debug"], env=env, stderr=log)
    log.close()
    T.wait_for_socket(sock, p)
    ch = grpc.insecure_channel("unix://" + sock)
    T.cleanup.add("close channel", ch.close)
    s = T.Stub(ch, "csi.v1.SnapshotMetadata", pb)
    ident = T.Stub(ch, "csi.v1.Identity", pb)
    return p, {
        "alloc": s.server_stream("GetMetadataAllocated", pb.GetMetadataAllocatedRequest,
                                 pb.GetMetadataAllocatedResponse),
        "delta": s.server_stream("GetMetadataDelta", pb.GetMetadataDeltaRequest, pb.GetMetadataDeltaResponse),
        "caps": ident.unary("GetPluginCapabilities", pb.GetPluginCapabilitiesRequest,
                            pb.GetPluginCapabilitiesResponse),
    }


# --- a real amberd ---------------------------------------------------------------

d = T.Amberd(size="2G")
_, C = start_plugin("csi", d.sock)
SIZE = 64 * MiB
VOL = d.ctl("volume", "create", "cbt-vol", "--size", "64M")["id"]
OTHER = d.ctl("volume", "create", "cbt-other", "--size", "16M")["id"]
DEV = d.ctl("volume", "attach", VOL, json_out=False).strip()
T.cleanup.add("detach", lambda: d.ctl("volume", "detach", VOL, check=False))


def snap(name, vol=VOL):
    return d.ctl("snapshot", "create", vol, "--name", name)["id"]


def alloc(sid, start=0, max_results=0):
    return list(C["alloc"](pb.GetMetadataAllocatedRequest(snapshot_id=sid, starting_offset=start,
                                                          max_results=max_results), timeout=60))


def delta(base, target, start=0, max_results=0):
    return list(C["delta"](pb.GetMetadataDeltaRequest(base_snapshot_id=base, target_snapshot_id=target,
                                                      starting_offset=start, max_results=max_results),
                           timeout=60))


def tuples(msgs, cap=SIZE):
    return tuples_(msgs, cap)


# Writes before snapshot A, between A and B, between B and C: (offset, length).
W1 = [(0, 4 * KiB), (1 * MiB + 8 * KiB, 16 * KiB), (5 * MiB, 64 * KiB), (SIZE - 4 * KiB, 4 * KiB)]
W2 = [(5 * MiB + 16 * KiB, 4 * KiB), (9 * MiB, 8 * KiB), (33 * MiB + 4 * KiB, 4 * KiB)]
W3 = [(0, 4 * KiB), (40 * MiB, 128 * KiB)]
for off, n in W1:
    pwrite_direct(DEV, off, b"\xa1" * n)
A = snap("a")
for off, n in W2:
    pwrite_direct(DEV, off, b"\xb2" * n)
B = snap("b")
for off, n in W3:
    pwrite_direct(DEV, off, b"\xc3" * n)
C_ = snap("c")
S_OTHER = snap("o", OTHER)


def test_capability_advertised():
    types = [c.service.type for c in C["caps"](pb.GetPluginCapabilitiesRequest(), timeout=60).capabilities
             if c.HasField("service")]
    T.check(pb.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE in types, "SNAPSHOT_METADATA_SERVICE")


def test_allocated_is_exact():
    got = tuples(alloc(A))
    T.check_eq(blocks_of(got), blocks_of(W1), "allocated blocks of A")
    T.check_eq(blocks_of(tuples(alloc(C_))), blocks_of(W1 + W2 + W3), "allocated blocks of C")


def test_delta_is_exact():
    T.check_eq(blocks_of(tuples(delta(A, B))), blocks_of(W2), "delta A..B")
    T.check_eq(blocks_of(tuples(delta(B, C_))), blocks_of(W3), "delta B..C")
    T.check_eq(blocks_of(tuples(delta(A, C_))), blocks_of(W2 + W3), "delta A..C")
    T.check_eq(tuples(delta(B, B)), [], "delta of a snapshot against itself")


def test_resume_inside_an_extent():
    # 5 MiB .. 5 MiB+64 KiB is one extent of A; resume 10000 bytes into it.
    s = 5 * MiB + 10000
    got = tuples(alloc(A, start=s))
    T.check_eq(got[0], (s, 5 * MiB + 64 * KiB - s), "the straddling extent is cut at starting_offset")
    full = tuples(alloc(A))
    T.check_eq(got[1:], [t for t in full if t[0] >= 5 * MiB + 64 * KiB], "the rest after it")
    # Resuming right after a tuple's last byte gives exactly the following ones.
    for i in range(len(full)):
        nxt = full[i][0] + full[i][1]
        T.check_eq(tuples(alloc(A, start=nxt)), full[i + 1:], "resume after tuple %d" % i)
    # Deltas resume the same way.
    dfull = tuples(delta(A, C_))
    mid = dfull[-1][0] + 1000
    T.check_eq(tuples(delta(A, C_, start=mid)), [(mid, dfull[-1][0] + dfull[-1][1] - mid)], "delta resume")


def test_max_results():
    many = snap("many-pre")
    offs = [(100 * KiB * i + 12 * MiB, 4 * KiB) for i in range(200)]
    for off, n in offs:
        pwrite_direct(DEV, off, b"\xd4" * n)
    many = snap("many")
    for mr in (1, 7, 64):
        msgs = delta(B, many, max_results=mr)
        T.check(all(len(m.block_metadata) <= mr for m in msgs), "a message over max_results=%d" % mr)
        T.check(len(msgs) >= len(offs) // mr, "max_results=%d: only %d messages" % (mr, len(msgs)))
        T.check_eq(blocks_of(tuples(msgs)), blocks_of(W3 + offs), "max_results=%d: the same blocks" % mr)
    msgs = alloc(many, max_results=0)
    T.check(all(0 < len(m.block_metadata) <= 4096 for m in msgs), "the plugin's own batch")
    T.check_eq(blocks_of(tuples(msgs)), blocks_of(W1 + W2 + W3 + offs), "allocated with many extents")


def test_delta_across_deleted_snapshots():
    x = snap("x")
    pwrite_direct(DEV, 50 * MiB, b"\xe5" * (8 * KiB))
    y = snap("y")
    pwrite_direct(DEV, 51 * MiB, b"\xe6" * (4 * KiB))
    z = snap("z")
    d.ctl("snapshot", "delete", y, json_out=False)
    # A snapshot between base and target is gone: the delta is unchanged.
    T.check_eq(blocks_of(tuples(delta(x, z))), blocks_of([(50 * MiB, 8 * KiB), (51 * MiB, 4 * KiB)]),
               "delta over a deleted snapshot")
    # The base itself is gone too: its tombstone keeps the delta exact.
    d.ctl("snapshot", "delete", x, json_out=False)
    T.check_eq(blocks_of(tuples(delta(x, z))), blocks_of([(50 * MiB, 8 * KiB), (51 * MiB, 4 * KiB)]),
               "delta from a deleted base over a deleted snapshot")
    T.check(len(tuples(alloc(z))) > 0, "the target still answers")


def ctl_blocks(base, target):
    out = d.ctl("snapshot", "diff", base, target)
    return blocks_of([(e["offset"], e["length"]) for e in out["extents"]])


# Writes between p[i-1] and p[i] (overlapping some earlier ones).
WP = {1: [(52 * MiB, 4 * KiB), (53 * MiB + 4 * KiB, 12 * KiB)],
      2: [(52 * MiB, 4 * KiB), (54 * MiB, 8 * KiB)],
      3: [(55 * MiB, 4 * KiB), (53 * MiB + 8 * KiB, 4 * KiB)],
      4: [(56 * MiB, 16 * KiB), (52 * MiB + 4 * KiB, 4 * KiB)],
      5: [(57 * MiB, 4 * KiB)]}


WP6 = [(58 * MiB, 4 * KiB), (57 * MiB, 4 * KiB)]


def expect_between(i, j):
    return blocks_of([w for k in range(i + 1, j + 1) for w in WP[k]])


def check_deleted_bases(p, when, pairs=((0, 4), (1, 4), (1, 5), (2, 4), (2, 5), (3, 4), (3, 5), (0, 5), (4, 5))):
    for i, j in pairs:
        want = expect_between(i, j)
        T.check_eq(blocks_of(tuples(delta(p[i], p[j]))), want, "%s: delta p%d..p%d" % (when, i, j))
        T.check_eq(ctl_blocks(p[i], p[j]), want, "%s: amberctl diff p%d..p%d" % (when, i, j))
    # Resumed in the middle of the chain's extents, still exact.
    full = tuples(delta(p[1], p[-1]))
    mid = full[len(full) // 2][0] + 4 * KiB
    T.check_eq(tuples(delta(p[1], p[-1], start=mid)),
               [(max(o, mid), o + n - max(o, mid)) for o, n in full if o + n > mid], "%s: resumed" % when)
    # A deleted base newer than its target, and one of another volume.
    T.expect_status(Code.INVALID_ARGUMENT, delta, p[3], p[0])
    T.expect_status(Code.INVALID_ARGUMENT, delta, p[1], S_OTHER)
    T.expect_status(Code.NOT_FOUND, delta, str(uuid.uuid4()), p[-1])


def test_delta_from_a_deleted_base():
    p = [snap("p0")]
    for i in range(1, 6):
        for off, n in WP[i]:
            pwrite_direct(DEV, off, bytes([0x10 + i]) * n)
        p.append(snap("p%d" % i))
    # At once (the store may not have recorded p1's or p2's extents yet: they
    # are computed while p1 is still there), then with everything stored,
    # the older subvolumes dropped: p3's child's recorded extents, then a
    # tombstone next to a tombstone.
    d.ctl("snapshot", "delete", p[1], json_out=False)
    d.ctl("store", "status", "--wait")
    d.ctl("snapshot", "delete", p[3], json_out=False)
    d.ctl("snapshot", "delete", p[2], json_out=False)
    for k in (1, 2, 3):
        d.ctl_fail("NOT_FOUND", "snapshot", "show", p[k])
    T.check(not {p[1], p[2], p[3]} & {s["id"] for s in d.ctl("snapshot", "list", "--volume", VOL)},
            "a deleted snapshot is never listed")
    check_deleted_bases(p, "live")
    # Tombstones of another volume: collected once no later snapshot remains.
    o1, o2 = snap("o1", OTHER), snap("o2", OTHER)
    d.ctl("snapshot", "delete", o1, json_out=False)
    T.check_eq(tuples(delta(o1, o2), 16 * MiB), [], "nothing written between o1 and o2")
    T.expect_status(Code.INVALID_ARGUMENT, delta, o1, p[5])
    d.ctl("snapshot", "delete", o2, json_out=False)
    T.expect_status(Code.NOT_FOUND, delta, o1, S_OTHER)
    # A crash right after the pool deleted p5's subvolume: recovery finishes
    # the delete and the chain stays exact.
    for off, n in WP6:
        pwrite_direct(DEV, off, b"\x16" * n)
    p6 = snap("p6")
    d.ctl("volume", "detach", VOL)
    T.check_eq(d.stop(), 0, "amberd stopped cleanly")
    d.start(env={"AMBER_CRASH_AT": "snapshot-delete:pool"})
    d.ctl("snapshot", "delete", p[5], check=False, json_out=False)
    T.check(d.proc.wait(timeout=60) != 0, "amberd crashed at snapshot-delete:pool")
    T.check("AMBER_CRASH_AT=snapshot-delete:pool" in d.log(), "crashed elsewhere")
    d.kill()
    # The tombstones outlive a restart.
    d.start()
    d.ctl_fail("NOT_FOUND", "snapshot", "show", p[5])
    WP[6] = WP6
    p.append(p6)
    want = blocks_of(WP6)
    T.check_eq(blocks_of(tuples(delta(p[5], p6))), want, "delta from p5, deleted in a crash")
    T.check_eq(ctl_blocks(p[5], p6), want, "amberctl diff from p5")
    T.check_eq(blocks_of(tuples(delta(p[4], p6))), expect_between(4, 6), "delta p4..p6 over p5")
    check_deleted_bases(p, "after a restart", ((0, 4), (1, 4), (2, 4), (3, 4), (0, 6), (1, 6), (2, 6),
                                               (3, 6), (4, 6), (5, 6)))


def test_deleted_base_with_store_off():
    # Without the mover nothing records extents ahead of time, but every
    # snapshot is resident, so a delete computes what its tombstone and its
    # child need right then: a delta from a deleted base is exact too.
    off = T.Amberd(size="1G", extra=["--store-off"])
    _, OC = start_plugin("csi-store-off", off.sock)
    off.ctl("volume", "create", "so", "--size", "16M")
    dev = off.ctl("volume", "attach", "so", json_out=False).strip()
    T.cleanup.add("detach so", lambda: off.ctl("volume", "detach", "so", check=False))
    w = {1: [(1 * MiB, 8 * KiB)], 2: [(2 * MiB, 4 * KiB), (1 * MiB, 4 * KiB)], 3: [(3 * MiB, 12 * KiB)]}
    q = [off.ctl("snapshot", "create", "so", "--name", "q0")["id"]]
    for i in (1, 2, 3):
        for o, n in w[i]:
            pwrite_direct(dev, o, bytes([0x20 + i]) * n)
        q.append(off.ctl("snapshot", "create", "so", "--name", "q%d" % i)["id"])
    off.ctl("snapshot", "delete", q[1], json_out=False)
    off.ctl("snapshot", "delete", q[2], json_out=False)

    def od(b, t):
        return blocks_of(tuples(list(OC["delta"](pb.GetMetadataDeltaRequest(
            base_snapshot_id=b, target_snapshot_id=t), timeout=60)), 16 * MiB))
    T.check_eq(od(q[1], q[3]), blocks_of(w[2] + w[3]), "--store-off: delta from deleted q1")
    T.check_eq(od(q[2], q[3]), blocks_of(w[3]), "--store-off: delta from deleted q2")
    T.check_eq(od(q[0], q[3]), blocks_of(w[1] + w[2] + w[3]), "--store-off: delta over both")
    out = off.ctl("snapshot", "diff", q[1], q[3])
    T.check_eq(blocks_of([(e["offset"], e["length"]) for e in out["extents"]]), blocks_of(w[2] + w[3]),
               "--store-off: amberctl diff from deleted q1")
    T.expect_status(Code.NOT_FOUND, lambda: list(OC["delta"](pb.GetMetadataDeltaRequest(
        base_snapshot_id=str(uuid.uuid4()), target_snapshot_id=q[3]), timeout=60)))
    off.ctl("volume", "detach", "so")
    T.check_eq(off.stop(), 0)


def test_error_codes():
    T.expect_status(Code.INVALID_ARGUMENT, alloc, "")
    T.expect_status(Code.NOT_FOUND, alloc, str(uuid.uuid4()))
    T.expect_status(Code.NOT_FOUND, alloc, "not-a-handle")
    T.expect_status(Code.NOT_FOUND, alloc, "a")      # a name is never a handle
    T.expect_status(Code.INVALID_ARGUMENT, alloc, A, start=-1)
    T.expect_status(Code.INVALID_ARGUMENT, alloc, A, max_results=-1)
    T.expect_status(Code.OUT_OF_RANGE, alloc, A, start=SIZE + 1)
    T.expect_status(Code.OUT_OF_RANGE, delta, A, B, start=SIZE + 4096)
    T.check_eq(tuples(alloc(A, start=SIZE)), [], "starting_offset at the end: nothing left")
    T.check_eq(len(alloc(A, start=SIZE)), 1, "one message (the capacity) even when empty")
    T.expect_status(Code.INVALID_ARGUMENT, delta, "", B)
    T.expect_status(Code.INVALID_ARGUMENT, delta, A, "")
    T.expect_status(Code.NOT_FOUND, delta, str(uuid.uuid4()), B)
    T.expect_status(Code.NOT_FOUND, delta, A, str(uuid.uuid4()))
    T.expect_status(Code.INVALID_ARGUMENT, delta, A, S_OTHER)   # two volumes
    T.expect_status(Code.INVALID_ARGUMENT, delta, B, A)         # base newer than target


# --- a fake amberd with millions of extents ---------------------------------------

fake = FakeDiff()
FSOCK = os.path.join(D, "fake-amberd.sock")
server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers([fake.handlers("amber.v1.Amber")])
server.add_insecure_port("unix://" + FSOCK)
server.start()
T.cleanup.add("stop the fake amberd", lambda: server.stop(0))


class FlowRelay:
    """A unix-socket relay between amber-csi and the fake amberd that keeps
    each connection's HTTP/2 flow-control books (cbt.H2Books) from the frames
    going by: when a stream's window is used up, the fake cannot send another
    byte on it until amber-csi grants more: "the producer is blocked" as a
    fact, not as a pause. It buffers what the fake sends, so it never stops
    reading and its books are never behind the fake's (the fake's own window
    is never larger than what they show)."""

    def __init__(self, path, upstream):
        import socket
        self.upstream = upstream
        self.lock = threading.Lock()
        self.conns = []            # an H2Books a connection
        self.ls = socket.socket(socket.AF_UNIX)
        self.ls.bind(path)
        self.ls.listen(16)
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()
        T.cleanup.add("stop the flow relay", self.close)

    def close(self):
        self.closing = True
        self.ls.close()

    def blocked(self):
        """Whether the fake has used up the window of a stream it sends on."""
        with self.lock:
            return any(st.blocked() for st in self.conns)

    def _accept(self):
        import socket
        while not self.closing:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            b = socket.socket(socket.AF_UNIX)
            b.connect(self.upstream)
            st = H2Books()
            with self.lock:
                self.conns.append(st)
            q, cv = [], threading.Condition()
            threading.Thread(target=self._up, args=(a, b, st), daemon=True).start()
            threading.Thread(target=self._down_read, args=(b, a, st, q, cv), daemon=True).start()
            threading.Thread(target=self._down_write, args=(a, b, st, q, cv), daemon=True).start()

    def _close_both(self, a, b, st):
        with self.lock:
            if st in self.conns:
                self.conns.remove(st)
        for x in (a, b):
            try:
                x.shutdown(2)
            except OSError:
                pass
            x.close()

    def _up(self, a, b, st):
        """amber-csi to the fake: the windows it grants."""
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                b.sendall(d)
                st.client_sent(d)
        except OSError:
            pass
        self._close_both(a, b, st)

    def _down_read(self, b, a, st, q, cv):
        """The fake to amber-csi: the DATA it sends, read at once."""
        try:
            while True:
                d = b.recv(65536)
                if not d:
                    break
                st.server_sent(d)
                with cv:
                    q.append(d)
                    cv.notify()
        except OSError:
            pass
        with cv:
            q.append(None)
            cv.notify()

    def _down_write(self, a, b, st, q, cv):
        try:
            while True:
                with cv:
                    while not q:
                        cv.wait()
                    d = q.pop(0)
                if d is None:
                    break
                a.sendall(d)
        except OSError:
            pass
        self._close_both(a, b, st)


RELAY = FlowRelay(os.path.join(D, "relay.sock"), FSOCK)
BIG_PROC, BIG = start_plugin("csi-big", os.path.join(D, "relay.sock"))


def wait_blocked(limit_s=120):
    """Wait until the fake amberd has used up the window amber-csi granted
    it (the pipeline is full and the producer blocked), or it finished."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end and not RELAY.blocked():
        if fake.done.wait(0.01):
            break
    with fake.lock:
        return fake.sent


def test_stalled_client_bounded_memory():
    base = rss_kib(BIG_PROC.pid)
    it = BIG["alloc"](pb.GetMetadataAllocatedRequest(snapshot_id=FAKE_ID, max_results=4096), timeout=600)
    first = next(it)
    T.check_eq(len(first.block_metadata), 4096, "the first message")
    sent = wait_blocked()
    stalled = rss_kib(BIG_PROC.pid)
    print("stalled client: the fake amberd sent %d of %d extents; amber-csi RSS %d -> %d KiB"
          % (sent, N_EXT, base, stalled))
    T.check(not fake.done.is_set() and sent < N_EXT // 2,
            "backpressure did not reach amberd: %d of %d extents sent while the client read one message"
            % (sent, N_EXT))
    # Holding all 4M extents would take hundreds of MiB (an unpacked extent
    # alone is 48 bytes); a bounded pipe holds a few MiB.
    T.check(stalled - base < 48 * 1024, "amber-csi grew by %d KiB while the client stalled" % (stalled - base))
    n = len(first.block_metadata)
    last_end = first.block_metadata[-1].byte_offset + first.block_metadata[-1].size_bytes
    peak = stalled
    for i, m in enumerate(it):
        n += len(m.block_metadata)
        T.check(m.block_metadata[0].byte_offset >= last_end, "order")
        last_end = m.block_metadata[-1].byte_offset + m.block_metadata[-1].size_bytes
        if i % 64 == 0:
            peak = max(peak, rss_kib(BIG_PROC.pid))
    T.check_eq(n, N_EXT, "every extent arrived")
    T.check(fake.done.is_set(), "the fake amberd finished")
    print("after reading all %d extents: amber-csi RSS peak %d KiB (growth %d KiB)" % (n, peak, peak - base))
    T.check(peak - base < 64 * 1024, "amber-csi grew by %d KiB over the stream" % (peak - base))


def test_cancel_mid_stream():
    fake.cancelled.clear()
    it = BIG["alloc"](pb.GetMetadataAllocatedRequest(snapshot_id=FAKE_ID), timeout=600)
    for _ in range(10):
        next(it)
    it.cancel()
    T.check(fake.cancelled.wait(60), "amber-csi did not cancel its amberd stream")
    T.check(not fake.done.is_set(), "the fake amberd ran to the end")
    # The plugin still serves.
    T.expect_status(Code.NOT_FOUND, lambda: list(BIG["alloc"](
        pb.GetMetadataAllocatedRequest(snapshot_id=str(uuid.uuid4())), timeout=30)))
    T.check(BIG_PROC.poll() is None, "amber-csi exited")


sys.exit(T.Tests().run([
    test_capability_advertised,
    test_allocated_is_exact,
    test_delta_is_exact,
    test_resume_inside_an_extent,
    test_max_results,
    test_delta_across_deleted_snapshots,
    test_error_codes,
    test_delta_from_a_deleted_base,
    test_deleted_base_with_store_off,
    test_stalled_client_bounded_memory,
    test_cancel_mid_stream,
]))
