/* pool.c: opening a pool: its metadata file, its lock, its layout, the
 * clean-up of work a crash left half done, and listing what is on disk.
 *
 * The pool records its backend and format in DIR/.amber/pool.json, written
 * once, atomically; a pool is served by one process at a time, enforced by
 * flock on DIR/.amber/lock (released by the kernel when the process dies,
 * so a crash never leaves a stale lock). Every multi-step change in vols/
 * and snaps/<vol>/ works under a name starting with '.' and ends with one
 * rename, so pool_open only has to remove dot-names to be consistent: a
 * ".new-X" is either a creation that was never acknowledged or (after a
 * revert's exchange) the old content, a ".del-X" a deletion in progress,
 * a ".part-X" an XFS copy in progress. Volume and snapshot operations are
 * in pool-vol.c. */
#include <dirent.h>
#include <fcntl.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#include "amber/util.h"
#include "snapd/pool/pool.h"

static const struct pool_backend_ops *const backends[] = {
    &pool_backend_btrfs,
    &pool_backend_xfs,
};

static const struct pool_backend_ops *backend_by_name(const char *name)
{
    for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
        if (strcmp(backends[i]->name, name) == 0)
            return backends[i];
    return NULL;
}

static void closedirp(DIR **d) { if (*d) closedir(*d); }

int pool_rm_dir(int dirfd, const char *name)
{
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    _cleanup_(closedirp) DIR *d = fdopendir(fd);
    if (!d) {
        int r = -errno;
        close(fd);
        return r;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
            continue;
        if (unlinkat(fd, de->d_name, 0) < 0 && errno != ENOENT)
            return -errno;
    }
    if (unlinkat(dirfd, name, AT_REMOVEDIR) < 0)
        return -errno;
    return 0;
}

/* Extract "key": value (a string or an unsigned number) from our own small
 * JSON file. Not a general parser: pool.json is written by pool_open. */
static char *json_get(const char *json, const char *key)
{
    _cleanup_free_ char *pat = xasprintf("\"%s\"", key);
    const char *p = strstr(json, pat);
    if (!p)
        return NULL;
    p += strlen(pat);
    while (*p == ' ' || *p == ':')
        p++;
    if (*p == '"') {
        const char *e = strchr(p + 1, '"');
        return e ? strndup(p + 1, (size_t)(e - p - 1)) : NULL;
    }
    size_t n = strspn(p, "0123456789");
    return n ? strndup(p, n) : NULL;
}

static int pool_read_meta(struct pool *p, const char **backend, uint64_t *format)
{
    _cleanup_free_ char *path = xasprintf("%s/.amber/pool.json", p->dir);
    _cleanup_free_ char *json = NULL;
    int r = read_file_all(path, 64 * 1024, &json, NULL);
    if (r < 0)
        return r;
    _cleanup_free_ char *b = json_get(json, "backend");
    _cleanup_free_ char *f = json_get(json, "format");
    if (!b || !f || parse_u64(f, format) < 0)
        return -EBADMSG;
    const struct pool_backend_ops *ops = backend_by_name(b);
    if (!ops)
        return -EMEDIUMTYPE;
    *backend = ops->name;
    return 0;
}

static int pool_write_meta(struct pool *p)
{
    char ts[64];
    format_time_ns(now_real_ns(), ts, sizeof ts);
    _cleanup_free_ char *json = xasprintf(
        "{\"format\": %d, \"backend\": \"%s\", \"created\": \"%s\"}\n",
        POOL_FORMAT_VERSION, p->ops->name, ts);
    _cleanup_free_ char *path = xasprintf("%s/.amber/pool.json", p->dir);
    return write_file_atomic(path, json, strlen(json), 0644);
}

/* Remove every dot-name in directory NAME of DIRFD (see the top comment). */
static int pool_sweep(struct pool *p, int dirfd, const char *name)
{
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT ? 0 : -errno;
    int dfd = dup(fd);
    if (dfd < 0)
        return -errno;
    _cleanup_(closedirp) DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -errno;
    }
    struct dirent *de;
    int ret = 0;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, ".new-", 5) != 0 && strncmp(de->d_name, ".del-", 5) != 0 &&
            strncmp(de->d_name, ".part-", 6) != 0)
            continue;
        int r = p->ops->container_remove(p, fd, de->d_name);
        if (r < 0 && r != -ENOENT && ret == 0)
            ret = r;
    }
    return ret;
}

