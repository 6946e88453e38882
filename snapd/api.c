/* api.c: the node socket's gRPC handlers (amber.v1.Amber): decode the
 * request, call the operation (ops-*.c), encode the answer. Messages built
 * here point into catalog structs that live until the send returns. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "amber.pb-c.h"
#include "snapd/daemon.h"
#include "snapd/limits.h"
#include "snapd/pipeline/pipeline.h"
#include "snapd/cluster/cluster.h"
#include "snapd/store/store.h"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

/* Reply with an operation's error. */
static int fail(struct rpc_call *c, struct op_err *e, int r)
{
    int code = e->code ? e->code : rpc_code_from_errno(r);
    int ret = rpc_error(c, code, "%s", e->msg ? e->msg : strerror(-r));
    op_err_clear(e);
    return ret;
}

static char *nz(const char *s) { return (char *)(s ? s : ""); }

/* --- conversions ---------------------------------------------------------- */

struct pb_volume {
    Amber__V1__Volume m;
    char *device;
    char *replica;
    char *source_node;
};

static void volume_pb(struct amberd *d, const struct cat_volume *v, struct pb_volume *out)
{
    Amber__V1__Volume m = AMBER__V1__VOLUME__INIT;
    struct pool_file_info fi = {0};
    if (pool_stat(d->pool, v->id, NULL, &fi) == 0) {
        m.allocated_bytes = fi.allocated;
        out->device = fi.device;
    }
    uint64_t n = 0;
    cat_snapshot_count(d->cat, v->id, &n);
    m.id = v->id;
    m.name = v->name;
    m.size_bytes = v->size_bytes;
    m.device = nz(out->device);
    m.state = (char *)cat_vol_state_to_string(v->state);
    m.created_ns = (int64_t)v->created_ns;
    m.source_snapshot = nz(v->source_snapshot_id);
    m.source_volume = nz(v->source_volume_id);
    m.source_node = "";
    if (v->source_volume_id && v->source_snapshot_id) {
        /* A clone of another node's volume, through its hidden snapshot. */
        struct cat_snapshot *s = NULL;
        if (cat_snapshot_get(d->cat, v->source_snapshot_id, &s) == 0 && s->origin &&
            strcmp(s->origin, "local") != 0)
            m.source_node = out->source_node = xstrdup(s->origin);
        cat_snapshot_free(s);
    }
    m.pvc_namespace = nz(v->pvc_namespace);
    m.pvc_name = nz(v->pvc_name);
    m.fs_type = nz(v->fs_type);
    m.params = nz(v->params);
    m.snapshots = (uint32_t)n;
    if (v->replica_peer) {
        out->replica = xasprintf("%s/%s", v->replica_peer, nz(v->replica_source_id));
        m.replica_of = out->replica;
    } else {
        m.replica_of = "";
    }
    out->m = m;
}

static void volume_pb_clear(struct pb_volume *p)
{
    free(p->device);
    free(p->replica);
    free(p->source_node);
}

struct pb_snapshot {
    Amber__V1__Snapshot m;
    Amber__V1__Label *labels;
    Amber__V1__Label **plabels;
};

static void snapshot_pb(struct amberd *d, const struct cat_snapshot *s, struct pb_snapshot *out)
{
    Amber__V1__Snapshot m = AMBER__V1__SNAPSHOT__INIT;
    struct cat_store_info si = {0};
    m.resident = true;
    if (cat_store_get(d->cat, s->id, &si) == 0) {
        m.stored = si.manifest != NULL;
        m.resident = si.resident;
        cat_store_info_clear(&si);
    }
    m.id = s->id;
    m.name = s->name;
    m.volume_id = s->volume_id;
    m.volume_name = nz(s->volume_name);
    m.parent_id = nz(s->parent_id);
    m.created_ns = (int64_t)s->created_ns;
    m.size_bytes = s->size_bytes;
    m.state = (char *)cat_snap_state_to_string(s->state);
    m.origin = nz(s->origin);
    m.k8s_namespace = nz(s->k8s_namespace);
    m.k8s_name = nz(s->k8s_name);
    out->labels = xcalloc(s->n_labels, sizeof *out->labels);
    out->plabels = xcalloc(s->n_labels, sizeof *out->plabels);
    for (size_t i = 0; i < s->n_labels; i++) {
        Amber__V1__Label l = AMBER__V1__LABEL__INIT;
        l.key = s->labels[i].key;
        l.value = s->labels[i].value;
        out->labels[i] = l;
        out->plabels[i] = &out->labels[i];
    }
    m.n_labels = s->n_labels;
    m.labels = out->plabels;
    out->m = m;
}

