/* selfcheck.c: amber.v1.Check/SelfCheck on the node socket: compare the
 * catalog with the pool and say what disagrees, changing nothing.
 *
 * Checked: every volume row has its image in the pool and every volume in
 * the pool a row; the same for snapshots; no row is in a transitional state
 * (creating, deleting, reverting, resizing) without an intent that
 * recovery or its operation will finish; no work-in-progress entries
 * (names starting with ".") are left in the pool's vols/ and snaps/
 * trees. It also lists the intents still recorded and the daemon's
 * resident memory and open file descriptors, so a soak can bound them.
 * The answer is a snapshot of a moving daemon: run it while no operation
 * is in flight for an exact one (the soak parks its clients first). */
#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "amber/util.h"
#include "check.pb-c.h"
#include "snapd/daemon.h"

struct report {
    char **v;
    size_t n;
};

static void add(struct report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void add(struct report *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *s;
    if (vasprintf(&s, fmt, ap) < 0)
        s = NULL;
    va_end(ap);
    if (!s)
        return;
    r->v = xrealloc(r->v, (r->n + 1) * sizeof *r->v);
    r->v[r->n++] = s;
}

static void report_free(struct report *r)
{
    for (size_t i = 0; i < r->n; i++)
        free(r->v[i]);
    free(r->v);
}

static bool in_strv(char **v, const char *s)
{
    for (; v && *v; v++)
        if (strcmp(*v, s) == 0)
            return true;
    return false;
}

static bool in_strv_n(char **v, size_t n, const char *s)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(v[i], s) == 0)
            return true;
    return false;
}

static bool has_intent(const struct cat_intent_list *il, const char *target)
{
    for (size_t i = 0; i < il->n; i++)
        if (il->items[i].target_id && strcmp(il->items[i].target_id, target) == 0)
            return true;
    return false;
}

/* Names starting with "." directly under DIR (and one level down). */
static void hidden_entries(struct report *r, const char *dir, int depth)
{
    DIR *dd = opendir(dir);
    if (!dd)
        return;
    struct dirent *e;
    while ((e = readdir(dd))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        _cleanup_free_ char *p = xasprintf("%s/%s", dir, e->d_name);
        if (e->d_name[0] == '.')
            add(r, "work in progress left in the pool: %s", p);
        else if (depth > 0 && e->d_type == DT_DIR)
            hidden_entries(r, p, depth - 1);
    }
    closedir(dd);
}

