/* store.c: the snapshot store's life: the local repository and its key,
 * the mover thread (woken by a condition variable when a snapshot is made
 * or something is released; a timed retry only while a snapshot waits for
 * room in the pool), pins, crash points, status, and start-up recovery.
 *
 * The local repository is an ordinary objstore repository (fs backend) in
 * POOL/.amber/store; its passphrase is 32 random bytes (hex) kept beside
 * it in POOL/.amber/store.key (0600). Whoever can read the pool can read
 * the volumes anyway: the key protects nothing more there, it only makes
 * the store the same format as any remote repository, so an export or a
 * peer can move its chunks as they are. */
#include <fcntl.h>
#include <string.h>
#include <signal.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

/* Repository format 1 stores whole chunks: a scattered 4 KiB change costs
 * a chunk. The smallest it allows keeps that amplification at 16x (1 MiB:
 * 256x) at the price of bigger manifests (32 bytes a chunk: 512 KiB for a
 * 1 GiB volume); format 2 (exact extents in packs) makes this moot. */
#if OBJSTORE_FORMAT_VERSION >= 2
#define STORE_CHUNK 0
#else
#define STORE_CHUNK OBJSTORE_CHUNK_MIN
#endif

/* --- crash points ------------------------------------------------------------ */

void store_crashpoint(const char *name)
{
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    static struct { char name[64]; unsigned n; } seen[16];
    const char *at = getenv("AMBER_CRASH_AT");
    if (!at || strncmp(at, name, strlen(name)) != 0)
        return;
    const char *rest = at + strlen(name);
    if (*rest == 0) {
        crashpoint(name);
        return;
    }
    uint64_t want;
    if (*rest != '#' || parse_u64(rest + 1, &want) < 0)
        return;
    pthread_mutex_lock(&lock);
    unsigned n = 0;
    for (size_t i = 0; i < ARRAY_SIZE(seen); i++) {
        if (seen[i].name[0] && strcmp(seen[i].name, name) != 0)
            continue;
        if (!seen[i].name[0])
            snprintf(seen[i].name, sizeof seen[i].name, "%s", name);
        n = ++seen[i].n;
        break;
    }
    pthread_mutex_unlock(&lock);
    if (n == want) {
        log_warn("crash", "AMBER_CRASH_AT=%s: killing myself", at);
        raise(SIGKILL);
    }
}

/* --- pins ---------------------------------------------------------------------- */

void store_pin(struct store_state *st, const char *id)
{
    pthread_mutex_lock(&st->lock);
    while (st->dropping && strcmp(st->dropping, id) == 0)
        pthread_cond_wait(&st->changed, &st->lock);
    struct store_pin *p = st->pins;
    while (p && strcmp(p->id, id) != 0)
        p = p->next;
    if (!p) {
        p = xcalloc(1, sizeof *p);
        p->id = xstrdup(id);
        p->next = st->pins;
        st->pins = p;
    }
    p->count++;
    pthread_mutex_unlock(&st->lock);
}

void store_unpin(struct store_state *st, const char *id)
{
    pthread_mutex_lock(&st->lock);
    for (struct store_pin **pp = &st->pins; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, id) == 0) {
            struct store_pin *p = *pp;
            if (--p->count == 0) {
                *pp = p->next;
                free(p->id);
                free(p);
            }
            break;
        }
    pthread_mutex_unlock(&st->lock);
}

bool store_begin_drop(struct store_state *st, const char *id)
{
    pthread_mutex_lock(&st->lock);
    bool pinned = false;
    for (struct store_pin *p = st->pins; p && !pinned; p = p->next)
        pinned = strcmp(p->id, id) == 0;
    if (!pinned) {
        free(st->dropping);
        st->dropping = xstrdup(id);
    }
    pthread_mutex_unlock(&st->lock);
    return !pinned;
}

void store_end_drop(struct store_state *st)
{
    pthread_mutex_lock(&st->lock);
    free(st->dropping);
    st->dropping = NULL;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
}

/* --- the gate: snapshot creates first ------------------------------------------ */

