#!/usr/bin/python3
"""amber-csi against a real amberd on a loop-mounted pool, through a real
gRPC client (Debian's python3-grpcio) on the plugin's unix socket.

Covers the full lifecycle for ext4, xfs and Block (create, stage, publish,
write, snapshot, clone from the snapshot and from the volume, the data is
there, expand through the controller and through the node alone, stats,
unpublish, unstage, delete), the idempotency of every call, each CSI error
code, ABORTED for concurrent calls on one volume (a second plugin whose
operation locks are held longer), and paging.

Every mount the test makes is removed by path at cleanup, then every volume
is detached, then amberd stops (and detaches its pool image)."""
import concurrent.futures
import os
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
for tool in ("mkfs.btrfs", "mkfs.ext4", "mkfs.xfs", "blkid", "resize2fs", "xfs_growfs"):
    if not any(os.access(os.path.join(d, tool), os.X_OK)
               for d in os.environ.get("PATH", "/usr/sbin:/usr/bin").split(":") + ["/usr/sbin", "/sbin"]):
        T.skip("%s is not installed" % tool)
if not os.path.exists("/dev/loop-control"):
    T.skip("no /dev/loop-control")
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as pb  # noqa: E402

AMBERD = os.path.join(T.BUILD, "amberd")
PLUGIN = os.path.join(T.BUILD, "amber-csi")
NODE = "test-node-1"
TOPO_KEY = "topology.amber.csi.dev/node"
MiB = 1 << 20
GiB = 1 << 30
SNW = pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
Code = grpc.StatusCode

D = T.tmpdir("amber-csi-test-")


# --- mounts: tracked by path, removed at cleanup ----------------------------

def mountpoints():
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()[4]
            out.append(p.encode().decode("unicode_escape"))
    return out


def is_mounted(path):
    return os.path.realpath(path) in mountpoints()


def umount_all(path):
    for _ in range(16):
        if not is_mounted(path):
            return
        r = subprocess.run(["umount", path], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["umount", "-l", path], capture_output=True)


def track(path):
    """Remember a path the plugin may mount on; unmounted at cleanup."""
    T.cleanup.add("umount " + path, lambda: umount_all(path))
    return path


# --- the daemons ---------------------------------------------------------------

ASOCK = os.path.join(D, "amberd.sock")
amberd = T.spawn([AMBERD, "--pool", os.path.join(D, "pool"), "--pool-image", os.path.join(D, "pool.img"),
                  "--pool-size", "3G", "--socket", ASOCK, "--node-id", NODE, "--log-level", "warn"])
T.wait_for_socket(ASOCK, amberd, timeout=60)
ach = grpc.insecure_channel("unix://" + ASOCK)
T.cleanup.add("close amberd channel", ach.close)
_as = T.Stub(ach, "amber.v1.Amber", apb)
A = {
    "GetInfo": _as.unary("GetInfo", apb.GetInfoRequest, apb.GetInfoResponse),
    "GetVolume": _as.unary("GetVolume", apb.VolumeRef, apb.Volume),
    "ListVolumes": _as.unary("ListVolumes", apb.ListVolumesRequest, apb.ListVolumesResponse),
    "DetachVolume": _as.unary("DetachVolume", apb.AttachVolumeRequest, apb.Empty),
    "GetSnapshot": _as.unary("GetSnapshot", apb.SnapshotRef, apb.Snapshot),
}


def detach_all():
    for v in A["ListVolumes"](apb.ListVolumesRequest(), timeout=60).volumes:
        if v.device:
            A["DetachVolume"](apb.AttachVolumeRequest(volume=v.id), timeout=30)


T.cleanup.add("detach every volume", detach_all)


LOG = os.path.join(D, "amber-csi.log")


def start_plugin(name, env=None, amberd_sock=None, extra=()):
    sock = os.path.join(D, name + ".sock")
    e = dict(os.environ)
    e.update(env or {})
    log = open(LOG, "ab")
    p = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", NODE, "--amberd", amberd_sock or ASOCK,
                 "--max-volumes", "100", "--log-level", "debug"] + list(extra), env=e, stderr=log)
    log.close()
    T.wait_for_socket(sock, p)
    ch = grpc.insecure_channel("unix://" + sock)
    T.cleanup.add("close channel", ch.close)
    return stubs(ch)


def stubs(ch):
    out = {}
    for svc, methods in (
        ("csi.v1.Identity", ["GetPluginInfo", "GetPluginCapabilities", "Probe"]),
        ("csi.v1.Controller", ["CreateVolume", "DeleteVolume", "ValidateVolumeCapabilities",
                               "ListVolumes", "GetCapacity", "ControllerGetCapabilities",
                               "CreateSnapshot", "DeleteSnapshot", "ListSnapshots", "GetSnapshot",
                               "ControllerExpandVolume", "ControllerGetVolume"]),
        ("csi.v1.Node", ["NodeStageVolume", "NodeUnstageVolume", "NodePublishVolume",
                         "NodeUnpublishVolume", "NodeGetVolumeStats", "NodeExpandVolume",
                         "NodeGetCapabilities", "NodeGetInfo"]),
    ):
        s = T.Stub(ch, svc, pb)
        for m in methods:
            req = getattr(pb, m + "Request")
            resp = getattr(pb, m + "Response")
            out[m] = s.unary(m, req, resp)
    return out


