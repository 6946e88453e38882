/* backend-fs.c: a repository in a local directory (file:///path).
 *
 * A key is a path below the root. Writes go to a temporary file beside the
 * target ("<name>.tmp-<random>"), are fsync'ed and renamed into place, so a
 * reader (or a rerun after a crash or power loss) sees either nothing or
 * the whole object: this is what lets an export skip chunks that exist.
 * The directory entry may still be lost by a power cut until flush, which
 * fsyncs each directory written to since the last flush, once, instead of
 * each directory after each object (a lost pack is only uploaded again,
 * since the manifest is written after the flush), and instead of syncfs,
 * which would also wait for every other writer's dirty data on the same
 * filesystem (the directories are fsynced from several threads at once, so
 * the filesystem commits them together). Locks (locks/...) are written
 * without an fsync: they only matter while their holder runs. Objects of a
 * MiB and more (packs) are written with O_DIRECT. put_if_absent links the temporary file instead of
 * renaming it, which fails atomically if the name exists. Listing skips
 * temporary files. Parent directories are created on demand; the root
 * itself is created by the first write (objstore_init). */
#include <dirent.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>

#include "amber/util.h"
#include "internal.h"

#define TMP_TAG ".tmp-"

struct fs_backend {
    struct objstore_backend base;
    char *root;
    pthread_mutex_t lock;       /* directories written to since the flush */
    char **dirty;
    size_t ndirty;
};

static void mark_dirty(struct fs_backend *fs, const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return;
    size_t n = (size_t)(slash - path);
    pthread_mutex_lock(&fs->lock);
    bool have = false;
    for (size_t i = fs->ndirty; i-- > 0 && !have;)
        have = strlen(fs->dirty[i]) == n && !strncmp(fs->dirty[i], path, n);
    if (!have) {
        fs->dirty = xrealloc(fs->dirty, (fs->ndirty + 1) * sizeof *fs->dirty);
        fs->dirty[fs->ndirty++] = strndup(path, n);
    }
    pthread_mutex_unlock(&fs->lock);
}

static char *fs_path(struct fs_backend *fs, const char *key)
{
    return xasprintf("%s/%s", fs->root, key);
}

static int fs_get(struct objstore_backend *b, const char *key, size_t max, struct buf *out)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key);
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return -errno;
    if (!S_ISREG(st.st_mode))
        return -EISDIR;
    if ((uint64_t)st.st_size > max)
        return -EFBIG;
    size_t want = (size_t)st.st_size;
    buf_reserve(out, want + 1);
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread(fd, out->data + out->len + got, want - got, (off_t)got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            break;      /* truncated under us: the caller's checks fail it */
        got += (size_t)n;
    }
    out->len += got;
    return 0;
}

static int fs_get_range(struct objstore_backend *b, const char *key, uint64_t off, size_t len,
                        struct buf *out)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key);
    _cleanup_close_ int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    buf_reserve(out, len + 1);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, out->data + out->len + got, len - got, (off_t)(off + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EBADMSG;    /* shorter than its index says */
        got += (size_t)n;
    }
    out->len += got;
    return 0;
}

static int fsync_dir_of(const char *path)
{
    _cleanup_free_ char *d = xstrdup(path);
    char *slash = strrchr(d, '/');
    if (!slash)
        return 0;
    *slash = 0;
    _cleanup_close_ int fd = open(*d ? d : "/", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    return fsync(fd) < 0 ? -errno : 0;
}

static int write_all(int fd, const uint8_t *p, size_t left)
{
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n, left -= (size_t)n;
    }
    return 0;
}

/* Large objects (packs) are written with O_DIRECT, through an aligned
 * bounce buffer: a buffered write of a pack cost more CPU than sealing it
 * (page-cache pages allocated, copied, accounted and written back), and a
 * pack is not read again soon. Writes the block-aligned head of the data
 * and says how much in *ret_done; the caller writes the rest buffered. Where
 * the filesystem refuses O_DIRECT (tmpfs) nothing is written this way. */
#define DIRECT_MIN (1u << 20)
#define DIRECT_BOUNCE (1u << 20)
#define DIRECT_ALIGN 4096u

