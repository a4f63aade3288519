# chronis - the one entry point: deps, all, run, test, bench, clean.

CC ?= cc
CFLAGS ?= -O2 -g
WARN = -std=c11 -Wall -Wextra -Wstrict-prototypes -Wwrite-strings \
       -Wno-missing-field-initializers
ifeq ($(CI),true)
WERROR ?= -Werror
endif
PKGS = lua5.4 libuv hiredis libpq jansson sqlite3 libcurl openssl
# Libraries without a pkg-config file: the HTTP server's request parser.
EXTRA_LIBS = -lhttp_parser
B = build
.DEFAULT_GOAL := all

# What pkg-config says (PKG_CFLAGS, PKG_LIBS, LUA_LIBS) lives in a generated
# makefile, $(B)/config.mk, that make remakes and then reads again before it
# builds anything (GNU make's remaking of included makefiles). Its recipe,
# tools/config.sh, first installs the packages (tools/deps.sh), then
# asks pkg-config. A `:= $(shell pkg-config ...)` here would be expanded as
# make reads this file, before anything is installed, and the first build
# on a fresh machine would compile without include paths. A rule rather
# than a wrapper script keeps one make process and every target usable on
# its own: any goal that compiles installs what it needs first, a package
# that cannot be installed stops make with one line before the first
# compile, and a configured tree costs nothing (config.mk lists the .pc
# files it came from, so removing or upgrading a package remakes it). Goals
# that build nothing never read it: `make clean` installs nothing.
NO_BUILD_GOALS = clean deps deps-run deps-fuzz test-only bench-smoke
ifneq ($(filter-out $(NO_BUILD_GOALS),$(or $(MAKECMDGOALS),all)),)
include $(B)/config.mk
endif
# The package check the goals need: deps (everything) for the tests and the
# benchmarks, deps-run (what building and running need) for run. The
# configuration installs that much, and never less than deps-run.
# The fuzzers (make fuzz) need clang on top of deps-run: deps-fuzz. make
# soak and make chaos start the same servers as the tests: deps.
GOAL_DEPS = $(if $(filter test bench soak chaos,$(MAKECMDGOALS)),deps,$(if $(filter fuzz fuzz-build,$(MAKECMDGOALS)),deps-fuzz,$(if $(filter run,$(MAKECMDGOALS)),deps-run)))
DEPS_LEVEL = $(if $(filter deps,$(GOAL_DEPS)),test,$(if $(filter deps-fuzz,$(GOAL_DEPS)),fuzz,run))

$(B)/config.mk: Makefile tools/config.sh tools/deps.sh
	@mkdir -p $(B)
	@sh tools/config.sh $(DEPS_LEVEL) $@ $(PKGS)

# SANITIZER=address (ASan, with LeakSanitizer), undefined (UBSan) or both,
# comma-separated: what spec/run.sh and .ci/run run the suite under.
# UBSan's set leaves out float-cast-overflow (a double too large for the
# integer it is converted to); chronis converts user numbers (times,
# limits, seconds) to integers, so it is asked for by name.
comma := ,
ifneq ($(SANITIZER),)
SANFLAGS = -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
ifneq ($(filter undefined,$(subst $(comma), ,$(SANITIZER))),)
SANFLAGS += -fsanitize=float-cast-overflow
endif
endif

ALL_CFLAGS = $(WARN) $(WERROR) $(CFLAGS) $(SANFLAGS) -fPIC -D_GNU_SOURCE \
             -iquote runtime -iquote adapters $(PKG_CFLAGS)
PREFIX ?= /usr/local