static void snapshot_pb_clear(struct pb_snapshot *p)
{
    free(p->labels);
    free(p->plabels);
}

static void snapshot_fill(struct rpc_call *c, const struct cat_snapshot *s, void *item)
{
    snapshot_pb(D(c), s, item);
}

static void snapshot_clear(void *item)
{
    snapshot_pb_clear(item);
}

/* How the node socket shows a snapshot. */
static const struct api_snap_view node_view = {
    .size = sizeof(struct pb_snapshot), .fill = snapshot_fill, .clear = snapshot_clear,
};

void api_snapshots_init(struct api_snapshots *a, const struct api_snap_view *view, size_t cap)
{
    *a = (struct api_snapshots){
        .view = view, .pp = xcalloc(cap ? cap : 1, sizeof *a->pp),
        .items = xcalloc(cap ? cap : 1, view->size),
    };
}

/* Within the capacity given to api_snapshots_init. */
void api_snapshots_add(struct api_snapshots *a, struct rpc_call *c, const struct cat_snapshot *s)
{
    void *item = a->items + a->n * a->view->size;
    a->view->fill(c, s, item);
    a->pp[a->n++] = item;       /* the message is the item's first member */
}

void api_snapshots_clear(struct api_snapshots *a)
{
    for (size_t i = 0; i < a->n; i++)
        a->view->clear(a->items + i * a->view->size);
    free(a->items);
    free(a->pp);
    *a = (struct api_snapshots){0};
}

int api_send_created(struct rpc_call *c, const struct api_snap_view *view, struct cat_snapshot *const *s,
                     size_t n)
{
    struct api_snapshots a;
    api_snapshots_init(&a, view, n);
    for (size_t i = 0; i < n; i++)
        api_snapshots_add(&a, c, s[i]);
    Amber__V1__CreateSnapshotsResponse out = AMBER__V1__CREATE_SNAPSHOTS_RESPONSE__INIT;
    out.snapshots = a.pp;
    out.n_snapshots = a.n;
    int r = rpc_call_send(c, &out.base);
    api_snapshots_clear(&a);
    return r;
}

static int send_volume(struct rpc_call *c, const struct cat_volume *v)
{
    struct pb_volume pv = {0};
    volume_pb(D(c), v, &pv);
    int r = rpc_call_send(c, &pv.m.base);
    volume_pb_clear(&pv);
    return r;
}

static int send_snapshot(struct rpc_call *c, const struct cat_snapshot *s)
{
    struct pb_snapshot ps;
    snapshot_pb(D(c), s, &ps);
    int r = rpc_call_send(c, &ps.m.base);
    snapshot_pb_clear(&ps);
    return r;
}

/* Labels from the wire, validated; unless own_ok, none of amber's own
 * (label_reserved). *ret points into req (no copies). */
static int labels_in(struct rpc_call *c, Amber__V1__Label **in, size_t n, bool own_ok,
                     struct cat_label **ret)
{
    if (n > CAT_LABELS_MAX)
        return rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %d labels", CAT_LABELS_MAX);
    struct cat_label *l = xcalloc(n, sizeof *l);
    for (size_t i = 0; i < n; i++) {
        if (cat_label_validate(in[i]->key, in[i]->value) < 0) {
            free(l);
            return rpc_error(c, RPC_INVALID_ARGUMENT,
                             "invalid label \"%s\": keys are 1-128 bytes without '=' or control "
                             "characters, values up to 1024 bytes", in[i]->key);
        }
        const char *own = own_ok ? NULL : label_reserved(in[i]->key);
        if (own) {
            free(l);
            return rpc_error(c, RPC_INVALID_ARGUMENT, "label \"%s\": the prefix %s is amber's own",
                             in[i]->key, own);
        }
        l[i].key = in[i]->key;
        l[i].value = in[i]->value;
    }
    *ret = l;
    return 0;
}

