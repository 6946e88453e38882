/* cmd-archive.c: amberctl export, restore and repo.
 *
 * export/restore run in amberd (it owns the pool) and stream progress back;
 * `repo` commands open the repository here, without a daemon. The
 * passphrase comes from --password-file FILE or AMBER_REPO_PASSWORD, the
 * same way for every command. */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "amber/objstore.h"
#include "archive.pb-c.h"
#include "cli/cli.h"

static const char export_help[] =
"Usage: amberctl export SNAPSHOT --repo URL [--password-file FILE] [--full]\n"
"                [--parallel N] [--json]\n"
"\n"
"Export a snapshot to an object-store repository. If an older snapshot of the\n"
"same volume was exported to this repository, only the extents changed since\n"
"then are read and only chunks the repository lacks are uploaded. An\n"
"interrupted export resumes when run again. URL: file:///path or\n"
"s3://bucket/prefix?endpoint=http://HOST:PORT&region=REGION.\n"
"With --json, prints {manifest, parent, bytes_read, bytes_uploaded,\n"
"chunks_uploaded, chunks_reused, seconds, ...} at the end.\n";

static const char restore_help[] =
"Usage: amberctl restore MANIFEST --repo URL --volume NEW [--password-file FILE]\n"
"                [--parallel N] [--json]\n"
"\n"
"Restore a manifest (its id, or a unique prefix, as `export` printed) onto a\n"
"new volume, verifying every chunk. An interrupted restore resumes when run\n"
"again with the same arguments; deleting the volume abandons it.\n";

static const char repo_help[] =
"Usage: amberctl repo COMMAND --repo URL [--password-file FILE] [--json]\n"
"\n"
"  init [--chunk-size SIZE]   create a repository (chunk size 64K..16M, default 1M)\n"
"  list                       the manifests, with their labels and sizes\n"
"  show MANIFEST              one manifest\n"
"  verify [MANIFEST]          check that every chunk a manifest needs exists,\n"
"                             decrypts and matches its hash (all manifests\n"
"                             without MANIFEST)\n"
"  gc [--grace DURATION]      delete chunks no manifest references and older\n"
"                             than the grace period (default 1h)\n"
"\n"
"These run here, without amberd. The passphrase: --password-file FILE or\n"
"the AMBER_REPO_PASSWORD environment variable.\n";

struct aopts {
    const char *repo, *password_file, *volume, *chunk, *grace;
    bool full;
    uint64_t parallel;
};

static int on_aopt(int o, const char *arg, void *data)
{
    struct aopts *a = data;
    switch (o) {
    case 'r': a->repo = arg; break;
    case 'p': a->password_file = arg; break;
    case 'v': a->volume = arg; break;
    case 'f': a->full = true; break;
    case 'c': a->chunk = arg; break;
    case 'g': a->grace = arg; break;
    case 'P':
        if (parse_u64(arg, &a->parallel) < 0 || a->parallel == 0 || a->parallel > 256) {
            cli_usage("--parallel: a number from 1 to 256");
            return -1;
        }
        break;
    default: return -1;
    }
    return 0;
}

static const struct option aopts_list[] = {
    { "repo", required_argument, NULL, 'r' },
    { "password-file", required_argument, NULL, 'p' },
    { "volume", required_argument, NULL, 'v' },
    { "full", no_argument, NULL, 'f' },
    { "chunk-size", required_argument, NULL, 'c' },
    { "grace", required_argument, NULL, 'g' },
    { "parallel", required_argument, NULL, 'P' },
};

/* The passphrase, malloc'd, or NULL after printing why. */
static char *get_password(const struct aopts *a)
{
    if (a->password_file) {
        char *s = NULL;
        int r = read_file_all(a->password_file, 4096, &s, NULL);
        if (r < 0) {
            fprintf(stderr, "amberctl: --password-file %s: %s\n", a->password_file, strerror(-r));
            return NULL;
        }
        s[strcspn(s, "\r\n")] = 0;
        if (!*s) {
            fprintf(stderr, "amberctl: --password-file %s is empty\n", a->password_file);
            free(s);
            return NULL;
        }
        return s;
    }
    const char *e = getenv("AMBER_REPO_PASSWORD");
    if (e && *e)
        return xstrdup(e);
    fprintf(stderr, "amberctl: the repository passphrase is needed: --password-file FILE or "
                    "AMBER_REPO_PASSWORD\n");
    return NULL;
}

