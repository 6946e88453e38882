/* archive.c: export snapshots to an object-store repository and restore
 * them onto new volumes (amber.v1.Archive on the node socket).
 *
 * Export reads only what it must: when an earlier export of the same
 * volume to the same repository is recorded in the catalog, its snapshot
 * still exists and is older than this one, and its manifest is still in the
 * repository, the new export reads only the extents changed since then
 * (pool_diff) and takes every other chunk from that manifest; otherwise it
 * reads the snapshot's allocated extents. The repository itself skips
 * chunks it already has, so an export that was interrupted (daemon killed,
 * network down) resumes when run again without re-uploading anything.
 *
 * Restore makes a new volume in state `receiving` under a `restore` intent,
 * writes the manifest's bytes into its image, and makes it `ready` at the
 * end. An interrupted restore leaves the intent: the same command resumes
 * it (chunks already in place are verified, not fetched), and deleting the
 * volume abandons it. Progress streams to the caller at most ~10 times a
 * second; a caller that goes away cancels the work. */
#include <fcntl.h>
#include <stdatomic.h>
#include <string.h>

#include "amber/crashpoint.h"
#include "amber/log.h"
#include "amber/objstore.h"
#include "amber/util.h"
#include "archive.pb-c.h"
#include "snapd/daemon.h"
#include "snapd/store/store.h"

struct progress_ctx {
    struct rpc_call *call;
    atomic_bool cancel;
    const char *snapshot_id, *volume_id, *volume_name;
    /* Counted crash points (tests): "export-chunk:N" after the Nth chunk
     * stored, "restore-chunk:N" after the Nth chunk written. */
    const char *crash;
    bool crash_restore;
    uint64_t crash_last, crash_n;
};

static void progress_cb(void *ud, const struct objstore_progress *p)
{
    struct progress_ctx *x = ud;
    Amber__V1__ArchiveProgress m = AMBER__V1__ARCHIVE_PROGRESS__INIT;
    m.bytes_total = p->bytes_total;
    m.bytes_read = p->bytes_read;
    m.bytes_uploaded = p->bytes_uploaded;
    m.chunks_total = p->chunks_total;
    m.chunks_uploaded = p->chunks_uploaded;
    m.chunks_reused = p->chunks_reused;
    m.chunks_zero = p->chunks_zero;
    m.snapshot_id = (char *)(x->snapshot_id ? x->snapshot_id : "");
    m.volume_id = (char *)(x->volume_id ? x->volume_id : "");
    m.volume_name = (char *)(x->volume_name ? x->volume_name : "");
    if (rpc_call_send(x->call, &m.base) < 0)
        atomic_store(&x->cancel, true);
    /* Progress comes once a chunk when a crash point is armed, serialised
     * by the objstore's progress lock. */
    if (x->crash) {
        uint64_t v = x->crash_restore ? p->bytes_read : p->chunks_uploaded;
        if (v != x->crash_last) {
            x->crash_last = v;
            crashpoint_n(x->crash, ++x->crash_n);
        }
    }
}

struct range_acc {
    struct objstore_range *v;
    size_t n, cap;
};

static int range_cb(uint64_t off, uint64_t len, void *ud)
{
    struct range_acc *a = ud;
    if (a->n == a->cap) {
        a->cap = a->cap ? a->cap * 2 : 256;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (struct objstore_range){ off, len };
    return 0;
}

static int open_repo(struct rpc_call *c, const char *url, const char *password,
                     struct objstore **ret)
{
    if (!url || !*url)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "a repository URL is required");
    if (!password || !*password)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "the repository passphrase is required");
    _cleanup_free_ char *err = NULL;
    int r = objstore_open(url, password, ret, &err);
    if (r == -EKEYREJECTED)
        return rpc_error(c, RPC_PERMISSION_DENIED, "wrong passphrase for %s", url);
    if (r == -EINVAL)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "%s", err ? err : "invalid repository URL");
    if (r == -ENOENT)
        return rpc_error(c, RPC_NOT_FOUND, "no repository at %s%s%s (amberctl repo init?)", url,
                         err ? ": " : "", err ? err : "");
    if (r < 0)
        return rpc_error(c, r == -EPROTONOSUPPORT ? RPC_FAILED_PRECONDITION : rpc_code_from_errno(r),
                         "repository %s: %s", url, err ? err : strerror(-r));
    return 0;
}

