"""Shared helpers of Amber's Python tests (run with Debian's /usr/bin/python3).

Every resource a test makes is registered with a Cleanup and removed by
exact identity (PID, mount path, loop device path, netns name) even when
the test fails. A test exits 0 (pass), 1 (fail) or 77 (skip).
"""
import atexit
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("B", "build")
if not os.path.isabs(BUILD):
    BUILD = os.path.join(ROOT, BUILD)
PY = os.path.join(BUILD, "py")


def genproto():
    subprocess.run([os.path.join(ROOT, "tests/lib/genproto"), PY], check=True,
                   stdout=subprocess.DEVNULL)
    if PY not in sys.path:
        sys.path.insert(0, PY)


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(77)


class Cleanup:
    """LIFO list of undo actions, run at exit, on failure too."""

    def __init__(self):
        self.actions = []
        atexit.register(self.run)

    def add(self, desc, fn):
        self.actions.append((desc, fn))

    def run(self):
        while self.actions:
            desc, fn = self.actions.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning
                print("cleanup %s failed: %s" % (desc, e), file=sys.stderr)


cleanup = Cleanup()
# A test stopped by tests/run's timeout (SIGTERM) still removes what it made.
signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def tmpdir(prefix="amber-test-"):
    d = tempfile.mkdtemp(prefix=prefix)
    cleanup.add("rm " + d, lambda: subprocess.run(["rm", "-rf", "--one-file-system", d]))
    return d


