/* test-objstore.c: the object tier (format 2) against the fs backend:
 * round trips of empty, sparse, random and mixed images; dedup across
 * volumes; chains of exports with scattered, clustered and mixed changes
 * (and resizes), each point restored byte-identical and its `changed`
 * ranges checked against the true difference; objstore_read from several
 * threads and objstore_extents; objstore_copy between repositories;
 * tampered packs, indexes, map nodes and manifests; wrong passphrase, a
 * newer and an old (format 1) repository. Images live in a mktemp
 * directory that is removed at the end. (Crashes and gc:
 * test-objstore-gc.c; S3: test-objstore-s3.c.) */
#include <pthread.h>
#include <sys/mount.h>

#include "test-objstore-lib.h"

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

    /* The derived key is kept: a second open runs no scrypt; a wrong
     * passphrase is still refused (derived each time, never kept); another
     * repository (its own salt) derives its own; clearing forgets. */
    uint64_t runs = objstore_kdf_runs();
    CHECK_EQ(objstore_open(url, PASS, &repo, NULL), 0);
    objstore_close(repo);
    repo = NULL;
    CHECK_EQ(objstore_kdf_runs(), runs);
    CHECK_EQ(objstore_open(url, "wrong passphrase", &repo, NULL), -EKEYREJECTED);
    CHECK_EQ(objstore_kdf_runs(), runs + 1);
    CHECK_EQ(objstore_open(url, "wrong passphrase", &repo, NULL), -EKEYREJECTED);
    CHECK_EQ(objstore_kdf_runs(), runs + 2);
    _cleanup_free_ char *url2 = repo_url("r-init2");
    CHECK_EQ(objstore_init(url2, PASS, 0, NULL), 0);
    runs = objstore_kdf_runs();
    CHECK_EQ(objstore_open(url2, PASS, &repo, NULL), 0);   /* its own salt: derived */
    objstore_close(repo);
    repo = NULL;
    CHECK_EQ(objstore_kdf_runs(), runs + 1);
    objstore_key_cache_clear();
    CHECK_EQ(objstore_open(url, PASS, &repo, NULL), 0);
    objstore_close(repo);
    repo = NULL;
    CHECK_EQ(objstore_kdf_runs(), runs + 2);

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
    _cleanup_free_ char *none = repo_url("nothing-here");
    err = NULL;
    CHECK_EQ(objstore_open(none, PASS, &repo, &err), -ENOENT);
    CHECK(err && strstr(err, "not a repository"));
    free(TAKE_PTR(err));
}

/* A newer format and format 1 are refused with a message naming the
 * version; a tampered config fails authentication. */
static void test_formats(void)
{
    _cleanup_free_ char *url = repo_url("r-fmt"), *err = NULL, *cfgp = NULL, *data = NULL;
    CHECK_EQ(objstore_init(url, PASS, 0, NULL), 0);
    cfgp = xasprintf("%s/r-fmt/config", tmpdir);
    size_t len;
    CHECK_EQ(read_file_all(cfgp, 1 << 20, &data, &len), 0);
    char *f = strstr(data, "format 2\n");
    CHECK(f != NULL);
    if (!f)
        return;
    struct objstore *repo = NULL;
    f[7] = '3';
    CHECK_EQ(write_file_atomic(cfgp, data, len, 0600), 0);
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), -EPROTONOSUPPORT);
    CHECK(err && strstr(err, "newer") && strstr(err, "format 3"));
    free(TAKE_PTR(err));
    f[7] = '1';
    CHECK_EQ(write_file_atomic(cfgp, data, len, 0600), 0);
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), -EPROTONOSUPPORT);
    CHECK(err && strstr(err, "format 1") && strstr(err, "no longer supported"));
    if (err)
        fprintf(stderr, "format 1: %s\n", err);
    free(TAKE_PTR(err));
    f[7] = '2';
    char *cs = strstr(data, "chunk_size 1048576");
    CHECK(cs != NULL);
    if (cs) {
        memcpy(cs, "chunk_size 2097152", 18);
        CHECK_EQ(write_file_atomic(cfgp, data, len, 0600), 0);
        CHECK(objstore_open(url, PASS, &repo, NULL) < 0);
    }
}

