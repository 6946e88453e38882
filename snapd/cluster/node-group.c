/* node-group.c: group snapshots another node of the cluster holds, for
 * amber-csi's GroupController (a VolumeGroupSnapshotContent need not carry
 * the per-node label the node-deployed csi-snapshotter filters on, so any
 * node's plugin may be asked about any group).
 *
 * Two halves, as node-diff.c:
 *  - on the node socket, amber.v1.Cluster/NodeListSnapshots,
 *    NodeCreateSnapshots and NodeDeleteSnapshot: for this node they are
 *    amber.v1.Amber's ListSnapshots, CreateSnapshots and DeleteSnapshot;
 *    for another node they ask that node's amberd over the mutual-TLS peer
 *    connection and pass its answer through (its code and message);
 *  - on the peer port, amber.v1.ClusterPeer/ListSnapshots, CreateSnapshots
 *    and DeleteSnapshot, to cluster members only, and only for group
 *    snapshots: a listing must filter on the label amber.csi.dev/group,
 *    every snapshot made must carry it, and a snapshot deleted must have
 *    it (INVALID_ARGUMENT / PERMISSION_DENIED otherwise), so a member can
 *    do to another node's snapshots no more than a group's lifecycle
 *    needs. Deletes take a snapshot id, never a name. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "cluster.pb-c.h"
#include "snapd/cluster/cluster.h"

#define GROUP_LABEL "amber.csi.dev/group"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

static bool is_here(struct amberd *d, const char *node)
{
    return !node || !*node || strcmp(node, d->node_id) == 0;
}

static uint64_t left_ms(struct rpc_call *c, uint64_t dflt)
{
    uint64_t dl = rpc_call_deadline(c);
    if (!dl)
        return dflt;
    uint64_t now = now_mono_ns();
    return dl > now ? (dl - now) / 1000000 + 1 : 1;
}

/* Answer with amber.v1.Amber's own handler of `path` (same output type). */
static int local(struct rpc_call *c, const char *path, const ProtobufCMessage *m)
{
    for (size_t i = 0; i < api_node_methods_n; i++)
        if (strcmp(api_node_methods[i].path, path) == 0)
            return api_node_methods[i].handler(c, m);
    return rpc_error(c, RPC_INTERNAL, "no method %s", path);
}

/* --- the peer port ------------------------------------------------------------------ */

static bool has_group_label(Amber__V1__Label *const *l, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(l[i]->key, GROUP_LABEL) == 0 && *l[i]->value)
            return true;
    return false;
}

int cluster_h_peer_list_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ListSnapshotsRequest *q = (const void *)m;
    int r;
    if ((r = cluster_need_member(c, NULL)) < 0)
        return r;
    if (!has_group_label(q->labels, q->n_labels))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a peer lists group snapshots only (label %s)",
                         GROUP_LABEL);
    return local(c, "/amber.v1.Amber/ListSnapshots", m);
}

int cluster_h_peer_create_snapshots(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__CreateSnapshotsRequest *q = (const void *)m;
    int r;
    if ((r = cluster_need_member(c, NULL)) < 0)
        return r;
    for (size_t i = 0; i < q->n_snapshots; i++)
        if (!has_group_label(q->snapshots[i]->labels, q->snapshots[i]->n_labels))
            return rpc_error(c, RPC_INVALID_ARGUMENT, "a peer makes group snapshots only (label %s)",
                             GROUP_LABEL);
    return local(c, "/amber.v1.Amber/CreateSnapshots", m);
}

int cluster_h_peer_delete_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    int r;
    if ((r = cluster_need_member(c, NULL)) < 0)
        return r;
    if (!q->snapshot || !uuid_is_valid(q->snapshot))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a snapshot id, not \"%s\"", q->snapshot ? q->snapshot : "");
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    if ((r = cluster_local_snapshot(c, q->snapshot, &s)) < 0)
        return r;
    bool group = false;
    for (size_t i = 0; i < s->n_labels && !group; i++)
        group = strcmp(s->labels[i].key, GROUP_LABEL) == 0;
    if (!group)
        return rpc_error(c, RPC_PERMISSION_DENIED, "a peer deletes group snapshots only; %s is not one",
                         q->snapshot);
    return local(c, "/amber.v1.Amber/DeleteSnapshot", m);
}

/* --- the node socket ---------------------------------------------------------------- */

/* Ask `node`'s ClusterPeer `method` with q and pass its answer (of type
 * out) or its error through. */
static int ask(struct rpc_call *c, const char *node, const char *method, const ProtobufCMessage *q,
               const ProtobufCMessageDescriptor *out, uint64_t timeout_ms)
{
    int r;
    if (!D(c)->cluster)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "this node is not in cluster mode (--cluster-ca)");
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    if ((r = cluster_node_client(c, node, &cl, &tls)) < 0)
        return r;
    _cleanup_free_ char *path = xasprintf("/amber.v1.ClusterPeer/%s", method);
    ProtobufCMessage *res = NULL;
    struct rpc_status st = {0};
    int code = rpc_client_call(cl, path, q, out, left_ms(c, timeout_ms), &res, &st);
    rpc_client_free(cl);
    rpc_tls_free(tls);
    if (code != RPC_OK) {
        r = rpc_error(c, code, "node %s: %s", node, st.message ? st.message : rpc_code_name(code));
        rpc_status_clear(&st);
        return r;
    }
    rpc_status_clear(&st);
    r = rpc_call_send(c, res);
    protobuf_c_message_free_unpacked(res, NULL);
    return r;
}

static int h_node_list(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterListSnapshotsRequest *q = (const void *)m;
    Amber__V1__ListSnapshotsRequest none = AMBER__V1__LIST_SNAPSHOTS_REQUEST__INIT;
    const ProtobufCMessage *in = q->request ? &q->request->base : &none.base;
    if (is_here(D(c), q->node))
        return local(c, "/amber.v1.Amber/ListSnapshots", in);
    return ask(c, q->node, "ListSnapshots", in, &amber__v1__list_snapshots_response__descriptor, 30000);
}

static int h_node_create(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterCreateSnapshotsRequest *q = (const void *)m;
    if (!q->request)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "no request");
    if (is_here(D(c), q->node))
        return local(c, "/amber.v1.Amber/CreateSnapshots", &q->request->base);
    return ask(c, q->node, "CreateSnapshots", &q->request->base,
               &amber__v1__create_snapshots_response__descriptor, 120000);
}

static int h_node_delete(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterSnapshotRef *q = (const void *)m;
    Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
    ref.snapshot = q->snapshot;
    if (is_here(D(c), q->node))
        return local(c, "/amber.v1.Amber/DeleteSnapshot", &ref.base);
    return ask(c, q->node, "DeleteSnapshot", &ref.base, &amber__v1__empty__descriptor, 120000);
}

#define M(name, in, out, fn) \
    { "/amber.v1.Cluster/" name, &amber__v1__##in##__descriptor, &amber__v1__##out##__descriptor, \
      RPC_UNARY, fn }

const struct rpc_method cluster_group_api_methods[] = {
    M("NodeListSnapshots", cluster_list_snapshots_request, list_snapshots_response, h_node_list),
    M("NodeCreateSnapshots", cluster_create_snapshots_request, create_snapshots_response, h_node_create),
    M("NodeDeleteSnapshot", cluster_snapshot_ref, empty, h_node_delete),
};
const size_t cluster_group_api_methods_n = ARRAY_SIZE(cluster_group_api_methods);
