/* rpc-server-call.c: the gRPC server's calls as handlers see them: status
 * and errors (rpc_error), the call API (metadata, send, receive, sleep,
 * cancellation), a call's reference counting, and the worker threads that
 * run handlers. The loop side of a call (flushing its output into nghttp2)
 * is in rpc-server.c; the threading model is described at its top. */
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <openssl/crypto.h>

#include "rpc-server-internal.h"

static void call_mark_dirty_locked(struct rpc_call *c);

/* --- status ------------------------------------------------------------- */

/* Decide the call's final status (first decision wins) and have the loop
 * send it. Lock held. */
void call_finish_locked(struct rpc_call *c, int code, const char *msg)
{
    if (c->finished)
        return;
    c->finished = true;
    c->status = code;
    c->status_msg = msg ? xstrdup(msg) : NULL;
    call_mark_dirty_locked(c);
    pthread_cond_broadcast(&c->cond);
}

void call_cancel_locked(struct rpc_call *c, int code, const char *msg)
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

/* Queue the call for the loop to flush (takes a reference) and wake it. */
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

void call_unref_locked(struct rpc_call *c)
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

void call_detach_locked(struct rpc_call *c)
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
        s->njobs--;
        s->nrunning++;
        pthread_mutex_unlock(&s->lock);
        run_call(c);
        pthread_mutex_lock(&s->lock);
        s->nrunning--;
        call_unref_locked(c);
    }
    /* Free this thread's OpenSSL state (its error queue) now: a detached
     * thread's TLS destructors run after it returns, possibly after the
     * server counted it gone and the process exited (LeakSanitizer then
     * reported the 904-byte ERR_STATE of a worker that was mid-exit). */
    pthread_mutex_unlock(&s->lock);
    OPENSSL_thread_stop();
    pthread_mutex_lock(&s->lock);
    s->nworkers--;
    pthread_cond_broadcast(&s->workers_cond);
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

void dispatch_locked(struct rpc_call *c)
{
    struct rpc_server *s = c->srv;
    if (c->dispatched)
        return;
    c->dispatched = true;
    if (s->njobs + s->nrunning >= s->cfg.max_calls) {
        char m[96];
        snprintf(m, sizeof m, "too many calls in flight (the server's limit is %u)", s->cfg.max_calls);
        call_finish_locked(c, RPC_RESOURCE_EXHAUSTED, m);
        return;
    }
    s->njobs++;
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
