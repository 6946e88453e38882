/* read.c: random reads of a stored snapshot (objstore_read), its allocated
 * extents (objstore_extents), and copying a snapshot between repositories
 * (objstore_copy).
 *
 * A read descends the map to the leaf of each 4 MiB region it touches
 * (inner nodes and leaves come from the repository's node cache) and copies
 * from the pieces the entries name (ranged GETs, kept in the piece cache,
 * so sequential small reads fetch each piece once). Many threads may read
 * at once; the caches are shared and reference counted.
 *
 * A copy is an export whose image is the source snapshot: objstore_read on
 * the source feeds export_run on the destination. Ids are keyed per
 * repository, so every piece and node is re-identified and re-encrypted
 * for the destination; the destination's own dedup uploads only what it
 * lacks, and an interrupted copy resumes like an export. The ranges read
 * are the source map's difference to its parent, found by walking both
 * trees and skipping subtrees with equal ids, then comparing leaf entries
 * (same piece and same place in it: unchanged), when the parent's copy is
 * already in the destination; otherwise the snapshot's allocated extents. */
#include <string.h>

#include "internal.h"

static int resolve_cached(struct objstore *r, const char *manifest, struct mcache *ret)
{
    pthread_mutex_lock(&r->clock);
    for (unsigned i = 0; i < r->mcn; i++)
        if (!strcmp(r->mc[i].key, manifest)) {
            *ret = r->mc[i];
            pthread_mutex_unlock(&r->clock);
            return 0;
        }
    pthread_mutex_unlock(&r->clock);
    struct manifest m = {};
    uint8_t id[ID_BYTES];
    int rc = manifest_load_prefix(r, manifest, &m, id);
    if (rc < 0)
        return rc;
    struct mcache e = { .level = m.root_level, .size = m.volume_size };
    snprintf(e.key, sizeof e.key, "%s", manifest);
    memcpy(e.root, m.root, ID_BYTES);
    manifest_free(&m);
    pthread_mutex_lock(&r->clock);
    if (strlen(manifest) == OBJSTORE_ID_LEN) {  /* prefixes may become ambiguous: not cached */
        unsigned slot = r->mcn < ARRAY_SIZE(r->mc) ? r->mcn++ : (unsigned)(r->cache_tick % ARRAY_SIZE(r->mc));
        r->mc[slot] = e;
    }
    pthread_mutex_unlock(&r->clock);
    *ret = e;
    return 0;
}

int objstore_read(struct objstore *repo, const char *manifest, uint64_t off, void *buf, size_t len)
{
    if (!repo || !manifest || (!buf && len))
        return -EINVAL;
    struct mcache m;
    int rc = resolve_cached(repo, manifest, &m);
    if (rc < 0)
        return rc;
    if (off > m.size || len > m.size - off)
        return -EINVAL;
    uint8_t *out = buf;
    memset(out, 0, len);
    for (uint64_t pos = off; pos < off + len && rc == 0;) {
        uint64_t ls = pos / LEAF_SPAN * LEAF_SPAN, le = MIN(ls + LEAF_SPAN, off + len);
        uint8_t lid[ID_BYTES];
        struct leaf l = {};
        if ((rc = map_leaf_at(repo, m.root, m.level, pos, lid)) < 0)
            break;
        if (!id_is_zero(lid) && (rc = map_load_leaf(repo, lid, ls, &l)) < 0)
            break;
        for (size_t i = 0; i < l.n && rc == 0; i++) {
            const struct map_entry *e = &l.e[i];
            uint64_t s = MAX(e->off, pos), t = MIN(e->off + e->len, le);
            if (s >= t)
                continue;
            const uint8_t *p;
            size_t n;
            struct cache_ent *ce;
            if ((rc = cached_blob(repo, e->id, BLOB_PIECE, &p, &n, &ce)) < 0)
                break;
            uint64_t po = e->poff + (s - e->off);
            if (po + (t - s) > n)
                rc = -EBADMSG;
            else
                memcpy(out + (s - off), p + po, t - s);
            cache_put(repo, ce);
        }
        leaf_free(&l);
        pos = le;
    }
    return rc;
}

struct ext_acc {
    struct objstore *r;
    struct objstore_range *v;
    size_t n, cap;
};

static int ext_cb(void *ud, const uint8_t id[ID_BYTES], uint64_t start)
{
    struct ext_acc *a = ud;
    struct leaf l = {};
    int rc = map_load_leaf(a->r, id, start, &l);
    for (size_t i = 0; i < l.n; i++) {
        if (a->n && a->v[a->n - 1].offset + a->v[a->n - 1].length == l.e[i].off) {
            a->v[a->n - 1].length += l.e[i].len;
            continue;
        }
        if (a->n == a->cap) {
            a->cap = a->cap ? 2 * a->cap : 64;
            a->v = xrealloc(a->v, a->cap * sizeof *a->v);
        }
        a->v[a->n++] = (struct objstore_range){ l.e[i].off, l.e[i].len };
    }
    leaf_free(&l);
    return rc;
}

