/* scoped.c: per-pod API sockets bound to a Kubernetes namespace.
 *
 * A pod that mounts an Amber API volume (CSI inline ephemeral volume with
 * amber.csi.dev/api: "true") gets a unix socket at TARGET/api.sock, where
 * TARGET is NodePublishVolume's target path. amber-csi asks for it over
 * the node socket (OpenScopedSocket) with the pod's namespace from kubelet;
 * amberd records it in the catalog (pod_sockets) and listens there with the
 * scoped method table below and the namespace as the listener's user data.
 * CloseScopedSocket (NodeUnpublishVolume) closes and forgets it; at start,
 * sockets whose target directory still exists are opened again.
 *
 * Scope enforcement is by construction: every handler resolves every name
 * and id through scope_volume()/scope_snapshot(), which answer NOT_FOUND,
 * with the same message as for a name that exists nowhere, for anything
 * outside the namespace; a request is then rebuilt from resolved ids before
 * it reaches the daemon's operations. The caller sees its volumes as
 * pvc/NAME; node-level facts (pool, devices, other volumes' ids in
 * source fields, StorageClass params) are blanked. Only GetInfo, Health,
 * GetVolume, ListVolumes, CreateSnapshot(s), GetSnapshot, ListSnapshots,
 * Diff and VolumeHistory exist here; volume writes and snapshot deletes answer
 * PERMISSION_DENIED; anything else (pool, peers, schedules) is UNIMPLEMENTED
 * because the table does not have it. */
#include <string.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/limits.h"
#include "snapd/pipeline/pipeline.h"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }
static const char *NS(struct rpc_call *c) { return ((struct scope *)rpc_call_listener_data(c))->ns; }

/* --- resolution inside the scope ------------------------------------------ */

static int not_found_vol(struct rpc_call *c, const char *ref)
{
    return rpc_error(c, RPC_NOT_FOUND, "volume %s not found", ref);
}

static int not_found_snap(struct rpc_call *c, const char *ref)
{
    return rpc_error(c, RPC_NOT_FOUND, "snapshot %s not found", ref);
}

static bool vol_in_scope(const struct cat_volume *v, const char *ns)
{
    return v->pvc_namespace && strcmp(v->pvc_namespace, ns) == 0 && v->pvc_name &&
           v->state != CAT_VOL_DELETING;
}

/* A volume of namespace ns: "pvc/NAME", "pvc/NS/NAME" (NS that one), an
 * id, or Amber's name. NOT_FOUND otherwise. */
int scoped_find_volume(struct rpc_call *c, const char *ns, const char *ref, struct cat_volume **ret)
{
    struct amberd *d = D(c);
    struct cat_volume *v = NULL;
    int r;
    if (!ref || !*ref)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a volume is required");
    if (strncmp(ref, "pvc/", 4) == 0) {
        const char *rest = ref + 4, *slash = strchr(rest, '/');
        if (!slash) {
            r = cat_volume_find_pvc(d->cat, ns, rest, &v);
        } else if ((size_t)(slash - rest) == strlen(ns) && strncmp(rest, ns, strlen(ns)) == 0) {
            r = cat_volume_find_pvc(d->cat, ns, slash + 1, &v);
        } else {
            r = -ENOENT;
        }
    } else {
        r = cat_volume_find(d->cat, ref, &v);
    }
    if (r < 0 || !vol_in_scope(v, ns)) {
        cat_volume_free(v);
        return not_found_vol(c, ref);
    }
    *ret = v;
    return 0;
}

static int scope_volume(struct rpc_call *c, const char *ref, struct cat_volume **ret)
{
    return scoped_find_volume(c, NS(c), ref, ret);
}

/* Visible: a snapshot of the namespace's volume, or of its VolumeSnapshot
 * (the catalog's pvc_namespace filter, the same rule for lists). */
static bool snap_in_scope(struct amberd *d, const struct cat_snapshot *s, const char *ns)
{
    if (s->state == CAT_SNAP_DELETING)
        return false;
    if (s->k8s_namespace && strcmp(s->k8s_namespace, ns) == 0)
        return true;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    return cat_volume_get(d->cat, s->volume_id, &v) == 0 && v->pvc_namespace &&
           strcmp(v->pvc_namespace, ns) == 0;
}

/* A snapshot namespace ns may see: an id, VOL@NAME (VOL as
 * scoped_find_volume), or a NAME unique among the namespace's volumes'
 * snapshots. */
