/* ops-snapshot.c: snapshot operations with intents: create (one volume or
 * several at one instant, optionally frozen), delete, and changed extents.
 * A snapshot records its parent (the volume's previous snapshot), the
 * pool's generation token for later diffs, its labels and size. */
#include <string.h>
#include <time.h>

#include "amber/crashpoint.h"
#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/limits.h"
#include "snapd/store/store.h"

static void gen_name(char *buf, size_t len, uint64_t ns, unsigned n)
{
    time_t t = (time_t)(ns / 1000000000ULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char ts[32];
    strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
    if (n == 0)
        snprintf(buf, len, "snap-%s-%03u", ts, (unsigned)(ns / 1000000ULL % 1000));
    else
        snprintf(buf, len, "snap-%s-%03u-%u", ts, (unsigned)(ns / 1000000ULL % 1000), n);
}

static bool labels_equal(const struct cat_snapshot *s, const struct cat_label *l, size_t n)
{
    if (s->n_labels != n)
        return false;
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (size_t j = 0; j < s->n_labels && !found; j++)
            found = strcmp(s->labels[j].key, l[i].key) == 0 &&
                    strcmp(s->labels[j].value, l[i].value) == 0;
        if (!found)
            return false;
    }
    return true;
}

struct snap_job {
    struct cat_volume *vol;
    struct cat_snapshot row;
    char id[37];
    char name[80];
    int64_t intent;
    char *dev;          /* mounted device to freeze, or NULL */
    bool made;
};

struct freeze_ctx {
    struct amberd *d;
    struct snap_job *jobs;
    size_t n, next;     /* next job whose device to freeze */
    uint64_t timeout_ms;
};

static int take_all(struct freeze_ctx *fc)
{
    for (size_t i = 0; i < fc->n; i++) {
        struct snap_job *j = &fc->jobs[i];
        int r = pool_snap_create(fc->d->pool, j->vol->id, j->id, &j->row.generation);
        if (r < 0)
            return r;
        j->made = true;
        crashpoint("snapshot-create:pool-one");
    }
    return 0;
}

/* Freeze every mounted filesystem in turn (nesting), snapshot all, thaw. */
static int freeze_step(void *data)
{
    struct freeze_ctx *fc = data;
    while (fc->next < fc->n && !fc->jobs[fc->next].dev)
        fc->next++;
    if (fc->next == fc->n)
        return take_all(fc);
    const char *dev = fc->jobs[fc->next++].dev;
    int r = pool_freeze_run(dev, fc->timeout_ms, freeze_step, fc);
    if (r == -ENOENT)      /* attached but not mounted (a block volume) */
        return freeze_step(fc);
    return r;
}

