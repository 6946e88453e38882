/* rpc-client.c: the blocking gRPC client used by amberctl, amber-csi and
 * peer sync.
 *
 * Every call or stream has its own connection (a unix connect costs a few
 * microseconds; a TLS handshake a millisecond), so a client is just a target
 * and can be shared by threads without locks. The calling thread drives the
 * nghttp2 session itself: each blocking operation pumps the connection
 * (poll, read, nghttp2) until its condition holds or the deadline passes.
 * Flow control is manual, as on the server: received messages reopen the
 * window only when the caller takes them, so a slow reader bounds memory.
 * Keepalive (rpc_client_set_keepalive): a peer that stops answering without
 * closing (a stopped process, a frozen proxy, a partition) would leave a
 * call without a deadline waiting forever; so a connection that received
 * nothing for the keepalive interval sends an HTTP/2 PING, and one that
 * then receives nothing for another interval fails the call UNAVAILABLE. */
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <nghttp2/nghttp2.h>

#include "rpc-internal.h"

#define OUT_HIGH_WATER  (1u << 20)
#define IN_HIGH_WATER   (4u << 20)
#define CLIENT_MAX_MSG  (64u << 20)

struct rpc_client {
    char *target;
    char *upath, *host, *port;
    struct rpc_tls *tls;
    uint32_t keepalive_ms;
};

struct rpc_stream {
    struct rpc_client *cl;
    struct xport x;
    nghttp2_session *ng;
    int32_t stream_id;
    uint64_t deadline;
    struct buf out;
    size_t out_off;
    bool out_eof;
    bool deferred;
    struct grpc_reader in;
    size_t unconsumed;
    int http_status;
    bool remote_closed;        /* the server ended its side (END_STREAM) */
    bool closed;
    bool got_status;
    int status;
    char *status_msg;
    int err;                   /* transport failure, -errno */
    uint64_t last_rx;          /* when bytes last arrived */
    uint64_t ping_sent;        /* keepalive PING unanswered since, or 0 */
    bool stalled;              /* failed: the PING was not answered */
};

int rpc_target_parse(const char *t, char **ret_unix, char **ret_host, char **ret_port)
{
    *ret_unix = *ret_host = *ret_port = NULL;
    if (!t || !*t)
        return -EINVAL;
    if (strncmp(t, "unix://", 7) == 0)
        t += 7;
    else if (strncmp(t, "unix:", 5) == 0)
        t += 5;
    else if (strncmp(t, "tcp://", 6) == 0)
        goto tcp;
    else if (strncmp(t, "tls://", 6) == 0)
        goto tcp;
    if (*t == '/' || *t == '.') {
        *ret_unix = xstrdup(t);
        return 0;
    }
    if (t != NULL && strchr(t, ':') == NULL) {
        *ret_unix = xstrdup(t);
        return 0;
    }
    goto parse;
tcp:
    t += 6;
parse:;
    const char *colon;
    if (*t == '[') {
        const char *end = strchr(t, ']');
        if (!end || end[1] != ':')
            return -EINVAL;
        *ret_host = strndup(t + 1, (size_t)(end - t - 1));
        colon = end + 1;
    } else {
        colon = strrchr(t, ':');
        if (!colon)
            return -EINVAL;
        *ret_host = strndup(t, (size_t)(colon - t));
    }
    *ret_port = xstrdup(colon + 1);
    uint64_t p;
    if (parse_u64(*ret_port, &p) < 0 || p > 65535) {
        free(*ret_host);
        free(*ret_port);
        *ret_host = *ret_port = NULL;
        return -EINVAL;
    }
    return 0;
}

int rpc_client_new(const char *target, struct rpc_tls *tls, struct rpc_client **ret)
{
    struct rpc_client *cl = xcalloc(1, sizeof *cl);
    int r = rpc_target_parse(target, &cl->upath, &cl->host, &cl->port);
    if (r < 0) {
        free(cl);
        return r;
    }
    cl->target = xstrdup(target);
    cl->tls = tls;
    signal(SIGPIPE, SIG_IGN);
    *ret = cl;
    return 0;
}

void rpc_client_free(struct rpc_client *cl)
{
    if (!cl)
        return;
    free(cl->target);
    free(cl->upath);
    free(cl->host);
    free(cl->port);
    free(cl);
}

const char *rpc_client_target(const struct rpc_client *cl) { return cl->target; }

void rpc_client_set_keepalive(struct rpc_client *cl, uint32_t idle_ms) { cl->keepalive_ms = idle_ms; }

