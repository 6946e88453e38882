#!/usr/bin/python3
"""Notebooks and pipeline steps (issue 19), end to end, with the Python
client installed as a package and a real amberd and amber-csi:

- `pip install ./python` into a fresh venv (--system-site-packages: Debian's
  grpcio and protobuf; offline: --no-build-isolation --no-index); the test
  imports amber from that venv, not from the source tree; python -m amber;
- amber.step as a context manager and a decorator through a pod's
  namespace-scoped socket: snapshots of the step's volumes at one instant at
  start and end with the provenance labels (Argo's variables too), failure
  labelled phase=failed error=CLASS, another namespace's volume refused and
  the body never run;
- amber-step -- sh -c 'echo x > DATA/f' around a real command (exit status
  kept, a failing command labelled);
- the inline snapshot volume through amber-csi's socket: the mount shows the
  snapshot's files, read-only (EROFS), by name and by "newest before T";
  another namespace's snapshot is NOT_FOUND with nothing left behind;
  unpublish leaves nothing mounted or attached, also when amberd restarts
  (stop, kill -9) between publish and unpublish, and is idempotent;
- notebook helpers: history rows, changed files between two snapshot
  volumes, the restore manifest (the VolumeSnapshot part identical to
  amberctl's through the same pod socket)."""
import errno
import hashlib
import os
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
    import yaml
except ImportError:
    T.skip("python3-grpcio or python3-yaml is not installed")
for tool in ("mkfs.btrfs", "mkfs.ext4", "losetup", "protoc"):
    if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")):
        T.skip("%s is not installed" % tool)

# --- the package, installed into a fresh venv -----------------------------------

VENV = os.path.join(T.tmpdir("amber-venv-"), "venv")
subprocess.run(["/usr/bin/python3", "-m", "venv", "--system-site-packages", VENV], check=True)
pip = subprocess.run([os.path.join(VENV, "bin", "pip"), "install", "--quiet", "--no-build-isolation",
                      "--no-index", os.path.join(T.ROOT, "python")], capture_output=True, text=True)
if pip.returncode != 0:
    raise SystemExit("pip install ./python failed:\n" + pip.stdout + pip.stderr)
VPY = os.path.join(VENV, "bin", "python")
SITE = subprocess.run([VPY, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                      capture_output=True, text=True, check=True).stdout.strip()
sys.path.insert(0, SITE)
import amber  # noqa: E402

T.genproto()                   # csi_pb2 only: amber's messages are the package's
import csi_pb2 as pb  # noqa: E402

apb = amber.pb
MiB = 1 << 20
Code = grpc.StatusCode

d = T.Amberd(fs="btrfs", size="2G")
D = T.tmpdir("amber-notebook-")
CSOCK = os.path.join(D, "csi.sock")
log = open(os.path.join(D, "amber-csi.log"), "ab")
CSI_PROC = T.spawn([os.path.join(T.BUILD, "amber-csi"), "--endpoint", "unix://" + CSOCK, "--node-id",
                    "node-1", "--amberd", d.sock], stderr=log)
log.close()
T.wait_for_socket(CSOCK, CSI_PROC)
cch = grpc.insecure_channel("unix://" + CSOCK)
T.cleanup.add("close csi channel", cch.close)
C = {}
for svc, names in (("csi.v1.Controller", ["CreateVolume"]),
                   ("csi.v1.Node", ["NodePublishVolume", "NodeUnpublishVolume"])):
    s = T.Stub(cch, svc, pb)
    for m in names:
        C[m] = s.unary(m, getattr(pb, m + "Request"), getattr(pb, m + "Response"))
N = T.Stub(d.channel(), "amber.v1.Amber", apb)
node = {m: N.unary(m, q, r) for m, q, r in (
    ("AttachVolume", apb.AttachVolumeRequest, apb.AttachVolumeResponse),
    ("DetachVolume", apb.AttachVolumeRequest, apb.Empty),
    ("ResolveSnapshot", apb.ResolveSnapshotRequest, apb.Snapshot))}


def mount_cap():
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(
        mode=pb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER))
    c.mount.SetInParent()
    return c


def create_pvc(ns, name):
    q = pb.CreateVolumeRequest(name="pvc-%s-%s" % (ns, name), volume_capabilities=[mount_cap()],
                               capacity_range=pb.CapacityRange(required_bytes=64 * MiB))
    q.parameters.update({"csi.storage.k8s.io/pvc/namespace": ns, "csi.storage.k8s.io/pvc/name": name,
                         "csi.storage.k8s.io/pv/name": q.name})
    return C["CreateVolume"](q, timeout=60).volume.volume_id


