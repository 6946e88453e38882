/* archiver.c: snapshots that survive their node.
 *
 * The cluster's archives are named object-store repositories, the same
 * list on every node (--archives-file, from a ConfigMap; passphrases and S3
 * keys from a Secret): "NAME URL PASSWORD_FILE [gc-grace=SECONDS]" a line.
 * A snapshot is kept in archive NAME when it carries the label
 * amber.archive=NAME (the VolumeSnapshotClass parameter `archive`, or
 * `amberctl snapshot archive`). The archiver thread exports every such
 * snapshot that has no finished export to that repository yet, oldest
 * first, through the daemon's own Archive/Export (over the node socket),
 * which is incremental against the volume's previous export there and
 * resumes an interrupted one. It wakes when a snapshot is labelled and
 * every 30 s (a failed export, e.g. the store down, is retried then).
 *
 * Only the node that made a snapshot archives it (a replica pulled by
 * another node carries the label too, and is skipped there).
 *
 * When a snapshot's node is gone, any node finds its manifest by snapshot
 * id in the archives (archive_locate) and restores it (jobs.c). Deleting
 * the snapshot deletes its manifests from every archive and runs the
 * repository's gc, which removes only chunks that no remaining manifest
 * references, after the archive's grace period (default 1 h, so an export
 * running elsewhere never loses a chunk it just wrote). */
#include <string.h>
#include <time.h>

#include "amber/log.h"
#include "amber/objstore.h"
#include "amber/util.h"
#include "archive.pb-c.h"
#include "snapd/cluster/cluster.h"

#define ARCHIVER_PERIOD_S 30

/* --- the list ------------------------------------------------------------------ */

