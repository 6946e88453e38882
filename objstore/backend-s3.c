/* backend-s3.c: a repository under an S3 bucket prefix, with libcurl.
 *
 *   s3://BUCKET[/PREFIX][?endpoint=URL&region=R&style=path|virtual
 *                        &retries=N&timeout=SECONDS&profile=NAME
 *                        &multipart_threshold=BYTES&part_size=BYTES]
 *
 * Without an endpoint the store is AWS (https://s3.REGION.amazonaws.com,
 * virtual-hosted addressing); with one (MinIO, Ceph, s3rver…) addressing
 * defaults to path style. Requests are signed by libcurl
 * (CURLOPT_AWS_SIGV4); we only add x-amz-content-sha256, which S3 requires
 * and which must equal the hash curl signs. (We do not suppress curl's
 * "Expect: 100-continue" with an empty "Expect:" header: libcurl 7.88
 * would sign the removed header, and the server would refuse.) Query strings are written in
 * SigV4's canonical form (sorted, RFC 3986 escaped, "uploads="), because
 * this libcurl signs the query as it is given.
 *
 * Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and
 * AWS_SESSION_TOKEN), else from the shared credentials file
 * (AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile AWS_PROFILE,
 * the URL's profile, or "default"). They are never logged or put in errors.
 *
 * Every op is safe from many threads: each request uses its own easy handle,
 * and the handles share one connection and DNS cache (CURLSH) so workers
 * reuse kept-alive connections. Transient failures (connection refused or
 * reset, timeouts, HTTP 429 and 5xx) are retried with exponential backoff
 * and jitter; the last failure is mapped to errno: ECONNREFUSED,
 * EHOSTUNREACH, ETIMEDOUT, ECONNRESET, EIO (5xx), ENOENT (404), EACCES
 * (403), ENXIO (no such bucket), EBADMSG (a reply we cannot parse).
 * Objects above multipart_threshold (default 64 MiB) are sent as a
 * multipart upload of part_size parts (default 16 MiB), aborted on error. */
#include <ctype.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <openssl/sha.h>

#include "internal.h"

#define CONNECT_TIMEOUT_MS 10000
#define BACKOFF_BASE_MS 100
#define BACKOFF_MAX_MS 5000
#define XML_MAX (16u << 20)

struct s3_backend {
    struct objstore_backend base;
    char *bucket, *prefix;      /* prefix: "" or "a/b/" */
    char *base_url;             /* up to and including the bucket's "/" */
    char *bucket_url;           /* the bucket itself, for listings */
    char *region, *sigv4, *userpwd, *token_hdr;
    unsigned retries;
    long timeout_s;
    uint64_t multipart_threshold, part_size;
    CURLSH *share;
    pthread_mutex_t locks[CURL_LOCK_DATA_LAST];
};

struct reply {
    long status;
    struct buf body;
    size_t max;
    bool too_big;
    char *etag;
    int64_t mtime;
    uint64_t size;
};

