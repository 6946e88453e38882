/* ops.c: what the operations (ops-volume.c, ops-snapshot.c) and the API
 * layers share: errors for the API, crash points, the per-volume operation
 * locks, and volume and snapshot lookup by reference. It calls only the
 * catalog; the operation files call it and never each other. */
#include <signal.h>
#include <stdarg.h>
#include <string.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/daemon.h"

int op_fail(struct op_err *e, int code, int r, const char *fmt, ...)
{
    if (!e || e->msg)
        return r;
    va_list ap;
    va_start(ap, fmt);
    if (vasprintf(&e->msg, fmt, ap) < 0)
        e->msg = NULL;
    va_end(ap);
    e->code = code ? code : rpc_code_from_errno(r);
    return r;
}

void op_err_clear(struct op_err *e)
{
    free(e->msg);
    e->msg = NULL;
    e->code = 0;
}

void crashpoint(const char *name)
{
    const char *at = getenv("AMBER_CRASH_AT");
    if (at && strcmp(at, name) == 0) {
        log_warn("crash", "AMBER_CRASH_AT=%s: killing myself", name);
        raise(SIGKILL);
    }
}

struct busy {
    struct busy *next;
    char *id;
    char *what;
};

int busy_acquire(struct amberd *d, const char *vol_id, const char *what, struct op_err *e)
{
    pthread_mutex_lock(&d->busy_lock);
    for (struct busy *b = d->busy; b; b = b->next)
        if (strcmp(b->id, vol_id) == 0) {
            _cleanup_free_ char *other = xstrdup(b->what);
            pthread_mutex_unlock(&d->busy_lock);
            return op_fail(e, RPC_ABORTED, -EBUSY,
                           "volume %s: another operation is in progress (%s)", vol_id, other);
        }
    struct busy *b = xcalloc(1, sizeof *b);
    b->id = xstrdup(vol_id);
    b->what = xstrdup(what);
    b->next = d->busy;
    d->busy = b;
    pthread_mutex_unlock(&d->busy_lock);
    return 0;
}

bool busy_check(struct amberd *d, const char *vol_id)
{
    bool busy = false;
    pthread_mutex_lock(&d->busy_lock);
    for (struct busy *b = d->busy; b && !busy; b = b->next)
        busy = strcmp(b->id, vol_id) == 0;
    pthread_mutex_unlock(&d->busy_lock);
    return busy;
}

void busy_release(struct amberd *d, const char *vol_id)
{
    pthread_mutex_lock(&d->busy_lock);
    for (struct busy **pp = &d->busy; *pp; pp = &(*pp)->next)
        if (strcmp((*pp)->id, vol_id) == 0) {
            struct busy *b = *pp;
            *pp = b->next;
            free(b->id);
            free(b->what);
            free(b);
            break;
        }
    pthread_mutex_unlock(&d->busy_lock);
}

int vol_find(struct amberd *d, const char *ref, struct cat_volume **ret, struct op_err *e)
{
    if (!ref || !*ref)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "a volume is required");
    int r = cat_volume_find(d->cat, ref, ret);
    if (r == -ENOENT || r == -EINVAL)
        return op_fail(e, RPC_NOT_FOUND, -ENOENT, "volume %s not found", ref);
    if (r == -ENOTUNIQ)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "volume %s is ambiguous", ref);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    return 0;
}

int snap_find(struct amberd *d, const char *ref, struct cat_snapshot **ret, struct op_err *e)
{
    if (!ref || !*ref)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL, "a snapshot is required");
    int r = cat_snapshot_find(d->cat, NULL, ref, ret);
    if (r == -ENOENT || r == -EINVAL)
        return op_fail(e, RPC_NOT_FOUND, -ENOENT, "snapshot %s not found", ref);
    if (r == -ENOTUNIQ)
        return op_fail(e, RPC_INVALID_ARGUMENT, -EINVAL,
                       "snapshot name %s is used by several volumes: say VOLUME@%s", ref, ref);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    return 0;
}
