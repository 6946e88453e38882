/* catalog-cluster.c: the cluster's copy jobs (snapd/cluster/jobs.c), one row
 * a job that has not finished: what the job was asked to make, so that an
 * amberd that stops or dies mid-copy starts the job again at its next start
 * (the sync engine then resumes the transfer from its last acknowledged
 * offset) and the provisioner's retry finds it running.
 *
 * The table is made by cat_cluster_jobs_open (CREATE TABLE IF NOT EXISTS),
 * called when cluster mode starts: nodes that are not in a cluster never
 * have it, and it needs no schema version of its own. */
#include "snapd/catalog/catalog-internal.h"

#define JOB_COLS "name, source_node, source_snapshot, source_volume, pvc_namespace, pvc_name, " \
                 "fs_type, params, size_bytes, started_ns, attempts"

int cat_cluster_jobs_open(struct catalog *cat)
{
    static const char sql[] =
        "CREATE TABLE IF NOT EXISTS cluster_jobs ("
        "  name TEXT PRIMARY KEY NOT NULL,"
        "  source_node TEXT NOT NULL,"
        "  source_snapshot TEXT,"
        "  source_volume TEXT,"
        "  pvc_namespace TEXT,"
        "  pvc_name TEXT,"
        "  fs_type TEXT,"
        "  params TEXT,"
        "  size_bytes INTEGER NOT NULL,"
        "  started_ns INTEGER NOT NULL,"
        "  attempts INTEGER NOT NULL"
        ") WITHOUT ROWID";
    CAT_LOCKED(cat);
    int rc = sqlite3_exec(cat->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : cat_sqlerr(cat, rc);
}

void cat_cluster_job_clear(struct cat_cluster_job *j)
{
    free(j->name);
    free(j->source_node);
    free(j->source_snapshot);
    free(j->source_volume);
    free(j->pvc_namespace);
    free(j->pvc_name);
    free(j->fs_type);
    free(j->params);
    *j = (struct cat_cluster_job){0};
}

int cat_cluster_job_put(struct catalog *cat, const struct cat_cluster_job *j)
{
    static const char sql[] = "INSERT OR REPLACE INTO cluster_jobs (" JOB_COLS ") "
                              "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
    int r;
    if (!j->name || !*j->name || !j->source_node || !*j->source_node)
        return cat_err(-EINVAL, "a cluster job needs a name and a source node");
    if ((r = check_u64(j->size_bytes, "size_bytes")) < 0 ||
        (r = check_u64(j->started_ns, "started_ns")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, j->name);
    bind_text(st, 2, j->source_node);
    bind_text(st, 3, j->source_snapshot);
    bind_text(st, 4, j->source_volume);
    bind_text(st, 5, j->pvc_namespace);
    bind_text(st, 6, j->pvc_name);
    bind_text(st, 7, j->fs_type);
    bind_text(st, 8, j->params);
    bind_u64(st, 9, j->size_bytes);
    bind_u64(st, 10, j->started_ns);
    bind_u64(st, 11, j->attempts);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_cluster_job_delete(struct catalog *cat, const char *name)
{
    static const char sql[] = "DELETE FROM cluster_jobs WHERE name = ?1";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, name);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_cluster_job_list(struct catalog *cat, struct cat_cluster_job **ret, size_t *ret_n)
{
    static const char sql[] = "SELECT " JOB_COLS " FROM cluster_jobs ORDER BY started_ns, name";
    *ret = NULL;
    *ret_n = 0;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    struct cat_cluster_job *v = NULL;
    size_t n = 0;
    while ((r = cat_step_row(cat, st)) == 1) {
        struct cat_cluster_job *j = ARRAY_PUSH(v, n);
        j->name = col_str(st, 0);
        j->source_node = col_str(st, 1);
        j->source_snapshot = col_str(st, 2);
        j->source_volume = col_str(st, 3);
        j->pvc_namespace = col_str(st, 4);
        j->pvc_name = col_str(st, 5);
        j->fs_type = col_str(st, 6);
        j->params = col_str(st, 7);
        j->size_bytes = col_u64(st, 8);
        j->started_ns = col_u64(st, 9);
        j->attempts = (uint32_t)col_u64(st, 10);
    }
    if (r < 0) {
        for (size_t i = 0; i < n; i++)
            cat_cluster_job_clear(&v[i]);
        free(v);
        return r;
    }
    *ret = v;
    *ret_n = n;
    return 0;
}
