/* map.c: a snapshot's map, a radix tree of content-addressed map nodes.
 *
 * A leaf node maps one LEAF_SPAN (4 MiB) region of the volume: a sorted
 * list of entries (offset in the region, length, piece id, offset in the
 * piece); what no entry covers is a hole. An inner node of level L has
 * FANOUT (256) children of level L-1 and maps 4 MiB × 256^L; a missing
 * child is an all-hole subtree. The manifest names the root and its level,
 * the smallest that covers the volume (level 2 up to 256 GiB, 3 up to
 * 64 TiB). Nodes are blobs like pieces (packed, sealed, their id the keyed
 * HMAC of their encoding), so equal subtrees are stored once.
 *
 * Why this shape: a snapshot rewrites only the leaves its changes touch and
 * the inner nodes above them (a 4 KiB change costs one leaf, a few hundred
 * bytes, plus one 8 KiB-at-most inner node per level), so 100,000
 * snapshots of a 100 GiB volume cost their changes, not 100,000 maps; a
 * fixed radix (rather than a B-tree keyed by extent) makes the node that
 * covers an offset a pure function of the offset, so the same region of two
 * snapshots is the same node id when unchanged, diffs between snapshots
 * skip equal subtrees by id, and a reader finds any offset in `level`
 * node reads. Offsets inside a leaf are relative, so leaf contents do not
 * depend on where the leaf sits.
 *
 * Encodings (little endian):
 *   leaf:  "AML" u8 1, u32 n, n × (u32 off, u32 len, u32 poff, 32-byte id)
 *   inner: "AMI" u8 1, u8 level, u32 n, n × (u16 slot, 32-byte child id)
 * Decoders check every field (sorted, in range, non-overlapping). */
#include <string.h>

#include "internal.h"

#define LEAF_ENTRY_BYTES (12 + ID_BYTES)
#define INNER_ENTRY_BYTES (2 + ID_BYTES)

void leaf_free(struct leaf *l)
{
    if (!l)
        return;
    free(l->e);
    l->e = NULL;
    l->n = 0;
}

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (uint8_t)(v >> 24) };
    buf_append(b, p, 4);
}

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

int leaf_encode(const struct leaf *l, struct buf *out)
{
    buf_append(out, "AML\1", 4);
    put_u32(out, (uint32_t)l->n);
    buf_reserve(out, l->n * LEAF_ENTRY_BYTES);
    for (size_t i = 0; i < l->n; i++) {
        put_u32(out, (uint32_t)(l->e[i].off - l->start));
        put_u32(out, l->e[i].len);
        put_u32(out, l->e[i].poff);
        buf_append(out, l->e[i].id, ID_BYTES);
    }
    return 0;
}

int leaf_decode(const void *data, size_t len, uint64_t start, struct leaf *ret)
{
    const uint8_t *p = data;
    if (len < 8 || memcmp(p, "AML\1", 4))
        return -EBADMSG;
    uint32_t n = rd_u32(p + 4);
    if (n == 0 || n > LEAF_SPAN / OBJSTORE_BLOCK || len != 8 + (size_t)n * LEAF_ENTRY_BYTES)
        return -EBADMSG;
    struct leaf l = { .start = start, .e = xcalloc(n, sizeof *l.e) };
    uint64_t end = 0;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + 8 + (size_t)i * LEAF_ENTRY_BYTES;
        uint32_t off = rd_u32(e), elen = rd_u32(e + 4), poff = rd_u32(e + 8);
        if (off < end || elen == 0 || (uint64_t)off + elen > LEAF_SPAN || off % OBJSTORE_BLOCK ||
            poff % OBJSTORE_BLOCK || poff > OBJSTORE_CHUNK_MAX || elen > OBJSTORE_CHUNK_MAX ||
            id_is_zero(e + 12)) {
            free(l.e);
            return -EBADMSG;
        }
        end = (uint64_t)off + elen;
        l.e[i] = (struct map_entry){ .off = start + off, .len = elen, .poff = poff };
        memcpy(l.e[i].id, e + 12, ID_BYTES);
    }
    l.n = n;
    *ret = l;
    return 0;
}

int inner_encode(unsigned level, uint8_t (*children)[ID_BYTES], struct buf *out)
{
    uint32_t n = 0;
    for (unsigned i = 0; i < FANOUT; i++)
        n += !id_is_zero(children[i]);
    uint8_t hdr[5] = { 'A', 'M', 'I', 1, (uint8_t)level };
    buf_append(out, hdr, 5);
    put_u32(out, n);
    for (unsigned i = 0; i < FANOUT; i++)
        if (!id_is_zero(children[i])) {
            uint8_t s[2] = { (uint8_t)i, (uint8_t)(i >> 8) };
            buf_append(out, s, 2);
            buf_append(out, children[i], ID_BYTES);
        }
    return 0;
}

