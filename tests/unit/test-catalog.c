/* test-catalog.c: the catalog against a real sqlite file in a temporary
 * directory: every table's create/find/list/delete, label filters,
 * duplicates, paging, pvc lookup, transactions (nested, rolled back, from
 * several threads), intents surviving a reopen, a newer schema refused, and
 * the label query and the newest match timed over 10,000 labelled
 * snapshots. */
#include <inttypes.h>
#include <pthread.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#include "amber/util.h"
#include "snapd/catalog/catalog.h"
#include "tests/unit/check.h"

static char dir[] = "/tmp/amber-test-catalog.XXXXXX";
static char *dbpath;

static struct cat_volume vol(const char *id, const char *name, const char *ns, const char *pvc)
{
    return (struct cat_volume){
        .id = (char *)id, .name = (char *)name, .size_bytes = 1 << 30, .fs_type = "ext4",
        .state = CAT_VOL_READY, .pvc_namespace = (char *)ns, .pvc_name = (char *)pvc,
        .params = "{\"fsType\":\"ext4\"}",
    };
}

static void add_snap(struct catalog *cat, const char *id, const char *vid, const char *name,
                     const char *parent, uint64_t created, struct cat_label *labels, size_t n)
{
    struct cat_snapshot s = {
        .id = (char *)id, .volume_id = (char *)vid, .name = (char *)name,
        .parent_id = (char *)parent, .created_ns = created, .size_bytes = 4096,
        .generation = 77, .state = CAT_SNAP_READY, .labels = labels, .n_labels = n,
    };
    int r = cat_snapshot_add(cat, &s);
    if (r < 0)
        fprintf(stderr, "add_snap %s: %s\n", name, cat_errmsg(cat));
    CHECK_EQ(r, 0);
}

static char V1[37], V2[37], V3[37], S1[37], S2[37], S3[37], S4[37];

