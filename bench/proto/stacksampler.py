#!/usr/bin/python3
"""stacksampler.py PID OUT [HZ=200]: sample /proc/PID/stack while PID is inside a btrfs ioctl; at
SIGTERM write OUT (JSON: [[t, [frames...]], ...]). A poor man's off-CPU profile of the snapshot ioctl."""
import json, sys, time, signal, re
pid, out = sys.argv[1], sys.argv[2]
hz = float(sys.argv[3]) if len(sys.argv) > 3 else 200
samples = []
def done(*a):
    json.dump(samples, open(out, "w")); sys.exit(0)
signal.signal(signal.SIGTERM, done)
pat = re.compile(r"\] ([^+ ]+)\+")
path = "/proc/%s/stack" % pid
while True:
    try:
        st = open(path).read()
    except OSError:
        done()
    if "btrfs_ioctl" in st:
        samples.append([time.time(), pat.findall(st)])
    time.sleep(1 / hz)
