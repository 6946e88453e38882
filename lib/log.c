/* log.c: structured one-line records on stderr (key=value or JSON).
 * A record is formatted into one buffer and written with one write(2), so
 * lines from threads never interleave. */
#include <stdarg.h>
#include <string.h>
#include <strings.h>
#include <stdio.h>
#include <unistd.h>

#include "amber/log.h"
#include "amber/util.h"

static enum log_level level = LOG_LVL_INFO;
static bool json;

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void log_set_level(enum log_level lvl) { level = lvl; }
void log_set_json(bool j) { json = j; }
enum log_level log_get_level(void) { return level; }

int log_level_parse(const char *s, enum log_level *ret)
{
    for (size_t i = 0; i < ARRAY_SIZE(level_names); i++)
        if (strcasecmp(s, level_names[i]) == 0) {
            *ret = (enum log_level)i;
            return 0;
        }
    return -EINVAL;
}

static void kv_str(struct buf *b, const char *s)
{
    if (json) {
        buf_json_str(b, s);
        return;
    }
    bool quote = !*s || strpbrk(s, " \"=\t\n\\") != NULL;
    if (!quote) {
        buf_append(b, s, strlen(s));
        return;
    }
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            buf_append(b, "\\", 1);
        if (*s == '\n')
            buf_append(b, "\\n", 2);
        else
            buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

static void field(struct buf *b, bool first, const char *key, const char *val)
{
    if (json) {
        buf_printf(b, "%s\"%s\":", first ? "{" : ",", key);
    } else {
        buf_printf(b, "%s%s=", first ? "" : " ", key);
    }
    kv_str(b, val);
}

int log_record(enum log_level lvl, const char *component, int err, const char *fmt, ...)
{
    if (lvl < level)
        return err;
    int saved = errno;
    char ts[40];
    format_time_ns(now_real_ns(), ts, sizeof ts);

    _cleanup_free_ char *msg = NULL;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&msg, fmt, ap) < 0)
        msg = NULL;
    va_end(ap);

    struct buf b = {0};
    field(&b, true, "ts", ts);
    field(&b, false, "level", level_names[lvl]);
    field(&b, false, "component", component ? component : "-");
    field(&b, false, "msg", msg ? msg : fmt);
    if (err < 0) {
        const char *n = errno_name(-err);
        char num[16];
        snprintf(num, sizeof num, "%d", -err);
        field(&b, false, "errno", n ? n : num);
        field(&b, false, "error", strerror(-err));
    }
    buf_append(&b, json ? "}\n" : "\n", json ? 2 : 1);
    ssize_t w = write(STDERR_FILENO, b.data, b.len);
    (void)w;
    buf_free(&b);
    errno = saved;
    return err;
}
