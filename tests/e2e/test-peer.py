#!/usr/bin/python3
"""Peer sync end to end: two amberds, each on its own loop pool, talking
mutual TLS over TCP on 127.0.0.1. A chain of 10 snapshots with clustered
and scattered changes synced after each (same ids, labels, times, bytes,
diffs; bytes on the wire near the compressed changed bytes); faults (a
proxy cutting the connection at several points, the receiver killed -9
mid-snapshot, a full receiving pool, the sender's snapshot deleted
mid-transfer); security (no client certificate, an unpinned one, an
expired pinned one, an unpublished volume, a push without --allow-push,
garbage on the peer port)."""
import hashlib
import os
import random
import socket
import ssl
import subprocess
import sys
import threading
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")

ACK = {"AMBER_SYNC_ACK_BYTES": "1M"}
A = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"])
B = T.Amberd(size="1G", extra=["--peer-listen", "127.0.0.1:0"], env=ACK)
IA, IB = A.ctl("info"), B.ctl("info")
MiB = 1 << 20
rnd = random.Random(9)


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def trust(x, name, info, *extra):
    x.ctl("peer", "add", name, "--address", info["peer_address"], "--fingerprint",
          info["fingerprint"], *extra)


trust(A, "b", IB)
trust(B, "a", IA)


def write(dev, chunks):
    fd = os.open(dev, os.O_RDWR)
    try:
        for off, data in chunks:
            os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)


