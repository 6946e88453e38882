#!/usr/bin/python3
"""The peer port in cluster mode logs only what it really refuses: a
cluster member's CA-signed certificate (no pin) is accepted without the
"refused a certificate that is not pinned" warning the pin lookup used to
log for it, while a stranger's certificate (neither pinned nor signed by
the CA) is refused and logged."""
import os
import socket
import ssl
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")

D = T.tmpdir("peer-ca-")
CA = os.path.join(D, "ca")
subprocess.run([os.path.join(T.BUILD, "amberctl"), "cluster", "init-ca", "--out", CA], check=True,
               capture_output=True)
REG = os.path.join(D, "peers")
os.makedirs(REG)
ARCHIVES = os.path.join(D, "archives.conf")
open(ARCHIVES, "w").close()
REFUSED = "refused a certificate that is not pinned"


def node(name, extra=()):
    return T.Amberd(size="1G", extra=["--node-id", name, "--peer-listen", "127.0.0.1:0",
                                      "--cluster-ca", os.path.join(CA, "ca.crt"),
                                      "--cluster-ca-key", os.path.join(CA, "ca.key"),
                                      "--cluster-registry", "dir:" + REG, "--archives-file", ARCHIVES]
                    + list(extra))


def wait_until(cond, what, timeout=60):
    """Wait for an event the test caused (not for time to pass)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def test_member_accepted_quietly_stranger_refused_loudly():
    A = node("n1")
    A.ctl("volume", "create", "v", "--size", "16M")
    s = A.ctl("snapshot", "create", "v", "--name", "s")
    port = int(A.ctl("info")["peer_address"].rsplit(":", 1)[1])
    # n2 knows n1 by address only ("-": no pin): both sides trust the CA.
    pf = os.path.join(D, "peers.txt")
    with open(pf, "w") as f:
        f.write("n1 127.0.0.1:%d -\n" % port)
    B = node("n2", ["--peers-file", pf])
    r = B.ctl("sync", "pull", "n1", s["id"])
    T.check_eq(r["snapshots_received"], 1, "n2 pulled n1's snapshot as a cluster member")
    T.check(REFUSED not in A.log(), "no refusal logged for an accepted member: %s" %
            [x for x in A.log().splitlines() if REFUSED in x])
    # A stranger: a self-signed certificate nobody pinned, not the CA's.
    key, crt = os.path.join(D, "x.key"), os.path.join(D, "x.crt")
    subprocess.run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", crt, "-subj", "/CN=stranger", "-days", "30"],
                   check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.set_alpn_protocols(["h2"])
    ctx.load_cert_chain(crt, key)
    talked = False
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sk:
        try:
            t = ctx.wrap_socket(sk)
            t.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            talked = len(t.recv(100)) > 0
        except (ssl.SSLError, OSError):
            pass
    T.check(not talked, "the stranger was refused")
    wait_until(lambda: REFUSED in A.log(), "the stranger's refusal in the log")
    line = [x for x in A.log().splitlines() if REFUSED in x][0]
    T.check("nor signed by the --tls-ca" in line, "the refusal says why: " + line)
    T.check_eq(A.stop(), 0)
    T.check_eq(B.stop(), 0)


sys.exit(T.Tests().run([test_member_accepted_quietly_stranger_refused_loudly]))
