/* crashpoint.h: test hooks that kill the process with SIGKILL at a named
 * step, so crash tests stop a daemon at a chosen point instead of racing
 * the clock. AMBER_CRASH_AT names the point:
 *
 *   AMBER_CRASH_AT=volume-create:pool     crashpoint("volume-create:pool")
 *                                         (snapd/daemon.h)
 *   AMBER_CRASH_AT=restore-chunk:5        crashpoint_n("restore-chunk", n)
 *                                         kills when n reaches 5
 *
 * Library code calls these as one-liners; unset (production), each is one
 * getenv and a compare. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

/* Kill when AMBER_CRASH_AT is "NAME:N" and n >= N (n counts the steps). */
void crashpoint_n(const char *name, uint64_t n);
/* Does AMBER_CRASH_AT name this point (with or without a count)? Lets a
 * caller turn on the per-step bookkeeping a counted point needs. */
bool crashpoint_armed(const char *name);

/* Fault points (tests): AMBER_FAULT_AT=NAME:N makes the Nth and every later
 * faultpoint(NAME) in this process return -EIO, as a failing disk would;
 * otherwise 0. A restart without it is the repaired disk. */
int faultpoint(const char *name);

/* Hold points (tests): with AMBER_HOLD_AT=NAME and AMBER_HOLD_FIFO=PATH, the
 * first holdpoint(NAME) in this process opens the FIFO for reading and waits
 * for a byte (or the writer's close), so a test stops one call at a chosen
 * step, knows it is there (its own open for writing returns), runs others,
 * and lets it go. Later calls, and every call without both, return at once. */
void holdpoint(const char *name);
