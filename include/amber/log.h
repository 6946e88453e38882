/* log.h: one structured line a record on stderr.
 *
 * Records are key=value (default) or JSON (log_set_json(true)):
 *   ts=2026-11-25T11:38:22.123Z level=error component=pool msg="attach failed" errno=ENOSPC vol=v1
 * Libraries (objstore/, lib/) do not log above debug: they return -errno and
 * the daemon logs once, at the edge, with context. */
#ifndef AMBER_LOG_H
#define AMBER_LOG_H

#include <stdbool.h>
#include <errno.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARN, LOG_LVL_ERROR };

void log_set_level(enum log_level lvl);
void log_set_json(bool json);
enum log_level log_get_level(void);
int log_level_parse(const char *s, enum log_level *ret);

/* Writes one record. `kv` is an optional string of extra pairs already in
 * key=value form (" vol=v1 snap=s2"), or NULL. `err` is a negative errno
 * (or 0). Returns `err`, so callers can `return log_errno(...)`. */
int log_record(enum log_level lvl, const char *component, int err,
               const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#define log_debug(comp, ...) log_record(LOG_LVL_DEBUG, comp, 0, __VA_ARGS__)
#define log_info(comp, ...)  log_record(LOG_LVL_INFO, comp, 0, __VA_ARGS__)
#define log_warn(comp, ...)  log_record(LOG_LVL_WARN, comp, 0, __VA_ARGS__)
#define log_error(comp, ...) log_record(LOG_LVL_ERROR, comp, 0, __VA_ARGS__)
/* Log with errno name and return the (negative) errno: return log_error_errno(r, "pool", "mount %s", p); */
#define log_error_errno(r, comp, ...) log_record(LOG_LVL_ERROR, comp, (r), __VA_ARGS__)
#define log_warn_errno(r, comp, ...)  log_record(LOG_LVL_WARN, comp, (r), __VA_ARGS__)

#endif
