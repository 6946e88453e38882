/* pool-btrfs.c: the default backend: subvolumes, snapshots, generations.
 *
 * A volume is a subvolume; a snapshot is a read-only snapshot of it, made
 * in one ioctl and O(1) whatever the size; clone and revert are writable
 * snapshots of a snapshot. The image file has No_COW, yet after a snapshot
 * its shared blocks are copied once on the first write, which is exactly
 * what keeps snapshots intact.
 *
 * Changed extents come from btrfs generations, like `btrfs subvolume
 * find-new`. A snapshot S is made at the commit of transaction T (its
 * otransid): every change of the volume before it is in S, every change
 * after it writes a file extent item whose generation is > T, because
 *  - a write to a block shared with a snapshot is a copy-on-write that
 *    inserts a new item, and btrfs also forces CoW for any extent not newer
 *    than the subvolume's last snapshot (even No_COW ones, even after that
 *    snapshot is deleted), so no in-place write can hide under an old item;
 *  - a split of an old item keeps its generation but also its bytes.
 * So TREE_SEARCH_V2 over the newer tree with min_transid T+1 (which skips
 * every leaf not rewritten since T: O(changed)) finds every written range.
 * What it cannot see is an item that vanished: with the NO_HOLES feature
 * (mkfs default) a punched hole (a discard through the loop device) leaves
 * no item at all. Those are found separately: ranges that are data in the
 * older file and read as holes in the newer (SEEK_DATA/SEEK_HOLE). The
 * same check also covers a file that shrank.
 * All this holds only when both sides descend from the same live subvolume
 * (the snapshots' parent uuid), or the live volume was made from FROM (a
 * revert to FROM). After a revert to another snapshot the volume is a
 * different subvolume whose items carry older generations, so then (and
 * for any other lineage) the diff compares physical mappings (FIEMAP). */
#include <endian.h>
#include <fcntl.h>
#include <linux/btrfs.h>
#include <linux/btrfs_tree.h>
#include <linux/magic.h>
#include <stddef.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "amber/util.h"
#include "snapd/pool/pool.h"

#define SEARCH_BUF (256 * 1024)

static int btrfs_check(struct pool *p)
{
    struct btrfs_ioctl_feature_flags f = {0};
    if (ioctl(p->dirfd, BTRFS_IOC_GET_FEATURES, &f) < 0)
        return -errno;
    p->no_holes = f.incompat_flags & BTRFS_FEATURE_INCOMPAT_NO_HOLES;
    return 0;
}

static int vol_args(struct btrfs_ioctl_vol_args *a, const char *name)
{
    memset(a, 0, sizeof *a);
    if (strlen(name) >= sizeof a->name)
        return -ENAMETOOLONG;
    strcpy(a->name, name);
    return 0;
}

static int btrfs_container_create(struct pool *p, int dirfd, const char *name)
{
    struct btrfs_ioctl_vol_args a;
    int r = vol_args(&a, name);
    if (r < 0)
        return r;
    if (ioctl(dirfd, BTRFS_IOC_SUBVOL_CREATE, &a) < 0)
        return -errno;
    return 0;
}

static int btrfs_container_remove(struct pool *p, int dirfd, const char *name)
{
    struct stat st;
    if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    if (!S_ISDIR(st.st_mode))
        return -ENOTDIR;
    if (st.st_ino != BTRFS_FIRST_FREE_OBJECTID)
        return pool_rm_dir(dirfd, name); /* a plain directory */
    struct btrfs_ioctl_vol_args a;
    int r = vol_args(&a, name);
    if (r < 0)
        return r;
    /* Unlinks the subvolume at once; the cleaner frees it in the background. */
    if (ioctl(dirfd, BTRFS_IOC_SNAP_DESTROY, &a) < 0)
        return -errno;
    return 0;
}

static int subvol_info(int fd, struct btrfs_ioctl_get_subvol_info_args *ret)
{
    memset(ret, 0, sizeof *ret);
    if (ioctl(fd, BTRFS_IOC_GET_SUBVOL_INFO, ret) < 0)
        return -errno;
    return 0;
}

static int btrfs_generation(struct pool *p, int fd, uint64_t *ret)
{
    struct btrfs_ioctl_get_subvol_info_args info;
    int r = subvol_info(fd, &info);
    if (r < 0)
        return r;
    *ret = info.otransid;
    return 0;
}