C = start_plugin("csi")
# A second plugin on the same amberd whose operations hold their keys until
# a second call on the same volume was refused: two calls on one volume
# must not both proceed, on a machine of any speed.
SLOW = start_plugin("csi-slow", {"AMBER_CSI_LOCK_DELAY_MS": "60000"})


def call(name, req, stub=None, timeout=60):
    return (stub or C)[name](req, timeout=timeout)


# --- request builders -------------------------------------------------------------

def cap(fs=None, block=False, mode=SNW, flags=()):
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=mode))
    if block:
        c.block.SetInParent()
    else:
        c.mount.fs_type = fs or ""
        c.mount.mount_flags.extend(flags)
    return c


def create_req(name, size=64 * MiB, fs="ext4", block=False, limit=0, snap=None, vol=None, params=None):
    q = pb.CreateVolumeRequest(name=name, volume_capabilities=[cap(fs, block)],
                               capacity_range=pb.CapacityRange(required_bytes=size, limit_bytes=limit))
    if params:
        q.parameters.update(params)
    q.secrets["password"] = "never-logged-secret"
    if snap:
        q.volume_content_source.snapshot.snapshot_id = snap
    if vol:
        q.volume_content_source.volume.volume_id = vol
    return q


def stage_path(name):
    p = os.path.join(D, "staging", name)
    os.makedirs(p, exist_ok=True)     # kubelet makes the staging directory
    return track(p)


def target_path(name):
    return track(os.path.join(D, "pods", name, "mount"))


def stage(vid, name, fs="ext4", block=False, stub=None):
    sp = stage_path(name)
    call("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id=vid, staging_target_path=sp,
                                                      volume_capability=cap(fs, block)), stub)
    return sp


def publish(vid, sp, name, fs="ext4", block=False, ro=False):
    tp = target_path(name)
    call("NodePublishVolume", pb.NodePublishVolumeRequest(
        volume_id=vid, staging_target_path=sp, target_path=tp, volume_capability=cap(fs, block),
        readonly=ro))
    return tp


