/* util.h: small helpers shared by every component: cleanup attributes,
 * ownership transfer, checked parsing, sizes, time, strings. */
#ifndef AMBER_UTIL_H
#define AMBER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <errno.h>
#include <sys/types.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static inline void freep(void *p) { free(*(void **)p); }
static inline void closep(int *fd) { if (*fd >= 0) { int e = errno; close(*fd); errno = e; } }
static inline void fclosep(FILE **f) { if (*f) fclose(*f); }
#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Move ownership out of a cleanup variable. */
#define TAKE_PTR(p) ({ __typeof__(p) _p = (p); (p) = NULL; _p; })
#define TAKE_FD(fd) ({ int _fd = (fd); (fd) = -1; _fd; })

/* Allocation that never returns NULL (aborts on OOM: the process cannot
 * continue meaningfully; used only for small control-path objects). */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t m);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Checked parsing: 0 or -EINVAL / -ERANGE. No atoi. */
int parse_u64(const char *s, uint64_t *ret);
int parse_i64(const char *s, int64_t *ret);
/* "10G", "512M", "4096", "1.5T": powers of 1024; suffix K/M/G/T/P, optional
 * "i"/"iB"/"B". */
int parse_size(const char *s, uint64_t *ret);
/* "10s", "5m", "2h", "1d", "1w", "250ms", "1h30m": into milliseconds. */
int parse_duration_ms(const char *s, uint64_t *ret);
/* Human size, e.g. "1.5 GiB", into buf. Returns buf. */
char *format_size(uint64_t n, char *buf, size_t len);

/* Time. */
uint64_t now_mono_ns(void);
uint64_t now_real_ns(void);
/* RFC 3339 UTC with milliseconds, e.g. "2026-11-25T11:38:22.123Z". */
char *format_time_ns(uint64_t ns, char *buf, size_t len);

/* Names of volumes, snapshots, peers: 1..63 chars of [A-Za-z0-9._-], not
 * starting with '.' or '-'. Returns 0 or -EINVAL. */
int name_validate(const char *s);

/* A new random UUID (lowercase, 36 chars + NUL). */
void uuid_new(char out[37]);
bool uuid_is_valid(const char *s);

/* Errno name ("ENOENT") or NULL. */
const char *errno_name(int e);

/* Read a whole small file (<= max bytes); NUL-terminated. */
int read_file_all(const char *path, size_t max, char **ret, size_t *ret_len);
/* Write atomically (temp file + fsync + rename + fsync dir). */
int write_file_atomic(const char *path, const void *data, size_t len, mode_t mode);
/* mkdir -p with mode. */
int mkdir_p(const char *path, mode_t mode);

/* Growable byte buffer. */
struct buf { uint8_t *data; size_t len, cap; };
void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *p, size_t n);
void buf_printf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_free(struct buf *b);
/* Append a JSON string literal (quoted, escaped). */
void buf_json_str(struct buf *b, const char *s);

#endif