static void test_volumes(struct catalog *cat)
{
    struct cat_volume v = vol(V1, "data", "ns-a", "claim-data"), *got = NULL;
    CHECK_EQ(cat_volume_add(cat, &v), 0);
    struct cat_volume v2 = vol(V2, "model", "ns-b", "claim-model");
    CHECK_EQ(cat_volume_add(cat, &v2), 0);
    struct cat_volume v3 = vol(V3, "scratch", "ns-a", "claim-scratch");
    v3.state = CAT_VOL_CREATING;
    v3.replica_peer = "east";
    v3.replica_source_id = V1;
    CHECK_EQ(cat_volume_add(cat, &v3), 0);

    /* Duplicates and bad input. */
    char other[37];
    uuid_new(other);
    struct cat_volume dup = vol(other, "data", NULL, NULL);
    CHECK_EQ(cat_volume_add(cat, &dup), -EEXIST);
    CHECK(strstr(cat_errmsg(cat), "data") != NULL);
    dup = vol(V1, "fresh", NULL, NULL);
    CHECK_EQ(cat_volume_add(cat, &dup), -EEXIST);
    dup = vol(other, "../etc", NULL, NULL);
    CHECK_EQ(cat_volume_add(cat, &dup), -EINVAL);
    dup = vol("not-a-uuid", "fine", NULL, NULL);
    CHECK_EQ(cat_volume_add(cat, &dup), -EINVAL);
    dup = vol(other, "huge", NULL, NULL);
    dup.size_bytes = UINT64_MAX;
    CHECK_EQ(cat_volume_add(cat, &dup), -ERANGE);

    /* Lookups: id, name, pvc. */
    CHECK_EQ(cat_volume_get(cat, V1, &got), 0);
    CHECK_STR(got->name, "data");
    CHECK_EQ(got->size_bytes, 1 << 30);
    CHECK_EQ(got->state, CAT_VOL_READY);
    CHECK_STR(got->params, "{\"fsType\":\"ext4\"}");
    CHECK(got->created_ns > 0);
    cat_volume_free(got);
    got = NULL;
    CHECK_EQ(cat_volume_find(cat, "model", &got), 0);
    CHECK_STR(got ? got->id : NULL, V2);
    cat_volume_free(got);
    got = NULL;
    CHECK_EQ(cat_volume_find(cat, V3, &got), 0);
    CHECK_STR(got ? got->replica_peer : NULL, "east");
    CHECK_STR(got ? got->replica_source_id : NULL, V1);
    CHECK_EQ(got ? got->state : -1, CAT_VOL_CREATING);
    cat_volume_free(got);
    got = NULL;
    CHECK_EQ(cat_volume_find(cat, "pvc/ns-a/claim-data", &got), 0);
    CHECK_STR(got ? got->id : NULL, V1);
    cat_volume_free(got);
    got = NULL;
    CHECK_EQ(cat_volume_find(cat, "pvc/ns-b/claim-data", &got), -ENOENT);
    CHECK_EQ(cat_volume_find(cat, "pvc/ns-a", &got), -EINVAL);
    CHECK_EQ(cat_volume_find(cat, "pvc/ns-a/x/y", &got), -EINVAL);
    CHECK_EQ(cat_volume_find(cat, "nope", &got), -ENOENT);
    CHECK(got == NULL);
    CHECK_EQ(cat_volume_find_pvc(cat, "ns-b", "claim-model", &got), 0);
    CHECK_STR(got ? got->name : NULL, "model");
    cat_volume_free(got);
    got = NULL;

    /* Updates. */
    CHECK_EQ(cat_volume_set_state(cat, V3, CAT_VOL_READY), 0);
    CHECK_EQ(cat_volume_set_size(cat, V3, 5ULL << 30), 0);
    CHECK_EQ(cat_volume_set_size(cat, other, 1), -ENOENT);
    CHECK_EQ(cat_volume_get(cat, V3, &got), 0);
    CHECK_EQ(got->state, CAT_VOL_READY);
    CHECK_EQ(got->size_bytes, 5ULL << 30);
    free(got->name);
    got->name = xstrdup("model");
    CHECK_EQ(cat_volume_update(cat, got), -EEXIST);     /* rename onto a taken name */
    free(got->name);
    got->name = xstrdup("scratch2");
    CHECK_EQ(cat_volume_update(cat, got), 0);
    cat_volume_free(got);
    got = NULL;
    CHECK_EQ(cat_volume_find(cat, "scratch2", &got), 0);
    cat_volume_free(got);
    got = NULL;

    /* Lists by namespace, by state, by replica peer. */
    struct cat_volume_list l = {};
    struct cat_volume_filter f = { .pvc_namespace = "ns-a" };
    CHECK_EQ(cat_volume_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 2);
    CHECK(l.next == NULL);
    cat_volume_list_free(&l);
    f = (struct cat_volume_filter){ .replica_peer = "east" };
    CHECK_EQ(cat_volume_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    cat_volume_list_free(&l);
    CHECK_EQ(cat_volume_set_state(cat, V2, CAT_VOL_DELETING), 0);
    f = (struct cat_volume_filter){ .states = 1u << CAT_VOL_READY };
    CHECK_EQ(cat_volume_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 2);
    for (size_t i = 0; i < l.n; i++)
        CHECK_EQ(l.items[i].state, CAT_VOL_READY);
    cat_volume_list_free(&l);
    /* A deleting volume no longer answers for its PVC. */
    CHECK_EQ(cat_volume_find_pvc(cat, "ns-b", "claim-model", &got), -ENOENT);
    CHECK_EQ(cat_volume_set_state(cat, V2, CAT_VOL_READY), 0);
}

static void test_snapshots(struct catalog *cat)
{
    struct cat_label l1[] = { { "pipeline", "train" }, { "run", "r1" }, { "step", "prep" } };
    struct cat_label l2[] = { { "run", "r1" }, { "step", "fit" } };
    struct cat_label l3[] = { { "run", "r2" }, { "step", "prep" }, { "hold", "true" } };
    add_snap(cat, S1, V1, "s1", NULL, 1000, l1, 3);
    add_snap(cat, S2, V1, "s2", S1, 2000, l2, 2);
    add_snap(cat, S3, V1, "s3", S2, 3000, l3, 3);
    add_snap(cat, S4, V2, "s1", NULL, 1500, NULL, 0);  /* same name, other volume: fine */

    char x[37];
    uuid_new(x);
    struct cat_snapshot dup = { .id = x, .volume_id = V1, .name = "s2", .state = CAT_SNAP_READY };
    CHECK_EQ(cat_snapshot_add(cat, &dup), -EEXIST);
    dup.id = S1;
    dup.name = "s9";
    CHECK_EQ(cat_snapshot_add(cat, &dup), -EEXIST);
    struct cat_label bad[] = { { "a=b", "c" } };
    dup = (struct cat_snapshot){ .id = x, .volume_id = V1, .name = "s9", .labels = bad, .n_labels = 1 };
    CHECK_EQ(cat_snapshot_add(cat, &dup), -EINVAL);
    struct cat_label twice[] = { { "k", "1" }, { "k", "2" } };
    dup = (struct cat_snapshot){ .id = x, .volume_id = V1, .name = "s9", .labels = twice, .n_labels = 2 };
    CHECK_EQ(cat_snapshot_add(cat, &dup), -EINVAL);
    /* The failed insert left nothing behind (the row rolled back with the labels). */
    struct cat_snapshot *s = NULL;
    CHECK_EQ(cat_snapshot_get(cat, x, &s), -ENOENT);

    CHECK_EQ(cat_snapshot_get(cat, S1, &s), 0);
    CHECK_STR(s->name, "s1");
    CHECK_STR(s->volume_name, "data");
    CHECK_STR(s->origin, "local");
    CHECK_EQ(s->generation, 77);
    CHECK_EQ(s->n_labels, 3);
    if (s->n_labels == 3) {       /* sorted by key */
        CHECK_STR(s->labels[0].key, "pipeline");
        CHECK_STR(s->labels[1].key, "run");
        CHECK_STR(s->labels[1].value, "r1");
        CHECK_STR(s->labels[2].key, "step");
    }
    cat_snapshot_free(s);
    s = NULL;

    /* References: bare name ambiguous, VOL@NAME, scoped to a volume. */
    CHECK_EQ(cat_snapshot_find(cat, NULL, "s1", &s), -ENOTUNIQ);
    CHECK_EQ(cat_snapshot_find(cat, NULL, "s2", &s), 0);
    CHECK_STR(s ? s->id : NULL, S2);
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_find(cat, NULL, "model@s1", &s), 0);
    CHECK_STR(s ? s->id : NULL, S4);
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_find(cat, NULL, "pvc/ns-a/claim-data@s1", &s), 0);
    CHECK_STR(s ? s->id : NULL, S1);
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_find(cat, V1, "s1", &s), 0);
    CHECK_STR(s ? s->id : NULL, S1);
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_find(cat, V2, S1, &s), -ENOENT);    /* id of another volume's */
    CHECK_EQ(cat_snapshot_find(cat, NULL, "data@nope", &s), -ENOENT);
    CHECK_EQ(cat_snapshot_latest(cat, V1, &s), 0);
    CHECK_STR(s ? s->id : NULL, S3);
    cat_snapshot_free(s);
    s = NULL;
    uint64_t count = 0;
    CHECK_EQ(cat_snapshot_count(cat, V1, &count), 0);
    CHECK_EQ(count, 3);

    /* Label filters. */
    struct cat_snapshot_list l = {};
    struct cat_label run1[] = { { "run", "r1" } };
    struct cat_snapshot_filter f = { .labels = run1, .n_labels = 1 };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 2);
    if (l.n == 2) {
        CHECK_STR(l.items[0].id, S1);       /* by creation time */
        CHECK_STR(l.items[1].id, S2);
        CHECK_EQ(l.items[1].n_labels, 2);
    }
    cat_snapshot_list_free(&l);
    struct cat_label and[] = { { "step", "prep" }, { "run", "r2" } };
    f = (struct cat_snapshot_filter){ .labels = and, .n_labels = 2 };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    CHECK_STR(l.n ? l.items[0].id : NULL, S3);
    cat_snapshot_list_free(&l);
    struct cat_label none[] = { { "step", "fit" }, { "run", "r2" } };
    f = (struct cat_snapshot_filter){ .labels = none, .n_labels = 2 };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 0);
    cat_snapshot_list_free(&l);
    f = (struct cat_snapshot_filter){ .label_key = "pipeline" };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    cat_snapshot_list_free(&l);
    f = (struct cat_snapshot_filter){ .volume_id = V2 };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    cat_snapshot_list_free(&l);
    f = (struct cat_snapshot_filter){ .pvc_namespace = "ns-b" };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    CHECK_STR(l.n ? l.items[0].id : NULL, S4);
    cat_snapshot_list_free(&l);
    CHECK_EQ(cat_snapshot_set_state(cat, S2, CAT_SNAP_DELETING), 0);
    f = (struct cat_snapshot_filter){ .volume_id = V1, .states = 1u << CAT_SNAP_READY };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 2);
    cat_snapshot_list_free(&l);

    /* Relabel, parse. */
    struct cat_label lab = {};
    CHECK_EQ(cat_label_parse("team=vision=x", &lab), 0);
    CHECK_STR(lab.key, "team");
    CHECK_STR(lab.value, "vision=x");
    CHECK_EQ(cat_snapshot_set_labels(cat, S4, &lab, 1), 0);
    cat_label_clear(&lab);
    CHECK_EQ(cat_label_parse("novalue", &lab), -EINVAL);
    CHECK_EQ(cat_label_parse("=v", &lab), -EINVAL);
    CHECK_EQ(cat_snapshot_set_labels(cat, x, NULL, 0), -ENOENT);
    CHECK_EQ(cat_snapshot_get(cat, S4, &s), 0);
    CHECK_EQ(s->n_labels, 1);
    CHECK_STR(s->n_labels ? s->labels[0].value : NULL, "vision=x");
    /* Update: rename, generation. */
    free(s->name);
    s->name = xstrdup("renamed");
    s->generation = 99;
    CHECK_EQ(cat_snapshot_update(cat, s), 0);
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_find(cat, V2, "renamed", &s), 0);
    CHECK_EQ(s ? s->generation : 0, 99);
    cat_snapshot_free(s);
    s = NULL;

    /* Retention: hold, run labels; S2 (run=r1) protected; delete S2 relinks S3 to S1. */
    const char *why = NULL;
    CHECK_EQ(cat_snapshot_protected(cat, S3, &why), 1);
    CHECK_STR(why, "hold");
    CHECK_EQ(cat_snapshot_protected(cat, S2, &why), 1);
    CHECK_STR(why, "run");
    CHECK_EQ(cat_snapshot_protected(cat, S4, &why), 0);
    CHECK_EQ(cat_snapshot_delete(cat, S2), 0);
    CHECK_EQ(cat_snapshot_delete(cat, S2), -ENOENT);
    CHECK_EQ(cat_snapshot_get(cat, S3, &s), 0);
    CHECK_STR(s ? s->parent_id : NULL, S1);
    cat_snapshot_free(s);
    s = NULL;
    /* Labels went with the row. */
    f = (struct cat_snapshot_filter){ .labels = run1, .n_labels = 1 };
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    CHECK_EQ(l.n, 1);
    cat_snapshot_list_free(&l);
}