/* --- info ------------------------------------------------------------------ */

static int h_get_info(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = D(c);
    Amber__V1__GetInfoResponse r = AMBER__V1__GET_INFO_RESPONSE__INIT;
    struct pool_space sp = {0};
    pool_get_space(d->pool, &sp);
    struct cat_volume_list vl = {0};
    cat_volume_list(d->cat, NULL, NULL, &vl);
    uint64_t nsnaps = 0;
    cat_snapshot_count(d->cat, NULL, &nsnaps);
    r.version = AMBER_VERSION;
    r.pool_path = d->pool_dir;
    r.backend = (char *)pool_backend_name(d->pool);
    r.pool_total_bytes = sp.total;
    r.pool_free_bytes = sp.free;
    r.pool_used_bytes = sp.total > sp.free ? sp.total - sp.free : 0;
    r.volumes = (uint32_t)vl.n;
    r.snapshots = (uint32_t)nsnaps;
    r.node_id = nz(d->node_id);
    r.fingerprint = nz(d->fingerprint);
    r.peer_address = nz(d->peer_address);
    r.format_version = POOL_FORMAT_VERSION;
    r.scope = "node";
    int ret = rpc_call_send(c, &r.base);
    cat_volume_list_free(&vl);
    return ret;
}

static int h_health(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = D(c);
    Amber__V1__HealthResponse r = AMBER__V1__HEALTH_RESPONSE__INIT;
    struct pool_space sp;
    int e = pool_get_space(d->pool, &sp);
    r.ok = e == 0 && cat_schema_version(d->cat) > 0;
    r.message = r.ok ? "ok" : "pool or catalog unavailable";
    return rpc_call_send(c, &r.base);
}

/* --- volumes ------------------------------------------------------------ */

static int h_create_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__CreateVolumeRequest *q = (const void *)m;
    struct op_err e = {0};
    struct vol_create_args a = {
        .name = q->name, .size = q->size_bytes, .source_snapshot = q->source_snapshot,
        .source_volume = q->source_volume, .pvc_namespace = *q->pvc_namespace ? q->pvc_namespace : NULL,
        .pvc_name = *q->pvc_name ? q->pvc_name : NULL, .fs_type = *q->fs_type ? q->fs_type : NULL,
        .params = *q->params ? q->params : NULL,
    };
    struct cat_schedule sp;
    const char *why = NULL;
    if (sched_params_parse(a.params, &sp, &why) < 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "%s", why);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_create(D(c), &a, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    sched_apply_params(D(c), v);   /* StorageClass snapshotEvery, snapshotKeep* */
    return send_volume(c, v);
}

static int h_get_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeRef *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(D(c), q->volume, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    return send_volume(c, v);
}

static int h_list_volumes(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ListVolumesRequest *q = (const void *)m;
    struct amberd *d = D(c);
    struct cat_volume_filter f = { .pvc_namespace = *q->pvc_namespace ? q->pvc_namespace : NULL };
    struct cat_page pg = { .after = *q->starting_token ? q->starting_token : NULL,
                           .limit = q->max_entries };
    struct cat_volume_list vl = {0};
    int r = cat_volume_list(d->cat, &f, &pg, &vl);
    if (r == -EINVAL)
        return rpc_error(c, RPC_ABORTED, "invalid starting_token %s", q->starting_token);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__ListVolumesResponse resp = AMBER__V1__LIST_VOLUMES_RESPONSE__INIT;
    struct pb_volume *pv = xcalloc(vl.n, sizeof *pv);
    Amber__V1__Volume **pp = xcalloc(vl.n, sizeof *pp);
    size_t np = 0;
    for (size_t i = 0; i < vl.n; i++) {
        /* The cluster's hidden replicas (cluster/replicas.c) only when asked for. */
        if (!q->all && cluster_volume_hidden(&vl.items[i]))
            continue;
        volume_pb(d, &vl.items[i], &pv[np]);
        pp[np] = &pv[np].m;
        np++;
    }
    resp.volumes = pp;
    resp.n_volumes = np;
    resp.next_token = nz(vl.next);
    r = rpc_call_send(c, &resp.base);
    for (size_t i = 0; i < np; i++)
        volume_pb_clear(&pv[i]);
    free(pv);
    free(pp);
    cat_volume_list_free(&vl);
    return r;
}