int scoped_find_snapshot(struct rpc_call *c, const char *ns, const char *ref, struct cat_snapshot **ret)
{
    struct amberd *d = D(c);
    struct cat_snapshot *s = NULL;
    if (!ref || !*ref)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a snapshot is required");
    const char *at = strrchr(ref, '@');
    if (uuid_is_valid(ref)) {
        if (cat_snapshot_get(d->cat, ref, &s) < 0)
            s = NULL;
    } else if (at) {
        _cleanup_free_ char *vref = strndup(ref, (size_t)(at - ref));
        _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
        int r = scoped_find_volume(c, ns, vref, &v);
        if (r < 0)
            return not_found_snap(c, ref);
        if (cat_snapshot_find(d->cat, v->id, at + 1, &s) < 0)
            s = NULL;
    } else {
        struct cat_volume_filter f = { .pvc_namespace = ns };
        struct cat_page pg = {0};
        _cleanup_(cat_volume_list_free) struct cat_volume_list vl = {0};
        if (cat_volume_list(d->cat, &f, &pg, &vl) < 0)
            return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
        for (size_t i = 0; i < vl.n; i++) {
            struct cat_snapshot *x = NULL;
            if (cat_snapshot_find(d->cat, vl.items[i].id, ref, &x) < 0)
                continue;
            if (s) {
                cat_snapshot_free(s);
                cat_snapshot_free(x);
                return rpc_error(c, RPC_INVALID_ARGUMENT,
                                 "snapshot name %s is used by several volumes: say pvc/NAME@%s", ref, ref);
            }
            s = x;
        }
    }
    if (!s || !snap_in_scope(d, s, ns)) {
        cat_snapshot_free(s);
        return not_found_snap(c, ref);
    }
    *ret = s;
    return 0;
}

static int scope_snapshot(struct rpc_call *c, const char *ref, struct cat_snapshot **ret)
{
    return scoped_find_snapshot(c, NS(c), ref, ret);
}

/* --- messages ----------------------------------------------------------------- */

static int send_volume(struct rpc_call *c, const struct cat_volume *v)
{
    Amber__V1__Volume m = AMBER__V1__VOLUME__INIT;
    _cleanup_free_ char *name = xasprintf("pvc/%s", v->pvc_name);
    struct pool_file_info fi = {0};
    if (pool_stat(D(c)->pool, v->id, NULL, &fi) == 0)
        m.allocated_bytes = fi.allocated;
    free(fi.device);
    uint64_t n = 0;
    cat_snapshot_count(D(c)->cat, v->id, &n);
    m.id = v->id;
    m.name = name;
    m.size_bytes = v->size_bytes;
    m.state = (char *)cat_vol_state_to_string(v->state);
    m.created_ns = (int64_t)v->created_ns;
    m.pvc_namespace = v->pvc_namespace;
    m.pvc_name = v->pvc_name;
    m.fs_type = (char *)(v->fs_type ? v->fs_type : "");
    m.snapshots = (uint32_t)n;
    return rpc_call_send(c, &m.base);
}

/* The name a scoped caller knows the snapshot's volume by. */
static char *snap_vol_name(struct amberd *d, const struct cat_snapshot *s)
{
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if (cat_volume_get(d->cat, s->volume_id, &v) == 0 && v->pvc_name)
        return xasprintf("pvc/%s", v->pvc_name);
    return xstrdup("");
}

static void snap_pb(struct amberd *d, const struct cat_snapshot *s, struct apb_snapshot *ps, char **vname)
{
    *vname = snap_vol_name(d, s);
    apb_snapshot(s, *vname, ps);
    ps->m.origin = "local";
}

/* How a scoped socket shows a snapshot (snap_pb), for api_snapshots. */
struct scoped_pb {
    struct apb_snapshot ps;     /* first: the message */
    char *vname;
};

static void scoped_fill(struct rpc_call *c, const struct cat_snapshot *s, void *item)
{
    struct scoped_pb *x = item;
    snap_pb(D(c), s, &x->ps, &x->vname);
}

static void scoped_clear(void *item)
{
    struct scoped_pb *x = item;
    apb_snapshot_clear(&x->ps);
    free(x->vname);
}

static const struct api_snap_view scoped_view = {
    .size = sizeof(struct scoped_pb), .fill = scoped_fill, .clear = scoped_clear,
};

static int send_snapshot(struct rpc_call *c, const struct cat_snapshot *s)
{
    struct apb_snapshot ps;
    _cleanup_free_ char *vn = NULL;
    snap_pb(D(c), s, &ps, &vn);
    int r = rpc_call_send(c, &ps.m.base);
    apb_snapshot_clear(&ps);
    return r;
}

/* --- handlers --------------------------------------------------------------- */

