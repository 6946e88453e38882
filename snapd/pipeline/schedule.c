/* schedule.c: the time machine. A thread takes each volume's scheduled
 * snapshots on time and prunes them by the volume's retention policy.
 *
 * Time: schedules live in the catalog (every_ms, next_due_ns in wall-clock
 * ns), so they survive restarts. The thread sleeps on a condition variable
 * (monotonic clock) until the earliest due time, capped at a minute so a
 * wall-clock jump is noticed; SetSchedule wakes it. A due schedule gets ONE
 * snapshot however many periods were missed (after downtime: one catch-up,
 * not a burst). A run on time keeps the schedule's phase; a run later than
 * half a period (the catch-up) starts a new phase from now.
 *
 * Retention (like restic forget): only snapshots labelled `schedule` are
 * candidates; protected ones (hold=true, a `run` label, the newest base of
 * an export chain or of a peer's sync: cat_snapshot_protected) are never
 * candidates and do not count. Of the rest, a snapshot stays if any rule
 * keeps it: the N newest, or the newest in each of the last H hours / D
 * days / W weeks that have snapshots (UTC buckets). No rule set: keep all.
 * Protection is checked again right before each delete.
 *
 * Scheduled snapshots are named auto-YYYYmmdd-HHMMSS-mmm and labelled
 * schedule=<every> ("schedule=10m"). Each run and each prune logs once. */
#include <string.h>
#include <time.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/pipeline/pipeline.h"

struct sched_state {
    struct amberd *d;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool stop, kick, started;
};

#define SCHED_MIN_EVERY_MS 1000
#define SCHED_MAX_SLEEP_NS (60ULL * 1000000000ULL)
#define SCHED_RETRY_NS (500ULL * 1000000ULL)
#define SCHED_PRUNE_MAX 64

/* --- policy ----------------------------------------------------------------- */

void sched_format_every(uint64_t ms, char *buf, size_t len)
{
    static const struct { uint64_t ms; const char *u; } units[] = {
        { 7ULL * 86400000, "w" }, { 86400000, "d" }, { 3600000, "h" }, { 60000, "m" }, { 1000, "s" },
    };
    for (size_t i = 0; i < ARRAY_SIZE(units); i++)
        if (ms >= units[i].ms && ms % units[i].ms == 0) {
            snprintf(buf, len, "%llu%s", (unsigned long long)(ms / units[i].ms), units[i].u);
            return;
        }
    snprintf(buf, len, "%llums", (unsigned long long)ms);
}

static uint64_t bucket(uint64_t ns, int kind)
{
    uint64_t s = ns / 1000000000ULL;
    switch (kind) {
    case 0: return s / 3600;                 /* hour */
    case 1: return s / 86400;                /* day (UTC) */
    default: return (s / 86400 + 3) / 7;     /* week from Monday (1970-01-01 was a Thursday) */
    }
}

size_t sched_retention_select(const uint64_t *created_ns, size_t n, const struct cat_schedule *pol,
                              bool *keep)
{
    bool any = pol->keep || pol->keep_hourly || pol->keep_daily || pol->keep_weekly;
    for (size_t i = 0; i < n; i++)
        keep[i] = !any || i < pol->keep;
    const uint32_t counts[3] = { pol->keep_hourly, pol->keep_daily, pol->keep_weekly };
    for (int k = 0; k < 3; k++) {
        uint32_t left = counts[k];
        bool have = false;
        uint64_t last = 0;
        for (size_t i = 0; i < n && left > 0; i++) {
            uint64_t b = bucket(created_ns[i], k);
            if (have && b == last)
                continue;
            /* Newest first: the first one seen in a bucket is its newest. */
            keep[i] = true;
            have = true;
            last = b;
            left--;
        }
    }
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        kept += keep[i];
    return kept;
}

/* The closing quote of the JSON string opening at p, or NULL. */
static const char *str_end(const char *p)
{
    for (p++; *p; p++) {
        if (*p == '\\' && p[1])
            p++;
        else if (*p == '"')
            return p;
    }
    return NULL;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
        p++;
    return p;
}

/* A tiny JSON lookup for a flat object of string or number values (what
 * the CSI plugin writes for StorageClass parameters): the raw value of
 * "key" (escapes left as they are; ours never need any), copied, or NULL. */
static char *json_lookup(const char *json, const char *key)
{
    size_t kl = strlen(key);
    const char *p = skip_ws(json);
    if (*p != '{')
        return NULL;
    p = skip_ws(p + 1);
    while (*p == '"') {
        const char *q = str_end(p);
        if (!q)
            return NULL;
        bool match = (size_t)(q - p - 1) == kl && strncmp(p + 1, key, kl) == 0;
        p = skip_ws(q + 1);
        if (*p != ':')
            return NULL;
        p = skip_ws(p + 1);
        const char *v = p, *e;
        if (*p == '"') {
            if (!(e = str_end(p)))
                return NULL;
            v = p + 1;
            p = e + 1;
        } else {
            e = p + strcspn(p, ",} \t\r\n");
            p = e;
        }
        if (match)
            return strndup(v, (size_t)(e - v));
        p = skip_ws(p);
        if (*p != ',')
            return NULL;
        p = skip_ws(p + 1);
    }
    return NULL;
}