int cluster_archives_load(struct cluster_state *cs, const char *path)
{
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_file_all(path, 1 << 20, &text, &len);
    if (r < 0)
        return log_error_errno(r, "cluster", "cannot read --archives-file %s", path);
    unsigned lineno = 0;
    for (char *save = NULL, *line = strtok_r(text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        char *hash = strchr(line, '#');
        if (hash)
            *hash = 0;
        char *f[5] = {0}, *s2 = NULL;
        int nf = 0;
        for (char *t = strtok_r(line, " \t\r", &s2); t && nf < 5; t = strtok_r(NULL, " \t\r", &s2))
            f[nf++] = t;
        if (nf == 0)
            continue;
        uint64_t grace = 3600;
        if (nf < 3 || nf > 4 || name_validate(f[0]) < 0 ||
            (nf == 4 && (strncmp(f[3], "gc-grace=", 9) != 0 || parse_u64(f[3] + 9, &grace) < 0)))
            return log_error_errno(-EINVAL, "cluster", "%s:%u: expected \"NAME URL PASSWORD_FILE "
                                   "[gc-grace=SECONDS]\"", path, lineno);
        _cleanup_free_ char *pw = NULL;
        if ((r = read_file_all(f[2], 4096, &pw, NULL)) < 0)
            return log_error_errno(r, "cluster", "%s:%u: archive %s: cannot read the passphrase "
                                   "file %s", path, lineno, f[0], f[2]);
        pw[strcspn(pw, "\r\n")] = 0;
        cs->archives = xrealloc(cs->archives, (cs->n_archives + 1) * sizeof *cs->archives);
        cs->archives[cs->n_archives++] = (struct cluster_archive){
            .name = xstrdup(f[0]), .url = xstrdup(f[1]), .password = TAKE_PTR(pw),
            .gc_grace_s = grace,
        };
    }
    return 0;
}

void cluster_archives_free(struct cluster_state *cs)
{
    for (size_t i = 0; i < cs->n_archives; i++) {
        free(cs->archives[i].name);
        free(cs->archives[i].url);
        if (cs->archives[i].password)
            explicit_bzero(cs->archives[i].password, strlen(cs->archives[i].password));
        free(cs->archives[i].password);
    }
    free(cs->archives);
    cs->archives = NULL;
    cs->n_archives = 0;
}

const struct cluster_archive *cluster_archive_get(struct amberd *d, const char *name)
{
    struct cluster_state *cs = d->cluster;
    for (size_t i = 0; cs && name && i < cs->n_archives; i++)
        if (strcmp(cs->archives[i].name, name) == 0)
            return &cs->archives[i];
    return NULL;
}

/* --- calls on our own node socket ------------------------------------------------ */

int archive_self_call(struct amberd *d, const char *method, const ProtobufCMessage *req,
                      archive_progress_cb cb, void *ud, char **ret_manifest, struct op_err *e)
{
    struct rpc_client *cl = NULL;
    struct rpc_stream *s = NULL;
    struct rpc_status st = {0};
    int r = rpc_client_new(d->socket_path, NULL, &cl);
    if (r < 0) {
        op_fail(e, RPC_INTERNAL, r, "cannot reach our own socket %s", d->socket_path);
        return RPC_INTERNAL;
    }
    int code = rpc_stream_open(cl, method, 0, &s, &st);
    if (code == RPC_OK && (rpc_stream_send(s, req) < 0 || rpc_stream_close_send(s) < 0))
        code = RPC_UNAVAILABLE;
    bool done = false;
    while (code == RPC_OK) {
        Amber__V1__ArchiveProgress *m = NULL;
        r = rpc_stream_recv(s, &amber__v1__archive_progress__descriptor, (ProtobufCMessage **)&m);
        if (r <= 0)
            break;
        struct archive_progress_view v = {
            .bytes_total = m->bytes_total, .bytes_read = m->bytes_read,
            .bytes_uploaded = m->bytes_uploaded, .done = m->done, .manifest = m->manifest,
        };
        if (cb)
            cb(&v, ud);
        if (m->done) {
            done = true;
            if (ret_manifest)
                *ret_manifest = xstrdup(m->manifest);
        }
        protobuf_c_message_free_unpacked(&m->base, NULL);
    }
    if (s) {
        int fc = rpc_stream_finish(s, &st);
        if (code == RPC_OK)
            code = fc;
    }
    if (code == RPC_OK && !done)
        code = RPC_UNAVAILABLE;
    if (code != RPC_OK)
        op_fail(e, code, rpc_errno_from_code(code) ?: -EIO, "%s: %s", method,
                st.message && *st.message ? st.message : rpc_code_name(code));
    rpc_status_clear(&st);
    rpc_client_free(cl);
    return code;
}

/* --- find and forget ---------------------------------------------------------------- */

static int open_archive(const struct cluster_archive *a, struct objstore **ret)
{
    _cleanup_free_ char *err = NULL;
    int r = objstore_open(a->url, a->password, ret, &err);
    if (r < 0)
        log_warn_errno(r, "cluster", "archive %s (%s): %s", a->name, a->url, err ? err : "");
    return r;
}

int archive_locate(struct amberd *d, const char *snap_id, const struct cluster_archive **ret_archive,
                   char ret_manifest[65])
{
    struct cluster_state *cs = d->cluster;
    for (size_t i = 0; cs && i < cs->n_archives; i++) {
        struct objstore *repo = NULL;
        if (open_archive(&cs->archives[i], &repo) < 0)
            continue;
        struct objstore_manifest_info *mi = NULL;
        size_t n = 0;
        bool found = false;
        if (objstore_list_manifests(repo, &mi, &n) == 0) {
            /* The newest manifest of the snapshot (a re-export is equal). */
            for (size_t k = n; k-- > 0 && !found;)
                if (mi[k].snapshot_uuid && strcmp(mi[k].snapshot_uuid, snap_id) == 0) {
                    snprintf(ret_manifest, 65, "%s", mi[k].id);
                    found = true;
                }
            objstore_manifest_infos_free(mi, n);
        }
        objstore_close(repo);
        if (found) {
            *ret_archive = &cs->archives[i];
            return 0;
        }
    }
    return -ENOENT;
}

int archive_forget(struct amberd *d, const char *snap_id, unsigned *ret_manifests,
                   uint64_t *ret_chunks, struct op_err *e)
{
    struct cluster_state *cs = d->cluster;
    *ret_manifests = 0;
    *ret_chunks = 0;
    int ret = 0;
    for (size_t i = 0; cs && i < cs->n_archives; i++) {
        const struct cluster_archive *a = &cs->archives[i];
        struct objstore *repo = NULL;
        int r = open_archive(a, &repo);
        if (r < 0) {
            ret = op_fail(e, RPC_UNAVAILABLE, r, "archive %s: %s", a->name, strerror(-r));
            continue;
        }
        struct objstore_manifest_info *mi = NULL;
        size_t n = 0;
        unsigned deleted = 0;
        if ((r = objstore_list_manifests(repo, &mi, &n)) == 0) {
            for (size_t k = 0; k < n; k++)
                if (mi[k].snapshot_uuid && strcmp(mi[k].snapshot_uuid, snap_id) == 0) {
                    if ((r = objstore_delete_manifest(repo, mi[k].id)) < 0)
                        ret = op_fail(e, RPC_UNAVAILABLE, r, "archive %s: deleting manifest %s: %s",
                                      a->name, mi[k].id, strerror(-r));
                    else
                        deleted++;
                }
            objstore_manifest_infos_free(mi, n);
        } else {
            ret = op_fail(e, RPC_UNAVAILABLE, r, "archive %s: listing: %s", a->name, strerror(-r));
        }
        if (deleted) {
            struct objstore_gc_result g = {0};
            r = objstore_gc(repo, a->gc_grace_s, &g);
            if (r < 0)
                log_warn_errno(r, "cluster", "archive %s: gc after deleting snapshot %s (its chunks go "
                               "at the next gc)", a->name, snap_id);
            *ret_chunks += g.chunks_deleted;
            log_info("cluster", "removed snapshot %s from archive %s: manifests=%u chunks_deleted=%llu "
                     "chunks_young=%llu", snap_id, a->name, deleted,
                     (unsigned long long)g.chunks_deleted, (unsigned long long)g.chunks_young);
        }
        *ret_manifests += deleted;
        struct cat_export *x = NULL;
        if (cat_export_find(d->cat, snap_id, a->url, &x) == 0) {
            cat_export_delete(d->cat, x->id);
            cat_export_free(x);
        }
        objstore_close(repo);
    }
    return ret;
}

/* --- the thread ---------------------------------------------------------------------- */

static const char *label_of(const struct cat_snapshot *s)
{
    for (size_t i = 0; i < s->n_labels; i++)
        if (strcmp(s->labels[i].key, CLUSTER_ARCHIVE_LABEL) == 0)
            return s->labels[i].value;
    return NULL;
}

/* One pass: export what is due. Returns after the first failure (retried
 * at the next pass), or when everything is archived. */
static void archive_pass(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    struct cat_snapshot_filter f = { .label_key = CLUSTER_ARCHIVE_LABEL,
                                     .states = 1u << CAT_SNAP_READY };
    struct cat_snapshot_list sl = {0};
    if (cat_snapshot_list(d->cat, &f, NULL, &sl) < 0)
        return;
    for (size_t i = 0; i < sl.n; i++) {
        const struct cat_snapshot *s = &sl.items[i];
        const struct cluster_archive *a = cluster_archive_get(d, label_of(s));
        /* Replicas carry their origin's label: the origin archives them. */
        if (!a || (s->origin && strcmp(s->origin, "local") != 0))
            continue;
        struct cat_export *x = NULL;
        bool done = cat_export_find(d->cat, s->id, a->url, &x) == 0 && x->state == CAT_EXPORT_DONE;
        cat_export_free(x);
        if (done)
            continue;
        pthread_mutex_lock(&cs->lock);
        bool stop = cs->stopping;
        pthread_mutex_unlock(&cs->lock);
        if (stop)
            break;
        Amber__V1__ExportRequest q = AMBER__V1__EXPORT_REQUEST__INIT;
        q.snapshot = s->id;
        q.repo = a->url;
        q.password = a->password;
        struct op_err e = {0};
        _cleanup_free_ char *manifest = NULL;
        int code = archive_self_call(d, "/amber.v1.Archive/Export", &q.base, NULL, NULL, &manifest, &e);
        pthread_mutex_lock(&cs->lock);
        if (code == RPC_OK)
            cs->archived_total++;
        else
            cs->archive_failures++;
        pthread_cond_broadcast(&cs->cond);
        pthread_mutex_unlock(&cs->lock);
        if (code != RPC_OK) {
            log_warn("cluster", "archiving snapshot %s to %s failed (retried later): %s", s->id, a->name,
                     e.msg ? e.msg : "");
            op_err_clear(&e);
            break;
        }
        log_info("cluster", "archived snapshot %s (%s) to %s as manifest %s", s->id, s->name, a->name,
                 manifest ? manifest : "");
    }
    cat_snapshot_list_free(&sl);
}

static void *archiver_main(void *arg)
{
    struct amberd *d = arg;
    struct cluster_state *cs = d->cluster;
    pthread_mutex_lock(&cs->lock);
    while (!cs->stopping) {
        unsigned kicks = cs->archiver_kicks;
        pthread_mutex_unlock(&cs->lock);
        archive_pass(d);
        pthread_mutex_lock(&cs->lock);
        if (cs->archiver_kicks != kicks)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += ARCHIVER_PERIOD_S;
        while (!cs->stopping && cs->archiver_kicks == kicks)
            if (pthread_cond_timedwait(&cs->cond, &cs->lock, &ts) != 0)
                break;
    }
    pthread_mutex_unlock(&cs->lock);
    return NULL;
}

int archiver_start(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs || cs->n_archives == 0)
        return 0;
    int r = pthread_create(&cs->archiver, NULL, archiver_main, d);
    if (r != 0)
        return log_error_errno(-r, "cluster", "cannot start the archiver");
    cs->archiver_running = true;
    return 0;
}

void archiver_stop(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs || !cs->archiver_running)
        return;
    pthread_join(cs->archiver, NULL);
    cs->archiver_running = false;
}

void archiver_kick(struct amberd *d)
{
    struct cluster_state *cs = d->cluster;
    if (!cs)
        return;
    pthread_mutex_lock(&cs->lock);
    cs->archiver_kicks++;
    pthread_cond_broadcast(&cs->cond);
    pthread_mutex_unlock(&cs->lock);
}
