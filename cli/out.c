/* out.c: amberctl's output: aligned tables for people, JSON for scripts. */
#include <stdarg.h>
#include <string.h>

#include "cli/cli.h"

struct table {
    size_t ncols, nrows, cap;
    char **cells;
};

struct table *table_new(size_t ncols, ...)
{
    struct table *t = xcalloc(1, sizeof *t);
    t->ncols = ncols;
    va_list ap;
    va_start(ap, ncols);
    t->cap = 16;
    t->cells = xcalloc(t->cap * ncols, sizeof *t->cells);
    for (size_t i = 0; i < ncols; i++)
        t->cells[i] = xstrdup(va_arg(ap, const char *));
    va_end(ap);
    t->nrows = 1;
    return t;
}

void table_row(struct table *t, ...)
{
    if (t->nrows == t->cap) {
        t->cap *= 2;
        t->cells = xrealloc(t->cells, t->cap * t->ncols * sizeof *t->cells);
    }
    va_list ap;
    va_start(ap, t);
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + i] = xstrdup(s ? s : "");
    }
    va_end(ap);
    t->nrows++;
}

void table_print(struct table *t, FILE *f)
{
    size_t *w = xcalloc(t->ncols, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++)
            w[c] = MAX(w[c], strlen(t->cells[r * t->ncols + c]));
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *s = t->cells[r * t->ncols + c];
            if (c + 1 == t->ncols)
                fprintf(f, "%s", s);
            else
                fprintf(f, "%-*s  ", (int)w[c], s);
        }
        fputc('\n', f);
    }
    free(w);
}

void table_free(struct table *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->nrows * t->ncols; i++)
        free(t->cells[i]);
    free(t->cells);
    free(t);
}

static void key(struct json *j, const char *k)
{
    if (j->depth > 0) {
        if (!j->first[j->depth])
            buf_append(&j->b, ",", 1);
        j->first[j->depth] = false;
    }
    if (k) {
        buf_json_str(&j->b, k);
        buf_append(&j->b, ":", 1);
    }
}

void json_obj_begin(struct json *j, const char *k)
{
    key(j, k);
    buf_append(&j->b, "{", 1);
    j->first[++j->depth] = true;
}

void json_obj_end(struct json *j)
{
    buf_append(&j->b, "}", 1);
    j->depth--;
}

void json_arr_begin(struct json *j, const char *k)
{
    key(j, k);
    buf_append(&j->b, "[", 1);
    j->first[++j->depth] = true;
}

void json_arr_end(struct json *j)
{
    buf_append(&j->b, "]", 1);
    j->depth--;
}

void json_str(struct json *j, const char *k, const char *v)
{
    key(j, k);
    buf_json_str(&j->b, v ? v : "");
}

void json_u64(struct json *j, const char *k, uint64_t v)
{
    key(j, k);
    buf_printf(&j->b, "%llu", (unsigned long long)v);
}

void json_i64(struct json *j, const char *k, int64_t v)
{
    key(j, k);
    buf_printf(&j->b, "%lld", (long long)v);
}

void json_bool(struct json *j, const char *k, bool v)
{
    key(j, k);
    buf_printf(&j->b, "%s", v ? "true" : "false");
}

void json_null(struct json *j, const char *k)
{
    key(j, k);
    buf_printf(&j->b, "null");
}

void json_print(struct json *j, FILE *f)
{
    fwrite(j->b.data, 1, j->b.len, f);
    fputc('\n', f);
    buf_free(&j->b);
}

char *fmt_time_ns(int64_t ns)
{
    if (ns <= 0)
        return xstrdup("");
    char b[40];
    format_time_ns((uint64_t)ns, b, sizeof b);
    return xstrdup(b);
}

char *fmt_size(uint64_t n)
{
    char b[32];
    return xstrdup(format_size(n, b, sizeof b));
}