static int pool_recover(struct pool *p)
{
    int r = pool_sweep(p, p->dirfd, "vols");
    if (r < 0)
        return r;
    _cleanup_close_ int snaps = openat(p->dirfd, "snaps", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (snaps < 0)
        return -errno;
    int dfd = dup(snaps);
    if (dfd < 0)
        return -errno;
    _cleanup_(closedirp) DIR *d = fdopendir(dfd);
    if (!d) {
        close(dfd);
        return -errno;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        r = pool_sweep(p, snaps, de->d_name);
        if (r < 0)
            return r;
    }
    return 0;
}

int pool_open(const char *dir, const struct pool_open_opts *opts, struct pool **ret)
{
    static const struct pool_open_opts defaults = {0};
    if (!opts)
        opts = &defaults;
    if (!dir || !*dir)
        return -EINVAL;

    struct pool *p = xcalloc(1, sizeof *p);
    p->dirfd = p->lockfd = -1;
    p->dir = xstrdup(dir);
    p->reserve_bytes = opts->reserve_bytes;
    p->max_extents = opts->max_extents ? opts->max_extents : 65536;
    int r;

    p->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (p->dirfd < 0) {
        r = -errno;
        goto fail;
    }
    struct statfs sfs;
    if (fstatfs(p->dirfd, &sfs) < 0) {
        r = -errno;
        goto fail;
    }
    if (mkdirat(p->dirfd, ".amber", 0700) < 0 && errno != EEXIST) {
        r = -errno;
        goto fail;
    }
    p->lockfd = openat(p->dirfd, ".amber/lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (p->lockfd < 0) {
        r = -errno;
        goto fail;
    }
    if (flock(p->lockfd, LOCK_EX | LOCK_NB) < 0) {
        r = errno == EWOULDBLOCK ? -EBUSY : -errno;
        goto fail;
    }

    const char *recorded = NULL;
    uint64_t format = 0;
    r = pool_read_meta(p, &recorded, &format);
    if (r == 0) {
        if (format > POOL_FORMAT_VERSION) {
            r = -EPROTONOSUPPORT;
            goto fail;
        }
        if (opts->backend && strcmp(opts->backend, recorded) != 0) {
            r = -EMEDIUMTYPE;
            goto fail;
        }
        p->ops = backend_by_name(recorded);
    } else if (r == -ENOENT) {
        if (opts->backend) {
            p->ops = backend_by_name(opts->backend);
            if (!p->ops) {
                r = -EINVAL;
                goto fail;
            }
        } else {
            for (size_t i = 0; i < ARRAY_SIZE(backends); i++)
                if (backends[i]->fs_magic == (long)sfs.f_type)
                    p->ops = backends[i];
        }
    } else {
        goto fail;
    }
    if (!p->ops || p->ops->fs_magic != (long)sfs.f_type) {
        r = -EMEDIUMTYPE;
        goto fail;
    }
    r = p->ops->check(p);
    if (r < 0)
        goto fail;
    if (!recorded) {
        r = pool_write_meta(p);
        if (r < 0)
            goto fail;
    }
    if ((mkdirat(p->dirfd, "vols", 0700) < 0 && errno != EEXIST) ||
        (mkdirat(p->dirfd, "snaps", 0700) < 0 && errno != EEXIST)) {
        r = -errno;
        goto fail;
    }
    r = pool_recover(p);
    if (r < 0)
        goto fail;
    *ret = p;
    return 0;
fail:
    pool_close(p);
    return r;
}

void pool_close(struct pool *p)
{
    if (!p)
        return;
    if (p->lockfd >= 0)
        close(p->lockfd); /* releases the flock */
    if (p->dirfd >= 0)
        close(p->dirfd);
    free(p->dir);
    free(p);
}

const char *pool_dir(const struct pool *p) { return p->dir; }
const char *pool_backend_name(const struct pool *p) { return p->ops->name; }

int pool_get_space(struct pool *p, struct pool_space *ret)
{
    struct statfs s;
    if (fstatfs(p->dirfd, &s) < 0)
        return -errno;
    uint64_t bs = s.f_frsize ? (uint64_t)s.f_frsize : (uint64_t)s.f_bsize;
    ret->total = (uint64_t)s.f_blocks * bs;
    ret->free = (uint64_t)s.f_bavail * bs;
    ret->reserve = p->reserve_bytes ? p->reserve_bytes : MAX(64ULL << 20, ret->total / 50);
    return 0;
}

static int strcmpp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int list_dir(int dirfd, const char *name, bool want_dirs, char ***ret)
{
    size_t n = 0, cap = 8;
    char **v = xcalloc(cap, sizeof *v);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            *ret = v;
            return 0;
        }
        free(v);
        return -errno;
    }
    _cleanup_(closedirp) DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        free(v);
        return -ENOMEM;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || name_validate(de->d_name) < 0)
            continue;
        if (want_dirs && de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
            continue;
        if (n + 1 >= cap) {
            cap *= 2;
            v = xrealloc(v, cap * sizeof *v);
        }
        v[n++] = xstrdup(de->d_name);
    }
    v[n] = NULL;
    qsort(v, n, sizeof *v, strcmpp);
    *ret = v;
    return 0;
}

int pool_list(struct pool *p, const char *vol, char ***ret)
{
    if (!vol)
        return list_dir(p->dirfd, "vols", true, ret);
    if (name_validate(vol) < 0)
        return -EINVAL;
    _cleanup_free_ char *sub = xasprintf("snaps/%s", vol);
    return list_dir(p->dirfd, sub, true, ret);
}

int pool_list_snap_owners(struct pool *p, char ***ret)
{
    return list_dir(p->dirfd, "snaps", true, ret);
}

void pool_strv_free(char **v)
{
    if (!v)
        return;
    for (char **s = v; *s; s++)
        free(*s);
    free(v);
}
