/* jobs.c: a new local volume from a snapshot that another node holds.
 *
 * amber-csi's CreateVolume with a content source on node A, answered on
 * node B, becomes a job here, keyed by the new volume's name:
 *   1. the snapshot is here already (an earlier pull or restore kept its
 *      id): go to 3;
 *   2. pull: A is made a catalog peer at the registry's address (no pin: the
 *      cluster CA vouches), and the sync engine pulls A's volume chain up to
 *      that snapshot into a hidden replica "c-<snapshot id>" (named once; a
 *      later pull of the same chain finds the replica by (A, source volume),
 *      so it moves only the snapshots, and inside them only the extents,
 *      that B lacks). When A cannot be reached (UNAVAILABLE, DEADLINE, not
 *      in the registry), restore instead: the archive holding the
 *      snapshot's manifest is restored straight into the new volume (the
 *      daemon's own Archive/Restore, over its node socket);
 *   3. clone: the new volume is a writable snapshot of the (replica's)
 *      snapshot, instant.
 * A volume source (CSI clone of a volume on A) first has A take a hidden
 * snapshot of it (clone.c: PrepareClone, the same one again on a retry), is
 * pulled and cloned as above (never restored from an archive: only A has
 * the volume's newest state), then A removes that snapshot (ReleaseClone;
 * A's sweep collects it if the release does not arrive). The new volume's
 * source_volume_id is A's volume id, its source_snapshot_id the hidden
 * snapshot's, here in the replica (the delta base of the next copy).
 * The job runs on its own thread; CreateVolumeFrom waits for it up to the
 * caller's wait_ms, then answers ABORTED "operation pending" (the CSI
 * provisioner retries with backoff; the retried call finds the job). A call
 * that starts a job always answers pending, so the answer is deterministic.
 * A failed job is reported once and forgotten: the next call starts over
 * (and the sync engine resumes from the last acknowledged offset; an
 * interrupted restore resumes too). A job that has not finished has a
 * catalog row (catalog-cluster.c): when amberd stops or dies mid-copy, its
 * next start runs the job again (attempts + 1; the transfer resumes), so
 * the provisioner's retry finds it running and `amberctl volume show`
 * shows its progress at once.
 *
 * For tests: crash point cluster-pull:half (the receiver dies once half of
 * a snapshot's stream has arrived), and AMBER_CLUSTER_HOLD_FIFO=PATH, which
 * holds a job after its copy, before the clone, until a writer opens the
 * FIFO and writes a byte (a state to look at, reached without timing). */
#include <fcntl.h>
#include <openssl/crypto.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "amber/log.h"
#include "amber/util.h"
#include "archive.pb-c.h"
#include "snapd/cluster/cluster.h"

struct cluster_job {
    struct cluster_job *next;
    char *name, *source_node, *source_snapshot, *pvc_namespace, *pvc_name, *fs_type, *params;
    char *source_volume;        /* a volume source; source_snapshot: its hidden snapshot once taken */
    uint64_t size;
    const char *state;          /* static */
    char *archive;
    char *error;
    int error_code;
    bool finished, failed;
    uint64_t bytes_done, bytes_total, bytes_resumed, bytes_on_wire;
    uint64_t started_ns, finished_ns;
    uint32_t attempts, snapshots_moved;
    pthread_t thread;           /* joined before the job is freed */
    bool joinable;
};

/* The job's thread has finished (or never started) once `finished` is set:
 * it takes cs->lock no more after that, so this may run under it. */
static void job_free(struct cluster_job *j)
{
    if (!j)
        return;
    if (j->joinable)
        pthread_join(j->thread, NULL);
    free(j->name);
    free(j->source_node);
    free(j->source_snapshot);
    free(j->source_volume);
    free(j->pvc_namespace);
    free(j->pvc_name);
    free(j->fs_type);
    free(j->params);
    free(j->archive);
    free(j->error);
    free(j);
}

