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
 * status itself. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <nghttp2/nghttp2.h>

#include "amber/log.h"
#include "rpc-internal.h"

#define OUT_HIGH_WATER   (1u << 20)    /* worker blocks above this much queued output */
#define IN_HIGH_WATER    (4u << 20)    /* stop opening the window above this */
#define STREAM_WINDOW    (1 << 20)
#define CONN_WINDOW      (16 << 20)
#define MAX_METADATA     (16u << 10)

enum src_kind { SRC_LISTENER, SRC_CONN, SRC_WAKE };

struct src {
    enum src_kind kind;
};

struct rpc_listener {
    struct src src;
    struct rpc_server *srv;
    int fd;
    bool is_unix;
    char *path;                     /* unix socket path */
    int port;
    struct rpc_listener_config cfg;
    struct rpc_method *methods;     /* copy */
    struct rpc_listener *next;
    bool closing;                   /* asked to close (by another thread) */
    bool closed;                    /* the loop is done with it */
};

struct conn {
    struct src src;
    struct rpc_server *srv;
    struct rpc_listener *lst;
    struct xport x;
    nghttp2_session *ng;
    uint64_t handshake_deadline;    /* 0 once the client spoke HTTP/2 */
    bool epollout;
    bool dead;
    struct rpc_call *calls;         /* open streams */
    struct conn *next, *prev;
};

struct md {
    struct md *next;
    char *key, *val;
};

struct rpc_call {
    struct rpc_server *srv;
    struct conn *conn;              /* NULL once the stream is closed */
    struct rpc_listener *lst;
    struct rpc_peer peer;
    int32_t stream_id;
    const struct rpc_method *m;
    char *path;
    struct md *md;
    size_t md_bytes;
    uint64_t deadline;
    bool bad_content_type;
    struct rpc_call *conn_next, *conn_prev;
    struct rpc_call *job_next;      /* worker queue */
    struct rpc_call *dirty_next;
    bool dirty;

    /* inbound */
    struct grpc_reader in;
    bool in_closed;                 /* END_STREAM seen */
    size_t unconsumed;              /* bytes not yet returned to the window */
    int in_error;                   /* framing error to report */

    /* outbound */
    struct buf out;
    size_t out_off;
    bool headers_sent;
    bool deferred;
    bool finished;                  /* status decided */
    bool status_sent;
    int status;
    char *status_msg;

    int err_code;                   /* rpc_error's status, sent after the handler returns */
    char *err_msg;
    bool err_set;

    bool dispatched;
    bool cancelled;
    int refs;
    pthread_cond_t cond;
};

struct rpc_server {
    struct rpc_server_config cfg;
    int epfd;
    int wakefd;
    struct src wake_src;
    pthread_mutex_t lock;
    pthread_cond_t lst_cond;
    struct rpc_listener *listeners;
    struct conn *conns;
    uint32_t nconns;
    struct rpc_call *dirty;
    struct rpc_call *jobs_head, *jobs_tail;
    pthread_cond_t jobs_cond;
    uint32_t nworkers, nidle, nrunning;
    bool stop_requested;
    uint32_t grace_ms;
    bool stopping;
    bool workers_exit;
    uint64_t stop_deadline;
    pthread_t loop_thread;
    bool loop_running;
    pthread_cond_t workers_cond;
};

static void call_unref_locked(struct rpc_call *c);
static void conn_close(struct conn *cn);
static void call_mark_dirty_locked(struct rpc_call *c);

/* --- small helpers ------------------------------------------------------ */

static void wake(struct rpc_server *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->wakefd, &one, sizeof one);
    (void)w;
}

static bool on_loop(const struct rpc_server *s)
{
    return s->loop_running && pthread_equal(pthread_self(), s->loop_thread);
}

/* --- status ------------------------------------------------------------- */

/* Decide the call's final status (first decision wins) and have the loop
 * send it. Lock held. */
static void call_finish_locked(struct rpc_call *c, int code, const char *msg)
{
    if (c->finished)
        return;
    c->finished = true;
    c->status = code;
    c->status_msg = msg ? xstrdup(msg) : NULL;
    call_mark_dirty_locked(c);
    pthread_cond_broadcast(&c->cond);
}

static void call_cancel_locked(struct rpc_call *c, int code, const char *msg)
{
    c->cancelled = true;
    call_finish_locked(c, code, msg);
    pthread_cond_broadcast(&c->cond);
}

