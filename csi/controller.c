/* controller.c: the CSI Controller service's volume RPCs, answered by the
 * node's amberd (snapshot RPCs are in snapshot.c).
 *
 * Every Amber volume lives on one node, so the "controller" runs on every
 * node next to csi-provisioner --node-deployment and answers only for its
 * node: accessible_topology is always {topology.<driver>/node: NODE}, and a
 * request whose requisite topology excludes this node is RESOURCE_EXHAUSTED
 * (the spec's code for "cannot provision in the accessible topology").
 *
 * Idempotency by name: a CSI name maps to an amberd volume name
 * (csi_map_name); CreateVolume first looks that name up and returns the
 * existing volume when it is compatible with the request (capacity within
 * [required, limit], same content source, same filesystem), ALREADY_EXISTS
 * otherwise; only then does it ask amberd to create (amberd is itself
 * idempotent by name, which covers a race with another plugin instance).
 *
 * Expansion: csi-resizer has no node-local mode; with leader election one
 * resizer in the cluster would call ControllerExpandVolume on its own
 * node's plugin, which does not hold the volume. So by default we do NOT
 * advertise the controller EXPAND_VOLUME capability: csi-resizer then uses
 * its "trivial resizer" (it only records the new size), and kubelet calls
 * NodeExpandVolume on the node where the volume is staged, which grows the
 * volume in amberd and then its filesystem (node.c). ControllerExpandVolume
 * is still served, and --controller-expand advertises it for clusters where
 * every resizer talks to the node holding the volume (single node). */
#include <string.h>

#include "amber/log.h"
#include "csi/csi.h"

#define PVC_NS_KEY "csi.storage.k8s.io/pvc/namespace"
#define PVC_NAME_KEY "csi.storage.k8s.io/pvc/name"

/* --- conversions ------------------------------------------------------- */

/* A CSI Volume built from an amberd Volume; points into `v` and `p`. */
struct csi_vol_out {
    Csi__V1__Volume m;
    Csi__V1__VolumeContentSource src;
    Csi__V1__VolumeContentSource__SnapshotSource snap;
    Csi__V1__VolumeContentSource__VolumeSource vol;
    struct csi_topology topo;
    Csi__V1__Topology *ptopo[1];
    Csi__V1__Volume__VolumeContextEntry ctx[2];
    Csi__V1__Volume__VolumeContextEntry *pctx[2];
    char vid[CSI_HANDLE_MAX], sid[CSI_HANDLE_MAX], svid[CSI_HANDLE_MAX];
};

static void volume_out(struct csi *p, const Amber__V1__Volume *v, struct csi_vol_out *o)
{
    Csi__V1__Volume m = CSI__V1__VOLUME__INIT;
    m.capacity_bytes = (int64_t)v->size_bytes;
    csi_handle_fmt(p, v->id, o->vid);
    csi_handle_fmt(p, v->source_snapshot, o->sid);
    csi_handle_fmt(p, v->source_volume, o->svid);
    /* A clone of another node's volume (made through a hidden snapshot of
     * it, which is its source_snapshot here): its source is that volume. */
    bool remote_vol = *v->source_volume && *v->source_node;
    if (remote_vol)
        snprintf(o->svid, sizeof o->svid, "%s/%s", v->source_node, v->source_volume);
    m.volume_id = o->vid;
    if (*v->source_snapshot || *v->source_volume) {
        Csi__V1__VolumeContentSource s = CSI__V1__VOLUME_CONTENT_SOURCE__INIT;
        o->src = s;
        if (*v->source_snapshot && !remote_vol) {
            Csi__V1__VolumeContentSource__SnapshotSource ss =
                CSI__V1__VOLUME_CONTENT_SOURCE__SNAPSHOT_SOURCE__INIT;
            o->snap = ss;
            o->snap.snapshot_id = o->sid;
            o->src.type_case = CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_SNAPSHOT;
            o->src.snapshot = &o->snap;
        } else {
            Csi__V1__VolumeContentSource__VolumeSource vs =
                CSI__V1__VOLUME_CONTENT_SOURCE__VOLUME_SOURCE__INIT;
            o->vol = vs;
            o->vol.volume_id = o->svid;
            o->src.type_case = CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_VOLUME;
            o->src.volume = &o->vol;
        }
        m.content_source = &o->src;
    }
    csi_topology_init(p, &o->topo);
    o->ptopo[0] = &o->topo.t;
    m.accessible_topology = o->ptopo;
    m.n_accessible_topology = 1;
    size_t n = 0;
    Csi__V1__Volume__VolumeContextEntry e = CSI__V1__VOLUME__VOLUME_CONTEXT_ENTRY__INIT;
    o->ctx[n] = e;
    o->ctx[n].key = "amber.csi.dev/name";
    o->ctx[n].value = v->name;
    n++;
    if (*v->fs_type) {
        o->ctx[n] = e;
        o->ctx[n].key = "fsType";
        o->ctx[n].value = v->fs_type;
        n++;
    }
    for (size_t i = 0; i < n; i++)
        o->pctx[i] = &o->ctx[i];
    m.volume_context = o->pctx;
    m.n_volume_context = n;
    o->m = m;
}

