/* rpc.h: Amber's gRPC runtime, server and client.
 *
 * HTTP/2 framing comes from libnghttp2, messages from protobuf-c, TLS 1.3
 * from OpenSSL. One server serves several listeners, each with its own
 * transport (unix socket, TCP, TCP+mutual TLS), its own method table and its
 * own user data (the identity a listener grants: the node socket, the CSI
 * socket, a pod's namespace-scoped socket, the peer port).
 *
 * Threading: one event-loop thread owns every socket and nghttp2 session.
 * Handlers run on a worker pool that grows on demand (up to a bound), so a
 * slow handler never stalls the loop or other calls. A handler talks to its
 * call through blocking functions (rpc_call_recv/send) that hand data to and
 * from the loop; unary and server-streaming handlers get their request
 * decoded already.
 *
 * Errors: functions return a negative errno. A handler returns 0 for OK, or
 * the value of rpc_error() (which records a gRPC status and message), or a
 * negative errno which is mapped to a status (rpc_code_from_errno). */
#ifndef AMBER_RPC_H
#define AMBER_RPC_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <protobuf-c/protobuf-c.h>

/* gRPC status codes. */
enum rpc_code {
    RPC_OK = 0,
    RPC_CANCELLED = 1,
    RPC_UNKNOWN = 2,
    RPC_INVALID_ARGUMENT = 3,
    RPC_DEADLINE_EXCEEDED = 4,
    RPC_NOT_FOUND = 5,
    RPC_ALREADY_EXISTS = 6,
    RPC_PERMISSION_DENIED = 7,
    RPC_RESOURCE_EXHAUSTED = 8,
    RPC_FAILED_PRECONDITION = 9,
    RPC_ABORTED = 10,
    RPC_OUT_OF_RANGE = 11,
    RPC_UNIMPLEMENTED = 12,
    RPC_INTERNAL = 13,
    RPC_UNAVAILABLE = 14,
    RPC_DATA_LOSS = 15,
    RPC_UNAUTHENTICATED = 16,
};

/* "NOT_FOUND" etc., or "UNKNOWN" for codes out of range. */
const char *rpc_code_name(int code);
/* A negative errno to the status a client should see (ENOENT → NOT_FOUND,
 * EEXIST → ALREADY_EXISTS, ENOSPC → RESOURCE_EXHAUSTED, EBUSY → ABORTED, …). */
int rpc_code_from_errno(int negerrno);
/* The reverse, for clients that speak errno (NOT_FOUND → -ENOENT, …). */
int rpc_errno_from_code(int code);

/* A status as a client sees it. `message` is owned (free with
 * rpc_status_clear). */
struct rpc_status {
    int code;
    char *message;
};
void rpc_status_clear(struct rpc_status *st);

/* Who is calling. */
enum rpc_peer_kind { RPC_PEER_UNIX, RPC_PEER_TCP, RPC_PEER_TLS };
struct rpc_peer {
    enum rpc_peer_kind kind;
    pid_t pid;                 /* unix: SO_PEERCRED */
    uid_t uid;
    gid_t gid;
    char addr[64];             /* tcp/tls: "1.2.3.4:5678" */
    char fingerprint[80];      /* tls: "sha256:<hex of the SPKI DER>" */
    char subject[256];         /* tls: the certificate's subject, one line */
};

struct rpc_server;
struct rpc_listener;
struct rpc_call;

enum rpc_kind { RPC_UNARY, RPC_SERVER_STREAM, RPC_CLIENT_STREAM, RPC_BIDI_STREAM };

/* A handler. For RPC_UNARY and RPC_SERVER_STREAM `req` is the decoded
 * request (owned by the runtime, valid until the handler returns); for the
 * client- and bidi-streaming kinds it is NULL and the handler reads with
 * rpc_call_recv. Unary handlers reply with exactly one rpc_call_send. */
typedef int (*rpc_handler_fn)(struct rpc_call *call, const ProtobufCMessage *req);

struct rpc_method {
    const char *path;                         /* "/amber.v1.Amber/GetInfo" */
    const ProtobufCMessageDescriptor *input;
    const ProtobufCMessageDescriptor *output;
    enum rpc_kind kind;
    rpc_handler_fn handler;
};

/* Limits on everything a client can make the server allocate. Zero fields
 * take the defaults shown. */
