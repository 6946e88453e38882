/* store-move.c: the mover's work: copy snapshots into the local store,
 * oldest first per volume, and drop the subvolumes no longer needed.
 *
 * Moving snapshot S (parent P, the volume's previous snapshot):
 *  1. exact extents: the pool's diff P..S (generation search, holes
 *     included; S's allocated extents without P), then each reported range
 *     compared byte for byte between the two images at 4 KiB granularity,
 *     so what is recorded is exactly the blocks whose content differs: a
 *     defragmented or rewritten-with-the-same-data range is not a change.
 *     Recorded in the catalog (crash point store-move:extents).
 *  2. export into the local store: ranges = those extents, parent = P's
 *     manifest, no labels (the catalog has them; the manifest id is then
 *     a pure function of the content, so an export redone after a crash
 *     makes the same manifest). Under a store_move intent (target
 *     "store:<id>"), its step set to "exported" with the manifest id once
 *     the export returned (store-move:intent, store-move:exported).
 *  3. record the manifest, drop the intent (store-move:done).
 * Dropping snapshot D's subvolume (stored, not among the K newest of its
 * volume, its child's exact extents recorded, not pinned, not attached):
 * one transaction clears the resident flag and records a store_drop intent
 * (store-drop:intent), the pool deletes the subvolume (store-drop:pool),
 * the intent goes. Recovery finishes a recorded drop.
 *
 * The invariant the order keeps: a snapshot without exact extents has a
 * resident parent (a parent is dropped only once its child's extents are
 * recorded), so step 1 always finds both images on disk, and a diff
 * between any two snapshots is the union of recorded extents plus a pool
 * diff whose base is resident.
 *
 * A full pool stops the move of that snapshot (it stays resident and
 * unstored), logs once, and the mover tries again when something is
 * deleted or after STORE_RETRY_NS. Free space is checked before an export
 * against the pool's reserve, so the store never eats the room volumes
 * were promised. */
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

#define STORE_BLOCK 4096u
#define STORE_READ (1u << 20)
#define STORE_BACKLOG_BATCH 64
#define STORE_RETRY_NS (30ull * 1000000000ull)
#define STORE_DROP_RETRY_NS (200ull * 1000000ull)

static int collect(uint64_t off, uint64_t len, void *ud)
{
    range_add(ud, off, len);
    return 0;
}

static int pread_full(int fd, uint8_t *buf, size_t len, uint64_t off, uint64_t size)
{
    /* Past the image's end reads as zeros (a resized volume). */
    size_t want = off >= size ? 0 : (size_t)MIN((uint64_t)len, size - off);
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, buf + got, want - got, (off_t)(off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            break;
        got += (size_t)n;
    }
    memset(buf + got, 0, len - got);
    return 0;
}

static int open_image(struct amberd *d, const char *vol, const char *snap, uint64_t *ret_size)
{
    _cleanup_free_ char *path = pool_disk_path(d->pool, vol, snap);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    *ret_size = (uint64_t)st.st_size;
    return fd;
}

