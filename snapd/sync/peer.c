/* peer.c: the node's identity, trust in peers, the peer port.
 *
 * Identity: a P-256 key (0600) and a self-signed certificate made at first
 * start in POOL/.amber/identity/, or the operator's --tls-cert/--tls-key
 * (e.g. from cert-manager). Its fingerprint ("sha256:" + hex of the SPKI)
 * is what other nodes pin. Trust: a connecting certificate is accepted in
 * the TLS handshake, before any request is read, when its fingerprint is
 * pinned to a peer in the catalog, or (with --tls-ca) when it chains to
 * that CA; the transport refuses expired certificates and logs every
 * refusal. Authorization happens per call: a peer reads only volumes
 * published to it (or to "*") and pushes only if it was added with
 * --allow-push; everything else is PERMISSION_DENIED. Unknown volumes are
 * reported the same way as unpublished ones, so a peer learns nothing of
 * what it may not read.
 *
 * The peer port serves amber.peer.v1.Peer (GetChain, Pull, Push); the
 * engines are in sync-send.c and sync-recv.c, the channel, who the peer
 * of a call is and clients to peers in sync-session.c, the node-socket
 * side in sync-api.c (layers: peer.h). --peers-file loads "name address
 * fingerprint [allow-push]" lines into the catalog at start (the
 * Kubernetes ConfigMap). */
#include <string.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/sync/peer.h"

static void cat_peer_freep_(struct cat_peer **p) { cat_peer_free(*p); }

/* --- trust ------------------------------------------------------------------ */

static bool verify_pin(const char *fingerprint, void *data)
{
    struct amberd *d = data;
    struct cat_peer *p = NULL;
    if (cat_peer_find_fingerprint(d->cat, fingerprint, &p) == 0) {
        cat_peer_free(p);
        return true;
    }
    /* Asked only when --tls-ca does not vouch for it (rpc.h): a refusal. */
    log_warn("peer", "refused a certificate that is not pinned to any peer%s fingerprint=%s",
             d->peer && d->peer->ca_file ? " nor signed by the --tls-ca" : "", fingerprint);
    return false;
}

/* --- the peer port's handlers -------------------------------------------- */

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

/* The volume a peer may read, or PERMISSION_DENIED. */
static int readable_volume(struct rpc_call *c, const struct cat_peer *p, const char *ref,
                           struct cat_volume **ret)
{
    struct amberd *d = D(c);
    struct cat_volume *v = NULL;
    /* Cluster members read every volume, named also by a snapshot's id. */
    if (ref && *ref && peer_ca_member(d, rpc_call_peer(c), NULL) == 1) {
        struct cat_snapshot *s = NULL;
        if (cat_volume_find(d->cat, ref, &v) == 0 ||
            (uuid_is_valid(ref) && cat_snapshot_get(d->cat, ref, &s) == 0 &&
             cat_volume_get(d->cat, s->volume_id, &v) == 0)) {
            cat_snapshot_free(s);
            *ret = v;
            return 0;
        }
        cat_snapshot_free(s);
    }
    if (!ref || !*ref || cat_volume_find(d->cat, ref, &v) < 0 ||
        cat_is_published(d->cat, v->id, p->name) != 1) {
        cat_volume_free(v);
        log_warn("peer", "peer %s asked for volume %s, which is not published to it", p->name,
                 ref ? ref : "");
        return rpc_error(c, RPC_PERMISSION_DENIED, "volume %s is not published to peer %s",
                         ref ? ref : "", p->name);
    }
    *ret = v;
    return 0;
}

static int caller(struct rpc_call *c, struct cat_peer **ret)
{
    if (peer_of_call(D(c), c, ret) < 0)
        return rpc_error(c, RPC_PERMISSION_DENIED, "your certificate is not a known peer's");
    return 0;
}

static int h_get_chain(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__Peer__V1__ChainRequest *q = (const void *)m;
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    int r;
    if ((r = caller(c, &p)) < 0 || (r = readable_volume(c, p, q->volume, &v)) < 0)
        return r;
    struct cat_snapshot_list sl = {0};
    if ((r = sync_chain(D(c), v->id, &sl)) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(D(c)->cat));
    Amber__Peer__V1__ChainResponse out = AMBER__PEER__V1__CHAIN_RESPONSE__INIT;
    Amber__Peer__V1__SnapshotInfo *si = xcalloc(sl.n + 1, sizeof *si);
    Amber__Peer__V1__SnapshotInfo **ps = xcalloc(sl.n + 1, sizeof *ps);
    for (size_t i = 0; i < sl.n; i++) {
        Amber__Peer__V1__SnapshotInfo x = AMBER__PEER__V1__SNAPSHOT_INFO__INIT;
        x.id = sl.items[i].id;
        x.name = sl.items[i].name;
        x.created_ns = (int64_t)sl.items[i].created_ns;
        x.size_bytes = sl.items[i].size_bytes;
        si[i] = x;
        ps[i] = &si[i];
    }
    out.volume_id = v->id;
    out.volume_name = v->name;
    out.size_bytes = v->size_bytes;
    out.snapshots = ps;
    out.n_snapshots = sl.n;
    r = rpc_call_send(c, &out.base);
    free(si);
    free(ps);
    cat_snapshot_list_free(&sl);
    return r;
}

