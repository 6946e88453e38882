/* s3-config.c: parse an s3:// repository URL and find the credentials.
 *
 * The URL is checked strictly, because a typo should fail at once with a
 * sentence saying what is wrong rather than as a confusing 403 later:
 * bucket names follow S3's rules (3–63 of [a-z0-9.-], starting and ending
 * with a letter or digit), the prefix is made of [A-Za-z0-9._/-] without
 * "..", every query parameter must be known, the endpoint must be an
 * http(s) URL with a host and nothing after it (parsed by libcurl's URL
 * API, not by hand), numbers are numbers. Error messages quote the URL's
 * parts but never a credential. */
#include <ctype.h>
#include <stdarg.h>
#include <string.h>

#include <curl/curl.h>

#include "internal.h"

#define DEFAULT_RETRIES 4
#define DEFAULT_TIMEOUT_S 30
#define MIN_PART (5ull << 20)
#define DEFAULT_PART (16ull << 20)
#define DEFAULT_MULTIPART (64ull << 20)

static int fail(char **ret_err, int r, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char **ret_err, int r, const char *fmt, ...)
{
    if (ret_err) {
        va_list ap;
        va_start(ap, fmt);
        char *s;
        if (vasprintf(&s, fmt, ap) < 0)
            s = NULL;
        va_end(ap);
        free(*ret_err);
        *ret_err = s;
    }
    return r;
}

void s3_config_free(struct s3_config *c)
{
    if (!c)
        return;
    free(c->bucket);
    free(c->prefix);
    free(c->scheme);
    free(c->hostport);
    free(c->region);
    free(c->access_key);
    if (c->secret_key) {
        memset(c->secret_key, 0, strlen(c->secret_key));
        free(c->secret_key);
    }
    free(c->session_token);
    memset(c, 0, sizeof *c);
}

static bool bucket_valid(const char *b)
{
    size_t n = strlen(b);
    if (n < 3 || n > 63 || !isalnum((unsigned char)b[0]) || !isalnum((unsigned char)b[n - 1]))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!(islower((unsigned char)b[i]) || isdigit((unsigned char)b[i]) || b[i] == '.' || b[i] == '-'))
            return false;
    return true;
}

static bool region_valid(const char *r)
{
    size_t n = strlen(r);
    return n > 0 && n < 64 && strspn(r, "abcdefghijklmnopqrstuvwxyz0123456789-") == n;
}

static int parse_endpoint(const char *ep, struct s3_config *c, char **ret_err)
{
    CURLU *u = curl_url();
    if (!u)
        return -ENOMEM;
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *query = NULL, *user = NULL;
    int r = 0;
    if (curl_url_set(u, CURLUPART_URL, ep, 0) != CURLUE_OK) {
        r = fail(ret_err, -EINVAL, "endpoint \"%s\" is not a valid URL", ep);
        goto out;
    }
    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0);
    curl_url_get(u, CURLUPART_HOST, &host, 0);
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    curl_url_get(u, CURLUPART_PATH, &path, 0);
    curl_url_get(u, CURLUPART_QUERY, &query, 0);
    curl_url_get(u, CURLUPART_USER, &user, 0);
    if (!scheme || (strcmp(scheme, "http") && strcmp(scheme, "https"))) {
        r = fail(ret_err, -EINVAL, "endpoint \"%s\" must be an http:// or https:// URL", ep);
        goto out;
    }
    if (!host || !*host || (path && strcmp(path, "/")) || query || user) {
        r = fail(ret_err, -EINVAL, "endpoint \"%s\" must be scheme://host[:port] with nothing after it", ep);
        goto out;
    }
    c->scheme = xstrdup(scheme);
    c->hostport = port ? xasprintf("%s:%s", host, port) : xstrdup(host);
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(query);
    curl_free(user);
    curl_url_cleanup(u);
    return r;
}