static int write_direct(int fd, const void *data, size_t len, size_t *ret_done)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_DIRECT) < 0)
        return 0;
    uint8_t *bounce = NULL;
    if (posix_memalign((void **)&bounce, DIRECT_ALIGN, DIRECT_BOUNCE) != 0) {
        fcntl(fd, F_SETFL, fl);
        return 0;
    }
    size_t aligned = len / DIRECT_ALIGN * DIRECT_ALIGN, done = 0;
    int r = 0;
    while (done < aligned) {
        size_t n = MIN((size_t)DIRECT_BOUNCE, aligned - done);
        memcpy(bounce, (const uint8_t *)data + done, n);
        ssize_t w = write(fd, bounce, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0 && errno == EINVAL)
            break;              /* not here after all: the rest buffered */
        if (w < 0) {
            r = -errno;
            break;
        }
        done += (size_t)w;
        if ((size_t)w % DIRECT_ALIGN)
            break;              /* short and unaligned: buffered from here */
    }
    free(bounce);
    if (fcntl(fd, F_SETFL, fl) < 0 && r == 0)
        r = -errno;
    *ret_done = done;
    return r;
}

/* Write data to a fresh temporary file beside `path`; returns its name.
 * Without `sync` the data is not fsynced (locks: a lock lost with the
 * machine's power protects nothing any more). */
static int write_tmp(const char *path, const void *data, size_t len, bool sync, char **ret_tmp)
{
    uint8_t rnd[8];
    int r = random_bytes(rnd, sizeof rnd);
    if (r < 0)
        return r;
    uint64_t v;
    memcpy(&v, rnd, sizeof v);
    _cleanup_free_ char *tmp = xasprintf("%s" TMP_TAG "%016llx", path, (unsigned long long)v);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 && errno == ENOENT) {
        _cleanup_free_ char *d = xstrdup(path);
        *strrchr(d, '/') = 0;
        r = mkdir_p(d, 0700);
        if (r < 0)
            return r;
        fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    }
    if (fd < 0)
        return -errno;
    size_t done = 0;
    r = len >= DIRECT_MIN ? write_direct(fd, data, len, &done) : 0;
    if (r == 0)
        r = write_all(fd, (const uint8_t *)data + done, len - done);
    if (r == 0 && sync && fsync(fd) < 0)
        r = -errno;
    if (close(fd) < 0 && r == 0)
        r = -errno;
    if (r < 0) {
        unlink(tmp);
        return r;
    }
    *ret_tmp = TAKE_PTR(tmp);
    return 0;
}

static int fs_put(struct objstore_backend *b, const char *key, const void *data, size_t len)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key), *tmp = NULL;
    int r = write_tmp(p, data, len, strncmp(key, "locks/", 6) != 0, &tmp);
    if (r < 0)
        return r;
    if (rename(tmp, p) < 0) {
        r = -errno;
        unlink(tmp);
        return r;
    }
    /* The directory, and its parent (it may have been made for this one). */
    mark_dirty(fs, p);
    _cleanup_free_ char *dir = xstrdup(p);
    *strrchr(dir, '/') = 0;
    mark_dirty(fs, dir);
    return 0;
}

struct dir_sync {
    char **dirs;
    size_t n;
    atomic_size_t next;
    atomic_int err;
};

static void *dir_sync_worker(void *arg)
{
    struct dir_sync *ds = arg;
    for (size_t i; (i = atomic_fetch_add(&ds->next, 1)) < ds->n;) {
        if (atomic_load(&ds->err))
            break;
        int fd = open(ds->dirs[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC), r = 0;
        if (fd < 0 && errno != ENOENT)
            r = -errno;
        if (fd >= 0) {
            if (fsync(fd) < 0)
                r = -errno;
            close(fd);
        }
        if (r < 0) {
            int zero = 0;
            atomic_compare_exchange_strong(&ds->err, &zero, r);
        }
    }
    return NULL;
}

/* A full export dirties up to 256 pack directories: their fsyncs run from
 * several threads, so that the filesystem commits them together (one
 * journal commit for many, on ext4 and xfs) instead of one after another. */
#define FLUSH_THREADS 16

static int fs_flush(struct objstore_backend *b)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    pthread_mutex_lock(&fs->lock);
    struct dir_sync ds = { .dirs = fs->dirty, .n = fs->ndirty };
    fs->dirty = NULL;
    fs->ndirty = 0;
    pthread_mutex_unlock(&fs->lock);
    pthread_t th[FLUSH_THREADS];
    size_t nth = 0;
    for (; ds.n > 2 && nth < MIN((size_t)FLUSH_THREADS, ds.n / 2); nth++)
        if (pthread_create(&th[nth], NULL, dir_sync_worker, &ds) != 0)
            break;
    dir_sync_worker(&ds);
    for (size_t i = 0; i < nth; i++)
        pthread_join(th[i], NULL);
    for (size_t i = 0; i < ds.n; i++)
        free(ds.dirs[i]);
    free(ds.dirs);
    return atomic_load(&ds.err);
}

static int fs_put_if_absent(struct objstore_backend *b, const char *key, const void *data, size_t len)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key), *tmp = NULL;
    int r = write_tmp(p, data, len, true, &tmp);
    if (r < 0)
        return r;
    r = link(tmp, p) < 0 ? -errno : 0;
    unlink(tmp);
    if (r < 0)
        return r;
    return fsync_dir_of(p);
}

