#!/usr/bin/python3
"""exp_snap.py MODE [N] [INTERVAL] [PRESYNC]: snapshot latency and writer stall under a 4k random writer.
MODE keep (all kept) | keep2 (only the newest 2); PRESYNC none|syncfs|fsync|alt (alternate none/syncfs).
Writer: WRATE (4000) randwrite, or WMIX=70 for a 70/30 randrw. Prints per-bucket numbers, JSON to OUT."""
import lab, os, sys, time, json
mode = sys.argv[1]; N = int(sys.argv[2]) if len(sys.argv) > 2 else 120
ivl = float(sys.argv[3]) if len(sys.argv) > 3 else 0.3
presync = sys.argv[4] if len(sys.argv) > 4 else "none"
cap = float(os.environ.get("CAP", "200"))
rate = int(os.environ.get("WRATE", "4000")); mix = os.environ.get("WMIX")
p = lab.Pool()
res = []
try:
    v = p.subvol("vol"); sd = os.path.join(p.mnt, "snaps"); os.mkdir(sd)
    img = p.image(os.path.join(v, "disk"), 1 << 30)
    dev = p.attach(img)
    wr = None
    if os.environ.get("REF"):  # a second volume (own subvolume, never snapshotted) under the same load
        rimg = p.image(os.path.join(p.subvol("ref"), "disk"), 1 << 30)
        wr = lab.Writer(p.attach(rimg), p.dir, name="r", rate=rate, rw="randrw" if mix else "randwrite",
                        mix=int(mix) if mix else None)
    w = lab.Writer(dev, p.dir, rate=rate, rw="randrw" if mix else "randwrite", mix=int(mix) if mix else None)
    dfg = None
    if os.environ.get("DEFRAG"):  # "STEP_MIB MIN_EXT PAUSE_MS"
        import subprocess
        dfg = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "defragger.py"), img]
                               + os.environ["DEFRAG"].split() + [os.path.join(p.dir, "defrag.log")])
    smp = None
    if os.environ.get("STACKS"):
        import subprocess
        smp = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "stacksampler.py"),
                                str(os.getpid()), os.environ["STACKS"]])
    time.sleep(2)
    tq0 = time.time(); time.sleep(3); tq1 = time.time()
    start = time.monotonic()
    for i in range(N):
        if time.monotonic() - start > cap:
            break
        ps = presync if presync != "alt" else ("syncfs" if i % 2 else "none")
        t0 = time.time(); tps = 0.0
        if ps == "syncfs":
            tps = lab.syncfs(v)
        elif ps == "fsync":
            tps = lab.fsync(img)
        ts = time.time()
        d = lab.snapshot(v, sd, str(i))
        t1 = time.time()
        r = {"i": i + 1, "t0": t0, "ts": ts, "t1": t1, "snap": d, "presync": ps, "presync_s": tps}
        if mode == "keep2" and i >= 2:
            r["del"] = lab.snap_destroy(sd, str(i - 2))
        if i % 10 == 0 or i == N - 1:
            te = time.monotonic(); r["extents"] = lab.extents(img); r["fiemap_s"] = time.monotonic() - te
        res.append(r)
        time.sleep(ivl)
    if dfg:
        dfg.terminate(); dfg.wait()
        dl = [list(map(float, l.split())) for l in open(os.path.join(p.dir, "defrag.log"))]
        print("defragger: %d steps, %.0f MiB, %.1f ms/MiB, extents %d -> %d per step (mean)" % (
            len(dl), len(dl) * int(os.environ["DEFRAG"].split()[0]), 1e3 * sum(b - a for a, b, *_ in dl) / max(1, len(dl) * int(os.environ["DEFRAG"].split()[0])),
            sum(x[3] for x in dl) / max(1, len(dl)), sum(x[4] for x in dl) / max(1, len(dl))))
    if smp:
        smp.terminate(); smp.wait()
    time.sleep(1)
    w.stop()
    lat = w.lat()
    if wr:
        wr.stop(); rl = wr.lat()
        rst = [lab.worst_in(rl, r["t0"], r["t1"]) for r in res]
        rw_ = [l for e, l, dd in rl if dd == 1]
        print("REF volume (not snapshotted): write p99 %.1f ms max %.0f ms, %d s with a write > 50 ms; stall during the "
              "other volume's snapshots p50 %.1f max %.0f ms; slow seconds shared with the snapshotted volume: %d" % (
              lab.pct(rw_, 99) * 1e3, max(rw_) * 1e3, len({int(e) for e, l, dd in rl if dd == 1 and l > 0.05}),
              lab.pct(rst, 50) * 1e3, max(rst) * 1e3,
              len({int(e) for e, l, dd in rl if dd == 1 and l > 0.05} & {int(e) for e, l, dd in lat if dd == 1 and l > 0.05})))
    quiet = lab.worst_in(lat, tq0, tq1)
    for r in res:
        r["stall"] = lab.worst_in(lat, r["t0"], r["t1"])
    wl = [l for e, l, dd in lat if dd == 1]
    slow = len({int(e) for e, l, dd in lat if dd == 1 and l > 0.05})
    out = {"mode": mode, "presync": presync, "rate": rate, "mix": mix, "quiet_max_ms": quiet * 1e3,
           "w_p99_ms": lab.pct(wl, 99) * 1e3, "w_max_ms": max(wl) * 1e3, "secs_over_50ms": slow,
           "writes": len(wl), "snaps": res}
    json.dump(out, open(os.environ.get("OUT", "/tmp/exp_snap-%s-%s.json" % (mode, presync)), "w"))
    out["outliers"] = [(r["i"], round(r["t0"] - res[0]["t0"], 1), round(r["snap"] * 1e3), round(r["stall"] * 1e3))
                       for r in res if r["snap"] > 0.4 or r["stall"] > 0.1]
    print("outliers (i, t s, create ms, stall ms):", out["outliers"])
    print("mode=%s presync=%s rate=%d mix=%s quiet_max=%.1fms writer p99=%.1fms max=%.0fms secs>50ms=%d n=%d" % (
        mode, presync, rate, mix, quiet * 1e3, out["w_p99_ms"], out["w_max_ms"], slow, len(res)))
    B = 20
    for b in range(0, len(res), B):
        chunk = res[b:b + B]
        for kind in sorted({r["presync"] for r in chunk}):
            c = [r for r in chunk if r["presync"] == kind]
            sn = [r["snap"] * 1e3 for r in c]; st = [r["stall"] * 1e3 for r in c]
            ps = [r["presync_s"] * 1e3 for r in c]
            ex = [r["extents"] for r in chunk if "extents" in r]
            print(" snaps %3d-%3d %-6s create p50 %7.1f max %7.1f ms | presync p50 %6.1f | stall p50 %7.1f max %7.1f ms | extents %s" % (
                c[0]["i"], c[-1]["i"], kind, lab.pct(sn, 50), max(sn), lab.pct(ps, 50), lab.pct(st, 50), max(st), ex))
finally:
    p.cleanup()
