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
once the clone of the newest. With several builds (--builds A,B) each
gets its own daemon and pool with the same data, and the rounds
interleave them (dd on A, clone on A, dd on B, clone on B, ...), so each
ratio is against dd minutes apart on the same loaded machine. Prints what
amberd logged for each hydration (method, bytes written/read, union) and
the load.

    /usr/bin/python3 bench/proto/exp_hydrate.py --builds /path/to/main/build,build
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


class Daemon(T.Amberd):
    """amberd of another build (amberctl stays this tree's: the API is additive)."""

    def __init__(self, build, **kw):
        self.build = build
        T.Amberd.__init__(self, **kw)

    def argv(self):
        return [os.path.join(self.build, "amberd")] + T.Amberd.argv(self)[1:]


def setup(build, a):
    """A daemon of BUILD with the volume and its snapshots (the same data
    for every build: one seed), the store settled."""
    size = a.size * MiB
    d = Daemon(build, fs="btrfs", size=a.pool)
    d.ctl("volume", "create", "hv", "--size", str(size))
    d.dev = d.ctl("volume", "attach", "hv")["device"]
    rnd = random.Random(1)
    fd = os.open(d.dev, os.O_RDWR)
    for off in range(0, size, 4 * MiB):
        os.pwrite(fd, rnd.randbytes(4 * MiB), off)
    os.fsync(fd)
    d.names = []
    for i in range(a.snapshots):
        for _ in range(a.writes):
            os.pwrite(fd, rnd.randbytes(4096), rnd.randrange(size // 4096) * 4096)
        os.fsync(fd)
        d.names.append("h%03d" % i)
        d.ctl("snapshot", "create", "hv", "--name", d.names[-1])
    os.close(fd)
    d.ctl("--timeout", "600s", "store", "status", "--wait", check=False)
    d.store = d.ctl("store", "status")
    return d


def dd(d, size):
    dst = os.path.join(d.pool, "dd.img")
    t = time.perf_counter()
    subprocess.run(["dd", "if=" + d.dev, "of=" + dst, "bs=4M", "iflag=direct", "oflag=direct",
                    "count=%d" % (size // (4 * MiB))], check=True, capture_output=True)
    dt = time.perf_counter() - t
    os.unlink(dst)
    return dt


def clone(d, name, tag):
    info = d.ctl("snapshot", "show", "hv@" + name)
    t = time.perf_counter()
    d.ctl("volume", "create", tag, "--from", "hv@" + name)
    dt = time.perf_counter() - t
    d.ctl("volume", "delete", tag)
    d.ctl("--timeout", "600s", "store", "status", "--wait", check=False)
    return dt, bool(info.get("resident"))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--builds", default=os.environ.get("B", "build"),
                   help="comma list of build dirs, measured interleaved (A/B)")
    p.add_argument("--size", type=int, default=256, help="MiB")
    p.add_argument("--snapshots", type=int, default=100)
    p.add_argument("--writes", type=int, default=150)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--pool", default="4G")
    p.add_argument("--json", help="write the results here")
    a = p.parse_args()
    size = a.size * MiB
    os.environ.setdefault("AMBER_REPO_PASSWORD", "bench")
    builds = [b if os.path.isabs(b) else os.path.join(T.ROOT, b) for b in a.builds.split(",")]
    ds, res = [], []
    try:
        for b in builds:
            t0 = time.monotonic()
            ds.append(setup(b, a))
            res.append({"build": b, "setup_s": time.monotonic() - t0, "store": ds[-1].store,
                        "clone_oldest_s": [], "dd_s": []})
        # Interleaved: dd, then each build's clone of its oldest snapshot
        # followed by a dd on its pool, REPS rounds.
        for r in range(a.reps):
            for d, x in zip(ds, res):
                x["dd_s"].append(dd(d, size))
                x["clone_oldest_s"].append(clone(d, d.names[0], "hc%d" % r)[0])
        for d, x in zip(ds, res):
            x["dd_s"].append(dd(d, size))
            x["clone_newest_s"], x["newest_resident"] = clone(d, d.names[-1], "hcn")
            x["hydrations"] = [re.sub(r'^.*msg="', "", y).rstrip('"') for y in d.log().splitlines()
                               if "brought snapshot" in y]
            d.ctl("volume", "detach", "hv")
    finally:
        uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        for d in ds:
            d.stop()
    print("%d MiB volume, %d snapshots x %d random 4k writes; interleaved, %d rounds" % (
        a.size, a.snapshots, a.writes, a.reps))
    for x in res:
        med, ddm = statistics.median(x["clone_oldest_s"]), statistics.median(x["dd_s"])
        x["ratio"] = med / ddm
        print("build %s (setup %.0f s; store: resident %s stored %s backlog %s)" % (
            x["build"], x["setup_s"], x["store"].get("resident"), x["store"].get("stored"),
            x["store"].get("backlog")))
        print("  clone of the oldest: %s s (median %.3f); dd of the same bytes on its pool: %s s "
              "(median %.3f); clone/dd %.2fx" % (" ".join("%.3f" % v for v in x["clone_oldest_s"]), med,
                                                 " ".join("%.2f" % v for v in x["dd_s"]), ddm, x["ratio"]))
        print("  clone of the newest: %.3f s (resident: %s)" % (x["clone_newest_s"], x["newest_resident"]))
        for y in x["hydrations"]:
            print("  amberd: " + y)
    print("load: " + uptime)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"runs": res, "uptime": uptime}, f, indent=1)


if __name__ == "__main__":
    main()