int snap_create_many(struct amberd *d, const struct snap_create_args *a, size_t n,
                     struct cat_snapshot **ret, struct op_err *e)
{
    if (n == 0 || n > 64)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "1 to 64 volumes at once");
    struct snap_job *jobs = xcalloc(n, sizeof *jobs);
    size_t locked = 0, existing = 0;
    bool any_freeze = false, gated = false;
    int r = 0;
    uint64_t now = now_real_ns();

    for (size_t i = 0; i < n; i++) {
        struct snap_job *j = &jobs[i];
        r = vol_find(d, a[i].volume, &j->vol, e);
        if (r < 0)
            goto out;
        if (j->vol->replica_peer) {
            r = op_fail(e, RPC_FAILED_PRECONDITION, -EROFS,
                        "volume %s is a replica of %s: its snapshots come from the source",
                        j->vol->name, j->vol->replica_peer);
            goto out;
        }
        if (j->vol->state != CAT_VOL_READY) {
            r = op_fail(e, RPC_ABORTED, -EBUSY, "volume %s is %s", j->vol->name,
                        cat_vol_state_to_string(j->vol->state));
            goto out;
        }
        for (size_t k = 0; k < i; k++)
            if (strcmp(jobs[k].vol->id, j->vol->id) == 0) {
                r = op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "volume %s named twice", j->vol->name);
                goto out;
            }
        for (size_t k = 0; k < a[i].n_labels; k++)
            if (cat_label_validate(a[i].labels[k].key, a[i].labels[k].value) < 0) {
                r = op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "invalid label %s", a[i].labels[k].key);
                goto out;
            }
        if (a[i].n_labels > CAT_LABELS_MAX) {
            r = op_fail(e, RPC_RESOURCE_EXHAUSTED, -E2BIG, "at most %d labels", CAT_LABELS_MAX);
            goto out;
        }
        if (a[i].name && *a[i].name) {
            if (name_validate(a[i].name) < 0) {
                r = op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                            "invalid snapshot name \"%s\": 1-63 characters of A-Z a-z 0-9 . _ -",
                            a[i].name);
                goto out;
            }
            snprintf(j->name, sizeof j->name, "%s", a[i].name);
            struct cat_snapshot *old = NULL;
            if (cat_snapshot_find(d->cat, j->vol->id, j->name, &old) == 0) {
                bool same = old->state == CAT_SNAP_READY && labels_equal(old, a[i].labels, a[i].n_labels);
                if (!same) {
                    r = op_fail(e, RPC_ALREADY_EXISTS, -EEXIST,
                                "snapshot %s of volume %s exists %s", j->name, j->vol->name,
                                old->state == CAT_SNAP_READY ? "with other labels" : "and is not ready");
                    cat_snapshot_free(old);
                    goto out;
                }
                ret[i] = old;      /* idempotent repeat */
                existing++;
                continue;
            }
        } else {
            for (unsigned k = 0;; k++) {
                gen_name(j->name, sizeof j->name, now, k);
                struct cat_snapshot *old = NULL;
                if (cat_snapshot_find(d->cat, j->vol->id, j->name, &old) != 0)
                    break;
                cat_snapshot_free(old);
            }
        }
    }
    if (existing == n) {
        r = 0;
        goto out_keep;
    }
    if (existing > 0) {
        r = op_fail(e, RPC_ALREADY_EXISTS, -EEXIST, "some of the named snapshots exist already");
        goto out;
    }

    holdpoint("snapshot-create:lock");
    for (; locked < n; locked++) {
        r = busy_acquire(d, jobs[locked].vol->id, "snapshot", e);
        if (r < 0)
            goto out;
    }
    /* Counted under the volumes' locks: two creates cannot both see room
     * for the last one. */
    for (size_t i = 0; i < n; i++)
        if ((r = limit_snapshots(d, jobs[i].vol->id, jobs[i].vol->name, e)) < 0)
            goto out;
    /* The store's background work pauses until the snapshot is made and
     * recorded: its commit then carries none of it (store.h). */
    store_create_begin(d);
    gated = true;
    r = cat_begin(d->cat);
    if (r < 0)
        goto catalog_err;
    for (size_t i = 0; i < n && r == 0; i++) {
        struct snap_job *j = &jobs[i];
        struct cat_snapshot *parent = NULL;
        uuid_new(j->id);
        j->row = (struct cat_snapshot){
            .id = j->id, .volume_id = j->vol->id, .name = j->name,
            .created_ns = now, .size_bytes = j->vol->size_bytes, .state = CAT_SNAP_CREATING,
            .k8s_namespace = (char *)a[i].k8s_namespace, .k8s_name = (char *)a[i].k8s_name,
            .labels = (struct cat_label *)a[i].labels, .n_labels = a[i].n_labels,
        };
        if (cat_snapshot_latest(d->cat, j->vol->id, &parent) == 0) {
            j->row.parent_id = xstrdup(parent->id);
            cat_snapshot_free(parent);
        }
        r = cat_snapshot_add(d->cat, &j->row);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_SNAPSHOT_CREATE, j->id, NULL, &j->intent);
    }
    r = cat_end(d->cat, r);
    if (r < 0)
        goto catalog_err;
    crashpoint("snapshot-create:intent");

    struct freeze_ctx fc = { .d = d, .jobs = jobs, .n = n,
                             .timeout_ms = a[0].freeze_timeout_ms ? a[0].freeze_timeout_ms : 10000 };
    for (size_t i = 0; i < n; i++) {
        if (!a[i].freeze)
            continue;
        struct pool_file_info fi = {0};
        if (pool_stat(d->pool, jobs[i].vol->id, NULL, &fi) == 0 && fi.device) {
            jobs[i].dev = fi.device;
            any_freeze = true;
        }
    }
    uint64_t t0 = now_mono_ns();
    r = any_freeze ? freeze_step(&fc) : take_all(&fc);
    uint64_t took = now_mono_ns() - t0;
    crashpoint("snapshot-create:pool");
    if (r < 0) {
        int r2 = r;
        if (r == -ETIMEDOUT)
            op_fail(e, RPC_DEADLINE_EXCEEDED, r, "the filesystem freeze timed out; snapshot abandoned");
        else
            op_fail(e, r == -ENOSPC ? RPC_RESOURCE_EXHAUSTED : 0, r, "snapshot: %s", strerror(-r));
        cat_begin(d->cat);
        for (size_t i = 0; i < n; i++) {
            if (jobs[i].made)
                pool_snap_delete(d->pool, jobs[i].vol->id, jobs[i].id);
            cat_snapshot_delete(d->cat, jobs[i].id);
            cat_intent_delete(d->cat, jobs[i].intent);
        }
        cat_commit(d->cat);
        r = r2;
        goto out;
    }
    r = cat_begin(d->cat);
    if (r < 0)
        goto catalog_err;
    for (size_t i = 0; i < n && r == 0; i++) {
        jobs[i].row.state = CAT_SNAP_READY;
        r = cat_snapshot_update(d->cat, &jobs[i].row);
        if (r == 0)
            r = cat_intent_delete(d->cat, jobs[i].intent);
    }
    r = cat_end(d->cat, r);
    if (r < 0)
        goto catalog_err;
    crashpoint("snapshot-create:done");
    store_create_end(d);
    gated = false;
    store_kick(d);
    for (size_t i = 0; i < n; i++) {
        log_info("snapshot", "snapshot %s of %s id=%s%s took_ms=%.1f", jobs[i].name,
                 jobs[i].vol->name, jobs[i].id, jobs[i].dev ? " frozen" : "", took / 1e6);
        r = cat_snapshot_get(d->cat, jobs[i].id, &ret[i]);
        if (r < 0)
            goto catalog_err;
    }
    goto out;
