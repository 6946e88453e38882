/* sync.h: the session and channel primitives of peer sync, the bottom of
 * snapd/sync/: what the engines (sync-send.c, sync-recv.c), the transfers
 * we start (sync-client.c) and the peer port (peer.c) share. Implemented in
 * sync-session.c (channel, trust, peer clients, the snapshot chain) and
 * sync-piece.c (the piece format); they call only the catalog, daemon.h's
 * errors and rpc, never the files above them.
 *
 * Both engines run over a `sync_chan`: one bidirectional gRPC stream seen
 * as "send a message, receive a message", whichever side of the call we
 * are (server handler or client), so pull and push share all the code. */
#ifndef AMBER_SNAPD_SYNC_H
#define AMBER_SNAPD_SYNC_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "amber/rpc.h"
#include "peer.pb-c.h"
#include "snapd/daemon.h"

/* The stream is cut into pieces of this many bytes (the last may be
 * shorter); resume offsets are multiples of it. */
#define SYNC_PIECE (1u << 20)
#define SYNC_PIECE_MIN (64u << 10)
#define SYNC_PIECE_MAX (4u << 20)
/* The sender keeps at most this many unacknowledged bytes in flight. */
#define SYNC_WINDOW (32ull << 20)
/* The receiver makes its writes durable and acknowledges every this many
 * bytes (AMBER_SYNC_ACK_BYTES overrides, for tests), and at the end. */
#define SYNC_ACK_EVERY (8ull << 20)
#define SYNC_DIGEST_LEN 32

struct peer_state {
    char *cert_file, *key_file, *ca_file;
    bool ca_members;              /* peer_opts.ca_members */
    uint32_t keepalive_ms;        /* peer_opts.keepalive_ms */
    struct rpc_tls *server_tls;
    struct rpc_listener *listener;
    /* subscribe.c */
    pthread_t sub_thread;
    bool sub_running;
    bool sub_stop;
    pthread_mutex_t sub_lock;
    pthread_cond_t sub_cond;
};

/* --- the channel -------------------------------------------------------- */

struct sync_chan {
    struct rpc_call *call;        /* server side, or */
    struct rpc_stream *stream;    /* client side */
    uint64_t bytes_out, bytes_in; /* protobuf bytes + 5 framing, both ways */
};
int chan_send(struct sync_chan *ch, const ProtobufCMessage *m);
/* 1 with *ret, 0 at the end of the peer's messages, or -errno. */
int chan_recv(struct sync_chan *ch, const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret);

/* --- progress -------------------------------------------------------------- */

struct sync_stats {
    uint32_t snapshots;           /* sent or received (committed) */
    uint64_t bytes_changed;       /* stream bytes sent or received this time */
    uint64_t resumed_bytes;       /* acknowledged before, skipped */
    const char *snapshot;         /* in flight (name), or NULL */
    uint32_t index, count;
    uint64_t stream_done, stream_total;
    struct sync_chan *chan;
};
/* Called now and then during a transfer; returns 0 or a negative errno to
 * stop it (e.g. the admin client went away). */
typedef int (*sync_progress_fn)(const struct sync_stats *st, void *userdata);

/* --- sync-session.c: who a peer is, clients to peers ---------------------- */

/* The peer a TLS call comes from (by pinned fingerprint, or for a CA-signed
 * certificate by its CN naming a peer without a pin). -EPERM if none. */
/* Whether a TLS caller is a cluster member (peer_opts.ca_members): its key
 * is not pinned to a catalog peer, so the CA vouched for it, its CN is a
 * valid name, and no pinned peer has that name. 1 with *ret_name (caller
 * frees, may be NULL), else 0. */
int peer_ca_member(struct amberd *d, const struct rpc_peer *rp, char **ret_name);
int peer_of_call(struct amberd *d, struct rpc_call *call, struct cat_peer **ret);
/* A client for peer P: our identity, P's pin. The client borrows *ret_tls:
 * free the client first, then the tls. */
int peer_client(struct amberd *d, const struct cat_peer *p, struct rpc_client **ret,
                struct rpc_tls **ret_tls, struct op_err *e);
/* Map a failed call to a peer into e. */
int peer_call_error(struct op_err *e, const char *peer, int code, const struct rpc_status *st);
/* Look a peer up by name: -ENOENT (NOT_FOUND, naming `amberctl peer add`). */
int peer_find(struct amberd *d, const char *name, struct cat_peer **ret, struct op_err *e);
/* The chain of ready snapshots of a volume, oldest first. */
int sync_chain(struct amberd *d, const char *volume_id, struct cat_snapshot_list *ret);

/* --- sync-piece.c: the piece format ---------------------------------------- */

/* Check and unpack one Data message: segments inside [0, vol_size), their
 * lengths summing to raw_len <= piece_size, the zstd frame decoding to
 * exactly raw_len bytes into `out` (piece_size bytes), the SHA-256
 * matching. Pure (no I/O): the fuzz target calls it. Returns 0 or -EBADMSG
 * with a reason in *why (static). */
int sync_piece_decode(const Amber__Peer__V1__Data *m, uint32_t piece_size, uint64_t vol_size,
                      uint8_t *out, const char **why);
/* SHA-256 of a piece: (le64 offset, le64 length)* then the raw bytes. */
void sync_piece_hash(const uint64_t *offs, const uint64_t *lens, size_t n, const uint8_t *raw,
                     size_t raw_len, uint8_t out[SYNC_DIGEST_LEN]);
/* D = SHA-256(D || piece_hash). */
void sync_digest_step(uint8_t d[SYNC_DIGEST_LEN], const uint8_t piece[SYNC_DIGEST_LEN]);

#endif
