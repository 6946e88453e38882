#!/usr/bin/python3
"""Pipeline steps through a pod's namespace-scoped socket, end to end.

A real amberd and a real amber-csi; everything a pod does goes through the
CSI socket (CreateVolume with PVC metadata for namespaces team-a and team-b;
NodePublishVolume of an inline API volume with kubelet's pod information)
and then through the socket that appears in the pod's volume:
- team-a sees its own volumes as pvc/NAME, snapshots them with labels, at
  one instant; team-b's volumes and snapshots do not exist for it, by id,
  by name, by pvc/ reference, by VOLUME@NAME, in lists and in diffs;
- volume writes, deletes, pool, schedule and peer calls are refused;
- amberctl --socket works against the pod socket unchanged;
- the socket is gone after NodeUnpublishVolume; after amberd restarts
  (graceful and kill -9) a still-published pod's socket works again;
- a three-step run through the Python client (python/amber), then
  `amberctl run show`, `snapshot k8s-manifest` (valid YAML, right handle and
  driver), and a volume created through CSI from each step's snapshot holds
  that step's exact bytes."""
import hashlib
import json
import mmap
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
    import yaml
except ImportError:
    T.skip("python3-grpcio or python3-yaml is not installed")
for tool in ("mkfs.btrfs", "losetup"):
    if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")):
        T.skip("%s is not installed" % tool)
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as pb  # noqa: E402

sys.path.insert(0, os.path.join(T.ROOT, "python"))
os.environ["AMBER_PB2_DIR"] = T.PY
import amber  # noqa: E402

MiB = 1 << 20
Code = grpc.StatusCode
DRIVER = "amber.csi.dev"

d = T.Amberd(fs="btrfs", size="2G")
D = T.tmpdir("amber-pipeline-")
CSOCK = os.path.join(D, "csi.sock")


def start_plugin():
    log = open(os.path.join(D, "amber-csi.log"), "ab")
    p = T.spawn([os.path.join(T.BUILD, "amber-csi"), "--endpoint", "unix://" + CSOCK,
                 "--node-id", "node-1", "--amberd", d.sock], stderr=log)
    log.close()
    T.wait_for_socket(CSOCK, p)
    return p


start_plugin()
cch = grpc.insecure_channel("unix://" + CSOCK)
T.cleanup.add("close csi channel", cch.close)
C = {}
for svc, names in (("csi.v1.Controller", ["CreateVolume", "DeleteVolume"]),
                   ("csi.v1.Node", ["NodePublishVolume", "NodeUnpublishVolume"])):
    s = T.Stub(cch, svc, pb)
    for m in names:
        C[m] = s.unary(m, getattr(pb, m + "Request"), getattr(pb, m + "Response"))

N = T.Stub(d.channel(), "amber.v1.Amber", apb)
node = {
    "AttachVolume": N.unary("AttachVolume", apb.AttachVolumeRequest, apb.AttachVolumeResponse),
    "DetachVolume": N.unary("DetachVolume", apb.AttachVolumeRequest, apb.Empty),
    "ListVolumes": N.unary("ListVolumes", apb.ListVolumesRequest, apb.ListVolumesResponse),
    "ListScopedSockets": N.unary("ListScopedSockets", apb.Empty, apb.ListScopedSocketsResponse),
}


def detach_all():
    if d.proc is None or d.proc.poll() is not None:
        return     # release_tree detaches what is left
    for v in node["ListVolumes"](apb.ListVolumesRequest(), timeout=60).volumes:
        if v.device:
            node["DetachVolume"](apb.AttachVolumeRequest(volume=v.id), timeout=30)


T.cleanup.add("detach every volume", detach_all)