/* The condition amberd's view implies: anything but "ready" is abnormal. */
static void volume_condition(const Amber__V1__Volume *v, Csi__V1__VolumeCondition *cond, char **msg)
{
    Csi__V1__VolumeCondition c = CSI__V1__VOLUME_CONDITION__INIT;
    *cond = c;
    cond->abnormal = strcmp(v->state, "ready") != 0;
    *msg = cond->abnormal ? xasprintf("amberd reports the volume as %s", v->state)
                          : xstrdup(*v->device ? "ready, attached" : "ready");
    cond->message = *msg;
}

/* The filesystem the request asks for by parameter, or NULL. */
static const char *param_fs(void *const *params, size_t n)
{
    const char *fs = csi_map_get(params, n, "fsType");
    if (!fs || !*fs)
        fs = csi_map_get(params, n, "csi.storage.k8s.io/fstype");
    return fs && *fs ? fs : NULL;
}

/* Parameters as a JSON object for amberd's catalog (no secrets here: they
 * come in a separate field that we never read). */
static char *params_json(void *const *params, size_t n)
{
    struct buf b = {0};
    buf_append(&b, "{", 1);
    for (size_t i = 0; i < n; i++) {
        const struct csi_kv *kv = params[i];
        if (i)
            buf_append(&b, ",", 1);
        buf_json_str(&b, kv->key);
        buf_append(&b, ":", 1);
        buf_json_str(&b, kv->value);
    }
    buf_append(&b, "}", 2);
    return (char *)b.data;
}

/* --- CreateVolume -------------------------------------------------------- */

struct create_req {
    uint64_t required, limit;   /* 0 = not given */
    const char *src_snapshot, *src_volume;
    uint64_t src_size;
    const char *fs_type;        /* "" for block-only requests */
    char *remote_node;          /* the snapshot is on this other node */
    char *src_id;               /* the source's amberd id (owned) */
};

static void create_req_clear(struct create_req *q)
{
    free(q->remote_node);
    free(q->src_id);
}

/* Whether an existing volume satisfies the request (else ALREADY_EXISTS). */
static bool compatible(const Amber__V1__Volume *v, const struct create_req *q, char **why)
{
    if (q->required && v->size_bytes < q->required) {
        *why = xasprintf("it has %llu bytes, %llu are required", (unsigned long long)v->size_bytes,
                         (unsigned long long)q->required);
        return false;
    }
    if (q->limit && v->size_bytes > q->limit) {
        *why = xasprintf("it has %llu bytes, over the limit of %llu",
                         (unsigned long long)v->size_bytes, (unsigned long long)q->limit);
        return false;
    }
    /* A clone of another node's volume has its hidden snapshot as
     * source_snapshot too: its source_volume is what was asked. */
    bool remote_vol = *v->source_volume && *v->source_node;
    if ((!remote_vol && strcmp(v->source_snapshot, q->src_snapshot ? q->src_snapshot : "") != 0) ||
        strcmp(v->source_volume, q->src_volume ? q->src_volume : "") != 0) {
        *why = xstrdup("it has a different content source");
        return false;
    }
    if (*q->fs_type && *v->fs_type && strcmp(q->fs_type, v->fs_type) != 0) {
        *why = xasprintf("it was made for %s, not %s", v->fs_type, q->fs_type);
        return false;
    }
    return true;
}

static int send_volume(struct rpc_call *c, const Amber__V1__Volume *v)
{
    struct csi_vol_out o;
    volume_out(CSI(c), v, &o);
    Csi__V1__CreateVolumeResponse r = CSI__V1__CREATE_VOLUME_RESPONSE__INIT;
    r.volume = &o.m;
    return rpc_call_send(c, &r.base);
}