static void test_exports_and_schedules(struct catalog *cat)
{
    int64_t e1, e2;
    const char *why = NULL;
    /* Labels would protect them first: this is about exports. */
    CHECK_EQ(cat_snapshot_set_labels(cat, S1, NULL, 0), 0);
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 0);
    CHECK_EQ(cat_export_add(cat, S1, "file:///repo", &e1), 0);
    CHECK_EQ(cat_export_add(cat, S1, "file:///repo", &e2), -EEXIST);
    char x[37];
    uuid_new(x);
    CHECK_EQ(cat_export_add(cat, x, "file:///repo", &e2), -ENOENT);
    struct cat_export *e = NULL;
    CHECK_EQ(cat_export_latest(cat, V1, "file:///repo", &e), -ENOENT);  /* still running */
    CHECK_EQ(cat_export_update(cat, e1, CAT_EXPORT_DONE, "manifest-1"), 0);
    CHECK_EQ(cat_export_latest(cat, V1, "file:///repo", &e), 0);
    CHECK_STR(e ? e->manifest_id : NULL, "manifest-1");
    CHECK_STR(e ? e->volume_id : NULL, V1);
    CHECK(e && e->finished_ns > 0);
    cat_export_free(e);
    e = NULL;
    /* S1 is the newest export base; once S3 is exported too, it is not. */
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 1);
    CHECK_STR(why, "export-base");
    CHECK_EQ(cat_export_add(cat, S3, "file:///repo", &e2), 0);
    CHECK_EQ(cat_export_update(cat, e2, CAT_EXPORT_DONE, "manifest-3"), 0);
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 0);
    CHECK_EQ(cat_export_find(cat, S3, "file:///repo", &e), 0);
    CHECK_EQ(e ? e->state : -1, CAT_EXPORT_DONE);
    cat_export_free(e);
    e = NULL;
    struct cat_export_list el = {};
    CHECK_EQ(cat_export_list(cat, NULL, &el), 0);
    CHECK_EQ(el.n, 2);
    cat_export_list_free(&el);
    CHECK_EQ(cat_export_delete(cat, e2), 0);
    CHECK_EQ(cat_export_delete(cat, e2), -ENOENT);
    /* With S3's export gone, S1 is the newest base again; then not at all. */
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 1);
    CHECK_EQ(cat_export_delete(cat, e1), 0);
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 0);

    struct cat_schedule sc = { .volume_id = V1, .every_ms = 600000, .keep = 144,
                               .keep_daily = 7, .next_due_ns = 5000 };
    CHECK_EQ(cat_schedule_put(cat, &sc), 0);
    sc.volume_id = V2;
    sc.next_due_ns = 9000;
    CHECK_EQ(cat_schedule_put(cat, &sc), 0);
    sc.volume_id = x;
    CHECK_EQ(cat_schedule_put(cat, &sc), -ENOENT);
    sc.volume_id = V1;
    sc.every_ms = 0;
    CHECK_EQ(cat_schedule_put(cat, &sc), -EINVAL);
    struct cat_schedule_list sl = {};
    CHECK_EQ(cat_schedule_list(cat, 6000, &sl), 0);
    CHECK_EQ(sl.n, 1);
    CHECK_STR(sl.n ? sl.items[0].volume_id : NULL, V1);
    cat_schedule_list_free(&sl);
    CHECK_EQ(cat_schedule_list(cat, 0, &sl), 0);
    CHECK_EQ(sl.n, 2);
    cat_schedule_list_free(&sl);
    CHECK_EQ(cat_schedule_set_run(cat, V1, 5001, 605001), 0);
    struct cat_schedule *g = NULL;
    CHECK_EQ(cat_schedule_get(cat, V1, &g), 0);
    CHECK_EQ(g ? g->last_run_ns : 0, 5001);
    CHECK_EQ(g ? g->next_due_ns : 0, 605001);
    CHECK_EQ(g ? g->keep : 0, 144);
    CHECK_EQ(g ? g->keep_daily : 0, 7);
    cat_schedule_free(g);
    CHECK_EQ(cat_schedule_delete(cat, V1), 0);
    CHECK_EQ(cat_schedule_delete(cat, V1), -ENOENT);
}

