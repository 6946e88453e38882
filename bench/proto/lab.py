#!/usr/bin/python3
"""lab.py: throwaway measurement helpers for issue 13 (snapshot cost on btrfs/xfs).

Raw ioctls (no process start in the timings): btrfs snapshot create/destroy,
DEFRAG_RANGE, FIEMAP extent counts, FICLONE, syncfs; a loop-mounted scratch
pool; a background rate-limited fio writer with a per-I/O latency log. The
experiments in bench/proto/exp-*.py use these. Run as root.
"""
import ctypes, fcntl, json, os, struct, subprocess, tempfile, time

libc = ctypes.CDLL("libc.so.6", use_errno=True)

def _IOC(d, t, nr, size):
    return (d << 30) | (size << 16) | (t << 8) | nr

def _IOW(t, nr, size):
    return _IOC(1, t, nr, size)

def _IOWR(t, nr, size):
    return _IOC(3, t, nr, size)

BTRFS_IOC_SNAP_CREATE_V2 = _IOW(0x94, 23, 4096)
BTRFS_IOC_SNAP_DESTROY = _IOW(0x94, 15, 4096)
BTRFS_IOC_DEFRAG_RANGE = _IOW(0x94, 16, 48)
BTRFS_IOC_SYNC = _IOC(0, 0x94, 8, 0)
FS_IOC_FIEMAP = _IOWR(ord('f'), 11, 32)
FICLONE = _IOW(0x94, 9, 4)
BTRFS_SUBVOL_RDONLY = 1 << 1
BTRFS_DEFRAG_RANGE_START_IO = 2


def sh(*a, check=True, **kw):
    return subprocess.run(a, check=check, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, **kw).stdout


