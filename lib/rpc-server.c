/* rpc-server.c: the gRPC server.
 *
 * One event-loop thread (epoll) owns the listeners, the connections, their
 * transports and nghttp2 sessions. A call (an HTTP/2 stream) is handed to a
 * worker thread once it can run: unary and server-streaming calls when the
 * request is complete, client- and bidi-streaming calls at once. Workers
 * and the loop meet only under the server mutex, on the call's queues:
 *   inbound  loop  → worker  complete request messages (grpc_reader)
 *   outbound worker → loop   framed reply bytes, then the final status
 * A worker that queues output marks its call dirty and wakes the loop
 * (eventfd); the loop feeds the bytes to nghttp2's data provider, which
 * honours the client's flow-control window. Workers block while too much
 * is queued (backpressure), and the loop stops opening the receive window
 * of a stream whose handler is not reading (bounded memory both ways).
 *
 * A call is reference-counted: one reference for the loop while its stream
 * is open, one for the worker while its handler runs. Cancellation (the
 * client's RST_STREAM, a passed grpc-timeout, shutdown) sets `cancelled`,
 * wakes any waiting worker and, if the handler has not answered, sends the
 * status itself.
 *
 * Keepalive (rpc_listener_config.keepalive_ms): a connection that sent
 * nothing for the interval gets an HTTP/2 PING; silent for another
 * interval, it is closed and its calls cancelled, so a handler streaming to
 * a client that stopped without closing (a stopped process, a frozen
 * proxy) does not wait forever for its window.
 *
 * This file holds the loop, the connections and their HTTP/2 sessions;
 * rpc-server-listen.c the listeners, rpc-server-call.c the handlers' call
 * API and the workers (see rpc-server-internal.h). */
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <nghttp2/nghttp2.h>

#include "amber/log.h"
#include "rpc-server-internal.h"

/* --- nghttp2 callbacks ---------------------------------------------------- */

static ssize_t ng_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct conn *cn = ud;
    ssize_t r = cn->x.ops->write(&cn->x, data, len);
    if (r == -EAGAIN)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (r < 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return r;
}

static int ng_begin_headers(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct conn *cn = ud;
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct rpc_call *c = xcalloc(1, sizeof *c);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cond, &ca);
    pthread_condattr_destroy(&ca);
    c->srv = cn->srv;
    c->conn = cn;
    c->lst = cn->lst;
    c->peer = cn->x.peer;
    c->stream_id = f->hd.stream_id;
    c->in.max = cn->srv->cfg.max_message;
    c->refs = 1;
    pthread_mutex_lock(&cn->srv->lock);
    c->conn_next = cn->calls;
    if (cn->calls)
        cn->calls->conn_prev = c;
    cn->calls = c;
    pthread_mutex_unlock(&cn->srv->lock);
    nghttp2_session_set_stream_user_data(ng, c->stream_id, c);
    return 0;
}

static int ng_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *ud)
{
    if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    struct rpc_call *c = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!c)
        return 0;
    c->md_bytes += namelen + valuelen + 32;
    if (c->md_bytes > MAX_METADATA)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        free(c->path);
        c->path = strndup((const char *)value, valuelen);
    } else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        if (valuelen != 4 || memcmp(value, "POST", 4) != 0)
            c->bad_content_type = true;
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        if (valuelen < 16 || memcmp(value, "application/grpc", 16) != 0 ||
            (valuelen > 16 && value[16] != '+' && value[16] != ';'))
            c->bad_content_type = true;
    } else if (namelen == 12 && memcmp(name, "grpc-timeout", 12) == 0) {
        uint64_t ns;
        if (grpc_timeout_parse((const char *)value, valuelen, &ns) == 0)
            c->deadline = now_mono_ns() + ns;
    } else if (namelen == 13 && memcmp(name, "grpc-encoding", 13) == 0) {
        /* We never compress, and say so in grpc-accept-encoding; a
         * compressed message is refused when it arrives. */
    } else if (namelen > 0 && name[0] != ':') {
        struct md *m = xmalloc(sizeof *m);
        m->key = strndup((const char *)name, namelen);
        m->val = strndup((const char *)value, valuelen);
        m->next = c->md;
        c->md = m;
    }
    return 0;
}

static const struct rpc_method *find_method(const struct rpc_listener *l, const char *path)
{
    if (!path)
        return NULL;
    for (size_t i = 0; i < l->cfg.n_methods; i++)
        if (strcmp(l->methods[i].path, path) == 0)
            return &l->methods[i];
    return NULL;
}

