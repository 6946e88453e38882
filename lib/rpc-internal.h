/* rpc-internal.h: what the gRPC runtime's files share and nobody else sees.
 * Sections name the file that implements them. */
#ifndef AMBER_RPC_INTERNAL_H
#define AMBER_RPC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

#include "amber/rpc.h"
#include "amber/util.h"

/* --- unix socket addresses (both sides) ------------------------------------ */

#include <fcntl.h>
#include <string.h>
#include <sys/un.h>

/* Fill sa for `path`. sun_path holds 108 bytes and kubelet's volume paths
 * (a pod's API socket) are longer: then the address goes through the
 * parent directory's /proc/self/fd entry, and *dirfd (closed by the caller
 * after bind/connect) holds it open. 0, -ENAMETOOLONG, or open's error. */
static inline int rpc_unix_addr(const char *path, struct sockaddr_un *sa, int *dirfd)
{
    *dirfd = -1;
    if (strlen(path) < sizeof sa->sun_path) {
        strcpy(sa->sun_path, path);
        return 0;
    }
    const char *slash = strrchr(path, '/');
    if (!slash || strlen(slash) > 64)
        return -ENAMETOOLONG;
    char *dir = slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    if (!dir)
        return -ENOMEM;
    int fd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0)
        return -errno;
    snprintf(sa->sun_path, sizeof sa->sun_path, "/proc/self/fd/%d%s", fd, slash);
    *dirfd = fd;
    return 0;
}

/* --- rpc-frame.c: gRPC message framing, status codes, headers ---------- */

/* One complete gRPC message (without its 5-byte prefix). */
struct msg {
    struct msg *next;
    size_t len;
    uint8_t data[];
};

/* Incremental parser of the length-prefixed message stream of one call.
 * Complete messages queue up; partial ones never exceed `max`. */
struct grpc_reader {
    size_t max;
    uint8_t hdr[5];
    size_t hdr_have;
    struct msg *cur;          /* message being assembled */
    size_t cur_have;
    struct msg *head, *tail;  /* complete messages */
    size_t queued_bytes;
    size_t nqueued;
};
/* 0, -EMSGSIZE (a message over max), -EPROTONOSUPPORT (compressed flag). */
int grpc_reader_feed(struct grpc_reader *r, const uint8_t *p, size_t n);
/* The oldest complete message (caller frees), or NULL. */
struct msg *grpc_reader_pop(struct grpc_reader *r);
/* True if a message is partially received. */
bool grpc_reader_partial(const struct grpc_reader *r);
void grpc_reader_clear(struct grpc_reader *r);
/* Append prefix + packed message. -EMSGSIZE if over max. */
int grpc_frame_pack(struct buf *out, const ProtobufCMessage *m, size_t max);
/* "grpc-timeout" value ("100m", "5S", …) to ns; -EINVAL. */
int grpc_timeout_parse(const char *v, size_t len, uint64_t *ret_ns);
/* Value for a grpc-timeout header, into buf. */
void grpc_timeout_format(uint64_t ns, char *buf, size_t len);
/* Percent-encoding of grpc-message (and its decoding). */
char *grpc_message_encode(const char *s);
char *grpc_message_decode(const char *s, size_t len);

/* --- transport.c: plain and TLS byte streams behind one vtable --------- */

struct xport;
struct xport_ops {
    /* >0 bytes, 0 at EOF, -EAGAIN, or another -errno. */
    ssize_t (*read)(struct xport *x, void *buf, size_t n);
    ssize_t (*write)(struct xport *x, const void *buf, size_t n);
    /* 0 when done, -EAGAIN to be called again when the fd is ready, -errno
     * (-EKEYREJECTED for a refused certificate). */
    int (*handshake)(struct xport *x);
};
struct xport {
    const struct xport_ops *ops;
    int fd;
    SSL *ssl;
    bool want_write;          /* the last -EAGAIN waits for writability */
    bool handshake_done;
    char *error;              /* why a handshake failed, for the log */
    struct rpc_peer peer;
};
extern const struct xport_ops xport_plain_ops;
extern const struct xport_ops xport_tls_ops;
/* Set up x around a connected fd (takes it). tls NULL = plain. */
int xport_init(struct xport *x, int fd, struct rpc_tls *tls, bool server);
void xport_close(struct xport *x);
/* Fill peer credentials (unix: SO_PEERCRED; tcp: address). */
void xport_fill_peer(struct xport *x, bool is_unix);

struct rpc_tls {
    SSL_CTX *ctx;
    bool server;
    char *expect_fp;
    bool (*verify_pin)(const char *fingerprint, void *pin_data);
    void *pin_data;
    bool have_ca;
};

/* --- dial / parse targets (rpc-client.c) ------------------------------- */
/* Split a target into unix path or host:port. */
int rpc_target_parse(const char *target, char **ret_unix_path, char **ret_host, char **ret_port);

#endif