static int h_pull(struct rpc_call *c, const ProtobufCMessage *unused)
{
    struct amberd *d = D(c);
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    struct sync_chan ch = { .call = c };
    Amber__Peer__V1__RecvMsg *m = NULL;
    int r;
    if ((r = caller(c, &p)) < 0)
        return r;
    r = chan_recv(&ch, &amber__peer__v1__recv_msg__descriptor, (ProtobufCMessage **)&m);
    if (r <= 0 || m->m_case != AMBER__PEER__V1__RECV_MSG__M_HELLO) {
        if (r > 0)
            protobuf_c_message_free_unpacked(&m->base, NULL);
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a pull starts with Hello");
    }
    if ((r = readable_volume(c, p, m->hello->volume, &v)) < 0) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        return r;
    }
    struct op_err e = {0};
    struct sync_stats st = {0};
    uint64_t t0 = now_mono_ns();
    r = sync_send(d, &ch, p->name, v, m->hello, NULL, NULL, &st, &e);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    if (r < 0) {
        log_warn_errno(r, "sync", "send of volume %s to peer %s failed: %s", v->name, p->name,
                       e.msg ? e.msg : strerror(-r));
        int code = e.code ? e.code : rpc_code_from_errno(r);
        Amber__Peer__V1__Abort ab = AMBER__PEER__V1__ABORT__INIT;
        ab.code = code;
        ab.message = e.msg ? e.msg : (char *)strerror(-r);
        Amber__Peer__V1__SendMsg am = AMBER__PEER__V1__SEND_MSG__INIT;
        am.m_case = AMBER__PEER__V1__SEND_MSG__M_ABORT;
        am.abort = &ab;
        if (code != RPC_UNAVAILABLE && code != RPC_CANCELLED)
            chan_send(&ch, &am.base);
        r = rpc_error(c, code, "%s", e.msg ? e.msg : strerror(-r));
        op_err_clear(&e);
        return r;
    }
    log_info("sync", "sent volume %s to peer %s snapshots=%u bytes_changed=%llu resumed=%llu "
             "bytes_on_wire=%llu seconds=%.3f", v->name, p->name, st.snapshots,
             (unsigned long long)st.bytes_changed, (unsigned long long)st.resumed_bytes,
             (unsigned long long)(ch.bytes_in + ch.bytes_out), (now_mono_ns() - t0) / 1e9);
    return 0;
}

/* The receiver's in-band refusal (see Abort in proto/peer.proto). */
static void push_abort(struct sync_chan *ch, int code, const char *msg)
{
    Amber__Peer__V1__Abort ab = AMBER__PEER__V1__ABORT__INIT;
    ab.code = code;
    ab.message = (char *)msg;
    Amber__Peer__V1__RecvMsg m = AMBER__PEER__V1__RECV_MSG__INIT;
    m.m_case = AMBER__PEER__V1__RECV_MSG__M_ABORT;
    m.abort = &ab;
    if (code != RPC_UNAVAILABLE && code != RPC_CANCELLED)
        chan_send(ch, &m.base);
}

