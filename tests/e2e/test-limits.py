#!/usr/bin/python3
"""Limits on what one client can make amberd and amber-csi spend: each
bound (amberd --help "Limits") is refused past it with RESOURCE_EXHAUSTED
(INVALID_ARGUMENT for a malformed request), changes nothing, and the
daemon keeps serving. Bounds: labels per snapshot, label key and value
sizes, label filters, snapshots per volume, volumes per namespace, pod
sockets per node, connections per pod socket, request size on the node
socket and on amber-csi's; and in the RPC runtime (through rpc-testd):
calls in flight, connections per socket, streams per connection."""
import os
import socket
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
try:
    import grpc
except ImportError:
    T.skip("python3-grpcio is not installed")
T.genproto()
import amber_pb2 as apb  # noqa: E402
import csi_pb2 as cpb  # noqa: E402

MiB = 1 << 20
RE = grpc.StatusCode.RESOURCE_EXHAUSTED
IA = grpc.StatusCode.INVALID_ARGUMENT

d = T.Amberd("btrfs", size="1G", extra=["--max-snapshots-per-volume", "3",
                                        "--max-volumes-per-namespace", "2", "--max-pod-socket-conns", "2",
                                        "--max-pod-sockets", "1", "--max-message", "64K"])
S = T.Stub(d.channel(), "amber.v1.Amber", apb)
create_volume = S.unary("CreateVolume", apb.CreateVolumeRequest, apb.Volume)
create_snapshot = S.unary("CreateSnapshot", apb.CreateSnapshotRequest, apb.Snapshot)
list_snapshots = S.unary("ListSnapshots", apb.ListSnapshotsRequest, apb.ListSnapshotsResponse)
delete_snapshot = S.unary("DeleteSnapshot", apb.SnapshotRef, apb.Empty)
list_volumes = S.unary("ListVolumes", apb.ListVolumesRequest, apb.ListVolumesResponse)
open_scoped = S.unary("OpenScopedSocket", apb.OpenScopedSocketRequest, apb.OpenScopedSocketResponse)
close_scoped = S.unary("CloseScopedSocket", apb.CloseScopedSocketRequest, apb.Empty)
T.check("--max-snapshots-per-volume" in T.subprocess.run([os.path.join(T.BUILD, "amberd"), "--help"],
                                                         capture_output=True, text=True).stdout,
        "the limits are in --help")
create_volume(apb.CreateVolumeRequest(name="v", size_bytes=16 * MiB), timeout=60)


def snaps(vol="v"):
    return sorted(s.name for s in list_snapshots(apb.ListSnapshotsRequest(volume=vol), timeout=30).snapshots)


def labels(n, klen=4, vlen=4):
    return [apb.Label(key=("k%d" % i).ljust(klen, "x"), value="v" * vlen) for i in range(n)]


def test_labels_per_snapshot_and_sizes():
    before = snaps()
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="l65", labels=labels(65)),
                        timeout=30)
    T.check("64" in e.details(), e.details())
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="lk", labels=[apb.Label(key="k" * 129, value="")]), timeout=30)
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="lv", labels=[apb.Label(key="k", value="v" * 1025)]), timeout=30)
    T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
        volume="v", name="le", labels=[apb.Label(key="", value="x")]), timeout=30)
    T.check_eq(snaps(), before, "a refused snapshot was made")
    # At the bounds: fine (64 labels, 128-byte keys, 1024-byte values fit 64K).
    s = create_snapshot(apb.CreateSnapshotRequest(volume="v", name="l64", labels=labels(64, 128, 100)),
                        timeout=30)
    T.check_eq(len(s.labels), 64)
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="lmax", labels=[
        apb.Label(key="k" * 128, value="v" * 1024)]), timeout=30)
    for n in ("l64", "lmax"):
        delete_snapshot(apb.SnapshotRef(snapshot="v@" + n), timeout=30)


def test_label_filters():
    T.expect_status(RE, list_snapshots, apb.ListSnapshotsRequest(volume="v", labels=labels(17)), timeout=30)
    list_snapshots(apb.ListSnapshotsRequest(volume="v", labels=labels(16)), timeout=30)


