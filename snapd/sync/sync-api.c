/* sync-api.c: the node socket's amber.v1.Sync service (amberctl peer,
 * volume publish, sync, subscribe). A sync runs a transfer of
 * sync-client.c (sync_pull, sync_push); its progress streams back to
 * amberctl as SyncProgress messages, at most every 200 ms, and a last one
 * with done=true. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "sync.pb-c.h"
#include "snapd/sync/peer.h"

static void cat_peer_freep_(struct cat_peer **p) { cat_peer_free(*p); }
static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

static int fail(struct rpc_call *c, struct op_err *e, int r)
{
    int code = e->code ? e->code : rpc_code_from_errno(r);
    int ret = rpc_error(c, code, "%s", e->msg ? e->msg : strerror(-r));
    op_err_clear(e);
    return ret;
}

/* --- progress to amberctl ------------------------------------------------------ */

struct progress_ctx {
    struct rpc_call *call;
    bool sending;
    const char *volume;
    uint64_t t0, last;
};

static int send_progress(struct progress_ctx *x, const struct sync_stats *st, uint64_t wire,
                         const char *volume, const char *volume_id, bool done)
{
    Amber__V1__SyncProgress m = AMBER__V1__SYNC_PROGRESS__INIT;
    m.volume = (char *)(volume ? volume : "");
    m.volume_id = (char *)(volume_id ? volume_id : "");
    m.snapshot = (char *)(st->snapshot && !done ? st->snapshot : "");
    m.index = st->index;
    m.count = st->count;
    m.stream_done = st->stream_done;
    m.stream_total = st->stream_total;
    if (x->sending)
        m.snapshots_sent = st->snapshots;
    else
        m.snapshots_received = st->snapshots;
    m.bytes_changed = st->bytes_changed;
    m.bytes_on_wire = wire;
    m.resumed_bytes = st->resumed_bytes;
    m.seconds = (now_mono_ns() - x->t0) / 1e9;
    m.done = done;
    return rpc_call_send(x->call, &m.base);
}

static int on_progress(const struct sync_stats *st, void *data)
{
    struct progress_ctx *x = data;
    uint64_t now = now_mono_ns();
    if (now - x->last < 200000000ULL && st->stream_done < st->stream_total)
        return 0;
    x->last = now;
    uint64_t wire = st->chan ? st->chan->bytes_in + st->chan->bytes_out : 0;
    int r = send_progress(x, st, wire, x->volume, NULL, false);
    return r == -ECANCELED ? r : 0;
}

static int finish_transfer(struct rpc_call *c, struct progress_ctx *x, struct sync_result *res,
                           int r, struct op_err *e, const char *what, const char *peer)
{
    if (r < 0) {
        log_warn_errno(r, "sync", "%s %s: %s", what, peer, e->msg ? e->msg : strerror(-r));
        r = fail(c, e, r);
    } else {
        log_info("sync", "%s %s volume=%s snapshots=%u bytes_changed=%llu resumed=%llu "
                 "bytes_on_wire=%llu seconds=%.3f", what, peer, res->volume, res->st.snapshots,
                 (unsigned long long)res->st.bytes_changed, (unsigned long long)res->st.resumed_bytes,
                 (unsigned long long)res->bytes_on_wire, (now_mono_ns() - x->t0) / 1e9);
        r = send_progress(x, &res->st, res->bytes_on_wire, res->volume, res->volume_id, true);
    }
    sync_result_clear(res);
    return r;
}

static int h_pull(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__SyncPullRequest *q = (const void *)msg;
    struct progress_ctx x = { .call = c, .t0 = now_mono_ns(), .volume = q->volume };
    struct sync_result res = {0};
    struct op_err e = {0};
    int r = sync_pull(D(c), q->peer, q->volume, q->as_name, q->snapshot, on_progress, &x, &res, &e);
    return finish_transfer(c, &x, &res, r, &e, "pull from", q->peer);
}