def unpublish(vid, tp):
    call("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=tp))


def unstage(vid, sp):
    call("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(volume_id=vid, staging_target_path=sp))


def have_cap(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << bit))
    return False


# ext4 grows online only with CAP_SYS_RESOURCE (the kernel's check in
# EXT4_IOC_RESIZE_FS); some sandboxes drop it. Kubernetes' privileged
# containers have it.
EXT4_ONLINE_RESIZE = have_cap(24)
if not EXT4_ONLINE_RESIZE:
    print("note: no CAP_SYS_RESOURCE here: ext4 online growth is expected to fail with a clear error")


def node_expand(req, vid, want, fs, block, path, before):
    """NodeExpandVolume: the device reaches `want` and the filesystem grows
    (or, for ext4 without CAP_SYS_RESOURCE, fails saying so)."""
    if fs == "ext4" and not block and not EXT4_ONLINE_RESIZE:
        e = T.expect_status(Code.INTERNAL, call, "NodeExpandVolume", req)
        T.check("resize2fs" in e.details(), e.details())
        dev = A["GetVolume"](apb.VolumeRef(volume=vid), timeout=60).device
        T.check_eq(dev_size(dev), want, "the device did not grow")
        return
    T.check_eq(call("NodeExpandVolume", req).capacity_bytes, want)
    after = dev_size(path) if block else fs_bytes(path)
    T.check(after > before, "%s did not grow: %d -> %d" % (path, before, after))


def fs_bytes(path):
    st = os.statvfs(path)
    return st.f_blocks * st.f_frsize


def dev_size(path):
    with open(path, "rb") as f:
        return f.seek(0, 2)


# --- tests ----------------------------------------------------------------------------

def test_identity_and_capabilities():
    info = call("GetPluginInfo", pb.GetPluginInfoRequest())
    T.check_eq(info.name, "amber.csi.dev")
    T.check(info.vendor_version, "vendor_version")
    caps = call("GetPluginCapabilities", pb.GetPluginCapabilitiesRequest()).capabilities
    svc = {c.service.type for c in caps if c.HasField("service")}
    T.check_eq(svc, {pb.PluginCapability.Service.CONTROLLER_SERVICE,
                     pb.PluginCapability.Service.VOLUME_ACCESSIBILITY_CONSTRAINTS,
                     pb.PluginCapability.Service.GROUP_CONTROLLER_SERVICE,      # group.c
                     pb.PluginCapability.Service.SNAPSHOT_METADATA_SERVICE})    # snapshot-metadata.c
    exp = [c.volume_expansion.type for c in caps if c.HasField("volume_expansion")]
    T.check_eq(exp, [pb.PluginCapability.VolumeExpansion.ONLINE])
    T.check(call("Probe", pb.ProbeRequest()).ready.value, "Probe: not ready")

    R = pb.ControllerServiceCapability.RPC
    cc = {c.rpc.type for c in call("ControllerGetCapabilities", pb.ControllerGetCapabilitiesRequest()).capabilities}
    want = {R.CREATE_DELETE_VOLUME, R.CREATE_DELETE_SNAPSHOT, R.LIST_SNAPSHOTS, R.GET_SNAPSHOT,
            R.CLONE_VOLUME, R.GET_CAPACITY, R.LIST_VOLUMES, R.VOLUME_CONDITION, R.GET_VOLUME,
            R.SINGLE_NODE_MULTI_WRITER}
    T.check_eq(cc, want, "controller capabilities (no EXPAND_VOLUME without --controller-expand)")
    N = pb.NodeServiceCapability.RPC
    nc = {c.rpc.type for c in call("NodeGetCapabilities", pb.NodeGetCapabilitiesRequest()).capabilities}
    T.check(nc >= {N.STAGE_UNSTAGE_VOLUME, N.GET_VOLUME_STATS, N.EXPAND_VOLUME, N.VOLUME_CONDITION},
            "node capabilities %s" % nc)
    ni = call("NodeGetInfo", pb.NodeGetInfoRequest())
    T.check_eq(ni.node_id, NODE)
    T.check_eq(ni.max_volumes_per_node, 100)
    T.check_eq(dict(ni.accessible_topology.segments), {TOPO_KEY: NODE})


def lifecycle(fs, block=False):
    """The whole life of a volume, its snapshot and two clones."""
    tag = "block" if block else fs
    size = 320 * MiB if fs == "xfs" else 64 * MiB
    params = {"csi.storage.k8s.io/pvc/namespace": "ns-" + tag, "csi.storage.k8s.io/pvc/name": "data-" + tag}
    q = create_req("pvc-life-" + tag, size, fs, block, params=params)
    v = call("CreateVolume", q).volume
    T.check_eq(v.capacity_bytes, size)
    T.check_eq([dict(t.segments) for t in v.accessible_topology], [{TOPO_KEY: NODE}])
    T.check_eq(call("CreateVolume", q).volume.volume_id, v.volume_id, "CreateVolume twice")
    av = A["GetVolume"](apb.VolumeRef(volume=v.volume_id), timeout=60)
    T.check_eq((av.pvc_namespace, av.pvc_name), ("ns-" + tag, "data-" + tag))
    T.check_eq(av.fs_type, "" if block else fs)

    # Stage and publish, each twice (the repeat is a no-op).
    sp = stage(v.volume_id, tag, fs, block)
    stage(v.volume_id, tag, fs, block)
    tp = publish(v.volume_id, sp, tag, fs, block)
    publish(v.volume_id, sp, tag, fs, block)
    T.check(is_mounted(tp), "target is not mounted")
    payload = os.urandom(256 << 10)
    if block:
        T.check(not is_mounted(sp), "a block volume's staging path is not mounted")
        with open(tp, "r+b") as f:
            f.seek(4 * MiB)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
    else:
        T.check(is_mounted(sp), "staging path is not mounted")
        with open(os.path.join(tp, "data.bin"), "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.sync()

    # Snapshot (frozen for ext4: the application-consistent path), twice.
    sq = pb.CreateSnapshotRequest(source_volume_id=v.volume_id, name="snapshot-life-" + tag)
    sq.parameters.update({"label.amber.csi.dev/step": "train",
                          "csi.storage.k8s.io/volumesnapshot/namespace": "ns-" + tag,
                          "csi.storage.k8s.io/volumesnapshot/name": "snap-" + tag,
                          "freeze": "true" if fs == "ext4" and not block else "false"})
    s = call("CreateSnapshot", sq).snapshot
    T.check(s.ready_to_use, "ready_to_use")
    T.check_eq(s.source_volume_id, v.volume_id)
    T.check_eq(s.size_bytes, size)
    T.check(s.creation_time.seconds > 1600000000, "creation_time")
    T.check_eq(call("CreateSnapshot", sq).snapshot.snapshot_id, s.snapshot_id, "CreateSnapshot twice")
    asn = A["GetSnapshot"](apb.SnapshotRef(snapshot=s.snapshot_id), timeout=60)
    T.check_eq((asn.k8s_namespace, asn.k8s_name), ("ns-" + tag, "snap-" + tag))
    T.check_eq({lb.key: lb.value for lb in asn.labels}, {"step": "train"})
    T.check_eq(call("GetSnapshot", pb.GetSnapshotRequest(snapshot_id=s.snapshot_id)).snapshot.snapshot_id,
               s.snapshot_id)

    # Change the live volume: the clone must have the snapshot's bytes.
    if block:
        with open(tp, "r+b") as f:
            f.seek(4 * MiB)
            f.write(b"\0" * len(payload))
            os.fsync(f.fileno())
    else:
        with open(os.path.join(tp, "data.bin"), "wb") as f:
            f.write(b"changed after the snapshot")
            os.fsync(f.fileno())

    cq = create_req("pvc-clone-" + tag, 0, fs, block, snap=s.snapshot_id)
    cv = call("CreateVolume", cq).volume
    T.check_eq(cv.content_source.snapshot.snapshot_id, s.snapshot_id)
    T.check_eq(cv.capacity_bytes, size, "a clone without a size has the snapshot's")
    T.check_eq(call("CreateVolume", cq).volume.volume_id, cv.volume_id, "clone twice")
    csp = stage(cv.volume_id, tag + "-clone", fs, block)
    ctp = publish(cv.volume_id, csp, tag + "-clone", fs, block)
    if block:
        with open(ctp, "rb") as f:
            f.seek(4 * MiB)
            T.check(f.read(len(payload)) == payload, "the block clone lacks the snapshot's bytes")
    else:
        with open(os.path.join(ctp, "data.bin"), "rb") as f:
            T.check(f.read() == payload, "the clone lacks the snapshot's file")

    # Expand through the controller, then the node grows the filesystem.
    new = size + 64 * MiB
    before = dev_size(tp) if block else fs_bytes(tp)
    er = call("ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=pb.CapacityRange(required_bytes=new),
        volume_capability=cap(fs, block)))
    T.check_eq(er.capacity_bytes, new)
    T.check_eq(er.node_expansion_required, not block)
    nq = pb.NodeExpandVolumeRequest(volume_id=v.volume_id, volume_path=tp, staging_target_path=sp,
                                    capacity_range=pb.CapacityRange(required_bytes=new),
                                    volume_capability=cap(fs, block))
    node_expand(nq, v.volume_id, new, fs, block, tp, before)
    node_expand(nq, v.volume_id, new, fs, block, tp, before)    # twice
    if not block:
        with open(os.path.join(tp, "data.bin"), "rb") as f:
            T.check_eq(f.read(), b"changed after the snapshot")

    # The node-local path: NodeExpandVolume alone grows the clone in amberd.
    new2 = size + 128 * MiB
    before = dev_size(ctp) if block else fs_bytes(ctp)
    node_expand(pb.NodeExpandVolumeRequest(volume_id=cv.volume_id, volume_path=ctp,
                                           capacity_range=pb.CapacityRange(required_bytes=new2)),
                cv.volume_id, new2, fs, block, ctp, before)
    T.check_eq(A["GetVolume"](apb.VolumeRef(volume=cv.volume_id), timeout=60).size_bytes, new2)

    # Stats.
    st = call("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=tp))
    T.check(not st.volume_condition.abnormal, st.volume_condition.message)
    units = {u.unit: u for u in st.usage}
    T.check(units[pb.VolumeUsage.BYTES].total >= (new if block else size // 2), "bytes total")
    if not block:
        b = units[pb.VolumeUsage.BYTES]
        T.check(b.used >= len(b"changed") and b.available > 0 and b.used + b.available <= b.total,
                "bytes usage %s" % b)
        T.check(units[pb.VolumeUsage.INODES].total > 0, "inodes")

    # Unstaging under a published volume is refused.
    T.expect_status(Code.FAILED_PRECONDITION, call, "NodeUnstageVolume",
                    pb.NodeUnstageVolumeRequest(volume_id=v.volume_id, staging_target_path=sp))

    # Tear down, each call twice.
    for vid, t, s_ in ((v.volume_id, tp, sp), (cv.volume_id, ctp, csp)):
        unpublish(vid, t)
        unpublish(vid, t)
        T.check(not os.path.exists(t), "target %s still exists" % t)
        unstage(vid, s_)
        unstage(vid, s_)
        T.check(not is_mounted(s_), "staging still mounted")
        T.check_eq(A["GetVolume"](apb.VolumeRef(volume=vid), timeout=60).device, "", "still attached")
    for vid in (cv.volume_id, v.volume_id):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
        T.expect_status(Code.NOT_FOUND, call, "ControllerGetVolume",
                        pb.ControllerGetVolumeRequest(volume_id=vid))
    # The snapshot outlives its volume, and a volume can still be made from it.
    rv = call("CreateVolume", create_req("pvc-restore-" + tag, 0, fs, block, snap=s.snapshot_id)).volume
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=rv.volume_id))
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=s.snapshot_id))
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=s.snapshot_id))
    T.expect_status(Code.NOT_FOUND, call, "GetSnapshot", pb.GetSnapshotRequest(snapshot_id=s.snapshot_id))


