/* catalog.c: opening the catalog, its schema and migrations, transactions,
 * errors, meta facts and volumes.
 *
 * The catalog is one sqlite3 connection in WAL mode with synchronous=FULL:
 * WAL lets a reader (the sqlite3 CLI during an investigation) run beside
 * the daemon, and FULL makes every commit durable before it returns. NORMAL
 * would survive `kill -9` too, but a power cut could then lose the last
 * commits, and the daemon acknowledges CreateVolume/CreateSnapshot to
 * Kubernetes right after its commit; one WAL fsync (~1 ms on a local SSD)
 * next to a 14-42 ms subvolume snapshot is worth that promise.
 *
 * The schema is built by numbered migrations (migrations[v] turns version
 * v-1 into v) run in one transaction at open; the version lives in the meta
 * table and a file with a newer version is refused (-EPROTO) rather than
 * misread. SQL text is always static: user values are bound, never spliced;
 * only the number of placeholders of a list filter varies.
 *
 * Statements are prepared once and cached by the address of their static SQL
 * string (cat_stmt); every public function takes the recursive lock first,
 * then resets its statements on the way out. The last error's text is kept
 * per thread (cat_errmsg), since several worker threads share the
 * connection and sqlite3_errmsg() would be overwritten under them.
 *
 * sqlite opens its files with O_CLOEXEC (unix VFS, robust_open); the -wal
 * and -shm files inherit the 0600 mode we give the database. */
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>

#include "snapd/catalog/catalog-internal.h"

/* 'Ambr': marks the file as ours in the sqlite header. */
#define CAT_APPLICATION_ID 0x416d6272

static __thread char errbuf[512];

/* ---- errors ---------------------------------------------------------------- */

const char *cat_errmsg(const struct catalog *cat)
{
    return errbuf[0] ? errbuf : "no error";
}

int cat_err(int err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cat_verr(err, fmt, ap);
    va_end(ap);
    return err;
}

int cat_verr(int err, const char *fmt, va_list ap)
{
    vsnprintf(errbuf, sizeof(errbuf), fmt, ap);
    return err;
}

static int sqlite_to_errno(int rc)
{
    switch (rc) {
    case SQLITE_CONSTRAINT_UNIQUE:
    case SQLITE_CONSTRAINT_PRIMARYKEY:
        return -EEXIST;
    case SQLITE_CONSTRAINT_FOREIGNKEY:
        return -ENOENT;
    case SQLITE_CONSTRAINT_CHECK:
    case SQLITE_CONSTRAINT_NOTNULL:
    case SQLITE_TOOBIG:
    case SQLITE_RANGE:
        return -EINVAL;
    }
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_NOTADB:
        return -EPROTO;
    default:
        return -EIO;
    }
}

int cat_sqlerr(struct catalog *cat, int rc)
{
    const char *msg = cat && cat->db ? sqlite3_errmsg(cat->db) : sqlite3_errstr(rc);
    snprintf(errbuf, sizeof(errbuf), "sqlite: %s (%d)", msg, rc);
    return sqlite_to_errno(rc);
}

int check_uuid(const char *id, const char *what)
{
    if (!id || !uuid_is_valid(id))
        return cat_err(-EINVAL, "%s is not a uuid", what);
    return 0;
}

int check_text(const char *s, size_t max, bool nullable, const char *what)
{
    if (!s)
        return nullable ? 0 : cat_err(-EINVAL, "%s is missing", what);
    if (strlen(s) > max)
        return cat_err(-EINVAL, "%s is longer than %zu bytes", what, max);
    return 0;
}

/* ---- statements ------------------------------------------------------------ */

int cat_stmt(struct catalog *cat, const char *sql, sqlite3_stmt **ret)
{
    for (size_t i = 0; i < cat->n_stmts; i++)
        if (cat->stmts[i].sql == sql) {
            *ret = cat->stmts[i].st;
            return 0;
        }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(cat->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    if (cat->n_stmts == cat->cap_stmts) {
        cat->cap_stmts = cat->cap_stmts ? cat->cap_stmts * 2 : 32;
        cat->stmts = xrealloc(cat->stmts, cat->cap_stmts * sizeof(*cat->stmts));
    }
    cat->stmts[cat->n_stmts++] = (struct stmt_slot){ .sql = sql, .st = st };
    *ret = st;
    return 0;
}

int cat_step_done(struct catalog *cat, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)       /* e.g. a pragma answering: drain it */
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            ;
    if (rc != SQLITE_DONE)
        return cat_sqlerr(cat, sqlite3_extended_errcode(cat->db));
    return sqlite3_changes(cat->db);
}

