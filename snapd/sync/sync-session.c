/* sync-session.c: the session primitives every sync file builds on: the
 * channel (one bidirectional gRPC stream, from either side of the call),
 * who the peer of a call is, a TLS client to a peer with its pin, the
 * mapping of a failed peer call into an operation error, and the chain of
 * ready snapshots a transfer walks. It calls only the catalog and rpc;
 * the engines, the transfers we start and the peer port call it. */
#include <string.h>

#include "amber/util.h"
#include "snapd/sync/sync.h"

int chan_send(struct sync_chan *ch, const ProtobufCMessage *m)
{
    ch->bytes_out += protobuf_c_message_get_packed_size(m) + 5;
    if (ch->call)
        return rpc_call_send(ch->call, m);
    return rpc_stream_send(ch->stream, m);
}

int chan_recv(struct sync_chan *ch, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret)
{
    int r = ch->call ? rpc_call_recv(ch->call, ret) : rpc_stream_recv(ch->stream, desc, ret);
    if (r == 1) {
        if ((*ret)->descriptor != desc) {
            protobuf_c_message_free_unpacked(*ret, NULL);
            return -EBADMSG;
        }
        ch->bytes_in += protobuf_c_message_get_packed_size(*ret) + 5;
    }
    return r;
}

int peer_ca_member(struct amberd *d, const struct rpc_peer *rp, char **ret_name)
{
    if (!d->peer || !d->peer->ca_members || !rp || rp->kind != RPC_PEER_TLS)
        return 0;
    struct cat_peer *p = NULL;
    if (cat_peer_find_fingerprint(d->cat, rp->fingerprint, &p) == 0) {
        cat_peer_free(p);       /* pinned: a peer of its own standing */
        return 0;
    }
    const char *cn = strstr(rp->subject, "CN=");
    if (!cn)
        return 0;
    _cleanup_free_ char *name = xstrdup(cn + 3);
    name[strcspn(name, ",/ ")] = 0;
    if (name_validate(name) < 0)
        return 0;
    /* A name that a pinned peer of another cluster has is not taken over
     * by whoever the CA signed. */
    if (cat_peer_get(d->cat, name, &p) == 0) {
        bool pinned = p->fingerprint && *p->fingerprint;
        cat_peer_free(p);
        if (pinned)
            return 0;
    }
    if (ret_name)
        *ret_name = TAKE_PTR(name);
    return 1;
}

int peer_of_call(struct amberd *d, struct rpc_call *call, struct cat_peer **ret)
{
    const struct rpc_peer *rp = rpc_call_peer(call);
    if (!rp || rp->kind != RPC_PEER_TLS)
        return -EPERM;
    if (cat_peer_find_fingerprint(d->cat, rp->fingerprint, ret) == 0)
        return 0;
    /* A CA-signed certificate: its CN names a peer that has no pin. */
    const char *cn = strstr(rp->subject, "CN=");
    if (d->peer && d->peer->ca_file && cn) {
        _cleanup_free_ char *name = xstrdup(cn + 3);
        name[strcspn(name, ",/ ")] = 0;
        struct cat_peer *p = NULL;
        if (cat_peer_get(d->cat, name, &p) == 0) {
            if (!p->fingerprint || !*p->fingerprint) {
                *ret = p;
                return 0;
            }
            cat_peer_free(p);
        }
    }
    /* A cluster member (the cluster CA signed it): a peer by its node name. */
    _cleanup_free_ char *node = NULL;
    if (peer_ca_member(d, rp, &node) == 1) {
        struct cat_peer *p = xcalloc(1, sizeof *p);
        p->name = TAKE_PTR(node);
        *ret = p;
        return 0;
    }
    return -EPERM;
}

int peer_client(struct amberd *d, const struct cat_peer *p, struct rpc_client **ret,
                struct rpc_tls **ret_tls, struct op_err *e)
{
    if (!d->peer)
        return op_fail(e, RPC_FAILED_PRECONDITION, -ENOTCONN, "this node has no TLS identity");
    struct rpc_tls_config tc = {
        .cert_file = d->peer->cert_file, .key_file = d->peer->key_file,
        .ca_file = d->peer->ca_file,
        .expect_fingerprint = p->fingerprint && *p->fingerprint ? p->fingerprint : NULL,
    };
    struct rpc_tls *tls = NULL;
    _cleanup_free_ char *err = NULL;
    int r = rpc_tls_new(&tc, false, &tls, &err);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "TLS: %s", err ? err : strerror(-r));
    r = rpc_client_new(p->address, tls, ret);
    if (r < 0) {
        rpc_tls_free(tls);
        return op_fail(e, RPC_INVALID_ARGUMENT, r, "peer %s: bad address %s", p->name, p->address);
    }
    rpc_client_set_keepalive(*ret, d->peer->keepalive_ms);
    *ret_tls = tls;     /* the client borrows it */
    return 0;
}

int peer_call_error(struct op_err *e, const char *peer, int code, const struct rpc_status *st)
{
    const char *msg = st && st->message ? st->message : rpc_code_name(code);
    return op_fail(e, code, rpc_errno_from_code(code), "peer %s: %s", peer, msg);
}

int sync_chain(struct amberd *d, const char *volume_id, struct cat_snapshot_list *ret)
{
    struct cat_snapshot_filter f = { .volume_id = volume_id, .states = 1u << CAT_SNAP_READY };
    struct cat_page pg = { .limit = 0 };
    return cat_snapshot_list(d->cat, &f, &pg, ret);
}

int peer_find(struct amberd *d, const char *name, struct cat_peer **ret, struct op_err *e)
{
    int r = cat_peer_get(d->cat, name ? name : "", ret);
    if (r == -ENOENT || r == -EINVAL)
        return op_fail(e, RPC_NOT_FOUND, -ENOENT, "peer %s not found (amberctl peer add)", name);
    if (r < 0)
        return op_fail(e, RPC_INTERNAL, r, "catalog: %s", cat_errmsg(d->cat));
    return 0;
}