def test_lifecycle_ext4():
    lifecycle("ext4")


def test_lifecycle_xfs():
    lifecycle("xfs")


def test_lifecycle_block():
    lifecycle("ext4", block=True)


def test_clone_of_volume_and_readonly_publish():
    v = call("CreateVolume", create_req("pvc-src", 64 * MiB)).volume
    sp = stage(v.volume_id, "src")
    tp = publish(v.volume_id, sp, "src")
    with open(os.path.join(tp, "hello"), "w") as f:
        f.write("from the source volume")
        os.fsync(f.fileno())
    os.sync()
    c = call("CreateVolume", create_req("pvc-src-clone", 128 * MiB, vol=v.volume_id)).volume
    T.check_eq(c.content_source.volume.volume_id, v.volume_id)
    T.check_eq(c.capacity_bytes, 128 * MiB)
    csp = stage(c.volume_id, "src-clone")
    ro = publish(c.volume_id, csp, "src-clone-ro", ro=True)
    with open(os.path.join(ro, "hello")) as f:
        T.check_eq(f.read(), "from the source volume")
    try:
        open(os.path.join(ro, "new"), "w").close()
        raise AssertionError("a read-only publish is writable")
    except OSError:
        pass
    # The same target again with another read-only setting: ALREADY_EXISTS.
    T.expect_status(Code.ALREADY_EXISTS, call, "NodePublishVolume", pb.NodePublishVolumeRequest(
        volume_id=c.volume_id, staging_target_path=csp, target_path=ro, volume_capability=cap("ext4")))
    # A staged volume cannot be deleted.
    T.expect_status(Code.FAILED_PRECONDITION, call, "DeleteVolume", pb.DeleteVolumeRequest(volume_id=c.volume_id))
    for vid, t, s in ((c.volume_id, ro, csp), (v.volume_id, tp, sp)):
        unpublish(vid, t)
        unstage(vid, s)
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))


