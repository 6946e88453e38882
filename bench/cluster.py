#!/usr/bin/python3
"""bench/cluster.py: a volume from another node's snapshot, one run.

Three cluster-mode nodes on this machine (amberd + amber-csi each, own loop
pool, mutual TLS over 127.0.0.1, node certificates from one cluster CA). A
4 GiB volume on n1 is half full (half random, half compressible data) and
snapshotted; then, each timed from the first CSI CreateVolume to the bound
volume (the provisioner's view: ABORTED pending, then the retry):
  cluster first   n2: CreateVolume from n1's snapshot (allocated extents)
  cluster delta   1 % changed on n1, snapshot; n2: CreateVolume from it
                  (only the delta: n2 holds the earlier snapshot)
  rsync first     rsync -S of n1's snapshot image to n2's pool
  rsync delta     rsync --inplace --no-whole-file onto the previous copy
  archive restore n1 stopped; n3: CreateVolume from the second snapshot,
                  restored from a file:// archive (exported untimed before)
Prints seconds and bytes moved, and ratios against rsync in the same run.
Runs as root. Environment: SIZE_GIB (default 4), CHANGE_PCT (default 1);
PERF=FILE records the first copy with `perf record -g` on n1's and n2's
amberd into FILE and prints the top symbols of each (where the CPU goes)."""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
import amber_test as T  # noqa: E402
from benchdata import GiB, MiB, PCT, SIZE, Data, timed, write  # noqa: E402

import grpc  # noqa: E402

T.genproto()
import csi_pb2 as pb  # noqa: E402

data = Data(5)
blob = data.blob
AMBERCTL = os.path.join(T.BUILD, "amberctl")
PLUGIN = os.path.join(T.BUILD, "amber-csi")
D = T.tmpdir("amber-bench-cluster-")
CA = os.path.join(D, "ca")
subprocess.run([AMBERCTL, "cluster", "init-ca", "--out", CA], check=True, capture_output=True)
REG = os.path.join(D, "peers")
os.makedirs(REG)
REPO = "file://" + os.path.join(D, "archive")
PWF = os.path.join(D, "pw")
with open(PWF, "w") as f:
    f.write("bench\n")
subprocess.run([AMBERCTL, "repo", "init", "--repo", REPO, "--password-file", PWF], check=True,
               capture_output=True)
ARCH = os.path.join(D, "archives.conf")
with open(ARCH, "w") as f:
    f.write("main %s %s\n" % (REPO, PWF))


class Node:
    def __init__(self, name, pool_gib):
        self.name = name
        self.a = T.Amberd(size="%dG" % pool_gib, extra=[
            "--node-id", name, "--peer-listen", "127.0.0.1:0", "--log-level", "warn",
            "--cluster-ca", os.path.join(CA, "ca.crt"), "--cluster-ca-key", os.path.join(CA, "ca.key"),
            "--cluster-registry", "dir:" + REG, "--archives-file", ARCH])
        sock = os.path.join(self.a.dir, "csi.sock")
        p = T.spawn([PLUGIN, "--endpoint", "unix://" + sock, "--node-id", name, "--amberd", self.a.sock,
                     "--node-handles", "--create-wait-ms", "600000", "--log-level", "warn"])
        T.wait_for_socket(sock, p)
        ch = grpc.insecure_channel("unix://" + sock)
        T.cleanup.add("close", ch.close)
        s = T.Stub(ch, "csi.v1.Controller", pb)
        self.create = s.unary("CreateVolume", pb.CreateVolumeRequest, pb.CreateVolumeResponse)
        self.snap = s.unary("CreateSnapshot", pb.CreateSnapshotRequest, pb.CreateSnapshotResponse)


def cap():
    c = pb.VolumeCapability(access_mode=pb.VolumeCapability.AccessMode(mode=1))
    c.block.SetInParent()
    return c


def pvc(node, name, snap=None):
    q = pb.CreateVolumeRequest(name=name, volume_capabilities=[cap()],
                               capacity_range=pb.CapacityRange(required_bytes=SIZE))
    if snap:
        q.volume_content_source.snapshot.snapshot_id = snap
    for _ in range(100):        # the provisioner's retries
        try:
            return node.create(q, timeout=700).volume
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.ABORTED:
                raise
    raise RuntimeError("no volume after 100 calls")


