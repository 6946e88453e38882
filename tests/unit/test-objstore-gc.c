/* test-objstore-gc.c: interruptions and maintenance of a format 2
 * repository: an export cancelled, an export and a restore killed (-9) at
 * chosen crash points (AMBER_CRASH_AT=objstore-pack:N after the Nth pack,
 * objstore-export-manifest, objstore-restore-write:N) and resumed; gc's two
 * phases (trash, then delete), repacking, the grace period and export
 * locks; and a gc that repacks and trashes while an export that reuses
 * those very blobs runs, stopped at a chosen point: nothing is lost; a
 * read error in one of four export workers leaves nothing half visible. */
#include <pthread.h>
#include <signal.h>
#include <time.h>

#include "test-objstore-lib.h"

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

static uint64_t manifests(struct objstore *repo)
{
    struct objstore_manifest_info *list;
    size_t n = 0;
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    objstore_manifest_infos_free(list, n);
    return n;
}

/* 32 MiB of random data at 64 KiB chunks: 512 pieces, 128 to a pack. */
#define BIG (32ull << 20)
#define BIG_PIECES 512

static void test_cancelled(void)
{
    struct objstore *repo = make_repo("r-cancel", 64 << 10);
    int fd = img_open("cancel", BIG);
    img_random(fd, 0, BIG);
    struct cancel_after ca = { .after = 300 };
    struct objstore_range all = { 0, BIG };
    struct objstore_export_req req = {
        .fd = fd, .size = BIG, .ranges = &all, .nranges = 1, .snapshot_uuid = "u1",
        .progress = cancel_progress, .progress_ud = &ca, .progress_each_chunk = true,
        .cancel = &ca.cancel, .parallelism = 1,     /* one pack of 128 pieces after another */
    };
    struct objstore_export_result res;
    CHECK_EQ(objstore_export(repo, &req, &res), -ECANCELED);
    CHECK_EQ(manifests(repo), 0);
    /* Two full packs, and the one it was filling, stored on the way out. */
    CHECK_EQ(count_files("r-cancel", "index"), 3);
    req.progress = NULL;
    req.cancel = NULL;
    CHECK_EQ(objstore_export(repo, &req, &res), 0);
    CHECK_EQ(res.chunks_reused, 300);
    CHECK_EQ(res.chunks_uploaded + res.chunks_reused, BIG_PIECES);
    CHECK(restore_matches(repo, res.manifest, fd, BIG));
    objstore_export_result_free(&res);
    close(fd);
    objstore_close(repo);
}

/* Run fn in a child with AMBER_CRASH_AT=at; it must die of SIGKILL. */
static void crash_child(const char *at, void (*fn)(void *), void *ud)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        setenv("AMBER_CRASH_AT", at, 1);
        fn(ud);
        _exit(0);       /* not killed: the parent's check fails */
    }
    int st = 0;
    CHECK_EQ(waitpid(pid, &st, 0), pid);
    CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

struct job {
    const char *url;
    int fd;
    const char *manifest;
    bool resume;
};

static void export_job(void *p)
{
    struct job *j = p;
    struct objstore *repo = open_url(j->url);
    struct objstore_range all = { 0, BIG };
    struct objstore_export_req req = { .fd = j->fd, .size = BIG, .ranges = &all, .nranges = 1,
                                       .snapshot_uuid = "crash", .parallelism = 2 };
    objstore_export(repo, &req, NULL);
    objstore_close(repo);
}

static void restore_job(void *p)
{
    struct job *j = p;
    struct objstore *repo = open_url(j->url);
    struct objstore_restore_req req = { .manifest = j->manifest, .fd = j->fd, .resume = j->resume,
                                        .parallelism = 2 };
    objstore_restore(repo, &req, NULL);
    objstore_close(repo);
}

