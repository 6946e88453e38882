"""Notebook helpers: a volume's history as rows, what changed between two
snapshots in files, and the manifest that restores a snapshot to a new PVC.

    rows = amber.history_rows("pvc/workspace")      # list of dicts
    pandas.DataFrame(rows)                           # if pandas is there
    print(amber.history_table("pvc/workspace"))
    amber.changed_files("/history/yesterday", "/home/jovyan")
    print(amber.restore_manifest("pvc/workspace@auto-20240501-120000-000",
                                 pvc="workspace-restored"))

Old files come from the inline snapshot volume (a CSI volume of driver
amber.csi.dev with volumeAttributes amber.csi.dev/snapshot, mounted
read-only; see deploy/examples/kubeflow-poddefault.yaml), or on the node
from `amberctl snapshot mount` (mounted() below)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
import stat
import subprocess
import tempfile
from typing import Dict, Iterator, List, Optional

from .client import Client, Snapshot


def _client(client: Optional[Client]) -> Client:
    return client if client is not None else Client()


# --- history --------------------------------------------------------------------

def history_rows(volume: str, client: Optional[Client] = None, last: int = 0) -> List[dict]:
    """A volume's snapshots, oldest first, as dicts {time, name, id, volume,
    changed_bytes, method, labels}: pandas.DataFrame(history_rows(...))."""
    return [e.as_dict() for e in _client(client).history(volume, last)]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return ("%d %s" % (n, unit)) if unit == "B" else ("%.1f %s" % (n, unit))
        n /= 1024.0
    return str(n)


def history_table(volume: str, client: Optional[Client] = None, last: int = 0) -> str:
    """The history as a text table (TIME, NAME, CHANGED, LABELS)."""
    rows = history_rows(volume, client, last)
    lines = [("TIME (UTC)", "NAME", "CHANGED", "LABELS")]
    for r in rows:
        lines.append((r["time"].strftime("%Y-%m-%d %H:%M:%S"), r["name"], _size(r["changed_bytes"]),
                      ",".join("%s=%s" % kv for kv in sorted(r["labels"].items()))))
    w = [max(len(x[i]) for x in lines) for i in range(3)]
    return "\n".join("%-*s  %-*s  %*s  %s" % (w[0], a, w[1], b, w[2], c, d) for a, b, c, d in lines)


# --- what changed, in files ---------------------------------------------------------

@dataclasses.dataclass
class Change:
    """A path (relative to the two roots) that differs: kind is "added"
    (only in the newer tree), "removed" (only in the older) or "modified"
    (type, size, mode, mtime, link target or, with content=True, bytes)."""
    path: str
    kind: str


def _walk(root: str) -> Dict[str, os.stat_result]:
    out = {}
    root = os.path.abspath(root)
    for d, dirs, files in os.walk(root, onerror=None, followlinks=False):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = os.path.relpath(p, root)
            if rel == "lost+found":
                continue
            try:
                out[rel] = os.lstat(p)
            except OSError:
                continue
    return out


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def changed_files(old: str, new: str, content: bool = False) -> List[Change]:
    """The paths that differ between two directory trees (two mounted
    snapshots, or a snapshot and the live volume), sorted. content=True also
    compares the bytes of regular files whose metadata match."""
    a, b = _walk(old), _walk(new)
    out = []
    for rel in sorted(set(a) | set(b)):
        sa, sb = a.get(rel), b.get(rel)
        if sa is None:
            out.append(Change(rel, "added"))
        elif sb is None:
            out.append(Change(rel, "removed"))
        elif stat.S_IFMT(sa.st_mode) != stat.S_IFMT(sb.st_mode) or sa.st_mode != sb.st_mode:
            out.append(Change(rel, "modified"))
        elif stat.S_ISLNK(sa.st_mode):
            if os.readlink(os.path.join(old, rel)) != os.readlink(os.path.join(new, rel)):
                out.append(Change(rel, "modified"))
        elif stat.S_ISREG(sa.st_mode):
            if sa.st_size != sb.st_size or sa.st_mtime_ns != sb.st_mtime_ns:
                out.append(Change(rel, "modified"))
            elif content and not _same_bytes(os.path.join(old, rel), os.path.join(new, rel)):
                out.append(Change(rel, "modified"))
    return out


@contextlib.contextmanager
def mounted(snapshot: str, socket: Optional[str] = None, amberctl: str = "amberctl",
            directory: Optional[str] = None) -> Iterator[str]:
    """On the node (root, the node socket): `amberctl snapshot mount` of a
    snapshot, read-only without journal replay, into a temporary directory
    (or `directory`); unmounted and detached at the end."""
    d = directory or tempfile.mkdtemp(prefix="amber-snap-")
    base = [amberctl] + (["--socket", socket] if socket else [])
    subprocess.run(base + ["snapshot", "mount", snapshot, d], check=True, capture_output=True)
    try:
        yield d
    finally:
        subprocess.run(base + ["snapshot", "umount", d], check=True, capture_output=True)
        if directory is None:
            os.rmdir(d)


def diff_snapshots(old: str, new: str, socket: Optional[str] = None, amberctl: str = "amberctl",
                   content: bool = False) -> List[Change]:
    """changed_files between two snapshots mounted on the node (mounted())."""
    with mounted(old, socket, amberctl) as a, mounted(new, socket, amberctl) as b:
        return changed_files(a, b, content)


# --- restore to a PVC ---------------------------------------------------------------

def _k8s_name(s: str) -> str:
    """As amberctl's k8s_name: a DNS-1123 subdomain from free text."""
    o = []
    for ch in s:
        if len(o) >= 200:
            break
        ch = ch.lower() if "A" <= ch <= "Z" else ch
        if not (("a" <= ch <= "z") or ("0" <= ch <= "9") or ch in ".-"):
            ch = "-"
        if not o and ch in ".-":
            continue
        o.append(ch)
    r = "".join(o).rstrip("-.")
    return r or "snapshot"


