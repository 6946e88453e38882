#!/usr/bin/python3
"""bench/report.py: the table and the plot of one bench/run result.

  bench/report.py bench/results/<timestamp>/results.json

Writes table.md and plot.png next to results.json and prints the table.
bench/run calls render() at the end of a run; run this by hand to redraw
after changing the layout. Every speed is shown as a ratio against the
baseline (a plain No_COW file on the pool) of the same run.
"""
import json
import os
import sys

BASELINE = "file"   # the label of the baseline rows
SHORT = 0.95        # rows below this ratio are marked


def _f(v, fmt="%.0f"):
    return "–" if v is None else fmt % v


def _size(n):
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20)):
        if n and n >= k:
            return ("%g %s" % (round(n / k, 1), unit))
    return "%s B" % n


def baseline_of(rows):
    return {r["profile"]: r for r in rows if r["label"] == BASELINE}


def nearest_baseline(rows, r):
    """The baseline row of r's profile measured nearest in time to r (the
    baseline is measured again before each snap@N and at the end); results
    without timestamps: the first baseline."""
    bs = [b for b in rows if b.get("case") == BASELINE and b["profile"] == r["profile"]]
    if not bs:
        return None
    if r.get("case") == BASELINE:
        return r
    if "t" not in r or any("t" not in b for b in bs):
        return bs[0]
    return min(bs, key=lambda b: abs(b["t"] - r["t"]))


def drift(rows, profile):
    """max/min of the baseline's IOPS over the run, and how many times it was measured."""
    v = [b["iops"] for b in rows if b.get("case") == BASELINE and b["profile"] == profile and b["iops"]]
    return (max(v) / min(v), len(v)) if len(v) > 1 else (None, len(v))


def verdict(ok):
    return "PASS" if ok else "MISS"


SNAP_TARGET = 0.9   # issue 13: snap@N rows >= 0.9x at 1, 100 and 1000 snapshots


