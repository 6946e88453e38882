/* node-diff.c: a snapshot another node of the cluster holds, its record and
 * its extents, for amber-csi's SnapshotMetadata service (the sidecar has
 * one address for the whole driver, so any node may have to answer).
 *
 * Two halves:
 *  - on the node socket, amber.v1.Cluster/GetNodeSnapshot and NodeDiff:
 *    for this node they answer from our catalog and pool (as GetSnapshot
 *    and Diff do); for another node they ask that node's amberd over the
 *    mutual-TLS peer connection (the registry's address, the cluster CA's
 *    trust) and pass its answer through;
 *  - on the peer port, amber.v1.ClusterPeer/GetSnapshot and Diff, answered
 *    to cluster members only (peer_ca_member): a peer of another cluster,
 *    pinned, gets PERMISSION_DENIED, as for any volume not published to it.
 *
 * The proxy holds one DiffResponse (up to 4096 extents) at a time: it reads
 * the next from the holder only once rpc_call_send has queued the previous
 * for our caller, and rpc_call_send blocks while ~1 MiB is queued, so a
 * caller that stops reading stops us, our stream's flow-control window
 * stays closed and the holder's send blocks in turn. Memory is bounded on
 * both hops whatever the number of extents. A cancelled call cancels the
 * holder's stream. A holder we cannot reach is UNAVAILABLE; its own answer
 * (NOT_FOUND, INVALID_ARGUMENT, …) is passed on with its code.
 *
 * Only ids are accepted (snapshot handles carry ids): names are per node
 * and would resolve differently on each. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "cluster.pb-c.h"
#include "snapd/cluster/cluster.h"

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

static bool is_here(struct amberd *d, const char *node)
{
    return !node || !*node || strcmp(node, d->node_id) == 0;
}

/* Both ids valid ("from" may be empty). */
static int check_ids(struct rpc_call *c, const char *from, const char *to)
{
    if (!to || !uuid_is_valid(to))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a snapshot id, not \"%s\"", to ? to : "");
    if (from && *from && !uuid_is_valid(from))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a base snapshot id, not \"%s\"", from);
    return 0;
}

/* Milliseconds left of the call's deadline (0: none). */
static uint64_t left_ms(struct rpc_call *c)
{
    uint64_t dl = rpc_call_deadline(c);
    if (!dl)
        return 0;
    uint64_t now = now_mono_ns();
    return dl > now ? (dl - now) / 1000000 + 1 : 1;
}

/* --- the answers from here ------------------------------------------------------ */

static int local_snapshot(struct rpc_call *c, const char *id)
{
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r = cluster_local_snapshot(c, id, &s);
    if (r < 0)
        return r;
    return api_send_snapshot(c, s);
}

static int local_diff(struct rpc_call *c, const char *from, const char *to)
{
    return api_diff_stream(c, from ? from : "", to, "");
}

/* --- the peer port: what other nodes ask of us ------------------------------------ */

static int h_peer_get_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__SnapshotRef *q = (const void *)m;
    int r;
    if ((r = cluster_need_member(c, NULL)) < 0 || (r = check_ids(c, NULL, q->snapshot)) < 0)
        return r;
    return local_snapshot(c, q->snapshot);
}

static int h_peer_diff(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__DiffRequest *q = (const void *)m;
    int r;
    if ((r = cluster_need_member(c, NULL)) < 0 || (r = check_ids(c, q->from, q->to)) < 0)
        return r;
    return local_diff(c, q->from, q->to);
}

#define P(name, in, out, kind, fn) \
    { "/amber.v1.ClusterPeer/" name, &amber__v1__##in##__descriptor, &amber__v1__##out##__descriptor, \
      kind, fn }

const struct rpc_method cluster_peer_methods[] = {
    P("GetSnapshot", snapshot_ref, snapshot, RPC_UNARY, h_peer_get_snapshot),
    P("Diff", diff_request, diff_response, RPC_SERVER_STREAM, h_peer_diff),
    /* node-group.c */
    P("ListSnapshots", list_snapshots_request, list_snapshots_response, RPC_UNARY,
      cluster_h_peer_list_snapshots),
    P("CreateSnapshots", create_snapshots_request, create_snapshots_response, RPC_UNARY,
      cluster_h_peer_create_snapshots),
    P("DeleteSnapshot", snapshot_ref, empty, RPC_UNARY, cluster_h_peer_delete_snapshot),
    P("PrepareClone", cluster_clone_request, snapshot, RPC_UNARY, cluster_h_peer_prepare_clone),
    P("ReleaseClone", cluster_clone_request, empty, RPC_UNARY, cluster_h_peer_release_clone),
};
const size_t cluster_peer_methods_n = ARRAY_SIZE(cluster_peer_methods);