int store_exact_diff(struct amberd *d, const char *vol, const char *from, const char *to,
                     struct range_list *out)
{
    static const uint8_t zero[STORE_BLOCK];
    struct range_list cand = {0};
    int r = from ? pool_diff(d->pool, vol, from, to, collect, &cand, NULL)
                 : pool_allocated(d->pool, vol, to, collect, &cand);
    if (r < 0) {
        range_list_free(&cand);
        return r;
    }
    uint64_t tsize = 0, fsize = 0;
    _cleanup_close_ int tfd = open_image(d, vol, to, &tsize);
    _cleanup_close_ int ffd = from ? open_image(d, vol, from, &fsize) : -1;
    if (tfd < 0 || (from && ffd < 0)) {
        range_list_free(&cand);
        return tfd < 0 ? tfd : ffd;
    }
    _cleanup_free_ uint8_t *a = xmalloc(STORE_READ), *b = xmalloc(STORE_READ);
    uint64_t limit = MAX(tsize, fsize);
    const atomic_bool *cancel = d->store ? &d->store->cancel : NULL;
    for (size_t i = 0; i < cand.n && r == 0; i++) {
        if (cancel && atomic_load(cancel)) {
            r = -ECANCELED;
            break;
        }
        uint64_t pos = cand.v[i].off / STORE_BLOCK * STORE_BLOCK;
        uint64_t end = MIN(cand.v[i].off + cand.v[i].len, limit);
        while (pos < end && r == 0) {
            size_t n = (size_t)MIN((uint64_t)STORE_READ, (end - pos + STORE_BLOCK - 1) / STORE_BLOCK * STORE_BLOCK);
            if ((r = pread_full(tfd, b, n, pos, tsize)) < 0)
                break;
            if (from && (r = pread_full(ffd, a, n, pos, fsize)) < 0)
                break;
            for (size_t k = 0; k < n; k += STORE_BLOCK) {
                bool differs = from ? memcmp(a + k, b + k, STORE_BLOCK) != 0
                                    : memcmp(zero, b + k, STORE_BLOCK) != 0;
                if (differs)
                    range_add(out, pos + k, STORE_BLOCK);
            }
            pos += n;
        }
    }
    range_list_free(&cand);
    if (r == 0)
        range_normalize(out, limit);
    return r;
}

/* --- moving one snapshot ------------------------------------------------------------ */

/* The catalog's ranges as objstore's. */
static struct objstore_range *to_objstore(const struct cat_range *v, size_t n)
{
    struct objstore_range *o = xcalloc(n ? n : 1, sizeof *o);
    for (size_t i = 0; i < n; i++)
        o[i] = (struct objstore_range){ v[i].off, v[i].len };
    return o;
}

#if OBJSTORE_FORMAT_VERSION < 2
/* Step 1: record S's exact extents against its parent (P NULL: none).
 * Returns 0, or -EAGAIN when the chain changed under us (try again). */
static int record_extents(struct store_state *st, const struct cat_snapshot *s)
{
    struct amberd *d = st->d;
    pthread_mutex_lock(&st->ext_lock);
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *now = NULL, *p = NULL;
    struct cat_store_info si = {0}, pi = {0};
    struct range_list ex = {0};
    int r = cat_snapshot_get(d->cat, s->id, &now);
    if (r < 0)
        goto out;
    if ((r = cat_store_get(d->cat, s->id, &si)) < 0 || si.has_extents)
        goto out;    /* merged in by a delete meanwhile */
    if (now->parent_id && cat_snapshot_get(d->cat, now->parent_id, &p) == 0 &&
        (r = cat_store_get(d->cat, p->id, &pi)) < 0)
        goto out;
    if (p && !pi.resident) {
        /* Cannot happen while the invariant holds; stay safe: the whole
         * volume counts as changed. */
        log_warn("store", "snapshot %s: its parent %s is not resident; recording every block as "
                 "changed", s->id, p->id);
        range_add(&ex, 0, now->size_bytes);
    } else {
        if (p)
            store_pin(st, p->id);
        r = store_exact_diff(d, now->volume_id, p ? p->id : NULL, now->id, &ex);
        if (p)
            store_unpin(st, p->id);
        if (r < 0)
            goto out;
    }
    struct cat_range *v = xcalloc(ex.n ? ex.n : 1, sizeof *v);
    for (size_t i = 0; i < ex.n; i++)
        v[i] = (struct cat_range){ ex.v[i].off, ex.v[i].len };
    r = cat_store_set_extents(d->cat, s->id, v, ex.n);
    free(v);
out:
    pthread_mutex_unlock(&st->ext_lock);
    cat_store_info_clear(&si);
    cat_store_info_clear(&pi);
    range_list_free(&ex);
    return r;
}
#endif