static int ng_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct conn *cn = ud;
    struct rpc_server *s = cn->srv;
    cn->handshake_deadline = 0;      /* it speaks HTTP/2 */
    if (f->hd.type != NGHTTP2_HEADERS && f->hd.type != NGHTTP2_DATA)
        return 0;
    struct rpc_call *c = nghttp2_session_get_stream_user_data(ng, f->hd.stream_id);
    if (!c)
        return 0;
    bool end = f->hd.flags & NGHTTP2_FLAG_END_STREAM;
    pthread_mutex_lock(&s->lock);
    if (end) {
        c->in_closed = true;
        pthread_cond_broadcast(&c->cond);
    }
    if (f->hd.type == NGHTTP2_HEADERS && f->headers.cat == NGHTTP2_HCAT_REQUEST) {
        c->m = find_method(cn->lst, c->path);
        if (c->bad_content_type)
            call_finish_locked(c, -415, "unsupported content-type or method");
        else if (!c->m)
            call_finish_locked(c, RPC_UNIMPLEMENTED, c->path ? c->path : "no :path");
        else if (s->stopping)
            call_finish_locked(c, RPC_UNAVAILABLE, "server is shutting down");
        else if (cn->over_limit) {
            char m[96];
            snprintf(m, sizeof m, "too many connections to this socket (its limit is %u)",
                     cn->lst->cfg.max_conns);
            call_finish_locked(c, RPC_RESOURCE_EXHAUSTED, m);
        }
        else if (c->m->kind == RPC_CLIENT_STREAM || c->m->kind == RPC_BIDI_STREAM)
            dispatch_locked(c);
    }
    if (end && !c->finished && c->m && !c->dispatched && !c->in_error)
        dispatch_locked(c);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int ng_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id,
                         const uint8_t *data, size_t len, void *ud)
{
    struct conn *cn = ud;
    struct rpc_server *s = cn->srv;
    nghttp2_session_consume_connection(ng, len);
    struct rpc_call *c = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (!c) {
        nghttp2_session_consume_stream(ng, stream_id, len);
        return 0;
    }
    pthread_mutex_lock(&s->lock);
    if (c->finished || c->in_error) {
        pthread_mutex_unlock(&s->lock);
        nghttp2_session_consume_stream(ng, stream_id, len);
        return 0;
    }
    int r = grpc_reader_feed(&c->in, data, len);
    if (r == -EMSGSIZE) {
        c->in_error = r;
        char m[96];
        snprintf(m, sizeof m, "message larger than the limit of %zu bytes", s->cfg.max_message);
        call_cancel_locked(c, RPC_RESOURCE_EXHAUSTED, m);
    } else if (r < 0) {
        c->in_error = r;
        call_cancel_locked(c, RPC_UNIMPLEMENTED, "compressed messages are not supported");
    }
    bool consume_now = c->in.queued_bytes < IN_HIGH_WATER || c->finished;
    if (!consume_now)
        c->unconsumed += len;
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&s->lock);
    if (consume_now)
        nghttp2_session_consume_stream(ng, stream_id, len);
    return 0;
}

static int ng_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct conn *cn = ud;
    struct rpc_call *c = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (!c)
        return 0;
    nghttp2_session_set_stream_user_data(ng, stream_id, NULL);
    pthread_mutex_lock(&cn->srv->lock);
    call_detach_locked(c);
    pthread_mutex_unlock(&cn->srv->lock);
    return 0;
}

/* Trailers: grpc-status and grpc-message. */
static void submit_status(nghttp2_session *ng, struct rpc_call *c, bool trailers_only)
{
    char code[16];
    snprintf(code, sizeof code, "%d", c->status);
    _cleanup_free_ char *msg = c->status_msg ? grpc_message_encode(c->status_msg) : NULL;
    nghttp2_nv nv[5];
    size_t n = 0;
#define NV(k, v) nv[n++] = (nghttp2_nv){ (uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE }
    if (trailers_only) {
        NV(":status", "200");
        NV("content-type", "application/grpc");
    }
    NV("grpc-status", code);
    if (msg)
        NV("grpc-message", msg);
    if (trailers_only)
        nghttp2_submit_response(ng, c->stream_id, nv, n, NULL);
    else
        nghttp2_submit_trailer(ng, c->stream_id, nv, n);
#undef NV
    c->status_sent = true;
}