def pod_volume(ns, pod, name, attrs):
    """What kubelet sends for a pod's inline volume: (volume_id, target, request)."""
    uid = hashlib.sha1((ns + pod).encode()).hexdigest()[:8] + "-0000-4000-8000-000000000000"
    target = os.path.join(D, "pods", uid, "volumes", name, "mount")
    vid = "csi-" + hashlib.sha256(target.encode()).hexdigest()[:16]
    ctx = {"csi.storage.k8s.io/ephemeral": "true", "csi.storage.k8s.io/pod.namespace": ns,
           "csi.storage.k8s.io/pod.name": pod, "csi.storage.k8s.io/pod.uid": uid,
           "csi.storage.k8s.io/serviceAccount.name": "default"}
    ctx.update(attrs)
    return vid, target, pb.NodePublishVolumeRequest(volume_id=vid, target_path=target,
                                                    volume_capability=mount_cap(), volume_context=ctx)


def publish(ns, pod, name, attrs):
    vid, target, req = pod_volume(ns, pod, name, attrs)
    T.cleanup.add("unpublish " + target, lambda: unpublish(vid, target, check=False))
    C["NodePublishVolume"](req, timeout=60)
    return vid, target


def unpublish(vid, target, check=True):
    try:
        C["NodeUnpublishVolume"](pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target),
                                 timeout=60)
    except grpc.RpcError:
        if check:
            raise


def mounted_at(path):
    with open("/proc/self/mountinfo") as f:
        for line in f:
            p = line.split()
            if p[4] == path:
                return p[5].split(",")
    return None


def attached_snapshots():
    """Snapshot ids backing a loop device (their image is POOL/snaps/VOL/SNAP/...)."""
    out = set()
    for _dev, back in T._loops_backed_under(d.dir):
        parts = back.split("/snaps/")
        if len(parts) == 2:
            out.add(parts[1].split("/")[1])
    return out


# --- the world: team-a's data (ext4, mounted on the node as the pod's /data) -----

A_DATA = create_pvc("team-a", "data")
A_MODEL = create_pvc("team-a", "model")
B_SECRET = create_pvc("team-b", "secret")
_, A_API = publish("team-a", "notebook-0", "amber-api", {"amber.csi.dev/api": "true"})
_, B_API = publish("team-b", "notebook-1", "amber-api", {"amber.csi.dev/api": "true"})
A_SOCK, B_SOCK = os.path.join(A_API, "api.sock"), os.path.join(B_API, "api.sock")
ca = amber.Client(A_SOCK, timeout=30)
cb = amber.Client(B_SOCK, timeout=30)
T.cleanup.add("close clients", lambda: (ca.close(), cb.close()))

DEV = node["AttachVolume"](apb.AttachVolumeRequest(volume=A_DATA), timeout=60).device
T.cleanup.add("detach data", lambda: d.proc and node["DetachVolume"](
    apb.AttachVolumeRequest(volume=A_DATA), timeout=60))
subprocess.run(["mkfs.ext4", "-q", "-F", DEV], check=True)
DATA = os.path.join(D, "data")
os.makedirs(DATA)
subprocess.run(["mount", DEV, DATA], check=True)
T.cleanup.add("umount " + DATA, lambda: subprocess.run(["umount", DATA], stderr=subprocess.DEVNULL))
B_SNAP = cb.snapshot("pvc/secret", name="b-snap")[0]
STEP = {}      # what the amber-step test made, for the volume tests


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def test_installed_package():
    T.check(amber.__file__.startswith(VENV), "amber imported from the venv: %s" % amber.__file__)
    T.check(os.path.exists(os.path.join(os.path.dirname(amber.__file__), "amber_pb2.py")),
            "amber_pb2 inside the package")
    T.check(amber.pb.__name__ == "amber.amber_pb2", "messages from the package: " + amber.pb.__name__)
    with open(os.path.join(T.ROOT, "VERSION")) as f:
        T.check_eq(amber.__version__, f.read().strip(), "version from VERSION")
    if shutil.which("grpc_python_plugin"):
        p = subprocess.run([VPY, "-c", "import amber.amber_pb2_grpc as g; print(g.AmberStub.__name__)"],
                           capture_output=True, text=True, cwd="/")
        T.check_eq(p.stdout.strip(), "AmberStub", "amber_pb2_grpc ships too: " + p.stderr)
    p = subprocess.run([VPY, "-m", "amber", "--help"], capture_output=True, text=True, cwd="/")
    T.check(p.returncode == 0 and "volumes" in p.stdout and "runs" in p.stdout, "python -m amber --help")
    p = subprocess.run([VPY, "-m", "amber", "--socket", A_SOCK, "volumes"], capture_output=True,
                       text=True, cwd="/")
    T.check(p.returncode == 0 and "pvc/data" in p.stdout and "secret" not in p.stdout,
            "python -m amber volumes: " + p.stdout + p.stderr)
    p = subprocess.run([VPY, "-m", "amber", "--socket", A_SOCK, "--json", "info"], capture_output=True,
                       text=True, cwd="/")
    T.check('"namespace:team-a"' in p.stdout, "python -m amber info: " + p.stdout + p.stderr)


