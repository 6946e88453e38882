/* test-objstore-s3.c: the s3 backend against a real S3 server on loopback,
 * and against a fake HTTP server for the faults a real one will not make.
 *
 * The real server is @20minutes/s3rver 4.x (it verifies SigV4 signatures),
 * started through tests/lib/s3rver.js: we fork `node tests/lib/s3rver.js
 * DIR bkt [--port N]` with pipes on its stdin and stdout, read "PORT n" from
 * its stdout, and stop it by PID (SIGTERM, or SIGKILL to simulate a crash).
 * If this test dies, the launcher sees EOF on its stdin and exits, so no
 * server outlives us. Skips (77) when node or the npm package is missing
 * (scripts/setup-deps installs it into build/node).
 *
 * The fake server (a thread here) answers with junk XML, HTTP 500, or
 * nothing at all, and records the request line and Host header so that
 * virtual-hosted addressing can be checked (s3rver signs virtual-hosted
 * requests with a non-standard canonical URI, so it cannot check that). */
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "amber/objstore.h"
#include "amber/util.h"
#include "check.h"

#define PASS "s3 test passphrase"

static char tmpdir[] = "/tmp/test-objstore-s3.XXXXXX";
static uint64_t rng = 0x2545f4914f6cdd1dull;

struct server {
    pid_t pid;
    int in_fd;      /* its stdin: closing it stops the server */
    int port;
};
static struct server s3 = { .pid = -1, .in_fd = -1 };

static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

static void server_stop(struct server *s, int sig)
{
    if (s->pid > 0) {
        kill(s->pid, sig);
        waitpid(s->pid, NULL, 0);
    }
    if (s->in_fd >= 0)
        close(s->in_fd);
    s->pid = -1;
    s->in_fd = -1;
}

static void stop_at_exit(void)
{
    server_stop(&s3, SIGTERM);
}

/* Start s3rver on `port` (0: any free one) storing data in DIR. */
static int server_start(struct server *s, const char *dir, int port)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(out, O_CLOEXEC) < 0)
        return -errno;
    char portarg[16];
    snprintf(portarg, sizeof portarg, "%d", port);
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        execlp("node", "node", "tests/lib/s3rver.js", dir, "bkt", "--port", portarg, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->pid = pid;
    s->in_fd = in[1];
    char line[64] = "";
    size_t n = 0;
    struct pollfd pfd = { .fd = out[0], .events = POLLIN };
    while (n < sizeof line - 1 && !strchr(line, '\n')) {
        if (poll(&pfd, 1, 20000) <= 0)
            break;
        ssize_t k = read(out[0], line + n, sizeof line - 1 - n);
        if (k <= 0)
            break;
        n += (size_t)k;
        line[n] = 0;
    }
    close(out[0]);
    if (sscanf(line, "PORT %d", &s->port) != 1) {
        server_stop(s, SIGKILL);
        return -EIO;
    }
    return 0;
}

