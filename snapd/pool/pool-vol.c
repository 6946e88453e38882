/* pool-vol.c: volumes, snapshots, clones, reverts, extents and attach.
 *
 * Each operation checks its ids and state here, then asks the backend for
 * the filesystem-specific step. Creations build under ".new-<id>" and
 * become visible with one rename(RENAME_NOREPLACE), so a failure or crash
 * leaves nothing (pool_open sweeps dot-names); a revert swaps the old and
 * the new content with one rename(RENAME_EXCHANGE). A volume or snapshot
 * attached to a loop device is never deleted or replaced under it. */
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "amber/util.h"
#include "snapd/pool/loop.h"
#include "snapd/pool/pool.h"

static int check_ids(const char *vol, const char *snap)
{
    if (!vol || name_validate(vol) < 0)
        return -EINVAL;
    if (snap && name_validate(snap) < 0)
        return -EINVAL;
    return 0;
}

char *pool_disk_path(struct pool *p, const char *vol, const char *snap)
{
    if (snap)
        return xasprintf("%s/snaps/%s/%s/" POOL_DISK, p->dir, vol, snap);
    return xasprintf("%s/vols/%s/" POOL_DISK, p->dir, vol);
}

/* Open vols/ (SNAPS false) or snaps/<vol>/ (made first if CREATE). */
static int open_parent(struct pool *p, const char *vol, bool snaps, bool create)
{
    _cleanup_free_ char *sub = snaps ? xasprintf("snaps/%s", vol) : xstrdup("vols");
    if (create && mkdirat(p->dirfd, sub, 0700) < 0 && errno != EEXIST)
        return -errno;
    int fd = openat(p->dirfd, sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

/* Open the container of VOL (SNAP NULL) or of its snapshot SNAP. */
static int open_container(struct pool *p, const char *vol, const char *snap)
{
    _cleanup_free_ char *sub = snap ? xasprintf("snaps/%s/%s", vol, snap) : xasprintf("vols/%s", vol);
    int fd = openat(p->dirfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return fd < 0 ? -errno : fd;
}

static bool exists_at(int dirfd, const char *name)
{
    struct stat st;
    return fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

/* Whether a loop device backs VOL's (or SNAP's) image: -EBUSY if so. */
static int check_detached(struct pool *p, const char *vol, const char *snap)
{
    _cleanup_free_ char *path = pool_disk_path(p, vol, snap);
    _cleanup_free_ char *dev = NULL;
    int r = loop_find(path, &dev);
    if (r == 0)
        return -EBUSY;
    return r == -ENOENT ? 0 : r;
}

/* The thin-provisioning policy: a size the filesystem could never hold,
 * or a pool already eating into its reserve, is refused. */
static int check_room(struct pool *p, uint64_t size)
{
    if (size == 0 || size % POOL_ALIGN)
        return -EINVAL;
    struct pool_space s;
    int r = pool_get_space(p, &s);
    if (r < 0)
        return r;
    if (s.total <= s.reserve || size > s.total - s.reserve || s.free < s.reserve)
        return -ENOSPC;
    return 0;
}

static int set_nocow(int fd)
{
    unsigned int flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
        return -errno;
    flags |= FS_NOCOW_FL;
    if (ioctl(fd, FS_IOC_SETFLAGS, &flags) < 0)
        return -errno;
    flags = 0;
    if (ioctl(fd, FS_IOC_GETFLAGS, &flags) < 0)
        return -errno;
    return flags & FS_NOCOW_FL ? 0 : -EOPNOTSUPP;
}

/* A new container for NAME in dir, holding an empty disk image of `size`
 * bytes (No_COW where the backend wants it), under the temporary name
 * .new-NAME (a leftover of a crash replaced), once NAME is known to be free
 * and the pool to have room: the image's fd in *ret_fd, the container's in
 * *ret_c (-1 unless ret_c), the temporary name in *ret_tmp. On failure
 * nothing is left. The caller checked size <= INT64_MAX. */
static int new_container(struct pool *p, int dir, const char *name, uint64_t size, char **ret_tmp,
                         int *ret_c, int *ret_fd)
{
    if (exists_at(dir, name))
        return -EEXIST;
    int r = check_room(p, size);
    if (r < 0)
        return r;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", name);
    (void)p->ops->container_remove(p, dir, tmp);
    r = p->ops->container_create(p, dir, tmp);
    if (r < 0)
        return r;
    _cleanup_close_ int c = openat(dir, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int fd = c < 0 ? -1 : openat(c, POOL_DISK, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        r = -errno;
    /* No_COW only takes on an empty file. */
    if (r == 0 && p->ops->nocow)
        r = set_nocow(fd);
    if (r == 0 && ftruncate(fd, (off_t)size) < 0)
        r = -errno;
    if (r < 0) {
        (void)p->ops->container_remove(p, dir, tmp);
        return r;
    }
    *ret_tmp = TAKE_PTR(tmp);
    if (ret_c)
        *ret_c = TAKE_FD(c);
    *ret_fd = TAKE_FD(fd);
    return 0;
}

int pool_vol_create(struct pool *p, const char *vol, uint64_t size)
{
    int r = check_ids(vol, NULL);
    if (r < 0)
        return r;
    if (size > (uint64_t)INT64_MAX)
        return -EINVAL;
    _cleanup_close_ int vols = open_parent(p, vol, false, false);
    if (vols < 0)
        return vols;
    _cleanup_free_ char *tmp = NULL;
    {
        _cleanup_close_ int c = -1, fd = -1;
        r = new_container(p, vols, vol, size, &tmp, &c, &fd);
        if (r < 0)
            return r;
        if (fsync(fd) < 0 || fsync(c) < 0)
            r = -errno;
    }
    if (r == 0 && renameat2(vols, tmp, vols, vol, RENAME_NOREPLACE) < 0)
        r = -errno;
    if (r < 0) {
        (void)p->ops->container_remove(p, vols, tmp);
        return r;
    }
    return fsync(vols) < 0 ? -errno : 0;
}

/* Remove snaps/VOL once it holds no snapshot and VOL is gone (or going):
 * nothing is left of a volume deleted with all its snapshots. */
static void drop_empty_snapdir(struct pool *p, const char *vol)
{
    _cleanup_free_ char *live = xasprintf("vols/%s", vol), *dir = xasprintf("snaps/%s", vol);
    struct stat st;
    if (fstatat(p->dirfd, live, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return;
    (void)unlinkat(p->dirfd, dir, AT_REMOVEDIR);   /* ENOTEMPTY: snapshots remain */
}

int pool_vol_delete(struct pool *p, const char *vol)
{
    int r = check_ids(vol, NULL);
    if (r < 0)
        return r;
    _cleanup_close_ int vols = open_parent(p, vol, false, false);
    if (vols < 0)
        return vols;
    if (!exists_at(vols, vol))
        return -ENOENT;
    r = check_detached(p, vol, NULL);
    if (r < 0)
        return r;
    /* Out of sight first, so a crash mid-way never shows half a volume. */
    _cleanup_free_ char *tmp = xasprintf(".del-%s", vol);
    (void)p->ops->container_remove(p, vols, tmp);
    if (renameat(vols, vol, vols, tmp) < 0)
        return -errno;
    (void)fsync(vols);
    r = p->ops->container_remove(p, vols, tmp);
    if (r == 0 || r == -ENOENT)
        drop_empty_snapdir(p, vol);
    return r == -ENOENT ? 0 : r;
}

int pool_vol_resize(struct pool *p, const char *vol, uint64_t new_size)
{
    int r = check_ids(vol, NULL);
    if (r < 0)
        return r;
    if (new_size > (uint64_t)INT64_MAX)
        return -EINVAL;
    _cleanup_free_ char *path = pool_disk_path(p, vol, NULL);
    _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (new_size == (uint64_t)st.st_size)
        return 0;
    if (new_size < (uint64_t)st.st_size)
        return -EINVAL;
    r = check_room(p, new_size);
    if (r < 0)
        return r;
    if (ftruncate(fd, (off_t)new_size) < 0 || fsync(fd) < 0)
        return -errno;
    _cleanup_free_ char *dev = NULL;
    r = loop_find(path, &dev);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    return loop_set_capacity(dev);
}

int pool_snap_create(struct pool *p, const char *vol, const char *snap, uint64_t *ret_generation)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_close_ int src = open_container(p, vol, NULL);
    if (src < 0)
        return src;
    _cleanup_close_ int dir = open_parent(p, vol, true, true);
    if (dir < 0)
        return dir;
    if (exists_at(dir, snap))
        return -EEXIST;
    uint64_t gen = 0;
    r = p->ops->snapshot(p, src, dir, snap, true, &gen);
    if (r < 0)
        return r;
    if (ret_generation)
        *ret_generation = gen;
    return 0;
}

int pool_snap_delete(struct pool *p, const char *vol, const char *snap)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_close_ int dir = open_parent(p, vol, true, false);
    if (dir < 0)
        return dir;
    if (!exists_at(dir, snap))
        return -ENOENT;
    r = check_detached(p, vol, snap);
    if (r < 0)
        return r;
    r = p->ops->container_remove(p, dir, snap);
    if (r == 0)
        drop_empty_snapdir(p, vol);
    return r;
}

int pool_vol_clone(struct pool *p, const char *vol, const char *snap, const char *new_vol)
{
    int r = check_ids(vol, snap);
    if (r < 0 || (r = check_ids(new_vol, NULL)) < 0)
        return r;
    _cleanup_close_ int src = open_container(p, vol, snap);
    if (src < 0)
        return src;
    _cleanup_close_ int vols = open_parent(p, vol, false, false);
    if (vols < 0)
        return vols;
    if (exists_at(vols, new_vol))
        return -EEXIST;
    struct stat st;
    if (fstatat(src, POOL_DISK, &st, 0) < 0)
        return -errno;
    r = check_room(p, (uint64_t)st.st_size);
    if (r < 0)
        return r;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", new_vol);
    (void)p->ops->container_remove(p, vols, tmp);
    r = p->ops->snapshot(p, src, vols, tmp, false, NULL);
    if (r < 0)
        return r;
    if (renameat2(vols, tmp, vols, new_vol, RENAME_NOREPLACE) < 0) {
        r = -errno;
        (void)p->ops->container_remove(p, vols, tmp);
        return r;
    }
    return fsync(vols) < 0 ? -errno : 0;
}

int pool_vol_revert(struct pool *p, const char *vol, const char *snap)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_close_ int src = open_container(p, vol, snap);
    if (src < 0)
        return src;
    _cleanup_close_ int vols = open_parent(p, vol, false, false);
    if (vols < 0)
        return vols;
    if (!exists_at(vols, vol))
        return -ENOENT;
    r = check_detached(p, vol, NULL);
    if (r < 0)
        return r;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", vol);
    (void)p->ops->container_remove(p, vols, tmp);
    r = p->ops->snapshot(p, src, vols, tmp, false, NULL);
    if (r < 0)
        return r;
    if (renameat2(vols, tmp, vols, vol, RENAME_EXCHANGE) < 0) {
        r = -errno;
        (void)p->ops->container_remove(p, vols, tmp);
        return r;
    }
    if (fsync(vols) < 0)
        return -errno;
    /* TMP now holds the old content; if removing it fails, pool_open will. */
    (void)p->ops->container_remove(p, vols, tmp);
    return 0;
}

int pool_stat(struct pool *p, const char *vol, const char *snap, struct pool_file_info *ret)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_close_ int c = open_container(p, vol, snap);
    if (c < 0)
        return c;
    struct stat st;
    if (fstatat(c, POOL_DISK, &st, AT_SYMLINK_NOFOLLOW) < 0)
        return -errno;
    uint64_t gen = 0;
    if (snap) {
        r = p->ops->generation(p, c, &gen);
        if (r < 0)
            return r;
    }
    _cleanup_free_ char *path = pool_disk_path(p, vol, snap);
    char *dev = NULL;
    r = loop_find(path, &dev);
    if (r < 0 && r != -ENOENT)
        return r;
    *ret = (struct pool_file_info){
        .size = (uint64_t)st.st_size,
        .allocated = (uint64_t)st.st_blocks * 512,
        .generation = gen,
        .device = dev,
    };
    return 0;
}

int pool_diff(struct pool *p, const char *vol, const char *from, const char *to,
              pool_extent_cb cb, void *userdata, struct pool_diff_stats *stats)
{
    int r = check_ids(vol, from);
    if (r < 0 || !from || (to && (r = check_ids(vol, to)) < 0))
        return r < 0 ? r : -EINVAL;
    _cleanup_close_ int fromfd = open_container(p, vol, from);
    if (fromfd < 0)
        return fromfd;
    _cleanup_close_ int tofd = open_container(p, vol, to);
    if (tofd < 0)
        return tofd;
    struct stat sa, sb;
    if (fstatat(fromfd, POOL_DISK, &sa, 0) < 0 || fstatat(tofd, POOL_DISK, &sb, 0) < 0)
        return -errno;
    struct pool_diff_stats st = {0};
    struct range_list l = {0};
    r = p->ops->diff(p, fromfd, tofd, to == NULL, &l, &st);
    if (r == 0) {
        uint64_t limit = MAX((uint64_t)sa.st_size, (uint64_t)sb.st_size);
        range_normalize(&l, limit);
        r = range_emit(&l, cb, userdata, &st);
    }
    range_list_free(&l);
    if (r == 0 && stats)
        *stats = st;
    return r;
}

int pool_allocated(struct pool *p, const char *vol, const char *snap,
                   pool_extent_cb cb, void *userdata)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = pool_disk_path(p, vol, snap);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    struct range_list l = {0};
    r = extents_data(fd, (uint64_t)st.st_size, &l);
    if (r == 0) {
        range_normalize(&l, (uint64_t)st.st_size);
        r = range_emit(&l, cb, userdata, NULL);
    }
    range_list_free(&l);
    return r;
}

int pool_attach(struct pool *p, const char *vol, const char *snap, char **ret_dev)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = pool_disk_path(p, vol, snap);
    struct stat st;
    if (lstat(path, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;
    char label[64];
    snprintf(label, sizeof label, "amber:%s%s%s", vol, snap ? "@" : "", snap ? snap : "");
    unsigned flags = LOOP_ATTACH_DIRECT_IO | (snap ? LOOP_ATTACH_READ_ONLY : 0);
    return loop_attach(path, flags, label, ret_dev, NULL);
}

int pool_detach(struct pool *p, const char *vol, const char *snap)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = pool_disk_path(p, vol, snap);
    _cleanup_free_ char *dev = NULL;
    r = loop_find(path, &dev);
    if (r == -ENOENT)
        return 0;
    if (r < 0)
        return r;
    return loop_detach(dev);
}

/* --- snapshots built from outside bytes (the snapshot store) ------------- */

int pool_snap_build(struct pool *p, const char *vol, const char *snap, uint64_t size, int *ret_fd)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    if (size > (uint64_t)INT64_MAX)
        return -EINVAL;
    _cleanup_close_ int dir = open_parent(p, vol, true, true);
    if (dir < 0)
        return dir;
    _cleanup_free_ char *tmp = NULL;
    return new_container(p, dir, snap, size, &tmp, NULL, ret_fd);
}

int pool_snap_build_from(struct pool *p, const char *vol, const char *snap, const char *base,
                         uint64_t size, int *ret_fd)
{
    int r = check_ids(vol, snap);
    if (r < 0 || (r = check_ids(vol, base)) < 0)
        return r;
    if (size > (uint64_t)INT64_MAX)
        return -EINVAL;
    _cleanup_close_ int src = open_container(p, vol, base);
    if (src < 0)
        return src;
    _cleanup_close_ int dir = open_parent(p, vol, true, false);
    if (dir < 0)
        return dir;
    if (exists_at(dir, snap))
        return -EEXIST;
    struct pool_space s;
    if ((r = pool_get_space(p, &s)) < 0)
        return r;
    if (s.free < s.reserve)
        return -ENOSPC;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", snap);
    (void)p->ops->container_remove(p, dir, tmp);
    r = p->ops->snapshot(p, src, dir, tmp, false, NULL);
    if (r < 0)
        return r;
    _cleanup_close_ int c = openat(dir, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int fd = c < 0 ? -1 : openat(c, POOL_DISK, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        r = -errno;
    if (r == 0 && ftruncate(fd, (off_t)size) < 0)
        r = -errno;
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        (void)p->ops->container_remove(p, dir, tmp);
        return r;
    }
    *ret_fd = fd;
    return 0;
}

int pool_snap_build_commit(struct pool *p, const char *vol, const char *snap)
{
    int r = check_ids(vol, snap);
    if (r < 0)
        return r;
    _cleanup_close_ int dir = open_parent(p, vol, true, false);
    if (dir < 0)
        return dir;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", snap);
    {
        _cleanup_close_ int c = openat(dir, tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (c < 0)
            return -errno;
        _cleanup_close_ int fd = openat(c, POOL_DISK, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0 || fsync(c) < 0)
            return -errno;
    }
    if (p->ops->seal && (r = p->ops->seal(p, dir, tmp)) < 0)
        return r;
    if (renameat2(dir, tmp, dir, snap, RENAME_NOREPLACE) < 0)
        return -errno;
    return fsync(dir) < 0 ? -errno : 0;
}

void pool_snap_build_abort(struct pool *p, const char *vol, const char *snap)
{
    if (check_ids(vol, snap) < 0)
        return;
    _cleanup_close_ int dir = open_parent(p, vol, true, false);
    if (dir < 0)
        return;
    _cleanup_free_ char *tmp = xasprintf(".new-%s", snap);
    (void)p->ops->container_remove(p, dir, tmp);
    drop_empty_snapdir(p, vol);
}

/* --- defragmenting the live image ---------------------------------------- */

int pool_vol_extents(struct pool *p, const char *vol, uint64_t off, uint64_t len,
                     uint64_t *ret_n, uint64_t *ret_shared)
{
    int r = check_ids(vol, NULL);
    if (r < 0)
        return r;
    _cleanup_free_ char *path = pool_disk_path(p, vol, NULL);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    return extents_count_range(fd, off, len, ret_n, ret_shared);
}

int pool_vol_defrag(struct pool *p, const char *vol, uint64_t off, uint64_t len)
{
    int r = check_ids(vol, NULL);
    if (r < 0)
        return r;
    if (!p->ops->defrag)
        return -EOPNOTSUPP;
    _cleanup_free_ char *path = pool_disk_path(p, vol, NULL);
    /* Defragmenting needs write access to the file (not the loop device). */
    _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return -errno;
    return p->ops->defrag(p, fd, off, len);
}