static void check_extents(struct objstore *repo, const char *manifest, const uint8_t *img, uint64_t size)
{
    struct objstore_range *ext = NULL;
    size_t n = 0;
    CHECK_EQ(objstore_extents(repo, manifest, &ext, &n), 0);
    /* Expected: the non-zero blocks, coalesced. */
    size_t k = 0;
    bool ok = true;
    for (uint64_t b = 0; b * BLK < size;) {
        uint64_t bl = MIN((uint64_t)BLK, size - b * BLK);
        bool nz = false;
        for (uint64_t i = 0; i < bl && !nz; i++)
            nz = img[b * BLK + i] != 0;
        if (!nz) {
            b++;
            continue;
        }
        uint64_t s = b * BLK, e = s;
        for (;; b++) {
            uint64_t l = MIN((uint64_t)BLK, size - b * BLK);
            bool z = true;
            for (uint64_t i = 0; b * BLK < size && i < l && z; i++)
                z = img[b * BLK + i] == 0;
            if (b * BLK >= size || z)
                break;
            e = b * BLK + l;
        }
        if (k >= n || ext[k].offset != s || ext[k].length != e - s)
            ok = false;
        k++;
    }
    CHECK(ok && k == n);
    free(ext);
}

struct reader_arg {
    struct objstore *repo;
    const char *manifest;
    const uint8_t *img;
    uint64_t size, seed;
    int bad;
};

static void *reader(void *p)
{
    struct reader_arg *a = p;
    uint64_t s = a->seed;
    uint8_t *buf = xmalloc(3 << 20);
    for (int i = 0; i < 40; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        uint64_t len = 1 + s % (3u << 20);
        len = MIN(len, a->size);
        uint64_t off = (s >> 20) % (a->size - len + 1);
        if (objstore_read(a->repo, a->manifest, off, buf, len) != 0 || memcmp(buf, a->img + off, len))
            a->bad++;
    }
    free(buf);
    return NULL;
}

static void check_reads(struct objstore *repo, const char *manifest, const uint8_t *img, uint64_t size)
{
    struct reader_arg a[3];
    pthread_t th[3];
    for (int i = 0; i < 3; i++) {
        a[i] = (struct reader_arg){ repo, manifest, img, size, rnd() | 1, 0 };
        pthread_create(&th[i], NULL, reader, &a[i]);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        CHECK_EQ(a[i].bad, 0);
    }
    uint8_t b[16];
    CHECK_EQ(objstore_read(repo, manifest, size - 8, b, 16), -EINVAL);
}

