/* mount.c: what the Node service needs from the kernel and the system's
 * tools: the mount table (/proc/self/mountinfo, the only truth about what
 * is staged and published, so the plugin keeps no state of its own),
 * mount(2)/umount2(2), and the filesystem tools run with fork/exec and no
 * shell (blkid, mkfs.ext4, mkfs.xfs, resize2fs, xfs_growfs).
 *
 * A device is formatted only when blkid's low-level probe finds no
 * signature at all on it (no filesystem, no partition table, no RAID or
 * LVM member): a volume with anything we do not recognise is never
 * overwritten. XFS is always mounted with "nouuid": a clone of a snapshot
 * carries its source's UUID, and both must mount on the same node. */
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <linux/fs.h>

#include "csi/csi.h"

#define CMD_OUT_MAX (64u << 10)
#define CMD_ERR_KEEP 2048u

void mnt_info_clear(struct mnt_info *m)
{
    free(m->root);
    free(m->target);
    free(m->fstype);
    free(m->source);
    *m = (struct mnt_info){0};
}

/* Undo mountinfo's octal escapes (\040 for space, …) in place. */
static void unescape(char *s)
{
    char *w = s;
    for (char *r = s; *r; ) {
        if (r[0] == '\\' && r[1] >= '0' && r[1] <= '3' && r[2] >= '0' && r[2] <= '7' &&
            r[3] >= '0' && r[3] <= '7') {
            *w++ = (char)((r[1] - '0') * 64 + (r[2] - '0') * 8 + (r[3] - '0'));
            r += 4;
        } else {
            *w++ = *r++;
        }
    }
    *w = 0;
}

/* Parse one mountinfo line (modified in place). 0 or -EINVAL. */
static int parse_line(char *line, struct mnt_info *out)
{
    char *f[64];
    size_t n = 0;
    for (char *save = NULL, *t = strtok_r(line, " \n", &save); t && n < ARRAY_SIZE(f);
         t = strtok_r(NULL, " \n", &save))
        f[n++] = t;
    /* id parent maj:min root target opts [optional…] - fstype source superopts */
    size_t dash = 6;
    while (dash < n && strcmp(f[dash], "-") != 0)
        dash++;
    if (n < 9 || dash + 2 >= n)
        return -EINVAL;
    unsigned maj, min;
    if (sscanf(f[2], "%u:%u", &maj, &min) != 2)
        return -EINVAL;
    for (size_t i = 3; i <= 4; i++)
        unescape(f[i]);
    unescape(f[dash + 2]);
    bool ro = false;
    for (char *save = NULL, *o = strtok_r(f[5], ",", &save); o; o = strtok_r(NULL, ",", &save))
        if (strcmp(o, "ro") == 0)
            ro = true;
    out->major = maj;
    out->minor = min;
    out->root = xstrdup(f[3]);
    out->target = xstrdup(f[4]);
    out->fstype = xstrdup(f[dash + 1]);
    out->source = xstrdup(f[dash + 2]);
    out->read_only = ro;
    return 0;
}

/* Call fn for each mount; stops when fn returns non-zero, and returns it. */
static int mnt_each(int (*fn)(struct mnt_info *m, void *data), void *data)
{
    _cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f)
        return -errno;
    _cleanup_free_ char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        struct mnt_info m = {0};
        if (parse_line(line, &m) < 0)
            continue;
        int r = fn(&m, data);
        mnt_info_clear(&m);
        if (r)
            return r;
    }
    return 0;
}

struct find_ctx {
    const char *path;
    struct mnt_info found;
    bool any;
};

static int find_cb(struct mnt_info *m, void *data)
{
    struct find_ctx *x = data;
    if (strcmp(m->target, x->path) == 0) {
        mnt_info_clear(&x->found);
        x->found = *m;              /* keep the last (topmost) */
        *m = (struct mnt_info){0};
        x->any = true;
    }
    return 0;
}

int mnt_find(const char *path, struct mnt_info *ret)
{
    char real[PATH_MAX];
    struct find_ctx x = { .path = realpath(path, real) ? real : path };
    int r = mnt_each(find_cb, &x);
    if (r < 0)
        return r;
    if (!x.any)
        return -ENOENT;
    *ret = x.found;
    return 0;
}

struct inuse_ctx {
    unsigned major, minor;
    const char *node;       /* "/loop3": the root of a bind of the device node */
    const char *except;
    bool found;
};

static int inuse_cb(struct mnt_info *m, void *data)
{
    struct inuse_ctx *x = data;
    if (x->except && strcmp(m->target, x->except) == 0)
        return 0;
    bool fs = m->major == x->major && m->minor == x->minor;
    bool node = strcmp(m->root, x->node) == 0 &&
                (strcmp(m->fstype, "devtmpfs") == 0 || strcmp(m->fstype, "tmpfs") == 0);
    if (fs || node) {
        x->found = true;
        return 1;
    }
    return 0;
}

