#!/usr/bin/python3
"""One cluster, three nodes on this machine: three amberd + amber-csi pairs,
each with its own loop pool and node id, talking mutual TLS over loopback
with node certificates issued at start from one cluster CA (no pins), and a
shared directory as the node registry.

Checks: CSI CreateVolume on n2 from a snapshot n1 holds answers ABORTED
"operation pending" first and then a byte-identical volume; a second
snapshot of the chain moves only its delta (bytes on the wire); n3 killed
at a chosen point mid-copy (AMBER_CRASH_AT=cluster-pull:half) and
restarted resumes (bytes acknowledged before are not sent again); a
certificate the cluster CA did not sign is refused, one it signed is not;
handles from before node handles (plain UUIDs) still resolve and mean
"this node"; with n1 stopped for good, the snapshot comes back on n3 from
the archive (a real s3rver), and DeleteSnapshot removes it from the
archive while the chain's other manifest stays whole."""
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
T.genproto()
import csi_pb2 as pb  # noqa: E402

MiB = 1 << 20
SIZE = 128 * MiB
AMBERCTL = os.path.join(T.BUILD, "amberctl")
PLUGIN = os.path.join(T.BUILD, "amber-csi")
Code = grpc.StatusCode
SNW = pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
D = T.tmpdir("amber-cluster-")


def run(*argv):
    p = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        raise AssertionError("%s failed: %s" % (" ".join(argv), p.stderr))
    return p.stdout


# --- the cluster's CA, registry and archive ---------------------------------------

CA = os.path.join(D, "ca")
run(AMBERCTL, "cluster", "init-ca", "--out", CA)
REG = os.path.join(D, "peers")
os.makedirs(REG)


def start_s3():
    node = shutil.which("node")
    js = os.path.join(T.ROOT, "tests", "lib", "s3rver.js")
    mod = os.path.join(T.ROOT, "build", "node", "node_modules", "@20minutes", "s3rver")
    if not node or not os.path.isdir(mod):
        return None
    data = T.tmpdir("s3rver-")
    p = T.spawn([node, js, data, "amber"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError("s3rver did not start: %r" % line)
    os.environ["AWS_ACCESS_KEY_ID"] = "S3RVER"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "S3RVER"
    return "s3://amber/cluster?endpoint=http://127.0.0.1:%s&region=us-east-1" % line.split()[1]


S3 = start_s3()
if not S3:
    T.skip("s3rver is not installed (scripts/setup-deps installs it)")
PWF = os.path.join(D, "archive.password")
with open(PWF, "w") as f:
    f.write("cluster-archive-secret\n")
run(AMBERCTL, "repo", "init", "--repo", S3, "--password-file", PWF)
ARCHIVES = os.path.join(D, "archives.conf")
with open(ARCHIVES, "w") as f:
    f.write("# name url password-file\nmain %s %s gc-grace=0\n" % (S3, PWF))

ACK = {"AMBER_SYNC_ACK_BYTES": "1M"}


def stubs(ch):
    out = {}
    for svc, methods in (("csi.v1.Controller", ("CreateVolume", "DeleteVolume", "CreateSnapshot",
                                                "DeleteSnapshot", "ListSnapshots", "ControllerGetVolume",
                                                "ListVolumes")),
                         ("csi.v1.GroupController", ("CreateVolumeGroupSnapshot",
                                                     "GetVolumeGroupSnapshot"))):
        s = T.Stub(ch, svc, pb)
        for m in methods:
            out[m] = s.unary(m, getattr(pb, m + "Request"), getattr(pb, m + "Response"))
    s = T.Stub(ch, "csi.v1.Node", pb)
    for m in ("NodeStageVolume", "NodeUnstageVolume"):
        out[m] = s.unary(m, getattr(pb, m + "Request"), getattr(pb, m + "Response"))
    out["alloc"] = T.Stub(ch, "csi.v1.SnapshotMetadata", pb).server_stream(
        "GetMetadataAllocated", pb.GetMetadataAllocatedRequest, pb.GetMetadataAllocatedResponse)
    return out


class Node:
    """amberd + amber-csi of one node."""

    def __init__(self, name, env=None):
        self.name = name
        self.amberd = T.Amberd(size="1G", env=dict(ACK, **(env or {})), extra=[
            "--node-id", name, "--peer-listen", "127.0.0.1:0",
            "--cluster-ca", os.path.join(CA, "ca.crt"), "--cluster-ca-key", os.path.join(CA, "ca.key"),
            "--cluster-registry", "dir:" + REG, "--archives-file", ARCHIVES])
        self.csi = self.plugin("csi", ["--node-handles", "--create-wait-ms", "60000"])
        T.cleanup.add("detach %s volumes" % name, self.detach_all)

    def plugin(self, tag, extra):
        sock = os.path.join(self.amberd.dir, tag + ".sock")
        log = open(os.path.join(self.amberd.dir, tag + ".log"), "ab")
        p = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", self.name, "--amberd",
                     self.amberd.sock, "--log-level", "debug"] + extra, stderr=log)
        log.close()
        self.plugins = getattr(self, "plugins", []) + [(p, os.path.join(self.amberd.dir, tag + ".log"))]
        T.wait_for_socket(sock, p)
        ch = grpc.insecure_channel("unix://" + sock)
        T.cleanup.add("close channel", ch.close)
        return stubs(ch)

    def ctl(self, *a, **kw):
        return self.amberd.ctl(*a, **kw)

    def detach_all(self):
        if not self.amberd.proc or self.amberd.proc.poll() is not None:
            return
        for v in self.ctl("volume", "list"):
            if v.get("device"):
                self.ctl("volume", "detach", v["id"], check=False)