/* Resolve the content source: its id and size. */
static int content_source(struct rpc_call *c, const Csi__V1__VolumeContentSource *cs,
                          struct create_req *q)
{
    struct rpc_status st = {0};
    int code;
    if (cs->type_case == CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_SNAPSHOT) {
        const char *id = cs->snapshot ? cs->snapshot->snapshot_id : "";
        if (!*id)
            return csi_error(c, RPC_INVALID_ARGUMENT, "volume_content_source: snapshot_id is required");
        char *node = NULL;
        if (csi_handle_split(id, &node, &q->src_id) < 0 || !uuid_is_valid(q->src_id)) {
            free(node);
            return csi_error(c, RPC_NOT_FOUND, "source snapshot %s not found", id);
        }
        if (node && strcmp(node, CSI(c)->node_id) != 0) {
            /* Held by another node: copied by amberd's cluster service. */
            q->remote_node = node;
            q->src_snapshot = q->src_id;
            return 0;
        }
        free(node);
        id = q->src_id;
        _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
        code = amberd_get_snapshot(c, id, &s, &st);
        if (code == RPC_NOT_FOUND) {
            rpc_status_clear(&st);
            return csi_error(c, RPC_NOT_FOUND, "source snapshot %s not found", id);
        }
        if (code != RPC_OK)
            return amberd_fail(c, code, &st, "source snapshot");
        q->src_snapshot = id;
        q->src_size = s->size_bytes;
    } else if (cs->type_case == CSI__V1__VOLUME_CONTENT_SOURCE__TYPE_VOLUME) {
        const char *id = cs->volume ? cs->volume->volume_id : "";
        if (!*id)
            return csi_error(c, RPC_INVALID_ARGUMENT, "volume_content_source: volume_id is required");
        char *node = NULL, *vid = NULL;
        if (csi_handle_split(id, &node, &vid) < 0 || !uuid_is_valid(vid)) {
            free(node);
            free(vid);
            return csi_error(c, RPC_NOT_FOUND, "source volume %s not found", id);
        }
        if (node && strcmp(node, CSI(c)->node_id) != 0) {
            /* Held by another node: that node snapshots it, we copy that. */
            q->remote_node = node;
            q->src_id = vid;
            q->src_volume = q->src_id;
            return 0;
        }
        free(node);
        free(vid);
        _cleanup_pb_ Amber__V1__Volume *v = NULL;
        code = amberd_get_volume(c, id, &v, &st);
        if (code == RPC_NOT_FOUND) {
            rpc_status_clear(&st);
            return csi_error(c, RPC_NOT_FOUND, "source volume %s not found", id);
        }
        if (code != RPC_OK)
            return amberd_fail(c, code, &st, "source volume");
        q->src_id = xstrdup(v->id);
        q->src_volume = q->src_id;
        q->src_size = v->size_bytes;
    } else {
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_content_source: a snapshot or a volume");
    }
    return 0;
}

/* CreateVolume from a snapshot (or volume) another node holds: amberd's
 * cluster service copies it in the background (pull from that node, or
 * restore a snapshot from an archive when that node is gone; a volume is
 * first snapshotted there, hidden). While it copies, the answer is ABORTED
 * "operation pending": csi-provisioner treats ABORTED as a non-final error
 * and retries with exponential backoff, and the retried call finds the same
 * job (keyed by the volume name), so a large volume never makes the
 * provisioner time out and start over. */
