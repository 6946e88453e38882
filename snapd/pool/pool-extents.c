/* pool-extents.c: range lists and the extent maps both backends share.
 *
 * A diff is gathered into a range list (unsorted, possibly overlapping),
 * then normalised (sorted, merged, clipped) and emitted, so every backend
 * and every method reports ranges the same way. The maps come from the VFS:
 * SEEK_DATA/SEEK_HOLE for what reads as data, FIEMAP for where it lives.
 * The mapping comparison is the generic diff of two files on one
 * filesystem: on btrfs and XFS a block shared by two files is never
 * overwritten in place (a write to it is copied first), so the same
 * physical address at the same file offset means the same bytes. */
#include <fcntl.h>
#include <linux/fiemap.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>

#include "amber/util.h"
#include "snapd/pool/pool.h"

void range_add(struct range_list *l, uint64_t off, uint64_t len)
{
    if (len == 0)
        return;
    if (l->n == l->cap) {
        l->cap = l->cap ? l->cap * 2 : 64;
        l->v = xrealloc(l->v, l->cap * sizeof *l->v);
    }
    l->v[l->n++] = (struct range){ off, len };
}

static int range_cmp(const void *a, const void *b)
{
    const struct range *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

void range_normalize(struct range_list *l, uint64_t limit)
{
    if (l->n == 0)
        return;
    qsort(l->v, l->n, sizeof *l->v, range_cmp);
    size_t w = 0;
    for (size_t i = 0; i < l->n; i++) {
        uint64_t off = l->v[i].off;
        uint64_t end = off + l->v[i].len < off ? UINT64_MAX : off + l->v[i].len;
        if (off >= limit)
            break;
        end = MIN(end, limit);
        if (w > 0 && off <= l->v[w - 1].off + l->v[w - 1].len) {
            uint64_t pend = l->v[w - 1].off + l->v[w - 1].len;
            if (end > pend)
                l->v[w - 1].len = end - l->v[w - 1].off;
        } else {
            l->v[w++] = (struct range){ off, end - off };
        }
    }
    l->n = w;
}

void range_list_free(struct range_list *l)
{
    free(l->v);
    *l = (struct range_list){0};
}

int range_emit(const struct range_list *l, pool_extent_cb cb, void *userdata,
               struct pool_diff_stats *stats)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < l->n; i++) {
        bytes += l->v[i].len;
        int r = cb ? cb(l->v[i].off, l->v[i].len, userdata) : 0;
        if (r != 0)
            return r;
    }
    if (stats) {
        stats->extents = l->n;
        stats->bytes = bytes;
    }
    return 0;
}

/* lseek for SEEK_DATA/SEEK_HOLE: the offset, or UINT64_MAX for "none
 * before EOF" (ENXIO), or a negative errno in *err. */
static uint64_t seek(int fd, uint64_t pos, int whence, int *err)
{
    off_t r = lseek(fd, (off_t)pos, whence);
    if (r < 0) {
        if (errno != ENXIO)
            *err = -errno;
        return UINT64_MAX;
    }
    return (uint64_t)r;
}

int extents_data(int fd, uint64_t size, struct range_list *out)
{
    int err = 0;
    uint64_t pos = 0;
    while (pos < size) {
        uint64_t d = seek(fd, pos, SEEK_DATA, &err);
        if (err)
            return err;
        if (d >= size)
            break;
        uint64_t h = seek(fd, d, SEEK_HOLE, &err);
        if (err)
            return err;
        h = MIN(h, size);
        range_add(out, d, h - d);
        pos = h;
    }
    return 0;
}

int extents_became_holes(int fromfd, uint64_t from_size, int tofd, uint64_t to_size,
                         struct range_list *out)
{
    struct range_list data = {0};
    int r = extents_data(fromfd, from_size, &data);
    for (size_t i = 0; r == 0 && i < data.n; i++) {
        uint64_t pos = data.v[i].off, end = data.v[i].off + data.v[i].len;
        while (pos < end) {
            if (pos >= to_size) {           /* past TO's end: zeros */
                range_add(out, pos, end - pos);
                break;
            }
            int err = 0;
            uint64_t hs = seek(tofd, pos, SEEK_HOLE, &err);
            if (err) { r = err; break; }
            if (hs >= end)
                break;
            uint64_t he = seek(tofd, hs, SEEK_DATA, &err);
            if (err) { r = err; break; }
            he = MIN(he, end);
            range_add(out, hs, he - hs);
            pos = he;
        }
    }
    range_list_free(&data);
    return r;
}

struct fmap { uint64_t log, phys, len; uint32_t flags; };
struct fmap_list { struct fmap *v; size_t n, cap; };

#define FIEMAP_BATCH 512
/* Flags under which the physical address says nothing about content. */
#define FIEMAP_OPAQUE (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_ENCODED | \
                       FIEMAP_EXTENT_DATA_ENCRYPTED | FIEMAP_EXTENT_NOT_ALIGNED | \
                       FIEMAP_EXTENT_DATA_INLINE | FIEMAP_EXTENT_DATA_TAIL)