void store_create_begin(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st || !st->started)
        return;
    pthread_mutex_lock(&st->lock);
    st->creating++;
    if (st->test_gate_hold) {
        /* Tests: make the mover reach the gate while this create is open
         * (it pauses at its next step boundary; kicked, it is at one). */
        st->kicks++;
        st->idle = false;
        pthread_cond_signal(&st->cond);
        uint64_t end = now_mono_ns() + 10000ull * 1000000ull;   /* a broken gate: give up */
        while (!st->gate_waiting && now_mono_ns() < end) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_cond_timedwait(&st->changed, &st->lock, &ts);
        }
    }
    pthread_mutex_unlock(&st->lock);
}

void store_create_end(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st || !st->started)
        return;
    pthread_mutex_lock(&st->lock);
    if (st->creating > 0 && --st->creating == 0)
        pthread_cond_broadcast(&st->gate);
    pthread_mutex_unlock(&st->lock);
}

bool store_gate(struct store_state *st)
{
    if (st->exp & STORE_EXP_NOGATE)
        return false;
    pthread_mutex_lock(&st->lock);
    /* Behind (a backlog of more than STORE_GATE_BEHIND snapshots): the
     * mover goes first, or on a busy machine it would starve behind the
     * creates and the unstored snapshots, all resident, would cost the live
     * volume far more than its work costs a create. */
    bool paused = st->creating > 0 && !st->stop && !st->behind;
    if (paused) {
        st->gate_pauses++;
        st->gate_waiting = true;
        pthread_cond_broadcast(&st->changed);
        uint64_t end = now_mono_ns() + STORE_GATE_MAX_NS;
        struct timespec ts = { .tv_sec = (time_t)(end / 1000000000ull),
                               .tv_nsec = (long)(end % 1000000000ull) };
        while (st->creating > 0 && !st->stop &&
               pthread_cond_timedwait(&st->gate, &st->lock, &ts) != ETIMEDOUT)
            ;
        st->gate_waiting = false;
    }
    pthread_mutex_unlock(&st->lock);
    if (paused)
        store_crashpoint("store-gate:paused");
    return paused;
}

/* --- the mover thread ------------------------------------------------------------ */

void store_kick(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st || !st->started)
        return;
    pthread_mutex_lock(&st->lock);
    st->kicks++;
    st->idle = false;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

/* One defragmenter step if one is due: after a pass that did nothing, or
 * (interleaved) every STORE_DEFRAG_PAUSE_NS between the mover's moves, so
 * a mover that never runs out of work does not leave the live image to
 * fragment. Sets *retry to when the next one is due. */
static void maybe_defrag(struct store_state *st, int did, uint64_t *retry)
{
    if (!st->opts.defrag)
        return;
    uint64_t now = now_mono_ns();
    if (did > 0 && (st->exp & STORE_EXP_NOINTERLEAVE))
        return;
    if (now < st->defrag_next_ns) {
        if (did == 0 && (st->defrag_busy || st->sweep_pending) && (!*retry || st->defrag_next_ns < *retry))
            *retry = st->defrag_next_ns;
        return;
    }
    store_gate(st);
    st->defrag_busy = store_defrag_step(st, did == 0 && !st->drop_waiting, retry) > 0;
    if (st->defrag_busy) {
        st->defrag_next_ns = now_mono_ns() + STORE_DEFRAG_PAUSE_NS;
        if (did == 0 && (!*retry || st->defrag_next_ns < *retry))
            *retry = st->defrag_next_ns;
    }
}

