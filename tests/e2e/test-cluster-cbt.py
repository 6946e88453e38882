#!/usr/bin/python3
"""SnapshotMetadata (changed-block tracking) for any snapshot of the
cluster, asked of any node: two amberd + amber-csi pairs on this machine
(one cluster CA, node handles, a shared directory as the registry), as in
test-cluster.py.

Snapshots n1 holds, written at known offsets with direct I/O, asked through
n2's amber-csi socket (n2's amberd asks n1's over the mutual-TLS peer
connection and streams its Diff through): allocated and delta metadata are
exact (every written 4 KiB block, nothing else) and the same as n1's own
answer; resumption from a starting_offset inside an extent; max_results;
base and target on different nodes is INVALID_ARGUMENT; an unknown
snapshot of n1 is NOT_FOUND; a snapshot that is on n2 is still answered
locally; group member handles name their node and their metadata is
answered by the other node; group ids name their node too, so a group of
n1's volumes is made, found and deleted through n2 (n2's amberd asks n1's
over the peer connection, which takes group snapshots only), the same
name again is the same group, and members on two nodes are
INVALID_ARGUMENT naming both; n1's ClusterPeer service refuses a pinned peer of another cluster
(PERMISSION_DENIED); with n1 stopped, n2 answers UNAVAILABLE.

Against a fake holder n9 (a Python gRPC server serving ClusterPeer with a
Diff of 4,000,000 extents, behind a relay that ends the mutual TLS with a
certificate the cluster CA signed and keeps the HTTP/2 flow-control books):
a client of n2 that stops reading holds n9 back (the books show n9's window
used up) while n2's amberd stays small (both hops bounded), then the whole
stream arrives; a client that cancels cancels n2's stream from n9."""
import concurrent.futures
import os
import select
import socket
import ssl
import subprocess
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
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as pb  # noqa: E402
from cbt import (FAKE_ID, FAKE_SIZE, N_EXT, FakeDiff, H2Books, blocks_of, pwrite_direct,  # noqa: E402
                 rss_kib, tuples as tuples_)

KiB = 1 << 10
MiB = 1 << 20
SIZE = 64 * MiB
AMBERCTL = os.path.join(T.BUILD, "amberctl")
PLUGIN = os.path.join(T.BUILD, "amber-csi")
Code = grpc.StatusCode
D = T.tmpdir("amber-cluster-cbt-")


def run(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(argv), p.stderr))
    return p.stdout


CA = os.path.join(D, "ca")
run(AMBERCTL, "cluster", "init-ca", "--out", CA)
REG = os.path.join(D, "peers")
os.makedirs(REG)


class Node:
    """amberd + amber-csi of one node."""

    def __init__(self, name):
        self.name = name
        # Under ASan, freed memory is kept in quarantine; keep it small so the
        # resident-memory check measures what amberd holds, not ASan.
        asan = (os.environ.get("ASAN_OPTIONS", "") + ":quarantine_size_mb=8").lstrip(":")
        self.amberd = T.Amberd(size="1G", env={"ASAN_OPTIONS": asan}, extra=[
            "--node-id", name, "--peer-listen", "127.0.0.1:0",
            "--cluster-ca", os.path.join(CA, "ca.crt"), "--cluster-ca-key", os.path.join(CA, "ca.key"),
            "--cluster-registry", "dir:" + REG])
        sock = os.path.join(self.amberd.dir, "csi.sock")
        self.log = os.path.join(self.amberd.dir, "csi.log")
        log = open(self.log, "ab")
        self.proc = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", name, "--amberd",
                             self.amberd.sock, "--log-level", "debug", "--node-handles"], stderr=log)
        log.close()
        T.wait_for_socket(sock, self.proc)
        ch = grpc.insecure_channel("unix://" + sock)
        T.cleanup.add("close channel", ch.close)
        md = T.Stub(ch, "csi.v1.SnapshotMetadata", pb)
        g = T.Stub(ch, "csi.v1.GroupController", pb)
        self.alloc_ = md.server_stream("GetMetadataAllocated", pb.GetMetadataAllocatedRequest,
                                       pb.GetMetadataAllocatedResponse)
        self.delta_ = md.server_stream("GetMetadataDelta", pb.GetMetadataDeltaRequest,
                                       pb.GetMetadataDeltaResponse)
        self.group = g.unary("CreateVolumeGroupSnapshot", pb.CreateVolumeGroupSnapshotRequest,
                             pb.CreateVolumeGroupSnapshotResponse)
        self.get_group = g.unary("GetVolumeGroupSnapshot", pb.GetVolumeGroupSnapshotRequest,
                                 pb.GetVolumeGroupSnapshotResponse)
        self.delete_group = g.unary("DeleteVolumeGroupSnapshot", pb.DeleteVolumeGroupSnapshotRequest,
                                    pb.DeleteVolumeGroupSnapshotResponse)

    def ctl(self, *a, **kw):
        return self.amberd.ctl(*a, **kw)

    def alloc(self, sid, start=0, max_results=0):
        return list(self.alloc_(pb.GetMetadataAllocatedRequest(
            snapshot_id=sid, starting_offset=start, max_results=max_results), timeout=60))

    def delta(self, base, target, start=0, max_results=0):
        return list(self.delta_(pb.GetMetadataDeltaRequest(
            base_snapshot_id=base, target_snapshot_id=target, starting_offset=start,
            max_results=max_results), timeout=60))


