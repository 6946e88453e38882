/* test-objstore-lib.h: helpers the objstore tests share: a temporary
 * directory, a seeded generator, images, exports, byte comparisons. Each
 * test file includes it once. */
/* Not every test file uses every helper. */
#pragma GCC diagnostic ignored "-Wunused-function"
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "amber/objstore.h"
#include "amber/util.h"
#include "check.h"

#define PASS "correct horse battery staple"
#define BLK 4096u

static char tmpdir[] = "/tmp/test-objstore.XXXXXX";
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void fill_random(uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = (uint8_t)(rnd() >> 24);
}

static char *repo_url(const char *name)
{
    return xasprintf("file://%s/%s", tmpdir, name);
}

static struct objstore *open_url(const char *url)
{
    struct objstore *repo = NULL;
    _cleanup_free_ char *err = NULL;
    int r = objstore_open(url, PASS, &repo, &err);
    if (r < 0) {
        fprintf(stderr, "open %s: %s (%s)\n", url, strerror(-r), err ? err : "");
        exit(1);
    }
    return repo;
}

static struct objstore *make_repo(const char *name, uint32_t cs)
{
    _cleanup_free_ char *url = repo_url(name), *err = NULL;
    int r = objstore_init(url, PASS, cs, &err);
    if (r < 0)
        fprintf(stderr, "init %s: %s (%s)\n", url, strerror(-r), err ? err : "");
    CHECK_EQ(r, 0);
    return open_url(url);
}

static int img_open(const char *name, uint64_t size)
{
    _cleanup_free_ char *p = xasprintf("%s/%s", tmpdir, name);
    int fd = open(p, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
        perror(p);
        exit(1);
    }
    return fd;
}

static void img_write(int fd, uint64_t off, const void *p, size_t n)
{
    if (pwrite(fd, p, n, (off_t)off) != (ssize_t)n) {
        perror("pwrite");
        exit(1);
    }
}

static void img_random(int fd, uint64_t off, size_t n)
{
    uint8_t *b = xmalloc(n);
    fill_random(b, n);
    img_write(fd, off, b, n);
    free(b);
}

static uint8_t *img_read(int fd, uint64_t size)
{
    uint8_t *b = xcalloc(1, size ? size : 1);
    if (size && pread(fd, b, size, 0) != (ssize_t)size) {
        perror("pread");
        exit(1);
    }
    return b;
}

/* The allocated extents of a file, as the daemon would pass for a first
 * export. */
static size_t data_ranges(int fd, uint64_t size, struct objstore_range **ret)
{
    struct objstore_range *r = NULL;
    size_t n = 0;
    off_t pos = 0;
    while ((uint64_t)pos < size) {
        off_t d = lseek(fd, pos, SEEK_DATA);
        if (d < 0)
            break;
        off_t h = lseek(fd, d, SEEK_HOLE);
        r = xrealloc(r, (n + 1) * sizeof *r);
        r[n++] = (struct objstore_range){ (uint64_t)d, (uint64_t)(h - d) };
        pos = h;
    }
    *ret = r;
    return n;
}

/* Workers of do_export (0: the default). */
static unsigned export_parallelism;

static int do_export(struct objstore *repo, int fd, uint64_t size, const struct objstore_range *ranges,
                     size_t nranges, const char *parent, struct objstore_export_result *res)
{
    struct objstore_label labels[] = { { "pipeline", "train" }, { "run", "42" } };
    struct objstore_export_req req = {
        .fd = fd, .size = size, .ranges = ranges, .nranges = nranges, .parent = parent,
        .snapshot_uuid = "0b7e4c2a-5f7e-4e53-9a0c-2d1c3b4a5e6f", .volume_name = "vol1",
        .labels = labels, .nlabels = 2, .parallelism = export_parallelism,
    };
    return objstore_export(repo, &req, res);
}

static int export_alloc(struct objstore *repo, int fd, uint64_t size, struct objstore_export_result *res)
{
    struct objstore_range *ranges;
    size_t n = data_ranges(fd, size, &ranges);
    int r = do_export(repo, fd, size, ranges, n, NULL, res);
    free(ranges);
    return r;
}