static int btrfs_snapshot(struct pool *p, int srcfd, int dstdirfd, const char *name,
                          bool readonly, uint64_t *ret_gen)
{
    struct btrfs_ioctl_vol_args_v2 a = {0};
    if (strlen(name) >= sizeof a.name)
        return -ENAMETOOLONG;
    strcpy(a.name, name);
    a.fd = srcfd;
    a.flags = readonly ? BTRFS_SUBVOL_RDONLY : 0;
    if (ioctl(dstdirfd, BTRFS_IOC_SNAP_CREATE_V2, &a) < 0)
        return -errno;
    if (!ret_gen)
        return 0;
    _cleanup_close_ int fd = openat(dstdirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int r = fd < 0 ? -errno : btrfs_generation(p, fd, ret_gen);
    if (r < 0)
        (void)btrfs_container_remove(p, dstdirfd, name);
    return r;
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof v);
    return le64toh(v);
}

/* Add every range of file FD's extent items newer than BASE. Holes and
 * preallocated ranges (which read zeros) wholly past ZERO_FROM (the older
 * file's size, beyond which it reads zeros too) are left out. */
static int find_new(int fd, uint64_t base, uint64_t zero_from, struct range_list *out)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    _cleanup_free_ struct btrfs_ioctl_search_args_v2 *args = xmalloc(sizeof *args + SEARCH_BUF);
    struct btrfs_ioctl_search_key *sk = &args->key;
    memset(args, 0, sizeof *args);
    sk->tree_id = 0; /* the subvolume FD is in */
    sk->min_objectid = sk->max_objectid = st.st_ino;
    sk->min_type = sk->max_type = BTRFS_EXTENT_DATA_KEY;
    sk->min_offset = 0;
    sk->max_offset = UINT64_MAX;
    sk->min_transid = base + 1;
    sk->max_transid = UINT64_MAX;

    for (;;) {
        sk->nr_items = UINT32_MAX;
        args->buf_size = SEARCH_BUF;
        if (ioctl(fd, BTRFS_IOC_TREE_SEARCH_V2, args) < 0)
            return -errno;
        if (sk->nr_items == 0)
            return 0;
        const uint8_t *buf = (const uint8_t *)args->buf;
        size_t off = 0;
        uint64_t last = 0;
        for (uint32_t i = 0; i < sk->nr_items; i++) {
            struct btrfs_ioctl_search_header h;
            if (off + sizeof h > SEARCH_BUF)
                return -EIO;
            memcpy(&h, buf + off, sizeof h);
            off += sizeof h;
            const uint8_t *item = buf + off;
            if (off + h.len > SEARCH_BUF)
                return -EIO;
            off += h.len;
            last = h.offset;
            if (h.objectid != st.st_ino || h.type != BTRFS_EXTENT_DATA_KEY)
                continue;
            if (h.len < offsetof(struct btrfs_file_extent_item, disk_bytenr))
                return -EIO;
            uint64_t gen = get_le64(item + offsetof(struct btrfs_file_extent_item, generation));
            uint64_t ram = get_le64(item + offsetof(struct btrfs_file_extent_item, ram_bytes));
            uint8_t type = item[offsetof(struct btrfs_file_extent_item, type)];
            if (gen <= base)
                continue; /* an old item in a rewritten leaf */
            uint64_t len;
            bool zeros = false;
            if (type == BTRFS_FILE_EXTENT_INLINE) {
                len = (ram + 4095) & ~4095ULL; /* inline data covers whole sectors */
                if (len == 0)
                    len = 4096;
            } else {
                if (h.len < sizeof(struct btrfs_file_extent_item))
                    return -EIO;
                uint64_t bytenr = get_le64(item + offsetof(struct btrfs_file_extent_item, disk_bytenr));
                len = get_le64(item + offsetof(struct btrfs_file_extent_item, num_bytes));
                zeros = type == BTRFS_FILE_EXTENT_PREALLOC || bytenr == 0;
            }
            if (zeros && h.offset >= zero_from)
                continue;
            range_add(out, h.offset, len);
        }
        if (last == UINT64_MAX)
            return 0;
        sk->min_offset = last + 1;
    }
}

