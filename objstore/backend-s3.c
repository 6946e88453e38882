#include "internal.h"
int backend_s3_open(const char *rest, struct objstore_backend **ret, char **ret_err) { return -EPROTONOSUPPORT; }
