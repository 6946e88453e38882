"""amber-step: snapshots around any command, for a pipeline step in any
language (change the container's `command:` to `amber-step ... --`).

    amber-step [--volume pvc/NAME]... [--pipeline P] [--run R] [--step S]
               [--label K=V]... [--socket PATH] [--freeze] -- CMD [ARG...]

Snapshots the volumes at one instant (phase=start), runs CMD, then again:
phase=end when it exits 0, else phase=failed with error=exit-N (or
signal-NAME; signal-N for a signal without a name). Exits with CMD's
status (128+N when killed by signal N; 127 when CMD cannot be run);
SIGTERM/SIGINT/SIGHUP are passed on to CMD. If the start snapshot fails,
CMD is not run and amber-step exits 1 (so a step never runs without its
record). Volumes default to $AMBER_VOLUMES; provenance as
amber.Provenance.from_env (Argo, Kubeflow Pipelines, AMBER_* variables)."""
import argparse
import signal
import subprocess
import sys

from .client import AmberError
from .step import step


def _parser():
    p = argparse.ArgumentParser(prog="amber-step", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                usage="amber-step [--volume pvc/NAME]... [options] -- CMD [ARG...]")
    p.add_argument("--volume", "-v", action="append", default=[], metavar="pvc/NAME",
                   help="a volume to snapshot (repeat; default $AMBER_VOLUMES)")
    p.add_argument("--pipeline")
    p.add_argument("--run")
    p.add_argument("--step")
    p.add_argument("--label", "-l", action="append", default=[], metavar="K=V")
    p.add_argument("--socket", help="amberd's socket (default $AMBER_SOCKET, /amber/api.sock)")
    p.add_argument("--freeze", action="store_true", help="freeze the filesystems around snapshots")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    return p


def main(argv=None):
    a = _parser().parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        _parser().error("no command: amber-step [options] -- CMD [ARG...]")
    labels = {}
    for kv in a.label:
        k, eq, v = kv.partition("=")
        if not eq or not k:
            _parser().error("--label %s: not K=V" % kv)
        labels[k] = v
    # Names not given here may still come from AMBER_*/Argo/KFP variables.
    s = step(a.volume or None, step=a.step or None, pipeline=a.pipeline or None,
             run=a.run or None, labels=labels, socket=a.socket, freeze=a.freeze)
    try:
        s.begin()
    except (AmberError, ValueError) as e:
        s._close()
        print("amber-step: start snapshot failed, not running %s: %s" % (cmd[0], e), file=sys.stderr)
        return 1
    rc, err = 0, None
    try:
        proc = subprocess.Popen(cmd)
    except OSError as e:
        print("amber-step: %s: %s" % (cmd[0], e.strerror), file=sys.stderr)
        rc, err = 127, e
    else:
        def forward(sig, _frame):
            proc.send_signal(sig)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, forward)
        rc = proc.wait()
        if rc < 0:
            try:
                err = "signal-" + signal.Signals(-rc).name
            except ValueError:          # a real-time signal has no name
                err = "signal-%d" % -rc
            rc = 128 - rc
        elif rc != 0:
            err = "exit-%d" % rc
    if err is not None:
        s.finish(err)           # reports its own failure, keeps CMD's status
        return rc
    try:
        s.finish()
    except AmberError as e:
        print("amber-step: end snapshot failed: %s" % e, file=sys.stderr)
        return 1
    return rc