static ssize_t data_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                         uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct rpc_call *c = source->ptr;
    struct rpc_server *s = c->srv;
    pthread_mutex_lock(&s->lock);
    size_t avail = c->out.len - c->out_off;
    if (avail > 0) {
        size_t n = MIN(avail, length);
        memcpy(buf, c->out.data + c->out_off, n);
        c->out_off += n;
        if (c->out_off == c->out.len) {
            c->out.len = c->out_off = 0;
        } else if (c->out_off > (1u << 20) && c->out_off * 2 > c->out.len) {
            memmove(c->out.data, c->out.data + c->out_off, c->out.len - c->out_off);
            c->out.len -= c->out_off;
            c->out_off = 0;
        }
        if (c->out.len - c->out_off <= OUT_HIGH_WATER)
            pthread_cond_broadcast(&c->cond);
        pthread_mutex_unlock(&s->lock);
        return (ssize_t)n;
    }
    if (c->finished) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (c->status < 0)    /* headers already went out: report as INTERNAL */
            c->status = RPC_INTERNAL;
        submit_status(ng, c, false);
        pthread_mutex_unlock(&s->lock);
        return 0;
    }
    c->deferred = true;
    pthread_mutex_unlock(&s->lock);
    return NGHTTP2_ERR_DEFERRED;
}

/* Push what workers queued for this call into nghttp2. Loop thread. */
static void call_flush(struct rpc_call *c)
{
    struct rpc_server *s = c->srv;
    pthread_mutex_lock(&s->lock);
    struct conn *cn = c->conn;
    if (!cn || c->status_sent) {
        pthread_mutex_unlock(&s->lock);
        return;
    }
    nghttp2_session *ng = cn->ng;
    size_t reopen = 0;
    if (c->unconsumed && (c->in.queued_bytes < IN_HIGH_WATER || c->finished)) {
        reopen = c->unconsumed;
        c->unconsumed = 0;
    }
    bool have_data = c->out.len > c->out_off;
    if (!c->headers_sent) {
        if (c->finished && !have_data) {
            if (c->status == -415) {
                nghttp2_nv nv[] = {
                    { (uint8_t *)":status", (uint8_t *)"415", 7, 3, NGHTTP2_NV_FLAG_NONE },
                };
                nghttp2_submit_response(ng, c->stream_id, nv, 1, NULL);
                c->status_sent = true;
            } else {
                submit_status(ng, c, true);
            }
            c->headers_sent = true;
        } else if (have_data || c->finished) {
            nghttp2_nv nv[] = {
                { (uint8_t *)":status", (uint8_t *)"200", 7, 3, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *)"content-type", (uint8_t *)"application/grpc", 12, 16, NGHTTP2_NV_FLAG_NONE },
                { (uint8_t *)"grpc-accept-encoding", (uint8_t *)"identity", 20, 8, NGHTTP2_NV_FLAG_NONE },
            };
            nghttp2_data_provider dp = { .source.ptr = c, .read_callback = data_read };
            nghttp2_submit_response(ng, c->stream_id, nv, ARRAY_SIZE(nv), &dp);
            c->headers_sent = true;
        }
    } else if (c->deferred && (have_data || c->finished)) {
        c->deferred = false;
        nghttp2_session_resume_data(ng, c->stream_id);
    }
    pthread_mutex_unlock(&s->lock);
    if (reopen)
        nghttp2_session_consume_stream(ng, c->stream_id, reopen);
}

/* --- connections ---------------------------------------------------------- */

static void conn_update_events(struct conn *cn)
{
    bool want_out = cn->x.want_write ||
                    (cn->ng && nghttp2_session_want_write(cn->ng) && cn->x.want_write);
    if (!cn->x.handshake_done)
        want_out = cn->x.want_write;
    if (want_out == cn->epollout)
        return;
    struct epoll_event ev = { .events = EPOLLIN | (want_out ? EPOLLOUT : 0), .data.ptr = &cn->src };
    epoll_ctl(cn->srv->epfd, EPOLL_CTL_MOD, cn->x.fd, &ev);
    cn->epollout = want_out;
}

int conn_send(struct conn *cn)
{
    if (!cn->ng || cn->dead)
        return 0;
    cn->x.want_write = false;
    int r = nghttp2_session_send(cn->ng);
    if (r != 0) {
        log_debug("rpc", "send on %s failed: %s", cn->x.peer.addr, nghttp2_strerror(r));
        cn->dead = true;
        return -EIO;
    }
    if (!nghttp2_session_want_read(cn->ng) && !nghttp2_session_want_write(cn->ng))
        cn->dead = true;
    return 0;
}