static int remaining_ms(uint64_t deadline)
{
    if (!deadline)
        return -1;
    uint64_t now = now_mono_ns();
    if (now >= deadline)
        return 0;
    return (int)MIN((deadline - now + 999999) / 1000000, (uint64_t)INT32_MAX);
}

/* The earlier of two deadlines, 0 being none. */
static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : MIN(a, b);
}

static int wait_fd(int fd, short events, uint64_t deadline)
{
    struct pollfd p = { .fd = fd, .events = events };
    for (;;) {
        int r = poll(&p, 1, remaining_ms(deadline));
        if (r > 0)
            return 0;
        if (r == 0)
            return -ETIMEDOUT;
        if (errno != EINTR)
            return -errno;
    }
}

static int dial(struct rpc_client *cl, uint64_t deadline, int *ret_fd)
{
    if (cl->upath) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        _cleanup_close_ int dirfd = -1;
        int r = rpc_unix_addr(cl->upath, &sa, &dirfd);
        if (r < 0)
            return r;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
            return -errno;
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) {
            r = -errno;
            close(fd);
            return r;
        }
        *ret_fd = fd;
        return 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_NUMERICSERV };
    struct addrinfo *ai = NULL;
    if (getaddrinfo(cl->host, cl->port, &hints, &ai) != 0 || !ai)
        return -EHOSTUNREACH;
    int r = -ECONNREFUSED;
    for (struct addrinfo *a = ai; a; a = a->ai_next) {
        int fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            r = -errno;
            continue;
        }
        if (connect(fd, a->ai_addr, a->ai_addrlen) < 0) {
            if (errno != EINPROGRESS) {
                r = -errno;
                close(fd);
                continue;
            }
            r = wait_fd(fd, POLLOUT, deadline);
            int soerr = 0;
            socklen_t l = sizeof soerr;
            if (r == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &l) == 0 && soerr)
                r = -soerr;
            if (r < 0) {
                close(fd);
                continue;
            }
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *ret_fd = fd;
        r = 0;
        break;
    }
    freeaddrinfo(ai);
    return r;
}

/* --- nghttp2 callbacks ---------------------------------------------------- */

static ssize_t c_send(nghttp2_session *ng, const uint8_t *data, size_t len, int flags, void *ud)
{
    struct rpc_stream *s = ud;
    ssize_t r = s->x.ops->write(&s->x, data, len);
    if (r == -EAGAIN)
        return NGHTTP2_ERR_WOULDBLOCK;
    if (r < 0) {
        s->err = (int)r;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return r;
}

static int c_header(nghttp2_session *ng, const nghttp2_frame *f, const uint8_t *name,
                    size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    struct rpc_stream *s = ud;
    if (f->hd.stream_id != s->stream_id)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        s->http_status = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            s->http_status = s->http_status * 10 + (value[i] - '0');
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int code = 0;
        for (size_t i = 0; i < valuelen && i < 3; i++)
            code = code * 10 + (value[i] - '0');
        s->status = code;
        s->got_status = true;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        free(s->status_msg);
        s->status_msg = grpc_message_decode((const char *)value, valuelen);
    }
    return 0;
}

static int c_data_chunk(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data,
                        size_t len, void *ud)
{
    struct rpc_stream *s = ud;
    nghttp2_session_consume_connection(ng, len);
    if (stream_id != s->stream_id || s->err)
        return 0;
    int r = grpc_reader_feed(&s->in, data, len);
    if (r < 0) {
        s->err = r;
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    if (s->in.queued_bytes < IN_HIGH_WATER)
        nghttp2_session_consume_stream(ng, stream_id, len);
    else
        s->unconsumed += len;
    return 0;
}

static int c_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *ud)
{
    struct rpc_stream *s = ud;
    if (stream_id != s->stream_id)
        return 0;
    s->closed = true;
    if (!s->got_status && !s->err)
        s->err = error_code == NGHTTP2_REFUSED_STREAM ? -EAGAIN : -ECONNRESET;
    return 0;
}

static int c_frame_recv(nghttp2_session *ng, const nghttp2_frame *f, void *ud)
{
    struct rpc_stream *s = ud;
    /* The server's trailers end its side: the status is known even while
     * our side is still open (a bidi stream we have not half-closed). */
    if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
        f->hd.stream_id == s->stream_id && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
        s->remote_closed = true;
    if (f->hd.type == NGHTTP2_GOAWAY && s->stream_id > f->goaway.last_stream_id && !s->closed) {
        s->err = -ECONNRESET;
        s->closed = true;
    }
    return 0;
}