def table(d):
    m = d["meta"]
    out = []
    out.append("# Amber benchmark, %s%s" % (m.get("started", "?"), " (QUICK)" if m.get("quick") else ""))
    out.append("")
    out.append("Pool: %s on %s (%s), kernel %s, %s CPUs, %s RAM; fio %s, %s; working set %s, %g s a run "
               "after %g s ramp." % (
                   m.get("backend"), m.get("pool_device"), "loop image" if not m.get("pool") else m.get("pool"),
                   m.get("kernel"), m.get("cpus"), _size(m.get("mem_bytes")), m.get("fio", "?").replace("fio-", ""),
                   m.get("ioengine"), _size(m.get("size")), m.get("runtime"), m.get("ramp")))
    out.append("")
    rows = d.get("fio", [])
    if rows:
        end = {r["profile"]: r for r in rows if r["label"] == BASELINE + "/end"}
        out.append("## Data path (fio, direct I/O)")
        out.append("")
        out.append("Baseline `file`: a No_COW file on the pool filesystem, measured again before each "
                   "`snap@N` (`file@N`) and at the end (`file/end`); each row's `× baseline` is against the "
                   "baseline measured nearest in time (named in `vs`), and `drift` is how far the baseline "
                   "itself moved over the run (max/min of its runs). `device`: an Amber volume's loop "
                   "device. `ext4`: a file on ext4 on a volume. `snap@N`: the device right after a snapshot, "
                   "the volume holding about N (target ≥ %.1f×: PASS/MISS). "
                   "Latency: reads, or writes for write-only profiles. `*` = below %.2f× the baseline." % (
                       SNAP_TARGET, SHORT))
        out.append("")
        out.append("| profile | case | IOPS | MiB/s | p50 µs | p99 µs | × baseline | vs | target |")
        out.append("|---|---|---:|---:|---:|---:|---:|---|---|")
        order = []
        for r in rows:
            if r["profile"] not in order:
                order.append(r["profile"])
        for p in order:
            for r in (x for x in rows if x["profile"] == p):
                b = nearest_baseline(rows, r)
                ratio = r["iops"] / b["iops"] if b and b["iops"] else None
                mark = " *" if ratio is not None and ratio < SHORT else ""
                if r.get("case") == BASELINE:
                    dr, n = drift(rows, p)
                    vs = "drift %s" % ("%.2f× over %d runs" % (dr, n) if dr else "–")
                    if b is not None:
                        first = baseline_of(rows).get(p)
                        ratio = r["iops"] / first["iops"] if first and first["iops"] else None
                        mark = ""
                else:
                    vs = b["label"] if b else "–"
                tgt = ""
                if r.get("case") == "snap" and ratio is not None:
                    tgt = "≥ %.1f: %s" % (SNAP_TARGET, verdict(ratio >= SNAP_TARGET))
                line = "| %s | %s | %s | %s | %s | %s | %s%s | %s | %s |" % (
                    p, r["label"], _f(r["iops"]), _f(r["bw_mib"], "%.1f"), _f(r["p50_us"]), _f(r["p99_us"]),
                    "–" if ratio is None else "%.2f" % ratio, mark, vs, tgt)
                out.append(line)
        out.append("")
        if not end and any(r.get("case") == BASELINE for r in rows):
            out.append("(baseline rows: `× baseline` is against the first baseline run)")
            out.append("")
    tm = d.get("timemachine")
    if tm:
        out += timemachine_table(tm)
    sl = d.get("snapshot_latency") or []
    if sl:
        out.append("## Snapshots under a concurrent writer")
        out.append("")
        w = sl[0].get("writer_iops")
        out.append("Snapshot create as `amberctl snapshot create` sees it (process start included); daemon: the "
                   "time amberd logs for it. Stall: the "
                   "longest latency of a 4k write in flight during a snapshot (fio writer at %s IOPS); quiet: "
                   "the same writer's longest latency before the snapshots." % w)
        out.append("")
        out.append("| snapshots | window | create p50 ms | p99 ms | max ms | daemon p50 / max ms "
                   "| writer stall max ms | quiet max ms |")
        out.append("|---:|---|---:|---:|---:|---:|---:|---:|")
        for r in sl:
            out.append("| %s | #%d–#%d | %s | %s | %s | %s | %s | %s |" % (
                r["at"], r["first"], r["last"], _f(r["p50_ms"], "%.1f"), _f(r["p99_ms"], "%.1f"),
                _f(r["max_ms"], "%.1f"),
                ("%s / %s" % (_f(r["daemon_p50_ms"], "%.1f"), _f(r["daemon_max_ms"], "%.1f")))
                if "daemon_p50_ms" in r else "–",
                _f(r["stall_max_ms"], "%.1f"), _f(r.get("quiet_max_ms"), "%.1f")))
        out.append("")
    tl = d.get("timeline")
    if tl:
        ratio = (tl.get("iops_min_after", 0) / tl["iops_before"]) if tl.get("iops_before") else 0
        rec = ("%s s after the snapshot" % tl["recovered_after_s"]) if "recovered_after_s" in tl \
            else "not within the run"
        out.append("Write latency across one snapshot (4k randwrite, iodepth 32, %s region): %.0f IOPS before; "
                   "the snapshot took %.1f ms, the longest write in flight %.1f ms; the lowest 1 s after it "
                   "%.0f IOPS (%.2f×); back to 90 %% of before: %s." % (
                       _size(tl["region_bytes"]), tl.get("iops_before") or 0, tl["snapshot_ms"], tl["stall_ms"],
                       tl.get("iops_min_after", 0), ratio, rec))
        out.append("")
    if d.get("diff"):
        out.append("## Changed extents (diff), clone, delete")
        out.append("")
        out.append("| diff | extents | changed | exact | p50 ms | max ms |")
        out.append("|---|---:|---:|---|---:|---:|")
        for r in d["diff"]:
            out.append("| %s | %d | %s | %s | %s | %s |" % (
                r["what"], r["extents"], _size(r["changed_bytes"]), "yes" if r["exact"] else
                "no (%s written)" % _size(r["written_bytes"]), _f(r["p50_ms"], "%.1f"), _f(r["max_ms"], "%.1f")))
        out.append("")
    cd = (d.get("clone") or []) + (d.get("delete") or [])
    if cd:
        out.append("| operation | n | p50 ms | max ms |")
        out.append("|---|---:|---:|---:|")
        for r in cd:
            out.append("| %s | %d | %s | %s |" % (r["what"], r["n"], _f(r["p50_ms"], "%.1f"), _f(r["max_ms"], "%.1f")))
        out.append("")
    if d.get("rpc"):
        out.append("## gRPC unary call cost (build/tests/rpc-testd Echo, unix socket, server pinned to one core)")
        out.append("")
        out.append("| client | calls/s | server CPU µs/call | calls/s a server core | client CPU µs/call |")
        out.append("|---|---:|---:|---:|---:|")
        for r in d["rpc"]:
            if "calls_per_s" in r:
                out.append("| %s | %.0f | %.1f | %.0f | %s |" % (
                    r["what"], r["calls_per_s"], r["server_cpu_us_per_call"], r["server_calls_per_core_s"],
                    _f(r.get("client_cpu_us_per_call"), "%.1f")))
            else:
                out.append("| %s: p50 %.1f ms, max %.1f ms | | | | |" % (r["what"], r["p50_ms"], r["max_ms"]))
        out.append("")
    if d.get("errors"):
        out.append("Errors: " + "; ".join(d["errors"]))
        out.append("")
    if m.get("seconds"):
        out.append("Run time %.0f s." % m["seconds"])
    return "\n".join(out) + "\n"


