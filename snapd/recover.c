/* recover.c: at start, finish or roll back what a crash left half done, and
 * compare the catalog with the pool.
 *
 * Creations were never acknowledged, so they roll back: what the pool made
 * is removed with the row. Deletions were asked for, so they roll forward.
 * Resizes adopt the size the image really has. Reverts need nothing: the
 * pool's own start-up finished or undid the rename. Filesystems a crash
 * left frozen (a freeze in flight) are thawed. Objects found on only one
 * side are reported, never deleted: no data is thrown away on a guess. */
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/store/store.h"

static int recover_one(struct amberd *d, const struct cat_intent *in)
{
    const char *id = in->target_id;
    int r = 0;
    if (strcmp(in->op, CAT_OP_VOLUME_CREATE) == 0) {
        r = pool_vol_delete(d->pool, id);
        if (r == -ENOENT)
            r = 0;
        if (r == 0)
            r = cat_volume_delete(d->cat, id);
        if (r == -ENOENT)
            r = 0;
    } else if (strcmp(in->op, CAT_OP_VOLUME_DELETE) == 0) {
        r = pool_vol_delete(d->pool, id);
        if (r == -ENOENT)
            r = 0;
        if (r == 0 && (r = cat_volume_delete(d->cat, id)) == -ENOENT)
            r = 0;
    } else if (strcmp(in->op, CAT_OP_RESIZE) == 0) {
        struct pool_file_info fi = {0};
        r = pool_stat(d->pool, id, NULL, &fi);
        if (r == 0)
            r = cat_volume_set_size(d->cat, id, fi.size);
        free(fi.device);
    } else if (strcmp(in->op, CAT_OP_REVERT) == 0) {
        r = 0;
    } else if (strcmp(in->op, CAT_OP_RESTORE) == 0) {
        /* Kept: running the same restore again resumes it. */
        log_info("recover", "volume %s holds an interrupted restore of manifest %s: run the "
                 "restore again to resume it, or delete the volume", id, in->args ? in->args : "?");
        return 0;
    } else if (strcmp(in->op, CAT_OP_SNAPSHOT_CREATE) == 0 ||
               strcmp(in->op, CAT_OP_SNAPSHOT_DELETE) == 0) {
        struct cat_snapshot *s = NULL;
        r = cat_snapshot_get(d->cat, id, &s);
        if (r == 0) {
            struct cat_store_info si = {0};
            cat_store_get(d->cat, id, &si);
            store_snapshot_deleting(d, s);
            r = pool_snap_delete(d->pool, s->volume_id, id);
            if (r == -ENOENT)
                r = 0;
            if (r == 0)
                r = cat_snapshot_delete(d->cat, id);
            if (r == 0)
                store_snapshot_deleted(d, si.manifest);
            cat_store_info_clear(&si);
            cat_snapshot_free(s);
        } else if (r == -ENOENT) {
            r = 0;
        }
    } else if (strncmp(in->op, "store_", 6) == 0) {
        r = store_recover_intent(d, in);
        if (r == 0)
            log_info("recover", "%s of %s after a crash (step %s): %s", in->op, id,
                     in->step ? in->step : "?", strcmp(in->op, CAT_OP_STORE_DROP) == 0 ? "finished"
                     : "the mover resumes it");
        return r < 0 ? log_error_errno(r, "recover", "could not recover %s of %s", in->op, id) : 0;
    } else {
        log_warn("recover", "intent %lld: unknown operation %s on %s left as it is",
                 (long long)in->id, in->op, id);
        return 0;
    }
    if (r < 0)
        return log_error_errno(r, "recover", "could not recover %s of %s (step %s)", in->op, id,
                               in->step ? in->step : "?");
    r = cat_intent_delete(d->cat, in->id);
    log_info("recover", "%s %s of %s after a crash (step %s)",
             strstr(in->op, "delete") || strcmp(in->op, CAT_OP_RESIZE) == 0 ? "finished" : "rolled back",
             in->op, id, in->step ? in->step : "?");
    return r;
}

static void reconcile(struct amberd *d)
{
    struct cat_volume_list vl = {0};
    if (cat_volume_list(d->cat, NULL, NULL, &vl) < 0)
        return;
    char **disk = NULL;
    pool_list(d->pool, NULL, &disk);
    for (size_t i = 0; i < vl.n; i++) {
        struct pool_file_info fi = {0};
        int r = pool_stat(d->pool, vl.items[i].id, NULL, &fi);
        if (r == -ENOENT)
            log_error("recover", "volume %s (%s) is in the catalog but not in the pool",
                      vl.items[i].name, vl.items[i].id);
        if (fi.device) {
            /* A crash during a freeze leaves it frozen: thaw. */
            pool_thaw_device(fi.device);
            free(fi.device);
        }
    }
    for (size_t k = 0; disk && disk[k]; k++) {
        bool known = false;
        for (size_t i = 0; i < vl.n && !known; i++)
            known = strcmp(vl.items[i].id, disk[k]) == 0;
        if (!known)
            log_warn("recover", "volume %s is in the pool but not in the catalog; left alone", disk[k]);
    }
    pool_strv_free(disk);
    cat_volume_list_free(&vl);
}

int daemon_recover(struct amberd *d)
{
    struct cat_intent_list il = {0};
    int r = cat_intent_list(d->cat, &il);
    if (r < 0)
        return log_error_errno(r, "recover", "cannot read intents: %s", cat_errmsg(d->cat));
    int failed = 0;
    for (size_t i = 0; i < il.n; i++)
        if (recover_one(d, &il.items[i]) < 0)
            failed++;
    cat_intent_list_free(&il);
    reconcile(d);
    return failed ? -EIO : 0;
}