static int h_push(struct rpc_call *c, const ProtobufCMessage *unused)
{
    struct amberd *d = D(c);
    _cleanup_(cat_peer_freep_) struct cat_peer *p = NULL;
    struct sync_chan ch = { .call = c };
    Amber__Peer__V1__SendMsg *m = NULL;
    struct recv_session *rs = NULL;
    struct op_err e = {0};
    int r;
    if ((r = caller(c, &p)) < 0)
        return r;
    /* The Offer is read before any answer: the client waits for our reply
     * only once it has sent it. */
    r = chan_recv(&ch, &amber__peer__v1__send_msg__descriptor, (ProtobufCMessage **)&m);
    if (r <= 0 || m->m_case != AMBER__PEER__V1__SEND_MSG__M_OFFER) {
        if (r > 0)
            protobuf_c_message_free_unpacked(&m->base, NULL);
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a push starts with Offer");
    }
    if (!p->allow_push) {
        protobuf_c_message_free_unpacked(&m->base, NULL);
        log_warn("peer", "refused a push from peer %s (not added with --allow-push)", p->name);
        push_abort(&ch, RPC_PERMISSION_DENIED, "this node does not accept pushes from you");
        return rpc_error(c, RPC_PERMISSION_DENIED, "peer %s may not push here", p->name);
    }
    const Amber__Peer__V1__Offer *o = m->offer;
    uint64_t t0 = now_mono_ns();
    r = recv_open(d, p->name, o->volume_id, o->volume_name, o->size_bytes, o->as_name, &rs, &e);
    protobuf_c_message_free_unpacked(&m->base, NULL);
    m = NULL;
    if (r == 0) {
        Amber__Peer__V1__Hello h = AMBER__PEER__V1__HELLO__INIT;
        recv_hello(rs, &h);
        Amber__Peer__V1__RecvMsg out = AMBER__PEER__V1__RECV_MSG__INIT;
        out.m_case = AMBER__PEER__V1__RECV_MSG__M_HELLO;
        out.hello = &h;
        r = chan_send(&ch, &out.base);
        free(h.have);
    }
    while (r == 0) {
        r = chan_recv(&ch, &amber__peer__v1__send_msg__descriptor, (ProtobufCMessage **)&m);
        if (r == 0) {
            r = op_fail(&e, RPC_ABORTED, -ECONNRESET, "the sender ended the push early");
            break;
        }
        if (r < 0) {
            op_fail(&e, r == -EBADMSG ? RPC_INVALID_ARGUMENT : RPC_CANCELLED, r,
                    "push from %s: %s", p->name, strerror(-r));
            break;
        }
        r = recv_handle(rs, &ch, m, NULL, NULL, &e);
        protobuf_c_message_free_unpacked(&m->base, NULL);
        m = NULL;
    }
    if (r == 1) {
        const struct sync_stats *st = recv_stats(rs);
        log_info("sync", "received push of volume %s from peer %s snapshots=%u bytes_changed=%llu "
                 "bytes_on_wire=%llu seconds=%.3f", recv_volume_name(rs), p->name, st->snapshots,
                 (unsigned long long)st->bytes_changed,
                 (unsigned long long)(ch.bytes_in + ch.bytes_out), (now_mono_ns() - t0) / 1e9);
        r = 0;
    } else {
        log_warn_errno(r, "sync", "push from peer %s failed: %s", p->name, e.msg ? e.msg : "");
        int code = e.code ? e.code : rpc_code_from_errno(r);
        push_abort(&ch, code, e.msg ? e.msg : strerror(-r));
        r = rpc_error(c, code, "%s", e.msg ? e.msg : strerror(-r));
    }
    op_err_clear(&e);
    recv_close(rs);
    return r;
}

static const struct rpc_method peer_methods[] = {
    { "/amber.peer.v1.Peer/GetChain", &amber__peer__v1__chain_request__descriptor,
      &amber__peer__v1__chain_response__descriptor, RPC_UNARY, h_get_chain },
    { "/amber.peer.v1.Peer/Pull", &amber__peer__v1__recv_msg__descriptor,
      &amber__peer__v1__send_msg__descriptor, RPC_BIDI_STREAM, h_pull },
    { "/amber.peer.v1.Peer/Push", &amber__peer__v1__send_msg__descriptor,
      &amber__peer__v1__recv_msg__descriptor, RPC_BIDI_STREAM, h_push },
};

/* --- start and stop --------------------------------------------------------- */

/* "name address fingerprint [allow-push]" a line; '#' comments. Each line
 * is added or updated; peers added by hand are left alone. */
static int load_peers_file(struct amberd *d, const char *path)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_file_all(path, 1 << 20, &text, &len);
    if (r < 0)
        return log_error_errno(r, "peer", "cannot read --peers-file %s", path);
    unsigned n = 0, lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *f[5] = {0}, *s2 = NULL;
        int nf = 0;
        for (char *t = strtok_r(line, " \t\r", &s2); t && nf < 5; t = strtok_r(NULL, " \t\r", &s2))
            f[nf++] = t;
        if (nf == 0)
            continue;
        if (nf < 3 || nf > 4 || name_validate(f[0]) < 0 ||
            (strncmp(f[2], "sha256:", 7) != 0 && strcmp(f[2], "-") != 0) ||
            (nf == 4 && strcmp(f[3], "allow-push") != 0)) {
            log_warn("peer", "%s:%u: expected \"name address fingerprint|- [allow-push]\"; line ignored",
                     path, lineno);
            continue;
        }
        struct cat_peer p = { .name = f[0], .address = f[1],
                              .fingerprint = strcmp(f[2], "-") == 0 ? NULL : f[2],
                              .allow_push = nf == 4 };
        r = cat_peer_add(d->cat, &p);
        if (r == -EEXIST)
            r = cat_peer_update(d->cat, &p);
        if (r < 0)
            log_warn_errno(r, "peer", "%s:%u: peer %s: %s", path, lineno, f[0], cat_errmsg(d->cat));
        else
            n++;
    }
    log_info("peer", "loaded %u peer(s) from %s", n, path);
    return 0;
}

