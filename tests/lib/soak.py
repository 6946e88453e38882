"""The chaos soak (make soak; tests/e2e/test-soak.py runs a short one).

Many concurrent clients work on amberd A through amber-csi (CSI calls) and
amberctl: create, write, snapshot, clone, resize, revert, delete, export,
restore, sync to a second daemon B, and a schedule. A killer thread kills A
with SIGKILL at seeded random moments and restarts it. After every restart,
with the clients parked (each between operations, or holding the one that
the kill interrupted), the invariants are checked:

  - the catalog and the pool agree (volumes and snapshots on both sides,
    every row `ready`, no intents but those of interrupted restores, no
    work-in-progress files in the pool);
  - the snapshot store's own (both daemons run it, SOAK_RESIDENT=K,
    so clone, revert, export and sync read moved snapshots back through
    it): once its mover is idle, the pool holds exactly the snapshots the
    catalog calls resident, no snapshot is half-moved (one off the pool is
    stored), and, with room, every snapshot is stored and (on A) none but
    its volume's K newest stays resident (a deleted newest one does not bring
    an older one back);
  - every acknowledged snapshot's bytes are what its client had written
    (each client keeps a model of its volumes: 4 KiB blocks it wrote),
    read from the subvolume of a resident one, and for a few moved ones
    at each check (seeded picks) read back through the store (attached,
    which brings them back); every live volume's bytes too;
  - an interrupted operation is all or nothing: its object is absent, or
    present, `ready` and with the bytes of the finished operation;
  - one acknowledged export, picked at random, restores byte-identical;
  - every snapshot acknowledged by a pull is on B with the same bytes;
  - no loop devices, mounts or temporary files beyond what the clients hold;
  - the daemon's RSS and open file descriptors stay under their bounds.

Then the clients retry what was interrupted (every operation is idempotent
or has a postcondition to check, as a kubelet or an operator would retry)
and go on. At the end: operations by kind, kills, invariant checks, the
seed; a failure names the seed and the step (the check number or the
client's operation number). The seed fixes each client's choices and the
kill intervals; thread timing makes a replay close, not exact.

Knobs (environment): SOAK_SECONDS (default 1800), SEED (default: random,
printed), SOAK_CLIENTS (4 general clients), SOAK_RSS_MIB (daemon RSS bound,
default 1024: ASan builds are large), SOAK_FDS (default 256), SOAK_RESIDENT
(--resident-snapshots of both daemons, default 2 as amberd's; 1 finds
the store's open bug: a diff from a moved snapshot to a new one fails
NOT_FOUND, after the newest was deleted, until the mover stores the new one).
"""
import hashlib
import json
import os
import random
import subprocess
import sys
import threading
import time
import traceback

import amber_test as T

MiB = 1 << 20
BLK = 4096
ZERO = bytes(BLK)


class SoakFailure(Exception):
    pass


# --- the model of a volume's bytes --------------------------------------------