def payload(n):
    """Half random, half compressible: compression shows on the wire."""
    if rnd.random() < 0.5:
        return rnd.randbytes(n)
    word = rnd.randbytes(64)
    return (word * (n // 64 + 1))[:n]


def change(dev, size):
    """Clustered runs plus scattered 4 KiB blocks."""
    chunks = []
    for _ in range(rnd.randint(1, 3)):
        n = rnd.randint(1, 64) * 64 * 1024
        off = rnd.randrange(0, size - n, 4096)
        chunks.append((off, payload(n)))
    for _ in range(rnd.randint(20, 200)):
        chunks.append((rnd.randrange(0, size, 4096), payload(4096)))
    write(dev, chunks)


def snaps(x, vol):
    return {s["id"]: s for s in x.ctl("snapshot", "list", "--volume", vol)}


def sha_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


def snap_sha(x, vol, snap, attach=False):
    v = x.ctl("volume", "show", vol)
    path = os.path.join(x.pool, "snaps", v["id"], snap, "disk")
    # A snapshot the store moved off the pool is read through an attach.
    if attach or not os.path.exists(path):
        dev = x.ctl("volume", "attach", vol, "--snapshot", snap)["device"]
        try:
            return sha_file(dev)
        finally:
            x.ctl("volume", "detach", vol, "--snapshot", snap)
    return sha_file(path)


def diff(x, a, b):
    return x.ctl("snapshot", "diff", a, b)["extents"]


def changed_bytes(x, vol, a, b):
    """The snapshot's changed data on the sender, for the wire check."""
    v = x.ctl("volume", "show", vol)
    path = os.path.join(x.pool, "snaps", v["id"], b, "disk")
    ext = diff(x, a, b) if a else x.ctl("snapshot", "diff", "--volume", vol, "", b, check=False)
    data = bytearray()
    with open(path, "rb") as f:
        for e in (ext if isinstance(ext, list) else []):
            f.seek(e["offset"])
            data += f.read(e["length"])
    return bytes(data)


def assert_same(vol, rvol=None, attach=False):
    rvol = rvol or vol
    sa, sb = snaps(A, vol), snaps(B, rvol)
    T.check(set(sa) <= set(sb), "replica misses snapshots: %s" % (set(sa) - set(sb)))
    for sid, s in sa.items():
        r = sb[sid]
        for k in ("name", "labels", "created_ns", "size_bytes"):
            T.check_eq(r[k], s[k], "snapshot %s %s" % (s["name"], k))
        T.check_eq(snap_sha(B, rvol, sid, attach), snap_sha(A, vol, sid, attach),
                   "bytes of snapshot %s" % s["name"])
    return sa, sb


# --- the chain ------------------------------------------------------------

SIZE = 128 * MiB


def test_chain_of_ten():
    A.ctl("volume", "create", "data", "--size", "128M")
    A.ctl("volume", "publish", "data", "--to", "b")
    dev = A.ctl("volume", "attach", "data")["device"]
    write(dev, [(0, payload(8 * MiB)), (64 * MiB, payload(4 * MiB))])
    prev = None
    wire_total = changed_total = 0
    for i in range(10):
        if i:
            change(dev, SIZE)
        s = A.ctl("snapshot", "create", "data", "--name", "c%d" % i, "--label", "step=%d" % i)
        r = B.ctl("sync", "pull", "a", "data")
        T.check_eq(r["snapshots_received"], 1, "one snapshot a pull")
        if prev:
            data = changed_bytes(A, "data", prev["id"], s["id"])
            T.check_eq(r["bytes_changed"], len(data), "bytes changed = the diff's bytes")
            z = len(zlib.compress(data, 1))
            wire_total += r["bytes_on_wire"]
            changed_total += z
            T.check(r["bytes_on_wire"] <= z * 1.1 + 64 * 1024,
                    "wire %d vs compressed %d" % (r["bytes_on_wire"], z))
            T.check_eq(diff(B, prev["id"], s["id"]), diff(A, prev["id"], s["id"]),
                       "diff %s..%s" % (prev["name"], s["name"]))
        prev = s
    print("wire %d bytes for %d bytes of zlib-1-compressed changes" % (wire_total, changed_total))
    assert_same("data", attach=True)
    rv = B.ctl("volume", "show", "data")
    T.check(rv["replica_of"].startswith("a/"), "a replica says so")
    # A replica is read-only to local writers: no read-write attach, no
    # local snapshots (it follows its source).
    B.ctl_fail("FAILED_PRECONDITION", "volume", "attach", "data")
    B.ctl_fail("FAILED_PRECONDITION", "snapshot", "create", "data", "--name", "local")
    # Nothing new: an empty transfer.
    T.check_eq(B.ctl("sync", "pull", "a", "data")["snapshots_received"], 0)
    A.ctl("volume", "detach", "data")


# --- faults ---------------------------------------------------------------

class Proxy:
    """127.0.0.1:0 → target; cuts each of the first connections after
    cut[i] bytes from the server; throttles when rate is set; with hold_at,
    stops forwarding server→client at that many bytes (sets .held) until
    .release is set, so a test acts at a chosen point of a transfer; counts."""

    def __init__(self, target, cuts=(), rate=0, hold_at=None):
        self.target, self.cuts, self.rate = target, list(cuts), rate
        self.hold_at = hold_at
        self.held, self.release = threading.Event(), threading.Event()
        self.down = []         # bytes server→client per connection
        self.ls = socket.socket()
        self.ls.bind(("127.0.0.1", 0))
        self.ls.listen(16)
        self.addr = "127.0.0.1:%d" % self.ls.getsockname()[1]
        self.stop = False
        threading.Thread(target=self.accept, daemon=True).start()
        T.cleanup.add("proxy", self.close)

    def close(self):
        self.stop = True
        self.release.set()
        self.ls.close()

    def accept(self):
        while not self.stop:
            try:
                c, _ = self.ls.accept()
            except OSError:
                return
            s = socket.create_connection(("127.0.0.1", port(self.target)))
            idx = len(self.down)
            self.down.append(0)
            threading.Thread(target=self.pipe, args=(c, s, None), daemon=True).start()
            threading.Thread(target=self.pipe, args=(s, c, idx), daemon=True).start()

    def pipe(self, src, dst, idx):
        try:
            while True:
                b = src.recv(65536)
                if not b:
                    break
                if idx is not None:
                    cut = self.cuts[0] if self.cuts else None
                    if cut is not None and self.down[idx] + len(b) >= cut:
                        self.cuts.pop(0)
                        b = b[:cut - self.down[idx]]
                        dst.sendall(b)
                        self.down[idx] += len(b)
                        break
                    if self.hold_at is not None and self.down[idx] + len(b) >= self.hold_at:
                        first = b[:self.hold_at - self.down[idx]]
                        dst.sendall(first)
                        self.down[idx] += len(first)
                        b = b[len(first):]
                        self.hold_at = None
                        self.held.set()
                        self.release.wait()
                    self.down[idx] += len(b)
                    if self.rate:
                        time.sleep(len(b) / self.rate)
                dst.sendall(b)
        except OSError:
            pass
        for x in (src, dst):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            x.close()


def via(proxy):
    B.ctl("peer", "add", "a", "--address", proxy.addr, "--fingerprint", IA["fingerprint"])


def direct():
    trust(B, "a", IA)


def restart_b():
    """B listens on a new port after a restart: tell A."""
    global IB
    B.start(ACK)
    IB = B.ctl("info")
    trust(A, "b", IB)


def big_change(vol, n, name):
    dev = A.ctl("volume", "attach", vol)["device"]
    write(dev, [(off, rnd.randbytes(MiB)) for off in
                sorted(rnd.sample(range(0, SIZE // MiB), n))
                for off in [off * MiB]])
    A.ctl("volume", "detach", vol)
    return A.ctl("snapshot", "create", vol, "--name", name)


def test_cut_connection_resumes():
    s = big_change("data", 24, "cut")
    clean = 24 * MiB
    p = Proxy(IA["peer_address"], cuts=[5 * MiB, 6 * MiB, 5 * MiB])
    via(p)
    try:
        fails = 0
        for _ in range(6):
            r = B.ctl("sync", "pull", "a", "data", check=False)
            if r.returncode == 0:
                break
            fails += 1
        T.check_eq(fails, 3, "three cut attempts")
        import json
        out = json.loads(r.stdout)
        T.check(out["resumed_bytes"] >= 10 * MiB, "resumed from the acknowledged offset: %s" % out)
        total = sum(p.down)
        # Each cut may resend only what was not yet acknowledged (1M acks).
        T.check(total <= clean + 3 * 3 * MiB + 256 * 1024,
                "bytes through the proxy %d for %d changed" % (total, clean))
        print("proxy carried %d bytes in %d connections for %d bytes changed" % (total, len(p.down), clean))
    finally:
        direct()
    assert_same("data")
    T.check(s["id"] in snaps(B, "data"))


def wait_until(cond, timeout=60, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def test_receiver_killed_mid_snapshot():
    big_change("data", 16, "kill")
    p = Proxy(IA["peer_address"], hold_at=6 * MiB)
    via(p)
    try:
        pr = subprocess.Popen([os.path.join(T.BUILD, "amberctl"), "--socket", B.sock, "--json",
                               "sync", "pull", "a", "data"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        T.check(p.held.wait(120), "the transfer reached 6 MiB")
        B.kill()
        p.release.set()
        pr.wait(timeout=30)
        T.check(pr.returncode != 0, "the pull failed with its daemon")
        restart_b()
        T.check("kill" not in [s["name"] for s in snaps(B, "data").values()],
                "no half-received snapshot is listed")
    finally:
        direct()
    r = B.ctl("sync", "pull", "a", "data")
    T.check(r["resumed_bytes"] > 0, "resumed after the restart: %s" % r)
    T.check(r["bytes_changed"] + r["resumed_bytes"] == 16 * MiB, "nothing acknowledged twice: %s" % r)
    assert_same("data")


def test_receiver_crash_at_commit():
    """Killed between the snapshot's intent and the pool snapshot, and
    after it: recovery rolls the half-made snapshot back, and the next pull
    commits it from the recorded progress without sending data again."""
    for point in ("sync-receive:intent", "sync-receive:pool"):
        s = big_change("data", 3, "crash-" + point.split(":")[1])
        B.kill()
        B.start(dict(ACK, AMBER_CRASH_AT=point))
        IB2 = B.ctl("info")
        trust(A, "b", IB2)
        B.ctl("sync", "pull", "a", "data", check=False)
        B.proc.wait(timeout=30)
        B.kill()
        restart_b()
        T.check(s["id"] not in snaps(B, "data"), "rolled back at " + point)
        r = B.ctl("sync", "pull", "a", "data")
        T.check_eq(r["bytes_changed"], 0, "nothing sent again after " + point)
        T.check_eq(r["resumed_bytes"], 3 * MiB, "all of it was acknowledged")
        assert_same("data")


def test_sender_snapshot_deleted_mid_transfer():
    s = big_change("data", 16, "doomed")
    p = Proxy(IA["peer_address"], rate=4 * MiB, hold_at=2 * MiB)
    via(p)
    try:
        pr = subprocess.Popen([os.path.join(T.BUILD, "amberctl"), "--socket", B.sock, "--json",
                               "sync", "pull", "a", "data"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        T.check(p.held.wait(120), "the transfer reached 2 MiB")
        A.ctl("snapshot", "delete", s["id"])
        p.release.set()
        _, err = pr.communicate(timeout=60)
        T.check(pr.returncode == 1 and "NOT_FOUND" in err and "deleted" in err, "clean error: " + err)
    finally:
        direct()
    T.check(s["id"] not in snaps(B, "data"), "not received")
    big_change("data", 2, "after-delete")
    B.ctl("sync", "pull", "a", "data")
    assert_same("data")


def test_receiver_pool_full():
    C = T.Amberd(size="300M", extra=["--peer-listen", "127.0.0.1:0"])
    IC = C.ctl("info")
    trust(C, "a", IA)
    trust(A, "c", IC)
    # Fill most of C's pool with a local volume, so the change cannot fit.
    C.ctl("volume", "create", "filler", "--size", "100M")
    fdev = C.ctl("volume", "attach", "filler")["device"]
    write(fdev, [(i * MiB, rnd.randbytes(MiB)) for i in range(100)])
    C.ctl("volume", "detach", "filler")
    A.ctl("volume", "create", "big", "--size", "200M")
    A.ctl("volume", "publish", "big", "--to", "*")
    dev = A.ctl("volume", "attach", "big")["device"]
    write(dev, [(0, rnd.randbytes(MiB))])
    s1 = A.ctl("snapshot", "create", "big", "--name", "b1")
    C.ctl("sync", "pull", "a", "big")
    before = snap_sha(C, "big", s1["id"])
    write(dev, [(i * MiB, rnd.randbytes(MiB)) for i in range(8, 8 + 160)])
    A.ctl("volume", "detach", "big")
    A.ctl("snapshot", "create", "big", "--name", "b2")
    C.ctl_fail("RESOURCE_EXHAUSTED", "sync", "pull", "a", "big")
    T.check_eq(list(snaps(C, "big")), [s1["id"]], "the replica is as it was")
    T.check_eq(snap_sha(C, "big", s1["id"]), before, "its snapshot unchanged")
    T.check_eq(C.ctl("volume", "show", "big")["state"], "ready", "and usable")
    C.stop()


# --- security ---------------------------------------------------------------

D = T.tmpdir()


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def ca_config():
    d = os.path.join(D, "ca")
    os.makedirs(os.path.join(d, "new"), exist_ok=True)
    open(os.path.join(d, "index.txt"), "a").close()
    with open(os.path.join(d, "serial"), "w") as f:
        f.write("1000\n")
    cfg = os.path.join(d, "ca.cnf")
    with open(cfg, "w") as f:
        f.write("[ca]\ndefault_ca=c\n[c]\ndir=%s\nnew_certs_dir=$dir/new\ndatabase=$dir/index.txt\n"
                "serial=$dir/serial\ndefault_md=sha256\npolicy=p\n[p]\ncommonName=supplied\n" % d)
    return cfg


def make_cert(name, expired=False):
    key, crt = os.path.join(D, name + ".key"), os.path.join(D, name + ".crt")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    if expired:
        start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 3 * 86400))
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 86400))
        csr = os.path.join(D, name + ".csr")
        openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=" + name)
        openssl("ca", "-batch", "-selfsign", "-keyfile", key, "-in", csr, "-out", crt,
                "-startdate", start, "-enddate", end, "-config", ca_config(), "-notext")
    else:
        openssl("req", "-x509", "-new", "-key", key, "-out", crt, "-subj", "/CN=" + name,
                "-days", "30")
    return key, crt


def fingerprint(crt):
    der = subprocess.run(["openssl", "x509", "-in", crt, "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der, check=True,
                         capture_output=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


def tls_try(cert=None):
    """Connect to A's peer port, send an HTTP/2 preface; True if the server
    talked back (it must not)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    if cert:
        ctx.load_cert_chain(cert[1], cert[0])
    s = socket.create_connection(("127.0.0.1", port(IA["peer_address"])), timeout=60)
    try:
        t = ctx.wrap_socket(s)
        t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        return len(t.recv(100)) > 0
    except (ssl.SSLError, OSError):
        return False
    finally:
        s.close()


def state(x):
    i = x.ctl("info")
    return i["volumes"], i["snapshots"], len(x.ctl("peer", "list"))


def test_refused_certificates():
    before = state(A)
    n0 = A.log().count("refused")
    T.check(not tls_try(), "no client certificate: refused")
    T.check(not tls_try(make_cert("stranger")), "unpinned certificate: refused")
    old = make_cert("old", expired=True)
    A.ctl("peer", "add", "old", "--address", "127.0.0.1:1", "--fingerprint", fingerprint(old[1]))
    T.check(not tls_try(old), "expired (pinned) certificate: refused")
    A.ctl("peer", "remove", "old")
    wait_until(lambda: A.log().count("refused") >= n0 + 3, 120, "refusals in the log")
    T.check_eq(state(A), before, "no state changed")


def test_unpublished_and_push_authorization():
    A.ctl("volume", "create", "secret", "--size", "16M")
    A.ctl("snapshot", "create", "secret", "--name", "s")
    B.ctl_fail("PERMISSION_DENIED", "sync", "pull", "a", "secret")
    B.ctl_fail("PERMISSION_DENIED", "sync", "pull", "a", "no-such-volume")
    before = state(B)
    A.ctl_fail("PERMISSION_DENIED", "sync", "push", "secret", "--to", "b")
    T.check_eq(state(B), before, "a refused push changes nothing")
    trust(B, "a", IA, "--allow-push")
    r = A.ctl("sync", "push", "secret", "--to", "b", "--as", "pushed")
    T.check_eq(r["snapshots_sent"], 1)
    T.check_eq([s["name"] for s in snaps(B, "pushed").values()], ["s"])
    trust(B, "a", IA)


def test_garbage_on_peer_port():
    def junk():
        for _ in range(20):
            try:
                s = socket.create_connection(("127.0.0.1", port(IA["peer_address"])), timeout=60)
                s.sendall(os.urandom(4096))
                s.close()
            except OSError:
                pass
    t = threading.Thread(target=junk)
    t.start()
    big_change("data", 4, "during-junk")
    B.ctl("sync", "pull", "a", "data")
    t.join()
    assert_same("data")


def test_subscription_follows():
    B.ctl("subscribe", "a", "data", "--as", "data", "--every", "1s")
    s = big_change("data", 1, "followed")
    wait_until(lambda: s["id"] in snaps(B, "data"), 120, "the subscription to pull")
    subs = B.ctl("subscription", "list")
    T.check_eq(subs[0]["lag"], "", "no lag")
    B.stop()
    restart_b()
    s = big_change("data", 1, "followed-after-restart")
    wait_until(lambda: s["id"] in snaps(B, "data"), 120, "the subscription after a restart")
    B.ctl("subscription", "remove", "a", "data")
    assert_same("data")


sys.exit(T.Tests().run([
    test_chain_of_ten,
    test_cut_connection_resumes,
    test_receiver_killed_mid_snapshot,
    test_receiver_crash_at_commit,
    test_sender_snapshot_deleted_mid_transfer,
    test_receiver_pool_full,
    test_refused_certificates,
    test_unpublished_and_push_authorization,
    test_garbage_on_peer_port,
    test_subscription_follows,
]))