static void test_round_trips(void)
{
    struct objstore *repo = make_repo("r-rt", 0);
    struct objstore_export_result res;
    struct objstore_manifest_info info;

    int fd = img_open("empty", 0);
    CHECK_EQ(export_alloc(repo, fd, 0, &res), 0);
    CHECK(restore_matches(repo, res.manifest, fd, 0));
    CHECK_EQ(res.nchanged, 0);
    objstore_export_result_free(&res);
    close(fd);

    /* Sparse: 64 MiB with three small islands, one across a chunk edge. */
    uint64_t size = 64ull << 20;
    fd = img_open("sparse", size);
    img_random(fd, 4096, 8192);
    img_random(fd, (3ull << 20) - 100, 200);
    img_random(fd, size - 10, 10);
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 4);
    CHECK(res.bytes_read <= 8 * BLK);
    CHECK(res.bytes_uploaded < 48 * BLK);
    CHECK_EQ(res.bytes_changed, 5 * BLK);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    CHECK_EQ(objstore_show_manifest(repo, res.manifest, &info), 0);
    CHECK_EQ(info.volume_size, size);
    CHECK_EQ(info.data_bytes, 5 * BLK);
    CHECK_EQ(info.data_chunks, 4);
    CHECK(info.stored_size < 1024);
    CHECK_STR(info.volume_name, "vol1");
    CHECK_EQ(info.nlabels, 2);
    CHECK_STR(info.label_keys[0], "pipeline");
    CHECK_STR(info.label_values[1], "42");
    objstore_manifest_info_free(&info);
    char prefix[9];
    snprintf(prefix, sizeof prefix, "%.8s", res.manifest);
    CHECK(restore_matches(repo, prefix, fd, size));
    uint8_t *img = img_read(fd, size);
    check_extents(repo, res.manifest, img, size);
    check_reads(repo, res.manifest, img, size);
    free(img);
    objstore_export_result_free(&res);
    close(fd);

    /* Random, not a multiple of the block size. */
    size = (8ull << 20) + 12345;
    fd = img_open("random", size);
    img_random(fd, 0, (size_t)size);
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 9);
    CHECK(res.bytes_uploaded > size);   /* random data does not compress */
    CHECK_EQ(res.bytes_changed, size);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    img = img_read(fd, size);
    check_reads(repo, res.manifest, img, size);
    free(img);
    objstore_export_result_free(&res);
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
    CHECK_EQ(res.chunks_zero, 512);
    CHECK(res.bytes_uploaded < (4ull << 20) + (1 << 20));  /* text compressed */
    CHECK(restore_matches(repo, res.manifest, fd, size));
    img = img_read(fd, size);
    check_extents(repo, res.manifest, img, size);
    free(img);
    objstore_export_result_free(&res);
    /* Exporting the same image again uploads no piece and no node. */
    struct objstore_export_result res2;
    CHECK_EQ(export_alloc(repo, fd, size, &res2), 0);
    CHECK_EQ(res2.chunks_uploaded, 0);
    CHECK_EQ(res2.nodes_uploaded, 0);
    CHECK(res2.chunks_reused > 0);
    objstore_export_result_free(&res2);
    close(fd);

    struct objstore_manifest_info *list;
    size_t n;
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    CHECK(n >= 4);
    objstore_manifest_infos_free(list, n);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, NULL, 0, &v), 0);
    CHECK(v.chunks_checked > 20);
    objstore_verify_result_free(&v);
    objstore_close(repo);
}

static uint64_t dir_bytes(const char *repo, const char *dir)
{
    _cleanup_free_ char *cmd = xasprintf("du -sb %s/%s/%s | cut -f1", tmpdir, repo, dir);
    FILE *p = popen(cmd, "r");
    unsigned long long n = 0;
    if (p) {
        if (fscanf(p, "%llu", &n) != 1)
            n = 0;
        pclose(p);
    }
    return n;
}

/* The same data in two volumes, and in a third at other offsets that are
 * multiples of the chunk size, is stored once. */
static void test_dedup(void)
{
    struct objstore *repo = make_repo("r-dedup", 64 << 10);
    uint64_t size = 4ull << 20;
    int a = img_open("dedup-a", size);
    img_random(a, 0, (size_t)size);
    uint8_t *copy = img_read(a, size);
    int b = img_open("dedup-b", size);
    img_write(b, 0, copy, size);
    int c = img_open("dedup-c", 2 * size);
    img_write(c, size, copy, size);
    free(copy);
    struct objstore_export_result ra, rb, rc;
    CHECK_EQ(export_alloc(repo, a, size, &ra), 0);
    uint64_t after_a = dir_bytes("r-dedup", "packs");
    CHECK_EQ(export_alloc(repo, b, size, &rb), 0);
    CHECK_EQ(export_alloc(repo, c, 2 * size, &rc), 0);
    CHECK_EQ(ra.chunks_uploaded, 64);
    CHECK_EQ(rb.chunks_uploaded, 0);
    CHECK_EQ(rb.chunks_reused, 64);
    CHECK_EQ(rc.chunks_uploaded, 0);
    CHECK(dir_bytes("r-dedup", "packs") < after_a + (64u << 10));   /* only nodes */
    CHECK(restore_matches(repo, rb.manifest, a, size));
    CHECK(restore_matches(repo, rc.manifest, c, 2 * size));
    objstore_export_result_free(&ra);
    objstore_export_result_free(&rb);
    objstore_export_result_free(&rc);
    close(a);
    close(b);
    close(c);
    objstore_close(repo);
}

