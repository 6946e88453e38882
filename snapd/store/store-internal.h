/* store-internal.h: what the store's files share (the state behind
 * d->store, pins, the crash points, the exact diff). Public contract:
 * store.h. */
#ifndef AMBER_SNAPD_STORE_INTERNAL_H
#define AMBER_SNAPD_STORE_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "amber/objstore.h"
#include "snapd/store/store.h"

struct store_sweep;

struct store_pin {
    struct store_pin *next;
    char *id;
    unsigned count;
};

struct store_blocked {
    struct store_blocked *next;
    char *snapshot_id;          /* logged once while it waits for room */
};

struct store_state {
    struct amberd *d;
    struct store_opts opts;
    char *url;
    char *passphrase;
    /* One handle per user: a handle serves one operation at a time. */
    struct objstore *mover_repo;    /* the mover's exports and gc */
    struct objstore *serve_repo;    /* hydration, manifest deletes */
    struct objstore *read_repo;     /* objstore_read for readers (format 2; thread-safe) */
    pthread_mutex_t serve_lock;     /* serve_repo and one hydration at a time */
    /* Held while exact extents are computed and recorded (mover) or merged
     * (snapshot delete), so a merge never races a recording. */
    pthread_mutex_t ext_lock;

    pthread_mutex_t lock;           /* everything below */
    pthread_cond_t cond;            /* the mover's wake-ups */
    pthread_cond_t changed;         /* pins, drops, passes: waiters */
    pthread_t thread;
    bool started, stop;
    atomic_bool cancel;             /* set at stop: long exports and restores end */
    uint64_t kicks;                 /* store_kick count */
    uint64_t idle_kicks;            /* `kicks` seen at the start of the last idle pass */
    bool idle;
    uint64_t retry_at_ns;           /* monotonic; 0: no timed retry */
    struct store_pin *pins;
    char *dropping;                 /* the snapshot being dropped, or NULL */
    struct store_blocked *blocked;
    uint64_t nblocked;
    uint64_t moved, dropped, hydrated, defrag_steps, defrag_bytes, deleted_manifests;
    uint64_t defrag_cursor_vol;     /* round robin over volumes */
    /* The gate (store_create_begin/end): creates open now; the mover waits
     * on `gate` at its step boundaries while it is > 0. */
    unsigned creating;
    pthread_cond_t gate;
    bool gate_waiting;              /* the mover is paused at the gate */
    bool behind;                    /* the backlog is longer than STORE_GATE_BEHIND */
    bool test_gate_hold;            /* AMBER_TEST_GATE_HOLD: a create waits for the mover to pause */
    uint64_t gate_pauses;
    uint64_t defrag_next_ns;        /* monotonic: the next defragmenter step is due */
    bool defrag_busy;               /* the last step did work */
    uint64_t defrag_sweeps;
    uint64_t drops_paced;           /* passes that left a drop for the cleaner */
    struct store_sweep *sweeps;     /* the mover's: per volume, the full sweep */
    bool sweep_pending;             /* a volume's sweep is due or running */
    bool drop_waiting;              /* a drop waits for the cleaner */
    uint64_t last_drop_id, last_drop_ns;    /* the mover's last drop, until the cleaner freed it */
    bool settled;                   /* the last idle pass left nothing at all */
    unsigned exp;                   /* STORE_EXP_* (bench A/B switches, AMBER_STORE_EXP) */
    /* Hydration since start (store-hydrate.c): bytes written and punched
     * into brought-back images, the union sizes of those that rewrote only
     * the union, and how many restored the whole image instead. */
    uint64_t hydrate_written, hydrate_union, hydrate_full;
};

#define STORE_EXP_NOGATE       1u
#define STORE_EXP_NOINTERLEAVE 2u
#define STORE_EXP_NODROPPACE   4u
#define STORE_EXP_NOSWEEP      32u
#define STORE_EXP_NOMOVESYNC   64u