def cap():
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=SNW))
    c.block.SetInParent()
    return c


def create(node, name, snap=None, size=SIZE, timeout=120, vol=None):
    q = pb.CreateVolumeRequest(name=name, volume_capabilities=[cap()],
                               capacity_range=pb.CapacityRange(required_bytes=size))
    q.parameters["csi.storage.k8s.io/pvc/namespace"] = "ml"
    q.parameters["csi.storage.k8s.io/pvc/name"] = name
    if snap:
        q.volume_content_source.snapshot.snapshot_id = snap
    if vol:
        q.volume_content_source.volume.volume_id = vol
    return node.csi["CreateVolume"](q, timeout=timeout).volume


def create_remote(node, name, snap, vol=None):
    """The provisioner's view: the first call is pending (ABORTED), the
    retry (which waits for the job) gets the volume."""
    e = T.expect_status(Code.ABORTED, create, node, name, snap, vol=vol)
    T.check("operation pending" in e.details(), e.details())
    job = node.ctl("cluster", "jobs")
    if snap:
        T.check(any(j["source_snapshot"] == snap.split("/")[1] for j in job), job)
    return create(node, name, snap, vol=vol)


def snapshot(node, name, vol_handle, params=None):
    q = pb.CreateSnapshotRequest(name=name, source_volume_id=vol_handle)
    q.parameters.update(params or {})
    return node.csi["CreateSnapshot"](q, timeout=120).snapshot


def local(handle):
    return handle.split("/", 1)[1] if "/" in handle else handle


def write(node, vol_handle, chunks):
    dev = node.ctl("volume", "attach", local(vol_handle))["device"]
    try:
        fd = os.open(dev, os.O_RDWR)
        try:
            for off, data in chunks:
                os.pwrite(fd, data, off)
            os.fsync(fd)
        finally:
            os.close(fd)
    finally:
        node.ctl("volume", "detach", local(vol_handle))


def sha_dev(dev):
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def vol_sha(node, vol_handle):
    dev = node.ctl("volume", "attach", local(vol_handle))["device"]
    try:
        return sha_dev(dev)
    finally:
        node.ctl("volume", "detach", local(vol_handle))


def snap_sha(node, vol_handle, snap_handle):
    v, s = local(vol_handle), local(snap_handle)
    dev = node.ctl("volume", "attach", v, "--snapshot", s)["device"]
    try:
        return sha_dev(dev)
    finally:
        node.ctl("volume", "detach", v, "--snapshot", s)


