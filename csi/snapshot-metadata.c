/* snapshot-metadata.c: the CSI SnapshotMetadata service (changed-block
 * tracking for backup tools, KEP-3314): GetMetadataAllocated and
 * GetMetadataDelta, answered from amberd's exact extents.
 *
 * Both RPCs are a pipe from amberd's Diff stream to the CSI stream: an
 * amberd DiffResponse (up to 4096 extents) is read, cut at starting_offset,
 * re-batched into messages of at most max_results tuples and sent; the
 * next DiffResponse is read only once those are handed to the runtime. The
 * runtime's send blocks while more than ~1 MiB is queued for the client,
 * and our amberd stream reopens its window only as we take messages, so a
 * client that stops reading stops amberd too, and memory stays bounded
 * (one amberd message, one batch, the two runtime queues) whatever the
 * number of extents. A cancelled CSI call cancels the amberd stream.
 *
 * Format: VARIABLE_LENGTH, byte offsets ascending and never overlapping
 * (amberd's extents are increasing and coalesced). volume_capacity_bytes is
 * the snapshot's size. starting_offset S: the spec asks that no tuple end
 * at or before S; an extent straddling S is cut to start at S, so a resumed
 * client receives exactly the bytes it has not seen. S beyond the size is
 * OUT_OF_RANGE; S equal to the size is an empty answer (a client resuming
 * after an extent that ended the volume). A stream with no extents still
 * carries one message, so the client learns the capacity.
 *
 * Errors (the spec's tables): a missing id, a negative offset or
 * max_results, snapshots of two volumes, or a base newer than the target:
 * INVALID_ARGUMENT; an unknown or deleted snapshot: NOT_FOUND; a snapshot
 * not ready (being created, or a replica still arriving): FAILED_PRECONDITION.
 * A deleted base is answered exactly: amberd keeps a tombstone of a deleted
 * snapshot's place in its volume's chain with its exact extents
 * (snapd/store/store-diff.c), so the delta is the union of the recorded
 * extents of the chain members after it up to the target. A base id that
 * never existed (or whose tombstone was collected: no later snapshot of the
 * volume remained) is NOT_FOUND, one of another volume INVALID_ARGUMENT
 * (so is a deleted base newer than the target). With --store-off the
 * delete computes the same extents (every snapshot is resident); a
 * tombstone without extents is FAILED_PRECONDITION (the caller falls back
 * to GetMetadataAllocated). Deleting snapshots between base and target
 * changes nothing.
 *
 * Any node answers for any snapshot of the cluster (the sidecar has one
 * address for the whole driver). A handle naming another node (NODE/UUID,
 * --node-handles) is looked up and read through this node's amberd, which
 * asks the holder over the mutual-TLS peer connection and streams its
 * Diff through one message at a time (snapd/cluster/node-diff.c), so the
 * backpressure above reaches the holder and both hops stay bounded. Base
 * and target on two nodes are two volumes: INVALID_ARGUMENT. A holder that
 * cannot be reached: UNAVAILABLE. Old handles and this node's handles take
 * the local path, as before. Secrets are ignored. */
#include <inttypes.h>
#include <string.h>

#include "amber/log.h"
#include "cluster.pb-c.h"
#include "csi/csi.h"

/* Tuples a message carries when the client leaves max_results at 0, and
 * the most we ever put in one (the spec lets us send fewer). */
#define MD_DEFAULT_BATCH 1024
#define MD_MAX_BATCH 4096

/* --- snapshots ----------------------------------------------------------------- */

/* Milliseconds to give a call to amberd: at most `ms`, and no more than the
 * caller's deadline leaves (at least 1). */
static uint64_t md_timeout(struct rpc_call *c, uint64_t ms)
{
    uint64_t deadline = rpc_call_deadline(c);
    if (deadline) {
        uint64_t now = now_mono_ns();
        uint64_t left = deadline > now ? (deadline - now) / 1000000 + 1 : 1;
        if (!ms || left < ms)
            ms = left;
    }
    return ms;
}