def _yq(s: str) -> str:
    out = ['"']
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20:
            out.append("\\x%02x" % ord(ch))
        else:
            out.append(ch)
    return "".join(out) + '"'


def k8s_manifest(snapshot: Snapshot, namespace: str = "default", name: Optional[str] = None,
                 driver: str = "amber.csi.dev", snapshot_class: Optional[str] = None) -> str:
    """What `amberctl snapshot k8s-manifest` prints: a pre-provisioned
    VolumeSnapshotContent (snapshotHandle = the snapshot's id, Retain) and a
    VolumeSnapshot bound to it."""
    s = snapshot
    vs = _k8s_name(name or s.name)
    content = "amber-" + s.id
    y = ["apiVersion: snapshot.storage.k8s.io/v1", "kind: VolumeSnapshotContent", "metadata:",
         "  name: " + content, "  annotations:",
         "    amber.csi.dev/snapshot-name: " + _yq(s.name),
         "    amber.csi.dev/volume: " + _yq(s.volume)]
    for k in ("pipeline", "run", "step"):
        if k in s.labels:
            y.append("    amber.csi.dev/%s: %s" % (k, _yq(s.labels[k])))
    y += ["spec:", "  deletionPolicy: Retain", "  driver: " + _yq(driver), "  source:",
          "    snapshotHandle: " + _yq(s.id), "  volumeSnapshotRef:", "    name: " + vs,
          "    namespace: " + _yq(namespace)]
    if snapshot_class:
        y.append("  volumeSnapshotClassName: " + _yq(snapshot_class))
    y += ["---", "apiVersion: snapshot.storage.k8s.io/v1", "kind: VolumeSnapshot", "metadata:",
          "  name: " + vs, "  namespace: " + _yq(namespace), "spec:"]
    if snapshot_class:
        y.append("  volumeSnapshotClassName: " + _yq(snapshot_class))
    y += ["  source:", "    volumeSnapshotContentName: " + content]
    return "\n".join(y) + "\n"


def restore_manifest(snapshot: str, pvc: str, client: Optional[Client] = None,
                     namespace: Optional[str] = None, storage_class: str = "amber",
                     size_bytes: int = 0, snapshot_name: Optional[str] = None,
                     driver: str = "amber.csi.dev") -> str:
    """YAML that restores `snapshot` into a new PVC `pvc`: the VolumeSnapshot
    (and its content) of k8s_manifest, then a PersistentVolumeClaim with that
    dataSource, sized as the snapshot's volume. namespace defaults to the
    pod socket's own. Apply with kubectl; nothing is changed here."""
    c = _client(client)
    s = c.get_snapshot(snapshot)
    ns = namespace or c.info().namespace or "default"
    if not size_bytes:
        size_bytes = s.size_bytes
        if not size_bytes:
            size_bytes = c.volume(s.volume_id).size_bytes
    vs = _k8s_name(snapshot_name or "%s-%s" % (pvc, s.name))
    y = k8s_manifest(s, ns, vs, driver)
    mib = max(1, (size_bytes + (1 << 20) - 1) >> 20)
    y += "\n".join(["---", "apiVersion: v1", "kind: PersistentVolumeClaim", "metadata:",
                    "  name: " + _k8s_name(pvc), "  namespace: " + _yq(ns), "spec:",
                    "  storageClassName: " + _yq(storage_class),
                    "  accessModes: [ReadWriteOnce]", "  resources:", "    requests:",
                    "      storage: %dMi" % mib, "  dataSource:",
                    "    apiGroup: snapshot.storage.k8s.io", "    kind: VolumeSnapshot",
                    "    name: " + vs]) + "\n"
    return y