int inner_decode(const void *data, size_t len, unsigned level, uint8_t (*children)[ID_BYTES])
{
    const uint8_t *p = data;
    if (len < 9 || memcmp(p, "AMI\1", 4) || p[4] != level || level == 0)
        return -EBADMSG;
    uint32_t n = rd_u32(p + 5);
    if (n == 0 || n > FANOUT || len != 9 + (size_t)n * INNER_ENTRY_BYTES)
        return -EBADMSG;
    memset(children, 0, (size_t)FANOUT * ID_BYTES);
    int last = -1;
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *e = p + 9 + (size_t)i * INNER_ENTRY_BYTES;
        int slot = e[0] | e[1] << 8;
        if (slot <= last || slot >= (int)FANOUT || id_is_zero(e + 2))
            return -EBADMSG;
        last = slot;
        memcpy(children[slot], e + 2, ID_BYTES);
    }
    return 0;
}

unsigned map_level_for(uint64_t size)
{
    unsigned l = 0;
    while (map_span(l) < size)
        l++;
    return l;
}

uint64_t map_span(unsigned level)
{
    return level >= 5 ? UINT64_MAX : (uint64_t)LEAF_SPAN << (8 * level);
}

int map_load_leaf(struct objstore *r, const uint8_t id[ID_BYTES], uint64_t start, struct leaf *ret)
{
    const uint8_t *p;
    size_t n;
    struct cache_ent *ce;
    int rc = cached_blob(r, id, BLOB_NODE, &p, &n, &ce);
    if (rc < 0)
        return rc;
    rc = leaf_decode(p, n, start, ret);
    cache_put(r, ce);
    return rc;
}

static int load_inner(struct objstore *r, const uint8_t id[ID_BYTES], unsigned level,
                      uint8_t (*children)[ID_BYTES])
{
    const uint8_t *p;
    size_t n;
    struct cache_ent *ce;
    int rc = cached_blob(r, id, BLOB_NODE, &p, &n, &ce);
    if (rc < 0)
        return rc;
    rc = inner_decode(p, n, level, children);
    cache_put(r, ce);
    return rc;
}

static int walk(struct objstore *r, const uint8_t id[ID_BYTES], unsigned level, uint64_t start,
                int (*cb)(void *ud, const uint8_t id[ID_BYTES], uint64_t start), void *ud)
{
    if (id_is_zero(id))
        return 0;
    if (level == 0)
        return cb(ud, id, start);
    uint8_t (*ch)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
    int rc = load_inner(r, id, level, ch);
    for (unsigned i = 0; rc == 0 && i < FANOUT; i++)
        rc = walk(r, ch[i], level - 1, start + i * map_span(level - 1), cb, ud);
    free(ch);
    return rc;
}

int map_walk(struct objstore *r, const uint8_t root[ID_BYTES], unsigned level,
             int (*cb)(void *ud, const uint8_t id[ID_BYTES], uint64_t start), void *ud)
{
    return walk(r, root, level, 0, cb, ud);
}

int map_leaf_at(struct objstore *r, const uint8_t root[ID_BYTES], unsigned level, uint64_t off,
                uint8_t ret[ID_BYTES])
{
    uint8_t cur[ID_BYTES];
    memcpy(cur, root, ID_BYTES);
    uint8_t (*ch)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
    int rc = 0;
    for (; level > 0 && !id_is_zero(cur); level--) {
        if ((rc = load_inner(r, cur, level, ch)) < 0)
            break;
        uint64_t cs = map_span(level - 1);
        memcpy(cur, ch[(off / cs) % FANOUT], ID_BYTES);
    }
    free(ch);
    if (rc == 0)
        memcpy(ret, cur, ID_BYTES);
    return rc;
}

/* ---- building a new map ----------------------------------------------- */

struct build {
    struct objstore *r;
    struct pack_writer *w;
    uint64_t size, psize;
    const struct objstore_range *read;
    size_t nread;
    const struct map_entry *pieces;
    size_t npieces;
    uint64_t nodes;
    int64_t dbytes, dentries;   /* data bytes and entries, new minus parent */
    void (*reused)(void *ud, const uint8_t id[ID_BYTES]);
    void *reused_ud;
};

/* A parent subtree: its id and level (lower than the level it stands for
 * when the volume grew past the parent's root). */
struct pref {
    uint8_t id[ID_BYTES];
    unsigned level;
};