# runtime/core: the C core; runtime/lua: its Lua bindings; runtime/net:
# HTTP and crypto; adapters/<store>: one folder per store.
LIB_SRC := $(wildcard runtime/core/*.c runtime/lua/*.c runtime/net/*.c adapters/*/*.c)
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
HEADERS := $(wildcard runtime/*/*.h adapters/*/*.h)
# The core without Lua and the memory store: what spec/core_test.c links,
# so that the link itself proves the core needs no Lua.
CORE_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(filter-out runtime/core/open.c,\
              $(wildcard runtime/core/*.c adapters/memory/*.c)))

.PHONY: all deps deps-run deps-fuzz run test test-only bench bench-smoke fuzz fuzz-build chaos clean install FORCE

all: $(B)/libchronis.a $(B)/chronis $(B)/lua/chronis/core.so $(B)/core_test

# Objects are rebuilt when the flags change (e.g. SANITIZER=address). The
# goals' own package check (deps, deps-run) comes before any compile, even
# under -j.
FLAGS_ID := $(CC) $(ALL_CFLAGS)
$(B)/.flags: FORCE | $(GOAL_DEPS)
	@mkdir -p $(B)
	@echo '$(FLAGS_ID)' | cmp -s - $@ || echo '$(FLAGS_ID)' > $@

$(B)/obj/%.o: %.c $(HEADERS) Makefile $(B)/.flags
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -c $< -o $@

$(B)/libchronis.a: $(LIB_OBJ)
	@mkdir -p $(B)
	rm -f $@ && ar rcs $@ $^

# nodelete: the module installs Lua's allocator wrapper, which must outlive
# the interpreter's unloading of C modules at exit.
$(B)/lua/chronis/core.so: $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(SANFLAGS) -shared -Wl,-z,nodelete -o $@ $^ $(PKG_LIBS) $(EXTRA_LIBS) -lm

$(B)/core_test: $(B)/obj/spec/core_test.o $(CORE_OBJ)
	$(CC) $(SANFLAGS) -o $@ $^ $(filter -luv -lpthread -ldl -lrt,$(PKG_LIBS)) -lm

# The host looks for its Lua library beside itself, then at PREFIX, then
# in this source tree: both compiled into main.o, so that a copy of the
# executable elsewhere on the machine still finds it. $(B)/.paths changes
# (and main.o is rebuilt) only when one of them does.
PATHS_ID := $(PREFIX) $(CURDIR) $(abspath $(B))
$(B)/.paths: FORCE
	@mkdir -p $(B)
	@echo '$(PATHS_ID)' | cmp -s - $@ || echo '$(PATHS_ID)' > $@

$(B)/obj/runtime/main.o: $(B)/.paths
$(B)/obj/runtime/main.o: ALL_CFLAGS += -DCHR_PREFIX='"$(abspath $(PREFIX))"' \
  -DCHR_SRCDIR='"$(CURDIR)"' -DCHR_BUILDDIR='"$(abspath $(B))"'

# -Wl,-E exports the Lua API to C modules the host loads (cjson.so, ...).
$(B)/chronis: $(B)/obj/runtime/main.o $(B)/libchronis.a
	$(CC) $(SANFLAGS) -Wl,-E -o $@ $^ $(LUA_LIBS) $(PKG_LIBS) $(EXTRA_LIBS) -lm

# Every Debian package and npm test server the build and the tests need;
# deps-run: only what building and running need.
deps:
	@sh tools/deps.sh test

deps-run:
	@sh tools/deps.sh --quiet run

deps-fuzz:
	@sh tools/deps.sh --quiet fuzz

# The example app on the embedded default store.
run: deps-run all
	$(B)/chronis run scripts/app.lua

# bench-smoke runs first so the specs' "N passed, N failed" stays the last
# line. test runs them after its prerequisites, even under -j.
define run_tests
@SANITIZER=$(SANITIZER) sh bench/run.sh --smoke
@SANITIZER=$(SANITIZER) sh spec/run.sh
endef

test: deps all
	$(run_tests)

test-only:
	$(run_tests)

# Benchmarks against peer schedulers: installs the pinned peers, runs every
# scenario, prints the table and rewrites docs/benchmarks.md (bench/run.sh).
bench: deps all
	@sh bench/run.sh

# Every scenario at about 1 % of its size: one line, or the failures.
bench-smoke:
	@SANITIZER=$(SANITIZER) sh bench/run.sh --smoke

# Fuzzing (fuzz/, docs/reliability.md): one libFuzzer target per fuzz/*.c,
# each linked against the whole library compiled again by clang with the
# fuzzer's coverage and AddressSanitizer + UndefinedBehaviorSanitizer, in
# a folder of its own ($(FB)), so that neither SANITIZER nor the main
# objects change them. The archive lets a target that needs no Lua link
# no Lua object. make fuzz runs each target FUZZ_SECONDS (fuzz/run.sh).
FUZZ_CC ?= clang-14
FUZZ_SECONDS ?= 60
FB = $(B)/fuzz
FUZZ_SAN = -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS = $(WARN) -O1 -g $(FUZZ_SAN) -D_GNU_SOURCE -iquote runtime -iquote adapters \
              $(PKG_CFLAGS)
FUZZ_TARGETS := $(patsubst fuzz/%.c,%,$(wildcard fuzz/*.c))
FUZZ_OBJ := $(patsubst %.c,$(FB)/obj/%.o,$(LIB_SRC))

$(FB)/obj/%.o: %.c $(HEADERS) Makefile | $(GOAL_DEPS)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -c $< -o $@

$(FB)/libchronis.a: $(FUZZ_OBJ)
	rm -f $@ && ar rcs $@ $^

$(FB)/bin/%: fuzz/%.c fuzz/fuzz.h $(FB)/libchronis.a
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< $(FB)/libchronis.a $(LUA_LIBS) \
	  $(PKG_LIBS) $(EXTRA_LIBS) -lm

fuzz-build: $(addprefix $(FB)/bin/,$(FUZZ_TARGETS))

fuzz: fuzz-build
	@sh fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

# The soak test (soak/run.sh): SOAK_MINUTES (default 10) of steady load on
# each of SOAK_STORES at SOAK_RATE runs/s, with handler reloads, store
# reconnects and scheduler restarts; fails on memory growth, a missed or
# doubled slot, or p99 lateness over 50 ms. Minutes long: not in test.
.PHONY: soak
soak: deps all
	@sh soak/run.sh

# The fault-injection suite, long version (spec/support/chaos.lua): per
# store, CHAOS_SECONDS (180) of faults from CHAOS_SEED (drawn and printed
# when unset) on CHAOS_STORES (sqlite postgres redis file). Minutes per
# store, so not in test: spec/chaos_spec.lua runs a short one there.
chaos: deps all
	@CHAOS_SECONDS='$(CHAOS_SECONDS)' CHAOS_SEED='$(CHAOS_SEED)' CHAOS_STORES='$(CHAOS_STORES)' \
	  lua5.4 spec/support/chaos.lua

# PREFIX/bin/chronis; the Lua library in PREFIX/share/chronis/lua (the host
# looks there beside bin/, then at the PREFIX it was built with), the Lua
# adapters (file:, lua:adapters/...) in PREFIX/share/chronis/adapters, the
# C module plain lua5.4 loads in PREFIX/lib/lua/5.4/chronis/core.so, the
# library and headers for C programs in PREFIX/lib and PREFIX/include.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis \
	  $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis/web $(DESTDIR)$(PREFIX)/share/chronis/adapters $(DESTDIR)$(PREFIX)/lib \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/chronis $(DESTDIR)$(PREFIX)/include/chronis
	install -m 755 $(B)/chronis $(DESTDIR)$(PREFIX)/bin/chronis
	install -m 644 $(B)/libchronis.a $(DESTDIR)$(PREFIX)/lib/libchronis.a
	install -m 755 $(B)/lua/chronis/core.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/chronis/core.so
	install -m 644 lua/chronis/*.lua $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis/
	install -m 644 lua/chronis/web/* $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis/web/
	install -m 644 adapters/*.lua $(DESTDIR)$(PREFIX)/share/chronis/adapters/
	install -m 644 runtime/core/*.h $(DESTDIR)$(PREFIX)/include/chronis/

clean:
	rm -rf $(B)
