/* pipeline.h: the time machine and the pods' API (issue 10): schedules and
 * retention (schedule.c), per-pod namespace-scoped sockets (scoped.c), and
 * the message conversions they share (api-pb.c).
 *
 * Both subsystems hang off struct amberd (d->sched, d->scoped), are started
 * by main.c after recovery and before the server runs, and stopped after
 * rpc_server_run returns. Their node-socket RPCs are listed in api.c's
 * node_tables[]. */
#ifndef AMBER_SNAPD_PIPELINE_H
#define AMBER_SNAPD_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "amber.pb-c.h"
#include "snapd/daemon.h"

/* --- api-pb.c: catalog rows to messages ---------------------------------- */

/* A Snapshot message pointing into `s` (which must outlive it). Clear with
 * apb_snapshot_clear. With `vol_name` non-NULL it replaces volume_name
 * (a scoped caller sees "pvc/NAME"). */
struct apb_snapshot {
    Amber__V1__Snapshot m;
    Amber__V1__Label *labels;
    Amber__V1__Label **plabels;
};
void apb_snapshot(const struct cat_snapshot *s, const char *vol_name, struct apb_snapshot *out);
void apb_snapshot_clear(struct apb_snapshot *p);

/* --- api.c: snapshot replies, for scoped.c ------------------------------- */

/* The snapshots of a reply (CreateSnapshots, ListSnapshots), each
 * shown as a socket shows one: view->fill makes item (view->size bytes,
 * whose first member is the Amber__V1__Snapshot) from s, pointing into s;
 * view->clear frees what fill allocated. pp[0..n) is the repeated field;
 * api_snapshots_clear frees it all (not the rows). */
struct api_snap_view {
    size_t size;
    void (*fill)(struct rpc_call *c, const struct cat_snapshot *s, void *item);
    void (*clear)(void *item);
};
struct api_snapshots {
    const struct api_snap_view *view;
    Amber__V1__Snapshot **pp;
    char *items;
    size_t n;
};
void api_snapshots_init(struct api_snapshots *a, const struct api_snap_view *view, size_t cap);
void api_snapshots_add(struct api_snapshots *a, struct rpc_call *c, const struct cat_snapshot *s);
void api_snapshots_clear(struct api_snapshots *a);
/* The CreateSnapshots reply of s[0..n), shown by view. */
int api_send_created(struct rpc_call *c, const struct api_snap_view *view, struct cat_snapshot *const *s,
                     size_t n);

/* --- schedule.c ------------------------------------------------------------ */

/* Start the scheduler thread (d->sched). 0 or a negative errno. */
int sched_start(struct amberd *d);
/* Stop and join it; accepts a daemon whose scheduler never started. */
void sched_stop(struct amberd *d);
/* Wake the scheduler to re-read the schedules (after a change). */
void sched_kick(struct amberd *d);

/* StorageClass parameters (JSON object text) to a schedule: snapshotEvery
 * (a duration, "10m"), snapshotKeep, snapshotKeepHourly, snapshotKeepDaily,
 * snapshotKeepWeekly (counts). Returns 1 with *ret filled (volume_id
 * unset) when snapshotEvery is present, 0 when it is not, -EINVAL with a
 * static reason in *ret_why for a bad value. */
int sched_params_parse(const char *params, struct cat_schedule *ret, const char **ret_why);
/* Give a new volume the schedule its params ask for, unless it has one.
 * Errors are logged here (the volume exists either way). */
void sched_apply_params(struct amberd *d, const struct cat_volume *v);

/* Retention, as a pure function for tests: `created_ns` are the candidate
 * (scheduled, unprotected) snapshots' times, newest first; keep[i] is set
 * for each one a rule keeps: the `keep` newest, and the newest in each of
 * the last keep_hourly hours / keep_daily days / keep_weekly weeks (UTC;
 * weeks start on Monday) that have snapshots, as restic's forget. All
 * rules 0: everything is kept. Returns how many are kept. */
size_t sched_retention_select(const uint64_t *created_ns, size_t n, const struct cat_schedule *pol,
                              bool *keep);

/* "1s", "10m", "2h", "1d", "1w", "1500ms": the largest unit that divides. */
void sched_format_every(uint64_t ms, char *buf, size_t len);

/* VolumeHistory's answer for volume v, shown as vol_name (the newest
 * max_entries snapshots; 0: all). Also served on pod sockets. */
int sched_history_send(struct rpc_call *c, const struct cat_volume *v, const char *vol_name,
                       uint32_t max_entries);

extern const struct rpc_method api_schedule_methods[];
extern const size_t api_schedule_methods_n;

/* --- scoped.c -------------------------------------------------------------- */

/* Where a pod's socket lives under its NodePublishVolume target. */
#define SCOPED_SOCKET_NAME "api.sock"

/* Start: re-open the sockets recorded in the catalog whose target
 * directory still exists (the pod is still published), drop the others. */
int scoped_start(struct amberd *d);
/* Free the bookkeeping, after rpc_server_free (which closed the pods'
 * listeners and unlinked their sockets); the rows stay for the next start. */
void scoped_stop(struct amberd *d);

extern const struct rpc_method api_scoped_admin_methods[];   /* node socket: open/close */
extern const size_t api_scoped_admin_methods_n;

/* scoped.c: what a pod's socket serves; each listener's user data is its
 * struct scope (the caller's namespace). */
struct scope {
    struct scope *next;
    char *ns;
};
extern const struct rpc_method api_scoped_methods[];
extern const size_t api_scoped_methods_n;

/* Resolution as a socket scoped to namespace ns does it: a volume
 * ("pvc/NAME", "pvc/NS/NAME", id, name) or a snapshot (id, VOL@NAME, a
 * name unique in the namespace) of that namespace, else NOT_FOUND recorded
 * on the call (the same answer as for a name that exists nowhere). */
int scoped_find_volume(struct rpc_call *c, const char *ns, const char *ref, struct cat_volume **ret);
int scoped_find_snapshot(struct rpc_call *c, const char *ns, const char *ref, struct cat_snapshot **ret);

#endif