static void *mover_main(void *arg)
{
    struct store_state *st = arg;
    pthread_setname_np(pthread_self(), "amber-mover");
    pthread_mutex_lock(&st->lock);
    while (!st->stop) {
        uint64_t kicks = st->kicks;
        pthread_mutex_unlock(&st->lock);
        uint64_t retry = 0;
        store_gate(st);
        int did = store_pass(st, &retry);
        maybe_defrag(st, did, &retry);
        pthread_mutex_lock(&st->lock);
        st->retry_at_ns = retry;
        if (did > 0)
            continue;
        if (st->drop_waiting && retry && !st->stop) {
            /* A drop waits for the cleaner: not idle; look again soon. */
            struct timespec ts = { .tv_sec = (time_t)(retry / 1000000000ull),
                                   .tv_nsec = (long)(retry % 1000000000ull) };
            pthread_cond_timedwait(&st->cond, &st->lock, &ts);
            continue;
        }
        /* Nothing could be done: idle until kicked (or the retry is due).
         * Settled: not even a defragmenter step, sweep or paced drop. */
        st->idle = true;
        st->settled = !st->defrag_busy && !st->sweep_pending && !st->drop_waiting;
        st->idle_kicks = kicks;
        pthread_cond_broadcast(&st->changed);
        if (st->kicks != kicks || st->stop)
            continue;
        if (st->retry_at_ns) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            uint64_t now = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
            uint64_t at = st->retry_at_ns > now ? st->retry_at_ns : now;
            ts.tv_sec = (time_t)(at / 1000000000ull);
            ts.tv_nsec = (long)(at % 1000000000ull);
            pthread_cond_timedwait(&st->cond, &st->lock, &ts);
            st->kicks++;    /* the retry counts as a kick */
        } else {
            pthread_cond_wait(&st->cond, &st->lock);
        }
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

/* --- the repository -------------------------------------------------------------- */

static int load_key(const char *pool_dir, char **ret)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", pool_dir, STORE_KEY_RELPATH);
    char *key = NULL;
    size_t len = 0;
    int r = read_file_all(path, 4096, &key, &len);
    if (r == 0) {
        while (len > 0 && (key[len - 1] == '\n' || key[len - 1] == ' '))
            key[--len] = 0;
        if (len < 16) {
            free(key);
            return -EBADMSG;
        }
        *ret = key;
        return 0;
    }
    if (r != -ENOENT)
        return r;
    uint8_t raw[32];
    if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
        return -EIO;
    char hex[2 * sizeof raw + 2];
    for (size_t i = 0; i < sizeof raw; i++)
        snprintf(hex + 2 * i, 3, "%02x", raw[i]);
    strcat(hex, "\n");
    r = write_file_atomic(path, hex, strlen(hex), 0600);
    if (r < 0)
        return r;
    hex[2 * sizeof raw] = 0;
    *ret = xstrdup(hex);
    return 0;
}

static int open_repo(struct store_state *st, struct objstore **ret)
{
    _cleanup_free_ char *err = NULL;
    int r = objstore_open(st->url, st->passphrase, ret, &err);
    if (r < 0)
        log_error_errno(r, "store", "cannot open the local store %s: %s", st->url,
                        err ? err : strerror(-r));
    return r;
}

static void state_free(struct store_state *st)
{
    if (!st)
        return;
    objstore_close(st->mover_repo);
    objstore_close(st->serve_repo);
    objstore_close(st->read_repo);
    while (st->pins) {
        struct store_pin *p = st->pins;
        st->pins = p->next;
        free(p->id);
        free(p);
    }
    while (st->blocked) {
        struct store_blocked *b = st->blocked;
        st->blocked = b->next;
        free(b->snapshot_id);
        free(b);
    }
    free(st->dropping);
    store_sweeps_free(st);
    free(st->url);
    if (st->passphrase)
        explicit_bzero(st->passphrase, strlen(st->passphrase));
    free(st->passphrase);
    pthread_mutex_destroy(&st->lock);
    pthread_mutex_destroy(&st->serve_lock);
    pthread_mutex_destroy(&st->ext_lock);
    pthread_cond_destroy(&st->cond);
    pthread_cond_destroy(&st->changed);
    pthread_cond_destroy(&st->gate);
    free(st);
}

