#!/usr/bin/python3
"""defragger.py IMAGE [STEP_MIB=8] [MIN_EXT=16] [PAUSE_MS=20] [LOG]: a prototype background defragmenter.
Cycles over IMAGE in STEP-sized ranges; a range with more than MIN_EXT extents (FIEMAP) is rewritten with
BTRFS_IOC_DEFRAG_RANGE (START_IO), then it sleeps PAUSE. Logs "epoch_t0 epoch_t1 off ext_before ext_after"
per defragged step to LOG. Runs until SIGTERM/SIGINT."""
import lab, os, sys, time, signal
img = sys.argv[1]; step = int(sys.argv[2] if len(sys.argv) > 2 else 8) << 20
minext = int(sys.argv[3]) if len(sys.argv) > 3 else 16
pause = float(sys.argv[4] if len(sys.argv) > 4 else 20) / 1e3
log = open(sys.argv[5] if len(sys.argv) > 5 else "/dev/null", "w", buffering=1)
signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
size = os.stat(img).st_size
try:
    while True:
        for off in range(0, size, step):
            e0 = lab.extents(img, off, step)
            if e0 <= minext:
                continue
            t0 = time.time(); lab.defrag_range(img, off, step); t1 = time.time()
            log.write("%.3f %.3f %d %d %d\n" % (t0, t1, off, e0, lab.extents(img, off, step)))
            time.sleep(pause)
        time.sleep(pause)
except KeyboardInterrupt:
    pass
