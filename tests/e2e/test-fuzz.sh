#!/usr/bin/env bash
# test-fuzz: a short libFuzzer run of every target (tests/fuzz/fuzz-*.c).
# FUZZ_SECONDS (default 20) per target; skipped without clang/libFuzzer.
set -u
cd "$(dirname "$0")/../.."
command -v clang >/dev/null || { echo "SKIP: no clang"; exit 77; }
ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || { echo "SKIP: no libFuzzer runtime (libfuzzer-14-dev)"; exit 77; }
make -s fuzz-build >build/fuzz-build.log 2>&1 || { tail -30 build/fuzz-build.log; exit 1; }
exec tests/fuzz/run "${FUZZ_SECONDS:-20}"