def by_phase(snaps):
    out = {}
    for s in snaps:
        out.setdefault(s.labels.get("phase"), []).append(s)
    return out


def test_context_manager():
    env = {"ARGO_WORKFLOW_NAME": "train-x7k2p", "ARGO_WORKFLOW_UID": "9f0c1d2e-aaaa-4bbb-8ccc-000000000001",
           "ARGO_NODE_ID": "train-x7k2p-1234567", "ARGO_TEMPLATE": '{"name": "prepare", "container": {}}'}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with amber.step(["pvc/data", "pvc/model"], client=ca, labels={"git": "3f2a1c"}) as s:
            T.check_eq(len(s.start), 2, "start snapshots")
            write(os.path.join(DATA, "prepared"), "rows\n")
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    T.check_eq(s.start[0].created_ns, s.start[1].created_ns, "start at one instant")
    T.check_eq(s.end[0].created_ns, s.end[1].created_ns, "end at one instant")
    T.check(s.end[0].created_ns > s.start[0].created_ns, "end after start")
    got = by_phase(ca.run_snapshots("train-x7k2p"))
    T.check_eq(sorted(got), ["end", "start"], "phases")
    for ph in ("start", "end"):
        T.check_eq(sorted(x.volume for x in got[ph]), ["pvc/data", "pvc/model"], ph + " volumes")
        lab = got[ph][0].labels
        T.check_eq((lab["pipeline"], lab["run"], lab["step"], lab["git"]),
                   ("train", "train-x7k2p", "prepare", "3f2a1c"), "provenance from Argo's variables")
        T.check_eq((lab["argo-workflow-uid"], lab["argo-node-id"]),
                   (env["ARGO_WORKFLOW_UID"], env["ARGO_NODE_ID"]), "Argo ids")
    # Arguments override the environment.
    with amber.step("pvc/model", client=ca, run="r-explicit", step="s1", pipeline="p1") as s:
        pass
    T.check_eq({(x.labels["run"], x.labels["step"], x.labels["pipeline"]) for x in s.start + s.end},
               {("r-explicit", "s1", "p1")}, "overrides")


def test_failure_labelled():
    ran = []
    try:
        with amber.step(["pvc/data", "pvc/model"], client=ca, run="r-fail", step="train"):
            ran.append(1)
            raise ValueError("diverged")
    except ValueError as e:
        T.check_eq(str(e), "diverged", "the step's exception propagates")
    else:
        raise AssertionError("the exception was swallowed")
    got = by_phase(ca.run_snapshots("r-fail"))
    T.check_eq(sorted(got), ["failed", "start"], "start and failed, no end")
    T.check_eq({x.labels.get("error") for x in got["failed"]}, {"ValueError"}, "error class")
    T.check_eq(len(got["failed"]), 2, "both volumes")


def test_decorator():
    @amber.step(volumes=["pvc/model"], client=ca, run="r-dec")
    def fit(x):
        return x * 2

    T.check_eq(fit(21), 42, "return value")
    T.check_eq(fit.__name__, "fit", "wraps")
    fit(1)
    got = ca.run_snapshots("r-dec")
    T.check_eq(len(got), 4, "start and end of two calls")
    T.check_eq({x.labels["step"] for x in got}, {"fit"}, "step named after the function")

    @amber.step(volumes=["pvc/model"], client=ca, run="r-dec-fail")
    def boom():
        raise KeyError("k")
    try:
        boom()
        raise AssertionError("no KeyError")
    except KeyError:
        pass
    T.check_eq(sorted(x.labels["phase"] for x in ca.run_snapshots("r-dec-fail")), ["failed", "start"],
               "decorated failure")


