/* pipeline.h: amberctl's time-machine and pipeline commands (issue 10):
 * schedules and history (cmd-schedule.c), runs and Kubernetes manifests
 * (cmd-run.c), browsing a snapshot read-only (cmd-mount.c). The groups
 * are listed in main.c's commands[]; the snapshot and volume subcommands in
 * cmd-snapshot.c's and cmd-volume.c's tables. */
#ifndef AMBER_CLI_PIPELINE_H
#define AMBER_CLI_PIPELINE_H

#include "amber.pb-c.h"
#include "cli/cli.h"

int cmd_schedule(struct cli *c, int argc, char **argv);
int cmd_run(struct cli *c, int argc, char **argv);
int cmd_volume_history(struct cli *c, int argc, char **argv);
int cmd_snapshot_k8s_manifest(struct cli *c, int argc, char **argv);
int cmd_snapshot_mount(struct cli *c, int argc, char **argv);
int cmd_snapshot_umount(struct cli *c, int argc, char **argv);

/* "10m", "1s", "1500ms". */
void fmt_every(uint64_t ms, char *buf, size_t len);
/* "k=v,k2=v2", malloc'd. */
char *labels_joined(const Amber__V1__Snapshot *s);
/* cmd-snapshot.c */
void snapshot_json(struct json *j, const char *key, const Amber__V1__Snapshot *s);

#endif