static void test_killed(void)
{
    _cleanup_free_ char *url = repo_url("r-kill");
    struct objstore *repo = make_repo("r-kill", 64 << 10);
    int fd = img_open("kill", BIG);
    img_random(fd, 0, BIG);

    /* Killed right after its second pack (and that pack's index). */
    struct job j = { .url = url, .fd = fd };
    crash_child("objstore-pack:2", export_job, &j);
    CHECK_EQ(manifests(repo), 0);
    /* Two, or three if the other worker stored its pack just before. */
    int packs = count_files("r-kill", "index");
    CHECK(packs == 2 || packs == 3);
    struct objstore_range all = { 0, BIG };
    struct objstore_export_req req = { .fd = fd, .size = BIG, .ranges = &all, .nranges = 1,
                                       .snapshot_uuid = "crash", .parallelism = 2 };
    struct objstore_export_result res;
    /* Killed again just before its manifest: every piece stored. */
    crash_child("objstore-export-manifest:1", export_job, &j);
    CHECK_EQ(manifests(repo), 0);
    CHECK_EQ(objstore_export(repo, &req, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 0);
    CHECK_EQ(res.chunks_reused, BIG_PIECES);
    CHECK(restore_matches(repo, res.manifest, fd, BIG));
    objstore_export_result_free(&res);
    char m1[OBJSTORE_ID_LEN + 1];
    memcpy(m1, res.manifest, sizeof m1);

    /* The first rerun after the first kill reuses what the two packs hold:
     * check it on a fresh repository. */
    _cleanup_free_ char *url2 = repo_url("r-kill2");
    struct objstore *repo2 = make_repo("r-kill2", 64 << 10);
    j.url = url2;
    crash_child("objstore-pack:2", export_job, &j);
    packs = count_files("r-kill2", "index");
    CHECK(packs == 2 || packs == 3);
    CHECK_EQ(objstore_export(repo2, &req, &res), 0);
    CHECK_EQ(res.chunks_reused, 128 * (uint64_t)packs);
    CHECK_EQ(res.chunks_uploaded, BIG_PIECES - 128 * (uint64_t)packs);
    objstore_export_result_free(&res);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo2, res.manifest, 0, &v), 0);
    objstore_verify_result_free(&v);
    objstore_close(repo2);

    /* A restore killed after three writes (1 MiB runs of 16 pieces) resumes:
     * what is in place is checked, not fetched. */
    int t = img_open("kill-target", 0);
    j = (struct job){ .url = url, .fd = t, .manifest = m1 };
    crash_child("objstore-restore-write:3", restore_job, &j);
    img_random(t, BIG - 100, 10);   /* and a damaged block */
    struct objstore_restore_req rq = { .manifest = m1, .fd = t, .resume = true };
    struct objstore_restore_result rr;
    CHECK_EQ(objstore_restore(repo, &rq, &rr), 0);
    CHECK(rr.chunks_skipped >= 3 * 16);
    CHECK_EQ(rr.chunks_fetched + rr.chunks_skipped, BIG_PIECES);
    CHECK(files_equal(fd, t, BIG));
    fprintf(stderr, "restore resumed: %llu pieces in place, %llu fetched\n",
            (unsigned long long)rr.chunks_skipped, (unsigned long long)rr.chunks_fetched);
    /* A hole that holds data in the target is punched on resume. */
    img_random(t, BIG / 2, BLK);
    uint8_t *z = xcalloc(1, 1 << 20);
    img_write(fd, BIG / 2 - (1 << 19), z, 1 << 20);
    free(z);
    struct objstore_range hole = { BIG / 2 - (1 << 19), 1 << 20 };
    CHECK_EQ(do_export(repo, fd, BIG, &hole, 1, m1, &res), 0);
    rq.manifest = res.manifest;
    CHECK_EQ(objstore_restore(repo, &rq, &rr), 0);
    CHECK(files_equal(fd, t, BIG));
    objstore_export_result_free(&res);
    close(t);
    close(fd);
    objstore_close(repo);
}

