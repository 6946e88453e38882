/* scoped-admin.c: opening and closing the per-pod sockets (node socket
 * RPCs OpenScopedSocket, CloseScopedSocket, ListScopedSockets) and
 * restoring them at start; ResolveSnapshot, a namespace's snapshot for
 * amber-csi's inline snapshot volume. scoped.c serves what the sockets offer.
 *
 * The catalog row is written before the socket listens and removed after
 * it is closed, so after a crash at any point the catalog names every
 * socket that may exist, and start-up reconciles: a row whose target
 * directory still exists (the pod is still published) is listened on
 * again; a row whose directory is gone (unpublished while we were down) is
 * dropped. The socket is 0666 inside the pod's own volume directory: the
 * mount is the access control, and the pod's user need not be root. */
#include <string.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/limits.h"
#include "snapd/pipeline/pipeline.h"

struct pod_sock {
    struct pod_sock *next;
    char *target, *socket_path;
    struct scope *scope;
    struct rpc_listener *l;
};
struct scoped_state {
    pthread_mutex_t lock;
    struct pod_sock *open;
    /* Scopes are listeners' user data: a closed listener's in-flight
     * handler may still read one, so they live until scoped_stop (a few
     * bytes per pod published on this node since start). */
    struct scope *scopes;
};

static struct amberd *D(struct rpc_call *c) { return rpc_call_server_data(c); }

/* A DNS-1123 label, as Kubernetes namespaces are. */
static bool ns_valid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
            return false;
    return true;
}

static bool target_valid(const char *t)
{
    return t[0] == '/' && strlen(t) < 3072 && !strstr(t, "/../") && !strstr(t, "/./") &&
           strcmp(t + strlen(t) - (strlen(t) >= 3 ? 3 : 0), "/..") != 0;
}

static struct pod_sock *find(struct scoped_state *st, const char *target)
{
    for (struct pod_sock *p = st->open; p; p = p->next)
        if (strcmp(p->target, target) == 0)
            return p;
    return NULL;
}

static size_t count(struct scoped_state *st)
{
    size_t n = 0;
    for (struct pod_sock *p = st->open; p; p = p->next)
        n++;
    return n;
}

/* Listen at TARGET/api.sock for namespace ns; with st->lock held. */
static int listen_locked(struct amberd *d, const char *target, const char *ns, struct pod_sock **ret)
{
    struct scoped_state *st = d->scoped;
    struct scope *sc = xcalloc(1, sizeof *sc);
    sc->ns = xstrdup(ns);
    sc->next = st->scopes;
    st->scopes = sc;
    struct pod_sock *p = xcalloc(1, sizeof *p);
    p->target = xstrdup(target);
    p->socket_path = xasprintf("%s/" SCOPED_SOCKET_NAME, target);
    p->scope = sc;
    struct rpc_listener_config lc = {
        .methods = api_scoped_methods, .n_methods = api_scoped_methods_n, .userdata = sc,
        .mode = 0666, .max_conns = (uint32_t)amberd_limits.pod_socket_conns,
    };
    int r = rpc_server_listen_unix(d->srv, p->socket_path, &lc, &p->l);
    if (r < 0) {
        free(p->target);
        free(p->socket_path);
        free(p);
        return r;
    }
    p->next = st->open;
    st->open = p;
    *ret = p;
    return 0;
}