static int fs_head(struct objstore_backend *b, const char *key, struct objstore_stat *st)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key);
    struct stat s;
    if (stat(p, &s) < 0)
        return -errno;
    if (!S_ISREG(s.st_mode))
        return -ENOENT;
    if (st) {
        st->size = (uint64_t)s.st_size;
        st->mtime = s.st_mtim.tv_sec;
    }
    return 0;
}

static int fs_del(struct objstore_backend *b, const char *key)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    _cleanup_free_ char *p = fs_path(fs, key);
    if (unlink(p) < 0 && errno != ENOENT)
        return -errno;
    mark_dirty(fs, p);
    return 0;
}

typedef int (*list_cb)(void *ud, const char *key, const struct objstore_stat *st);

/* Walk directory `rel` (a key prefix ending in '/' or ""), reporting regular
 * files whose key starts with `prefix`. */
static int walk(struct fs_backend *fs, const char *rel, const char *prefix, list_cb cb, void *ud,
                int depth)
{
    if (depth > 16)
        return -ELOOP;
    _cleanup_free_ char *dir = xasprintf("%s/%s", fs->root, rel);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return errno == ENOENT ? 0 : -errno;
    DIR *d = fdopendir(dfd);
    if (!d) {
        int r = -errno;
        close(dfd);
        return r;
    }
    int r = 0;
    struct dirent *de;
    size_t plen = strlen(prefix);
    while ((errno = 0, de = readdir(d))) {
        if (de->d_name[0] == '.' || strstr(de->d_name, TMP_TAG))
            continue;
        _cleanup_free_ char *key = xasprintf("%s%s", rel, de->d_name);
        size_t klen = strlen(key);
        /* Only descend where the prefix can still match. */
        if (strncmp(key, prefix, MIN(klen, plen)) != 0)
            continue;
        struct stat s;
        if (fstatat(dfd, de->d_name, &s, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno == ENOENT)
                continue;   /* deleted while we walk */
            r = -errno;
            break;
        }
        if (S_ISDIR(s.st_mode)) {
            _cleanup_free_ char *sub = xasprintf("%s/", key);
            r = walk(fs, sub, prefix, cb, ud, depth + 1);
        } else if (S_ISREG(s.st_mode) && klen >= plen) {
            struct objstore_stat os = { .size = (uint64_t)s.st_size, .mtime = s.st_mtim.tv_sec };
            r = cb(ud, key, &os);
        }
        if (r)
            break;
    }
    if (!de && errno && !r)
        r = -errno;
    closedir(d);
    return r;
}

static int fs_list(struct objstore_backend *b, const char *prefix, list_cb cb, void *ud)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    /* Start at the deepest directory the prefix names. */
    _cleanup_free_ char *rel = xstrdup(prefix);
    char *slash = strrchr(rel, '/');
    if (slash)
        slash[1] = 0;
    else
        rel[0] = 0;
    return walk(fs, rel, prefix, cb, ud, 0);
}

static void fs_free(struct objstore_backend *b)
{
    struct fs_backend *fs = (struct fs_backend *)b;
    if (!fs)
        return;
    for (size_t i = 0; i < fs->ndirty; i++)
        free(fs->dirty[i]);
    free(fs->dirty);
    pthread_mutex_destroy(&fs->lock);
    free(fs->root);
    free(fs);
}

static const struct objstore_backend_ops fs_ops = {
    .name = "fs",
    .get = fs_get,
    .get_range = fs_get_range,
    .put = fs_put,
    .put_if_absent = fs_put_if_absent,
    .head = fs_head,
    .del = fs_del,
    .list = fs_list,
    .flush = fs_flush,
    .free = fs_free,
};

int backend_fs_open(const char *path, struct objstore_backend **ret, char **ret_err)
{
    if (!path || path[0] != '/') {
        if (ret_err)
            *ret_err = xasprintf("file URL needs an absolute path (file:///dir), got \"%s\"",
                                 path ? path : "");
        return -EINVAL;
    }
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    if (strstr(path, "/../") || (n >= 3 && !strncmp(path + n - 3, "/..", 3))) {
        if (ret_err)
            *ret_err = xasprintf("file URL path must not contain \"..\": \"%s\"", path);
        return -EINVAL;
    }
    struct fs_backend *fs = xcalloc(1, sizeof *fs);
    fs->base.ops = &fs_ops;
    pthread_mutex_init(&fs->lock, NULL);
    fs->root = strndup(path, n);
    if (!fs->root) {
        free(fs);
        return -ENOMEM;
    }
    *ret = &fs->base;
    return 0;
}
