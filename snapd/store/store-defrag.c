/* store-defrag.c: the background defragmenter of live images.
 *
 * Why (bench-notes.md, README.md here): after any snapshot, btrfs turns
 * every small write to a No_COW image into a new extent; snapshot latency
 * and the writers' stalls follow the live image's extent count, not the
 * number of snapshots kept, so dropping old subvolumes alone does not
 * help. Rewriting fragmented ranges (BTRFS_IOC_DEFRAG_RANGE) brings the
 * image back to few extents, and the rewritten extents are newer than the
 * last snapshot, so No_COW writes land in place again until the next one.
 *
 * How: when the mover has nothing else to do it looks at one volume (round
 * robin); if its live image has more than --defrag-threshold extents per
 * GiB, it rewrites the densest window of DEFRAG_STEP bytes, one window per
 * step, and comes back after DEFRAG_PAUSE_NS (a timed retry of the mover,
 * so the steps are throttled and never stack up behind I/O). A volume with
 * an operation in flight is skipped. Extents a resident snapshot shares
 * are copied by the rewrite: a step needs that much free room above the
 * pool's reserve, and the space returns when the snapshot's subvolume is
 * dropped. The generation diff then over-reports the rewritten range,
 * which the mover's byte comparison removes from the exact extents.
 *
 * The full sweep: the threshold keeps the image from fragmenting without
 * bound while snapshots are taken, but leaves it at up to the threshold's
 * density, which halves sequential reads. So once a volume's snapshots
 * stop (its newest snapshot is STORE_SWEEP_QUIET_NS old and the mover has
 * nothing else to do), the defragmenter sweeps its whole image once, window
 * by window from the start, rewriting every window of more than
 * SWEEP_WINDOW_MIN extents; a new snapshot restarts it. Settled (status
 * --settle) means no sweep is left. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

/* 8 MiB steps: measured ~4-5 ms/MiB and a ~10 ms writer stall a step; 32
 * and 128 MiB steps stalled writers for 0.5-1 s (bench-notes b+c). */
#define DEFRAG_STEP (8ull << 20)
/* A window with fewer extents is not worth a rewrite (16 per 8 MiB
 * rewrote much more than needed in the measurements). */
#define DEFRAG_WINDOW_MIN 32
#define DEFRAG_SCAN_WINDOWS 64      /* windows measured to pick the densest */
/* A swept window is rewritten when it has more extents than this (a
 * rewritten 8 MiB window is one or two). */
#define SWEEP_WINDOW_MIN 2
#define SWEEP_SCAN_WINDOWS 64       /* windows looked at in one sweep step */

struct store_sweep {
    struct store_sweep *next;
    char *vol;
    char *swept;        /* the newest snapshot when the last sweep finished */
    char *doing;        /* the newest snapshot when this sweep started */
    uint64_t cursor;    /* the next window */
    uint64_t rewritten; /* windows rewritten by this sweep */
    uint64_t t0;
};

void store_sweeps_free(struct store_state *st)
{
    while (st->sweeps) {
        struct store_sweep *w = st->sweeps;
        st->sweeps = w->next;
        free(w->vol);
        free(w->swept);
        free(w->doing);
        free(w);
    }
}

static bool room_for_step(struct amberd *d)
{
    struct pool_space sp;
    return !(pool_get_space(d->pool, &sp) == 0 &&
             (sp.free <= sp.reserve || sp.free - sp.reserve < 2 * DEFRAG_STEP));
}

static void count_step(struct store_state *st)
{
    pthread_mutex_lock(&st->lock);
    st->defrag_steps++;
    st->defrag_bytes += DEFRAG_STEP;
    pthread_mutex_unlock(&st->lock);
}

/* One step of volume V's sweep: 1 did work (a window or the end), 0 no
 * sweep due (*pending: one will be, at *retry), -errno. */
