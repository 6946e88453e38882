/* sync-client.c: the transfers this node starts: sync_pull (we receive:
 * GetChain, then Pull with our Hello, then the receiver engine) and
 * sync_push (we send: Push with an Offer, the peer's Hello, then the
 * sender engine), and GetChain on a peer. Called by the node socket's Sync
 * service (sync-api.c) and the subscription follower (subscribe.c); calls
 * the engines and the session primitives only. */
#include <string.h>

#include "amber/util.h"
#include "snapd/sync/peer.h"

static void cat_peer_freep_(struct cat_peer **p) { cat_peer_free(*p); }

void sync_result_clear(struct sync_result *r)
{
    free(r->volume);
    free(r->volume_id);
    *r = (struct sync_result){0};
}

/* --- transfers we start ------------------------------------------------------ */

int sync_remote_chain(struct amberd *d, const char *peer, const char *volume,
                      Amber__Peer__V1__ChainResponse **ret, struct op_err *e)
{
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    int r;
    if ((r = peer_find(d, peer, &p, e)) < 0 || (r = peer_client(d, p, &cl, &tls, e)) < 0)
        return r;
    Amber__Peer__V1__ChainRequest q = AMBER__PEER__V1__CHAIN_REQUEST__INIT;
    q.volume = (char *)volume;
    struct rpc_status st = {0};
    int code = rpc_client_call(cl, "/amber.peer.v1.Peer/GetChain", &q.base,
                               &amber__peer__v1__chain_response__descriptor, 30000,
                               (ProtobufCMessage **)ret, &st);
    rpc_client_free(cl);
    rpc_tls_free(tls);
    if (code != RPC_OK)
        r = peer_call_error(e, peer, code, &st);
    rpc_status_clear(&st);
    return r;
}

int sync_pull(struct amberd *d, const char *peer, const char *volume, const char *as_name,
              const char *snapshot, sync_progress_fn progress, void *userdata,
              struct sync_result *res, struct op_err *e)
{
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    Amber__Peer__V1__ChainResponse *chain = NULL;
    struct recv_session *rs = NULL;
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    struct sync_chan ch = {0};
    struct rpc_status st = {0};
    int r;
    if ((r = peer_find(d, peer, &p, e)) < 0)
        return r;
    if ((r = sync_remote_chain(d, peer, volume, &chain, e)) < 0)
        return r;
    r = recv_open(d, peer, chain->volume_id, chain->volume_name, chain->size_bytes, as_name, &rs, e);
    if (r < 0)
        goto out;
    res->volume = xstrdup(recv_volume_name(rs));
    res->volume_id = xstrdup(recv_volume_id(rs));
    if ((r = peer_client(d, p, &cl, &tls, e)) < 0)
        goto out;
    int code = rpc_stream_open(cl, "/amber.peer.v1.Peer/Pull", 0, &ch.stream, &st);
    if (code != RPC_OK) {
        r = peer_call_error(e, peer, code, &st);
        goto out;
    }
    Amber__Peer__V1__Hello h = AMBER__PEER__V1__HELLO__INIT;
    recv_hello(rs, &h);
    h.volume = chain->volume_id;
    h.upto = (char *)(snapshot ? snapshot : "");
    Amber__Peer__V1__RecvMsg hm = AMBER__PEER__V1__RECV_MSG__INIT;
    hm.m_case = AMBER__PEER__V1__RECV_MSG__M_HELLO;
    hm.hello = &h;
    r = chan_send(&ch, &hm.base);
    free(h.have);
    while (r >= 0) {
        Amber__Peer__V1__SendMsg *m = NULL;
        r = chan_recv(&ch, &amber__peer__v1__send_msg__descriptor, (ProtobufCMessage **)&m);
        if (r <= 0)
            break;
        r = recv_handle(rs, &ch, m, progress, userdata, e);
        protobuf_c_message_free_unpacked(&m->base, NULL);
        if (r == 1)
            break;
    }
    if (r == 1) {
        /* Done: everything is committed; the call's status adds nothing. */
        r = 0;
        rpc_stream_cancel(ch.stream);
    } else if (e->msg) {
        rpc_stream_cancel(ch.stream);       /* our own failure, already in e */
    } else {
        /* The sender ended the call (its status says why) or the
         * connection broke. */
        code = rpc_stream_finish(ch.stream, &st);
        if (code == RPC_OK)
            code = RPC_UNAVAILABLE;
        r = peer_call_error(e, peer, code, &st);
    }
    ch.stream = NULL;
out:
    if (rs) {
        res->st = *recv_stats(rs);
        res->st.chan = NULL;
    }
    res->bytes_on_wire = ch.bytes_in + ch.bytes_out;
    recv_close(rs);
    rpc_client_free(cl);
    rpc_tls_free(tls);
    rpc_status_clear(&st);
    if (chain)
        protobuf_c_message_free_unpacked(&chain->base, NULL);
    return r;
}

