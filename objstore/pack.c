/* pack.c: blobs in pack objects, the pack indexes, and the read caches.
 *
 * A blob is a piece (a run of non-zero 4 KiB blocks of a volume, at most
 * the chunk size) or a map node. Blobs are sealed one by one (chunk.c) and
 * appended to a pack, packs/<2 hex>/<random id>, uploaded once it holds
 * PACK_TARGET bytes; a piece is stored as two sealed parts, its block
 * digests then its data, so change detection reads 16 bytes per block and
 * a restore reads only the data. Each pack's index, which lists for every
 * blob its id, type, offset and lengths, is uploaded right after the pack as
 * index/<id> (sealed; its id is the keyed HMAC of its plaintext, so it is
 * checked on load and cannot be swapped). A pack without an index (a crash
 * between the two puts) is garbage for gc; an index never names a pack
 * that was not completely written. gc may rewrite several indexes as one.
 *
 * Reads are ranged GETs of one blob part. The whole index is loaded into a
 * hash table on first need and refreshed (only new index objects are read)
 * when a blob is not found, or when a pack is gone because gc repacked it.
 * Nodes, piece plaintexts and digests are kept in a small LRU cache shared
 * by the threads of objstore_read and export. */
#include <string.h>

#include "internal.h"

#define INDEX_MAGIC "AMBX"
#define INDEX_VERSION 1
#define INDEX_MAX_STORED (256u << 20)
#define INDEX_ENTRY_BYTES (ID_BYTES + 1 + 8 + 4 + 4 + 4)
#define CACHE_MAX_BYTES (96u << 20)
#define CACHE_MAX_ENTRIES 8192
#define CACHE_BUCKETS 4096

char *pack_key(const uint8_t id[ID_BYTES])
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(id, hex);
    return xasprintf("packs/%.2s/%s", hex, hex);
}

/* ---- the in-memory index ---------------------------------------------- */

static uint64_t id_hash(const uint8_t id[ID_BYTES])
{
    uint64_t h;
    memcpy(&h, id, sizeof h);
    return h;
}

int id_cmp(const void *a, const void *b)
{
    return memcmp(a, b, ID_BYTES);
}

static void islot_put(struct index_slot *slots, size_t cap, const uint8_t id[ID_BYTES],
                      const struct blob_loc *loc, const uint8_t src[ID_BYTES], size_t *n)
{
    for (size_t i = id_hash(id) & (cap - 1);; i = (i + 1) & (cap - 1)) {
        if (!slots[i].used) {
            memcpy(slots[i].id, id, ID_BYTES);
            slots[i].loc = *loc;
            memcpy(slots[i].src, src, ID_BYTES);
            slots[i].used = true;
            (*n)++;
            return;
        }
        if (!memcmp(slots[i].id, id, ID_BYTES)) {
            slots[i].loc = *loc;    /* a newer copy (repack) */
            memcpy(slots[i].src, src, ID_BYTES);
            return;
        }
    }
}

static void index_add_locked(struct objstore *r, const uint8_t id[ID_BYTES], const struct blob_loc *loc,
                             const uint8_t src[ID_BYTES])
{
    if (2 * (r->in + 1) > r->icap) {
        size_t cap = r->icap ? 2 * r->icap : 1024, n = 0;
        struct index_slot *s = xcalloc(cap, sizeof *s);
        for (size_t i = 0; i < r->icap; i++)
            if (r->islots[i].used)
                islot_put(s, cap, r->islots[i].id, &r->islots[i].loc, r->islots[i].src, &n);
        free(r->islots);
        r->islots = s;
        r->icap = cap;
        r->in = n;
    }
    islot_put(r->islots, r->icap, id, loc, src, &r->in);
}

bool index_entry_live(struct objstore *r, const uint8_t id[ID_BYTES], uint8_t (*live)[ID_BYTES], size_t n)
{
    bool ok = false;
    pthread_mutex_lock(&r->ilock);
    if (r->icap)
        for (size_t i = id_hash(id) & (r->icap - 1); r->islots[i].used; i = (i + 1) & (r->icap - 1))
            if (!memcmp(r->islots[i].id, id, ID_BYTES)) {
                ok = n && bsearch(r->islots[i].src, live, n, ID_BYTES, id_cmp) != NULL;
                break;
            }
    pthread_mutex_unlock(&r->ilock);
    return ok;
}

