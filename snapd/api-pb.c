/* api-pb.c: catalog rows to amber.v1 messages for schedule.c and scoped.c.
 * The messages point into the rows (no copies); only the label arrays are
 * allocated, and apb_*_clear frees them. */
#include "amber/util.h"
#include "snapd/pipeline/pipeline.h"

static char *nz(const char *s) { return (char *)(s ? s : ""); }

void apb_snapshot(const struct cat_snapshot *s, const char *vol_name, struct apb_snapshot *out)
{
    Amber__V1__Snapshot m = AMBER__V1__SNAPSHOT__INIT;
    m.id = s->id;
    m.name = s->name;
    m.volume_id = s->volume_id;
    m.volume_name = vol_name ? (char *)vol_name : nz(s->volume_name);
    m.parent_id = nz(s->parent_id);
    m.created_ns = (int64_t)s->created_ns;
    m.size_bytes = s->size_bytes;
    m.state = (char *)cat_snap_state_to_string(s->state);
    m.origin = nz(s->origin);
    m.k8s_namespace = nz(s->k8s_namespace);
    m.k8s_name = nz(s->k8s_name);
    size_t n = s->n_labels;
    out->labels = xcalloc(n ? n : 1, sizeof *out->labels);
    out->plabels = xcalloc(n ? n : 1, sizeof *out->plabels);
    for (size_t i = 0; i < n; i++) {
        Amber__V1__Label l = AMBER__V1__LABEL__INIT;
        l.key = s->labels[i].key;
        l.value = s->labels[i].value;
        out->labels[i] = l;
        out->plabels[i] = &out->labels[i];
    }
    m.n_labels = n;
    m.labels = out->plabels;
    out->m = m;
}

void apb_snapshot_clear(struct apb_snapshot *p)
{
    free(p->labels);
    free(p->plabels);
    p->labels = NULL;
    p->plabels = NULL;
}