/* A snapshot by CSI id: RPC_OK with *ret (and *ret_node, caller frees: the
 * node holding it when that is another node, else NULL), RPC_NOT_FOUND, or
 * another code with st set. Another node's snapshot is asked of that node
 * through our amberd (amber.v1.Cluster/GetNodeSnapshot). */
static int md_get_snapshot(struct rpc_call *c, const char *handle, Amber__V1__Snapshot **ret,
                           char **ret_node, struct rpc_status *st)
{
    _cleanup_free_ char *node = NULL, *id = NULL;
    *ret_node = NULL;
    if (csi_handle_split(handle, &node, &id) < 0 || !uuid_is_valid(id))
        return RPC_NOT_FOUND;
    Amber__V1__Snapshot *s = NULL;
    int code;
    if (node && strcmp(node, CSI(c)->node_id) != 0) {
        Amber__V1__ClusterSnapshotRef ref = AMBER__V1__CLUSTER_SNAPSHOT_REF__INIT;
        ref.node = node;
        ref.snapshot = id;
        code = rpc_client_call(CSI(c)->amberd, "/amber.v1.Cluster/GetNodeSnapshot", &ref.base,
                               &amber__v1__snapshot__descriptor, md_timeout(c, 30000),
                               (ProtobufCMessage **)&s, st);
    } else {
        /* This node's (or an old handle): as every other call looks it up. */
        return amberd_get_snapshot(c, handle, ret, st);
    }
    if (code != RPC_OK)
        return code;
    if (strcmp(s->id, id) != 0) {
        protobuf_c_message_free_unpacked(&s->base, NULL);
        return RPC_NOT_FOUND;
    }
    *ret = s;
    *ret_node = TAKE_PTR(node);
    return RPC_OK;
}

/* Look `id` up and check it can be answered for; 0 with *ret (and
 * *ret_node, as md_get_snapshot), or the recorded CSI error. `what` names
 * it in messages ("", "base", "target"). With ret_gone (a base): a
 * snapshot id that is not found is 0 with *ret NULL, *ret_gone its id and
 * *ret_node its node, for amberd to answer from its tombstone. */
static int md_snapshot(struct rpc_call *c, const char *id, const char *what,
                       Amber__V1__Snapshot **ret, char **ret_node, char **ret_gone)
{
    struct rpc_status st = {0};
    int code = md_get_snapshot(c, id, ret, ret_node, &st);
    if (code == RPC_NOT_FOUND) {
        rpc_status_clear(&st);
        _cleanup_free_ char *node = NULL, *sid = NULL;
        if (ret_gone && csi_handle_split(id, &node, &sid) == 0 && uuid_is_valid(sid)) {
            if (node && strcmp(node, CSI(c)->node_id) == 0) {
                free(node);
                node = NULL;
            }
            *ret_gone = TAKE_PTR(sid);
            *ret_node = TAKE_PTR(node);
            return 0;
        }
        return csi_error(c, RPC_NOT_FOUND, "%s snapshot %s not found", what, id);
    }
    if (code == RPC_UNAVAILABLE && strchr(id, '/')) {
        int r = csi_error(c, RPC_UNAVAILABLE, "%s snapshot %s is not reachable: %s", what, id,
                          st.message ? st.message : rpc_code_name(code));
        rpc_status_clear(&st);
        return r;
    }
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "looking up the snapshot");
    if (strcmp((*ret)->state, "ready") != 0) {
        int r = csi_error(c, RPC_FAILED_PRECONDITION, "%s snapshot %s is %s, not ready", what, id,
                          (*ret)->state);
        protobuf_c_message_free_unpacked(&(*ret)->base, NULL);
        *ret = NULL;
        free(*ret_node);
        *ret_node = NULL;
        return r;
    }
    return 0;
}

/* --- the extent source ------------------------------------------------------------ */

/* A stream of extents (increasing, never overlapping) of one snapshot
 * (allocated) or of a pair (changed), read one amberd message at a time. */