/* Whether the pool has room for BYTES more and still keeps, above its
 * reserve, a margin of STORE_MARGIN_PCT % of its size for the volumes: the
 * store is a copy of what the pool holds anyway, so near full it stops and
 * the snapshots stay resident, as without a store. Space freed by discards
 * or deletes shows only after a commit: when short, commit once (syncfs)
 * and look again. */
#define STORE_MARGIN_PCT 10
static bool have_room(struct amberd *d, uint64_t bytes)
{
    for (int i = 0; i < 2; i++) {
        struct pool_space sp;
        if (pool_get_space(d->pool, &sp) < 0)
            return true;    /* let the write itself tell */
        /* Chunks are compressed and deduplicated: this overestimates. */
        uint64_t keep = sp.reserve + MAX(sp.total / 100 * STORE_MARGIN_PCT, 16ull << 20);
        if (sp.free > keep && sp.free - keep > bytes)
            return true;
        if (i == 0)
            (void)syncfs(d->pool->dirfd);
    }
    return false;
}

static void blocked_set(struct store_state *st, const char *id, bool on, int err)
{
    pthread_mutex_lock(&st->lock);
    struct store_blocked **pp = &st->blocked;
    while (*pp && strcmp((*pp)->snapshot_id, id) != 0)
        pp = &(*pp)->next;
    bool was = *pp != NULL;
    if (on && !was) {
        struct store_blocked *b = xcalloc(1, sizeof *b);
        b->snapshot_id = xstrdup(id);
        b->next = st->blocked;
        st->blocked = b;
        st->nblocked++;
    } else if (!on && was) {
        struct store_blocked *b = *pp;
        *pp = b->next;
        free(b->snapshot_id);
        free(b);
        st->nblocked--;
    }
    pthread_mutex_unlock(&st->lock);
    if (on && !was)
        log_warn_errno(err, "store", "snapshot %s stays resident: no room in the pool to store it; "
                       "will try again when space is freed", id);
    else if (!on && was)
        log_info("store", "snapshot %s: room again, storing it", id);
}

#if OBJSTORE_FORMAT_VERSION >= 2
/* The ranges to export for S without recorded extents: the pool's diff
 * from its (resident) parent, or its allocated extents. */
static int candidate_ranges(struct store_state *st, const struct cat_snapshot *s,
                            struct cat_range **ret, size_t *ret_n)
{
    struct amberd *d = st->d;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *p = NULL;
    struct cat_store_info pi = {0};
    struct range_list l = {0};
    int r = 0;
    if (s->parent_id && cat_snapshot_get(d->cat, s->parent_id, &p) == 0 &&
        (r = cat_store_get(d->cat, p->id, &pi)) < 0)
        return r;
    if (p && !pi.resident) {
        log_warn("store", "snapshot %s: its parent %s is not resident; reading every block", s->id,
                 p->id);
        range_add(&l, 0, s->size_bytes);
    } else if (p) {
        store_pin(st, p->id);
        r = pool_diff(d->pool, s->volume_id, p->id, s->id, collect, &l, NULL);
        store_unpin(st, p->id);
    } else {
        r = pool_allocated(d->pool, s->volume_id, s->id, collect, &l);
    }
    cat_store_info_clear(&pi);
    if (r < 0) {
        range_list_free(&l);
        return r;
    }
    struct cat_range *v = xcalloc(l.n ? l.n : 1, sizeof *v);
    for (size_t i = 0; i < l.n; i++)
        v[i] = (struct cat_range){ l.v[i].off, l.v[i].len };
    *ret = v;
    *ret_n = l.n;
    range_list_free(&l);
    return 0;
}
#endif

/* The export's progress callback (each piece): the gate inside a long
 * export, so it too pauses for a snapshot create. objstore calls it one
 * call at a time under its progress lock, so every worker stops at its
 * next piece. */
static void export_progress(void *ud, const struct objstore_progress *p)
{
    (void)p;
    store_gate(ud);
}