def job(node, name):
    for j in node.ctl("cluster", "jobs"):
        if j["name"] == name:
            return j
    raise AssertionError("no job %s on %s" % (name, node.name))


HOLD = os.path.join(D, "hold.fifo")
N1, N2 = Node("n1"), Node("n2", env={"AMBER_CLUSTER_HOLD_FIFO": HOLD})
STATE = {}


def test_volume_from_another_nodes_snapshot_is_byte_identical():
    v = create(N1, "pvc-src")
    T.check(v.volume_id.startswith("n1/"), v.volume_id)
    # 24 MiB of incompressible data in scattered runs, the rest a hole.
    chunks = [(off * MiB, os.urandom(3 * MiB)) for off in range(0, 120, 15)]
    write(N1, v.volume_id, chunks)
    s1 = snapshot(N1, "snap-1", v.volume_id, {"archive": "main"})
    T.check(s1.snapshot_id.startswith("n1/"), s1.snapshot_id)
    T.check_eq(s1.source_volume_id, v.volume_id)
    want = snap_sha(N1, v.volume_id, s1.snapshot_id)
    # n2 holds the job after the copy (AMBER_CLUSTER_HOLD_FIFO): pending,
    # with its progress in `amberctl volume show`.
    os.mkfifo(HOLD)
    e = T.expect_status(Code.ABORTED, create, N2, "pvc-copy", s1.snapshot_id)
    T.check("operation pending" in e.details(), e.details())
    fifo = os.open(HOLD, os.O_WRONLY)       # returns once the job waits there
    try:
        show = N2.ctl("volume", "show", "pvc-copy", json_out=False)
        T.check("not ready: pulling" in show and "(100%)" in show, show)
        T.check("snapshot %s of node n1" % local(s1.snapshot_id) in show, show)
        T.expect_status(Code.ABORTED, create, N2, "pvc-copy", s1.snapshot_id, timeout=8)
    finally:
        os.unlink(HOLD)
        os.write(fifo, b"x")
        os.close(fifo)
    b = create(N2, "pvc-copy", s1.snapshot_id)
    T.check(b.volume_id.startswith("n2/"), b.volume_id)
    T.check_eq(b.content_source.snapshot.snapshot_id, "n2/" + local(s1.snapshot_id))
    T.check_eq(vol_sha(N2, b.volume_id), want, "bytes of the copy on n2")
    j = job(N2, b.volume_context["amber.csi.dev/name"])
    T.check_eq(j["state"], "done")
    data = sum(len(c) for _, c in chunks)
    # Allocated extents only: about the data, not the 128 MiB volume.
    T.check(data <= j["bytes_on_wire"] < data * 1.1 + MiB, j)
    # Idempotent: the same call again is the same volume.
    T.check_eq(create(N2, "pvc-copy", s1.snapshot_id).volume_id, b.volume_id)
    # The copy is an ordinary local volume: writable, snapshottable.
    write(N2, b.volume_id, [(0, b"n2 writes here" * 100)])
    STATE.update(src=v.volume_id, s1=s1.snapshot_id, want1=want, data=data)


def test_second_snapshot_moves_only_its_delta():
    delta = [(5 * MiB, os.urandom(MiB)), (77 * MiB + 4096, os.urandom(256 * 1024))]
    write(N1, STATE["src"], delta)
    s2 = snapshot(N1, "snap-2", STATE["src"], {"archive": "main"})
    want = snap_sha(N1, STATE["src"], s2.snapshot_id)
    b = create_remote(N2, "pvc-copy-2", s2.snapshot_id)
    T.check_eq(vol_sha(N2, b.volume_id), want, "bytes of the second copy")
    j = job(N2, b.volume_context["amber.csi.dev/name"])
    changed = sum(len(c) for _, c in delta)
    T.check_eq(j["snapshots_moved"], 1)
    T.check(changed <= j["bytes_on_wire"] < changed * 1.2 + 256 * 1024,
            "a delta pull moved %d bytes for %d changed" % (j["bytes_on_wire"], changed))
    STATE.update(s2=s2.snapshot_id, want2=want)