static int h_open(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__OpenScopedSocketRequest *q = (const void *)m;
    struct amberd *d = D(c);
    struct scoped_state *st = d->scoped;
    if (!st)
        return rpc_error(c, RPC_UNAVAILABLE, "pod sockets are not running");
    if (!target_valid(q->target_path))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "target_path: an absolute path without . or ..");
    if (!ns_valid(q->namespace_))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "namespace: a Kubernetes namespace name");
    int r = mkdir_p(q->target_path, 0755);
    if (r < 0)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "target_path %s: %s", q->target_path, strerror(-r));

    pthread_mutex_lock(&st->lock);
    struct pod_sock *p = find(st, q->target_path);
    if (p) {
        bool same = strcmp(p->scope->ns, q->namespace_) == 0;
        pthread_mutex_unlock(&st->lock);
        if (!same)
            return rpc_error(c, RPC_ALREADY_EXISTS, "%s already serves another namespace", q->target_path);
        Amber__V1__OpenScopedSocketResponse out = AMBER__V1__OPEN_SCOPED_SOCKET_RESPONSE__INIT;
        _cleanup_free_ char *path = xasprintf("%s/" SCOPED_SOCKET_NAME, q->target_path);
        out.socket_path = path;
        return rpc_call_send(c, &out.base);
    }
    if (count(st) >= amberd_limits.pod_sockets) {
        pthread_mutex_unlock(&st->lock);
        return rpc_error(c, RPC_RESOURCE_EXHAUSTED, "at most %llu pod sockets a node (amberd --max-pod-sockets)",
                         (unsigned long long)amberd_limits.pod_sockets);
    }
    _cleanup_free_ char *sock = xasprintf("%s/" SCOPED_SOCKET_NAME, q->target_path);
    struct cat_pod_socket row = {
        .target_path = q->target_path, .volume_handle = q->volume_handle, .socket_path = sock,
        .pod_namespace = q->namespace_, .pod_name = q->pod_name, .pod_uid = q->pod_uid,
    };
    r = cat_pod_socket_add(d->cat, &row);
    if (r == -EEXIST) {
        /* A row without a socket: an earlier attempt failed; replace it. */
        cat_pod_socket_delete(d->cat, q->target_path);
        r = cat_pod_socket_add(d->cat, &row);
    }
    if (r < 0) {
        pthread_mutex_unlock(&st->lock);
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    }
    r = listen_locked(d, q->target_path, q->namespace_, &p);
    if (r < 0) {
        cat_pod_socket_delete(d->cat, q->target_path);
        pthread_mutex_unlock(&st->lock);
        return rpc_error(c, rpc_code_from_errno(r), "cannot listen on %s: %s", sock, strerror(-r));
    }
    pthread_mutex_unlock(&st->lock);
    log_info("scoped", "pod %s/%s (uid %s): API socket %s", q->namespace_, q->pod_name,
             q->pod_uid, sock);
    Amber__V1__OpenScopedSocketResponse out = AMBER__V1__OPEN_SCOPED_SOCKET_RESPONSE__INIT;
    out.socket_path = sock;
    return rpc_call_send(c, &out.base);
}

static int h_close(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__CloseScopedSocketRequest *q = (const void *)m;
    struct amberd *d = D(c);
    struct scoped_state *st = d->scoped;
    if (!st)
        return rpc_error(c, RPC_UNAVAILABLE, "pod sockets are not running");
    if (!*q->target_path)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "target_path is required");
    pthread_mutex_lock(&st->lock);
    struct pod_sock **pp = &st->open, *p = NULL;
    for (; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->target, q->target_path) == 0) {
            p = *pp;
            *pp = p->next;
            break;
        }
    pthread_mutex_unlock(&st->lock);
    if (p) {
        rpc_listener_close(p->l);     /* unlinks the socket, drops its connections */
        log_info("scoped", "closed API socket %s (namespace %s)", p->socket_path, p->scope->ns);
        free(p->target);
        free(p->socket_path);
        free(p);
    }
    int r = cat_pod_socket_delete(d->cat, q->target_path);
    if (r < 0 && r != -ENOENT)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__Empty out = AMBER__V1__EMPTY__INIT;
    return rpc_call_send(c, &out.base);
}

static int h_list(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = D(c);
    _cleanup_(cat_pod_socket_list_free) struct cat_pod_socket_list l = {0};
    if (cat_pod_socket_list(d->cat, &l) < 0)
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__ScopedSocket *ss = xcalloc(l.n ? l.n : 1, sizeof *ss);
    Amber__V1__ScopedSocket **pp = xcalloc(l.n ? l.n : 1, sizeof *pp);
    for (size_t i = 0; i < l.n; i++) {
        Amber__V1__ScopedSocket x = AMBER__V1__SCOPED_SOCKET__INIT;
        x.target_path = l.items[i].target_path;
        x.socket_path = l.items[i].socket_path ? l.items[i].socket_path : "";
        x.namespace_ = l.items[i].pod_namespace ? l.items[i].pod_namespace : "";
        x.pod_name = l.items[i].pod_name ? l.items[i].pod_name : "";
        x.pod_uid = l.items[i].pod_uid ? l.items[i].pod_uid : "";
        x.created_ns = (int64_t)l.items[i].created_ns;
        ss[i] = x;
        pp[i] = &ss[i];
    }
    Amber__V1__ListScopedSocketsResponse out = AMBER__V1__LIST_SCOPED_SOCKETS_RESPONSE__INIT;
    out.sockets = pp;
    out.n_sockets = l.n;
    int r = rpc_call_send(c, &out.base);
    free(ss);
    free(pp);
    return r;
}

/* ResolveSnapshot: the snapshot a pod of namespace q->namespace_ means, as
 * its own socket would resolve it (amber-csi's inline snapshot volume asks
 * this on the node socket before attaching by the ids returned). */
