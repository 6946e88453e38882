/* util.c: parsing, formatting, time, names, files and buffers. */
#include <ctype.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <uuid/uuid.h>

#include "amber/util.h"

static void oom(void)
{
    static const char m[] = "amber: out of memory\n";
    ssize_t w = write(STDERR_FILENO, m, sizeof m - 1);
    (void)w;
    abort();
}

void *xmalloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) oom(); return p; }
void *xcalloc(size_t n, size_t m) { void *p = calloc(n ? n : 1, m ? m : 1); if (!p) oom(); return p; }
void *xrealloc(void *p, size_t n) { p = realloc(p, n ? n : 1); if (!p) oom(); return p; }
char *xstrdup(const char *s) { char *p = strdup(s); if (!p) oom(); return p; }

char *xasprintf(const char *fmt, ...)
{
    char *s;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&s, fmt, ap) < 0)
        oom();
    va_end(ap);
    return s;
}

int parse_u64(const char *s, uint64_t *ret)
{
    if (!s || !*s || !isdigit((unsigned char)*s))
        return -EINVAL;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end)
        return -EINVAL;
    *ret = v;
    return 0;
}

int parse_i64(const char *s, int64_t *ret)
{
    if (!s || !*s)
        return -EINVAL;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    if (*end || end == s)
        return -EINVAL;
    *ret = v;
    return 0;
}

int parse_size(const char *s, uint64_t *ret)
{
    if (!s || !isdigit((unsigned char)*s))
        return -EINVAL;
    char *end;
    errno = 0;
    unsigned long long whole = strtoull(s, &end, 10);
    if (errno == ERANGE)
        return -ERANGE;
    /* Optional fraction, kept exact in millionths. */
    uint64_t frac = 0, fscale = 1;
    if (*end == '.') {
        end++;
        if (!isdigit((unsigned char)*end))
            return -EINVAL;
        while (isdigit((unsigned char)*end)) {
            if (fscale < 1000000) {
                frac = frac * 10 + (uint64_t)(*end - '0');
                fscale *= 10;
            }
            end++;
        }
    }
    uint64_t mult = 1;
    switch (toupper((unsigned char)*end)) {
    case 0: break;
    case 'B': mult = 1; end++; break;
    case 'K': mult = 1ULL << 10; end++; break;
    case 'M': mult = 1ULL << 20; end++; break;
    case 'G': mult = 1ULL << 30; end++; break;
    case 'T': mult = 1ULL << 40; end++; break;
    case 'P': mult = 1ULL << 50; end++; break;
    default: return -EINVAL;
    }
    if (mult > 1) {
        if (*end == 'i')
            end++;
        if (*end == 'B' || *end == 'b')
            end++;
    }
    if (*end)
        return -EINVAL;
    if (frac && mult == 1)
        return -EINVAL;
    if (whole > UINT64_MAX / mult)
        return -ERANGE;
    uint64_t v = whole * mult;
    uint64_t f = frac * mult / fscale;
    if (v > UINT64_MAX - f)
        return -ERANGE;
    *ret = v + f;
    return 0;
}

int parse_duration_ms(const char *s, uint64_t *ret)
{
    if (!s || !*s)
        return -EINVAL;
    uint64_t total = 0;
    while (*s) {
        if (!isdigit((unsigned char)*s))
            return -EINVAL;
        char *end;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
            return -ERANGE;
        uint64_t mult;
        if (strncmp(end, "ms", 2) == 0) { mult = 1; end += 2; }
        else if (*end == 's') { mult = 1000; end++; }
        else if (*end == 'm') { mult = 60000; end++; }
        else if (*end == 'h') { mult = 3600000; end++; }
        else if (*end == 'd') { mult = 86400000; end++; }
        else if (*end == 'w') { mult = 7 * 86400000ULL; end++; }
        else if (*end == 0 && total == 0) { mult = 1000; }  /* bare number: seconds */
        else return -EINVAL;
        if (v > (UINT64_MAX - total) / mult)
            return -ERANGE;
        total += v * mult;
        s = end;
    }
    *ret = total;
    return 0;
}

char *format_size(uint64_t n, char *buf, size_t len)
{
    static const char *const u[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
    size_t i = 0;
    double d = (double)n;
    while (d >= 1024 && i + 1 < ARRAY_SIZE(u)) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)n);
    else
        snprintf(buf, len, "%.1f %s", d, u[i]);
    return buf;
}

uint64_t now_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t now_real_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

char *format_time_ns(uint64_t ns, char *buf, size_t len)
{
    time_t t = (time_t)(ns / 1000000000ULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    char tmp[32];
    strftime(tmp, sizeof tmp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf, len, "%s.%03uZ", tmp, (unsigned)((ns / 1000000ULL) % 1000));
    return buf;
}

int name_validate(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 63 || s[0] == '.' || s[0] == '-')
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)s[i]) && s[i] != '.' && s[i] != '_' && s[i] != '-')
            return -EINVAL;
    return 0;
}