/* The mover's side of the gate: wait while a snapshot create is open (at
 * most STORE_GATE_MAX_NS at a time, so a stream of creates cannot starve
 * the mover for good). Returns true if it paused. */
#define STORE_GATE_MAX_NS (2000ull * 1000000ull)
#define STORE_GATE_BEHIND 8
bool store_gate(struct store_state *st);

static inline struct store_state *S(struct amberd *d) { return d->store; }

/* Kill at crash point NAME: AMBER_CRASH_AT=NAME, or NAME#N for its N-th
 * pass (e.g. store-move:done#3: after the third snapshot moved). */
void store_crashpoint(const char *name);

/* Pins (store.c). store_pin waits while the mover is dropping ID. */
void store_pin(struct store_state *st, const char *id);
void store_unpin(struct store_state *st, const char *id);
/* Whether ID is pinned; and mark it as being dropped (false if pinned). */
bool store_begin_drop(struct store_state *st, const char *id);
void store_end_drop(struct store_state *st);

/* The exact changed blocks (4 KiB) of snapshot TO against its parent FROM
 * (NULL: its non-zero blocks), both resident, of volume VOL: the pool's
 * diff, then a byte comparison of each reported range (store-move.c). */
int store_exact_diff(struct amberd *d, const char *vol, const char *from, const char *to,
                     struct range_list *out);

/* One pass of the mover (store-move.c): move what it can, drop what it may.
 * Returns the number of things done (0: idle), with *ret_retry_ns set to a
 * monotonic time to try again when something waits for room. */
int store_pass(struct store_state *st, uint64_t *ret_retry_ns);
/* One defragmenter step (store-defrag.c): 1 if it did work; the mover
 * then comes back after STORE_DEFRAG_PAUSE_NS (the throttle), or sooner
 * when kicked for real work. */
#define STORE_DEFRAG_PAUSE_NS (50ull * 1000000ull)
/* IDLE: the mover had nothing else to do (then a volume whose snapshots
 * stopped STORE_SWEEP_QUIET_NS ago gets its full sweep); *retry: when a
 * sweep will be due. */
#define STORE_SWEEP_QUIET_NS (2000ull * 1000000ull)
int store_defrag_step(struct store_state *st, bool idle, uint64_t *retry);
void store_sweeps_free(struct store_state *st);

/* Hydration (store-hydrate.c): what writing one brought-back image did. */
struct store_hydrate_stats {
    const char *method;         /* "union", "resume" (whole image, on a base) or "restore" */
    uint64_t union_bytes;       /* union: the bytes S and the base may differ in */
    uint64_t bytes_written;     /* data written */
    uint64_t bytes_punched;     /* union: zero ranges punched (holes in S) */
    uint64_t bytes_read;        /* from the store */
    uint64_t chunks_kept;       /* resume: pieces already right */
    uint64_t read_ns, write_ns; /* union: time in reads and in writes, summed over threads */
    uint64_t sync_ns;           /* the caller's fsync */
};
/* The union of the recorded exact extents between snapshot S and resident
 * snapshot BASE of its volume (the snapshots after the older one up to the
 * newer), clipped to S's size: where their contents may differ. -ENOENT
 * when the chain between them is not linear or lacks extents somewhere. */
int store_hydrate_union(struct amberd *d, const struct cat_snapshot *s, const char *base,
                        struct range_list *out);
/* Write S's content (manifest MANIFEST of the local store) in the ranges U
 * into FD: data runs written, zero runs punched. Adds to *RET. */
int store_hydrate_ranges(struct store_state *st, const char *manifest, int fd,
                         const struct range_list *u, struct store_hydrate_stats *ret);
/* Make FD, a fresh image (BASE NULL) or a writable copy of resident
 * snapshot BASE, hold S's content: the union only when the chain allows,
 * else objstore_restore of the whole manifest (in resume mode on a base). */
int store_hydrate_write(struct amberd *d, const struct cat_snapshot *s, const char *manifest,
                        const char *base, int fd, struct store_hydrate_stats *ret);

#endif
