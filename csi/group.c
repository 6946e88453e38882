/* group.c: the CSI GroupController service: VolumeGroupSnapshots, a
 * snapshot of several volumes at one instant (amberd's CreateSnapshots,
 * which takes every member in one call with every mounted member
 * filesystem frozen around all of them).
 *
 * Stateless like the rest of the plugin: a group is its member snapshots.
 * Each member is an ordinary amberd snapshot (restore, clone, export, sync,
 * diff and SnapshotMetadata all work on it), named after the group (the
 * CSI name mapped as csi_map_name does) and labelled
 *   amber.csi.dev/group = <group id>
 * where the group id is "group-" and 32 hex digits of SHA-256 of the CSI
 * name, so the same name always finds the same group. Create with a name
 * whose group exists returns it when it has exactly the requested volumes,
 * ALREADY_EXISTS otherwise; Get lists the members by label; Delete
 * deletes every member (a group already gone is success). A snapshot_ids
 * list that names a snapshot outside the group, or leaves a member out, is
 * INVALID_ARGUMENT (the spec asks us to report a mismatch we can detect).
 *
 * One instant: amberd's CreateSnapshots takes the members' btrfs
 * snapshots one after another (each a transaction commit, milliseconds
 * apart), so under a writer the members differ unless their filesystems
 * are frozen around all of them (measured in tests/e2e/test-group.py: 8 of
 * 8 unfrozen groups of three volumes showed different instants, 0 of 16
 * frozen ones). So a group freezes every mounted member by default; the
 * class parameter freeze: "false" opts out (members taken in turn, not at
 * one instant). Members that are not mounted (Block volumes) cannot be
 * frozen and are taken in turn.
 *
 * VolumeGroupSnapshotClass parameters: freeze ("true", the default, or
 * "false") and label.amber.csi.dev/KEY: V, as for VolumeSnapshotClass;
 * csi-snapshotter's --extra-create-metadata gives the VolumeGroupSnapshot's
 * namespace and name, recorded as the members' k8s_namespace and the label
 * amber.csi.dev/group-name.
 *
 * Across the cluster (--node-handles): a group is taken in one step by one
 * amberd, so every member must be on one node (volumes of two nodes:
 * INVALID_ARGUMENT naming both), and the group's id names that node as a
 * snapshot handle does ("NODE/group-<hex>"; the label keeps the bare id,
 * and an id without a node, made before, means this node). A VolumeGroup-
 * SnapshotContent need not carry the per-node label the node-deployed
 * csi-snapshotter filters on, so any node's plugin may be asked: for a
 * group on another node, Create, Get and Delete go through our amberd's
 * cluster service (amber.v1.Cluster/NodeCreateSnapshots,
 * NodeListSnapshots, NodeDeleteSnapshot), which asks the holder over the
 * mutual-TLS peer connection; the holder lets a peer touch group snapshots
 * only (snapd/cluster/node-group.c). */
#include <string.h>
#include <openssl/evp.h>

#include "amber/log.h"
#include "cluster.pb-c.h"
#include "csi/csi.h"

#define GROUP_LABEL "amber.csi.dev/group"
#define GROUP_NAME_LABEL "amber.csi.dev/group-name"
#define LABEL_PREFIX "label.amber.csi.dev/"
#define VGS_NS_KEY "csi.storage.k8s.io/volumegroupsnapshot/namespace"
#define VGS_NAME_KEY "csi.storage.k8s.io/volumegroupsnapshot/name"
#define GROUP_MAX 64           /* amberd takes at most 64 volumes at once */

/* "group-<32 hex of SHA-256(name)>". Caller frees. */
static char *group_id_for(const char *name)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_Digest(name, strlen(name), md, &mdlen, EVP_sha256(), NULL);
    struct buf b = {0};
    buf_printf(&b, "group-");
    for (unsigned i = 0; i < 16; i++)
        buf_printf(&b, "%02x", md[i]);
    buf_append(&b, "", 1);
    return (char *)b.data;
}

