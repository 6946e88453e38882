/* cli.h: amberctl's shared pieces: global options, the call helper that
 * prints errors the same way everywhere, and the table/JSON writers. */
#ifndef AMBER_CLI_H
#define AMBER_CLI_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "amber/rpc.h"
#include "amber/util.h"

#define AMBER_DEFAULT_SOCKET "/run/amber/amberd.sock"

struct cli {
    const char *socket;
    bool json;
    uint64_t timeout_ms;
    struct rpc_client *client;
};

/* A command: argv[0] is its name. Returns the exit status. */
typedef int (*cmd_fn)(struct cli *c, int argc, char **argv);
struct cmd {
    const char *name;
    cmd_fn fn;
    const char *summary;
};

/* Dispatch argv[0] among cmds; prints help for "help"/-h or an unknown one. */
int cli_dispatch(struct cli *c, const char *group, const struct cmd *cmds, size_t n,
                 int argc, char **argv, const char *help);

/* Make the unary call; on failure print "amberctl: CODE: message" and
 * return 1. 0 with *ret on success. */
int cli_call(struct cli *c, const char *method, const ProtobufCMessage *req,
             const ProtobufCMessageDescriptor *desc, ProtobufCMessage **ret);
/* Print a gRPC status as an error; returns 1. */
int cli_status_error(const struct rpc_status *st, int code);
/* Usage error: prints and returns 2. */
int cli_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parse common per-command options (--json, -h). Returns the index of the
 * first operand, or -1 after printing help (exit 0) / -2 on error. The
 * spec lists extra options as getopt_long entries; on_opt handles them. */
struct option;
int cli_getopt(struct cli *c, int argc, char **argv, const struct option *extra, size_t n_extra,
               int (*on_opt)(int opt, const char *arg, void *data), void *data, const char *help);

/* --- output ------------------------------------------------------------- */

/* A table: add a header row, then rows of cells; printed with aligned
 * columns. Cells are copied. */
struct table;
struct table *table_new(size_t ncols, ...);
void table_row(struct table *t, ...);   /* ncols strings */
void table_print(struct table *t, FILE *f);
void table_free(struct table *t);

/* A tiny JSON writer on struct buf. */
struct json {
    struct buf b;
    int depth;
    bool first[32];
};
void json_obj_begin(struct json *j, const char *key);
void json_obj_end(struct json *j);
void json_arr_begin(struct json *j, const char *key);
void json_arr_end(struct json *j);
void json_str(struct json *j, const char *key, const char *v);
void json_u64(struct json *j, const char *key, uint64_t v);
void json_i64(struct json *j, const char *key, int64_t v);
void json_bool(struct json *j, const char *key, bool v);
void json_null(struct json *j, const char *key);
/* Print (with a newline) and free. */
void json_print(struct json *j, FILE *f);

char *fmt_time_ns(int64_t ns);         /* RFC 3339, malloc'd; "" for 0 */
char *fmt_size(uint64_t n);            /* "1.5 GiB", malloc'd */

/* Command groups. */
int cmd_info(struct cli *c, int argc, char **argv);
int cmd_check(struct cli *c, int argc, char **argv);     /* cmd-check.c */
int cmd_volume(struct cli *c, int argc, char **argv);
int cmd_snapshot(struct cli *c, int argc, char **argv);
int cmd_export(struct cli *c, int argc, char **argv);
int cmd_restore(struct cli *c, int argc, char **argv);
int cmd_repo(struct cli *c, int argc, char **argv);
int cmd_store(struct cli *c, int argc, char **argv);

#endif
