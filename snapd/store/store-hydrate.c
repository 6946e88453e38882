/* store-hydrate.c: writing a dropped snapshot's bytes into the image that
 * brings it back (store_hydrate in store-serve.c owns the subvolume, pins,
 * crash points and the catalog; this file owns what is written).
 *
 * The new image starts as a writable copy of the volume's nearest resident
 * snapshot R. S and R differ only inside the union of the recorded exact
 * extents of the snapshots between them (S older than R: those after S up
 * to R, which must get S's content back; R older: those after R up to S),
 * since each snapshot's extents are exactly the blocks whose content
 * differs from its parent's. So only that union is read from the local
 * store (objstore_read, one call per group of nearby ranges inside one
 * 4 MiB map leaf, so a leaf is decoded and a piece decrypted once) and
 * written back with one pwrite per run of non-zero blocks (ranges at
 * most HYDRATE_MERGE apart written as one); blocks that are zero in S
 * (holes) are punched, so the image's allocated extents match S's. Nothing
 * else is written: a clone of an old snapshot costs the bytes the volume
 * changed since, not its size (the reads cost the pieces those bytes are
 * in). Groups go to a few threads (objstore_read is thread-safe on
 * read_repo).
 *
 * The walk needs a linear chain between S and R in which every snapshot
 * after the older one has recorded extents and names its predecessor as
 * parent. That holds by the store's invariant (a snapshot is dropped only
 * once its child's extents are recorded, and every stored one has its
 * own), but a snapshot deleted meanwhile, a replica's foreign parent or a
 * base that went away make the walk give up (-ENOENT), and then the whole
 * manifest is restored in resume mode as before (every piece read and
 * checked against the image, the differing ones written). Crash safety is
 * the caller's: everything here writes into the dot-named build, which a
 * crash leaves for the pool to remove. */
#include <fcntl.h>
#include <pthread.h>
#include <string.h>
#include <unistd.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/store/store-internal.h"

#define HYDRATE_BLOCK 4096u
#define HYDRATE_WINDOW (4u << 20)       /* objstore's map leaf: one read never spans two */
#define HYDRATE_GAP (256u << 10)        /* ranges closer than this are read in one call */
/* Union ranges at most this far apart are written as one (the bytes
 * between are the same in S and the base): a 4 KiB pwrite into a
 * copy-on-write image costs more than the few blocks it would skip (extent
 * reservation, one more extent to write back and map), but every byte
 * written is written back too. bench/proto/exp_hydrate_writes.py (13,000
 * random 4 KiB blocks of a 256 MiB image, written then fsynced, medians of
 * 3 on the loaded 2-core VM): one write per block 1.4-2.1 s (50 MiB),
 * 16 KiB 0.9-1.2 s (104 MiB), 32 KiB 1.1-2.3 s, 64 KiB 1.4-3.0 s, the
 * whole image 2.1-5.7 s. */
#define HYDRATE_MERGE (16u << 10)
#define HYDRATE_THREADS 4

static size_t chain_find(const struct cat_snapshot_list *l, const char *id)
{
    for (size_t i = 0; i < l->n; i++)
        if (strcmp(l->items[i].id, id) == 0)
            return i;
    return SIZE_MAX;
}

int store_hydrate_union(struct amberd *d, const struct cat_snapshot *s, const char *base,
                        struct range_list *out)
{
    struct cat_snapshot_list chain = {0};
    struct cat_snapshot_filter f = { .volume_id = s->volume_id,
                                     .states = (1u << CAT_SNAP_READY) | (1u << CAT_SNAP_DELETING) };
    int r = cat_snapshot_list(d->cat, &f, NULL, &chain);
    if (r < 0)
        return r;
    size_t a = chain_find(&chain, s->id), b = chain_find(&chain, base);
    if (a == SIZE_MAX || b == SIZE_MAX || a == b) {
        r = -ENOENT;
        goto out;
    }
    size_t lo = MIN(a, b), hi = MAX(a, b);
    for (size_t k = lo + 1; k <= hi; k++) {
        const struct cat_snapshot *c = &chain.items[k];
        if (!c->parent_id || strcmp(c->parent_id, chain.items[k - 1].id) != 0) {
            r = -ENOENT;        /* not one linear chain: its extents are not against k-1 */
            goto out;
        }
        struct cat_range *v = NULL;
        size_t n = 0;
        if ((r = cat_store_get_extents(d->cat, c->id, &v, &n)) < 0)
            goto out;
        for (size_t i = 0; i < n; i++)
            range_add(out, v[i].off, v[i].len);
        free(v);
    }
    range_normalize(out, s->size_bytes);
    r = 0;
out:
    cat_snapshot_list_free(&chain);
    return r;
}