static ssize_t c_data_read(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length,
                           uint32_t *data_flags, nghttp2_data_source *source, void *ud)
{
    struct rpc_stream *s = ud;
    size_t avail = s->out.len - s->out_off;
    if (avail) {
        size_t n = MIN(avail, length);
        memcpy(buf, s->out.data + s->out_off, n);
        s->out_off += n;
        if (s->out_off == s->out.len)
            s->out.len = s->out_off = 0;
        return (ssize_t)n;
    }
    if (s->out_eof) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    s->deferred = true;
    return NGHTTP2_ERR_DEFERRED;
}

/* --- pumping ---------------------------------------------------------------- */

enum until { UNTIL_SENT, UNTIL_MSG, UNTIL_CLOSED };

static bool done(struct rpc_stream *s, enum until u)
{
    if (s->err || s->closed || s->remote_closed)
        return true;
    switch (u) {
    case UNTIL_SENT: return s->out.len - s->out_off <= OUT_HIGH_WATER / 2 || s->out.len == 0;
    case UNTIL_MSG: return s->in.head != NULL;
    case UNTIL_CLOSED: return false;
    }
    return true;
}

/* When the keepalive acts next: a PING after an idle interval, the
 * failure an interval after an unanswered PING; 0 without keepalive. */
static uint64_t keepalive_due(const struct rpc_stream *s)
{
    uint64_t iv = (uint64_t)s->cl->keepalive_ms * 1000000ULL;
    if (!iv)
        return 0;
    return (s->ping_sent ? s->ping_sent : s->last_rx) + iv;
}

static int pump(struct rpc_stream *s, enum until u)
{
    for (;;) {
        if (s->deferred && (s->out.len > s->out_off || s->out_eof)) {
            s->deferred = false;
            nghttp2_session_resume_data(s->ng, s->stream_id);
        }
        s->x.want_write = false;
        int r = nghttp2_session_send(s->ng);
        if (r != 0 && !s->err)
            s->err = -EPIPE;
        if (done(s, u))
            return s->err;
        if (remaining_ms(s->deadline) == 0) {
            s->err = -ETIMEDOUT;
            nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
            nghttp2_session_send(s->ng);
            return s->err;
        }
        uint64_t ka = keepalive_due(s);
        if (ka && !s->ping_sent && now_mono_ns() >= ka) {
            s->ping_sent = now_mono_ns();
            nghttp2_submit_ping(s->ng, NGHTTP2_FLAG_NONE, NULL);
            continue;
        }
        short ev = POLLIN;
        if (s->x.want_write)
            ev |= POLLOUT;
        if (!(s->x.ssl && SSL_pending(s->x.ssl) > 0)) {
            r = wait_fd(s->x.fd, ev, earliest(s->deadline, ka));
            if (r == -ETIMEDOUT) {
                /* Nothing arrived: the PING went unanswered for an interval
                 * (checked only after waiting, so a caller that took long
                 * between calls does not count against the peer). */
                if (s->ping_sent && now_mono_ns() >= keepalive_due(s)) {
                    s->stalled = true;
                    return s->err = -ETIMEDOUT;
                }
                continue;
            }
            if (r < 0)
                return s->err = r;
        }
        uint8_t buf[16384];
        for (int i = 0; i < 16; i++) {
            ssize_t n = s->x.ops->read(&s->x, buf, sizeof buf);
            if (n == -EAGAIN)
                break;
            if (n <= 0) {
                if (!s->closed)
                    s->err = n == 0 ? -ECONNRESET : (int)n;
                return s->err;
            }
            s->last_rx = now_mono_ns();
            s->ping_sent = 0;
            ssize_t rr = nghttp2_session_mem_recv(s->ng, buf, (size_t)n);
            if (rr < 0)
                return s->err = -EPROTO;
            if (s->closed)
                break;
        }
    }
}

static void stream_free(struct rpc_stream *s)
{
    if (!s)
        return;
    nghttp2_session_del(s->ng);
    xport_close(&s->x);
    grpc_reader_clear(&s->in);
    buf_free(&s->out);
    free(s->status_msg);
    free(s);
}

static void set_status(struct rpc_status *st, int code, char *msg)
{
    if (!st) {
        free(msg);
        return;
    }
    rpc_status_clear(st);
    st->code = code;
    st->message = msg;
}