static void test_peers(struct catalog *cat)
{
    struct cat_peer p = { .name = "east", .address = "10.0.0.2:7443",
                          .fingerprint = "sha256:aa", .allow_push = true };
    CHECK_EQ(cat_peer_add(cat, &p), 0);
    CHECK_EQ(cat_peer_add(cat, &p), -EEXIST);
    struct cat_peer q = { .name = "west", .address = "10.0.0.3:7443", .fingerprint = "sha256:aa" };
    CHECK_EQ(cat_peer_add(cat, &q), -EEXIST);   /* one fingerprint, one peer */
    q.fingerprint = "sha256:bb";
    CHECK_EQ(cat_peer_add(cat, &q), 0);
    struct cat_peer *g = NULL;
    CHECK_EQ(cat_peer_find_fingerprint(cat, "sha256:bb", &g), 0);
    CHECK_STR(g ? g->name : NULL, "west");
    CHECK(g && !g->allow_push);
    cat_peer_free(g);
    g = NULL;
    q.allow_push = true;
    CHECK_EQ(cat_peer_update(cat, &q), 0);
    CHECK_EQ(cat_peer_get(cat, "west", &g), 0);
    CHECK(g && g->allow_push);
    cat_peer_free(g);
    struct cat_peer_list pl = {};
    CHECK_EQ(cat_peer_list(cat, &pl), 0);
    CHECK_EQ(pl.n, 2);
    cat_peer_list_free(&pl);

    CHECK_EQ(cat_publish(cat, V1, "east"), 0);
    CHECK_EQ(cat_publish(cat, V1, "east"), 0);          /* idempotent */
    CHECK_EQ(cat_publish(cat, V1, "nobody"), -ENOENT);
    CHECK_EQ(cat_publish(cat, V2, "*"), 0);
    CHECK_EQ(cat_is_published(cat, V1, "east"), 1);
    CHECK_EQ(cat_is_published(cat, V1, "west"), 0);
    CHECK_EQ(cat_is_published(cat, V2, "west"), 1);     /* via '*' */
    struct cat_publication_list publ = {};
    CHECK_EQ(cat_publication_list(cat, NULL, &publ), 0);
    CHECK_EQ(publ.n, 2);
    cat_publication_list_free(&publ);
    CHECK_EQ(cat_unpublish(cat, V2, "west"), -ENOENT);
    CHECK_EQ(cat_unpublish(cat, V2, "*"), 0);

    struct cat_subscription s = { .peer = "west", .remote_volume = "data", .local_name = "data-west",
                                  .every_ms = 60000 };
    CHECK_EQ(cat_subscription_add(cat, &s), 0);
    CHECK_EQ(cat_subscription_add(cat, &s), -EEXIST);
    s.peer = "nobody";
    s.local_name = "other";
    CHECK_EQ(cat_subscription_add(cat, &s), -ENOENT);
    s.peer = "west";
    s.local_name = "data-west";
    s.local_volume_id = V3;
    s.last_sync_ns = 42;
    s.last_error = "connection refused";
    CHECK_EQ(cat_subscription_update(cat, &s), 0);
    struct cat_subscription *sg = NULL;
    CHECK_EQ(cat_subscription_get(cat, "west", "data", &sg), 0);
    CHECK_STR(sg ? sg->local_volume_id : NULL, V3);
    CHECK_STR(sg ? sg->last_error : NULL, "connection refused");
    CHECK_EQ(sg ? sg->last_sync_ns : 0, 42);
    cat_subscription_free(sg);

    /* Sync progress: resume state and the newest complete base. */
    uint8_t digest[] = { 1, 2, 3, 4 };
    struct cat_sync_progress sp = { .peer = "east", .dir = CAT_SYNC_SEND, .snapshot_id = S1,
                                    .volume_id = V1, .acked_offset = 1 << 20, .complete = true };
    CHECK_EQ(cat_sync_progress_put(cat, &sp), 0);
    sp.snapshot_id = S3;
    sp.complete = false;
    sp.digest_state = digest;
    sp.digest_len = sizeof(digest);
    CHECK_EQ(cat_sync_progress_put(cat, &sp), 0);
    struct cat_sync_progress *pg = NULL;
    CHECK_EQ(cat_sync_progress_get(cat, "east", CAT_SYNC_SEND, S3, &pg), 0);
    CHECK_EQ(pg ? pg->acked_offset : 0, 1 << 20);
    CHECK_EQ(pg ? pg->digest_len : 0, 4);
    CHECK(pg && pg->digest_len == 4 && memcmp(pg->digest_state, digest, 4) == 0);
    cat_sync_progress_free(pg);
    pg = NULL;
    CHECK_EQ(cat_sync_progress_latest(cat, "east", CAT_SYNC_SEND, V1, &pg), 0);
    CHECK_STR(pg ? pg->snapshot_id : NULL, S1);
    cat_sync_progress_free(pg);
    pg = NULL;
    CHECK_EQ(cat_sync_progress_get(cat, "east", CAT_SYNC_RECEIVE, S3, &pg), -ENOENT);

    /* The newest snapshot a peer holds completely is kept for the next
     * incremental transfer; S3 is still in flight. */
    const char *why = NULL;
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 1);
    CHECK_STR(why, "sync-base");

    /* Removing a peer removes what it was granted. */
    CHECK_EQ(cat_peer_delete(cat, "east"), 0);
    CHECK_EQ(cat_snapshot_protected(cat, S1, &why), 0);
    CHECK_EQ(cat_is_published(cat, V1, "east"), 0);
    CHECK_EQ(cat_sync_progress_get(cat, "east", CAT_SYNC_SEND, S1, &pg), -ENOENT);
    CHECK_EQ(cat_peer_delete(cat, "west"), 0);
    struct cat_subscription_list sl = {};
    CHECK_EQ(cat_subscription_list(cat, NULL, &sl), 0);
    CHECK_EQ(sl.n, 0);
    cat_subscription_list_free(&sl);
    CHECK_EQ(cat_peer_delete(cat, "west"), -ENOENT);
}