def test_snapshots_per_volume():
    for i in range(3):
        create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s%d" % i), timeout=30)
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="s3"), timeout=30)
    T.check("max-snapshots-per-volume" in e.details(), e.details())
    T.check_eq(snaps(), ["s0", "s1", "s2"], "the refused snapshot was made")
    # An idempotent repeat of an existing one is not a new snapshot.
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s2"), timeout=30)
    delete_snapshot(apb.SnapshotRef(snapshot="v@s0"), timeout=30)
    create_snapshot(apb.CreateSnapshotRequest(volume="v", name="s3"), timeout=30)
    for n in ("s1", "s2", "s3"):
        delete_snapshot(apb.SnapshotRef(snapshot="v@" + n), timeout=30)


def test_snapshots_per_volume_racing():
    """Creates racing for a volume's last snapshots: the bound is counted
    under the volume's lock, so a create held between its checks and that
    lock (AMBER_HOLD_AT) while others take the room left finds none
    (RESOURCE_EXHAUSTED), and the volume never has more than the bound."""
    fifo = os.path.join(T.tmpdir("hold-"), "fifo")
    os.mkfifo(fifo)
    d2 = T.Amberd("btrfs", size="1G", extra=["--max-snapshots-per-volume", "2"],
                  env={"AMBER_HOLD_AT": "snapshot-create:lock", "AMBER_HOLD_FIFO": fifo})
    S2 = T.Stub(d2.channel(), "amber.v1.Amber", apb)
    create = S2.unary("CreateSnapshot", apb.CreateSnapshotRequest, apb.Snapshot)
    S2.unary("CreateVolume", apb.CreateVolumeRequest, apb.Volume)(
        apb.CreateVolumeRequest(name="w", size_bytes=16 * MiB), timeout=60)
    held = {}

    def held_create():
        try:
            held["snapshot"] = create(apb.CreateSnapshotRequest(volume="w", name="held"), timeout=300)
        except grpc.RpcError as e:
            held["error"] = e
    t = threading.Thread(target=held_create, daemon=True)
    t.start()
    # Our open for writing returns once amberd has opened the FIFO: the
    # first create is then waiting just before the volume's lock.
    w = {}
    opener = threading.Thread(target=lambda: w.update(fd=os.open(fifo, os.O_WRONLY)), daemon=True)
    opener.start()
    opener.join(120)
    if "fd" not in w:
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))    # let the opener go
        raise AssertionError("the first create never reached its hold point: %s" % held)
    try:
        for n in ("a", "b"):
            create(apb.CreateSnapshotRequest(volume="w", name=n), timeout=60)
        e = T.expect_status(RE, create, apb.CreateSnapshotRequest(volume="w", name="c"), timeout=60)
        T.check("max-snapshots-per-volume" in e.details(), e.details())
    finally:
        os.write(w["fd"], b"x")
        os.close(w["fd"])
    t.join(300)
    T.check("snapshot" not in held, "the held create made a third snapshot past the bound of 2")
    T.check_eq(held["error"].code() if "error" in held else None, RE, "the held create's status")
    T.check("max-snapshots-per-volume" in held["error"].details(), held["error"].details())
    got = S2.unary("ListSnapshots", apb.ListSnapshotsRequest, apb.ListSnapshotsResponse)(
        apb.ListSnapshotsRequest(volume="w"), timeout=30)
    T.check_eq(sorted(x.name for x in got.snapshots), ["a", "b"], "the volume's snapshots")
    rc = d2.stop()
    log = d2.log()
    T.check("AMBER_HOLD_AT=snapshot-create:lock" in log, "the hold point was reached")
    T.check("Sanitizer" not in log and "runtime error" not in log, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")


def test_reserved_labels():
    """Labels amber writes itself (amber.csi.dev/..., amber.archive) are
    refused with INVALID_ARGUMENT naming the prefix in a user's
    CreateSnapshot and LabelSnapshot; amber-csi's group snapshot
    (CreateSnapshots, csi/group.c) still sets its amber.csi.dev/group."""
    create_snapshots = S.unary("CreateSnapshots", apb.CreateSnapshotsRequest, apb.CreateSnapshotsResponse)
    label_snapshot = S.unary("LabelSnapshot", apb.LabelSnapshotRequest, apb.Snapshot)
    before = snaps()
    for key, prefix in (("amber.csi.dev/group", "amber.csi.dev/"), ("amber.csi.dev/x", "amber.csi.dev/"),
                        ("amber.archive", "amber.archive")):
        e = T.expect_status(IA, create_snapshot, apb.CreateSnapshotRequest(
            volume="v", name="own", labels=[apb.Label(key="k", value="v"), apb.Label(key=key, value="g")]),
            timeout=30)
        T.check(key in e.details() and "prefix " + prefix + " " in e.details(), e.details())
    T.check_eq(snaps(), before, "a refused snapshot was made")
    gid = "group-" + "0" * 32
    s = create_snapshots(apb.CreateSnapshotsRequest(snapshots=[apb.CreateSnapshotRequest(
        volume="v", name="member", labels=[apb.Label(key="amber.csi.dev/group", value=gid)])]),
        timeout=30).snapshots[0]
    T.check_eq({x.key: x.value for x in s.labels}, {"amber.csi.dev/group": gid}, "amber-csi's group label")
    for q in (apb.LabelSnapshotRequest(snapshot=s.id, set=[apb.Label(key="amber.csi.dev/group", value="x")]),
              apb.LabelSnapshotRequest(snapshot=s.id, remove=["amber.csi.dev/group"]),
              apb.LabelSnapshotRequest(snapshot=s.id, set=[apb.Label(key="amber.archive", value="main")])):
        e = T.expect_status(IA, label_snapshot, q, timeout=30)
        T.check("is amber's own" in e.details(), e.details())
    # Near misses are the user's.
    s = label_snapshot(apb.LabelSnapshotRequest(snapshot=s.id, set=[apb.Label(key="amber.csi.devx", value="1"),
                                                                    apb.Label(key="csi.dev/amber", value="2")]),
                       timeout=30)
    T.check_eq({x.key: x.value for x in s.labels},
               {"amber.csi.dev/group": gid, "amber.csi.devx": "1", "csi.dev/amber": "2"}, "labels")
    delete_snapshot(apb.SnapshotRef(snapshot=s.id), timeout=30)


def test_volumes_per_namespace():
    for i in range(2):
        create_volume(apb.CreateVolumeRequest(name="ns-a-%d" % i, size_bytes=4 * MiB, pvc_namespace="a",
                                              pvc_name="p%d" % i), timeout=60)
    e = T.expect_status(RE, create_volume, apb.CreateVolumeRequest(
        name="ns-a-2", size_bytes=4 * MiB, pvc_namespace="a", pvc_name="p2"), timeout=60)
    T.check("max-volumes-per-namespace" in e.details(), e.details())
    names = {v.name for v in list_volumes(apb.ListVolumesRequest(), timeout=30).volumes}
    T.check("ns-a-2" not in names, "the refused volume exists")
    # Other namespaces, and volumes of no namespace, are not counted.
    create_volume(apb.CreateVolumeRequest(name="ns-b-0", size_bytes=4 * MiB, pvc_namespace="b",
                                          pvc_name="p0"), timeout=60)
    create_volume(apb.CreateVolumeRequest(name="plain", size_bytes=4 * MiB), timeout=60)
    # The same request again is idempotent, not a third volume.
    create_volume(apb.CreateVolumeRequest(name="ns-a-1", size_bytes=4 * MiB, pvc_namespace="a",
                                          pvc_name="p1"), timeout=60)


def test_pod_sockets_per_node():
    t1, t2 = T.tmpdir("pod1-"), T.tmpdir("pod2-")
    open_scoped(apb.OpenScopedSocketRequest(target_path=t1, namespace="a"), timeout=30)
    e = T.expect_status(RE, open_scoped, apb.OpenScopedSocketRequest(target_path=t2, namespace="a"), timeout=30)
    T.check("max-pod-sockets" in e.details(), e.details())
    T.check(not os.path.exists(os.path.join(t2, "api.sock")), "the refused socket exists")
    close_scoped(apb.CloseScopedSocketRequest(target_path=t1), timeout=30)
    open_scoped(apb.OpenScopedSocketRequest(target_path=t2, namespace="a"), timeout=30)
    close_scoped(apb.CloseScopedSocketRequest(target_path=t2), timeout=30)


def h2_conn(path):
    """A raw HTTP/2 connection that the server has accepted (its SETTINGS
    arrived): it holds one of the socket's connections."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(path)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
    T.check(len(s.recv(9)) > 0, "the server accepted the connection")
    T.cleanup.add("close raw connection", s.close)
    return s


def fresh_channel(path):
    ch = grpc.insecure_channel("unix://" + path, options=[("grpc.use_local_subchannel_pool", 1)])
    T.cleanup.add("close channel", ch.close)
    return ch


def until(what, fn, n=3000):
    """Call fn until it returns truthy (observed state, bounded)."""
    for _ in range(n):
        v = fn()
        if v:
            return v
        T.time.sleep(0.01)
    raise AssertionError("never: " + what)


def test_connections_per_pod_socket():
    t = T.tmpdir("pod-conns-")
    sock = open_scoped(apb.OpenScopedSocketRequest(target_path=t, namespace="a"), timeout=30).socket_path
    raws = [h2_conn(sock) for _ in range(2)]
    info = T.Stub(fresh_channel(sock), "amber.v1.Amber", apb).unary("GetInfo", apb.GetInfoRequest,
                                                                     apb.GetInfoResponse)
    e = T.expect_status(RE, info, apb.GetInfoRequest(), timeout=30)
    T.check("too many connections" in e.details(), e.details())
    for r in raws:
        r.close()

    def served():
        try:
            T.Stub(fresh_channel(sock), "amber.v1.Amber", apb).unary(
                "GetInfo", apb.GetInfoRequest, apb.GetInfoResponse)(apb.GetInfoRequest(), timeout=30)
            return True
        except grpc.RpcError as e:
            T.check_eq(e.code(), RE, e.details())
            return False
    until("a freed connection is served again", served)
    close_scoped(apb.CloseScopedSocketRequest(target_path=t), timeout=30)


def test_request_size_node_socket():
    before = snaps()
    big = [apb.Label(key="k%d" % i, value="v" * 1024) for i in range(64)]     # 66 KB > 64K
    e = T.expect_status(RE, create_snapshot, apb.CreateSnapshotRequest(volume="v", name="big", labels=big),
                        timeout=30)
    T.check("limit" in e.details(), e.details())
    T.check_eq(snaps(), before, "the refused request made a snapshot")
    T.check_eq(snaps(), before, "the daemon serves after it")


def test_request_size_csi():
    sock = os.path.join(d.dir, "csi.sock")
    p = T.spawn([os.path.join(T.BUILD, "amber-csi"), "--endpoint", "unix://" + sock, "--node-id", "n1",
                 "--amberd", d.sock, "--log-level", "warn"])
    T.wait_for_socket(sock, p)
    ch = grpc.insecure_channel("unix://" + sock)
    T.cleanup.add("close csi channel", ch.close)
    C = T.Stub(ch, "csi.v1.Controller", cpb)
    cs = C.unary("CreateSnapshot", cpb.CreateSnapshotRequest, cpb.CreateSnapshotResponse)
    vid = [v.id for v in list_volumes(apb.ListVolumesRequest(), timeout=30).volumes if v.name == "v"][0]
    q = cpb.CreateSnapshotRequest(source_volume_id=vid, name="snap-huge")
    q.parameters["x"] = "y" * (5 * MiB)
    e = T.expect_status(RE, cs, q, timeout=60)
    T.check("limit" in e.details(), e.details())
    # Labels through CSI parameters: the node's bound applies.
    q = cpb.CreateSnapshotRequest(source_volume_id=vid, name="snap-labels")
    for i in range(65):
        q.parameters["label.amber.csi.dev/k%d" % i] = "v"
    T.expect_status(RE, cs, q, timeout=60)
    T.check_eq(snaps(), [], "a refused CSI snapshot exists")
    Id = T.Stub(ch, "csi.v1.Identity", cpb)
    Id.unary("Probe", cpb.ProbeRequest, cpb.ProbeResponse)(cpb.ProbeRequest(), timeout=30)


# --- the RPC runtime's bounds, through rpc-testd --------------------------------

def testd(*args):
    import subprocess
    sock = os.path.join(T.tmpdir("testd-"), "t.sock")
    p = T.spawn([os.path.join(T.BUILD, "tests", "rpc-testd"), "--unix", sock] + list(args),
                stdout=subprocess.PIPE)
    T.read_json_line(p)
    import rpctest_pb2 as tpb
    st = T.Stub(fresh_channel(sock), "amber.test.v1.Test", tpb)
    return sock, tpb, st


def test_calls_in_flight():
    sock, tpb, st = testd("--max-calls", "5")
    sleep = st.unary("Sleep", tpb.SleepRequest, tpb.SleepReply)
    echo = st.unary("Echo", tpb.EchoRequest, tpb.EchoReply)
    stats = st.unary("Stats", tpb.StatsRequest, tpb.StatsReply)
    # Five calls that wait at a barrier of six stay in flight; the first
    # four are seen in their handlers (Stats is the fifth call then).
    futs = [sleep.future(tpb.SleepRequest(ms=120000, barrier=6, tag="c%d" % i), timeout=180) for i in range(4)]
    def started(tag):
        try:
            return stats(tpb.StatsRequest(tag=tag), timeout=30).tag_started
        except grpc.RpcError as e:
            # The previous Stats may still count until its handler returns.
            T.check_eq(e.code(), RE, e.details())
            return False
    for i in range(4):
        until("call %d in its handler" % i, lambda: started("c%d" % i))
    futs.append(sleep.future(tpb.SleepRequest(ms=120000, barrier=6, tag="c4"), timeout=180))

    def refused():
        try:
            echo(tpb.EchoRequest(payload=b"x"), timeout=30)
            return None
        except grpc.RpcError as e:
            return [e]      # (an RpcError may be falsy)
    e = until("the sixth call refused", refused)[0]
    T.check_eq(e.code(), RE, e.details())
    T.check("too many calls" in e.details(), e.details())
    for f in futs:
        f.cancel()
    until("calls served again once the five are gone", lambda: refused() is None)


def test_connections_per_socket():
    sock, tpb, st = testd("--max-conns", "3")
    raws = [h2_conn(sock) for _ in range(3)]
    echo = T.Stub(fresh_channel(sock), "amber.test.v1.Test", tpb).unary("Echo", tpb.EchoRequest,
                                                                          tpb.EchoReply)
    e = T.expect_status(RE, echo, tpb.EchoRequest(payload=b"x"), timeout=30)
    T.check("too many connections" in e.details(), e.details())
    # A place freed is taken by the refused connection the client keeps.
    raws.pop(0).close()

    def echoed():
        try:
            return echo(tpb.EchoRequest(payload=b"x"), timeout=30).payload == b"x"
        except grpc.RpcError as e:
            T.check_eq(e.code(), RE, e.details())
            return False
    until("the refused connection served once a place is free", echoed)
    # Past the bound and its few refusing connections, a connection is closed.
    extra = []
    for _ in range(8):
        s2 = socket.socket(socket.AF_UNIX)
        s2.settimeout(60)
        s2.connect(sock)
        T.cleanup.add("close raw connection", s2.close)
        extra.append(s2)
    closed = 0
    for s2 in extra:
        try:
            s2.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            closed += s2.recv(9) == b""
        except OSError:
            closed += 1
    T.check(closed >= 4, "connections beyond the refusing ones are closed: %d of 8" % closed)
    for r in raws + extra:
        r.close()


def test_streams_per_connection():
    import h2.config
    import h2.connection
    import h2.events
    import h2.errors
    sock, tpb, st = testd("--max-streams", "2")
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(sock)
    T.cleanup.add("close raw connection", s.close)
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    c.initiate_connection()
    body = tpb.SleepRequest(ms=60000).SerializeToString()
    ids = []
    for _ in range(3):      # sent before the server's SETTINGS is read: past its bound
        sid = c.get_next_available_stream_id()
        c.send_headers(sid, [(":method", "POST"), (":scheme", "http"), (":path", "/amber.test.v1.Test/Sleep"),
                             (":authority", "localhost"), ("content-type", "application/grpc"), ("te", "trailers")])
        c.send_data(sid, b"\x00" + len(body).to_bytes(4, "big") + body, end_stream=True)
        ids.append(sid)
    s.sendall(c.data_to_send())
    reset = None
    while reset is None:
        data = s.recv(65536)
        T.check(data, "the server closed the connection")
        for ev in c.receive_data(data):
            if isinstance(ev, h2.events.StreamReset):
                reset = ev
        s.sendall(c.data_to_send())
    T.check_eq((reset.stream_id, reset.error_code), (ids[2], h2.errors.ErrorCodes.REFUSED_STREAM),
               "the third stream is refused")
    s.close()


def test_daemon_stops_clean():
    rc = d.stop()
    log = d.log()
    T.check("Sanitizer" not in log and "runtime error" not in log, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")


sys.exit(T.Tests().run([
    test_labels_per_snapshot_and_sizes,
    test_label_filters,
    test_snapshots_per_volume,
    test_snapshots_per_volume_racing,
    test_reserved_labels,
    test_volumes_per_namespace,
    test_pod_sockets_per_node,
    test_connections_per_pod_socket,
    test_request_size_node_socket,
    test_request_size_csi,
    test_calls_in_flight,
    test_connections_per_socket,
    test_streams_per_connection,
    test_daemon_stops_clean,
]))
