/* test-objstore.c: the object tier against the fs backend: round trips of
 * empty, sparse, random and mixed images, a chain of incremental exports,
 * dedup, wrong passphrase, tampered chunks and manifests, a newer format,
 * interrupted export and restore, ENOSPC, gc. Images live in a mktemp
 * directory that is removed at the end. */
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "amber/objstore.h"
#include "amber/util.h"
#include "check.h"

#define PASS "correct horse battery staple"

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

static struct objstore *make_repo(const char *name, uint32_t cs)
{
    _cleanup_free_ char *url = repo_url(name), *err = NULL;
    int r = objstore_init(url, PASS, cs, &err);
    if (r < 0)
        fprintf(stderr, "init %s: %s (%s)\n", url, strerror(-r), err ? err : "");
    CHECK_EQ(r, 0);
    struct objstore *repo = NULL;
    r = objstore_open(url, PASS, &repo, &err);
    CHECK_EQ(r, 0);
    if (!repo) {
        fprintf(stderr, "open %s: %s\n", url, err ? err : "");
        exit(1);
    }
    return repo;
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

static int do_export(struct objstore *repo, int fd, uint64_t size, const struct objstore_range *ranges,
                     size_t nranges, const char *parent, struct objstore_export_result *res)
{
    struct objstore_label labels[] = { { "pipeline", "train" }, { "run", "42" } };
    struct objstore_export_req req = {
        .fd = fd, .size = size, .ranges = ranges, .nranges = nranges, .parent = parent,
        .snapshot_uuid = "0b7e4c2a-5f7e-4e53-9a0c-2d1c3b4a5e6f", .volume_name = "vol1",
        .labels = labels, .nlabels = 2,
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

/* Restore `manifest` into a fresh file and compare it with `src`. */
static bool restore_matches(struct objstore *repo, const char *manifest, int src, uint64_t size)
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
    bool eq = files_equal(src, t, size);
    close(t);
    return eq;
}

static void test_init_open(void)
{
    _cleanup_free_ char *url = repo_url("r-init"), *err = NULL;
    CHECK_EQ(objstore_init(url, PASS, 12345, &err), -EINVAL);
    CHECK(err && strstr(err, "power of two"));
    free(TAKE_PTR(err));
    CHECK_EQ(objstore_init(url, PASS, 32u << 20, NULL), -EINVAL);
    CHECK_EQ(objstore_init(url, "", 0, NULL), -EINVAL);
    CHECK_EQ(objstore_init(url, PASS, 0, NULL), 0);
    CHECK_EQ(objstore_init(url, PASS, 0, &err), -EEXIST);
    free(TAKE_PTR(err));

    struct objstore *repo = NULL;
    CHECK_EQ(objstore_open(url, "wrong passphrase", &repo, &err), -EKEYREJECTED);
    CHECK(repo == NULL);
    CHECK(err && strstr(err, "passphrase"));
    free(TAKE_PTR(err));
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), 0);
    CHECK_EQ(objstore_chunk_size(repo), OBJSTORE_CHUNK_DEFAULT);
    objstore_close(repo);
    repo = NULL;

    /* Bad URLs. */
    const char *bad[] = { "http://x", "file://relative/path", "", "file:///a/../b",
                          "s3://", "s3://Bad_Bucket/x", "s3://bucket/p?endpoint=ftp://h",
                          "s3://bucket/p?style=sideways", "s3://bucket/p?nonsense=1",
                          "s3://bucket/p?endpoint=http://127.0.0.1:notaport" };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        err = NULL;
        int r = objstore_open(bad[i], PASS, &repo, &err);
        if (r != -EINVAL || !err || !*err)
            fprintf(stderr, "bad URL \"%s\": r=%d err=%s\n", bad[i], r, err ? err : "(null)");
        CHECK_EQ(r, -EINVAL);
        CHECK(err != NULL);
        free(TAKE_PTR(err));
    }
    /* Not a repository. */
    _cleanup_free_ char *none = repo_url("nothing-here");
    err = NULL;
    CHECK_EQ(objstore_open(none, PASS, &repo, &err), -ENOENT);
    CHECK(err && strstr(err, "not a repository"));
    free(TAKE_PTR(err));
}