def cap():
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(
        mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
    c.block.SetInParent()
    return c


def create_pvc(ns, name, snap=None, params=None):
    q = pb.CreateVolumeRequest(name="pvc-%s-%s" % (ns, name), volume_capabilities=[cap()],
                               capacity_range=pb.CapacityRange(required_bytes=64 * MiB))
    q.parameters.update({"csi.storage.k8s.io/pvc/namespace": ns, "csi.storage.k8s.io/pvc/name": name,
                         "csi.storage.k8s.io/pv/name": q.name})
    q.parameters.update(params or {})
    if snap:
        q.volume_content_source.snapshot.snapshot_id = snap
    return C["CreateVolume"](q, timeout=60).volume.volume_id


def publish_api(ns, pod, name="amber-api"):
    """What kubelet does for a pod with an inline Amber API volume."""
    uid = hashlib.sha1((ns + pod).encode()).hexdigest()[:8] + "-0000-4000-8000-000000000000"
    target = os.path.join(D, "pods", uid, "volumes", name, "mount")
    vid = "csi-" + hashlib.sha256(target.encode()).hexdigest()[:16]
    C["NodePublishVolume"](pb.NodePublishVolumeRequest(
        volume_id=vid, target_path=target, volume_capability=mount_cap(),
        volume_context={"amber.csi.dev/api": "true", "csi.storage.k8s.io/ephemeral": "true",
                        "csi.storage.k8s.io/pod.namespace": ns, "csi.storage.k8s.io/pod.name": pod,
                        "csi.storage.k8s.io/pod.uid": uid,
                        "csi.storage.k8s.io/serviceAccount.name": "default"}), timeout=30)
    T.cleanup.add("unpublish " + target, lambda: unpublish_api(vid, target, check=False))
    return vid, target, os.path.join(target, "api.sock")


def unpublish_api(vid, target, check=True):
    try:
        C["NodeUnpublishVolume"](pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target),
                                 timeout=30)
    except grpc.RpcError:
        if check:
            raise


def mount_cap():
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(
        mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
    c.mount.SetInParent()
    return c


def attach(vid):
    return node["AttachVolume"](apb.AttachVolumeRequest(volume=vid), timeout=60).device


def detach(vid):
    node["DetachVolume"](apb.AttachVolumeRequest(volume=vid), timeout=60)


def pwrite_direct(dev, off, data):
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, len(data))
        buf.write(data)
        os.pwritev(fd, [buf], off)
        os.fsync(fd)
    finally:
        os.close(fd)


def sha_dev(dev, n=64 * MiB):
    h = hashlib.sha256()
    with open(dev, "rb") as f:
        h.update(f.read(n))
    return h.hexdigest()