static int create_remote(struct rpc_call *c, const Csi__V1__CreateVolumeRequest *q,
                         const struct create_req *cr, const char *name, uint64_t size)
{
    struct csi *p = CSI(c);
    _cleanup_free_ char *params = params_json((void *const *)q->parameters, q->n_parameters);
    Amber__V1__ClusterCreateVolumeRequest aq = AMBER__V1__CLUSTER_CREATE_VOLUME_REQUEST__INIT;
    aq.name = (char *)name;
    aq.size_bytes = size;
    aq.source_node = cr->remote_node;
    aq.source_snapshot = (char *)(cr->src_snapshot ? cr->src_snapshot : "");
    aq.source_volume = (char *)(cr->src_volume ? cr->src_volume : "");
    const char *ns = csi_map_get((void *const *)q->parameters, q->n_parameters, PVC_NS_KEY);
    const char *pvc = csi_map_get((void *const *)q->parameters, q->n_parameters, PVC_NAME_KEY);
    aq.pvc_namespace = (char *)(ns ? ns : "");
    aq.pvc_name = (char *)(pvc ? pvc : "");
    aq.fs_type = (char *)cr->fs_type;
    aq.params = params;
    aq.wait_ms = p->create_wait_ms;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    uint64_t deadline = rpc_call_deadline(c), timeout = (uint64_t)p->create_wait_ms + 30000;
    if (deadline) {
        uint64_t now = now_mono_ns();
        timeout = deadline > now ? (deadline - now) / 1000000 + 1 : 1;
    }
    int code = rpc_client_call(p->amberd, "/amber.v1.Cluster/CreateVolumeFrom", &aq.base,
                               &amber__v1__volume__descriptor, timeout, (ProtobufCMessage **)&v, &st);
    if (code == RPC_ABORTED) {
        log_info("controller", "CreateVolume %s: %s", q->name, st.message ? st.message : "pending");
        return amberd_fail(c, code, &st, cr->src_volume ? "from another node's volume" : "from another node's snapshot");
    }
    if (code != RPC_OK) {
        log_warn("controller", "CreateVolume %s from %s %s of node %s failed: %s: %s", q->name,
                 cr->src_volume ? "volume" : "snapshot", cr->src_id, cr->remote_node,
                 rpc_code_name(code), st.message ? st.message : "");
        return amberd_fail(c, code, &st, cr->src_volume ? "from another node's volume"
                                                         : "from another node's snapshot");
    }
    _cleanup_free_ char *why = NULL;
    if (!compatible(v, cr, &why))
        return csi_error(c, RPC_ALREADY_EXISTS, "volume %s exists and is incompatible: %s", q->name, why);
    log_info("controller", "created volume %s id=%s size=%llu from %s %s of node %s", q->name,
             v->id, (unsigned long long)v->size_bytes, cr->src_volume ? "volume" : "snapshot",
             cr->src_id, cr->remote_node);
    return send_volume(c, v);
}