int store_start(struct amberd *d, const struct store_opts *o)
{
    struct store_state *st = xcalloc(1, sizeof *st);
    atomic_init(&st->cancel, false);
    st->d = d;
    st->opts = *o;
    if (st->opts.resident == 0)
        st->opts.resident = STORE_RESIDENT_DEFAULT;
    if (st->opts.defrag_threshold == 0)
        st->opts.defrag_threshold = STORE_DEFRAG_THRESHOLD_DEFAULT;
    pthread_mutex_init(&st->lock, NULL);
    pthread_mutex_init(&st->serve_lock, NULL);
    pthread_mutex_init(&st->ext_lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cond, &ca);
    pthread_cond_init(&st->gate, &ca);
    pthread_condattr_destroy(&ca);
    st->test_gate_hold = getenv("AMBER_TEST_GATE_HOLD") != NULL;
    const char *exp = getenv("AMBER_STORE_EXP");
    if (exp) {
        static const struct { const char *name; unsigned bit; } names[] = {
            { "nogate", STORE_EXP_NOGATE }, { "nointerleave", STORE_EXP_NOINTERLEAVE },
            { "nodroppace", STORE_EXP_NODROPPACE }, { "nosweep", STORE_EXP_NOSWEEP },
            { "nomovesync", STORE_EXP_NOMOVESYNC },
        };
        for (size_t i = 0; i < ARRAY_SIZE(names); i++)
            if (strstr(exp, names[i].name))
                st->exp |= names[i].bit;
        log_info("store", "AMBER_STORE_EXP=%s (bench switches)", exp);
    }
    pthread_cond_init(&st->changed, NULL);
    _cleanup_free_ char *dir = xasprintf("%s/%s", d->pool_dir, STORE_RELPATH);
    st->url = xasprintf("file://%s", dir);

    struct stat sb;
    bool exists = stat(dir, &sb) == 0;
    if (o->off && !exists) {
        d->store = st;    /* nothing stored: everything is resident */
        log_info("store", "snapshot store off (--store-off): every snapshot stays a subvolume");
        return 0;
    }
    int r = load_key(d->pool_dir, &st->passphrase);
    if (r < 0) {
        log_error_errno(r, "store", "cannot read or make the store key %s/%s", d->pool_dir,
                        STORE_KEY_RELPATH);
        state_free(st);
        return r;
    }
    if (!exists) {
        _cleanup_free_ char *err = NULL;
        r = objstore_init(st->url, st->passphrase, STORE_CHUNK, &err);
        if (r < 0 && r != -EEXIST) {
            log_error_errno(r, "store", "cannot make the local store %s: %s", st->url,
                            err ? err : strerror(-r));
            state_free(st);
            return r;
        }
        log_info("store", "made the local snapshot store %s", dir);
    }
    if ((r = open_repo(st, &st->mover_repo)) < 0 || (r = open_repo(st, &st->serve_repo)) < 0 ||
        (OBJSTORE_FORMAT_VERSION >= 2 && (r = open_repo(st, &st->read_repo)) < 0)) {
        state_free(st);
        return r;
    }
    d->store = st;
    if (o->off)
        log_info("store", "snapshot store off (--store-off): no snapshot is moved; stored ones are "
                 "still served");
    return 0;
}

int store_run(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st)
        return 0;
    store_reconcile(d);
    if (st->opts.off || !st->mover_repo)
        return 0;
    int r = -pthread_create(&st->thread, NULL, mover_main, st);
    if (r < 0)
        return log_error_errno(r, "store", "cannot start the mover");
    st->started = true;
    log_info("store", "snapshot store %s: keeping the %u newest snapshots of each volume resident%s",
             st->url, st->opts.resident, st->opts.defrag ? ", defragmenting live images" : "");
    return 0;
}

void store_interrupt(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st || !st->started)
        return;
    pthread_mutex_lock(&st->lock);
    st->stop = true;
    pthread_cond_broadcast(&st->cond);
    pthread_cond_broadcast(&st->gate);
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
}

void store_stop(struct amberd *d)
{
    struct store_state *st = S(d);
    if (!st)
        return;
    atomic_store(&st->cancel, true);
    if (st->started) {
        pthread_mutex_lock(&st->lock);
        st->stop = true;
        pthread_cond_broadcast(&st->cond);
        pthread_cond_broadcast(&st->gate);
        pthread_cond_broadcast(&st->changed);    /* status waiters end too */
        pthread_mutex_unlock(&st->lock);
        pthread_join(st->thread, NULL);
    }
    d->store = NULL;
    state_free(st);
}

/* --- status ---------------------------------------------------------------------- */