static bool uuid_zero(const uint8_t *u)
{
    static const uint8_t z[BTRFS_UUID_SIZE];
    return memcmp(u, z, BTRFS_UUID_SIZE) == 0;
}

static int btrfs_diff(struct pool *p, int fromfd, int tofd, bool to_live,
                      struct range_list *out, struct pool_diff_stats *stats)
{
    struct btrfs_ioctl_get_subvol_info_args fi, ti;
    int r = subvol_info(fromfd, &fi);
    if (r < 0 || (r = subvol_info(tofd, &ti)) < 0)
        return r;
    _cleanup_close_ int fd_from = openat(fromfd, POOL_DISK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd_from < 0)
        return -errno;
    _cleanup_close_ int fd_to = openat(tofd, POOL_DISK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd_to < 0)
        return -errno;
    /* A live image may have buffered writes (a loop device that fell back
     * from direct I/O): flush them into extent items first. */
    if (to_live && fdatasync(fd_to) < 0)
        return -errno;
    struct stat sa, sb;
    if (fstat(fd_from, &sa) < 0 || fstat(fd_to, &sb) < 0)
        return -errno;
    uint64_t size_from = (uint64_t)sa.st_size, size_to = (uint64_t)sb.st_size;

    bool related;
    if (to_live)
        /* FROM was taken of the live volume, or the live volume was made
         * from FROM (a revert to it): either way its changes are newer. */
        related = memcmp(fi.parent_uuid, ti.uuid, BTRFS_UUID_SIZE) == 0 ||
                  memcmp(ti.parent_uuid, fi.uuid, BTRFS_UUID_SIZE) == 0;
    else
        related = !uuid_zero(fi.parent_uuid) &&
                  memcmp(fi.parent_uuid, ti.parent_uuid, BTRFS_UUID_SIZE) == 0;
    related = related && sa.st_ino == sb.st_ino;
    if (!related) {
        stats->method = "mapping";
        return extents_mapping_diff(fd_from, size_from, fd_to, size_to, out);
    }
    stats->method = "generation";
    if (memcmp(fi.uuid, ti.uuid, BTRFS_UUID_SIZE) == 0)
        return 0; /* the same snapshot */

    /* Symmetric: search the newer tree for items newer than the older. */
    int older = fd_from, newer = fd_to;
    uint64_t base = fi.otransid, older_size = size_from, newer_size = size_to;
    if (!to_live && ti.otransid < fi.otransid) {
        older = fd_to;
        newer = fd_from;
        base = ti.otransid;
        older_size = size_to;
        newer_size = size_from;
    }
    r = find_new(newer, base, older_size, out);
    if (r < 0)
        return r;
    /* Data that became holes leaves no item (NO_HOLES) or an explicit hole
     * item that a merge may not re-date: check the layout in every case. */
    return extents_became_holes(older, older_size, newer, newer_size, out);
}

static int btrfs_seal(struct pool *p, int dirfd, const char *name)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint64_t flags = 0;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, &flags) < 0)
        return -errno;
    flags |= BTRFS_SUBVOL_RDONLY;
    if (ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, &flags) < 0)
        return -errno;
    return 0;
}

/* Rewrite a range into extents of up to 32 MiB (`btrfs filesystem
 * defragment -t 32M`: a 1 GiB image from 101k extents to 2), flushing the
 * rewritten data so the new extents exist on return. */
static int btrfs_defrag(struct pool *p, int fd, uint64_t off, uint64_t len)
{
    struct btrfs_ioctl_defrag_range_args a = {
        .start = off, .len = len, .flags = BTRFS_DEFRAG_RANGE_START_IO,
        .extent_thresh = 32u << 20,
    };
    if (ioctl(fd, BTRFS_IOC_DEFRAG_RANGE, &a) < 0)
        return -errno;
    return 0;
}

const struct pool_backend_ops pool_backend_btrfs = {
    .name = "btrfs",
    .fs_magic = BTRFS_SUPER_MAGIC,
    .nocow = true,
    .check = btrfs_check,
    .container_create = btrfs_container_create,
    .container_remove = btrfs_container_remove,
    .snapshot = btrfs_snapshot,
    .generation = btrfs_generation,
    .diff = btrfs_diff,
    .seal = btrfs_seal,
    .defrag = btrfs_defrag,
};
