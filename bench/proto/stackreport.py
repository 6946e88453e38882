#!/usr/bin/python3
"""stackreport.py SAMPLES.json: where the sampled ioctl spent its time (leaf-most btrfs frame, and
the call path of the 8 most common leaves)."""
import json, sys, collections
s = json.load(open(sys.argv[1]))
skip = ("schedule", "__schedule", "io_schedule", "schedule_timeout", "wait_", "__wait", "prepare_to_wait",
        "finish_wait", "bit_wait", "out_of_line_wait_on_bit", "__cond_resched", "preempt_schedule")
leaf = collections.Counter(); paths = {}
for t, fr in s:
    f = [x for x in fr if not x.startswith(skip)]
    key = " < ".join(f[:3])
    leaf[key] += 1; paths.setdefault(key, fr)
n = len(s)
print("%d samples" % n)
for k, c in leaf.most_common(12):
    print("%5.1f%%  %s" % (100.0 * c / n, k))