static void bar(const Amber__V1__ArchiveProgress *p, const char *what)
{
    double frac = p->bytes_total ? (double)p->bytes_read / (double)p->bytes_total : 0;
    if (frac > 1)
        frac = 1;
    int w = 30, fill = (int)(frac * w);
    char b[64];
    for (int i = 0; i < w; i++)
        b[i] = i < fill ? '#' : '.';
    b[w] = 0;
    _cleanup_free_ char *rd = fmt_size(p->bytes_read), *tot = fmt_size(p->bytes_total),
                        *up = fmt_size(p->bytes_uploaded);
    fprintf(stderr, "\r%s [%s] %3.0f%%  %s / %s  (%s %s)  ", what, b, frac * 100, rd, tot,
            up, strcmp(what, "export") == 0 ? "sent" : "fetched");
}

static int stream_archive(struct cli *c, const char *method, const ProtobufCMessage *req,
                          const char *what)
{
    struct rpc_stream *st;
    struct rpc_status status = {0};
    int code = rpc_stream_open(c->client, method, 0, &st, &status);
    if (code != RPC_OK) {
        cli_status_error(&status, code);
        rpc_status_clear(&status);
        return 1;
    }
    int r = rpc_stream_send(st, req);
    if (r == 0)
        rpc_stream_close_send(st);
    bool tty = isatty(STDERR_FILENO) && !c->json;
    Amber__V1__ArchiveProgress *fin = NULL;
    for (;;) {
        Amber__V1__ArchiveProgress *p;
        r = rpc_stream_recv(st, &amber__v1__archive_progress__descriptor, (ProtobufCMessage **)&p);
        if (r <= 0)
            break;
        if (p->done) {
            if (fin)
                protobuf_c_message_free_unpacked(&fin->base, NULL);
            fin = p;
            continue;
        }
        if (tty)
            bar(p, what);
        protobuf_c_message_free_unpacked(&p->base, NULL);
    }
    if (tty)
        fputc('\n', stderr);
    code = rpc_stream_finish(st, &status);
    if (code != RPC_OK || !fin) {
        if (code == RPC_OK)
            code = RPC_INTERNAL;
        cli_status_error(&status, code);
        rpc_status_clear(&status);
        if (fin)
            protobuf_c_message_free_unpacked(&fin->base, NULL);
        return 1;
    }
    rpc_status_clear(&status);
    if (c->json) {
        struct json j = {0};
        json_obj_begin(&j, NULL);
        json_str(&j, "manifest", fin->manifest);
        json_str(&j, "parent", fin->parent_manifest);
        json_str(&j, "snapshot", fin->snapshot_id);
        json_str(&j, "volume", fin->volume_name);
        json_str(&j, "volume_id", fin->volume_id);
        json_u64(&j, "bytes_read", fin->bytes_read);
        json_u64(&j, "bytes_uploaded", fin->bytes_uploaded);
        json_u64(&j, "chunks_uploaded", fin->chunks_uploaded);
        json_u64(&j, "chunks_reused", fin->chunks_reused);
        json_u64(&j, "chunks_zero", fin->chunks_zero);
        json_u64(&j, "chunks_from_parent", fin->chunks_from_parent);
        buf_printf(&j.b, ",\"seconds\":%.3f", fin->seconds);
        json_obj_end(&j);
        json_print(&j, stdout);
    } else if (strcmp(what, "export") == 0) {
        _cleanup_free_ char *rd = fmt_size(fin->bytes_read), *up = fmt_size(fin->bytes_uploaded);
        printf("manifest %s\n", fin->manifest);
        if (*fin->parent_manifest)
            printf("incremental on %s\n", fin->parent_manifest);
        printf("read %s, uploaded %s: %llu chunks new, %llu already stored, %.2fs\n", rd, up,
               (unsigned long long)fin->chunks_uploaded, (unsigned long long)fin->chunks_reused,
               fin->seconds);
    } else {
        _cleanup_free_ char *wr = fmt_size(fin->bytes_read), *fe = fmt_size(fin->bytes_uploaded);
        printf("volume %s (%s) restored from %s: %s written, %s fetched, %.2fs\n", fin->volume_name,
               fin->volume_id, fin->manifest, wr, fe, fin->seconds);
    }
    protobuf_c_message_free_unpacked(&fin->base, NULL);
    return 0;
}

