"""Shared helpers of the changed-block-tracking tests (test-cbt.py and
test-cluster-cbt.py): direct writes at known offsets, the checked tuples
of a SnapshotMetadata stream, and a fake amberd side serving GetSnapshot
and a Diff of N_EXT extents generated on the fly.

Import it after T.genproto() (it needs the generated amber_pb2 and csi_pb2)."""
import mmap
import os
import threading
import uuid

import grpc

import amber_pb2 as apb
import amber_test as T
import csi_pb2 as pb

N_EXT = 4_000_000
PER_MSG = 4096
FAKE_SIZE = N_EXT * 8192
FAKE_ID = str(uuid.uuid4())


def pwrite_direct(dev, off, data):
    """One O_DIRECT write (aligned buffer), made durable."""
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        buf = mmap.mmap(-1, len(data))
        buf.write(data)
        os.pwritev(fd, [buf], off)
        os.fsync(fd)
    finally:
        os.close(fd)


def blocks_of(ranges):
    """The set of 4 KiB blocks a list of (offset, length) covers."""
    out = set()
    for off, n in ranges:
        out.update(range(off // 4096, (off + n + 4095) // 4096))
    return out


def tuples(msgs, cap):
    """The tuples of a stream of a volume of cap bytes, checked against the
    spec's rules."""
    out = []
    for m in msgs:
        T.check_eq(m.block_metadata_type, pb.VARIABLE_LENGTH, "block_metadata_type")
        T.check_eq(m.volume_capacity_bytes, cap, "volume_capacity_bytes")
        for b in m.block_metadata:
            T.check(b.size_bytes > 0, "a tuple of size 0")
            T.check(not out or out[-1][0] + out[-1][1] <= b.byte_offset,
                    "tuples overlap or go backwards: %r then %r" % (out[-1:], b))
            T.check(b.byte_offset + b.size_bytes <= cap, "a tuple beyond the capacity")
            out.append((b.byte_offset, b.size_bytes))
    return out


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def varint(n):
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7f) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def diff_message(first):
    """A DiffResponse of PER_MSG extents (offset k*8 KiB, 4 KiB), encoded
    by hand: the Python protobuf runtime would take minutes for 4M."""
    parts = []
    for k in range(first, min(first + PER_MSG, N_EXT)):
        e = b"\x08" + varint(k * 8192) + b"\x10\x80\x20"
        parts.append(b"\x0a" + varint(len(e)) + e)
    return b"".join(parts)


class FakeDiff:
    """GetSnapshot of FAKE_ID and its Diff of N_EXT extents; sent (under
    lock) counts the extents handed to gRPC, done is set at the end,
    cancelled when the client went away first."""

    def __init__(self):
        self.sent = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.cancelled = threading.Event()
        self.streams = 0

    def get_snapshot(self, req, ctx):
        if req.snapshot != FAKE_ID:
            ctx.abort(grpc.StatusCode.NOT_FOUND, "snapshot %s not found" % req.snapshot)
        return apb.Snapshot(id=FAKE_ID, name="big", volume_id=str(uuid.uuid4()), state="ready",
                            size_bytes=FAKE_SIZE, created_ns=1)

    def diff(self, req, ctx):
        self.streams += 1
        self.sent = 0
        self.done.clear()
        ctx.add_callback(lambda: None if self.done.is_set() else self.cancelled.set())
        for first in range(0, N_EXT, PER_MSG):
            if not ctx.is_active():
                self.cancelled.set()
                return
            yield diff_message(first)
            with self.lock:
                self.sent = min(first + PER_MSG, N_EXT)
        self.done.set()

    def handlers(self, service):
        """The generic handler of service (amber.v1.Amber or ClusterPeer)."""
        return grpc.method_handlers_generic_handler(service, {
            "GetSnapshot": grpc.unary_unary_rpc_method_handler(
                self.get_snapshot, request_deserializer=apb.SnapshotRef.FromString,
                response_serializer=apb.Snapshot.SerializeToString),
            "Diff": grpc.unary_stream_rpc_method_handler(
                self.diff, request_deserializer=apb.DiffRequest.FromString,
                response_serializer=lambda b: b),
        })


class H2Books:
    """The HTTP/2 flow-control books of one connection, kept from the frames
    going by in plain text: the window the client granted on the connection
    and on each stream (SETTINGS, WINDOW_UPDATE) less the DATA the server
    sent. When a stream's window is used up the server cannot send another
    byte on it until the client grants more: "the producer is blocked" as a
    fact, not as a pause."""

    PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

    def __init__(self):
        self.lock = threading.Lock()
        self.conn, self.init, self.streams, self.sent_on = 65535, 65535, {}, set()
        self.up_buf, self.down_buf, self.preface = b"", b"", True

    @staticmethod
    def frames(buf):
        """Complete frames at the front of buf: [(type, flags, stream, payload)], rest."""
        out = []
        while len(buf) >= 9:
            n = int.from_bytes(buf[0:3], "big")
            if len(buf) < 9 + n:
                break
            out.append((buf[3], buf[4], int.from_bytes(buf[5:9], "big") & 0x7fffffff, buf[9:9 + n]))
            buf = buf[9 + n:]
        return out, buf

    def client_sent(self, d):
        self.up_buf += d
        if self.preface:
            if len(self.up_buf) < len(self.PREFACE):
                return
            self.up_buf, self.preface = self.up_buf[len(self.PREFACE):], False
        frames, self.up_buf = self.frames(self.up_buf)
        with self.lock:
            for typ, flags, sid, pl in frames:
                if typ == 4 and not flags & 1:          # SETTINGS
                    for i in range(0, len(pl) - 5, 6):
                        if int.from_bytes(pl[i:i + 2], "big") == 4:     # INITIAL_WINDOW_SIZE
                            v = int.from_bytes(pl[i + 2:i + 6], "big")
                            for k in self.streams:
                                self.streams[k] += v - self.init
                            self.init = v
                elif typ == 1 and sid not in self.streams:     # HEADERS: a stream opens
                    self.streams[sid] = self.init
                elif typ == 8:                                  # WINDOW_UPDATE
                    inc = int.from_bytes(pl[0:4], "big") & 0x7fffffff
                    if sid == 0:
                        self.conn += inc
                    elif sid in self.streams:
                        self.streams[sid] += inc

    def server_sent(self, d):
        self.down_buf += d
        frames, self.down_buf = self.frames(self.down_buf)
        with self.lock:
            for typ, flags, sid, pl in frames:
                if typ == 0 and sid in self.streams:           # DATA
                    self.sent_on.add(sid)
                    self.conn -= len(pl)
                    self.streams[sid] -= len(pl)

    def blocked(self):
        """Whether the server has used up the window of a stream it sends on."""
        with self.lock:
            return any(min(self.conn, self.streams[sid]) <= 0 for sid in self.sent_on)
