/* schedule-api.c: the node socket's time-machine RPCs: SetSchedule,
 * ListSchedules, RemoveSchedule, VolumeHistory (each snapshot with the
 * bytes changed since the previous one, from the pool's exact diffs) and
 * LabelSnapshot (hold=true keeps a snapshot out of retention). */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/limits.h"
#include "snapd/pipeline/pipeline.h"
#include "snapd/store/store.h"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

static int fail(struct rpc_call *c, struct op_err *e, int r)
{
    int code = e->code ? e->code : rpc_code_from_errno(r);
    int ret = rpc_error(c, code, "%s", e->msg ? e->msg : strerror(-r));
    op_err_clear(e);
    return ret;
}

static void schedule_pb(const struct cat_schedule *s, const char *vol_name, Amber__V1__Schedule *m)
{
    Amber__V1__Schedule x = AMBER__V1__SCHEDULE__INIT;
    x.volume_id = s->volume_id;
    x.volume_name = (char *)(vol_name ? vol_name : "");
    x.every_ms = s->every_ms;
    x.keep = s->keep;
    x.keep_hourly = s->keep_hourly;
    x.keep_daily = s->keep_daily;
    x.keep_weekly = s->keep_weekly;
    x.next_due_ns = (int64_t)s->next_due_ns;
    x.last_run_ns = (int64_t)s->last_run_ns;
    x.created_ns = (int64_t)s->created_ns;
    *m = x;
}