int rpc_error(struct rpc_call *c, int code, const char *fmt, ...)
{
    char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);
    /* Recorded, and sent only once the handler has returned: a client that
     * retries at once must not find the handler's locks still held. */
    pthread_mutex_lock(&c->srv->lock);
    if (!c->err_set) {
        c->err_set = true;
        c->err_code = code;
        c->err_msg = msg;
        msg = NULL;
    }
    pthread_mutex_unlock(&c->srv->lock);
    free(msg);
    return rpc_errno_from_code(code) ?: -EREMOTEIO;
}

/* --- the handler side ---------------------------------------------------- */

void *rpc_call_server_data(const struct rpc_call *c) { return c->srv->cfg.userdata; }
void *rpc_call_listener_data(const struct rpc_call *c) { return c->lst->cfg.userdata; }
const struct rpc_peer *rpc_call_peer(const struct rpc_call *c) { return &c->peer; }
const char *rpc_call_method(const struct rpc_call *c) { return c->path; }
uint64_t rpc_call_deadline(const struct rpc_call *c) { return c->deadline; }

const char *rpc_call_metadata(const struct rpc_call *c, const char *key)
{
    for (struct md *m = c->md; m; m = m->next)
        if (strcasecmp(m->key, key) == 0)
            return m->val;
    return NULL;
}

bool rpc_call_cancelled(const struct rpc_call *c)
{
    pthread_mutex_lock(&c->srv->lock);
    bool v = c->cancelled;
    pthread_mutex_unlock(&c->srv->lock);
    return v;
}