def timemachine_table(tm):
    """The time-machine case (bench/timemachine.py) with issue 13's targets."""
    a, o = tm["app"], tm["other"]
    q = tm.get("quiet") or {}
    out = ["## Time machine: snapshots under an application's load", ""]
    out.append("Two %s volumes, each under 4k random 70/30 I/O at %d IOPS (iodepth %d, fio rate-limited); "
               "one gets a snapshot every %g s (%s) until %d, the other none; %.0f s. Targets from issue 13 "
               "are printed beside the values, never asserted. Snapshots of the volume at the end: %s.%s" % (
                   _size(tm["size_bytes"]), tm["rate_iops"], tm["iodepth"], tm["interval_s"], tm["how"],
                   tm["snapshots"], tm["seconds"], _f(tm.get("kept"), "%d"),
                   (" **%s**" % tm["error"]) if tm.get("error") else ""))
    out.append("")
    ratio = a["write_p99_ms"] / o["write_p99_ms"] if o["write_p99_ms"] else None
    qr = a["write_p99_ms"] / q["write_p99_ms"] if q.get("write_p99_ms") else None
    out.append("`other volume`: the same load at the same time on a volume never snapshotted, in the same pool "
               "(a snapshot's transaction commit can stall its writes too: `shared` counts the slow seconds both "
               "had). `before`: the snapshotted volume's own first %g s, before any snapshot: the independent "
               "reference." % tm.get("quiet_s", 0))
    out.append("")
    out.append("| application figure | snapshotted | other volume | ratio | before | ratio | target |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    out.append("| write p99 ms | %.2f | %.2f | %s | %s | %s | ≤ 1.5× the other's: %s |" % (
        a["write_p99_ms"], o["write_p99_ms"], _f(ratio, "%.2f×"), _f(q.get("write_p99_ms"), "%.2f"),
        _f(qr, "%.2f×"), verdict(ratio is not None and ratio <= 1.5)))
    out.append("| write max ms | %s | %s | %s | %s | | ≤ 50 ms: %s |" % (
        _f(a["write_max_ms"], "%.1f"), _f(o["write_max_ms"], "%.1f"),
        _f(a["write_max_ms"] / o["write_max_ms"] if a["write_max_ms"] and o["write_max_ms"] else None, "%.2f×"),
        _f(q.get("write_max_ms"), "%.1f"), verdict(a["write_max_ms"] is not None and a["write_max_ms"] <= 50)))
    out.append("| seconds with a write > 50 ms | %d | %d (shared %s) | | %s | | 0: %s |" % (
        a["seconds_with_slow_write"], o["seconds_with_slow_write"], _f(a.get("slow_seconds_shared_with_other"), "%d"),
        _f(q.get("seconds_with_slow_write"), "%d"), verdict(a["seconds_with_slow_write"] == 0)))
    out.append("| read p99 ms | %.2f | %.2f | %s | %s | | |" % (
        a["read_p99_ms"], o["read_p99_ms"], _f(a["read_p99_ms"] / o["read_p99_ms"] if o["read_p99_ms"] else None,
                                               "%.2f×"), _f(q.get("read_p99_ms"), "%.2f")))
    out.append("| I/O done (writes / reads per s) | %.0f / %.0f | %.0f / %.0f | | %s | | |" % (
        a["write_iops"], a["read_iops"], o["write_iops"], o["read_iops"],
        ("%.0f / %.0f" % (q["write_iops"], q["read_iops"])) if q else "–"))
    settled = tm.get("after_settled")
    for when, rows in (("afterwards" if not settled else "afterwards, immediately", tm.get("after")),
                       ("afterwards, settled after %s s" % _f(tm.get("settle_s"), "%.1f"), settled)):
        for p, r in (rows or {}).items():
            out.append("| %s %s IOPS | %.0f | %.0f, %.0f (drift %.2f×) | %s | | | ≥ 0.9×: %s |" % (
                when, p, r["vol"]["iops"], r["ref"][0]["iops"], r["ref"][1]["iops"], r["ref_drift"],
                _f(r["ratio"], "%.2f×"), verdict(r["ratio"] is not None and r["ratio"] >= 0.9)))
    out.append("")
    if tm.get("buckets"):
        out.append("Snapshot create, client side; daemon: as amberd logs it; stall: the longest application write "
                   "in flight during the snapshot. Target: p50 ≤ 50 ms and max ≤ 500 ms at every count.")
        out.append("")
        out.append("| snapshots | create p50 ms | p99 ms | max ms | daemon p50 / max ms | stall p50 / max ms "
                   "| target |")
        out.append("|---|---:|---:|---:|---:|---:|---|")
        for r in tm["buckets"]:
            out.append("| #%d–#%d | %.1f | %.1f | %.1f | %s | %.1f / %.1f | %s |" % (
                r["first"], r["last"], r["p50_ms"], r["p99_ms"], r["max_ms"],
                ("%s / %s" % (_f(r["daemon_p50_ms"], "%.1f"), _f(r["daemon_max_ms"], "%.1f")))
                if "daemon_p50_ms" in r else "–", r["stall_p50_ms"], r["stall_max_ms"],
                verdict(r["p50_ms"] <= 50 and r["max_ms"] <= 500)))
        out.append("")
    cl = tm.get("clone")
    if cl:
        out.append("| clone (volume create --from) | snapshot | call s | ready s | dd of the same %s on the pool s "
                   "| × dd | target |" % _size(cl["bytes"]))
        out.append("|---|---:|---:|---:|---:|---:|---|")
        for r in cl["rows"]:
            x = r["ready_s"] / cl["dd_s"] if cl["dd_s"] else None
            st = ", ".join("%s=%s" % kv for kv in sorted(r.get("snapshot_state", {}).items()))
            out.append("| %s%s | #%d | %.3f | %.3f | %.2f | %s | %s |" % (
                r["which"], (" (%s)" % st) if st else "", r["snapshot"], r["clone_s"], r["ready_s"], cl["dd_s"],
                _f(x, "%.2f"), ("≤ dd: %s" % verdict(x is not None and x <= 1.0)) if r["which"] == "oldest"
                else "O(1)"))
        out.append("")
    return out