def ctl(sock, *args, check=True):
    p = subprocess.run([os.path.join(T.BUILD, "amberctl"), "--socket", sock] + list(args),
                       capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise AssertionError("amberctl %s: %s" % (" ".join(args), p.stderr))
    return p


# --- the world: two namespaces -----------------------------------------------

A_DATA = create_pvc("team-a", "data")
A_MODEL = create_pvc("team-a", "model")
B_SECRET = create_pvc("team-b", "secret")
A_VID, A_TARGET, A_SOCK = publish_api("team-a", "step-1")
B_VID, B_TARGET, B_SOCK = publish_api("team-b", "notebook-0")
ca = amber.Client(A_SOCK, timeout=30)
cb = amber.Client(B_SOCK, timeout=30)
T.cleanup.add("close clients", lambda: (ca.close(), cb.close()))
nodec = amber.Client(d.sock, timeout=30)
B_SNAP = cb.snapshot("pvc/secret", labels={"run": "b-run", "step": "s"}, name="b-snap")[0]


def test_volumes_know_their_claim():
    vols = {v["name"]: v for v in d.ctl("volume", "list")}
    v = vols["pvc-team-a-data"]
    T.check_eq((v.get("pvc_namespace"), v.get("pvc_name")), ("team-a", "data"), "pvc recorded")
    T.check_eq(d.ctl("volume", "show", "pvc/team-b/secret")["id"], B_SECRET, "pvc/NS/NAME resolves")
    T.check("PVC" in d.ctl("volume", "list", json_out=False), "volume list shows a PVC column")
    # A StorageClass's time machine, through the CSI plugin's parameters.
    vid = create_pvc("team-c", "notebook", params={"snapshotEvery": "1h", "snapshotKeep": "24",
                                                   "snapshotKeepDaily": "7"})
    sc = [x for x in d.ctl("schedule", "list") if x["volume_id"] == vid]
    T.check_eq([(x["every"], x["keep"], x["keep_daily"]) for x in sc], [("1h", 24, 7)], "StorageClass schedule")
    try:
        create_pvc("team-c", "bad", params={"snapshotEvery": "sometimes"})
        raise AssertionError("a bad snapshotEvery was accepted")
    except grpc.RpcError as e:
        T.check_eq(e.code(), Code.INVALID_ARGUMENT, "bad snapshotEvery")


def test_scope_sees_own_volumes():
    info = ca.info()
    T.check_eq(info["scope"], "namespace:team-a", "scope")
    T.check_eq(info["volumes"], 2, "volumes in scope")
    names = sorted(v.name for v in ca.volumes())
    T.check_eq(names, ["pvc/data", "pvc/model"], "team-a's volumes")
    T.check_eq(ca.volume("pvc/data").id, A_DATA, "pvc/NAME")
    T.check_eq(ca.volume(A_MODEL).name, "pvc/model", "by id")
    T.check_eq(ca.volume("pvc/team-a/data").id, A_DATA, "pvc/NS/NAME of its own namespace")
    T.check_eq([v.name for v in cb.volumes()], ["pvc/secret"], "team-b's view")


def test_snapshot_several_at_one_instant():
    s = ca.snapshot(["pvc/data", "pvc/model"], labels={"pipeline": "p", "run": "r0", "step": "x",
                                                       "owner": "alice"})
    T.check_eq(len(s), 2, "two snapshots")
    T.check_eq([x.volume for x in s], ["pvc/data", "pvc/model"], "order and names")
    T.check_eq(s[0].created_ns, s[1].created_ns, "same instant")
    T.check(all(x.ready and x.labels["owner"] == "alice" for x in s), "ready, labelled")
    got = ca.snapshots(labels={"run": "r0"})
    T.check_eq(sorted(x.id for x in got), sorted(x.id for x in s), "list by label")
    _, changed = ca.diff(s[0].id)
    T.check(changed >= 0, "diff from a snapshot to the live volume")


def expect(exc, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except exc:
        return
    except amber.AmberError as e:
        raise AssertionError("%s%r: expected %s, got %r" % (fn.__name__, a, exc.__name__, e))
    raise AssertionError("%s%r: expected %s, it succeeded" % (fn.__name__, a, exc.__name__))


def test_amber_labels_refused():
    """A pod cannot set the labels amber writes itself: one claiming
    membership of a group snapshot (amber.csi.dev/group) or an archive
    (amber.archive) is INVALID_ARGUMENT naming the prefix, and nothing is
    made."""
    before = sorted(x.id for x in ca.snapshots())
    for key, prefix in (("amber.csi.dev/group", "amber.csi.dev/"), ("amber.archive", "amber.archive")):
        for vols in ("pvc/data", ["pvc/data", "pvc/model"]):
            try:
                ca.snapshot(vols, labels={"run": "r-own", key: "group-" + "0" * 32})
                raise AssertionError("a pod set %s" % key)
            except amber.InvalidArgument as e:
                T.check("prefix " + prefix + " " in str(e), str(e))
    T.check_eq(sorted(x.id for x in ca.snapshots()), before, "nothing made")


def test_other_namespace_is_invisible():
    bvol = "pvc-team-b-secret"
    for ref in (B_SECRET, bvol, "pvc/secret", "pvc/team-b/secret", "pvc/team-b/../team-b/secret",
                "pvc/" + bvol, "nonexistent"):
        expect(amber.NotFound, ca.volume, ref)
        expect(amber.NotFound, ca.snapshot, ref)
        expect(amber.NotFound, ca.snapshots, volume=ref)
        expect(amber.NotFound, ca.diff, volume=ref)
    for ref in (B_SNAP.id, "b-snap", bvol + "@b-snap", "pvc/secret@b-snap", B_SECRET + "@b-snap",
                "pvc/team-b/secret@b-snap", B_SNAP.id[:8]):
        expect(amber.NotFound, ca.get_snapshot, ref)
        expect(amber.NotFound, ca.diff, ref)
        expect(amber.NotFound, ca.diff, None, ref)
    # A snapshot of team-a's own volume against team-b's.
    mine = ca.snapshot("pvc/data")[0]
    expect(amber.NotFound, ca.diff, mine.id, B_SNAP.id)
    # Mixed: one of ours and one of theirs at once → nothing is made.
    before = len(ca.snapshots())
    expect(amber.NotFound, ca.snapshot, ["pvc/data", B_SECRET])
    T.check_eq(len(ca.snapshots()), before, "no partial snapshot")
    # Lists: no trace of team-b.
    T.check(all(s.volume_id != B_SECRET for s in ca.snapshots()), "no team-b snapshots listed")
    T.check(not ca.snapshots(labels={"run": "b-run"}), "label filter stays in scope")
    lv = amber.pb.ListVolumesRequest(pvc_namespace="team-b")
    T.check_eq(len(ca._call("ListVolumes", lv, amber.pb.ListVolumesResponse).volumes), 0,
               "pvc_namespace filter cannot widen the scope")
    one = ca._call("ListSnapshots", amber.pb.ListSnapshotsRequest(snapshot=B_SNAP.id),
                   amber.pb.ListSnapshotsResponse)
    T.check_eq(len(one.snapshots), 0, "ListSnapshots by a foreign id")
    # A VolumeSnapshot reference cannot be planted in another namespace.
    req = amber.pb.CreateSnapshotRequest(volume="pvc/data", k8s_namespace="team-b", k8s_name="trojan")
    s = ca._call("CreateSnapshot", req, amber.pb.Snapshot)
    T.check_eq(s.k8s_namespace, "team-a", "k8s_namespace forced to the caller's")
    shown = d.ctl("snapshot", "show", s.id)
    T.check_eq((shown["k8s_namespace"], shown["k8s_name"]), ("team-a", "trojan"), "VolumeSnapshot recorded")
    expect(amber.NotFound, cb.get_snapshot, s.id)
    T.check(all(x.id != s.id for x in cb.snapshots()), "invisible to team-b")


def test_pool_level_calls_refused():
    P = amber.pb
    for name, req, resp in (
            ("CreateVolume", P.CreateVolumeRequest(name="x", size_bytes=64 * MiB, pvc_namespace="team-a",
                                                   pvc_name="x"), P.Volume),
            ("DeleteVolume", P.VolumeRef(volume="pvc/data"), P.Empty),
            ("ResizeVolume", P.ResizeVolumeRequest(volume="pvc/data", size_bytes=128 * MiB), P.Volume),
            ("AttachVolume", P.AttachVolumeRequest(volume="pvc/data"), P.AttachVolumeResponse),
            ("RevertVolume", P.RevertVolumeRequest(volume="pvc/data", snapshot="x"), P.Volume),
            ("DeleteSnapshot", P.SnapshotRef(snapshot=B_SNAP.id), P.Empty),
            ("SetSchedule", P.SetScheduleRequest(volume="pvc/data", every_ms=1000), P.Schedule),
            ("OpenScopedSocket", P.OpenScopedSocketRequest(target_path="/tmp/x", namespace="team-b"),
             P.OpenScopedSocketResponse),
            ("ListSchedules", P.ListSchedulesRequest(), P.ListSchedulesResponse),
            ("ListScopedSockets", P.Empty(), P.ListScopedSocketsResponse),
            ("ResolveSnapshot", P.ResolveSnapshotRequest(namespace="team-b", snapshot=B_SNAP.id), P.Snapshot),
    ):
        try:
            ca._call(name, req, resp)
        except (amber.PermissionDenied, amber.Unimplemented):
            continue
        raise AssertionError("%s succeeded on a scoped socket" % name)
    # Another service entirely (peers, sync): not served.
    fn = ca._ch.unary_unary("/amber.peer.v1.Peer/Hello", request_serializer=lambda x: b"",
                            response_deserializer=lambda b: b)
    T.expect_status(Code.UNIMPLEMENTED, fn, None, timeout=60)
    # Nothing was deleted.
    T.check_eq(len(ca.volumes()), 2, "volumes intact")
    T.check_eq(cb.get_snapshot(B_SNAP.id).id, B_SNAP.id, "team-b's snapshot intact")


def test_amberctl_against_the_pod_socket():
    p = ctl(A_SOCK, "--json", "info")
    T.check('"namespace:team-a"' in p.stdout, "amberctl info shows the scope")
    p = ctl(A_SOCK, "volume", "list")
    T.check("pvc/data" in p.stdout and "secret" not in p.stdout, "amberctl volume list")
    p = ctl(A_SOCK, "snapshot", "create", "pvc/data", "pvc/model", "--label", "run=ctl-run",
            "--label", "step=one")
    T.check_eq(len(ca.snapshots(labels={"run": "ctl-run"})), 2, "amberctl snapshot create")
    p = ctl(A_SOCK, "volume", "delete", "pvc/data", check=False)
    T.check(p.returncode != 0 and "PERMISSION_DENIED" in p.stderr, "amberctl volume delete refused")
    p = ctl(A_SOCK, "snapshot", "show", B_SNAP.id, check=False)
    T.check(p.returncode != 0 and "NOT_FOUND" in p.stderr, "amberctl snapshot show of team-b's")


def test_socket_gone_after_unpublish():
    vid, target, sock = publish_api("team-a", "short-lived")
    T.check_eq(amber.Client(sock).info()["scope"], "namespace:team-a", "works while published")
    unpublish_api(vid, target)
    T.check(not os.path.exists(sock), "socket removed")
    T.check(not os.path.exists(target), "target removed")
    expect(amber.Unavailable, amber.Client(sock, timeout=60).info)
    T.check(all(s.target_path != target for s in node["ListScopedSockets"](apb.Empty(), timeout=60).sockets),
            "forgotten by amberd")
    unpublish_api(vid, target)     # idempotent


def test_restart_restores_sockets():
    vid, target, sock = publish_api("team-a", "long-running")
    gone_vid, gone_target, gone_sock = publish_api("team-a", "finished")
    for how in ("stop", "kill"):
        if how == "stop":
            d.stop()
        else:
            d.kill()
        if how == "stop":
            # Unpublished while amberd was down: the plugin cleans its
            # directory; amberd must not bring that socket back.
            unpublish_api(gone_vid, gone_target, check=False)
        d.start()
        T.wait_for_socket(sock, timeout=20)
        c = amber.Client(sock, timeout=20)
        T.check_eq(c.info()["scope"], "namespace:team-a", "restored after " + how)
        names = [v.name for v in c.volumes()]
        T.check("pvc/data" in names and "pvc/model" in names and "pvc/secret" not in names, "scope kept")
        expect(amber.NotFound, c.volume, B_SECRET)
        c.close()
    T.check(not os.path.exists(gone_sock), "an unpublished pod's socket is not restored")
    unpublish_api(vid, target)


def step_bytes(step, vol):
    return hashlib.sha256(("%s/%s" % (step, vol)).encode()).digest() * (MiB // 32)


def test_three_step_run():
    import time
    t0 = time.monotonic()
    run = "run-0042"
    devs = {"data": attach(A_DATA), "model": attach(A_MODEL)}
    want = {}
    try:
        c = amber.Client(A_SOCK)
        for i, step in enumerate(("prepare", "train", "evaluate")):
            for vol, dev in devs.items():
                pwrite_direct(dev, i * MiB, step_bytes(step, vol))
                pwrite_direct(dev, 40 * MiB + i * MiB, step_bytes(step, vol))
            snaps = c.step(["pvc/data", "pvc/model"], pipeline="train-mnist", run=run, step=step,
                           labels={"git": "abc123"})
            for s in snaps:
                want[s.id] = (step, s.volume, sha_dev(devs[s.volume[4:]]))
        T.check_eq(len(c.run_snapshots(run)), 6, "six snapshots in the run")
        T.check_eq(len(c.run_snapshots(run, step="train")), 2, "two in a step")
        T.check_eq(c.runs()[run]["steps"], ["prepare", "train", "evaluate"], "runs() steps")
        c.close()
    finally:
        detach(A_DATA)
        detach(A_MODEL)

    print("  steps written and snapshotted in %.1fs" % (time.monotonic() - t0))
    j = ctl(A_SOCK, "--json", "run", "show", run).stdout
    shown = json.loads(j)
    T.check_eq(shown["pipeline"], "train-mnist", "run show pipeline")
    T.check_eq(sorted(x["snapshot"]["id"] for x in shown["snapshots"]), sorted(want), "run show lists them")
    T.check_eq({x["step"] for x in shown["snapshots"]}, {"prepare", "train", "evaluate"}, "steps")
    human = ctl(d.sock, "run", "show", run).stdout
    T.check("evaluate" in human and "train-mnist" in human, "human run show")
    runs = {r["run"]: r for r in d.ctl("run", "list")}
    T.check_eq(runs[run]["snapshots"], 6, "run list")
    T.check_eq(runs[run]["steps"], ["prepare", "train", "evaluate"], "run list steps")

    # Back in Kubernetes: manifest, then a volume from each step's snapshot.
    for sid, (step, vol, sha) in want.items():
        out = ctl(d.sock, "snapshot", "k8s-manifest", sid, "--namespace", "team-a",
                  "--name", "%s-%s-%s" % (run, step, vol[4:])).stdout
        docs = list(yaml.safe_load_all(out))
        T.check_eq([x["kind"] for x in docs], ["VolumeSnapshotContent", "VolumeSnapshot"], "kinds")
        vsc, vs = docs
        T.check_eq(vsc["spec"]["source"]["snapshotHandle"], sid, "handle")
        T.check_eq(vsc["spec"]["driver"], DRIVER, "driver")
        T.check_eq(vsc["spec"]["deletionPolicy"], "Retain", "deletionPolicy")
        T.check_eq(vsc["spec"]["volumeSnapshotRef"], {"name": vs["metadata"]["name"], "namespace": "team-a"},
                   "bound to the VolumeSnapshot")
        T.check_eq(vs["spec"]["source"]["volumeSnapshotContentName"], vsc["metadata"]["name"], "bound back")
        T.check_eq(vs["metadata"]["namespace"], "team-a", "namespace")
        T.check_eq(vsc["metadata"]["annotations"]["amber.csi.dev/step"], step, "provenance annotation")
        # What the external-provisioner does for a PVC with that dataSource:
        # CreateVolume with the snapshot handle as the content source.
        restored = create_pvc("team-a", "restore-%s-%s" % (step, vol[4:]), snap=sid)
        dev = attach(restored)
        try:
            T.check_eq(sha_dev(dev), sha, "step %s %s: exact bytes" % (step, vol))
        finally:
            detach(restored)


def test_daemon_stops_clean():
    """Last: amberd stops on SIGTERM with status 0 and no sanitizer report
    (make test runs this under ASan+UBSan)."""
    rc = d.stop()
    log = d.log()
    T.check("Sanitizer" not in log and "runtime error" not in log, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")


T.check(os.path.exists(A_SOCK), "pod socket exists")
sys.exit(T.Tests().run([
    test_volumes_know_their_claim,
    test_scope_sees_own_volumes,
    test_snapshot_several_at_one_instant,
    test_amber_labels_refused,
    test_other_namespace_is_invisible,
    test_pool_level_calls_refused,
    test_amberctl_against_the_pod_socket,
    test_socket_gone_after_unpublish,
    test_three_step_run,
    test_restart_restores_sockets,
    test_daemon_stops_clean,
]))
