/* manifest.c: the manifest of one exported snapshot, its binary encoding,
 * and the manifest commands (list, show, resolve, delete).
 *
 * Encoding (little endian), then sealed (zstd + AES-256-GCM):
 *
 *   "AMBM" u32 version(2) u64 volume_size u32 chunk_size u64 created_ns
 *   u8 has_parent [32-byte parent id]
 *   str snapshot_uuid, str volume_name       (str = u32 length + bytes)
 *   u32 nlabels, nlabels × (str key, str value)
 *   u8 root_level, 32-byte map root id (all zero: no data)
 *   u64 data_bytes, u64 nentries             (for show; not trusted)
 *
 * The map itself is a tree of map nodes (map.c), so a manifest is a few
 * hundred bytes whatever the volume's size. Binary, not JSON: a
 * bounds-checked reader of fixed fields is shorter and safer than a JSON
 * parser. The decoder checks every length against what is left before
 * allocating.
 *
 * A manifest's id is HMAC-SHA256(mac key, "amber-manifest\0" || encoding):
 * keyed, so ids leak nothing, and checked on load, so a manifest cannot be
 * swapped for another. It is stored at manifests/<id>. */
#include <string.h>

#include "internal.h"

#define MF_MAGIC "AMBM"
#define MF_VERSION 2
#define MF_STR_MAX 4096
#define MF_LABELS_MAX 1024
#define MF_VOLUME_MAX (1ull << 56)
static const char mf_domain[] = "amber-manifest";   /* with its NUL */

void manifest_free(struct manifest *m)
{
    if (!m)
        return;
    free(m->snapshot_uuid);
    free(m->volume_name);
    for (size_t i = 0; i < m->nlabels; i++) {
        free(m->label_keys[i]);
        free(m->label_values[i]);
    }
    free(m->label_keys);
    free(m->label_values);
    memset(m, 0, sizeof *m);
}

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

static void put_str(struct buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    put_u32(b, (uint32_t)n);
    buf_append(b, s ? s : "", n);
}

int manifest_encode(const struct manifest *m, struct buf *out)
{
    if ((m->snapshot_uuid && strlen(m->snapshot_uuid) > MF_STR_MAX) ||
        (m->volume_name && strlen(m->volume_name) > MF_STR_MAX) || m->nlabels > MF_LABELS_MAX)
        return -EINVAL;
    for (size_t i = 0; i < m->nlabels; i++)
        if (strlen(m->label_keys[i]) > MF_STR_MAX || strlen(m->label_values[i]) > MF_STR_MAX)
            return -EINVAL;
    buf_append(out, MF_MAGIC, 4);
    put_u32(out, MF_VERSION);
    put_u64(out, m->volume_size);
    put_u32(out, m->chunk_size);
    put_u64(out, m->created_ns);
    uint8_t hp = m->has_parent;
    buf_append(out, &hp, 1);
    if (hp)
        buf_append(out, m->parent, ID_BYTES);
    put_str(out, m->snapshot_uuid);
    put_str(out, m->volume_name);
    put_u32(out, (uint32_t)m->nlabels);
    for (size_t i = 0; i < m->nlabels; i++) {
        put_str(out, m->label_keys[i]);
        put_str(out, m->label_values[i]);
    }
    uint8_t lv = (uint8_t)m->root_level;
    buf_append(out, &lv, 1);
    buf_append(out, m->root, ID_BYTES);
    put_u64(out, m->data_bytes);
    put_u64(out, m->nentries);
    return 0;
}

struct reader {
    const uint8_t *p;
    size_t left;
    bool bad;
};

static const uint8_t *take(struct reader *r, size_t n)
{
    if (r->bad || r->left < n) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p;
    r->p += n, r->left -= n;
    return p;
}

static uint32_t get_u32(struct reader *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}

static uint64_t get_u64(struct reader *r)
{
    uint64_t lo = get_u32(r);
    return lo | (uint64_t)get_u32(r) << 32;
}

