/* registry.c: where a node's peer port is, by node name.
 *
 * The CSI topology names the node that holds a volume; a handle names the
 * node that made a snapshot. The registry turns that name into HOST:PORT.
 * Two implementations behind one small vtable:
 *
 *  - template:PATTERN  PATTERN with {node} replaced. In Kubernetes the
 *    DaemonSet runs with hostNetwork and every amberd listens on the same
 *    peer port, so a node's address is its name when node names resolve
 *    (kubeadm, EKS, GKE, AKS: the node name is its DNS name), or, with a
 *    headless Service and a per-node DNS record, "{node}.SERVICE:PORT".
 *    Nothing is written, nothing can go stale: this is the deploy/ default.
 *  - dir:PATH  a directory every node can read and write; each node keeps a
 *    file NAME holding its own HOST:PORT (written at start, atomically).
 *    Tests use it (several nodes on one machine, ephemeral ports), and a
 *    cluster without resolvable node names can use it on a shared volume.
 *
 * Adding one (e.g. reading the Node object's InternalIP from the API
 * server) is adding an ops struct here. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "amber/util.h"
#include "snapd/cluster/cluster.h"

struct registry_ops {
    int (*lookup)(struct cluster_registry *r, const char *node, char **ret);
    int (*publish)(struct cluster_registry *r, const char *node, const char *addr);
};

struct cluster_registry {
    const struct registry_ops *ops;
    char *spec;
    char *arg;
};

/* --- dir: ----------------------------------------------------------------- */

static int dir_lookup(struct cluster_registry *r, const char *node, char **ret)
{
    _cleanup_free_ char *path = xasprintf("%s/%s", r->arg, node);
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    int rr = read_file_all(path, 4096, &text, &len);
    if (rr < 0)
        return rr;
    text[strcspn(text, " \t\r\n")] = 0;
    if (!*text)
        return -ENOENT;
    *ret = TAKE_PTR(text);
    return 0;
}

static int dir_publish(struct cluster_registry *r, const char *node, const char *addr)
{
    int rr = mkdir_p(r->arg, 0755);
    if (rr < 0)
        return rr;
    _cleanup_free_ char *path = xasprintf("%s/%s", r->arg, node);
    _cleanup_free_ char *line = xasprintf("%s\n", addr);
    return write_file_atomic(path, line, strlen(line), 0644);
}

static const struct registry_ops dir_ops = { dir_lookup, dir_publish };

/* --- template: -------------------------------------------------------------- */

static int tmpl_lookup(struct cluster_registry *r, const char *node, char **ret)
{
    struct buf b = {0};
    const char *p = r->arg;
    for (const char *q; (q = strstr(p, "{node}")); p = q + 6) {
        buf_append(&b, p, (size_t)(q - p));
        buf_append(&b, node, strlen(node));
    }
    buf_append(&b, p, strlen(p) + 1);
    *ret = (char *)b.data;
    return 0;
}

static int tmpl_publish(struct cluster_registry *r, const char *node, const char *addr)
{
    return 0;
}

static const struct registry_ops tmpl_ops = { tmpl_lookup, tmpl_publish };

/* --- the interface -------------------------------------------------------------- */

int registry_open(const char *spec, struct cluster_registry **ret)
{
    const struct registry_ops *ops;
    const char *arg;
    if (strncmp(spec, "dir:", 4) == 0) {
        ops = &dir_ops;
        arg = spec + 4;
    } else if (strncmp(spec, "template:", 9) == 0) {
        ops = &tmpl_ops;
        arg = spec + 9;
        if (!strstr(arg, "{node}") || !strchr(arg, ':'))
            return -EINVAL;
    } else {
        return -EINVAL;
    }
    if (!*arg)
        return -EINVAL;
    struct cluster_registry *r = xcalloc(1, sizeof *r);
    r->ops = ops;
    r->spec = xstrdup(spec);
    r->arg = xstrdup(arg);
    *ret = r;
    return 0;
}

void registry_free(struct cluster_registry *r)
{
    if (!r)
        return;
    free(r->spec);
    free(r->arg);
    free(r);
}

int registry_lookup(struct cluster_registry *r, const char *node, char **ret_addr)
{
    if (!r)
        return -ENOENT;
    if (name_validate(node) < 0)
        return -EINVAL;
    return r->ops->lookup(r, node, ret_addr);
}

int registry_publish(struct cluster_registry *r, const char *node, const char *addr)
{
    if (!r || !addr)
        return 0;
    if (name_validate(node) < 0)
        return -EINVAL;
    return r->ops->publish(r, node, addr);
}

const char *registry_spec(const struct cluster_registry *r)
{
    return r ? r->spec : "";
}