/* Make every pack look written two hours ago. */
static void age_packs(const char *repo)
{
    _cleanup_free_ char *cmd = xasprintf("find %s/%s/packs -type f -exec touch -d '2 hours ago' {} +",
                                         tmpdir, repo);
    CHECK_EQ(system(cmd), 0);
}

static void test_gc(void)
{
    struct objstore *repo = make_repo("r-gc", 64 << 10);
    uint64_t size = 16ull << 20;
    int a = img_open("gc-a", size), b = img_open("gc-b", size);
    img_random(a, 0, (size_t)size);
    /* b: a's even pieces (128, shared) and 128 own: each of a's two packs
     * (one worker: 128 pieces a pack) is half dead once a goes. */
    img_random(b, 0, (size_t)size);
    uint8_t *img = img_read(a, size);
    for (uint64_t off = 0; off < size; off += 2 * (64 << 10))
        img_write(b, off, img + off, 64 << 10);
    free(img);
    struct objstore_export_result ra, rb;
    export_parallelism = 1;
    CHECK_EQ(export_alloc(repo, a, size, &ra), 0);
    export_parallelism = 0;
    CHECK_EQ(export_alloc(repo, b, size, &rb), 0);
    objstore_export_result_free(&ra);
    objstore_export_result_free(&rb);

    struct objstore_gc_result g;
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.packs_trashed + g.packs_deleted + g.packs_repacked, 0);
    CHECK_EQ(g.chunks_referenced, g.chunks_total);
    CHECK_EQ(objstore_delete_manifest(repo, ra.manifest), 0);
    CHECK_EQ(objstore_gc(repo, 3600, &g), 0);   /* all young: kept */
    CHECK_EQ(g.packs_trashed, 0);
    CHECK(g.chunks_young >= 128);
    age_packs("r-gc");

    /* An export that started an hour ago (another process) and still runs
     * does not stop phase 1, but holds back phase 2. */
    char body[128];
    snprintf(body, sizeof body, "host x\npid 1\nstart %llu\n",
             (unsigned long long)(now_real_ns() - 3600ull * 1000000000ull));
    _cleanup_free_ char *lock = xasprintf("%s/r-gc/locks/export-test", tmpdir);
    CHECK_EQ(write_file_atomic(lock, body, strlen(body), 0600), 0);
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.packs_trashed, 3);               /* a's two piece packs, repacked, and its nodes */
    CHECK_EQ(g.packs_repacked, 2);
    CHECK_EQ(g.packs_deleted, 0);
    int trashed = count_files("r-gc", "trash");
    CHECK_EQ(trashed, (int)g.packs_trashed);
    CHECK(restore_matches(repo, rb.manifest, b, size));
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.packs_deleted, 0);               /* held back */
    CHECK_EQ(count_files("r-gc", "trash"), trashed);
    unlink(lock);
    uint64_t before = count_files("r-gc", "packs");
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(g.packs_deleted, (uint64_t)trashed);
    fprintf(stderr, "gc phase 2: %llu packs, %llu bytes deleted\n", (unsigned long long)g.packs_deleted,
            (unsigned long long)g.bytes_deleted);
    CHECK(g.bytes_deleted >= 16u << 20);
    CHECK_EQ(count_files("r-gc", "trash"), 0);
    CHECK_EQ(count_files("r-gc", "packs"), (int)(before - (uint64_t)trashed));
    CHECK(count_files("r-gc", "index") <= 2);  /* rewritten as one, and the repack's */
    CHECK(restore_matches(repo, rb.manifest, b, size));
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, NULL, 0, &v), 0);
    CHECK(v.chunks_checked >= 256 + 4 + 1);     /* b's pieces, 4 leaves, a root, what was not repacked */
    objstore_verify_result_free(&v);

    /* A stale lock (its holder died long ago) holds nothing back. */
    CHECK_EQ(write_file_atomic(lock, body, strlen(body), 0600), 0);
    struct timespec old[2] = { { .tv_sec = time(NULL) - 7200 }, { .tv_sec = time(NULL) - 7200 } };
    CHECK_EQ(utimensat(AT_FDCWD, lock, old, 0), 0);
    CHECK_EQ(objstore_delete_manifest(repo, rb.manifest), 0);
    age_packs("r-gc");
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);
    CHECK_EQ(count_files("r-gc", "packs"), 0);
    CHECK_EQ(count_files("r-gc", "trash"), 0);
    close(a);
    close(b);
    objstore_close(repo);
}

