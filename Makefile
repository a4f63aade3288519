# chronis - the one entry point: deps, all, run, test, bench, clean.

CC ?= cc
CFLAGS ?= -O2 -g
WARN = -std=c11 -Wall -Wextra -Wstrict-prototypes -Wwrite-strings \
       -Wno-missing-field-initializers
ifeq ($(CI),true)
WERROR ?= -Werror
endif
PKGS = lua5.4 libuv hiredis libpq jansson sqlite3 libcurl openssl
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
# The Lua library itself is left out of the module's link line: its symbols
# come from the interpreter that loads core.so.
PKG_LIBS := $(shell pkg-config --libs $(filter-out lua5.4,$(PKGS)) 2>/dev/null)
LUA_LIBS := $(shell pkg-config --libs lua5.4 2>/dev/null)

ifneq ($(SANITIZER),)
SANFLAGS = -fsanitize=$(SANITIZER) -fno-omit-frame-pointer
endif

ALL_CFLAGS = $(WARN) $(WERROR) $(CFLAGS) $(SANFLAGS) -fPIC -D_GNU_SOURCE \
             -iquote runtime -iquote adapters $(PKG_CFLAGS)
PREFIX ?= /usr/local

B = build
LIB_SRC := $(filter-out runtime/main.c,$(wildcard runtime/*.c)) $(wildcard adapters/*.c)
LIB_OBJ := $(patsubst %.c,$(B)/obj/%.o,$(LIB_SRC))
HEADERS := $(wildcard runtime/*.h adapters/*.h)

.PHONY: all deps run test test-only bench bench-smoke clean install FORCE

all: $(B)/libchronis.a $(B)/chronis $(B)/lua/chronis/core.so

# Objects are rebuilt when the flags change (e.g. SANITIZER=address).
FLAGS_ID := $(CC) $(ALL_CFLAGS)
$(B)/.flags: FORCE
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
	$(CC) $(SANFLAGS) -shared -Wl,-z,nodelete -o $@ $^ $(PKG_LIBS) -lm

# -Wl,-E exports the Lua API to C modules the host loads (cjson.so, ...).
$(B)/chronis: $(B)/obj/runtime/main.o $(B)/libchronis.a
	$(CC) $(SANFLAGS) -Wl,-E -o $@ $^ $(LUA_LIBS) $(PKG_LIBS) -lm

deps:
	@sh scripts/deps.sh

# The example app on the embedded default store.
run: all
	$(B)/chronis run scripts/app.lua

test: deps all test-only

# bench-smoke runs first so the specs' "N passed, N failed" stays the last line.
test-only:
	@SANITIZER=$(SANITIZER) sh bench/run.sh --smoke
	@SANITIZER=$(SANITIZER) sh spec/run.sh

# Benchmarks against peer schedulers: installs the pinned peers, runs every
# scenario, prints the table and rewrites docs/benchmarks.md (bench/run.sh).
bench: all
	@sh bench/run.sh

# Every scenario at about 1 % of its size: one line, or the failures.
bench-smoke:
	@SANITIZER=$(SANITIZER) sh bench/run.sh --smoke

# The host looks for its Lua library in ../share/chronis beside bin/, and
# Lua adapters (file:, lua:adapters/...) in share/chronis/adapters.
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis \
	  $(DESTDIR)$(PREFIX)/share/chronis/adapters $(DESTDIR)$(PREFIX)/lib \
	  $(DESTDIR)$(PREFIX)/lib/lua/5.4/chronis $(DESTDIR)$(PREFIX)/include/chronis
	install -m 755 $(B)/chronis $(DESTDIR)$(PREFIX)/bin/chronis
	install -m 644 $(B)/libchronis.a $(DESTDIR)$(PREFIX)/lib/libchronis.a
	install -m 755 $(B)/lua/chronis/core.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/chronis/core.so
	install -m 644 lua/chronis/*.lua $(DESTDIR)$(PREFIX)/share/chronis/lua/chronis/
	install -m 644 adapters/*.lua $(DESTDIR)$(PREFIX)/share/chronis/adapters/
	install -m 644 runtime/*.h $(DESTDIR)$(PREFIX)/include/chronis/

clean:
	rm -rf $(B)