/* The blocks where two images differ (past an end: zero), coalesced. */
static size_t true_diff(const uint8_t *prev, uint64_t psize, const uint8_t *cur, uint64_t size,
                        struct objstore_range **ret)
{
    struct objstore_range *v = NULL;
    size_t n = 0;
    for (uint64_t o = 0; o < size; o += BLK) {
        uint64_t l = MIN((uint64_t)BLK, size - o);
        bool diff = false;
        for (uint64_t i = 0; i < l && !diff; i++)
            diff = cur[o + i] != (o + i < psize ? prev[o + i] : 0);
        if (!diff)
            continue;
        if (n && v[n - 1].offset + v[n - 1].length == o) {
            v[n - 1].length += l;
            continue;
        }
        v = xrealloc(v, (n + 1) * sizeof *v);
        v[n++] = (struct objstore_range){ o, l };
    }
    *ret = v;
    return n;
}

static bool same_ranges(const struct objstore_range *a, size_t na, const struct objstore_range *b, size_t nb)
{
    if (na != nb) {
        fprintf(stderr, "changed: %zu ranges, expected %zu\n", na, nb);
        for (size_t i = 0; i < MAX(na, nb); i++)
            fprintf(stderr, "  %zu: got %llu+%llu want %llu+%llu\n", i,
                    i < na ? (unsigned long long)a[i].offset : 0, i < na ? (unsigned long long)a[i].length : 0,
                    i < nb ? (unsigned long long)b[i].offset : 0, i < nb ? (unsigned long long)b[i].length : 0);
        return false;
    }
    for (size_t i = 0; i < na; i++)
        if (a[i].offset != b[i].offset || a[i].length != b[i].length) {
            fprintf(stderr, "changed[%zu] = %llu+%llu, expected %llu+%llu\n", i,
                    (unsigned long long)a[i].offset, (unsigned long long)a[i].length,
                    (unsigned long long)b[i].offset, (unsigned long long)b[i].length);
            return false;
        }
    return true;
}

enum pattern { SCATTERED, CLUSTERED, MIXED };

/* One generation of changes; returns the ranges a generation diff would
 * report (over-reported for MIXED: rewritten-but-equal ranges too). */
static size_t change(int fd, uint64_t size, enum pattern pat, int gen, struct objstore_range *rg)
{
    size_t n = 0;
    if (pat == SCATTERED || (pat == MIXED && gen % 2)) {
        for (int i = 0; i < 60; i++) {
            uint64_t off = rnd() % (size / BLK) * BLK;
            img_random(fd, off, BLK);
            rg[n++] = (struct objstore_range){ off, BLK };
        }
    }
    if (pat == CLUSTERED || pat == MIXED) {
        for (int i = 0; i < 3; i++) {
            uint64_t len = BLK * (1 + rnd() % 300), off = rnd() % (size - len);
            if (pat == MIXED && i == 2) {
                uint8_t *z = xcalloc(1, len);       /* zeroing is a change too */
                img_write(fd, off, z, len);
                free(z);
            } else {
                img_random(fd, off, (size_t)len);
            }
            rg[n++] = (struct objstore_range){ off, len };
        }
    }
    if (pat == MIXED) {
        /* Rewritten with the same bytes (a defragmented range): read, not
         * changed. Unaligned, to exercise the rounding. */
        uint64_t len = 1 + rnd() % (3u << 20), off = rnd() % (size - len);
        uint8_t *same = xmalloc(len);
        CHECK_EQ(pread(fd, same, len, (off_t)off), (ssize_t)len);
        img_write(fd, off, same, len);
        free(same);
        rg[n++] = (struct objstore_range){ off, len };
    }
    return n;
}