int conn_start_h2(struct conn *cn)
{
    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, ng_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, ng_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, ng_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, ng_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, ng_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, ng_stream_close);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    /* gRPC clients send an :authority nghttp2 rejects on unix sockets; we
     * validate :method, :path and content-type ourselves. */
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    int r = nghttp2_session_server_new2(&cn->ng, cb, cn, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (r != 0)
        return -ENOMEM;
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cn->srv->cfg.max_streams },
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, STREAM_WINDOW },
        { NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, MAX_METADATA },
    };
    nghttp2_submit_settings(cn->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(cn->ng, NGHTTP2_FLAG_NONE, 0, CONN_WINDOW);
    if (cn->srv->stopping)
        nghttp2_submit_goaway(cn->ng, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    return 0;
}

void conn_close(struct conn *cn)
{
    struct rpc_server *s = cn->srv;
    pthread_mutex_lock(&s->lock);
    while (cn->calls) {
        struct rpc_call *c = cn->calls;
        if (cn->ng)
            nghttp2_session_set_stream_user_data(cn->ng, c->stream_id, NULL);
        call_detach_locked(c);
    }
    if (cn->prev)
        cn->prev->next = cn->next;
    else
        s->conns = cn->next;
    if (cn->next)
        cn->next->prev = cn->prev;
    s->nconns--;
    if (cn->over_limit) {
        cn->lst->nrefusing--;
    } else {
        cn->lst->nconns--;
        /* A place is free: a refusing connection of this listener takes it
         * (a client keeps its connection after a refused call, and would
         * otherwise be refused for as long as it keeps it). */
        for (struct conn *o = s->conns; o && cn->lst->nrefusing; o = o->next)
            if (o->lst == cn->lst && o->over_limit) {
                o->over_limit = false;
                cn->lst->nrefusing--;
                cn->lst->nconns++;
                break;
            }
    }
    pthread_mutex_unlock(&s->lock);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, cn->x.fd, NULL);
    nghttp2_session_del(cn->ng);
    xport_close(&cn->x);
    free(cn);
}

void conn_io(struct conn *cn, uint32_t events)
{
    if (!cn->x.handshake_done) {
        int r = cn->x.ops->handshake(&cn->x);
        if (r == -EAGAIN) {
            conn_update_events(cn);
            return;
        }
        if (r < 0) {
            log_warn("rpc", "refused connection from %s: %s", cn->x.peer.addr,
                     cn->x.error ? cn->x.error : strerror(-r));
            cn->dead = true;
            return;
        }
        if (conn_start_h2(cn) < 0) {
            cn->dead = true;
            return;
        }
        events |= EPOLLIN;
    }
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        uint8_t buf[16384];
        for (int i = 0; i < 64; i++) {
            ssize_t n = cn->x.ops->read(&cn->x, buf, sizeof buf);
            if (n == -EAGAIN)
                break;
            if (n <= 0) {
                cn->dead = true;
                return;
            }
            cn->last_rx = now_mono_ns();
            cn->ping_sent = 0;
            ssize_t r = nghttp2_session_mem_recv(cn->ng, buf, (size_t)n);
            if (r < 0) {
                log_debug("rpc", "bad HTTP/2 from %s: %s", cn->x.peer.addr,
                          nghttp2_strerror((int)r));
                /* Tell the client why, if it still listens. */
                nghttp2_session_terminate_session(cn->ng, NGHTTP2_PROTOCOL_ERROR);
                conn_send(cn);
                cn->dead = true;
                return;
            }
        }
    }
}


/* --- the loop --------------------------------------------------------------- */

static void process_dirty(struct rpc_server *s)
{
    pthread_mutex_lock(&s->lock);
    struct rpc_call *list = s->dirty;
    s->dirty = NULL;
    pthread_mutex_unlock(&s->lock);
    while (list) {
        struct rpc_call *c = list;
        list = c->dirty_next;
        pthread_mutex_lock(&s->lock);
        c->dirty = false;
        pthread_mutex_unlock(&s->lock);
        call_flush(c);
        pthread_mutex_lock(&s->lock);
        call_unref_locked(c);
        pthread_mutex_unlock(&s->lock);
    }
}