static int h_create_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__CreateVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    _cleanup_(create_req_clear) struct create_req cr = { .fs_type = "" };
    int r;

    if (!*q->name)
        return csi_error(c, RPC_INVALID_ARGUMENT, "name is required");
    if (q->n_volume_capabilities == 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_capabilities are required");
    const char *def_fs = param_fs((void *const *)q->parameters, q->n_parameters);
    if (def_fs && !csi_fs_supported(def_fs))
        return csi_error(c, RPC_INVALID_ARGUMENT, "parameter fsType: \"%s\" is not supported "
                         "(ext4 or xfs)", def_fs);
    for (size_t i = 0; i < q->n_volume_capabilities; i++) {
        struct csi_cap cap;
        _cleanup_free_ char *msg = NULL;
        if (csi_cap_parse(q->volume_capabilities[i], def_fs, &cap, &msg) < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s", msg);
        if (!cap.block) {
            if (*cr.fs_type && strcmp(cr.fs_type, cap.fs_type) != 0)
                return csi_error(c, RPC_INVALID_ARGUMENT, "capabilities ask for both %s and %s",
                                 cr.fs_type, cap.fs_type);
            cr.fs_type = cap.fs_type;
        }
    }
    if (q->capacity_range) {
        if (q->capacity_range->required_bytes < 0 || q->capacity_range->limit_bytes < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "capacity_range: negative bytes");
        cr.required = (uint64_t)q->capacity_range->required_bytes;
        cr.limit = (uint64_t)q->capacity_range->limit_bytes;
        if (cr.limit && cr.limit < cr.required)
            return csi_error(c, RPC_OUT_OF_RANGE, "capacity_range: limit %llu is below required %llu",
                             (unsigned long long)cr.limit, (unsigned long long)cr.required);
    }
    const Csi__V1__TopologyRequirement *tr = q->accessibility_requirements;
    if (tr && tr->n_requisite > 0) {
        bool ours = false;
        for (size_t i = 0; i < tr->n_requisite && !ours; i++)
            ours = csi_topology_is_ours(p, tr->requisite[i]);
        if (!ours)
            return csi_error(c, RPC_RESOURCE_EXHAUSTED, "this plugin provisions only on node %s "
                             "(%s), which the requisite topology does not include",
                             p->node_id, p->topology_key);
    }
    if (q->volume_content_source && (r = content_source(c, q->volume_content_source, &cr)) < 0)
        return r;

    /* The size: required, else the source's, else the default within the
     * limit; never below the source or what mkfs.xfs accepts; 4 KiB units. */
    uint64_t size = cr.required ? cr.required : cr.src_size ? cr.src_size : CSI_DEFAULT_SIZE;
    if (!cr.required && !cr.src_size && cr.limit && cr.limit < size)
        size = cr.limit;
    if (size < cr.src_size)
        size = cr.src_size;
    if (strcmp(cr.fs_type, "xfs") == 0 && size < CSI_XFS_MIN_SIZE)
        size = CSI_XFS_MIN_SIZE;
    if (size > UINT64_MAX - CSI_ALIGN)
        return csi_error(c, RPC_OUT_OF_RANGE, "size too large");
    size = (size + CSI_ALIGN - 1) / CSI_ALIGN * CSI_ALIGN;
    if (cr.limit && size > cr.limit)
        return csi_error(c, RPC_OUT_OF_RANGE, "a volume of %llu bytes (4 KiB units%s%s) is over the "
                         "limit of %llu bytes", (unsigned long long)size,
                         cr.src_size ? ", at least the source's size" : "",
                         strcmp(cr.fs_type, "xfs") == 0 ? ", xfs needs 300 MiB" : "",
                         (unsigned long long)cr.limit);

    _cleanup_held_ struct csi_held held = { .p = p };
    if ((r = csi_op_lock(c, "name:%s", q->name, &held.key)) < 0)
        return r;
    _cleanup_free_ char *name = csi_map_name(q->name);
    struct rpc_status st = {0};
    if (cr.remote_node)
        return create_remote(c, q, &cr, name, cr.required ? size : 0);

    Amber__V1__VolumeRef ref = AMBER__V1__VOLUME_REF__INIT;
    ref.volume = name;
    _cleanup_pb_ Amber__V1__Volume *old = NULL;
    int code = amberd_call(c, "GetVolume", &ref.base, &amber__v1__volume__descriptor, 30000,
                           (ProtobufCMessage **)&old, &st);
    if (code == RPC_OK) {
        _cleanup_free_ char *why = NULL;
        if (strcmp(old->state, "ready") != 0)
            return csi_error(c, RPC_ABORTED, "volume %s is %s", q->name, old->state);
        if (!compatible(old, &cr, &why))
            return csi_error(c, RPC_ALREADY_EXISTS, "volume %s exists and is incompatible: %s",
                             q->name, why);
        return send_volume(c, old);
    }
    if (code != RPC_NOT_FOUND)
        return amberd_fail(c, code, &st, "looking up the volume");
    rpc_status_clear(&st);

    _cleanup_free_ char *params = params_json((void *const *)q->parameters, q->n_parameters);
    Amber__V1__CreateVolumeRequest aq = AMBER__V1__CREATE_VOLUME_REQUEST__INIT;
    aq.name = name;
    aq.size_bytes = size;
    aq.source_snapshot = (char *)(cr.src_snapshot ? cr.src_snapshot : "");
    aq.source_volume = (char *)(cr.src_volume ? cr.src_volume : "");
    const char *ns = csi_map_get((void *const *)q->parameters, q->n_parameters, PVC_NS_KEY);
    const char *pvc = csi_map_get((void *const *)q->parameters, q->n_parameters, PVC_NAME_KEY);
    aq.pvc_namespace = (char *)(ns ? ns : "");
    aq.pvc_name = (char *)(pvc ? pvc : "");
    aq.fs_type = (char *)cr.fs_type;
    aq.params = params;
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    code = amberd_call(c, "CreateVolume", &aq.base, &amber__v1__volume__descriptor, 120000,
                       (ProtobufCMessage **)&v, &st);
    if (code != RPC_OK) {
        log_warn("controller", "CreateVolume %s (%llu bytes) failed: %s: %s", q->name,
                 (unsigned long long)size, rpc_code_name(code), st.message ? st.message : "");
        return amberd_fail(c, code, &st, "creating the volume");
    }
    log_info("controller", "created volume %s id=%s size=%llu fs=%s%s%s", q->name, v->id,
             (unsigned long long)v->size_bytes, *cr.fs_type ? cr.fs_type : "block",
             cr.src_snapshot || cr.src_volume ? " from " : "",
             cr.src_snapshot ? cr.src_snapshot : cr.src_volume ? cr.src_volume : "");
    return send_volume(c, v);
}

/* --- DeleteVolume ---------------------------------------------------------- */

static int h_delete_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__DeleteVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    Csi__V1__DeleteVolumeResponse out = CSI__V1__DELETE_VOLUME_RESPONSE__INIT;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int code = amberd_get_volume(c, q->volume_id, &v, &st);
    if (code == RPC_NOT_FOUND) {    /* gone already: success, per the spec */
        rpc_status_clear(&st);
        return rpc_call_send(c, &out.base);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the volume");
    Amber__V1__VolumeRef ref = AMBER__V1__VOLUME_REF__INIT;
    ref.volume = v->id;
    _cleanup_pb_ Amber__V1__Empty *e = NULL;
    code = amberd_call(c, "DeleteVolume", &ref.base, &amber__v1__empty__descriptor, 120000,
                       (ProtobufCMessage **)&e, &st);
    if (code == RPC_NOT_FOUND)
        rpc_status_clear(&st);
    else if (code != RPC_OK)
        return amberd_fail(c, code, &st, "deleting the volume");
    log_info("controller", "deleted volume %s id=%s", v->name, v->id);
    return rpc_call_send(c, &out.base);
}

/* --- ValidateVolumeCapabilities ------------------------------------------- */

static int h_validate(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__ValidateVolumeCapabilitiesRequest *q = (const void *)m;
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (q->n_volume_capabilities == 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_capabilities are required");
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int code = amberd_get_volume(c, q->volume_id, &v, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "volume %s not found", q->volume_id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the volume");

    Csi__V1__ValidateVolumeCapabilitiesResponse r = CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__INIT;
    _cleanup_free_ char *msg = NULL;
    for (size_t i = 0; i < q->n_volume_capabilities && !msg; i++) {
        struct csi_cap cap;
        if (csi_cap_parse(q->volume_capabilities[i], v->fs_type, &cap, &msg) < 0)
            break;
        if (!cap.block && *v->fs_type && strcmp(cap.fs_type, v->fs_type) != 0)
            msg = xasprintf("the volume was made for %s, not %s", v->fs_type, cap.fs_type);
    }
    Csi__V1__ValidateVolumeCapabilitiesResponse__Confirmed conf =
        CSI__V1__VALIDATE_VOLUME_CAPABILITIES_RESPONSE__CONFIRMED__INIT;
    if (msg) {
        r.message = msg;
    } else {
        /* Echo what was validated. The map entry messages of the request
         * and the reply have the same fields, so they encode the same. */
        conf.volume_capabilities = q->volume_capabilities;
        conf.n_volume_capabilities = q->n_volume_capabilities;
        conf.volume_context = (void *)q->volume_context;
        conf.n_volume_context = q->n_volume_context;
        conf.parameters = (void *)q->parameters;
        conf.n_parameters = q->n_parameters;
        r.confirmed = &conf;
    }
    return rpc_call_send(c, &r.base);
}

/* --- ListVolumes, ControllerGetVolume, GetCapacity ------------------------ */

static int h_list_volumes(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__ListVolumesRequest *q = (const void *)m;
    if (q->max_entries < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "max_entries must not be negative");
    Amber__V1__ListVolumesRequest aq = AMBER__V1__LIST_VOLUMES_REQUEST__INIT;
    aq.starting_token = q->starting_token;
    aq.max_entries = (uint32_t)q->max_entries;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__ListVolumesResponse *l = NULL;
    int code = amberd_call(c, "ListVolumes", &aq.base, &amber__v1__list_volumes_response__descriptor,
                           60000, (ProtobufCMessage **)&l, &st);
    if (code == RPC_ABORTED || code == RPC_INVALID_ARGUMENT) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_ABORTED, "invalid starting_token \"%s\"", q->starting_token);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "listing volumes");
    size_t n = l->n_volumes;
    struct csi_vol_out *vo = xcalloc(n ? n : 1, sizeof *vo);
    Csi__V1__ListVolumesResponse__Entry *en = xcalloc(n ? n : 1, sizeof *en);
    Csi__V1__ListVolumesResponse__Entry **pen = xcalloc(n ? n : 1, sizeof *pen);
    Csi__V1__ListVolumesResponse__VolumeStatus *vs = xcalloc(n ? n : 1, sizeof *vs);
    Csi__V1__VolumeCondition *cond = xcalloc(n ? n : 1, sizeof *cond);
    char **msgs = xcalloc(n ? n : 1, sizeof *msgs);
    for (size_t i = 0; i < n; i++) {
        volume_out(CSI(c), l->volumes[i], &vo[i]);
        volume_condition(l->volumes[i], &cond[i], &msgs[i]);
        Csi__V1__ListVolumesResponse__VolumeStatus s = CSI__V1__LIST_VOLUMES_RESPONSE__VOLUME_STATUS__INIT;
        vs[i] = s;
        vs[i].volume_condition = &cond[i];
        Csi__V1__ListVolumesResponse__Entry e = CSI__V1__LIST_VOLUMES_RESPONSE__ENTRY__INIT;
        en[i] = e;
        en[i].volume = &vo[i].m;
        en[i].status = &vs[i];
        pen[i] = &en[i];
    }
    Csi__V1__ListVolumesResponse r = CSI__V1__LIST_VOLUMES_RESPONSE__INIT;
    r.entries = pen;
    r.n_entries = n;
    r.next_token = l->next_token;
    int ret = rpc_call_send(c, &r.base);
    for (size_t i = 0; i < n; i++)
        free(msgs[i]);
    free(msgs);
    free(cond);
    free(vs);
    free(pen);
    free(en);
    free(vo);
    return ret;
}

static int h_get_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__ControllerGetVolumeRequest *q = (const void *)m;
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int code = amberd_get_volume(c, q->volume_id, &v, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "volume %s not found", q->volume_id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the volume");
    struct csi_vol_out vo;
    volume_out(CSI(c), v, &vo);
    Csi__V1__VolumeCondition cond;
    _cleanup_free_ char *msg = NULL;
    volume_condition(v, &cond, &msg);
    Csi__V1__ControllerGetVolumeResponse__VolumeStatus vs =
        CSI__V1__CONTROLLER_GET_VOLUME_RESPONSE__VOLUME_STATUS__INIT;
    vs.volume_condition = &cond;
    Csi__V1__ControllerGetVolumeResponse r = CSI__V1__CONTROLLER_GET_VOLUME_RESPONSE__INIT;
    r.volume = &vo.m;
    r.status = &vs;
    return rpc_call_send(c, &r.base);
}

static int h_get_capacity(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__GetCapacityRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    Csi__V1__GetCapacityResponse r = CSI__V1__GET_CAPACITY_RESPONSE__INIT;
    /* Capabilities or a topology we cannot serve: no capacity for them. */
    const char *def_fs = param_fs((void *const *)q->parameters, q->n_parameters);
    bool servable = !def_fs || csi_fs_supported(def_fs);
    for (size_t i = 0; i < q->n_volume_capabilities && servable; i++) {
        struct csi_cap cap;
        _cleanup_free_ char *msg = NULL;
        servable = csi_cap_parse(q->volume_capabilities[i], def_fs, &cap, &msg) == 0;
    }
    if (q->accessible_topology && !csi_topology_is_ours(p, q->accessible_topology))
        servable = false;
    if (!servable)
        return rpc_call_send(c, &r.base);
    Amber__V1__GetInfoRequest iq = AMBER__V1__GET_INFO_REQUEST__INIT;
    _cleanup_pb_ Amber__V1__GetInfoResponse *info = NULL;
    struct rpc_status st = {0};
    int code = amberd_call(c, "GetInfo", &iq.base, &amber__v1__get_info_response__descriptor, 30000,
                           (ProtobufCMessage **)&info, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "pool information");
    r.available_capacity = info->pool_free_bytes > INT64_MAX ? INT64_MAX : (int64_t)info->pool_free_bytes;
    Google__Protobuf__Int64Value minsz = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    minsz.value = (int64_t)CSI_ALIGN;
    r.minimum_volume_size = &minsz;
    return rpc_call_send(c, &r.base);
}

/* --- ControllerExpandVolume ------------------------------------------------ */

static int h_expand_volume(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__ControllerExpandVolumeRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->volume_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "volume_id is required");
    if (!q->capacity_range)
        return csi_error(c, RPC_INVALID_ARGUMENT, "capacity_range is required");
    int64_t req = q->capacity_range->required_bytes, lim = q->capacity_range->limit_bytes;
    if (req < 0 || lim < 0 || (req == 0 && lim == 0))
        return csi_error(c, RPC_INVALID_ARGUMENT, "capacity_range: required or limit bytes, positive");
    if (lim && lim < req)
        return csi_error(c, RPC_OUT_OF_RANGE, "capacity_range: limit is below required");
    bool block = false;
    if (q->volume_capability) {
        struct csi_cap cap;
        _cleanup_free_ char *msg = NULL;
        if (csi_cap_parse(q->volume_capability, NULL, &cap, &msg) < 0)
            return csi_error(c, RPC_INVALID_ARGUMENT, "%s", msg);
        block = cap.block;
    }
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "vol:%s", q->volume_id, &held.key);
    if (r < 0)
        return r;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__Volume *v = NULL;
    int code = amberd_get_volume(c, q->volume_id, &v, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_NOT_FOUND, "volume %s not found", q->volume_id);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the volume");
    if (!q->volume_capability)
        block = !*v->fs_type;
    uint64_t size = (uint64_t)(req ? req : lim);
    size = (size + CSI_ALIGN - 1) / CSI_ALIGN * CSI_ALIGN;
    if (lim && size > (uint64_t)lim)
        return csi_error(c, RPC_OUT_OF_RANGE, "%llu bytes in 4 KiB units is over the limit",
                         (unsigned long long)size);
    uint64_t now_size = v->size_bytes;
    if (size > v->size_bytes) {
        Amber__V1__ResizeVolumeRequest rq = AMBER__V1__RESIZE_VOLUME_REQUEST__INIT;
        rq.volume = v->id;
        rq.size_bytes = size;
        _cleanup_pb_ Amber__V1__Volume *nv = NULL;
        code = amberd_call(c, "ResizeVolume", &rq.base, &amber__v1__volume__descriptor, 120000,
                           (ProtobufCMessage **)&nv, &st);
        if (code != RPC_OK)
            return amberd_fail(c, code, &st, "resizing the volume");
        now_size = nv->size_bytes;
        log_info("controller", "expanded volume %s id=%s to %llu bytes", v->name, v->id,
                 (unsigned long long)now_size);
    }
    Csi__V1__ControllerExpandVolumeResponse out = CSI__V1__CONTROLLER_EXPAND_VOLUME_RESPONSE__INIT;
    out.capacity_bytes = (int64_t)now_size;
    out.node_expansion_required = !block;
    return rpc_call_send(c, &out.base);
}