static void test_chain(const char *name, enum pattern pat)
{
    struct objstore *repo = make_repo(name, 64 << 10);
    uint64_t size = 16ull << 20;
    _cleanup_free_ char *iname = xasprintf("%s.img", name);
    int fd = img_open(iname, size);
    img_random(fd, 0, 2 << 20);
    img_random(fd, 9ull << 20, 1 << 20);
    enum { GENS = 8 };
    char ids[GENS + 1][OBJSTORE_ID_LEN + 1];
    uint8_t *imgs[GENS + 1];
    uint64_t sizes[GENS + 1];
    struct objstore_export_result res;
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    objstore_export_result_free(&res);
    memcpy(ids[0], res.manifest, sizeof ids[0]);
    imgs[0] = img_read(fd, size);
    sizes[0] = size;

    for (int gen = 1; gen <= GENS; gen++) {
        uint64_t psize = size;
        if (pat == MIXED && gen == 3) {
            size += (3ull << 20) + 4096 + 1000;     /* grow, unaligned */
            CHECK_EQ(ftruncate(fd, (off_t)size), 0);
        }
        if (pat == MIXED && gen == 6) {
            size -= (1ull << 20) + 3000;            /* shrink */
            CHECK_EQ(ftruncate(fd, (off_t)size), 0);
        }
        struct objstore_range rg[128];
        size_t n = change(fd, size, pat, gen, rg);
        uint64_t asked = 0;
        for (size_t i = 0; i < n; i++)
            asked += rg[i].length;
        CHECK_EQ(do_export(repo, fd, size, rg, n, ids[gen - 1], &res), 0);
        memcpy(ids[gen], res.manifest, sizeof ids[gen]);
        imgs[gen] = img_read(fd, size);
        sizes[gen] = size;
        /* Only the blocks around the ranges are read. */
        CHECK(res.bytes_read <= asked + 2 * n * BLK + BLK);
        struct objstore_range *want;
        size_t nwant = true_diff(imgs[gen - 1], psize, imgs[gen], size, &want);
        CHECK(same_ranges(res.changed, res.nchanged, want, nwant));
        if (pat == SCATTERED) {
            /* Each 4 KiB change costs about its own size, not a chunk's. */
            CHECK(res.bytes_uploaded < 60 * (BLK + 200) + 32 * 1024);
        }
        free(want);
        struct objstore_manifest_info info;
        CHECK_EQ(objstore_show_manifest(repo, res.manifest, &info), 0);
        CHECK_STR(info.parent, ids[gen - 1]);
        CHECK_EQ(info.volume_size, size);
        objstore_manifest_info_free(&info);
        objstore_export_result_free(&res);
    }
    /* No ranges: an unchanged snapshot is its parent's map. */
    CHECK_EQ(do_export(repo, fd, size, NULL, 0, ids[GENS], &res), 0);
    CHECK_EQ(res.bytes_read, 0);
    CHECK_EQ(res.nchanged, 0);
    CHECK_EQ(res.nodes_uploaded, 0);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    objstore_export_result_free(&res);
    /* Every point, byte-identical, and readable at random. */
    for (int gen = 0; gen <= GENS; gen++) {
        CHECK(restore_equals(repo, ids[gen], imgs[gen], sizes[gen]));
        check_extents(repo, ids[gen], imgs[gen], sizes[gen]);
    }
    check_reads(repo, ids[GENS], imgs[GENS], sizes[GENS]);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, ids[GENS], 0, &v), 0);
    CHECK(v.chunks_checked > 0);
    objstore_verify_result_free(&v);

    /* Copy the chain's head to another repository: ancestors first; then a
     * new generation copies only its difference. */
    if (pat == MIXED) {
        _cleanup_free_ char *dname = xasprintf("%s-copy", name);
        struct objstore *dst = make_repo(dname, 0);
        CHECK_EQ(objstore_copy(repo, dst, ids[GENS - 1], NULL, NULL, NULL, &res), 0);
        CHECK(restore_equals(dst, res.manifest, imgs[GENS - 1], sizes[GENS - 1]));
        objstore_export_result_free(&res);
        struct objstore_manifest_info *list;
        size_t nm;
        CHECK_EQ(objstore_list_manifests(dst, &list, &nm), 0);
        CHECK_EQ(nm, GENS);
        for (size_t i = 0; i < nm; i++)
            CHECK(restore_equals(dst, list[i].id, imgs[i], sizes[i]));
        objstore_manifest_infos_free(list, nm);
        CHECK_EQ(objstore_copy(repo, dst, ids[GENS], NULL, NULL, NULL, &res), 0);
        CHECK(res.bytes_read < (4u << 20));
        CHECK(restore_equals(dst, res.manifest, imgs[GENS], sizes[GENS]));
        struct objstore_manifest_info info;
        CHECK_EQ(objstore_show_manifest(dst, res.manifest, &info), 0);
        CHECK(info.parent[0] != 0);
        objstore_manifest_info_free(&info);
        objstore_export_result_free(&res);
        objstore_close(dst);
    }
    for (int gen = 0; gen <= GENS; gen++)
        free(imgs[gen]);
    close(fd);
    objstore_close(repo);
}

