/* loop.c: attach, find and detach loop devices; find a device's mount.
 *
 * Attaching uses LOOP_CTL_GET_FREE then LOOP_CONFIGURE (one ioctl that sets
 * the file, flags and block size atomically); another process may grab the
 * same free device between the two calls, so a busy device is retried with
 * the next free one. Autoclear stays off: a device outlives the daemon, and
 * the daemon finds it again by scanning /sys/block/loop*, matching the
 * backing file by (st_dev, st_ino) from LOOP_GET_STATUS64 rather than by
 * the name the kernel recorded (which goes stale on rename). When devtmpfs
 * is missing a node (some containers), it is made with mknod from sysfs. */
#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

#include "amber/util.h"
#include "snapd/pool/loop.h"

#define LOOP_BLOCK_SIZE 4096
#define ATTACH_TRIES 16

static void closedirp(DIR **d) { if (*d) closedir(*d); }

/* Open /dev/loopN, making the node from /sys/block/loopN/dev if absent. */
static int loop_open_index(unsigned n, int oflags, char **ret_path)
{
    _cleanup_free_ char *path = xasprintf("/dev/loop%u", n);
    int fd = open(path, oflags | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        _cleanup_free_ char *sys = xasprintf("/sys/block/loop%u/dev", n);
        _cleanup_free_ char *s = NULL;
        unsigned maj, min;
        if (read_file_all(sys, 64, &s, NULL) < 0 || sscanf(s, "%u:%u", &maj, &min) != 2)
            return -ENOENT;
        if (mknod(path, S_IFBLK | 0660, makedev(maj, min)) < 0 && errno != EEXIST)
            return -errno;
        fd = open(path, oflags | O_CLOEXEC);
    }
    if (fd < 0)
        return -errno;
    if (ret_path)
        *ret_path = TAKE_PTR(path);
    return fd;
}

static int parse_loop_index(const char *name, unsigned *ret)
{
    uint64_t n;
    if (strncmp(name, "loop", 4) != 0 || parse_u64(name + 4, &n) < 0 || n > 1u << 20)
        return -EINVAL;
    *ret = (unsigned)n;
    return 0;
}

int loop_find(const char *path, char **ret_dev)
{
    struct stat st;
    if (stat(path, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EINVAL;

    _cleanup_(closedirp) DIR *d = opendir("/sys/block");
    if (!d)
        return -errno;
    struct dirent *de;
    while ((de = readdir(d))) {
        unsigned n;
        if (parse_loop_index(de->d_name, &n) < 0)
            continue;
        _cleanup_free_ char *bf = xasprintf("/sys/block/%s/loop/backing_file", de->d_name);
        if (access(bf, F_OK) < 0)
            continue; /* not attached */
        _cleanup_free_ char *dev = NULL;
        _cleanup_close_ int fd = loop_open_index(n, O_RDONLY, &dev);
        if (fd < 0)
            continue;
        struct loop_info64 info = {0};
        if (ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
            continue; /* detached meanwhile */
        if (info.lo_inode == (uint64_t)st.st_ino && info.lo_device == (uint64_t)st.st_dev) {
            *ret_dev = TAKE_PTR(dev);
            return 0;
        }
    }
    return -ENOENT;
}

static bool loop_is_read_only(const char *dev)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    struct loop_info64 info = {0};
    if (fd < 0 || ioctl(fd, LOOP_GET_STATUS64, &info) < 0)
        return false;
    return info.lo_flags & LO_FLAGS_READ_ONLY;
}

static bool loop_uses_dio(const char *dev)
{
    const char *name = strrchr(dev, '/');
    _cleanup_free_ char *p = xasprintf("/sys/block/%s/loop/dio", name ? name + 1 : dev);
    _cleanup_free_ char *s = NULL;
    return read_file_all(p, 16, &s, NULL) >= 0 && s[0] == '1';
}

int loop_attach(const char *backing, unsigned flags, const char *label,
                char **ret_dev, bool *ret_dio)
{
    bool ro = flags & LOOP_ATTACH_READ_ONLY;
    _cleanup_free_ char *dev = NULL;
    int r = loop_find(backing, &dev);
    if (r == 0) {
        if (loop_is_read_only(dev) != ro)
            return -EROFS;
        if (ret_dio)
            *ret_dio = loop_uses_dio(dev);
        *ret_dev = TAKE_PTR(dev);
        return 0;
    }
    if (r != -ENOENT)
        return r;

    _cleanup_close_ int file = open(backing, (ro ? O_RDONLY : O_RDWR) | O_CLOEXEC);
    if (file < 0)
        return -errno;
    _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return -errno;

    struct loop_config cfg = {0};
    cfg.fd = (uint32_t)file;
    if (flags & LOOP_ATTACH_DIRECT_IO) {
        cfg.block_size = LOOP_BLOCK_SIZE;
        cfg.info.lo_flags |= LO_FLAGS_DIRECT_IO;
    }
    if (ro)
        cfg.info.lo_flags |= LO_FLAGS_READ_ONLY;
    if (label)
        snprintf((char *)cfg.info.lo_file_name, sizeof cfg.info.lo_file_name, "%s", label);

    for (int i = 0; i < ATTACH_TRIES; i++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return -errno;
        _cleanup_free_ char *path = NULL;
        _cleanup_close_ int fd = loop_open_index((unsigned)n, O_RDWR, &path);
        if (fd < 0)
            return fd;
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) < 0) {
            if (errno == EBUSY)
                continue; /* raced with another attacher */
            return -errno;
        }
        if (ret_dio)
            *ret_dio = loop_uses_dio(path);
        *ret_dev = TAKE_PTR(path);
        return 0;
    }
    return -EBUSY;
}