static void test_newer_format(void)
{
    _cleanup_free_ char *url = repo_url("r-newer"), *err = NULL, *cfgp = NULL, *data = NULL;
    CHECK_EQ(objstore_init(url, PASS, 0, NULL), 0);
    cfgp = xasprintf("%s/r-newer/config", tmpdir);
    size_t len;
    CHECK_EQ(read_file_all(cfgp, 1 << 20, &data, &len), 0);
    char *f = strstr(data, "format 1\n");
    CHECK(f != NULL);
    if (!f)
        return;
    f[7] = '2';
    CHECK_EQ(write_file_atomic(cfgp, data, len, 0600), 0);
    struct objstore *repo = NULL;
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), -EPROTONOSUPPORT);
    CHECK(err && strstr(err, "newer"));
    /* A tampered chunk size fails authentication of the wrapped keys. */
    f[7] = '1';
    char *cs = strstr(data, "chunk_size 1048576");
    CHECK(cs != NULL);
    if (cs) {
        memcpy(cs, "chunk_size 2097152", 18);
        CHECK_EQ(write_file_atomic(cfgp, data, len, 0600), 0);
        CHECK(objstore_open(url, PASS, &repo, NULL) < 0);
    }
}

static void test_round_trips(void)
{
    struct objstore *repo = make_repo("r-rt", 0);
    struct objstore_export_result res;
    struct objstore_manifest_info info;

    /* Empty volume. */
    int fd = img_open("empty", 0);
    CHECK_EQ(export_alloc(repo, fd, 0, &res), 0);
    CHECK(restore_matches(repo, res.manifest, fd, 0));
    close(fd);

    /* Sparse: 64 MiB with three small islands, one across a chunk edge. */
    uint64_t size = 64ull << 20;
    fd = img_open("sparse", size);
    img_random(fd, 4096, 8192);
    img_random(fd, (3ull << 20) - 100, 200);
    img_random(fd, size - 10, 10);
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 4);
    CHECK(res.bytes_read <= 4ull << 20);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    CHECK_EQ(objstore_show_manifest(repo, res.manifest, &info), 0);
    CHECK_EQ(info.volume_size, size);
    CHECK_EQ(info.chunks, 64);
    CHECK_EQ(info.data_chunks, 4);
    CHECK_STR(info.volume_name, "vol1");
    CHECK_EQ(info.nlabels, 2);
    CHECK_STR(info.label_keys[0], "pipeline");
    CHECK_STR(info.label_values[1], "42");
    objstore_manifest_info_free(&info);
    /* A unique prefix works as well as the id. */
    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", res.manifest);
    CHECK(restore_matches(repo, prefix, fd, size));
    close(fd);

    /* Random, not a multiple of the chunk size. */
    size = (8ull << 20) + 12345;
    fd = img_open("random", size);
    img_random(fd, 0, (size_t)size);
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 9);
    CHECK(res.bytes_uploaded > size);   /* random data does not compress */
    CHECK(restore_matches(repo, res.manifest, fd, size));
    close(fd);

    /* Mixed: random, text-like (compressible), explicit zeros, holes. */
    size = 24ull << 20;
    fd = img_open("mixed", size);
    img_random(fd, 0, 3 << 20);
    uint8_t *text = xmalloc(5 << 20);
    for (size_t i = 0; i < (5u << 20); i++)
        text[i] = "the quick brown fox jumps over the lazy dog\n"[i % 44];
    img_write(fd, 5ull << 20, text, 5 << 20);
    uint8_t *zeros = xcalloc(1, 2 << 20);
    img_write(fd, 12ull << 20, zeros, 2 << 20);
    img_random(fd, (20ull << 20) + 777, 1000);
    free(zeros);
    free(text);
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK(res.chunks_zero >= 2);
    CHECK(res.bytes_uploaded < (4ull << 20) + (1 << 20));  /* text compressed */
    CHECK(restore_matches(repo, res.manifest, fd, size));
    /* Exporting the same image again uploads nothing. */
    struct objstore_export_result res2;
    CHECK_EQ(export_alloc(repo, fd, size, &res2), 0);
    CHECK_EQ(res2.chunks_uploaded, 0);
    CHECK(res2.chunks_reused > 0);
    close(fd);

    struct objstore_manifest_info *list;
    size_t n;
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    CHECK(n >= 4);
    objstore_manifest_infos_free(list, n);
    objstore_close(repo);
}

static int count_chunks(const char *repo)
{
    _cleanup_free_ char *cmd = xasprintf("find %s/%s/chunks -type f | wc -l", tmpdir, repo);
    FILE *p = popen(cmd, "r");
    int n = -1;
    if (p) {
        if (fscanf(p, "%d", &n) != 1)
            n = -1;
        pclose(p);
    }
    return n;
}