def hidden_snapshots(node):
    return [s for s in node.ctl("snapshot", "list", "--all") if "amber.internal" in s.get("labels", {})]


def csi_snapshot_ids(node):
    return {e.snapshot.snapshot_id for e in node.csi["ListSnapshots"](pb.ListSnapshotsRequest(),
                                                                      timeout=30).entries}


def test_volume_from_another_nodes_volume_is_byte_identical():
    """A CSI clone of n1's volume on n2: n1 takes a hidden snapshot of it,
    n2 pulls its delta (n2 holds s2 of the chain), clones it, and n1
    removes the hidden snapshot; it is never listed by CSI."""
    delta = [(9 * MiB, os.urandom(512 * 1024))]
    write(N1, STATE["src"], delta)
    want = vol_sha(N1, STATE["src"])
    os.mkfifo(HOLD)
    e = T.expect_status(Code.ABORTED, create, N2, "pvc-clone", vol=STATE["src"])
    T.check("operation pending" in e.details() and "volume %s" % local(STATE["src"]) in e.details(),
            e.details())
    fifo = os.open(HOLD, os.O_WRONLY)       # the copy is done, the job waits before its clone
    try:
        hid = hidden_snapshots(N1)
        T.check_eq(len(hid), 1, "n1's hidden snapshot while n2 copies")
        T.check_eq(hid[0]["volume_id"], local(STATE["src"]))
        for n in (N1, N2):
            ids = {local(i) for i in csi_snapshot_ids(n)}
            T.check(hid[0]["id"] not in ids, "hidden snapshot in %s's ListSnapshots" % n.name)
        T.check(all(hid[0]["id"] != s["id"] for s in N2.ctl("snapshot", "list")),
                "n2's replica of the hidden snapshot is listed")
        show = N2.ctl("volume", "show", "pvc-clone", json_out=False)
        T.check("volume %s of node n1" % local(STATE["src"]) in show, show)
    finally:
        os.unlink(HOLD)
        os.write(fifo, b"x")
        os.close(fifo)
    b = create(N2, "pvc-clone", vol=STATE["src"])
    T.check(b.volume_id.startswith("n2/"), b.volume_id)
    T.check_eq(b.content_source.volume.volume_id, STATE["src"])
    T.check_eq(vol_sha(N2, b.volume_id), want, "bytes of the clone on n2")
    j = job(N2, b.volume_context["amber.csi.dev/name"])
    T.check_eq((j["state"], j["source_volume"]), ("done", local(STATE["src"])))
    changed = sum(len(c) for _, c in delta)
    T.check_eq(j["snapshots_moved"], 1)
    T.check(changed <= j["bytes_on_wire"] < changed * 1.2 + 256 * 1024,
            "a clone moved %d bytes for %d changed since s2" % (j["bytes_on_wire"], changed))
    T.check_eq(hidden_snapshots(N1), [], "n1's hidden snapshot outlived the copy")
    # Idempotent, also once the hidden snapshot is gone.
    T.check_eq(create(N2, "pvc-clone", vol=STATE["src"]).volume_id, b.volume_id)
    g = N2.csi["ControllerGetVolume"](pb.ControllerGetVolumeRequest(volume_id=b.volume_id), timeout=30)
    T.check_eq(g.volume.content_source.volume.volume_id, STATE["src"])
    # The replicas n2 keeps of pulled snapshots are not volumes of CSI's.
    listed = [e.volume.volume_id for e in N2.csi["ListVolumes"](pb.ListVolumesRequest(), timeout=30).entries]
    names = [v["name"] for v in N2.ctl("volume", "list")]
    every = [v["name"] for v in N2.ctl("volume", "list", "--all")]
    T.check(not any(n.startswith("c-") for n in names), names)
    T.check(any(n.startswith("c-") for n in every), every)
    T.check(b.volume_id in listed and len(listed) == len(names), (listed, names))