static int index_find_locked(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret)
{
    if (!r->icap)
        return -ENOENT;
    for (size_t i = id_hash(id) & (r->icap - 1);; i = (i + 1) & (r->icap - 1)) {
        if (!r->islots[i].used)
            return -ENOENT;
        if (!memcmp(r->islots[i].id, id, ID_BYTES)) {
            if (ret)
                *ret = r->islots[i].loc;
            return 0;
        }
    }
}

static bool iloaded_has(struct objstore *r, const uint8_t id[ID_BYTES])
{
    for (size_t i = 0; i < r->niloaded; i++)
        if (!memcmp(r->iloaded[i], id, ID_BYTES))
            return true;
    return false;
}

struct ilist {
    uint8_t (*ids)[ID_BYTES];
    size_t n, cap;
};

static int ilist_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct ilist *l = ud;
    uint8_t id[ID_BYTES];
    if (id_from_hex(key + strlen("index/"), id) < 0)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = xrealloc(l->ids, l->cap * ID_BYTES);
    }
    memcpy(l->ids[l->n++], id, ID_BYTES);
    return 0;
}

int index_list(struct objstore *r, uint8_t (**ret)[ID_BYTES], size_t *ret_n)
{
    struct ilist l = {};
    int rc = r->be->ops->list(r->be, "index/", ilist_cb, &l);
    if (rc < 0) {
        free(l.ids);
        return rc;
    }
    if (l.n)
        qsort(l.ids, l.n, ID_BYTES, id_cmp);
    *ret = l.ids;
    *ret_n = l.n;
    return 0;
}

