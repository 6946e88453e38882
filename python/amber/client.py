"""The client: a thin layer over gRPC (grpcio) and the amber.v1 messages,
with typed dataclasses and one exception class per gRPC status.

No generated gRPC stubs are needed: methods are called by path on a plain
channel (amber_pb2_grpc ships with the package for those who want them)."""
from __future__ import annotations

import dataclasses
import datetime
import os
import time
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import grpc

from ._pb import pb

DEFAULT_SOCKET = "/amber/api.sock"


# --- errors -------------------------------------------------------------------

class AmberError(Exception):
    """A failed call: .code is the grpc.StatusCode, .details the server's message."""

    def __init__(self, code, details, method=""):
        super().__init__("%s: %s" % (code.name if code else "ERROR", details))
        self.code = code
        self.details = details
        self.method = method


class NotFound(AmberError):
    """No such volume or snapshot (or not in this socket's namespace)."""


class PermissionDenied(AmberError):
    """Not allowed on this socket (e.g. deleting through a pod's socket)."""


class AlreadyExists(AmberError):
    pass


class InvalidArgument(AmberError):
    pass


class FailedPrecondition(AmberError):
    pass


class Aborted(AmberError):
    """Another operation holds the volume; try again."""


class Unavailable(AmberError):
    """amberd is not reachable (the socket is gone or the daemon restarts)."""


class Unimplemented(AmberError):
    """Not offered on this socket (a pod's socket offers a subset)."""


class DeadlineExceeded(AmberError):
    pass


class ResourceExhausted(AmberError):
    pass


_ERRORS = {
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.ABORTED: Aborted,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.UNIMPLEMENTED: Unimplemented,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}


def _wrap(e, method):
    cls = _ERRORS.get(e.code(), AmberError)
    return cls(e.code(), e.details() or "", method)


