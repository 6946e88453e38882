/* s3-xml.c: the few S3 XML replies we read (ListObjectsV2, the upload id
 * of a multipart upload, <Error><Code>), with a bounded scanner instead of
 * a full XML library.
 *
 * S3's replies are flat, machine-written documents: we look for known
 * elements by name, take their text, and decode the five predefined
 * entities and numeric references. Anything we do not expect where we need
 * a value (a missing </Key>, a nested element inside a value, an unknown
 * entity, a size that is not a number) makes the whole reply -EBADMSG: a
 * misbehaving server or proxy must give a clean error, never a crash or a
 * half-read listing that gc would act on. Every search is bounded by the
 * reply's length; the input need not be NUL-terminated. */
#include <string.h>
#include <time.h>

#include "internal.h"

#define LIST_MAX_ENTRIES 100000
#define VALUE_MAX 4096

/* Decode entity references of text[0..n) into a new string. NULL when the
 * text holds markup or an unknown entity. */
static char *decode(const char *text, size_t n)
{
    if (n > VALUE_MAX || memchr(text, '<', n) || memchr(text, 0, n))
        return NULL;
    char *out = xmalloc(n + 1), *o = out;
    for (size_t i = 0; i < n;) {
        if (text[i] != '&') {
            *o++ = text[i++];
            continue;
        }
        const char *semi = memchr(text + i, ';', MIN(n - i, (size_t)12));
        if (!semi)
            goto bad;
        size_t el = (size_t)(semi - (text + i)) + 1;
        static const struct { const char *name; char c; } ents[] = {
            { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' }, { "&apos;", '\'' },
        };
        bool done = false;
        for (size_t k = 0; k < ARRAY_SIZE(ents) && !done; k++)
            if (el == strlen(ents[k].name) && !memcmp(text + i, ents[k].name, el)) {
                *o++ = ents[k].c;
                done = true;
            }
        if (!done) {
            if (el < 4 || text[i + 1] != '#')
                goto bad;
            char num[16] = "";
            bool hex = text[i + 2] == 'x';
            size_t start = hex ? 3 : 2;
            if (el - start - 1 == 0 || el - start - 1 >= sizeof num)
                goto bad;
            memcpy(num, text + i + start, el - start - 1);
            char *end;
            unsigned long v = strtoul(num, &end, hex ? 16 : 10);
            if (*end || v == 0 || v > 0x7f)     /* our keys are ASCII */
                goto bad;
            *o++ = (char)v;
        }
        i += el;
    }
    *o = 0;
    return out;
bad:
    free(out);
    return NULL;
}

/* Find the element <tag>…</tag> in [p, end): sets the text span. */
static bool find_elem(const char *p, const char *end, const char *tag, const char **ret_text,
                      size_t *ret_len, const char **ret_after)
{
    size_t tl = strlen(tag);
    char open[64], close[64];
    if (tl + 3 >= sizeof open)
        return false;
    snprintf(open, sizeof open, "<%s>", tag);
    snprintf(close, sizeof close, "</%s>", tag);
    const char *o = memmem(p, (size_t)(end - p), open, tl + 2);
    if (!o)
        return false;
    const char *text = o + tl + 2;
    const char *c = memmem(text, (size_t)(end - text), close, tl + 3);
    if (!c)
        return false;
    *ret_text = text;
    *ret_len = (size_t)(c - text);
    if (ret_after)
        *ret_after = c + tl + 3;
    return true;
}

char *s3_xml_find(const char *xml, size_t len, const char *tag)
{
    const char *t;
    size_t n;
    if (!xml || !find_elem(xml, xml + len, tag, &t, &n, NULL))
        return NULL;
    return decode(t, n);
}

int s3_parse_iso8601(const char *s, int64_t *ret)
{
    struct tm tm = {};
    const char *end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
    if (!end)
        return -EINVAL;
    if (*end == '.') {
        end++;
        while (*end >= '0' && *end <= '9')
            end++;
    }
    if (strcmp(end, "Z") && strcmp(end, "+00:00"))
        return -EINVAL;
    time_t t = timegm(&tm);
    if (t == (time_t)-1)
        return -EINVAL;
    *ret = (int64_t)t;
    return 0;
}

void s3_list_page_free(struct s3_list_page *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++)
        free(p->entries[i].key);
    free(p->entries);
    free(p->next_token);
    memset(p, 0, sizeof *p);
}

int s3_xml_parse_list(const char *xml, size_t len, struct s3_list_page *ret)
{
    struct s3_list_page pg = {};
    const char *end = xml + len, *p = xml;
    if (!xml || !memmem(xml, len, "<ListBucketResult", 17))
        return -EBADMSG;
    size_t cap = 0;
    for (;;) {
        const char *ct, *after;
        size_t cn;
        if (!find_elem(p, end, "Contents", &ct, &cn, &after)) {
            /* An opening tag without its end is a truncated reply. */
            if (memmem(p, (size_t)(end - p), "<Contents>", 10))
                goto bad;
            break;
        }
        if (pg.n >= LIST_MAX_ENTRIES)
            goto bad;
        const char *ce = ct + cn, *t;
        size_t tn;
        struct s3_list_entry e = {};
        if (!find_elem(ct, ce, "Key", &t, &tn, NULL) || !(e.key = decode(t, tn)) || !*e.key)
            goto bad_entry;
        char *size = NULL, *mod = NULL;
        if (find_elem(ct, ce, "Size", &t, &tn, NULL))
            size = decode(t, tn);
        if (find_elem(ct, ce, "LastModified", &t, &tn, NULL))
            mod = decode(t, tn);
        int r = size && mod ? parse_u64(size, &e.size) : -EBADMSG;
        if (r == 0)
            r = s3_parse_iso8601(mod, &e.mtime);
        free(size);
        free(mod);
        if (r < 0)
            goto bad_entry;
        if (pg.n == cap) {
            cap = cap ? 2 * cap : 64;
            pg.entries = xrealloc(pg.entries, cap * sizeof *pg.entries);
        }
        pg.entries[pg.n++] = e;
        p = after;
        continue;
bad_entry:
        free(e.key);
        goto bad;
    }
    char *trunc = s3_xml_find(xml, len, "IsTruncated");
    if (!trunc || (strcmp(trunc, "true") && strcmp(trunc, "false"))) {
        free(trunc);
        goto bad;
    }
    pg.truncated = !strcmp(trunc, "true");
    free(trunc);
    if (pg.truncated) {
        pg.next_token = s3_xml_find(xml, len, "NextContinuationToken");
        if (!pg.next_token || !*pg.next_token)
            goto bad;
    }
    *ret = pg;
    return 0;
bad:
    s3_list_page_free(&pg);
    return -EBADMSG;
}
