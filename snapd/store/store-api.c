/* store-api.c: amber.v1.Amber/StoreStatus on the node socket: the store's
 * counters, and (wait) a way for tests and tools to wait until the mover
 * has done all it can, without sleeping. */
#include <errno.h>

#include "amber.pb-c.h"
#include "amber/util.h"
#include "snapd/store/store.h"

static int h_status(struct rpc_call *c, const ProtobufCMessage *m)
{
    const Amber__V1__StoreStatusRequest *q = (const void *)m;
    struct amberd *d = rpc_call_server_data(c);
    struct store_status s;
    int r = store_status_settle(d, q->wait, q->settle, q->timeout_ms, &s);
    if (r == -ETIMEDOUT)
        return rpc_error(c, RPC_DEADLINE_EXCEEDED, "the snapshot store's mover is still busy");
    if (r < 0)
        return rpc_error(c, rpc_code_from_errno(r), "catalog: %s", cat_errmsg(d->cat));
    Amber__V1__StoreStatusResponse out = AMBER__V1__STORE_STATUS_RESPONSE__INIT;
    out.enabled = s.enabled;
    out.resident_keep = s.resident_keep;
    out.resident = s.resident;
    out.stored = s.stored;
    out.backlog = s.backlog;
    out.blocked = s.blocked;
    out.moved = s.moved;
    out.dropped = s.dropped;
    out.hydrated = s.hydrated;
    out.defrag_steps = s.defrag_steps;
    out.defrag_bytes = s.defrag_bytes;
    out.idle = s.idle;
    out.gate_pauses = s.gate_pauses;
    out.defrag_sweeps = s.defrag_sweeps;
    out.settled = s.settled;
    out.hydrate_bytes_written = s.hydrate_written;
    out.hydrate_union_bytes = s.hydrate_union;
    out.hydrate_full = s.hydrate_full;
    return rpc_call_send(c, &out.base);
}

const struct rpc_method store_api_methods[] = {
    { "/amber.v1.Amber/StoreStatus", &amber__v1__store_status_request__descriptor,
      &amber__v1__store_status_response__descriptor, RPC_UNARY, h_status },
};
const size_t store_api_methods_n = ARRAY_SIZE(store_api_methods);