def test_invalid_argument():
    IA = Code.INVALID_ARGUMENT
    bad = [
        ("CreateVolume", pb.CreateVolumeRequest(volume_capabilities=[cap("ext4")])),
        ("CreateVolume", pb.CreateVolumeRequest(name="pvc-nocap")),
        ("CreateVolume", pb.CreateVolumeRequest(name="pvc-multi", volume_capabilities=[
            cap("ext4", mode=pb.VolumeCapability.AccessMode.MULTI_NODE_MULTI_WRITER)])),
        ("CreateVolume", pb.CreateVolumeRequest(name="pvc-btrfs", volume_capabilities=[cap("btrfs")])),
        ("CreateVolume", pb.CreateVolumeRequest(name="pvc-noaccess", volume_capabilities=[
            pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=SNW))])),
        ("CreateVolume", create_req("pvc-param", params={"fsType": "zfs"})),
        ("DeleteVolume", pb.DeleteVolumeRequest()),
        ("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(volume_id="x")),
        ("ControllerExpandVolume", pb.ControllerExpandVolumeRequest(volume_id="x")),
        ("ControllerGetVolume", pb.ControllerGetVolumeRequest()),
        ("CreateSnapshot", pb.CreateSnapshotRequest(name="s")),
        ("CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id="x")),
        ("DeleteSnapshot", pb.DeleteSnapshotRequest()),
        ("GetSnapshot", pb.GetSnapshotRequest()),
        ("ListVolumes", pb.ListVolumesRequest(max_entries=-1)),
        ("NodeStageVolume", pb.NodeStageVolumeRequest(staging_target_path="/x", volume_capability=cap("ext4"))),
        ("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id="x", volume_capability=cap("ext4"))),
        ("NodeStageVolume", pb.NodeStageVolumeRequest(volume_id="x", staging_target_path="/x")),
        ("NodePublishVolume", pb.NodePublishVolumeRequest(volume_id="x", staging_target_path="/x",
                                                          volume_capability=cap("ext4"))),
        ("NodePublishVolume", pb.NodePublishVolumeRequest(target_path="/x", staging_target_path="/x",
                                                          volume_capability=cap("ext4"))),
        ("NodePublishVolume", pb.NodePublishVolumeRequest(volume_id="x", target_path="/x",
                                                          staging_target_path="/x")),
        ("NodeUnpublishVolume", pb.NodeUnpublishVolumeRequest(volume_id="x")),
        ("NodeUnstageVolume", pb.NodeUnstageVolumeRequest(staging_target_path="/x")),
        ("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id="x")),
        ("NodeExpandVolume", pb.NodeExpandVolumeRequest(volume_path="/x")),
    ]
    for name, req in bad:
        try:
            T.expect_status(IA, call, name, req)
        except AssertionError as e:
            raise AssertionError("%s(%s): %s" % (name, str(req).replace("\n", " "), e))


def test_not_found():
    missing = "0b7e4bd2-9d1c-4c5e-8a63-5a3bd1f0c0de"
    NF = Code.NOT_FOUND
    T.expect_status(NF, call, "CreateVolume", create_req("pvc-nf-1", snap=missing))
    T.expect_status(NF, call, "CreateVolume", create_req("pvc-nf-2", vol=missing))
    T.expect_status(NF, call, "CreateVolume", create_req("pvc-nf-3", snap="not-an-id"))
    T.expect_status(NF, call, "ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id=missing))
    T.expect_status(NF, call, "ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
        volume_id=missing, volume_capabilities=[cap("ext4")]))
    T.expect_status(NF, call, "ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
        volume_id=missing, capacity_range=pb.CapacityRange(required_bytes=GiB)))
    T.expect_status(NF, call, "CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=missing, name="s-nf"))
    T.expect_status(NF, call, "GetSnapshot", pb.GetSnapshotRequest(snapshot_id=missing))
    T.expect_status(NF, call, "NodeStageVolume", pb.NodeStageVolumeRequest(
        volume_id=missing, staging_target_path=stage_path("nf"), volume_capability=cap("ext4")))
    T.expect_status(NF, call, "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=missing, volume_path=D))
    T.expect_status(NF, call, "NodeExpandVolume", pb.NodeExpandVolumeRequest(volume_id=missing, volume_path=D))
    # Deleting what does not exist is success, per the spec.
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=missing))
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id="no-such-volume"))
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=missing))
    # Unpublish/unstage of paths with nothing mounted: success.
    unpublish(missing, os.path.join(D, "nothing-here"))
    unstage(missing, os.path.join(D, "nothing-here"))
    # A real volume, but stats asked at a path where it is not.
    v = call("CreateVolume", create_req("pvc-nf-stats", 16 * MiB)).volume
    sp = stage(v.volume_id, "nf-stats")
    other = os.path.join(D, "elsewhere")
    os.makedirs(other, exist_ok=True)
    st = call("NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(volume_id=v.volume_id, volume_path=other))
    T.check(st.volume_condition.abnormal, "a path without the mount must be abnormal")
    T.expect_status(NF, call, "NodeGetVolumeStats", pb.NodeGetVolumeStatsRequest(
        volume_id=v.volume_id, volume_path=os.path.join(D, "missing-path")))
    unstage(v.volume_id, sp)
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=v.volume_id))