static int h_push(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__SyncPushRequest *q = (const void *)msg;
    struct progress_ctx x = { .call = c, .t0 = now_mono_ns(), .sending = true, .volume = q->volume };
    struct sync_result res = {0};
    struct op_err e = {0};
    int r = sync_push(D(c), q->volume, q->peer, q->as_name, q->snapshot, on_progress, &x, &res, &e);
    return finish_transfer(c, &x, &res, r, &e, "push to", q->peer);
}

/* --- peers and publications ------------------------------------------------------ */

static int h_add_peer(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__Peer *q = (const void *)msg;
    struct amberd *d = D(c);
    if (name_validate(q->name) < 0 || strcmp(q->name, "local") == 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid peer name \"%s\"", q->name);
    if (!*q->address || !strchr(q->address, ':'))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "--address HOST:PORT is required");
    if (*q->fingerprint && (strncmp(q->fingerprint, "sha256:", 7) != 0 || strlen(q->fingerprint) != 71))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a fingerprint is sha256: and 64 hex digits");
    if (!*q->fingerprint && !(d->peer && d->peer->ca_file))
        return rpc_error(c, RPC_INVALID_ARGUMENT,
                         "--fingerprint is required (this node trusts no CA: see --tls-ca)");
    struct cat_peer p = { .name = q->name, .address = q->address,
                          .fingerprint = *q->fingerprint ? q->fingerprint : NULL,
                          .allow_push = q->allow_push };
    int r = cat_peer_add(d->cat, &p);
    if (r == -EEXIST)
        r = cat_peer_update(d->cat, &p);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    log_info("peer", "peer %s at %s fingerprint=%s%s", q->name, q->address,
             *q->fingerprint ? q->fingerprint : "(CA)", q->allow_push ? " allow-push" : "");
    Amber__V1__Peer out = *q;
    out.created_ns = (int64_t)now_real_ns();
    return rpc_call_send(c, &out.base);
}

static int h_list_peers(struct rpc_call *c, const ProtobufCMessage *msg)
{
    struct amberd *d = D(c);
    struct cat_peer_list pl = {0};
    struct cat_publication_list pub = {0};
    if (cat_peer_list(d->cat, &pl) < 0 || cat_publication_list(d->cat, NULL, &pub) < 0) {
        cat_peer_list_free(&pl);
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    }
    Amber__V1__ListPeersResponse out = AMBER__V1__LIST_PEERS_RESPONSE__INIT;
    Amber__V1__Peer *ps = xcalloc(pl.n + 1, sizeof *ps);
    Amber__V1__Peer **pp = xcalloc(pl.n + 1, sizeof *pp);
    char ***names = xcalloc(pl.n + 1, sizeof *names);
    for (size_t i = 0; i < pl.n; i++) {
        Amber__V1__Peer x = AMBER__V1__PEER__INIT;
        x.name = pl.items[i].name;
        x.address = pl.items[i].address;
        x.fingerprint = pl.items[i].fingerprint ? pl.items[i].fingerprint : "";
        x.allow_push = pl.items[i].allow_push;
        x.created_ns = (int64_t)pl.items[i].created_ns;
        names[i] = xcalloc(pub.n + 1, sizeof *names[i]);
        for (size_t k = 0; k < pub.n; k++)
            if (strcmp(pub.items[k].peer, x.name) == 0 || strcmp(pub.items[k].peer, "*") == 0) {
                struct cat_volume *v = NULL;
                names[i][x.n_published++] = cat_volume_get(d->cat, pub.items[k].volume_id, &v) == 0
                    ? xstrdup(v->name) : xstrdup(pub.items[k].volume_id);
                cat_volume_free(v);
            }
        x.published = names[i];
        ps[i] = x;
        pp[i] = &ps[i];
    }
    out.peers = pp;
    out.n_peers = pl.n;
    int r = rpc_call_send(c, &out.base);
    for (size_t i = 0; i < pl.n; i++) {
        for (size_t k = 0; k < ps[i].n_published; k++)
            free(names[i][k]);
        free(names[i]);
    }
    free(names);
    free(ps);
    free(pp);
    cat_peer_list_free(&pl);
    cat_publication_list_free(&pub);
    return r;
}