int store_status_settle(struct amberd *d, bool wait, bool settle, uint64_t timeout_ms,
                        struct store_status *ret)
{
    struct store_state *st = S(d);
    memset(ret, 0, sizeof *ret);
    if (st && st->started && wait) {
        pthread_mutex_lock(&st->lock);
        st->kicks++;
        st->idle = false;
        uint64_t want = st->kicks;
        pthread_cond_signal(&st->cond);
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
                      (timeout_ms ? timeout_ms : 60000) * 1000000ull;
        ts.tv_sec = (time_t)(at / 1000000000ull);
        ts.tv_nsec = (long)(at % 1000000000ull);
        int r = 0;
        while (!(st->idle && st->idle_kicks >= want && (!settle || st->settled)) && !st->stop && r == 0)
            r = pthread_cond_timedwait(&st->changed, &st->lock, &ts);
        pthread_mutex_unlock(&st->lock);
        if (r == ETIMEDOUT)
            return -ETIMEDOUT;
    }
    int r = cat_store_counts(d->cat, &ret->resident, &ret->stored, &ret->backlog);
    if (r < 0)
        return r;
    if (st) {
        pthread_mutex_lock(&st->lock);
        ret->enabled = st->started;
        ret->resident_keep = st->opts.resident;
        ret->moved = st->moved;
        ret->dropped = st->dropped;
        ret->hydrated = st->hydrated;
        ret->hydrate_written = st->hydrate_written;
        ret->hydrate_union = st->hydrate_union;
        ret->hydrate_full = st->hydrate_full;
        ret->defrag_steps = st->defrag_steps;
        ret->defrag_bytes = st->defrag_bytes;
        ret->blocked = st->nblocked;
        ret->idle = st->idle;
        ret->gate_pauses = st->gate_pauses;
        ret->defrag_sweeps = st->defrag_sweeps;
        ret->settled = st->idle && st->settled;
        pthread_mutex_unlock(&st->lock);
    }
    return 0;
}

/* --- recovery -------------------------------------------------------------------- */

int store_recover_intent(struct amberd *d, const struct cat_intent *in)
{
    const char *id = strncmp(in->target_id, "store:", 6) == 0 ? in->target_id + 6 : in->target_id;
    struct cat_snapshot *s = NULL;
    int r = cat_snapshot_get(d->cat, id, &s);
    if (r == -ENOENT) {
        r = 0;                      /* the snapshot went: nothing to finish */
    } else if (r == 0 && strcmp(in->op, CAT_OP_STORE_MOVE) == 0) {
        /* Exported but not recorded: record it (the manifest is complete);
         * otherwise the mover exports again, reusing every stored chunk. */
        struct cat_store_info si = {0};
        bool has_extents = cat_store_get(d->cat, id, &si) == 0 && si.has_extents;
        cat_store_info_clear(&si);
        /* (Format 2 records the extents with the manifest: without them,
         * redo; the same export makes the same manifest.) */
        if (in->step && strcmp(in->step, "exported") == 0 && in->args && *in->args && has_extents)
            r = cat_store_set_manifest(d->cat, id, in->args);
    } else if (r == 0 && strcmp(in->op, CAT_OP_STORE_DROP) == 0) {
        /* Asked for and recorded: finish it. */
        r = cat_store_set_resident(d->cat, id, false);
        if (r == 0) {
            r = pool_snap_delete(d->pool, s->volume_id, id);
            if (r == -ENOENT)
                r = 0;
        }
    }
    cat_snapshot_free(s);
    if (r < 0)
        return r;
    return cat_intent_delete(d->cat, in->id);
}

void store_reconcile(struct amberd *d)
{
    struct cat_store_info *v = NULL;
    size_t n = 0;
    if (cat_store_list(d->cat, &v, &n) < 0)
        return;
    for (size_t i = 0; i < n; i++) {
        struct pool_file_info fi = {0};
        bool on_disk = pool_stat(d->pool, v[i].volume_id, v[i].snapshot_id, &fi) == 0;
        free(fi.device);
        if (v[i].resident && !on_disk) {
            if (v[i].manifest) {
                cat_store_set_resident(d->cat, v[i].snapshot_id, false);
                log_info("store", "snapshot %s: its subvolume is gone; served from the store",
                         v[i].snapshot_id);
            } else {
                log_error("store", "snapshot %s is neither in the pool nor in the store",
                          v[i].snapshot_id);
            }
        } else if (!v[i].resident && on_disk) {
            /* A hydration or drop cut short: the subvolume is whole (made
             * read-only and renamed into place last), so keep it. */
            cat_store_set_resident(d->cat, v[i].snapshot_id, true);
        }
        cat_store_info_clear(&v[i]);
    }
    free(v);
}