int index_refresh(struct objstore *r, bool purge)
{
    struct ilist l = {};
    int rc = index_list(r, &l.ids, &l.n);
    if (rc < 0)
        return rc;
    if (purge) {
        pthread_mutex_lock(&r->ilock);
        bool gone = false;
        for (size_t i = 0; i < r->niloaded && !gone; i++)
            gone = !l.n || !bsearch(r->iloaded[i], l.ids, l.n, ID_BYTES, id_cmp);
        if (gone) {
            free(r->islots);
            r->islots = NULL;
            r->icap = r->in = r->niloaded = 0;
        }
        pthread_mutex_unlock(&r->ilock);
    }
    for (size_t i = 0; i < l.n && rc == 0; i++) {
        pthread_mutex_lock(&r->ilock);
        bool have = iloaded_has(r, l.ids[i]);
        pthread_mutex_unlock(&r->ilock);
        if (have)
            continue;
        struct index_obj x = {};
        rc = index_load_obj(r, l.ids[i], &x);
        if (rc == -ENOENT) {    /* replaced by gc meanwhile: its successor is listed */
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        pthread_mutex_lock(&r->ilock);
        for (size_t p = 0; p < x.npacks; p++)
            for (size_t k = 0; k < x.packs[p].n; k++)
                index_add_locked(r, x.packs[p].ids[k], &x.packs[p].locs[k], l.ids[i]);
        if (r->niloaded == r->ciloaded) {
            r->ciloaded = r->ciloaded ? 2 * r->ciloaded : 64;
            r->iloaded = xrealloc(r->iloaded, r->ciloaded * ID_BYTES);
        }
        memcpy(r->iloaded[r->niloaded++], l.ids[i], ID_BYTES);
        pthread_mutex_unlock(&r->ilock);
        index_obj_free(&x);
    }
    free(l.ids);
    if (rc == 0) {
        pthread_mutex_lock(&r->ilock);
        r->iready = true;
        pthread_mutex_unlock(&r->ilock);
    }
    return rc;
}

static int index_lookup_quick(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret)
{
    pthread_mutex_lock(&r->ilock);
    bool ready = r->iready;
    int rc = index_find_locked(r, id, ret);
    pthread_mutex_unlock(&r->ilock);
    if (ready)
        return rc;
    if ((rc = index_refresh(r, false)) < 0)
        return rc;
    pthread_mutex_lock(&r->ilock);
    rc = index_find_locked(r, id, ret);
    pthread_mutex_unlock(&r->ilock);
    return rc;
}

int index_peek(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret)
{
    return index_lookup_quick(r, id, ret);
}

/* Dedup's question: no refresh when absent (the export refreshed at its
 * start; a miss only costs a second copy). */
int index_has(struct objstore *r, const uint8_t id[ID_BYTES])
{
    return index_lookup_quick(r, id, NULL);
}

int index_lookup(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *ret)
{
    int rc = index_lookup_quick(r, id, ret);
    if (rc != -ENOENT)
        return rc;
    /* Written by someone else since, or moved by gc. */
    if ((rc = index_refresh(r, true)) < 0)
        return rc;
    pthread_mutex_lock(&r->ilock);
    rc = index_find_locked(r, id, ret);
    pthread_mutex_unlock(&r->ilock);
    return rc;
}

void index_free(struct objstore *r)
{
    free(r->islots);
    free(r->iloaded);
    r->islots = NULL;
    r->iloaded = NULL;
    r->icap = r->in = r->niloaded = r->ciloaded = 0;
    r->iready = false;
}

/* ---- index objects ---------------------------------------------------- */

static void put_u32(struct buf *b, uint32_t v)
{
    uint8_t p[4] = { v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, (uint8_t)(v >> 24) };
    buf_append(b, p, 4);
}

static void put_u64(struct buf *b, uint64_t v)
{
    put_u32(b, (uint32_t)v);
    put_u32(b, (uint32_t)(v >> 32));
}

static uint32_t rd_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t rd_u64(const uint8_t *p)
{
    return rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32;
}

int index_encode(const struct index_obj *x, struct buf *out)
{
    buf_append(out, INDEX_MAGIC, 4);
    put_u32(out, INDEX_VERSION);
    put_u32(out, (uint32_t)x->npacks);
    for (size_t p = 0; p < x->npacks; p++) {
        const struct index_pack *ip = &x->packs[p];
        buf_append(out, ip->pack, ID_BYTES);
        put_u32(out, (uint32_t)ip->n);
        for (size_t k = 0; k < ip->n; k++) {
            buf_append(out, ip->ids[k], ID_BYTES);
            buf_append(out, &ip->locs[k].type, 1);
            put_u64(out, ip->locs[k].off);
            put_u32(out, ip->locs[k].dlen);
            put_u32(out, ip->locs[k].slen);
            put_u32(out, ip->locs[k].plen);
        }
    }
    return 0;
}

void index_obj_free(struct index_obj *x)
{
    if (!x)
        return;
    for (size_t p = 0; p < x->npacks; p++) {
        free(x->packs[p].ids);
        free(x->packs[p].locs);
    }
    free(x->packs);
    memset(x, 0, sizeof *x);
}

int index_decode(const void *data, size_t len, struct index_obj *ret)
{
    const uint8_t *p = data;
    if (len < 12 || memcmp(p, INDEX_MAGIC, 4))
        return -EBADMSG;
    if (rd_u32(p + 4) != INDEX_VERSION)
        return -EPROTONOSUPPORT;
    uint32_t np = rd_u32(p + 8);
    size_t pos = 12;
    if (np > (len - pos) / (ID_BYTES + 4))
        return -EBADMSG;
    struct index_obj x = { .packs = xcalloc(np ? np : 1, sizeof *x.packs) };
    for (uint32_t i = 0; i < np; i++) {
        if (len - pos < ID_BYTES + 4)
            goto bad;
        struct index_pack *ip = &x.packs[x.npacks++];
        memcpy(ip->pack, p + pos, ID_BYTES);
        uint32_t n = rd_u32(p + pos + ID_BYTES);
        pos += ID_BYTES + 4;
        if (n > (len - pos) / INDEX_ENTRY_BYTES)
            goto bad;
        ip->ids = xcalloc(n ? n : 1, ID_BYTES);
        ip->locs = xcalloc(n ? n : 1, sizeof *ip->locs);
        for (uint32_t k = 0; k < n; k++, ip->n++) {
            const uint8_t *e = p + pos;
            struct blob_loc *l = &ip->locs[k];
            memcpy(ip->ids[k], e, ID_BYTES);
            memcpy(l->pack, ip->pack, ID_BYTES);
            l->type = e[ID_BYTES];
            l->off = rd_u64(e + ID_BYTES + 1);
            l->dlen = rd_u32(e + ID_BYTES + 9);
            l->slen = rd_u32(e + ID_BYTES + 13);
            l->plen = rd_u32(e + ID_BYTES + 17);
            pos += INDEX_ENTRY_BYTES;
            if ((l->type != BLOB_PIECE && l->type != BLOB_NODE) || (l->type == BLOB_NODE && l->dlen) ||
                (l->type == BLOB_PIECE && !l->dlen) || !l->slen || l->off > (1ull << 40) ||
                l->plen > OBJSTORE_CHUNK_MAX * 2u)
                goto bad;
        }
    }
    if (pos != len)
        goto bad;
    *ret = x;
    return 0;
bad:
    index_obj_free(&x);
    return -EBADMSG;
}

int index_store(struct objstore *r, const struct index_obj *x, uint8_t ret_id[ID_BYTES])
{
    struct buf enc = {}, sealed = {};
    uint8_t id[ID_BYTES];
    int rc = index_encode(x, &enc);
    if (rc == 0) {
        index_object_id(&r->keys, enc.data, enc.len, id);
        rc = sealed_pack(&r->keys, SEALED_INDEX, id, enc.data, enc.len, &sealed);
    }
    if (rc == 0) {
        char hex[OBJSTORE_ID_LEN + 1];
        id_to_hex(id, hex);
        _cleanup_free_ char *key = xasprintf("index/%s", hex);
        rc = r->be->ops->put(r->be, key, sealed.data, sealed.len);
    }
    if (rc == 0) {
        if (ret_id)
            memcpy(ret_id, id, ID_BYTES);
        pthread_mutex_lock(&r->ilock);
        if (r->niloaded == r->ciloaded) {
            r->ciloaded = r->ciloaded ? 2 * r->ciloaded : 64;
            r->iloaded = xrealloc(r->iloaded, r->ciloaded * ID_BYTES);
        }
        memcpy(r->iloaded[r->niloaded++], id, ID_BYTES);
        for (size_t p = 0; p < x->npacks; p++)
            for (size_t k = 0; k < x->packs[p].n; k++)
                index_add_locked(r, x->packs[p].ids[k], &x->packs[p].locs[k], id);
        pthread_mutex_unlock(&r->ilock);
    }
    buf_free(&enc);
    buf_free(&sealed);
    return rc;
}

int index_load_obj(struct objstore *r, const uint8_t id[ID_BYTES], struct index_obj *ret)
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(id, hex);
    _cleanup_free_ char *key = xasprintf("index/%s", hex);
    struct buf stored = {}, plain = {};
    int rc = r->be->ops->get(r->be, key, INDEX_MAX_STORED, &stored);
    if (rc == -EFBIG)
        rc = -EBADMSG;
    if (rc == 0)
        rc = sealed_unpack(&r->keys, SEALED_INDEX, id, stored.data, stored.len, (size_t)1 << 30, &plain);
    if (rc == 0) {
        uint8_t check[ID_BYTES];
        index_object_id(&r->keys, plain.data, plain.len, check);
        rc = memcmp(check, id, ID_BYTES) ? -EBADMSG : index_decode(plain.data, plain.len, ret);
    }
    buf_free(&stored);
    buf_free(&plain);
    return rc;
}