/* --- capabilities ----------------------------------------------------------- */

static int h_get_capabilities(struct rpc_call *c, const ProtobufCMessage *m)
{
    static const Csi__V1__ControllerServiceCapability__RPC__Type types[] = {
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_VOLUME,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_SNAPSHOT,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_SNAPSHOTS,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_SNAPSHOT,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CLONE_VOLUME,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_CAPACITY,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__LIST_VOLUMES,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__SINGLE_NODE_MULTI_WRITER,
        CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,   /* last: optional */
    };
    size_t n = ARRAY_SIZE(types) - (CSI(c)->controller_expand ? 0 : 1);
    Csi__V1__ControllerServiceCapability__RPC rpcs[ARRAY_SIZE(types)];
    Csi__V1__ControllerServiceCapability caps[ARRAY_SIZE(types)];
    Csi__V1__ControllerServiceCapability *pcaps[ARRAY_SIZE(types)];
    for (size_t i = 0; i < n; i++) {
        Csi__V1__ControllerServiceCapability__RPC rp = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__RPC__INIT;
        Csi__V1__ControllerServiceCapability cp = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__INIT;
        rpcs[i] = rp;
        rpcs[i].type = types[i];
        caps[i] = cp;
        caps[i].type_case = CSI__V1__CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
        caps[i].rpc = &rpcs[i];
        pcaps[i] = &caps[i];
    }
    Csi__V1__ControllerGetCapabilitiesResponse r = CSI__V1__CONTROLLER_GET_CAPABILITIES_RESPONSE__INIT;
    r.capabilities = pcaps;
    r.n_capabilities = n;
    return rpc_call_send(c, &r.base);
}