static uint64_t self_rss(void)
{
    _cleanup_free_ char *s = NULL;
    if (read_file_all("/proc/self/statm", 4096, &s, NULL) < 0)
        return 0;
    unsigned long size, res;
    if (sscanf(s, "%lu %lu", &size, &res) != 2)
        return 0;
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint32_t self_fds(void)
{
    DIR *dd = opendir("/proc/self/fd");
    uint32_t n = 0;
    if (!dd)
        return 0;
    while (readdir(dd))
        n++;
    closedir(dd);
    return n > 3 ? n - 3 : 0;   /* ".", ".." and the one opendir holds */
}

/* One pass over the catalog and the pool: problems into pr, intents into
 * ir (if given). */
static int check_once(struct amberd *d, struct report *out, struct report *ir, uint32_t *ret_vols,
                      uint32_t *ret_snaps)
{
    struct report pr = {0};
    struct cat_intent_list il = {0};
    int r = cat_intent_list(d->cat, &il);
    if (r < 0)
        return r;
    for (size_t i = 0; ir && i < il.n; i++)
        add(ir, "%s %s %s", il.items[i].op, il.items[i].target_id ? il.items[i].target_id : "-",
            il.items[i].step ? il.items[i].step : "-");

    uint32_t nvols = 0, nsnaps = 0;
    char **disk_vols = NULL;
    if ((r = pool_list(d->pool, NULL, &disk_vols)) < 0)
        add(&pr, "cannot list the pool's volumes: %s", strerror(-r));
    char **cat_vols = NULL;
    size_t ncat = 0;
    _cleanup_free_ char *after = NULL;
    for (;;) {     /* every volume row, page by page */
        struct cat_page page = { .after = after };
        struct cat_volume_list l = {0};
        if ((r = cat_volume_list(d->cat, NULL, &page, &l)) < 0) {
            add(&pr, "catalog: %s", cat_errmsg(d->cat));
            break;
        }
        for (size_t i = 0; i < l.n; i++) {
            struct cat_volume *v = &l.items[i];
            nvols++;
            cat_vols = xrealloc(cat_vols, (ncat + 2) * sizeof *cat_vols);
            cat_vols[ncat++] = xstrdup(v->id);
            cat_vols[ncat] = NULL;
            if (disk_vols && !in_strv(disk_vols, v->id) && v->state != CAT_VOL_CREATING)
                add(&pr, "volume %s (%s) is in the catalog, not in the pool", v->name, v->id);
            if (v->state != CAT_VOL_READY && v->state != CAT_VOL_RECEIVING && !has_intent(&il, v->id))
                add(&pr, "volume %s is %s with no intent to finish it", v->name,
                    cat_vol_state_to_string(v->state));
            char **disk_snaps = NULL;
            if (pool_list(d->pool, v->id, &disk_snaps) < 0)
                disk_snaps = NULL;
            struct cat_snapshot_filter sf = { .volume_id = v->id };
            _cleanup_free_ char *safter = NULL;
            char **cat_snaps = NULL;
            size_t ns = 0;
            for (;;) {
                struct cat_page sp = { .after = safter };
                struct cat_snapshot_list sl = {0};
                if (cat_snapshot_list(d->cat, &sf, &sp, &sl) < 0) {
                    add(&pr, "catalog: %s", cat_errmsg(d->cat));
                    break;
                }
                for (size_t j = 0; j < sl.n; j++) {
                    struct cat_snapshot *s = &sl.items[j];
                    nsnaps++;
                    cat_snaps = xrealloc(cat_snaps, (ns + 2) * sizeof *cat_snaps);
                    cat_snaps[ns++] = xstrdup(s->id);
                    cat_snaps[ns] = NULL;
                    /* A snapshot the store moved off the pool has no subvolume. */
                    struct cat_store_info si = {0};
                    bool resident = cat_store_get(d->cat, s->id, &si) < 0 || si.resident;
                    if (disk_snaps && !in_strv(disk_snaps, s->id) && s->state != CAT_SNAP_CREATING &&
                        resident)
                        add(&pr, "snapshot %s@%s (%s) is in the catalog, not in the pool", v->name, s->name,
                            s->id);
                    if (!resident && !si.manifest)
                        add(&pr, "snapshot %s@%s (%s) is neither in the pool nor in the store", v->name,
                            s->name, s->id);
                    cat_store_info_clear(&si);
                    if (s->state != CAT_SNAP_READY && !has_intent(&il, s->id))
                        add(&pr, "snapshot %s@%s is %s with no intent to finish it", v->name, s->name,
                            cat_snap_state_to_string(s->state));
                }
                free(safter);
                safter = TAKE_PTR(sl.next);
                cat_snapshot_list_free(&sl);
                if (!safter)
                    break;
            }
            for (char **p = disk_snaps; p && *p; p++)
                if (!in_strv(cat_snaps, *p) && !has_intent(&il, *p))
                    add(&pr, "snapshot %s of volume %s is in the pool, not in the catalog", *p, v->name);
            pool_strv_free(cat_snaps);
            pool_strv_free(disk_snaps);
        }
        free(after);
        after = TAKE_PTR(l.next);
        cat_volume_list_free(&l);
        if (!after)
            break;
    }
    for (char **p = disk_vols; p && *p; p++)
        if (!in_strv(cat_vols, *p) && !has_intent(&il, *p))
            add(&pr, "volume %s is in the pool, not in the catalog", *p);
    pool_strv_free(disk_vols);
    pool_strv_free(cat_vols);
    _cleanup_free_ char *vd = xasprintf("%s/vols", d->pool_dir);
    _cleanup_free_ char *sd = xasprintf("%s/snaps", d->pool_dir);
    hidden_entries(&pr, vd, 0);
    hidden_entries(&pr, sd, 1);
    cat_intent_list_free(&il);
    *out = pr;
    *ret_vols = nvols;
    *ret_snaps = nsnaps;
    return 0;
}

static int h_self_check(struct rpc_call *c, const ProtobufCMessage *m)
{
    struct amberd *d = rpc_call_server_data(c);
    struct report first = {0}, second = {0}, pr = {0}, ir = {0};
    uint32_t nvols = 0, nsnaps = 0;
    /* Two passes; a problem counts if both saw it: an operation in flight
     * crosses from one consistent state to the next between the reads of
     * one pass, not of two. */
    int r = check_once(d, &first, &ir, &nvols, &nsnaps);
    if (r == 0 && first.n)
        r = check_once(d, &second, NULL, &nvols, &nsnaps);
    if (r < 0) {
        report_free(&first);
        report_free(&ir);
        return rpc_error(c, RPC_INTERNAL, "catalog: %s", cat_errmsg(d->cat));
    }
    for (size_t i = 0; i < first.n; i++)
        if (in_strv_n(second.v, second.n, first.v[i]))
            add(&pr, "%s", first.v[i]);
    report_free(&first);
    report_free(&second);

    Amber__V1__SelfCheckResponse resp = AMBER__V1__SELF_CHECK_RESPONSE__INIT;
    resp.problems = pr.v;
    resp.n_problems = pr.n;
    resp.intents = ir.v;
    resp.n_intents = ir.n;
    resp.volumes = nvols;
    resp.snapshots = nsnaps;
    resp.rss_bytes = self_rss();
    resp.open_fds = self_fds();
    r = rpc_call_send(c, &resp.base);
    report_free(&pr);
    report_free(&ir);
    return r;
}

const struct rpc_method api_check_methods[] = {
    { "/amber.v1.Check/SelfCheck", &amber__v1__self_check_request__descriptor,
      &amber__v1__self_check_response__descriptor, RPC_UNARY, h_self_check },
};
const size_t api_check_methods_n = ARRAY_SIZE(api_check_methods);
