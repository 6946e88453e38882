/* limits.c: amberd's per-client bounds (see limits.h) and their options,
 * and the label prefixes reserved to amber. */
#include <stdio.h>
#include <string.h>

#include "amber/rpc.h"
#include "amber/util.h"
#include "snapd/daemon.h"
#include "snapd/limits.h"

struct amberd_limits amberd_limits = {
    .snapshots_per_volume = 4096,
    .volumes_per_namespace = 1024,
    .pod_sockets = 4096,
    .calls = 1024,
    .pod_socket_conns = 16,
};

int limits_option(int opt, const char *arg)
{
    static const char *const names[] = { "max-snapshots-per-volume", "max-volumes-per-namespace",
                                         "max-pod-sockets", "max-calls", "max-pod-socket-conns" };
    uint64_t *fields[] = { &amberd_limits.snapshots_per_volume, &amberd_limits.volumes_per_namespace,
                           &amberd_limits.pod_sockets, &amberd_limits.calls, &amberd_limits.pod_socket_conns };
    int i = opt - LIMIT_OPT_BASE;
    if (i < 0 || i >= (int)ARRAY_SIZE(names))
        return -1;
    uint64_t v;
    if (parse_u64(arg, &v) < 0 || v == 0 || v > 1000000) {
        fprintf(stderr, "amberd: --%s: a number from 1 to 1000000, got \"%s\"\n", names[i], arg);
        return -1;
    }
    *fields[i] = v;
    return 0;
}

int limit_snapshots(struct amberd *d, const char *volume_id, const char *volume_name,
                    struct op_err *e)
{
    uint64_t n = 0;
    int r = cat_snapshot_count(d->cat, volume_id, &n);
    if (r < 0)
        return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
    if (n >= amberd_limits.snapshots_per_volume)
        return op_fail(e, RPC_RESOURCE_EXHAUSTED, -EDQUOT,
                       "volume %s has %llu snapshots, the most it may have "
                       "(amberd --max-snapshots-per-volume): delete some first",
                       volume_name, (unsigned long long)n);
    return 0;
}

int limit_namespace_volumes(struct amberd *d, const char *ns, struct op_err *e)
{
    if (!ns || !*ns)
        return 0;
    /* Pages until the bound is reached or the list ends. */
    struct cat_volume_filter f = { .pvc_namespace = ns };
    _cleanup_free_ char *after = NULL;
    size_t n = 0;
    for (;;) {
        struct cat_page page = { .after = after };
        struct cat_volume_list l = {0};
        int r = cat_volume_list(d->cat, &f, &page, &l);
        if (r < 0)
            return op_fail(e, 0, r, "catalog: %s", cat_errmsg(d->cat));
        n += l.n;
        free(after);
        after = TAKE_PTR(l.next);
        cat_volume_list_free(&l);
        if (!after || n >= amberd_limits.volumes_per_namespace)
            break;
    }
    if (n >= amberd_limits.volumes_per_namespace)
        return op_fail(e, RPC_RESOURCE_EXHAUSTED, -EDQUOT,
                       "namespace %s has %zu volumes, the most it may have "
                       "(amberd --max-volumes-per-namespace)", ns, n);
    return 0;
}

const char *label_reserved(const char *key)
{
    static const char *const prefixes[] = { "amber.csi.dev/", "amber.archive" };
    for (size_t i = 0; key && i < ARRAY_SIZE(prefixes); i++)
        if (strncmp(key, prefixes[i], strlen(prefixes[i])) == 0)
            return prefixes[i];
    return NULL;
}
