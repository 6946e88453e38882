#!/usr/bin/python3
"""The CSI GroupController of amber-csi (VolumeGroupSnapshots), through a
real gRPC client (python3-grpcio) on the plugin's socket, against a real
amberd on a loop pool.

Consistency at one instant: a writer thread writes sequence number n to a
file on each member's filesystem in turn (O_DIRECT, in place), then n+1,
and so on, while group snapshots are taken (frozen: the default). In every
group, read from the member snapshots' devices, the numbers must be what
one instant of that writer can show: non-increasing in write order and at
most one apart (v1 >= v2 >= ... >= v1 - 1). Two and three volumes.
With freeze: "false" the same check is run and the violations are counted
and printed (amberd takes the members one after another: not one instant).

Also: idempotent re-creation (same name and volumes: the same group; other
volumes: ALREADY_EXISTS), Get, deletion (members gone, again is fine),
members usable as ordinary snapshots (a volume restored from one, a
SnapshotMetadata delta between two groups' members), and the error codes."""
import mmap
import os
import struct
import subprocess
import sys
import threading
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
for tool in ("mkfs.ext4", "filefrag"):
    if not any(os.access(os.path.join(d_, tool), os.X_OK)
               for d_ in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]):
        T.skip("%s is not installed" % tool)
if not os.path.exists("/dev/loop-control"):
    T.skip("no /dev/loop-control")
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as pb  # noqa: E402

PLUGIN = os.path.join(T.BUILD, "amber-csi")
Code = grpc.StatusCode
MiB = 1 << 20
D = T.tmpdir("amber-group-")

d = T.Amberd(size="2G")
sock = os.path.join(D, "csi.sock")
log = open(os.path.join(D, "amber-csi.log"), "ab")
plugin = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", "group-node", "--amberd", d.sock,
                  "--log-level", "debug"], stderr=log)
log.close()
T.wait_for_socket(sock, plugin)
ch = grpc.insecure_channel("unix://" + sock)
T.cleanup.add("close channel", ch.close)
G = {}
for svc, methods in (("csi.v1.GroupController", ["GroupControllerGetCapabilities", "CreateVolumeGroupSnapshot",
                                                 "DeleteVolumeGroupSnapshot", "GetVolumeGroupSnapshot"]),
                     ("csi.v1.Identity", ["GetPluginCapabilities"]),
                     ("csi.v1.Controller", ["CreateVolume", "DeleteVolume", "GetSnapshot", "DeleteSnapshot"])):
    s = T.Stub(ch, svc, pb)
    for m in methods:
        G[m] = s.unary(m, getattr(pb, m + "Request"), getattr(pb, m + "Response"))
# A second plugin whose operations hold their keys until a second call on
# the same key was refused (AMBER_CSI_LOCK_DELAY_MS, as in test-csi).
slow_sock = os.path.join(D, "csi-slow.sock")
log = open(os.path.join(D, "amber-csi-slow.log"), "ab")
slow_plugin = T.spawn([PLUGIN, "--endpoint", "unix://" + slow_sock, "--node-id", "group-node", "--amberd", d.sock,
                       "--log-level", "debug"], stderr=log, env=dict(os.environ, AMBER_CSI_LOCK_DELAY_MS="60000"))
log.close()
T.wait_for_socket(slow_sock, slow_plugin)
slow_ch = grpc.insecure_channel("unix://" + slow_sock)
T.cleanup.add("close channel", slow_ch.close)
SLOW = {m: T.Stub(slow_ch, "csi.v1.GroupController", pb).unary(m, getattr(pb, m + "Request"),
                                                               getattr(pb, m + "Response"))
        for m in ("CreateVolumeGroupSnapshot", "DeleteVolumeGroupSnapshot")}
md = T.Stub(ch, "csi.v1.SnapshotMetadata", pb).server_stream(
    "GetMetadataDelta", pb.GetMetadataDeltaRequest, pb.GetMetadataDeltaResponse)


def create(name, vols, params=None, timeout=120):
    q = pb.CreateVolumeGroupSnapshotRequest(name=name, source_volume_ids=vols)
    q.secrets["token"] = "never-logged"
    if params:
        q.parameters.update(params)
    return G["CreateVolumeGroupSnapshot"](q, timeout=timeout).group_snapshot


def get(gid, ids=()):
    return G["GetVolumeGroupSnapshot"](pb.GetVolumeGroupSnapshotRequest(group_snapshot_id=gid,
                                                                        snapshot_ids=list(ids)),
                                       timeout=30).group_snapshot


