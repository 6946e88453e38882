#!/usr/bin/python3
"""The gRPC runtime against a real client (Debian's python3-grpcio) over
unix, TCP and mutual TLS, plus hostile raw HTTP/2 input (python3-h2).
Runs build/tests/rpc-testd, which serves proto/rpctest.proto."""
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
T.genproto()
import rpctest_pb2 as pb  # noqa: E402

D = T.tmpdir()
TESTD = os.path.join(T.BUILD, "tests", "rpc-testd")


def openssl(*args):
    subprocess.run(["openssl"] + list(args), check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)


def make_cert(name, days=30, expired=False):
    key, crt = os.path.join(D, name + ".key"), os.path.join(D, name + ".crt")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key)
    args = ["req", "-x509", "-new", "-key", key, "-out", crt, "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"]
    if expired:
        # Valid yesterday only.
        start = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 3 * 86400))
        end = time.strftime("%Y%m%d%H%M%SZ", time.gmtime(time.time() - 86400))
        csr = os.path.join(D, name + ".csr")
        openssl("req", "-new", "-key", key, "-out", csr, "-subj", "/CN=localhost")
        openssl("ca", "-batch", "-selfsign", "-keyfile", key, "-in", csr, "-out", crt,
                "-startdate", start, "-enddate", end, "-config", ca_config(), "-notext")
    else:
        args += ["-days", str(days)]
        openssl(*args)
    return key, crt


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


def fingerprint(crt):
    der = subprocess.run(["openssl", "x509", "-in", crt, "-pubkey", "-noout"], check=True,
                         capture_output=True).stdout
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "DER"], input=der, check=True,
                         capture_output=True).stdout
    return "sha256:" + hashlib.sha256(der).hexdigest()


srv_key, srv_crt = make_cert("server")
cli_key, cli_crt = make_cert("client")
bad_key, bad_crt = make_cert("stranger")
old_key, old_crt = make_cert("expired", expired=True)

SOCK = os.path.join(D, "rpc.sock")
proc = T.spawn([TESTD, "--unix", SOCK, "--tcp", "127.0.0.1:0", "--tls", "127.0.0.1:0",
                "--cert", srv_crt, "--key", srv_key, "--pin", fingerprint(cli_crt),
                "--pin", fingerprint(old_crt)],
               stdout=subprocess.PIPE)
ready = T.read_json_line(proc)
T.wait_for_socket(SOCK, proc)


def channel(kind="unix", cert=None):
    opts = [("grpc.max_send_message_length", 64 << 20), ("grpc.max_receive_message_length", 64 << 20)]
    if kind == "unix":
        ch = grpc.insecure_channel("unix://" + SOCK, options=opts)
    elif kind == "tcp":
        ch = grpc.insecure_channel("127.0.0.1:%d" % ready["tcp_port"], options=opts)
    else:
        root = open(srv_crt, "rb").read()
        if cert:
            creds = grpc.ssl_channel_credentials(root, open(cert[0], "rb").read(),
                                                 open(cert[1], "rb").read())
        else:
            creds = grpc.ssl_channel_credentials(root)
        ch = grpc.secure_channel("localhost:%d" % ready["tls_port"], creds, options=opts)
    T.cleanup.add("close channel", ch.close)
    return ch


def stub(ch):
    s = T.Stub(ch, "amber.test.v1.Test", pb)
    return {
        "Echo": s.unary("Echo", pb.EchoRequest, pb.EchoReply),
        "Sleep": s.unary("Sleep", pb.SleepRequest, pb.SleepReply),
        "Stats": s.unary("Stats", pb.StatsRequest, pb.StatsReply),
        "ServerStream": s.server_stream("ServerStream", pb.StreamRequest, pb.StreamItem),
        "ClientStream": s.client_stream("ClientStream", pb.StreamItem, pb.Sum),
        "Bidi": s.bidi("Bidi", pb.StreamItem, pb.StreamItem),
    }


U = stub(channel("unix"))


def wait_tag(tag, st=U):
    # The handler ends right after the client gives up; wait for it on the
    # server (bounded), asking the server rather than sleeping blindly.
    for _ in range(3000):
        r = st["Stats"](pb.StatsRequest(tag=tag), timeout=30)
        if r.tag_finished:
            return r
        st["Sleep"](pb.SleepRequest(ms=20), timeout=30)
    raise AssertionError("the handler of %s never finished" % tag)


def test_every_status_code_round_trips():
    for code in grpc.StatusCode:
        if code == grpc.StatusCode.OK:
            continue
        msg = "status %s: naïve ünïcode 100%% sure" % code.name
        e = T.expect_status(code, U["Echo"], pb.EchoRequest(status=code.value[0], message=msg), timeout=60)
        T.check_eq(e.details(), msg, "message of " + code.name)
    r = U["Echo"](pb.EchoRequest(payload=b"hello"), timeout=60)
    T.check_eq(r.payload, b"hello")