static char *s3_url(const char *prefix, const char *extra)
{
    return xasprintf("s3://bkt/%s?endpoint=http://127.0.0.1:%d&region=us-east-1&style=path%s", prefix,
                     s3.port, extra ? extra : "");
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

static void img_random(int fd, uint64_t off, size_t n)
{
    uint8_t *b = xmalloc(n);
    for (size_t i = 0; i < n; i++)
        b[i] = (uint8_t)(rnd() >> 24);
    if (pwrite(fd, b, n, (off_t)off) != (ssize_t)n)
        exit(1);
    free(b);
}

static bool restore_matches(struct objstore *repo, const char *manifest, int src, uint64_t size)
{
    int t = img_open("target", 0);
    struct objstore_restore_req req = { .manifest = manifest, .fd = t };
    int r = objstore_restore(repo, &req, NULL);
    bool eq = r == 0;
    if (r < 0)
        fprintf(stderr, "restore: %s\n", strerror(-r));
    uint8_t *a = xmalloc(size ? size : 1), *b = xmalloc(size ? size : 1);
    struct stat st;
    if (eq && (fstat(t, &st) < 0 || (uint64_t)st.st_size != size))
        eq = false;
    if (eq && size && (pread(src, a, size, 0) != (ssize_t)size || pread(t, b, size, 0) != (ssize_t)size ||
                       memcmp(a, b, size)))
        eq = false;
    free(a);
    free(b);
    close(t);
    return eq;
}

static int export_range(struct objstore *repo, int fd, uint64_t size, const struct objstore_range *rg,
                        size_t n, const char *parent, struct objstore_export_result *res)
{
    struct objstore_export_req req = { .fd = fd, .size = size, .ranges = rg, .nranges = n,
                                       .parent = parent, .snapshot_uuid = "s3-snap" };
    int r = objstore_export(repo, &req, res);
    if (r == 0 && parent)       /* the parent's digests were read with ranged GETs */
        CHECK(res->nchanged > 0);
    objstore_export_result_free(res);
    return r;
}

static struct objstore *open_repo(const char *url)
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

static void test_round_trip(void)
{
    _cleanup_free_ char *url = s3_url("repo1", NULL), *err = NULL;
    int r = objstore_init(url, PASS, 64 << 10, &err);
    if (r < 0)
        fprintf(stderr, "init: %s (%s)\n", strerror(-r), err ? err : "");
    CHECK_EQ(r, 0);
    CHECK_EQ(objstore_init(url, PASS, 64 << 10, NULL), -EEXIST);
    struct objstore *repo = NULL;
    CHECK_EQ(objstore_open(url, "not it", &repo, NULL), -EKEYREJECTED);
    repo = open_repo(url);

    uint64_t size = (4ull << 20) + 1000;
    int fd = img_open("img", size);
    img_random(fd, 0, 1 << 20);
    img_random(fd, 3ull << 20, (1 << 20) + 1000);
    struct objstore_range all = { 0, size };
    struct objstore_export_result res;
    CHECK_EQ(export_range(repo, fd, size, &all, 1, NULL, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 33);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    /* A bucket that does not exist, and wrong credentials. */
    _cleanup_free_ char *nob = xasprintf("s3://nobucket/x?endpoint=http://127.0.0.1:%d", s3.port);
    struct objstore *none = NULL;
    free(TAKE_PTR(err));
    CHECK_EQ(objstore_open(nob, PASS, &none, &err), -ENXIO);
    CHECK(err && strstr(err, "bucket does not exist"));
    free(TAKE_PTR(err));
    setenv("AWS_SECRET_ACCESS_KEY", "WRONG", 1);
    CHECK_EQ(objstore_open(url, PASS, &none, &err), -EACCES);
    CHECK(err && strstr(err, "access denied") && !strstr(err, "WRONG"));
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);

    /* Three incremental exports of random writes. */
    char parent[OBJSTORE_ID_LEN + 1];
    memcpy(parent, res.manifest, sizeof parent);
    for (int gen = 0; gen < 3; gen++) {
        struct objstore_range rg[4];
        for (int i = 0; i < 4; i++) {
            uint64_t len = 1 + rnd() % 100000, off = rnd() % (size - len);
            img_random(fd, off, (size_t)len);
            rg[i] = (struct objstore_range){ off, len };
        }
        CHECK_EQ(export_range(repo, fd, size, rg, 4, parent, &res), 0);
        CHECK(res.chunks_uploaded <= 12);   /* 4 writes of < 100000 bytes: <= 3 chunks each */
        CHECK(restore_matches(repo, res.manifest, fd, size));
        memcpy(parent, res.manifest, sizeof parent);
    }
    struct objstore_manifest_info *list;
    size_t n;
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    CHECK_EQ(n, 4);
    objstore_manifest_infos_free(list, n);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, parent, 0, &v), 0);
    objstore_verify_result_free(&v);

    /* gc after deleting all but the last manifest keeps what it needs. */
    CHECK_EQ(objstore_list_manifests(repo, &list, &n), 0);
    for (size_t i = 0; i + 1 < n; i++)
        CHECK_EQ(objstore_delete_manifest(repo, list[i].id), 0);
    objstore_manifest_infos_free(list, n);
    struct objstore_gc_result g;
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);     /* phase 1: trash */
    CHECK(g.packs_trashed + g.packs_repacked > 0);
    CHECK(restore_matches(repo, parent, fd, size));
    CHECK_EQ(objstore_gc(repo, 0, &g), 0);     /* phase 2: delete */
    CHECK(g.packs_deleted > 0);
    CHECK(restore_matches(repo, parent, fd, size));
    CHECK_EQ(objstore_verify(repo, NULL, 0, &v), 0);
    objstore_verify_result_free(&v);

    /* Random reads are ranged GETs of single blobs. */
    uint8_t *want = xmalloc(size), *got = xmalloc(size);
    CHECK_EQ(pread(fd, want, size, 0), (ssize_t)size);
    for (int i = 0; i < 20; i++) {
        uint64_t len = 1 + rnd() % 300000, off = rnd() % (size - len);
        CHECK_EQ(objstore_read(repo, parent, off, got, len), 0);
        CHECK(!memcmp(got, want + off, len));
    }
    free(want);
    free(got);
    struct objstore_backend *be = objstore_get_backend(repo);
    struct buf part = {};
    CHECK_EQ(be->ops->get_range(be, "config", 0, 16, &part), 0);
    CHECK(part.len == 16 && !memcmp(part.data, "amber-repository", 16));
    part.len = 0;
    CHECK_EQ(be->ops->get_range(be, "config", 4, 4, &part), 0);
    CHECK(part.len == 4 && !memcmp(part.data, "r-re", 4));
    CHECK_EQ(be->ops->get_range(be, "config", 1 << 20, 4, &part), -EBADMSG);
    CHECK_EQ(be->ops->get_range(be, "nothing", 0, 4, &part), -ENOENT);
    buf_free(&part);
    close(fd);
    objstore_close(repo);
}

