#!/usr/bin/python3
"""The time machine end to end on a real amberd: second-level schedules
take the right snapshots and prune them by each policy (keep N, hourly,
daily, weekly, combined); held, run-referenced and export-base snapshots
survive pruning; a StorageClass's snapshotEvery/snapshotKeep apply at
CreateVolume; kill -9 and restart keep the schedule with one catch-up
snapshot, not a burst; `volume history` shows the bytes changed between
snapshots; `snapshot mount` shows a snapshot's files read-only while the
live volume is being written, for ext4 and xfs."""
import os
import shutil
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "lib"))
import amber_test as T  # noqa: E402

if os.geteuid() != 0:
    T.skip("needs root (loop devices, mounts)")
for tool in ("mkfs.btrfs", "mkfs.ext4", "mkfs.xfs", "losetup"):
    if not shutil.which(tool):
        T.skip("%s is missing" % tool)
T.genproto()
import amber_pb2 as apb  # noqa: E402

MiB = 1 << 20
S = 1_000_000_000
d = T.Amberd(fs="btrfs", size="2G")
N = T.Stub(d.channel(), "amber.v1.Amber", apb)
create_volume = N.unary("CreateVolume", apb.CreateVolumeRequest, apb.Volume)
label_snapshot = N.unary("LabelSnapshot", apb.LabelSnapshotRequest, apb.Snapshot)


def scheduled(vol):
    return [s for s in d.ctl("snapshot", "list", "--volume", vol) if "schedule" in s["labels"]]


def runs_after(vol, n, t_ns=None):
    """Wait until the schedule of vol has run (and pruned: both happen
    before last_run_ns moves) n times after t_ns: observed through
    `schedule list`, not a sleep. Returns the last run's time."""
    t_ns = t_ns or time.time_ns()
    seen = set()

    def done():
        s = [x for x in d.ctl("schedule", "list") if x["volume"] == vol]
        if s and s[0]["last_run_ns"] > t_ns:
            seen.add(s[0]["last_run_ns"])
        return len(seen) >= n
    wait_for("%d runs of %s" % (n, vol), done, timeout=60 + 10 * n)
    return max(seen)


def wait_for(what, fn, timeout=60.0):
    """Wait (bounded) until fn() is truthy; the schedules run on a 1 s beat,
    so a state is checked after each beat rather than on a busy loop."""
    end = time.monotonic() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.monotonic() > end:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.25)


def test_keep_n():
    d.ctl("volume", "create", "k", "--size", "64M")
    s = d.ctl("schedule", "set", "k", "--every", "1s", "--keep", "3")
    T.check_eq(s["every"], "1s", "every")
    t0 = time.monotonic()
    seen = set()

    def five_taken():
        for x in scheduled("k"):
            seen.add(x["id"])
        return len(seen) >= 5
    wait_for("5 scheduled snapshots", five_taken)
    T.check(time.monotonic() - t0 >= 4.0, "on time, not early: %.1fs" % (time.monotonic() - t0))
    # Pruning follows each run: never more than 3 (a snapshot made and not
    # yet pruned is at most one more).
    have = scheduled("k")
    T.check(3 <= len(have) <= 4, "kept %d" % len(have))
    have = wait_for("pruned to 3", lambda: (lambda h: h if len(h) == 3 else None)(scheduled("k")))
    T.check(all(x["labels"]["schedule"] == "1s" for x in have), "labelled schedule=1s")
    gaps = [(b["created_ns"] - a["created_ns"]) / S for a, b in zip(have, have[1:])]
    # Not a burst (a slow machine may stretch a gap, never shrink it).
    T.check(all(g > 0.5 for g in gaps), "about one a second: %s" % gaps)
    d.ctl("schedule", "remove", "k")
    # A run already under way when remove returned may still land: at most
    # one more snapshot, however long we look (2.5 periods here).
    n = len({x["id"] for x in d.ctl("snapshot", "list", "--volume", "k")})
    time.sleep(2.5)        # an observation window, not a synchronisation
    T.check(len(scheduled("k")) <= min(n + 1, 4), "no snapshots after remove")