def _time(ns: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(ns / 1e9, tz=datetime.timezone.utc)


# --- objects ------------------------------------------------------------------

@dataclasses.dataclass
class Volume:
    """A volume as this socket shows it (pvc/NAME on a pod's socket)."""
    id: str
    name: str
    size_bytes: int
    state: str
    pvc_namespace: str
    pvc_name: str
    snapshots: int
    allocated_bytes: int = 0
    fs_type: str = ""
    created_ns: int = 0

    @classmethod
    def _from(cls, m) -> "Volume":
        return cls(m.id, m.name, m.size_bytes, m.state, m.pvc_namespace, m.pvc_name, m.snapshots,
                   m.allocated_bytes, m.fs_type, m.created_ns)


@dataclasses.dataclass
class Snapshot:
    """A snapshot: id, name, its volume (as this socket names it), time,
    labels, state ("ready", ...)."""
    id: str
    name: str
    volume: str
    volume_id: str
    created_ns: int
    labels: Dict[str, str]
    state: str
    size_bytes: int
    parent_id: str = ""
    k8s_namespace: str = ""
    k8s_name: str = ""

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    @property
    def created(self) -> datetime.datetime:
        """created_ns as an aware UTC datetime."""
        return _time(self.created_ns)

    @classmethod
    def _from(cls, m) -> "Snapshot":
        return cls(m.id, m.name, m.volume_name, m.volume_id, m.created_ns,
                   {lb.key: lb.value for lb in m.labels}, m.state, m.size_bytes,
                   m.parent_id, m.k8s_namespace, m.k8s_name)


@dataclasses.dataclass
class HistoryEntry:
    """One snapshot in a volume's history, with the bytes changed since the
    previous one (the first: its allocated bytes)."""
    snapshot: Snapshot
    changed_bytes: int
    method: str

    def as_dict(self) -> dict:
        """A flat row (time, name, id, changed_bytes, labels, ...) for
        pandas.DataFrame(rows) or a table."""
        s = self.snapshot
        return {"time": s.created, "name": s.name, "id": s.id, "volume": s.volume,
                "changed_bytes": self.changed_bytes, "method": self.method,
                "labels": dict(s.labels)}


@dataclasses.dataclass
class Info:
    """GetInfo: the daemon's version, node, and this socket's scope
    ("node" or "namespace:NS") and counts."""
    version: str
    node_id: str
    scope: str
    volumes: int
    snapshots: int

    @property
    def namespace(self) -> Optional[str]:
        """The namespace a pod's socket is scoped to, else None."""
        return self.scope[len("namespace:"):] if self.scope.startswith("namespace:") else None

    def __getitem__(self, k):          # the older dict interface: info()["scope"]
        return getattr(self, k)


Labels = Optional[Dict[str, object]]


def _labels(labels: Labels):
    return [pb.Label(key=str(k), value=str(v)) for k, v in sorted((labels or {}).items())]


# --- the client -----------------------------------------------------------------

class Client:
    """A connection to amberd.

    socket: a unix socket path (default $AMBER_SOCKET, else /amber/api.sock:
    the pod's API volume). timeout: seconds each call may take. Use it as a
    context manager or call close()."""

    def __init__(self, socket: Optional[str] = None, timeout: float = 60.0):
        self.socket = socket or os.environ.get("AMBER_SOCKET") or DEFAULT_SOCKET
        self.timeout = timeout
        self._ch = grpc.insecure_channel("unix://" + os.path.abspath(self.socket))

    def close(self) -> None:
        self._ch.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *a) -> None:
        self.close()

    def _call(self, name, req, resp_t, stream=False):
        path = "/amber.v1.Amber/" + name
        kind = self._ch.unary_stream if stream else self._ch.unary_unary
        fn = kind(path, request_serializer=type(req).SerializeToString,
                  response_deserializer=resp_t.FromString)
        try:
            if stream:
                return list(fn(req, timeout=self.timeout))
            return fn(req, timeout=self.timeout)
        except grpc.RpcError as e:
            raise _wrap(e, name) from None

    # --- info and volumes ---

    def info(self) -> Info:
        """The daemon and this socket's scope."""
        r = self._call("GetInfo", pb.GetInfoRequest(), pb.GetInfoResponse)
        return Info(r.version, r.node_id, r.scope, r.volumes, r.snapshots)

    def volumes(self) -> List[Volume]:
        """Every volume this socket may see."""
        out, token = [], ""
        while True:
            r = self._call("ListVolumes", pb.ListVolumesRequest(starting_token=token),
                           pb.ListVolumesResponse)
            out += [Volume._from(v) for v in r.volumes]
            token = r.next_token
            if not token:
                return out

    def volume(self, ref: str) -> Volume:
        """One volume by pvc/NAME, name or id. NotFound."""
        return Volume._from(self._call("GetVolume", pb.VolumeRef(volume=ref), pb.Volume))

    # --- snapshots ---

    def snapshot(self, volumes: Union[str, Sequence[str]], labels: Labels = None,
                 name: Optional[str] = None, freeze: bool = False, wait: bool = True,
                 timeout: float = 60.0) -> List[Snapshot]:
        """Snapshot one volume (a str) or several (a list) at the same
        instant, each with `labels`. Returns a list of Snapshot in the order
        of `volumes`; with wait=True, once all are ready. All or none."""
        if isinstance(volumes, str):
            volumes = [volumes]
        if not volumes:
            raise InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, "no volumes to snapshot")
        lab = _labels(labels)
        req = pb.CreateSnapshotsRequest(snapshots=[
            pb.CreateSnapshotRequest(volume=v, name=name or "", labels=lab, freeze=freeze)
            for v in volumes])
        r = self._call("CreateSnapshots", req, pb.CreateSnapshotsResponse)
        snaps = [Snapshot._from(s) for s in r.snapshots]
        return self.wait(snaps, timeout) if wait else snaps

    def step(self, volumes, pipeline: str, run: str, step: str, labels: Labels = None,
             **kw) -> List[Snapshot]:
        """One snapshot of a pipeline step's volumes, labelled pipeline, run,
        step (+ labels). See amber.step for start/end snapshots around code."""
        lab = dict(labels or {})
        lab.update({"pipeline": pipeline, "run": run, "step": step})
        return self.snapshot(volumes, labels=lab, **kw)

    def get_snapshot(self, ref: str) -> Snapshot:
        """By id, pvc/NAME@SNAPNAME or a unique name. NotFound."""
        return Snapshot._from(self._call("GetSnapshot", pb.SnapshotRef(snapshot=ref), pb.Snapshot))

    def snapshots(self, volume: Optional[str] = None, labels: Labels = None) -> List[Snapshot]:
        """Snapshots (of `volume`, with all of `labels`), oldest first."""
        lab = _labels(labels)
        out, token = [], ""
        while True:
            r = self._call("ListSnapshots", pb.ListSnapshotsRequest(
                volume=volume or "", labels=lab, starting_token=token), pb.ListSnapshotsResponse)
            out += [Snapshot._from(s) for s in r.snapshots]
            token = r.next_token
            if not token:
                return out

    def run_snapshots(self, run: str, step: Optional[str] = None) -> List[Snapshot]:
        """A run's snapshots (label run=RUN, and step=STEP if given)."""
        lab = {"run": run}
        if step is not None:
            lab["step"] = step
        return self.snapshots(labels=lab)

    def runs(self) -> Dict[str, dict]:
        """{run: {"pipeline": P, "steps": [..], "snapshots": [Snapshot]}}."""
        out: Dict[str, dict] = {}
        for s in self.snapshots():
            r = s.labels.get("run")
            if r is None:
                continue
            e = out.setdefault(r, {"pipeline": s.labels.get("pipeline"), "steps": [], "snapshots": []})
            st = s.labels.get("step")
            if st is not None and st not in e["steps"]:
                e["steps"].append(st)
            e["snapshots"].append(s)
        return out

    def wait(self, snapshots: Iterable[Snapshot], timeout: float = 60.0) -> List[Snapshot]:
        """Wait until every snapshot is ready (amberd answers CreateSnapshot
        once the snapshot is made, so this is normally immediate). Returns
        fresh Snapshot objects; DeadlineExceeded after `timeout` seconds."""
        end = time.monotonic() + timeout
        out = []
        for s in snapshots:
            delay = 0.01
            while True:
                cur = self.get_snapshot(s.id)
                if cur.ready:
                    out.append(cur)
                    break
                if time.monotonic() > end:
                    raise DeadlineExceeded(grpc.StatusCode.DEADLINE_EXCEEDED,
                                           "snapshot %s still %s" % (s.id, cur.state))
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return out

    def diff(self, from_snapshot: Optional[str] = None, to_snapshot: Optional[str] = None,
             volume: Optional[str] = None) -> Tuple[List[Tuple[int, int]], int]:
        """Changed byte ranges: (extents [(offset, length)], changed_bytes)."""
        rs = self._call("Diff", pb.DiffRequest(**{"from": from_snapshot or "", "to": to_snapshot or "",
                                                  "volume": volume or ""}),
                        pb.DiffResponse, stream=True)
        ext = [(e.offset, e.length) for r in rs for e in r.extents]
        return ext, (rs[-1].changed_bytes if rs else 0)

    def history(self, volume: str, last: int = 0) -> List[HistoryEntry]:
        """A volume's snapshots, oldest first, each with the bytes changed
        since the previous one (the newest `last`; 0: all). For a table:
        amber.history_rows(...) or [e.as_dict() for e in ...]."""
        r = self._call("VolumeHistory", pb.VolumeHistoryRequest(volume=volume, max_entries=last),
                       pb.VolumeHistoryResponse)
        return [HistoryEntry(Snapshot._from(e.snapshot), e.changed_bytes, e.method) for e in r.entries]