/* The keepalive of a connection (see the top): ping it, or close it. */
static void check_keepalive(struct conn *cn, uint64_t now, uint64_t *next)
{
    uint64_t iv = (uint64_t)cn->lst->cfg.keepalive_ms * 1000000ULL;
    if (!iv || !cn->ng || cn->dead)
        return;
    uint64_t due = (cn->ping_sent ? cn->ping_sent : cn->last_rx) + iv;
    if (now < due) {
        *next = MIN(*next, due);
    } else if (!cn->ping_sent) {
        cn->ping_sent = now;
        nghttp2_submit_ping(cn->ng, NGHTTP2_FLAG_NONE, NULL);
        *next = now;             /* the loop sends it */
    } else {
        log_warn("rpc", "closing the connection from %s: no answer to a keepalive ping for %u ms",
                 cn->x.peer.addr, cn->lst->cfg.keepalive_ms);
        cn->dead = true;
        *next = now;
    }
}

/* Deadlines of calls and handshakes, keepalives; returns ms until the next
 * one. */
static int check_timers(struct rpc_server *s)
{
    uint64_t now = now_mono_ns(), next = now + 1000000000ULL;
    pthread_mutex_lock(&s->lock);
    for (struct conn *cn = s->conns; cn; cn = cn->next) {
        if (cn->handshake_deadline) {
            if (now >= cn->handshake_deadline)
                cn->dead = true;
            else
                next = MIN(next, cn->handshake_deadline);
        }
        check_keepalive(cn, now, &next);
        for (struct rpc_call *c = cn->calls; c; c = c->conn_next) {
            if (!c->deadline || c->finished)
                continue;
            if (now >= c->deadline)
                call_cancel_locked(c, RPC_DEADLINE_EXCEEDED, "deadline exceeded");
            else
                next = MIN(next, c->deadline);
        }
    }
    if (s->stopping)
        next = MIN(next, MAX(s->stop_deadline, now));
    pthread_mutex_unlock(&s->lock);
    return (int)((next - now + 999999) / 1000000);
}

