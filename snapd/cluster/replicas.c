/* replicas.c: the hidden replicas "c-<snapshot id>" a node keeps of the
 * snapshots it pulled from other nodes (jobs.c), which its new volumes are
 * clones of: not listed (ListVolumes skips them unless asked for all), and
 * collected when nothing needs them. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/cluster/cluster.h"

bool cluster_volume_hidden(const struct cat_volume *v)
{
    return v->replica_peer && strncmp(v->name, "c-", 2) == 0 && uuid_is_valid(v->name + 2);
}

/* The rule (README "Hidden replicas"): a hidden replica is needed while a
 * copy job runs on this node (it may be pulling into it) or while a volume
 * of this node is a clone of one of its snapshots (the replica is then the
 * delta base of the next copy of that chain: only what changed since moves).
 * Once the last such volume is deleted nothing needs it: its snapshots go,
 * then the replica. Inside a replica that stays, a copy of another node's
 * hidden snapshot (cluster/clone.c) that is neither a clone's source nor
 * the replica's newest snapshot (the next delta's base) goes too: its
 * origin is gone already. */

static bool jobs_running(struct amberd *d, const char *except)
{
    struct cluster_job_info *v = NULL;
    size_t n = 0;
    bool busy = false;
    cluster_job_list(d, &v, &n);
    for (size_t i = 0; i < n; i++) {
        busy |= strcmp(v[i].state, "done") != 0 && strcmp(v[i].state, "failed") != 0 &&
                (!except || strcmp(v[i].name, except) != 0);
        cluster_job_info_free(&v[i]);
    }
    free(v);
    return busy;
}

/* Every volume of the catalog (all pages). */
static int all_volumes(struct amberd *d, struct cat_volume_list *ret)
{
    *ret = (struct cat_volume_list){0};
    _cleanup_free_ char *after = NULL;
    for (;;) {
        struct cat_page pg = { .after = after };
        struct cat_volume_list l = {0};
        int r = cat_volume_list(d->cat, NULL, &pg, &l);
        if (r < 0) {
            cat_volume_list_free(ret);
            return r;
        }
        if (l.n) {
            ret->items = xrealloc(ret->items, (ret->n + l.n) * sizeof *ret->items);
            memcpy(ret->items + ret->n, l.items, l.n * sizeof *l.items);
            ret->n += l.n;
        }
        free(l.items);
        free(after);
        after = l.next;
        if (!after)
            return 0;
    }
}

static bool source_of(const struct cat_volume_list *vl, const char *snap_id)
{
    for (size_t i = 0; i < vl->n; i++) {
        const char *src = vl->items[i].source_snapshot_id;
        if (src && vl->items[i].state != CAT_VOL_DELETING && strcmp(src, snap_id) == 0)
            return true;
    }
    return false;
}

static bool cloned_from(const struct cat_volume_list *vl, const struct cat_snapshot_list *sl)
{
    for (size_t k = 0; k < sl->n; k++)
        if (source_of(vl, sl->items[k].id))
            return true;
    return false;
}

/* The copies of hidden snapshots nothing needs (see the rule). */
static void prune_hidden(struct amberd *d, const struct cat_volume *rv, const struct cat_volume_list *vl,
                         const struct cat_snapshot_list *sl)
{
    for (size_t k = 0; k + 1 < sl->n; k++) {
        const struct cat_snapshot *s = &sl->items[k];
        if (!cluster_snapshot_hidden(s) || source_of(vl, s->id))
            continue;
        struct op_err e = {0};
        if (snap_delete(d, s->id, &e) == 0)
            log_info("cluster", "replica %s: removed %s, a copy of a hidden snapshot nothing needs",
                     rv->name, s->name);
        else
            log_warn("cluster", "replica %s: cannot remove %s: %s", rv->name, s->name,
                     e.msg ? e.msg : "");
        op_err_clear(&e);
    }
}

static int drop_replica(struct amberd *d, const struct cat_volume *rv, struct cat_snapshot_list *sl)
{
    struct op_err e = {0};
    int r = 0;
    /* Newest first: each delete leaves the rest of the chain exact. */
    for (size_t k = sl->n; k-- > 0 && r == 0;)
        r = snap_delete(d, sl->items[k].id, &e);
    if (r == 0)
        r = vol_delete(d, rv->id, &e);
    if (r < 0)
        log_warn("cluster", "cannot collect hidden replica %s: %s", rv->name, e.msg ? e.msg : strerror(-r));
    else
        log_info("cluster", "collected hidden replica %s (%zu snapshot(s)): no volume of this node is "
                 "a clone of it any more", rv->name, sl->n);
    op_err_clear(&e);
    return r;
}

int cluster_replicas_collect(struct amberd *d, const char *except_job)
{
    if (!d->cluster || jobs_running(d, except_job))
        return 0;
    struct cat_volume_list vl = {0};
    int r = all_volumes(d, &vl);
    if (r < 0)
        return r;
    int n = 0;
    for (size_t i = 0; i < vl.n; i++) {
        const struct cat_volume *rv = &vl.items[i];
        if (!cluster_volume_hidden(rv) || rv->state != CAT_VOL_READY)
            continue;
        struct cat_snapshot_filter f = { .volume_id = rv->id };
        struct cat_snapshot_list sl = {0};
        if (cat_snapshot_list(d->cat, &f, NULL, &sl) < 0)
            continue;
        if (!cloned_from(&vl, &sl)) {
            if (drop_replica(d, rv, &sl) == 0)
                n++;
        } else {
            prune_hidden(d, rv, &vl, &sl);
        }
        cat_snapshot_list_free(&sl);
    }
    cat_volume_list_free(&vl);
    return n;
}