/* ---- pack writer ------------------------------------------------------ */

static void pw_push(struct pack_writer *w, const uint8_t id[ID_BYTES], const struct blob_loc *loc)
{
    if (w->n == w->cap) {
        w->cap = w->cap ? 2 * w->cap : 64;
        w->ids = xrealloc(w->ids, w->cap * ID_BYTES);
        w->locs = xrealloc(w->locs, w->cap * sizeof *w->locs);
    }
    memcpy(w->ids[w->n], id, ID_BYTES);
    w->locs[w->n++] = *loc;
}

int pack_add(struct objstore *r, struct pack_writer *w, enum blob_type t, const uint8_t id[ID_BYTES],
             const void *plain, size_t len, const uint8_t *digests, size_t dlen)
{
    struct blob_loc loc = { .off = w->data.len, .type = (uint8_t)t, .plen = (uint32_t)len };
    int rc;
    if (t == BLOB_PIECE) {
        size_t before = w->data.len;
        if ((rc = sealed_pack(&r->keys, SEALED_DIGEST, id, digests, dlen, &w->data)) < 0)
            return rc;
        loc.dlen = (uint32_t)(w->data.len - before);
    }
    size_t before = w->data.len;
    if ((rc = sealed_pack(&r->keys, t == BLOB_PIECE ? SEALED_CHUNK : SEALED_NODE, id, plain, len,
                          &w->data)) < 0)
        return rc;
    loc.slen = (uint32_t)(w->data.len - before);
    pw_push(w, id, &loc);
    if (w->data.len >= PACK_TARGET)
        return pack_flush(r, w);
    return 0;
}