static char *dupz(const char *s) { return s && *s ? xstrdup(s) : NULL; }
static char *nz(const char *s) { return (char *)(s ? s : ""); }
/* What the job copies, for messages. */
static const char *src_of(const struct cluster_job *j)
{
    return j->source_volume ? j->source_volume : j->source_snapshot;
}

static struct cluster_job *job_find(struct cluster_state *cs, const char *name)
{
    for (struct cluster_job *j = cs->jobs; j; j = j->next)
        if (strcmp(j->name, name) == 0)
            return j;
    return NULL;
}

static void job_unlink(struct cluster_state *cs, struct cluster_job *j)
{
    for (struct cluster_job **pp = &cs->jobs; *pp; pp = &(*pp)->next)
        if (*pp == j) {
            *pp = j->next;
            return;
        }
}

/* Under cs->lock. */
static void job_set(struct cluster_state *cs, struct cluster_job *j, const char *state)
{
    j->state = state;
    pthread_cond_broadcast(&cs->cond);
}

/* --- the pull -------------------------------------------------------------- */

struct pull_ctx {
    struct amberd *d;
    struct cluster_job *j;
};

static int pull_progress(const struct peer_pull_stats *st, void *ud)
{
    struct pull_ctx *x = ud;
    struct cluster_state *cs = x->d->cluster;
    pthread_mutex_lock(&cs->lock);
    x->j->bytes_done = st->stream_done;
    x->j->bytes_total = st->stream_total;
    x->j->bytes_resumed = st->resumed_bytes;
    bool stop = cs->stopping;
    pthread_mutex_unlock(&cs->lock);
    if (st->stream_total > 0 && st->stream_done * 2 >= st->stream_total)
        crashpoint("cluster-pull:half");
    return stop ? -ECANCELED : 0;
}

/* 0 when the snapshot is here now; an error in e otherwise. *ret_unreachable
 * says whether the holder could not be reached (then an archive may help). */
static int pull(struct amberd *d, struct cluster_job *j, bool *ret_unreachable, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    *ret_unreachable = false;
    int r = cluster_peer_ensure(d, j->source_node, e);
    if (r < 0) {
        *ret_unreachable = e->code == RPC_UNAVAILABLE;
        return r;
    }
    char as_name[64];
    snprintf(as_name, sizeof as_name, "c-%s", j->source_snapshot);
    struct pull_ctx x = { d, j };
    struct peer_pull_stats res = {0};
    uint64_t t0 = now_mono_ns();
    r = peer_pull(d, j->source_node, j->source_snapshot, as_name, j->source_snapshot, pull_progress,
                  &x, &res, e);
    pthread_mutex_lock(&cs->lock);
    j->bytes_on_wire += res.bytes_on_wire;
    j->snapshots_moved += res.snapshots;
    j->bytes_resumed = res.resumed_bytes;
    cs->pulled_bytes += res.bytes_changed;
    pthread_mutex_unlock(&cs->lock);
    if (r == 0)
        log_info("cluster", "pulled snapshot %s from node %s into replica %s: snapshots=%u "
                 "bytes_changed=%llu resumed=%llu bytes_on_wire=%llu seconds=%.3f",
                 j->source_snapshot, j->source_node, as_name, res.snapshots,
                 (unsigned long long)res.bytes_changed, (unsigned long long)res.resumed_bytes,
                 (unsigned long long)res.bytes_on_wire, (now_mono_ns() - t0) / 1e9);
    else
        *ret_unreachable = e->code == RPC_UNAVAILABLE || e->code == RPC_DEADLINE_EXCEEDED;
    return r;
}

/* --- the restore ------------------------------------------------------------- */

struct restore_ctx {
    struct amberd *d;
    struct cluster_job *j;
};

