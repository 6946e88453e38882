"""bench/timemachine.py: the time-machine case of bench/run (issue 13).

Two identical volumes under the same steady, rate-limited application load
(4k random 70/30 read/write, fio --rate_iops, iodepth 4), both through
amberd: one gets a snapshot every --tm-interval seconds until --tm-snapshots
are kept (1000; QUICK 100), the other none. Measured on both in the same run:
the application's write p99 and max latency, the seconds of the run with a
write slower than 50 ms, and afterwards 4k random-write IOPS and 1M
sequential read (reference, snapshotted, reference again: the ratio is
against the mean of the two references, their drift is printed), both
immediately and once the snapshot store settled (nothing left to move, the
defragmenter's full sweep of the image done; how long that took is
printed). Snapshot
create latency per count bucket, as the client sees it on a kept gRPC
connection (python3-grpcio; amberctl with its process start otherwise) and
as the daemon logs it. Then the clone of the oldest and of the newest
snapshot beside dd copying the same bytes on the pool.

The issue's targets are printed beside the values by bench/report.py
(PASS/MISS); nothing here asserts. bench/run calls case(bench, module).
"""
import copy
import os
import sys
import time

SLOW_S = 0.050   # "no write slower than 50 ms"


def _client(M, work):
    """CreateSnapshot on one kept gRPC connection: (channel, call, amber_pb2), or
    None (then amberctl). The messages are generated into the run's work dir
    by tests/lib/genproto (protoc); the call goes by path, no stubs."""
    sock = os.environ.get("AMBER_SOCKET")
    if not sock:
        return None
    try:
        import grpc
        out = os.path.join(work, "py")
        M.run([os.path.join(M.ROOT, "tests", "lib", "genproto"), out])
        sys.path.insert(0, out)
        import amber_pb2 as pb
        ch = grpc.insecure_channel("unix://" + os.path.abspath(sock))
        call = ch.unary_unary("/amber.v1.Amber/CreateSnapshot",
                              request_serializer=pb.CreateSnapshotRequest.SerializeToString,
                              response_deserializer=pb.Snapshot.FromString)
        return ch, call, pb
    except Exception as e:  # no grpcio or no protoc: the CLI path
        M.log("time machine: no gRPC client (%s); timing amberctl instead" % e)
        return None


def _lat_by_dir(w):
    """Stop a LatLogWriter and split its log: (writes [(done, lat)], reads [(done, lat)])."""
    w.finish()
    wr, rd = [], []
    with open(w.log) as f:
        for line in f:
            p = line.split(",", 3)
            if len(p) < 3:
                continue
            (wr if p[2].strip() == "1" else rd).append((int(p[0]) / 1000.0, int(p[1]) / 1e9))
    wr.sort()
    rd.sort()
    return wr, rd


def _app_stats(M, wr, rd, t0, t1):
    """Application figures over [t0, t1] (epoch s)."""
    w = [lat for d, lat in wr if t0 <= d <= t1]
    r = [lat for d, lat in rd if t0 <= d <= t1]
    slow = sorted({int(d - t0) for d, lat in wr if t0 <= d <= t1 and lat > SLOW_S})
    # (all of them: the shared-seconds count needs the whole list)
    return {"writes": len(w), "reads": len(r), "write_iops": len(w) / max(t1 - t0, 1e-9),
            "read_iops": len(r) / max(t1 - t0, 1e-9),
            "write_p50_ms": (M.pctl(w, 50) or 0) * 1e3, "write_p99_ms": (M.pctl(w, 99) or 0) * 1e3,
            "write_max_ms": max(w) * 1e3 if w else None,
            "read_p99_ms": (M.pctl(r, 99) or 0) * 1e3, "read_max_ms": max(r) * 1e3 if r else None,
            "seconds_with_slow_write": len(slow), "slow_write_seconds": slow}


def _extents(b, vol):
    """Extents of VOL's live image (filefrag: FIEMAP, synced), or None."""
    try:
        vid = b.ctl("volume", "show", vol)["id"]
        out = M_run(["filefrag", os.path.join(b.pool, "vols", vid, "disk")])
        return int(out.rsplit(":", 1)[1].split()[0])
    except Exception:  # noqa: BLE001
        return None


def M_run(argv):
    import subprocess
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