static int sweep_step(struct store_state *st, const struct cat_volume *v, bool *pending,
                      uint64_t *retry)
{
    struct amberd *d = st->d;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *latest = NULL;
    if (cat_snapshot_latest(d->cat, v->id, &latest) < 0)
        return 0;           /* never snapshotted: nothing fragmented it */
    struct store_sweep *w = st->sweeps;
    while (w && strcmp(w->vol, v->id) != 0)
        w = w->next;
    if (w && w->swept && strcmp(w->swept, latest->id) == 0)
        return 0;
    *pending = true;
    uint64_t now = now_real_ns(), quiet_at = latest->created_ns + STORE_SWEEP_QUIET_NS;
    if (now < quiet_at) {
        uint64_t at = now_mono_ns() + (quiet_at - now);
        if (!*retry || at < *retry)
            *retry = at;
        return 0;
    }
    if (!w) {
        w = xcalloc(1, sizeof *w);
        w->vol = xstrdup(v->id);
        w->next = st->sweeps;
        st->sweeps = w;
    }
    if (!w->doing || strcmp(w->doing, latest->id) != 0) {
        free(w->doing);
        w->doing = xstrdup(latest->id);
        w->cursor = 0;
        w->rewritten = 0;
        w->t0 = now_mono_ns();
    }
    uint64_t windows = (v->size_bytes + DEFRAG_STEP - 1) / DEFRAG_STEP;
    for (unsigned k = 0; k < SWEEP_SCAN_WINDOWS && w->cursor < windows; k++, w->cursor++) {
        uint64_t n = 0, sh = 0;
        if (pool_vol_extents(d->pool, v->id, w->cursor * DEFRAG_STEP, DEFRAG_STEP, &n, &sh) < 0 ||
            n <= SWEEP_WINDOW_MIN)
            continue;
        if (!room_for_step(d))
            return 0;
        int r = pool_vol_defrag(d->pool, v->id, w->cursor * DEFRAG_STEP, DEFRAG_STEP);
        if (r < 0)
            return r;
        w->cursor++;
        w->rewritten++;
        count_step(st);
        return 1;
    }
    if (w->cursor < windows)
        return 1;           /* scanned a stretch; more next step */
    uint64_t n = 0, sh = 0;
    pool_vol_extents(d->pool, v->id, 0, v->size_bytes, &n, &sh);
    log_info("store", "swept volume %s after its snapshots stopped: %llu windows of %llu MiB "
             "rewritten in %.1f s, %llu extents now", v->name, (unsigned long long)w->rewritten,
             (unsigned long long)(DEFRAG_STEP >> 20), (now_mono_ns() - w->t0) / 1e9,
             (unsigned long long)n);
    free(w->swept);
    w->swept = w->doing;
    w->doing = NULL;
    pthread_mutex_lock(&st->lock);
    st->defrag_sweeps++;
    pthread_mutex_unlock(&st->lock);
    return 1;
}

int store_defrag_step(struct store_state *st, bool idle, uint64_t *retry)
{
    struct amberd *d = st->d;
    struct cat_volume_list vl = {0};
    struct cat_volume_filter f = { .states = 1u << CAT_VOL_READY };
    if (cat_volume_list(d->cat, &f, NULL, &vl) < 0 || vl.n == 0) {
        cat_volume_list_free(&vl);
        return 0;
    }
    int did = 0;
    for (size_t tries = 0; tries < vl.n && !did; tries++) {
        const struct cat_volume *v = &vl.items[st->defrag_cursor_vol++ % vl.n];
        if (v->replica_peer)
            continue;       /* written by sync, not by an application */
        if (busy_check(d, v->id))
            continue;
        uint64_t n = 0, shared = 0;
        if (pool_vol_extents(d->pool, v->id, 0, v->size_bytes, &n, &shared) < 0)
            continue;
        uint64_t gib = MAX(v->size_bytes >> 30, 1);
        if (n / gib <= st->opts.defrag_threshold)
            continue;
        /* The densest of some windows spread over the image. */
        uint64_t windows = (v->size_bytes + DEFRAG_STEP - 1) / DEFRAG_STEP;
        uint64_t stride = MAX(windows / DEFRAG_SCAN_WINDOWS, 1), best = 0, best_n = 0;
        for (uint64_t w = (st->defrag_steps % stride); w < windows; w += stride) {
            uint64_t wn = 0, ws = 0;
            if (pool_vol_extents(d->pool, v->id, w * DEFRAG_STEP, DEFRAG_STEP, &wn, &ws) == 0 &&
                wn > best_n) {
                best_n = wn;
                best = w;
            }
        }
        if (best_n < DEFRAG_WINDOW_MIN)
            continue;
        if (!room_for_step(d))
            continue;
        uint64_t t0 = now_mono_ns();
        int r = pool_vol_defrag(d->pool, v->id, best * DEFRAG_STEP, DEFRAG_STEP);
        if (r == -EOPNOTSUPP)
            break;
        if (r < 0) {
            log_debug("store", "defragmenting volume %s: %s", v->name, strerror(-r));
            continue;
        }
        uint64_t after = 0, ws = 0;
        pool_vol_extents(d->pool, v->id, best * DEFRAG_STEP, DEFRAG_STEP, &after, &ws);
        log_debug("store", "defragmented volume %s at %llu MiB: %llu -> %llu extents in %.1f ms "
                  "(image: %llu extents)", v->name, (unsigned long long)(best * DEFRAG_STEP >> 20),
                  (unsigned long long)best_n, (unsigned long long)after,
                  (now_mono_ns() - t0) / 1e6, (unsigned long long)n);
        count_step(st);
        did = 1;
    }
    /* Nothing above the threshold and nothing else to do: the sweeps. */
    bool pending = false;
    if (!did && idle && st->opts.defrag_sweep && !(st->exp & STORE_EXP_NOSWEEP))
        for (size_t i = 0; i < vl.n && !did; i++) {
            const struct cat_volume *v = &vl.items[i];
            if (v->replica_peer || busy_check(d, v->id))
                continue;
            int r = sweep_step(st, v, &pending, retry);
            if (r == -EOPNOTSUPP)
                break;
            if (r < 0)
                log_debug("store", "sweeping volume %s: %s", v->name, strerror(-r));
            did = r > 0;
        }
    st->sweep_pending = pending || did;
    cat_volume_list_free(&vl);
    return did;
}