static void restore_progress(const struct archive_progress_view *p, void *ud)
{
    struct restore_ctx *x = ud;
    struct cluster_state *cs = x->d->cluster;
    pthread_mutex_lock(&cs->lock);
    x->j->bytes_done = p->bytes_read;
    x->j->bytes_total = p->bytes_total;
    if (p->done)
        cs->restored_bytes += p->bytes_uploaded;
    pthread_mutex_unlock(&cs->lock);
}

static int restore(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    const struct cluster_archive *a = NULL;
    char manifest[65];
    int r = archive_locate(d, j->source_snapshot, &a, manifest);
    if (r < 0)
        return op_fail(e, RPC_UNAVAILABLE, -EHOSTUNREACH, "node %s cannot be reached and no archive "
                       "of this node holds snapshot %s", j->source_node, j->source_snapshot);
    pthread_mutex_lock(&cs->lock);
    free(j->archive);
    j->archive = xstrdup(a->name);
    j->bytes_done = j->bytes_total = 0;
    job_set(cs, j, "restoring");
    pthread_mutex_unlock(&cs->lock);
    log_info("cluster", "node %s is unreachable: restoring snapshot %s from archive %s (manifest %.12s) "
             "into %s", j->source_node, j->source_snapshot, a->name, manifest, j->name);
    Amber__V1__RestoreRequest q = AMBER__V1__RESTORE_REQUEST__INIT;
    q.manifest = manifest;
    q.repo = a->url;
    q.password = a->password;
    q.volume = j->name;
    struct restore_ctx x = { d, j };
    r = archive_self_call(d, "/amber.v1.Archive/Restore", &q.base, restore_progress, &x, NULL, e);
    return r == RPC_OK ? 0 : -EIO;
}

/* The restored volume carries what the request said (source, PVC, fs,
 * params, size), as a clone would. */