int sync_push(struct amberd *d, const char *volume, const char *peer, const char *as_name,
              const char *snapshot, sync_progress_fn progress, void *userdata,
              struct sync_result *res, struct op_err *e)
{
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    struct rpc_client *cl = NULL;
    struct rpc_tls *tls = NULL;
    struct sync_chan ch = {0};
    struct rpc_status st = {0};
    Amber__Peer__V1__RecvMsg *hm = NULL;
    int r;
    if ((r = peer_find(d, peer, &p, e)) < 0 || (r = vol_find(d, volume, &v, e)) < 0)
        return r;
    if (v->replica_peer)
        return op_fail(e, RPC_FAILED_PRECONDITION, -EINVAL,
                       "volume %s is a replica of %s: push from its source", v->name, v->replica_peer);
    if ((r = peer_client(d, p, &cl, &tls, e)) < 0)
        return r;
    int code = rpc_stream_open(cl, "/amber.peer.v1.Peer/Push", 0, &ch.stream, &st);
    if (code != RPC_OK) {
        r = peer_call_error(e, peer, code, &st);
        goto out;
    }
    Amber__Peer__V1__Offer o = AMBER__PEER__V1__OFFER__INIT;
    o.volume_id = v->id;
    o.volume_name = v->name;
    o.size_bytes = v->size_bytes;
    o.as_name = (char *)(as_name ? as_name : "");
    Amber__Peer__V1__SendMsg om = AMBER__PEER__V1__SEND_MSG__INIT;
    om.m_case = AMBER__PEER__V1__SEND_MSG__M_OFFER;
    om.offer = &o;
    r = chan_send(&ch, &om.base);
    if (r >= 0)
        r = chan_recv(&ch, &amber__peer__v1__recv_msg__descriptor, (ProtobufCMessage **)&hm);
    if (r == 1 && hm->m_case == AMBER__PEER__V1__RECV_MSG__M_HELLO) {
        hm->hello->upto = hm->hello->upto;   /* the receiver does not choose */
        Amber__Peer__V1__Hello h = *hm->hello;
        h.upto = (char *)(snapshot ? snapshot : "");
        r = sync_send(d, &ch, peer, v, &h, progress, userdata, &res->st, e);
        if (r == 0) {
            /* Every snapshot's commit was acknowledged: done. */
            rpc_stream_cancel(ch.stream);
            ch.stream = NULL;
        }
    } else if (r == 1 && hm->m_case == AMBER__PEER__V1__RECV_MSG__M_ABORT) {
        code = hm->abort->code > 0 && hm->abort->code <= RPC_UNAUTHENTICATED ? hm->abort->code
                                                                              : RPC_UNKNOWN;
        r = op_fail(e, code, rpc_errno_from_code(code), "peer %s: %.300s", peer, hm->abort->message);
    } else if (r >= 0) {
        r = -EPROTO;
    }
    if (r < 0 && ch.stream) {
        if (e->msg) {
            rpc_stream_cancel(ch.stream);
        } else {
            code = rpc_stream_finish(ch.stream, &st);
            r = peer_call_error(e, peer, code == RPC_OK ? RPC_UNAVAILABLE : code, &st);
        }
        ch.stream = NULL;
    }
    res->volume = xstrdup(*o.as_name ? o.as_name : v->name);
    res->volume_id = xstrdup(v->id);
out:
    if (hm)
        protobuf_c_message_free_unpacked(&hm->base, NULL);
    res->st.chan = NULL;
    res->bytes_on_wire = ch.bytes_in + ch.bytes_out;
    rpc_client_free(cl);
    rpc_tls_free(tls);
    rpc_status_clear(&st);
    return r;
}

/* --- peer_pull: the daemon-level entry (daemon.h) ---------------------------- */

struct pull_adapter {
    peer_pull_progress_fn fn;
    void *ud;
};

static int pull_adapt(const struct sync_stats *st, void *ud)
{
    struct pull_adapter *a = ud;
    struct peer_pull_stats p = {
        .snapshots = st->snapshots, .bytes_changed = st->bytes_changed,
        .resumed_bytes = st->resumed_bytes, .stream_done = st->stream_done,
        .stream_total = st->stream_total,
    };
    return a->fn(&p, a->ud);
}

int peer_pull(struct amberd *d, const char *peer, const char *volume, const char *as_name,
              const char *snapshot, peer_pull_progress_fn progress, void *userdata,
              struct peer_pull_stats *ret, struct op_err *e)
{
    struct pull_adapter a = { progress, userdata };
    struct sync_result res = {0};
    int r = sync_pull(d, peer, volume, as_name, snapshot, progress ? pull_adapt : NULL, &a, &res, e);
    *ret = (struct peer_pull_stats){
        .snapshots = res.st.snapshots, .bytes_changed = res.st.bytes_changed,
        .resumed_bytes = res.st.resumed_bytes, .bytes_on_wire = res.bytes_on_wire,
    };
    sync_result_clear(&res);
    return r;
}