/* --- the node socket: asking the holder ------------------------------------------- */

static int remote_error(struct rpc_call *c, const char *node, int code, struct rpc_status *st)
{
    int r = rpc_error(c, code, "node %s: %s", node, st->message ? st->message : rpc_code_name(code));
    rpc_status_clear(st);
    return r;
}

int cluster_h_get_node_snapshot(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterSnapshotRef *q = (const void *)m;
    int r;
    if ((r = check_ids(c, NULL, q->snapshot)) < 0)
        return r;
    if (is_here(D(c), q->node))
        return local_snapshot(c, q->snapshot);
    if (!D(c)->cluster)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "this node is not in cluster mode (--cluster-ca)");
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    if ((r = cluster_node_client(c, q->node, &cl, &tls)) < 0)
        return r;
    Amber__V1__SnapshotRef ref = AMBER__V1__SNAPSHOT_REF__INIT;
    ref.snapshot = q->snapshot;
    Amber__V1__Snapshot *s = NULL;
    struct rpc_status st = {0};
    uint64_t t = left_ms(c);
    int code = rpc_client_call(cl, "/amber.v1.ClusterPeer/GetSnapshot", &ref.base,
                               &amber__v1__snapshot__descriptor, t ? t : 30000, (ProtobufCMessage **)&s,
                               &st);
    rpc_client_free(cl);
    rpc_tls_free(tls);
    if (code != RPC_OK)
        return remote_error(c, q->node, code, &st);
    rpc_status_clear(&st);
    r = rpc_call_send(c, &s->base);
    protobuf_c_message_free_unpacked(&s->base, NULL);
    return r;
}

int cluster_h_node_diff(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ClusterDiffRequest *q = (const void *)m;
    int r;
    if ((r = check_ids(c, q->from, q->to)) < 0)
        return r;
    if (is_here(D(c), q->node))
        return local_diff(c, q->from, q->to);
    if (!D(c)->cluster)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "this node is not in cluster mode (--cluster-ca)");
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    if ((r = cluster_node_client(c, q->node, &cl, &tls)) < 0)
        return r;
    struct rpc_status st = {0};
    struct rpc_stream *s = NULL;
    int code = rpc_stream_open(cl, "/amber.v1.ClusterPeer/Diff", left_ms(c), &s, &st);
    if (code == RPC_OK) {
        Amber__V1__DiffRequest dq = AMBER__V1__DIFF_REQUEST__INIT;
        dq.from = q->from;
        dq.to = q->to;
        r = rpc_stream_send(s, &dq.base);
        if (r == 0)
            r = rpc_stream_close_send(s);
        uint64_t msgs = 0;
        /* One message in hand: the next is read once this one is queued. */
        while (r == 0) {
            ProtobufCMessage *msg = NULL;
            int rr = rpc_stream_recv(s, &amber__v1__diff_response__descriptor, &msg);
            if (rr <= 0) {
                r = rr;
                break;
            }
            r = rpc_call_send(c, msg);
            protobuf_c_message_free_unpacked(msg, NULL);
            msgs++;
        }
        if (r == 0) {
            code = rpc_stream_finish(s, &st);
        } else {
            rpc_stream_cancel(s);
            code = RPC_UNAVAILABLE;
        }
        s = NULL;
        if (r < 0 && (r == -ECANCELED || rpc_call_cancelled(c))) {
            log_debug("cluster", "diff of %s from node %s cancelled by the caller after %llu "
                      "message(s)", q->to, q->node, (unsigned long long)msgs);
            rpc_status_clear(&st);
            rpc_client_free(cl);
            rpc_tls_free(tls);
            return r;
        }
        if (r < 0) {
            rpc_status_clear(&st);
            st.message = xasprintf("reading the extents: %s", strerror(-r));
        }
    }
    rpc_client_free(cl);
    rpc_tls_free(tls);
    if (code != RPC_OK)
        return remote_error(c, q->node, code, &st);
    rpc_status_clear(&st);
    return 0;
}