static int finish_restored(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = cat_volume_find(d->cat, j->name, &v);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "the restored volume %s is gone", j->name);
    if (j->size > v->size_bytes) {
        struct cat_volume *nv = NULL;
        if ((r = vol_resize(d, v->id, j->size, &nv, e)) < 0)
            return r;
        cat_volume_free(nv);
    }
    _cleanup_(cat_volume_freep) struct cat_volume *cur = NULL;
    if ((r = cat_volume_get(d->cat, v->id, &cur)) < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    struct cat_volume u = *cur;
    u.source_snapshot_id = j->source_snapshot;
    u.pvc_namespace = j->pvc_namespace;
    u.pvc_name = j->pvc_name;
    u.fs_type = j->fs_type;
    u.params = j->params;
    if ((r = cat_volume_update(d->cat, &u)) < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    return 0;
}

/* --- the job ---------------------------------------------------------------------- */

static int make_clone(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    struct vol_create_args a = {
        .name = j->name, .size = j->size, .source_snapshot = j->source_snapshot,
        .pvc_namespace = j->pvc_namespace, .pvc_name = j->pvc_name, .fs_type = j->fs_type,
        .params = j->params,
    };
    struct cat_volume *v = NULL;
    int r = vol_create(d, &a, &v, e);
    cat_volume_free(v);
    return r;
}

/* A volume source: the clone names A's volume as its source. */
static int finish_volume_clone(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = cat_volume_find(d->cat, j->name, &v);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "the new volume %s is gone", j->name);
    struct cat_volume u = *v;
    u.source_volume_id = j->source_volume;
    if ((r = cat_volume_update(d->cat, &u)) < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    struct op_err re = {0};
    if (cluster_clone_release(d, j->source_node, j->source_volume, j->name, &re) < 0)
        log_warn("cluster", "volume %s: node %s did not remove its hidden snapshot %s (its sweep "
                 "will): %s", j->name, j->source_node, j->source_snapshot, re.msg ? re.msg : "");
    op_err_clear(&re);
    return 0;
}

/* A volume source: the hidden snapshot A takes of it (the same on a retry). */
static int prepare_volume(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    char *id = NULL;
    int r = cluster_clone_prepare(d, j->source_node, j->source_volume, j->name, &id, e);
    if (r < 0)
        return r;
    pthread_mutex_lock(&cs->lock);
    free(j->source_snapshot);
    j->source_snapshot = id;
    job_set(cs, j, "pulling");
    pthread_mutex_unlock(&cs->lock);
    log_info("cluster", "volume %s: node %s holds hidden snapshot %s of volume %s for it", j->name,
             j->source_node, id, j->source_volume);
    return 0;
}

static int run(struct amberd *d, struct cluster_job *j, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    if (j->source_volume) {
        int r = prepare_volume(d, j, e);
        if (r < 0)
            return r;
    }
    /* A restore that was interrupted, or finished but not yet labelled. */
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if (!j->source_volume && cat_volume_find(d->cat, j->name, &v) == 0 && !v->source_snapshot_id) {
        int r = restore(d, j, e);
        return r < 0 ? r : finish_restored(d, j, e);
    }
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    if (cat_snapshot_get(d->cat, j->source_snapshot, &s) < 0 || s->state != CAT_SNAP_READY) {
        bool unreachable = false;
        int r = pull(d, j, &unreachable, e);
        if (r < 0 && (!unreachable || j->source_volume))
            return r;
        if (r < 0) {
            log_warn("cluster", "pull of snapshot %s from node %s failed: %s", j->source_snapshot,
                     j->source_node, e->msg ? e->msg : strerror(-r));
            op_err_clear(e);
            r = restore(d, j, e);
            return r < 0 ? r : finish_restored(d, j, e);
        }
    }
    const char *hold = getenv("AMBER_CLUSTER_HOLD_FIFO");
    int fd = hold ? open(hold, O_RDONLY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        char b;
        if (read(fd, &b, 1) < 0)
            log_debug("cluster", "hold FIFO: %m");
        close(fd);
    }
    pthread_mutex_lock(&cs->lock);
    job_set(cs, j, "cloning");
    pthread_mutex_unlock(&cs->lock);
    int r = make_clone(d, j, e);
    if (r < 0 || !j->source_volume)
        return r;
    return finish_volume_clone(d, j, e);
}

struct job_start {
    struct amberd *d;
    struct cluster_job *j;
};
static int job_spawn(struct amberd *d, const struct cat_cluster_job *row, struct cluster_job **ret,
                     struct op_err *e);

static void *job_main(void *arg)
{
    struct job_start *js = arg;
    struct amberd *d = js->d;
    struct cluster_job *j = js->j;
    free(js);
    struct cluster_state *cs = d->cluster;
    struct op_err e = {0};
    uint64_t t0 = now_mono_ns();
    int r = run(d, j, &e);
    /* A volume deleted since the last job may have left a replica that
     * nothing needs. Before `finished`: past it this thread must not take
     * cs->lock (job_free joins it under the lock). */
    cluster_replicas_collect(d, j->name);
    pthread_mutex_lock(&cs->lock);
    /* Finished: its row goes, unless amberd is stopping (which is what
     * interrupted it): then the next start resumes it. */
    if ((r == 0 || !cs->stopping) && cat_cluster_job_delete(d->cat, j->name) < 0)
        log_warn("cluster", "volume %s: catalog: %s", j->name, cat_errmsg(d->cat));
    j->finished = true;
    j->finished_ns = now_real_ns();
    if (r < 0) {
        j->failed = true;
        j->error_code = e.code ? e.code : rpc_code_from_errno(r);
        j->error = xstrdup(e.msg ? e.msg : strerror(-r));
        job_set(cs, j, "failed");
    } else {
        job_set(cs, j, "done");
    }
    pthread_mutex_unlock(&cs->lock);
    if (r < 0)
        log_warn("cluster", "volume %s from %s %s of node %s failed: %s", j->name,
                 j->source_volume ? "volume" : "snapshot", src_of(j), j->source_node,
                 e.msg ? e.msg : strerror(-r));
    else
        log_info("cluster", "volume %s from %s %s of node %s is ready seconds=%.3f", j->name,
                 j->source_volume ? "volume" : "snapshot", src_of(j), j->source_node,
                 (now_mono_ns() - t0) / 1e9);
    op_err_clear(&e);
    /* Free this thread's OpenSSL state now (TLS to peers), not in a
     * destructor after the join (LeakSanitizer reports those). */
    OPENSSL_thread_stop();
    return NULL;
}

/* Wait on cs->cond until the job finishes or `ms` pass (monotonic). */
static void wait_job(struct cluster_state *cs, struct cluster_job *j, uint32_t ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)ms * 1000000ull;
    ts.tv_sec += (time_t)(ns / 1000000000ull);
    ts.tv_nsec = (long)(ns % 1000000000ull);
    while (!j->finished && !cs->stopping)
        if (pthread_cond_timedwait(&cs->cond, &cs->lock, &ts) != 0)
            break;
}