struct md_extents {
    struct rpc_stream *s;
    Amber__V1__DiffResponse *msg;
    size_t i;
};

/* Open the extents of `target` (base NULL: allocated; else changed since
 * base). `node` NULL: this node's amberd answers (amber.v1.Amber/Diff);
 * else the node holding both, asked through our amberd, which streams that
 * node's answer through (amber.v1.Cluster/NodeDiff, the same messages).
 * Returns RPC_OK, or a code with st set. */
static int md_extents_open(struct rpc_call *c, const char *node, const Amber__V1__Snapshot *base,
                           const Amber__V1__Snapshot *target, struct md_extents *x,
                           struct rpc_status *st)
{
    *x = (struct md_extents){0};
    uint64_t timeout_ms = md_timeout(c, 0);
    const char *path = node ? "/amber.v1.Cluster/NodeDiff" : "/amber.v1.Amber/Diff";
    int code = rpc_stream_open(CSI(c)->amberd, path, timeout_ms, &x->s, st);
    if (code != RPC_OK)
        return code;
    int r;
    if (node) {
        Amber__V1__ClusterDiffRequest q = AMBER__V1__CLUSTER_DIFF_REQUEST__INIT;
        q.node = (char *)node;
        q.from = base ? base->id : "";
        q.to = target->id;
        r = rpc_stream_send(x->s, &q.base);
    } else {
        Amber__V1__DiffRequest q = AMBER__V1__DIFF_REQUEST__INIT;
        q.from = base ? base->id : "";
        q.to = target->id;
        r = rpc_stream_send(x->s, &q.base);
    }
    if (r == 0)
        r = rpc_stream_close_send(x->s);
    if (r < 0) {
        code = rpc_stream_finish(x->s, st);
        x->s = NULL;
        return code != RPC_OK ? code : RPC_UNAVAILABLE;
    }
    return RPC_OK;
}

/* The next extent: 1 with *off and *len, 0 at the end (then *code/st say how
 * the stream ended), or a negative errno when reading failed. */
static int md_extents_next(struct md_extents *x, uint64_t *off, uint64_t *len, int *code,
                           struct rpc_status *st)
{
    for (;;) {
        if (x->msg && x->i < x->msg->n_extents) {
            const Amber__V1__Extent *e = x->msg->extents[x->i++];
            *off = e->offset;
            *len = e->length;
            return 1;
        }
        if (x->msg) {
            protobuf_c_message_free_unpacked(&x->msg->base, NULL);
            x->msg = NULL;
        }
        x->i = 0;
        ProtobufCMessage *m = NULL;
        int r = rpc_stream_recv(x->s, &amber__v1__diff_response__descriptor, &m);
        if (r < 0)
            return r;
        if (r == 0) {
            *code = rpc_stream_finish(x->s, st);
            x->s = NULL;
            return 0;
        }
        x->msg = (Amber__V1__DiffResponse *)m;
    }
}

static void md_extents_close(struct md_extents *x)
{
    if (x->msg)
        protobuf_c_message_free_unpacked(&x->msg->base, NULL);
    rpc_stream_cancel(x->s);     /* a no-op once finished (NULL) */
    *x = (struct md_extents){0};
}

/* --- the CSI stream ------------------------------------------------------------------ */

struct md_out {
    struct rpc_call *call;
    bool delta;                 /* GetMetadataDeltaResponse, else Allocated */
    int64_t capacity;
    size_t max, n;
    bool sent_any;
    Csi__V1__BlockMetadata *bm;
    Csi__V1__BlockMetadata **pbm;
};