static void test_pod_sockets(struct catalog *cat)
{
    struct cat_pod_socket p = { .target_path = "/var/lib/kubelet/pods/u1/volumes/api",
                                .volume_handle = "csi-abc", .socket_path = "/var/lib/kubelet/pods/u1/volumes/api/amber.sock",
                                .pod_namespace = "ns-a", .pod_name = "step-1", .pod_uid = "u1" };
    CHECK_EQ(cat_pod_socket_add(cat, &p), 0);
    CHECK_EQ(cat_pod_socket_add(cat, &p), -EEXIST);
    p.target_path = "/other";
    p.pod_namespace = "";
    CHECK_EQ(cat_pod_socket_add(cat, &p), -EINVAL);
    struct cat_pod_socket *g = NULL;
    CHECK_EQ(cat_pod_socket_get(cat, "/var/lib/kubelet/pods/u1/volumes/api", &g), 0);
    CHECK_STR(g ? g->pod_namespace : NULL, "ns-a");
    CHECK_STR(g ? g->pod_uid : NULL, "u1");
    cat_pod_socket_free(g);
    struct cat_pod_socket_list l = {};
    CHECK_EQ(cat_pod_socket_list(cat, &l), 0);
    CHECK_EQ(l.n, 1);
    cat_pod_socket_list_free(&l);
}

static int tx_fail(struct catalog *cat, void *data)
{
    struct cat_volume *v = data;
    int r = cat_volume_add(cat, v);
    CHECK_EQ(r, 0);
    return -ECANCELED;
}

static void test_transactions(struct catalog *cat)
{
    char a[37], b[37], c[37];
    uuid_new(a);
    uuid_new(b);
    uuid_new(c);
    struct cat_volume va = vol(a, "tx-a", NULL, NULL), vb = vol(b, "tx-b", NULL, NULL),
                      vc = vol(c, "tx-c", NULL, NULL);
    struct cat_volume *g = NULL;

    CHECK_EQ(cat_begin(cat), 0);
    CHECK_EQ(cat_volume_add(cat, &va), 0);
    CHECK_EQ(cat_begin(cat), 0);
    CHECK_EQ(cat_volume_add(cat, &vb), 0);
    CHECK_EQ(cat_rollback(cat), 0);     /* inner only */
    CHECK_EQ(cat_commit(cat), 0);
    CHECK_EQ(cat_volume_get(cat, a, &g), 0);
    cat_volume_free(g);
    g = NULL;
    CHECK_EQ(cat_volume_get(cat, b, &g), -ENOENT);

    CHECK_EQ(cat_begin(cat), 0);
    CHECK_EQ(cat_volume_add(cat, &vb), 0);
    CHECK_EQ(cat_rollback(cat), 0);
    CHECK_EQ(cat_volume_get(cat, b, &g), -ENOENT);

    CHECK_EQ(cat_tx(cat, tx_fail, &vc), -ECANCELED);
    CHECK_EQ(cat_volume_get(cat, c, &g), -ENOENT);
    CHECK_EQ(cat_commit(cat), -EINVAL);
    CHECK_EQ(cat_volume_delete(cat, a), 0);
    CHECK_EQ(cat_volume_delete(cat, a), -ENOENT);
}