/* Read one profile of an AWS shared credentials file (INI). */
static int creds_from_file(const char *path, const char *profile, struct s3_config *c)
{
    _cleanup_free_ char *data = NULL;
    size_t len;
    int r = read_file_all(path, 1 << 20, &data, &len);
    if (r < 0)
        return r;
    bool in = false;
    for (char *save = NULL, *l = strtok_r(data, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        while (isspace((unsigned char)*l))
            l++;
        size_t n = strlen(l);
        while (n && isspace((unsigned char)l[n - 1]))
            l[--n] = 0;
        if (*l == '#' || *l == ';' || !*l)
            continue;
        if (*l == '[') {
            in = n >= 2 && l[n - 1] == ']' && n - 2 == strlen(profile) && !strncmp(l + 1, profile, n - 2);
            continue;
        }
        char *eq = strchr(l, '=');
        if (!in || !eq)
            continue;
        char *k = l, *v = eq + 1;
        char *ke = eq;
        while (ke > k && isspace((unsigned char)ke[-1]))
            ke--;
        *ke = 0;
        while (isspace((unsigned char)*v))
            v++;
        char **dst = !strcmp(k, "aws_access_key_id") ? &c->access_key
                   : !strcmp(k, "aws_secret_access_key") ? &c->secret_key
                   : !strcmp(k, "aws_session_token") ? &c->session_token : NULL;
        if (dst && *v) {
            free(*dst);
            *dst = xstrdup(v);
        }
    }
    memset(data, 0, len);
    return c->access_key && c->secret_key ? 0 : -ENOKEY;
}

static int find_credentials(struct s3_config *c, const char *profile, char **ret_err)
{
    const char *id = getenv("AWS_ACCESS_KEY_ID"), *secret = getenv("AWS_SECRET_ACCESS_KEY");
    if (id && *id && secret && *secret) {
        c->access_key = xstrdup(id);
        c->secret_key = xstrdup(secret);
        const char *tok = getenv("AWS_SESSION_TOKEN");
        if (tok && *tok)
            c->session_token = xstrdup(tok);
        return 0;
    }
    const char *file = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
    _cleanup_free_ char *path = file && *file ? xstrdup(file)
                               : home && *home ? xasprintf("%s/.aws/credentials", home) : NULL;
    if (!profile || !*profile)
        profile = getenv("AWS_PROFILE");
    if (!profile || !*profile)
        profile = "default";
    if (path && creds_from_file(path, profile, c) == 0)
        return 0;
    return fail(ret_err, -ENOKEY,
                "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or profile \"%s\" in %s",
                profile, path ? path : "~/.aws/credentials");
}

int s3_config_parse(const char *rest, struct s3_config *ret, char **ret_err)
{
    struct s3_config c = { .retries = DEFAULT_RETRIES, .timeout_s = DEFAULT_TIMEOUT_S,
                           .multipart_threshold = DEFAULT_MULTIPART, .part_size = DEFAULT_PART };
    _cleanup_free_ char *s = xstrdup(rest ? rest : "");
    _cleanup_free_ char *endpoint = NULL, *profile = NULL;
    const char *style = NULL;
    int r;
    char *q = strchr(s, '?');
    if (q)
        *q++ = 0;
    char *slash = strchr(s, '/');
    if (slash)
        *slash++ = 0;
    if (!bucket_valid(s)) {
        r = fail(ret_err, -EINVAL, "s3 URL: \"%s\" is not a valid bucket name (3-63 of a-z 0-9 . -)", s);
        goto bad;
    }
    c.bucket = xstrdup(s);
    /* The prefix: trimmed of slashes, and a '/' appended when not empty. */
    const char *p = slash ? slash : "";
    while (*p == '/')
        p++;
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/')
        pl--;
    if (strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._/-") < pl ||
        strstr(p, "..") || strstr(p, "//") || pl > 512) {
        r = fail(ret_err, -EINVAL, "s3 URL: prefix \"%.*s\" may only hold A-Z a-z 0-9 . _ - / (no \"..\" or \"//\")",
                 (int)MIN(pl, (size_t)512), p);
        goto bad;
    }
    c.prefix = pl ? xasprintf("%.*s/", (int)pl, p) : xstrdup("");

    for (char *save = NULL, *kv = q ? strtok_r(q, "&", &save) : NULL; kv; kv = strtok_r(NULL, "&", &save)) {
        char *v = strchr(kv, '=');
        if (!v) {
            r = fail(ret_err, -EINVAL, "s3 URL: parameter \"%s\" has no value", kv);
            goto bad;
        }
        *v++ = 0;
        uint64_t num = 0;
        bool numeric = !strcmp(kv, "retries") || !strcmp(kv, "timeout") ||
                       !strcmp(kv, "multipart_threshold") || !strcmp(kv, "part_size");
        if (numeric && (parse_size(v, &num) < 0 || (strcmp(kv, "retries") && num == 0))) {
            r = fail(ret_err, -EINVAL, "s3 URL: %s=\"%s\" is not a valid number", kv, v);
            goto bad;
        }
        if (!strcmp(kv, "endpoint")) {
            free(endpoint);
            endpoint = xstrdup(v);
        } else if (!strcmp(kv, "region")) {
            if (!region_valid(v)) {
                r = fail(ret_err, -EINVAL, "s3 URL: region \"%s\" is not valid", v);
                goto bad;
            }
            free(c.region);
            c.region = xstrdup(v);
        } else if (!strcmp(kv, "style")) {
            if (strcmp(v, "path") && strcmp(v, "virtual")) {
                r = fail(ret_err, -EINVAL, "s3 URL: style must be \"path\" or \"virtual\", not \"%s\"", v);
                goto bad;
            }
            style = strcmp(v, "path") ? "virtual" : "path";
        } else if (!strcmp(kv, "profile")) {
            free(profile);
            profile = xstrdup(v);
        } else if (!strcmp(kv, "retries")) {
            c.retries = (unsigned)MIN(num, 20u);
        } else if (!strcmp(kv, "timeout")) {
            c.timeout_s = MIN(num, 3600u);
        } else if (!strcmp(kv, "multipart_threshold")) {
            c.multipart_threshold = num;
        } else if (!strcmp(kv, "part_size")) {
            if (num < MIN_PART || num > (5ull << 30)) {
                r = fail(ret_err, -EINVAL, "s3 URL: part_size must be between 5 MiB and 5 GiB");
                goto bad;
            }
            c.part_size = num;
        } else {
            r = fail(ret_err, -EINVAL,
                     "s3 URL: unknown parameter \"%s\" (known: endpoint, region, style, retries, timeout, "
                     "profile, multipart_threshold, part_size)", kv);
            goto bad;
        }
    }
    if (!c.region)
        c.region = xstrdup("us-east-1");
    if (endpoint) {
        if ((r = parse_endpoint(endpoint, &c, ret_err)) < 0)
            goto bad;
        c.path_style = !style || !strcmp(style, "path");
    } else {
        c.scheme = xstrdup("https");
        c.hostport = xasprintf("s3.%s.amazonaws.com", c.region);
        c.path_style = style && !strcmp(style, "path");
    }
    if (!c.path_style && strchr(c.bucket, '.') && !strcmp(c.scheme, "https")) {
        r = fail(ret_err, -EINVAL, "s3 URL: bucket \"%s\" has dots, which break TLS with virtual-hosted "
                 "addressing: use style=path", c.bucket);
        goto bad;
    }
    if ((r = find_credentials(&c, profile, ret_err)) < 0)
        goto bad;
    *ret = c;
    return 0;
bad:
    s3_config_free(&c);
    return r;
}