static void reply_free(struct reply *r)
{
    buf_free(&r->body);
    free(r->etag);
    r->etag = NULL;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void share_lock(CURL *h, curl_lock_data d, curl_lock_access a, void *ud)
{
    struct s3_backend *s = ud;
    pthread_mutex_lock(&s->locks[d]);
}

static void share_unlock(CURL *h, curl_lock_data d, void *ud)
{
    struct s3_backend *s = ud;
    pthread_mutex_unlock(&s->locks[d]);
}

static size_t on_body(char *p, size_t sz, size_t n, void *ud)
{
    struct reply *r = ud;
    if (r->body.len + n > r->max) {
        r->too_big = true;
        return 0;
    }
    buf_append(&r->body, p, n);
    return n;
}

static size_t on_header(char *p, size_t sz, size_t n, void *ud)
{
    struct reply *r = ud;
    if (n > 5 && !strncasecmp(p, "etag:", 5)) {
        const char *v = p + 5;
        size_t l = n - 5;
        while (l && isspace((unsigned char)*v))
            v++, l--;
        while (l && isspace((unsigned char)v[l - 1]))
            l--;
        free(r->etag);
        r->etag = strndup(v, l);
    }
    return n;
}

static int map_curl(CURL *h, CURLcode cc, const struct reply *rep)
{
    long os = 0;
    switch (cc) {
    case CURLE_OK:
        return 0;
    case CURLE_COULDNT_CONNECT:
        curl_easy_getinfo(h, CURLINFO_OS_ERRNO, &os);
        if (os == ECONNREFUSED || os == EHOSTUNREACH || os == ENETUNREACH || os == ETIMEDOUT)
            return -(int)os;
        return -ECONNREFUSED;
    case CURLE_OPERATION_TIMEDOUT:
        return -ETIMEDOUT;
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return -EHOSTUNREACH;
    case CURLE_WRITE_ERROR:
        return rep->too_big ? -EFBIG : -EIO;
    case CURLE_OUT_OF_MEMORY:
        return -ENOMEM;
    case CURLE_GOT_NOTHING:
    case CURLE_SEND_ERROR:
    case CURLE_RECV_ERROR:
    case CURLE_PARTIAL_FILE:
        return -ECONNRESET;
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_PEER_FAILED_VERIFICATION:
    case CURLE_SSL_CACERT_BADFILE:
    case CURLE_SSL_CERTPROBLEM:
        return -EPROTO;
    case CURLE_URL_MALFORMAT:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static int map_status(const struct reply *rep)
{
    long st = rep->status;
    if (st >= 200 && st < 300)
        return 0;
    if (st == 404) {
        if (rep->body.len && memmem(rep->body.data, rep->body.len, "<Code>NoSuchBucket</Code>", 25))
            return -ENXIO;
        return -ENOENT;
    }
    if (st == 401 || st == 403)
        return -EACCES;
    if (st == 412)
        return -EEXIST;
    if (st == 400 || st == 411 || st == 416)
        return -EINVAL;
    if (st == 409)
        return -EBUSY;
    if (st == 429 || st >= 500)
        return -EIO;
    return -EPROTO;
}

static bool transient(int r, long status)
{
    return r == -ECONNREFUSED || r == -ETIMEDOUT || r == -ECONNRESET || r == -EHOSTUNREACH ||
           r == -ENETUNREACH || status == 429 || status >= 500;
}

static void backoff(unsigned attempt)
{
    uint64_t ms = MIN((uint64_t)BACKOFF_BASE_MS << MIN(attempt, 16u), (uint64_t)BACKOFF_MAX_MS);
    uint8_t j = 0;
    random_bytes(&j, 1);
    ms = ms / 2 + ms * j / 512;     /* 50–100 %: spread retries of many workers */
    struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

static void sha256_hex(const void *p, size_t n, char out[65])
{
    uint8_t h[SHA256_DIGEST_LENGTH];
    SHA256(p, n, h);
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < sizeof h; i++)
        out[2 * i] = hx[h[i] >> 4], out[2 * i + 1] = hx[h[i] & 15];
    out[64] = 0;
}

/* One request, retried. `key` is relative to the repository prefix ("" for
 * the bucket itself with a query); `query` is canonical or NULL. */
static int s3_request_range(struct s3_backend *s, const char *method, const char *key,
                            const char *query, const char *range, const void *body, size_t blen,
                            size_t max, struct reply *rep);

static int s3_request(struct s3_backend *s, const char *method, const char *key, const char *query,
                      const void *body, size_t blen, size_t max, struct reply *rep)
{
    return s3_request_range(s, method, key, query, NULL, body, blen, max, rep);
}

/* `range`: a "Range: bytes=a-b" header or NULL. */
static int s3_request_range(struct s3_backend *s, const char *method, const char *key,
                            const char *query, const char *range, const void *body, size_t blen,
                            size_t max, struct reply *rep)
{
    _cleanup_free_ char *url = xasprintf("%s%s%s%s%s", *key ? s->base_url : s->bucket_url,
                                         *key ? s->prefix : "", key,
                                         query ? "?" : "", query ? query : "");
    char hash[65], hdr[128];
    sha256_hex(body ? body : "", body ? blen : 0, hash);
    snprintf(hdr, sizeof hdr, "x-amz-content-sha256: %s", hash);
    int r = -EIO;
    for (unsigned attempt = 0;; attempt++) {
        CURL *h = curl_easy_init();
        if (!h)
            return -ENOMEM;
        struct curl_slist *hl = curl_slist_append(NULL, hdr);
        if (body)
            hl = curl_slist_append(hl, "Content-Type: application/octet-stream");
        if (s->token_hdr)
            hl = curl_slist_append(hl, s->token_hdr);
        if (range)
            hl = curl_slist_append(hl, range);
        rep->status = 0;
        rep->body.len = 0;
        rep->too_big = false;
        rep->max = max;
        curl_easy_setopt(h, CURLOPT_URL, url);
        curl_easy_setopt(h, CURLOPT_SHARE, s->share);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_AWS_SIGV4, s->sigv4);
        curl_easy_setopt(h, CURLOPT_USERPWD, s->userpwd);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
        curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)CONNECT_TIMEOUT_MS);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
        curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, s->timeout_s);
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
        curl_easy_setopt(h, CURLOPT_WRITEDATA, rep);
        curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
        curl_easy_setopt(h, CURLOPT_HEADERDATA, rep);
        curl_easy_setopt(h, CURLOPT_FILETIME, 1L);
        curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
        if (!strcmp(method, "HEAD")) {
            curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
        } else if (!strcmp(method, "GET")) {
            curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
        } else {
            curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
            if (body || strcmp(method, "DELETE")) {
                curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)(body ? blen : 0));
                curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
            }
        }
        CURLcode cc = curl_easy_perform(h);
        r = map_curl(h, cc, rep);
        if (r == 0) {
            curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &rep->status);
            curl_off_t ft = -1, cl = -1;
            curl_easy_getinfo(h, CURLINFO_FILETIME_T, &ft);
            curl_easy_getinfo(h, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
            rep->mtime = ft;
            rep->size = cl > 0 ? (uint64_t)cl : 0;
            r = map_status(rep);
        }
        curl_slist_free_all(hl);
        curl_easy_cleanup(h);
        if (r == 0 || !transient(r, rep->status) || attempt >= s->retries)
            return r;
        backoff(attempt);
    }
}

