"""python -m amber (or `amber`): a basic listing through a pod's socket, as
amberctl's: info, volumes, snapshots, runs, history, and the manifest that
restores a snapshot to a new PVC. --json prints JSON."""
import argparse
import json
import sys

from . import notebook
from .client import AmberError, Client


def _ts(ns):
    from .client import _time
    return _time(ns).strftime("%Y-%m-%d %H:%M:%S")


def _table(rows, head):
    rows = [head] + rows
    w = [max(len(str(r[i])) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(str(c).ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows)


def _labels(ls):
    return ",".join("%s=%s" % kv for kv in sorted(ls.items()))


def _parser():
    p = argparse.ArgumentParser(prog="python -m amber", description=__doc__.split("\n\n")[0])
    p.add_argument("--socket", help="amberd's socket (default $AMBER_SOCKET, else /amber/api.sock)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds a call may take")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")
    sub.add_parser("info", help="the daemon and this socket's scope")
    sub.add_parser("volumes", help="the volumes this socket sees")
    s = sub.add_parser("snapshots", help="snapshots, oldest first")
    s.add_argument("--volume")
    s.add_argument("--label", action="append", default=[], metavar="K=V")
    sub.add_parser("runs", help="pipeline runs (snapshots labelled run=...)")
    h = sub.add_parser("history", help="a volume's snapshots with the bytes each changed")
    h.add_argument("volume")
    h.add_argument("--last", type=int, default=0)
    m = sub.add_parser("restore-manifest", help="YAML restoring a snapshot to a new PVC")
    m.add_argument("snapshot")
    m.add_argument("--pvc", required=True, help="the new claim's name")
    m.add_argument("--namespace")
    m.add_argument("--storage-class", default="amber")
    return p


def _run(a, c):
    if a.cmd == "info":
        i = c.info()
        if a.json:
            return json.dumps(i.__dict__)
        return "\n".join("%-10s %s" % (k, v) for k, v in i.__dict__.items())
    if a.cmd == "volumes":
        vs = c.volumes()
        if a.json:
            return json.dumps([v.__dict__ for v in vs])
        return _table([[v.name, v.id, v.size_bytes, v.state, v.snapshots] for v in vs],
                      ["NAME", "ID", "SIZE", "STATE", "SNAPSHOTS"])
    if a.cmd == "snapshots":
        lab = dict(kv.partition("=")[::2] for kv in a.label)
        ss = c.snapshots(a.volume, lab)
        if a.json:
            return json.dumps([s.__dict__ for s in ss])
        return _table([[s.volume, s.name, s.id, _ts(s.created_ns), _labels(s.labels)] for s in ss],
                      ["VOLUME", "NAME", "ID", "CREATED (UTC)", "LABELS"])
    if a.cmd == "runs":
        rs = c.runs()
        if a.json:
            return json.dumps([{"run": r, "pipeline": e["pipeline"], "steps": e["steps"],
                                "snapshots": len(e["snapshots"])} for r, e in rs.items()])
        return _table([[r, e["pipeline"] or "", ",".join(e["steps"]), len(e["snapshots"])]
                       for r, e in rs.items()], ["RUN", "PIPELINE", "STEPS", "SNAPSHOTS"])
    if a.cmd == "history":
        if a.json:
            rows = notebook.history_rows(a.volume, c, a.last)
            return json.dumps([dict(r, time=r["time"].isoformat()) for r in rows])
        return notebook.history_table(a.volume, c, a.last)
    if a.cmd == "restore-manifest":
        return notebook.restore_manifest(a.snapshot, a.pvc, c, a.namespace, a.storage_class).rstrip("\n")
    raise AssertionError(a.cmd)


def main(argv=None):
    p = _parser()
    a = p.parse_args(argv)
    if not a.cmd:
        p.print_help()
        return 2
    try:
        with Client(a.socket, timeout=a.timeout) as c:
            print(_run(a, c))
    except AmberError as e:
        print("amber: %s" % e, file=sys.stderr)
        return 1
    return 0