static int h_resolve(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ResolveSnapshotRequest *q = (const void *)m;
    struct amberd *d = D(c);
    if (!ns_valid(q->namespace_))
        return rpc_error(c, RPC_INVALID_ARGUMENT, "namespace: a Kubernetes namespace name");
    if (!*q->snapshot == !*q->volume)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "name a snapshot, or a volume (its newest snapshot)");
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    int r;
    if (*q->snapshot) {
        if ((r = scoped_find_snapshot(c, q->namespace_, q->snapshot, &s)) < 0)
            return r;
        if (s->state != CAT_SNAP_READY)
            return rpc_error(c, RPC_FAILED_PRECONDITION, "snapshot %s is %s", q->snapshot,
                             cat_snap_state_to_string(s->state));
    } else {
        _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
        if ((r = scoped_find_volume(c, q->namespace_, q->volume, &v)) < 0)
            return r;
        if (q->n_labels > CAT_FILTER_LABELS_MAX)
            return rpc_error(c, RPC_INVALID_ARGUMENT, "at most %d label filters", CAT_FILTER_LABELS_MAX);
        _cleanup_free_ struct cat_label *labels = xcalloc(q->n_labels ? q->n_labels : 1, sizeof *labels);
        for (size_t i = 0; i < q->n_labels; i++) {
            if (cat_label_validate(q->labels[i]->key, q->labels[i]->value) < 0)
                return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid label \"%s\"", q->labels[i]->key);
            labels[i] = (struct cat_label){ q->labels[i]->key, q->labels[i]->value };
        }
        struct cat_snapshot_filter f = { .volume_id = v->id, .labels = labels, .n_labels = q->n_labels,
                                         .states = 1u << CAT_SNAP_READY };
        r = cat_snapshot_newest(d->cat, &f, q->before_ns > 0 ? (uint64_t)q->before_ns : 0, &s);
        if (r == -ENOENT)
            return rpc_error(c, RPC_NOT_FOUND, "volume %s has no snapshot%s%s", q->volume,
                             q->before_ns > 0 ? " before the given time" : "",
                             q->n_labels ? " with those labels" : "");
        if (r < 0)
            return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    }
    _cleanup_(cat_volume_freep) struct cat_volume *sv = NULL;
    _cleanup_free_ char *vname = cat_volume_get(d->cat, s->volume_id, &sv) == 0 && sv->pvc_name
                                     ? xasprintf("pvc/%s", sv->pvc_name) : xstrdup("");
    struct apb_snapshot ps;
    apb_snapshot(s, vname, &ps);
    r = rpc_call_send(c, &ps.m.base);
    apb_snapshot_clear(&ps);
    return r;
}

int scoped_start(struct amberd *d)
{
    struct scoped_state *st = xcalloc(1, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
    d->scoped = st;
    _cleanup_(cat_pod_socket_list_free) struct cat_pod_socket_list l = {0};
    int r = cat_pod_socket_list(d->cat, &l);
    if (r < 0)
        return r;
    size_t opened = 0, dropped = 0;
    pthread_mutex_lock(&st->lock);
    for (size_t i = 0; i < l.n; i++) {
        const struct cat_pod_socket *row = &l.items[i];
        struct stat sb;
        if (stat(row->target_path, &sb) < 0 || !S_ISDIR(sb.st_mode) || !row->pod_namespace ||
            !ns_valid(row->pod_namespace)) {
            cat_pod_socket_delete(d->cat, row->target_path);
            dropped++;
            continue;
        }
        struct pod_sock *p;
        r = listen_locked(d, row->target_path, row->pod_namespace, &p);
        if (r < 0) {
            log_warn_errno(r, "scoped", "cannot restore the API socket of pod %s/%s at %s",
                           row->pod_namespace, row->pod_name ? row->pod_name : "?", row->target_path);
            continue;
        }
        opened++;
    }
    pthread_mutex_unlock(&st->lock);
    if (opened || dropped)
        log_info("scoped", "restored %zu pod API sockets, dropped %zu of unpublished pods", opened, dropped);
    return 0;
}

void scoped_stop(struct amberd *d)
{
    struct scoped_state *st = d->scoped;
    if (!st)
        return;
    /* rpc_server_free has closed and freed the listeners already. */
    while (st->open) {
        struct pod_sock *p = st->open;
        st->open = p->next;
        free(p->target);
        free(p->socket_path);
        free(p);
    }
    while (st->scopes) {
        struct scope *s = st->scopes;
        st->scopes = s->next;
        free(s->ns);
        free(s);
    }
    pthread_mutex_destroy(&st->lock);
    free(st);
    d->scoped = NULL;
}

#define M(name, in, out, kind, fn) \
    { "/amber.v1.Amber/" name, &amber__v1__##in##__descriptor, \
      &amber__v1__##out##__descriptor, kind, fn }

const struct rpc_method api_scoped_admin_methods[] = {
    M("OpenScopedSocket", open_scoped_socket_request, open_scoped_socket_response, RPC_UNARY, h_open),
    M("CloseScopedSocket", close_scoped_socket_request, empty, RPC_UNARY, h_close),
    M("ListScopedSockets", empty, list_scoped_sockets_response, RPC_UNARY, h_list),
    M("ResolveSnapshot", resolve_snapshot_request, snapshot, RPC_UNARY, h_resolve),
};
const size_t api_scoped_admin_methods_n = ARRAY_SIZE(api_scoped_admin_methods);