int pack_add_sealed(struct objstore *r, struct pack_writer *w, const uint8_t id[ID_BYTES],
                    const struct blob_loc *loc, const void *stored, size_t len)
{
    struct blob_loc l = *loc;
    l.off = w->data.len;
    buf_append(&w->data, stored, len);
    pw_push(w, id, &l);
    if (w->data.len >= PACK_TARGET)
        return pack_flush(r, w);
    return 0;
}

int pack_flush(struct objstore *r, struct pack_writer *w)
{
    if (!w->n)
        return 0;
    uint8_t pid[ID_BYTES];
    int rc = random_bytes(pid, sizeof pid);
    if (rc < 0)
        return rc;
    _cleanup_free_ char *key = pack_key(pid);
    if ((rc = r->be->ops->put(r->be, key, w->data.data, w->data.len)) < 0)
        return rc;
    for (size_t i = 0; i < w->n; i++)
        memcpy(w->locs[i].pack, pid, ID_BYTES);
    struct index_pack ip = { .n = w->n, .ids = w->ids, .locs = w->locs };
    memcpy(ip.pack, pid, ID_BYTES);
    struct index_obj x = { .npacks = 1, .packs = &ip };
    uint8_t xid[ID_BYTES];
    if ((rc = index_store(r, &x, xid)) < 0)
        return rc;
    if (w->stats && w->stats->collect) {
        struct pack_stats *s = w->stats;
        pthread_mutex_lock(&s->lock);
        if (!s->all)
            s->all = xcalloc(1, sizeof *s->all);
        s->all->packs = xrealloc(s->all->packs, (s->all->npacks + 1) * sizeof *s->all->packs);
        struct index_pack *cp = &s->all->packs[s->all->npacks++];
        *cp = ip;
        cp->ids = xmalloc(w->n * ID_BYTES);
        cp->locs = xmalloc(w->n * sizeof *cp->locs);
        memcpy(cp->ids, w->ids, w->n * ID_BYTES);
        memcpy(cp->locs, w->locs, w->n * sizeof *cp->locs);
        s->index_ids = xrealloc(s->index_ids, (s->nindex + 1) * ID_BYTES);
        memcpy(s->index_ids[s->nindex++], xid, ID_BYTES);
        pthread_mutex_unlock(&s->lock);
    }
    if (w->stats) {
        atomic_fetch_add(&w->stats->packs, 1);
        atomic_fetch_add(&w->stats->bytes, w->data.len);
        atomic_fetch_add(&w->stats->blobs, w->n);
    }
    w->data.len = 0;
    w->n = 0;
    os_crashpoint("objstore-pack");
    return 0;
}

int pack_stats_consolidate(struct objstore *r, struct pack_stats *s)
{
    int rc = 0;
    if (s->nindex > 1) {
        uint8_t nid[ID_BYTES];
        rc = index_store(r, s->all, nid);
        for (size_t i = 0; rc == 0 && i < s->nindex; i++) {
            if (memcmp(nid, s->index_ids[i], ID_BYTES)) {
                char hex[OBJSTORE_ID_LEN + 1];
                id_to_hex(s->index_ids[i], hex);
                _cleanup_free_ char *key = xasprintf("index/%s", hex);
                rc = r->be->ops->del(r->be, key);
            }
        }
        /* We removed them ourselves (their entries now name the new one):
         * not a reason for the next refresh to start over. */
        pthread_mutex_lock(&r->ilock);
        size_t w = 0;
        for (size_t i = 0; i < r->niloaded; i++) {
            bool gone = false;
            for (size_t k = 0; k < s->nindex && !gone; k++)
                gone = !memcmp(r->iloaded[i], s->index_ids[k], ID_BYTES) && memcmp(nid, s->index_ids[k], ID_BYTES);
            if (!gone)
                memmove(r->iloaded[w++], r->iloaded[i], ID_BYTES);
        }
        r->niloaded = w;
        pthread_mutex_unlock(&r->ilock);
    }
    pack_stats_free(s);
    return rc;
}

void pack_stats_free(struct pack_stats *s)
{
    if (s->all) {
        index_obj_free(s->all);
        free(s->all);
        s->all = NULL;
    }
    free(s->index_ids);
    s->index_ids = NULL;
    s->nindex = 0;
}

void pack_writer_free(struct pack_writer *w)
{
    buf_free(&w->data);
    free(w->ids);
    free(w->locs);
    w->ids = NULL;
    w->locs = NULL;
    w->n = w->cap = 0;
}

/* ---- fetching blobs --------------------------------------------------- */