def delete(gid, ids=()):
    G["DeleteVolumeGroupSnapshot"](pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=gid,
                                                                       snapshot_ids=list(ids)), timeout=120)


# --- volumes with a filesystem, mounted, each holding one 4 KiB counter file ---

class Member:
    def __init__(self, name):
        self.id = d.ctl("volume", "create", name, "--size", "64M")["id"]
        self.dev = d.ctl("volume", "attach", self.id, json_out=False).strip()
        T.cleanup.add("detach " + name, lambda: d.ctl("volume", "detach", self.id, check=False))
        subprocess.run(["mkfs.ext4", "-q", "-F", self.dev], check=True)
        self.mnt = os.path.join(D, "mnt", name)
        os.makedirs(self.mnt)
        subprocess.run(["mount", self.dev, self.mnt], check=True)
        T.cleanup.add("umount " + self.mnt, lambda: subprocess.run(["umount", self.mnt]))
        path = os.path.join(self.mnt, "counter")
        with open(path, "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
        # The counter's block on the device: in-place O_DIRECT writes keep it there.
        out = subprocess.run(["filefrag", "-e", "-b4096", path], capture_output=True, text=True,
                             check=True).stdout
        row = [ln for ln in out.splitlines() if ln.strip().startswith("0:")][0]
        self.phys = int(row.split(":")[2].split("..")[0]) * 4096
        subprocess.run(["sync"], check=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_DIRECT)
        T.cleanup.add("close " + path, lambda: os.close(self.fd))


def read_counter(dev, off):
    with open(dev, "rb") as f:
        f.seek(off)
        return struct.unpack("<Q", f.read(8))[0]


def member_value(m, snap_id):
    dev = d.ctl("volume", "attach", m.id, "--snapshot", snap_id, json_out=False).strip()
    try:
        return read_counter(dev, m.phys)
    finally:
        d.ctl("volume", "detach", m.id, "--snapshot", snap_id, json_out=False)


class Writer(threading.Thread):
    """Writes n to every member in order, then n+1, ... until stopped."""

    def __init__(self, members):
        super().__init__(daemon=True)
        self.members = members
        self.stop = threading.Event()
        self.n = 0
        self.buf = mmap.mmap(-1, 4096)
        self.error = None

    def run(self):
        try:
            while not self.stop.is_set():
                self.n += 1
                self.buf.seek(0)
                self.buf.write(struct.pack("<Q", self.n))
                for m in self.members:
                    os.pwritev(m.fd, [self.buf], 0)
        except Exception as e:   # reported by the test
            self.error = e


M = [Member("m%d" % i) for i in range(3)]


def groups_under_writer(members, rounds, freeze, tag):
    """Take `rounds` group snapshots while a writer runs; return the values
    each group shows, in member order."""
    w = Writer(members)
    w.start()
    groups = []
    try:
        for i in range(rounds):
            start = w.n
            while w.n < start + 50 and w.is_alive():   # the writer is running between groups
                pass
            g = create("%s-%d" % (tag, i), [m.id for m in members], freeze)
            groups.append(g)
    finally:
        w.stop.set()
        w.join(30)
    T.check(w.error is None, "writer failed: %s" % w.error)
    out = []
    for g in groups:
        by_vol = {s.source_volume_id: s.snapshot_id for s in g.snapshots}
        out.append([member_value(m, by_vol[m.id]) for m in members])
    for g in groups:
        delete(g.group_snapshot_id)
    return out


def one_instant(vals):
    return all(vals[i] >= vals[i + 1] for i in range(len(vals) - 1)) and vals[0] - vals[-1] <= 1


def test_capabilities():
    caps = G["GroupControllerGetCapabilities"](pb.GroupControllerGetCapabilitiesRequest(), timeout=60)
    T.check_eq([c.rpc.type for c in caps.capabilities],
               [pb.GroupControllerServiceCapability.RPC.CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT], "capabilities")
    types = [c.service.type for c in G["GetPluginCapabilities"](pb.GetPluginCapabilitiesRequest(),
                                                                timeout=60).capabilities if c.HasField("service")]
    T.check(pb.PluginCapability.Service.GROUP_CONTROLLER_SERVICE in types, "GROUP_CONTROLLER_SERVICE")


def test_groups_are_one_instant():
    # The default (no parameter) and freeze: "true".
    for members, params in ((M[:2], None), (M, {"freeze": "true"})):
        vals = groups_under_writer(members, 8, params, "frozen%d" % len(members))
        print("frozen, %d volumes: %s" % (len(members), vals))
        bad = [v for v in vals if not one_instant(v)]
        T.check(not bad, "groups not at one instant: %s" % bad)
        T.check(len({v[0] for v in vals}) > 1, "the writer did not advance between groups")


def test_unfrozen_groups_measured():
    vals = groups_under_writer(M, 8, {"freeze": "false"}, "unfrozen")
    bad = [v for v in vals if not one_instant(v)]
    print("not frozen, 3 volumes: %d of %d groups not at one instant: %s" % (len(bad), len(vals), vals))


def test_idempotent_and_get():
    g = create("idem", [M[0].id, M[1].id])
    T.check_eq(len(g.snapshots), 2, "members")
    T.check(g.ready_to_use, "ready")
    T.check(all(s.group_snapshot_id == g.group_snapshot_id for s in g.snapshots), "members name the group")
    T.check_eq(len({(s.creation_time.seconds, s.creation_time.nanos) for s in g.snapshots}), 1,
               "one creation time")
    again = create("idem", [M[1].id, M[0].id])
    T.check_eq(again.group_snapshot_id, g.group_snapshot_id, "same group id")
    T.check_eq(sorted(s.snapshot_id for s in again.snapshots), sorted(s.snapshot_id for s in g.snapshots),
               "same members")
    T.expect_status(Code.ALREADY_EXISTS, create, "idem", [M[0].id, M[2].id])
    T.expect_status(Code.ALREADY_EXISTS, create, "idem", [M[0].id])
    T.expect_status(Code.ALREADY_EXISTS, create, "idem", [m.id for m in M])
    got = get(g.group_snapshot_id, [s.snapshot_id for s in g.snapshots])
    T.check_eq(sorted(s.snapshot_id for s in got.snapshots), sorted(s.snapshot_id for s in g.snapshots), "get")
    T.check_eq(got.creation_time, g.creation_time, "creation time")
    get(g.group_snapshot_id)        # without a list: not checked
    T.expect_status(Code.INVALID_ARGUMENT, get, g.group_snapshot_id, [g.snapshots[0].snapshot_id])
    T.expect_status(Code.INVALID_ARGUMENT, get, g.group_snapshot_id,
                    [s.snapshot_id for s in g.snapshots] + [str(uuid.uuid4())])
    # A member is an ordinary snapshot.
    s = G["GetSnapshot"](pb.GetSnapshotRequest(snapshot_id=g.snapshots[0].snapshot_id), timeout=30).snapshot
    T.check_eq(s.source_volume_id, g.snapshots[0].source_volume_id, "GetSnapshot of a member")
    T.expect_status(Code.INVALID_ARGUMENT, delete, g.group_snapshot_id, [g.snapshots[0].snapshot_id])
    delete(g.group_snapshot_id, [s.snapshot_id for s in g.snapshots])


def test_members_are_ordinary_snapshots():
    a = create("use-a", [M[0].id, M[1].id])
    os.pwritev(M[0].fd, [mmap.mmap(-1, 4096)], 0)       # one block changes on m0
    b = create("use-b", [M[0].id, M[1].id])
    sa = {s.source_volume_id: s.snapshot_id for s in a.snapshots}
    sb = {s.source_volume_id: s.snapshot_id for s in b.snapshots}
    ch0 = [(x.byte_offset, x.size_bytes) for msg in md(pb.GetMetadataDeltaRequest(
        base_snapshot_id=sa[M[0].id], target_snapshot_id=sb[M[0].id]), timeout=60) for x in msg.block_metadata]
    T.check((M[0].phys, 4096) in ch0 or any(o <= M[0].phys < o + n for o, n in ch0),
            "the delta between two groups' members has the counter block: %s" % ch0)
    T.check(sum(n for _, n in ch0) < 2 * MiB, "a small delta: %s" % ch0)
    v = G["CreateVolume"](pb.CreateVolumeRequest(
        name="restored-m1", capacity_range=pb.CapacityRange(required_bytes=64 * MiB),
        volume_capabilities=[pb.VolumeCapability(
            mount=pb.VolumeCapability.MountVolume(fs_type="ext4"),
            access_mode=pb.VolumeCapability.AccessMode(mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))],
        volume_content_source=pb.VolumeContentSource(snapshot=pb.VolumeContentSource.SnapshotSource(
            snapshot_id=sa[M[1].id]))), timeout=120).volume
    T.check_eq(v.content_source.snapshot.snapshot_id, sa[M[1].id], "restored from a member")
    G["DeleteVolume"](pb.DeleteVolumeRequest(volume_id=v.volume_id), timeout=120)
    delete(a.group_snapshot_id)
    delete(b.group_snapshot_id)


def test_delete():
    g = create("del", [m.id for m in M])
    ids = [s.snapshot_id for s in g.snapshots]
    delete(g.group_snapshot_id, ids)
    for sid in ids:
        T.expect_status(Code.NOT_FOUND, G["GetSnapshot"], pb.GetSnapshotRequest(snapshot_id=sid), timeout=30)
    T.expect_status(Code.NOT_FOUND, get, g.group_snapshot_id)
    delete(g.group_snapshot_id, ids)         # again: nothing to do
    delete("group-" + "0" * 32)
    delete("not-a-group")
    # The name is free again, and a new group of other volumes may take it.
    g2 = create("del", [M[2].id])
    T.check_eq(len(g2.snapshots), 1, "recreated")
    delete(g2.group_snapshot_id)


def test_create_and_delete_of_one_group_exclude_each_other():
    """A Create and a Delete of one group at once: one proceeds, the other
    is ABORTED (the slow plugin's first holds the group's key until the
    second was refused), whichever comes first."""
    import concurrent.futures
    ex = concurrent.futures.ThreadPoolExecutor(2)
    gid = create("race", [M[0].id], timeout=120).group_snapshot_id
    delete(gid)
    q = pb.CreateVolumeGroupSnapshotRequest(name="race", source_volume_ids=[M[0].id])
    futs = [ex.submit(SLOW["CreateVolumeGroupSnapshot"], q, timeout=120),
            ex.submit(SLOW["DeleteVolumeGroupSnapshot"],
                      pb.DeleteVolumeGroupSnapshotRequest(group_snapshot_id=gid), timeout=120)]
    codes = []
    for f in futs:
        try:
            f.result()
            codes.append(Code.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    ex.shutdown()
    T.check_eq(sorted(codes, key=str), sorted([Code.OK, Code.ABORTED], key=str), "one proceeds, one ABORTED")
    delete(gid)
    T.expect_status(Code.NOT_FOUND, get, gid)


def test_error_codes():
    T.expect_status(Code.INVALID_ARGUMENT, create, "", [M[0].id])
    T.expect_status(Code.INVALID_ARGUMENT, create, "e", [])
    T.expect_status(Code.INVALID_ARGUMENT, create, "e", [M[0].id, M[0].id])
    T.expect_status(Code.INVALID_ARGUMENT, create, "e", [M[0].id, ""])
    T.expect_status(Code.NOT_FOUND, create, "e", [M[0].id, str(uuid.uuid4())])
    T.expect_status(Code.NOT_FOUND, create, "e", ["m0"])         # a name is not a volume id
    T.expect_status(Code.INVALID_ARGUMENT, create, "e", [M[0].id], {"freeze": "maybe"})
    T.expect_status(Code.INVALID_ARGUMENT, create, "e", [M[0].id], {"label.amber.csi.dev/": "x"})
    T.expect_status(Code.INVALID_ARGUMENT, get, "")
    T.expect_status(Code.NOT_FOUND, get, "group-" + "f" * 32)
    T.expect_status(Code.NOT_FOUND, get, "nonsense")
    T.expect_status(Code.INVALID_ARGUMENT, delete, "")
    # Nothing was left behind by the failures.
    T.check(not [s for s in d.ctl("snapshot", "list") if s["name"].startswith("e")],
            "a failed create left snapshots")


def test_python_manifest():
    """python/amber/k8s_group prints the example's VolumeGroupSnapshot."""
    import yaml
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.join(T.ROOT, "python"), T.PY]))
    out = subprocess.run([sys.executable, "-m", "amber.k8s_group", "train-step-1", "-n", "ml",
                          "-l", "snapshot-group=train"], env=env, capture_output=True, text=True, check=True).stdout
    got = yaml.safe_load(out)
    T.check_eq(got["metadata"].pop("namespace"), "ml", "namespace")
    with open(os.path.join(T.ROOT, "deploy/examples/group-snapshot.yaml")) as f:
        want = [x for x in yaml.safe_load_all(f) if x["kind"] == "VolumeGroupSnapshot"][0]
    T.check_eq(got, want, "the printed manifest")
    p = subprocess.run([sys.executable, "-m", "amber.k8s_group", "x", "-n", "ml", "-l", "novalue"], env=env,
                       capture_output=True, text=True)
    T.check(p.returncode == 2 and "KEY=VALUE" in p.stderr, "a bad selector is a usage error")


sys.exit(T.Tests().run([
    test_capabilities,
    test_python_manifest,
    test_idempotent_and_get,
    test_members_are_ordinary_snapshots,
    test_delete,
    test_create_and_delete_of_one_group_exclude_each_other,
    test_error_codes,
    test_groups_are_one_instant,
    test_unfrozen_groups_measured,
]))
