/* catalog-ops.c: the intent journal, schedules, exports and pod sockets.
 *
 * Intents are the crash-safety journal. The daemon writes one in the same
 * transaction as the row it is about to make real (state `creating`,
 * `deleting`, ...), does the disk work outside any transaction, then in one
 * transaction settles the row and deletes the intent. At start it walks
 * cat_intent_list() and finishes or rolls back each one. target_id is
 * unique, which doubles as a durable per-object lock: a second operation on
 * the same object gets -EBUSY (CSI: ABORTED) even across a restart, until
 * recovery has dealt with the first.
 *
 * Schedules, exports and pod sockets are plain rows; their contracts are in
 * catalog.h. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

/* ---- intents --------------------------------------------------------------- */

#define INTENT_COLS "id, op, target_id, args, step, created_ns, updated_ns"

static const struct col intent_cols[] = {
    COL_I64(struct cat_intent, id),
    COL_STR(struct cat_intent, op),
    COL_STR(struct cat_intent, target_id),
    COL_STR(struct cat_intent, args),
    COL_STR(struct cat_intent, step),
    COL_U64(struct cat_intent, created_ns),
    COL_U64(struct cat_intent, updated_ns),
};
static const struct row_type intent_row = ROW_TYPE(struct cat_intent, intent_cols);

void cat_intent_free(struct cat_intent *i)
{
    row_free(&intent_row, i);
}