/* Ranged GET of one part; a pack gone (repacked by gc) refreshes the index
 * and tries the new location once. */
static int get_part(struct objstore *r, const uint8_t id[ID_BYTES], struct blob_loc *loc, bool digest,
                    struct buf *out)
{
    for (int attempt = 0;; attempt++) {
        _cleanup_free_ char *key = pack_key(loc->pack);
        out->len = 0;
        int rc = digest ? r->be->ops->get_range(r->be, key, loc->off, loc->dlen, out)
                        : r->be->ops->get_range(r->be, key, loc->off + loc->dlen, loc->slen, out);
        if (rc != -ENOENT || attempt)
            return rc;
        struct blob_loc nl;
        if ((rc = index_refresh(r, true)) < 0 || (rc = index_lookup(r, id, &nl)) < 0)
            return rc;
        if (!memcmp(nl.pack, loc->pack, ID_BYTES))
            return -ENOENT;
        *loc = nl;
    }
}

static int check_piece(struct objstore *r, const uint8_t id[ID_BYTES], const void *plain, size_t len)
{
    size_t nb = (len + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK;
    _cleanup_free_ uint8_t *d = xmalloc(nb ? nb * DIGEST_BYTES : 1);
    block_digests(plain, len, d);
    uint8_t got[ID_BYTES];
    piece_id(&r->keys, d, len, got);
    return memcmp(got, id, ID_BYTES) ? -EBADMSG : 0;
}

int blob_fetch(struct objstore *r, const uint8_t id[ID_BYTES], enum blob_type t, bool check,
               struct buf *plain, uint64_t *ret_fetched)
{
    struct blob_loc loc;
    int rc = index_lookup(r, id, &loc);
    if (rc < 0)
        return rc;
    if (loc.type != t)
        return -EBADMSG;
    struct buf stored = {};
    rc = get_part(r, id, &loc, false, &stored);
    if (rc == 0)
        rc = sealed_unpack(&r->keys, t == BLOB_PIECE ? SEALED_CHUNK : SEALED_NODE, id, stored.data,
                           stored.len, loc.plen, plain);
    if (rc == 0 && plain->len != loc.plen)
        rc = -EBADMSG;
    if (rc == 0 && t == BLOB_NODE) {
        uint8_t got[ID_BYTES];
        node_id(&r->keys, plain->data, plain->len, got);
        if (memcmp(got, id, ID_BYTES))
            rc = -EBADMSG;
    }
    if (rc == 0 && t == BLOB_PIECE && check)
        rc = check_piece(r, id, plain->data, plain->len);
    if (rc == 0 && ret_fetched)
        *ret_fetched = stored.len;
    buf_free(&stored);
    return rc;
}

int piece_fetch_into(struct objstore *r, const uint8_t id[ID_BYTES], void *dst, size_t plen,
                     uint64_t *ret_fetched)
{
    struct blob_loc loc;
    int rc = index_lookup(r, id, &loc);
    if (rc < 0)
        return rc;
    if (loc.type != BLOB_PIECE || loc.plen != plen)
        return -EBADMSG;
    struct buf stored = {};
    rc = get_part(r, id, &loc, false, &stored);
    if (rc == 0)
        rc = sealed_unpack_into(&r->keys, SEALED_CHUNK, id, stored.data, stored.len, dst, plen);
    if (rc == 0 && ret_fetched)
        *ret_fetched = stored.len;
    buf_free(&stored);
    return rc;
}

static int digests_fetch(struct objstore *r, const uint8_t id[ID_BYTES], struct buf *out)
{
    struct blob_loc loc;
    int rc = index_lookup(r, id, &loc);
    if (rc < 0)
        return rc;
    if (loc.type != BLOB_PIECE)
        return -EBADMSG;
    size_t want = (loc.plen + OBJSTORE_BLOCK - 1) / OBJSTORE_BLOCK * DIGEST_BYTES;
    struct buf stored = {};
    rc = get_part(r, id, &loc, true, &stored);
    if (rc == 0)
        rc = sealed_unpack(&r->keys, SEALED_DIGEST, id, stored.data, stored.len, want, out);
    if (rc == 0 && out->len != want)
        rc = -EBADMSG;
    if (rc == 0) {
        uint8_t got[ID_BYTES];
        piece_id(&r->keys, out->data, loc.plen, got);
        if (memcmp(got, id, ID_BYTES))
            rc = -EBADMSG;
    }
    buf_free(&stored);
    return rc;
}

/* ---- the cache -------------------------------------------------------- */

enum { KIND_PIECE = 1, KIND_NODE = 2, KIND_DIGESTS = 3 };

struct cache_ent {
    struct cache_ent *next;     /* bucket chain */
    uint8_t id[ID_BYTES];
    int kind;
    struct buf data;
    unsigned refs;
    bool dead;                  /* evicted while referenced */
    uint64_t tick;
};

static struct cache_ent **buckets(struct objstore *r)
{
    if (!r->cache)
        r->cache = xcalloc(CACHE_BUCKETS, sizeof(struct cache_ent *));
    return r->cache;
}

static void ent_free(struct cache_ent *e)
{
    buf_free(&e->data);
    free(e);
}

/* Drop the least recently used half when over budget (lock held). */
static void cache_trim(struct objstore *r)
{
    if (r->cache_bytes <= CACHE_MAX_BYTES && r->ncache <= CACHE_MAX_ENTRIES)
        return;
    struct cache_ent **b = buckets(r);
    uint64_t sum = 0, cnt = 0;
    for (size_t i = 0; i < CACHE_BUCKETS; i++)
        for (struct cache_ent *e = b[i]; e; e = e->next)
            sum += e->tick, cnt++;
    uint64_t cutoff = cnt ? sum / cnt : 0;  /* evict those older than the mean */
    for (size_t i = 0; i < CACHE_BUCKETS; i++)
        for (struct cache_ent **pp = &b[i]; *pp;) {
            struct cache_ent *e = *pp;
            if (e->tick <= cutoff) {
                *pp = e->next;
                r->ncache--;
                r->cache_bytes -= e->data.len;
                if (e->refs)
                    e->dead = true;
                else
                    ent_free(e);
            } else {
                pp = &e->next;
            }
        }
}

static struct cache_ent *cache_find(struct objstore *r, const uint8_t id[ID_BYTES], int kind)
{
    struct cache_ent **b = buckets(r);
    for (struct cache_ent *e = b[id_hash(id) % CACHE_BUCKETS]; e; e = e->next)
        if (e->kind == kind && !memcmp(e->id, id, ID_BYTES)) {
            e->refs++;
            e->tick = ++r->cache_tick;
            return e;
        }
    return NULL;
}

void cache_put(struct objstore *r, struct cache_ent *e)
{
    if (!e)
        return;
    pthread_mutex_lock(&r->clock);
    if (--e->refs == 0 && e->dead)
        ent_free(e);
    pthread_mutex_unlock(&r->clock);
}

static int cache_get(struct objstore *r, const uint8_t id[ID_BYTES], int kind, const uint8_t **ret,
                     size_t *ret_len, struct cache_ent **ret_ent)
{
    pthread_mutex_lock(&r->clock);
    struct cache_ent *e = cache_find(r, id, kind);
    pthread_mutex_unlock(&r->clock);
    if (!e) {
        struct buf data = {};
        int rc = kind == KIND_DIGESTS ? digests_fetch(r, id, &data)
                                      : blob_fetch(r, id, kind == KIND_PIECE ? BLOB_PIECE : BLOB_NODE,
                                                   false, &data, NULL);
        if (rc < 0) {
            buf_free(&data);
            return rc;
        }
        pthread_mutex_lock(&r->clock);
        e = cache_find(r, id, kind);    /* another thread was faster */
        if (e) {
            buf_free(&data);
        } else {
            e = xcalloc(1, sizeof *e);
            memcpy(e->id, id, ID_BYTES);
            e->kind = kind;
            e->data = data;
            e->refs = 1;
            e->tick = ++r->cache_tick;
            struct cache_ent **b = buckets(r);
            size_t h = id_hash(id) % CACHE_BUCKETS;
            e->next = b[h];
            b[h] = e;
            r->ncache++;
            r->cache_bytes += data.len;
            cache_trim(r);
        }
        pthread_mutex_unlock(&r->clock);
    }
    *ret = e->data.data;
    *ret_len = e->data.len;
    *ret_ent = e;
    return 0;
}

int digests_get(struct objstore *r, const uint8_t id[ID_BYTES], const uint8_t **ret, size_t *ret_len,
                struct cache_ent **ret_ent)
{
    return cache_get(r, id, KIND_DIGESTS, ret, ret_len, ret_ent);
}

int cached_blob(struct objstore *r, const uint8_t id[ID_BYTES], enum blob_type t, const uint8_t **ret,
                size_t *ret_len, struct cache_ent **ret_ent)
{
    return cache_get(r, id, t == BLOB_PIECE ? KIND_PIECE : KIND_NODE, ret, ret_len, ret_ent);
}

void cache_free(struct objstore *r)
{
    if (!r->cache)
        return;
    struct cache_ent **b = buckets(r);
    for (size_t i = 0; i < CACHE_BUCKETS; i++)
        while (b[i]) {
            struct cache_ent *e = b[i];
            b[i] = e->next;
            ent_free(e);
        }
    free(r->cache);
    r->cache = NULL;
    r->ncache = 0;
    r->cache_bytes = 0;
}

/* ---- the trash (gc.c moves packs there; exports take blobs back) ------- */

struct tlist {
    uint8_t (*ids)[ID_BYTES];
    size_t n, cap;
};

static int tlist_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct tlist *l = ud;
    uint8_t id[ID_BYTES];
    if (id_from_hex(key + strlen("trash/"), id) < 0)
        return 0;
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 16;
        l->ids = xrealloc(l->ids, l->cap * ID_BYTES);
    }
    memcpy(l->ids[l->n++], id, ID_BYTES);
    return 0;
}

