#!/usr/bin/python3
"""exp_hydrate_writes.py: how to write a hydration's scattered union into a
writable snapshot of a No_COW image on btrfs (store-hydrate.c's
HYDRATE_MERGE). A 256 MiB random image, snapshotted read-only; per round
a writable snapshot of it, then N random 4 KiB blocks (default 13,000, the
union of bench/proto/exp_hydrate.py's oldest snapshot: ~20 % of the image)
written from a buffer with one pwrite per run, runs less than MERGE
apart written as one (MERGE 0, 16K, 32K, 64K, and the whole image), then
fsync. Rounds interleave the variants; prints median seconds and bytes.
"""
import os, random, statistics, sys, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lab  # noqa: E402

MiB = 1 << 20
SIZE = 256 * MiB
N = int(os.environ.get("N", "13000"))
MERGES = [0, 16 << 10, 32 << 10, 64 << 10, SIZE]


def runs(blocks, merge):
    out = []
    for b in blocks:
        o = b * 4096
        if out and o - (out[-1][0] + out[-1][1]) <= merge:
            out[-1][1] = o + 4096 - out[-1][0]
        else:
            out.append([o, 4096])
    return out


def main():
    p = lab.Pool("btrfs", "4G")
    try:
        src = p.subvol("src")
        lab.sh("btrfs", "property", "set", src, "ro", "false", check=False)
        img = p.image(os.path.join(src, "disk"), SIZE)
        lab.snapshot(src, p.mnt, "base", rdonly=True)
        buf = os.urandom(SIZE)
        rnd = random.Random(1)
        blocks = sorted(rnd.sample(range(SIZE // 4096), N))
        res = {m: [] for m in MERGES}
        nb = {m: sum(l for _, l in runs(blocks, m)) for m in MERGES}
        for r in range(int(os.environ.get("ROUNDS", "3"))):
            for m in MERGES:
                name = "w%d-%d" % (r, m)
                lab.snapshot(os.path.join(p.mnt, "base"), p.mnt, name, rdonly=False)
                path = os.path.join(p.mnt, name, "disk")
                fd = os.open(path, os.O_RDWR)
                t = time.perf_counter()
                for o, l in runs(blocks, m):
                    os.pwrite(fd, buf[o:o + l], o)
                os.fsync(fd)
                res[m].append(time.perf_counter() - t)
                os.close(fd)
                lab.sh("btrfs", "subvolume", "delete", os.path.join(p.mnt, name))
        for m in MERGES:
            print("merge %-9s %5d writes %4d MiB: %s s (median %.3f)" % (
                m if m < SIZE else "all", len(runs(blocks, m)), nb[m] // MiB,
                " ".join("%.2f" % x for x in res[m]), statistics.median(res[m])))
        print("load: " + lab.sh("uptime").strip())
    finally:
        p.cleanup()


if __name__ == "__main__":
    main()
