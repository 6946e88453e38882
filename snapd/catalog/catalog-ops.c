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

static void intent_clear(struct cat_intent *i)
{
    free(i->op);
    free(i->target_id);
    free(i->args);
    free(i->step);
    memset(i, 0, sizeof(*i));
}

void cat_intent_free(struct cat_intent *i)
{
    if (!i)
        return;
    intent_clear(i);
    free(i);
}

void cat_intent_list_free(struct cat_intent_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        intent_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

#define INTENT_COLS "id, op, target_id, args, step, created_ns, updated_ns"

static void read_intent(sqlite3_stmt *st, struct cat_intent *i)
{
    i->id = sqlite3_column_int64(st, 0);
    i->op = col_str(st, 1);
    i->target_id = col_str(st, 2);
    i->args = col_str(st, 3);
    i->step = col_str(st, 4);
    i->created_ns = col_u64(st, 5);
    i->updated_ns = col_u64(st, 6);
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
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no intent %lld", (long long)id);
    return r < 0 ? r : 0;
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
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no intent %lld", (long long)id);
    return r < 0 ? r : 0;
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
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    struct cat_intent *i = xcalloc(1, sizeof(*i));
    read_intent(st, i);
    *ret = i;
    return 0;
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
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    struct cat_intent_list l = {};
    while ((r = cat_step_row(cat, st)) > 0)
        read_intent(st, ARRAY_PUSH(l.items, l.n));
    if (r < 0) {
        cat_intent_list_free(&l);
        return r;
    }
    *ret = l;
    return 0;
}

/* ---- schedules ------------------------------------------------------------- */

static void schedule_clear(struct cat_schedule *s)
{
    free(s->volume_id);
    memset(s, 0, sizeof(*s));
}

void cat_schedule_free(struct cat_schedule *s)
{
    if (!s)
        return;
    schedule_clear(s);
    free(s);
}

void cat_schedule_list_free(struct cat_schedule_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        schedule_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

#define SCHED_COLS "volume_id, every_ms, keep, keep_hourly, keep_daily, keep_weekly, " \
                   "next_due_ns, last_run_ns, created_ns"

static void read_schedule(sqlite3_stmt *st, struct cat_schedule *s)
{
    s->volume_id = col_str(st, 0);
    s->every_ms = col_u64(st, 1);
    s->keep = (uint32_t)sqlite3_column_int64(st, 2);
    s->keep_hourly = (uint32_t)sqlite3_column_int64(st, 3);
    s->keep_daily = (uint32_t)sqlite3_column_int64(st, 4);
    s->keep_weekly = (uint32_t)sqlite3_column_int64(st, 5);
    s->next_due_ns = col_u64(st, 6);
    s->last_run_ns = col_u64(st, 7);
    s->created_ns = col_u64(st, 8);
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
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, s->volume_id);
    bind_u64(st, 2, s->every_ms);
    sqlite3_bind_int64(st, 3, s->keep);
    sqlite3_bind_int64(st, 4, s->keep_hourly);
    sqlite3_bind_int64(st, 5, s->keep_daily);
    sqlite3_bind_int64(st, 6, s->keep_weekly);
    bind_u64(st, 7, s->next_due_ns);
    bind_u64(st, 8, s->last_run_ns);
    bind_u64(st, 9, s->created_ns ? s->created_ns : now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -ENOENT)
        return cat_err(r, "no volume %s", s->volume_id);
    return r < 0 ? r : 0;
}

int cat_schedule_get(struct catalog *cat, const char *volume_id, struct cat_schedule **ret)
{
    static const char sql[] = "SELECT " SCHED_COLS " FROM schedules WHERE volume_id = ?1";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, volume_id);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-ENOENT, "volume %s has no schedule", volume_id);
    struct cat_schedule *s = xcalloc(1, sizeof(*s));
    read_schedule(st, s);
    *ret = s;
    return 0;
}

int cat_schedule_delete(struct catalog *cat, const char *volume_id)
{
    static const char sql[] = "DELETE FROM schedules WHERE volume_id = ?1";
    if (!volume_id)
        return cat_err(-EINVAL, "no volume id");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, volume_id);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "volume %s has no schedule", volume_id);
    return r < 0 ? r : 0;
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
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "volume %s has no schedule", volume_id);
    return r < 0 ? r : 0;
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
    while ((r = cat_step_row(cat, st)) > 0)
        read_schedule(st, ARRAY_PUSH(l.items, l.n));
    if (r < 0) {
        cat_schedule_list_free(&l);
        return r;
    }
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

static enum cat_export_state export_state_from_string(const char *s)
{
    for (int i = 0; s && i < _CAT_EXPORT_STATE_MAX; i++)
        if (strcmp(export_states[i], s) == 0)
            return (enum cat_export_state)i;
    return _CAT_EXPORT_STATE_INVALID;
}

static void export_clear(struct cat_export *e)
{
    free(e->snapshot_id);
    free(e->volume_id);
    free(e->repo);
    free(e->manifest_id);
    memset(e, 0, sizeof(*e));
}

void cat_export_free(struct cat_export *e)
{
    if (!e)
        return;
    export_clear(e);
    free(e);
}