def test_3mib_both_ways():
    big = os.urandom(3 << 20)
    r = U["Echo"](pb.EchoRequest(payload=big), timeout=30)
    T.check(r.payload == big, "3 MiB echo differs")
    r = U["Echo"](pb.EchoRequest(reply_size=3 << 20), timeout=30)
    T.check_eq(len(r.payload), 3 << 20)
    T.check(r.payload[:4] == bytes([3, 10, 17, 24]), "reply content")


def test_message_over_limit_is_resource_exhausted():
    e = T.expect_status(grpc.StatusCode.RESOURCE_EXHAUSTED, U["Echo"],
                        pb.EchoRequest(payload=b"x" * (5 << 20)), timeout=30)
    T.check("limit" in e.details(), e.details())
    T.check_eq(U["Echo"](pb.EchoRequest(payload=b"after"), timeout=60).payload, b"after")


def wait_started(tag, st=U):
    for _ in range(2000):
        if st["Stats"](pb.StatsRequest(tag=tag), timeout=30).tag_started:
            return
        time.sleep(0.01)
    raise AssertionError("the call %s never reached its handler" % tag)


def test_64_concurrent_calls():
    # 64 calls meet at a barrier: each returns once all 64 are in their
    # handlers at the same time, which only a server running them
    # concurrently can do (serially, the first gives up after 60 s).
    futs = [U["Sleep"].future(pb.SleepRequest(ms=60000, barrier=64), timeout=120) for _ in range(64)]
    futs += [U["Echo"].future(pb.EchoRequest(payload=b"%d" % i), timeout=120) for i in range(64)]
    res = [f.result() for f in futs]
    T.check(all(not r.cancelled for r in res[:64]), "a sleep saw cancellation")
    T.check(all(r.barrier_reached for r in res[:64]), "the 64 calls did not run at once")
    T.check_eq([r.payload for r in res[64:]], [b"%d" % i for i in range(64)])


def test_deadline_reaches_handler_as_cancellation():
    T.expect_status(grpc.StatusCode.DEADLINE_EXCEEDED, U["Sleep"],
                    pb.SleepRequest(ms=60000, tag="deadline"), timeout=2)
    r = wait_tag("deadline")
    T.check(r.tag_cancelled, "the handler did not see the deadline as cancellation")


def test_client_cancel_reaches_handler():
    f = U["Sleep"].future(pb.SleepRequest(ms=60000, tag="cancel"), timeout=120)
    wait_started("cancel")
    f.cancel()
    r = wait_tag("cancel")
    T.check(r.tag_cancelled, "the handler did not see the client's cancel")


def test_cancel_mid_stream():
    it = U["ServerStream"](pb.StreamRequest(count=1000000, size=1024, tag="stream"), timeout=120)
    for i, item in enumerate(it):
        T.check_eq(item.seq, i)
        if i == 50:
            break
    it.cancel()
    r = wait_tag("stream")     # the handler returned: it stopped streaming
    T.check(r.tag_cancelled, "the stream's handler did not see the cancel")
    st = U["Stats"](pb.StatsRequest(), timeout=30).max_seq_sent
    T.check(st < 1000000 - 1, "the server streamed everything despite the cancel")


def test_server_stream_slow_reader_bounded():
    n, size = 10000, 16384        # 160 MiB in all
    it = U["ServerStream"](pb.StreamRequest(count=n, size=size), timeout=120)
    first = next(it)
    T.check_eq(first.seq, 0)
    U["Sleep"](pb.SleepRequest(ms=1000), timeout=60)   # the reader stalls
    st = U["Stats"](pb.StatsRequest(), timeout=60)
    # Flow control: the server can be ahead by the windows plus its queue,
    # a few MiB, never the whole 160 MiB.
    T.check(st.max_seq_sent < 2000, "server ran ahead: sent %d of %d" % (st.max_seq_sent, n))
    T.check(st.rss_bytes < 150 << 20, "server RSS %d" % st.rss_bytes)
    seq = 1
    for item in it:
        T.check_eq(item.seq, seq)
        T.check_eq(len(item.payload), size)
        seq += 1
    T.check_eq(seq, n)


def test_client_and_bidi_streams():
    items = [pb.StreamItem(seq=i, payload=b"y" * i) for i in range(1000)]
    s = U["ClientStream"](iter(items), timeout=30)
    T.check_eq((s.messages, s.bytes), (1000, sum(range(1000))))
    out = list(U["Bidi"](iter(items[:100]), timeout=30))
    T.check_eq([o.seq for o in out], list(range(100)))
    T.check_eq(out[99].payload, b"y" * 99)


def test_tcp():
    t = stub(channel("tcp"))
    T.check_eq(t["Echo"](pb.EchoRequest(payload=b"tcp"), timeout=60).payload, b"tcp")