#define M(name, in, out, fn) \
    { "/csi.v1.Controller/" name, &csi__v1__##in##__descriptor, &csi__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method csi_controller_methods[] = {
    M("CreateVolume", create_volume_request, create_volume_response, h_create_volume),
    M("DeleteVolume", delete_volume_request, delete_volume_response, h_delete_volume),
    M("ValidateVolumeCapabilities", validate_volume_capabilities_request,
      validate_volume_capabilities_response, h_validate),
    M("ListVolumes", list_volumes_request, list_volumes_response, h_list_volumes),
    M("ControllerGetVolume", controller_get_volume_request, controller_get_volume_response,
      h_get_volume),
    M("GetCapacity", get_capacity_request, get_capacity_response, h_get_capacity),
    M("ControllerExpandVolume", controller_expand_volume_request, controller_expand_volume_response,
      h_expand_volume),
    M("ControllerGetCapabilities", controller_get_capabilities_request,
      controller_get_capabilities_response, h_get_capabilities),
    M("CreateSnapshot", create_snapshot_request, create_snapshot_response, csi_create_snapshot),
    M("DeleteSnapshot", delete_snapshot_request, delete_snapshot_response, csi_delete_snapshot),
    M("ListSnapshots", list_snapshots_request, list_snapshots_response, csi_list_snapshots),
    M("GetSnapshot", get_snapshot_request, get_snapshot_response, csi_get_snapshot),
};
const size_t csi_controller_methods_n = ARRAY_SIZE(csi_controller_methods);