int cat_vstep_one(struct catalog *cat, sqlite3_stmt *st, const char *fmt, va_list ap)
{
    int r = cat_step_done(cat, st);
    if (r != 0)
        return r < 0 ? r : 0;
    return cat_verr(-ENOENT, fmt, ap);
}

int cat_step_one(struct catalog *cat, sqlite3_stmt *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int r = cat_vstep_one(cat, st, fmt, ap);
    va_end(ap);
    return r;
}

int cat_step_row(struct catalog *cat, sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        return 1;
    if (rc == SQLITE_DONE)
        return 0;
    return cat_sqlerr(cat, sqlite3_extended_errcode(cat->db));
}

static int exec(struct catalog *cat, const char *sql)
{
    int rc = sqlite3_exec(cat->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : cat_sqlerr(cat, sqlite3_extended_errcode(cat->db));
}

/* ---- transactions ---------------------------------------------------------- */

/* Cached: a snapshot insert opens a savepoint, and parsing these each time
 * was a measurable part of it. */
static const char sql_begin[] = "BEGIN IMMEDIATE";
static const char sql_savepoint[] = "SAVEPOINT cat_sp";
static const char sql_commit[] = "COMMIT";
static const char sql_release[] = "RELEASE cat_sp";
static const char sql_rollback[] = "ROLLBACK";
static const char sql_rollback_to[] = "ROLLBACK TO cat_sp";

static int run_cached(struct catalog *cat, const char *sql)
{
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

int cat_begin(struct catalog *cat)
{
    pthread_mutex_lock(&cat->lock);
    int r = run_cached(cat, cat->tx_depth == 0 ? sql_begin : sql_savepoint);
    if (r < 0) {
        pthread_mutex_unlock(&cat->lock);
        return r;
    }
    cat->tx_depth++;
    return 0;
}

/* Leave one level: drop the depth and the lock cat_begin() took. */
static void tx_leave(struct catalog *cat)
{
    cat->tx_depth--;
    pthread_mutex_unlock(&cat->lock);
}

int cat_rollback(struct catalog *cat)
{
    int r = 0;
    if (cat->tx_depth == 0)
        return cat_err(-EINVAL, "rollback without a transaction");
    /* sqlite rolls the whole transaction back by itself on some errors
     * (disk full, I/O); then there is nothing left to undo. */
    if (!sqlite3_get_autocommit(cat->db)) {
        if (cat->tx_depth == 1)
            r = run_cached(cat, sql_rollback);
        else if ((r = run_cached(cat, sql_rollback_to)) >= 0)
            r = run_cached(cat, sql_release);
    }
    tx_leave(cat);
    return r;
}

int cat_commit(struct catalog *cat)
{
    int r;
    if (cat->tx_depth == 0)
        return cat_err(-EINVAL, "commit without a transaction");
    if (sqlite3_get_autocommit(cat->db)) {
        tx_leave(cat);
        return cat_err(-EIO, "the transaction was rolled back by an earlier error");
    }
    r = run_cached(cat, cat->tx_depth == 1 ? sql_commit : sql_release);
    if (r < 0) {
        char saved[sizeof(errbuf)];
        memcpy(saved, errbuf, sizeof(saved));
        cat_rollback(cat);
        memcpy(errbuf, saved, sizeof(saved));
        return r;
    }
    tx_leave(cat);
    return 0;
}

int cat_end(struct catalog *cat, int r)
{
    if (r < 0) {
        /* Keep the failing statement's message, not the rollback's. */
        char saved[sizeof(errbuf)];
        memcpy(saved, errbuf, sizeof(saved));
        cat_rollback(cat);
        memcpy(errbuf, saved, sizeof(saved));
        return r;
    }
    int k = cat_commit(cat);
    return k < 0 ? k : r;
}

int cat_tx(struct catalog *cat, int (*fn)(struct catalog *cat, void *data), void *data)
{
    int r = cat_begin(cat);
    if (r < 0)
        return r;
    return cat_end(cat, fn(cat, data));
}

/* ---- schema ---------------------------------------------------------------- */

/* migrations[v] turns schema v-1 into v. Append; never edit a released one. */
static const char *const migrations[] = {
    [1] =
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID;"
    /* Volumes. Names are unique; a PVC may own several rows over time. */
    "CREATE TABLE volumes ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  name TEXT NOT NULL UNIQUE,"
    "  size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),"
    "  fs_type TEXT,"
    "  state TEXT NOT NULL,"
    "  created_ns INTEGER NOT NULL,"
    "  source_snapshot_id TEXT,"
    "  source_volume_id TEXT,"
    "  pvc_namespace TEXT,"
    "  pvc_name TEXT,"
    "  replica_peer TEXT,"
    "  replica_source_id TEXT,"
    "  params TEXT);"
    "CREATE INDEX volumes_created ON volumes (created_ns, id);"
    "CREATE INDEX volumes_pvc ON volumes (pvc_namespace, pvc_name);"
    /* Snapshots outlive their volume (CSI), so volume_id is not a foreign
     * key; parent_id may name a snapshot only a peer has. */
    "CREATE TABLE snapshots ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  volume_id TEXT NOT NULL,"
    "  name TEXT NOT NULL,"
    "  parent_id TEXT,"
    "  created_ns INTEGER NOT NULL,"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  generation INTEGER NOT NULL DEFAULT 0,"
    "  state TEXT NOT NULL,"
    "  origin TEXT NOT NULL DEFAULT 'local',"
    "  k8s_namespace TEXT,"
    "  k8s_name TEXT,"
    "  UNIQUE (volume_id, name));"
    "CREATE INDEX snapshots_volume ON snapshots (volume_id, created_ns);"
    "CREATE INDEX snapshots_created ON snapshots (created_ns, id);"
    "CREATE INDEX snapshots_parent ON snapshots (parent_id);"
    "CREATE INDEX snapshots_name ON snapshots (name);"
    "CREATE INDEX snapshots_k8s ON snapshots (k8s_namespace, k8s_name);"
    /* Keep the chain linked when a snapshot in the middle goes. */
    "CREATE TRIGGER snapshots_relink AFTER DELETE ON snapshots BEGIN"
    "  UPDATE snapshots SET parent_id = OLD.parent_id WHERE parent_id = OLD.id;"
    "END;"
    "CREATE TABLE snapshot_labels ("
    "  snapshot_id TEXT NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (snapshot_id, key)) WITHOUT ROWID;"
    "CREATE INDEX snapshot_labels_kv ON snapshot_labels (key, value, snapshot_id);"
    /* The journal: one pending operation per target. */
    "CREATE TABLE intents ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  op TEXT NOT NULL,"
    "  target_id TEXT NOT NULL UNIQUE,"
    "  args TEXT,"
    "  step TEXT NOT NULL DEFAULT 'start',"
    "  created_ns INTEGER NOT NULL,"
    "  updated_ns INTEGER NOT NULL);"
    "CREATE TABLE peers ("
    "  name TEXT PRIMARY KEY NOT NULL,"
    "  address TEXT NOT NULL,"
    "  fingerprint TEXT UNIQUE,"
    "  allow_push INTEGER NOT NULL DEFAULT 0,"
    "  created_ns INTEGER NOT NULL);"
    /* peer is a name or '*', hence no foreign key; a trigger cleans up. */
    "CREATE TABLE publications ("
    "  volume_id TEXT NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,"
    "  peer TEXT NOT NULL,"
    "  created_ns INTEGER NOT NULL,"
    "  PRIMARY KEY (volume_id, peer)) WITHOUT ROWID;"
    "CREATE INDEX publications_peer ON publications (peer);"
    "CREATE TRIGGER peers_unpublish AFTER DELETE ON peers BEGIN"
    "  DELETE FROM publications WHERE peer = OLD.name;"
    "END;"
    "CREATE TABLE subscriptions ("
    "  peer TEXT NOT NULL REFERENCES peers (name) ON DELETE CASCADE,"
    "  remote_volume TEXT NOT NULL,"
    "  local_name TEXT NOT NULL UNIQUE,"
    "  local_volume_id TEXT,"
    "  every_ms INTEGER NOT NULL DEFAULT 0,"
    "  last_sync_ns INTEGER NOT NULL DEFAULT 0,"
    "  last_error TEXT,"
    "  created_ns INTEGER NOT NULL,"
    "  PRIMARY KEY (peer, remote_volume));"
    "CREATE TABLE sync_progress ("
    "  peer TEXT NOT NULL REFERENCES peers (name) ON DELETE CASCADE,"
    "  dir TEXT NOT NULL CHECK (dir IN ('send', 'receive')),"
    "  snapshot_id TEXT NOT NULL,"
    "  volume_id TEXT NOT NULL,"
    "  acked_offset INTEGER NOT NULL DEFAULT 0,"
    "  digest_state BLOB,"
    "  complete INTEGER NOT NULL DEFAULT 0,"
    "  updated_ns INTEGER NOT NULL,"
    "  PRIMARY KEY (peer, dir, snapshot_id));"
    "CREATE INDEX sync_progress_volume ON sync_progress (volume_id, peer, dir);"
    "CREATE TABLE schedules ("
    "  volume_id TEXT PRIMARY KEY NOT NULL REFERENCES volumes (id) ON DELETE CASCADE,"
    "  every_ms INTEGER NOT NULL CHECK (every_ms > 0),"
    "  keep INTEGER NOT NULL DEFAULT 0,"
    "  keep_hourly INTEGER NOT NULL DEFAULT 0,"
    "  keep_daily INTEGER NOT NULL DEFAULT 0,"
    "  keep_weekly INTEGER NOT NULL DEFAULT 0,"
    "  next_due_ns INTEGER NOT NULL,"
    "  last_run_ns INTEGER NOT NULL DEFAULT 0,"
    "  created_ns INTEGER NOT NULL);"
    "CREATE INDEX schedules_due ON schedules (next_due_ns);"
    "CREATE TABLE exports ("
    "  id INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  snapshot_id TEXT NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,"
    "  repo TEXT NOT NULL,"
    "  manifest_id TEXT,"
    "  state TEXT NOT NULL,"
    "  created_ns INTEGER NOT NULL,"
    "  finished_ns INTEGER NOT NULL DEFAULT 0,"
    "  UNIQUE (snapshot_id, repo));"
    "CREATE INDEX exports_repo ON exports (repo, state);"
    "CREATE TABLE pod_sockets ("
    "  target_path TEXT PRIMARY KEY NOT NULL,"
    "  volume_handle TEXT NOT NULL,"
    "  socket_path TEXT NOT NULL,"
    "  pod_namespace TEXT NOT NULL,"
    "  pod_name TEXT,"
    "  pod_uid TEXT,"
    "  created_ns INTEGER NOT NULL);",
    /* The snapshot store (snapd/store/): where each snapshot's bytes are. No
     * row: resident (a subvolume), not stored, no exact extents yet. */
    [2] =
    "CREATE TABLE snapshot_store ("
    "  snapshot_id TEXT PRIMARY KEY NOT NULL REFERENCES snapshots (id) ON DELETE CASCADE,"
    "  manifest TEXT,"                  /* in the local store; NULL: not yet */
    "  resident INTEGER NOT NULL DEFAULT 1,"  /* the subvolume exists */
    "  extents BLOB);"                  /* exact changed extents vs the parent */
    "CREATE INDEX snapshot_store_resident ON snapshot_store (resident, manifest);",
    /* Tombstones (catalog-store.c): a deleted snapshot's place in its
     * volume's chain, so a delta from it stays exact. own_extents: a
     * snapshot's exact extents against the chain's previous member when
     * that is a tombstone (extents stay against its live parent). */
    [3] =
    "CREATE TABLE snapshot_tombstones ("
    "  id TEXT PRIMARY KEY NOT NULL,"
    "  volume_id TEXT NOT NULL,"
    "  created_ns INTEGER NOT NULL,"
    "  size_bytes INTEGER NOT NULL DEFAULT 0,"
    "  extents BLOB);"                  /* vs the previous member; NULL: none recorded */
    "CREATE INDEX snapshot_tombstones_volume ON snapshot_tombstones (volume_id, created_ns);"
    "ALTER TABLE snapshot_store ADD COLUMN own_extents BLOB;"
    /* Collected once no later snapshot of the chain remains. */
    "CREATE TRIGGER snapshots_tombstones_collect AFTER DELETE ON snapshots BEGIN"
    "  DELETE FROM snapshot_tombstones WHERE volume_id = OLD.volume_id AND NOT EXISTS ("
    "    SELECT 1 FROM snapshots n WHERE n.volume_id = OLD.volume_id"
    "    AND (n.created_ns, n.id) > (snapshot_tombstones.created_ns, snapshot_tombstones.id));"
    "END;",
};
_Static_assert(ARRAY_SIZE(migrations) == CAT_SCHEMA_VERSION + 1,
               "one migration per schema version");

/* The version stored in the file: 0 for an empty database. */
static int read_version(struct catalog *cat, int64_t *ret)
{
    _cleanup_finalize_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db,
                                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = 'meta'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    int r = cat_step_row(cat, st);
    if (r < 0)
        return r;
    if (sqlite3_column_int(st, 0) == 0) {
        sqlite3_finalize(st);
        st = NULL;
        rc = sqlite3_prepare_v2(cat->db, "SELECT count(*) FROM sqlite_schema", -1, &st, NULL);
        if (rc != SQLITE_OK)
            return cat_sqlerr(cat, rc);
        r = cat_step_row(cat, st);
        if (r < 0)
            return r;
        if (sqlite3_column_int(st, 0) != 0)
            return cat_err(-EPROTO, "not an Amber catalog (tables but no meta table)");
        *ret = 0;
        return 0;
    }
    sqlite3_finalize(st);
    st = NULL;
    rc = sqlite3_prepare_v2(cat->db, "SELECT value FROM meta WHERE key = 'schema_version'", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    r = cat_step_row(cat, st);
    if (r < 0)
        return r;
    if (r == 0)
        return cat_err(-EPROTO, "catalog has no schema_version");
    const char *v = (const char *)sqlite3_column_text(st, 0);
    if (!v || parse_i64(v, ret) < 0 || *ret < 1)
        return cat_err(-EPROTO, "catalog schema_version \"%s\" is not a version", v ? v : "");
    return 0;
}

static int migrate(struct catalog *cat)
{
    int64_t version;
    int r = cat_begin(cat);
    if (r < 0)
        return r;
    r = read_version(cat, &version);
    if (r < 0)
        goto fail;
    if (version > CAT_SCHEMA_VERSION) {
        r = cat_err(-EPROTO, "catalog schema version %" PRId64 " is newer than this amberd's (%d)",
                    version, CAT_SCHEMA_VERSION);
        goto fail;
    }
    for (int64_t v = version + 1; v <= CAT_SCHEMA_VERSION; v++) {
        r = exec(cat, migrations[v]);
        if (r < 0)
            goto fail;
        _cleanup_finalize_ sqlite3_stmt *st = NULL;
        int rc = sqlite3_prepare_v2(cat->db,
                                    "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?1)",
                                    -1, &st, NULL);
        if (rc != SQLITE_OK) {
            r = cat_sqlerr(cat, rc);
            goto fail;
        }
        sqlite3_bind_int64(st, 1, v);
        r = cat_step_done(cat, st);
        if (r < 0)
            goto fail;
    }
    if (version == 0) {
        r = exec(cat, "PRAGMA application_id = 1097687666");  /* CAT_APPLICATION_ID */
        if (r < 0)
            goto fail;
    }
    return cat_commit(cat);
fail:
    {
        char saved[sizeof(errbuf)];
        memcpy(saved, errbuf, sizeof(saved));
        cat_rollback(cat);
        memcpy(errbuf, saved, sizeof(saved));
    }
    return r;
}

static int check_application_id(struct catalog *cat)
{
    _cleanup_finalize_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db, "PRAGMA application_id", -1, &st, NULL);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    int r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-EIO, "PRAGMA application_id returned nothing");
    int64_t id = sqlite3_column_int64(st, 0);
    if (id != 0 && id != CAT_APPLICATION_ID)
        return cat_err(-EPROTO, "not an Amber catalog (application_id %" PRId64 ")", id);
    return 0;
}

/* Make the file (and its directory) private before sqlite creates it with
 * the umask's mode. */
static int prepare_file(const char *path)
{
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (slash && slash != dir) {
        *slash = '\0';
        int r = mkdir_p(dir, 0700);
        if (r < 0)
            return cat_err(r, "cannot create %s: %s", dir, strerror(-r));
    }
    _cleanup_close_ int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return cat_err(-errno, "cannot open %s: %m", path);
    return 0;
}

int cat_open(const char *path, struct catalog **ret)
{
    if (!path || !*path)
        return cat_err(-EINVAL, "no catalog path");
    int r = prepare_file(path);
    if (r < 0)
        return r;

    struct catalog *cat = xcalloc(1, sizeof(*cat));
    pthread_mutexattr_t attr;
    pthread_mutexattr_init(&attr);
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);
    pthread_mutex_init(&cat->lock, &attr);
    pthread_mutexattr_destroy(&attr);

    /* FULLMUTEX as a second line of defence; our own lock is what makes
     * transactions safe across threads. */
    int rc = sqlite3_open_v2(path, &cat->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_FULLMUTEX | SQLITE_OPEN_NOFOLLOW,
                             NULL);
    if (rc != SQLITE_OK) {
        r = cat_sqlerr(cat, rc);
        goto fail;
    }
    sqlite3_extended_result_codes(cat->db, 1);
    sqlite3_busy_timeout(cat->db, 5000);
    /* Exclusive locking keeps the WAL index in heap memory instead of a
     * shared mmap'd -shm file: on a full pool a write to that mapping is a
     * SIGBUS that kills the daemon, while heap memory cannot fail that way.
     * amberd holds the pool's lock anyway, so no other process opens the
     * catalog. Must come before the first read opens the WAL. */
    r = exec(cat, "PRAGMA locking_mode = EXCLUSIVE;");
    if (r < 0)
        goto fail;

    r = check_application_id(cat);
    if (r < 0)
        goto fail;
    /* journal_mode answers with a row; exec ignores it. These must run
     * outside a transaction. */
    r = exec(cat, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON;"
                  "PRAGMA trusted_schema = OFF; PRAGMA cache_size = -16384; PRAGMA temp_store = MEMORY;");
    if (r < 0)
        goto fail;
    r = migrate(cat);
    if (r < 0)
        goto fail;
    *ret = cat;
    return 0;
fail:
    {
        char saved[sizeof(errbuf)];
        memcpy(saved, errbuf, sizeof(saved));
        cat_close(cat);
        memcpy(errbuf, saved, sizeof(saved));
    }
    return r;
}