static int pending(struct cluster_job *j, struct op_err *e)
{
    char a[32], b[32];
    const char *what = j->source_volume ? "volume" : "snapshot";
    if (j->bytes_total)
        return op_fail(e, RPC_ABORTED, -EINPROGRESS, "operation pending: volume %s is %s (%s %s "
                       "of node %s%s%s): %s of %s, %.0f%%", j->name, j->state, what, src_of(j),
                       j->source_node, j->archive ? ", archive " : "", j->archive ? j->archive : "",
                       format_size(j->bytes_done, a, sizeof a), format_size(j->bytes_total, b, sizeof b),
                       100.0 * (double)j->bytes_done / (double)j->bytes_total);
    return op_fail(e, RPC_ABORTED, -EINPROGRESS, "operation pending: volume %s is %s (%s %s of "
                   "node %s)", j->name, j->state, what, src_of(j), j->source_node);
}

int cluster_create_volume(struct amberd *d, const struct cluster_create_args *a,
                          struct cat_volume **ret, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return op_fail(e, RPC_FAILED_PRECONDITION, -ENOTCONN, "this node is not in cluster mode "
                       "(--cluster-ca)");
    if (!a->name || name_validate(a->name) < 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "invalid volume name");
    bool by_volume = a->source_volume && *a->source_volume;
    if (by_volume && a->source_snapshot && *a->source_snapshot)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "a snapshot or a volume source, not both");
    if (by_volume && !uuid_is_valid(a->source_volume))
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "source_volume: a volume id");
    if (!by_volume && (!a->source_snapshot || !uuid_is_valid(a->source_snapshot)))
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "source_snapshot: a snapshot id");
    if (!a->source_node || name_validate(a->source_node) < 0)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "source_node: a node name");

    /* Done already (by a job, or an earlier daemon): the volume. */
    struct cat_volume *v = NULL;
    pthread_mutex_lock(&cs->lock);
    struct cluster_job *j = job_find(cs, a->name);
    bool running = j && !j->finished;
    pthread_mutex_unlock(&cs->lock);
    if (!running && cat_volume_find(d->cat, a->name, &v) == 0) {
        if (v->state == CAT_VOL_READY && v->source_snapshot_id &&
            (!by_volume || (v->source_volume_id && strcmp(v->source_volume_id, a->source_volume) == 0))) {
            /* A finished job stays listed (amberctl cluster jobs) until
             * the name is made again. */
            *ret = v;
            return 0;
        }
        cat_volume_free(v);
        v = NULL;
    }

    pthread_mutex_lock(&cs->lock);
    j = job_find(cs, a->name);
    if (j && j->finished) {
        /* Report a failure once, then forget it: the next call retries. */
        int r = 0;
        if (j->failed)
            r = op_fail(e, j->error_code, rpc_errno_from_code(j->error_code) ?: -EIO, "%s", j->error);
        bool failed = j->failed;
        job_unlink(cs, j);
        job_free(j);
        j = NULL;
        if (failed) {
            pthread_mutex_unlock(&cs->lock);
            return r;
        }
        /* Done, but the volume is gone since (deleted): make it again. */
    }
    if (j) {
        if (by_volume != !!j->source_volume ||
            strcmp(src_of(j) ? src_of(j) : "", by_volume ? a->source_volume : a->source_snapshot) != 0) {
            int r = op_fail(e, RPC_ALREADY_EXISTS, -EEXIST, "volume %s is being made from another "
                            "source (%s %s)", a->name, j->source_volume ? "volume" : "snapshot",
                            nz(src_of(j)));
            pthread_mutex_unlock(&cs->lock);
            return r;
        }
        wait_job(cs, j, a->wait_ms);
        if (!j->finished) {
            int r = pending(j, e);
            pthread_mutex_unlock(&cs->lock);
            return r;
        }
        pthread_mutex_unlock(&cs->lock);
        return cluster_create_volume(d, a, ret, e);    /* it just finished */
    }
    if (cs->stopping) {
        pthread_mutex_unlock(&cs->lock);
        return op_fail(e, RPC_UNAVAILABLE, -ESHUTDOWN, "amberd is stopping");
    }
    struct cat_cluster_job row = {
        .name = (char *)a->name, .source_node = (char *)a->source_node,
        .source_snapshot = by_volume ? NULL : (char *)a->source_snapshot,
        .source_volume = by_volume ? (char *)a->source_volume : NULL,
        .pvc_namespace = (char *)a->pvc_namespace, .pvc_name = (char *)a->pvc_name,
        .fs_type = (char *)a->fs_type, .params = (char *)a->params, .size_bytes = a->size,
        .started_ns = now_real_ns(), .attempts = 1,
    };
    int r = job_spawn(d, &row, &j, e);
    if (r == 0)
        r = pending(j, e);
    pthread_mutex_unlock(&cs->lock);
    return r;
}