static char *get_str(struct reader *r)
{
    uint32_t n = get_u32(r);
    if (n > MF_STR_MAX) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = take(r, n);
    if (!p || memchr(p, 0, n)) {
        r->bad = true;
        return NULL;
    }
    char *s = xmalloc(n + 1);
    memcpy(s, p, n);
    s[n] = 0;
    return s;
}

int manifest_decode(const void *data, size_t len, struct manifest *ret)
{
    struct reader r = { .p = data, .left = len };
    struct manifest m = {};
    const uint8_t *magic = take(&r, 4);
    if (!magic || memcmp(magic, MF_MAGIC, 4))
        return -EBADMSG;
    if (get_u32(&r) != MF_VERSION)
        return r.bad ? -EBADMSG : -EPROTONOSUPPORT;
    m.volume_size = get_u64(&r);
    m.chunk_size = get_u32(&r);
    m.created_ns = get_u64(&r);
    const uint8_t *hp = take(&r, 1);
    if (hp && *hp > 1)
        r.bad = true;
    if (hp && *hp == 1) {
        const uint8_t *pid = take(&r, ID_BYTES);
        if (pid) {
            m.has_parent = true;
            memcpy(m.parent, pid, ID_BYTES);
        }
    }
    m.snapshot_uuid = get_str(&r);
    m.volume_name = get_str(&r);
    uint32_t nl = get_u32(&r);
    if (r.bad || nl > MF_LABELS_MAX || m.chunk_size < OBJSTORE_CHUNK_MIN ||
        m.chunk_size > OBJSTORE_CHUNK_MAX || (m.chunk_size & (m.chunk_size - 1)) ||
        m.volume_size > MF_VOLUME_MAX)
        goto bad;
    m.label_keys = xcalloc(nl, sizeof(char *));
    m.label_values = xcalloc(nl, sizeof(char *));
    for (uint32_t i = 0; i < nl && !r.bad; i++, m.nlabels++) {
        m.label_keys[i] = get_str(&r);
        m.label_values[i] = get_str(&r);
    }
    const uint8_t *lv = take(&r, 1), *root = take(&r, ID_BYTES);
    m.data_bytes = get_u64(&r);
    m.nentries = get_u64(&r);
    if (r.bad || r.left || *lv != map_level_for(m.volume_size) || m.data_bytes > m.volume_size)
        goto bad;
    m.root_level = *lv;
    memcpy(m.root, root, ID_BYTES);
    *ret = m;
    return 0;
bad:
    manifest_free(&m);
    return -EBADMSG;
}

int manifest_store(struct objstore *r, const struct manifest *m, uint8_t ret_id[ID_BYTES])
{
    struct buf enc = {}, sealed = {};
    uint8_t id[ID_BYTES];
    char hex[OBJSTORE_ID_LEN + 1];
    int rc = manifest_encode(m, &enc);
    if (rc == 0) {
        id_hmac(&r->keys, mf_domain, sizeof mf_domain, enc.data, enc.len, id);
        rc = sealed_pack(&r->keys, SEALED_MANIFEST, id, enc.data, enc.len, &sealed);
    }
    if (rc == 0) {
        id_to_hex(id, hex);
        char *key = xasprintf("manifests/%s", hex);
        /* Packs first, then the manifest that names their blobs. */
        rc = backend_flush(r->be);
        if (rc == 0)
            rc = r->be->ops->put(r->be, key, sealed.data, sealed.len);
        if (rc == 0)
            rc = backend_flush(r->be);
        free(key);
    }
    if (rc == 0)
        memcpy(ret_id, id, ID_BYTES);
    buf_free(&enc);
    buf_free(&sealed);
    return rc;
}