static void begin_stop(struct rpc_server *s)
{
    s->stopping = true;
    s->stop_deadline = now_mono_ns() + (uint64_t)s->grace_ms * 1000000ULL;
    pthread_mutex_lock(&s->lock);
    struct rpc_listener *ls = s->listeners;
    pthread_mutex_unlock(&s->lock);
    /* Listeners stop accepting now; their connections stay to finish. */
    for (struct rpc_listener *l = ls; l; l = l->next) {
        epoll_ctl(s->epfd, EPOLL_CTL_DEL, l->fd, NULL);
        if (l->path)
            unlink(l->path);
    }
    for (struct conn *cn = s->conns; cn; cn = cn->next) {
        if (cn->ng) {
            nghttp2_submit_goaway(cn->ng, NGHTTP2_FLAG_NONE,
                                  nghttp2_session_get_last_proc_stream_id(cn->ng),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            conn_send(cn);
        }
    }
}

static bool calls_pending(struct rpc_server *s)
{
    pthread_mutex_lock(&s->lock);
    bool busy = s->jobs_head || s->nrunning > 0;
    for (struct conn *cn = s->conns; cn && !busy; cn = cn->next)
        busy = cn->calls != NULL;
    pthread_mutex_unlock(&s->lock);
    return busy;
}

int rpc_server_run(struct rpc_server *s)
{
    s->loop_thread = pthread_self();
    s->loop_running = true;
    struct epoll_event evs[64];
    bool cancelled_all = false;
    for (;;) {
        if (s->stop_requested && !s->stopping)
            begin_stop(s);
        if (s->stopping) {
            if (!calls_pending(s))
                break;
            if (now_mono_ns() >= s->stop_deadline && !cancelled_all) {
                pthread_mutex_lock(&s->lock);
                for (struct conn *cn = s->conns; cn; cn = cn->next)
                    for (struct rpc_call *c = cn->calls; c; c = c->conn_next)
                        call_cancel_locked(c, RPC_UNAVAILABLE, "server is shutting down");
                pthread_mutex_unlock(&s->lock);
                cancelled_all = true;
                s->stop_deadline = now_mono_ns() + 2000000000ULL;
            } else if (cancelled_all && now_mono_ns() >= s->stop_deadline) {
                break;
            }
        }
        process_dirty(s);
        for (struct conn *cn = s->conns; cn; cn = cn->next) {
            conn_send(cn);
            conn_update_events(cn);
        }
        for (struct conn *cn = s->conns, *next; cn; cn = next) {
            next = cn->next;
            if (cn->dead)
                conn_close(cn);
        }
        int timeout = check_timers(s);
        pthread_mutex_lock(&s->lock);
        bool more = s->dirty != NULL;
        pthread_mutex_unlock(&s->lock);
        if (more)
            timeout = 0;
        int n = epoll_wait(s->epfd, evs, ARRAY_SIZE(evs), timeout);
        if (n < 0 && errno != EINTR) {
            log_error_errno(-errno, "rpc", "epoll_wait failed");
            break;
        }
        for (int i = 0; i < n; i++) {
            struct src *src = evs[i].data.ptr;
            if (src->kind == SRC_WAKE) {
                uint64_t v;
                ssize_t rr = read(s->wakefd, &v, sizeof v);
                (void)rr;
            } else if (src->kind == SRC_LISTENER) {
                struct rpc_listener *l = (struct rpc_listener *)src;
                if (!l->closed && !s->stopping)
                    accept_conns(l);
            } else {
                struct conn *cn = (struct conn *)src;
                if (!cn->dead)
                    conn_io(cn, evs[i].events);
            }
        }
        /* Listener closes asked by other threads. */
        pthread_mutex_lock(&s->lock);
        struct rpc_listener *closing = NULL;
        for (struct rpc_listener *l = s->listeners; l; l = l->next)
            if (l->closing && !l->closed) {
                closing = l;
                break;
            }
        pthread_mutex_unlock(&s->lock);
        if (closing)
            listener_shutdown(closing);
    }
    /* Close everything; calls still running see cancellation. */
    while (s->conns) {
        conn_send(s->conns);
        conn_close(s->conns);
    }
    pthread_mutex_lock(&s->lock);
    for (struct rpc_listener *l = s->listeners; l; l = l->next)
        l->closed = true;
    s->loop_running = false;
    pthread_cond_broadcast(&s->lst_cond);
    pthread_mutex_unlock(&s->lock);
    return 0;
}

void rpc_server_stop(struct rpc_server *s, uint32_t grace_ms)
{
    s->grace_ms = grace_ms;
    s->stop_requested = true;
    wake(s);
}

int rpc_server_new(const struct rpc_server_config *cfg, struct rpc_server **ret)
{
    struct rpc_server *s = xcalloc(1, sizeof *s);
    if (cfg)
        s->cfg = *cfg;
    if (!s->cfg.max_message)
        s->cfg.max_message = 4u << 20;
    if (!s->cfg.max_streams)
        s->cfg.max_streams = 100;
    if (!s->cfg.max_conns)
        s->cfg.max_conns = 256;
    if (!s->cfg.max_workers)
        s->cfg.max_workers = 64;
    if (!s->cfg.max_calls)
        s->cfg.max_calls = 1024;
    if (!s->cfg.handshake_ms)
        s->cfg.handshake_ms = 10000;
    signal(SIGPIPE, SIG_IGN);   /* TLS writes use write(2) */
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->jobs_cond, NULL);
    pthread_cond_init(&s->lst_cond, NULL);
    pthread_cond_init(&s->workers_cond, NULL);
    s->epfd = epoll_create1(EPOLL_CLOEXEC);
    s->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->epfd < 0 || s->wakefd < 0) {
        int r = -errno;
        rpc_server_free(s);
        return r;
    }
    s->wake_src.kind = SRC_WAKE;
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = &s->wake_src };
    epoll_ctl(s->epfd, EPOLL_CTL_ADD, s->wakefd, &ev);
    *ret = s;
    return 0;
}

void rpc_server_free(struct rpc_server *s)
{
    if (!s)
        return;
    /* Workers finish their handlers (which see cancellation) and exit. */
    pthread_mutex_lock(&s->lock);
    s->workers_exit = true;
    pthread_cond_broadcast(&s->jobs_cond);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    while (s->nworkers > 0)
        if (pthread_cond_timedwait(&s->workers_cond, &s->lock, &ts) == ETIMEDOUT)
            break;
    bool stuck = s->nworkers > 0;
    while (s->listeners) {
        struct rpc_listener *l = s->listeners;
        s->listeners = l->next;
        if (l->path && l->fd >= 0)
            unlink(l->path);
        listener_free(l);
    }
    pthread_mutex_unlock(&s->lock);
    if (stuck) {
        /* A handler ignores cancellation: leave the server to it rather than
         * free memory under its feet. */
        log_warn("rpc", "%u handler(s) still running at shutdown", s->nworkers);
        return;
    }
    if (s->epfd >= 0)
        close(s->epfd);
    if (s->wakefd >= 0)
        close(s->wakefd);
    pthread_mutex_destroy(&s->lock);
    free(s);
}