static int h_remove_peer(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__PeerRef *q = (const void *)msg;
    int r = cat_peer_delete(D(c)->cat, q->name);
    if (r == -ENOENT || r == -EINVAL)
        return rpc_error(c, RPC_NOT_FOUND, "peer %s not found", q->name);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(D(c)->cat));
    log_info("peer", "removed peer %s", q->name);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

static int publish(struct rpc_call *c, const ProtobufCMessage *msg, bool on)
{
    const Amber__V1__PublishRequest *q = (const void *)msg;
    struct amberd *d = D(c);
    struct op_err e = {0};
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r = vol_find(d, q->volume, &v, &e);
    if (r < 0)
        return fail(c, &e, r);
    if (strcmp(q->peer, "*") != 0) {
        _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
        if ((r = peer_find(d, q->peer, &p, &e)) < 0)
            return fail(c, &e, r);
    }
    r = on ? cat_publish(d->cat, v->id, q->peer) : cat_unpublish(d->cat, v->id, q->peer);
    if (r == -ENOENT)
        return rpc_error(c, RPC_NOT_FOUND, "volume %s is not published to %s", v->name, q->peer);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    log_info("peer", "volume %s %s %s", v->name, on ? "published to" : "unpublished from", q->peer);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

static int h_publish(struct rpc_call *c, const ProtobufCMessage *m) { return publish(c, m, true); }
static int h_unpublish(struct rpc_call *c, const ProtobufCMessage *m) { return publish(c, m, false); }

/* --- subscriptions ---------------------------------------------------------------- */

static void sub_pb(const struct cat_subscription *s, Amber__V1__Subscription *out)
{
    Amber__V1__Subscription x = AMBER__V1__SUBSCRIPTION__INIT;
    x.peer = s->peer;
    x.volume = s->remote_volume;
    x.local_name = s->local_name;
    x.local_volume_id = s->local_volume_id ? s->local_volume_id : "";
    x.every_ms = s->every_ms;
    x.last_sync_ns = (int64_t)s->last_sync_ns;
    x.last_error = s->last_error ? s->last_error : "";
    x.lag = "";
    *out = x;
}

static int h_subscribe(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__SubscribeRequest *q = (const void *)msg;
    struct amberd *d = D(c);
    struct op_err e = {0};
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    int r = peer_find(d, q->peer, &p, &e);
    if (r < 0)
        return fail(c, &e, r);
    const char *local = *q->as_name ? q->as_name : q->volume;
    if (name_validate(q->volume) < 0 || name_validate(local) < 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid volume name");
    struct cat_subscription s = { .peer = q->peer, .remote_volume = q->volume,
                                  .local_name = (char *)local,
                                  .every_ms = q->every_ms ? q->every_ms : 60000 };
    if (s.every_ms < 1000)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "--every is at least 1s");
    r = cat_subscription_add(d->cat, &s);
    if (r == -EEXIST) {
        struct cat_subscription *old = NULL;
        if (cat_subscription_get(d->cat, q->peer, q->volume, &old) == 0 &&
            strcmp(old->local_name, local) == 0) {
            old->every_ms = s.every_ms;
            r = cat_subscription_update(d->cat, old);
        }
        cat_subscription_free(old);
        if (r == -EEXIST)
            return rpc_error(c, RPC_ALREADY_EXISTS, "a subscription to %s/%s or a replica named %s exists",
                             q->peer, q->volume, local);
    }
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    log_info("sync", "subscribed to %s/%s as %s every_ms=%llu", q->peer, q->volume, local,
             (unsigned long long)s.every_ms);
    subscribe_kick(d);
    struct cat_subscription *row = NULL;
    if (cat_subscription_get(d->cat, q->peer, q->volume, &row) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__Subscription out;
    sub_pb(row, &out);
    r = rpc_call_send(c, &out.base);
    cat_subscription_free(row);
    return r;
}

static int h_list_subscriptions(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__ListSubscriptionsRequest *q = (const void *)msg;
    struct amberd *d = D(c);
    struct cat_subscription_list sl = {0};
    if (cat_subscription_list(d->cat, NULL, &sl) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__ListSubscriptionsResponse out = AMBER__V1__LIST_SUBSCRIPTIONS_RESPONSE__INIT;
    Amber__V1__Subscription *xs = xcalloc(sl.n + 1, sizeof *xs);
    Amber__V1__Subscription **px = xcalloc(sl.n + 1, sizeof *px);
    char **lag = xcalloc(sl.n + 1, sizeof *lag);
    for (size_t i = 0; i < sl.n; i++) {
        sub_pb(&sl.items[i], &xs[i]);
        px[i] = &xs[i];
        if (!q->lag)
            continue;
        /* Lag: the source's snapshots newer than our newest. */
        Amber__Peer__V1__ChainResponse *ch = NULL;
        struct op_err e = {0};
        if (sync_remote_chain(d, sl.items[i].peer, sl.items[i].remote_volume, &ch, &e) < 0) {
            lag[i] = xasprintf("? (%s)", e.msg ? e.msg : "unreachable");
            op_err_clear(&e);
        } else {
            size_t have_upto = 0;
            for (size_t k = 0; k < ch->n_snapshots; k++) {
                struct cat_snapshot *s = NULL;
                if (cat_snapshot_get(d->cat, ch->snapshots[k]->id, &s) == 0 &&
                    s->state == CAT_SNAP_READY)
                    have_upto = k + 1;
                cat_snapshot_free(s);
            }
            xs[i].lag_snapshots = (uint32_t)(ch->n_snapshots - have_upto);
            lag[i] = xstrdup(have_upto < ch->n_snapshots ? ch->snapshots[ch->n_snapshots - 1]->name : "");
            protobuf_c_message_free_unpacked(&ch->base, NULL);
        }
        xs[i].lag = lag[i];
    }
    out.subscriptions = px;
    out.n_subscriptions = sl.n;
    int r = rpc_call_send(c, &out.base);
    for (size_t i = 0; i < sl.n; i++)
        free(lag[i]);
    free(lag);
    free(xs);
    free(px);
    cat_subscription_list_free(&sl);
    return r;
}

static int h_unsubscribe(struct rpc_call *c, const ProtobufCMessage *msg)
{
    const Amber__V1__SubscriptionRef *q = (const void *)msg;
    int r = cat_subscription_delete(D(c)->cat, q->peer, q->volume);
    if (r == -ENOENT || r == -EINVAL)
        return rpc_error(c, RPC_NOT_FOUND, "no subscription to %s/%s", q->peer, q->volume);
    if (r < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(D(c)->cat));
    log_info("sync", "unsubscribed from %s/%s (the replica stays)", q->peer, q->volume);
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

#define M(name, in, out, kind, fn) \
    { "/amber.v1.Sync/" name, &amber__v1__##in##__descriptor, \
      &amber__v1__##out##__descriptor, kind, fn }

const struct rpc_method peer_admin_methods[] = {
    M("AddPeer", peer, peer, RPC_UNARY, h_add_peer),
    M("ListPeers", list_peers_request, list_peers_response, RPC_UNARY, h_list_peers),
    M("RemovePeer", peer_ref, empty, RPC_UNARY, h_remove_peer),
    M("Publish", publish_request, empty, RPC_UNARY, h_publish),
    M("Unpublish", publish_request, empty, RPC_UNARY, h_unpublish),
    M("Pull", sync_pull_request, sync_progress, RPC_SERVER_STREAM, h_pull),
    M("Push", sync_push_request, sync_progress, RPC_SERVER_STREAM, h_push),
    M("Subscribe", subscribe_request, subscription, RPC_UNARY, h_subscribe),
    M("ListSubscriptions", list_subscriptions_request, list_subscriptions_response, RPC_UNARY,
      h_list_subscriptions),
    M("Unsubscribe", subscription_ref, empty, RPC_UNARY, h_unsubscribe),
};
const size_t peer_admin_methods_n = ARRAY_SIZE(peer_admin_methods);