bool mnt_device_in_use(const char *dev, const char *except)
{
    struct stat st;
    if (stat(dev, &st) < 0 || !S_ISBLK(st.st_mode))
        return false;
    const char *base = strrchr(dev, '/');
    _cleanup_free_ char *node = xasprintf("/%s", base ? base + 1 : dev);
    char real[PATH_MAX];
    struct inuse_ctx x = { .major = major(st.st_rdev), .minor = minor(st.st_rdev), .node = node,
                           .except = except && realpath(except, real) ? real : except };
    mnt_each(inuse_cb, &x);
    return x.found;
}

int mnt_unmount_all(const char *path)
{
    for (int i = 0; i < 32; i++) {
        struct mnt_info m = {0};
        int r = mnt_find(path, &m);
        mnt_info_clear(&m);
        if (r == -ENOENT)
            return 0;
        if (r < 0)
            return r;
        if (umount2(path, UMOUNT_NOFOLLOW) < 0) {
            if (errno == EINVAL || errno == ENOENT)
                return 0;
            return -errno;
        }
    }
    return -ELOOP;
}

/* mount(8)-style options that are flags; everything else is fs data. */
static const struct { const char *name; unsigned long set, clear; } mount_opts[] = {
    { "ro", MS_RDONLY, 0 },         { "rw", 0, MS_RDONLY },
    { "noatime", MS_NOATIME, 0 },   { "atime", 0, MS_NOATIME },
    { "relatime", MS_RELATIME, 0 }, { "norelatime", 0, MS_RELATIME },
    { "strictatime", MS_STRICTATIME, 0 },
    { "nodiratime", MS_NODIRATIME, 0 }, { "diratime", 0, MS_NODIRATIME },
    { "nodev", MS_NODEV, 0 },       { "dev", 0, MS_NODEV },
    { "nosuid", MS_NOSUID, 0 },     { "suid", 0, MS_NOSUID },
    { "noexec", MS_NOEXEC, 0 },     { "exec", 0, MS_NOEXEC },
    { "sync", MS_SYNCHRONOUS, 0 },  { "async", 0, MS_SYNCHRONOUS },
    { "dirsync", MS_DIRSYNC, 0 },   { "lazytime", MS_LAZYTIME, 0 },
    { "nolazytime", 0, MS_LAZYTIME }, { "defaults", 0, 0 },
};

int mnt_mount_fs(const char *dev, const char *target, const char *fstype, char *const *flags,
                 size_t n_flags, bool read_only, char **ret_err)
{
    unsigned long mf = 0;
    struct buf data = {0};
    if (strcmp(fstype, "xfs") == 0)
        buf_printf(&data, "nouuid");
    for (size_t i = 0; i < n_flags; i++) {
        _cleanup_free_ char *copy = xstrdup(flags[i]);
        for (char *save = NULL, *o = strtok_r(copy, ",", &save); o; o = strtok_r(NULL, ",", &save)) {
            bool known = false;
            for (size_t k = 0; k < ARRAY_SIZE(mount_opts) && !known; k++)
                if (strcmp(o, mount_opts[k].name) == 0) {
                    mf = (mf & ~mount_opts[k].clear) | mount_opts[k].set;
                    known = true;
                }
            if (!known && strcmp(o, "nouuid") != 0 && strcmp(o, "bind") != 0 &&
                strcmp(o, "remount") != 0)
                buf_printf(&data, "%s%s", data.len ? "," : "", o);
        }
    }
    if (read_only)
        mf |= MS_RDONLY;
    buf_append(&data, "", 1);
    int r = mkdir_p(target, 0750);
    if (r < 0 && r != -EEXIST) {
        buf_free(&data);
        *ret_err = xasprintf("cannot create %s: %s", target, strerror(-r));
        return r;
    }
    r = 0;
    if (mount(dev, target, fstype, mf, data.len > 1 ? (char *)data.data : NULL) < 0) {
        r = -errno;
        *ret_err = xasprintf("mount %s on %s (%s, options \"%s\"): %s", dev, target, fstype,
                             (char *)data.data, strerror(errno));
    }
    buf_free(&data);
    return r;
}

int mnt_bind(const char *source, const char *target, bool read_only)
{
    if (mount(source, target, NULL, MS_BIND, NULL) < 0)
        return -errno;
    if (read_only && mount(NULL, target, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY, NULL) < 0) {
        int r = -errno;
        umount2(target, UMOUNT_NOFOLLOW);
        return r;
    }
    return 0;
}

/* --- tools ------------------------------------------------------------------ */