/* Under cs->lock: a job for row (recorded in the catalog first, so that a
 * stop or a crash before it finishes starts it again), on its thread. */
static int job_spawn(struct amberd *d, const struct cat_cluster_job *row, struct cluster_job **ret,
                     struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    int r = cat_cluster_job_put(d->cat, row);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    struct cluster_job *j = xcalloc(1, sizeof *j);
    j->name = xstrdup(row->name);
    j->source_node = xstrdup(row->source_node);
    j->source_snapshot = dupz(row->source_snapshot);
    j->source_volume = dupz(row->source_volume);
    j->pvc_namespace = dupz(row->pvc_namespace);
    j->pvc_name = dupz(row->pvc_name);
    j->fs_type = dupz(row->fs_type);
    j->params = dupz(row->params);
    j->size = row->size_bytes;
    j->state = j->source_volume ? "snapshotting" : "pulling";
    j->started_ns = row->started_ns;
    j->attempts = row->attempts;
    j->next = cs->jobs;
    cs->jobs = j;
    struct job_start *js = xcalloc(1, sizeof *js);
    js->d = d;
    js->j = j;
    r = pthread_create(&j->thread, NULL, job_main, js);
    j->joinable = r == 0;
    if (r != 0) {
        cat_cluster_job_delete(d->cat, j->name);
        job_unlink(cs, j);
        job_free(j);
        free(js);
        return op_fail(e, RPC_RESOURCE_EXHAUSTED, -r, "cannot start the job: %s", strerror(r));
    }
    log_info("cluster", "volume %s: copying %s %s from node %s in the background%s", j->name,
             j->source_volume ? "volume" : "snapshot", src_of(j), j->source_node,
             j->attempts > 1 ? " (again, after a restart)" : "");
    *ret = j;
    return 0;
}