static void abs_timeout(struct timespec *ts, uint64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += (time_t)(ms / 1000);
    ts->tv_nsec += (long)(ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int rpc_call_sleep(struct rpc_call *c, uint64_t timeout_ms)
{
    struct timespec ts;
    abs_timeout(&ts, timeout_ms);
    pthread_mutex_lock(&c->srv->lock);
    while (!c->cancelled)
        if (pthread_cond_timedwait(&c->cond, &c->srv->lock, &ts) == ETIMEDOUT)
            break;
    bool cancelled = c->cancelled;
    pthread_mutex_unlock(&c->srv->lock);
    return cancelled ? -ECANCELED : 0;
}

int rpc_call_send(struct rpc_call *c, const ProtobufCMessage *msg)
{
    struct rpc_server *s = c->srv;
    int r = 0;
    pthread_mutex_lock(&s->lock);
    if (c->cancelled || c->finished || !c->conn) {
        r = -ECANCELED;
        goto out;
    }
    r = grpc_frame_pack(&c->out, msg, s->cfg.max_message);
    if (r < 0)
        goto out;
    call_mark_dirty_locked(c);
    while (c->out.len - c->out_off > OUT_HIGH_WATER && !c->cancelled && c->conn)
        pthread_cond_wait(&c->cond, &s->lock);
    if (c->cancelled || !c->conn)
        r = -ECANCELED;
out:
    pthread_mutex_unlock(&s->lock);
    return r;
}

int rpc_call_recv(struct rpc_call *c, ProtobufCMessage **ret)
{
    struct rpc_server *s = c->srv;
    pthread_mutex_lock(&s->lock);
    while (!c->in.head && !c->in_closed && !c->cancelled && !c->in_error)
        pthread_cond_wait(&c->cond, &s->lock);
    if (c->cancelled) {
        pthread_mutex_unlock(&s->lock);
        return -ECANCELED;
    }
    struct msg *m = grpc_reader_pop(&c->in);
    if (m && c->unconsumed)
        call_mark_dirty_locked(c);    /* the loop reopens the window */
    int err = c->in_error;
    pthread_mutex_unlock(&s->lock);
    if (!m)
        return err ? err : 0;
    ProtobufCMessage *d = protobuf_c_message_unpack(c->m->input, NULL, m->len, m->data);
    free(m);
    if (!d)
        return -EBADMSG;
    *ret = d;
    return 1;
}

/* --- call lifetime ------------------------------------------------------ */

static void call_mark_dirty_locked(struct rpc_call *c)
{
    if (c->dirty || !c->conn)
        return;
    c->dirty = true;
    c->refs++;
    c->dirty_next = c->srv->dirty;
    c->srv->dirty = c;
    if (!on_loop(c->srv))
        wake(c->srv);
}

static void call_unref_locked(struct rpc_call *c)
{
    if (--c->refs > 0)
        return;
    grpc_reader_clear(&c->in);
    buf_free(&c->out);
    while (c->md) {
        struct md *m = c->md;
        c->md = m->next;
        free(m->key);
        free(m->val);
        free(m);
    }
    free(c->path);
    free(c->status_msg);
    free(c->err_msg);
    pthread_cond_destroy(&c->cond);
    free(c);
}

static void call_detach_locked(struct rpc_call *c)
{
    struct conn *cn = c->conn;
    if (!cn)
        return;
    if (c->conn_prev)
        c->conn_prev->conn_next = c->conn_next;
    else
        cn->calls = c->conn_next;
    if (c->conn_next)
        c->conn_next->conn_prev = c->conn_prev;
    c->conn = NULL;
    if (!c->status_sent) {
        c->cancelled = true;
        c->finished = true;
    }
    pthread_cond_broadcast(&c->cond);
    call_unref_locked(c);    /* the loop's reference */
}

/* --- workers -------------------------------------------------------------- */

static void run_call(struct rpc_call *c)
{
    struct rpc_server *s = c->srv;
    ProtobufCMessage *req = NULL;
    int r = 0;

    if (c->m->kind == RPC_UNARY || c->m->kind == RPC_SERVER_STREAM) {
        pthread_mutex_lock(&s->lock);
        struct msg *m = grpc_reader_pop(&c->in);
        bool extra = c->in.head != NULL;
        pthread_mutex_unlock(&s->lock);
        if (!m) {
            rpc_error(c, RPC_INVALID_ARGUMENT, "missing request message");
            goto done;
        }
        if (extra) {
            free(m);
            rpc_error(c, RPC_INVALID_ARGUMENT, "more than one request message for %s", c->path);
            goto done;
        }
        req = protobuf_c_message_unpack(c->m->input, NULL, m->len, m->data);
        free(m);
        if (!req) {
            rpc_error(c, RPC_INVALID_ARGUMENT, "cannot decode the request as %s",
                      c->m->input->name);
            goto done;
        }
    }
    if (!rpc_call_cancelled(c))
        r = c->m->handler(c, req);
done:
    if (req)
        protobuf_c_message_free_unpacked(req, NULL);
    pthread_mutex_lock(&s->lock);
    if (!c->finished) {
        if (c->err_set) {
            call_finish_locked(c, c->err_code, c->err_msg);
        } else if (r < 0) {
            call_finish_locked(c, rpc_code_from_errno(r), strerror(-r));
        } else if (c->m->kind == RPC_UNARY && c->out.len == 0 && !c->headers_sent) {
            call_finish_locked(c, RPC_INTERNAL, "the handler sent no reply");
        } else {
            call_finish_locked(c, RPC_OK, NULL);
        }
    }
    pthread_mutex_unlock(&s->lock);
}

static void *worker_main(void *arg)
{
    struct rpc_server *s = arg;
    pthread_mutex_lock(&s->lock);
    for (;;) {
        while (!s->jobs_head && !s->workers_exit) {
            s->nidle++;
            pthread_cond_wait(&s->jobs_cond, &s->lock);
            s->nidle--;
        }
        struct rpc_call *c = s->jobs_head;
        if (!c)
            break;
        s->jobs_head = c->job_next;
        if (!s->jobs_head)
            s->jobs_tail = NULL;
        s->nrunning++;
        pthread_mutex_unlock(&s->lock);
        run_call(c);
        pthread_mutex_lock(&s->lock);
        s->nrunning--;
        call_unref_locked(c);
    }
    s->nworkers--;
    pthread_cond_broadcast(&s->workers_cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void dispatch_locked(struct rpc_call *c)
{
    struct rpc_server *s = c->srv;
    if (c->dispatched)
        return;
    c->dispatched = true;
    c->refs++;
    c->job_next = NULL;
    if (s->jobs_tail)
        s->jobs_tail->job_next = c;
    else
        s->jobs_head = c;
    s->jobs_tail = c;
    if (s->nidle == 0 && s->nworkers < s->cfg.max_workers) {
        pthread_t t;
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &a, worker_main, s) == 0)
            s->nworkers++;
        pthread_attr_destroy(&a);
    }
    pthread_cond_signal(&s->jobs_cond);
}

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

static int conn_send(struct conn *cn)
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

static int conn_start_h2(struct conn *cn)
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

static void conn_close(struct conn *cn)
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
    pthread_mutex_unlock(&s->lock);
    epoll_ctl(s->epfd, EPOLL_CTL_DEL, cn->x.fd, NULL);
    nghttp2_session_del(cn->ng);
    xport_close(&cn->x);
    free(cn);
}

static void conn_io(struct conn *cn, uint32_t events)
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

static void accept_conns(struct rpc_listener *l)
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
        cn->handshake_deadline = now_mono_ns() + (uint64_t)s->cfg.handshake_ms * 1000000ULL;
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

static void listener_free(struct rpc_listener *l)
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
static void listener_shutdown(struct rpc_listener *l)
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

/* Deadlines of calls and handshakes; returns ms until the next one. */
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
