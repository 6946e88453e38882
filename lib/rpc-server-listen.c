/* rpc-server-listen.c: the gRPC server's listeners: unix sockets (mode,
 * group, a stale socket file replaced only when no server answers on it),
 * TCP ports, accepting connections into the loop, and closing a listener
 * from any thread (the loop does the work; the caller waits for it). */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "amber/log.h"
#include "rpc-server-internal.h"

void accept_conns(struct rpc_listener *l)
{
    struct rpc_server *s = l->srv;
    for (;;) {
        int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                log_warn_errno(-errno, "rpc", "accept failed");
            return;
        }
        if (s->nconns >= s->cfg.max_conns || s->stopping) {
            log_warn("rpc", "refusing a connection: %s", s->stopping ? "shutting down" : "too many connections");
            close(fd);
            continue;
        }
        /* Past the listener's bound, a few connections more are served
         * only to refuse their calls with RESOURCE_EXHAUSTED (a clear
         * error, not a reset); beyond those, closed. */
        bool over = l->cfg.max_conns && l->nconns >= l->cfg.max_conns;
        if (over && l->nrefusing >= 4) {
            close(fd);
            continue;
        }
        if (!l->is_unix) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        struct conn *cn = xcalloc(1, sizeof *cn);
        cn->src.kind = SRC_CONN;
        cn->srv = s;
        cn->lst = l;
        if (xport_init(&cn->x, fd, l->cfg.tls, true) < 0) {
            close(fd);
            free(cn);
            continue;
        }
        xport_fill_peer(&cn->x, l->is_unix);
        cn->last_rx = now_mono_ns();
        cn->handshake_deadline = cn->last_rx + (uint64_t)s->cfg.handshake_ms * 1000000ULL;
        if (!l->cfg.tls && conn_start_h2(cn) < 0) {
            xport_close(&cn->x);
            free(cn);
            continue;
        }
        if (!l->cfg.tls)
            cn->x.handshake_done = true;
        pthread_mutex_lock(&s->lock);
        cn->next = s->conns;
        if (s->conns)
            s->conns->prev = cn;
        s->conns = cn;
        s->nconns++;
        cn->over_limit = over;
        if (over)
            l->nrefusing++;
        else
            l->nconns++;
        pthread_mutex_unlock(&s->lock);
        struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &cn->src };
        epoll_ctl(s->epfd, EPOLL_CTL_ADD, fd, &ev);
        if (!l->cfg.tls)
            conn_send(cn);   /* our SETTINGS first */
        conn_io(cn, 0);
    }
}


/* --- listeners ------------------------------------------------------------ */

static struct rpc_listener *listener_new(struct rpc_server *s, const struct rpc_listener_config *cfg)
{
    struct rpc_listener *l = xcalloc(1, sizeof *l);
    l->src.kind = SRC_LISTENER;
    l->srv = s;
    l->fd = -1;
    l->cfg = *cfg;
    l->methods = xcalloc(cfg->n_methods, sizeof *l->methods);
    memcpy(l->methods, cfg->methods, cfg->n_methods * sizeof *l->methods);
    l->cfg.methods = l->methods;
    return l;
}

void listener_free(struct rpc_listener *l)
{
    if (!l)
        return;
    if (l->fd >= 0)
        close(l->fd);
    free(l->path);
    free(l->methods);
    free(l);
}

static int listener_register(struct rpc_server *s, struct rpc_listener *l)
{
    if (listen(l->fd, 128) < 0)
        return -errno;
    pthread_mutex_lock(&s->lock);
    l->next = s->listeners;
    s->listeners = l;
    pthread_mutex_unlock(&s->lock);
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &l->src };
    if (epoll_ctl(s->epfd, EPOLL_CTL_ADD, l->fd, &ev) < 0)
        return -errno;
    return 0;
}