/* Move snapshot ID. 1 moved, 0 nothing to do, -ENOSPC no room, -errno. */
static int move_one(struct store_state *st, const char *id)
{
    struct amberd *d = st->d;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL, *p = NULL;
    struct cat_store_info si = {0}, pi = {0};
    struct cat_range *ext = NULL;
    size_t next = 0;
    int64_t intent = 0;
    _cleanup_free_ char *target = xasprintf("store:%s", id);
    _cleanup_close_ int fd = -1;
    _cleanup_free_ struct objstore_range *ranges = NULL;
    int r = cat_snapshot_get(d->cat, id, &s);
    if (r < 0)
        return r == -ENOENT ? 0 : r;
    if (s->state != CAT_SNAP_READY)
        return 0;
    if ((r = cat_store_get(d->cat, id, &si)) < 0)
        goto out;
    if (si.manifest) {
        r = 0;
        goto out;
    }
    bool use_changed = false;
#if OBJSTORE_FORMAT_VERSION >= 2
    /* Format 2: the export says which blocks really differ from the
     * parent's map (res.changed); the pool's diff only narrows what it
     * reads, so nothing is compared here. */
    if (!si.has_extents) {
        use_changed = true;
        r = candidate_ranges(st, s, &ext, &next);
        if (r < 0)
            goto out;
        store_crashpoint("store-move:extents");
    }
#else
    if (!si.has_extents) {
        r = record_extents(st, s);
        if (r < 0)
            goto out;
        store_crashpoint("store-move:extents");
        cat_snapshot_free(s);
        s = NULL;
        if ((r = cat_snapshot_get(d->cat, id, &s)) < 0)
            goto out;
    }
#endif
    if (!use_changed && (r = cat_store_get_extents(d->cat, id, &ext, &next)) < 0)
        goto out;
    if (s->parent_id && cat_snapshot_get(d->cat, s->parent_id, &p) == 0) {
        if ((r = cat_store_get(d->cat, p->id, &pi)) < 0)
            goto out;
        if (!pi.manifest) {
            r = -EAGAIN;    /* the parent goes first */
            goto out;
        }
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < next; i++)
        bytes += ext[i].len;
    if (!have_room(d, bytes)) {
        r = -ENOSPC;
        goto out;
    }

    store_pin(st, id);
    uint64_t isize = 0;
    fd = open_image(d, s->volume_id, s->id, &isize);
    if (fd < 0) {
        store_unpin(st, id);
        r = fd;
        goto out;
    }
    if ((r = cat_intent_add(d->cat, CAT_OP_STORE_MOVE, target, NULL, &intent)) < 0) {
        store_unpin(st, id);
        goto out;
    }
    store_crashpoint("store-move:intent");
    ranges = to_objstore(ext, next);
    struct objstore_export_req req = {
        .fd = fd, .size = s->size_bytes, .ranges = ranges, .nranges = next,
        .parent = pi.manifest, .snapshot_uuid = s->id, .volume_name = s->volume_name,
        .created_ns = s->created_ns, .parallelism = 2, .cancel = &st->cancel,
        .progress = (st->exp & STORE_EXP_NOGATE) ? NULL : export_progress, .progress_ud = st,
        .progress_each_chunk = true,
    };
    struct objstore_export_result res = {0};
    uint64_t t0 = now_mono_ns();
    r = objstore_export(st->mover_repo, &req, &res);
    store_unpin(st, id);
    if (r < 0) {
        cat_intent_delete(d->cat, intent);
        goto out;
    }
    store_crashpoint("store-move:exported");
    if ((r = cat_intent_update(d->cat, intent, "exported", res.manifest)) < 0)
        goto out;
    store_crashpoint("store-move:recorded");
    if (use_changed)
        pthread_mutex_lock(&st->ext_lock);
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_store_set_manifest(d->cat, id, res.manifest);
#if OBJSTORE_FORMAT_VERSION >= 2
        struct cat_store_info now = {0};
        /* Unless a delete merged extents in meanwhile (they are exact too). */
        if (r == 0 && use_changed && cat_store_get(d->cat, id, &now) == 0 && !now.has_extents) {
            struct cat_range *cv = xcalloc(res.nchanged ? res.nchanged : 1, sizeof *cv);
            for (size_t i = 0; i < res.nchanged; i++)
                cv[i] = (struct cat_range){ res.changed[i].offset, res.changed[i].length };
            r = cat_store_set_extents(d->cat, id, cv, res.nchanged);
            free(cv);
        }
        cat_store_info_clear(&now);
#endif
        if (r == -ENOENT)
            r = 0;          /* deleted meanwhile: its manifest goes below */
        if (r == 0)
            r = cat_intent_delete(d->cat, intent);
        r = cat_end(d->cat, r);
    }
    if (use_changed)
        pthread_mutex_unlock(&st->ext_lock);