def test_other_namespace_refused():
    before = len(ca.snapshots()) + len(cb.snapshots())
    for vols in (["pvc/secret"], [B_SECRET], ["pvc/team-b/secret"], ["pvc/data", B_SECRET]):
        ran = []
        try:
            with amber.step(vols, client=ca, run="r-trespass"):
                ran.append(1)
            raise AssertionError("%s: the step ran" % vols)
        except amber.NotFound:
            pass
        T.check(not ran, "%s: the body did not run" % vols)
    T.check_eq(len(ca.snapshots()) + len(cb.snapshots()), before, "nothing was snapshotted")
    p = subprocess.run([os.path.join(VENV, "bin", "amber-step"), "--socket", A_SOCK, "--volume",
                        "pvc/secret", "--", "touch", os.path.join(D, "must-not-exist")],
                       capture_output=True, text=True)
    T.check(p.returncode == 1 and "NOT_FOUND" in p.stderr, "amber-step refused: %s" % p.stderr)
    T.check(not os.path.exists(os.path.join(D, "must-not-exist")), "the command did not run")


def amber_step(*args, env=None):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([os.path.join(VENV, "bin", "amber-step"), "--socket", A_SOCK] + list(args),
                          capture_output=True, text=True, env=e, timeout=120)


def test_amber_step_command():
    f = os.path.join(DATA, "f")
    T.check(not os.path.exists(f), "no f yet")
    p = amber_step("--volume", "pvc/data", "--volume", "pvc/model", "--freeze", "--label", "lang=sh",
                   "--", "sh", "-c", "echo x > %s" % f, env={"AMBER_RUN": "r-cmd", "AMBER_STEP": "write",
                                                           "AMBER_PIPELINE": "shell"})
    T.check_eq(p.returncode, 0, "amber-step: " + p.stderr)
    with open(f) as fh:
        T.check_eq(fh.read(), "x\n", "the command ran")
    got = by_phase(ca.run_snapshots("r-cmd"))
    T.check_eq(sorted(got), ["end", "start"], "phases")
    lab = got["end"][0].labels
    T.check_eq((lab["pipeline"], lab["step"], lab["lang"]), ("shell", "write", "sh"), "labels")
    STEP["start"] = [x for x in got["start"] if x.volume == "pvc/data"][0]
    STEP["end"] = [x for x in got["end"] if x.volume == "pvc/data"][0]
    # A failing command: its status, and the failure on the snapshots.
    p = amber_step("--volume", "pvc/model", "--run", "r-cmd-fail", "--step", "s", "--", "sh", "-c", "exit 3")
    T.check_eq(p.returncode, 3, "exit status kept")
    got = by_phase(ca.run_snapshots("r-cmd-fail"))
    T.check_eq(sorted(got), ["failed", "start"], "phases of a failure")
    T.check_eq(got["failed"][0].labels["error"], "exit-3", "error label")
    p = amber_step("--volume", "pvc/model", "--run", "r-cmd-kill", "--", "sh", "-c", "kill -KILL $$")
    T.check_eq(p.returncode, 128 + 9, "killed by a signal")
    T.check_eq([x.labels.get("error") for x in ca.run_snapshots("r-cmd-kill") if x.labels["phase"] == "failed"],
               ["signal-SIGKILL"], "signal label")
    # A signal without a name (a real-time one): its number.
    p = amber_step("--volume", "pvc/model", "--run", "r-cmd-rt", "--", "sh", "-c", "kill -35 $$")
    T.check_eq(p.returncode, 128 + 35, "killed by signal 35: " + p.stderr)
    T.check_eq([x.labels.get("error") for x in ca.run_snapshots("r-cmd-rt") if x.labels["phase"] == "failed"],
               ["signal-35"], "an unnamed signal's label")
    p = amber_step("--volume", "pvc/model", "--run", "r-cmd-missing", "--", "/nonexistent/cmd")
    T.check_eq(p.returncode, 127, "command not found")


def snap_volume(pod, name, attrs, ns="team-a"):
    return publish(ns, pod, name, attrs)


