/* pool-xfs.c: the opt-in XFS backend: reflinked copies.
 *
 * A volume is a plain directory with its image; a snapshot is a directory
 * holding a reflink (FICLONE) of it. A reflink shares every extent, so it
 * is cheap in space, but it is not O(1): it costs ~22 µs an extent and the
 * kernel holds the source's locks for the whole clone, so the volume's
 * writers stall meanwhile (118k extents: 2.7 s). Snapshots of a live image
 * are therefore refused with -E2BIG above pool->max_extents (counted with
 * FIEMAP first), and pool.h documents this. There are no generations:
 * changed extents come from comparing the two files' physical mappings,
 * which is exact for shared blocks (XFS never overwrites a shared block in
 * place) but costs O(extents of both files). A copy is built under
 * ".part-<name>", fsync'd, and renamed into place. */
#include <fcntl.h>
#include <linux/fs.h>
#include <linux/magic.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "amber/util.h"
#include "snapd/pool/pool.h"

/* Reflink must work here: try it on two small files in .amber. */
static int xfs_check(struct pool *p)
{
    static const char a[] = ".amber/.reflink-probe-a", b[] = ".amber/.reflink-probe-b";
    char block[4096];
    memset(block, 0xa5, sizeof block);
    int r = 0;
    _cleanup_close_ int fa = openat(p->dirfd, a, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    _cleanup_close_ int fb = openat(p->dirfd, b, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fa < 0 || fb < 0)
        r = -errno;
    else if (write(fa, block, sizeof block) != (ssize_t)sizeof block || fsync(fa) < 0)
        r = -EIO;
    else if (ioctl(fb, FICLONE, fa) < 0)
        r = (errno == EOPNOTSUPP || errno == EINVAL || errno == EXDEV) ? -EOPNOTSUPP : -errno;
    (void)unlinkat(p->dirfd, a, 0);
    (void)unlinkat(p->dirfd, b, 0);
    return r;
}

static int xfs_container_create(struct pool *p, int dirfd, const char *name)
{
    if (mkdirat(dirfd, name, 0700) < 0)
        return -errno;
    return 0;
}

static int xfs_container_remove(struct pool *p, int dirfd, const char *name)
{
    return pool_rm_dir(dirfd, name);
}

static int xfs_generation(struct pool *p, int fd, uint64_t *ret)
{
    *ret = 0;
    return 0;
}

static int xfs_snapshot(struct pool *p, int srcfd, int dstdirfd, const char *name,
                        bool readonly, uint64_t *ret_gen)
{
    _cleanup_close_ int src = openat(srcfd, POOL_DISK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (src < 0)
        return -errno;
    /* Read-only snapshots are taken of live volumes: guard their writers. */
    if (readonly) {
        uint64_t n;
        int r = extents_count(src, &n);
        if (r < 0)
            return r;
        if (n > p->max_extents)
            return -E2BIG;
    }
    _cleanup_free_ char *tmp = xasprintf(".part-%s", name);
    (void)pool_rm_dir(dstdirfd, tmp);
    if (mkdirat(dstdirfd, tmp, 0700) < 0)
        return -errno;
    int r = 0;
    {
        _cleanup_close_ int d = openat(dstdirfd, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        _cleanup_close_ int dst = d < 0 ? -1 :
            openat(d, POOL_DISK, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, readonly ? 0400 : 0600);
        if (dst < 0)
            r = -errno;
        else if (ioctl(dst, FICLONE, src) < 0)
            r = -errno;
        else if (fsync(dst) < 0 || fsync(d) < 0)
            r = -errno;
    }
    if (r == 0 && renameat2(dstdirfd, tmp, dstdirfd, name, RENAME_NOREPLACE) < 0)
        r = -errno;
    if (r < 0) {
        (void)pool_rm_dir(dstdirfd, tmp);
        return r;
    }
    if (fsync(dstdirfd) < 0)
        return -errno;
    if (ret_gen)
        *ret_gen = 0;
    return 0;
}

static int xfs_diff(struct pool *p, int fromfd, int tofd, bool to_live,
                    struct range_list *out, struct pool_diff_stats *stats)
{
    _cleanup_close_ int a = openat(fromfd, POOL_DISK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (a < 0)
        return -errno;
    _cleanup_close_ int b = openat(tofd, POOL_DISK, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (b < 0)
        return -errno;
    struct stat sa, sb;
    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0)
        return -errno;
    stats->method = "mapping";
    return extents_mapping_diff(a, (uint64_t)sa.st_size, b, (uint64_t)sb.st_size, out);
}

const struct pool_backend_ops pool_backend_xfs = {
    .name = "xfs",
    .fs_magic = XFS_SUPER_MAGIC,
    .nocow = false,
    .check = xfs_check,
    .container_create = xfs_container_create,
    .container_remove = xfs_container_remove,
    .snapshot = xfs_snapshot,
    .generation = xfs_generation,
    .diff = xfs_diff,
};
