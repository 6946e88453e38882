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
