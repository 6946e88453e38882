/* crashpoint.c: counted AMBER_CRASH_AT test hooks (see amber/crashpoint.h;
 * the daemon's plain crashpoint(NAME) lives with its operations). A crash
 * point logs one line and raises SIGKILL: no atexit handlers, no cleanup,
 * exactly what kill -9 at that instant would leave behind. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "amber/crashpoint.h"
#include "amber/log.h"

static void die(const char *at)
{
    log_warn("crash", "AMBER_CRASH_AT=%s: killing myself", at);
    raise(SIGKILL);
}

void crashpoint_n(const char *name, uint64_t n)
{
    const char *at = getenv("AMBER_CRASH_AT");
    size_t len = strlen(name);
    if (!at || strncmp(at, name, len) != 0 || at[len] != ':')
        return;
    char *end;
    unsigned long long want = strtoull(at + len + 1, &end, 10);
    if (*end == '\0' && n >= want)
        die(at);
}

bool crashpoint_armed(const char *name)
{
    const char *at = getenv("AMBER_CRASH_AT");
    size_t len = strlen(name);
    return at && strncmp(at, name, len) == 0 && (at[len] == '\0' || at[len] == ':');
}

int faultpoint(const char *name)
{
    static atomic_ullong calls;    /* one named point a process (tests arm one) */
    const char *at = getenv("AMBER_FAULT_AT");
    size_t len = strlen(name);
    if (!at || strncmp(at, name, len) != 0 || at[len] != ':')
        return 0;
    char *end;
    unsigned long long want = strtoull(at + len + 1, &end, 10);
    if (*end || atomic_fetch_add(&calls, 1) + 1 < want)
        return 0;
    return -EIO;
}

void holdpoint(const char *name)
{
    static atomic_bool held;       /* one hold a process (tests arm one) */
    const char *at = getenv("AMBER_HOLD_AT"), *fifo = getenv("AMBER_HOLD_FIFO");
    if (!at || !fifo || strcmp(at, name) != 0 || atomic_exchange(&held, true))
        return;
    log_info("crash", "AMBER_HOLD_AT=%s: holding until %s is written", name, fifo);
    int fd = open(fifo, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        log_warn("crash", "AMBER_HOLD_FIFO %s: %m", fifo);
        return;
    }
    char b;
    if (read(fd, &b, 1) < 0)
        log_warn("crash", "AMBER_HOLD_FIFO %s: %m", fifo);
    close(fd);
}