def tuples(msgs, cap=SIZE):
    return tuples_(msgs, cap)


N1, N2 = Node("n1"), Node("n2")
VOL = N1.ctl("volume", "create", "cbt-vol", "--size", "64M")["id"]
DEV = N1.ctl("volume", "attach", VOL, json_out=False).strip()
T.cleanup.add("detach", lambda: N1.ctl("volume", "detach", VOL, check=False))

W1 = [(0, 4 * KiB), (1 * MiB + 8 * KiB, 16 * KiB), (5 * MiB, 64 * KiB), (SIZE - 4 * KiB, 4 * KiB)]
W2 = [(5 * MiB + 16 * KiB, 4 * KiB), (9 * MiB, 8 * KiB), (33 * MiB + 4 * KiB, 4 * KiB)]
for off, n in W1:
    pwrite_direct(DEV, off, b"\xa1" * n)
A = "n1/" + N1.ctl("snapshot", "create", VOL, "--name", "a")["id"]
for off, n in W2:
    pwrite_direct(DEV, off, b"\xb2" * n)
B = "n1/" + N1.ctl("snapshot", "create", VOL, "--name", "b")["id"]
N1.ctl("volume", "detach", VOL)


def test_allocated_through_another_node_is_exact():
    got = tuples(N2.alloc(A))
    T.check_eq(blocks_of(got), blocks_of(W1), "allocated blocks of n1's snapshot asked of n2")
    T.check_eq(got, tuples(N1.alloc(A)), "n2's answer is n1's own")
    got_b = tuples(N2.alloc(B))
    T.check_eq(blocks_of(got_b), blocks_of(W1 + W2))


def test_delta_through_another_node_is_exact():
    got = tuples(N2.delta(A, B))
    T.check_eq(blocks_of(got), blocks_of(W2), "changed blocks a..b asked of n2")
    T.check_eq(got, tuples(N1.delta(A, B)), "n2's answer is n1's own")
    T.check_eq(tuples(N2.delta(B, B)), [], "a snapshot against itself")


def test_resume_and_max_results_through_another_node():
    full = tuples(N2.alloc(B))
    # Inside the 64 KiB extent at 5 MiB: it is cut there, the rest follows.
    s = 5 * MiB + 20 * KiB
    got = tuples(N2.alloc(B, start=s))
    want = [(max(o, s), o + n - max(o, s)) for o, n in full if o + n > s]
    T.check_eq(got, want, "resumed at %d" % s)
    T.check(got[0][0] == s, got[:2])
    dgot = tuples(N2.delta(A, B, start=9 * MiB + 4 * KiB))
    T.check_eq(blocks_of(dgot), blocks_of([(9 * MiB + 4 * KiB, 4 * KiB), (33 * MiB + 4 * KiB, 4 * KiB)]))
    msgs = N2.alloc(B, max_results=1)
    T.check(all(len(m.block_metadata) <= 1 for m in msgs), "max_results=1 not honoured")
    T.check_eq(tuples(msgs), full)
    T.check_eq(tuples(N2.alloc(B, start=SIZE)), [], "starting_offset at the end")
    T.expect_status(Code.OUT_OF_RANGE, N2.alloc, B, SIZE + 4096)