static int s3_get(struct objstore_backend *b, const char *key, size_t max, struct buf *out)
{
    struct s3_backend *s = (struct s3_backend *)b;
    struct reply rep = {};
    int r = s3_request(s, "GET", key, NULL, NULL, 0, max, &rep);
    if (r == 0)
        buf_append(out, rep.body.data, rep.body.len);
    reply_free(&rep);
    return r;
}

static int s3_get_range(struct objstore_backend *b, const char *key, uint64_t off, size_t len,
                        struct buf *out)
{
    struct s3_backend *s = (struct s3_backend *)b;
    if (len == 0)
        return 0;
    char range[96];
    snprintf(range, sizeof range, "Range: bytes=%llu-%llu", (unsigned long long)off,
             (unsigned long long)(off + len - 1));
    struct reply rep = {};
    /* Room for an error reply's XML too (a 404 is not a short read). */
    int r = s3_request_range(s, "GET", key, NULL, range, NULL, 0, len + 65536, &rep);
    /* 206 with exactly the bytes asked for; a 200 (range ignored) or a short
     * reply is refused rather than trusted. */
    if (r == 0 && (rep.status != 206 || rep.body.len != len))
        r = -EBADMSG;
    if (r == -EINVAL && rep.status == 416)
        r = -EBADMSG;
    if (r == -EFBIG)
        r = -EBADMSG;
    if (r == 0)
        buf_append(out, rep.body.data, rep.body.len);
    reply_free(&rep);
    return r;
}

static int s3_head(struct objstore_backend *b, const char *key, struct objstore_stat *st)
{
    struct s3_backend *s = (struct s3_backend *)b;
    struct reply rep = {};
    int r = s3_request(s, "HEAD", key, NULL, NULL, 0, 0, &rep);
    if (r == 0 && st) {
        st->size = rep.size;
        st->mtime = rep.mtime;
    }
    reply_free(&rep);
    return r;
}