static void test_dedup(void)
{
    struct objstore *repo = make_repo("r-dedup", 64 << 10);
    uint64_t size = 4ull << 20;
    int a = img_open("dedup-a", size);
    img_random(a, 0, (size_t)size);
    uint8_t *copy = xmalloc(size);
    CHECK_EQ(pread(a, copy, size, 0), (ssize_t)size);
    int b = img_open("dedup-b", size);
    img_write(b, 0, copy, size);
    free(copy);
    struct objstore_export_result ra, rb;
    CHECK_EQ(export_alloc(repo, a, size, &ra), 0);
    CHECK_EQ(export_alloc(repo, b, size, &rb), 0);
    CHECK_EQ(ra.chunks_uploaded, 64);
    CHECK_EQ(rb.chunks_uploaded, 0);
    CHECK_EQ(rb.chunks_reused, 64);
    CHECK_EQ(count_chunks("r-dedup"), 64);
    CHECK(restore_matches(repo, rb.manifest, a, size));
    close(a);
    close(b);
    objstore_close(repo);
}

/* Ten incremental exports, each of random writes (and one resize),
 * exported with only the changed ranges and restored. */
static void test_chain(void)
{
    struct objstore *repo = make_repo("r-chain", 64 << 10);
    uint64_t size = 16ull << 20;
    int fd = img_open("chain", size);
    img_random(fd, 0, 2 << 20);
    img_random(fd, 9ull << 20, 1 << 20);
    struct objstore_export_result res;
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    char parent[OBJSTORE_ID_LEN + 1];
    memcpy(parent, res.manifest, sizeof parent);

    for (int gen = 1; gen <= 10; gen++) {
        if (gen == 5) {
            size += (3ull << 20) + 4095;     /* grow, unaligned */
            CHECK_EQ(ftruncate(fd, (off_t)size), 0);
        }
        if (gen == 8) {
            size -= 1ull << 20;              /* shrink */
            CHECK_EQ(ftruncate(fd, (off_t)size), 0);
        }
        struct objstore_range ranges[16];
        size_t n = 1 + rnd() % 12;
        uint64_t changed = 0;
        for (size_t i = 0; i < n; i++) {
            uint64_t len = 1 + rnd() % (200 << 10);
            uint64_t off = rnd() % (size - len);
            if (i % 3 == 2) {
                uint8_t *z = xcalloc(1, len);   /* zeroing is a change too */
                img_write(fd, off, z, len);
                free(z);
            } else {
                img_random(fd, off, (size_t)len);
            }
            ranges[i] = (struct objstore_range){ off, len };
            changed += len;
        }
        CHECK_EQ(do_export(repo, fd, size, ranges, n, parent, &res), 0);
        /* Only whole chunks around the changes are read. */
        CHECK(res.bytes_read <= changed + 2 * n * (64 << 10) + 2 * (64 << 10));
        CHECK(restore_matches(repo, res.manifest, fd, size));
        struct objstore_manifest_info info;
        CHECK_EQ(objstore_show_manifest(repo, res.manifest, &info), 0);
        CHECK_STR(info.parent, parent);
        CHECK_EQ(info.volume_size, size);
        objstore_manifest_info_free(&info);
        memcpy(parent, res.manifest, sizeof parent);
    }
    /* No ranges: an unchanged snapshot is a copy of its parent's map. */
    CHECK_EQ(do_export(repo, fd, size, NULL, 0, parent, &res), 0);
    CHECK_EQ(res.bytes_read, 0);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    CHECK(v.chunks_checked > 0);
    objstore_verify_result_free(&v);
    close(fd);
    objstore_close(repo);
}

