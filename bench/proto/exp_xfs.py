#!/usr/bin/python3
"""exp_xfs.py COWEXT [N] [INTERVAL]: XFS reflink "snapshots" (FICLONE of the image, newest 2 kept)
under the 4k writer (WRATE, WMIX as exp_snap.py); COWEXT is the image's cowextsize hint ("0" = default).
Reports FICLONE time, writer stall and extent count per bucket, then 1M seq read and 4k randwrite of the
image vs a never-cloned one."""
import lab, os, sys, time
cow = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
ivl = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
cap = float(os.environ.get("CAP", "75")); rate = int(os.environ.get("WRATE", "1500")); mix = os.environ.get("WMIX", "70")
p = lab.Pool(fs="xfs")
try:
    v = p.subvol("vol"); r = p.subvol("ref"); sd = os.path.join(p.mnt, "snaps"); os.mkdir(sd)
    img = p.image(os.path.join(v, "disk"), 1 << 30, cowextsize=None if cow == "0" else cow)
    ref = p.image(os.path.join(r, "disk"), 1 << 30)
    print(lab.sh("xfs_io", "-c", "cowextsize", img).strip())
    dev = p.attach(img); rdev = p.attach(ref)
    w = lab.Writer(dev, p.dir, rate=rate, rw="randrw" if mix else "randwrite", mix=int(mix) if mix else None)
    time.sleep(2)
    res = []; start = time.monotonic(); i = 0
    while i < N and time.monotonic() - start < cap:
        t0 = time.time(); d = lab.ficlone(img, os.path.join(sd, str(i))); t1 = time.time()
        rr = {"i": i + 1, "t0": t0, "t1": t1, "snap": d}
        if i >= 2: os.unlink(os.path.join(sd, str(i - 2)))
        if i % 10 == 0: rr["extents"] = lab.extents(img)
        res.append(rr); i += 1; time.sleep(ivl)
    time.sleep(1); w.stop(); lat = w.lat()
    for rr in res: rr["stall"] = lab.worst_in(lat, rr["t0"], rr["t1"])
    wl = [l for e, l, dd in lat if dd == 1]
    print("xfs cowextsize=%s: %d clones; writer p99 %.1f ms max %.0f ms, %d s with a write > 50 ms" % (
        cow, len(res), lab.pct(wl, 99) * 1e3, max(wl) * 1e3, len({int(e) for e, l, dd in lat if dd == 1 and l > 0.05})))
    B = max(1, len(res) // 8)
    for b in range(0, len(res), B):
        c = res[b:b + B]; sn = [x["snap"] * 1e3 for x in c]; st = [x["stall"] * 1e3 for x in c]
        print(" clones %3d-%3d FICLONE p50 %7.1f max %7.1f ms | stall p50 %6.1f max %6.1f ms | extents %s" % (
            c[0]["i"], c[-1]["i"], lab.pct(sn, 50), max(sn), lab.pct(st, 50), max(st), [x["extents"] for x in c if "extents" in x]))
    for prof, bs, dep in (("read", "1M", 8), ("randwrite", "4k", 32)):
        a = lab.fio_once(rdev, prof, bs, 6, dep); b2 = lab.fio_once(dev, prof, bs, 6, dep); a2 = lab.fio_once(rdev, prof, bs, 6, dep)
        print(" after: %s %s ref %.0f/%.0f image %.0f ratio %.2f (extents %d)" % (prof, bs, a["iops"], a2["iops"], b2["iops"],
              2 * b2["iops"] / (a["iops"] + a2["iops"]), lab.extents(img)))
finally:
    p.cleanup()
