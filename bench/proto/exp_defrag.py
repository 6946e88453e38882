#!/usr/bin/python3
"""exp_defrag.py: fragment a 1 GiB No_COW image with snapshots (newest 2 kept) under a 4000-IOPS 4k
writer, then DEFRAG_RANGE steps of 8/32/128 MiB with the writer running (time/MiB, extents before/after,
writer stall), then (writer stopped) 4k randwrite IOPS and 1M seq read of the image vs a never-snapshotted
identical image, interleaved: fragmented, right after a snapshot, after defrag of the whole image."""
import lab, os, time, json
FRAG_S = float(os.environ.get("FRAG_S", "40")); MEAS = int(os.environ.get("MEAS_S", "6"))
p = lab.Pool()
out = {}
try:
    v = p.subvol("vol"); r = p.subvol("ref"); sd = os.path.join(p.mnt, "snaps"); os.mkdir(sd)
    img = p.image(os.path.join(v, "disk"), 1 << 30); ref = p.image(os.path.join(r, "disk"), 1 << 30)
    dev = p.attach(img); rdev = p.attach(ref)
    w = lab.Writer(dev, p.dir, rate=4000)
    t = time.monotonic(); i = 0
    while time.monotonic() - t < FRAG_S:
        lab.snapshot(v, sd, str(i))
        if i >= 2: lab.snap_destroy(sd, str(i - 2))
        i += 1; time.sleep(0.3)
    print("fragmented with %d snapshots: %d extents" % (i, lab.extents(img)), flush=True)
    time.sleep(1)
    steps = []
    off = 0
    for sz in (8 << 20, 32 << 20, 128 << 20):
        for k in range(3):
            e0 = lab.extents(img, off, sz)
            t0 = time.time(); d = lab.defrag_range(img, off, sz); t1 = time.time()
            e1 = lab.extents(img, off, sz)
            steps.append({"size_mib": sz >> 20, "off": off, "ext_before": e0, "ext_after": e1, "s": d, "t0": t0, "t1": t1})
            off += sz
            time.sleep(0.5)
    time.sleep(1)
    w.stop(); lat = w.lat()
    for s in steps:
        s["stall"] = lab.worst_in(lat, s["t0"], s["t1"])
        print(" defrag %4d MiB @%5d MiB: %6d -> %4d extents, %6.0f ms (%5.1f ms/MiB), writer stall %5.1f ms" % (
            s["size_mib"], s["off"] >> 20, s["ext_before"], s["ext_after"], s["s"] * 1e3, s["s"] * 1e3 / s["size_mib"], s["stall"] * 1e3), flush=True)
    out["steps"] = steps
    def pair(label, rw, bs, depth):
        a = lab.fio_once(rdev, rw, bs, MEAS, depth); b = lab.fio_once(dev, rw, bs, MEAS, depth)
        a2 = lab.fio_once(rdev, rw, bs, MEAS, depth)
        base = (a["iops"] + a2["iops"]) / 2
        print(" %-28s %s: ref %7.0f/%7.0f IOPS  img %7.0f IOPS  ratio %.2f  (p99 ref %.2f img %.2f ms) ext %d" % (
            label, rw + bs, a["iops"], a2["iops"], b["iops"], b["iops"] / base, a["p99_ms"], b["p99_ms"], lab.extents(img)), flush=True)
        out[label + " " + rw] = {"ref": [a, a2], "img": b}
    pair("fragmented(partly defragd)", "read", "1M", 8)
    lab.snapshot(v, sd, "c1")
    pair("right after snapshot", "randwrite", "4k", 32)
    pair("after that", "read", "1M", 8)
    t0 = time.monotonic(); e0 = lab.extents(img)
    for o in range(0, 1 << 30, 32 << 20): lab.defrag_range(img, o, 32 << 20)
    d = time.monotonic() - t0
    print(" whole-image defrag (32 MiB steps, idle): %d -> %d extents in %.1f s (%.1f ms/MiB)" % (e0, lab.extents(img), d, d * 1e3 / 1024), flush=True)
    pair("after whole defrag", "randwrite", "4k", 32)
    pair("after whole defrag+rw", "read", "1M", 8)
    lab.snapshot(v, sd, "c2")
    pair("defragd, right after snapshot", "randwrite", "4k", 32)
    json.dump(out, open("/tmp/exp_defrag.json", "w"))
finally:
    p.cleanup()