def test_clone_resumes_after_the_holder_is_killed():
    """n1 dies right after taking the hidden snapshot (before it answers):
    n2's job fails, the provisioner's retry after n1's restart finds the
    same hidden snapshot, the copy finishes, the snapshot goes."""
    N1.amberd.stop()
    N1.amberd.start(env=dict(ACK, AMBER_CRASH_AT="cluster-clone:prepared"))
    write(N1, STATE["src"], [(33 * MiB, os.urandom(256 * 1024))])
    want = vol_sha(N1, STATE["src"])
    T.expect_status(Code.ABORTED, create, N2, "pvc-clone-2", vol=STATE["src"])
    T.expect_status(Code.UNAVAILABLE, create, N2, "pvc-clone-2", vol=STATE["src"])
    N1.amberd.proc.wait(timeout=60)
    T.check("AMBER_CRASH_AT=cluster-clone:prepared" in N1.amberd.log(), "n1 did not crash at the point")
    N1.amberd.kill()
    N1.amberd.start(env=ACK)
    T.check_eq(len(hidden_snapshots(N1)), 1, "the hidden snapshot of before the crash")
    b = create_remote(N2, "pvc-clone-2", None, vol=STATE["src"])
    T.check_eq(vol_sha(N2, b.volume_id), want, "bytes of the clone after n1's restart")
    T.check("resumes its copy of volume" in N1.amberd.log(), "n1 took another hidden snapshot")
    T.check_eq(hidden_snapshots(N1), [])


def test_abandoned_clone_is_swept_and_the_job_resumes_at_restart():
    """n2 dies mid-job (held after its copy): the job is in n2's catalog.
    n1's hidden snapshot, once expired (TTL 0 here), is swept as an
    abandoned copy. n2's restart runs the job again on its own: n1 takes a
    new hidden snapshot, n2 finishes, n1 removes it."""
    N1.amberd.stop()
    N1.amberd.start(env=dict(ACK, AMBER_CLUSTER_CLONE_TTL_S="0"))
    want = vol_sha(N1, STATE["src"])
    os.mkfifo(HOLD)
    try:
        T.expect_status(Code.ABORTED, create, N2, "pvc-clone-3", vol=STATE["src"])
        fifo = os.open(HOLD, os.O_WRONLY)       # the copy is done; the job waits
        try:
            T.check_eq(len(hidden_snapshots(N1)), 1)
            N2.amberd.kill()
        finally:
            os.close(fifo)
    finally:
        os.unlink(HOLD)
    T.check_eq(N1.ctl("cluster", "gc")["clone_snapshots_deleted"], 1)
    T.check_eq(hidden_snapshots(N1), [])
    N2.amberd.start(env=ACK)
    j = job(N2, "pvc-clone-3")
    T.check_eq(j["attempts"], 2)
    b = create(N2, "pvc-clone-3", vol=STATE["src"])
    T.check_eq(vol_sha(N2, b.volume_id), want, "bytes of the clone resumed at n2's restart")
    T.check_eq(hidden_snapshots(N1), [])
    N1.amberd.stop()
    N1.amberd.start(env=ACK)


def test_hidden_replicas_are_collected_when_no_clone_needs_them():
    """Rule: a hidden replica c-<id> stays while a volume of this node is a
    clone of one of its snapshots (the delta base of the next copy); once
    the last is deleted, `cluster gc` (and the next job, and a restart)
    deletes it with its snapshots."""
    def replicas():
        return sorted(v["name"] for v in N2.ctl("volume", "list", "--all") if v["name"].startswith("c-"))
    before = replicas()
    T.check_eq(len(before), 1, before)
    clones = [v for v in N2.ctl("volume", "list") if v["source_snapshot"]]
    T.check(len(clones) >= 3, clones)
    # Inside it, the copy of the abandoned clone's hidden snapshot (neither
    # a clone's source nor the newest) is gone; those clones need stay.
    N2.ctl("cluster", "gc")
    snaps = N2.ctl("snapshot", "list", "--all", "--volume", before[0])
    sources = {v["source_snapshot"] for v in clones}
    hidden = [x["id"] for x in snaps if "amber.internal" in x.get("labels", {})]
    T.check(len(hidden) >= 3, snaps)
    T.check(all(h in sources or h == snaps[-1]["id"] for h in hidden), (hidden, sources))
    for v in clones[1:]:
        N2.csi["DeleteVolume"](pb.DeleteVolumeRequest(volume_id="n2/" + v["id"]), timeout=60)
    T.check_eq(N2.ctl("cluster", "gc")["replicas_deleted"], 0)
    T.check_eq(replicas(), before, "collected while a clone of it is left")
    N2.csi["DeleteVolume"](pb.DeleteVolumeRequest(volume_id="n2/" + clones[0]["id"]), timeout=60)
    T.check_eq(N2.ctl("cluster", "gc")["replicas_deleted"], 1)
    T.check_eq(replicas(), [])
    T.check(not any(s["volume"] == before[0] for s in N2.ctl("snapshot", "list", "--all")),
            "the replica's snapshots outlived it")