static int s3_del(struct objstore_backend *b, const char *key)
{
    struct s3_backend *s = (struct s3_backend *)b;
    struct reply rep = {};
    int r = s3_request(s, "DELETE", key, NULL, NULL, 0, XML_MAX, &rep);
    reply_free(&rep);
    return r == -ENOENT ? 0 : r;
}

static char *escape(const char *v)
{
    char *e = curl_easy_escape(NULL, v, 0);
    char *r = xstrdup(e ? e : "");
    curl_free(e);
    return r;
}

static int multipart_put(struct s3_backend *s, const char *key, const uint8_t *data, size_t len)
{
    struct reply rep = {};
    int r = s3_request(s, "POST", key, "uploads=", "", 0, XML_MAX, &rep);
    if (r < 0) {
        reply_free(&rep);
        return r;
    }
    _cleanup_free_ char *upload = s3_xml_find((char *)rep.body.data, rep.body.len, "UploadId");
    reply_free(&rep);
    if (!upload || !*upload)
        return -EBADMSG;
    _cleanup_free_ char *uid = escape(upload);
    struct buf done = {};
    buf_printf(&done, "<CompleteMultipartUpload>");
    unsigned part = 1;
    for (size_t off = 0; off < len; off += (size_t)s->part_size, part++) {
        size_t n = (size_t)MIN(s->part_size, (uint64_t)(len - off));
        _cleanup_free_ char *q = xasprintf("partNumber=%u&uploadId=%s", part, uid);
        struct reply pr = {};
        r = s3_request(s, "PUT", key, q, data + off, n, XML_MAX, &pr);
        if (r == 0 && !pr.etag)
            r = -EBADMSG;
        if (r == 0)
            buf_printf(&done, "<Part><PartNumber>%u</PartNumber><ETag>%s</ETag></Part>", part, pr.etag);
        reply_free(&pr);
        if (r < 0)
            break;
    }
    if (r == 0) {
        buf_printf(&done, "</CompleteMultipartUpload>");
        _cleanup_free_ char *q = xasprintf("uploadId=%s", uid);
        r = s3_request(s, "POST", key, q, done.data, done.len, XML_MAX, &rep);
        /* S3 may report a failed completion inside a 200 reply. */
        if (r == 0 && memmem(rep.body.data, rep.body.len, "<Error>", 7))
            r = -EIO;
        reply_free(&rep);
    }
    if (r < 0) {
        _cleanup_free_ char *q = xasprintf("uploadId=%s", uid);
        s3_request(s, "DELETE", key, q, NULL, 0, XML_MAX, &rep);
        reply_free(&rep);
    }
    buf_free(&done);
    return r;
}

static int s3_put(struct objstore_backend *b, const char *key, const void *data, size_t len)
{
    struct s3_backend *s = (struct s3_backend *)b;
    if (len > s->multipart_threshold)
        return multipart_put(s, key, data, len);
    struct reply rep = {};
    int r = s3_request(s, "PUT", key, NULL, data, len, XML_MAX, &rep);
    reply_free(&rep);
    return r;
}

static int s3_put_if_absent(struct objstore_backend *b, const char *key, const void *data, size_t len)
{
    /* A HEAD then a PUT: not atomic, but used only by init, where two
     * racing inits of one URL are an operator's mistake. */
    int r = s3_head(b, key, NULL);
    if (r == 0)
        return -EEXIST;
    if (r != -ENOENT)
        return r;
    return s3_put(b, key, data, len);
}