static int md_flush(struct md_out *o)
{
    int r;
    if (o->delta) {
        Csi__V1__GetMetadataDeltaResponse m = CSI__V1__GET_METADATA_DELTA_RESPONSE__INIT;
        m.block_metadata_type = CSI__V1__BLOCK_METADATA_TYPE__VARIABLE_LENGTH;
        m.volume_capacity_bytes = o->capacity;
        m.block_metadata = o->pbm;
        m.n_block_metadata = o->n;
        r = rpc_call_send(o->call, &m.base);
    } else {
        Csi__V1__GetMetadataAllocatedResponse m = CSI__V1__GET_METADATA_ALLOCATED_RESPONSE__INIT;
        m.block_metadata_type = CSI__V1__BLOCK_METADATA_TYPE__VARIABLE_LENGTH;
        m.volume_capacity_bytes = o->capacity;
        m.block_metadata = o->pbm;
        m.n_block_metadata = o->n;
        r = rpc_call_send(o->call, &m.base);
    }
    o->n = 0;
    o->sent_any = true;
    return r;
}

static int md_add(struct md_out *o, uint64_t off, uint64_t len)
{
    Csi__V1__BlockMetadata b = CSI__V1__BLOCK_METADATA__INIT;
    b.byte_offset = (int64_t)off;
    b.size_bytes = (int64_t)len;
    o->bm[o->n] = b;
    o->pbm[o->n] = &o->bm[o->n];
    o->n++;
    return o->n == o->max ? md_flush(o) : 0;
}

/* Stream the extents of target (or of base..target) from `start`. */
static int md_stream(struct rpc_call *c, const char *node, const Amber__V1__Snapshot *base,
                     const Amber__V1__Snapshot *target, int64_t start, int32_t max_results, bool delta)
{
    if (start < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "starting_offset must not be negative");
    if (max_results < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "max_results must not be negative");
    uint64_t cap = target->size_bytes, s = (uint64_t)start;
    if (s > cap)
        return csi_error(c, RPC_OUT_OF_RANGE, "starting_offset %" PRIu64 " is beyond the volume's %" PRIu64
                         " bytes", s, cap);

    struct md_out o = {
        .call = c, .delta = delta, .capacity = (int64_t)cap,
        .max = max_results > 0 && max_results < MD_MAX_BATCH ? (size_t)max_results
               : max_results > 0 ? MD_MAX_BATCH : MD_DEFAULT_BATCH,
    };
    _cleanup_free_ Csi__V1__BlockMetadata *bm = o.bm = xcalloc(o.max, sizeof *o.bm);
    _cleanup_free_ Csi__V1__BlockMetadata **pbm = o.pbm = xcalloc(o.max, sizeof *o.pbm);

    struct rpc_status st = {0};
    struct md_extents x;
    int code = md_extents_open(c, node, base, target, &x, &st);
    if (code != RPC_OK)
        return amberd_fail(c, code, &st, "reading the snapshot's extents");
    uint64_t off, len, n_ext = 0;
    int r;
    code = RPC_OK;
    while ((r = md_extents_next(&x, &off, &len, &code, &st)) > 0) {
        uint64_t end = off + len;
        if (len == 0 || end <= s)
            continue;
        if (off < s)
            off = s;
        if (end > cap)      /* never past the capacity the stream states */
            end = cap;
        if (end <= off)
            continue;
        n_ext++;
        if ((r = md_add(&o, off, end - off)) < 0)
            break;
    }
    md_extents_close(&x);
    if (r < 0) {
        rpc_status_clear(&st);
        if (r == -ECANCELED || rpc_call_cancelled(c)) {
            log_debug("metadata", "%s of %s cancelled by the client after %" PRIu64 " extents",
                      delta ? "delta" : "allocated", target->id, n_ext);
            return r;
        }
        return csi_error(c, RPC_UNAVAILABLE, "reading the snapshot's extents from amberd: %s",
                         strerror(-r));
    }
    if (code != RPC_OK) {
        if (code == RPC_NOT_FOUND)    /* deleted while we looked */
            return amberd_fail(c, RPC_NOT_FOUND, &st, "snapshot");
        return amberd_fail(c, code, &st, "reading the snapshot's extents");
    }
    rpc_status_clear(&st);
    if (o.n > 0 || !o.sent_any)
        r = md_flush(&o);
    if (r == 0)
        log_debug("metadata", "%s of %s from %" PRIu64 ": %" PRIu64 " extents",
                  delta ? "delta" : "allocated", target->id, s, n_ext);
    return r;
}