static void test_multipart(void)
{
    /* 16 MiB chunks of random data, sent in 5 MiB parts. */
    _cleanup_free_ char *url = s3_url("mp", "&multipart_threshold=1M&part_size=5M");
    CHECK_EQ(objstore_init(url, PASS, 16u << 20, NULL), 0);
    struct objstore *repo = open_repo(url);
    uint64_t size = 20ull << 20;
    int fd = img_open("mp", size);
    img_random(fd, 0, (size_t)size);
    struct objstore_range all = { 0, size };
    struct objstore_export_result res;
    CHECK_EQ(export_range(repo, fd, size, &all, 1, NULL, &res), 0);
    CHECK_EQ(res.chunks_uploaded, 2);
    CHECK(res.packs_uploaded >= 2);     /* 16 MiB pieces: a pack each, sent in parts */
    CHECK(restore_matches(repo, res.manifest, fd, size));
    close(fd);
    objstore_close(repo);
}

struct killer {
    uint64_t after;
    bool killed;
};

static void kill_progress(void *ud, const struct objstore_progress *p)
{
    struct killer *k = ud;
    if (!k->killed && p->chunks_uploaded >= k->after) {
        k->killed = true;
        server_stop(&s3, SIGKILL);
    }
}

static int count_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    (*(uint64_t *)ud)++;
    return 0;
}

static void test_killed_mid_export(const char *dir)
{
    _cleanup_free_ char *url = s3_url("crash", "&retries=1");
    CHECK_EQ(objstore_init(url, PASS, 64 << 10, NULL), 0);
    struct objstore *repo = open_repo(url);
    uint64_t size = 6ull << 20;
    int fd = img_open("crash", size);
    img_random(fd, 0, (size_t)size);
    struct objstore_range all = { 0, size };
    struct killer k = { .after = 20 };
    struct objstore_export_req req = { .fd = fd, .size = size, .ranges = &all, .nranges = 1,
                                       .snapshot_uuid = "crash", .progress = kill_progress,
                                       .progress_ud = &k, .progress_each_chunk = true };
    struct objstore_export_result res;
    int r = objstore_export(repo, &req, &res);
    CHECK(k.killed);
    CHECK(r == -ECONNREFUSED || r == -ECONNRESET || r == -ETIMEDOUT);
    fprintf(stderr, "export with the server killed: %s\n", strerror(-r));

    int port = s3.port;
    CHECK_EQ(server_start(&s3, dir, port), 0);
    CHECK_EQ(s3.port, port);
    uint64_t present = 0;
    struct objstore_backend *be = objstore_get_backend(repo);
    CHECK_EQ(be->ops->list(be, "index/", count_cb, &present), 0);
    CHECK(present < 2);     /* at most one 8 MiB pack of 6 MiB was complete */
    /* The old lock of the killed export is still there; a new export does
     * not mind. */
    req.progress = NULL;
    CHECK_EQ(objstore_export(repo, &req, &res), 0);
    CHECK_EQ(res.chunks_uploaded + res.chunks_reused, 96);
    objstore_export_result_free(&res);
    fprintf(stderr, "rerun: %llu chunks uploaded, %llu reused\n", (unsigned long long)res.chunks_uploaded,
            (unsigned long long)res.chunks_reused);
    struct objstore_verify_result v;
    CHECK_EQ(objstore_verify(repo, res.manifest, 0, &v), 0);
    objstore_verify_result_free(&v);
    CHECK(restore_matches(repo, res.manifest, fd, size));
    close(fd);
    objstore_close(repo);
}