def case(b, M):
    cfg = b.cfg
    size = cfg.tm_size
    vol = b.volume("bench-tm", size)
    ref = b.volume("bench-tm-ref", size)
    dev, rdev = b.attach(vol), b.attach(ref)
    M.prefill(cfg, dev, size)
    M.prefill(cfg, rdev, size)
    rate = cfg.tm_rate
    rates = ["--iodepth=%d" % cfg.tm_depth, "--rwmixread=70",
             "--rate_iops=%d,%d" % (rate * 7 // 10, rate - rate * 7 // 10)]
    wa = M.LatLogWriter(cfg, "tm-app", dev, size, rates, rw="randrw")
    wb = M.LatLogWriter(cfg, "tm-ref", rdev, size, rates, rw="randrw")
    wa.start()
    wb.start()
    cl = _client(M, cfg.work)
    how = "gRPC CreateSnapshot on a kept connection, python3-grpcio" if cl else \
        "amberctl snapshot create (process start included)"
    # A quiet window first: the same load on both volumes, no snapshot
    # anywhere. The other volume shares the pool filesystem, so a snapshot's
    # transaction commit can stall its writes too; this window is the
    # independent reference.
    tq0 = time.time()
    time.sleep(cfg.tm_quiet)
    t_start = time.time()
    taken = []   # (n, t0, t1, name)
    deadline = time.monotonic() + cfg.tm_max_seconds
    err = None
    try:
        for n in range(1, cfg.tm_snapshots + 1):
            if time.monotonic() > deadline:
                err = "stopped at %d snapshots: --tm-max-seconds %g reached" % (n - 1, cfg.tm_max_seconds)
                break
            name = "tm%05d" % n
            t0 = time.time()
            if cl:
                cl[1](cl[2].CreateSnapshotRequest(volume=vol, name=name), timeout=600)
            else:
                b.ctl("snapshot", "create", vol, "--name", name)
            t1 = time.time()
            b.snapcount[vol] += 1
            taken.append((n, t0, t1, name))
            if n % 100 == 0:
                M.log("time machine: %d snapshots, last took %.0f ms" % (n, (t1 - t0) * 1e3))
            time.sleep(cfg.tm_interval)
    finally:
        t_end = time.time()
        time.sleep(0.5)
        awr, ard = _lat_by_dir(wa)
        bwr, brd = _lat_by_dir(wb)
    if cl:
        cl[0].close()
    app = _app_stats(M, awr, ard, t_start, t_end)
    other = _app_stats(M, bwr, brd, t_start, t_end)
    quiet = _app_stats(M, awr, ard, tq0 + 0.5, t_start)
    a_slow, o_slow = set(app["slow_write_seconds"]), set(other["slow_write_seconds"])
    app["slow_seconds_shared_with_other"] = len(a_slow & o_slow)
    stalls = [M.max_overlap([d for d, _ in awr], [lat for _, lat in awr], t0, t1) for _, t0, t1, _ in taken]
    daemon = b.daemon_took_ms(vol, prefix="tm")
    nb = 10 if len(taken) >= 10 else max(1, len(taken))
    step = -(-len(taken) // nb) if taken else 1
    buckets = []
    for k in range(0, len(taken), step):
        part = taken[k:k + step]
        row = {"first": part[0][0], "last": part[-1][0]}
        row.update(M.lat_stats_ms([t1 - t0 for _, t0, t1, _ in part]))
        st = [stalls[k + i] for i in range(len(part))]
        row["stall_p50_ms"], row["stall_max_ms"] = M.pctl(st, 50) * 1e3, max(st) * 1e3
        dm = [daemon[n] for n, _, _, _ in part if n in daemon]
        if dm:
            row["daemon_p50_ms"], row["daemon_max_ms"] = M.pctl(dm, 50), max(dm)
        buckets.append(row)
    tm = {"snapshots": len(taken), "interval_s": cfg.tm_interval, "rate_iops": rate, "iodepth": cfg.tm_depth,
          "size_bytes": size, "seconds": round(t_end - t_start, 1), "how": how, "error": err,
          "app": app, "other": other, "quiet": quiet, "quiet_s": cfg.tm_quiet, "buckets": buckets,
          "series": [[n, round((t1 - t0) * 1e3, 2), round(s * 1e3, 2)] for (n, t0, t1, _), s in zip(taken, stalls)]}
    try:   # the store right at the end: what is still resident, not yet stored
        tm["store_at_end"] = b.ctl("store", "status")
    except Exception:  # noqa: BLE001
        pass
    tm["extents_at_end"] = {"vol": _extents(b, vol), "other": _extents(b, ref)}
    kept = b.ctl("snapshot", "list", "--volume", vol)
    tm["kept"] = len(kept) if isinstance(kept, list) else None
    if err:
        b.res.data["errors"].append("time machine: " + err)
    b.res.data["timemachine"] = tm
    b.res.save()
    M.log("time machine: %d snapshots in %.0f s; app write p99 %.1f ms (other volume %.1f), max %.0f ms (%.0f), "
          "%d s with a write > 50 ms (%d)" % (len(taken), t_end - t_start, app["write_p99_ms"],
                                             other["write_p99_ms"], app["write_max_ms"] or 0,
                                             other["write_max_ms"] or 0, app["seconds_with_slow_write"],
                                             other["seconds_with_slow_write"]))

    # Afterwards: the two volumes' speed, reference / snapshotted / reference,
    # twice: immediately (the store still moving the last snapshots, the
    # defragmenter not yet at its full sweep of the image), then once the
    # store settled (`amberctl store status --wait --settle`: nothing left to
    # move or drop, every volume whose snapshots stopped swept once), with how
    # long settling took. Sequential read first: it sees the layout the time
    # machine left; the random writes after it are copy-on-write against the
    # last snapshot.
    mcfg = copy.copy(cfg)
    mcfg.runtime = max(cfg.runtime, 3.0)   # QUICK's 1.5 s is too noisy for a ratio

    def afterwards(tag):
        res = {}
        for p in ("seqread-1m", "randwrite-4k"):
            r1 = M.run_profile(mcfg, p, rdev, "tm-ref1" + tag)
            a = M.run_profile(mcfg, p, dev, "tm-vol" + tag)
            r2 = M.run_profile(mcfg, p, rdev, "tm-ref2" + tag)
            base = (r1["iops"] + r2["iops"]) / 2
            res[p] = {"ref": [r1, r2], "vol": a, "ratio": a["iops"] / base if base else None,
                      "ref_drift": max(r1["iops"], r2["iops"]) / max(min(r1["iops"], r2["iops"]), 1e-9)}
            M.log("time machine, after%s: %s %.0f IOPS vs %.0f/%.0f on the other volume (%.2fx)" % (
                tag or " (immediately)", p, a["iops"], r1["iops"], r2["iops"], res[p]["ratio"] or 0))
        return res
    tm["after"] = afterwards("")
    b.res.save()
    try:
        t0 = time.perf_counter()
        st = b.ctl("store", "status", "--wait", "--settle")
        tm["settle_s"] = round(time.perf_counter() - t0, 2)
        tm["store_status"] = st
        tm["extents_settled"] = {"vol": _extents(b, vol), "other": _extents(b, ref)}
        M.log("time machine: the store settled %.1f s after the immediate figures (%s); image extents at the "
              "end %s, settled %s" % (tm["settle_s"], st, tm["extents_at_end"], tm["extents_settled"]))
        tm["after_settled"] = afterwards("-settled")
    except Exception as e:  # an older amberd without --settle, or the store off
        M.log("time machine: no settled figures (%s)" % e)
    b.res.save()

    # Clone of the oldest snapshot (the one a snapshot store moved out of the
    # live volume first) and of the newest, beside dd of the same bytes.
    if taken:
        clones = []
        for which, (n, _, _, name) in (("oldest", taken[0]), ("newest", taken[-1])):
            info = b.ctl("snapshot", "show", "%s@%s" % (vol, name))
            cname = "bench-tm-clone-%d-%s" % (os.getpid(), which)
            dt, _ = b.ctl.timed("volume", "create", cname, "--from", "%s@%s" % (vol, name))
            ready = dt
            t0 = time.perf_counter() - dt
            while True:   # a clone hydrated in the background reports "ready" when done
                v = b.ctl("volume", "show", cname)
                if (v or {}).get("state", "ready") == "ready":
                    ready = time.perf_counter() - t0
                    break
                if time.perf_counter() - t0 > 1800:
                    break
                time.sleep(0.05)
            b.ctl("volume", "delete", cname)
            clones.append({"which": which, "snapshot": n, "clone_s": dt, "ready_s": ready,
                           "snapshot_state": {k: info.get(k) for k in ("state", "resident", "stored")
                                              if isinstance(info, dict) and k in info}})
        ddcopy = os.path.join(b.mine, "tm-dd.img")
        t0 = time.perf_counter()
        M.run(["dd", "if=" + dev, "of=" + ddcopy, "bs=4M", "iflag=direct", "oflag=direct",
               "count=%d" % (size // (4 << 20))])
        dd = time.perf_counter() - t0
        os.unlink(ddcopy)
        tm["clone"] = {"rows": clones, "dd_s": dd, "bytes": size}
        b.res.save()
        for c in clones:
            M.log("time machine: clone of the %s snapshot (#%d) %.3f s (ready %.3f s); dd of %s on the pool %.2f s"
                  % (c["which"], c["snapshot"], c["clone_s"], c["ready_s"], M.human(size), dd))
    M.CLEANUP.pop()[1]()   # detach ref
    M.CLEANUP.pop()[1]()   # detach vol