/* --- handlers ------------------------------------------------------------------------- */

static int h_get_metadata_allocated(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__GetMetadataAllocatedRequest *q = (const void *)m;
    if (!*q->snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshot_id is required");
    if (q->starting_offset < 0 || q->max_results < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "starting_offset and max_results must not be negative");
    _cleanup_pb_ Amber__V1__Snapshot *s = NULL;
    _cleanup_free_ char *node = NULL;
    int r = md_snapshot(c, q->snapshot_id, "", &s, &node, NULL);
    if (r < 0)
        return r;
    return md_stream(c, node, NULL, s, q->starting_offset, q->max_results, false);
}

static int h_get_metadata_delta(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Csi__V1__GetMetadataDeltaRequest *q = (const void *)m;
    if (!*q->base_snapshot_id || !*q->target_snapshot_id)
        return csi_error(c, RPC_INVALID_ARGUMENT, "base_snapshot_id and target_snapshot_id are required");
    if (q->starting_offset < 0 || q->max_results < 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "starting_offset and max_results must not be negative");
    _cleanup_pb_ Amber__V1__Snapshot *b = NULL, *t = NULL;
    _cleanup_free_ char *bnode = NULL, *tnode = NULL, *bid = NULL;
    int r = md_snapshot(c, q->base_snapshot_id, "base", &b, &bnode, &bid);
    if (r < 0)
        return r;
    if ((r = md_snapshot(c, q->target_snapshot_id, "target", &t, &tnode, NULL)) < 0)
        return r;
    Amber__V1__Snapshot gone = AMBER__V1__SNAPSHOT__INIT;
    if (bid) {
        /* A deleted base: amberd answers from its tombstone (or says
         * NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION itself). */
        if ((bnode || tnode) && (!bnode || !tnode || strcmp(bnode, tnode) != 0))
            return csi_error(c, RPC_INVALID_ARGUMENT, "snapshots %s and %s are of different volumes "
                             "(on nodes %s and %s)", q->base_snapshot_id, q->target_snapshot_id,
                             bnode ? bnode : CSI(c)->node_id, tnode ? tnode : CSI(c)->node_id);
        gone.id = bid;
        return md_stream(c, tnode, &gone, t, q->starting_offset, q->max_results, true);
    }
    /* A volume lives on one node: snapshots on two nodes are of two volumes
     * (a replica has its own id), whatever their ids. */
    if ((bnode || tnode) && (!bnode || !tnode || strcmp(bnode, tnode) != 0))
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshots %s and %s are of different volumes "
                         "(on nodes %s and %s)", q->base_snapshot_id, q->target_snapshot_id,
                         bnode ? bnode : CSI(c)->node_id, tnode ? tnode : CSI(c)->node_id);
    if (strcmp(b->volume_id, t->volume_id) != 0)
        return csi_error(c, RPC_INVALID_ARGUMENT, "snapshots %s and %s are of different volumes", b->id, t->id);
    if (b->created_ns > t->created_ns)
        return csi_error(c, RPC_INVALID_ARGUMENT, "the base snapshot %s is newer than the target %s",
                         b->id, t->id);
    return md_stream(c, tnode, b, t, q->starting_offset, q->max_results, true);
}

#define M(name, in, out, fn) \
    { "/csi.v1.SnapshotMetadata/" name, &csi__v1__##in##__descriptor, &csi__v1__##out##__descriptor, \
      RPC_SERVER_STREAM, fn }

const struct rpc_method csi_snapshot_metadata_methods[] = {
    M("GetMetadataAllocated", get_metadata_allocated_request, get_metadata_allocated_response,
      h_get_metadata_allocated),
    M("GetMetadataDelta", get_metadata_delta_request, get_metadata_delta_response, h_get_metadata_delta),
};
const size_t csi_snapshot_metadata_methods_n = ARRAY_SIZE(csi_snapshot_metadata_methods);