/* One objstore_read: [off, end) and the union ranges u[first, last) inside it. */
struct hgroup {
    uint64_t off, end;
    size_t first, last;
};

struct hjob {
    struct store_state *st;
    const char *manifest;
    int fd;
    const struct range_list *u;
    const struct hgroup *g;
    size_t ng;
    pthread_mutex_t lock;
    size_t next;                /* the next group to take */
    int err;                    /* the first error */
    uint64_t written, punched, read;
    uint64_t read_ns, write_ns;     /* summed over the threads */
};

static bool block_zero(const uint8_t *p, size_t n)
{
    return n == 0 || (p[0] == 0 && memcmp(p, p + 1, n - 1) == 0);
}

static int write_run(int fd, const uint8_t *p, size_t n, uint64_t off)
{
    while (n > 0) {
        ssize_t w = pwrite(fd, p, n, (off_t)off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return -errno;
        if (w == 0)
            return -EIO;
        p += w;
        n -= (size_t)w;
        off += (uint64_t)w;
    }
    return 0;
}

static int punch_run(int fd, uint64_t off, uint64_t len)
{
    if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
        return 0;
    if (errno != EOPNOTSUPP)
        return -errno;
    /* No hole punching: write the zeros (reads the same). */
    static const uint8_t zero[HYDRATE_BLOCK];
    for (uint64_t done = 0; done < len;) {
        size_t n = (size_t)MIN((uint64_t)sizeof zero, len - done);
        int r = write_run(fd, zero, n, off + done);
        if (r < 0)
            return r;
        done += n;
    }
    return 0;
}

static int flush_run(struct hjob *j, const uint8_t *buf, uint64_t boff, uint64_t off, uint64_t end,
                     bool zero, uint64_t *written, uint64_t *punched)
{
    if (zero) {
        *punched += end - off;
        return punch_run(j->fd, off, end - off);
    }
    *written += end - off;
    return write_run(j->fd, buf + (off - boff), (size_t)(end - off), off);
}

/* Write union range [off, off+len) from buf (which holds the image from
 * boff): runs of non-zero blocks written, runs of zero blocks punched. */
static int put_range(struct hjob *j, const uint8_t *buf, uint64_t boff, uint64_t off, uint64_t len,
                     uint64_t *written, uint64_t *punched)
{
    uint64_t end = off + len, run = off;
    bool run_zero = false;
    for (uint64_t pos = off; pos < end;) {
        size_t n = (size_t)MIN((uint64_t)HYDRATE_BLOCK - pos % HYDRATE_BLOCK, end - pos);
        bool z = block_zero(buf + (pos - boff), n);
        if (pos > run && z != run_zero) {
            int r = flush_run(j, buf, boff, run, pos, run_zero, written, punched);
            if (r < 0)
                return r;
            run = pos;
        }
        if (pos == run)
            run_zero = z;
        pos += n;
    }
    return end > run ? flush_run(j, buf, boff, run, end, run_zero, written, punched) : 0;
}

static void *hworker(void *arg)
{
    struct hjob *j = arg;
    uint8_t *buf = xmalloc(HYDRATE_WINDOW);
    uint64_t written = 0, punched = 0, read = 0, read_ns = 0, write_ns = 0;
    for (;;) {
        pthread_mutex_lock(&j->lock);
        size_t gi = j->err ? j->ng : j->next++;
        pthread_mutex_unlock(&j->lock);
        if (gi >= j->ng)
            break;
        int r = 0;
        if (j->st->cancel)
            r = -ECANCELED;
        const struct hgroup *g = &j->g[gi];
        uint64_t t0 = now_mono_ns();
        if (r == 0)
            r = objstore_read(j->st->read_repo, j->manifest, g->off, buf, (size_t)(g->end - g->off));
        read += g->end - g->off;
        uint64_t t1 = now_mono_ns();
        for (size_t i = g->first; i < g->last && r == 0;) {
            uint64_t o = j->u->v[i].off, e = o + j->u->v[i].len;
            for (i++; i < g->last && j->u->v[i].off - e <= HYDRATE_MERGE; i++)
                e = j->u->v[i].off + j->u->v[i].len;
            r = put_range(j, buf, g->off, o, e - o, &written, &punched);
        }
        read_ns += t1 - t0;
        write_ns += now_mono_ns() - t1;
        if (r < 0) {
            pthread_mutex_lock(&j->lock);
            if (!j->err)
                j->err = r;
            pthread_mutex_unlock(&j->lock);
        }
    }
    free(buf);
    pthread_mutex_lock(&j->lock);
    j->written += written;
    j->punched += punched;
    j->read += read;
    j->read_ns += read_ns;
    j->write_ns += write_ns;
    pthread_mutex_unlock(&j->lock);
    return NULL;
}

/* Cut the union at window boundaries and group nearby pieces. */
static void make_groups(const struct range_list *in, struct range_list *u, struct hgroup **ret,
                        size_t *ret_n)
{
    for (size_t i = 0; i < in->n; i++)
        for (uint64_t o = in->v[i].off, e = o + in->v[i].len; o < e;) {
            uint64_t t = MIN(e, (o / HYDRATE_WINDOW + 1) * HYDRATE_WINDOW);
            range_add(u, o, t - o);
            o = t;
        }
    struct hgroup *g = NULL;
    size_t n = 0, cap = 0;
    for (size_t i = 0; i < u->n; i++) {
        uint64_t o = u->v[i].off, e = o + u->v[i].len;
        if (n && g[n - 1].off / HYDRATE_WINDOW == o / HYDRATE_WINDOW && o - g[n - 1].end < HYDRATE_GAP) {
            g[n - 1].end = e;
            g[n - 1].last = i + 1;
            continue;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            g = xrealloc(g, cap * sizeof *g);
        }
        g[n++] = (struct hgroup){ o, e, i, i + 1 };
    }
    *ret = g;
    *ret_n = n;
}

int store_hydrate_ranges(struct store_state *st, const char *manifest, int fd,
                         const struct range_list *un, struct store_hydrate_stats *ret)
{
#if OBJSTORE_FORMAT_VERSION >= 2
    if (!st->read_repo)
        return -EOPNOTSUPP;
    struct range_list u = {0};
    struct hgroup *g = NULL;
    size_t ng = 0;
    make_groups(un, &u, &g, &ng);
    struct hjob j = { .st = st, .manifest = manifest, .fd = fd, .u = &u, .g = g, .ng = ng };
    pthread_mutex_init(&j.lock, NULL);
    pthread_t t[HYDRATE_THREADS];
    size_t nt = 0;
    for (; nt < MIN((size_t)HYDRATE_THREADS, ng); nt++)
        if (pthread_create(&t[nt], NULL, hworker, &j) != 0)
            break;
    if (nt == 0 && ng > 0)
        hworker(&j);            /* no thread: do it here */
    for (size_t i = 0; i < nt; i++)
        pthread_join(t[i], NULL);
    pthread_mutex_destroy(&j.lock);
    for (size_t i = 0; i < u.n; i++)
        ret->union_bytes += u.v[i].len;
    ret->bytes_written += j.written;
    ret->bytes_punched += j.punched;
    ret->bytes_read += j.read;
    ret->read_ns += j.read_ns;
    ret->write_ns += j.write_ns;
    free(g);
    range_list_free(&u);
    return j.err;
#else
    (void)st; (void)manifest; (void)fd; (void)un; (void)ret;
    return -EOPNOTSUPP;
#endif
}

int store_hydrate_write(struct amberd *d, const struct cat_snapshot *s, const char *manifest,
                        const char *base, int fd, struct store_hydrate_stats *ret)
{
    struct store_state *st = S(d);
    memset(ret, 0, sizeof *ret);
    if (base) {
        struct range_list u = {0};
        int r = store_hydrate_union(d, s, base, &u);
        if (r == 0) {
            ret->method = "union";
            r = store_hydrate_ranges(st, manifest, fd, &u, ret);
            range_list_free(&u);
            if (r != -EOPNOTSUPP)
                return r;
        } else {
            range_list_free(&u);
            if (r != -ENOENT)
                return r;
        }
        log_debug("store", "snapshot %s: no exact chain to %s, restoring the whole image", s->id, base);
        memset(ret, 0, sizeof *ret);
    }
    ret->method = base ? "resume" : "restore";
    struct objstore_restore_req req = { .manifest = manifest, .fd = fd, .resume = base != NULL,
                                        .cancel = &st->cancel };
    struct objstore_restore_result res = {0};
    int r = objstore_restore(st->serve_repo, &req, &res);
    ret->bytes_written = res.bytes_written;
    ret->bytes_read = res.bytes_fetched;
    ret->chunks_kept = res.chunks_skipped;
    return r;
}