int objstore_extents(struct objstore *repo, const char *manifest, struct objstore_range **ret,
                     size_t *ret_n)
{
    struct manifest m = {};
    uint8_t id[ID_BYTES];
    int rc = manifest_load_prefix(repo, manifest, &m, id);
    if (rc < 0)
        return rc;
    struct ext_acc a = { .r = repo };
    rc = map_walk(repo, m.root, m.root_level, ext_cb, &a);
    manifest_free(&m);
    if (rc < 0) {
        free(a.v);
        return rc;
    }
    *ret = a.v;
    *ret_n = a.n;
    return 0;
}

/* ---- copy ------------------------------------------------------------- */

struct copy_src {
    struct objstore *src;
    char manifest[OBJSTORE_ID_LEN + 1];
};

static int copy_read(void *ud, void *buf, size_t len, uint64_t off)
{
    struct copy_src *cs = ud;
    return objstore_read(cs->src, cs->manifest, off, buf, len);
}

/* Leaf-level difference of two trees of the same level (a: new, b: old). */
struct diff {
    struct objstore *r;
    struct ext_acc out;
};

static void diff_add(struct diff *d, uint64_t off, uint64_t len)
{
    struct ext_acc *a = &d->out;
    if (a->n && a->v[a->n - 1].offset + a->v[a->n - 1].length == off) {
        a->v[a->n - 1].length += len;
        return;
    }
    if (a->n == a->cap) {
        a->cap = a->cap ? 2 * a->cap : 64;
        a->v = xrealloc(a->v, a->cap * sizeof *a->v);
    }
    a->v[a->n++] = (struct objstore_range){ off, len };
}

/* Where two leaves map bytes differently: a sweep over both entry lists. */
static void diff_leaves(struct diff *d, const struct leaf *a, const struct leaf *b, uint64_t start)
{
    size_t i = 0, j = 0;
    uint64_t pos = start, end = start + LEAF_SPAN;
    while (pos < end) {
        while (i < a->n && a->e[i].off + a->e[i].len <= pos)
            i++;
        while (j < b->n && b->e[j].off + b->e[j].len <= pos)
            j++;
        const struct map_entry *x = i < a->n && a->e[i].off <= pos ? &a->e[i] : NULL;
        const struct map_entry *y = j < b->n && b->e[j].off <= pos ? &b->e[j] : NULL;
        uint64_t next = end;
        if (x)
            next = MIN(next, x->off + x->len);
        else if (i < a->n)
            next = MIN(next, a->e[i].off);
        if (y)
            next = MIN(next, y->off + y->len);
        else if (j < b->n)
            next = MIN(next, b->e[j].off);
        bool same = (!x && !y) || (x && y && !memcmp(x->id, y->id, ID_BYTES) &&
                                   x->poff + (pos - x->off) == y->poff + (pos - y->off));
        if (!same && x)
            diff_add(d, pos, next - pos);   /* data in the new one: read it */
        else if (!same)
            diff_add(d, pos, next - pos);   /* a new hole: read it (zeros) */
        pos = next;
    }
}

static int load_inner_or_zero(struct objstore *r, const uint8_t id[ID_BYTES], unsigned level,
                              uint8_t (*ch)[ID_BYTES])
{
    memset(ch, 0, (size_t)FANOUT * ID_BYTES);
    if (id_is_zero(id))
        return 0;
    const uint8_t *p;
    size_t n;
    struct cache_ent *ce;
    int rc = cached_blob(r, id, BLOB_NODE, &p, &n, &ce);
    if (rc == 0)
        rc = inner_decode(p, n, level, ch);
    cache_put(r, ce);
    return rc;
}

static int diff_nodes(struct diff *d, const uint8_t a[ID_BYTES], const uint8_t b[ID_BYTES], unsigned level,
                      uint64_t start)
{
    if (!memcmp(a, b, ID_BYTES))
        return 0;
    int rc = 0;
    if (level == 0) {
        struct leaf la = {}, lb = {};
        if (!id_is_zero(a))
            rc = map_load_leaf(d->r, a, start, &la);
        if (rc == 0 && !id_is_zero(b))
            rc = map_load_leaf(d->r, b, start, &lb);
        if (rc == 0)
            diff_leaves(d, &la, &lb, start);
        leaf_free(&la);
        leaf_free(&lb);
        return rc;
    }
    uint8_t (*ca)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
    uint8_t (*cb)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
    rc = load_inner_or_zero(d->r, a, level, ca);
    if (rc == 0)
        rc = load_inner_or_zero(d->r, b, level, cb);
    for (unsigned i = 0; rc == 0 && i < FANOUT; i++)
        rc = diff_nodes(d, ca[i], cb[i], level - 1, start + i * map_span(level - 1));
    free(ca);
    free(cb);
    return rc;
}