def test_already_exists():
    AE = Code.ALREADY_EXISTS
    v = call("CreateVolume", create_req("pvc-ae", 32 * MiB)).volume
    T.expect_status(AE, call, "CreateVolume", create_req("pvc-ae", 64 * MiB))
    T.expect_status(AE, call, "CreateVolume", create_req("pvc-ae", 32 * MiB, fs="xfs", limit=GiB))
    # A smaller request still fits the existing volume: the same volume.
    T.check_eq(call("CreateVolume", create_req("pvc-ae", 16 * MiB)).volume.volume_id, v.volume_id)
    w = call("CreateVolume", create_req("pvc-ae-2", 32 * MiB)).volume
    s = call("CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=v.volume_id, name="snap-ae")).snapshot
    T.expect_status(AE, call, "CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=w.volume_id,
                                                                        name="snap-ae"))
    # A different content source under the same name.
    T.expect_status(AE, call, "CreateVolume", create_req("pvc-ae-2", 32 * MiB, snap=s.snapshot_id))
    # Staged as ext4, then asked to stage there as xfs.
    sp = stage(v.volume_id, "ae")
    T.expect_status(AE, call, "NodeStageVolume", pb.NodeStageVolumeRequest(
        volume_id=v.volume_id, staging_target_path=sp, volume_capability=cap("xfs")))
    # ...and at a fresh path as xfs: it holds ext4, which is never reformatted.
    T.expect_status(Code.FAILED_PRECONDITION, call, "NodeStageVolume", pb.NodeStageVolumeRequest(
        volume_id=v.volume_id, staging_target_path=stage_path("ae-xfs"), volume_capability=cap("xfs")))
    unstage(v.volume_id, sp)
    call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=s.snapshot_id))
    for x in (v, w):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=x.volume_id))


def test_out_of_range_and_resource_exhausted():
    OOR = Code.OUT_OF_RANGE
    T.expect_status(OOR, call, "CreateVolume", create_req("pvc-oor-1", 64 * MiB, limit=32 * MiB))
    T.expect_status(OOR, call, "CreateVolume", create_req("pvc-oor-2", 5000, limit=6000))
    T.expect_status(OOR, call, "CreateVolume", create_req("pvc-oor-3", 16 * MiB, fs="xfs", limit=100 * MiB))
    v = call("CreateVolume", create_req("pvc-oor-ok", 5000, limit=8192)).volume
    T.check_eq(v.capacity_bytes, 8192, "rounded up to 4 KiB")
    T.expect_status(OOR, call, "ControllerExpandVolume", pb.ControllerExpandVolumeRequest(
        volume_id=v.volume_id, capacity_range=pb.CapacityRange(required_bytes=10000, limit_bytes=10000)))
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=v.volume_id))

    RE = Code.RESOURCE_EXHAUSTED
    T.expect_status(RE, call, "CreateVolume", create_req("pvc-huge", 100 * GiB))
    q = create_req("pvc-elsewhere")
    t = q.accessibility_requirements.requisite.add()
    t.segments[TOPO_KEY] = "some-other-node"
    T.expect_status(RE, call, "CreateVolume", q)
    # Requisite including this node is fine, and preferred order is ours.
    q = create_req("pvc-here", 16 * MiB)
    for node in ("some-other-node", NODE):
        q.accessibility_requirements.requisite.add().segments[TOPO_KEY] = node
    q.accessibility_requirements.preferred.add().segments[TOPO_KEY] = NODE
    v = call("CreateVolume", q).volume
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=v.volume_id))