#if OBJSTORE_FORMAT_VERSION >= 2
    if (use_changed) {
        bytes = 0;
        for (size_t i = 0; i < res.nchanged; i++)
            bytes += res.changed[i].length;
        next = res.nchanged;
    }
    objstore_export_result_free(&res);
#endif
    if (r < 0)
        goto out;
    store_crashpoint("store-move:done");
    /* Commit the export now (between snapshots, outside the gate): the next
     * snapshot's commit then carries only the application's writes. */
    if (!(st->exp & STORE_EXP_NOMOVESYNC))
        (void)ioctl(d->pool->dirfd, BTRFS_IOC_SYNC);
    struct cat_snapshot *still = NULL;
    if (cat_snapshot_get(d->cat, id, &still) < 0) {
        objstore_delete_manifest(st->mover_repo, res.manifest);
        r = 0;
        goto out;
    }
    cat_snapshot_free(still);
    pthread_mutex_lock(&st->lock);
    st->moved++;
    pthread_mutex_unlock(&st->lock);
    log_info("store", "stored snapshot %s of %s: %zu exact extents, %llu bytes, %llu chunks new, "
             "%llu reused, manifest %.12s, %.1f ms", s->name, s->volume_name ? s->volume_name : s->volume_id,
             next, (unsigned long long)bytes, (unsigned long long)res.chunks_uploaded,
             (unsigned long long)res.chunks_reused, res.manifest, (now_mono_ns() - t0) / 1e6);
    r = 1;
out:
    free(ext);
    cat_store_info_clear(&si);
    cat_store_info_clear(&pi);
    return r;
}

/* --- dropping subvolumes --------------------------------------------------------- */

/* Pacing the drops: btrfs frees a deleted subvolume in its cleaner thread
 * after the deleting transaction commits, and the commits after it carry
 * the reference updates; drops queued faster than the cleaner frees them
 * pile up into bursts. So after a drop the mover commits (BTRFS_IOC_SYNC,
 * which also wakes the cleaner) and the next drop waits until the cleaner
 * has freed that subvolume (its root item is gone from the root tree),
 * STORE_DROP_WAIT_MAX_NS at most (a subvolume still in use elsewhere is
 * not freed until released). Meanwhile the mover is not idle (a `store
 * status --wait` waits for the drops too). Not btrfs: no pacing. */
#define STORE_DROP_WAIT_MAX_NS (10000ull * 1000000ull)

static uint64_t subvol_id(struct amberd *d, const char *vol, const char *snap)
{
    _cleanup_free_ char *path = pool_disk_path(d->pool, vol, snap);
    char *slash = strrchr(path, '/');
    if (slash)
        *slash = 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct btrfs_ioctl_get_subvol_info_args info;
    memset(&info, 0, sizeof info);
    if (fd < 0 || ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, &info) < 0)
        return 0;
    return info.treeid;
}

