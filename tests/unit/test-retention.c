/* test-retention.c: the time machine's pure parts: retention selection
 * (keep N, hourly/daily/weekly buckets like restic forget), StorageClass
 * parameter parsing, interval formatting. */
#include "amber/util.h"
#include "snapd/pipeline/pipeline.h"
#include "check.h"

#define S 1000000000ULL
#define H (3600ULL * S)
#define DAY (24ULL * H)

static size_t sel(const uint64_t *t, size_t n, uint32_t keep, uint32_t h, uint32_t d, uint32_t w,
                  bool *k)
{
    struct cat_schedule p = { .keep = keep, .keep_hourly = h, .keep_daily = d, .keep_weekly = w };
    return sched_retention_select(t, n, &p, k);
}

int main(void)
{
    /* 48 snapshots, one every 30 minutes, newest first, starting on a
     * Monday 00:00 UTC (2026-11-23) + 23h30. */
    uint64_t base = 1795392000ULL * S;   /* 2026-11-23T00:00:00Z, a Monday */
    uint64_t t[48];
    bool k[48];
    for (int i = 0; i < 48; i++)
        t[i] = base + 47 * (H / 2) - (uint64_t)i * (H / 2);

    /* No rule: keep everything. */
    CHECK_EQ(sel(t, 48, 0, 0, 0, 0, k), 48);
    /* keep 5: the five newest. */
    CHECK_EQ(sel(t, 48, 5, 0, 0, 0, k), 5);
    CHECK(k[0] && k[4] && !k[5]);
    /* keep-hourly 3: the newest of each of the 3 newest hours (two per hour). */
    CHECK_EQ(sel(t, 48, 0, 3, 0, 0, k), 3);
    CHECK(k[0] && !k[1] && k[2] && !k[3] && k[4] && !k[5] && !k[6]);
    /* keep-daily 2 over one day: one bucket exists, one kept. */
    CHECK_EQ(sel(t, 48, 0, 0, 2, 0, k), 1);
    CHECK(k[0]);
    /* Union: keep 1 + hourly 2 = {0, 2}. */
    CHECK_EQ(sel(t, 48, 1, 2, 0, 0, k), 2);

    /* Daily and weekly over 20 days, one a day at noon. */
    uint64_t u[20];
    bool m[20];
    for (int i = 0; i < 20; i++)
        u[i] = base + 19 * DAY + 12 * H - (uint64_t)i * DAY;
    CHECK_EQ(sel(u, 20, 0, 0, 7, 0, m), 7);
    CHECK(m[6] && !m[7]);
    /* Weeks from Monday: days 0..19 after Monday 11-23 span 3 weeks. */
    CHECK_EQ(sel(u, 20, 0, 0, 0, 10, m), 3);
    CHECK(m[0]);                      /* newest: day 19 (week 3) */
    CHECK(m[19 - 13]);                /* day 13, the Sunday: newest of week 2 */
    CHECK(m[19 - 6]);                 /* day 6, the Sunday: newest of week 1 */
    CHECK(!m[19 - 7]);                /* day 7, Monday of week 2: not the newest */

    /* StorageClass parameters. */
    struct cat_schedule s;
    const char *why = NULL;
    CHECK_EQ(sched_params_parse(NULL, &s, &why), 0);
    CHECK_EQ(sched_params_parse("{\"fsType\":\"ext4\"}", &s, &why), 0);
    CHECK_EQ(sched_params_parse("{\"fsType\": \"ext4\", \"snapshotEvery\": \"10m\", "
                                "\"snapshotKeep\":\"144\",\"snapshotKeepDaily\": 7}", &s, &why), 1);
    CHECK_EQ(s.every_ms, 600000);
    CHECK_EQ(s.keep, 144);
    CHECK_EQ(s.keep_daily, 7);
    CHECK_EQ(s.keep_hourly, 0);
    CHECK_EQ(sched_params_parse("{\"snapshotEvery\":\"soon\"}", &s, &why), -EINVAL);
    CHECK_EQ(sched_params_parse("{\"snapshotEvery\":\"100ms\"}", &s, &why), -EINVAL);
    CHECK_EQ(sched_params_parse("{\"snapshotEvery\":\"1s\",\"snapshotKeep\":\"-3\"}", &s, &why), -EINVAL);
    /* Escaped quotes in other keys and values do not confuse the scan. */
    CHECK_EQ(sched_params_parse("{\"a\\\"b\":\"x\\\",\\\"snapshotEvery\\\":\\\"1s\",\"snapshotEvery\":\"2s\"}",
                                &s, &why), 1);
    CHECK_EQ(s.every_ms, 2000);
    CHECK_EQ(sched_params_parse("not json", &s, &why), 0);
    /* A value that looks like the key is not the key. */
    CHECK_EQ(sched_params_parse("{\"x\":\"snapshotEvery\"}", &s, &why), 0);

    char b[32];
    sched_format_every(1000, b, sizeof b);
    CHECK_STR(b, "1s");
    sched_format_every(600000, b, sizeof b);
    CHECK_STR(b, "10m");
    sched_format_every(1500, b, sizeof b);
    CHECK_STR(b, "1500ms");
    sched_format_every(7 * 86400000ULL, b, sizeof b);
    CHECK_STR(b, "1w");
    return CHECK_DONE();
}