static int transport_code(int err)
{
    if (err == -ETIMEDOUT)
        return RPC_DEADLINE_EXCEEDED;
    if (err == -EMSGSIZE)
        return RPC_RESOURCE_EXHAUSTED;
    if (err == -EKEYREJECTED)
        return RPC_UNAUTHENTICATED;
    return RPC_UNAVAILABLE;
}

int rpc_stream_open(struct rpc_client *cl, const char *path, uint64_t timeout_ms,
                    struct rpc_stream **ret, struct rpc_status *st)
{
    struct rpc_stream *s = xcalloc(1, sizeof *s);
    s->cl = cl;
    s->x.fd = -1;
    s->in.max = CLIENT_MAX_MSG;
    s->last_rx = now_mono_ns();
    s->deadline = timeout_ms ? s->last_rx + timeout_ms * 1000000ULL : 0;
    /* With keepalive, connecting and the handshake get two intervals. */
    uint64_t setup_deadline = earliest(s->deadline, cl->keepalive_ms ?
        s->last_rx + 2 * (uint64_t)cl->keepalive_ms * 1000000ULL : 0);
    int fd = -1, r;
    const char *what = "connect";
    r = dial(cl, setup_deadline, &fd);
    if (r < 0)
        goto fail;
    xport_init(&s->x, fd, cl->upath ? NULL : cl->tls, false);
    what = "TLS handshake";
    for (;;) {
        r = s->x.ops->handshake(&s->x);
        if (r != -EAGAIN)
            break;
        r = wait_fd(s->x.fd, s->x.want_write ? POLLOUT : POLLIN, setup_deadline);
        if (r < 0)
            break;
    }
    if (r < 0)
        goto fail;
    s->last_rx = now_mono_ns();

    nghttp2_session_callbacks *cb;
    nghttp2_session_callbacks_new(&cb);
    nghttp2_session_callbacks_set_send_callback(cb, c_send);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_data_chunk);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_stream_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_frame_recv);
    nghttp2_option *opt;
    nghttp2_option_new(&opt);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_http_messaging(opt, 1);
    nghttp2_session_client_new2(&s->ng, cb, s, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_settings_entry iv[] = {
        { NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20 },
        { NGHTTP2_SETTINGS_ENABLE_PUSH, 0 },
    };
    nghttp2_submit_settings(s->ng, NGHTTP2_FLAG_NONE, iv, ARRAY_SIZE(iv));
    nghttp2_session_set_local_window_size(s->ng, NGHTTP2_FLAG_NONE, 0, 16 << 20);

    char tmo[32] = "";
    if (timeout_ms)
        grpc_timeout_format(timeout_ms * 1000000ULL, tmo, sizeof tmo);
    const char *authority = cl->upath ? "localhost" : cl->host;
    nghttp2_nv nv[8];
    size_t n = 0;
#define NV(k, v) nv[n++] = (nghttp2_nv){ (uint8_t *)(k), (uint8_t *)(v), strlen(k), strlen(v), NGHTTP2_NV_FLAG_NONE }
    NV(":method", "POST");
    NV(":scheme", s->x.ssl ? "https" : "http");
    NV(":path", path);
    NV(":authority", authority);
    NV("content-type", "application/grpc");
    NV("te", "trailers");
    NV("user-agent", "amber-rpc/" AMBER_VERSION);
    if (*tmo)
        NV("grpc-timeout", tmo);
#undef NV
    nghttp2_data_provider dp = { .source.ptr = s, .read_callback = c_data_read };
    s->stream_id = nghttp2_submit_request(s->ng, NULL, nv, n, &dp, s);
    what = "request";
    if (s->stream_id < 0) {
        r = -EPROTO;
        goto fail;
    }
    r = nghttp2_session_send(s->ng) == 0 ? 0 : -EPIPE;
    if (r < 0 || s->err) {
        r = r ?: s->err;
        goto fail;
    }
    *ret = s;
    return 0;
fail:;
    int code = transport_code(r);
    if (r == -ETIMEDOUT && setup_deadline != s->deadline) {
        code = RPC_UNAVAILABLE;
        set_status(st, code, xasprintf("%s %s: no answer for %u ms (keepalive): the peer or the "
                                       "path to it is frozen", what, cl->target,
                                       2 * cl->keepalive_ms));
    } else {
        set_status(st, code, xasprintf("%s %s: %s%s%s", what, cl->target, strerror(-r),
                                       s->x.error ? ": " : "", s->x.error ? s->x.error : ""));
    }
    if (s->x.fd < 0 && fd >= 0)
        close(fd);
    stream_free(s);
    return code;
}