static int h_get_info(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = D(c);
    _cleanup_free_ char *scope = xasprintf("namespace:%s", NS(c));
    struct cat_volume_filter vf = { .pvc_namespace = NS(c) };
    struct cat_snapshot_filter sf = { .pvc_namespace = NS(c) };
    struct cat_page pg = {0};
    _cleanup_(cat_volume_list_free) struct cat_volume_list vl = {0};
    _cleanup_(cat_snapshot_list_free) struct cat_snapshot_list sl = {0};
    cat_volume_list(d->cat, &vf, &pg, &vl);
    cat_snapshot_list(d->cat, &sf, &pg, &sl);
    Amber__V1__GetInfoResponse r = AMBER__V1__GET_INFO_RESPONSE__INIT;
    r.version = AMBER_VERSION;
    r.node_id = d->node_id ? d->node_id : "";
    r.backend = (char *)pool_backend_name(d->pool);
    r.volumes = (uint32_t)vl.n;
    r.snapshots = (uint32_t)sl.n;
    r.format_version = POOL_FORMAT_VERSION;
    r.scope = scope;
    return rpc_call_send(c, &r.base);
}

static int h_health(struct rpc_call *c, const ProtobufCMessage *m)
{
    Amber__V1__HealthResponse r = AMBER__V1__HEALTH_RESPONSE__INIT;
    r.ok = true;
    r.message = "ok";
    return rpc_call_send(c, &r.base);
}

static int h_get_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeRef *q = (const void *)m;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = scope_volume(c, q->volume, &v);
    return r < 0 ? r : send_volume(c, v);
}

static int h_list_volumes(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ListVolumesRequest *q = (const void *)m;
    struct amberd *d = D(c);
    Amber__V1__ListVolumesResponse out = AMBER__V1__LIST_VOLUMES_RESPONSE__INIT;
    if (*q->pvc_namespace && strcmp(q->pvc_namespace, NS(c)) != 0)
        return rpc_call_send(c, &out.base);    /* nothing else exists */
    struct cat_volume_filter f = { .pvc_namespace = NS(c) };
    struct cat_page pg = { .after = *q->starting_token ? q->starting_token : NULL,
                           .limit = q->max_entries };
    _cleanup_(cat_volume_list_free) struct cat_volume_list vl = {0};
    int r = cat_volume_list(d->cat, &f, &pg, &vl);
    if (r == -EINVAL)
        return rpc_error(c, RPC_ABORTED, "invalid starting_token %s", q->starting_token);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    size_t n = 0;
    Amber__V1__Volume *vs = xcalloc(vl.n ? vl.n : 1, sizeof *vs);
    Amber__V1__Volume **pp = xcalloc(vl.n ? vl.n : 1, sizeof *pp);
    char **names = xcalloc(vl.n ? vl.n : 1, sizeof *names);
    for (size_t i = 0; i < vl.n; i++) {
        const struct cat_volume *v = &vl.items[i];
        if (!vol_in_scope(v, NS(c)))
            continue;
        Amber__V1__Volume x = AMBER__V1__VOLUME__INIT;
        struct pool_file_info fi = {0};
        if (pool_stat(d->pool, v->id, NULL, &fi) == 0)
            x.allocated_bytes = fi.allocated;
        free(fi.device);
        uint64_t ns = 0;
        cat_snapshot_count(d->cat, v->id, &ns);
        names[n] = xasprintf("pvc/%s", v->pvc_name);
        x.id = v->id;
        x.name = names[n];
        x.size_bytes = v->size_bytes;
        x.state = (char *)cat_vol_state_to_string(v->state);
        x.created_ns = (int64_t)v->created_ns;
        x.pvc_namespace = v->pvc_namespace;
        x.pvc_name = v->pvc_name;
        x.fs_type = (char *)(v->fs_type ? v->fs_type : "");
        x.snapshots = (uint32_t)ns;
        vs[n] = x;
        pp[n] = &vs[n];
        n++;
    }
    out.volumes = pp;
    out.n_volumes = n;
    out.next_token = vl.next ? vl.next : "";
    r = rpc_call_send(c, &out.base);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(vs);
    free(pp);
    return r;
}

static int denied(struct rpc_call *c, const ProtobufCMessage *m)
{
    return rpc_error(c, RPC_PERMISSION_DENIED, "%s is not allowed on a namespace-scoped socket",
                     rpc_call_method(c));
}

/* Snapshots of the scope's volumes only; the request is rebuilt from
 * resolved ids, and a VolumeSnapshot reference is forced into the caller's
 * namespace (or the snapshot would become visible to another one). */
