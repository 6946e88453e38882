#!/usr/bin/python3
"""exp_verify.py [SECONDS]: is background DEFRAG_RANGE safe against concurrent direct-I/O writes through
the loop device? fio writes 4k random blocks with crc32c verify headers (verify_backlog: each block read
back soon after, and all of them at the end) while defragger.py (no threshold, no pause) rewrites the
image and a snapshot is taken every 0.3 s (newest 2 kept). Any mismatch = fio exits non-zero."""
import lab, os, sys, time, subprocess
secs = int(sys.argv[1]) if len(sys.argv) > 1 else 60
p = lab.Pool()
try:
    v = p.subvol("vol"); sd = os.path.join(p.mnt, "snaps"); os.mkdir(sd)
    img = p.image(os.path.join(v, "disk"), 512 << 20)
    dev = p.attach(img)
    dfg = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "defragger.py"),
                            img, "8", "0", "0", os.path.join(p.dir, "defrag.log")])
    fio = subprocess.Popen(["fio", "--name=v", "--filename=" + dev, "--ioengine=io_uring", "--direct=1", "--bs=4k",
                            "--iodepth=8", "--rw=randwrite", "--size=512M", "--loops=1000", "--time_based",
                            "--runtime=%d" % secs, "--verify=crc32c", "--verify_backlog=64", "--verify_fatal=1",
                            "--rate_iops=3000", "--verify_state_save=0", "--output=" + os.path.join(p.dir, "fio.txt")])
    i = 0
    while fio.poll() is None:
        lab.snapshot(v, sd, str(i))
        if i >= 2: lab.snap_destroy(sd, str(i - 2))
        i += 1; time.sleep(0.3)
    dfg.terminate(); dfg.wait()
    steps = sum(1 for _ in open(os.path.join(p.dir, "defrag.log")))
    out = open(os.path.join(p.dir, "fio.txt")).read()
    errs = [l for l in out.splitlines() if "verify" in l.lower() and ("bad" in l.lower() or "err" in l.lower())]
    print("fio rc=%d; %d snapshots; %d defrag steps; %s" % (fio.returncode, i, steps,
          "; ".join(errs[:3]) or "no verify errors"))
    print("\n".join(l for l in out.splitlines() if "write:" in l or "read:" in l or "err=" in l))
finally:
    p.cleanup()