/* Several threads, each committing transactions of two snapshots; none may
 * see another's half. */
struct worker {
    struct catalog *cat;
    const char *vid;
    int n, fails;
};

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < w->n; i++) {
        char id1[37], id2[37];
        uuid_new(id1);
        uuid_new(id2);
        struct cat_snapshot s1 = { .id = id1, .volume_id = (char *)w->vid, .name = id1, .state = CAT_SNAP_READY };
        struct cat_snapshot s2 = { .id = id2, .volume_id = (char *)w->vid, .name = id2, .state = CAT_SNAP_READY };
        if (cat_begin(w->cat) < 0) {
            w->fails++;
            continue;
        }
        uint64_t before = 0, after = 0;
        int r = cat_snapshot_count(w->cat, w->vid, &before);
        if (r >= 0)
            r = cat_snapshot_add(w->cat, &s1);
        if (r >= 0)
            r = cat_snapshot_add(w->cat, &s2);
        if (r >= 0)
            r = cat_snapshot_count(w->cat, w->vid, &after);
        if (r < 0 || after != before + 2) {
            w->fails++;
            cat_rollback(w->cat);
            continue;
        }
        if (cat_commit(w->cat) < 0)
            w->fails++;
    }
    return NULL;
}

static void test_threads(struct catalog *cat)
{
    char vid[37];
    uuid_new(vid);
    struct cat_volume v = vol(vid, "threads", NULL, NULL);
    CHECK_EQ(cat_volume_add(cat, &v), 0);
    pthread_t t[4];
    struct worker w[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){ .cat = cat, .vid = vid, .n = 100 };
        pthread_create(&t[i], NULL, worker_main, &w[i]);
    }
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        CHECK_EQ(w[i].fails, 0);
    }
    uint64_t n = 0;
    CHECK_EQ(cat_snapshot_count(cat, vid, &n), 0);
    CHECK_EQ(n, 800);
}

static void test_paging(struct catalog *cat)
{
    char ids[25][37];
    for (int i = 0; i < 25; i++) {
        char name[32];
        uuid_new(ids[i]);
        snprintf(name, sizeof(name), "page-%02d", i);
        struct cat_volume v = vol(ids[i], name, "ns-page", NULL);
        v.created_ns = 1000000 + (uint64_t)(i / 3);     /* ties: the id breaks them */
        CHECK_EQ(cat_volume_add(cat, &v), 0);
    }
    struct cat_volume_filter f = { .pvc_namespace = "ns-page" };
    struct cat_page page = { .limit = 10 };
    _cleanup_free_ char *token = NULL;
    int pages = 0, seen = 0;
    uint64_t last_ns = 0;
    for (;;) {
        struct cat_volume_list l = {};
        page.after = token;
        CHECK_EQ(cat_volume_list(cat, &f, &page, &l), 0);
        pages++;
        for (size_t i = 0; i < l.n; i++) {
            CHECK(l.items[i].created_ns >= last_ns);
            last_ns = l.items[i].created_ns;
            for (int j = 0; j < 25; j++)
                if (strcmp(ids[j], l.items[i].id) == 0) {
                    ids[j][0] = '\0';       /* seen once */
                    seen++;
                }
        }
        free(token);
        token = TAKE_PTR(l.next);
        if (pages == 1) {
            /* The first page's token survives its row being deleted. */
            CHECK_EQ(l.n, 10);
            CHECK_EQ(cat_volume_delete(cat, l.items[9].id), 0);
            seen--;
        }
        cat_volume_list_free(&l);
        if (!token || pages > 5)
            break;
    }
    CHECK_EQ(pages, 3);
    CHECK_EQ(seen, 24);
    struct cat_volume_list l = {};
    page.after = "garbage";
    CHECK_EQ(cat_volume_list(cat, &f, &page, &l), -EINVAL);
    page.after = "12:not-a-uuid";
    CHECK_EQ(cat_volume_list(cat, &f, &page, &l), -EINVAL);
}

static void test_intents_reopen(struct catalog **catp)
{
    struct catalog *cat = *catp;
    int64_t i1, i2, i3;
    CHECK_EQ(cat_begin(cat), 0);
    CHECK_EQ(cat_intent_add(cat, CAT_OP_SNAPSHOT_CREATE, S1, "{\"volume\":\"v\"}", &i1), 0);
    CHECK_EQ(cat_commit(cat), 0);
    CHECK_EQ(cat_intent_add(cat, CAT_OP_VOLUME_DELETE, V2, NULL, &i2), 0);
    CHECK_EQ(cat_intent_add(cat, CAT_OP_REVERT, V2, NULL, &i3), -EBUSY);
    CHECK_EQ(cat_intent_update(cat, i1, "subvol_created", NULL), 0);
    CHECK_EQ(cat_intent_update(cat, 9999, "x", NULL), -ENOENT);

    cat_close(cat);
    *catp = NULL;
    CHECK_EQ(cat_open(dbpath, &cat), 0);
    *catp = cat;
    if (!cat)
        return;

    struct cat_intent_list l = {};
    CHECK_EQ(cat_intent_list(cat, &l), 0);
    CHECK_EQ(l.n, 2);
    if (l.n == 2) {
        CHECK_STR(l.items[0].op, CAT_OP_SNAPSHOT_CREATE);
        CHECK_STR(l.items[0].step, "subvol_created");
        CHECK_STR(l.items[0].args, "{\"volume\":\"v\"}");
        CHECK_STR(l.items[0].target_id, S1);
        CHECK_STR(l.items[1].op, CAT_OP_VOLUME_DELETE);
        CHECK_STR(l.items[1].step, "start");
        CHECK(l.items[0].id < l.items[1].id);
    }
    cat_intent_list_free(&l);
    struct cat_intent *in = NULL;
    CHECK_EQ(cat_intent_find_target(cat, V2, &in), 0);
    CHECK_EQ(in ? in->id : 0, i2);
    cat_intent_free(in);
    CHECK_EQ(cat_intent_delete(cat, i1), 0);
    CHECK_EQ(cat_intent_delete(cat, i2), 0);
    CHECK_EQ(cat_intent_delete(cat, i2), -ENOENT);
    CHECK_EQ(cat_intent_list(cat, &l), 0);
    CHECK_EQ(l.n, 0);
    cat_intent_list_free(&l);

    /* Everything else survived too. */
    struct cat_volume *v = NULL;
    CHECK_EQ(cat_volume_find(cat, "pvc/ns-a/claim-data", &v), 0);
    cat_volume_free(v);
}

