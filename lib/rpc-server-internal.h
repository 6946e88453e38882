/* rpc-server-internal.h: what the gRPC server's files share and nobody else
 * sees: its limits, the server, listener, connection and call objects, and
 * the functions one file calls in another. The files, by seam:
 *   rpc-server.c         the event loop, connections and their HTTP/2
 *                        sessions (nghttp2 callbacks), server start and stop
 *   rpc-server-listen.c  listeners (unix, TCP) and accepting connections
 *   rpc-server-call.c    the call API handlers use, call lifetime, workers
 * Locking and threads are described at the top of rpc-server.c. */
#ifndef AMBER_RPC_SERVER_INTERNAL_H
#define AMBER_RPC_SERVER_INTERNAL_H

#include <pthread.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>

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
    uint32_t nconns, nrefusing;     /* its connections; those over cfg.max_conns */
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
    bool over_limit;                /* past its listener's max_conns: refuses calls */
    uint64_t last_rx;               /* when bytes last arrived (keepalive) */
    uint64_t ping_sent;             /* keepalive PING unanswered since, or 0 */
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
    uint32_t njobs;                 /* calls queued for a worker */
    bool stop_requested;
    uint32_t grace_ms;
    bool stopping;
    bool workers_exit;
    uint64_t stop_deadline;
    pthread_t loop_thread;
    bool loop_running;
    pthread_cond_t workers_cond;
};

/* --- small helpers ------------------------------------------------------ */

/* Wake the loop thread (eventfd). */
static inline void wake(struct rpc_server *s)
{
    uint64_t one = 1;
    ssize_t w = write(s->wakefd, &one, sizeof one);
    (void)w;
}

/* Is this the loop thread? */
static inline bool on_loop(const struct rpc_server *s)
{
    return s->loop_running && pthread_equal(pthread_self(), s->loop_thread);
}

/* --- rpc-server-call.c: calls and workers (server lock held: *_locked) --- */

/* Decide the call's final status (first decision wins) and have the loop
 * send it. */
void call_finish_locked(struct rpc_call *c, int code, const char *msg);
/* Mark the call cancelled, wake its worker, and finish it with code. */
void call_cancel_locked(struct rpc_call *c, int code, const char *msg);
void call_unref_locked(struct rpc_call *c);
/* The stream closed: unlink the call from its connection, cancel it if its
 * status was not sent, and drop the loop's reference. */
void call_detach_locked(struct rpc_call *c);
/* Hand the call to a worker (once), starting one if none is idle. */
void dispatch_locked(struct rpc_call *c);

/* --- rpc-server.c: connections (loop thread) ---------------------------- */

/* Let nghttp2 write what it has; marks the connection dead on failure. */
int conn_send(struct conn *cn);
/* Start the HTTP/2 session (our SETTINGS) on a connection. */
int conn_start_h2(struct conn *cn);
/* Detach its calls, unlink it from the server and free it. */
void conn_close(struct conn *cn);
/* Handshake, read and feed nghttp2 after epoll reported `events`. */
void conn_io(struct conn *cn, uint32_t events);

/* --- rpc-server-listen.c: listeners (loop thread) ----------------------- */

/* Accept what the listener has pending into new connections. */
void accept_conns(struct rpc_listener *l);
void listener_free(struct rpc_listener *l);
/* Stop the listener and drop its connections. */
void listener_shutdown(struct rpc_listener *l);

#endif