int manifest_load(struct objstore *r, const uint8_t id[ID_BYTES], struct manifest *ret,
                  uint64_t *ret_stored)
{
    char hex[OBJSTORE_ID_LEN + 1];
    id_to_hex(id, hex);
    _cleanup_free_ char *key = xasprintf("manifests/%s", hex);
    struct buf stored = {}, plain = {};
    int rc = r->be->ops->get(r->be, key, MANIFEST_MAX_STORED, &stored);
    if (rc < 0)
        goto out;
    rc = sealed_unpack(&r->keys, SEALED_MANIFEST, id, stored.data, stored.len,
                       MANIFEST_MAX_STORED, &plain);
    if (rc < 0)
        goto out;
    uint8_t check[ID_BYTES];
    id_hmac(&r->keys, mf_domain, sizeof mf_domain, plain.data, plain.len, check);
    if (memcmp(check, id, ID_BYTES)) {
        rc = -EBADMSG;
        goto out;
    }
    rc = manifest_decode(plain.data, plain.len, ret);
    if (rc == 0 && ret_stored)
        *ret_stored = stored.len;
out:
    buf_free(&stored);
    buf_free(&plain);
    return rc;
}

struct resolve {
    const char *prefix;
    size_t plen;
    char found[OBJSTORE_ID_LEN + 1];
    unsigned matches;
};

static int resolve_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct resolve *rs = ud;
    const char *name = key + strlen("manifests/");
    if (strlen(name) != OBJSTORE_ID_LEN || strncmp(name, rs->prefix, rs->plen))
        return 0;
    if (rs->matches++ == 0)
        memcpy(rs->found, name, OBJSTORE_ID_LEN + 1);
    return 0;
}

int objstore_resolve_manifest(struct objstore *repo, const char *id_or_prefix,
                              char ret[OBJSTORE_ID_LEN + 1])
{
    size_t n = id_or_prefix ? strlen(id_or_prefix) : 0;
    if (n < 4 || n > OBJSTORE_ID_LEN || strspn(id_or_prefix, "0123456789abcdef") != n)
        return -EINVAL;
    if (n == OBJSTORE_ID_LEN) {
        _cleanup_free_ char *key = xasprintf("manifests/%s", id_or_prefix);
        int r = repo->be->ops->head(repo->be, key, NULL);
        if (r < 0)
            return r;
        memcpy(ret, id_or_prefix, OBJSTORE_ID_LEN + 1);
        return 0;
    }
    struct resolve rs = { .prefix = id_or_prefix, .plen = n };
    _cleanup_free_ char *lp = xasprintf("manifests/%s", id_or_prefix);
    int r = repo->be->ops->list(repo->be, lp, resolve_cb, &rs);
    if (r < 0)
        return r;
    if (rs.matches == 0)
        return -ENOENT;
    if (rs.matches > 1)
        return -ENOTUNIQ;
    memcpy(ret, rs.found, OBJSTORE_ID_LEN + 1);
    return 0;
}

int manifest_load_prefix(struct objstore *r, const char *prefix, struct manifest *ret,
                         uint8_t ret_id[ID_BYTES])
{
    char hex[OBJSTORE_ID_LEN + 1];
    uint8_t id[ID_BYTES];
    int rc = objstore_resolve_manifest(r, prefix, hex);
    if (rc < 0)
        return rc;
    id_from_hex(hex, id);
    rc = manifest_load(r, id, ret, NULL);
    if (rc == 0)
        memcpy(ret_id, id, ID_BYTES);
    return rc;
}

void objstore_manifest_info_free(struct objstore_manifest_info *m)
{
    if (!m)
        return;
    free(m->snapshot_uuid);
    free(m->volume_name);
    for (size_t i = 0; i < m->nlabels; i++) {
        free(m->label_keys[i]);
        free(m->label_values[i]);
    }
    free(m->label_keys);
    free(m->label_values);
    memset(m, 0, sizeof *m);
}

void objstore_manifest_infos_free(struct objstore_manifest_info *m, size_t n)
{
    if (!m)
        return;
    for (size_t i = 0; i < n; i++)
        objstore_manifest_info_free(&m[i]);
    free(m);
}