def test_error_codes_through_another_node():
    T.expect_status(Code.NOT_FOUND, N2.alloc, "n1/" + str(uuid.uuid4()))
    local_vol = N2.ctl("volume", "create", "n2-vol", "--size", "16M")["id"]
    local_snap = "n2/" + N2.ctl("snapshot", "create", local_vol, "--name", "x")["id"]
    T.check_eq(tuples(N2.alloc(local_snap), cap=16 * MiB), [], "n2's own snapshot, answered by n2")
    T.check_eq(tuples(N1.alloc(local_snap), cap=16 * MiB), [], "n2's snapshot, answered by n1")
    e = T.expect_status(Code.INVALID_ARGUMENT, N2.delta, A, local_snap)
    T.check("different volumes" in e.details(), e.details())
    # n1's snapshot id named as n2's: n2 has no such snapshot.
    T.expect_status(Code.NOT_FOUND, N2.delta, A, "n2/" + B.split("/")[1])
    T.expect_status(Code.NOT_FOUND, N2.alloc, "n1/not-a-uuid")


def test_group_members_answered_by_another_node():
    vols = [N1.ctl("volume", "create", "g%d" % i, "--size", "16M")["id"] for i in range(2)]
    dev = N1.ctl("volume", "attach", vols[1], json_out=False).strip()
    pwrite_direct(dev, 2 * MiB, b"\xee" * (8 * KiB))
    N1.ctl("volume", "detach", vols[1])
    q = pb.CreateVolumeGroupSnapshotRequest(name="group-x", source_volume_ids=["n1/" + v for v in vols])
    g = N1.group(q, timeout=60).group_snapshot
    T.check(all(m.snapshot_id.startswith("n1/") for m in g.snapshots), g)
    m1 = [m for m in g.snapshots if m.source_volume_id == "n1/" + vols[1]][0]
    T.check_eq(blocks_of(tuples(N2.alloc(m1.snapshot_id), cap=16 * MiB)), blocks_of([(2 * MiB, 8 * KiB)]))
    # The group id names its node: another node finds the group through it.
    T.check(g.group_snapshot_id.startswith("n1/group-"), g.group_snapshot_id)
    got = N2.get_group(pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=g.group_snapshot_id), timeout=30)
    T.check_eq(sorted(m.snapshot_id for m in got.group_snapshot.snapshots),
               sorted(m.snapshot_id for m in g.snapshots), "n2 answers for n1's group")
    T.check_eq(got.group_snapshot.group_snapshot_id, g.group_snapshot_id)


def group_ids(g):
    return sorted(m.snapshot_id for m in g.snapshots)


def test_groups_routed_to_their_node():
    vols = ["n1/" + N1.ctl("volume", "create", "r%d" % i, "--size", "16M")["id"] for i in range(3)]
    # Made through n2 with members on n1: n1 takes them, in one step.
    q = pb.CreateVolumeGroupSnapshotRequest(name="routed", source_volume_ids=vols)
    g = N2.group(q, timeout=60).group_snapshot
    T.check(g.group_snapshot_id.startswith("n1/group-"), g.group_snapshot_id)
    T.check_eq(len(g.snapshots), 3)
    T.check(all(m.snapshot_id.startswith("n1/") and m.ready_to_use for m in g.snapshots), g)
    T.check_eq({m.source_volume_id for m in g.snapshots}, set(vols))
    for m in g.snapshots:
        s = N1.ctl("snapshot", "show", m.snapshot_id.split("/")[1])
        T.check_eq(s["volume_id"], m.source_volume_id.split("/")[1], "the member is n1's")
    # The same name again, through either node: the same group.
    T.check_eq(group_ids(N1.group(q, timeout=60).group_snapshot), group_ids(g), "idempotent through n1")
    T.check_eq(group_ids(N2.group(q, timeout=60).group_snapshot), group_ids(g), "idempotent through n2")
    e = T.expect_status(Code.ALREADY_EXISTS, N2.group, pb.CreateVolumeGroupSnapshotRequest(
        name="routed", source_volume_ids=vols[:2]), timeout=60)
    # Get through both nodes, with and without the member list; the old id
    # form (no node) still works on the holder.
    for n in (N1, N2):
        got = n.get_group(pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=g.group_snapshot_id,
                                                           snapshot_ids=group_ids(g)), timeout=30)
        T.check_eq(group_ids(got.group_snapshot), group_ids(g), "get through %s" % n.name)
    bare = g.group_snapshot_id.split("/")[1]
    got = N1.get_group(pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=bare), timeout=30)
    T.check_eq([m.split("/")[1] for m in group_ids(got.group_snapshot)], [m.split("/")[1] for m in group_ids(g)],
               "an id without a node: the holder's own")
    T.expect_status(Code.NOT_FOUND, N2.get_group, pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=bare),
                    timeout=30)
    T.expect_status(Code.INVALID_ARGUMENT, N2.get_group, pb.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=g.group_snapshot_id, snapshot_ids=group_ids(g)[:2]), timeout=30)
    # Members on two nodes: one amberd cannot take them at one instant.
    local = "n2/" + N2.ctl("volume", "create", "r-n2", "--size", "16M")["id"]
    for n in (N1, N2):
        e = T.expect_status(Code.INVALID_ARGUMENT, n.group, pb.CreateVolumeGroupSnapshotRequest(
            name="split", source_volume_ids=[vols[0], local]), timeout=60)
        T.check("n1" in e.details() and "n2" in e.details(), "the message names both nodes: " + e.details())
    T.expect_status(Code.NOT_FOUND, N2.group, pb.CreateVolumeGroupSnapshotRequest(
        name="missing", source_volume_ids=["n1/" + str(uuid.uuid4())]), timeout=60)
    # Deleted through n2: n1's members go; again is success.
    N2.delete_group(pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=g.group_snapshot_id,
                                                        snapshot_ids=group_ids(g)), timeout=60)
    for m in g.snapshots:
        N1.amberd.ctl_fail("NOT_FOUND", "snapshot", "show", m.snapshot_id.split("/")[1])
    T.expect_status(Code.NOT_FOUND, N1.get_group, pb.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=g.group_snapshot_id), timeout=30)
    N2.delete_group(pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=g.group_snapshot_id,
                                                        snapshot_ids=group_ids(g)), timeout=60)


