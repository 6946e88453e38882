#!/usr/bin/python3
"""exp_cow.py: is a write after a DELETED snapshot still copy-on-write? 4k randwrite (qd32, 6 s) on a
never-snapshotted image vs the same image after snapshot+delete(+cleaner done), after a kept snapshot,
and after defrag; extent counts before/after (ref / image / ref, interleaved)."""
import lab, os, subprocess
p = lab.Pool()
try:
    v = p.subvol("vol"); r = p.subvol("ref"); sd = os.path.join(p.mnt, "snaps"); os.mkdir(sd)
    img = p.image(os.path.join(v, "disk"), 1 << 30); ref = p.image(os.path.join(r, "disk"), 1 << 30)
    dev = p.attach(img); rdev = p.attach(ref)
    def m(label):
        e0 = lab.extents(img)
        a = lab.fio_once(rdev, "randwrite", "4k", 6, 32); b = lab.fio_once(dev, "randwrite", "4k", 6, 32)
        a2 = lab.fio_once(rdev, "randwrite", "4k", 6, 32)
        print("%-44s ref %6.0f/%6.0f  image %6.0f  ratio %.2f  p99 %.1f vs %.1f ms  extents %d -> %d" % (
            label, a["iops"], a2["iops"], b["iops"], 2 * b["iops"] / (a["iops"] + a2["iops"]), b["p99_ms"],
            a["p99_ms"], e0, lab.extents(img)), flush=True)
    m("never snapshotted")
    lab.snapshot(v, sd, "x"); lab.snap_destroy(sd, "x")
    subprocess.run(["btrfs", "subvolume", "sync", p.mnt], check=True)
    m("after a snapshot, deleted and cleaned")
    m("again (2nd pass, no new snapshot)")
    for o in range(0, 1 << 30, 8 << 20): lab.defrag_range(img, o, 8 << 20)
    m("after defrag of the whole image")
    lab.snapshot(v, sd, "y")
    m("right after a kept snapshot")
finally:
    p.cleanup()