/* dst's manifest of the snapshot `uuid` (the newest), if any. */
static int find_copy(struct objstore *dst, const char *uuid, char ret[OBJSTORE_ID_LEN + 1])
{
    struct objstore_manifest_info *ms = NULL;
    size_t n = 0;
    int rc = objstore_list_manifests(dst, &ms, &n);
    if (rc < 0)
        return rc;
    rc = -ENOENT;
    for (size_t i = n; i-- > 0;)
        if (!strcmp(ms[i].snapshot_uuid, uuid)) {
            memcpy(ret, ms[i].id, OBJSTORE_ID_LEN + 1);
            rc = 0;
            break;
        }
    objstore_manifest_infos_free(ms, n);
    return rc;
}

static int copy_one(struct objstore *src, struct objstore *dst, const uint8_t mid[ID_BYTES],
                    objstore_progress_fn progress, void *progress_ud, const atomic_bool *cancel,
                    struct objstore_export_result *res)
{
    struct manifest m = {}, pm = {};
    int rc = manifest_load(src, mid, &m, NULL);
    if (rc < 0)
        return rc;
    char dparent[OBJSTORE_ID_LEN + 1] = "";
    struct diff d = { .r = src, .out = { .r = src } };
    bool incremental = false;
    if (m.has_parent && (rc = manifest_load(src, m.parent, &pm, NULL)) == 0 &&
        find_copy(dst, pm.snapshot_uuid, dparent) == 0 && pm.root_level == m.root_level &&
        pm.volume_size == m.volume_size) {
        incremental = true;
        rc = diff_nodes(&d, m.root, pm.root, m.root_level, 0);
    } else {
        dparent[0] = 0;
        rc = map_walk(src, m.root, m.root_level, ext_cb, &d.out);
    }
    if (rc == -ENOENT && !incremental)
        rc = 0;
    if (rc == 0) {
        struct objstore_label *labels = xcalloc(m.nlabels ? m.nlabels : 1, sizeof *labels);
        for (size_t i = 0; i < m.nlabels; i++)
            labels[i] = (struct objstore_label){ m.label_keys[i], m.label_values[i] };
        struct copy_src cs = { .src = src };
        id_to_hex(mid, cs.manifest);
        struct objstore_export_req req = {
            .fd = -1, .size = m.volume_size, .ranges = d.out.v, .nranges = d.out.n,
            .parent = incremental ? dparent : NULL, .snapshot_uuid = m.snapshot_uuid,
            .volume_name = m.volume_name, .labels = labels, .nlabels = m.nlabels,
            .created_ns = m.created_ns, .progress = progress, .progress_ud = progress_ud,
            .cancel = cancel, .no_changed = true,
        };
        struct export_src es = { .read = copy_read, .ud = &cs };
        rc = export_run(dst, &req, &es, res);
        free(labels);
    }
    free(d.out.v);
    manifest_free(&m);
    manifest_free(&pm);
    return rc;
}

int objstore_copy(struct objstore *src, struct objstore *dst, const char *manifest,
                  objstore_progress_fn progress, void *progress_ud, const atomic_bool *cancel,
                  struct objstore_export_result *res)
{
    if (!src || !dst || !manifest)
        return -EINVAL;
    char hex[OBJSTORE_ID_LEN + 1];
    int rc = objstore_resolve_manifest(src, manifest, hex);
    if (rc < 0)
        return rc;
    /* The chain back to the newest ancestor dst has (or the first). */
    uint8_t (*chain)[ID_BYTES] = NULL;
    size_t n = 0;
    uint8_t cur[ID_BYTES];
    id_from_hex(hex, cur);
    for (;;) {
        struct manifest m = {};
        if ((rc = manifest_load(src, cur, &m, NULL)) < 0)
            break;
        chain = xrealloc(chain, (n + 1) * ID_BYTES);
        memcpy(chain[n++], cur, ID_BYTES);
        char have[OBJSTORE_ID_LEN + 1];
        bool stop = !m.has_parent;
        if (!stop) {
            struct manifest pm = {};
            if (manifest_load(src, m.parent, &pm, NULL) < 0 || find_copy(dst, pm.snapshot_uuid, have) == 0)
                stop = true;
            manifest_free(&pm);
            memcpy(cur, m.parent, ID_BYTES);
        }
        manifest_free(&m);
        if (stop)
            break;
    }
    /* Copy oldest first; a snapshot dst already has is copied again only as
     * the last step (it may be asked for explicitly): cheap, all reused. */
    for (size_t i = n; rc == 0 && i-- > 0;) {
        struct objstore_export_result r1 = {};
        rc = copy_one(src, dst, chain[i], progress, progress_ud, cancel, i == 0 ? res : &r1);
        objstore_export_result_free(&r1);
    }
    free(chain);
    return rc;
}