int run_cmd(const char *const *argv, char **ret_out, char **ret_err)
{
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    if (pipe2(err, O_CLOEXEC) < 0) {
        int r = -errno;
        close(out[0]);
        close(out[1]);
        return r;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int r = -errno;
        close(out[0]); close(out[1]); close(err[0]); close(err[1]);
        return r;
    }
    if (pid == 0) {
        /* Only async-signal-safe calls until exec. The rpc runtime's
         * threads block signals; the tool must not inherit that. */
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(out[1], 1);
        dup2(err[1], 2);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(out[1]);
    close(err[1]);
    struct buf ob = {0}, eb = {0};
    struct pollfd pf[2] = { { .fd = out[0], .events = POLLIN }, { .fd = err[0], .events = POLLIN } };
    int open_fds = 2;
    while (open_fds > 0) {
        if (poll(pf, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char tmp[4096];
            ssize_t k = read(pf[i].fd, tmp, sizeof tmp);
            if (k < 0 && errno == EINTR)
                continue;
            if (k <= 0) {
                close(pf[i].fd);
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            struct buf *b = i == 0 ? &ob : &eb;
            if (i == 0 && b->len + (size_t)k > CMD_OUT_MAX)
                continue;    /* drop output past the bound; keep draining */
            buf_append(b, tmp, (size_t)k);
            if (i == 1 && b->len > 4 * CMD_ERR_KEEP) {
                memmove(b->data, b->data + b->len - CMD_ERR_KEEP, CMD_ERR_KEEP);
                b->len = CMD_ERR_KEEP;
            }
        }
    }
    for (int i = 0; i < 2; i++)
        if (pf[i].fd >= 0)
            close(pf[i].fd);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            buf_free(&ob);
            buf_free(&eb);
            return -errno;
        }
    buf_append(&ob, "", 1);
    if (eb.len > CMD_ERR_KEEP) {
        memmove(eb.data, eb.data + eb.len - CMD_ERR_KEEP, CMD_ERR_KEEP);
        eb.len = CMD_ERR_KEEP;
    }
    /* One line for logs and gRPC messages. */
    for (size_t i = 0; i < eb.len; i++)
        if (eb.data[i] == '\n' || eb.data[i] == '\r')
            eb.data[i] = ' ';
    while (eb.len && eb.data[eb.len - 1] == ' ')
        eb.len--;
    buf_append(&eb, "", 1);
    if (ret_out)
        *ret_out = (char *)TAKE_PTR(ob.data);
    if (ret_err)
        *ret_err = (char *)TAKE_PTR(eb.data);
    buf_free(&ob);
    buf_free(&eb);
    if (WIFEXITED(status))
        return WEXITSTATUS(status) == 127 ? -ENOENT : WEXITSTATUS(status);
    return 128 + WTERMSIG(status);
}

int fs_probe(const char *dev, char **ret_type)
{
    const char *argv[] = { "blkid", "-p", "-o", "export", dev, NULL };
    _cleanup_free_ char *out = NULL, *err = NULL;
    int r = run_cmd(argv, &out, &err);
    if (r < 0)
        return r;
    if (r == 2) {                   /* nothing found: an empty device */
        *ret_type = xstrdup("");
        return 0;
    }
    if (r != 0)
        return -EIO;
    const char *type = NULL, *pttype = NULL;
    for (char *save = NULL, *l = strtok_r(out, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (strncmp(l, "TYPE=", 5) == 0)
            type = l + 5;
        else if (strncmp(l, "PTTYPE=", 7) == 0)
            pttype = l + 7;
    }
    if (type && *type)
        *ret_type = xstrdup(type);
    else
        *ret_type = xasprintf("%s", pttype ? "partition table" : "unknown data");
    return 0;
}

int fs_make(const char *dev, const char *fstype, char **ret_err)
{
    const char *ext4[] = { "mkfs.ext4", "-q", "-F", "-E", "nodiscard", dev, NULL };
    const char *xfs[] = { "mkfs.xfs", "-q", "-K", dev, NULL };
    const char *const *argv = strcmp(fstype, "xfs") == 0 ? xfs : ext4;
    _cleanup_free_ char *err = NULL;
    int r = run_cmd(argv, NULL, &err);
    if (r == 0)
        return 0;
    *ret_err = xasprintf("%s %s: %s", argv[0], r < 0 ? "could not run" : "failed",
                         r < 0 ? strerror(-r) : err);
    return r < 0 ? r : -EIO;
}

int fs_grow(const char *dev, const char *mnt, const char *fstype, char **ret_err)
{
    const char *ext4[] = { "resize2fs", dev, NULL };
    const char *xfs[] = { "xfs_growfs", "-d", mnt, NULL };
    const char *const *argv = strcmp(fstype, "xfs") == 0 ? xfs : ext4;
    _cleanup_free_ char *err = NULL;
    int r = run_cmd(argv, NULL, &err);
    if (r == 0)
        return 0;
    *ret_err = xasprintf("%s %s: %s", argv[0], r < 0 ? "could not run" : "failed",
                         r < 0 ? strerror(-r) : err);
    return r < 0 ? r : -EIO;
}

int blockdev_size(const char *dev, uint64_t *ret)
{
    _cleanup_close_ int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    uint64_t sz;
    if (ioctl(fd, BLKGETSIZE64, &sz) < 0)
        return -errno;
    *ret = sz;
    return 0;
}