/* The export to build on: the newest finished export of this volume to
 * this repository whose snapshot is older than `s` and still exists. */
static bool find_parent(struct amberd *d, struct objstore *repo, const struct cat_snapshot *s,
                        const char *url, char **ret_manifest, struct cat_snapshot **ret_snap)
{
    struct cat_export *e = NULL;
    if (cat_export_latest(d->cat, s->volume_id, url, &e) < 0)
        return false;
    bool ok = false;
    struct cat_snapshot *ps = NULL;
    struct objstore_manifest_info mi = {0};
    if (e->manifest_id && strcmp(e->snapshot_id, s->id) != 0 &&
        cat_snapshot_get(d->cat, e->snapshot_id, &ps) == 0 && ps->created_ns <= s->created_ns &&
        objstore_show_manifest(repo, e->manifest_id, &mi) == 0) {
        *ret_manifest = xstrdup(e->manifest_id);
        *ret_snap = TAKE_PTR(ps);
        ok = true;
        objstore_manifest_info_free(&mi);
    }
    cat_snapshot_free(ps);
    cat_export_free(e);
    return ok;
}

static int h_export(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__ExportRequest *q = (const void *)m;
    struct amberd *d = rpc_call_server_data(c);
    struct op_err e = {0};
    _cleanup_(cat_snapshot_freep) struct cat_snapshot *s = NULL, *ps = NULL;
    int r = snap_find(d, q->snapshot, &s, &e);
    if (r < 0) {
        r = rpc_error(c, e.code ? e.code : rpc_code_from_errno(r), "%s", e.msg);
        op_err_clear(&e);
        return r;
    }
    if (s->state != CAT_SNAP_READY)
        return rpc_error(c, RPC_FAILED_PRECONDITION, "snapshot %s is %s", s->name,
                         cat_snap_state_to_string(s->state));
    struct objstore *repo = NULL;
    if ((r = open_repo(c, q->repo, q->password, &repo)) < 0)
        return r;

    /* Exported here already (and still there): the same answer again. */
    struct cat_export *done = NULL;
    struct objstore_manifest_info mi = {0};
    if (!q->full && cat_export_find(d->cat, s->id, q->repo, &done) == 0 &&
        done->state == CAT_EXPORT_DONE && done->manifest_id &&
        objstore_show_manifest(repo, done->manifest_id, &mi) == 0) {
        Amber__V1__ArchiveProgress fin = AMBER__V1__ARCHIVE_PROGRESS__INIT;
        fin.done = true;
        fin.manifest = done->manifest_id;
        fin.parent_manifest = mi.parent;
        fin.chunks_reused = mi.data_chunks;
        fin.snapshot_id = s->id;
        fin.volume_id = s->volume_id;
        fin.volume_name = (char *)(s->volume_name ? s->volume_name : "");
        r = rpc_call_send(c, &fin.base);
        objstore_manifest_info_free(&mi);
        cat_export_free(done);
        objstore_close(repo);
        return r;
    }
    cat_export_free(done);

    _cleanup_free_ char *parent = NULL;
    struct range_acc ranges = {0};
    bool incremental = !q->full && find_parent(d, repo, s, q->repo, &parent, &ps);
    /* The changed extents come from the store's exact lists where the
     * snapshots were moved off the pool, and the bytes from the snapshot's
     * image (brought back from the store if it was moved). */
    if (incremental) {
        /* Moved off the pool and building on an export already there: copy
         * it from the local store, reading no volume. */
        int64_t cid = 0;
        struct cat_export *crow = NULL;
        struct progress_ctx cx = { .call = c, .snapshot_id = s->id, .volume_id = s->volume_id,
                                   .volume_name = s->volume_name };
        atomic_init(&cx.cancel, false);
        struct objstore_export_result cres = {0};
        r = store_copy_to(d, s, repo, progress_cb, &cx, &cx.cancel, &cres);
        if (r != -EOPNOTSUPP) {
            objstore_close(repo);
            if (cat_export_find(d->cat, s->id, q->repo, &crow) == 0)
                cid = crow->id;
            else
                cat_export_add(d->cat, s->id, q->repo, &cid);
            cat_export_free(crow);
            if (r < 0) {
                cat_export_update(d->cat, cid, CAT_EXPORT_FAILED, NULL);
                return rpc_error(c, r == -ECANCELED ? RPC_CANCELLED : rpc_code_from_errno(r),
                                 "export of %s from the snapshot store failed: %s (run it again "
                                 "to resume)", s->name, strerror(-r));
            }
            cat_export_update(d->cat, cid, CAT_EXPORT_DONE, cres.manifest);
            log_info("archive", "exported %s as manifest %s (copied from the snapshot store on %s): "
                     "uploaded %llu bytes, %.2fs", s->id, cres.manifest, parent,
                     (unsigned long long)cres.bytes_uploaded, cres.seconds);
            Amber__V1__ArchiveProgress cfin = AMBER__V1__ARCHIVE_PROGRESS__INIT;
            cfin.done = true;
            cfin.manifest = cres.manifest;
            cfin.parent_manifest = parent;
            cfin.bytes_uploaded = cres.bytes_uploaded;
            cfin.chunks_uploaded = cres.chunks_uploaded;
            cfin.chunks_reused = cres.chunks_reused;
            cfin.chunks_from_parent = cres.chunks_from_parent;
            cfin.seconds = cres.seconds;
            cfin.snapshot_id = s->id;
            cfin.volume_id = s->volume_id;
            cfin.volume_name = (char *)(s->volume_name ? s->volume_name : "");
            r = rpc_call_send(c, &cfin.base);
#if OBJSTORE_FORMAT_VERSION >= 2
            objstore_export_result_free(&cres);
#endif
            return r;
        }
    }
    const char *method = NULL;
    r = store_diff(d, incremental ? ps : NULL, s, NULL, range_cb, &ranges, &method);
    if (r < 0) {
        objstore_close(repo);
        free(ranges.v);
        return rpc_error(c, rpc_code_from_errno(r), "reading the extents of %s: %s", s->name, strerror(-r));
    }
    struct store_reader *rd = NULL;
    if ((r = store_reader_open_fd(d, s, &rd, &e)) < 0) {
        objstore_close(repo);
        free(ranges.v);
        r = rpc_error(c, e.code ? e.code : rpc_code_from_errno(r), "%s", e.msg);
        op_err_clear(&e);
        return r;
    }
    int fd = store_reader_fd(rd);

    int64_t eid = 0;
    struct cat_export *row = NULL;
    if (cat_export_find(d->cat, s->id, q->repo, &row) == 0) {
        eid = row->id;
        cat_export_free(row);
        cat_export_update(d->cat, eid, CAT_EXPORT_RUNNING, NULL);
    } else {
        cat_export_add(d->cat, s->id, q->repo, &eid);
    }

    struct objstore_label *labels = xcalloc(s->n_labels ? s->n_labels : 1, sizeof *labels);
    for (size_t i = 0; i < s->n_labels; i++)
        labels[i] = (struct objstore_label){ s->labels[i].key, s->labels[i].value };
    struct progress_ctx px = { .call = c, .snapshot_id = s->id, .volume_id = s->volume_id,
                               .volume_name = s->volume_name,
                               .crash = crashpoint_armed("export-chunk") ? "export-chunk" : NULL };
    atomic_init(&px.cancel, false);
    struct objstore_export_req req = {
        .fd = fd, .size = s->size_bytes, .ranges = ranges.v, .nranges = ranges.n,
        .parent = incremental ? parent : NULL, .snapshot_uuid = s->id,
        .volume_name = s->volume_name, .labels = labels, .nlabels = s->n_labels,
        .created_ns = s->created_ns, .parallelism = q->parallelism,
        .progress = progress_cb, .progress_ud = &px, .cancel = &px.cancel,
        .progress_each_chunk = px.crash != NULL,
        .no_changed = true,     /* the archive records no extent lists */
    };
    struct objstore_export_result res = {0};
    log_info("archive", "export of %s (%s) to %s: %s, %zu extents", s->name, s->id, q->repo,
             incremental ? "incremental" : "full", ranges.n);
    crashpoint("export:start");
    r = objstore_export(repo, &req, &res);
    store_reader_close(rd);
    free(labels);
    free(ranges.v);
    objstore_close(repo);
    if (r < 0) {
        cat_export_update(d->cat, eid, CAT_EXPORT_FAILED, NULL);
        log_warn_errno(r, "archive", "export of %s to %s failed", s->id, q->repo);
        if (r == -ECANCELED)
            return rpc_error(c, RPC_CANCELLED, "export cancelled; run it again to resume");
        return rpc_error(c, rpc_code_from_errno(r),
                         "export failed: %s (run it again: chunks already stored are kept)", strerror(-r));
    }
    cat_export_update(d->cat, eid, CAT_EXPORT_DONE, res.manifest);
    log_info("archive", "exported %s as manifest %s: read %llu bytes, uploaded %llu, %llu chunks new, "
             "%llu reused, %.2fs", s->id, res.manifest, (unsigned long long)res.bytes_read,
             (unsigned long long)res.bytes_uploaded, (unsigned long long)res.chunks_uploaded,
             (unsigned long long)res.chunks_reused, res.seconds);
    Amber__V1__ArchiveProgress fin = AMBER__V1__ARCHIVE_PROGRESS__INIT;
    fin.done = true;
    fin.manifest = res.manifest;
    fin.parent_manifest = incremental ? parent : "";
    fin.bytes_total = res.bytes_read;
    fin.bytes_read = res.bytes_read;
    fin.bytes_uploaded = res.bytes_uploaded;
    fin.chunks_uploaded = res.chunks_uploaded;
    fin.chunks_reused = res.chunks_reused;
    fin.chunks_zero = res.chunks_zero;
    fin.chunks_from_parent = res.chunks_from_parent;
    fin.seconds = res.seconds;
    fin.snapshot_id = s->id;
    fin.volume_id = s->volume_id;
    fin.volume_name = (char *)(s->volume_name ? s->volume_name : "");
    r = rpc_call_send(c, &fin.base);
    objstore_export_result_free(&res);
    return r;
}