def test_aborted_for_concurrent_calls():
    ex = concurrent.futures.ThreadPoolExecutor(4)
    # Two creates of one name: the slow plugin's first holds the key until
    # the second was refused.
    q = create_req("pvc-race", 16 * MiB)
    futs = [ex.submit(SLOW["CreateVolume"], q, timeout=120) for _ in range(2)]
    ok, aborted = [], []
    for f in futs:
        try:
            ok.append(f.result().volume.volume_id)
        except grpc.RpcError as e:
            T.check_eq(e.code(), Code.ABORTED, e.details())
            aborted.append(e)
    T.check_eq((len(ok), len(aborted)), (1, 1), "one create proceeds, one is ABORTED")
    vid = ok[0]
    # Two stages of one volume at once.
    sp = stage_path("race")
    sq = pb.NodeStageVolumeRequest(volume_id=vid, staging_target_path=sp, volume_capability=cap("ext4"))
    futs = [ex.submit(SLOW["NodeStageVolume"], sq, timeout=120) for _ in range(2)]
    codes = []
    for f in futs:
        try:
            f.result()
            codes.append(Code.OK)
        except grpc.RpcError as e:
            codes.append(e.code())
    T.check_eq(sorted(codes, key=str), sorted([Code.OK, Code.ABORTED], key=str))
    # Afterwards the call goes through (retries succeed; a lone call on the
    # slow plugin would wait out its hold).
    call("NodeStageVolume", sq)
    unstage(vid, sp)
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))
    ex.shutdown()


def test_list_volumes_paging():
    ids = {call("CreateVolume", create_req("pvc-page-%d" % i, 8 * MiB, block=True)).volume.volume_id
           for i in range(5)}
    seen, token, pages = [], "", 0
    while True:
        r = call("ListVolumes", pb.ListVolumesRequest(max_entries=2, starting_token=token))
        T.check(len(r.entries) <= 2, "page larger than max_entries")
        for e in r.entries:
            seen.append(e.volume.volume_id)
            T.check(not e.status.volume_condition.abnormal, e.status.volume_condition.message)
        pages += 1
        token = r.next_token
        if not token:
            break
        T.check(pages < 50, "paging does not end")
    T.check_eq(len(seen), len(set(seen)), "a volume listed twice")
    T.check(ids <= set(seen), "volumes missing from the list")
    allv = call("ListVolumes", pb.ListVolumesRequest())
    T.check_eq({e.volume.volume_id for e in allv.entries}, set(seen))
    T.expect_status(Code.ABORTED, call, "ListVolumes", pb.ListVolumesRequest(starting_token="garbage-token"))
    for vid in ids:
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=vid))


def test_list_snapshots():
    v = call("CreateVolume", create_req("pvc-snaps", 8 * MiB, block=True)).volume
    w = call("CreateVolume", create_req("pvc-snaps-other", 8 * MiB, block=True)).volume
    snaps = [call("CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=v.volume_id,
                                                             name="snapshot-list-%d" % i)).snapshot.snapshot_id
             for i in range(3)]
    other = call("CreateSnapshot", pb.CreateSnapshotRequest(source_volume_id=w.volume_id,
                                                            name="snapshot-list-other")).snapshot.snapshot_id
    r = call("ListSnapshots", pb.ListSnapshotsRequest(snapshot_id=snaps[1]))
    T.check_eq([e.snapshot.snapshot_id for e in r.entries], [snaps[1]])
    r = call("ListSnapshots", pb.ListSnapshotsRequest(snapshot_id="0b7e4bd2-9d1c-4c5e-8a63-5a3bd1f0c0de"))
    T.check_eq(len(r.entries), 0)
    seen, token = [], ""
    while True:
        r = call("ListSnapshots", pb.ListSnapshotsRequest(source_volume_id=v.volume_id, max_entries=2,
                                                          starting_token=token))
        T.check(len(r.entries) <= 2, "page size")
        seen += [e.snapshot.snapshot_id for e in r.entries]
        token = r.next_token
        if not token:
            break
    T.check_eq(sorted(seen), sorted(snaps))
    allsnaps = {e.snapshot.snapshot_id for e in call("ListSnapshots", pb.ListSnapshotsRequest()).entries}
    T.check(set(snaps) | {other} <= allsnaps, "list of all snapshots")
    T.expect_status(Code.ABORTED, call, "ListSnapshots", pb.ListSnapshotsRequest(starting_token="garbage"))
    for s in snaps + [other]:
        call("DeleteSnapshot", pb.DeleteSnapshotRequest(snapshot_id=s))
    for x in (v, w):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=x.volume_id))