struct rpc_server_config {
    size_t max_message;         /* 4 MiB: larger → RESOURCE_EXHAUSTED */
    uint32_t max_streams;       /* 100 concurrent streams a connection */
    uint32_t max_conns;         /* 256 connections in all */
    uint32_t max_workers;       /* 64 handler threads; beyond, calls queue */
    uint32_t max_calls;         /* 1024 calls queued or running; beyond →
                                 * RESOURCE_EXHAUSTED */
    uint32_t handshake_ms;      /* 10000: preface/TLS must finish by then */
    void *userdata;             /* rpc_call_server_data() */
};

/* TLS identity and trust (used by server listeners and clients).
 * Trust: a peer certificate is accepted when it chains to `ca_file`, or when
 * `verify_pin(fingerprint, pin_data)` returns true (pinned, self-signed
 * allowed), and in both cases only inside its validity period. verify_pin
 * is asked only when the CA does not vouch for the certificate, so its
 * false is a refusal. A client may instead give one `expect_fingerprint`
 * for the server. */
struct rpc_tls_config {
    const char *cert_file;
    const char *key_file;
    const char *ca_file;                       /* optional */
    bool (*verify_pin)(const char *fingerprint, void *pin_data);
    void *pin_data;
    const char *expect_fingerprint;            /* client side, optional */
};
struct rpc_tls;
int rpc_tls_new(const struct rpc_tls_config *cfg, bool server, struct rpc_tls **ret,
                char **ret_err);
void rpc_tls_free(struct rpc_tls *tls);
/* "sha256:<hex>" of the certificate file's public key. */
int rpc_tls_cert_fingerprint(const char *cert_file, char *out, size_t len);
/* Make a P-256 key (mode 0600) and a self-signed certificate valid for
 * `days` with subject CN=`cn`, unless both files exist already. */
int rpc_tls_make_identity(const char *cert_file, const char *key_file, const char *cn,
                          int days);

/* --- server ------------------------------------------------------------ */

int rpc_server_new(const struct rpc_server_config *cfg, struct rpc_server **ret);
/* Runs the event loop in the calling thread until rpc_server_stop. */
int rpc_server_run(struct rpc_server *s);
/* Async-signal-safe and thread-safe: stop accepting, send GOAWAY, let
 * in-flight calls finish for up to grace_ms, then cancel them and return
 * from rpc_server_run. */
void rpc_server_stop(struct rpc_server *s, uint32_t grace_ms);
/* After rpc_server_run returned. Accepts NULL. */
void rpc_server_free(struct rpc_server *s);

struct rpc_listener_config {
    const struct rpc_method *methods;
    size_t n_methods;
    void *userdata;             /* rpc_call_listener_data() */
    mode_t mode;                /* unix socket file mode, default 0600 */
    gid_t gid;                  /* unix socket group if mode gives group access; 0 keeps */
    struct rpc_tls *tls;        /* tcp: NULL = plaintext */
    uint32_t max_conns;         /* this listener's connections at once (0: only
                                 * the server's bound); the calls of one past
                                 * it get RESOURCE_EXHAUSTED */
    uint32_t keepalive_ms;      /* a connection that sent
                                 * nothing this long is pinged (HTTP/2 PING),
                                 * and closed (its calls cancelled) when
                                 * silent as long again; 0: never */
};

/* Listen on a unix socket at `path` (a stale socket file is replaced; a
 * live one gives -EADDRINUSE). Thread-safe: may be called while the loop
 * runs (e.g. from a handler). The returned handle stays valid until
 * rpc_listener_close. */
int rpc_server_listen_unix(struct rpc_server *s, const char *path,
                           const struct rpc_listener_config *cfg, struct rpc_listener **ret);
/* Listen on TCP "HOST:PORT" ("127.0.0.1:0" picks a free port, see
 * rpc_listener_port). */
int rpc_server_listen_tcp(struct rpc_server *s, const char *hostport,
                          const struct rpc_listener_config *cfg, struct rpc_listener **ret);
int rpc_listener_port(const struct rpc_listener *l);
/* Stop listening, unlink the unix socket, and close the connections it
 * accepted (their calls are cancelled). Thread-safe; waits for the loop. */
void rpc_listener_close(struct rpc_listener *l);

/* --- inside a handler -------------------------------------------------- */

