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