def test_inline_snapshot_volume():
    end, start = STEP["end"], STEP["start"]
    vid, target = snap_volume("notebook-0", "yesterday", {"amber.csi.dev/snapshot": "pvc/data@" + end.name})
    opts = mounted_at(target)
    T.check(opts is not None and "ro" in opts, "mounted read-only: %s" % opts)
    with open(os.path.join(target, "f")) as fh:
        T.check_eq(fh.read(), "x\n", "the snapshot's file")
    T.check(os.path.exists(os.path.join(target, "prepared")), "an earlier step's file")
    try:
        write(os.path.join(target, "g"), "no")
        raise AssertionError("a write succeeded")
    except OSError as e:
        T.check_eq(e.errno, errno.EROFS, "EROFS")
    T.check(end.id in attached_snapshots(), "attached while published")
    # Idempotent repeat.
    C["NodePublishVolume"](pod_volume("team-a", "notebook-0", "yesterday",
                                      {"amber.csi.dev/snapshot": "pvc/data@" + end.name})[2], timeout=60)
    # "The newest before T": between the step's start and end → the start.
    t = (start.created_ns + end.created_ns) // 2
    rfc = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t // 10**9)) + ".%09dZ" % (t % 10**9)
    vid2, target2 = snap_volume("notebook-0", "before", {"amber.csi.dev/snapshot": "pvc/data",
                                                         "amber.csi.dev/before": rfc,
                                                         "amber.csi.dev/labels": "run=r-cmd"})
    T.check(not os.path.exists(os.path.join(target2, "f")), "the start snapshot has no f")
    T.check(start.id in attached_snapshots(), "the start snapshot is the one attached")
    # What changed, in files, between the two snapshot volumes.
    ch = amber.changed_files(target2, target)
    T.check_eq([(c.path, c.kind) for c in ch], [("f", "added")], "changed files")
    T.check_eq([(c.path, c.kind) for c in amber.changed_files(target, DATA)], [], "end == live")
    # An id works too, and two pods share one attachment of a snapshot.
    vid3, target3 = snap_volume("notebook-2", "same", {"amber.csi.dev/snapshot": end.id})
    unpublish(vid, target)
    T.check(mounted_at(target) is None and not os.path.exists(target), "first pod's gone")
    with open(os.path.join(target3, "f")) as fh:
        T.check_eq(fh.read(), "x\n", "the other pod still reads it")
    for v, tg in ((vid2, target2), (vid3, target3)):
        unpublish(v, tg)
        T.check(mounted_at(tg) is None and not os.path.exists(tg), "unmounted, removed " + tg)
        unpublish(v, tg)      # idempotent
    T.check(not attached_snapshots(), "nothing attached: %s" % attached_snapshots())
    # An age: nothing of pvc/data is a week old.
    vid, target, req = pod_volume("team-a", "notebook-0", "old", {"amber.csi.dev/snapshot": "pvc/data",
                                                                  "amber.csi.dev/before": "1w"})
    T.expect_status(Code.NOT_FOUND, C["NodePublishVolume"], req, timeout=60)
    unpublish(vid, target)
    # Ages reaching back before 1970 (and one whose nanoseconds overflow 64
    # bits) are no snapshot either, not "no time limit".
    for age in ("30000d", "300000000d"):
        vid, target, req = pod_volume("team-a", "notebook-0", "ancient", {"amber.csi.dev/snapshot": "pvc/data",
                                                                          "amber.csi.dev/before": age})
        try:
            T.expect_status(Code.NOT_FOUND, C["NodePublishVolume"], req, timeout=60)
            T.check(mounted_at(target) is None, "nothing mounted for an age of " + age)
        finally:
            unpublish(vid, target)