static int s3_list(struct objstore_backend *b, const char *prefix,
                   int (*cb)(void *ud, const char *key, const struct objstore_stat *st), void *ud)
{
    struct s3_backend *s = (struct s3_backend *)b;
    _cleanup_free_ char *full = xasprintf("%s%s", s->prefix, prefix);
    _cleanup_free_ char *pfx = escape(full);
    _cleanup_free_ char *token = NULL;
    size_t plen = strlen(s->prefix);
    for (;;) {
        _cleanup_free_ char *tok = token ? escape(token) : NULL;
        _cleanup_free_ char *q = xasprintf("%s%s%slist-type=2&prefix=%s", tok ? "continuation-token=" : "",
                                           tok ? tok : "", tok ? "&" : "", pfx);
        struct reply rep = {};
        int r = s3_request(s, "GET", "", q, NULL, 0, XML_MAX, &rep);
        struct s3_list_page pg = {};
        if (r == 0)
            r = s3_xml_parse_list((char *)rep.body.data, rep.body.len, &pg);
        reply_free(&rep);
        for (size_t i = 0; r == 0 && i < pg.n; i++) {
            const char *k = pg.entries[i].key;
            if (strncmp(k, s->prefix, plen))
                continue;   /* the server ignored our prefix: not ours */
            struct objstore_stat st = { .size = pg.entries[i].size, .mtime = pg.entries[i].mtime };
            r = cb(ud, k + plen, &st);
        }
        free(token);
        token = pg.truncated ? TAKE_PTR(pg.next_token) : NULL;
        s3_list_page_free(&pg);
        if (r != 0 || !token)
            return r;
    }
}

static void s3_free(struct objstore_backend *b)
{
    struct s3_backend *s = (struct s3_backend *)b;
    if (!s)
        return;
    if (s->share)
        curl_share_cleanup(s->share);
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_destroy(&s->locks[i]);
    free(s->bucket);
    free(s->prefix);
    free(s->base_url);
    free(s->bucket_url);
    free(s->region);
    free(s->sigv4);
    if (s->userpwd) {
        memset(s->userpwd, 0, strlen(s->userpwd));
        free(s->userpwd);
    }
    free(s->token_hdr);
    free(s);
}

static const struct objstore_backend_ops s3_ops = {
    .name = "s3",
    .get = s3_get,
    .get_range = s3_get_range,
    .put = s3_put,
    .put_if_absent = s3_put_if_absent,
    .head = s3_head,
    .del = s3_del,
    .list = s3_list,
    .free = s3_free,
};

int backend_s3_open(const char *rest, struct objstore_backend **ret, char **ret_err)
{
    struct s3_config cfg = {};
    int r = s3_config_parse(rest, &cfg, ret_err);
    if (r < 0)
        return r;
    pthread_once(&curl_once, curl_init_once);
    struct s3_backend *s = xcalloc(1, sizeof *s);
    s->base.ops = &s3_ops;
    for (int i = 0; i < CURL_LOCK_DATA_LAST; i++)
        pthread_mutex_init(&s->locks[i], NULL);
    s->bucket = TAKE_PTR(cfg.bucket);
    s->prefix = TAKE_PTR(cfg.prefix);
    s->region = TAKE_PTR(cfg.region);
    /* Path style lists at "/bucket", not "/bucket/": both are valid S3, and
     * some servers (s3rver) only sign the first. */
    if (cfg.path_style)
        s->bucket_url = xasprintf("%s://%s/%s", cfg.scheme, cfg.hostport, s->bucket);
    else
        s->bucket_url = xasprintf("%s://%s.%s/", cfg.scheme, s->bucket, cfg.hostport);
    s->base_url = cfg.path_style ? xasprintf("%s/", s->bucket_url) : xstrdup(s->bucket_url);
    s->sigv4 = xasprintf("aws:amz:%s:s3", s->region);
    s->userpwd = xasprintf("%s:%s", cfg.access_key, cfg.secret_key);
    if (cfg.session_token)
        s->token_hdr = xasprintf("x-amz-security-token: %s", cfg.session_token);
    s->retries = cfg.retries;
    s->timeout_s = (long)cfg.timeout_s;
    s->multipart_threshold = cfg.multipart_threshold;
    s->part_size = cfg.part_size;
    s3_config_free(&cfg);
    s->share = curl_share_init();
    if (!s->share) {
        s3_free(&s->base);
        return -ENOMEM;
    }
    curl_share_setopt(s->share, CURLSHOPT_LOCKFUNC, share_lock);
    curl_share_setopt(s->share, CURLSHOPT_UNLOCKFUNC, share_unlock);
    curl_share_setopt(s->share, CURLSHOPT_USERDATA, s);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_DNS);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_CONNECT);
    curl_share_setopt(s->share, CURLSHOPT_SHARE, CURL_LOCK_DATA_SSL_SESSION);
    *ret = &s->base;
    return 0;
}