static void test_volume_delete_cascade(struct catalog *cat)
{
    struct cat_schedule sc = { .volume_id = V2, .every_ms = 1000, .keep = 3, .next_due_ns = 1 };
    struct cat_peer p = { .name = "south", .address = "h:1" };
    CHECK_EQ(cat_schedule_put(cat, &sc), 0);
    CHECK_EQ(cat_peer_add(cat, &p), 0);
    CHECK_EQ(cat_publish(cat, V2, "south"), 0);
    CHECK_EQ(cat_volume_delete(cat, V2), 0);
    struct cat_schedule *g = NULL;
    CHECK_EQ(cat_schedule_get(cat, V2, &g), -ENOENT);
    CHECK_EQ(cat_is_published(cat, V2, "south"), 0);
    /* Its snapshot stays, without a volume name. */
    struct cat_snapshot *s = NULL;
    CHECK_EQ(cat_snapshot_get(cat, S4, &s), 0);
    CHECK(s && s->volume_name == NULL);
    cat_snapshot_free(s);
}

static double ms_since(uint64_t t0)
{
    return (double)(now_mono_ns() - t0) / 1e6;
}

static void test_many_snapshots(struct catalog *cat)
{
    char vid[37];
    uuid_new(vid);
    struct cat_volume v = vol(vid, "big", "ns-big", "claim-big");
    CHECK_EQ(cat_volume_add(cat, &v), 0);
    enum { N = 10000 };
    uint64_t t0 = now_mono_ns();
    CHECK_EQ(cat_begin(cat), 0);
    char prev[37] = "";
    for (int i = 0; i < N; i++) {
        char id[37], name[32], run[16], step[16];
        uuid_new(id);
        snprintf(name, sizeof(name), "snap-%05d", i);
        snprintf(run, sizeof(run), "r%d", i / 100);      /* 100 snapshots a run */
        snprintf(step, sizeof(step), "s%d", i % 10);
        struct cat_label labels[] = { { "pipeline", "train" }, { "run", run }, { "step", step },
                                      { "schedule", "10m" } };
        struct cat_snapshot s = { .id = id, .volume_id = vid, .name = name,
                                  .parent_id = prev[0] ? prev : NULL,
                                  .created_ns = 2000000000ULL + (uint64_t)i, .state = CAT_SNAP_READY,
                                  .labels = labels, .n_labels = 4 };
        if (cat_snapshot_add(cat, &s) < 0) {
            CHECK(!"snapshot add");
            break;
        }
        memcpy(prev, id, sizeof(prev));
    }
    CHECK_EQ(cat_commit(cat), 0);
    printf("insert %d snapshots with 4 labels each: %.1f ms\n", N, ms_since(t0));

    struct cat_label run42[] = { { "run", "r42" } };
    struct cat_snapshot_filter f = { .labels = run42, .n_labels = 1 };
    struct cat_snapshot_list l = {};
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    printf("list --label run=r42 over %d snapshots: %zu rows in %.2f ms\n", N, l.n, ms_since(t0));
    CHECK_EQ(l.n, 100);
    for (size_t i = 0; i < l.n; i++) {
        CHECK_EQ(l.items[i].n_labels, 4);
        CHECK_STR(l.items[i].n_labels == 4 ? l.items[i].labels[1].value : NULL, "r42");
    }
    if (l.n == 100)
        CHECK_STR(l.items[0].name, "snap-04200");
    cat_snapshot_list_free(&l);

    struct cat_label and[] = { { "run", "r42" }, { "step", "s7" }, { "pipeline", "train" } };
    f = (struct cat_snapshot_filter){ .labels = and, .n_labels = 3, .volume_id = vid };
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    printf("list --label run=r42 --label step=s7 --label pipeline=train: %zu rows in %.2f ms\n",
           l.n, ms_since(t0));
    CHECK_EQ(l.n, 10);
    cat_snapshot_list_free(&l);

    /* The least selective term first: the worst order. */
    struct cat_label worst[] = { { "pipeline", "train" }, { "step", "s7" }, { "run", "r42" } };
    f = (struct cat_snapshot_filter){ .labels = worst, .n_labels = 3 };
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    printf("list --label pipeline=train --label step=s7 --label run=r42: %zu rows in %.2f ms\n",
           l.n, ms_since(t0));
    CHECK_EQ(l.n, 10);
    cat_snapshot_list_free(&l);

    f = (struct cat_snapshot_filter){ .volume_id = vid };
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_list(cat, &f, NULL, &l), 0);
    printf("list all %zu snapshots of a volume with labels: %.2f ms\n", l.n, ms_since(t0));
    CHECK_EQ(l.n, N);
    cat_snapshot_list_free(&l);

    struct cat_page page = { .limit = 500 };
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_list(cat, &f, &page, &l), 0);
    printf("first page of 500: %.2f ms\n", ms_since(t0));
    CHECK_EQ(l.n, 500);
    CHECK(l.next != NULL);
    cat_snapshot_list_free(&l);

    struct cat_snapshot *s = NULL;
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_latest(cat, vid, &s), 0);
    printf("latest snapshot: %.3f ms\n", ms_since(t0));
    CHECK_STR(s ? s->name : NULL, "snap-09999");
    cat_snapshot_free(s);

    /* The newest matching: labels, a time bound, states, none. */
    f = (struct cat_snapshot_filter){ .volume_id = vid, .states = 1u << CAT_SNAP_READY };
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_newest(cat, &f, 0, &s), 0);
    printf("newest snapshot: %.3f ms\n", ms_since(t0));
    CHECK_STR(s ? s->name : NULL, "snap-09999");
    cat_snapshot_free(s);
    s = NULL;
    f.labels = run42;
    f.n_labels = 1;
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_newest(cat, &f, 0, &s), 0);
    printf("newest snapshot labelled run=r42 (57 runs back): %.3f ms\n", ms_since(t0));
    CHECK_STR(s ? s->name : NULL, "snap-04299");
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_newest(cat, &f, 2000000000ULL + 4250, &s), 0);
    CHECK_STR(s ? s->name : NULL, "snap-04249");
    cat_snapshot_free(s);
    s = NULL;
    CHECK_EQ(cat_snapshot_newest(cat, &f, 2000000000ULL + 4200, &s), -ENOENT);
    f.labels = and;
    f.n_labels = 3;
    CHECK_EQ(cat_snapshot_newest(cat, &f, 0, &s), 0);
    CHECK_STR(s ? s->name : NULL, "snap-04297");
    cat_snapshot_free(s);
    s = NULL;
    struct cat_label common[] = { { "pipeline", "train" } };    /* on every one */
    f.labels = common;
    f.n_labels = 1;
    t0 = now_mono_ns();
    CHECK_EQ(cat_snapshot_newest(cat, &f, 2000000000ULL + 9000, &s), 0);
    printf("newest snapshot before #9000 labelled pipeline=train (on all): %.3f ms\n", ms_since(t0));
    CHECK_STR(s ? s->name : NULL, "snap-08999");
    cat_snapshot_free(s);
    s = NULL;
    f = (struct cat_snapshot_filter){ .volume_id = vid, .states = 1u << CAT_SNAP_CREATING };
    CHECK_EQ(cat_snapshot_newest(cat, &f, 0, &s), -ENOENT);
    f = (struct cat_snapshot_filter){ .volume_id = vid, .pvc_namespace = "ns-big" };
    CHECK_EQ(cat_snapshot_newest(cat, &f, 0, &s), -EINVAL);
    CHECK_EQ(cat_snapshot_newest(cat, NULL, 0, &s), -EINVAL);
    CHECK(s == NULL);
}