def plot(d, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    rows = d.get("fio", [])
    profiles = []
    for r in rows:
        if r["profile"] not in profiles:
            profiles.append(r["profile"])
    base = baseline_of(rows)
    fig = plt.figure(figsize=(18, 11), dpi=100)
    outer = GridSpec(2, 1, figure=fig, height_ratios=[1, 1.05], hspace=0.42, top=0.88, bottom=0.07,
                     left=0.05, right=0.95)
    top = outer[0].subgridspec(1, max(len(profiles), 1), wspace=0.3)
    bottom = outer[1].subgridspec(1, 2, width_ratios=[3, 2], wspace=0.3)
    m = d["meta"]
    fig.suptitle("Amber bench %s — %s pool, %s, kernel %s, %s CPUs%s" % (
        m.get("started", ""), m.get("backend"), m.get("pool_device"), m.get("kernel"), m.get("cpus"),
        " (QUICK)" if m.get("quick") else ""), fontsize=13, x=0.05, ha="left")
    colours = {"file": "#7f7f7f", "device": "#1f77b4", "ext4": "#2ca02c", "snap": "#d62728"}
    for i, p in enumerate(profiles):
        ax = fig.add_subplot(top[0, i])
        rs = [r for r in rows if r["profile"] == p]
        labels = [r["label"] for r in rs]
        vals = [r["iops"] / 1000.0 for r in rs]
        bars = ax.bar(range(len(rs)), vals, color=[colours.get(r["case"], "#9467bd") for r in rs])
        b = base.get(p)
        if b:
            ax.axhline(b["iops"] / 1000.0, color="black", linestyle="--", linewidth=1.2, label="baseline")
            ax.axhline(SHORT * b["iops"] / 1000.0, color="black", linestyle=":", linewidth=1, label="0.95×")
            for bar, r in zip(bars, rs):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "%.2f" % (r["iops"] / b["iops"]),
                        ha="center", va="bottom", fontsize=9)
        ax.set_xticks(range(len(rs)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=10)
        ax.set_title(p, fontsize=12)
        ax.tick_params(axis="y", labelsize=9)
        ax.set_ylabel("k IOPS" if i == 0 else "")
        ax.set_ylim(0, max(vals + [0.001]) * 1.18)
        if i == 0:
            fig.legend(*ax.get_legend_handles_labels(), loc="upper right", fontsize=10, ncol=2,
                       title="baseline: a plain No_COW file on the pool; bar labels: × baseline",
                       title_fontsize=10)
    tl = d.get("timeline")
    if tl:
        ax = fig.add_subplot(bottom[0, 0])
        t = tl["t_s"]
        ax.plot(t, [v / 1000.0 for v in tl["iops"]], color="#1f77b4", linewidth=1.2,
                label="IOPS (k, per %g ms)" % (tl["bucket_s"] * 1000))
        ax.set_xlabel("seconds")
        ax.set_ylabel("k IOPS", color="#1f77b4")
        ax2 = ax.twinx()
        ax2.semilogy(t, [v / 1000.0 if v else None for v in tl["mean_lat_us"]], color="#ff7f0e", linewidth=1,
                     label="mean write latency (ms)")
        ax2.semilogy(t, [v / 1000.0 if v else None for v in tl["max_lat_us"]], color="#d62728", linewidth=0.8,
                     alpha=0.7, label="max write latency (ms)")
        ax2.set_ylabel("write latency, ms (log)")
        ax.axvline(tl["snapshot_at_s"], color="black", linestyle="--")
        ax.text(tl["snapshot_at_s"], max(tl["iops"]) / 1000.0 * 1.12, " snapshot (%.0f ms)" % tl["snapshot_ms"],
                va="bottom", fontsize=10)
        ax.set_title("4k random writes (iodepth 32) across a snapshot: copy-on-first-write, then recovery "
                     "(%s region)" % _size(tl["region_bytes"]), fontsize=12)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.set_ylim(0, max(tl["iops"]) / 1000.0 * 1.3)
        lo, hi = ax2.get_ylim()
        ax2.set_ylim(lo, hi * 8)
        ax.legend(h1 + h2, l1 + l2, fontsize=9, loc="upper right", ncol=3)
    ss = d.get("snapshot_series")
    if ss:
        ax = fig.add_subplot(bottom[0, 1])
        n = [s[0] for s in ss]
        ax.semilogy(n, [s[1] for s in ss], ".", markersize=4, color="#1f77b4",
                    label="snapshot create, amberctl (ms)")
        sw = [s for s in ss if s[2] is not None]
        ax.semilogy([s[0] for s in sw], [max(s[2], 0.01) for s in sw], "x", markersize=5, color="#d62728",
                    label="longest write in flight, writer at %s IOPS (ms)" % d["meta"].get("stall_rate"))
        tms = (d.get("timemachine") or {}).get("series")
        if tms:
            ax.semilogy([x[0] for x in tms], [max(x[1], 0.01) for x in tms], ".", markersize=3, color="#2ca02c",
                        alpha=0.6, label="time machine: snapshot create under the app load (ms)")
            ax.semilogy([x[0] for x in tms], [max(x[2], 0.01) for x in tms], "+", markersize=3, color="#ff7f0e",
                        alpha=0.6, label="time machine: longest app write in flight (ms)")
        ax.set_xlabel("snapshots of the volume")
        ax.set_ylabel("ms (log)")
        ax.set_title("Snapshot create latency and writer stall", fontsize=12)
        ax.legend(fontsize=9, loc="upper left")
        ax.grid(True, which="both", alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


def render(results_path):
    with open(results_path) as f:
        d = json.load(f)
    outdir = os.path.dirname(os.path.abspath(results_path))
    text = table(d)
    with open(os.path.join(outdir, "table.md"), "w") as f:
        f.write(text)
    try:
        plot(d, os.path.join(outdir, "plot.png"))
    except ImportError as e:
        text += "\n(no plot: %s; install python3-matplotlib)\n" % e
    return text


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: bench/report.py RESULTS.json")
    print(render(sys.argv[1]))