def test_unix_peer_credentials():
    T.check_eq(U["Stats"](pb.StatsRequest(), timeout=60).peer_uid, os.getuid())


def test_mtls_pinned_client_is_served_with_identity():
    t = stub(channel("tls", (cli_key, cli_crt)))
    T.check_eq(t["Echo"](pb.EchoRequest(payload=b"tls"), timeout=60).payload, b"tls")
    big = os.urandom(3 << 20)
    T.check(t["Echo"](pb.EchoRequest(payload=big), timeout=30).payload == big, "3 MiB over TLS")
    T.check_eq(t["Stats"](pb.StatsRequest(), timeout=60).peer_fingerprint, fingerprint(cli_crt))
    s = t["ClientStream"](iter([pb.StreamItem(seq=i, payload=b"z" * 100) for i in range(500)]), timeout=30)
    T.check_eq(s.messages, 500)


def test_mtls_refuses_bad_clients():
    for name, cert in (("no certificate", None), ("unpinned", (bad_key, bad_crt)),
                       ("expired", (old_key, old_crt))):
        t = stub(channel("tls", cert))
        try:
            t["Echo"](pb.EchoRequest(payload=b"x"), timeout=60)
        except grpc.RpcError as e:
            T.check(e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED),
                    "%s: %s" % (name, e.code()))
            continue
        raise AssertionError("a client with %s was served" % name)
    T.check_eq(U["Echo"](pb.EchoRequest(payload=b"still"), timeout=60).payload, b"still")


def raw(data, read=True):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(15)
    s.connect(SOCK)
    if data:
        s.sendall(data)
    got = b""
    if read:
        try:
            while True:
                c = s.recv(65536)
                if not c:
                    break
                got += c
        except ConnectionResetError:
            pass    # a reset is a clean refusal too
        except socket.timeout:
            raise AssertionError("server did not close a bad connection")
    s.close()
    return got


def test_garbage_and_truncated_preface():
    raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" + os.urandom(4000))
    raw(os.urandom(100000))
    # Half a preface, then the client goes away.
    raw(b"PRI * HTTP/2.0\r\n", read=False)
    T.check_eq(U["Echo"](pb.EchoRequest(payload=b"alive"), timeout=60).payload, b"alive")


def h2_call(path, body, content_type="application/grpc"):
    import h2.config
    import h2.connection
    import h2.events
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(SOCK)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    sid = c.get_next_available_stream_id()
    c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", path),
                         (":authority", "localhost"), ("content-type", content_type), ("te", "trailers")])
    c.send_data(sid, body, end_stream=True)
    s.sendall(c.data_to_send())
    headers = {}
    ended = False
    while not ended:
        data = s.recv(65536)
        if not data:
            break
        for ev in c.receive_data(data):
            if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                headers.update({k.decode(): v.decode() for k, v in ev.headers})
            if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                ended = True
        s.sendall(c.data_to_send())
    s.close()
    return headers


def test_frame_claiming_4gib():
    h = h2_call("/amber.test.v1.Test/Echo", b"\x00\xff\xff\xff\xff" + b"x" * 100)
    T.check_eq(h.get("grpc-status"), "8", "status for a 4 GiB claim: %r" % h)


def test_unknown_method_and_wrong_content_type():
    T.expect_status(grpc.StatusCode.UNIMPLEMENTED,
                    channel("unix").unary_unary("/amber.test.v1.Test/Nope"), b"", timeout=60)
    h = h2_call("/amber.test.v1.Test/Echo", b"\x00\x00\x00\x00\x00", content_type="text/plain")
    T.check_eq(h.get(":status"), "415", "wrong content-type: %r" % h)
    h = h2_call("/amber.test.v1.Test/Echo", b"\x00\x00\x00\x00\x03abc")
    T.check_eq(h.get("grpc-status"), "3", "undecodable message: %r" % h)
    T.check_eq(U["Echo"](pb.EchoRequest(payload=b"ok"), timeout=60).payload, b"ok")


def test_graceful_shutdown_finishes_inflight_call():
    p = T.spawn([TESTD, "--unix", os.path.join(D, "g.sock")], stdout=subprocess.PIPE)
    T.read_json_line(p)
    g = stub(grpc.insecure_channel("unix://" + os.path.join(D, "g.sock")))
    f = g["Sleep"].future(pb.SleepRequest(ms=500, tag="graceful"), timeout=60)
    wait_started("graceful", g)
    p.terminate()
    T.check(not f.result().cancelled, "in-flight call was cut by a graceful stop")
    T.check_eq(p.wait(timeout=60), 0)
    T.check(not os.path.exists(os.path.join(D, "g.sock")), "socket left behind")


sys.exit(T.Tests().run([v for k, v in sorted(globals().items()) if k.startswith("test_")]))