catalog_err:
    r = op_fail(e, r == -EBUSY ? RPC_ABORTED : 0, r, "catalog: %s", cat_errmsg(d->cat));
out:
    if (r < 0)
        for (size_t i = 0; i < n; i++) {
            cat_snapshot_free(ret[i]);
            ret[i] = NULL;
        }
out_keep:
    if (gated)
        store_create_end(d);
    for (size_t i = 0; i < n; i++) {
        if (i < locked)
            busy_release(d, jobs[i].vol->id);
        cat_volume_free(jobs[i].vol);
        free(jobs[i].row.parent_id);
        free(jobs[i].dev);
    }
    free(jobs);
    return r;
}

int snap_delete(struct amberd *d, const char *ref, struct op_err *e)
{
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = snap_find(d, ref, &s, e);
    if (r < 0)
        return r;
    r = busy_acquire(d, s->volume_id, "snapshot delete", e);
    if (r < 0)
        return r;
    ballast_make_room(d);
    int64_t intent;
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_snapshot_set_state(d->cat, s->id, CAT_SNAP_DELETING);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_SNAPSHOT_DELETE, s->id, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    if (r < 0) {
        busy_release(d, s->volume_id);
        return op_fail(e, r == -EBUSY ? RPC_ABORTED : 0, r, "catalog: %s", cat_errmsg(d->cat));
    }
    crashpoint("snapshot-delete:intent");
    /* Keep the chain's exact extents exact without this snapshot. */
    struct cat_store_info si = {0};
    cat_store_get(d->cat, s->id, &si);
    store_snapshot_deleting(d, s);
    r = pool_snap_delete(d->pool, s->volume_id, s->id);
    if (r == -ENOENT)
        r = 0;
    crashpoint("snapshot-delete:pool");
    if (r < 0) {
        op_fail(e, r == -EBUSY ? RPC_FAILED_PRECONDITION : 0, r,
                "snapshot %s: %s", s->name, r == -EBUSY ? "attached (mounted for browsing?)" : strerror(-r));
        cat_begin(d->cat);
        cat_snapshot_set_state(d->cat, s->id, CAT_SNAP_READY);
        cat_tombstone_delete(d->cat, s->id);    /* S is back in the chain itself */
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        busy_release(d, s->volume_id);
        cat_store_info_clear(&si);
        return r;
    }
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_snapshot_delete(d->cat, s->id);
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        r = cat_end(d->cat, r);
    }
    busy_release(d, s->volume_id);
    if (r < 0) {
        cat_store_info_clear(&si);
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    }
    store_snapshot_deleted(d, si.manifest);
    cat_store_info_clear(&si);
    log_info("snapshot", "deleted snapshot %s id=%s", s->name, s->id);
    ballast_ensure(d);
    store_kick(d);
    return 0;
}

int snap_diff(struct amberd *d, const char *from, const char *to, const char *vol,
              pool_extent_cb cb, void *userdata, const char **ret_method, struct op_err *e)
{
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *f = NULL, *t = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r;
    /* A deleted base: its tombstone keeps its place in the chain. */
    bool gone = false;
    if (from && *from && (r = snap_find(d, from, &f, e)) < 0) {
        if (e->code != RPC_NOT_FOUND || store_tombstone_find(d, from, &f) < 0)
            return r;
        op_err_clear(e);
        gone = true;
    }
    if (to && *to && (r = snap_find(d, to, &t, e)) < 0)
        return r;
    if (gone && t && strcmp(t->volume_id, f->volume_id) == 0 && t->created_ns < f->created_ns)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                       "the base snapshot %s (deleted) is newer than %s", from, to);
    if (!f && !t && (r = vol_find(d, vol, &v, e)) < 0)
        return r;
    if (f) {
        if (t && strcmp(t->volume_id, f->volume_id) != 0)
            return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                           "snapshots %s and %s are of different volumes", from, to);
        if (!t && (r = cat_volume_get(d->cat, f->volume_id, &v)) < 0)
            return op_fail(e, RPC_NOT_FOUND, -ENOENT,
                           "the volume of snapshot %s no longer exists: name a second snapshot", from);
    }
    /* The store knows the exact extents of snapshots moved off the pool. */
    r = store_diff(d, f, t, v ? v->id : NULL, cb, userdata, ret_method);
    if (r == -ENODATA)
        return op_fail(e, RPC_FAILED_PRECONDITION, r, "snapshot %s was deleted and the changed "
                       "extents after it were not recorded: ask for its successor's allocated "
                       "extents", from);
    if (r < 0 && r != -ECANCELED)
        return op_fail(e, 0, r, "diff: %s", strerror(-r));
    return r;
}