int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg)
{
    if (s->closed || s->err || s->remote_closed)
        return s->err ? s->err : -EPIPE;
    if (s->out_eof)
        return -EINVAL;
    int r = grpc_frame_pack(&s->out, msg, CLIENT_MAX_MSG);
    if (r < 0)
        return r;
    r = pump(s, UNTIL_SENT);
    if ((s->closed || s->remote_closed) && !s->err)
        return -EPIPE;   /* the server ended the call; its status says why */
    return r;
}

int rpc_stream_close_send(struct rpc_stream *s)
{
    s->out_eof = true;
    if (s->closed || s->err)
        return 0;
    return pump(s, UNTIL_SENT);
}

int rpc_stream_recv(struct rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **ret)
{
    int r = pump(s, UNTIL_MSG);
    struct msg *m = grpc_reader_pop(&s->in);
    if (!m)
        return r < 0 ? r : 0;
    if (s->unconsumed && s->in.queued_bytes < IN_HIGH_WATER) {
        nghttp2_session_consume_stream(s->ng, s->stream_id, s->unconsumed);
        s->unconsumed = 0;
    }
    ProtobufCMessage *d = protobuf_c_message_unpack(desc, NULL, m->len, m->data);
    free(m);
    if (!d)
        return -EBADMSG;
    *ret = d;
    return 1;
}

static int http_to_code(int http)
{
    switch (http) {
    case 400: return RPC_INTERNAL;
    case 401: return RPC_UNAUTHENTICATED;
    case 403: return RPC_PERMISSION_DENIED;
    case 404: return RPC_UNIMPLEMENTED;
    case 429: case 502: case 503: case 504: return RPC_UNAVAILABLE;
    default: return RPC_UNKNOWN;
    }
}

int rpc_stream_finish(struct rpc_stream *s, struct rpc_status *st)
{
    if (!s->closed && !s->err && !s->remote_closed) {
        s->out_eof = true;
        pump(s, UNTIL_CLOSED);
    }
    int code;
    char *msg;
    if (s->got_status) {
        code = s->status;
        msg = s->status_msg ? xstrdup(s->status_msg) : NULL;
    } else if (s->http_status && s->http_status != 200) {
        code = http_to_code(s->http_status);
        msg = xasprintf("HTTP status %d from %s", s->http_status, s->cl->target);
    } else if (s->stalled) {
        code = RPC_UNAVAILABLE;
        msg = xasprintf("%s: no answer to a keepalive ping for %u ms: the peer or the path to it "
                        "is frozen", s->cl->target, s->cl->keepalive_ms);
    } else {
        code = transport_code(s->err ? s->err : -ECONNRESET);
        msg = xasprintf("%s: %s", s->cl->target, strerror(s->err ? -s->err : ECONNRESET));
    }
    set_status(st, code, msg);
    stream_free(s);
    return code;
}

void rpc_stream_cancel(struct rpc_stream *s)
{
    if (!s)
        return;
    if (!s->closed && !s->err) {
        nghttp2_submit_rst_stream(s->ng, NGHTTP2_FLAG_NONE, s->stream_id, NGHTTP2_CANCEL);
        nghttp2_session_send(s->ng);
    }
    stream_free(s);
}

int rpc_client_call(struct rpc_client *cl, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, uint64_t timeout_ms,
                    ProtobufCMessage **ret_resp, struct rpc_status *st)
{
    struct rpc_stream *s;
    int code = rpc_stream_open(cl, path, timeout_ms, &s, st);
    if (code != RPC_OK)
        return code;
    ProtobufCMessage *resp = NULL;
    int r = rpc_stream_send(s, req);
    if (r == 0)
        r = rpc_stream_close_send(s);
    if (r == 0) {
        r = rpc_stream_recv(s, resp_desc, &resp);
        if (r == -EBADMSG) {
            rpc_stream_cancel(s);
            set_status(st, RPC_INTERNAL, xasprintf("cannot decode the reply as %s", resp_desc->name));
            return RPC_INTERNAL;
        }
    }
    code = rpc_stream_finish(s, st);
    if (code == RPC_OK && !resp) {
        set_status(st, RPC_INTERNAL, xstrdup("the server sent no reply"));
        code = RPC_INTERNAL;
    }
    if (code != RPC_OK) {
        if (resp)
            protobuf_c_message_free_unpacked(resp, NULL);
        return code;
    }
    *ret_resp = resp;
    return RPC_OK;
}