static char *first_chunk_path(const char *repo)
{
    _cleanup_free_ char *cmd = xasprintf("find %s/%s/chunks -type f | sort | head -1", tmpdir, repo);
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

static void test_tamper(void)
{
    struct objstore *repo = make_repo("r-tamper", 64 << 10);
    uint64_t size = 1ull << 20;
    int fd = img_open("tamper", size);
    img_random(fd, 0, (size_t)size);
    struct objstore_export_result res;
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    CHECK_EQ(v.chunks_checked, 16);
    objstore_verify_result_free(&v);

    /* A flipped byte in a chunk's ciphertext, then in its header. */
    _cleanup_free_ char *chunk = first_chunk_path("r-tamper");
    flip_byte(chunk, 100);
    CHECK(!restore_matches(repo, res.manifest, fd, size));
    int t = img_open("tamper-target", 0);
    struct objstore_restore_req rq = { .manifest = res.manifest, .fd = t };
    CHECK_EQ(objstore_restore(repo, &rq, NULL), -EBADMSG);
    close(t);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.corrupt, 1);
    CHECK_EQ(v.missing, 0);
    CHECK_EQ(v.ncorrupt_ids, 1);
    CHECK(v.ncorrupt_ids && strstr(chunk, v.corrupt_ids[0]));
    objstore_verify_result_free(&v);
    flip_byte(chunk, 100);
    flip_byte(chunk, 8);    /* the plaintext length in the header */
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.corrupt, 1);
    objstore_verify_result_free(&v);
    flip_byte(chunk, 8);

    /* Truncated and missing chunks. */
    CHECK_EQ(truncate(chunk, 30), 0);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.corrupt, 1);
    objstore_verify_result_free(&v);
    CHECK_EQ(unlink(chunk), 0);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.missing, 1);
    CHECK_EQ(v.corrupt, 0);
    objstore_verify_result_free(&v);
    /* A rerun of the export repairs the repository. */
    struct objstore_export_result res2;
    CHECK_EQ(export_alloc(repo, fd, size, &res2), 0);
    CHECK_EQ(res2.chunks_uploaded, 1);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    objstore_verify_result_free(&v);

    /* A flipped byte in a manifest. */
    _cleanup_free_ char *mpath = xasprintf("%s/r-tamper/manifests/%s", tmpdir, res.manifest);
    flip_byte(mpath, -5);
    t = img_open("tamper-target", 0);
    rq.fd = t;
    CHECK_EQ(objstore_restore(repo, &rq, NULL), -EBADMSG);
    close(t);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    objstore_verify_result_free(&v);
    struct objstore_manifest_info info;
    CHECK_EQ(objstore_show_manifest(repo, res.manifest, &info), -EBADMSG);
    /* gc refuses to run with an unreadable manifest. */
    CHECK_EQ(objstore_gc(repo, 0, NULL), -EBADMSG);
    close(fd);
    objstore_close(repo);
}

struct cancel_after {
    atomic_bool cancel;
    uint64_t after;
};

static void cancel_progress(void *ud, const struct objstore_progress *p)
{
    struct cancel_after *c = ud;
    if (p->chunks_uploaded >= c->after)
        atomic_store(&c->cancel, true);
}