/* All extents of FD within [0, size), sorted, non-overlapping. */
static int fiemap_read(int fd, uint64_t size, struct fmap_list *out)
{
    size_t sz = sizeof(struct fiemap) + FIEMAP_BATCH * sizeof(struct fiemap_extent);
    _cleanup_free_ struct fiemap *fm = xmalloc(sz);
    uint64_t next = 0;
    uint32_t sync = FIEMAP_FLAG_SYNC;
    while (next < size) {
        memset(fm, 0, sz);
        fm->fm_start = next;
        fm->fm_length = size - next;
        fm->fm_flags = sync;
        fm->fm_extent_count = FIEMAP_BATCH;
        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
            return -errno;
        sync = 0; /* one flush is enough */
        if (fm->fm_mapped_extents == 0)
            break;
        bool last = false;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
            struct fiemap_extent *e = &fm->fm_extents[i];
            struct fmap m = { e->fe_logical, e->fe_physical, e->fe_length, e->fe_flags };
            if (m.log < next) { /* the batch may restart inside an extent */
                uint64_t d = next - m.log;
                if (d >= m.len)
                    continue;
                m.log += d; m.phys += d; m.len -= d;
            }
            if (out->n == out->cap) {
                out->cap = out->cap ? out->cap * 2 : 256;
                out->v = xrealloc(out->v, out->cap * sizeof *out->v);
            }
            out->v[out->n++] = m;
            next = m.log + m.len;
            if (e->fe_flags & FIEMAP_EXTENT_LAST)
                last = true;
        }
        if (last)
            break;
    }
    return 0;
}

/* The state of a file at POS: *zero when it reads zeros (hole, unwritten,
 * past EOF), else *m is the extent; returns where that state ends. */
static uint64_t fmap_at(const struct fmap_list *l, size_t *i, uint64_t pos, uint64_t size,
                        bool *zero, const struct fmap **m)
{
    while (*i < l->n && l->v[*i].log + l->v[*i].len <= pos)
        (*i)++;
    if (pos >= size) {
        *zero = true;
        return UINT64_MAX;
    }
    if (*i < l->n && l->v[*i].log <= pos) {
        *m = &l->v[*i];
        *zero = (*m)->flags & FIEMAP_EXTENT_UNWRITTEN;
        return MIN((*m)->log + (*m)->len, size);
    }
    *zero = true;
    return *i < l->n ? MIN(l->v[*i].log, size) : size;
}

int extents_mapping_diff(int fromfd, uint64_t from_size, int tofd, uint64_t to_size,
                         struct range_list *out)
{
    struct fmap_list a = {0}, b = {0};
    int r = fiemap_read(fromfd, from_size, &a);
    if (r == 0)
        r = fiemap_read(tofd, to_size, &b);
    if (r < 0)
        goto out;
    uint64_t end = MAX(from_size, to_size), pos = 0;
    size_t i = 0, j = 0;
    while (pos < end) {
        bool za, zb;
        const struct fmap *ma = NULL, *mb = NULL;
        uint64_t ea = fmap_at(&a, &i, pos, from_size, &za, &ma);
        uint64_t eb = fmap_at(&b, &j, pos, to_size, &zb, &mb);
        uint64_t seg = MIN(MIN(ea, eb), end);
        bool same;
        if (za || zb)
            same = za && zb;
        else
            same = !((ma->flags | mb->flags) & FIEMAP_OPAQUE) &&
                   ma->phys + (pos - ma->log) == mb->phys + (pos - mb->log);
        if (!same)
            range_add(out, pos, seg - pos);
        pos = seg;
    }
out:
    free(a.v);
    free(b.v);
    return r;
}

int extents_count(int fd, uint64_t *ret)
{
    /* fm_extent_count 0 makes FIEMAP count without copying. */
    struct fiemap fm = { .fm_start = 0, .fm_length = FIEMAP_MAX_OFFSET,
                         .fm_flags = FIEMAP_FLAG_SYNC, .fm_extent_count = 0 };
    if (ioctl(fd, FS_IOC_FIEMAP, &fm) < 0)
        return -errno;
    *ret = fm.fm_mapped_extents;
    return 0;
}

int extents_count_range(int fd, uint64_t off, uint64_t len, uint64_t *ret_n, uint64_t *ret_shared)
{
    size_t sz = sizeof(struct fiemap) + FIEMAP_BATCH * sizeof(struct fiemap_extent);
    _cleanup_free_ struct fiemap *fm = xmalloc(sz);
    uint64_t n = 0, shared = 0, next = off, end = off + len;
    while (next < end) {
        memset(fm, 0, sz);
        fm->fm_start = next;
        fm->fm_length = end - next;
        fm->fm_extent_count = FIEMAP_BATCH;
        if (ioctl(fd, FS_IOC_FIEMAP, fm) < 0)
            return -errno;
        if (fm->fm_mapped_extents == 0)
            break;
        bool last = false;
        for (uint32_t i = 0; i < fm->fm_mapped_extents; i++) {
            struct fiemap_extent *e = &fm->fm_extents[i];
            if (e->fe_logical + e->fe_length <= next)
                continue;
            n++;
            if (e->fe_flags & FIEMAP_EXTENT_SHARED)
                shared++;
            next = e->fe_logical + e->fe_length;
            if (e->fe_flags & FIEMAP_EXTENT_LAST)
                last = true;
        }
        if (last)
            break;
    }
    *ret_n = n;
    *ret_shared = shared;
    return 0;
}