static void test_dead_endpoint(void)
{
    /* A port that nothing listens on: bind, read the port, close. */
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    CHECK_EQ(bind(s, (struct sockaddr *)&a, sizeof a), 0);
    getsockname(s, (struct sockaddr *)&a, &al);
    close(s);
    _cleanup_free_ char *url = xasprintf("s3://bkt/x?endpoint=http://127.0.0.1:%d&retries=1",
                                         ntohs(a.sin_port));
    _cleanup_free_ char *err = NULL;
    struct objstore *repo = NULL;
    /* Refused at once, not retried into a timeout (tests/run's timeout
     * bounds a hang; no timed assertion here). */
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), -ECONNREFUSED);
    CHECK(err && strstr(err, "refused"));
    fprintf(stderr, "dead endpoint: %s\n", err ? err : "");
    /* No credentials at all. */
    char *id = getenv("AWS_ACCESS_KEY_ID") ? xstrdup(getenv("AWS_ACCESS_KEY_ID")) : NULL;
    unsetenv("AWS_ACCESS_KEY_ID");
    setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent", 1);
    free(TAKE_PTR(err));
    CHECK_EQ(objstore_open(url, PASS, &repo, &err), -ENOKEY);
    CHECK(err && strstr(err, "credentials") && !strstr(err, "S3RVER"));
    /* A credentials file. */
    _cleanup_free_ char *cf = xasprintf("%s/credentials", tmpdir);
    const char *ini = "[other]\naws_access_key_id = NO\n\n[default]\naws_access_key_id = S3RVER\n"
                      "aws_secret_access_key = S3RVER\n";
    CHECK_EQ(write_file_atomic(cf, ini, strlen(ini), 0600), 0);
    setenv("AWS_SHARED_CREDENTIALS_FILE", cf, 1);
    _cleanup_free_ char *good = s3_url("repo1", NULL);
    CHECK_EQ(objstore_open(good, PASS, &repo, NULL), 0);
    objstore_close(repo);
    if (id)
        setenv("AWS_ACCESS_KEY_ID", id, 1);
    free(id);
    free(TAKE_PTR(err));
}

/* ---- the fake server ---------------------------------------------------- */

enum fake_mode { FAKE_JUNK, FAKE_TRUNCATED, FAKE_500, FAKE_SLOW, FAKE_404 };

struct fake {
    int lfd, port;
    _Atomic enum fake_mode mode;
    atomic_int requests;
    atomic_bool stop;
    pthread_t th;
    char last[4096];
    pthread_mutex_t lock;
};

static void *fake_main(void *arg)
{
    struct fake *f = arg;
    while (!atomic_load(&f->stop)) {
        int c = accept4(f->lfd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0)
            break;
        char req[4096];
        size_t n = 0;
        while (n < sizeof req - 1) {
            ssize_t k = read(c, req + n, sizeof req - 1 - n);
            if (k <= 0)
                break;
            n += (size_t)k;
            req[n] = 0;
            if (strstr(req, "\r\n\r\n"))
                break;
        }
        req[n] = 0;
        atomic_fetch_add(&f->requests, 1);
        pthread_mutex_lock(&f->lock);
        snprintf(f->last, sizeof f->last, "%s", req);
        pthread_mutex_unlock(&f->lock);
        const char *body = "", *status = "200 OK";
        switch (atomic_load(&f->mode)) {
        case FAKE_JUNK:
            body = "this is <not> xml &bogus; at all \x01\x02";
            break;
        case FAKE_TRUNCATED:
            body = "<?xml version=\"1.0\"?><ListBucketResult><IsTruncated>false</IsTruncated>"
                   "<Contents><Key>chunks/aa/x</Key><Size>12";
            break;
        case FAKE_500:
            status = "500 Internal Server Error";
            body = "<Error><Code>InternalError</Code></Error>";
            break;
        case FAKE_404:
            status = "404 Not Found";
            body = "<Error><Code>NoSuchKey</Code></Error>";
            break;
        case FAKE_SLOW: {
            /* Answer nothing until the client gives up. */
            struct pollfd p = { .fd = c, .events = POLLIN };
            poll(&p, 1, 10000);
            close(c);
            continue;
        }
        }
        char *resp = xasprintf("HTTP/1.1 %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s", status,
                               strlen(body), body);
        ssize_t w = write(c, resp, strlen(resp));
        (void)w;
        free(resp);
        close(c);
    }
    return NULL;
}

static void fake_start(struct fake *f)
{
    memset(f, 0, sizeof *f);
    pthread_mutex_init(&f->lock, NULL);
    f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    if (bind(f->lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(f->lfd, 16) < 0)
        exit(1);
    getsockname(f->lfd, (struct sockaddr *)&a, &al);
    f->port = ntohs(a.sin_port);
    pthread_create(&f->th, NULL, fake_main, f);
}

static void fake_stop(struct fake *f)
{
    atomic_store(&f->stop, true);
    shutdown(f->lfd, SHUT_RDWR);
    pthread_join(f->th, NULL);
    close(f->lfd);
}

static int ignore_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    return 0;
}