static int h_restore(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__RestoreRequest *q = (const void *)m;
    struct amberd *d = rpc_call_server_data(c);
    struct op_err e = {0};
    if (name_validate(q->volume) < 0)
        return rpc_error(c, RPC_INVALID_ARGUMENT, "invalid volume name \"%s\"", q->volume);
    struct objstore *repo = NULL;
    int r = open_repo(c, q->repo, q->password, &repo);
    if (r < 0)
        return r;
    struct objstore_manifest_info mi = {0};
    r = objstore_show_manifest(repo, q->manifest, &mi);
    if (r < 0) {
        objstore_close(repo);
        return rpc_error(c, r == -ENOENT ? RPC_NOT_FOUND : r == -ENOTUNIQ ? RPC_INVALID_ARGUMENT
                                                                          : rpc_code_from_errno(r),
                         "manifest %s: %s", q->manifest,
                         r == -ENOENT ? "not in the repository" : r == -ENOTUNIQ ? "ambiguous prefix"
                                                                                  : strerror(-r));
    }

    /* A volume of this name under a restore intent is resumed; any other is
     * a name clash. */
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    bool resume = false;
    int64_t intent = 0;
    if (cat_volume_find(d->cat, q->volume, &v) == 0) {
        struct cat_intent *in = NULL;
        if (v->state == CAT_VOL_RECEIVING && cat_intent_find_target(d->cat, v->id, &in) == 0 &&
            strcmp(in->op, CAT_OP_RESTORE) == 0 && in->args && strcmp(in->args, mi.id) == 0) {
            resume = true;
            intent = in->id;
        }
        cat_intent_free(in);
        if (!resume) {
            objstore_manifest_info_free(&mi);
            objstore_close(repo);
            return rpc_error(c, RPC_ALREADY_EXISTS, "volume %s exists", q->volume);
        }
    } else {
        struct vol_create_args a = { .name = q->volume, .size = mi.volume_size };
        r = vol_create(d, &a, &v, &e);
        if (r < 0) {
            objstore_manifest_info_free(&mi);
            objstore_close(repo);
            r = rpc_error(c, e.code ? e.code : rpc_code_from_errno(r), "%s", e.msg);
            op_err_clear(&e);
            return r;
        }
        r = cat_begin(d->cat);
        if (r == 0) {
            r = cat_volume_set_state(d->cat, v->id, CAT_VOL_RECEIVING);
            if (r == 0)
                r = cat_intent_add(d->cat, CAT_OP_RESTORE, v->id, mi.id, &intent);
            r = cat_end(d->cat, r);
        }
        if (r < 0) {
            objstore_manifest_info_free(&mi);
            objstore_close(repo);
            return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
        }
    }
    if ((r = busy_acquire(d, v->id, "restore", &e)) < 0) {
        objstore_manifest_info_free(&mi);
        objstore_close(repo);
        r = rpc_error(c, e.code, "%s", e.msg);
        op_err_clear(&e);
        return r;
    }
    _cleanup_free_ char *path = pool_disk_path(d->pool, v->id, NULL);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    struct progress_ctx px = { .call = c, .volume_id = v->id, .volume_name = v->name,
                               .crash = crashpoint_armed("restore-chunk") ? "restore-chunk" : NULL,
                               .crash_restore = true };
    atomic_init(&px.cancel, false);
    struct objstore_restore_result res = {0};
    if (fd < 0) {
        r = -errno;
    } else {
        struct objstore_restore_req req = {
            .manifest = mi.id, .fd = fd, .resume = resume, .parallelism = q->parallelism,
            .progress = progress_cb, .progress_ud = &px, .cancel = &px.cancel,
            .progress_each_chunk = px.crash != NULL,
        };
        log_info("archive", "restore of manifest %s into volume %s%s", mi.id, v->name,
                 resume ? " (resuming)" : "");
        crashpoint("restore:start");
        r = objstore_restore(repo, &req, &res);
        if (r == 0 && fsync(fd) < 0)
            r = -errno;
        close(fd);
    }
    objstore_close(repo);
    if (r == 0) {
        r = cat_begin(d->cat);
        if (r == 0) {
            r = cat_volume_set_state(d->cat, v->id, CAT_VOL_READY);
            if (r == 0)
                r = cat_intent_delete(d->cat, intent);
            r = cat_end(d->cat, r);
        }
    }
    busy_release(d, v->id);
    if (r < 0) {
        objstore_manifest_info_free(&mi);
        log_warn_errno(r, "archive", "restore into %s interrupted", v->name);
        if (r == -ENOSPC)
            return rpc_error(c, RPC_RESOURCE_EXHAUSTED,
                             "the pool is full; volume %s is left half restored: free space and run "
                             "the restore again, or delete it", v->name);
        return rpc_error(c, r == -ECANCELED ? RPC_CANCELLED : rpc_code_from_errno(r),
                         "restore failed: %s; run it again to resume, or delete volume %s",
                         strerror(-r), v->name);
    }
    log_info("archive", "restored manifest %s into volume %s: %llu bytes fetched, %.2fs", mi.id,
             v->name, (unsigned long long)res.bytes_fetched, res.seconds);
    Amber__V1__ArchiveProgress fin = AMBER__V1__ARCHIVE_PROGRESS__INIT;
    fin.done = true;
    fin.manifest = mi.id;
    fin.bytes_total = res.volume_size;
    fin.bytes_read = res.bytes_written;
    fin.bytes_uploaded = res.bytes_fetched;
    fin.chunks_uploaded = res.chunks_fetched;
    fin.chunks_reused = res.chunks_skipped;
    fin.chunks_zero = res.chunks_zero;
    fin.seconds = res.seconds;
    fin.volume_id = v->id;
    fin.volume_name = v->name;
    fin.snapshot_id = mi.snapshot_uuid ? mi.snapshot_uuid : "";
    r = rpc_call_send(c, &fin.base);
    objstore_manifest_info_free(&mi);
    return r;
}

const struct rpc_method api_archive_methods[] = {
    { "/amber.v1.Archive/Export", &amber__v1__export_request__descriptor,
      &amber__v1__archive_progress__descriptor, RPC_SERVER_STREAM, h_export },
    { "/amber.v1.Archive/Restore", &amber__v1__restore_request__descriptor,
      &amber__v1__archive_progress__descriptor, RPC_SERVER_STREAM, h_restore },
};
const size_t api_archive_methods_n = ARRAY_SIZE(api_archive_methods);
