#!/usr/bin/python3
"""Faults beyond kill -9, each at a chosen point, each with a clear error,
nothing acknowledged lost, and the operation resumable:

  - the repository's filesystem fills up in the middle of an export;
  - the object store answers 5xx, stops answering (timeouts) and truncates
    bodies in the middle of an export and of a restore (a fault-injecting
    HTTP proxy in front of s3rver, switched after the Nth request);
  - a disk read error on the snapshot's image in the middle of an export
    (AMBER_FAULT_AT=export-read:N makes the Nth read return EIO);
  - the sending peer vanishes (kill -9) in the middle of a sync, at a
    chosen byte of the transfer;
  - the path to the sending peer freezes (a proxy that stops forwarding
    both ways and keeps its sockets open: no FIN, no RST), and the sender
    stops (SIGSTOP), each at a chosen byte: the keepalive (HTTP/2 PING,
    --peer-keepalive) fails the pull UNAVAILABLE naming the peer, the
    sender's handler is released by its own keepalive, and the pull
    resumes once the path is back.
"""
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
MiB = 1 << 20
os.environ["AMBER_REPO_PASSWORD"] = "faults"


def fill(d, name, mib):
    d.ctl("volume", "create", name, "--size", "%dM" % mib)
    dev = d.ctl("volume", "attach", name)["device"]
    fd = os.open(dev, os.O_WRONLY)
    try:
        for off in range(0, mib * MiB, 4 * MiB):
            os.pwrite(fd, os.urandom(4 * MiB), off)
        os.fsync(fd)
    finally:
        os.close(fd)
    d.ctl("volume", "detach", name)
    return d.ctl("snapshot", "create", name, "--name", "s")


def image_sha(d, vol, snap=None):
    v = d.ctl("volume", "show", vol)
    path = os.path.join(d.pool, "snaps", v["id"], snap, "disk") if snap else os.path.join(
        d.pool, "vols", v["id"], "disk")
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(4 * MiB), b""):
            h.update(b)
    return h.hexdigest()


def test_repo_fills_up_mid_export():
    d = T.Amberd("btrfs", size="1G")
    s = fill(d, "v", 48)
    mnt = T.tmpdir("small-repo-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", mnt], check=True)
    T.cleanup.add("umount " + mnt, lambda: subprocess.run(["umount", mnt]))
    repo = "file://" + mnt + "/r"
    d.ctl("repo", "init", "--repo", repo)
    err = d.ctl_fail("RESOURCE_EXHAUSTED", "export", "v@s", "--repo", repo)
    T.check("run it again" in err, "a clear error: " + err)
    T.check_eq(d.ctl("repo", "list", "--repo", repo), [], "a manifest of an export that failed")
    subprocess.run(["mount", "-o", "remount,size=256M", mnt], check=True)
    e = d.ctl("export", "v@s", "--repo", repo)
    T.check(e["chunks_reused"] > 0, "the export resumed: %r" % e)
    d.ctl("restore", e["manifest"], "--repo", repo, "--volume", "back")
    T.check_eq(image_sha(d, "back"), image_sha(d, "v", s["id"]), "restored bytes")
    T.check_eq(d.stop(), 0)


def test_disk_read_error_mid_export():
    # --store-off: the snapshot store's own exports would take the fault.
    d = T.Amberd("btrfs", size="1G", extra=["--store-off"])
    s = fill(d, "v", 32)
    repo = "file://" + T.tmpdir("repo-")
    d.ctl("repo", "init", "--repo", repo)
    d.kill()
    d.start({"AMBER_FAULT_AT": "export-read:12"})
    err = d.ctl_fail("export", "export", "v@s", "--repo", repo)
    T.check("Input/output error" in err and "run it again" in err, "a clear error: " + err)
    T.check_eq(d.ctl("repo", "list", "--repo", repo), [], "a manifest of an export that failed")
    T.check_eq(d.ctl("snapshot", "show", "v@s")["state"], "ready", "the snapshot is untouched")
    d.stop()
    d.start()          # the disk is repaired
    e = d.ctl("export", "v@s", "--repo", repo)
    T.check(e["chunks_reused"] >= 8, "the export resumed: %r" % e)
    d.ctl("restore", e["manifest"], "--repo", repo, "--volume", "back")
    T.check_eq(image_sha(d, "back"), image_sha(d, "v", s["id"]), "restored bytes")
    T.check_eq(d.stop(), 0)


# --- the object store misbehaving ------------------------------------------------