int cluster_jobs_resume(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return 0;
    struct cat_cluster_job *rows = NULL;
    size_t n = 0;
    int r = cat_cluster_job_list(d->cat, &rows, &n);
    if (r < 0)
        return log_error_errno(r, "cluster", "catalog: %s", cat_errmsg(d->cat));
    pthread_mutex_lock(&cs->lock);
    for (size_t i = 0; i < n; i++) {
        struct cluster_job *j = NULL;
        struct op_err e = {0};
        rows[i].attempts++;
        if (!job_find(cs, rows[i].name) && job_spawn(d, &rows[i], &j, &e) < 0)
            log_warn("cluster", "volume %s: cannot resume its copy: %s", rows[i].name,
                     e.msg ? e.msg : "");
        op_err_clear(&e);
        cat_cluster_job_clear(&rows[i]);
    }
    pthread_mutex_unlock(&cs->lock);
    free(rows);
    return 0;
}

/* --- views ---------------------------------------------------------------------- */

void cluster_job_info_free(struct cluster_job_info *j)
{
    free(j->name);
    free(j->state);
    free(j->source_node);
    free(j->source_snapshot);
    free(j->source_volume);
    free(j->archive);
    free(j->error);
    *j = (struct cluster_job_info){0};
}

static void info_of(const struct cluster_job *j, struct cluster_job_info *o)
{
    *o = (struct cluster_job_info){
        .name = xstrdup(j->name), .state = xstrdup(j->state),
        .source_node = xstrdup(j->source_node), .source_snapshot = xstrdup(nz(j->source_snapshot)),
        .source_volume = xstrdup(nz(j->source_volume)),
        .archive = xstrdup(nz(j->archive)), .error = xstrdup(nz(j->error)),
        .error_code = j->error_code, .bytes_done = j->bytes_done, .bytes_total = j->bytes_total,
        .bytes_resumed = j->bytes_resumed, .bytes_on_wire = j->bytes_on_wire,
        .started_ns = j->started_ns, .finished_ns = j->finished_ns, .attempts = j->attempts,
        .snapshots_moved = j->snapshots_moved,
    };
}

int cluster_job_get(struct amberd *d, const char *name, struct cluster_job_info *ret)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return -ENOENT;
    pthread_mutex_lock(&cs->lock);
    struct cluster_job *j = job_find(cs, name);
    if (j)
        info_of(j, ret);
    pthread_mutex_unlock(&cs->lock);
    return j ? 0 : -ENOENT;
}

int cluster_job_list(struct amberd *d, struct cluster_job_info **ret, size_t *n)
{
    struct cluster_state *cs = d->cluster;
    *ret = NULL;
    *n = 0;
    if (!cs)
        return 0;
    pthread_mutex_lock(&cs->lock);
    size_t k = 0;
    for (struct cluster_job *j = cs->jobs; j; j = j->next)
        k++;
    struct cluster_job_info *v = xcalloc(k ? k : 1, sizeof *v);
    k = 0;
    for (struct cluster_job *j = cs->jobs; j; j = j->next)
        info_of(j, &v[k++]);
    pthread_mutex_unlock(&cs->lock);
    *ret = v;
    *n = k;
    return 0;
}

void cluster_jobs_free(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    /* Running jobs see `stopping` at their next progress step; wait (they
     * use the catalog, which closes after us). A peer that stopped
     * answering mid-call can hold this up: say so once; SIGKILL is safe
     * (the next start resumes the copy when the provisioner retries). */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    bool warned = false;
    pthread_mutex_lock(&cs->lock);
    for (;;) {
        unsigned busy = 0;
        for (struct cluster_job *j = cs->jobs; j; j = j->next)
            busy += !j->finished;
        if (!busy)
            break;
        if (warned) {
            pthread_cond_wait(&cs->cond, &cs->lock);
        } else if (pthread_cond_timedwait(&cs->cond, &cs->lock, &ts) != 0) {
            log_warn("cluster", "stopping: waiting for %u copy job(s) talking to peers", busy);
            warned = true;
        }
    }
    while (cs->jobs) {
        struct cluster_job *j = cs->jobs;
        cs->jobs = j->next;
        job_free(j);
    }
    pthread_mutex_unlock(&cs->lock);
}