int rpc_server_listen_unix(struct rpc_server *s, const char *path,
                           const struct rpc_listener_config *cfg, struct rpc_listener **ret)
{
    struct sockaddr_un sa = { .sun_family = AF_UNIX };
    _cleanup_close_ int dirfd = -1;
    int r = rpc_unix_addr(path, &sa, &dirfd);
    if (r < 0)
        return r;
    struct rpc_listener *l = listener_new(s, cfg);
    l->is_unix = true;
    l->path = xstrdup(path);
    l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        r = -errno;
        goto fail;
    }
    struct stat st;
    if (lstat(path, &st) == 0) {
        if (!S_ISSOCK(st.st_mode)) {
            r = -EEXIST;
            goto fail;
        }
        /* A live server answers; a stale file from a dead one does not. */
        int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        bool live = probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof sa) == 0;
        if (probe >= 0)
            close(probe);
        if (live) {
            r = -EADDRINUSE;
            goto fail;
        }
        unlink(path);
    }
    if (bind(l->fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        r = -errno;
        goto fail;
    }
    if (chmod(path, cfg->mode ? cfg->mode : 0600) < 0 ||
        (cfg->gid && chown(path, (uid_t)-1, cfg->gid) < 0)) {
        r = -errno;
        unlink(path);
        goto fail;
    }
    r = listener_register(s, l);
    if (r < 0) {
        unlink(path);
        goto fail;
    }
    if (ret)
        *ret = l;
    return 0;
fail:
    listener_free(l);
    return r;
}

int rpc_server_listen_tcp(struct rpc_server *s, const char *hostport,
                          const struct rpc_listener_config *cfg, struct rpc_listener **ret)
{
    _cleanup_free_ char *host = NULL, *port = NULL, *upath = NULL;
    int r = rpc_target_parse(hostport, &upath, &host, &port);
    if (r < 0 || upath)
        return -EINVAL;
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    if (getaddrinfo(*host ? host : NULL, port, &hints, &ai) != 0 || !ai)
        return -EADDRNOTAVAIL;
    struct rpc_listener *l = listener_new(s, cfg);
    l->fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (l->fd < 0) {
        r = -errno;
        goto fail;
    }
    int one = 1;
    setsockopt(l->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l->fd, ai->ai_addr, ai->ai_addrlen) < 0) {
        r = -errno;
        goto fail;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(l->fd, (struct sockaddr *)&ss, &sl);
    l->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                             : ((struct sockaddr_in *)&ss)->sin_port);
    r = listener_register(s, l);
    if (r < 0)
        goto fail;
    freeaddrinfo(ai);
    if (ret)
        *ret = l;
    return 0;
fail:
    freeaddrinfo(ai);
    listener_free(l);
    return r;
}

int rpc_listener_port(const struct rpc_listener *l) { return l->port; }

/* Loop thread: stop the listener and drop its connections. */
void listener_shutdown(struct rpc_listener *l)
{
    struct rpc_server *s = l->srv;
    if (l->closed)
        return;
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, l->fd, NULL);
    close(l->fd);
    l->fd = -1;
    if (l->path)
        unlink(l->path);
    struct conn *cn = s->conns;
    while (cn) {
        struct conn *next = cn->next;
        if (cn->lst == l)
            conn_close(cn);
        cn = next;
    }
    pthread_mutex_lock(&s->lock);
    for (struct rpc_listener **pp = &s->listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    l->closed = true;
    pthread_cond_broadcast(&s->lst_cond);
    pthread_mutex_unlock(&s->lock);
}

void rpc_listener_close(struct rpc_listener *l)
{
    if (!l)
        return;
    struct rpc_server *s = l->srv;
    if (!s->loop_running || on_loop(s)) {
        listener_shutdown(l);
    } else {
        pthread_mutex_lock(&s->lock);
        l->closing = true;
        wake(s);
        while (!l->closed && s->loop_running)
            pthread_cond_wait(&s->lst_cond, &s->lock);
        pthread_mutex_unlock(&s->lock);
        if (!l->closed)
            listener_shutdown(l);
    }
    listener_free(l);
}