def test_bucket_policies():
    """hourly/daily/weekly keep the newest per bucket: within one hour (and
    day, week) that is one snapshot, two if a boundary passes mid-test."""
    for i, (flag, n) in enumerate((("--keep-hourly", "3"), ("--keep-daily", "7"), ("--keep-weekly", "4"))):
        v = "b%d" % i
        d.ctl("volume", "create", v, "--size", "64M")
        d.ctl("schedule", "set", v, "--every", "1s", flag, n)
    d.ctl("volume", "create", "mix", "--size", "64M")
    d.ctl("schedule", "set", "mix", "--every", "1s", "--keep", "2", "--keep-daily", "1")
    taken = {}

    def enough():
        for v in ("b0", "b1", "b2", "mix"):
            for x in scheduled(v):
                taken.setdefault(v, set()).add(x["id"])
        return all(len(taken.get(v, ())) >= 4 for v in ("b0", "b1", "b2", "mix"))
    wait_for("4 runs of each", enough, timeout=120)
    def bucket(ns, unit):
        days = ns // S // 86400
        return (days + 3) // 7 if unit == "week" else ns // S // unit

    for v, unit in (("b0", 3600), ("b1", 86400), ("b2", "week")):
        # One per bucket once the latest run's pruning is done.
        have = wait_for(v + " pruned to one per bucket", lambda: (lambda h: h if len(
            {bucket(x["created_ns"], unit) for x in h}) == len(h) else None)(scheduled(v)))
        T.check(1 <= len(have) <= 2, "%s: %d kept" % (v, len(have)))
        newest = max(x["created_ns"] for x in have)
        last = [x for x in d.ctl("schedule", "list") if x["volume"] == v][0]["last_run_ns"]
        T.check(newest >= last - 2 * S, "%s keeps the newest" % v)
    wait_for("mix pruned to 2 (keep 2 + daily 1 = the 2 newest)", lambda: len(scheduled("mix")) == 2)
    for v in ("b0", "b1", "b2", "mix"):
        d.ctl("schedule", "remove", v)


def test_protected_snapshots_survive():
    d.ctl("volume", "create", "p", "--size", "64M")
    dev = d.ctl("volume", "attach", "p")["device"]
    with open(dev, "r+b") as f:
        f.write(b"x" * MiB)
        os.fsync(f.fileno())
    d.ctl("volume", "detach", "p")
    d.ctl("schedule", "set", "p", "--every", "1s", "--keep", "1")
    held = wait_for("a scheduled snapshot", lambda: scheduled("p"))[-1]
    d.ctl("schedule", "hold", held["id"])
    run = wait_for("another", lambda: [x for x in scheduled("p") if x["id"] != held["id"]])[-1]
    label_snapshot(apb.LabelSnapshotRequest(snapshot=run["id"], set=[apb.Label(key="run", value="r-7")]),
                   timeout=60)
    protected = {held["id"], run["id"]}
    has_export = subprocess.run([os.path.join(T.BUILD, "amberctl"), "export", "--help"],
                                capture_output=True).returncode == 0
    if has_export:
        base = wait_for("a third", lambda: [x for x in scheduled("p") if x["id"] not in protected])[-1]
        d.ctl("schedule", "hold", base["id"])      # held only while the export runs
        os.environ["AMBER_REPO_PASSWORD"] = "time-machine-test"
        repo = "file://" + T.tmpdir("repo-")
        d.ctl("repo", "init", "--repo", repo)
        d.ctl("export", base["id"], "--repo", repo)
        d.ctl("schedule", "release", base["id"])
        protected.add(base["id"])
    else:
        print("  (no amberctl export: the export-base part is skipped)")
    runs_after("p", 3)     # three more runs, each followed by pruning
    # A run's snapshot exists a moment before its pruning: wait for the pass.
    have = wait_for("pruned to 1 unprotected", lambda: (lambda h: h if len(h - protected) == 1 else None)(
        {x["id"] for x in scheduled("p")}))
    T.check(protected <= have, "protected snapshots survive: missing %s" % (protected - have))
    T.check_eq(len(have - protected), 1, "keep 1 among the unprotected")
    d.ctl("schedule", "release", held["id"])
    have = wait_for("the released snapshot pruned", lambda: (lambda h: h if held["id"] not in h else None)(
        {x["id"] for x in scheduled("p")}))
    T.check(run["id"] in have, "a run's snapshot stays")
    # The timeline: bytes changed since the previous snapshot (the schedule
    # stopped, so the list holds still).
    d.ctl("schedule", "remove", "p")
    h = wait_for("history to match the list", lambda: (lambda h: h if [x["id"] for x in h] == [
        x["id"] for x in d.ctl("snapshot", "list", "--volume", "p")] else None)(d.ctl("volume", "history", "p")),
        )
    T.check_eq(h[0]["changed_bytes"], MiB, "the oldest holds the 1 MiB written")
    T.check(all(x["changed_bytes"] == 0 for x in h[1:]), "nothing changed since")
    T.check(all(x["labels"].get("schedule") == "1s" for x in h), "labels in the timeline")