/* Whether subvolume ID's root item is still in the root tree. */
static bool subvol_present(int dirfd, uint64_t id)
{
    struct btrfs_ioctl_search_args a;
    memset(&a, 0, sizeof a);
    a.key.tree_id = BTRFS_ROOT_TREE_OBJECTID;
    a.key.min_objectid = a.key.max_objectid = id;
    a.key.min_type = a.key.max_type = BTRFS_ROOT_ITEM_KEY;
    a.key.max_offset = UINT64_MAX;
    a.key.max_transid = UINT64_MAX;
    a.key.nr_items = 1;
    if (ioctl(dirfd, BTRFS_IOC_TREE_SEARCH, &a) < 0)
        return false;
    return a.key.nr_items > 0;
}

static bool cleaner_busy(struct store_state *st)
{
    if (!st->last_drop_id || (st->exp & STORE_EXP_NODROPPACE))
        return false;
    if (!subvol_present(st->d->pool->dirfd, st->last_drop_id) ||
        now_mono_ns() - st->last_drop_ns > STORE_DROP_WAIT_MAX_NS) {
        st->last_drop_id = 0;
        return false;
    }
    return true;
}

/* 1 dropped, 0 left (pinned, attached, changed), -errno. */
static int drop_one(struct store_state *st, const char *id)
{
    struct amberd *d = st->d;
    if (!store_begin_drop(st, id))
        return 0;
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL;
    _cleanup_free_ char *target = xasprintf("store:%s", id);
    struct cat_store_info si = {0};
    int64_t intent = 0;
    int r = cat_snapshot_get(d->cat, id, &s);
    if (r < 0 || (r = cat_store_get(d->cat, id, &si)) < 0 || !si.resident || !si.manifest ||
        s->state != CAT_SNAP_READY) {
        r = r == -ENOENT ? 0 : r < 0 ? r : 0;
        goto out;
    }
    struct pool_file_info fi = {0};
    if (pool_stat(d->pool, s->volume_id, s->id, &fi) == 0 && fi.device) {
        free(fi.device);        /* attached (mounted to browse): its detach kicks us */
        r = 0;
        goto out;
    }
    r = cat_begin(d->cat);
    if (r == 0) {
        r = cat_store_set_resident(d->cat, id, false);
        if (r == 0)
            r = cat_intent_add(d->cat, CAT_OP_STORE_DROP, target, NULL, &intent);
        r = cat_end(d->cat, r);
    }
    if (r < 0)
        goto out;
    store_crashpoint("store-drop:intent");
    uint64_t svid = subvol_id(d, s->volume_id, s->id);
    r = pool_snap_delete(d->pool, s->volume_id, s->id);
    if (r == -ENOENT)
        r = 0;
    /* Commit the delete now and wake the cleaner (BTRFS_IOC_SYNC does
     * both): the drop's own commit is the mover's, between snapshots, not
     * the next snapshot's; and the cleaner starts at once instead of at the
     * next commit interval (cleaner_busy waits for it). */
    if (r == 0 && svid && !(st->exp & STORE_EXP_NODROPPACE)) {
        (void)ioctl(d->pool->dirfd, BTRFS_IOC_SYNC);
        st->last_drop_id = svid;
        st->last_drop_ns = now_mono_ns();
    }
    store_crashpoint("store-drop:pool");
    if (r < 0) {
        /* Attached after all (or the pool refused): keep it resident. */
        cat_begin(d->cat);
        cat_store_set_resident(d->cat, id, true);
        cat_intent_delete(d->cat, intent);
        cat_commit(d->cat);
        r = r == -EBUSY ? 0 : r;
        goto out;
    }
    r = cat_intent_delete(d->cat, intent);
    if (r < 0)
        goto out;
    store_crashpoint("store-drop:done");
    pthread_mutex_lock(&st->lock);
    st->dropped++;
    pthread_mutex_unlock(&st->lock);
    log_debug("store", "dropped the subvolume of stored snapshot %s (%s)", s->name, s->id);
    r = 1;
out:
    store_end_drop(st);
    cat_store_info_clear(&si);
    return r;
}

/* --- a pass ---------------------------------------------------------------------- */

