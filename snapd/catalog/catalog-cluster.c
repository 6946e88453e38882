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

static const struct col job_cols[] = {
    COL_STR(struct cat_cluster_job, name),
    COL_STR(struct cat_cluster_job, source_node),
    COL_STR(struct cat_cluster_job, source_snapshot),
    COL_STR(struct cat_cluster_job, source_volume),
    COL_STR(struct cat_cluster_job, pvc_namespace),
    COL_STR(struct cat_cluster_job, pvc_name),
    COL_STR(struct cat_cluster_job, fs_type),
    COL_STR(struct cat_cluster_job, params),
    COL_U64(struct cat_cluster_job, size_bytes),
    COL_U64(struct cat_cluster_job, started_ns),
    COL_U32(struct cat_cluster_job, attempts),
};
static const struct row_type job_row = ROW_TYPE(struct cat_cluster_job, job_cols);

void cat_cluster_job_clear(struct cat_cluster_job *j)
{
    row_clear(&job_row, j);
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
    row_bind(&job_row, st, j);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_cluster_job_delete(struct catalog *cat, const char *name)
{
    static const char sql[] = "DELETE FROM cluster_jobs WHERE name = ?1";
    int r = row_change(cat, sql, name, NULL, NULL, "no cluster job %s", name);
    return r == -ENOENT ? 0 : r;
}

int cat_cluster_job_list(struct catalog *cat, struct cat_cluster_job **ret, size_t *ret_n)
{
    static const char sql[] = "SELECT " JOB_COLS " FROM cluster_jobs ORDER BY started_ns, name";
    return row_query_all(cat, sql, &job_row, NULL, NULL, ret, ret_n);
}
