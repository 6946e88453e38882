/* metrics.c: Prometheus metrics over plain HTTP (`--metrics-listen
 * HOST:PORT`), for the DaemonSet's scrape annotations.
 *
 * One thread accepts a connection at a time, reads the request line
 * (bounded: 4 KiB, 2 s), and answers GET /metrics with the text exposition
 * format, anything else with 404; each connection is closed after one
 * answer. Scrapes are rare and small, so this stays off the gRPC loop and
 * needs no HTTP library. The figures are read fresh from the pool and the
 * catalog at each scrape. */
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/cluster/cluster.h"
#include "snapd/store/store.h"

struct metrics {
    struct amberd *d;
    int fd;
    pthread_t thread;
    volatile bool stop;
};
static struct metrics *g_metrics;

static void render(struct amberd *d, struct buf *b)
{
    struct pool_space sp = {0};
    pool_get_space(d->pool, &sp);
    struct cat_volume_list vl = {0};
    cat_volume_list(d->cat, NULL, NULL, &vl);
    uint64_t snaps = 0, attached = 0;
    cat_snapshot_count(d->cat, NULL, &snaps);
    for (size_t i = 0; i < vl.n; i++) {
        struct pool_file_info fi = {0};
        if (pool_stat(d->pool, vl.items[i].id, NULL, &fi) == 0 && fi.device)
            attached++;
        free(fi.device);
    }
    buf_printf(b, "# HELP amber_pool_size_bytes Size of the pool's filesystem.\n"
                  "# TYPE amber_pool_size_bytes gauge\namber_pool_size_bytes %llu\n",
               (unsigned long long)sp.total);
    buf_printf(b, "# HELP amber_pool_free_bytes Free space in the pool.\n"
                  "# TYPE amber_pool_free_bytes gauge\namber_pool_free_bytes %llu\n",
               (unsigned long long)sp.free);
    buf_printf(b, "# HELP amber_volumes Volumes in the catalog.\n"
                  "# TYPE amber_volumes gauge\namber_volumes %zu\n", vl.n);
    buf_printf(b, "# HELP amber_volumes_attached Volumes attached to a loop device.\n"
                  "# TYPE amber_volumes_attached gauge\namber_volumes_attached %llu\n",
               (unsigned long long)attached);
    buf_printf(b, "# HELP amber_snapshots Snapshots in the catalog (as amberctl info counts them).\n"
                  "# TYPE amber_snapshots gauge\namber_snapshots %llu\n", (unsigned long long)snaps);
    struct store_status ss;
    if (store_status(d, false, 0, &ss) == 0) {
        buf_printf(b, "# HELP amber_snapshots_resident Snapshots that are subvolumes in the pool.\n"
                      "# TYPE amber_snapshots_resident gauge\namber_snapshots_resident %llu\n"
                      "# HELP amber_snapshots_stored Snapshots in the pool's local snapshot store.\n"
                      "# TYPE amber_snapshots_stored gauge\namber_snapshots_stored %llu\n"
                      "# HELP amber_store_backlog Ready snapshots the mover has not stored yet.\n"
                      "# TYPE amber_store_backlog gauge\namber_store_backlog %llu\n"
                      "# HELP amber_store_blocked Of them, waiting for room in the pool.\n"
                      "# TYPE amber_store_blocked gauge\namber_store_blocked %llu\n"
                      "# HELP amber_store_moved_total Snapshots stored since start.\n"
                      "# TYPE amber_store_moved_total counter\namber_store_moved_total %llu\n"
                      "# HELP amber_store_dropped_total Subvolumes dropped since start.\n"
                      "# TYPE amber_store_dropped_total counter\namber_store_dropped_total %llu\n"
                      "# HELP amber_store_hydrated_total Snapshots brought back from the store.\n"
                      "# TYPE amber_store_hydrated_total counter\namber_store_hydrated_total %llu\n"
                      "# HELP amber_defrag_bytes_total Live-image bytes rewritten by the defragmenter.\n"
                      "# TYPE amber_defrag_bytes_total counter\namber_defrag_bytes_total %llu\n",
                   (unsigned long long)ss.resident, (unsigned long long)ss.stored,
                   (unsigned long long)ss.backlog, (unsigned long long)ss.blocked,
                   (unsigned long long)ss.moved, (unsigned long long)ss.dropped,
                   (unsigned long long)ss.hydrated, (unsigned long long)ss.defrag_bytes);
    }
    buf_printf(b, "# HELP amber_info Build and pool facts.\n# TYPE amber_info gauge\n"
                  "amber_info{version=\"%s\",backend=\"%s\",node=\"%s\"} 1\n",
               AMBER_VERSION, pool_backend_name(d->pool), d->node_id ? d->node_id : "");
    cat_volume_list_free(&vl);
    cluster_metrics(d, b);
}

static void serve_one(struct metrics *m, int fd)
{
    char req[4096];
    size_t have = 0;
    while (have < sizeof req - 1 && !memmem(req, have, "\r\n", 2)) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        if (poll(&p, 1, 2000) <= 0)
            return;
        ssize_t n = recv(fd, req + have, sizeof req - 1 - have, 0);
        if (n <= 0)
            return;
        have += (size_t)n;
    }
    req[have] = 0;
    struct buf body = {0}, out = {0};
    const char *status = "404 Not Found";
    if (strncmp(req, "GET /metrics ", 13) == 0 || strncmp(req, "GET /metrics?", 13) == 0) {
        status = "200 OK";
        render(m->d, &body);
    } else {
        buf_printf(&body, "not found: try /metrics\n");
    }
    buf_printf(&out, "HTTP/1.1 %s\r\nContent-Type: text/plain; version=0.0.4\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, body.len);
    buf_append(&out, body.data, body.len);
    for (size_t off = 0; off < out.len;) {
        ssize_t w = send(fd, out.data + off, out.len - off, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    buf_free(&body);
    buf_free(&out);
}

static void *metrics_main(void *arg)
{
    struct metrics *m = arg;
    while (!m->stop) {
        struct pollfd p = { .fd = m->fd, .events = POLLIN };
        if (poll(&p, 1, 500) <= 0)
            continue;
        int fd = accept4(m->fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0)
            continue;
        serve_one(m, fd);
        close(fd);
    }
    return NULL;
}

int metrics_start(struct amberd *d, const char *hostport)
{
    _cleanup_free_ char *host = xstrdup(hostport);
    char *colon = strrchr(host, ':');
    if (!colon)
        return -EINVAL;
    *colon = 0;
    const char *h = *host ? host : NULL;
    if (h && h[0] == '[') {
        h++;
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai = NULL;
    if (getaddrinfo(h, colon + 1, &hints, &ai) != 0 || !ai)
        return -EADDRNOTAVAIL;
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    int r = 0;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 16) < 0)
        r = -errno;
    freeaddrinfo(ai);
    if (r < 0) {
        if (fd >= 0)
            close(fd);
        return r;
    }
    struct metrics *m = xcalloc(1, sizeof *m);
    m->d = d;
    m->fd = fd;
    if (pthread_create(&m->thread, NULL, metrics_main, m) != 0) {
        close(fd);
        free(m);
        return -EAGAIN;
    }
    g_metrics = m;
    log_info("metrics", "Prometheus metrics on http://%s/metrics", hostport);
    return 0;
}

void metrics_stop(void)
{
    struct metrics *m = g_metrics;
    if (!m)
        return;
    m->stop = true;
    pthread_join(m->thread, NULL);
    close(m->fd);
    free(m);
    g_metrics = NULL;
}
