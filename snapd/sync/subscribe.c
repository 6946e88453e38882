/* subscribe.c: the follower thread. Subscriptions live in the catalog, so
 * they survive restarts of either side; this thread wakes every second (or
 * when kicked by a new subscription), and pulls each subscription whose
 * `every` has passed since its last attempt, recording the replica's id,
 * the time and the error (NULL after a success). A failed pull is retried
 * at the next period; an interrupted one resumes where it stopped. */
#include <string.h>
#include <time.h>

#include "amber/log.h"
#include "amber/util.h"
#include "snapd/sync/peer.h"

static void follow_one(struct amberd *d, struct cat_subscription *s)
{
    struct sync_result res = {0};
    struct op_err e = {0};
    int r = sync_pull(d, s->peer, s->remote_volume, s->local_name, NULL, NULL, NULL, &res, &e);
    struct cat_subscription *cur = NULL;
    /* Re-read: it may have been removed while we pulled. */
    if (cat_subscription_get(d->cat, s->peer, s->remote_volume, &cur) == 0) {
        free(cur->last_error);
        cur->last_error = r < 0 ? xstrdup(e.msg ? e.msg : strerror(-r)) : NULL;
        cur->last_sync_ns = now_real_ns();
        if (res.volume_id) {
            free(cur->local_volume_id);
            cur->local_volume_id = xstrdup(res.volume_id);
        }
        cat_subscription_update(d->cat, cur);
        cat_subscription_free(cur);
    }
    if (r < 0)
        log_warn_errno(r, "sync", "subscription %s/%s: %s", s->peer, s->remote_volume,
                       e.msg ? e.msg : strerror(-r));
    else if (res.st.snapshots > 0)
        log_info("sync", "subscription %s/%s: %u new snapshot(s) bytes_changed=%llu", s->peer,
                 s->remote_volume, res.st.snapshots, (unsigned long long)res.st.bytes_changed);
    op_err_clear(&e);
    sync_result_clear(&res);
}

static void *follower(void *arg)
{
    struct amberd *d = arg;
    struct peer_state *ps = d->peer;
    pthread_mutex_lock(&ps->sub_lock);
    while (!ps->sub_stop) {
        pthread_mutex_unlock(&ps->sub_lock);
        struct cat_subscription_list sl = {0};
        if (cat_subscription_list(d->cat, NULL, &sl) == 0) {
            uint64_t now = now_real_ns();
            for (size_t i = 0; i < sl.n && !ps->sub_stop; i++) {
                struct cat_subscription *s = &sl.items[i];
                if (s->every_ms && s->last_sync_ns + s->every_ms * 1000000ULL <= now)
                    follow_one(d, s);
            }
            cat_subscription_list_free(&sl);
        }
        pthread_mutex_lock(&ps->sub_lock);
        if (ps->sub_stop)
            break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_sec += 1;
        pthread_cond_timedwait(&ps->sub_cond, &ps->sub_lock, &ts);
    }
    pthread_mutex_unlock(&ps->sub_lock);
    return NULL;
}

int subscribe_start(struct amberd *d)
{
    struct peer_state *ps = d->peer;
    int r = -pthread_create(&ps->sub_thread, NULL, follower, d);
    if (r < 0)
        return log_error_errno(r, "sync", "cannot start the subscription thread");
    ps->sub_running = true;
    return 0;
}

void subscribe_kick(struct amberd *d)
{
    if (!d->peer)
        return;
    pthread_mutex_lock(&d->peer->sub_lock);
    pthread_cond_signal(&d->peer->sub_cond);
    pthread_mutex_unlock(&d->peer->sub_lock);
}

void subscribe_stop(struct amberd *d)
{
    struct peer_state *ps = d->peer;
    if (!ps || !ps->sub_running)
        return;
    pthread_mutex_lock(&ps->sub_lock);
    ps->sub_stop = true;
    pthread_cond_signal(&ps->sub_cond);
    pthread_mutex_unlock(&ps->sub_lock);
    pthread_join(ps->sub_thread, NULL);
    ps->sub_running = false;
}