/* Move a loaded manifest's description into an info (steals strings). */
static void info_from(struct manifest *m, const uint8_t id[ID_BYTES], uint64_t stored,
                      struct objstore_manifest_info *info)
{
    memset(info, 0, sizeof *info);
    id_to_hex(id, info->id);
    if (m->has_parent)
        id_to_hex(m->parent, info->parent);
    info->snapshot_uuid = TAKE_PTR(m->snapshot_uuid);
    info->volume_name = TAKE_PTR(m->volume_name);
    if (!info->snapshot_uuid)
        info->snapshot_uuid = xstrdup("");
    if (!info->volume_name)
        info->volume_name = xstrdup("");
    info->label_keys = TAKE_PTR(m->label_keys);
    info->label_values = TAKE_PTR(m->label_values);
    info->nlabels = m->nlabels;
    m->nlabels = 0;
    info->volume_size = m->volume_size;
    info->created_ns = m->created_ns;
    info->chunk_size = m->chunk_size;
    info->chunks = (m->volume_size + m->chunk_size - 1) / m->chunk_size;
    info->data_chunks = m->nentries;
    info->data_bytes = m->data_bytes;
    info->stored_size = stored;
}

int objstore_show_manifest(struct objstore *repo, const char *id_or_prefix,
                           struct objstore_manifest_info *ret)
{
    char hex[OBJSTORE_ID_LEN + 1];
    uint8_t id[ID_BYTES];
    int r = objstore_resolve_manifest(repo, id_or_prefix, hex);
    if (r < 0)
        return r;
    id_from_hex(hex, id);
    struct manifest m = {};
    uint64_t stored = 0;
    r = manifest_load(repo, id, &m, &stored);
    if (r < 0)
        return r;
    info_from(&m, id, stored, ret);
    manifest_free(&m);
    return 0;
}

struct id_list {
    uint8_t (*ids)[ID_BYTES];
    size_t n, cap;
};

static int collect_cb(void *ud, const char *key, const struct objstore_stat *st)
{
    struct id_list *l = ud;
    uint8_t id[ID_BYTES];
    if (id_from_hex(key + strlen("manifests/"), id) < 0)
        return 0;   /* not ours: ignore */
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 64;
        l->ids = xrealloc(l->ids, l->cap * ID_BYTES);
    }
    memcpy(l->ids[l->n++], id, ID_BYTES);
    return 0;
}

static int info_cmp(const void *a, const void *b)
{
    const struct objstore_manifest_info *x = a, *y = b;
    if (x->created_ns != y->created_ns)
        return x->created_ns < y->created_ns ? -1 : 1;
    return strcmp(x->id, y->id);
}

int objstore_list_manifests(struct objstore *repo, struct objstore_manifest_info **ret, size_t *ret_n)
{
    struct id_list l = {};
    int r = repo->be->ops->list(repo->be, "manifests/", collect_cb, &l);
    if (r < 0) {
        free(l.ids);
        return r;
    }
    struct objstore_manifest_info *infos = xcalloc(l.n ? l.n : 1, sizeof *infos);
    size_t n = 0;
    for (size_t i = 0; i < l.n; i++) {
        struct manifest m = {};
        uint64_t stored = 0;
        r = manifest_load(repo, l.ids[i], &m, &stored);
        if (r == -ENOENT) {     /* deleted while we list */
            r = 0;
            continue;
        }
        if (r < 0)
            break;
        info_from(&m, l.ids[i], stored, &infos[n++]);
        manifest_free(&m);
    }
    free(l.ids);
    if (r < 0) {
        objstore_manifest_infos_free(infos, n);
        return r;
    }
    qsort(infos, n, sizeof *infos, info_cmp);
    *ret = infos;
    *ret_n = n;
    return 0;
}

int objstore_delete_manifest(struct objstore *repo, const char *id_or_prefix)
{
    char hex[OBJSTORE_ID_LEN + 1];
    int r = objstore_resolve_manifest(repo, id_or_prefix, hex);
    if (r < 0)
        return r;
    _cleanup_free_ char *key = xasprintf("manifests/%s", hex);
    return repo->be->ops->del(repo->be, key);
}
