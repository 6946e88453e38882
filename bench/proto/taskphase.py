#!/usr/bin/python3
"""taskphase.py SAMPLES.json AMBERD.LOG [PREFIX=tm]: tasksampler.py's samples of the mover during the
time machine's snapshots only (from the first to the last logged snapshot PREFIX*): how much of that
phase the mover spent in each kernel activity, defragmenter steps included."""
import collections, datetime, importlib.util, json, os, re, sys

spec = importlib.util.spec_from_file_location("taskreport_act", os.path.join(os.path.dirname(__file__), "taskreport.py"))
s = json.load(open(sys.argv[1]))
prefix = sys.argv[3] if len(sys.argv) > 3 else "tm"
ts = []
for line in open(sys.argv[2]):
    m = re.match(r"ts=(\S+) .*component=snapshot msg=\"snapshot %s" % prefix, line)
    if m:
        ts.append(datetime.datetime.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp())
t0, t1 = min(ts), max(ts)
sys.argv = [sys.argv[0], sys.argv[1], str(t0), str(t1)]
print("time machine phase: %.1f s, %d snapshots" % (t1 - t0, len(ts)))
exec(open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "taskreport.py")).read())