class Content:
    """A volume's bytes: size and the 4 KiB blocks written (the rest zero)."""

    def __init__(self, size, blocks=None):
        self.size = size
        self.blocks = dict(blocks or {})

    def copy(self):
        return Content(self.size, self.blocks)

    def sha(self):
        h = hashlib.sha256()
        for i in range(self.size // BLK):
            h.update(self.blocks.get(i, ZERO))
        return h.hexdigest()


def sha_file(path, size):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        left = size
        while left:
            b = f.read(min(4 * MiB, left))
            if not b:
                b = bytes(min(4 * MiB, left))   # a sparse tail reads as zeros
            h.update(b)
            left -= len(b)
    return h.hexdigest()


# --- the soak -------------------------------------------------------------------

class Soak:
    def __init__(self, seconds, seed, clients=4):
        self.seconds, self.seed = seconds, seed
        self.rng = random.Random(seed)
        self.nclients = clients
        self.lock = threading.Lock()
        self.ops = {}            # kind -> [ok, retried]
        self.kills = self.checks = self.restores_checked = 0
        self.kill_gen = 0
        self.up = threading.Event()
        self.stop = threading.Event()
        self.pause = False
        self.parked = 0
        self.cond = threading.Condition(self.lock)
        self.failure = None
        self.rss_max = self.fds_max = 0
        self.rss_limit = int(os.environ.get("SOAK_RSS_MIB", "1024")) * MiB
        self.fds_limit = int(os.environ.get("SOAK_FDS", "256"))
        self.repo = "file://" + T.tmpdir("soak-repo-")
        self.exports = []        # (manifest, Content) acknowledged
        self.synced = {}         # snapshot id -> sha acknowledged on B
        self.clients = []
        self.crng = random.Random(seed ^ 0x63686b)    # which moved snapshots a check reads back
        self.read_back = 0       # moved snapshots read back through the store
        self.check_secs = 0.0

    # --- daemons ---------------------------------------------------------
    def start(self):
        os.environ["AMBER_REPO_PASSWORD"] = "soak"
        # The snapshot store on, one resident snapshot a volume: every older
        # one is moved off the pool, and read back through the store.
        store = ["--resident-snapshots", os.environ.get("SOAK_RESIDENT", "2")]
        self.A = T.Amberd(size="2G", extra=["--peer-listen", "127.0.0.1:0"] + store)
        self.B = T.Amberd(size="2G", extra=["--peer-listen", "127.0.0.1:0"] + store)
        self.IA, self.IB = self.A.ctl("info"), self.B.ctl("info")
        self.trust()
        self.A.ctl("repo", "init", "--repo", self.repo)
        self.csi_sock = os.path.join(self.A.dir, "csi.sock")
        self.csi = T.spawn([os.path.join(T.BUILD, "amber-csi"), "--endpoint", "unix://" + self.csi_sock,
                            "--node-id", "soak-node", "--amberd", self.A.sock, "--log-level", "warn"],
                           stderr=open(os.path.join(self.A.dir, "csi.log"), "ab"))
        T.wait_for_socket(self.csi_sock, self.csi)
        import grpc
        import csi_pb2
        self.cpb = csi_pb2
        self.grpc = grpc
        ch = grpc.insecure_channel("unix://" + self.csi_sock)
        T.cleanup.add("close csi channel", ch.close)
        st = T.Stub(ch, "csi.v1.Controller", csi_pb2)
        self.C = {m: st.unary(m, getattr(csi_pb2, m + "Request"), getattr(csi_pb2, m + "Response"))
                  for m in ("CreateVolume", "DeleteVolume", "CreateSnapshot", "DeleteSnapshot",
                            "ControllerExpandVolume")}
        self.up.set()

    def trust(self):
        self.IA = self.A.ctl("info")
        self.A.ctl("peer", "add", "b", "--address", self.IB["peer_address"], "--fingerprint",
                   self.IB["fingerprint"])
        self.B.ctl("peer", "add", "a", "--address", self.IA["peer_address"], "--fingerprint",
                   self.IA["fingerprint"])

    def ctl(self, *args, d=None):
        """amberctl against A (or d): (ok, parsed JSON or stderr)."""
        d = d or self.A
        p = subprocess.run([os.path.join(T.BUILD, "amberctl"), "--socket", d.sock, "--json"] + list(args),
                           capture_output=True, text=True, timeout=600)
        if p.returncode != 0:
            return False, p.stderr.strip()
        return True, (json.loads(p.stdout) if p.stdout.strip() else None)

    def snap_sha(self, step, vid, sid, size, resident, d=None):
        """The bytes of snapshot sid of volume vid on d (A): from its
        subvolume when the catalog said it is resident (and it still is),
        else read back through the store (attach --snapshot brings it
        back)."""
        d = d or self.A
        if resident:
            try:
                return sha_file(os.path.join(d.pool, "snaps", vid, sid, "disk"), size)
            except FileNotFoundError:
                pass        # a busy mover dropped it since the list: read it back
        ok, r = self.ctl("volume", "attach", vid, "--snapshot", sid, d=d)
        if not ok:
            self.fail(step, "attach of moved snapshot %s: %s" % (sid, r))
        try:
            return sha_file(r["device"], size)
        finally:
            ok, r = self.ctl("volume", "detach", vid, "--snapshot", sid, d=d)
            if not ok:
                self.fail(step, "detach of moved snapshot %s: %s" % (sid, r))
            self.read_back += 1

    def store_settled(self, step, d, sched, pending_vols, linear=True):
        """The store's invariants once its mover is idle (see the top).
        Returns d's snapshot list."""
        bad = None
        for look in range(3):
            # The schedule keeps the mover busy now and then (on a loaded
            # machine, storing a snapshot can take longer than the period):
            # then the checks below that need it idle wait for another look.
            ok, st = self.ctl("--timeout", "5s", "store", "status", "--wait", d=d)
            idle = ok
            if not ok and "DEADLINE_EXCEEDED" in st:
                ok, st = self.ctl("store", "status", d=d)
            if not ok:
                self.fail(step, "store status: %s" % st)
            ok, snaps = self.ctl("snapshot", "list", d=d)
            if not ok:
                self.fail(step, "snapshot list: " + snaps)
            disk = set()
            sd = os.path.join(d.pool, "snaps")
            for v in (os.listdir(sd) if os.path.isdir(sd) else []):
                if v not in sched:
                    disk |= {(v, x) for x in os.listdir(os.path.join(sd, v))}
            mine = [x for x in snaps if x["volume_id"] not in sched]
            resident = {(x["volume_id"], x["id"]) for x in mine if x["resident"]}
            now = {"snapshot %s/%s is resident in the catalog, not in the pool" % x for x in resident - disk}
            now |= {"snapshot %s/%s is in the pool, not resident in the catalog" % x for x in disk - resident}
            now |= {"snapshot %s is off the pool and not stored (half-moved)" % x["id"]
                    for x in mine if not x["resident"] and not x["stored"]}
            keep = int(os.environ.get("SOAK_RESIDENT", "2"))
            chains = {}
            for x in mine:      # oldest first
                chains.setdefault(x["volume_id"], []).append(x["id"])
            newest = {v: set(c[-keep:]) for v, c in chains.items()}
            if idle and not st["blocked"]:
                now |= {"snapshot %s is not stored with the mover idle" % x["id"]
                        for x in mine if not x["stored"] and x["volume_id"] not in pending_vols}
                # (Not on B: a replica whose newest snapshot the source
                # deleted keeps it, off the chain and resident: the store
                # drops a snapshot once its child's extents are recorded,
                # and that one has no child.)
                now |= {"snapshot %s is resident besides its volume's %d newest" % (x["id"], keep)
                        for x in mine if linear and x["resident"] and x["volume_id"] not in pending_vols
                        and x["id"] not in newest[x["volume_id"]]}
            bad = now if bad is None else bad & now
            if not bad:
                self.store_idle = idle
                return snaps
        self.fail(step, "%s's store (seen at three looks): %s" % ("A" if d is self.A else "B", sorted(bad)))

    def count(self, kind, retried=False):
        with self.lock:
            c = self.ops.setdefault(kind, [0, 0])
            c[1 if retried else 0] += 1

    def fail(self, step, msg):
        raise SoakFailure("seed=%d step=%s: %s" % (self.seed, step, msg))

    # --- parking: clients stop between operations for the checks ---------
    def park_point(self):
        with self.cond:
            while self.pause and not self.stop.is_set():
                self.parked += 1
                self.cond.notify_all()
                self.cond.wait()
                self.parked -= 1

    def park_all(self):
        with self.cond:
            self.pause = True
            live = sum(1 for c in self.clients if c.thread.is_alive())
            while self.parked < live and not self.stop.is_set():
                self.cond.wait(1)
                live = sum(1 for c in self.clients if c.thread.is_alive())

    def unpark(self):
        with self.cond:
            self.pause = False
            self.cond.notify_all()

    # --- the killer --------------------------------------------------------
    def daemon_stats(self):
        pid = self.A.proc.pid
        try:
            rss = 0
            for line in open("/proc/%d/status" % pid):
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
            fds = len(os.listdir("/proc/%d/fd" % pid))
        except OSError:
            return
        self.rss_max, self.fds_max = max(self.rss_max, rss), max(self.fds_max, fds)
        if rss > self.rss_limit:
            self.fail("check %d" % self.checks, "amberd RSS %d MiB over the bound" % (rss >> 20))
        if fds > self.fds_limit:
            self.fail("check %d" % self.checks, "amberd has %d file descriptors open" % fds)

    def killer(self):
        end = time.monotonic() + self.seconds
        rng = random.Random(self.seed ^ 0x6b696c6c)
        while time.monotonic() < end and not self.failure:
            self.stop.wait(rng.uniform(0.5, 4.0))
            if self.failure or self.stop.is_set():
                break
            self.daemon_stats()
            with self.lock:
                self.kill_gen += 1
                self.up.clear()
            self.A.kill()
            self.kills += 1
            self.A.start()
            self.trust()
            # Clients whose call the kill failed park as soon as the daemon
            # is back (pause is set first); the others at their next call.
            with self.cond:
                self.pause = True
            self.up.set()
            self.park_all()
            t0 = time.monotonic()
            self.check()
            self.check_secs += time.monotonic() - t0
            self.unpark()
        self.stop.set()
        self.unpark()

    # --- invariants --------------------------------------------------------
    def check(self):
        self.checks += 1
        step = "check %d" % self.checks
        A = self.A
        ok, vols = self.ctl("volume", "list")
        if not ok:
            self.fail(step, "volume list: " + vols)
        ok, snaps = self.ctl("snapshot", "list")
        if not ok:
            self.fail(step, "snapshot list: " + snaps)
        pending = [c.pending for c in self.clients if c.pending]
        # The schedule's volume is the one thing still moving: its
        # snapshots come and go during the check (Scheduled.verify checks
        # them on their own).
        sched = {c.vid for c in self.clients if isinstance(c, Scheduled)}
        restoring = {p["name"] for p in pending if p["kind"] == "restore"}
        by_id = {v["id"]: v for v in vols}
        # Catalog vs pool.
        disk_vols = {x for x in os.listdir(os.path.join(A.pool, "vols"))}
        hidden = [x for x in disk_vols if x.startswith(".")]
        if hidden:
            self.fail(step, "work in progress left in vols/: %s" % hidden)
        if disk_vols != set(by_id):
            self.fail(step, "volumes: catalog %s vs pool %s" % (sorted(set(by_id) - disk_vols),
                                                                 sorted(disk_vols - set(by_id))))
        sd = os.path.join(A.pool, "snaps")
        for v in (os.listdir(sd) if os.path.isdir(sd) else []):
            for s in os.listdir(os.path.join(sd, v)):
                if s.startswith("."):
                    self.fail(step, "work in progress left in snaps/%s: %s" % (v, s))
        # Snapshots: the pool holds the resident ones (the store's checks).
        pending_vols = {p.get("vol") for p in pending}
        snaps = self.store_settled(step, A, sched, pending_vols)
        for v in vols:
            if v["state"] != "ready" and not (v["state"] == "receiving" and v["name"] in restoring):
                self.fail(step, "volume %s is %s after recovery" % (v["name"], v["state"]))
        for s in snaps:
            if s["state"] != "ready" and s["volume_id"] not in sched:
                self.fail(step, "snapshot %s@%s is %s after recovery" % (s.get("volume_name"), s["name"],
                                                                        s["state"]))
        # amberd's own view (amberctl check): catalog vs pool, intents. The
        # schedule's run may be in flight: its intents (on its volume or
        # on a snapshot of it, listed before or after the check) are not
        # left over; what else is left over stays over three looks.
        restoring_ids = {v["id"] for v in vols if v["name"] in restoring}
        bad = None
        for look in range(3):
            p = subprocess.run([os.path.join(T.BUILD, "amberctl"), "--socket", A.sock, "--json", "check"],
                               capture_output=True, text=True, timeout=600)
            try:
                chk = json.loads(p.stdout)
            except ValueError:
                self.fail(step, "amberctl check: %s" % p.stderr)
            ok, after = self.ctl("snapshot", "list")
            if not ok:
                self.fail(step, "snapshot list: " + after)
            scheduled = sched | {s["id"] for s in snaps + after if s["volume_id"] in sched}
            # The mover's own intents are its work in flight while it is
            # busy (it finishes them itself); with it idle, none may stay.
            now = {i for i in chk["intents"] if not (i.split()[0] == "restore" and i.split()[1] in restoring_ids)
                   and i.split()[1].removeprefix("store:") not in scheduled
                   and not (i.startswith("store_") and not self.store_idle)}
            now |= {"problem: " + x for x in chk["problems"]}
            bad = now if bad is None else bad & now
            if not bad:
                break
            time.sleep(0.3)     # a second look, not a synchronisation
        if bad:
            self.fail(step, "amberctl check after recovery: %s" % sorted(bad))
        self.rss_max = max(self.rss_max, chk["rss_bytes"])
        self.fds_max = max(self.fds_max, chk["open_fds"])
        # Bytes: every client's model.
        for c in self.clients:
            c.verify(step, vols, snaps)
        # One acknowledged export restores byte-identical.
        if self.exports:
            man, content = self.rng.choice(self.exports)
            name = "chk-%d" % self.checks
            ok, r = self.ctl("restore", man, "--repo", self.repo, "--volume", name)
            if not ok:
                self.fail(step, "restore of acknowledged export %s: %s" % (man, r))
            ok, v = self.ctl("volume", "show", name)
            got = sha_file(os.path.join(A.pool, "vols", v["id"], "disk"), content.size)
            if got != content.sha():
                self.fail(step, "export %s restored different bytes" % man)
            self.ctl("volume", "delete", name)
            self.restores_checked += 1
        # What B acknowledged.
        if self.synced:
            bs = self.store_settled(step + " (B)", self.B, set(), set(), linear=False)
            have = {s["id"]: s for s in bs}
            moved = []
            for sid, (size, sha) in list(self.synced.items()):
                if sid not in have:
                    self.fail(step, "snapshot %s acknowledged by a pull is not on B" % sid)
                s = have[sid]
                if not s["resident"]:
                    moved.append(sid)
                    continue
                if self.snap_sha(step, s["volume_id"], sid, size, True, d=self.B) != sha:
                    self.fail(step, "B's copy of snapshot %s differs" % sid)
            # A replica whose pull a kill of A interrupted stays receiving
            # (it resumes there) and cannot be attached meanwhile.
            ok, bv = self.ctl("volume", "list", d=self.B)
            if not ok:
                self.fail(step, "B: volume list: " + bv)
            receiving = {v["id"] for v in bv if v["state"] == "receiving"}
            moved = [sid for sid in moved if have[sid]["volume_id"] not in receiving]
            for sid in self.crng.sample(sorted(moved), min(2, len(moved))):
                size, sha = self.synced[sid]
                if self.snap_sha(step, have[sid]["volume_id"], sid, size, False, d=self.B) != sha:
                    self.fail(step, "B's copy of moved snapshot %s differs" % sid)
        # Leaks: loop devices over volume images only for interrupted writes,
        # one mount (the pool), nothing half-made.
        held = sum(1 for p in pending if p["kind"] == "write")
        loops = T._loops_backed_under(A.pool + "/")
        if len(loops) > held:
            self.fail(step, "%d loop devices over volume images, %d held by clients: %s" % (
                len(loops), held, loops))
        mounts = T._mounts_under(A.dir)
        if len(mounts) != 1:
            self.fail(step, "mounts under amberd's dir: %s" % mounts)
        self.daemon_stats()

    # --- run -----------------------------------------------------------------
    def run(self):
        self.start()
        self.clients = [General(self, i) for i in range(self.nclients)]
        self.clients += [Syncer(self, len(self.clients)), Archiver(self, len(self.clients) + 1),
                         Scheduled(self, len(self.clients) + 2)]
        for c in self.clients:
            c.setup()
        for c in self.clients:
            c.thread = threading.Thread(target=c.main, daemon=True)
            c.thread.start()
        t0 = time.monotonic()
        try:
            self.killer()
        except SoakFailure as e:
            self.failure = self.failure or str(e)
            self.stop.set()
            self.unpark()
        except Exception:      # a check that broke: still name the seed and the step
            self.failure = self.failure or "seed=%d check %d: %s" % (self.seed, self.checks,
                                                                     traceback.format_exc())
            self.stop.set()
            self.unpark()
        for c in self.clients:
            c.thread.join(timeout=600)
        if not self.failure:
            try:
                self.park_all()
                self.check()        # the last state, without a kill
            except SoakFailure as e:
                self.failure = str(e)
        self.report(time.monotonic() - t0)
        if self.failure:
            raise SoakFailure(self.failure)
        rc = self.A.stop()
        if rc != 0:
            raise SoakFailure("seed=%d: amberd exited %d at the end" % (self.seed, rc))
        for d in (self.A, self.B):
            log = d.log()
            if "Sanitizer" in log or "runtime error" in log:
                raise SoakFailure("seed=%d: a sanitizer report in %s/amberd.log" % (self.seed, d.dir))

    def report(self, secs):
        total = sum(a + b for a, b in self.ops.values())
        print("soak: seed %d, %.0f s, %d clients, %d operations (%s), %d kills, %d invariant checks, "
              "%d export restores verified, %d snapshots verified on B, %d moved snapshots read back "
              "through the store, %.0f s in checks; amberd max RSS %d MiB, max fds %d"
              % (self.seed, secs, len(self.clients), total,
                 ", ".join("%s %d%s" % (k, a + b, " (%d retried)" % b if b else "")
                           for k, (a, b) in sorted(self.ops.items())),
                 self.kills, self.checks, self.restores_checked, len(self.synced), self.read_back, self.check_secs,
                 self.rss_max >> 20, self.fds_max), flush=True)
        if self.failure:
            print("soak: FAILED: " + self.failure, flush=True)


# --- clients ----------------------------------------------------------------------

class Client:
    """Owns its volumes; runs operations; retries what a kill interrupted."""

    def __init__(self, soak, idx):
        self.s = soak
        self.idx = idx
        self.rng = random.Random(soak.seed * 1000 + idx)
        self.vols = {}           # id -> {"name", "content", "snaps": {id: (name, Content)}}
        self.pending = None
        self.nops = 0
        self.n = 0
        self.thread = None

    def setup(self):
        pass

    def name(self, what):
        self.n += 1
        return "c%d-%s%d" % (self.idx, what, self.n)

    def step(self):
        return "client %d op %d" % (self.idx, self.nops)

    def attempt(self, kind, do, done=None, pending=None):
        """Run do() -> (ok, result). A failure while the daemon was being
        killed parks the client with `pending` set (for the checks) and
        retries once the daemon is back; done() -> result or None says
        whether an interrupted attempt already took effect."""
        retried = False
        for _ in range(50):
            self.s.park_point()
            with self.s.lock:
                gen = self.s.kill_gen
            ok, r = do()
            if ok:
                self.pending = None
                self.s.count(kind, retried)
                return r
            with self.s.lock:
                killed = gen != self.s.kill_gen or not self.s.up.is_set()
            if not killed:
                self.s.fail(self.step(), "%s failed without a kill: %s" % (kind, r))
            self.pending = dict(pending or {}, kind=kind)
            self.s.up.wait()
            self.s.park_point()
            retried = True
            if done:
                v = done()
                if v is not None:
                    self.pending = None
                    self.s.count(kind, True)
                    return v
        self.s.fail(self.step(), "%s: 50 attempts" % kind)

    def main(self):
        try:
            while not self.s.stop.is_set():
                self.s.park_point()
                if self.s.stop.is_set():
                    break
                self.nops += 1
                self.one()
        except SoakFailure as e:
            self.s.failure = self.s.failure or str(e)
            self.s.stop.set()
            self.s.unpark()
        except Exception:
            self.s.failure = self.s.failure or "seed=%d %s: %s" % (self.s.seed, self.step(),
                                                                  traceback.format_exc())
            self.s.stop.set()
            self.s.unpark()
        finally:
            with self.s.cond:
                self.s.cond.notify_all()

    # --- checks ---------------------------------------------------------------
    def verify(self, step, vols, snaps):
        """The catalog's view against this client's model."""
        p = self.pending or {}
        vols_by_id = {v["id"]: v for v in vols}
        snaps_by_id = {s["id"]: s for s in snaps}
        for vid, m in self.vols.items():
            v = vols_by_id.get(vid)
            if v is None:
                if p.get("kind") == "delete-volume" and p.get("vol") == vid:
                    continue
                self.s.fail(step, "client %d's volume %s is gone" % (self.idx, m["name"]))
            c = m["content"]
            allowed = [c]
            if p.get("vol") == vid and p.get("after") is not None:
                allowed.append(p["after"])
            if v["size_bytes"] not in [a.size for a in allowed]:
                self.s.fail(step, "volume %s: size %d, model %s" % (m["name"], v["size_bytes"],
                                                                   [a.size for a in allowed]))
            got = sha_file(os.path.join(self.s.A.pool, "vols", vid, "disk"), v["size_bytes"])
            if got not in [a.sha() for a in allowed if a.size == v["size_bytes"]]:
                self.s.fail(step, "volume %s: bytes differ from the model%s" % (
                    m["name"], " (pending %s)" % p.get("kind") if p else ""))
            moved = []
            for sid, (sname, sc) in m["snaps"].items():
                s = snaps_by_id.get(sid)
                if s is None:
                    if p.get("snap") == sid:
                        continue
                    self.s.fail(step, "acknowledged snapshot %s@%s is gone" % (m["name"], sname))
                if not s["resident"]:
                    moved.append(sid)
                    continue
                if self.s.snap_sha(step, vid, sid, sc.size, True) != sc.sha():
                    self.s.fail(step, "acknowledged snapshot %s@%s: bytes differ" % (m["name"], sname))
            # A few moved ones, read back through the store.
            for sid in self.s.crng.sample(sorted(moved), min(1, len(moved))):
                sname, sc = m["snaps"][sid]
                if self.s.snap_sha(step, vid, sid, sc.size, False) != sc.sha():
                    self.s.fail(step, "acknowledged moved snapshot %s@%s: bytes differ" % (m["name"], sname))
        # A snapshot or volume made by an interrupted operation: absent, or
        # exactly what the finished operation makes.
        if p.get("kind") in ("snapshot", "csi-snapshot") and p.get("vol") in self.vols:
            for s in snaps:
                if s["volume_id"] == p["vol"] and s["name"] == p["name"]:
                    got = self.s.snap_sha(step, s["volume_id"], s["id"], p["after"].size, s["resident"])
                    if got != p["after"].sha():
                        self.s.fail(step, "half-made snapshot %s: bytes differ" % p["name"])
        if p.get("kind") in ("clone",):
            for v in vols:
                if v["name"] == p["name"]:
                    got = sha_file(os.path.join(self.s.A.pool, "vols", v["id"], "disk"), p["after"].size)
                    if got != p["after"].sha():
                        self.s.fail(step, "half-made clone %s: bytes differ" % p["name"])

    # --- helpers ---------------------------------------------------------------
    def query(self, *args):
        """A read: the answer, None for NOT_FOUND; a kill is waited out."""
        for _ in range(50):
            with self.s.lock:
                gen = self.s.kill_gen
            ok, v = self.s.ctl(*args)
            if ok:
                return v
            if "NOT_FOUND" in v:
                return None
            with self.s.lock:
                killed = gen != self.s.kill_gen or not self.s.up.is_set()
            if not killed:
                self.s.fail(self.step(), "%s failed without a kill: %s" % (" ".join(args), v))
            self.s.up.wait()
            self.s.park_point()
        self.s.fail(self.step(), "%s: 50 attempts" % " ".join(args))

    def vol_show(self, ref):
        return self.query("volume", "show", ref)

    def snap_show(self, ref):
        return self.query("snapshot", "show", ref)

    def write(self, vid):
        m = self.vols[vid]
        c = m["content"].copy()
        nblk = c.size // BLK
        writes = []
        for _ in range(self.rng.randint(1, 24)):
            i = self.rng.randrange(nblk)
            n = self.rng.randint(1, 16)
            for j in range(i, min(nblk, i + n)):
                writes.append((j, self.rng.randbytes(BLK)))
        for j, b in writes:
            c.blocks[j] = b

        def do():
            ok, r = self.s.ctl("volume", "attach", vid)
            if not ok:
                return ok, r
            fd = os.open(r["device"], os.O_WRONLY)
            try:
                for j, b in writes:
                    os.pwrite(fd, b, j * BLK)
                os.fsync(fd)
            finally:
                os.close(fd)
            return self.s.ctl("volume", "detach", vid)
        # Writes go to the loop device, not through amberd: an interrupted
        # attempt is simply done again (the same bytes).
        self.attempt("write", do, pending={"vol": vid, "after": c})
        m["content"] = c

    def snapshot(self, vid, csi=False):
        m = self.vols[vid]
        name = self.name("s")
        after = m["content"].copy()
        pend = {"vol": vid, "name": name, "after": after}
        if csi:
            def do():
                try:
                    r = self.s.C["CreateSnapshot"](self.s.cpb.CreateSnapshotRequest(
                        source_volume_id=vid, name=name), timeout=120)
                    return True, r.snapshot.snapshot_id
                except self.s.grpc.RpcError as e:
                    return False, "%s: %s" % (e.code(), e.details())
            sid = self.attempt("csi-snapshot", do, pending=pend)
        else:
            def do():
                ok, r = self.s.ctl("snapshot", "create", vid, "--name", name)
                return ok, (r["id"] if ok else r)
            sid = self.attempt("snapshot", do, pending=pend)
        s = self.snap_show(sid)
        if not s or s["name"] == "" or s["volume_id"] != vid:
            self.s.fail(self.step(), "snapshot %s: show gave %r" % (sid, s))
        m["snaps"][sid] = (s["name"], after)
        return sid


class General(Client):
    """Volumes through CSI and amberctl: the everyday operations."""

    def setup(self):
        self.create_volume()

    def create_volume(self):
        size = 8 * MiB
        if self.rng.random() < 0.5:
            name = "pvc-%d-%d" % (self.idx, self.n + 1)
            self.n += 1

            def do():
                q = self.s.cpb.CreateVolumeRequest(name=name)
                q.capacity_range.required_bytes = size
                cap = q.volume_capabilities.add()
                cap.block.SetInParent()
                cap.access_mode.mode = self.s.cpb.VolumeCapability.AccessMode.SINGLE_NODE_WRITER
                try:
                    r = self.s.C["CreateVolume"](q, timeout=120)
                    return True, r.volume.volume_id
                except self.s.grpc.RpcError as e:
                    return False, "%s: %s" % (e.code(), e.details())
            vid = self.attempt("csi-create", do)
        else:
            name = self.name("v")

            def do():
                ok, r = self.s.ctl("volume", "create", name, "--size", "%dM" % (size >> 20))
                return ok, (r["id"] if ok else r)
            vid = self.attempt("create", do)
        v = self.vol_show(vid)
        self.vols[vid] = {"name": v["name"], "content": Content(v["size_bytes"]), "snaps": {}}

    def one(self):
        r = self.rng.random()
        vids = sorted(self.vols)
        if not vids or (len(vids) < 4 and r < 0.08):
            return self.create_volume()
        vid = self.rng.choice(vids)
        m = self.vols[vid]
        snaps = sorted(m["snaps"])
        r = self.rng.random()
        if r < 0.35:
            self.write(vid)
        elif r < 0.55:
            if len(snaps) < 6:
                self.snapshot(vid, csi=self.rng.random() < 0.5)
        elif r < 0.63 and snaps and len(vids) < 5:
            self.clone(vid, self.rng.choice(snaps))
        elif r < 0.70 and m["content"].size < 16 * MiB:
            self.resize(vid)
        elif r < 0.78 and snaps:
            self.revert(vid, self.rng.choice(snaps))
        elif r < 0.90 and snaps:
            self.delete_snapshot(vid, self.rng.choice(snaps))
        elif r < 0.96 and len(vids) > 1:
            self.delete_volume(vid)

    def clone(self, vid, sid):
        sname, sc = self.vols[vid]["snaps"][sid]
        name = self.name("k")

        def do():
            ok, r = self.s.ctl("volume", "create", name, "--from", sid)
            return ok, (r["id"] if ok else r)
        nid = self.attempt("clone", do, pending={"name": name, "after": sc})
        self.vols[nid] = {"name": name, "content": sc.copy(), "snaps": {}}

    def resize(self, vid):
        m = self.vols[vid]
        after = m["content"].copy()
        after.size += 4 * MiB
        if self.rng.random() < 0.5:
            def do():
                q = self.s.cpb.ControllerExpandVolumeRequest(volume_id=vid)
                q.capacity_range.required_bytes = after.size
                try:
                    self.s.C["ControllerExpandVolume"](q, timeout=120)
                    return True, None
                except self.s.grpc.RpcError as e:
                    return False, "%s: %s" % (e.code(), e.details())
            kind = "csi-expand"
        else:
            def do():
                return self.s.ctl("volume", "resize", vid, "--size", "%dM" % (after.size >> 20))
            kind = "resize"
        done = lambda: True if (self.vol_show(vid) or {}).get("size_bytes") == after.size else None  # noqa: E731
        self.attempt(kind, do, done, pending={"vol": vid, "after": after})
        m["content"] = after

    def revert(self, vid, sid):
        m = self.vols[vid]
        sname, sc = m["snaps"][sid]
        after = sc.copy()
        after.size = max(sc.size, m["content"].size)    # a volume keeps its size (the tail reads zero)

        def do():
            return self.s.ctl("volume", "revert", vid, "--to", sid)
        self.attempt("revert", do, pending={"vol": vid, "after": after})
        m["content"] = after

    def delete_snapshot(self, vid, sid):
        m = self.vols[vid]
        csi = self.rng.random() < 0.5

        def do():
            if csi:
                try:
                    self.s.C["DeleteSnapshot"](self.s.cpb.DeleteSnapshotRequest(snapshot_id=sid), timeout=120)
                    return True, None
                except self.s.grpc.RpcError as e:
                    return False, "%s: %s" % (e.code(), e.details())
            return self.s.ctl("snapshot", "delete", sid)
        done = lambda: True if self.snap_show(sid) is None else None  # noqa: E731
        self.attempt("csi-delete-snapshot" if csi else "delete-snapshot", do, done,
                     pending={"vol": vid, "snap": sid, "kind2": "delete-snapshot"})
        del m["snaps"][sid]

    def delete_volume(self, vid):
        csi = self.rng.random() < 0.5
        # Its snapshots go first (a volume's snapshots stay otherwise).
        for sid in sorted(self.vols[vid]["snaps"]):
            self.delete_snapshot(vid, sid)

        def do():
            if csi:
                try:
                    self.s.C["DeleteVolume"](self.s.cpb.DeleteVolumeRequest(volume_id=vid), timeout=120)
                    return True, None
                except self.s.grpc.RpcError as e:
                    return False, "%s: %s" % (e.code(), e.details())
            return self.s.ctl("volume", "delete", vid)
        done = lambda: True if self.vol_show(vid) is None else None  # noqa: E731
        self.attempt("delete-volume", do, done, pending={"vol": vid})
        del self.vols[vid]


class Syncer(Client):
    """Writes, snapshots and pulls its volume to B."""

    def setup(self):
        ok, r = self.s.ctl("volume", "create", "sync%d" % self.idx, "--size", "8M")
        if not ok:
            self.s.fail("setup", r)
        self.vid = r["id"]
        self.s.ctl("volume", "publish", self.vid, "--to", "b")
        self.vols[self.vid] = {"name": r["name"], "content": Content(8 * MiB), "snaps": {}}

    def one(self):
        self.write(self.vid)
        self.snapshot(self.vid)
        name = self.vols[self.vid]["name"]
        want = {sid: (sc.size, sc.sha()) for sid, (n, sc) in self.vols[self.vid]["snaps"].items()}

        def do():
            return self.s.ctl("sync", "pull", "a", name, d=self.s.B)
        self.attempt("sync-pull", do)
        with self.s.lock:
            self.s.synced.update(want)
        # Keep the chain short on A (B keeps its copies).
        snaps = sorted(self.vols[self.vid]["snaps"])
        if len(snaps) > 3:
            sid = snaps[0]

            def dd():
                return self.s.ctl("snapshot", "delete", sid)
            self.attempt("delete-snapshot", dd, lambda: True if self.snap_show(sid) is None else None,
                         pending={"vol": self.vid, "snap": sid, "kind2": "delete-snapshot"})
            del self.vols[self.vid]["snaps"][sid]


class Archiver(Client):
    """Exports snapshots; restores acknowledged ones and checks the bytes."""

    def setup(self):
        ok, r = self.s.ctl("volume", "create", "arch%d" % self.idx, "--size", "8M")
        if not ok:
            self.s.fail("setup", r)
        self.vid = r["id"]
        self.vols[self.vid] = {"name": r["name"], "content": Content(8 * MiB), "snaps": {}}

    def one(self):
        if self.s.exports and self.rng.random() < 0.3:
            return self.restore(self.rng.choice(self.s.exports))
        self.write(self.vid)
        sid = self.snapshot(self.vid)
        content = self.vols[self.vid]["snaps"][sid][1]

        def do():
            ok, r = self.s.ctl("export", sid, "--repo", self.s.repo)
            return ok, (r["manifest"] if ok else r)
        man = self.attempt("export", do)
        with self.s.lock:
            self.s.exports.append((man, content))
        snaps = sorted(self.vols[self.vid]["snaps"])
        if len(snaps) > 3:
            old = snaps[0]
            self.attempt("delete-snapshot", lambda: self.s.ctl("snapshot", "delete", old),
                         lambda: True if self.snap_show(old) is None else None,
                         pending={"vol": self.vid, "snap": old, "kind2": "delete-snapshot"})
            del self.vols[self.vid]["snaps"][old]

    def restore(self, exp):
        man, content = exp
        name = self.name("r")

        def do():
            return self.s.ctl("restore", man, "--repo", self.s.repo, "--volume", name)

        def done():
            v = self.vol_show(name)
            return True if v and v["state"] == "ready" else None
        self.attempt("restore", do, done, pending={"name": name})
        v = self.vol_show(name)
        got = sha_file(os.path.join(self.s.A.pool, "vols", v["id"], "disk"), content.size)
        if got != content.sha():
            self.s.fail(self.step(), "restore of %s into %s: bytes differ" % (man, name))
        self.s.restores_checked += 1
        self.attempt("delete-volume", lambda: self.s.ctl("volume", "delete", v["id"]),
                     lambda: True if self.vol_show(v["id"]) is None else None, pending={"vol": v["id"]})


class Scheduled(Client):
    """A volume snapshotted every 2 s by its schedule; its bytes never
    change after the first write, so every scheduled snapshot must hold
    exactly them."""

    def setup(self):
        ok, r = self.s.ctl("volume", "create", "sched%d" % self.idx, "--size", "8M")
        if not ok:
            self.s.fail("setup", r)
        self.vid = r["id"]
        self.vols[self.vid] = {"name": r["name"], "content": Content(8 * MiB), "snaps": {}}
        self.write(self.vid)
        ok, r = self.s.ctl("schedule", "set", self.vid, "--every", "2s", "--keep", "3")
        if not ok:
            self.s.fail("setup", r)

    def one(self):
        self.s.stop.wait(1)

    def verify(self, step, vols, snaps):
        super().verify(step, vols, snaps)
        mine = [s for s in snaps if s["volume_id"] == self.vid]
        if len(mine) > 5:
            self.s.fail(step, "schedule keep 3 left %d snapshots" % len(mine))
        c = self.vols[self.vid]["content"]
        for s in mine:
            path = os.path.join(self.s.A.pool, "snaps", self.vid, s["id"], "disk")
            try:
                got = sha_file(path, c.size)
            except FileNotFoundError:
                continue        # pruned (or not yet made) while we looked
            if got != c.sha():
                self.s.fail(step, "scheduled snapshot %s: bytes differ" % s["name"])


def main(default_seconds):
    secs = float(os.environ.get("SOAK_SECONDS", default_seconds))
    seed = int(os.environ.get("SEED", random.randrange(1 << 31)))
    print("soak: %.0f s, seed %d (replay: SEED=%d)" % (secs, seed, seed), flush=True)
    s = Soak(secs, seed, clients=int(os.environ.get("SOAK_CLIENTS", "4")))
    try:
        s.run()
    except SoakFailure as e:
        print("FAIL: %s" % e, flush=True)
        for d in (getattr(s, "A", None), getattr(s, "B", None)):
            if d:
                print("--- last lines of %s/amberd.log" % d.dir)
                print("\n".join(d.log().splitlines()[-30:]))
        return 1
    return 0