def test_storageclass_parameters():
    v = create_volume(apb.CreateVolumeRequest(
        name="sc", size_bytes=64 * MiB, pvc_namespace="ns", pvc_name="notebook",
        params='{"csi.storage.k8s.io/pvc/name":"notebook","snapshotEvery":"1s","snapshotKeep":"2"}'),
        timeout=30)
    s = [x for x in d.ctl("schedule", "list") if x["volume_id"] == v.id]
    T.check_eq((len(s), s[0]["every_ms"], s[0]["keep"]), (1, 1000, 2), "schedule from parameters")
    wait_for("2 runs", lambda: len(scheduled("sc")) >= 2)
    runs_after("sc", 2)    # two more runs: pruned to 2 after each
    wait_for("snapshotKeep: pruned to 2", lambda: len(scheduled("sc")) == 2)
    T.expect_status(__import__("grpc").StatusCode.INVALID_ARGUMENT, create_volume,
                    apb.CreateVolumeRequest(name="bad", size_bytes=64 * MiB,
                                            params='{"snapshotEvery":"often"}'), timeout=30)
    d.ctl("schedule", "remove", "sc")


def test_restart_keeps_schedule_without_burst():
    d.ctl("volume", "create", "r", "--size", "64M")
    d.ctl("schedule", "set", "r", "--every", "1s")
    wait_for("2 runs", lambda: len(scheduled("r")) >= 2)
    d.kill()
    down = time.time_ns()
    time.sleep(4)          # the downtime is the point: 4 periods are missed
    d.start()
    up = time.time_ns()
    wait_for("runs after restart", lambda: len([x for x in scheduled("r") if x["created_ns"] > down]) >= 3)
    after = [x for x in scheduled("r") if x["created_ns"] > down]
    # The catch-up comes first, without waiting out a period (before the
    # next one is due: a slow machine delays both alike).
    T.check(after[0]["created_ns"] < after[1]["created_ns"] - S // 2, "one catch-up right after start")
    gaps = [(b["created_ns"] - a["created_ns"]) / S for a, b in zip(after, after[1:])]
    T.check(all(g > 0.5 for g in gaps), "no burst: gaps %s" % gaps)
    T.check(len(after) <= 2 + (time.time_ns() - up) // S, "at most one catch-up: %d" % len(after))
    s = [x for x in d.ctl("schedule", "list") if x["volume"] == "r"]
    T.check_eq(len(s), 1, "schedule kept")
    d.ctl("schedule", "remove", "r")


def mounted(path):
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == path for line in f)


def browse(fs):
    vol = "m-" + fs
    d.ctl("volume", "create", vol, "--size", "512M")
    dev = d.ctl("volume", "attach", vol)["device"]
    subprocess.run(["mkfs." + fs, "-q"] + (["-F"] if fs == "ext4" else ["-f"]) + [dev], check=True,
                   capture_output=True)
    live = T.tmpdir("live-")
    snapdir = T.tmpdir("snap-")
    subprocess.run(["mount", dev, live], check=True)
    T.cleanup.add("umount " + live, lambda: subprocess.run(["umount", live], capture_output=True))
    with open(os.path.join(live, "notes.txt"), "w") as f:
        f.write("yesterday\n")
    os.makedirs(os.path.join(live, "data"))
    with open(os.path.join(live, "data", "a.bin"), "wb") as f:
        f.write(os.urandom(MiB))
    os.sync()
    snap = d.ctl("snapshot", "create", vol, "--name", "before", "--freeze")["id"]

    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set():
            with open(os.path.join(live, "w%03d.bin" % (i % 50)), "wb") as f:
                f.write(os.urandom(256 * 1024))
                f.flush()
                os.fsync(f.fileno())
            i += 1
    t = threading.Thread(target=writer)
    t.start()
    try:
        with open(os.path.join(live, "notes.txt"), "w") as f:
            f.write("today\n")
        # A second snapshot without freezing: its journal is dirty; it
        # still mounts (no replay).
        dirty = d.ctl("snapshot", "create", vol, "--name", "dirty")["id"]
        r = d.ctl("snapshot", "mount", snap, snapdir)
        T.check_eq(r["fs_type"], fs, "detected " + fs)
        T.cleanup.add("umount " + snapdir, lambda: subprocess.run(["umount", snapdir], capture_output=True))
        with open(os.path.join(snapdir, "notes.txt")) as f:
            T.check_eq(f.read(), "yesterday\n", "the snapshot's file")
        T.check(os.path.getsize(os.path.join(snapdir, "data", "a.bin")) == MiB, "its data")
        T.check(not any(x.startswith("w") for x in os.listdir(snapdir)), "no later files")
        p = subprocess.run(["touch", os.path.join(snapdir, "x")], capture_output=True)
        T.check(p.returncode != 0, "read-only")
        opts = [line.split() for line in open("/proc/self/mountinfo") if line.split()[4] == snapdir][0]
        T.check("ro" in opts[5].split(","), "mounted ro")
        d.ctl("snapshot", "umount", snapdir)
        T.check(not mounted(snapdir), "unmounted")
        d.ctl("snapshot", "mount", dirty, snapdir)
        T.check(os.path.exists(os.path.join(snapdir, "data", "a.bin")), "a dirty snapshot mounts too")
        d.ctl("snapshot", "umount", snapdir)
    finally:
        stop.set()
        t.join()
    # Detached: the snapshots can be deleted (an attached one cannot).
    d.ctl("snapshot", "delete", snap)
    d.ctl("snapshot", "delete", dirty)
    subprocess.run(["umount", live], check=True)
    d.ctl("volume", "detach", vol)


def test_snapshot_mount_ext4():
    browse("ext4")


def test_snapshot_mount_xfs():
    browse("xfs")



def test_daemon_stops_clean():
    """Last: amberd stops on SIGTERM with status 0 and no sanitizer report
    (make test runs this under ASan+UBSan)."""
    rc = d.stop()
    log = d.log()
    T.check("Sanitizer" not in log and "runtime error" not in log, "sanitizer report in amberd's log")
    T.check_eq(rc, 0, "amberd's exit status")


def with_log(fn):
    """The module's amberd's log is shown when a test fails (the runner
    shows only those of T.DAEMONS, which it empties after each test)."""
    def run():
        T.DAEMONS[:] = [d]
        fn()
    run.__name__ = fn.__name__
    return run


sys.exit(T.Tests().run([with_log(f) for f in [
    test_keep_n,
    test_bucket_policies,
    test_protected_snapshots_survive,
    test_storageclass_parameters,
    test_restart_keeps_schedule_without_burst,
    test_snapshot_mount_ext4,
    test_snapshot_mount_xfs,
    test_daemon_stops_clean,
]]))
