#!/bin/sh
# The entry point of the benchmarks (make bench, make bench-smoke).
#   sh bench/run.sh [--smoke] [--only B1,B3] [--runs N] [--no-profile] [--out FILE]
#                   [--stores redis,sqlite] [--history-off]
# Builds bench's helpers into build/bench, installs the pinned peers
# (bench/peers/install.sh) and runs bench/harness.lua. Full runs print the
# table and rewrite the generated part of docs/benchmarks.md. --smoke runs
# every scenario at ~1 % size and prints one line, OK or the failures with
# the end of the log (build/bench/smoke.log holds all of it).
cd "$(dirname "$0")/.." || exit 1
smoke=0
peers=1
for a in "$@"; do
  [ "$a" = --smoke ] && smoke=1
  [ "$a" = --stores ] && peers=0 # chronis rows only: no peer to install
done
LUA=${LUA:-lua5.4}
B=build/bench
mkdir -p $B

fail() {
  echo "bench: $*" >&2
  exit 1
}
if [ -n "${SANITIZER:-}" ]; then
  # An instrumented build measures the sanitizer, and bench's helpers
  # would need its runtime: the benchmarks want a plain build.
  [ $smoke = 1 ] && { echo "bench-smoke: skipped (SANITIZER=$SANITIZER build; run it on a plain build)"; exit 0; }
  fail "SANITIZER=$SANITIZER: benchmarks need a plain build"
fi

[ -f build/lua/chronis/core.so ] && [ -f build/libchronis.a ] ||
  fail "chronis is not built: run 'make all' first"
command -v "$LUA" >/dev/null || fail "$LUA not found: run 'make deps'"
"$LUA" -e 'require "cjson"' 2>/dev/null || fail "lua-cjson not found: run 'make deps'"

CC=${CC:-cc}
CFLAGS="-O2 -g -std=c11 -Wall -Wextra"
LIBS=$(pkg-config --libs lua5.4 libuv hiredis libpq jansson sqlite3 libcurl openssl 2>/dev/null)
stale() { # target sources...
  t=$1
  shift
  [ -f "$t" ] || return 0
  for s in "$@"; do [ "$s" -nt "$t" ] && return 0; done
  return 1
}
if stale $B/measure bench/tools/measure.c; then
  $CC $CFLAGS -o $B/measure bench/tools/measure.c || fail "cannot build $B/measure"
fi
if stale $B/benchutil.so bench/tools/benchutil.c; then
  $CC $CFLAGS -shared -fPIC $(pkg-config --cflags lua5.4) -o $B/benchutil.so bench/tools/benchutil.c ||
    fail "cannot build $B/benchutil.so"
fi
if stale $B/cron_tight bench/tools/cron_tight.c build/libchronis.a runtime/core/cron.h; then
  $CC $CFLAGS -iquote runtime/core -o $B/cron_tight bench/tools/cron_tight.c build/libchronis.a $LIBS -lm ||
    fail "cannot build $B/cron_tight"
fi

# The harness removes its temporary folder and stops its servers when it
# ends; if it is interrupted or dies, this does (servers run detached).
cleanup() {
  d=$(cat $B/tmpdir 2>/dev/null)
  rm -f $B/tmpdir
  [ -n "$d" ] && [ -d "$d" ] || return 0
  find "$d" -name postmaster.pid 2>/dev/null | while read -r f; do
    kill -QUIT "$(head -n 1 "$f")" 2>/dev/null # immediate shutdown
  done
  find "$d" -name redis.pid 2>/dev/null | while read -r f; do
    kill "$(cat "$f")" 2>/dev/null
  done
  sleep 1
  rm -rf "$d"
}
# The harness runs in a process group of its own (setsid), so that an
# interrupted run stops it and the process it is measuring (measure passes
# the signal on to its command's group) before the servers go.
hpid=""
interrupted() {
  [ -n "$hpid" ] && { kill -TERM -- "-$hpid" 2>/dev/null || kill -TERM "$hpid" 2>/dev/null; }
  [ -n "$hpid" ] && wait "$hpid" 2>/dev/null
  cleanup
  echo "bench: interrupted" >&2
  exit 130
}
trap interrupted INT TERM
SETSID=""
command -v setsid >/dev/null 2>&1 && SETSID=setsid

if [ $smoke = 1 ]; then
  sh bench/peers/install.sh --smoke >$B/smoke.log 2>&1
  $SETSID "$LUA" bench/harness.lua "$@" >>$B/smoke.log 2>&1 &
  hpid=$!
  wait $hpid
  rc=$?
  cleanup
  if [ $rc = 0 ]; then
    tail -n 1 $B/smoke.log
    exit 0
  fi
  echo "bench-smoke: FAILED (full log: $B/smoke.log)" >&2
  tail -n 40 $B/smoke.log >&2
  exit 1
fi
if [ $peers = 1 ]; then
  sh bench/peers/install.sh || fail "a pinned peer could not be installed (see above)"
fi
$SETSID "$LUA" bench/harness.lua "$@" &
hpid=$!
wait $hpid
rc=$?
cleanup
exit $rc
