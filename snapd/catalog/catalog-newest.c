/* catalog-newest.c: a volume's newest snapshot matching a filter, in one
 * query.
 *
 * "The newest ready snapshot of pvc/data before T labelled run=R" (amberd's
 * ResolveSnapshot, an inline snapshot volume) must cost the same whether
 * the volume has ten snapshots or a million. Listing the volume's
 * snapshots and picking the newest read a whole page instead, and missed
 * every snapshot past the page's CAT_LIST_LIMIT_MAX rows. Here it is one
 * query ending ORDER BY created_ns DESC, id DESC LIMIT 1, driven one of two
 * ways:
 *   - down the volume's (volume_id, created_ns) index from the newest end,
 *     below the time bound, probing each candidate's state and labels by
 *     primary key, stopping at the first that fits: when there are no
 *     labels, or every label term matches many snapshots (the newest
 *     match is then near the top);
 *   - from the (key, value) label index of a term matching few snapshots
 *     (under NEWEST_FEW, counted with a cap), sorting just those: a rare
 *     label far back in a long history is not a walk over all of it. */
#include <string.h>

#include "snapd/catalog/catalog-internal.h"

#define NEWEST_FEW 2000

/* The label term matching fewer than NEWEST_FEW snapshots (the fewest), or
 * -1 when none does. */
static int few_term(struct catalog *cat, const struct cat_snapshot_filter *f, int *ret)
{
    static const char sql[] = "SELECT count(*) FROM (SELECT 1 FROM snapshot_labels "
                              "WHERE key = ?1 AND value = ?2 LIMIT 2000)";
    _Static_assert(NEWEST_FEW == 2000, "the LIMIT above");
    int64_t best = NEWEST_FEW;
    *ret = -1;
    for (size_t i = 0; i < f->n_labels; i++) {
        _cleanup_reset_ sqlite3_stmt *st = NULL;
        int r = row_stmt(cat, sql, f->labels[i].key, f->labels[i].value, NULL, &st);
        if (r < 0)
            return r;
        if ((r = cat_step_row(cat, st)) <= 0)
            return r < 0 ? r : cat_err(-EIO, "count returned nothing");
        int64_t n = sqlite3_column_int64(st, 0);
        if (n < best) {
            best = n;
            *ret = (int)i;
        }
    }
    return 0;
}

/* The matching row's id, or -ENOENT without a message. */
static int newest_id(struct catalog *cat, const struct cat_snapshot_filter *f, uint64_t before_ns,
                     char **ret)
{
    int drive, r = few_term(cat, f, &drive);
    if (r < 0)
        return r;
    struct buf sql = {};
    int n = 1;
    /* CROSS JOIN keeps the label index outermost; "+" keeps the planner
     * off the volume index for that way. */
    if (drive >= 0)
        buf_printf(&sql, "SELECT s.id FROM snapshot_labels d CROSS JOIN snapshots s "
                         "WHERE s.id = d.snapshot_id AND +s.volume_id = ?1");
    else
        buf_printf(&sql, "SELECT s.id FROM snapshots s WHERE s.volume_id = ?1");
    if (before_ns)
        buf_printf(&sql, " AND s.created_ns < ?%d", ++n);
    n = states_clause(&sql, "s.state", f->states, _CAT_SNAP_STATE_MAX, n);
    /* EXISTS, not IN: a probe a candidate. */
    for (size_t i = 0; i < f->n_labels; i++) {
        if ((int)i == drive) {
            buf_printf(&sql, " AND d.key = ?%d AND d.value = ?%d", n + 1, n + 2);
            n += 2;
            continue;
        }
        buf_printf(&sql, " AND EXISTS (SELECT 1 FROM snapshot_labels l%zu WHERE l%zu.snapshot_id = s.id "
                         "AND l%zu.key = ?%d AND l%zu.value = ?%d)", i, i, i, n + 1, i, n + 2);
        n += 2;
    }
    buf_printf(&sql, " ORDER BY s.created_ns DESC, s.id DESC LIMIT 1");
    buf_append(&sql, "", 1);

    _cleanup_finalize_ sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(cat->db, (const char *)sql.data, -1, &st, NULL);
    buf_free(&sql);
    if (rc != SQLITE_OK)
        return cat_sqlerr(cat, rc);
    n = 1;
    bind_text(st, 1, f->volume_id);
    if (before_ns)
        bind_u64(st, ++n, before_ns);
    for (int i = 0; f->states && i < _CAT_SNAP_STATE_MAX; i++)
        if (f->states & (1u << i))
            bind_text(st, ++n, cat_snap_state_to_string((enum cat_snap_state)i));
    for (size_t i = 0; i < f->n_labels; i++) {
        bind_text(st, ++n, f->labels[i].key);
        bind_text(st, ++n, f->labels[i].value);
    }
    if ((r = cat_step_row(cat, st)) <= 0)
        return r < 0 ? r : -ENOENT;
    *ret = col_str(st, 0);
    return 0;
}

int cat_snapshot_newest(struct catalog *cat, const struct cat_snapshot_filter *f, uint64_t before_ns,
                        struct cat_snapshot **ret)
{
    int r;
    if (!f || !f->volume_id)
        return cat_err(-EINVAL, "no volume id");
    if (f->label_key || f->pvc_namespace)
        return cat_err(-EINVAL, "the newest snapshot: a volume, states and labels only");
    if (f->n_labels > CAT_FILTER_LABELS_MAX)
        return cat_err(-EINVAL, "more than %d label terms", CAT_FILTER_LABELS_MAX);
    for (size_t i = 0; i < f->n_labels; i++)
        if (!f->labels || !f->labels[i].key || !f->labels[i].value)
            return cat_err(-EINVAL, "a label term needs a key and a value");
    if ((r = check_u64(before_ns, "before_ns")) < 0)
        return r;
    /* One lock for both steps: the row cannot go in between. */
    CAT_LOCKED(cat);
    _cleanup_free_ char *id = NULL;
    r = newest_id(cat, f, before_ns, &id);
    if (r == -ENOENT)
        return cat_err(r, "volume %s has no such snapshot", f->volume_id);
    if (r < 0)
        return r;
    return cat_snapshot_get(cat, id, ret);
}
