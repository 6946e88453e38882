#!/usr/bin/python3
"""exp_hydrate.py: clone of an old snapshot whose subvolume the store dropped,
against dd of the same bytes on the pool (issue 13), for A/B of two builds.

A volume (--size, default 256 MiB) filled with random data, then
--snapshots snapshots (default 100), each after --writes random 4 KiB
writes (default 150: the time machine's 1500 IOPS 70/30 load over its
0.25 s interval), like bench/timemachine.py's QUICK case without the
application running. After the store settled (the oldest snapshots
dropped), --reps times: clone of the oldest snapshot (`volume create
--from`, amberctl's process start included), interleaved with dd of the
volume's bytes into a file on the pool (bs=4M, O_DIRECT both sides), and
once the clone of the newest. Prints what amberd logged for each
hydration (method, bytes written/read, union) and the load.

    B=build /usr/bin/python3 bench/proto/exp_hydrate.py
    B=/path/to/other/build /usr/bin/python3 bench/proto/exp_hydrate.py
"""
import argparse
import json
import os
import random
import re
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "lib"))
import amber_test as T  # noqa: E402

MiB = 1 << 20


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256, help="MiB")
    p.add_argument("--snapshots", type=int, default=100)
    p.add_argument("--writes", type=int, default=150)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pool", default="4G")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    size = a.size * MiB
    os.environ.setdefault("AMBER_REPO_PASSWORD", "bench")
    d = T.Amberd("btrfs", size=a.pool)
    out = {"build": T.BUILD, "size": size, "snapshots": a.snapshots, "writes": a.writes}
    try:
        d.ctl("volume", "create", "hv", "--size", str(size))
        dev = d.ctl("volume", "attach", "hv")["device"]
        rnd = random.Random(1)
        fd = os.open(dev, os.O_RDWR)
        for off in range(0, size, 4 * MiB):
            os.pwrite(fd, rnd.randbytes(4 * MiB), off)
        os.fsync(fd)
        names = []
        t0 = time.monotonic()
        for i in range(a.snapshots):
            for _ in range(a.writes):
                os.pwrite(fd, rnd.randbytes(4096), rnd.randrange(size // 4096) * 4096)
            os.fsync(fd)
            names.append("h%03d" % i)
            d.ctl("snapshot", "create", "hv", "--name", names[-1])
        os.close(fd)
        out["snapshots_s"] = time.monotonic() - t0
        st = d.ctl("--timeout", "600s", "store", "status", "--wait", check=False)
        st = d.ctl("store", "status")
        out["store"] = st

        def dd():
            dst = os.path.join(d.pool, "dd.img")
            t = time.perf_counter()
            subprocess.run(["dd", "if=" + dev, "of=" + dst, "bs=4M", "iflag=direct", "oflag=direct",
                            "count=%d" % (size // (4 * MiB))], check=True, capture_output=True)
            dt = time.perf_counter() - t
            os.unlink(dst)
            return dt

        def clone(name, tag):
            info = d.ctl("snapshot", "show", "hv@" + name)
            t = time.perf_counter()
            d.ctl("volume", "create", tag, "--from", "hv@" + name)
            dt = time.perf_counter() - t
            d.ctl("volume", "delete", tag)
            d.ctl("--timeout", "600s", "store", "status", "--wait", check=False)
            return dt, bool(info.get("resident"))

        rows, dds = [], [dd()]
        for r in range(a.reps):
            dt, res = clone(names[0], "hc%d" % r)
            rows.append(dt)
            dds.append(dd())
        newest, nres = clone(names[-1], "hcn")
        out.update({"clone_oldest_s": rows, "dd_s": dds, "clone_newest_s": newest, "newest_resident": nres})
        logs = [re.sub(r'^.*msg="', "", x).rstrip('"') for x in d.log().splitlines() if "brought snapshot" in x]
        out["hydrations"] = logs
        d.ctl("volume", "detach", "hv")
    finally:
        out["uptime"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        d.stop()
    med, ddm = statistics.median(out["clone_oldest_s"]), statistics.median(out["dd_s"])
    print("build %s: %d MiB volume, %d snapshots x %d random 4k writes (%.1f s)" % (
        out["build"], a.size, a.snapshots, a.writes, out["snapshots_s"]))
    print("store: resident %s stored %s backlog %s" % (out["store"].get("resident"), out["store"].get("stored"),
                                                      out["store"].get("backlog")))
    print("clone of the oldest: %s s (median %.3f); dd of the same bytes on the pool: %s s (median %.3f); "
          "clone/dd %.2fx" % (" ".join("%.3f" % x for x in out["clone_oldest_s"]), med,
                              " ".join("%.2f" % x for x in out["dd_s"]), ddm, med / ddm))
    print("clone of the newest: %.3f s (resident: %s)" % (out["clone_newest_s"], out["newest_resident"]))
    for x in out["hydrations"]:
        print("  amberd: " + x)
    print("load: " + out["uptime"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