def test_node_killed_mid_copy_resumes():
    n3 = Node("n3", env={"AMBER_CRASH_AT": "cluster-pull:half"})
    STATE["n3"] = n3
    fp = n3.ctl("info")["fingerprint"]
    T.expect_status(Code.ABORTED, create, n3, "pvc-three", STATE["s1"])
    # The retry waits for the job; amberd dies half way through the stream.
    e = T.expect_status(Code.UNAVAILABLE, create, n3, "pvc-three", STATE["s1"])
    n3.amberd.proc.wait(timeout=60)
    T.check("AMBER_CRASH_AT=cluster-pull:half" in n3.amberd.log(), "did not crash at the point")
    n3.amberd.kill()
    n3.amberd.start(env=ACK)
    # The node certificate outlives a restart (other clusters pin its key).
    T.check_eq(n3.ctl("info")["fingerprint"], fp)
    # The job is in the catalog: it runs again at start, before any retry.
    j = job(n3, "pvc-three")
    T.check_eq(j["attempts"], 2)
    b = create(n3, "pvc-three", STATE["s1"])
    T.check_eq(vol_sha(n3, b.volume_id), STATE["want1"], "bytes after the resumed copy")
    j = job(n3, b.volume_context["amber.csi.dev/name"])
    T.check(j["bytes_resumed"] >= MiB, "nothing was resumed: %s" % j)
    T.check(j["bytes_on_wire"] < STATE["data"] - MiB // 2, "resumed copy sent everything again: %s" % j)
    del e


def tls_probe(cert, key, addr):
    """Handshake with the peer port and read its first bytes (the HTTP/2
    SETTINGS) with this client certificate. True if the server talks."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(cert, key)
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=20) as raw:
        try:
            with ctx.wrap_socket(raw) as s:
                s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\0\0\0\4\0\0\0\0\0")
                return len(s.recv(64)) > 0
        except (ssl.SSLError, ConnectionResetError, BrokenPipeError):
            return False


def test_certificate_not_signed_by_the_cluster_ca_is_refused():
    addr = N1.ctl("cluster", "resolve", "n1")["address"]
    good = os.path.join(D, "good")
    run(AMBERCTL, "cluster", "issue", "n9", "--ca", CA, "--out", good)
    T.check(tls_probe(os.path.join(good, "n9.crt"), os.path.join(good, "n9.key"), addr),
            "a certificate the cluster CA signed was refused")
    rogue_ca, rogue = os.path.join(D, "rogue-ca"), os.path.join(D, "rogue")
    run(AMBERCTL, "cluster", "init-ca", "--out", rogue_ca)
    run(AMBERCTL, "cluster", "issue", "n2", "--ca", rogue_ca, "--out", rogue)
    T.check(not tls_probe(os.path.join(rogue, "n2.crt"), os.path.join(rogue, "n2.key"), addr),
            "a certificate of another CA was accepted")
    # The server logs the refusal after its alert reached us: wait for the
    # line (a condition, bounded), not for a time.
    def refusal_logged():
        return any("certificate" in l and "refused" in l for l in N1.amberd.log().lower().splitlines())
    deadline = time.monotonic() + 60
    while not refusal_logged() and time.monotonic() < deadline:
        time.sleep(0.1)
    T.check(refusal_logged(), "the refusal is not logged")


def test_old_handles_still_resolve():
    old = N1.plugin("csi-old", [])     # no --node-handles: ids as before
    q = pb.CreateVolumeRequest(name="pvc-old", volume_capabilities=[cap()],
                               capacity_range=pb.CapacityRange(required_bytes=32 * MiB))
    v = old["CreateVolume"](q, timeout=60).volume
    T.check("/" not in v.volume_id, v.volume_id)
    s = old["CreateSnapshot"](pb.CreateSnapshotRequest(name="snap-old", source_volume_id=v.volume_id),
                              timeout=60).snapshot
    T.check("/" not in s.snapshot_id, s.snapshot_id)
    # The node-handle plugin reads the plain ids as "this node".
    g = N1.csi["ControllerGetVolume"](pb.ControllerGetVolumeRequest(volume_id=v.volume_id), timeout=30)
    T.check_eq(g.volume.volume_id, "n1/" + v.volume_id)
    ls = N1.csi["ListSnapshots"](pb.ListSnapshotsRequest(snapshot_id=s.snapshot_id), timeout=30)
    T.check_eq([e.snapshot.snapshot_id for e in ls.entries], ["n1/" + s.snapshot_id])
    c = create(N1, "pvc-from-old", s.snapshot_id, size=32 * MiB)
    T.check_eq(c.content_source.snapshot.snapshot_id, "n1/" + s.snapshot_id)
    # Another node's handle of a local id is not this node's volume.
    T.expect_status(Code.NOT_FOUND, N1.csi["ControllerGetVolume"],
                    pb.ControllerGetVolumeRequest(volume_id="n2/" + v.volume_id), timeout=30)
    N1.csi["DeleteSnapshot"](pb.DeleteSnapshotRequest(snapshot_id=s.snapshot_id), timeout=30)
    T.check_eq(len(old["ListSnapshots"](pb.ListSnapshotsRequest(snapshot_id=s.snapshot_id),
                                        timeout=30).entries), 0)


def test_node_stage_and_unstage_take_node_handles():
    v = create(N1, "pvc-stage", size=16 * MiB)
    stage = os.path.join(D, "stage")
    os.makedirs(stage, exist_ok=True)
    N1.csi["NodeStageVolume"](pb.NodeStageVolumeRequest(
        volume_id=v.volume_id, staging_target_path=stage, volume_capability=cap()), timeout=60)
    T.check(N1.ctl("volume", "show", local(v.volume_id)).get("device"), "not attached by NodeStageVolume")
    N1.csi["NodeUnstageVolume"](pb.NodeUnstageVolumeRequest(
        volume_id=v.volume_id, staging_target_path=stage), timeout=60)
    T.check(not N1.ctl("volume", "show", local(v.volume_id)).get("device"), "still attached after unstage")


def test_group_snapshots_and_metadata_take_node_handles():
    vols = [create(N1, "pvc-g%d" % i, size=16 * MiB).volume_id for i in range(2)]
    write(N1, vols[0], [(MiB, os.urandom(64 * 1024))])
    q = pb.CreateVolumeGroupSnapshotRequest(name="group-1", source_volume_ids=vols)
    g = N1.csi["CreateVolumeGroupSnapshot"](q, timeout=60).group_snapshot
    T.check(all(m.snapshot_id.startswith("n1/") for m in g.snapshots), g)
    T.check_eq(sorted(m.source_volume_id for m in g.snapshots), sorted(vols))
    again = N1.csi["CreateVolumeGroupSnapshot"](q, timeout=60).group_snapshot    # idempotent
    T.check_eq(again.group_snapshot_id, g.group_snapshot_id)
    ids = [m.snapshot_id for m in g.snapshots]
    got = N1.csi["GetVolumeGroupSnapshot"](pb.GetVolumeGroupSnapshotRequest(
        group_snapshot_id=g.group_snapshot_id, snapshot_ids=ids), timeout=30).group_snapshot
    T.check_eq(sorted(m.snapshot_id for m in got.snapshots), sorted(ids))
    m0 = [m for m in g.snapshots if m.source_volume_id == vols[0]][0]
    blocks = [b for r in N1.csi["alloc"](pb.GetMetadataAllocatedRequest(snapshot_id=m0.snapshot_id),
                                         timeout=60) for b in r.block_metadata]
    T.check(any(b.byte_offset <= MiB < b.byte_offset + b.size_bytes for b in blocks), blocks)


def manifests():
    return {m["snapshot"]: m for m in N2.ctl("repo", "list", "--repo", S3, "--password-file", PWF)}


def test_holding_node_gone_restores_from_the_archive():
    s1, s2 = local(STATE["s1"]), local(STATE["s2"])
    for s in (s1, s2):
        st = N1.ctl("snapshot", "archive", s, "--to", "main", "--wait")
        T.check_eq(st["state"], "done")
    T.check("archive:  main: done" in N1.ctl("snapshot", "show", s2, json_out=False))
    T.check({s1, s2} <= set(manifests()), manifests())
    n3 = STATE["n3"]
    T.check_eq(N1.amberd.stop(), 0)          # n1 is gone for good
    b = create_remote(n3, "pvc-after-n1", STATE["s2"])
    j = job(n3, b.volume_context["amber.csi.dev/name"])
    T.check_eq(j["archive"], "main")
    T.check_eq(vol_sha(n3, b.volume_id), STATE["want2"], "bytes restored from the archive")
    T.check_eq(b.content_source.snapshot.snapshot_id, "n3/" + s2)
    # DeleteSnapshot of n1's snapshot, answered by a surviving node: gone
    # from the archive; the chain's other manifest stays whole.
    n3.csi["DeleteSnapshot"](pb.DeleteSnapshotRequest(snapshot_id=STATE["s2"]), timeout=60)
    m = manifests()
    T.check(s2 not in m and s1 in m, m)
    v = n3.ctl("repo", "verify", "--repo", S3, "--password-file", PWF)
    T.check(all(x["ok"] for x in v), v)
    # By hand: the last one goes, and with it every chunk (gc-grace=0).
    f = n3.ctl("cluster", "forget", s1)
    T.check(f["manifests_deleted"] == 1 and f["chunks_deleted"] > 0, f)
    T.check_eq(manifests(), {})


def test_clean_stop():
    """Every daemon and plugin stops cleanly (under ASan: no leak, no error)."""
    for n in (N1, N2, STATE["n3"]):
        for p, log in n.plugins:
            p.terminate()
            rc = p.wait(timeout=30)
            if rc != 0:
                with open(log, errors="replace") as f:
                    print("--- last lines of %s" % log + "".join(f.readlines()[-40:]))
            T.check_eq(rc, 0, "amber-csi of %s" % n.name)
        n.detach_all()
        T.check_eq(n.amberd.stop(), 0, "amberd of %s" % n.name)


def logged(fn):
    """Every node's amberd log is shown when a test fails (the runner shows
    those of T.DAEMONS, which it empties after each test)."""
    def run():
        T.DAEMONS[:] = [n.amberd for n in (N1, N2, STATE.get("n3")) if n]
        fn()
    run.__name__ = fn.__name__
    return run


sys.exit(T.Tests().run([logged(f) for f in [
    test_volume_from_another_nodes_snapshot_is_byte_identical,
    test_second_snapshot_moves_only_its_delta,
    test_volume_from_another_nodes_volume_is_byte_identical,
    test_clone_resumes_after_the_holder_is_killed,
    test_abandoned_clone_is_swept_and_the_job_resumes_at_restart,
    test_hidden_replicas_are_collected_when_no_clone_needs_them,
    test_node_killed_mid_copy_resumes,
    test_certificate_not_signed_by_the_cluster_ca_is_refused,
    test_old_handles_still_resolve,
    test_node_stage_and_unstage_take_node_handles,
    test_group_snapshots_and_metadata_take_node_handles,
    test_holding_node_gone_restores_from_the_archive,
    test_clean_stop,
]]))