/* The export runs in a thread and stops, at a chosen point (after it
 * reused K pieces), until gc has run in the main thread. */
struct rendezvous {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool go, done;
    uint64_t after;
};

static void pause_progress(void *ud, const struct objstore_progress *p)
{
    struct rendezvous *z = ud;
    if (p->chunks_reused < z->after)
        return;
    pthread_mutex_lock(&z->lock);
    if (!z->go) {
        z->go = true;
        pthread_cond_broadcast(&z->cond);
        while (!z->done)
            pthread_cond_wait(&z->cond, &z->lock);
    }
    pthread_mutex_unlock(&z->lock);
}

struct exporter {
    struct objstore *repo;
    struct objstore_export_req req;
    struct objstore_export_result res;
    int r;
};

static void *export_thread(void *p)
{
    struct exporter *e = p;
    e->r = objstore_export(e->repo, &e->req, &e->res);
    return NULL;
}

static void test_gc_during_export(void)
{
    _cleanup_free_ char *url = repo_url("r-gcx");
    struct objstore *repo = make_repo("r-gcx", 64 << 10);
    uint64_t size = 16ull << 20;
    /* a; c holds a's even pieces (so a's packs are half live once a goes:
     * repacked) and not the odd ones (trashed); b (exported during gc) = a
     * and 16 MiB new. */
    int a = img_open("gcx-a", size), c = img_open("gcx-c", size), b = img_open("gcx-b", 2 * size);
    img_random(a, 0, (size_t)size);
    uint8_t *img = img_read(a, size);
    for (uint64_t off = 0; off < size; off += 2 * (64 << 10))
        img_write(c, off, img + off, 64 << 10);
    img_write(b, 0, img, size);
    img_random(b, size, (size_t)size);
    free(img);
    struct objstore_export_result ra, rc;
    export_parallelism = 1;
    CHECK_EQ(export_alloc(repo, a, size, &ra), 0);
    export_parallelism = 0;
    CHECK_EQ(export_alloc(repo, c, size, &rc), 0);
    CHECK_EQ(objstore_delete_manifest(repo, ra.manifest), 0);
    age_packs("r-gcx");

    struct rendezvous z = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
                            .after = 64 };
    struct objstore_range all = { 0, 2 * size };
    struct exporter e = { .repo = repo };
    e.req = (struct objstore_export_req){ .fd = b, .size = 2 * size, .ranges = &all, .nranges = 1,
                                          .snapshot_uuid = "during-gc", .progress = pause_progress,
                                          .progress_ud = &z, .progress_each_chunk = true,
                                          .parallelism = 1 };
    pthread_t th;
    CHECK_EQ(pthread_create(&th, NULL, export_thread, &e), 0);
    pthread_mutex_lock(&z.lock);
    while (!z.go)
        pthread_cond_wait(&z.cond, &z.lock);
    pthread_mutex_unlock(&z.lock);
    /* The export has reused a's pieces from the index: now gc, from another
     * handle, repacks a's packs (h1 live through c) and trashes h2. */
    struct objstore *gcr = open_url(url);
    struct objstore_gc_result g;
    CHECK_EQ(objstore_gc(gcr, 0, &g), 0);
    CHECK_EQ(g.packs_repacked, 2);
    CHECK_EQ(g.packs_trashed, 3);
    fprintf(stderr, "gc during export: %llu packs repacked, %llu trashed\n",
            (unsigned long long)g.packs_repacked, (unsigned long long)g.packs_trashed);
    pthread_mutex_lock(&z.lock);
    z.done = true;
    pthread_cond_broadcast(&z.cond);
    pthread_mutex_unlock(&z.lock);
    pthread_join(th, NULL);
    CHECK_EQ(e.r, 0);
    CHECK_EQ(e.res.chunks_reused, 256);
    /* Nothing lost: every blob of b is indexed and sound, now and after
     * more gc runs (phase 2 keeps the pack the export took blobs back from). */
    struct objstore *fresh = open_url(url);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(fresh, e.res.manifest, 0, &v), 0);
    if (v.missing || v.corrupt)
        fprintf(stderr, "after the export: %llu missing, %llu corrupt of %llu\n", (unsigned long long)v.missing,
                (unsigned long long)v.corrupt, (unsigned long long)v.chunks_checked);
    objstore_verify_result_free(&v);
    CHECK(restore_matches(fresh, e.res.manifest, b, 2 * size));
    for (int i = 0; i < 2; i++) {
        age_packs("r-gcx");
        CHECK_EQ(objstore_gc(gcr, 0, &g), 0);
        CHECK_EQ(objstore_verify(fresh, e.res.manifest, 0, &v), 0);
        objstore_verify_result_free(&v);
        CHECK_EQ(objstore_verify(fresh, rc.manifest, 0, &v), 0);
        objstore_verify_result_free(&v);
    }
    CHECK(restore_matches(fresh, e.res.manifest, b, 2 * size));
    CHECK(restore_matches(fresh, rc.manifest, c, size));
    objstore_export_result_free(&ra);
    objstore_export_result_free(&rc);
    objstore_export_result_free(&e.res);
    objstore_close(fresh);
    objstore_close(gcr);
    close(a);
    close(b);
    close(c);
    objstore_close(repo);
}