def test_peers_touch_group_snapshots_only():
    """Through the cluster routing a node makes, lists and deletes another
    node's group snapshots only: n1's ordinary snapshot B stays."""
    import cluster_pb2 as cpb
    ch = grpc.insecure_channel("unix://" + N2.amberd.sock)
    T.cleanup.add("close channel", ch.close)
    st = T.Stub(ch, "amber.v1.Cluster", cpb)
    delete = st.unary("NodeDeleteSnapshot", cpb.ClusterSnapshotRef, apb.Empty)
    lst = st.unary("NodeListSnapshots", cpb.ClusterListSnapshotsRequest, apb.ListSnapshotsResponse)
    make = st.unary("NodeCreateSnapshots", cpb.ClusterCreateSnapshotsRequest, apb.CreateSnapshotsResponse)
    T.expect_status(Code.PERMISSION_DENIED, delete, cpb.ClusterSnapshotRef(node="n1", snapshot=B.split("/")[1]),
                    timeout=30)
    N1.ctl("snapshot", "show", B.split("/")[1])
    T.expect_status(Code.INVALID_ARGUMENT, lst, cpb.ClusterListSnapshotsRequest(
        node="n1", request=apb.ListSnapshotsRequest()), timeout=30)
    T.expect_status(Code.INVALID_ARGUMENT, make, cpb.ClusterCreateSnapshotsRequest(
        node="n1", request=apb.CreateSnapshotsRequest(snapshots=[apb.CreateSnapshotRequest(
            volume=VOL, name="sneaky")])), timeout=30)
    T.check(not [s for s in N1.ctl("snapshot", "list", "--volume", VOL) if s["name"] == "sneaky"], "not made")


def spki_fingerprint(cert):
    pub = subprocess.run(["openssl", "x509", "-in", cert, "-pubkey", "-noout"], capture_output=True,
                         check=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=pub, capture_output=True,
                         check=True).stdout
    import hashlib
    return "sha256:" + hashlib.sha256(der).hexdigest()