void cat_export_list_free(struct cat_export_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        export_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

#define EXPORT_COLS "e.id, e.snapshot_id, (SELECT s.volume_id FROM snapshots s WHERE s.id = e.snapshot_id), " \
                    "e.repo, e.manifest_id, e.state, e.created_ns, e.finished_ns"

static void read_export(sqlite3_stmt *st, struct cat_export *e)
{
    e->id = sqlite3_column_int64(st, 0);
    e->snapshot_id = col_str(st, 1);
    e->volume_id = col_str(st, 2);
    e->repo = col_str(st, 3);
    e->manifest_id = col_str(st, 4);
    e->state = export_state_from_string((const char *)sqlite3_column_text(st, 5));
    e->created_ns = col_u64(st, 6);
    e->finished_ns = col_u64(st, 7);
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
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no export %lld", (long long)id);
    return r < 0 ? r : 0;
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
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no export %lld", (long long)id);
    return r < 0 ? r : 0;
}

static int export_query1(struct catalog *cat, const char *sql, const char *a, const char *b,
                         struct cat_export **ret)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, a);
    bind_text(st, 2, b);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : -ENOENT;
    struct cat_export *e = xcalloc(1, sizeof(*e));
    read_export(st, e);
    *ret = e;
    return 0;
}

int cat_export_find(struct catalog *cat, const char *snapshot_id, const char *repo,
                    struct cat_export **ret)
{
    static const char sql[] = "SELECT " EXPORT_COLS " FROM exports e WHERE e.snapshot_id = ?1 AND e.repo = ?2";
    if (!snapshot_id || !repo)
        return cat_err(-EINVAL, "no snapshot or repository");
    CAT_LOCKED(cat);
    int r = export_query1(cat, sql, snapshot_id, repo, ret);
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
    int r = export_query1(cat, sql, volume_id, repo, ret);
    return r == -ENOENT ? cat_err(r, "volume %s has no finished export to %s", volume_id, repo) : r;
}

int cat_export_list(struct catalog *cat, const char *snapshot_id, struct cat_export_list *ret)
{
    static const char sql[] = "SELECT " EXPORT_COLS " FROM exports e "
                              "WHERE ?1 IS NULL OR e.snapshot_id = ?1 ORDER BY e.id";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, snapshot_id);
    struct cat_export_list l = {};
    while ((r = cat_step_row(cat, st)) > 0)
        read_export(st, ARRAY_PUSH(l.items, l.n));
    if (r < 0) {
        cat_export_list_free(&l);
        return r;
    }
    *ret = l;
    return 0;
}

/* ---- pod sockets ----------------------------------------------------------- */

static void pod_socket_clear(struct cat_pod_socket *p)
{
    free(p->target_path);
    free(p->volume_handle);
    free(p->socket_path);
    free(p->pod_namespace);
    free(p->pod_name);
    free(p->pod_uid);
    memset(p, 0, sizeof(*p));
}

void cat_pod_socket_free(struct cat_pod_socket *p)
{
    if (!p)
        return;
    pod_socket_clear(p);
    free(p);
}

void cat_pod_socket_list_free(struct cat_pod_socket_list *l)
{
    if (!l)
        return;
    for (size_t i = 0; i < l->n; i++)
        pod_socket_clear(&l->items[i]);
    free(l->items);
    memset(l, 0, sizeof(*l));
}

#define POD_COLS "target_path, volume_handle, socket_path, pod_namespace, pod_name, pod_uid, created_ns"

static void read_pod_socket(sqlite3_stmt *st, struct cat_pod_socket *p)
{
    p->target_path = col_str(st, 0);
    p->volume_handle = col_str(st, 1);
    p->socket_path = col_str(st, 2);
    p->pod_namespace = col_str(st, 3);
    p->pod_name = col_str(st, 4);
    p->pod_uid = col_str(st, 5);
    p->created_ns = col_u64(st, 6);
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
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    if ((r = cat_stmt(cat, sql, &st)) < 0)
        return r;
    bind_text(st, 1, p->target_path);
    bind_text(st, 2, p->volume_handle);
    bind_text(st, 3, p->socket_path);
    bind_text(st, 4, p->pod_namespace);
    bind_text(st, 5, p->pod_name);
    bind_text(st, 6, p->pod_uid);
    bind_u64(st, 7, p->created_ns ? p->created_ns : now_real_ns());
    r = cat_step_done(cat, st);
    if (r == -EEXIST)
        return cat_err(r, "a socket is recorded for %s", p->target_path);
    return r < 0 ? r : 0;
}

int cat_pod_socket_get(struct catalog *cat, const char *target_path, struct cat_pod_socket **ret)
{
    static const char sql[] = "SELECT " POD_COLS " FROM pod_sockets WHERE target_path = ?1";
    if (!target_path)
        return cat_err(-EINVAL, "no target path");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, target_path);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-ENOENT, "no socket for %s", target_path);
    struct cat_pod_socket *p = xcalloc(1, sizeof(*p));
    read_pod_socket(st, p);
    *ret = p;
    return 0;
}

int cat_pod_socket_delete(struct catalog *cat, const char *target_path)
{
    static const char sql[] = "DELETE FROM pod_sockets WHERE target_path = ?1";
    if (!target_path)
        return cat_err(-EINVAL, "no target path");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, target_path);
    r = cat_step_done(cat, st);
    if (r == 0)
        return cat_err(-ENOENT, "no socket for %s", target_path);
    return r < 0 ? r : 0;
}

int cat_pod_socket_list(struct catalog *cat, struct cat_pod_socket_list *ret)
{
    static const char sql[] = "SELECT " POD_COLS " FROM pod_sockets ORDER BY created_ns, target_path";
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    struct cat_pod_socket_list l = {};
    while ((r = cat_step_row(cat, st)) > 0)
        read_pod_socket(st, ARRAY_PUSH(l.items, l.n));
    if (r < 0) {
        cat_pod_socket_list_free(&l);
        return r;
    }
    *ret = l;
    return 0;
}
