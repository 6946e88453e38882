"""bench/benchdata.py: the data setup bench/cluster.py and bench/sync.py
share: the volume size and change from the environment (SIZE_GIB, default
4; CHANGE_PCT, default 1), data half random and half compressible from a
seeded generator, the change (half in a few clustered runs, half in
scattered 4 KiB blocks), writes made durable, and timing from cold caches."""
import os
import random
import subprocess
import time

GiB, MiB = 1 << 30, 1 << 20
SIZE = int(os.environ.get("SIZE_GIB", "4")) * GiB
PCT = float(os.environ.get("CHANGE_PCT", "1"))


class Data:
    """The blobs and changes of one run, the same for the same seed."""

    def __init__(self, seed):
        self.rnd = random.Random(seed)

    def blob(self, n):
        if self.rnd.random() < 0.5:
            return self.rnd.randbytes(n)
        w = self.rnd.randbytes(256)
        return (w * (n // 256 + 1))[:n]

    def change(self):
        """PCT % of SIZE: (its byte count, [(offset, data)])."""
        total = int(SIZE * PCT / 100)
        chunks = []
        for _ in range(8):
            n = total // 2 // 8 // 4096 * 4096
            chunks.append((self.rnd.randrange(0, SIZE - n, 4096), self.blob(n)))
        for _ in range(total // 2 // 4096):
            chunks.append((self.rnd.randrange(0, SIZE, 4096), self.blob(4096)))
        return total, chunks


def write(dev, chunks):
    fd = os.open(dev, os.O_RDWR)
    for off, data in chunks:
        os.pwrite(fd, data, off)
    os.fsync(fd)
    os.close(fd)


def drop_caches():
    subprocess.run(["sync"])
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(fn):
    drop_caches()
    t0 = time.monotonic()
    out = fn()
    return time.monotonic() - t0, out