static void test_newer_schema(void)
{
    sqlite3 *db = NULL;
    CHECK_EQ(sqlite3_open(dbpath, &db), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, "UPDATE meta SET value = '99' WHERE key = 'schema_version'", NULL, NULL, NULL),
             SQLITE_OK);
    sqlite3_close(db);
    struct catalog *cat = NULL;
    CHECK_EQ(cat_open(dbpath, &cat), -EPROTO);
    CHECK(cat == NULL);
    CHECK(strstr(cat_errmsg(NULL), "newer") != NULL);
    printf("newer schema refused: %s\n", cat_errmsg(NULL));

    /* Somebody else's database. */
    _cleanup_free_ char *other = xasprintf("%s/other.db", dir);
    CHECK_EQ(sqlite3_open(other, &db), SQLITE_OK);
    CHECK_EQ(sqlite3_exec(db, "CREATE TABLE t (x)", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
    CHECK_EQ(cat_open(other, &cat), -EPROTO);
    unlink(other);
}

int main(void)
{
    if (!mkdtemp(dir))
        SKIP("mkdtemp: %m");
    dbpath = xasprintf("%s/pool/.amber/catalog.db", dir);
    uuid_new(V1), uuid_new(V2), uuid_new(V3);
    uuid_new(S1), uuid_new(S2), uuid_new(S3), uuid_new(S4);

    struct catalog *cat = NULL;
    int r = cat_open(dbpath, &cat);
    if (r < 0) {
        fprintf(stderr, "cat_open: %s\n", cat_errmsg(NULL));
        return 1;
    }
    struct stat st;
    CHECK_EQ(stat(dbpath, &st), 0);
    CHECK_EQ(st.st_mode & 0777, 0600);
    CHECK_EQ(cat_schema_version(cat), CAT_SCHEMA_VERSION);
    char *val = NULL;
    CHECK_EQ(cat_meta_get(cat, "backend", &val), -ENOENT);
    CHECK_EQ(cat_meta_set(cat, "backend", "btrfs"), 0);
    CHECK_EQ(cat_meta_set(cat, "schema_version", "7"), -EINVAL);
    CHECK_EQ(cat_meta_get(cat, "backend", &val), 0);
    CHECK_STR(val, "btrfs");
    free(val);

    test_volumes(cat);
    test_snapshots(cat);
    test_exports_and_schedules(cat);
    test_peers(cat);
    test_pod_sockets(cat);
    test_transactions(cat);
    test_threads(cat);
    test_paging(cat);
    test_intents_reopen(&cat);
    if (cat) {
        test_volume_delete_cascade(cat);
        test_many_snapshots(cat);
    }
    cat_close(cat);
    /* A second open of a current catalog migrates nothing and works. */
    CHECK_EQ(cat_open(dbpath, &cat), 0);
    cat_close(cat);
    test_newer_schema();

    /* AMBER_TEST_KEEP=1 leaves the database for a look with sqlite3. */
    _cleanup_free_ char *rm = xasprintf("rm -rf '%s'", dir);
    if (getenv("AMBER_TEST_KEEP"))
        printf("kept %s\n", dir);
    else if (system(rm) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    free(dbpath);
    return CHECK_DONE();
}