static int create(struct rpc_call *c, Amber__V1__CreateSnapshotRequest **qs, size_t n,
                  struct cat_snapshot **out)
{
    struct amberd *d = D(c);
    if (n == 0 || n > 64)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "1 to 64 volumes at once");
    struct cat_volume **vols = xcalloc(n, sizeof *vols);
    struct snap_create_args *a = xcalloc(n, sizeof *a);
    struct cat_label **labels = xcalloc(n, sizeof *labels);
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const Amber__V1__CreateSnapshotRequest *q = qs[i];
        if ((r = scope_volume(c, q->volume, &vols[i])) < 0)
            break;
        if (q->n_labels > CAT_LABELS_MAX) {
            r = rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %d labels", CAT_LABELS_MAX);
            break;
        }
        labels[i] = xcalloc(q->n_labels ? q->n_labels : 1, sizeof *labels[i]);
        for (size_t k = 0; k < q->n_labels && r == 0; k++) {
            const char *own = label_reserved(q->labels[k]->key);
            if (cat_label_validate(q->labels[k]->key, q->labels[k]->value) < 0)
                r = rpc_error(c, RPC_INVALID_ARGUMENT, "invalid label \"%s\"", q->labels[k]->key);
            else if (own)
                r = rpc_error(c, RPC_INVALID_ARGUMENT, "label \"%s\": the prefix %s is amber's own",
                              q->labels[k]->key, own);
            labels[i][k] = (struct cat_label){ q->labels[k]->key, q->labels[k]->value };
        }
        a[i] = (struct snap_create_args){
            .volume = vols[i]->id, .name = q->name, .labels = labels[i], .n_labels = q->n_labels,
            .freeze = q->freeze, .freeze_timeout_ms = q->freeze_timeout_ms,
            .k8s_namespace = *q->k8s_name ? NS(c) : NULL,
            .k8s_name = *q->k8s_name ? q->k8s_name : NULL,
        };
    }
    if (r == 0) {
        struct op_err e = {0};
        r = snap_create_many(d, a, n, out, &e);
        if (r < 0) {
            int code = e.code ? e.code : rpc_code_from_errno(r);
            r = rpc_error(c, code, "%s", e.msg ? e.msg : strerror(-r));
            op_err_clear(&e);
        }
    }
    for (size_t i = 0; i < n; i++) {
        cat_volume_free(vols[i]);
        free(labels[i]);
    }
    free(vols);
    free(labels);
    free(a);
    return r;
}

static int h_create_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    Amber__V1__CreateSnapshotRequest *q = (void *)m;
    struct cat_snapshot *s = NULL;
    int r = create(c, &q, 1, &s);
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
    int r = create(c, q->snapshots, n, s);
    if (r == 0)
        r = api_send_created(c, &scoped_view, s, n);
    for (size_t i = 0; i < n; i++)
        cat_snapshot_free(s[i]);
    free(s);
    return r;
}

static int h_get_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = scope_snapshot(c, q->snapshot, &s);
    return r < 0 ? r : send_snapshot(c, s);
}

static int h_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ListSnapshotsRequest *q = (const void *)m;
    struct amberd *d = D(c);
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    _cleanup_(cat_snapshot_list_free) struct cat_snapshot_list sl = {0};
    int r;
    if (*q->volume && (r = scope_volume(c, q->volume, &v)) < 0)
        return r;
    if (*q->snapshot) {
        struct cat_snapshot *s = NULL;
        if (cat_snapshot_get(d->cat, q->snapshot, &s) == 0 && snap_in_scope(d, s, NS(c)) &&
            (!v || strcmp(s->volume_id, v->id) == 0)) {
            sl.items = s;
            sl.n = 1;
        } else {
            cat_snapshot_free(s);
        }
    } else {
        if (q->n_labels > CAT_FILTER_LABELS_MAX)
            return rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %d label filters", CAT_FILTER_LABELS_MAX);
        struct cat_label *labels = xcalloc(q->n_labels ? q->n_labels : 1, sizeof *labels);
        for (size_t i = 0; i < q->n_labels; i++) {
            if (cat_label_validate(q->labels[i]->key, q->labels[i]->value) < 0) {
                free(labels);
                return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid label \"%s\"", q->labels[i]->key);
            }
            labels[i] = (struct cat_label){ q->labels[i]->key, q->labels[i]->value };
        }
        struct cat_snapshot_filter f = {
            .volume_id = v ? v->id : NULL, .labels = labels, .n_labels = q->n_labels,
            .pvc_namespace = NS(c),
            .states = (1u << CAT_SNAP_READY) | (1u << CAT_SNAP_CREATING),
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
    api_snapshots_init(&a, &scoped_view, sl.n);
    for (size_t i = 0; i < sl.n; i++)
        api_snapshots_add(&a, c, &sl.items[i]);
    Amber__V1__ListSnapshotsResponse out = AMBER__V1__LIST_SNAPSHOTS_RESPONSE__INIT;
    out.snapshots = a.pp;
    out.n_snapshots = a.n;
    out.next_token = sl.next ? sl.next : "";
    r = rpc_call_send(c, &out.base);
    api_snapshots_clear(&a);
    if (*q->snapshot && sl.n == 1) {
        cat_snapshot_free(sl.items);
        sl.items = NULL;
        sl.n = 0;
    }
    return r;
}