def snapshot(src, destdir, name, rdonly=True):
    """Return seconds the SNAP_CREATE_V2 ioctl took."""
    sfd = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    dfd = os.open(destdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(4096)
        struct.pack_into("qQQ", buf, 0, sfd, 0, BTRFS_SUBVOL_RDONLY if rdonly else 0)
        nb = name.encode()
        buf[56:56 + len(nb)] = nb
        t = time.monotonic()
        fcntl.ioctl(dfd, BTRFS_IOC_SNAP_CREATE_V2, buf)
        return time.monotonic() - t
    finally:
        os.close(sfd)
        os.close(dfd)


def snap_destroy(destdir, name):
    dfd = os.open(destdir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        buf = bytearray(4096)
        nb = name.encode()
        buf[8:8 + len(nb)] = nb
        t = time.monotonic()
        fcntl.ioctl(dfd, BTRFS_IOC_SNAP_DESTROY, buf)
        return time.monotonic() - t
    finally:
        os.close(dfd)


def defrag_range(path, start, length, thresh=32 << 20, start_io=True):
    fd = os.open(path, os.O_RDWR)
    try:
        buf = bytearray(struct.pack("QQQII16x", start, length,
                                    BTRFS_DEFRAG_RANGE_START_IO if start_io else 0, thresh, 0))
        t = time.monotonic()
        fcntl.ioctl(fd, BTRFS_IOC_DEFRAG_RANGE, buf)
        return time.monotonic() - t
    finally:
        os.close(fd)


def extents(path, start=0, length=None):
    """Number of extents FIEMAP reports for [start, start+length)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if length is None:
            length = os.fstat(fd).st_size - start
        buf = bytearray(struct.pack("QQIIII", start, length, 1, 0, 0, 0))  # FIEMAP_FLAG_SYNC
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf)
        return struct.unpack_from("QQIIII", buf)[3]
    finally:
        os.close(fd)


def syncfs(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.monotonic()
        if libc.syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs")
        return time.monotonic() - t
    finally:
        os.close(fd)


def fsync(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        t = time.monotonic()
        os.fsync(fd)
        return time.monotonic() - t
    finally:
        os.close(fd)


def ficlone(src, dst):
    s = os.open(src, os.O_RDONLY)
    d = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t = time.monotonic()
        fcntl.ioctl(d, FICLONE, s)
        return time.monotonic() - t
    finally:
        os.close(s)
        os.close(d)


class Pool:
    """A loop-mounted scratch filesystem (btrfs or xfs) in a temp dir; cleanup removes exactly it."""

    def __init__(self, fs="btrfs", size="8G"):
        self.dir = tempfile.mkdtemp(prefix="amber-lab-", dir=os.environ.get("BENCH_TMP", "/var/tmp"))
        self.img = os.path.join(self.dir, "pool.img")
        self.mnt = os.path.join(self.dir, "mnt")
        os.mkdir(self.mnt)
        sh("truncate", "-s", size, self.img)
        self.dev = sh("losetup", "--direct-io=on", "--show", "-f", self.img).strip()
        self.loops = []
        self.fs = fs
        if fs == "btrfs":
            sh("mkfs.btrfs", "-q", "-f", self.dev)
        else:
            sh("mkfs.xfs", "-q", "-f", "-m", "reflink=1", self.dev)
        if os.environ.get("WBT") is not None:  # writeback throttling of OUR pool loop device (usec, 0 = off)
            with open("/sys/block/%s/queue/wbt_lat_usec" % os.path.basename(self.dev), "w") as f:
                f.write(os.environ["WBT"])
        opts = os.environ.get("MOUNTOPTS")
        sh("mount", *(["-o", opts] if opts else []), self.dev, self.mnt)

    def subvol(self, name):
        p = os.path.join(self.mnt, name)
        if self.fs == "btrfs":
            sh("btrfs", "subvolume", "create", p)
        else:
            os.mkdir(p)
        return p

    def image(self, path, size=1 << 30, fill=True, cowextsize=None):
        """A No_COW image like amberd makes (flag on the empty file, then size), filled 1M sequential."""
        open(path, "w").close()
        if self.fs == "btrfs":
            sh("chattr", "+C", path)
        elif cowextsize:
            sh("xfs_io", "-c", "cowextsize %s" % cowextsize, path)
        os.truncate(path, size)
        if fill:
            sh("dd", "if=/dev/urandom", "of=" + path, "bs=1M", "count=%d" % (size >> 20),
               "oflag=direct", "conv=notrunc")
        return path

    def attach(self, path):
        dev = sh("losetup", "--direct-io=on", "--sector-size", "4096", "--show", "-f", path).strip()
        self.loops.append(dev)
        return dev

    def cleanup(self):
        for d in self.loops:
            subprocess.run(["losetup", "-d", d])
        subprocess.run(["umount", self.mnt])
        subprocess.run(["losetup", "-d", self.dev])
        subprocess.run(["rm", "-rf", self.dir])


class Writer:
    """fio in the background: 4k random I/O on dev, rate-limited, per-I/O latency log (epoch ms, ns)."""

    def __init__(self, dev, outdir, name="w", rate=4000, rw="randwrite", mix=None, depth=4, runtime=3600):
        self.prefix = os.path.join(outdir, name)
        a = ["fio", "--name=" + name, "--filename=" + dev, "--ioengine=io_uring", "--direct=1",
             "--bs=4k", "--iodepth=%d" % depth, "--rw=" + rw, "--time_based",
             "--runtime=%d" % runtime, "--write_lat_log=" + self.prefix, "--log_unix_epoch=1",
             "--output-format=json", "--output=" + self.prefix + ".json", "--randrepeat=0"]
        if mix is not None:
            a.append("--rwmixread=%d" % mix)
        if rw in ("randrw",):
            a.append("--rate_iops=%d,%d" % (rate * (mix or 0) // 100, rate - rate * (mix or 0) // 100))
        else:
            a.append("--rate_iops=%d" % rate)
        self.p = subprocess.Popen(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let fio open the device and start (not a synchronisation; a throwaway lab)

    def stop(self):
        self.p.send_signal(2)
        self.p.wait()

    def lat(self):
        """[(end_s_epoch, lat_s, ddir)] for every I/O (ddir 0 read, 1 write)."""
        out = []
        for f in sorted(os.listdir(os.path.dirname(self.prefix))):
            base = os.path.basename(self.prefix)
            if f.startswith(base + "_lat.") and f.endswith(".log"):
                with open(os.path.join(os.path.dirname(self.prefix), f)) as fh:
                    for line in fh:
                        p = line.split(",")
                        out.append((int(p[0]) / 1000.0, int(p[1]) / 1e9, int(p[2])))
        out.sort()
        return out


def worst_in(lat, t0, t1, ddir=1):
    """Longest latency of an I/O in flight at any time in [t0, t1] (wall clock epoch seconds)."""
    m = 0.0
    for end, l, d in lat:
        if d == ddir and end >= t0 and end - l <= t1:
            m = max(m, l)
    return m


def pct(v, p):
    if not v:
        return float("nan")
    v = sorted(v)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def fio_once(path, rw, bs, runtime=8, depth=32, size=None, extra=()):
    a = ["fio", "--name=m", "--filename=" + path, "--ioengine=io_uring", "--direct=1", "--bs=" + bs,
         "--iodepth=%d" % depth, "--rw=" + rw, "--time_based", "--runtime=%d" % runtime,
         "--output-format=json", "--randrepeat=0"] + list(extra)
    if size:
        a.append("--size=" + size)
    j = json.loads(sh(*a))["jobs"][0]
    d = j["write"] if "write" in rw else j["read"]
    pc = d["clat_ns"].get("percentile", {})
    return {"iops": d["iops"], "bw_mib": d["bw_bytes"] / 2**20,
            "p99_ms": pc.get("99.000000", 0) / 1e6, "max_ms": d["clat_ns"]["max"] / 1e6}