/* Four workers; from the 200th read on the image fails (EIO, as a failing
 * disk): the export fails with it and nothing is half visible (no
 * manifest; every index names a complete pack, so the whole repository
 * verifies), and the rerun reuses what the workers stored on the way out
 * and restores byte-identical. */
static void test_read_error(void)
{
    struct objstore *repo = make_repo("r-eio", 64 << 10);
    int fd = img_open("eio", BIG);
    img_random(fd, 0, BIG);
    struct objstore_range all = { 0, BIG };
    struct objstore_export_req req = {
        .fd = fd, .size = BIG, .ranges = &all, .nranges = 1, .snapshot_uuid = "u-eio", .parallelism = 4,
    };
    struct objstore_export_result res;
    setenv("AMBER_FAULT_AT", "export-read:200", 1);
    CHECK_EQ(objstore_export(repo, &req, &res), -EIO);
    unsetenv("AMBER_FAULT_AT");
    CHECK_EQ(manifests(repo), 0);
    CHECK(count_files("r-eio", "index") >= 1);
    struct objstore_verify_result v = {};
    CHECK_EQ(objstore_verify(repo, NULL, 0, &v), 0);
    CHECK_EQ(v.missing + v.corrupt, 0);
    objstore_verify_result_free(&v);
    CHECK_EQ(objstore_export(repo, &req, &res), 0);
    CHECK(res.chunks_reused >= 100 && res.chunks_reused < BIG_PIECES);
    CHECK_EQ(res.chunks_uploaded + res.chunks_reused, BIG_PIECES);
    CHECK_EQ(manifests(repo), 1);
    CHECK(restore_matches(repo, res.manifest, fd, BIG));
    objstore_export_result_free(&res);
    close(fd);
    objstore_close(repo);
}

int main(void)
{
    if (!mkdtemp(tmpdir))
        SKIP("mkdtemp: %s", strerror(errno));
    rng ^= (uint64_t)getpid();
    test_cancelled();
    test_read_error();
    test_killed();
    test_gc();
    test_gc_during_export();
    cleanup_tmpdir();
    return CHECK_DONE();
}