def kill_pid(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def spawn(argv, **kw):
    """Start a process; it is stopped (by PID) at cleanup."""
    p = subprocess.Popen(argv, **kw)
    cleanup.add("kill %d" % p.pid, lambda: kill_pid(p))
    return p


def wait_for_socket(path, proc=None, timeout=20.0):
    """Wait until a unix socket accepts connections (or the process died)."""
    import socket
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited with %s before %s appeared" % (proc.returncode, path))
        if os.path.exists(path):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(path)
                return
            except OSError:
                pass
            finally:
                s.close()
        time.sleep(0.02)
    raise RuntimeError("timed out waiting for " + path)


class Tests:
    """A tiny runner: each test_* function, a line per result, exit code."""

    def __init__(self):
        self.failed = []
        self.passed = 0

    def run(self, fns):
        only = os.environ.get("ONLY")
        for fn in fns:
            if only and only not in fn.__name__:
                continue
            t0 = time.monotonic()
            try:
                fn()
                self.passed += 1
                print("ok   %-50s %.2fs" % (fn.__name__, time.monotonic() - t0), flush=True)
            except Exception:
                self.failed.append(fn.__name__)
                print("FAIL %-50s" % fn.__name__, flush=True)
                traceback.print_exc()
                for d in list(DAEMONS):
                    print("--- last lines of %s/amberd.log" % d.dir)
                    print("\n".join(d.log().splitlines()[-25:]))
            DAEMONS.clear()
        print("%d passed, %d failed" % (self.passed, len(self.failed)))
        return 1 if self.failed else 0


def check(cond, msg="check failed"):
    if not cond:
        raise AssertionError(msg)


def check_eq(a, b, msg=""):
    if a != b:
        raise AssertionError("%s: %r != %r" % (msg or "values differ", a, b))


def expect_status(code, fn, *args, **kw):
    """Call fn and expect a grpc.RpcError with `code`; return it."""
    import grpc
    try:
        fn(*args, **kw)
    except grpc.RpcError as e:
        if e.code() != code:
            raise AssertionError("expected %s, got %s: %s" % (code, e.code(), e.details()))
        return e
    raise AssertionError("expected %s, the call succeeded" % code)


class Stub:
    """Calls methods by path with the generated message classes (no
    generated gRPC stubs needed)."""

    def __init__(self, channel, service, module):
        self.ch = channel
        self.service = service
        self.mod = module

    def _m(self, kind, name, req_t, resp_t):
        path = "/%s/%s" % (self.service, name)
        return getattr(self.ch, kind)(path, request_serializer=req_t.SerializeToString,
                                      response_deserializer=resp_t.FromString)

    def unary(self, name, req_t, resp_t):
        return self._m("unary_unary", name, req_t, resp_t)

    def server_stream(self, name, req_t, resp_t):
        return self._m("unary_stream", name, req_t, resp_t)

    def client_stream(self, name, req_t, resp_t):
        return self._m("stream_unary", name, req_t, resp_t)

    def bidi(self, name, req_t, resp_t):
        return self._m("stream_stream", name, req_t, resp_t)


def read_json_line(proc, timeout=20.0):
    import select
    end = time.monotonic() + timeout
    buf = b""
    while time.monotonic() < end:
        r, _, _ = select.select([proc.stdout], [], [], 0.1)
        if r:
            c = os.read(proc.stdout.fileno(), 4096)
            if not c:
                break
            buf += c
            if b"\n" in buf:
                return json.loads(buf.split(b"\n", 1)[0])
        if proc.poll() is not None:
            break
    raise RuntimeError("no ready line from process (exit %s)" % proc.poll())


# --- amberd on a loop pool -------------------------------------------------

def _loops_backed_under(prefix):
    """Loop devices whose backing file lies under prefix: (dev, backing)."""
    out = []
    base = "/sys/block"
    for name in os.listdir(base):
        if not name.startswith("loop"):
            continue
        try:
            with open(os.path.join(base, name, "loop", "backing_file")) as f:
                back = f.read().strip()
        except OSError:
            continue
        if back.startswith(prefix):
            out.append(("/dev/" + name, back))
    return out


def _mounts_under(prefix):
    res = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            parts = line.split()
            mp = parts[4].replace("\\040", " ")
            src = parts[parts.index("-") + 2]
            if mp.startswith(prefix) or src.startswith(prefix):
                res.append(mp)
    return res


def release_tree(d):
    """Unmount every mount under d and detach every loop device whose backing
    file is under d: exactly what a test made there, by path. Volumes' loop
    devices (images inside the pool) go before the pool's own."""
    for _ in range(3):
        for mp in sorted(_mounts_under(d), key=len, reverse=True):
            subprocess.run(["umount", mp], stderr=subprocess.DEVNULL)
        loops = _loops_backed_under(d)
        # Images inside a mounted pool first, the pool image last.
        loops.sort(key=lambda x: x[1].count("/"), reverse=True)
        for dev, _ in loops:
            for mp in _mounts_under(dev):
                subprocess.run(["umount", mp], stderr=subprocess.DEVNULL)
            subprocess.run(["losetup", "-d", dev], stderr=subprocess.DEVNULL)
        if not _mounts_under(d) and not _loops_backed_under(d):
            return
        time.sleep(0.2)


DAEMONS = []   # the Amberd instances of the running test, for failure logs


class Amberd:
    """A real amberd on its own loop-mounted pool image in a temp dir.
    stop() is graceful (SIGTERM: unmounts and detaches its pool); kill()
    is kill -9 (the pool stays mounted; start() adopts it again)."""

    def __init__(self, fs="btrfs", size="2G", extra=None, env=None):
        genproto()
        self.dir = tmpdir("amberd-")
        cleanup.add("release " + self.dir, lambda: release_tree(self.dir))
        self.pool = os.path.join(self.dir, "pool")
        self.image = os.path.join(self.dir, "pool.img")
        self.sock = os.path.join(self.dir, "amberd.sock")
        self.fs, self.size = fs, size
        self.extra = extra or []
        self.proc = None
        self.logf = open(os.path.join(self.dir, "amberd.log"), "ab")
        DAEMONS.append(self)
        self.start(env)

    def argv(self):
        return [os.path.join(BUILD, "amberd"), "--pool", self.pool, "--pool-image", self.image,
                "--pool-size", self.size, "--pool-fs", self.fs, "--socket", self.sock] + self.extra

    def start(self, env=None):
        e = dict(os.environ)
        e.update(env or {})
        self.proc = spawn(self.argv(), stdout=self.logf, stderr=self.logf, env=e)
        wait_for_socket(self.sock, self.proc)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
        rc = self.proc.returncode if self.proc else 0
        self.proc = None
        return rc

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None
        if os.path.exists(self.sock):
            os.unlink(self.sock)

    def log(self):
        with open(os.path.join(self.dir, "amberd.log"), "rb") as f:
            return f.read().decode(errors="replace")

    def ctl(self, *args, check=True, json_out=True):
        """Run amberctl; returns parsed JSON (or text)."""
        argv = [os.path.join(BUILD, "amberctl"), "--socket", self.sock]
        if json_out:
            argv.append("--json")
        p = subprocess.run(argv + list(args), capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            raise AssertionError("amberctl %s failed (%d): %s" % (" ".join(args), p.returncode, p.stderr))
        if not check:
            return p
        return json.loads(p.stdout) if json_out and p.stdout.strip() else p.stdout

    def ctl_fail(self, code, *args):
        """Expect amberctl to fail with a gRPC status name in stderr."""
        p = self.ctl(*args, check=False)
        if p.returncode == 0:
            raise AssertionError("amberctl %s succeeded, expected %s" % (" ".join(args), code))
        if code not in p.stderr:
            raise AssertionError("amberctl %s: expected %s, got: %s" % (" ".join(args), code, p.stderr))
        return p.stderr

    def channel(self):
        import grpc
        ch = grpc.insecure_channel("unix://" + self.sock)
        cleanup.add("close channel", ch.close)
        return ch

    def disk_ids(self):
        """Volume ids and {vol: [snap ids]} present in the pool directory."""
        vols = sorted(x for x in os.listdir(os.path.join(self.pool, "vols")) if not x.startswith("."))
        snaps = {}
        sd = os.path.join(self.pool, "snaps")
        if os.path.isdir(sd):
            for v in os.listdir(sd):
                snaps[v] = sorted(x for x in os.listdir(os.path.join(sd, v)) if not x.startswith("."))
        return vols, snaps