static bool files_equal(int a, int b, uint64_t size)
{
    struct stat sa, sb;
    if (fstat(a, &sa) < 0 || fstat(b, &sb) < 0 || (uint64_t)sa.st_size != size ||
        (uint64_t)sb.st_size != size) {
        fprintf(stderr, "size mismatch: %lld %lld want %llu\n", (long long)sa.st_size,
                (long long)sb.st_size, (unsigned long long)size);
        return false;
    }
    size_t bs = 1 << 20;
    uint8_t *x = xmalloc(bs), *y = xmalloc(bs);
    bool eq = true;
    for (uint64_t off = 0; off < size && eq; off += bs) {
        size_t n = (size_t)MIN((uint64_t)bs, size - off);
        if (pread(a, x, n, (off_t)off) != (ssize_t)n || pread(b, y, n, (off_t)off) != (ssize_t)n ||
            memcmp(x, y, n)) {
            fprintf(stderr, "content differs near offset %llu\n", (unsigned long long)off);
            eq = false;
        }
    }
    free(x);
    free(y);
    return eq;
}

static bool buf_equals_fd(const uint8_t *want, int fd, uint64_t size)
{
    uint8_t *got = img_read(fd, size);
    bool eq = !size || !memcmp(want, got, size);
    if (!eq)
        for (uint64_t i = 0; i < size; i++)
            if (want[i] != got[i]) {
                fprintf(stderr, "content differs at offset %llu\n", (unsigned long long)i);
                break;
            }
    free(got);
    return eq;
}

/* Restore `manifest` into a fresh file and compare it with `want`. */
static bool restore_equals(struct objstore *repo, const char *manifest, const uint8_t *want, uint64_t size)
{
    int t = img_open("restore-target", 0);
    struct objstore_restore_req req = { .manifest = manifest, .fd = t };
    struct objstore_restore_result res;
    int r = objstore_restore(repo, &req, &res);
    if (r < 0) {
        fprintf(stderr, "restore %s: %s\n", manifest, strerror(-r));
        close(t);
        return false;
    }
    struct stat st;
    bool eq = fstat(t, &st) == 0 && (uint64_t)st.st_size == size && buf_equals_fd(want, t, size);
    close(t);
    return eq;
}

static bool restore_matches(struct objstore *repo, const char *manifest, int src, uint64_t size)
{
    uint8_t *want = img_read(src, size);
    bool eq = restore_equals(repo, manifest, want, size);
    free(want);
    return eq;
}

/* Count the files under a repository's folder. */
static int count_files(const char *repo, const char *dir)
{
    _cleanup_free_ char *cmd = xasprintf("find %s/%s/%s -type f ! -name '*.tmp-*' 2>/dev/null | wc -l",
                                         tmpdir, repo, dir);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static char *first_file(const char *repo, const char *dir)
{
    _cleanup_free_ char *cmd = xasprintf("find %s/%s/%s -type f | sort | head -1", tmpdir, repo, dir);
    FILE *p = popen(cmd, "r");
    char line[4096] = "";
    if (p) {
        if (!fgets(line, sizeof line, p))
            line[0] = 0;
        pclose(p);
    }
    line[strcspn(line, "\n")] = 0;
    return xstrdup(line);
}

static void flip_byte(const char *path, off_t off)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    uint8_t c = 0;
    CHECK(fd >= 0);
    if (off < 0) {
        struct stat st;
        fstat(fd, &st);
        off += st.st_size;
    }
    CHECK_EQ(pread(fd, &c, 1, off), 1);
    c ^= 0x40;
    CHECK_EQ(pwrite(fd, &c, 1, off), 1);
    close(fd);
}

static void cleanup_tmpdir(void)
{
    if (!check_failures) {
        _cleanup_free_ char *cmd = xasprintf("rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "left %s for inspection\n", tmpdir);
    }
}