static bool in_list(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

int store_pass(struct store_state *st, uint64_t *ret_retry_ns)
{
    struct amberd *d = st->d;
    int did = 0;
    char **ids = NULL;
    /* Volumes whose oldest unstored snapshot could not move this pass: the
     * rest of their chain waits (each export builds on the previous). */
    char **skip = NULL;
    size_t nskip = 0;
    /* One move a pass (unless A/B says otherwise), so the defragmenter's
     * interleaved steps and the drops keep up with a busy backlog. */
    bool one = !(st->exp & STORE_EXP_NOINTERLEAVE);
    if (cat_store_backlog(d->cat, STORE_BACKLOG_BATCH, &ids) == 0) {
        size_t nb = 0;
        while (ids[nb])
            nb++;
        pthread_mutex_lock(&st->lock);
        st->behind = nb > STORE_GATE_BEHIND;
        pthread_mutex_unlock(&st->lock);
        for (size_t i = 0; ids[i] && !st->stop && !(one && did); i++) {
            struct cat_snapshot *s = NULL;
            if (cat_snapshot_get(d->cat, ids[i], &s) < 0)
                continue;
            if (in_list(skip, nskip, s->volume_id)) {
                cat_snapshot_free(s);
                continue;
            }
            store_gate(st);
            int r = move_one(st, ids[i]);
            if (r > 0) {
                did++;
                blocked_set(st, ids[i], false, 0);
            } else if (r < 0) {
                if (r == -ENOSPC || r == -EDQUOT) {
                    blocked_set(st, ids[i], true, r);
                    *ret_retry_ns = now_mono_ns() + STORE_RETRY_NS;
                } else if (r != -EAGAIN && r != -ECANCELED) {
                    log_warn_errno(r, "store", "cannot store snapshot %s (%s) yet", s->name, s->id);
                    *ret_retry_ns = now_mono_ns() + STORE_RETRY_NS;
                }
                skip = xrealloc(skip, (nskip + 1) * sizeof *skip);
                skip[nskip++] = xstrdup(s->volume_id);
            }
            cat_snapshot_free(s);
        }
        pool_strv_free(ids);
    }
    for (size_t i = 0; i < nskip; i++)
        free(skip[i]);
    free(skip);

    ids = NULL;
    st->drop_waiting = false;
    if (!st->stop && cat_store_droppable(d->cat, st->opts.resident, &ids) == 0) {
        for (size_t i = 0; ids[i] && !st->stop; i++) {
            if (cleaner_busy(st)) {
                /* The next pass tries again (soon: the cleaner runs after
                 * each commit, and every snapshot is one). */
                st->drops_paced++;
                st->drop_waiting = true;
                uint64_t at = now_mono_ns() + STORE_DROP_RETRY_NS;
                if (!*ret_retry_ns || at < *ret_retry_ns)
                    *ret_retry_ns = at;
                break;
            }
            store_gate(st);
            int r = drop_one(st, ids[i]);
            if (r > 0)
                did++;
            else if (r < 0)
                log_warn_errno(r, "store", "cannot drop the subvolume of stored snapshot %s", ids[i]);
        }
        pool_strv_free(ids);
    }

    /* Chunks of deleted snapshots go once the mover has nothing else to do. */
    pthread_mutex_lock(&st->lock);
    bool gc = did == 0 && st->deleted_manifests > 0;
    st->deleted_manifests = 0;
    pthread_mutex_unlock(&st->lock);
    if (gc && !st->stop) {
        store_gate(st);
        struct objstore_gc_result g = {0};
        int r = objstore_gc(st->mover_repo, 0, &g);
        if (r < 0)
            log_warn_errno(r, "store", "garbage collection of the local store failed");
        else if (g.chunks_deleted)
            log_info("store", "local store: %llu unreferenced chunks deleted (%llu bytes)",
                     (unsigned long long)g.chunks_deleted, (unsigned long long)g.bytes_deleted);
    }
    return did;
}