def test_peer_port_refuses_a_peer_of_another_cluster():
    """ClusterPeer on n1's peer port answers cluster members only: a peer of
    another cluster, pinned on n1 (so its handshake succeeds), is refused."""
    # A self-signed node identity, as amberd makes outside cluster mode.
    crt, key = os.path.join(D, "x1.crt"), os.path.join(D, "x1.key")
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=x1")
    N1.ctl("peer", "add", "x1", "--address", "127.0.0.1:1", "--fingerprint", spki_fingerprint(crt))
    addr = N1.ctl("cluster", "resolve", "n1")["address"]
    rd = lambda p: open(p, "rb").read()  # noqa: E731
    creds = grpc.ssl_channel_credentials(root_certificates=rd(os.path.join(CA, "ca.crt")),
                                         private_key=rd(key), certificate_chain=rd(crt))
    ch = grpc.secure_channel(addr, creds, options=[("grpc.ssl_target_name_override", "n1")])
    T.cleanup.add("close channel", ch.close)
    stub = T.Stub(ch, "amber.v1.ClusterPeer", apb)
    get = stub.unary("GetSnapshot", apb.SnapshotRef, apb.Snapshot)
    diff = stub.server_stream("Diff", apb.DiffRequest, apb.DiffResponse)
    sid = B.split("/")[1]
    e = T.expect_status(Code.PERMISSION_DENIED, get, apb.SnapshotRef(snapshot=sid), timeout=30)
    T.check("members" in e.details(), e.details())
    T.expect_status(Code.PERMISSION_DENIED, lambda: list(diff(apb.DiffRequest(to=sid), timeout=30)))
    N1.ctl("peer", "remove", "x1")


# --- a fake holder: node n9, a gRPC server with a certificate the cluster CA
# signed, serving ClusterPeer with a Diff of 4,000,000 extents made on the fly.

class TlsFlowRelay:
    """Node n9's peer port: it ends the mutual TLS that n2's amberd speaks
    (n9's certificate, which the cluster CA signed; the client's checked
    against the CA) and passes the plain HTTP/2 on to the fake holder on a
    unix socket, keeping each connection's flow-control books (cbt.H2Books)
    as it goes. It reads everything the holder sends at once (buffering what
    n2 has not taken), so its books are never behind the holder's: when they
    show a stream's window used up, the holder is blocked. One thread per
    connection drives both sockets and the TLS object (memory BIOs), so the
    TLS state is never touched by two threads."""

    def __init__(self, crt, key, ca, upstream):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(crt, key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.ctx.set_alpn_protocols(["h2"])
        self.upstream = upstream
        self.lock = threading.Lock()
        self.books = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.port = self.ls.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()
        T.cleanup.add("stop the TLS relay", self.ls.close)

    def blocked(self):
        with self.lock:
            books = list(self.books)
        return any(b.blocked() for b in books)

    def _accept(self):
        while True:
            try:
                a, _ = self.ls.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(a,), daemon=True).start()

    def _serve(self, a):
        inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = self.ctx.wrap_bio(inc, out, server_side=True)
        books, b, shook = H2Books(), None, False
        to_a, to_b = bytearray(), bytearray()
        try:
            while True:
                if not shook:
                    try:
                        tls.do_handshake()
                        shook = True
                        b = socket.socket(socket.AF_UNIX)
                        b.connect(self.upstream)
                        with self.lock:
                            self.books.append(books)
                    except ssl.SSLWantReadError:
                        pass
                while shook:                        # n2 to the holder
                    try:
                        d = tls.read(65536)
                    except ssl.SSLWantReadError:
                        break
                    if not d:
                        raise EOFError
                    books.client_sent(d)
                    to_b += d
                to_a += out.read()
                rl = [a] + ([b] if b else [])
                wl = ([a] if to_a else []) + ([b] if to_b else [])
                r, w, _ = select.select(rl, wl, [])
                if a in r:
                    d = a.recv(65536)
                    if not d:
                        break
                    inc.write(d)
                if b in r:                          # the holder to n2: read at once
                    d = b.recv(65536)
                    if not d:
                        break
                    books.server_sent(d)
                    view = memoryview(d)
                    while view:
                        view = view[tls.write(view):]
                if a in w:
                    del to_a[:a.send(to_a)]
                if b in w:
                    del to_b[:b.send(to_b)]
        except (OSError, EOFError, ssl.SSLError):
            pass
        with self.lock:
            if books in self.books:
                self.books.remove(books)
        for x in (a, b):
            if x:
                x.close()


def start_fake_holder():
    out = os.path.join(D, "n9")
    run(AMBERCTL, "cluster", "issue", "n9", "--ca", CA, "--out", out)
    fake = FakeDiff()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers([fake.handlers("amber.v1.ClusterPeer")])
    plain = os.path.join(D, "n9.sock")
    server.add_insecure_port("unix://" + plain)
    server.start()
    T.cleanup.add("stop the fake holder", lambda: server.stop(0))
    relay = TlsFlowRelay(os.path.join(out, "n9.crt"), os.path.join(out, "n9.key"), os.path.join(CA, "ca.crt"),
                         plain)
    with open(os.path.join(REG, "n9"), "w") as f:
        f.write("127.0.0.1:%d\n" % relay.port)
    return fake, relay


