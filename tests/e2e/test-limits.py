#!/usr/bin/python3
"""Limits on what one client can make amberd and amber-csi spend: each
bound (amberd --help "Limits") is refused past it with RESOURCE_EXHAUSTED
(INVALID_ARGUMENT for a malformed request), changes nothing, and the
daemon keeps serving. Bounds: labels per snapshot, label key and value
sizes, label filters, snapshots per volume, volumes per namespace, pod
sockets per node, request size on the node socket and on amber-csi's."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as cpb  # noqa: E402

MiB = 1 << 20
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
IA = grpc.StatusCode.INVALID_ARGUMENT

d = T.Amberd("btrfs", size="1G", extra=["--max-snapshots-per-volume", "3",
                                        "--max-volumes-per-namespace", "2",
                                        "--max-pod-sockets", "1", "--max-message", "64K"])
S = T.Stub(d.channel(), "amber.v1.Amber", apb)
create_volume = S.unary("CreateVolume", apb.CreateVolumeRequest, apb.Volume)
create_snapshot = S.unary("CreateSnapshot", apb.CreateSnapshotRequest, apb.Snapshot)
list_snapshots = S.unary("ListSnapshots", apb.ListSnapshotsRequest, apb.ListSnapshotsResponse)
delete_snapshot = S.unary("DeleteSnapshot", apb.SnapshotRef, apb.Empty)
list_volumes = S.unary("ListVolumes", apb.ListVolumesRequest, apb.ListVolumesResponse)
open_scoped = S.unary("OpenScopedSocket", apb.OpenScopedSocketRequest, apb.OpenScopedSocketResponse)
close_scoped = S.unary("CloseScopedSocket", apb.CloseScopedSocketRequest, apb.Empty)
T.check("--max-snapshots-per-volume" in T.subprocess.run([os.path.join(T.BUILD, "amberd"), "--help"],
                                                         capture_output=True, text=True).stdout,
        "the limits are in --help")
create_volume(apb.CreateVolumeRequest(name="v", size_bytes=16 * MiB), timeout=60)


def snaps(vol="v"):
    return sorted(s.name for s in list_snapshots(apb.ListSnapshotsRequest(volume=vol), timeout=30).snapshots)


def labels(n, klen=4, vlen=4):
    return [apb.Label(key=("k%d" % i).ljust(klen, "x"), value="v" * vlen) for i in range(n)]


def test_labels_per_snapshot_and_sizes():
    before = snaps()
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="l65", labels=labels(65)),
                        timeout=30)
    T.check("64" in e.details(), e.details())
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="lk", labels=[apb.Label(key="k" * 129, value="")]), timeout=30)
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="lv", labels=[apb.Label(key="k", value="v" * 1025)]), timeout=30)
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="le", labels=[apb.Label(key="", value="x")]), timeout=30)
    T.check_eq(snaps(), before, "a refused snapshot was made")
    # At the bounds: fine (64 labels, 128-byte keys, 1024-byte values fit 64K).
    s = create_snapshot(apb.CreateSnapshotRequest(volume="v", name="l64", labels=labels(64, 128, 100)),
                        timeout=30)
    T.check_eq(len(s.labels), 64)
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="lmax", labels=[
        apb.Label(key="k" * 128, value="v" * 1024)]), timeout=30)
    for n in ("l64", "lmax"):
        delete_snapshot(apb.SnapshotRef(snapshot="v@" + n), timeout=30)


def test_label_filters():
    T.expect_status(RE, list_snapshots, apb.ListSnapshotsRequest(volume="v", labels=labels(17)), timeout=30)
    list_snapshots(apb.ListSnapshotsRequest(volume="v", labels=labels(16)), timeout=30)


def test_snapshots_per_volume():
    for i in range(3):
        create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s%d" % i), timeout=30)
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="s3"), timeout=30)
    T.check("max-snapshots-per-volume" in e.details(), e.details())
    T.check_eq(snaps(), ["s0", "s1", "s2"], "the refused snapshot was made")
    # An idempotent repeat of an existing one is not a new snapshot.
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s2"), timeout=30)
    delete_snapshot(apb.SnapshotRef(snapshot="v@s0"), timeout=30)
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s3"), timeout=30)
    for n in ("s1", "s2", "s3"):
        delete_snapshot(apb.SnapshotRef(snapshot="v@" + n), timeout=30)


def test_volumes_per_namespace():
    for i in range(2):
        create_volume(apb.CreateVolumeRequest(name="ns-a-%d" % i, size_bytes=4 * MiB, pvc_namespace="a",
                                              pvc_name="p%d" % i), timeout=60)
    e = T.expect_status(RE, create_volume, apb.CreateVolumeRequest(
        name="ns-a-2", size_bytes=4 * MiB, pvc_namespace="a", pvc_name="p2"), timeout=60)
    T.check("max-volumes-per-namespace" in e.details(), e.details())
    names = {v.name for v in list_volumes(apb.ListVolumesRequest(), timeout=30).volumes}
    T.check("ns-a-2" not in names, "the refused volume exists")
    # Other namespaces, and volumes of no namespace, are not counted.
    create_volume(apb.CreateVolumeRequest(name="ns-b-0", size_bytes=4 * MiB, pvc_namespace="b",
                                          pvc_name="p0"), timeout=60)
    create_volume(apb.CreateVolumeRequest(name="plain", size_bytes=4 * MiB), timeout=60)
    # The same request again is idempotent, not a third volume.
    create_volume(apb.CreateVolumeRequest(name="ns-a-1", size_bytes=4 * MiB, pvc_namespace="a",
                                          pvc_name="p1"), timeout=60)


def test_pod_sockets_per_node():
    t1, t2 = T.tmpdir("pod1-"), T.tmpdir("pod2-")
    open_scoped(apb.OpenScopedSocketRequest(target_path=t1, namespace="a"), timeout=30)
    e = T.expect_status(RE, open_scoped, apb.OpenScopedSocketRequest(target_path=t2, namespace="a"), timeout=30)
    T.check("max-pod-sockets" in e.details(), e.details())
    T.check(not os.path.exists(os.path.join(t2, "api.sock")), "the refused socket exists")
    close_scoped(apb.CloseScopedSocketRequest(target_path=t1), timeout=30)
    open_scoped(apb.OpenScopedSocketRequest(target_path=t2, namespace="a"), timeout=30)
    close_scoped(apb.CloseScopedSocketRequest(target_path=t2), timeout=30)


def test_request_size_node_socket():
    before = snaps()
    big = [apb.Label(key="k%d" % i, value="v" * 1024) for i in range(64)]     # 66 KB > 64K
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="big", labels=big),
                        timeout=30)
    T.check("limit" in e.details(), e.details())
    T.check_eq(snaps(), before, "the refused request made a snapshot")
    T.check_eq(snaps(), before, "the daemon serves after it")


def test_request_size_csi():
    sock = os.path.join(d.dir, "csi.sock")
    p = T.spawn([os.path.join(T.BUILD, "amber-csi"), "--endpoint", "unix://" + sock, "--node-id", "n1",
                 "--amberd", d.sock, "--log-level", "warn"])
    T.wait_for_socket(sock, p)
    ch = grpc.insecure_channel("unix://" + sock)
    T.cleanup.add("close csi channel", ch.close)
    C = T.Stub(ch, "csi.v1.Controller", cpb)
    cs = C.unary("CreateSnapshot", cpb.CreateSnapshotRequest, cpb.CreateSnapshotResponse)
    vid = [v.id for v in list_volumes(apb.ListVolumesRequest(), timeout=30).volumes if v.name == "v"][0]
    q = cpb.CreateSnapshotRequest(source_volume_id=vid, name="snap-huge")
    q.parameters["x"] = "y" * (5 * MiB)
    e = T.expect_status(RE, cs, q, timeout=60)
    T.check("limit" in e.details(), e.details())
    # Labels through CSI parameters: the node's bound applies.
    q = cpb.CreateSnapshotRequest(source_volume_id=vid, name="snap-labels")
    for i in range(65):
        q.parameters["label.amber.csi.dev/k%d" % i] = "v"
    T.expect_status(RE, cs, q, timeout=60)
    T.check_eq(snaps(), [], "a refused CSI snapshot exists")
    Id = T.Stub(ch, "csi.v1.Identity", cpb)
    Id.unary("Probe", cpb.ProbeRequest, cpb.ProbeResponse)(cpb.ProbeRequest(), timeout=30)


def test_daemon_stops_clean():
    rc = d.stop()
    log = d.log()
    T.check("Sanitizer" not in log and "runtime error" not in log, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")


sys.exit(T.Tests().run([
    test_labels_per_snapshot_and_sizes,
    test_label_filters,
    test_snapshots_per_volume,
    test_volumes_per_namespace,
    test_pod_sockets_per_node,
    test_request_size_node_socket,
    test_request_size_csi,
    test_daemon_stops_clean,
]))