void cat_close(struct catalog *cat)
{
    if (!cat)
        return;
    for (size_t i = 0; i < cat->n_stmts; i++)
        sqlite3_finalize(cat->stmts[i].st);
    free(cat->stmts);
    sqlite3_close_v2(cat->db);
    pthread_mutex_destroy(&cat->lock);
    free(cat);
}

int cat_schema_version(struct catalog *cat)
{
    CAT_LOCKED(cat);
    int64_t v;
    int r = read_version(cat, &v);
    return r < 0 ? r : (int)v;
}

/* ---- meta ------------------------------------------------------------------ */

int cat_meta_get(struct catalog *cat, const char *key, char **ret)
{
    static const char sql[] = "SELECT value FROM meta WHERE key = ?1";
    if (!key)
        return cat_err(-EINVAL, "no key");
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, key);
    r = cat_step_row(cat, st);
    if (r <= 0)
        return r < 0 ? r : cat_err(-ENOENT, "no meta key %s", key);
    *ret = col_str(st, 0);
    return 0;
}

int cat_meta_set(struct catalog *cat, const char *key, const char *value)
{
    static const char sql[] = "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)";
    if (!key || !*key || !value)
        return cat_err(-EINVAL, "meta needs a key and a value");
    if (strncmp(key, "schema", 6) == 0)
        return cat_err(-EINVAL, "meta key %s is reserved", key);
    CAT_LOCKED(cat);
    _cleanup_reset_ sqlite3_stmt *st = NULL;
    int r = cat_stmt(cat, sql, &st);
    if (r < 0)
        return r;
    bind_text(st, 1, key);
    bind_text(st, 2, value);
    r = cat_step_done(cat, st);
    return r < 0 ? r : 0;
}

/* ---- paging ---------------------------------------------------------------- */

int page_parse(const struct cat_page *p, uint64_t *ret_ns, const char **ret_id)
{
    if (!p || !p->after || !*p->after) {
        *ret_id = NULL;
        return 0;
    }
    const char *colon = strchr(p->after, ':');
    if (!colon || colon == p->after || colon - p->after > 20)
        return cat_err(-EINVAL, "bad paging token");
    char num[21];
    memcpy(num, p->after, (size_t)(colon - p->after));
    num[colon - p->after] = '\0';
    uint64_t ns;
    if (parse_u64(num, &ns) < 0 || ns > (uint64_t)INT64_MAX || !uuid_is_valid(colon + 1))
        return cat_err(-EINVAL, "bad paging token");
    *ret_ns = ns;
    *ret_id = colon + 1;
    return 0;
}

char *page_token(uint64_t created_ns, const char *id)
{
    return xasprintf("%" PRIu64 ":%s", created_ns, id);
}

uint32_t page_limit(const struct cat_page *p)
{
    if (!p || p->limit == 0 || p->limit > CAT_LIST_LIMIT_MAX)
        return CAT_LIST_LIMIT_MAX;
    return p->limit;
}