static void test_fake_server(void)
{
    struct fake f;
    fake_start(&f);
    _cleanup_free_ char *url = xasprintf("s3://bkt/pre?endpoint=http://127.0.0.1:%d&retries=2&timeout=1", f.port);
    struct objstore_backend *be = NULL;
    CHECK_EQ(objstore_backend_open(url, &be, NULL), 0);

    atomic_store(&f.mode, FAKE_JUNK);
    CHECK_EQ(be->ops->list(be, "chunks/", ignore_cb, NULL), -EBADMSG);
    atomic_store(&f.mode, FAKE_TRUNCATED);
    CHECK_EQ(be->ops->list(be, "chunks/", ignore_cb, NULL), -EBADMSG);
    pthread_mutex_lock(&f.lock);
    CHECK(strstr(f.last, "GET /bkt?list-type=2&prefix=pre%2Fchunks%2F HTTP/1.1") != NULL);
    CHECK(strstr(f.last, "AWS4-HMAC-SHA256") != NULL);
    CHECK(strstr(f.last, "x-amz-content-sha256: e3b0c442") != NULL);
    pthread_mutex_unlock(&f.lock);

    /* 5xx: retried (1 + retries attempts), then -EIO. */
    atomic_store(&f.mode, FAKE_500);
    atomic_store(&f.requests, 0);
    struct buf b = {};
    CHECK_EQ(be->ops->get(be, "config", 1 << 20, &b), -EIO);
    CHECK_EQ(atomic_load(&f.requests), 3);
    /* Silence: the low-speed timeout gives -ETIMEDOUT. */
    atomic_store(&f.mode, FAKE_SLOW);
    CHECK_EQ(be->ops->get(be, "config", 1 << 20, &b), -ETIMEDOUT);
    objstore_backend_free(be);

    /* Virtual-hosted addressing puts the bucket in the host name. */
    atomic_store(&f.mode, FAKE_404);
    free(url);
    url = xasprintf("s3://bkt/pre?endpoint=http://s3.localhost:%d&style=virtual&region=eu-west-3", f.port);
    CHECK_EQ(objstore_backend_open(url, &be, NULL), 0);
    int r = be->ops->head(be, "config", NULL);
    if (r == -EHOSTUNREACH) {
        fprintf(stderr, "virtual-hosted: *.localhost does not resolve here, not checked\n");
    } else {
        CHECK_EQ(r, -ENOENT);
        pthread_mutex_lock(&f.lock);
        CHECK(strstr(f.last, "HEAD /pre/config HTTP/1.1") != NULL);
        _cleanup_free_ char *host = xasprintf("Host: bkt.s3.localhost:%d", f.port);
        CHECK(strstr(f.last, host) != NULL);
        CHECK(strstr(f.last, "/eu-west-3/s3/aws4_request") != NULL);
        pthread_mutex_unlock(&f.lock);
    }
    objstore_backend_free(be);
    buf_free(&b);
    fake_stop(&f);
}

int main(void)
{
    if (access("tests/lib/s3rver.js", R_OK) < 0)
        SKIP("run from the source tree (tests/lib/s3rver.js not found)");
    if (access("build/node/node_modules/@20minutes/s3rver/package.json", R_OK) < 0)
        SKIP("@20minutes/s3rver not installed: run scripts/setup-deps");
    if (system("node --version >/dev/null 2>&1") != 0)
        SKIP("node not found");
    if (!mkdtemp(tmpdir))
        SKIP("mkdtemp: %s", strerror(errno));
    signal(SIGPIPE, SIG_IGN);
    setenv("AWS_ACCESS_KEY_ID", "S3RVER", 1);
    setenv("AWS_SECRET_ACCESS_KEY", "S3RVER", 1);
    rng ^= (uint64_t)getpid();
    _cleanup_free_ char *dir = xasprintf("%s/s3data", tmpdir);
    mkdir(dir, 0700);
    atexit(stop_at_exit);
    int r = server_start(&s3, dir, 0);
    if (r < 0)
        SKIP("could not start s3rver: %s", strerror(-r));

    test_round_trip();
    test_multipart();
    test_killed_mid_export(dir);
    test_dead_endpoint();
    test_fake_server();

    server_stop(&s3, SIGTERM);
    if (!check_failures) {
        _cleanup_free_ char *cmd = xasprintf("rm -rf %s", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    } else {
        fprintf(stderr, "left %s for inspection\n", tmpdir);
    }
    return CHECK_DONE();
}