int loop_detach(const char *dev)
{
    /* O_EXCL on a block device fails with EBUSY while it is mounted or
     * claimed: the check and the claim are one step, so no mount can slip
     * in between. */
    int fd = open(dev, O_RDONLY | O_EXCL | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ioctl(fd, LOOP_CLR_FD) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    /* The kernel tears the device down at the last close, ours if nobody
     * else holds it, and may finish asynchronously: wait (bounded) until
     * sysfs shows it gone, since callers unmount the backing filesystem
     * next. sysfs has no event for this, hence the short polls. */
    close(fd);
    for (int i = 0; i < 2000; i++) {
        _cleanup_free_ char *bf = NULL;
        if (loop_backing_file(dev, &bf) == -ENXIO)
            return 0;
        struct timespec ts = { 0, 1000000L };
        nanosleep(&ts, NULL);
    }
    return -EINPROGRESS; /* still open elsewhere: detached at its last close */
}

int loop_set_capacity(const char *dev)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (ioctl(fd, LOOP_SET_CAPACITY, 0) < 0)
        return -errno;
    return 0;
}

int loop_backing_file(const char *dev, char **ret)
{
    const char *name = strrchr(dev, '/');
    name = name ? name + 1 : dev;
    if (strncmp(name, "loop", 4) != 0)
        return -EINVAL;
    _cleanup_free_ char *p = xasprintf("/sys/block/%s/loop/backing_file", name);
    _cleanup_free_ char *s = NULL;
    size_t len;
    int r = read_file_all(p, 8192, &s, &len);
    if (r == -ENOENT)
        return -ENXIO;
    if (r < 0)
        return r;
    while (len > 0 && s[len - 1] == '\n')
        s[--len] = 0;
    *ret = TAKE_PTR(s);
    return 0;
}

/* Undo mountinfo's octal escapes (\040 for space) in place. */
static void unescape_octal(char *s)
{
    char *w = s;
    for (char *r = s; *r; r++) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 3;
        } else {
            *w++ = *r;
        }
    }
    *w = 0;
}

/* Whether a mountinfo line names device RDEV: by its major:minor, or (btrfs
 * shows an anonymous device number there) by its mount source. */
static bool mountinfo_is_dev(char *line, unsigned maj, unsigned min, dev_t rdev)
{
    if (makedev(maj, min) == rdev)
        return true;
    char *sep = strstr(line, " - ");
    if (!sep)
        return false;
    char src[4096];
    if (sscanf(sep + 3, "%*s %4095s", src) != 1 || strncmp(src, "/dev/", 5) != 0)
        return false;
    unescape_octal(src);
    struct stat st;
    return stat(src, &st) == 0 && S_ISBLK(st.st_mode) && st.st_rdev == rdev;
}

/* Call FN on each mount point of DEV until it returns non-zero. */
static int dev_mounts(const char *dev, int (*fn)(const char *mp, void *ud), void *ud)
{
    struct stat st;
    if (stat(dev, &st) < 0)
        return -errno;
    if (!S_ISBLK(st.st_mode))
        return -ENOTBLK;
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    _cleanup_free_ char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        /* id parent major:minor root mountpoint options... - fstype source super-options */
        unsigned maj, min;
        int pos = 0;
        if (sscanf(line, "%*u %*u %u:%u %*s %n", &maj, &min, &pos) != 2 || pos == 0)
            continue;
        if (!mountinfo_is_dev(line, maj, min, st.st_rdev))
            continue;
        char *mp = line + pos;
        char *end = strchr(mp, ' ');
        if (!end)
            continue;
        *end = 0;
        unescape_octal(mp);
        int r = fn(mp, ud);
        if (r != 0)
            return r;
    }
    return 0;
}

static int first_mp(const char *mp, void *ud)
{
    *(char **)ud = xstrdup(mp);
    return 1;
}

int dev_find_mountpoint(const char *dev, char **ret)
{
    char *mp = NULL;
    int r = dev_mounts(dev, first_mp, &mp);
    if (r < 0)
        return r;
    if (!mp)
        return -ENOENT;
    *ret = mp;
    return 0;
}

static int same_mp(const char *mp, void *ud)
{
    return strcmp(mp, ud) == 0;
}

int dev_mounted_at(const char *dev, const char *path)
{
    _cleanup_free_ char *real = realpath(path, NULL);
    if (!real)
        return errno == ENOENT ? 0 : -errno;
    return dev_mounts(dev, same_mp, real);
}
