/* peer.h: the upper half of snapd/sync/, above the primitives of sync.h:
 * the two engines, the transfers this node starts, and the subscription
 * follower. Calls go one way, down this list:
 *   peer.c         the peer port (GetChain, Pull, Push), identity, start/stop
 *   sync-api.c     the node socket's Sync service (amberctl)
 *   subscribe.c    the follower thread
 *   sync-client.c  transfers we start (pull, push, GetChain on a peer)
 *   sync-send.c, sync-recv.c   the engines
 *   sync.h         channel, trust, peer clients, chain, piece format
 * What the daemon may call (peer_start/peer_stop, peer_admin_methods) is in
 * daemon.h. */
#ifndef AMBER_SNAPD_PEER_H
#define AMBER_SNAPD_PEER_H

#include "snapd/sync/sync.h"

/* --- sync-send.c ------------------------------------------------------------- */

/* Serve one transfer of volume V to `peer` as described by the receiver's
 * HELLO, over CH: Begin/Data/End for each missing snapshot, then Done. */
int sync_send(struct amberd *d, struct sync_chan *ch, const char *peer,
              const struct cat_volume *v, const Amber__Peer__V1__Hello *hello,
              sync_progress_fn progress, void *userdata, struct sync_stats *st, struct op_err *e);

/* --- sync-recv.c ------------------------------------------------------------- */

struct recv_session;
/* Find the replica of (peer, source volume) or make it (named as_name or the
 * source's name), lock it, and fill HELLO (have + resume; strings owned by
 * the session). */
int recv_open(struct amberd *d, const char *peer, const char *src_id, const char *src_name,
              uint64_t size, const char *as_name, struct recv_session **ret, struct op_err *e);
void recv_hello(struct recv_session *rs, Amber__Peer__V1__Hello *hello);
/* Handle one message from the sender: 0 to go on, 1 after Done, or a
 * negative errno (e set). Acks go out on CH. */
int recv_handle(struct recv_session *rs, struct sync_chan *ch, const Amber__Peer__V1__SendMsg *m,
                sync_progress_fn progress, void *userdata, struct op_err *e);
const struct sync_stats *recv_stats(const struct recv_session *rs);
const char *recv_volume_name(const struct recv_session *rs);
const char *recv_volume_id(const struct recv_session *rs);
/* Unlock and free; an unfinished snapshot stays resumable. Accepts NULL. */
void recv_close(struct recv_session *rs);

/* --- sync-client.c: transfers started here ----------------------------------- */

struct sync_result {
    char *volume;                 /* the receiving side's volume name */
    char *volume_id;
    struct sync_stats st;
    uint64_t bytes_on_wire;
};
void sync_result_clear(struct sync_result *r);
int sync_pull(struct amberd *d, const char *peer, const char *volume, const char *as_name,
              const char *snapshot, sync_progress_fn progress, void *userdata,
              struct sync_result *res, struct op_err *e);
int sync_push(struct amberd *d, const char *volume, const char *peer, const char *as_name,
              const char *snapshot, sync_progress_fn progress, void *userdata,
              struct sync_result *res, struct op_err *e);
/* GetChain on a peer (caller frees with protobuf_c_message_free_unpacked). */
int sync_remote_chain(struct amberd *d, const char *peer, const char *volume,
                      Amber__Peer__V1__ChainResponse **ret, struct op_err *e);

/* --- subscribe.c ------------------------------------------------------------------ */

int subscribe_start(struct amberd *d);
void subscribe_stop(struct amberd *d);
/* Wake the follower (a subscription was added). */
void subscribe_kick(struct amberd *d);

#endif