static bool group_id_valid(const char *id)
{
    if (strncmp(id, "group-", 6) != 0 || strlen(id) != 6 + 32)
        return false;
    for (const char *p = id + 6; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return false;
    return true;
}

/* A call into our amberd's cluster service (amber.v1.Cluster/NAME), within
 * the caller's deadline. */
static int cluster_call(struct rpc_call *c, const char *name, const ProtobufCMessage *req,
                        const ProtobufCMessageDescriptor *desc, uint64_t timeout_ms,
                        ProtobufCMessage **ret, struct rpc_status *st)
{
    uint64_t deadline = rpc_call_deadline(c);
    if (deadline) {
        uint64_t now = now_mono_ns();
        uint64_t left = deadline > now ? (deadline - now) / 1000000 + 1 : 1;
        if (left < timeout_ms)
            timeout_ms = left;
    }
    _cleanup_free_ char *path = xasprintf("/amber.v1.Cluster/%s", name);
    return rpc_client_call(CSI(c)->amberd, path, req, desc, timeout_ms, ret, st);
}

/* A handle's node (NULL: this node, or a handle without one) and id. */
static int handle_parts(struct csi *p, const char *handle, char **ret_node, char **ret_id)
{
    if (csi_handle_split(handle, ret_node, ret_id) < 0)
        return -EINVAL;
    if (*ret_node && strcmp(*ret_node, p->node_id) == 0) {
        free(*ret_node);
        *ret_node = NULL;
    }
    return 0;
}

/* The handle of `id` held by `node` (NULL: this node). */
static void fmt_on(struct csi *p, const char *node, const char *id, char out[CSI_HANDLE_MAX])
{
    if (node)
        snprintf(out, CSI_HANDLE_MAX, "%s/%s", node, id);
    else
        csi_handle_fmt(p, id, out);
}

/* The members of group `gid` (the bare "group-..." id) held by `node`
 * (NULL: our amberd; else asked of that node's through ours), ordered by
 * id. RPC_OK with *ret (possibly empty), or a code with st set. */
static int group_members(struct rpc_call *c, const char *node, const char *gid,
                         Amber__V1__ListSnapshotsResponse **ret, struct rpc_status *st)
{
    Amber__V1__Label l = AMBER__V1__LABEL__INIT;
    l.key = GROUP_LABEL;
    l.value = (char *)gid;
    Amber__V1__Label *pl = &l;
    Amber__V1__ListSnapshotsRequest q = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    q.labels = &pl;
    q.n_labels = 1;
    q.max_entries = GROUP_MAX + 1;
    if (node) {
        Amber__V1__ClusterListSnapshotsRequest cq = AMBER__V1__CLUSTER_LIST_SNAPSHOTS_REQUEST__INIT;
        cq.node = (char *)node;
        cq.request = &q;
        return cluster_call(c, "NodeListSnapshots", &cq.base, &amber__v1__list_snapshots_response__descriptor,
                            30000, (ProtobufCMessage **)ret, st);
    }
    return amberd_call(c, "ListSnapshots", &q.base, &amber__v1__list_snapshots_response__descriptor, 30000,
                       (ProtobufCMessage **)ret, st);
}

/* --- answers ---------------------------------------------------------------- */

struct group_out {
    Csi__V1__VolumeGroupSnapshot g;
    Google__Protobuf__Timestamp ts;
    Csi__V1__Snapshot *snaps;
    Csi__V1__Snapshot **psnaps;
    Google__Protobuf__Timestamp *sts;
    char (*ids)[2][CSI_HANDLE_MAX];     /* handles: snapshot, source volume */
};

static void group_out_init(struct csi *p, struct group_out *o, const char *node, const char *gid,
                           Amber__V1__Snapshot **s, size_t n)
{
    Csi__V1__VolumeGroupSnapshot g = CSI__V1__VOLUME_GROUP_SNAPSHOT__INIT;
    Google__Protobuf__Timestamp ts0 = GOOGLE__PROTOBUF__TIMESTAMP__INIT;
    o->snaps = xcalloc(n ? n : 1, sizeof *o->snaps);
    o->psnaps = xcalloc(n ? n : 1, sizeof *o->psnaps);
    o->sts = xcalloc(n ? n : 1, sizeof *o->sts);
    o->ids = xcalloc(n ? n : 1, sizeof *o->ids);
    bool ready = n > 0;
    int64_t created = 0;
    for (size_t i = 0; i < n; i++) {
        Csi__V1__Snapshot m = CSI__V1__SNAPSHOT__INIT;
        o->sts[i] = ts0;
        o->sts[i].seconds = s[i]->created_ns / 1000000000;
        o->sts[i].nanos = (int32_t)(s[i]->created_ns % 1000000000);
        m.size_bytes = (int64_t)s[i]->size_bytes;
        fmt_on(p, node, s[i]->id, o->ids[i][0]);
        fmt_on(p, node, s[i]->volume_id, o->ids[i][1]);
        m.snapshot_id = o->ids[i][0];
        m.source_volume_id = o->ids[i][1];
        m.creation_time = &o->sts[i];
        m.ready_to_use = strcmp(s[i]->state, "ready") == 0;
        m.group_snapshot_id = (char *)gid;
        ready = ready && m.ready_to_use;
        if (s[i]->created_ns > created)
            created = s[i]->created_ns;
        o->snaps[i] = m;
        o->psnaps[i] = &o->snaps[i];
    }
    o->ts = ts0;
    o->ts.seconds = created / 1000000000;
    o->ts.nanos = (int32_t)(created % 1000000000);
    g.group_snapshot_id = (char *)gid;
    g.snapshots = o->psnaps;
    g.n_snapshots = n;
    g.creation_time = &o->ts;
    g.ready_to_use = ready;
    o->g = g;
}

static void group_out_clear(struct group_out *o)
{
    free(o->snaps);
    free(o->psnaps);
    free(o->sts);
    free(o->ids);
}

/* The amberd ids of the request's handles (NULL: another node's). */
struct ids { char **v; size_t n; };
static void ids_free(struct ids *x)
{
    for (size_t i = 0; x->v && i < x->n; i++)
        free(x->v[i]);
    free(x->v);
}

/* The id of `handle` when it names an object on `node` (NULL: this node),
 * else NULL. Caller frees. */
static char *id_on(struct csi *p, const char *node, const char *handle)
{
    char *hn = NULL, *id = NULL;
    if (handle_parts(p, handle, &hn, &id) < 0)
        return NULL;
    bool same = (!hn && !node) || (hn && node && strcmp(hn, node) == 0);
    free(hn);
    if (!same) {
        free(id);
        return NULL;
    }
    return id;
}

/* Whether the members are exactly the volumes `vols` (each named once). */
static bool same_volumes(struct csi *p, const char *node, Amber__V1__Snapshot **s, size_t n,
                         char *const *vols, size_t nv)
{
    if (n != nv)
        return false;
    for (size_t i = 0; i < nv; i++) {
        bool found = false;
        _cleanup_free_ char *lid = id_on(p, node, vols[i]);
        for (size_t k = 0; k < n && !found && lid; k++)
            found = strcmp(s[k]->volume_id, lid) == 0;
        if (!found)
            return false;
    }
    return true;
}

/* Whether snapshot `handle` exists (RPC_OK or RPC_NOT_FOUND), or another
 * code with st set: asked of the node it names. */
static int snapshot_exists(struct rpc_call *c, const char *handle, struct rpc_status *st)
{
    _cleanup_free_ char *node = NULL, *id = NULL;
    if (handle_parts(CSI(c), handle, &node, &id) < 0 || !uuid_is_valid(id))
        return RPC_NOT_FOUND;
    _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
    if (!node)
        return amberd_get_snapshot(c, handle, &s, st);
    Amber__V1__ClusterSnapshotRef ref = AMBER__V1__CLUSTER_SNAPSHOT_REF__INIT;
    ref.node = node;
    ref.snapshot = id;
    return cluster_call(c, "GetNodeSnapshot", &ref.base, &amber__v1__snapshot__descriptor, 30000,
                        (ProtobufCMessage **)&s, st);
}

/* The snapshot_ids a CO sent against the members (held by `node`): every
 * member must be named, and every id must be a member; with `gone_ok`
 * (Delete, which may be a retry) an id that no longer exists at all is
 * accepted. An empty list is not checked. */
static int check_ids(struct rpc_call *c, const char *node, Amber__V1__Snapshot **s, size_t n,
                     char *const *ids, size_t nids, bool gone_ok)
{
    if (nids == 0)
        return 0;
    for (size_t i = 0; i < nids; i++) {
        bool found = false;
        _cleanup_free_ char *lid = id_on(CSI(c), node, ids[i]);
        for (size_t k = 0; k < n && !found && lid; k++)
            found = strcmp(s[k]->id, lid) == 0;
        if (found)
            continue;
        if (gone_ok) {
            struct rpc_status st = {0};
            int code = snapshot_exists(c, ids[i], &st);
            if (code == RPC_NOT_FOUND) {
                rpc_status_clear(&st);
                continue;
            }
            if (code != RPC_OK)
                return amberd_fail(c, code, &st, "looking up a snapshot");
        }
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshot %s is not a member of the group", ids[i]);
    }
    for (size_t k = 0; k < n; k++) {
        bool found = false;
        for (size_t i = 0; i < nids && !found; i++) {
            _cleanup_free_ char *lid = id_on(CSI(c), node, ids[i]);
            found = lid && strcmp(s[k]->id, lid) == 0;
        }
        if (!found)
            return csi_error(c, RPC_INVALID_ARGUMENT, "snapshot_ids leaves out member %s", s[k]->id);
    }
    return 0;
}

/* A group handle: its node (NULL: this node) and bare id, or -EINVAL when
 * it is none of ours. */
static int group_handle(struct csi *p, const char *handle, char **ret_node, char **ret_gid)
{
    if (handle_parts(p, handle, ret_node, ret_gid) < 0)
        return -EINVAL;
    if (!group_id_valid(*ret_gid)) {
        free(*ret_node);
        free(*ret_gid);
        *ret_node = *ret_gid = NULL;
        return -EINVAL;
    }
    return 0;
}

/* --- handlers ----------------------------------------------------------------- */

static int h_group_get_capabilities(struct rpc_call *c, const ProtobufCMessage *m)
{
    Csi__V1__GroupControllerServiceCapability__RPC rpc = CSI__V1__GROUP_CONTROLLER_SERVICE_CAPABILITY__RPC__INIT;
    rpc.type = CSI__V1__GROUP_CONTROLLER_SERVICE_CAPABILITY__RPC__TYPE__CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT;
    Csi__V1__GroupControllerServiceCapability cap = CSI__V1__GROUP_CONTROLLER_SERVICE_CAPABILITY__INIT;
    cap.type_case = CSI__V1__GROUP_CONTROLLER_SERVICE_CAPABILITY__TYPE_RPC;
    cap.rpc = &rpc;
    Csi__V1__GroupControllerServiceCapability *pcap = &cap;
    Csi__V1__GroupControllerGetCapabilitiesResponse r = CSI__V1__GROUP_CONTROLLER_GET_CAPABILITIES_RESPONSE__INIT;
    r.capabilities = &pcap;
    r.n_capabilities = 1;
    return rpc_call_send(c, &r.base);
}

static int send_group(struct rpc_call *c, const char *node, const char *gid, Amber__V1__Snapshot **s,
                      size_t n, bool create)
{
    struct group_out o;
    char handle[CSI_HANDLE_MAX];
    fmt_on(CSI(c), node, gid, handle);
    group_out_init(CSI(c), &o, node, handle, s, n);
    int r;
    if (create) {
        Csi__V1__CreateVolumeGroupSnapshotResponse resp = CSI__V1__CREATE_VOLUME_GROUP_SNAPSHOT_RESPONSE__INIT;
        resp.group_snapshot = &o.g;
        r = rpc_call_send(c, &resp.base);
    } else {
        Csi__V1__GetVolumeGroupSnapshotResponse resp = CSI__V1__GET_VOLUME_GROUP_SNAPSHOT_RESPONSE__INIT;
        resp.group_snapshot = &o.g;
        r = rpc_call_send(c, &resp.base);
    }
    group_out_clear(&o);
    return r;
}

static int h_create_group(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__CreateVolumeGroupSnapshotRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->name)
        return csi_error(c, RPC_INVALID_ARGUMENT, "name is required");
    if (q->n_source_volume_ids == 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "source_volume_ids is required");
    if (q->n_source_volume_ids > GROUP_MAX)
        return csi_error(c, RPC_INVALID_ARGUMENT, "at most %d volumes in a group", GROUP_MAX);
    for (size_t i = 0; i < q->n_source_volume_ids; i++) {
        if (!*q->source_volume_ids[i])
            return csi_error(c, RPC_INVALID_ARGUMENT, "source_volume_ids[%zu] is empty", i);
        for (size_t k = 0; k < i; k++)
            if (strcmp(q->source_volume_ids[k], q->source_volume_ids[i]) == 0)
                return csi_error(c, RPC_INVALID_ARGUMENT, "volume %s is named twice", q->source_volume_ids[i]);
    }

    /* Parameters before any work. Groups freeze unless told not to: amberd
     * takes the members one after another, and only frozen filesystems
     * make that one instant (see the top of the file). */
    bool freeze = true;
    size_t n_labels = 0;
    _cleanup_free_ Amber__V1__Label *labels = xcalloc(q->n_parameters + 2, sizeof *labels);
    _cleanup_free_ Amber__V1__Label **plabels = xcalloc(q->n_parameters + 2, sizeof *plabels);
    for (size_t i = 0; i < q->n_parameters; i++) {
        const char *k = q->parameters[i]->key, *v = q->parameters[i]->value;
        if (strcmp(k, "freeze") == 0) {
            if (strcmp(v, "false") == 0)
                freeze = false;
            else if (strcmp(v, "true") != 0)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter freeze: \"true\" or \"false\"");
        } else if (strncmp(k, LABEL_PREFIX, strlen(LABEL_PREFIX)) == 0) {
            const char *key = k + strlen(LABEL_PREFIX);
            if (!*key)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter %s: the label key is empty", k);
            if (strcmp(key, GROUP_LABEL) == 0 || strcmp(key, GROUP_NAME_LABEL) == 0)
                return csi_error(c, RPC_INVALID_ARGUMENT, "parameter %s: the label is Amber's own", k);
            Amber__V1__Label l = AMBER__V1__LABEL__INIT;
            l.key = (char *)key;
            l.value = (char *)v;
            labels[n_labels++] = l;
        }
    }
    _cleanup_free_ char *gid = group_id_for(q->name);
    const char *ns = csi_map_get((void *const *)q->parameters, q->n_parameters, VGS_NS_KEY);
    const char *vgs = csi_map_get((void *const *)q->parameters, q->n_parameters, VGS_NAME_KEY);
    Amber__V1__Label gl = AMBER__V1__LABEL__INIT;
    gl.key = GROUP_LABEL;
    gl.value = gid;
    labels[n_labels++] = gl;
    if (vgs && *vgs) {
        Amber__V1__Label nl = AMBER__V1__LABEL__INIT;
        nl.key = GROUP_NAME_LABEL;
        nl.value = (char *)vgs;
        labels[n_labels++] = nl;
    }
    for (size_t i = 0; i < n_labels; i++)
        plabels[i] = &labels[i];

    /* One amberd takes the group in one step: every member on one node. */
    _cleanup_free_ char *node = NULL;
    for (size_t i = 0; i < q->n_source_volume_ids; i++) {
        _cleanup_free_ char *vn = NULL, *vid = NULL;
        if (handle_parts(p, q->source_volume_ids[i], &vn, &vid) < 0)
            return csi_error(c, RPC_NOT_FOUND, "source volume %s not found", q->source_volume_ids[i]);
        if (i == 0) {
            node = TAKE_PTR(vn);
        } else if ((node || vn) && (!node || !vn || strcmp(node, vn) != 0)) {
            return csi_error(c, RPC_INVALID_ARGUMENT, "the volumes of a group snapshot must be on one node: "
                             "%s is on node %s, %s on node %s", q->source_volume_ids[0],
                             node ? node : p->node_id, q->source_volume_ids[i], vn ? vn : p->node_id);
        }
    }

    /* The group's id is the key, as for Delete: a Create and a Delete of
     * one group never run at once. */
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "groupid:%s", gid, &held.key);
    if (r < 0)
        return r;
    struct rpc_status st = {0};

    /* The same name again: the same group, if it has the same volumes. */
    _cleanup_pb_ Amber__V1__ListSnapshotsResponse *old = NULL;
    int code = group_members(c, node, gid, &old, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the group");
    if (old->n_snapshots > 0) {
        if (!same_volumes(p, node, old->snapshots, old->n_snapshots, q->source_volume_ids,
                          q->n_source_volume_ids))
            return csi_error(c, RPC_ALREADY_EXISTS, "group snapshot %s exists with other volumes", q->name);
        return send_group(c, node, gid, old->snapshots, old->n_snapshots, true);
    }

    /* Every volume must be one of that node's (an id, never a name); our
     * own are looked up first, another node's answer for themselves. */
    _cleanup_(ids_free) struct ids lid = { xcalloc(q->n_source_volume_ids, sizeof(char *)),
                                           q->n_source_volume_ids };
    char **lids = lid.v;
    for (size_t i = 0; i < q->n_source_volume_ids; i++)
        lids[i] = id_on(p, node, q->source_volume_ids[i]);
    for (size_t i = 0; i < q->n_source_volume_ids && !node; i++) {
        _cleanup_pb_ Amber__V1__Volume *v = NULL;
        code = amberd_get_volume(c, q->source_volume_ids[i], &v, &st);
        if (code == RPC_NOT_FOUND) {
            rpc_status_clear(&st);
            return csi_error(c, RPC_NOT_FOUND, "source volume %s not found", q->source_volume_ids[i]);
        }
        if (code != RPC_OK)
            return amberd_fail(c, code, &st, "looking up a source volume");
    }

    _cleanup_free_ char *name = csi_map_name(q->name);
    size_t n = q->n_source_volume_ids;
    _cleanup_free_ Amber__V1__CreateSnapshotRequest *reqs = xcalloc(n, sizeof *reqs);
    _cleanup_free_ Amber__V1__CreateSnapshotRequest **preqs = xcalloc(n, sizeof *preqs);
    for (size_t i = 0; i < n; i++) {
        Amber__V1__CreateSnapshotRequest one = AMBER__V1__CREATE_SNAPSHOT_REQUEST__INIT;
        one.volume = lids[i] ? lids[i] : q->source_volume_ids[i];
        one.name = name;
        one.labels = plabels;
        one.n_labels = n_labels;
        one.freeze = freeze;
        one.k8s_namespace = (char *)(ns ? ns : "");
        reqs[i] = one;
        preqs[i] = &reqs[i];
    }
    Amber__V1__CreateSnapshotsRequest aq = AMBER__V1__CREATE_SNAPSHOTS_REQUEST__INIT;
    aq.snapshots = preqs;
    aq.n_snapshots = n;
    _cleanup_pb_ Amber__V1__CreateSnapshotsResponse *made = NULL;
    if (node) {
        Amber__V1__ClusterCreateSnapshotsRequest cq = AMBER__V1__CLUSTER_CREATE_SNAPSHOTS_REQUEST__INIT;
        cq.node = node;
        cq.request = &aq;
        code = cluster_call(c, "NodeCreateSnapshots", &cq.base, &amber__v1__create_snapshots_response__descriptor,
                            120000, (ProtobufCMessage **)&made, &st);
    } else {
        code = amberd_call(c, "CreateSnapshots", &aq.base, &amber__v1__create_snapshots_response__descriptor,
                           120000, (ProtobufCMessage **)&made, &st);
    }
    if (code == RPC_ALREADY_EXISTS) {
        rpc_status_clear(&st);
        return csi_error(c, RPC_ALREADY_EXISTS, "group snapshot %s: a volume has a snapshot of that name "
                         "outside the group", q->name);
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "creating the group snapshot");
    log_info("group", "created group snapshot %s id=%s of %zu volumes%s%s%s", q->name, gid, n,
             freeze ? " (frozen)" : "", node ? " on node " : "", node ? node : "");
    return send_group(c, node, gid, made->snapshots, made->n_snapshots, true);
}