static void test_interrupted(void)
{
    struct objstore *repo = make_repo("r-int", 64 << 10);
    uint64_t size = 8ull << 20;
    int fd = img_open("int", size);
    img_random(fd, 0, (size_t)size);
    struct cancel_after ca = { .after = 20 };
    struct objstore_range all = { 0, size };
    struct objstore_export_req req = {
        .fd = fd, .size = size, .ranges = &all, .nranges = 1, .snapshot_uuid = "u1",
        .progress = cancel_progress, .progress_ud = &ca, .progress_each_chunk = true,
        .cancel = &ca.cancel,
    };
    struct objstore_export_result res;
    CHECK_EQ(objstore_export(repo, &req, &res), -ECANCELED);
    struct objstore_manifest_info *list;
    size_t n;
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    CHECK_EQ(n, 0);
    objstore_manifest_infos_free(list, n);
    int done = count_chunks("r-int");
    CHECK(done >= 20 && done < 128);
    /* The rerun uploads only what is missing. */
    req.progress = NULL;
    req.cancel = NULL;
    CHECK_EQ(objstore_export(repo, &req, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 128 - (uint64_t)done);
    CHECK_EQ(res.chunks_reused, (uint64_t)done);

    /* An interrupted restore resumes: damage half of a restored target and
     * resume; only the damaged chunks are fetched. */
    int t = img_open("int-target", 0);
    struct objstore_restore_req rq = { .manifest = res.manifest, .fd = t };
    struct objstore_restore_result rr;
    CHECK_EQ(objstore_restore(repo, &rq, &rr), 0);
    CHECK_EQ(rr.chunks_fetched, 128);
    CHECK_EQ(ftruncate(t, 3 << 20), 0);         /* as if killed after 3 MiB */
    CHECK_EQ(ftruncate(t, (off_t)size), 0);
    img_random(t, 100, 10);                     /* and a damaged chunk */
    rq.resume = true;
    CHECK_EQ(objstore_restore(repo, &rq, &rr), 0);
    CHECK_EQ(rr.chunks_fetched, 128 - 48 + 1);
    CHECK_EQ(rr.chunks_skipped, 47);
    CHECK(files_equal(fd, t, size));
    close(t);
    close(fd);
    objstore_close(repo);
}

static void test_gc(void)
{
    struct objstore *repo = make_repo("r-gc", 64 << 10);
    uint64_t size = 2ull << 20;
    int a = img_open("gc-a", size), b = img_open("gc-b", size);
    img_random(a, 0, (size_t)size);
    img_random(b, 0, 1 << 20);                 /* b: 16 own chunks */
    uint8_t *half = xmalloc(1 << 20);
    CHECK_EQ(pread(a, half, 1 << 20, 1 << 20), 1 << 20);
    img_write(b, 1 << 20, half, 1 << 20);      /* and 16 shared with a */
    free(half);
    struct objstore_export_result ra, rb;
    CHECK_EQ(export_alloc(repo, a, size, &ra), 0);
    CHECK_EQ(export_alloc(repo, b, size, &rb), 0);
    CHECK_EQ(count_chunks("r-gc"), 48);

    struct objstore_gc_result g;
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.chunks_deleted, 0);
    CHECK_EQ(objstore_delete_manifest(repo, ra.manifest), 0);
    CHECK_EQ(objstore_gc(repo, 3600, &g), 0);  /* all young: kept */
    CHECK_EQ(g.chunks_deleted, 0);
    CHECK_EQ(g.chunks_young, 16);
    /* An export in progress holds a lock that stops gc. */
    _cleanup_free_ char *lock = xasprintf("%s/r-gc/locks/export-test", tmpdir);
    CHECK_EQ(write_file_atomic(lock, "x", 1, 0600), 0);
    CHECK_EQ(objstore_gc(repo, 0, &g), -EBUSY);
    /* The lock of an export that died an hour ago does not stop gc, and
     * gc removes it. */
    struct timespec old[2] = { { .tv_sec = time(NULL) - 3600 }, { .tv_sec = time(NULL) - 3600 } };
    CHECK_EQ(utimensat(AT_FDCWD, lock, old, 0), 0);
    CHECK_EQ(objstore_gc(repo, 3600, &g), 0);
    CHECK(access(lock, F_OK) < 0);
    unlink(lock);
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.chunks_deleted, 16);
    CHECK_EQ(g.chunks_referenced, 32);
    CHECK_EQ(count_chunks("r-gc"), 32);
    CHECK(restore_matches(repo, rb.manifest, b, size));
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, rb.manifest, 0, &v), 0);
    objstore_verify_result_free(&v);
    close(a);
    close(b);
    objstore_close(repo);
}

/* ENOSPC while restoring: a 1 MiB tmpfs (needs root; skipped otherwise). */
static void test_enospc(void)
{
    _cleanup_free_ char *mnt = xasprintf("%s/small", tmpdir);
    mkdir(mnt, 0700);
    if (mount("tmpfs", mnt, "tmpfs", 0, "size=1m") < 0) {
        fprintf(stderr, "test_enospc: skipped (mount tmpfs: %s)\n", strerror(errno));
        return;
    }
    struct objstore *repo = make_repo("r-nospc", 64 << 10);
    uint64_t size = 4ull << 20;
    int fd = img_open("nospc", size);
    img_random(fd, 0, (size_t)size);
    struct objstore_export_result res;
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    _cleanup_free_ char *tp = xasprintf("%s/target", mnt);
    int t = open(tp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    CHECK(t >= 0);
    CHECK_EQ(ftruncate(t, (off_t)size), 0);
    struct objstore_restore_req rq = { .manifest = res.manifest, .fd = t };
    CHECK_EQ(objstore_restore(repo, &rq, NULL), -ENOSPC);
    close(t);
    close(fd);
    umount2(mnt, MNT_DETACH);
    objstore_close(repo);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        SKIP("mkdtemp: %s", strerror(errno));
    rng ^= (uint64_t)getpid();
    test_init_open();
    test_newer_format();
    test_round_trips();
    test_dedup();
    test_chain();
    test_tamper();
    test_interrupted();
    test_gc();
    test_enospc();
    if (!check_failures) {
        _cleanup_free_ char *cmd = xasprintf("rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "left %s for inspection\n", tmpdir);
    }
    return CHECK_DONE();
}
