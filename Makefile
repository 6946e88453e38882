# Amber: a plain Makefile.
#   make            build build/amberd, build/amberctl, build/amber-csi
#   make check      build and run every test (tests/run)
#   make SANITIZE=address,undefined check    the same under ASan+UBSan
#   make fuzz       run the libFuzzer targets for FUZZ_SECONDS each
#                   (FUZZ_TARGETS="fuzz-rpc fuzz-peer" picks some)
#   make soak       the chaos soak for SOAK_SECONDS (default 1800; SEED=N replays)
#   make demo       a tour of the features on a loop-mounted pool
#   make bench      the fio/control-path benchmark (bench/run)
#
# Sources are found by wildcard: a new .c file in a component folder is
# built into that component without editing this file.

CC       ?= cc
CFLAGS   ?= -O2 -g
WERROR   ?= $(if $(CI),-Werror,)
WARN     := -Wall -Wextra -Wshadow -Wvla -Wno-unused-parameter -Wno-missing-field-initializers $(WERROR)
B        := build
GEN      := $(B)/gen
PKGS     := libnghttp2 libprotobuf-c openssl liburing libcurl libzstd sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)
ifneq ($(SANITIZE),)
SANFLAGS := -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
CPPFLAGS := -D_GNU_SOURCE -Iinclude -I$(GEN) -I. $(PKG_CFLAGS)
ALL_CFLAGS = -std=gnu11 $(CFLAGS) $(WARN) $(SANFLAGS) -MMD -MP -pthread
LDLIBS   := $(PKG_LIBS) -luuid -lpthread -lm
VERSION  := $(shell cat VERSION 2>/dev/null || echo 0.0.0)

# --- protobuf-c generation -------------------------------------------------
# The well-known types csi.proto imports come from the system's includes.
PROTO_SYS := /usr/include
WKT       := google/protobuf/descriptor google/protobuf/wrappers google/protobuf/timestamp
PROTOS    := $(basename $(notdir $(wildcard proto/*.proto)))
GEN_C     := $(PROTOS:%=$(GEN)/%.pb-c.c) $(WKT:%=$(GEN)/%.pb-c.c)
GEN_H     := $(GEN_C:.c=.h)

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --proto_path=$(PROTO_SYS) --c_out=$(GEN) $<
$(GEN)/google/protobuf/%.pb-c.c $(GEN)/google/protobuf/%.pb-c.h: $(PROTO_SYS)/google/protobuf/%.proto
	@mkdir -p $(GEN)
	protoc-c --proto_path=$(PROTO_SYS) --c_out=$(GEN) $<
# Keep every intermediate file (objects of tests included).
.SECONDARY:

# --- objects -----------------------------------------------------------------
LIB_SRC   := $(wildcard lib/*.c)
OBJS_SRC  := $(wildcard objstore/*.c)
SNAPD_SRC := $(filter-out snapd/main.c,$(wildcard snapd/*.c snapd/*/*.c))
CLI_SRC   := $(wildcard cli/*.c)
CSI_SRC   := $(wildcard csi/*.c)

obj = $(patsubst %.c,$(B)/obj/%.o,$(1))

$(B)/obj/%.o: %.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -DAMBER_VERSION='"$(VERSION)"' -c -o $@ $<
# Generated code is not ours: build it without our warnings.
$(B)/obj/gen/%.o: $(GEN)/%.c | $(GEN_H)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -std=gnu11 $(CFLAGS) $(SANFLAGS) -w -c -o $@ $<

GEN_OBJ := $(patsubst $(GEN)/%.c,$(B)/obj/gen/%.o,$(GEN_C))

$(B)/libamber.a: $(call obj,$(LIB_SRC)) $(GEN_OBJ)
	@rm -f $@; ar rcs $@ $^
$(B)/libobjstore.a: $(call obj,$(OBJS_SRC))
	@rm -f $@; ar rcs $@ $^
$(B)/libsnapd.a: $(call obj,$(SNAPD_SRC))
	@rm -f $@; ar rcs $@ $^

LIBS := $(B)/libsnapd.a $(B)/libobjstore.a $(B)/libamber.a

$(B)/amberd: $(call obj,snapd/main.c) $(LIBS)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)
$(B)/amberctl: $(call obj,$(CLI_SRC) snapd/cluster/cluster-ca.c) $(B)/libobjstore.a $(B)/libamber.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)
$(B)/amber-csi: $(call obj,$(CSI_SRC)) $(B)/libamber.a
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# --- tests -------------------------------------------------------------------
UNIT_SRC := $(wildcard tests/unit/test-*.c)
UNIT_BIN := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
# Object-store tests need only their library and the runtime.
$(B)/tests/test-objstore%: $(call obj,tests/unit/test-objstore%.c) $(B)/libobjstore.a $(B)/libamber.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)
$(B)/tests/%: $(call obj,tests/unit/%.c) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

# Helpers the tests and benchmarks run (not tests themselves).
TOOLS := $(B)/tests/rpc-testd
$(B)/tests/rpc-testd: $(call obj,tests/rpc/rpc-testd.c) $(B)/libamber.a
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $^ $(LDLIBS)

PROGS := $(B)/amberd $(B)/amberctl $(B)/amber-csi
all: $(PROGS) $(UNIT_BIN) $(TOOLS)

check: all
	B=$(B) tests/run $(TESTS)

# The README's two commands. Both install what they need first.
#   make run   the main job on the embedded default: amberd on a loop-mounted
#              pool image (build/embedded), in the foreground
#   make test  install, build with ASan+UBSan into build/asan, run make check
run:
	scripts/setup-deps
	$(MAKE) all
	scripts/run-embedded
test:
	scripts/setup-deps
	$(MAKE) B=build/asan SANITIZE=address,undefined CI=true check

# libFuzzer targets: clang, built with their own flags in build/fuzz.
FUZZ_SRC     := $(wildcard tests/fuzz/fuzz-*.c)
FUZZ_SECONDS ?= 60
fuzz-build:
	$(MAKE) B=build/fuzz CC=clang SANITIZE=address,undefined CFLAGS="-O1 -g -fsanitize=fuzzer-no-link" WERROR= \
	    $(patsubst tests/fuzz/%.c,build/fuzz/fuzzers/%,$(FUZZ_SRC))
$(B)/fuzzers/%: $(call obj,tests/fuzz/%.c) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
# fuzz-csi runs amber-csi's handlers in process: its objects but main.
$(B)/fuzzers/fuzz-csi: $(call obj,tests/fuzz/fuzz-csi.c) $(call obj,$(filter-out csi/main.c,$(CSI_SRC))) $(LIBS)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -fsanitize=fuzzer -o $@ $^ $(LDLIBS)
fuzz: fuzz-build
	tests/fuzz/run $(FUZZ_SECONDS) $(FUZZ_TARGETS)

demo: all
	scripts/demo

# The chaos soak (tests/lib/soak.py): SOAK_SECONDS (default 1800), SEED.
SOAK_SECONDS ?= 1800
soak: all
	B=$(B) SOAK_SECONDS=$(SOAK_SECONDS) /usr/bin/python3 tests/e2e/test-soak.py

bench: all
	bench/run

clean:
	rm -rf build

.PHONY: all check fuzz fuzz-build demo bench clean run test soak
.DEFAULT_GOAL := all
-include $(shell find $(B)/obj -name '*.d' 2>/dev/null)