static void test_tamper(void)
{
    struct objstore *repo = make_repo("r-tamper", 64 << 10);
    _cleanup_free_ char *url = repo_url("r-tamper");
    uint64_t size = 1ull << 20;
    int fd = img_open("tamper", size);
    img_random(fd, 0, (size_t)size);
    struct objstore_export_result res;
    export_parallelism = 1;     /* one pack of pieces, one of nodes */
    CHECK_EQ(export_alloc(repo, fd, size, &res), 0);
    export_parallelism = 0;
    objstore_export_result_free(&res);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    CHECK_EQ(v.chunks_checked, 16 + 1);     /* pieces and the one leaf */
    objstore_verify_result_free(&v);
    CHECK_EQ(count_files("r-tamper", "packs"), 2);

    /* The larger pack holds the pieces: flip a byte in the middle. */
    _cleanup_free_ char *cmd = xasprintf("find %s/r-tamper/packs -type f -size +100k | head -1", tmpdir);
    FILE *p = popen(cmd, "r");
    char pack[4096] = "";
    if (!p || !fgets(pack, sizeof pack, p))
        pack[0] = 0;
    if (p)
        pclose(p);
    pack[strcspn(pack, "\n")] = 0;
    CHECK(pack[0] != 0);
    flip_byte(pack, 300000);
    CHECK(!restore_matches(repo, res.manifest, fd, size));
    int t = img_open("tamper-target", 0);
    struct objstore_restore_req rq = { .manifest = res.manifest, .fd = t };
    CHECK_EQ(objstore_restore(repo, &rq, NULL), -EBADMSG);
    close(t);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.corrupt, 1);
    CHECK_EQ(v.missing, 0);
    objstore_verify_result_free(&v);
    flip_byte(pack, 300000);
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    objstore_verify_result_free(&v);

    /* A map node: the small pack. */
    _cleanup_free_ char *cmd2 = xasprintf("find %s/r-tamper/packs -type f -size -100k", tmpdir);
    p = popen(cmd2, "r");
    char nodes[4096] = "";
    if (!p || !fgets(nodes, sizeof nodes, p))
        nodes[0] = 0;
    if (p)
        pclose(p);
    nodes[strcspn(nodes, "\n")] = 0;
    CHECK(nodes[0] != 0);
    flip_byte(nodes, -5);
    struct objstore *fresh = open_url(url);     /* nothing cached */
    t = img_open("tamper-target", 0);
    rq.fd = t;
    CHECK_EQ(objstore_restore(fresh, &rq, NULL), -EBADMSG);
    close(t);
    CHECK_EQ(objstore_verify(fresh, res.manifest, 0, &v), -EBADMSG);
    CHECK_EQ(v.corrupt, 1);
    objstore_verify_result_free(&v);
    uint8_t b[16];
    CHECK_EQ(objstore_read(fresh, res.manifest, 0, b, sizeof b), -EBADMSG);
    CHECK_EQ(objstore_gc(fresh, 0, NULL), -EBADMSG);     /* an unreadable map: nothing deleted */
    objstore_close(fresh);
    flip_byte(nodes, -5);

    /* An index. */
    _cleanup_free_ char *index = first_file("r-tamper", "index");
    flip_byte(index, 40);
    fresh = open_url(url);
    t = img_open("tamper-target", 0);
    rq.fd = t;
    CHECK_EQ(objstore_restore(fresh, &rq, NULL), -EBADMSG);
    close(t);
    CHECK_EQ(do_export(fresh, fd, size, NULL, 0, NULL, &res), -EBADMSG);
    objstore_close(fresh);
    flip_byte(index, 40);

    /* A manifest. */
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
    CHECK_EQ(objstore_gc(repo, 0, NULL), -EBADMSG);
    flip_byte(mpath, -5);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    close(fd);
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
    objstore_export_result_free(&res);
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

/* Export reads, pack writes and restore writes use O_DIRECT where the
 * filesystem allows it (ext4 here) and fall back to buffered I/O where it
 * refuses (ramfs): in both, an image with holes, written zeros, data
 * straddling chunk boundaries and an end that is not block-aligned, and an
 * incremental of scattered 4 KiB changes on it, restore byte-identical. */