int sched_params_parse(const char *params, struct cat_schedule *ret, const char **ret_why)
{
    if (!params || !*params)
        return 0;
    _cleanup_free_ char *every = json_lookup(params, "snapshotEvery");
    if (!every)
        return 0;
    struct cat_schedule s = {0};
    if (parse_duration_ms(every, &s.every_ms) < 0 || s.every_ms < SCHED_MIN_EVERY_MS) {
        *ret_why = "snapshotEvery: a duration of at least 1s, such as 10m";
        return -EINVAL;
    }
    static const char *const keys[] = { "snapshotKeep", "snapshotKeepHourly", "snapshotKeepDaily",
                                        "snapshotKeepWeekly" };
    uint32_t *dst[] = { &s.keep, &s.keep_hourly, &s.keep_daily, &s.keep_weekly };
    for (size_t i = 0; i < ARRAY_SIZE(keys); i++) {
        _cleanup_free_ char *v = json_lookup(params, keys[i]);
        uint64_t x;
        if (!v)
            continue;
        if (parse_u64(v, &x) < 0 || x > 1000000) {
            *ret_why = "snapshotKeep*: a count between 0 and 1000000";
            return -EINVAL;
        }
        *dst[i] = (uint32_t)x;
    }
    *ret = s;
    return 1;
}

void sched_apply_params(struct amberd *d, const struct cat_volume *v)
{
    struct cat_schedule s;
    const char *why = NULL;
    int r = sched_params_parse(v->params, &s, &why);
    if (r <= 0) {
        if (r < 0)
            log_warn("schedule", "volume %s: ignoring its schedule parameters: %s", v->name, why);
        return;
    }
    _cleanup_(cat_schedule_freep) struct cat_schedule *old = NULL;
    if (cat_schedule_get(d->cat, v->id, &old) == 0)
        return;
    s.volume_id = v->id;
    s.next_due_ns = now_real_ns() + s.every_ms * 1000000ULL;
    r = cat_schedule_put(d->cat, &s);
    if (r < 0) {
        log_warn_errno(r, "schedule", "volume %s: cannot record its schedule: %s", v->name,
                       cat_errmsg(d->cat));
        return;
    }
    char ev[32];
    sched_format_every(s.every_ms, ev, sizeof ev);
    log_info("schedule", "volume %s: snapshots every %s from its StorageClass", v->name, ev);
    sched_kick(d);
}

/* --- running ---------------------------------------------------------------- */

/* Prune the volume's scheduled snapshots by its policy. Returns how many
 * were deleted. */
static int prune(struct amberd *d, const struct cat_schedule *sc, const char *vol_name)
{
    struct cat_snapshot_filter f = { .volume_id = sc->volume_id, .label_key = "schedule",
                                     .states = 1u << CAT_SNAP_READY };
    struct cat_page pg = {0};
    _cleanup_(cat_snapshot_list_free) struct cat_snapshot_list sl = {0};
    int r = cat_snapshot_list(d->cat, &f, &pg, &sl);
    if (r < 0) {
        log_warn_errno(r, "schedule", "volume %s: cannot list snapshots to prune: %s", vol_name,
                       cat_errmsg(d->cat));
        return r;
    }
    /* Candidates newest first (the list is oldest first), protected ones out. */
    size_t n = 0;
    const struct cat_snapshot **cand = xcalloc(sl.n ? sl.n : 1, sizeof *cand);
    uint64_t *times = xcalloc(sl.n ? sl.n : 1, sizeof *times);
    bool *keep = xcalloc(sl.n ? sl.n : 1, sizeof *keep);
    for (size_t i = sl.n; i-- > 0;) {
        if (cat_snapshot_protected(d->cat, sl.items[i].id, NULL) != 0)
            continue;
        cand[n] = &sl.items[i];
        times[n++] = sl.items[i].created_ns;
    }
    sched_retention_select(times, n, sc, keep);
    int pruned = 0;
    /* Oldest first, and a bounded number a pass: a policy tightened over a
     * long history is applied over a few runs, not in one pass that would
     * hold up the other volumes' schedules. */
    for (size_t i = n; i-- > 0 && pruned < SCHED_PRUNE_MAX;) {
        if (keep[i])
            continue;
        const char *why = NULL;
        if (cat_snapshot_protected(d->cat, cand[i]->id, &why) != 0)
            continue;    /* held meanwhile */
        struct op_err e = {0};
        r = snap_delete(d, cand[i]->id, &e);
        if (r < 0 && r != -ENOENT)
            log_warn_errno(r, "schedule", "volume %s: cannot prune snapshot %s: %s", vol_name,
                           cand[i]->name, e.msg ? e.msg : "");
        else if (r == 0)
            pruned++;
        op_err_clear(&e);
    }
    free(cand);
    free(times);
    free(keep);
    return pruned;
}