static int h_resize_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ResizeVolumeRequest *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_resize(D(c), q->volume, q->size_bytes, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    return send_volume(c, v);
}

static int h_delete_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeRef *q = (const void *)m;
    struct op_err e = {0};
    int r = vol_delete(D(c), q->volume, &e);
    if (r < 0)
        return fail(c, &e, r);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

static int h_attach_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__AttachVolumeRequest *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_free_ char *dev = NULL;
    int r = vol_attach(D(c), q->volume, q->snapshot, &dev, &e);
    if (r < 0)
        return fail(c, &e, r);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if ((r = vol_find(D(c), q->volume, &v, &e)) < 0)
        return fail(c, &e, r);
    struct pb_volume pv = {0};
    volume_pb(D(c), v, &pv);
    Amber__V1__AttachVolumeResponse out = AMBER__V1__ATTACH_VOLUME_RESPONSE__INIT;
    out.device = dev;
    out.volume = &pv.m;
    r = rpc_call_send(c, &out.base);
    volume_pb_clear(&pv);
    return r;
}

static int h_detach_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__AttachVolumeRequest *q = (const void *)m;
    struct op_err e = {0};
    int r = vol_detach(D(c), q->volume, q->snapshot, &e);
    if (r < 0)
        return fail(c, &e, r);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

static int h_revert_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__RevertVolumeRequest *q = (const void *)m;
    struct op_err e = {0};
    int r = vol_revert(D(c), q->volume, q->snapshot, &e);
    if (r < 0)
        return fail(c, &e, r);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if ((r = vol_find(D(c), q->volume, &v, &e)) < 0)
        return fail(c, &e, r);
    return send_volume(c, v);
}

/* --- snapshots ---------------------------------------------------------- */

/* own_ok: amber's own labels may be set (label_reserved). */
static int create_snapshots(struct rpc_call *c, Amber__V1__CreateSnapshotRequest **qs, size_t n,
                            bool own_ok, struct cat_snapshot **out)
{
    struct snap_create_args *a = xcalloc(n ? n : 1, sizeof *a);
    struct cat_label **labels = xcalloc(n ? n : 1, sizeof *labels);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        r = labels_in(c, qs[i]->labels, qs[i]->n_labels, own_ok, &labels[i]);
        a[i] = (struct snap_create_args){
            .volume = qs[i]->volume, .name = qs[i]->name, .labels = labels[i],
            .n_labels = qs[i]->n_labels, .freeze = qs[i]->freeze,
            .freeze_timeout_ms = qs[i]->freeze_timeout_ms,
            .k8s_namespace = *qs[i]->k8s_namespace ? qs[i]->k8s_namespace : NULL,
            .k8s_name = *qs[i]->k8s_name ? qs[i]->k8s_name : NULL,
        };
    }
    if (r == 0) {
        struct op_err e = {0};
        r = snap_create_many(D(c), a, n, out, &e);
        if (r < 0)
            r = fail(c, &e, r);
    }
    for (size_t i = 0; i < n; i++)
        free(labels[i]);
    free(labels);
    free(a);
    return r;
}

static int h_create_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    Amber__V1__CreateSnapshotRequest *q = (void *)m;
    struct cat_snapshot *s = NULL;
    int r = create_snapshots(c, &q, 1, false, &s);
    if (r < 0)
        return r;
    r = send_snapshot(c, s);
    cat_snapshot_free(s);
    return r;
}

static int h_create_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__CreateSnapshotsRequest *q = (const void *)m;
    size_t n = q->n_snapshots;
    if (n == 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "no volumes to snapshot");
    struct cat_snapshot **s = xcalloc(n, sizeof *s);
    /* amber-csi's group snapshots (csi/group.c) label their members
     * amber.csi.dev/group here, and nothing in the request tells its call
     * from another on the node socket yet. */
    int r = create_snapshots(c, q->snapshots, n, true, s);
    if (r == 0)
        r = api_send_created(c, &node_view, s, n);
    for (size_t i = 0; i < n; i++)
        cat_snapshot_free(s[i]);
    free(s);
    return r;
}