def test_capacity_validate_and_condition():
    info = A["GetInfo"](apb.GetInfoRequest(), timeout=60)
    r = call("GetCapacity", pb.GetCapacityRequest(volume_capabilities=[cap("ext4")]))
    T.check(0 < r.available_capacity <= info.pool_total_bytes, "capacity %d" % r.available_capacity)
    r = call("GetCapacity", pb.GetCapacityRequest(accessible_topology=pb.Topology(segments={TOPO_KEY: "other"})))
    T.check_eq(r.available_capacity, 0, "capacity on another node")
    r = call("GetCapacity", pb.GetCapacityRequest(accessible_topology=pb.Topology(segments={TOPO_KEY: NODE})))
    T.check(r.available_capacity > 0, "capacity on this node")

    v = call("CreateVolume", create_req("pvc-validate", 16 * MiB)).volume
    ok = call("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
        volume_id=v.volume_id, volume_capabilities=[cap("ext4"), cap(block=True)]))
    T.check(ok.HasField("confirmed"), "not confirmed: " + ok.message)
    T.check_eq(len(ok.confirmed.volume_capabilities), 2)
    no = call("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
        volume_id=v.volume_id, volume_capabilities=[
            cap("ext4", mode=pb.VolumeCapability.AccessMode.MULTI_NODE_READER_ONLY)]))
    T.check(not no.HasField("confirmed") and no.message, "multi-node must not be confirmed")
    no = call("ValidateVolumeCapabilities", pb.ValidateVolumeCapabilitiesRequest(
        volume_id=v.volume_id, volume_capabilities=[cap("xfs")]))
    T.check(not no.HasField("confirmed"), "an ext4 volume confirmed as xfs")
    g = call("ControllerGetVolume", pb.ControllerGetVolumeRequest(volume_id=v.volume_id))
    T.check_eq(g.volume.volume_id, v.volume_id)
    T.check(not g.status.volume_condition.abnormal, g.status.volume_condition.message)
    call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=v.volume_id))


def test_amberd_unreachable_and_controller_expand_option():
    # Probe says "not ready" (not an error) while amberd does not answer,
    # and volume calls are UNAVAILABLE.
    lone = start_plugin("csi-lone", amberd_sock=os.path.join(D, "no-amberd.sock"))
    T.check(not lone["Probe"](pb.ProbeRequest(), timeout=60).ready.value, "ready without amberd")
    T.expect_status(Code.UNAVAILABLE, lone["CreateVolume"], create_req("pvc-lone"), timeout=60)
    # --controller-expand advertises the controller EXPAND_VOLUME capability.
    cx = start_plugin("csi-cexp", extra=["--controller-expand"])
    caps = {c.rpc.type for c in cx["ControllerGetCapabilities"](pb.ControllerGetCapabilitiesRequest(),
                                                                timeout=60).capabilities}
    T.check(pb.ControllerServiceCapability.RPC.EXPAND_VOLUME in caps, "EXPAND_VOLUME not advertised")


def test_long_names_map_deterministically():
    name = "x" * 100 + "/with:odd chars"
    q = create_req(name, 8 * MiB, block=True)
    v = call("CreateVolume", q).volume
    T.check_eq(call("CreateVolume", q).volume.volume_id, v.volume_id, "long name twice")
    av = A["GetVolume"](apb.VolumeRef(volume=v.volume_id), timeout=60)
    T.check(len(av.name) <= 63 and av.name.startswith("xxxx"), "mapped name %r" % av.name)
    # A name that looks like an id is never taken for one.
    uuid_name = "0b7e4bd2-9d1c-4c5e-8a63-5a3bd1f0c0aa"
    u = call("CreateVolume", create_req(uuid_name, 8 * MiB, block=True)).volume
    T.check(u.volume_id != uuid_name, "a uuid-looking name became the id")
    for x in (v, u):
        call("DeleteVolume", pb.DeleteVolumeRequest(volume_id=x.volume_id))


def test_secrets_never_logged():
    # Every CreateVolume above carried secrets["password"].
    with open(LOG, "rb") as f:
        log = f.read()
    T.check(b"created volume" in log, "the plugin logged nothing?")
    T.check(b"never-logged-secret" not in log, "a secret reached the log")


TESTS = [
    test_identity_and_capabilities,
    test_lifecycle_ext4,
    test_lifecycle_xfs,
    test_lifecycle_block,
    test_clone_of_volume_and_readonly_publish,
    test_invalid_argument,
    test_not_found,
    test_already_exists,
    test_out_of_range_and_resource_exhausted,
    test_aborted_for_concurrent_calls,
    test_list_volumes_paging,
    test_list_snapshots,
    test_capacity_validate_and_condition,
    test_amberd_unreachable_and_controller_expand_option,
    test_long_names_map_deterministically,
    test_secrets_never_logged,
]

if __name__ == "__main__":
    rc = T.Tests().run(TESTS)
    if rc:
        with open(LOG, errors="replace") as f:
            print("--- amber-csi log (last 60 lines) ---\n" + "".join(f.readlines()[-60:]))
    sys.exit(rc)