int cmd_export(struct cli *c, int argc, char **argv)
{
    struct aopts a = {0};
    int i = cli_getopt(c, argc, argv, aopts_list, ARRAY_SIZE(aopts_list), on_aopt, &a, export_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("export: expected SNAPSHOT");
    if (!a.repo)
        return cli_usage("export: --repo URL is required");
    _cleanup_free_ char *pw = get_password(&a);
    if (!pw)
        return 2;
    Amber__V1__ExportRequest q = AMBER__V1__EXPORT_REQUEST__INIT;
    q.snapshot = argv[i];
    q.repo = (char *)a.repo;
    q.password = pw;
    q.full = a.full;
    q.parallelism = (uint32_t)a.parallel;
    return stream_archive(c, "/amber.v1.Archive/Export", &q.base, "export");
}

int cmd_restore(struct cli *c, int argc, char **argv)
{
    struct aopts a = {0};
    int i = cli_getopt(c, argc, argv, aopts_list, ARRAY_SIZE(aopts_list), on_aopt, &a, restore_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    if (argc - i != 1)
        return cli_usage("restore: expected MANIFEST");
    if (!a.repo || !a.volume)
        return cli_usage("restore: --repo URL and --volume NEW are required");
    _cleanup_free_ char *pw = get_password(&a);
    if (!pw)
        return 2;
    Amber__V1__RestoreRequest q = AMBER__V1__RESTORE_REQUEST__INIT;
    q.manifest = argv[i];
    q.repo = (char *)a.repo;
    q.password = pw;
    q.volume = (char *)a.volume;
    q.parallelism = (uint32_t)a.parallel;
    return stream_archive(c, "/amber.v1.Archive/Restore", &q.base, "restore");
}

static int repo_fail(int r, const char *what, const char *err)
{
    const char *code = r == -EKEYREJECTED ? "PERMISSION_DENIED" : r == -ENOENT ? "NOT_FOUND"
                     : r == -EINVAL ? "INVALID_ARGUMENT" : r == -EEXIST ? "ALREADY_EXISTS"
                     : r == -EPROTONOSUPPORT ? "FAILED_PRECONDITION" : "UNAVAILABLE";
    fprintf(stderr, "amberctl: %s: %s: %s\n", code, what,
            err ? err : r == -EKEYREJECTED ? "wrong passphrase" : strerror(-r));
    return 1;
}

static void manifest_json(struct json *j, const struct objstore_manifest_info *m)
{
    json_obj_begin(j, NULL);
    json_str(j, "id", m->id);
    json_str(j, "parent", m->parent);
    json_str(j, "snapshot", m->snapshot_uuid);
    json_str(j, "volume", m->volume_name);
    json_u64(j, "volume_size", m->volume_size);
    _cleanup_free_ char *t = fmt_time_ns((int64_t)m->created_ns);
    json_str(j, "created", t);
    json_u64(j, "chunk_size", m->chunk_size);
    json_u64(j, "chunks", m->chunks);
    json_u64(j, "data_chunks", m->data_chunks);
    json_obj_begin(j, "labels");
    for (size_t k = 0; k < m->nlabels; k++)
        json_str(j, m->label_keys[k], m->label_values[k]);
    json_obj_end(j);
    json_obj_end(j);
}

int cmd_repo(struct cli *c, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0 ||
        strcmp(argv[1], "-h") == 0) {
        fputs(repo_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *sub = argv[1];
    struct aopts a = {0};
    int i = cli_getopt(c, argc - 1, argv + 1, aopts_list, ARRAY_SIZE(aopts_list), on_aopt, &a,
                       repo_help);
    if (i < 0)
        return i == -1 ? 0 : 2;
    int nops = argc - 1 - i;
    char **ops = argv + 1 + i;
    if (!a.repo)
        return cli_usage("repo %s: --repo URL is required", sub);
    _cleanup_free_ char *pw = get_password(&a);
    if (!pw)
        return 2;
    _cleanup_free_ char *err = NULL;
    int r;
    if (strcmp(sub, "init") == 0) {
        uint64_t cs = OBJSTORE_CHUNK_DEFAULT;
        if (a.chunk && (parse_size(a.chunk, &cs) < 0 || cs < OBJSTORE_CHUNK_MIN ||
                        cs > OBJSTORE_CHUNK_MAX || (cs & (cs - 1))))
            return cli_usage("--chunk-size: a power of two from 64K to 16M");
        r = objstore_init(a.repo, pw, (uint32_t)cs, &err);
        if (r < 0)
            return repo_fail(r, a.repo, err);
        if (c->json)
            printf("{\"repo\":\"%s\",\"chunk_size\":%llu}\n", a.repo, (unsigned long long)cs);
        else
            printf("initialised repository %s (chunks of %llu bytes)\n", a.repo, (unsigned long long)cs);
        return 0;
    }
    struct objstore *repo = NULL;
    r = objstore_open(a.repo, pw, &repo, &err);
    if (r < 0)
        return repo_fail(r, a.repo, err);
    int ret = 0;
    if (strcmp(sub, "list") == 0 || strcmp(sub, "show") == 0) {
        struct objstore_manifest_info *ms = NULL, one = {0};
        size_t n = 0;
        if (strcmp(sub, "show") == 0) {
            if (nops != 1) {
                objstore_close(repo);
                return cli_usage("repo show: expected MANIFEST");
            }
            r = objstore_show_manifest(repo, ops[0], &one);
            if (r == 0) {
                ms = &one;
                n = 1;
            }
        } else {
            r = objstore_list_manifests(repo, &ms, &n);
        }
        if (r < 0) {
            ret = repo_fail(r, nops ? ops[0] : a.repo, NULL);
        } else if (c->json) {
            struct json j = {0};
            if (strcmp(sub, "list") == 0)
                json_arr_begin(&j, NULL);
            for (size_t k = 0; k < n; k++)
                manifest_json(&j, &ms[k]);
            if (strcmp(sub, "list") == 0)
                json_arr_end(&j);
            json_print(&j, stdout);
        } else {
            struct table *t = table_new(6, "MANIFEST", "VOLUME", "SIZE", "CREATED", "PARENT", "LABELS");
            for (size_t k = 0; k < n; k++) {
                struct buf l = {0};
                buf_append(&l, "", 0);
                for (size_t x = 0; x < ms[k].nlabels; x++)
                    buf_printf(&l, "%s%s=%s", x ? "," : "", ms[k].label_keys[x], ms[k].label_values[x]);
                _cleanup_free_ char *sz = fmt_size(ms[k].volume_size),
                                    *tm = fmt_time_ns((int64_t)ms[k].created_ns);
                char par[17];
                snprintf(par, sizeof par, "%.16s", *ms[k].parent ? ms[k].parent : "-");
                table_row(t, ms[k].id, ms[k].volume_name, sz, tm, par, (char *)l.data);
                buf_free(&l);
            }
            table_print(t, stdout);
            table_free(t);
        }
        if (ms == &one)
            objstore_manifest_info_free(&one);
        else
            objstore_manifest_infos_free(ms, n);
    } else if (strcmp(sub, "verify") == 0) {
        struct objstore_manifest_info *ms = NULL;
        size_t n = 0;
        char **ids = NULL;
        if (nops == 1) {
            ids = &ops[0];
            n = 1;
        } else if ((r = objstore_list_manifests(repo, &ms, &n)) == 0) {
            ids = xcalloc(n ? n : 1, sizeof *ids);
            for (size_t k = 0; k < n; k++)
                ids[k] = ms[k].id;
        }
        struct json j = {0};
        if (c->json)
            json_arr_begin(&j, NULL);
        for (size_t k = 0; r == 0 && k < n; k++) {
            struct objstore_verify_result v = {0};
            r = objstore_verify(repo, ids[k], 0, &v);
            if (r < 0) {
                ret = repo_fail(r, ids[k], NULL);
                r = 0;
                continue;
            }
            if (v.missing || v.corrupt)
                ret = 1;
            if (c->json) {
                json_obj_begin(&j, NULL);
                json_str(&j, "manifest", ids[k]);
                json_u64(&j, "chunks_checked", v.chunks_checked);
                json_u64(&j, "missing", v.missing);
                json_u64(&j, "corrupt", v.corrupt);
                json_arr_begin(&j, "missing_ids");
                for (size_t x = 0; x < v.nmissing_ids; x++)
                    json_str(&j, NULL, v.missing_ids[x]);
                json_arr_end(&j);
                json_arr_begin(&j, "corrupt_ids");
                for (size_t x = 0; x < v.ncorrupt_ids; x++)
                    json_str(&j, NULL, v.corrupt_ids[x]);
                json_arr_end(&j);
                json_bool(&j, "ok", !v.missing && !v.corrupt);
                json_obj_end(&j);
            } else {
                printf("%s: %llu chunks checked, %llu missing, %llu corrupt: %s\n", ids[k],
                       (unsigned long long)v.chunks_checked, (unsigned long long)v.missing,
                       (unsigned long long)v.corrupt, v.missing || v.corrupt ? "DAMAGED" : "ok");
                for (size_t x = 0; x < v.nmissing_ids; x++)
                    printf("  missing chunk %s\n", v.missing_ids[x]);
                for (size_t x = 0; x < v.ncorrupt_ids; x++)
                    printf("  corrupt chunk %s\n", v.corrupt_ids[x]);
            }
            objstore_verify_result_free(&v);
        }
        if (r < 0)
            ret = repo_fail(r, a.repo, NULL);
        else if (c->json) {
            json_arr_end(&j);
            json_print(&j, stdout);
        }
        if (ms) {
            free(ids);
            objstore_manifest_infos_free(ms, n);
        }
        if (ret && !c->json)
            fprintf(stderr, "amberctl: DATA_LOSS: the repository is damaged\n");
    } else if (strcmp(sub, "gc") == 0) {
        uint64_t grace_ms = 3600000;
        if (a.grace && parse_duration_ms(a.grace, &grace_ms) < 0) {
            objstore_close(repo);
            return cli_usage("--grace: a duration such as 1h or 10m");
        }
        struct objstore_gc_result g = {0};
        r = objstore_gc(repo, grace_ms / 1000, &g);
        if (r < 0) {
            ret = repo_fail(r, a.repo, NULL);
        } else if (c->json) {
            printf("{\"chunks_total\":%llu,\"chunks_referenced\":%llu,\"chunks_deleted\":%llu,"
                   "\"bytes_deleted\":%llu,\"chunks_young\":%llu}\n",
                   (unsigned long long)g.chunks_total, (unsigned long long)g.chunks_referenced,
                   (unsigned long long)g.chunks_deleted, (unsigned long long)g.bytes_deleted,
                   (unsigned long long)g.chunks_young);
        } else {
            _cleanup_free_ char *b = fmt_size(g.bytes_deleted);
            printf("deleted %llu unreferenced chunks (%s); %llu kept in the grace period; %llu referenced\n",
                   (unsigned long long)g.chunks_deleted, b, (unsigned long long)g.chunks_young,
                   (unsigned long long)g.chunks_referenced);
        }
    } else {
        ret = cli_usage("repo: unknown command \"%s\"", sub);
    }
    objstore_close(repo);
    return ret;
}