int peer_start(struct amberd *d, const struct peer_opts *o)
{
    struct peer_state *ps = xcalloc(1, sizeof *ps);
    pthread_mutex_init(&ps->sub_lock, NULL);
    pthread_cond_init(&ps->sub_cond, NULL);
    d->peer = ps;
    int r;
    if (o->tls_cert || o->tls_key) {
        if (!o->tls_cert || !o->tls_key)
            return log_error_errno(-EINVAL, "peer", "--tls-cert and --tls-key go together");
        ps->cert_file = xstrdup(o->tls_cert);
        ps->key_file = xstrdup(o->tls_key);
    } else {
        _cleanup_free_ char *dir = xasprintf("%s/.amber/identity", d->pool_dir);
        if ((r = mkdir_p(dir, 0700)) < 0)
            return log_error_errno(r, "peer", "cannot make %s", dir);
        ps->cert_file = xasprintf("%s/cert.pem", dir);
        ps->key_file = xasprintf("%s/key.pem", dir);
        r = rpc_tls_make_identity(ps->cert_file, ps->key_file, d->node_id, 3650);
        if (r < 0)
            return log_error_errno(r, "peer", "cannot make the node identity in %s", dir);
    }
    ps->ca_file = o->tls_ca ? xstrdup(o->tls_ca) : NULL;
    ps->ca_members = o->ca_members && ps->ca_file;
    ps->keepalive_ms = o->keepalive_ms;
    char fp[80];
    r = rpc_tls_cert_fingerprint(ps->cert_file, fp, sizeof fp);
    if (r < 0)
        return log_error_errno(r, "peer", "cannot read the certificate %s", ps->cert_file);
    d->fingerprint = xstrdup(fp);
    if (o->peers_file && (r = load_peers_file(d, o->peers_file)) < 0)
        return r;
    if (o->listen) {
        struct rpc_tls_config tc = {
            .cert_file = ps->cert_file, .key_file = ps->key_file, .ca_file = ps->ca_file,
            .verify_pin = verify_pin, .pin_data = d,
        };
        _cleanup_free_ char *err = NULL;
        r = rpc_tls_new(&tc, true, &ps->server_tls, &err);
        if (r < 0)
            return log_error_errno(r, "peer", "TLS identity %s: %s", ps->cert_file, err ? err : "");
        /* Ours and the extra ones (the listener keeps a copy). */
        size_t nm = ARRAY_SIZE(peer_methods) + o->n_extra_methods;
        _cleanup_free_ struct rpc_method *methods = xcalloc(nm, sizeof *methods);
        memcpy(methods, peer_methods, sizeof peer_methods);
        if (o->n_extra_methods)
            memcpy(methods + ARRAY_SIZE(peer_methods), o->extra_methods,
                   o->n_extra_methods * sizeof *methods);
        struct rpc_listener_config lc = {
            .methods = methods, .n_methods = nm, .userdata = d, .tls = ps->server_tls,
            .keepalive_ms = o->keepalive_ms,
        };
        r = rpc_server_listen_tcp(d->srv, o->listen, &lc, &ps->listener);
        if (r < 0)
            return log_error_errno(r, "peer", "cannot listen on %s", o->listen);
        _cleanup_free_ char *host = xstrdup(o->listen);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = 0;
        d->peer_address = xasprintf("%s:%d", host, rpc_listener_port(ps->listener));
        log_info("peer", "serving peers on %s fingerprint=%s", d->peer_address, d->fingerprint);
    } else {
        log_info("peer", "identity fingerprint=%s (no --peer-listen: outgoing sync only)",
                 d->fingerprint);
    }
    return subscribe_start(d);
}

void peer_stop(struct amberd *d)
{
    struct peer_state *ps = d->peer;
    if (!ps)
        return;
    subscribe_stop(d);
    /* The server (and with it the listener) is gone already. */
    rpc_tls_free(ps->server_tls);
    free(ps->cert_file);
    free(ps->key_file);
    free(ps->ca_file);
    free(d->fingerprint);
    free(d->peer_address);
    d->fingerprint = d->peer_address = NULL;
    free(ps);
    d->peer = NULL;
}