void *rpc_call_server_data(const struct rpc_call *c);
void *rpc_call_listener_data(const struct rpc_call *c);
const struct rpc_peer *rpc_call_peer(const struct rpc_call *c);
const char *rpc_call_method(const struct rpc_call *c);
/* A request header ("x-amber-foo"), or NULL. */
const char *rpc_call_metadata(const struct rpc_call *c, const char *key);
/* Monotonic ns by which the client wants an answer; 0 = none. */
uint64_t rpc_call_deadline(const struct rpc_call *c);
/* True once the client cancelled, the deadline passed or the server stops. */
bool rpc_call_cancelled(const struct rpc_call *c);
/* Wait up to timeout_ms (or until cancelled); returns -ECANCELED when the
 * call was cancelled, 0 when the time passed. For handlers that poll. */
int rpc_call_sleep(struct rpc_call *c, uint64_t timeout_ms);

/* Send one message. Blocks while more than a bounded amount is queued for
 * the client (backpressure). -ECANCELED once the call is gone. */
int rpc_call_send(struct rpc_call *c, const ProtobufCMessage *msg);
/* Receive the next message (streaming kinds): 1 with *ret set (free with
 * protobuf_c_message_free_unpacked), 0 at the end of the client's stream,
 * -ECANCELED, -EBADMSG for a message that does not decode. */
int rpc_call_recv(struct rpc_call *c, ProtobufCMessage **ret);
/* Record the status to send and return a negative value for the handler to
 * return: `return rpc_error(call, RPC_NOT_FOUND, "volume %s not found", n);`
 * The status goes out after the handler returns (its cleanup done); the
 * first recorded status wins. */
int rpc_error(struct rpc_call *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* --- client ------------------------------------------------------------ */

/* A target: "unix:///path", "unix:path", "/path" (unix), "tcp://host:port" or
 * "host:port". With `tls`, TCP targets use TLS 1.3 (ALPN h2). The client
 * keeps no connection between calls; it is safe to share between threads. */
struct rpc_client;
int rpc_client_new(const char *target, struct rpc_tls *tls, struct rpc_client **ret);
void rpc_client_free(struct rpc_client *cl);
const char *rpc_client_target(const struct rpc_client *cl);
/* Keepalive for the client's calls (0, the default: none): a call whose
 * connection received nothing for idle_ms sends an HTTP/2 PING, and fails
 * UNAVAILABLE ("no answer to a keepalive ping") when nothing arrives for
 * another idle_ms; connecting and the TLS handshake get 2 * idle_ms. For
 * peers that may vanish without closing (a stopped process, a frozen
 * proxy). Set before the first call. */
void rpc_client_set_keepalive(struct rpc_client *cl, uint32_t idle_ms);
/* The server's TLS fingerprint seen on the last connection, or "". */

/* A unary call. Returns the gRPC status code (RPC_OK = 0); transport
 * failures come back as RPC_UNAVAILABLE or RPC_DEADLINE_EXCEEDED. On
 * RPC_OK *ret_resp is the decoded reply (free with
 * protobuf_c_message_free_unpacked). `st`, if given, receives the code and
 * message (cleared first). timeout_ms = 0: no deadline. */
int rpc_client_call(struct rpc_client *cl, const char *path, const ProtobufCMessage *req,
                    const ProtobufCMessageDescriptor *resp_desc, uint64_t timeout_ms,
                    ProtobufCMessage **ret_resp, struct rpc_status *st);

/* Streaming calls: open, then any mix of send/recv, then finish. */
struct rpc_stream;
int rpc_stream_open(struct rpc_client *cl, const char *path, uint64_t timeout_ms,
                    struct rpc_stream **ret, struct rpc_status *st);
/* Extra request metadata must be added before the first send: */
int rpc_stream_send(struct rpc_stream *s, const ProtobufCMessage *msg);
/* Half-close: no more messages from us. */
int rpc_stream_close_send(struct rpc_stream *s);
/* 1 with *ret, 0 at the end of the server's stream (then call
 * rpc_stream_finish for the status), or a negative errno. */
int rpc_stream_recv(struct rpc_stream *s, const ProtobufCMessageDescriptor *desc,
                    ProtobufCMessage **ret);
/* Wait for the status (cancelling the stream if the server has not ended
 * it), free the stream, return the code. */
int rpc_stream_finish(struct rpc_stream *s, struct rpc_status *st);
/* Cancel (RST_STREAM) and free. Accepts NULL. */
void rpc_stream_cancel(struct rpc_stream *s);

#endif