def test_inline_other_namespace_refused():
    for ref in ("pvc/secret@b-snap", B_SNAP.id, "pvc/team-b/secret@b-snap", "b-snap",
                "pvc-team-b-secret@b-snap", "pvc/secret", "pvc/nope@x"):
        vid, target, req = pod_volume("team-a", "notebook-0", "trespass", {"amber.csi.dev/snapshot": ref})
        T.expect_status(Code.NOT_FOUND, C["NodePublishVolume"], req, timeout=60)
        T.check(mounted_at(target) is None, "nothing mounted for " + ref)
        T.check(not os.path.exists(os.path.join(target, ".amber-snapshot")), "no record for " + ref)
        unpublish(vid, target)
    T.check(not attached_snapshots(), "nothing attached")
    # Its own namespace finds it (a block volume's: no filesystem to mount,
    # refused, and undone), and a bad time is refused in so many words.
    vid, target, req = pod_volume("team-b", "notebook-1", "own", {"amber.csi.dev/snapshot": "pvc/secret@b-snap"})
    T.expect_status(Code.FAILED_PRECONDITION, C["NodePublishVolume"], req, timeout=60)
    T.check(mounted_at(target) is None and not os.path.exists(os.path.join(target, ".amber-snapshot")),
            "nothing left of a failed publish")
    T.check(not attached_snapshots(), "detached after a failed publish")
    unpublish(vid, target)
    _, _, req = pod_volume("team-a", "notebook-0", "bad", {"amber.csi.dev/snapshot": "pvc/data",
                                                           "amber.csi.dev/before": "yesterday"})
    T.expect_status(Code.INVALID_ARGUMENT, C["NodePublishVolume"], req, timeout=60)
    # ResolveSnapshot is the node socket's; a pod's socket does not offer it.
    try:
        ca._call("ResolveSnapshot", apb.ResolveSnapshotRequest(namespace="team-b", snapshot=B_SNAP.id),
                 apb.Snapshot)
        raise AssertionError("ResolveSnapshot served on a pod socket")
    except amber.Unimplemented:
        pass


def test_resolve_newest_of_several():
    """ResolveSnapshot of a volume: its newest ready snapshot created before
    before_ns with all the labels (one indexed catalog query, not a scan of
    the volume's list), in the namespace asked for."""
    made = [cb.snapshot("pvc/secret", name="res-%d" % i, labels={"k": "odd" if i % 2 else "even"})[0]
            for i in range(5)]
    odd, even = apb.Label(key="k", value="odd"), apb.Label(key="k", value="even")

    def resolve(**kw):
        return node["ResolveSnapshot"](apb.ResolveSnapshotRequest(namespace="team-b", volume="pvc/secret",
                                                                  **kw), timeout=30)
    T.check_eq(resolve().id, made[4].id, "the newest")
    T.check_eq(resolve(labels=[odd]).id, made[3].id, "the newest labelled k=odd")
    T.check_eq(resolve(before_ns=made[4].created_ns).id, made[3].id, "the newest before the last")
    T.check_eq(resolve(before_ns=made[3].created_ns, labels=[odd]).id, made[1].id,
               "the newest labelled k=odd before the fourth")
    T.check_eq(resolve(before_ns=made[1].created_ns, labels=[even]).id, made[0].id, "the first")
    T.check_eq(resolve(before_ns=made[0].created_ns).id, B_SNAP.id, "the one before them all")
    e = T.expect_status(Code.NOT_FOUND, node["ResolveSnapshot"], apb.ResolveSnapshotRequest(
        namespace="team-b", volume="pvc/secret", before_ns=made[0].created_ns, labels=[odd]), timeout=30)
    T.check("with those labels" in e.details(), e.details())
    T.expect_status(Code.NOT_FOUND, node["ResolveSnapshot"], apb.ResolveSnapshotRequest(
        namespace="team-a", volume="pvc/secret"), timeout=30)
    delete = N.unary("DeleteSnapshot", apb.SnapshotRef, apb.Empty)
    for s in made:
        delete(apb.SnapshotRef(snapshot=s.id), timeout=60)
    T.check_eq(resolve().id, B_SNAP.id, "the newest once they are gone")


