/* pool-image.c: the embedded default pool, a filesystem in an image file.
 *
 * For demos, tests and single-disk nodes: a sparse file formatted btrfs
 * (or xfs with reflink), attached to a loop device with direct I/O (no
 * double caching with the host filesystem) and mounted. mkfs runs by
 * fork/exec with no shell, on "<image>.mkfs", renamed to <image> only
 * when formatted: an image that exists is a formatted one. A daemon that
 * restarts finds its loop device (by the image's inode) and its mount (by
 * device and mount point) and adopts them; teardown undoes exactly the
 * device and mount it holds, checked by device path, never by name. */
#include <fcntl.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "amber/util.h"
#include "snapd/pool/loop.h"
#include "snapd/pool/pool.h"

struct pool_image {
    char *image;
    char *mountpoint;
    char *device;
    bool attached;
    bool mounted;
};

/* Run ARGV (argv[0] looked up in PATH, then /usr/sbin and /sbin) with
 * stdio on /dev/null. 0 on exit status 0, -ENOENT when not found, -EIO. */
static int run(char *const argv[])
{
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (null >= 0) {
            dup2(null, 0);
            dup2(null, 1);
            dup2(null, 2);
        }
        execvp(argv[0], argv);
        char path[256];
        snprintf(path, sizeof path, "/usr/sbin/%s", argv[0]);
        execv(path, argv);
        snprintf(path, sizeof path, "/sbin/%s", argv[0]);
        execv(path, argv);
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -errno;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return -ENOENT;
    return -EIO;
}

static int image_create(const char *image, uint64_t size, const char *fs)
{
    if (size == 0 || size % POOL_ALIGN || size > (uint64_t)INT64_MAX)
        return -EINVAL;
    _cleanup_free_ char *tmp = xasprintf("%s.mkfs", image);
    {
        _cleanup_close_ int fd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
            return -errno;
        if (ftruncate(fd, (off_t)size) < 0) {
            int r = -errno;
            unlink(tmp);
            return r;
        }
    }
    int r;
    if (strcmp(fs, "btrfs") == 0) {
        char *const argv[] = { "mkfs.btrfs", "-q", "-f", tmp, NULL };
        r = run(argv);
    } else {
        /* 4 KiB sectors: the loop device has 4 KiB logical blocks. */
        char *const argv[] = { "mkfs.xfs", "-q", "-f", "-m", "reflink=1", "-s", "size=4096", tmp, NULL };
        r = run(argv);
    }
    if (r == 0 && rename(tmp, image) < 0)
        r = -errno;
    if (r < 0)
        unlink(tmp);
    return r;
}

/* Writeback throttling on the pool's own loop device throttles each
 * transaction commit's metadata writes against the volumes' direct I/O:
 * measured, it stretched every snapshot (create p50 63 -> 23 ms with it
 * off). Best effort: older kernels or other devices may not have it. */
static void no_wbt(const char *dev)
{
    const char *name = strrchr(dev, '/');
    _cleanup_free_ char *path = xasprintf("/sys/block/%s/queue/wbt_lat_usec", name ? name + 1 : dev);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    (void)!write(fd, "0\n", 2);
    close(fd);
}

int pool_image_setup(const char *image, uint64_t size, const char *mountpoint,
                     const char *fs, struct pool_image **ret)
{
    if (!image || !mountpoint || !fs || (strcmp(fs, "btrfs") != 0 && strcmp(fs, "xfs") != 0))
        return -EINVAL;
    struct stat st;
    int r;
    if (stat(image, &st) < 0) {
        if (errno != ENOENT)
            return -errno;
        r = image_create(image, size, fs);
        if (r < 0)
            return r;
    } else if (!S_ISREG(st.st_mode)) {
        return -EINVAL;
    }
    r = mkdir_p(mountpoint, 0755);
    if (r < 0)
        return r;

    struct pool_image *img = xcalloc(1, sizeof *img);
    img->image = xstrdup(image);
    img->mountpoint = xstrdup(mountpoint);
    r = loop_attach(image, LOOP_ATTACH_DIRECT_IO, "amber-pool", &img->device, NULL);
    if (r < 0)
        goto fail;
    img->attached = true;
    no_wbt(img->device);
    r = dev_mounted_at(img->device, mountpoint);
    if (r < 0)
        goto fail;
    /* btrfs: commit every 5 s, so the cleaner drops deleted snapshots in
     * small batches instead of one burst every 30 s that stalls snapshot
     * creation and writers for up to a second (bench-notes, store README). */
    if (r == 0 && mount(img->device, mountpoint, fs, MS_NOATIME,
                        strcmp(fs, "btrfs") == 0 ? "commit=5" : NULL) < 0) {
        r = -errno;
        goto fail;
    }
    img->mounted = true;
    *ret = img;
    return 0;
fail:
    pool_image_teardown(img);
    return r;
}

const char *pool_image_device(const struct pool_image *img) { return img->device; }
const char *pool_image_mountpoint(const struct pool_image *img) { return img->mountpoint; }

int pool_image_teardown(struct pool_image *img)
{
    if (!img)
        return 0;
    int ret = 0;
    if (img->mounted) {
        /* Unmount only if the top mount there is still our device. */
        int r = dev_mounted_at(img->device, img->mountpoint);
        if (r > 0 && umount2(img->mountpoint, UMOUNT_NOFOLLOW) < 0)
            r = -errno;
        if (r < 0 && ret == 0)
            ret = r;
    }
    if (img->attached) {
        int r = loop_detach(img->device);
        if (r < 0 && r != -ENXIO && ret == 0)
            ret = r;
    }
    free(img->image);
    free(img->mountpoint);
    free(img->device);
    free(img);
    return ret;
}