static int h_delete_group(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__DeleteVolumeGroupSnapshotRequest *q = (const void *)m;
    struct csi *p = CSI(c);
    if (!*q->group_snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "group_snapshot_id is required");
    Csi__V1__DeleteVolumeGroupSnapshotResponse out = CSI__V1__DELETE_VOLUME_GROUP_SNAPSHOT_RESPONSE__INIT;
    _cleanup_free_ char *node = NULL, *gid = NULL;
    if (group_handle(p, q->group_snapshot_id, &node, &gid) < 0)
        return rpc_call_send(c, &out.base);    /* never one of ours: nothing to delete */
    _cleanup_held_ struct csi_held held = { .p = p };
    int r = csi_op_lock(c, "groupid:%s", gid, &held.key);
    if (r < 0)
        return r;
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__ListSnapshotsResponse *g = NULL;
    int code = group_members(c, node, gid, &g, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the group");
    if ((r = check_ids(c, node, g->snapshots, g->n_snapshots, q->snapshot_ids, q->n_snapshot_ids, true)) < 0)
        return r;
    for (size_t i = 0; i < g->n_snapshots; i++) {
        _cleanup_pb_ Amber__V1__Empty *e = NULL;
        if (node) {
            Amber__V1__ClusterSnapshotRef ref = AMBER__V1__CLUSTER_SNAPSHOT_REF__INIT;
            ref.node = node;
            ref.snapshot = g->snapshots[i]->id;
            code = cluster_call(c, "NodeDeleteSnapshot", &ref.base, &amber__v1__empty__descriptor, 120000,
                                (ProtobufCMessage **)&e, &st);
        } else {
            Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
            ref.snapshot = g->snapshots[i]->id;
            code = amberd_call(c, "DeleteSnapshot", &ref.base, &amber__v1__empty__descriptor, 120000,
                               (ProtobufCMessage **)&e, &st);
        }
        if (code == RPC_NOT_FOUND)
            rpc_status_clear(&st);
        else if (code != RPC_OK)
            return amberd_fail(c, code, &st, "deleting a member snapshot");
    }
    if (g->n_snapshots)
        log_info("group", "deleted group snapshot %s (%zu snapshots)", q->group_snapshot_id, g->n_snapshots);
    return rpc_call_send(c, &out.base);
}

static int h_get_group(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__GetVolumeGroupSnapshotRequest *q = (const void *)m;
    if (!*q->group_snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "group_snapshot_id is required");
    _cleanup_free_ char *node = NULL, *gid = NULL;
    if (group_handle(CSI(c), q->group_snapshot_id, &node, &gid) < 0)
        return csi_error(c, RPC_NOT_FOUND, "group snapshot %s not found", q->group_snapshot_id);
    struct rpc_status st = {0};
    _cleanup_pb_ Amber__V1__ListSnapshotsResponse *g = NULL;
    int code = group_members(c, node, gid, &g, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the group");
    if (g->n_snapshots == 0)
        return csi_error(c, RPC_NOT_FOUND, "group snapshot %s not found", q->group_snapshot_id);
    int r = check_ids(c, node, g->snapshots, g->n_snapshots, q->snapshot_ids, q->n_snapshot_ids, false);
    if (r < 0)
        return r;
    return send_group(c, node, gid, g->snapshots, g->n_snapshots, false);
}

#define M(name, in, out, fn) \
    { "/csi.v1.GroupController/" name, &csi__v1__##in##__descriptor, &csi__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method csi_group_methods[] = {
    M("GroupControllerGetCapabilities", group_controller_get_capabilities_request,
      group_controller_get_capabilities_response, h_group_get_capabilities),
    M("CreateVolumeGroupSnapshot", create_volume_group_snapshot_request,
      create_volume_group_snapshot_response, h_create_group),
    M("DeleteVolumeGroupSnapshot", delete_volume_group_snapshot_request,
      delete_volume_group_snapshot_response, h_delete_group),
    M("GetVolumeGroupSnapshot", get_volume_group_snapshot_request, get_volume_group_snapshot_response,
      h_get_group),
};
const size_t csi_group_methods_n = ARRAY_SIZE(csi_group_methods);