int trash_load(struct objstore *r, const uint8_t pack[ID_BYTES], struct index_obj *ret)
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(pack, hex);
    _cleanup_free_ char *key = xasprintf("trash/%s", hex);
    struct buf stored = {}, plain = {};
    int rc = r->be->ops->get(r->be, key, INDEX_MAX_STORED, &stored);
    if (rc == -EFBIG)
        rc = -EBADMSG;
    if (rc == 0)
        rc = sealed_unpack(&r->keys, SEALED_INDEX, pack, stored.data, stored.len, (size_t)1 << 30, &plain);
    if (rc == 0)
        rc = index_decode(plain.data, plain.len, ret);
    if (rc == 0 && (ret->npacks != 1 || memcmp(ret->packs[0].pack, pack, ID_BYTES))) {
        index_obj_free(ret);
        rc = -EBADMSG;
    }
    buf_free(&stored);
    buf_free(&plain);
    return rc;
}

int trash_store(struct objstore *r, const struct index_pack *ip)
{
    struct index_obj x = { .npacks = 1, .packs = (struct index_pack *)ip };
    struct buf enc = {}, sealed = {};
    int rc = index_encode(&x, &enc);
    if (rc == 0)
        rc = sealed_pack(&r->keys, SEALED_INDEX, ip->pack, enc.data, enc.len, &sealed);
    if (rc == 0) {
        char hex[OBJSTORE_ID_LEN + 1];
        id_to_hex(ip->pack, hex);
        _cleanup_free_ char *key = xasprintf("trash/%s", hex);
        rc = r->be->ops->put(r->be, key, sealed.data, sealed.len);
    }
    buf_free(&enc);
    buf_free(&sealed);
    return rc;
}