void cat_intent_list_free(struct cat_intent_list *l)
{
    if (!l)
        return;
    row_list_free(&intent_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

int cat_intent_add(struct catalog *cat, const char *op, const char *target_id,
                   const char *args_json, int64_t *ret_id)
{
    static const char sql[] = "INSERT INTO intents (op, target_id, args, step, created_ns, updated_ns) "
                              "VALUES (?1, ?2, ?3, 'start', ?4, ?4)";
    int r;
    if ((r = check_text(op, 64, false, "op")) < 0 ||
        (r = check_text(target_id, 256, false, "target_id")) < 0 ||
        (r = check_text(args_json, 65536, true, "args")) < 0)
        return r;
    if (!*op || !*target_id)
        return cat_err(-EINVAL, "an intent needs an op and a target");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, op);
    bind_text(st, 2, target_id);
    bind_text(st, 3, args_json);
    bind_u64(st, 4, now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(-EBUSY, "an operation on %s is in flight", target_id);
    if (r < 0)
        return r;
    if (ret_id)
        *ret_id = sqlite3_last_insert_rowid(cat->db);
    return 0;
}

int cat_intent_update(struct catalog *cat, int64_t id, const char *step, const char *args_json)
{
    static const char sql[] = "UPDATE intents SET step = ?2, args = coalesce(?3, args), "
                              "updated_ns = ?4 WHERE id = ?1";
    int r;
    if ((r = check_text(step, 64, false, "step")) < 0 ||
        (r = check_text(args_json, 65536, true, "args")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, step);
    bind_text(st, 3, args_json);
    bind_u64(st, 4, now_real_ns());
    return cat_step_one(cat, st, "no intent %lld", (long long)id);
}

int cat_intent_delete(struct catalog *cat, int64_t id)
{
    static const char sql[] = "DELETE FROM intents WHERE id = ?1";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, id);
    return cat_step_one(cat, st, "no intent %lld", (long long)id);
}

static int intent_query1(struct catalog *cat, const char *sql, int64_t id, const char *target,
                         struct cat_intent **ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    if (target)
        bind_text(st, 1, target);
    else
        sqlite3_bind_int64(st, 1, id);
    return row_get(cat, st, &intent_row, ret);
}

int cat_intent_get(struct catalog *cat, int64_t id, struct cat_intent **ret)
{
    static const char sql[] = "SELECT " INTENT_COLS " FROM intents WHERE id = ?1";
    CAT_LOCKED(cat);
    int r = intent_query1(cat, sql, id, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no intent %lld", (long long)id) : r;
}

int cat_intent_find_target(struct catalog *cat, const char *target_id, struct cat_intent **ret)
{
    static const char sql[] = "SELECT " INTENT_COLS " FROM intents WHERE target_id = ?1";
    if (!target_id)
        return cat_err(-EINVAL, "no target");
    CAT_LOCKED(cat);
    int r = intent_query1(cat, sql, 0, target_id, ret);
    return r == -ENOENT ? cat_err(r, "no intent on %s", target_id) : r;
}

int cat_intent_list(struct catalog *cat, struct cat_intent_list *ret)
{
    static const char sql[] = "SELECT " INTENT_COLS " FROM intents ORDER BY id";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &intent_row, NULL, NULL, &ret->items, &ret->n);
}

/* ---- schedules ------------------------------------------------------------- */

#define SCHED_COLS "volume_id, every_ms, keep, keep_hourly, keep_daily, keep_weekly, " \
                   "next_due_ns, last_run_ns, created_ns"

static const struct col schedule_cols[] = {
    COL_STR(struct cat_schedule, volume_id),
    COL_U64(struct cat_schedule, every_ms),
    COL_U32(struct cat_schedule, keep),
    COL_U32(struct cat_schedule, keep_hourly),
    COL_U32(struct cat_schedule, keep_daily),
    COL_U32(struct cat_schedule, keep_weekly),
    COL_U64(struct cat_schedule, next_due_ns),
    COL_U64(struct cat_schedule, last_run_ns),
    COL_U64(struct cat_schedule, created_ns, .flags = COL_NOW),
};
static const struct row_type schedule_row = ROW_TYPE(struct cat_schedule, schedule_cols);

void cat_schedule_free(struct cat_schedule *s)
{
    row_free(&schedule_row, s);
}

void cat_schedule_list_free(struct cat_schedule_list *l)
{
    if (!l)
        return;
    row_list_free(&schedule_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

int cat_schedule_put(struct catalog *cat, const struct cat_schedule *s)
{
    /* An upsert that keeps created_ns of an existing schedule. */
    static const char sql[] =
        "INSERT INTO schedules (" SCHED_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
        "ON CONFLICT (volume_id) DO UPDATE SET every_ms = excluded.every_ms, keep = excluded.keep, "
        "keep_hourly = excluded.keep_hourly, keep_daily = excluded.keep_daily, "
        "keep_weekly = excluded.keep_weekly, next_due_ns = excluded.next_due_ns, "
        "last_run_ns = excluded.last_run_ns";
    int r;
    if (!s || !s->volume_id)
        return cat_err(-EINVAL, "no schedule");
    if (s->every_ms == 0)
        return cat_err(-EINVAL, "a schedule needs an interval");
    if ((r = check_u64(s->every_ms, "every_ms")) < 0 ||
        (r = check_u64(s->next_due_ns, "next_due_ns")) < 0 ||
        (r = check_u64(s->last_run_ns, "last_run_ns")) < 0 ||
        (r = check_u64(s->created_ns, "created_ns")) < 0)
        return r;
    CAT_LOCKED(cat);
    r = row_insert(cat, sql, &schedule_row, s);
    if (r == -ENOENT)
        return cat_err(r, "no volume %s", s->volume_id);
    return r;
}

int cat_schedule_get(struct catalog *cat, const char *volume_id, struct cat_schedule **ret)
{
    static const char sql[] = "SELECT " SCHED_COLS " FROM schedules WHERE volume_id = ?1";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &schedule_row, volume_id, NULL, NULL, ret);
    return r == -ENOENT ? cat_err(r, "volume %s has no schedule", volume_id) : r;
}

int cat_schedule_delete(struct catalog *cat, const char *volume_id)
{
    static const char sql[] = "DELETE FROM schedules WHERE volume_id = ?1";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    return row_change(cat, sql, volume_id, NULL, NULL, "volume %s has no schedule", volume_id);
}

int cat_schedule_set_run(struct catalog *cat, const char *volume_id,
                         uint64_t last_run_ns, uint64_t next_due_ns)
{
    static const char sql[] = "UPDATE schedules SET last_run_ns = ?2, next_due_ns = ?3 WHERE volume_id = ?1";
    int r;
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    if ((r = check_u64(last_run_ns, "last_run_ns")) < 0 || (r = check_u64(next_due_ns, "next_due_ns")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, volume_id);
    bind_u64(st, 2, last_run_ns);
    bind_u64(st, 3, next_due_ns);
    return cat_step_one(cat, st, "volume %s has no schedule", volume_id);
}

int cat_schedule_list(struct catalog *cat, uint64_t due_before_ns, struct cat_schedule_list *ret)
{
    static const char sql[] = "SELECT " SCHED_COLS " FROM schedules "
                              "WHERE ?1 = 0 OR next_due_ns <= ?1 ORDER BY next_due_ns, volume_id";
    int r;
    if ((r = check_u64(due_before_ns, "due_before_ns")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_u64(st, 1, due_before_ns);
    struct cat_schedule_list l = {};
    if ((r = row_list(cat, st, &schedule_row, 0, &l.items, &l.n)) < 0)
        return r;
    *ret = l;
    return 0;
}

/* ---- exports --------------------------------------------------------------- */

static const char *const export_states[_CAT_EXPORT_STATE_MAX] = {
    [CAT_EXPORT_RUNNING] = "running",
    [CAT_EXPORT_DONE] = "done",
    [CAT_EXPORT_FAILED] = "failed",
};

const char *cat_export_state_to_string(enum cat_export_state s)
{
    return s >= 0 && s < _CAT_EXPORT_STATE_MAX ? export_states[s] : NULL;
}

#define EXPORT_COLS "e.id, e.snapshot_id, (SELECT s.volume_id FROM snapshots s WHERE s.id = e.snapshot_id), " \
                    "e.repo, e.manifest_id, e.state, e.created_ns, e.finished_ns"

static const struct col export_cols[] = {
    COL_I64(struct cat_export, id),
    COL_STR(struct cat_export, snapshot_id),
    COL_STR(struct cat_export, volume_id, .flags = COL_NOBIND),
    COL_STR(struct cat_export, repo),
    COL_STR(struct cat_export, manifest_id),
    COL_ENUM(struct cat_export, state, export_states, _CAT_EXPORT_STATE_INVALID),
    COL_U64(struct cat_export, created_ns),
    COL_U64(struct cat_export, finished_ns),
};
static const struct row_type export_row = ROW_TYPE(struct cat_export, export_cols);

void cat_export_free(struct cat_export *e)
{
    row_free(&export_row, e);
}

void cat_export_list_free(struct cat_export_list *l)
{
    if (!l)
        return;
    row_list_free(&export_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

int cat_export_add(struct catalog *cat, const char *snapshot_id, const char *repo, int64_t *ret_id)
{
    static const char sql[] = "INSERT INTO exports (snapshot_id, repo, state, created_ns) "
                              "VALUES (?1, ?2, 'running', ?3)";
    int r;
    if ((r = check_text(snapshot_id, 64, false, "snapshot_id")) < 0 ||
        (r = check_text(repo, 4096, false, "repo")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, snapshot_id);
    bind_text(st, 2, repo);
    bind_u64(st, 3, now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(r, "snapshot %s already has an export to %s", snapshot_id, repo);
    if (r == -ENOENT)
        return cat_err(r, "no snapshot %s", snapshot_id);
    if (r < 0)
        return r;
    if (ret_id)
        *ret_id = sqlite3_last_insert_rowid(cat->db);
    return 0;
}

int cat_export_update(struct catalog *cat, int64_t id, enum cat_export_state state,
                      const char *manifest_id)
{
    static const char sql[] = "UPDATE exports SET state = ?2, manifest_id = coalesce(?3, manifest_id), "
                              "finished_ns = ?4 WHERE id = ?1";
    const char *s = cat_export_state_to_string(state);
    int r;
    if (!s)
        return cat_err(-EINVAL, "invalid export state");
    if ((r = check_text(manifest_id, 256, true, "manifest_id")) < 0)
        return r;
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    sqlite3_bind_int64(st, 1, id);
    bind_text(st, 2, s);
    bind_text(st, 3, manifest_id);
    bind_u64(st, 4, state == CAT_EXPORT_RUNNING ? 0 : now_real_ns());
    return cat_step_one(cat, st, "no export %lld", (long long)id);
}

int cat_export_delete(struct catalog *cat, int64_t id)
{
    static const char sql[] = "DELETE FROM exports WHERE id = ?1";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    sqlite3_bind_int64(st, 1, id);
    return cat_step_one(cat, st, "no export %lld", (long long)id);
}

int cat_export_find(struct catalog *cat, const char *snapshot_id, const char *repo,
                    struct cat_export **ret)
{
    static const char sql[] = "SELECT " EXPORT_COLS " FROM exports e WHERE e.snapshot_id = ?1 AND e.repo = ?2";
    if (!snapshot_id || !repo)
        return cat_err(-EINVAL, "no snapshot or repository");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &export_row, snapshot_id, repo, NULL, ret);
    return r == -ENOENT ? cat_err(r, "snapshot %s was not exported to %s", snapshot_id, repo) : r;
}

int cat_export_latest(struct catalog *cat, const char *volume_id, const char *repo,
                      struct cat_export **ret)
{
    static const char sql[] = "SELECT " EXPORT_COLS " FROM exports e JOIN snapshots s ON s.id = e.snapshot_id "
                              "WHERE s.volume_id = ?1 AND e.repo = ?2 AND e.state = 'done' "
                              "ORDER BY s.created_ns DESC, s.id DESC LIMIT 1";
    if (!volume_id || !repo)
        return cat_err(-EINVAL, "no volume or repository");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &export_row, volume_id, repo, NULL, ret);
    return r == -ENOENT ? cat_err(r, "volume %s has no finished export to %s", volume_id, repo) : r;
}

int cat_export_list(struct catalog *cat, const char *snapshot_id, struct cat_export_list *ret)
{
    static const char sql[] = "SELECT " EXPORT_COLS " FROM exports e "
                              "WHERE ?1 IS NULL OR e.snapshot_id = ?1 ORDER BY e.id";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &export_row, snapshot_id, NULL, &ret->items, &ret->n);
}

/* ---- pod sockets ----------------------------------------------------------- */

#define POD_COLS "target_path, volume_handle, socket_path, pod_namespace, pod_name, pod_uid, created_ns"

static const struct col pod_socket_cols[] = {
    COL_STR(struct cat_pod_socket, target_path),
    COL_STR(struct cat_pod_socket, volume_handle),
    COL_STR(struct cat_pod_socket, socket_path),
    COL_STR(struct cat_pod_socket, pod_namespace),
    COL_STR(struct cat_pod_socket, pod_name),
    COL_STR(struct cat_pod_socket, pod_uid),
    COL_U64(struct cat_pod_socket, created_ns, .flags = COL_NOW),
};
static const struct row_type pod_socket_row = ROW_TYPE(struct cat_pod_socket, pod_socket_cols);

void cat_pod_socket_free(struct cat_pod_socket *p)
{
    row_free(&pod_socket_row, p);
}

void cat_pod_socket_list_free(struct cat_pod_socket_list *l)
{
    if (!l)
        return;
    row_list_free(&pod_socket_row, l->items, l->n);
    memset(l, 0, sizeof(*l));
}

int cat_pod_socket_add(struct catalog *cat, const struct cat_pod_socket *p)
{
    static const char sql[] = "INSERT INTO pod_sockets (" POD_COLS ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
    int r;
    if (!p)
        return cat_err(-EINVAL, "no pod socket");
    if ((r = check_text(p->target_path, 4096, false, "target_path")) < 0 ||
        (r = check_text(p->volume_handle, 1024, false, "volume_handle")) < 0 ||
        (r = check_text(p->socket_path, 4096, false, "socket_path")) < 0 ||
        (r = check_text(p->pod_namespace, 253, false, "pod_namespace")) < 0 ||
        (r = check_text(p->pod_name, 253, true, "pod_name")) < 0 ||
        (r = check_text(p->pod_uid, 64, true, "pod_uid")) < 0 ||
        (r = check_u64(p->created_ns, "created_ns")) < 0)
        return r;
    if (!*p->pod_namespace)
        return cat_err(-EINVAL, "a pod socket needs a namespace");
    CAT_LOCKED(cat);
    r = row_insert(cat, sql, &pod_socket_row, p);
    if (r == -EEXIST)
        return cat_err(r, "a socket is recorded for %s", p->target_path);
    return r;
}

int cat_pod_socket_get(struct catalog *cat, const char *target_path, struct cat_pod_socket **ret)
{
    static const char sql[] = "SELECT " POD_COLS " FROM pod_sockets WHERE target_path = ?1";
    if (!target_path)
        return cat_err(-EINVAL, "no target path");
    CAT_LOCKED(cat);
    int r = row_query(cat, sql, &pod_socket_row, target_path, NULL, NULL, ret);
    return r == -ENOENT ? cat_err(r, "no socket for %s", target_path) : r;
}

int cat_pod_socket_delete(struct catalog *cat, const char *target_path)
{
    static const char sql[] = "DELETE FROM pod_sockets WHERE target_path = ?1";
    if (!target_path)
        return cat_err(-EINVAL, "no target path");
    CAT_LOCKED(cat);
    return row_change(cat, sql, target_path, NULL, NULL, "no socket for %s", target_path);
}

int cat_pod_socket_list(struct catalog *cat, struct cat_pod_socket_list *ret)
{
    static const char sql[] = "SELECT " POD_COLS " FROM pod_sockets ORDER BY created_ns, target_path";
    CAT_LOCKED(cat);
    return row_query_all(cat, sql, &pod_socket_row, NULL, NULL, &ret->items, &ret->n);
}