/* Take one scheduled snapshot. 0, or a negative errno (logged). */
static int take(struct amberd *d, const struct cat_schedule *sc, const char *vol_name, uint64_t now)
{
    char ev[32], name[64], ts[32];
    sched_format_every(sc->every_ms, ev, sizeof ev);
    time_t t = (time_t)(now / 1000000000ULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y%m%d-%H%M%S", &tm);
    snprintf(name, sizeof name, "auto-%s-%03u", ts, (unsigned)(now / 1000000ULL % 1000));
    struct cat_label l = { .key = "schedule", .value = ev };
    struct snap_create_args a = { .volume = sc->volume_id, .name = name, .labels = &l, .n_labels = 1 };
    struct cat_snapshot *s = NULL;
    struct op_err e = {0};
    int r = snap_create_many(d, &a, 1, &s, &e);
    if (r < 0) {
        if (r != -EBUSY)
            log_warn_errno(r, "schedule", "volume %s: scheduled snapshot failed: %s", vol_name,
                           e.msg ? e.msg : "");
        op_err_clear(&e);
        return r;
    }
    cat_snapshot_free(s);
    return 0;
}

/* When to run next after a run at `now` that was due at `due`: on time
 * (late by under half a period), the next slot of the schedule's phase, so
 * the cadence does not drift; later than that (downtime, overload), one
 * period from now, so the catch-up is never followed closely by a second. */
static uint64_t next_slot(uint64_t due, uint64_t every_ns, uint64_t now)
{
    if (due > now)
        return due;
    if (now - due > every_ns / 2)
        return now + every_ns;
    return due + ((now - due) / every_ns + 1) * every_ns;
}

static void run_due(struct amberd *d, const struct cat_schedule *sc)
{
    uint64_t now = now_real_ns();
    _cleanup_(cat_volume_freep) struct cat_volume *v = NULL;
    if (cat_volume_get(d->cat, sc->volume_id, &v) < 0)
        return;    /* deleted meanwhile: its schedule goes with it */
    int r = take(d, sc, v->name, now);
    if (r == -EBUSY) {
        /* Another operation holds the volume: try again shortly. */
        cat_schedule_set_run(d->cat, sc->volume_id, sc->last_run_ns, now + SCHED_RETRY_NS);
        return;
    }
    uint64_t next = next_slot(sc->next_due_ns, sc->every_ms * 1000000ULL, now);
    cat_schedule_set_run(d->cat, sc->volume_id, r == 0 ? now : sc->last_run_ns, next);
    if (r == 0) {
        int p = prune(d, sc, v->name);
        if (p > 0)
            log_info("schedule", "volume %s: pruned %d scheduled snapshots", v->name, p);
    }
}

static void *sched_thread(void *arg)
{
    struct sched_state *st = arg;
    struct amberd *d = st->d;
    pthread_mutex_lock(&st->lock);
    while (!st->stop) {
        st->kick = false;
        pthread_mutex_unlock(&st->lock);

        uint64_t now = now_real_ns(), wait_ns = SCHED_MAX_SLEEP_NS;
        struct cat_schedule_list l = {0};
        if (cat_schedule_list(d->cat, 0, &l) == 0) {
            for (size_t i = 0; i < l.n; i++) {
                if (l.items[i].next_due_ns <= now) {
                    run_due(d, &l.items[i]);
                    wait_ns = 0;    /* re-read: due times moved */
                } else {
                    wait_ns = MIN(wait_ns, l.items[i].next_due_ns - now);
                }
            }
            cat_schedule_list_free(&l);
        }

        pthread_mutex_lock(&st->lock);
        if (st->stop || st->kick || wait_ns == 0)
            continue;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        uint64_t at = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec + wait_ns;
        ts.tv_sec = (time_t)(at / 1000000000ULL);
        ts.tv_nsec = (long)(at % 1000000000ULL);
        while (!st->stop && !st->kick) {
            if (pthread_cond_timedwait(&st->cond, &st->lock, &ts) == ETIMEDOUT)
                break;
        }
    }
    pthread_mutex_unlock(&st->lock);
    return NULL;
}

int sched_start(struct amberd *d)
{
    struct sched_state *st = xcalloc(1, sizeof *st);
    st->d = d;
    pthread_mutex_init(&st->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cond, &ca);
    pthread_condattr_destroy(&ca);
    d->sched = st;
    int r = pthread_create(&st->thread, NULL, sched_thread, st);
    if (r != 0) {
        d->sched = NULL;
        pthread_cond_destroy(&st->cond);
        pthread_mutex_destroy(&st->lock);
        free(st);
        return -r;
    }
    st->started = true;
    return 0;
}

void sched_kick(struct amberd *d)
{
    struct sched_state *st = d->sched;
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    st->kick = true;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
}

void sched_stop(struct amberd *d)
{
    struct sched_state *st = d->sched;
    if (!st)
        return;
    pthread_mutex_lock(&st->lock);
    st->stop = true;
    pthread_cond_signal(&st->cond);
    pthread_mutex_unlock(&st->lock);
    if (st->started)
        pthread_join(st->thread, NULL);
    pthread_cond_destroy(&st->cond);
    pthread_mutex_destroy(&st->lock);
    free(st);
    d->sched = NULL;
}