int trash_reindex(struct objstore *r, uint8_t (*ids)[ID_BYTES], size_t n, size_t *ret_found)
{
    struct tlist l = {};
    size_t found = 0;
    int rc = r->be->ops->list(r->be, "trash/", tlist_cb, &l);
    if (n)
        qsort(ids, n, ID_BYTES, id_cmp);
    for (size_t t = 0; rc == 0 && t < l.n; t++) {
        struct index_obj x = {};
        rc = trash_load(r, l.ids[t], &x);
        if (rc == -ENOENT) {
            rc = 0;
            continue;
        }
        if (rc < 0)
            break;
        struct index_pack *ip = &x.packs[0], keep = { .ids = xcalloc(ip->n + 1, ID_BYTES),
                                                      .locs = xcalloc(ip->n + 1, sizeof *keep.locs) };
        memcpy(keep.pack, ip->pack, ID_BYTES);
        for (size_t k = 0; k < ip->n; k++)
            if (n && bsearch(ip->ids[k], ids, n, ID_BYTES, id_cmp)) {
                memcpy(keep.ids[keep.n], ip->ids[k], ID_BYTES);
                keep.locs[keep.n++] = ip->locs[k];
            }
        if (keep.n) {
            struct index_obj y = { .npacks = 1, .packs = &keep };
            rc = index_store(r, &y, NULL);
            found += keep.n;
        }
        free(keep.ids);
        free(keep.locs);
        index_obj_free(&x);
    }
    free(l.ids);
    if (ret_found)
        *ret_found = found;
    return rc;
}
