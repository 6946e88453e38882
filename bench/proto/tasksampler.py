#!/usr/bin/python3
"""tasksampler.py MATCH OUT [HZ=100]: wait for the amberd whose command line contains MATCH, then
sample the kernel stack of each of its threads (/proc/PID/task/*/stack, with the thread's name) until
it exits or SIGTERM; write OUT (JSON: [[t, [[tid, comm, [frames...]], ...]], ...], idle threads left
out). `taskreport.py OUT` says where the snapshot ioctl waited and what the other threads (the store's
mover `amber-mover`, API workers) were doing in the kernel at the same moments."""
import json, os, re, signal, sys, time

match, out = sys.argv[1], sys.argv[2]
hz = float(sys.argv[3]) if len(sys.argv) > 3 else 100
IDLE = ("futex_wait", "do_epoll_wait", "ep_poll", "do_sys_poll", "hrtimer_nanosleep", "do_select",
        "unix_stream_read_generic", "io_cqring_wait", "do_sigtimedwait", "pipe_read", "do_wait")
pat = re.compile(r"\] ([^+ ]+)\+")
samples = []


def done(*a):
    with open(out, "w") as f:
        json.dump(samples, f)
    sys.exit(0)


signal.signal(signal.SIGTERM, done)


def find():
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % p, "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/comm" % p) as f:
                comm = f.read().strip()
        except OSError:
            continue
        if comm == "amberd" and match in cmd:
            return p
    return None


pid = None
while pid is None:
    pid = find()
    if pid is None:
        time.sleep(0.2)
while True:
    t = time.time()
    row = []
    try:
        tids = os.listdir("/proc/%s/task" % pid)
    except OSError:
        done()
    for tid in tids:
        try:
            with open("/proc/%s/task/%s/stack" % (pid, tid)) as f:
                st = f.read()
            with open("/proc/%s/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
        except OSError:
            continue
        fr = pat.findall(st)
        if not fr or any(x.startswith(IDLE) for x in fr):
            continue
        row.append([int(tid), comm, fr])
    if row:
        samples.append([t, row])
    time.sleep(1 / hz)