static int h_get_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    struct op_err e = {0};
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = snap_find(D(c), q->snapshot, &s, &e);
    if (r < 0)
        return fail(c, &e, r);
    return send_snapshot(c, s);
}

static int h_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ListSnapshotsRequest *q = (const void *)m;
    struct amberd *d = D(c);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    struct cat_snapshot_list sl = {0};
    int r;
    if (*q->volume) {
        struct op_err e = {0};
        if ((r = vol_find(d, q->volume, &v, &e)) < 0) {
            /* A volume that is gone still has snapshots: accept its id. */
            if (uuid_is_valid(q->volume)) {
                op_err_clear(&e);
            } else {
                return fail(c, &e, r);
            }
        }
    }
    if (*q->snapshot) {
        struct cat_snapshot *s = NULL;
        r = cat_snapshot_get(d->cat, q->snapshot, &s);
        if (r == 0) {
            sl.items = s;    /* a list of one, freed below */
            sl.n = 1;
        }
    } else {
        struct cat_label *labels = NULL;
        if ((r = labels_in(c, q->labels, q->n_labels, true, &labels)) < 0)
            return r;
        if (q->n_labels > CAT_FILTER_LABELS_MAX) {
            free(labels);
            return rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %d label filters", CAT_FILTER_LABELS_MAX);
        }
        struct cat_snapshot_filter f = {
            .volume_id = v ? v->id : (*q->volume ? q->volume : NULL),
            .labels = labels, .n_labels = q->n_labels,
        };
        struct cat_page pg = { .after = *q->starting_token ? q->starting_token : NULL,
                               .limit = q->max_entries };
        r = cat_snapshot_list(d->cat, &f, &pg, &sl);
        free(labels);
        if (r == -EINVAL)
            return rpc_error(c, RPC_ABORTED, "invalid starting_token %s", q->starting_token);
        if (r < 0)
            return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    }
    struct api_snapshots a;
    api_snapshots_init(&a, &node_view, sl.n);
    for (size_t i = 0; i < sl.n; i++) {
        /* Internal snapshots (cluster/clone.c) only when asked for. */
        if (!*q->snapshot && !q->all && cluster_snapshot_hidden(&sl.items[i]))
            continue;
        api_snapshots_add(&a, c, &sl.items[i]);
    }
    Amber__V1__ListSnapshotsResponse out = AMBER__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
    out.snapshots = a.pp;
    out.n_snapshots = a.n;
    out.next_token = nz(sl.next);
    r = rpc_call_send(c, &out.base);
    api_snapshots_clear(&a);
    if (*q->snapshot && sl.n == 1) {
        cat_snapshot_free(sl.items);
        sl.items = NULL;
        sl.n = 0;
    }
    cat_snapshot_list_free(&sl);
    return r;
}

static int h_delete_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    struct op_err e = {0};
    int r = snap_delete(D(c), q->snapshot, &e);
    if (r < 0)
        return fail(c, &e, r);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

/* Diff streams extents in batches. */
#define DIFF_BATCH 4096
struct diff_ctx {
    struct rpc_call *call;
    Amber__V1__Extent ext[DIFF_BATCH];
    Amber__V1__Extent *pext[DIFF_BATCH];
    size_t n;
    uint64_t total;
    const char *method;
    bool sent_any;
};

static int diff_flush(struct diff_ctx *x)
{
    Amber__V1__DiffResponse out = AMBER__V1__DIFF_RESPONSE__INIT;
    out.extents = x->pext;
    out.n_extents = x->n;
    out.changed_bytes = x->total;
    out.method = (char *)(x->method ? x->method : "");
    x->n = 0;
    x->sent_any = true;
    return rpc_call_send(x->call, &out.base);
}

static int diff_cb(uint64_t off, uint64_t len, void *data)
{
    struct diff_ctx *x = data;
    Amber__V1__Extent e = AMBER__V1__EXTENT__INIT;
    e.offset = off;
    e.length = len;
    x->ext[x->n] = e;
    x->pext[x->n] = &x->ext[x->n];
    x->n++;
    x->total += len;
    if (x->n == DIFF_BATCH)
        return diff_flush(x);
    return 0;
}