static int store_node(struct build *b, const struct buf *enc, uint8_t ret[ID_BYTES])
{
    node_id(&b->r->keys, enc->data, enc->len, ret);
    int rc = index_has(b->r, ret);
    if (rc == 0) {
        if (b->reused)
            b->reused(b->reused_ud, ret);
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    b->nodes++;
    return pack_add(b->r, b->w, BLOB_NODE, ret, enc->data, enc->len, NULL, 0);
}

/* First index of a sorted range array whose end is past `off`. */
static size_t first_read(const struct build *b, uint64_t off)
{
    size_t lo = 0, hi = b->nread;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->read[mid].offset + b->read[mid].length <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static size_t first_piece(const struct build *b, uint64_t off)
{
    size_t lo = 0, hi = b->npieces;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (b->pieces[mid].off + b->pieces[mid].len <= off)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static bool dirty(const struct build *b, uint64_t start, uint64_t span)
{
    uint64_t end = span > UINT64_MAX - start ? UINT64_MAX : start + span;
    size_t i = first_read(b, start);
    if (i < b->nread && b->read[i].offset < end)
        return true;
    /* The region where a shrunk volume now ends. */
    return b->psize > b->size && start < b->psize && end > b->size;
}

static void push_entry(struct leaf *l, size_t *cap, const struct map_entry *e)
{
    /* Merge with the previous entry when it continues it. */
    if (l->n) {
        struct map_entry *p = &l->e[l->n - 1];
        if (p->off + p->len == e->off && !memcmp(p->id, e->id, ID_BYTES) && p->poff + p->len == e->poff &&
            (uint64_t)p->len + e->len <= OBJSTORE_CHUNK_MAX) {
            p->len += e->len;
            return;
        }
    }
    if (l->n == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        l->e = xrealloc(l->e, *cap * sizeof *l->e);
    }
    l->e[l->n++] = *e;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct map_entry *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static int build_leaf(struct build *b, const struct pref *p, uint64_t start, uint8_t ret[ID_BYTES])
{
    struct leaf old = {}, nl = { .start = start };
    size_t cap = 0;
    uint64_t end = MIN(start + LEAF_SPAN, b->size);
    int rc = 0;
    if (!id_is_zero(p->id) && (rc = map_load_leaf(b->r, p->id, start, &old)) < 0)
        return rc;
    struct leaf tmp = { .start = start };
    size_t tcap = 0;
    /* The parent's entries minus the read ranges, clipped to the volume. */
    for (size_t i = 0; i < old.n; i++) {
        uint64_t s = old.e[i].off, e = MIN(s + old.e[i].len, end);
        size_t k = first_read(b, s);
        while (s < e) {
            uint64_t cut = e;
            if (k < b->nread && b->read[k].offset < e)
                cut = MAX(s, b->read[k].offset);
            if (cut > s) {
                struct map_entry m = old.e[i];
                m.poff += (uint32_t)(s - old.e[i].off);
                m.off = s;
                m.len = (uint32_t)(cut - s);
                push_entry(&tmp, &tcap, &m);
            }
            if (k >= b->nread || b->read[k].offset >= e)
                break;
            s = b->read[k].offset + b->read[k].length;
            k++;
        }
    }
    /* The new pieces, clipped to the leaf. */
    for (size_t k = first_piece(b, start); k < b->npieces && b->pieces[k].off < end; k++) {
        const struct map_entry *pc = &b->pieces[k];
        uint64_t s = MAX(pc->off, start), e = MIN(pc->off + pc->len, end);
        if (s >= e)
            continue;
        struct map_entry m = *pc;
        m.poff += (uint32_t)(s - pc->off);
        m.off = s;
        m.len = (uint32_t)(e - s);
        push_entry(&tmp, &tcap, &m);
    }
    if (tmp.n)
        qsort(tmp.e, tmp.n, sizeof *tmp.e, entry_cmp);
    for (size_t i = 0; i < tmp.n; i++)
        push_entry(&nl, &cap, &tmp.e[i]);
    for (size_t i = 0; i < old.n; i++)
        b->dbytes -= old.e[i].len;
    for (size_t i = 0; i < nl.n; i++)
        b->dbytes += nl.e[i].len;
    b->dentries += (int64_t)nl.n - (int64_t)old.n;
    leaf_free(&tmp);
    leaf_free(&old);
    if (nl.n == 0) {
        memset(ret, 0, ID_BYTES);
        return 0;
    }
    struct buf enc = {};
    leaf_encode(&nl, &enc);
    rc = store_node(b, &enc, ret);
    buf_free(&enc);
    leaf_free(&nl);
    return rc;
}

static int build_node(struct build *b, const struct pref *p, unsigned level, uint64_t start,
                      uint8_t ret[ID_BYTES]);

/* A parent subtree standing for `level` unchanged: its id, wrapped in
 * single-child inner nodes when the volume grew past its level. */
static int materialize(struct build *b, const struct pref *p, unsigned level, uint8_t ret[ID_BYTES])
{
    if (p->level == level || id_is_zero(p->id)) {
        memcpy(ret, p->id, ID_BYTES);
        return 0;
    }
    uint8_t (*ch)[ID_BYTES] = xcalloc(FANOUT, ID_BYTES);
    int rc = materialize(b, p, level - 1, ch[0]);
    if (rc == 0 && !id_is_zero(ch[0])) {
        struct buf enc = {};
        inner_encode(level, ch, &enc);
        rc = store_node(b, &enc, ret);
        buf_free(&enc);
    } else if (rc == 0) {
        memset(ret, 0, ID_BYTES);
    }
    free(ch);
    return rc;
}

static int drop_cb(void *ud, const uint8_t id[ID_BYTES], uint64_t start)
{
    struct build *b = ud;
    struct leaf l = {};
    int rc = map_load_leaf(b->r, id, start, &l);
    for (size_t i = 0; i < l.n; i++)
        b->dbytes -= l.e[i].len;
    b->dentries -= (int64_t)l.n;
    leaf_free(&l);
    return rc;
}

static int build_node(struct build *b, const struct pref *p, unsigned level, uint64_t start,
                      uint8_t ret[ID_BYTES])
{
    if (start >= b->size) {
        /* Past the end of a shrunk volume: dropped, counted out. */
        memset(ret, 0, ID_BYTES);
        return id_is_zero(p->id) ? 0 : walk(b->r, p->id, p->level, start, drop_cb, b);
    }
    if (!dirty(b, start, map_span(level)))
        return materialize(b, p, level, ret);
    if (level == 0)
        return build_leaf(b, p, start, ret);
    uint8_t (*pch)[ID_BYTES] = xcalloc(FANOUT, ID_BYTES);
    uint8_t (*ch)[ID_BYTES] = xcalloc(FANOUT, ID_BYTES);
    int rc = 0;
    if (p->level == level && !id_is_zero(p->id))
        rc = load_inner(b->r, p->id, level, pch);
    else if (!id_is_zero(p->id))
        memcpy(pch[0], p->id, ID_BYTES);   /* wrapped: the old root is child 0 */
    bool any = false;
    uint64_t cs = map_span(level - 1);
    for (unsigned i = 0; rc == 0 && i < FANOUT; i++) {
        struct pref cp = { .level = MIN(p->level, level - 1) };
        memcpy(cp.id, pch[i], ID_BYTES);
        if (p->level < level && i > 0)
            memset(cp.id, 0, ID_BYTES);
        rc = build_node(b, &cp, level - 1, start + i * cs, ch[i]);
        any |= !id_is_zero(ch[i]);
    }
    if (rc == 0 && any) {
        struct buf enc = {};
        inner_encode(level, ch, &enc);
        rc = store_node(b, &enc, ret);
        buf_free(&enc);
    } else if (rc == 0) {
        memset(ret, 0, ID_BYTES);
    }
    free(pch);
    free(ch);
    return rc;
}

int map_build(struct objstore *r, struct pack_writer *w, const uint8_t proot[ID_BYTES], unsigned plevel,
              uint64_t psize, uint64_t size, const struct objstore_range *read, size_t nread,
              const struct map_entry *pieces, size_t npieces, uint8_t ret_root[ID_BYTES],
              unsigned *ret_level, uint64_t *ret_nodes, int64_t *ret_dbytes, int64_t *ret_dentries,
              void (*reused)(void *ud, const uint8_t id[ID_BYTES]), void *reused_ud)
{
    struct build b = { .r = r, .w = w, .size = size, .psize = psize, .read = read, .nread = nread,
                       .pieces = pieces, .npieces = npieces, .reused = reused, .reused_ud = reused_ud };
    unsigned level = map_level_for(size);
    struct pref p = { .level = plevel };
    memcpy(p.id, proot, ID_BYTES);
    /* A shrunk volume: the parent's subtree of the new root's span. */
    uint8_t (*ch)[ID_BYTES] = xmalloc((size_t)FANOUT * ID_BYTES);
    int rc = 0;
    while (p.level > level && !id_is_zero(p.id)) {
        if ((rc = load_inner(r, p.id, p.level, ch)) < 0)
            break;
        for (unsigned i = 1; rc == 0 && i < FANOUT; i++)
            rc = walk(r, ch[i], p.level - 1, i * map_span(p.level - 1), drop_cb, &b);
        if (rc < 0)
            break;
        memcpy(p.id, ch[0], ID_BYTES);
        p.level--;
    }
    free(ch);
    if (id_is_zero(p.id))
        p.level = level;
    if (rc == 0)
        rc = build_node(&b, &p, level, 0, ret_root);
    if (rc == 0) {
        *ret_level = level;
        *ret_nodes = b.nodes;
        *ret_dbytes = b.dbytes;
        *ret_dentries = b.dentries;
    }
    return rc;
}