static int h_set_schedule(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SetScheduleRequest *q = (const void *)m;
    struct amberd *d = D(c);
    if (q->every_ms < 1000)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "every: at least 1s");
    if (q->every_ms > 366ULL * 86400000ULL)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "every: at most a year");
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(d, q->volume, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    _cleanup_(cat_schedule_freep) struct cat_schedule *old = NULL;
    uint64_t now = now_real_ns();
    struct cat_schedule s = {
        .volume_id = v->id, .every_ms = q->every_ms, .keep = q->keep,
        .keep_hourly = q->keep_hourly, .keep_daily = q->keep_daily, .keep_weekly = q->keep_weekly,
        /* The first snapshot one period from now; a changed period restarts the phase. */
        .next_due_ns = now + q->every_ms * 1000000ULL,
    };
    if (cat_schedule_get(d->cat, v->id, &old) == 0) {
        s.last_run_ns = old->last_run_ns;
        s.created_ns = old->created_ns;
        if (old->every_ms == q->every_ms)
            s.next_due_ns = old->next_due_ns;
    }
    r = cat_schedule_put(d->cat, &s);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    char ev[32];
    sched_format_every(s.every_ms, ev, sizeof ev);
    log_info("schedule", "volume %s: snapshots every %s keep=%u hourly=%u daily=%u weekly=%u",
             v->name, ev, s.keep, s.keep_hourly, s.keep_daily, s.keep_weekly);
    sched_kick(d);
    _cleanup_(cat_schedule_freep) struct cat_schedule *now_s = NULL;
    if (cat_schedule_get(d->cat, v->id, &now_s) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__Schedule out;
    schedule_pb(now_s, v->name, &out);
    return rpc_call_send(c, &out.base);
}

static int h_list_schedules(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = D(c);
    struct cat_schedule_list l = {0};
    if (cat_schedule_list(d->cat, 0, &l) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__Schedule *ms = xcalloc(l.n ? l.n : 1, sizeof *ms);
    Amber__V1__Schedule **pp = xcalloc(l.n ? l.n : 1, sizeof *pp);
    struct cat_volume **vols = xcalloc(l.n ? l.n : 1, sizeof *vols);
    for (size_t i = 0; i < l.n; i++) {
        cat_volume_get(d->cat, l.items[i].volume_id, &vols[i]);
        schedule_pb(&l.items[i], vols[i] ? vols[i]->name : NULL, &ms[i]);
        pp[i] = &ms[i];
    }
    Amber__V1__ListSchedulesResponse out = AMBER__V1__LIST_SCHEDULES_RESPONSE__INIT;
    out.schedules = pp;
    out.n_schedules = l.n;
    int r = rpc_call_send(c, &out.base);
    for (size_t i = 0; i < l.n; i++)
        cat_volume_free(vols[i]);
    free(vols);
    free(ms);
    free(pp);
    cat_schedule_list_free(&l);
    return r;
}

static int h_remove_schedule(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeRef *q = (const void *)m;
    struct amberd *d = D(c);
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(d, q->volume, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    r = cat_schedule_delete(d->cat, v->id);
    if (r == -ENOENT)
        return rpc_error(c, RPC_NOT_FOUND, "volume %s has no schedule", v->name);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    log_info("schedule", "volume %s: schedule removed", v->name);
    sched_kick(d);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

int sched_history_send(struct rpc_call *c, const struct cat_volume *v, const char *vol_name,
                       uint32_t max_entries)
{
    struct amberd *d = D(c);
    int r;
    struct cat_snapshot_filter f = { .volume_id = v->id, .states = 1u << CAT_SNAP_READY };
    struct cat_page pg = {0};
    _cleanup_(cat_snapshot_list_free) struct cat_snapshot_list sl = {0};
    if (cat_snapshot_list(d->cat, &f, &pg, &sl) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    size_t first = max_entries && max_entries < sl.n ? sl.n - max_entries : 0;
    size_t n = sl.n - first;
    Amber__V1__HistoryEntry *es = xcalloc(n ? n : 1, sizeof *es);
    Amber__V1__HistoryEntry **pe = xcalloc(n ? n : 1, sizeof *pe);
    struct apb_snapshot *ps = xcalloc(n ? n : 1, sizeof *ps);
    for (size_t k = 0; k < n; k++) {
        size_t i = first + k;
        Amber__V1__HistoryEntry x = AMBER__V1__HISTORY_ENTRY__INIT;
        uint64_t bytes = 0;
        const char *method = "";
        /* Recorded exact extents for snapshots in the store, else the pool. */
        if (store_changed_bytes(d, i ? &sl.items[i - 1] : NULL, &sl.items[i], &bytes, &method) < 0) {
            method = "";
            bytes = 0;
        }
        apb_snapshot(&sl.items[i], vol_name, &ps[k]);
        x.snapshot = &ps[k].m;
        x.changed_bytes = bytes;
        x.method = (char *)method;
        es[k] = x;
        pe[k] = &es[k];
        if (rpc_call_cancelled(c))
            break;
    }
    Amber__V1__VolumeHistoryResponse out = AMBER__V1__VOLUME_HISTORY_RESPONSE__INIT;
    out.entries = pe;
    out.n_entries = n;
    r = rpc_call_send(c, &out.base);
    for (size_t k = 0; k < n; k++)
        apb_snapshot_clear(&ps[k]);
    free(ps);
    free(es);
    free(pe);
    return r;
}

static int h_volume_history(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeHistoryRequest *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(D(c), q->volume, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    return sched_history_send(c, v, v->name, q->max_entries);
}

static int h_label_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__LabelSnapshotRequest *q = (const void *)m;
    struct amberd *d = D(c);
    struct op_err e = {0};
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = snap_find(d, q->snapshot, &s, &e);
    if (r < 0)
        return fail(c, &e, r);
    for (size_t i = 0; i < q->n_set; i++)
        if (cat_label_validate(q->set[i]->key, q->set[i]->value) < 0)
            return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid label \"%s\"", q->set[i]->key);
    /* Amber's own labels are its to set and remove (label_reserved). */
    for (size_t i = 0; i < q->n_set + q->n_remove; i++) {
        const char *key = i < q->n_set ? q->set[i]->key : q->remove[i - q->n_set];
        const char *own = label_reserved(key);
        if (own)
            return rpc_error(c, RPC_INVALID_ARGUMENT, "label \"%s\": the prefix %s is amber's own", key, own);
    }
    /* The new set: the old labels not removed or replaced, then the new. */
    size_t cap = s->n_labels + q->n_set, n = 0;
    struct cat_label *l = xcalloc(cap ? cap : 1, sizeof *l);
    for (size_t i = 0; i < s->n_labels; i++) {
        bool drop = false;
        for (size_t j = 0; j < q->n_remove && !drop; j++)
            drop = strcmp(q->remove[j], s->labels[i].key) == 0;
        for (size_t j = 0; j < q->n_set && !drop; j++)
            drop = strcmp(q->set[j]->key, s->labels[i].key) == 0;
        if (!drop)
            l[n++] = s->labels[i];
    }
    for (size_t j = 0; j < q->n_set; j++) {
        bool dup = false;
        for (size_t k = j + 1; k < q->n_set && !dup; k++)
            dup = strcmp(q->set[j]->key, q->set[k]->key) == 0;
        if (!dup)
            l[n++] = (struct cat_label){ q->set[j]->key, q->set[j]->value };
    }
    if (n > CAT_LABELS_MAX) {
        free(l);
        return rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %d labels", CAT_LABELS_MAX);
    }
    r = cat_snapshot_set_labels(d->cat, s->id, l, n);
    free(l);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s2 = NULL;
    if (cat_snapshot_get(d->cat, s->id, &s2) < 0)
        return rpc_error(c, RPC_NOT_FOUND, "snapshot %s not found", q->snapshot);
    struct apb_snapshot ps;
    apb_snapshot(s2, NULL, &ps);
    r = rpc_call_send(c, &ps.m.base);
    apb_snapshot_clear(&ps);
    return r;
}

#define M(name, in, out, kind, fn) \
    { "/amber.v1.Amber/" name, &amber__v1__##in##__descriptor, \
      &amber__v1__##out##__descriptor, kind, fn }

const struct rpc_method api_schedule_methods[] = {
    M("SetSchedule", set_schedule_request, schedule, RPC_UNARY, h_set_schedule),
    M("ListSchedules", list_schedules_request, list_schedules_response, RPC_UNARY, h_list_schedules),
    M("RemoveSchedule", volume_ref, empty, RPC_UNARY, h_remove_schedule),
    M("VolumeHistory", volume_history_request, volume_history_response, RPC_UNARY, h_volume_history),
    M("LabelSnapshot", label_snapshot_request, snapshot, RPC_UNARY, h_label_snapshot),
};
const size_t api_schedule_methods_n = ARRAY_SIZE(api_schedule_methods);
