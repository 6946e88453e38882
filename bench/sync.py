#!/usr/bin/python3
"""bench/sync.py: Amber peer sync against rsync and btrfs send, one run.

A 4 GiB volume (half random, half compressible data) is replicated once
(untimed); then 1 % of it changes (half in a few clustered runs, half in
scattered 4 KiB blocks) and the new snapshot is moved three ways, each
onto a copy of the previous one on a second btrfs pool on this machine:
  amber   amberctl sync pull (mutual TLS over 127.0.0.1, zstd -1)
  rsync   rsync --inplace --no-whole-file of the image onto the previous
          copy (its delta algorithm reads both images end to end)
  btrfs   btrfs send -p PREV NEW | btrfs receive (an uncompressed stream)
Prints a table of seconds and bytes on the wire, with the compressed size
of the changed data (zstd -1) for reference. Runs as root.
Environment: SIZE_GIB (default 4), CHANGE_PCT (default 1)."""
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "lib"))
import amber_test as T  # noqa: E402
from benchdata import GiB, MiB, PCT, SIZE, Data, timed, write  # noqa: E402

data = Data(4)
blob = data.blob


A = T.Amberd(size="%dG" % (SIZE // GiB + 3), extra=["--peer-listen", "127.0.0.1:0"])
B = T.Amberd(size="%dG" % (3 * SIZE // GiB + 4), extra=["--peer-listen", "127.0.0.1:0"])
IA, IB = A.ctl("info"), B.ctl("info")
A.ctl("peer", "add", "b", "--address", IB["peer_address"], "--fingerprint", IB["fingerprint"])
B.ctl("peer", "add", "a", "--address", IA["peer_address"], "--fingerprint", IA["fingerprint"])
A.ctl("volume", "create", "vol", "--size", "%d" % SIZE)
A.ctl("volume", "publish", "vol", "--to", "b")
dev = A.ctl("volume", "attach", "vol")["device"]
print("filling %d GiB..." % (SIZE // GiB), flush=True)
for off in range(0, SIZE, 64 * MiB):
    write(dev, [(off, blob(64 * MiB))])
s1 = A.ctl("snapshot", "create", "vol", "--name", "s1")
B.ctl("sync", "pull", "a", "vol")

# 1 %: half clustered runs, half scattered blocks.
total, chunks = data.change()
write(dev, chunks)
A.ctl("volume", "detach", "vol")
s2 = A.ctl("snapshot", "create", "vol", "--name", "s2")
vid_a = A.ctl("volume", "show", "vol")["id"]
vid_b = B.ctl("volume", "show", "vol")["id"]
snap_a = lambda s: os.path.join(A.pool, "snaps", vid_a, s["id"])
snap_b = lambda s: os.path.join(B.pool, "snaps", vid_b, s["id"])

# The changed data, compressed as Amber does (zstd -1), for reference.
ext = A.ctl("snapshot", "diff", s1["id"], s2["id"])["extents"]
changed = sum(e["length"] for e in ext)
z = subprocess.Popen(["zstd", "-1", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
import threading  # noqa: E402
zsize = [0]
threading.Thread(target=lambda: zsize.__setitem__(0, len(z.stdout.read()))).start()
with open(os.path.join(snap_a(s2), "disk"), "rb") as f:
    for e in ext:
        f.seek(e["offset"])
        z.stdin.write(f.read(e["length"]))
z.stdin.close()
z.wait()
time.sleep(0.2)

rows = []
# amber
secs, r = timed(lambda: B.ctl("sync", "pull", "a", "vol"))
rows.append(("amber sync pull", secs, r["bytes_on_wire"]))
assert r["bytes_changed"] == changed

# rsync: onto a reflinked copy of the previous image on B's pool.
work = os.path.join(B.pool, "bench-rsync")
os.makedirs(work, exist_ok=True)
dst = os.path.join(work, "disk")
open(dst, "w").close()
subprocess.run(["chattr", "+C", dst], check=True)      # clones need both No_COW
subprocess.run(["cp", "--reflink=always", os.path.join(snap_b(s1), "disk"), dst], check=True)
secs, p = timed(lambda: subprocess.run(
    ["rsync", "--inplace", "--no-whole-file", "--stats", os.path.join(snap_a(s2), "disk"), dst],
    check=True, capture_output=True, text=True))
sent = int(re.search(r"Total bytes sent: ([\d,]+)", p.stdout).group(1).replace(",", ""))
recv = int(re.search(r"Total bytes received: ([\d,]+)", p.stdout).group(1).replace(",", ""))
rows.append(("rsync --inplace --no-whole-file", secs, sent + recv))

# btrfs send -p | btrfs receive: the previous snapshot first (untimed).
rdir = os.path.join(B.pool, "bench-btrfs")
os.makedirs(rdir, exist_ok=True)
subprocess.run("btrfs send -q %s | btrfs receive -q %s" % (snap_a(s1), rdir), shell=True, check=True)
cnt = os.path.join(B.dir, "send.bytes")
secs, _ = timed(lambda: subprocess.run(
    "btrfs send -q -p %s %s | tee >(wc -c > %s) | btrfs receive -q %s" %
    (snap_a(s1), snap_a(s2), cnt, rdir), shell=True, check=True, executable="/bin/bash"))
time.sleep(0.2)
rows.append(("btrfs send -p | btrfs receive", secs, int(open(cnt).read().strip())))

for sub in os.listdir(rdir):
    subprocess.run(["btrfs", "subvolume", "delete", os.path.join(rdir, sub)], capture_output=True)

print()
print("%d GiB volume, %.1f %% changed: %d bytes in %d extents; zstd -1 of them: %d bytes" %
      (SIZE // GiB, PCT, changed, len(ext), zsize[0]))
print("%-34s %10s %16s %10s" % ("method", "seconds", "bytes on wire", "vs amber"))
for name, secs, wire in rows:
    print("%-34s %10.2f %16d %9.1fx" % (name, secs, wire, secs / rows[0][1]))
print("amber wire / compressed changed = %.4f" % (rows[0][2] / max(zsize[0], 1)))
A.stop()
B.stop()