def wait_blocked(fake, relay, limit_s=120):
    """Wait until the holder has used up the window n2's amberd granted it
    (the pipe is full and the holder blocked), or it finished (the checks
    after it then fail)."""
    end = time.monotonic() + limit_s
    while time.monotonic() < end and not relay.blocked():
        if fake.done.wait(0.01):
            break
    with fake.lock:
        return fake.sent


def test_proxy_hop_bounded_memory():
    """A client of n2 that stops reading a 4M-extent stream of n9's: n9 is
    held back (backpressure through both hops) and n2's amberd stays small;
    then every extent arrives, in order."""
    fake, relay = start_fake_holder()
    pid = N2.amberd.proc.pid
    base = rss_kib(pid)
    it = N2.alloc_(pb.GetMetadataAllocatedRequest(snapshot_id="n9/" + FAKE_ID, max_results=4096), timeout=600)
    first = next(it)
    T.check_eq(first.volume_capacity_bytes, FAKE_SIZE)
    T.check_eq(len(first.block_metadata), 4096, "the first message")
    sent = wait_blocked(fake, relay)
    stalled = rss_kib(pid)
    print("stalled client: n9 sent %d of %d extents; n2 amberd RSS %d -> %d KiB" % (sent, N_EXT, base, stalled))
    T.check(not fake.done.is_set() and sent < N_EXT // 2,
            "backpressure did not reach the holder: %d of %d extents sent" % (sent, N_EXT))
    T.check(stalled - base < 48 * 1024, "n2's amberd grew by %d KiB while the client stalled" % (stalled - base))
    n, peak = len(first.block_metadata), stalled
    last_end = first.block_metadata[-1].byte_offset + first.block_metadata[-1].size_bytes
    for i, m in enumerate(it):
        n += len(m.block_metadata)
        T.check(m.block_metadata[0].byte_offset >= last_end, "order")
        last_end = m.block_metadata[-1].byte_offset + m.block_metadata[-1].size_bytes
        if i % 64 == 0:
            peak = max(peak, rss_kib(pid))
    T.check_eq(n, N_EXT, "every extent arrived")
    T.check(fake.done.is_set(), "the holder finished")
    print("after all %d extents: n2 amberd RSS peak %d KiB (growth %d KiB)" % (n, peak, peak - base))
    T.check(peak - base < 64 * 1024, "n2's amberd grew by %d KiB over the stream" % (peak - base))
    # A client that cancels mid-stream cancels the holder's stream.
    it = N2.alloc_(pb.GetMetadataAllocatedRequest(snapshot_id="n9/" + FAKE_ID), timeout=600)
    for _ in range(10):
        next(it)
    it.cancel()
    T.check(fake.cancelled.wait(60), "n2 did not cancel its stream from the holder")
    T.check(not fake.done.is_set(), "the holder ran to the end")
    T.expect_status(Code.NOT_FOUND, N2.alloc, "n9/" + str(uuid.uuid4()))


def test_holder_stopped_is_unavailable():
    T.check_eq(N1.amberd.stop(), 0)
    e = T.expect_status(Code.UNAVAILABLE, N2.alloc, A)
    T.check("n1" in e.details(), e.details())
    T.expect_status(Code.UNAVAILABLE, N2.delta, A, B)


def test_clean_stop():
    for n in (N1, N2):
        n.proc.terminate()
        rc = n.proc.wait(timeout=30)
        if rc != 0:
            with open(n.log, errors="replace") as f:
                print("--- last lines of %s" % n.log + "".join(f.readlines()[-40:]))
        T.check_eq(rc, 0, "amber-csi of %s" % n.name)
    T.check_eq(N2.amberd.stop(), 0)


def logged(fn):
    def run_():
        T.DAEMONS[:] = [N1.amberd, N2.amberd]
        fn()
    run_.__name__ = fn.__name__
    return run_


sys.exit(T.Tests().run([logged(f) for f in [
    test_allocated_through_another_node_is_exact,
    test_delta_through_another_node_is_exact,
    test_resume_and_max_results_through_another_node,
    test_error_codes_through_another_node,
    test_group_members_answered_by_another_node,
    test_groups_routed_to_their_node,
    test_peers_touch_group_snapshots_only,
    test_peer_port_refuses_a_peer_of_another_cluster,
    test_proxy_hop_bounded_memory,
    test_holder_stopped_is_unavailable,
    test_clean_stop,
]]))