def test_unpublish_after_amberd_restart():
    end = STEP["end"]
    for how in ("stop", "kill"):
        vid, target = snap_volume("notebook-0", "restart-" + how, {"amber.csi.dev/snapshot": end.id})
        T.check(end.id in attached_snapshots(), "attached")
        if how == "stop":
            d.stop()
        else:
            d.kill()
        # amberd is down: unpublish cannot release the snapshot and says so;
        # the record stays for the retry.
        T.expect_status(Code.UNAVAILABLE, C["NodeUnpublishVolume"],
                        pb.NodeUnpublishVolumeRequest(volume_id=vid, target_path=target), timeout=60)
        T.check(os.path.exists(os.path.join(target, ".amber-snapshot")), "record kept")
        d.start()
        unpublish(vid, target)
        T.check(mounted_at(target) is None and not os.path.exists(target), "nothing mounted (%s)" % how)
        T.check(not attached_snapshots(), "nothing attached after a restart (%s)" % how)
    # Published across a restart, unpublished after it.
    vid, target = snap_volume("notebook-0", "across", {"amber.csi.dev/snapshot": end.id})
    d.kill()
    d.start()
    with open(os.path.join(target, "f")) as fh:
        T.check_eq(fh.read(), "x\n", "still readable after amberd's restart")
    unpublish(vid, target)
    T.check(mounted_at(target) is None and not attached_snapshots(), "undone after a restart")
    # Publish while amberd is down: UNAVAILABLE, nothing left.
    d.kill()
    vid, target, req = pod_volume("team-a", "notebook-0", "down", {"amber.csi.dev/snapshot": end.id})
    T.expect_status(Code.UNAVAILABLE, C["NodePublishVolume"], req, timeout=60)
    d.start()
    T.check(mounted_at(target) is None, "nothing mounted")
    unpublish(vid, target)
    T.check(not attached_snapshots(), "nothing attached")
    T.wait_for_socket(A_SOCK)


def test_history_and_manifest():
    rows = amber.history_rows("pvc/data", client=ca)
    T.check(len(rows) >= 4, "history rows")
    T.check(all(set(r) >= {"time", "name", "id", "changed_bytes", "labels"} for r in rows), "columns")
    T.check_eq([r["id"] for r in rows], sorted((r["id"] for r in rows),
                                               key=lambda i: [x["time"] for x in rows if x["id"] == i][0]),
               "oldest first")
    end = [r for r in rows if r["id"] == STEP["end"].id][0]
    T.check(end["changed_bytes"] > 0 and end["labels"]["phase"] == "end", "the step's end: %s" % end)
    T.check("CHANGED" in amber.history_table("pvc/data", client=ca), "table")
    amber.history_rows("pvc/data", client=ca, last=1)
    try:
        amber.history_rows("pvc/secret", client=ca)
        raise AssertionError("another namespace's history")
    except amber.NotFound:
        pass
    y = amber.restore_manifest(STEP["end"].id, pvc="data-restored", client=ca)
    docs = list(yaml.safe_load_all(y))
    T.check_eq([x["kind"] for x in docs], ["VolumeSnapshotContent", "VolumeSnapshot",
                                            "PersistentVolumeClaim"], "kinds")
    vsc, vs, pvc = docs
    T.check_eq(vsc["spec"]["source"]["snapshotHandle"], STEP["end"].id, "handle")
    T.check_eq((vs["metadata"]["namespace"], pvc["metadata"]["namespace"]), ("team-a", "team-a"),
               "the socket's namespace")
    T.check_eq(pvc["spec"]["dataSource"], {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot",
                                           "name": vs["metadata"]["name"]}, "dataSource")
    T.check_eq(pvc["spec"]["resources"]["requests"]["storage"], "64Mi", "size")
    p = subprocess.run([os.path.join(T.BUILD, "amberctl"), "--socket", A_SOCK, "snapshot", "k8s-manifest",
                        STEP["end"].id, "--namespace", "team-a", "--name", vs["metadata"]["name"]],
                       capture_output=True, text=True, timeout=60)
    T.check_eq(p.returncode, 0, "amberctl k8s-manifest through the pod socket: " + p.stderr)
    T.check_eq(y.split("---\napiVersion: v1\n")[0], p.stdout, "the same VolumeSnapshot as amberctl's")


def test_daemon_stops_clean():
    subprocess.run(["umount", DATA], check=True)
    node["DetachVolume"](apb.AttachVolumeRequest(volume=A_DATA), timeout=60)
    rc = d.stop()
    text = d.log()
    T.check("Sanitizer" not in text and "runtime error" not in text, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")
    cch.close()
    CSI_PROC.terminate()
    CSI_PROC.wait(timeout=30)
    with open(os.path.join(D, "amber-csi.log"), errors="replace") as f:
        text = f.read()
    T.check("Sanitizer" not in text and "runtime error" not in text, "sanitizer report in amber-csi's log")


sys.exit(T.Tests().run([
    test_installed_package,
    test_context_manager,
    test_failure_labelled,
    test_decorator,
    test_other_namespace_refused,
    test_amber_step_command,
    test_inline_snapshot_volume,
    test_inline_other_namespace_refused,
    test_resolve_newest_of_several,
    test_unpublish_after_amberd_restart,
    test_history_and_manifest,
    test_daemon_stops_clean,
]))