int api_diff_stream(struct rpc_call *c, const char *from, const char *to, const char *vol)
{
    struct diff_ctx *x = xcalloc(1, sizeof *x);
    x->call = c;
    struct op_err e = {0};
    int r = snap_diff(D(c), from, to, vol, diff_cb, x, &x->method, &e);
    if (r == 0 && (x->n > 0 || !x->sent_any))
        r = diff_flush(x);
    free(x);
    if (r < 0 && e.msg)
        return fail(c, &e, r);
    op_err_clear(&e);
    return r;
}

static int h_diff(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__DiffRequest *q = (const void *)m;
    if (!*q->from && !*q->volume && !*q->to)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "diff needs a snapshot (from) or a volume");
    return api_diff_stream(c, q->from, q->to, q->volume);
}

#define M(name, in, out, kind, fn) \
    { "/amber.v1.Amber/" name, &amber__v1__##in##__descriptor, \
      &amber__v1__##out##__descriptor, kind, fn }

const struct rpc_method api_node_methods[] = {
    M("GetInfo", get_info_request, get_info_response, RPC_UNARY, h_get_info),
    M("Health", health_request, health_response, RPC_UNARY, h_health),
    M("CreateVolume", create_volume_request, volume, RPC_UNARY, h_create_volume),
    M("GetVolume", volume_ref, volume, RPC_UNARY, h_get_volume),
    M("ListVolumes", list_volumes_request, list_volumes_response, RPC_UNARY, h_list_volumes),
    M("ResizeVolume", resize_volume_request, volume, RPC_UNARY, h_resize_volume),
    M("DeleteVolume", volume_ref, empty, RPC_UNARY, h_delete_volume),
    M("AttachVolume", attach_volume_request, attach_volume_response, RPC_UNARY, h_attach_volume),
    M("DetachVolume", attach_volume_request, empty, RPC_UNARY, h_detach_volume),
    M("RevertVolume", revert_volume_request, volume, RPC_UNARY, h_revert_volume),
    M("CreateSnapshot", create_snapshot_request, snapshot, RPC_UNARY, h_create_snapshot),
    M("CreateSnapshots", create_snapshots_request, create_snapshots_response, RPC_UNARY, h_create_snapshots),
    M("GetSnapshot", snapshot_ref, snapshot, RPC_UNARY, h_get_snapshot),
    M("ListSnapshots", list_snapshots_request, list_snapshots_response, RPC_UNARY, h_list_snapshots),
    M("DeleteSnapshot", snapshot_ref, empty, RPC_UNARY, h_delete_snapshot),
    M("Diff", diff_request, diff_response, RPC_SERVER_STREAM, h_diff),
};
const size_t api_node_methods_n = ARRAY_SIZE(api_node_methods);

/* Every table the node socket serves. Subsystems add theirs here. */
static const struct {
    const struct rpc_method *m;
    const size_t *n;
} node_tables[] = {
    { api_node_methods, &api_node_methods_n },
    { api_archive_methods, &api_archive_methods_n },
    { api_schedule_methods, &api_schedule_methods_n },       /* schedule-api.c */
    { api_scoped_admin_methods, &api_scoped_admin_methods_n }, /* scoped-admin.c */
    { peer_admin_methods, &peer_admin_methods_n },           /* sync-api.c */
    { api_check_methods, &api_check_methods_n },             /* selfcheck.c */
    { cluster_api_methods, &cluster_api_methods_n },         /* cluster/cluster-api.c */
    { cluster_group_api_methods, &cluster_group_api_methods_n }, /* cluster/node-group.c */
    { store_api_methods, &store_api_methods_n },             /* store/store-api.c */
};

struct rpc_method *api_node_all_methods(size_t *ret_n)
{
    size_t n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(node_tables); i++)
        n += *node_tables[i].n;
    struct rpc_method *all = xcalloc(n, sizeof *all);
    size_t k = 0;
    for (size_t i = 0; i < ARRAY_SIZE(node_tables); i++)
        for (size_t j = 0; j < *node_tables[i].n; j++)
            all[k++] = node_tables[i].m[j];
    *ret_n = n;
    return all;
}

int api_send_volume(struct rpc_call *c, const struct cat_volume *v)
{
    return send_volume(c, v);
}

int api_send_snapshot(struct rpc_call *c, const struct cat_snapshot *s)
{
    return send_snapshot(c, s);
}