def job(node, vol):
    name = vol.volume_context["amber.csi.dev/name"]
    return [j for j in node.a.ctl("cluster", "jobs") if j["name"] == name][0]


n1, n2, n3 = (Node("n1", SIZE // GiB + 4), Node("n2", 3 * SIZE // GiB + 4),
              Node("n3", SIZE // GiB + 3))
v = pvc(n1, "src")
vid = v.volume_id.split("/")[1]
dev = n1.a.ctl("volume", "attach", vid)["device"]
print("filling %d of %d GiB..." % (SIZE // 2 // GiB, SIZE // GiB), flush=True)
for off in range(0, SIZE // 2, 64 * MiB):
    write(dev, [(off, blob(64 * MiB))])
s1 = n1.snap(pb.CreateSnapshotRequest(name="s1", source_volume_id=v.volume_id), timeout=60).snapshot

def profiled(fn):
    out = os.environ.get("PERF")
    if not out:
        return fn()
    # System-wide (-a): threads amberd starts during the copy are in it too;
    # the report picks each amberd out by pid.
    rec = subprocess.Popen(["perf", "record", "-q", "-a", "-F", "499", "-g", "-o", out],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return fn()
    finally:
        rec.send_signal(15)
        rec.wait(timeout=120)
        for pid in (n1.a.proc.pid, n2.a.proc.pid):
            rep = subprocess.run(["perf", "report", "-i", out, "--no-children", "--pid", str(pid),
                                  "--sort", "dso,sym", "--stdio", "-g", "none", "--percent-limit", "1.5"],
                                 capture_output=True, text=True).stdout
            print("--- perf, amberd of %s (pid %d)" % ("n1" if pid == n1.a.proc.pid else "n2", pid))
            print("\n".join(ln for ln in rep.splitlines() if ln.strip() and not ln.startswith("#")))


rows = []
secs, b1 = timed(lambda: profiled(lambda: pvc(n2, "first", s1.snapshot_id)))
rows.append(("cluster: first copy (CSI CreateVolume)", secs, job(n2, b1)["bytes_on_wire"]))

total, chunks = data.change()
write(dev, chunks)
n1.a.ctl("volume", "detach", vid)
s2 = n1.snap(pb.CreateSnapshotRequest(name="s2", source_volume_id=v.volume_id), timeout=60).snapshot
secs, b2 = timed(lambda: pvc(n2, "delta", s2.snapshot_id))
rows.append(("cluster: after %.0f %% change" % PCT, secs, job(n2, b2)["bytes_on_wire"]))

img = lambda s: os.path.join(n1.a.pool, "snaps", vid, s.snapshot_id.split("/")[1], "disk")  # noqa: E731
work = os.path.join(n2.a.pool, "bench-rsync")
os.makedirs(work, exist_ok=True)
dst = os.path.join(work, "disk")


def rsync(*args):
    p = subprocess.run(["rsync", "--stats"] + list(args), check=True, capture_output=True, text=True)
    return sum(int(re.search(r"Total bytes %s: ([\d,]+)" % k, p.stdout).group(1).replace(",", ""))
               for k in ("sent", "received"))


secs, moved = timed(lambda: rsync("-S", img(s1), dst))
rows.append(("rsync -S of the image (first)", secs, moved))
secs, moved = timed(lambda: rsync("--inplace", "--no-whole-file", img(s2), dst))
rows.append(("rsync --inplace --no-whole-file (delta)", secs, moved))

n1.a.ctl("snapshot", "archive", s2.snapshot_id.split("/")[1], "--to", "main", "--wait")
n1.a.stop()
secs, b3 = timed(lambda: pvc(n3, "restored", s2.snapshot_id))
rows.append(("archive restore (n1 gone)", secs, 0))

print()
print("%d GiB volume, half full; %.1f %% changed (%d bytes)" % (SIZE // GiB, PCT, total))
print("%-42s %9s %14s %9s" % ("method", "seconds", "bytes moved", "vs rsync"))
refs = [rows[2][1], rows[3][1], rows[2][1], rows[3][1], rows[2][1]]
for (name, secs, moved), ref in zip(rows, refs):
    print("%-42s %9.2f %14s %8.2fx" % (name, secs, moved or "-", ref / secs if secs else 0))
sys.exit(0)