static int h_diff(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__DiffRequest *q = (const void *)m;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *f = NULL, *t = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r;
    if (!*q->from && !*q->volume && !*q->to)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "diff needs a snapshot (from) or a volume");
    if (*q->from && (r = scope_snapshot(c, q->from, &f)) < 0)
        return r;
    if (*q->to && (r = scope_snapshot(c, q->to, &t)) < 0)
        return r;
    if (*q->volume && (r = scope_volume(c, q->volume, &v)) < 0)
        return r;
    /* A live-volume diff reads the volume: it must be the scope's too. */
    if (f && !t) {
        _cleanup_(cat_volume_freep) struct cat_volume *fv = NULL;
        if (cat_volume_get(D(c)->cat, f->volume_id, &fv) < 0 || !vol_in_scope(fv, NS(c)))
            return rpc_error(c, RPC_NOT_FOUND, "the volume of snapshot %s no longer exists: "
                             "name a second snapshot", q->from);
    }
    return api_diff_stream(c, f ? f->id : NULL, t ? t->id : NULL, v ? v->id : NULL);
}

static int h_volume_history(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__VolumeHistoryRequest *q = (const void *)m;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = scope_volume(c, q->volume, &v);
    if (r < 0)
        return r;
    _cleanup_free_ char *name = xasprintf("pvc/%s", v->pvc_name);
    return sched_history_send(c, v, name, q->max_entries);
}

#define M(name, in, out, kind, fn) \
    { "/amber.v1.Amber/" name, &amber__v1__##in##__descriptor, \
      &amber__v1__##out##__descriptor, kind, fn }

const struct rpc_method api_scoped_methods[] = {
    M("GetInfo", get_info_request, get_info_response, RPC_UNARY, h_get_info),
    M("Health", health_request, health_response, RPC_UNARY, h_health),
    M("GetVolume", volume_ref, volume, RPC_UNARY, h_get_volume),
    M("ListVolumes", list_volumes_request, list_volumes_response, RPC_UNARY, h_list_volumes),
    M("CreateSnapshot", create_snapshot_request, snapshot, RPC_UNARY, h_create_snapshot),
    M("CreateSnapshots", create_snapshots_request, create_snapshots_response, RPC_UNARY, h_create_snapshots),
    M("GetSnapshot", snapshot_ref, snapshot, RPC_UNARY, h_get_snapshot),
    M("ListSnapshots", list_snapshots_request, list_snapshots_response, RPC_UNARY, h_list_snapshots),
    M("Diff", diff_request, diff_response, RPC_SERVER_STREAM, h_diff),
    M("VolumeHistory", volume_history_request, volume_history_response, RPC_UNARY, h_volume_history),
    /* Known, and refused in so many words. */
    M("CreateVolume", create_volume_request, volume, RPC_UNARY, denied),
    M("ResizeVolume", resize_volume_request, volume, RPC_UNARY, denied),
    M("DeleteVolume", volume_ref, empty, RPC_UNARY, denied),
    M("AttachVolume", attach_volume_request, attach_volume_response, RPC_UNARY, denied),
    M("DetachVolume", attach_volume_request, empty, RPC_UNARY, denied),
    M("RevertVolume", revert_volume_request, volume, RPC_UNARY, denied),
    M("DeleteSnapshot", snapshot_ref, empty, RPC_UNARY, denied),
    M("LabelSnapshot", label_snapshot_request, snapshot, RPC_UNARY, denied),
    M("SetSchedule", set_schedule_request, schedule, RPC_UNARY, denied),
    M("RemoveSchedule", volume_ref, empty, RPC_UNARY, denied),
    M("OpenScopedSocket", open_scoped_socket_request, open_scoped_socket_response, RPC_UNARY, denied),
    M("CloseScopedSocket", close_scoped_socket_request, empty, RPC_UNARY, denied),
};
const size_t api_scoped_methods_n = ARRAY_SIZE(api_scoped_methods);