void uuid_new(char out[37])
{
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, out);
}

bool uuid_is_valid(const char *s)
{
    uuid_t u;
    return s && strlen(s) == 36 && uuid_parse(s, u) == 0;
}

const char *errno_name(int e)
{
    switch (e) {
#define E(x) case x: return #x
    E(EPERM); E(ENOENT); E(ESRCH); E(EINTR); E(EIO); E(ENXIO); E(E2BIG);
    E(EBADF); E(EAGAIN); E(ENOMEM); E(EACCES); E(EFAULT); E(EBUSY);
    E(EEXIST); E(EXDEV); E(ENODEV); E(ENOTDIR); E(EISDIR); E(EINVAL);
    E(ENFILE); E(EMFILE); E(ENOTTY); E(EFBIG); E(ENOSPC); E(ESPIPE);
    E(EROFS); E(EPIPE); E(ERANGE); E(EDEADLK); E(ENAMETOOLONG); E(ENOSYS);
    E(ENOTEMPTY); E(ELOOP); E(ENODATA); E(ETIME); E(EPROTO); E(EBADMSG);
    E(EOVERFLOW); E(EILSEQ); E(ENOTSOCK); E(EMSGSIZE); E(EPROTONOSUPPORT);
    E(EOPNOTSUPP); E(EADDRINUSE); E(EADDRNOTAVAIL); E(ENETDOWN);
    E(ENETUNREACH); E(ECONNABORTED); E(ECONNRESET); E(ENOBUFS); E(EISCONN);
    E(ENOTCONN); E(ETIMEDOUT); E(ECONNREFUSED); E(EHOSTUNREACH); E(EALREADY);
    E(EINPROGRESS); E(ESTALE); E(EDQUOT); E(ECANCELED); E(EKEYREJECTED);
    E(EREMOTEIO); E(ENOMEDIUM); E(EMEDIUMTYPE); E(ENOKEY); E(EKEYEXPIRED);
    E(EUCLEAN); E(ENOTRECOVERABLE); E(EOWNERDEAD); E(ENOLCK);
#undef E
    default: return NULL;
    }
}

int read_file_all(const char *path, size_t max, char **ret, size_t *ret_len)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct buf b = {0};
    for (;;) {
        buf_reserve(&b, 65536);
        ssize_t r = read(fd, b.data + b.len, b.cap - b.len - 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            int e = -errno;
            buf_free(&b);
            return e;
        }
        if (r == 0)
            break;
        b.len += (size_t)r;
        if (b.len > max) {
            buf_free(&b);
            return -EFBIG;
        }
    }
    buf_reserve(&b, 1);
    b.data[b.len] = 0;
    *ret = (char *)b.data;
    if (ret_len)
        *ret_len = b.len;
    return 0;
}

static void fsync_parent(const char *path)
{
    _cleanup_free_ char *dir = xstrdup(path);
    char *slash = strrchr(dir, '/');
    if (!slash)
        return;
    *(slash == dir ? slash + 1 : slash) = 0;
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        (void)fsync(dfd);
}

int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode)
{
    _cleanup_free_ char *tmp = xasprintf("%s.tmp.%d", path, (int)getpid());
    int r = 0;
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0)
        return -errno;
    const uint8_t *p = data;
    while (len) {
        ssize_t w = write(fd, p, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto fail;
        }
        p += w;
        len -= (size_t)w;
    }
    if (fsync(fd) < 0 || rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    fsync_parent(path);
    return 0;
fail:
    unlink(tmp);
    return r;
}

int mkdir_p(const char *path, mode_t mode)
{
    _cleanup_free_ char *p = xstrdup(path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = 0;
        if (mkdir(p, mode) < 0 && errno != EEXIST)
            return -errno;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        return -errno;
    return 0;
}

void buf_reserve(struct buf *b, size_t extra)
{
    if (b->len + extra <= b->cap)
        return;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + extra)
        cap *= 2;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
}

void buf_append(struct buf *b, const void *p, size_t n)
{
    buf_reserve(b, n + 1);
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
}

void buf_printf(struct buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    va_list ap2;
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        va_end(ap2);
        return;
    }
    buf_reserve(b, (size_t)n + 1);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}

void buf_free(struct buf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void buf_json_str(struct buf *b, const char *s)
{
    buf_append(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': buf_append(b, "\\\"", 2); break;
        case '\\': buf_append(b, "\\\\", 2); break;
        case '\n': buf_append(b, "\\n", 2); break;
        case '\r': buf_append(b, "\\r", 2); break;
        case '\t': buf_append(b, "\\t", 2); break;
        default:
            if (*p < 0x20)
                buf_printf(b, "\\u%04x", *p);
            else
                buf_append(b, p, 1);
        }
    }
    buf_append(b, "\"", 1);
}