static void direct_round_trip(const char *dir, const char *what)
{
    _cleanup_free_ char *url = xasprintf("file://%s/repo-%s", dir, what);
    _cleanup_free_ char *ip = xasprintf("%s/img-%s", dir, what), *tp = xasprintf("%s/target-%s", dir, what);
    CHECK_EQ(objstore_init(url, PASS, 0, NULL), 0);
    struct objstore *repo = open_url(url);
    uint64_t size = (37ull << 20) + 12345;
    int fd = open(ip, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    CHECK_EQ(ftruncate(fd, (off_t)size), 0);
    img_random(fd, 0, 5u << 20);
    img_random(fd, (20ull << 20) - 3 * BLK, 3u << 20);
    uint8_t *zero = xcalloc(1, 1u << 20);
    img_write(fd, 24ull << 20, zero, 1u << 20);
    free(zero);
    img_random(fd, size - 100000, 100000);
    struct objstore_range all = { 0, size };
    struct objstore_export_result res;
    CHECK_EQ(do_export(repo, fd, size, &all, 1, NULL, &res), 0);
    uint8_t *want = img_read(fd, size);
    int t = open(tp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(t >= 0);
    struct objstore_restore_req rq = { .manifest = res.manifest, .fd = t };
    CHECK_EQ(objstore_restore(repo, &rq, NULL), 0);
    CHECK(buf_equals_fd(want, t, size));
    close(t);
    free(want);

    struct objstore_range ch[64];
    for (size_t i = 0; i < ARRAY_SIZE(ch); i++) {
        ch[i] = (struct objstore_range){ rnd() % (size / BLK) * BLK, BLK };
        img_random(fd, ch[i].offset, (size_t)MIN((uint64_t)BLK, size - ch[i].offset));
    }
    struct objstore_export_result inc;
    CHECK_EQ(do_export(repo, fd, size, ch, ARRAY_SIZE(ch), res.manifest, &inc), 0);
    want = img_read(fd, size);
    t = open(tp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    CHECK(t >= 0);
    rq = (struct objstore_restore_req){ .manifest = inc.manifest, .fd = t };
    CHECK_EQ(objstore_restore(repo, &rq, NULL), 0);
    CHECK(buf_equals_fd(want, t, size));
    /* Resume over a complete target: everything found in place. */
    struct objstore_restore_result rr;
    rq.resume = true;
    CHECK_EQ(objstore_restore(repo, &rq, &rr), 0);
    CHECK_EQ(rr.chunks_fetched, 0);
    CHECK(buf_equals_fd(want, t, size));
    close(t);
    free(want);
    close(fd);
    objstore_export_result_free(&res);
    objstore_export_result_free(&inc);
    objstore_close(repo);
}

static void test_direct_io(void)
{
    _cleanup_free_ char *ext = xasprintf("%s/direct", tmpdir);
    CHECK_EQ(mkdir(ext, 0700), 0);
    direct_round_trip(ext, "here");
    _cleanup_free_ char *mnt = xasprintf("%s/ramfs", tmpdir);
    mkdir(mnt, 0700);
    if (mount("ramfs", mnt, "ramfs", 0, NULL) < 0) {
        fprintf(stderr, "test_direct_io: ramfs part skipped (mount: %s)\n", strerror(errno));
        return;
    }
    _cleanup_free_ char *probe = xasprintf("%s/probe", mnt);
    int pf = open(probe, O_RDWR | O_CREAT | O_DIRECT | O_CLOEXEC, 0600);
    if (pf >= 0) {
        fprintf(stderr, "test_direct_io: ramfs takes O_DIRECT here; the fallback is not exercised\n");
        close(pf);
    }
    direct_round_trip(mnt, "ramfs");
    umount2(mnt, MNT_DETACH);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        SKIP("mkdtemp: %s", strerror(errno));
    rng ^= (uint64_t)getpid();
    test_init_open();
    test_formats();
    test_round_trips();
    test_dedup();
    test_chain("r-scattered", SCATTERED);
    test_chain("r-clustered", CLUSTERED);
    test_chain("r-mixed", MIXED);
    test_tamper();
    test_enospc();
    test_direct_io();
    cleanup_tmpdir();
    return CHECK_DONE();
}