class FaultyS3:
    """An HTTP/1.1 proxy in front of s3rver. Once `after` requests of
    `methods` went through, it answers them by `mode`: "500" (an S3
    InternalError), "hang" (reads the request, never answers), "truncate"
    (the response's headers and half its body, then closes). mode None
    passes everything."""

    def __init__(self, upstream_port):
        self.up = upstream_port
        self.mode, self.after, self.methods, self.seen, self.faults = None, 0, (), 0, 0
        self.lock = threading.Lock()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(64)
        self.port = self.ls.getsockname()[1]
        self.socks = []
        threading.Thread(target=self.accept, daemon=True).start()
        T.cleanup.add("faulty s3 proxy", self.close)

    def arm(self, mode, after, methods):
        with self.lock:
            self.mode, self.after, self.methods, self.seen = mode, after, methods, 0

    def heal(self):
        with self.lock:
            self.mode = None
        for s in list(self.socks):      # hung requests end
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self.heal()
        self.ls.close()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            self.socks.append(c)
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    @staticmethod
    def read_message(f, head_only_body_len=None):
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            line = f.readline()
            if not line:
                return None, None
            head += line
        n = 0
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            if k.strip().lower() == b"content-length":
                n = int(v.strip())
            if k.strip().lower() == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if head_only_body_len is not None or head.split(b" ", 2)[1:2] in ([b"204"], [b"304"]) or \
                head.startswith(b"HTTP/1.1 1"):
            n = head_only_body_len or 0
        if chunked:
            body = b""
            while True:
                size_line = f.readline()
                body += size_line
                size = int(size_line.strip().split(b";")[0], 16)
                data = f.read(size + 2)
                body += data
                if size == 0:
                    break
            return head, body
        return head, f.read(n) if n else b""

    def serve(self, c):
        up = socket.create_connection(("127.0.0.1", self.up))
        cf, uf = c.makefile("rb"), up.makefile("rb")
        try:
            while True:
                head, body = self.read_message(cf)
                if head is None:
                    return
                method = head.split(b" ", 1)[0].decode()
                with self.lock:
                    fault = None
                    if self.mode and method in self.methods:
                        self.seen += 1
                        if self.seen > self.after:
                            fault = self.mode
                            self.faults += 1
                if fault == "500":
                    msg = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
                    c.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/xml\r\n"
                              b"Content-Length: %d\r\n\r\n%s" % (len(msg), msg))
                    continue
                if fault == "hang":
                    c.recv(1)           # until healed (shutdown) or the client gives up
                    return
                up.sendall(head + body)
                rhead, rbody = self.read_message(uf, 0 if method == "HEAD" else None)
                while rhead is not None and rhead.startswith(b"HTTP/1.1 1"):    # 100 Continue
                    c.sendall(rhead)
                    rhead, rbody = self.read_message(uf, 0 if method == "HEAD" else None)
                if rhead is None:
                    return
                if fault == "truncate" and len(rbody) > 1:
                    c.sendall(rhead + rbody[:len(rbody) // 2])
                    return
                c.sendall(rhead + rbody)
        except OSError:
            pass
        finally:
            for x in (c, up):
                try:
                    x.close()
                except OSError:
                    pass


def start_s3():
    node = shutil.which("node")
    js = os.path.join(T.ROOT, "tests", "lib", "s3rver.js")
    mod = os.path.join(T.ROOT, "build", "node", "node_modules", "@20minutes", "s3rver")
    if not node or not os.path.isdir(mod):
        return None
    data = T.tmpdir("s3rver-")
    p = T.spawn([node, js, data, "amber"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    line = p.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError("s3rver did not start: %r" % line)
    os.environ["AWS_ACCESS_KEY_ID"] = "S3RVER"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "S3RVER"
    return int(line.split()[1])


def test_object_store_5xx_timeouts_truncation():
    port = start_s3()
    if not port:
        T.skip("s3rver is not installed (scripts/setup-deps installs it)")
    px = FaultyS3(port)
    repo = "s3://amber/faults?endpoint=http://127.0.0.1:%d&region=us-east-1&retries=1&timeout=2" % px.port
    d = T.Amberd("btrfs", size="1G")
    s = fill(d, "v", 24)
    want = image_sha(d, "v", s["id"])
    d.ctl("repo", "init", "--repo", repo)
    # Export: 5xx after 8 uploads, then silence after 4 more.
    manifest = None
    for mode, after in (("500", 8), ("hang", 4)):
        px.arm(mode, after, ("PUT",))
        err = d.ctl_fail("", "export", "v@s", "--repo", repo)
        T.check("run it again" in err, "%s: a clear error: %s" % (mode, err))
        px.heal()
        T.check_eq(d.ctl("repo", "list", "--repo", repo), [], "%s: a manifest of a failed export" % mode)
    e = d.ctl("export", "v@s", "--repo", repo)
    T.check(e["chunks_reused"] >= 8, "the export resumed: %r" % e)
    manifest = e["manifest"]
    # Restore: 5xx, then truncated bodies, then silence, each after some chunks.
    # (Format 2 reads the config, the manifest, the indexes the failed
    # exports left and the map's nodes before the first piece: 30 GETs let
    # the first round write some.)
    for i, (mode, after) in enumerate((("500", 30), ("truncate", 4), ("hang", 3))):
        px.arm(mode, after, ("GET",))
        err = d.ctl_fail("", "restore", manifest, "--repo", repo, "--volume", "back")
        T.check("run it again" in err or "resume" in err, "%s: a clear error: %s" % (mode, err))
        px.heal()
        T.check_eq(d.ctl("volume", "show", "back")["state"], "receiving", "%s: half restored, not ready" % mode)
    r = d.ctl("restore", manifest, "--repo", repo, "--volume", "back")
    T.check(r["chunks_reused"] > 0, "the restore resumed: %r" % r)
    T.check_eq(image_sha(d, "back"), want, "restored bytes")
    T.check(px.faults >= 6, "faults injected: %d" % px.faults)
    T.check_eq(d.stop(), 0)


# --- a peer vanishing mid-sync -------------------------------------------------------

class HoldProxy:
    """127.0.0.1:0 → target; stops forwarding server→client at hold_at
    bytes (sets .held) until .release is set."""

    def __init__(self, target_port, hold_at):
        self.target, self.hold_at = target_port, hold_at
        self.held, self.release = threading.Event(), threading.Event()
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()
        T.cleanup.add("hold proxy", self.close)

    def close(self):
        self.release.set()
        self.ls.close()

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            threading.Thread(target=self.pipe, args=(c, s, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(s, c, True), daemon=True).start()

    def pipe(self, src, dst, down):
        n = 0
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if down and self.hold_at is not None and n + len(b) >= self.hold_at:
                    first = b[:self.hold_at - n]
                    dst.sendall(first)
                    n += len(first)
                    b = b[len(first):]
                    self.hold_at = None
                    self.held.set()
                    self.release.wait()
                n += len(b)
                dst.sendall(b)
        except OSError:
            pass
        for x in (src, dst):
            try:
                # shutdown first: a close() does not end a connection whose
                # other direction's thread is blocked in recv() on it, so the
                # receiver never saw the sender vanish
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            try:
                x.close()
            except OSError:
                pass


def test_peer_vanishes_mid_sync():
    A = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"])
    B = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"], env={"AMBER_SYNC_ACK_BYTES": "1M"})
    IA, IB = A.ctl("info"), B.ctl("info")
    A.ctl("peer", "add", "b", "--address", IB["peer_address"], "--fingerprint", IB["fingerprint"])
    s = fill(A, "data", 24)
    A.ctl("volume", "publish", "data", "--to", "b")
    px = HoldProxy(int(IA["peer_address"].rsplit(":", 1)[1]), 8 * MiB)
    B.ctl("peer", "add", "a", "--address", px.addr, "--fingerprint", IA["fingerprint"])
    pr = subprocess.Popen([os.path.join(T.BUILD, "amberctl"), "--socket", B.sock, "--json", "sync", "pull",
                           "a", "data"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    T.check(px.held.wait(120), "the transfer reached 8 MiB")
    A.kill()                # the sender vanishes mid-transfer
    px.release.set()
    _, err = pr.communicate(timeout=120)
    T.check(pr.returncode != 0 and err.strip(), "the pull failed clearly: %r" % err)
    T.check(s["id"] not in {x["id"] for x in B.ctl("snapshot", "list")}, "no half-received snapshot is listed")
    A.start()
    IA = A.ctl("info")
    B.ctl("peer", "add", "a", "--address", IA["peer_address"], "--fingerprint", IA["fingerprint"])
    r = B.ctl("sync", "pull", "a", "data")
    T.check(r["resumed_bytes"] > 0, "the pull resumed from what B acknowledged: %r" % r)
    T.check_eq(image_sha(B, "data", s["id"]), image_sha(A, "data", s["id"]), "B's copy")
    T.check_eq(A.stop(), 0)
    T.check_eq(B.stop(), 0)


class FreezeProxy:
    """127.0.0.1:0 → target, forwarding both ways until freeze_at bytes went
    server→client; from then on it forwards nothing either way and keeps
    both sockets open (a frozen proxy or a partition: no FIN, no RST) until
    close(), which shuts them down. .frozen is set at the freeze."""

    def __init__(self, target_port, freeze_at):
        self.target, self.freeze_at, self.down = target_port, freeze_at, 0
        self.frozen, self.gone = threading.Event(), threading.Event()
        self.socks = []
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(8)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        threading.Thread(target=self.accept, daemon=True).start()
        T.cleanup.add("freeze proxy", self.close)

    def close(self):
        self.gone.set()
        self.ls.close()
        for x in self.socks:
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def accept(self):
        while True:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                c.close()
                continue
            self.socks += [c, s]
            threading.Thread(target=self.pipe, args=(c, s, False), daemon=True).start()
            threading.Thread(target=self.pipe, args=(s, c, True), daemon=True).start()

    def pipe(self, src, dst, down):
        try:
            while not self.gone.is_set():
                b = src.recv(65536)
                if not b:
                    break
                if down and not self.frozen.is_set() and self.down + len(b) >= self.freeze_at:
                    dst.sendall(b[:self.freeze_at - self.down])
                    self.down = self.freeze_at
                    self.frozen.set()
                if self.frozen.is_set():
                    self.gone.wait()        # frozen: hold what came, answer nothing
                    break
                self.down += len(b) if down else 0
                dst.sendall(b)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def wait_until(cond, what, timeout=120):
    """Wait for an event the test caused (not for time to pass)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def test_peer_freezes_mid_sync():
    # A short keepalive on both sides: the pull (B, client) and the peer
    # port's handler (A, server) each find the silence themselves.
    ka = ["--peer-keepalive", "2000"]
    A = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"] + ka)
    B = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"] + ka, env={"AMBER_SYNC_ACK_BYTES": "1M"})
    IA, IB = A.ctl("info"), B.ctl("info")
    A.ctl("peer", "add", "b", "--address", IB["peer_address"], "--fingerprint", IB["fingerprint"])
    s = fill(A, "data", 24)
    A.ctl("volume", "publish", "data", "--to", "b")
    a_port = int(IA["peer_address"].rsplit(":", 1)[1])

    def pull_fails(what):
        err = B.ctl_fail("UNAVAILABLE", "sync", "pull", "a", "data")
        T.check("peer a" in err and "keepalive" in err, "%s: a clear error naming the peer: %r" % (what, err))
        T.check(s["id"] not in {x["id"] for x in B.ctl("snapshot", "list")},
                "%s: no half-received snapshot is listed" % what)

    # 1. The path freezes after 8 MiB.
    px = FreezeProxy(a_port, 8 * MiB)
    B.ctl("peer", "add", "a", "--address", px.addr, "--fingerprint", IA["fingerprint"])
    pull_fails("frozen proxy")
    T.check(px.frozen.is_set(), "the proxy froze mid-transfer")
    # B gave up, but the proxy passes on neither its FIN nor anything else:
    # A's handler is released only by A's own keepalive.
    wait_until(lambda: "no answer to a keepalive ping" in A.log(), "A's keepalive to drop the frozen connection")
    px.close()
    # 2. The sender stops (SIGSTOP) 4 MiB into the next attempt.
    hp = HoldProxy(a_port, 4 * MiB)
    B.ctl("peer", "add", "a", "--address", hp.addr, "--fingerprint", IA["fingerprint"])
    pr = subprocess.Popen([os.path.join(T.BUILD, "amberctl"), "--socket", B.sock, "--json", "sync", "pull",
                           "a", "data"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    T.check(hp.held.wait(120), "the second transfer reached 4 MiB")
    A.proc.send_signal(signal.SIGSTOP)
    T.cleanup.add("SIGCONT A", lambda: A.proc and A.proc.send_signal(signal.SIGCONT))
    hp.release.set()
    _, err = pr.communicate(timeout=120)
    T.check(pr.returncode != 0 and "UNAVAILABLE" in err and "peer a" in err and "keepalive" in err,
            "stopped sender: a clear error naming the peer: %r" % err)
    A.proc.send_signal(signal.SIGCONT)
    hp.close()
    # 3. The path is back: the pull resumes and completes, byte-identical.
    B.ctl("peer", "add", "a", "--address", IA["peer_address"], "--fingerprint", IA["fingerprint"])
    r = B.ctl("sync", "pull", "a", "data")
    T.check(r["resumed_bytes"] > 0, "the pull resumed from what B acknowledged: %r" % r)
    T.check_eq(image_sha(B, "data", s["id"]), image_sha(A, "data", s["id"]), "B's copy")
    T.check_eq(A.stop(), 0)
    T.check_eq(B.stop(), 0)


sys.exit(T.Tests().run([
    test_repo_fills_up_mid_export,
    test_disk_read_error_mid_export,
    test_object_store_5xx_timeouts_truncation,
    test_peer_vanishes_mid_sync,
    test_peer_freezes_mid_sync,
]))
