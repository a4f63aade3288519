#!/bin/sh
# A profile of one benchmark command, in the form of bench/profiles/b1-*.txt
# (which the harness writes for B1): for a goal the full run misses, the
# profile that says where the time goes.
#   sh bench/profile.sh OUT.txt "what was measured" -- command args...
# Runs the command under `perf record --call-graph dwarf` (the whole run,
# setup included: say so in the title when it matters), from the
# repository root with the Lua paths bench/run.sh uses, and writes the top
# functions by self time, by time including callees, and the split by
# object. Needs perf (linux-perf) and a plain build (make all).
cd "$(dirname "$0")/.." || exit 1
[ $# -ge 4 ] && [ "$3" = "--" ] || {
  echo "usage: sh bench/profile.sh OUT.txt \"title\" -- command args..." >&2
  exit 2
}
out=$1
title=$2
shift 3
command -v perf >/dev/null || { echo "bench/profile.sh: perf not found (apt-get install linux-perf)" >&2; exit 1; }
export LUA_PATH="lua/?.lua;lua/?/init.lua;bench/chronis/?.lua;;"
export LUA_CPATH="build/lua/?.so;build/bench/?.so;;"
data=$(mktemp /tmp/chronis-profile.XXXXXX)
trap 'rm -f "$data" "$data.old"' EXIT
perf record -q --call-graph dwarf,8192 -F 999 -o "$data" -- "$@" >"$data.log" 2>&1 ||
  { echo "bench/profile.sh: the command failed:" >&2; tail -5 "$data.log" >&2; rm -f "$data.log"; exit 1; }
bench_line=$(grep '^BENCH ' "$data.log" | tail -1 | cut -c1-400)
rm -f "$data.log"
# Lines of a report without unresolved addresses (the stripped interpreter)
# and, by time including callees, without the frames enclosing everything.
top() { # n [inclusive]
  grep -E '^ *[0-9.]+%' | grep -v -E '\] (0x[0-9a-f]+|0000)' |
    awk -v incl="${2:-0}" '{ if (incl == 1 && $1 + 0 >= 99) next; print }' |
    sed 's/ *- *- *$//' | head -n "$1"
}
{
  echo "$title"
  echo "Recorded $(date -u '+%Y-%m-%d %H:%M') UTC with: perf record --call-graph dwarf,8192 -F 999 -- $*"
  [ -n "$bench_line" ] && echo "Result of the profiled run (perf slows it): $bench_line"
  echo "lua5.4 is stripped: its interpreter shows as addresses in lua5.4."
  echo
  echo "Top 12 functions by self time (perf report --no-children --sort dso,symbol):"
  perf report -i "$data" --stdio --no-children --sort dso,symbol -g none --percent-limit 0.3 2>/dev/null | top 12
  echo
  echo "Top 15 by time including callees (perf report --children --sort symbol):"
  perf report -i "$data" --stdio --children --sort symbol -g none --percent-limit 2 2>/dev/null | top 15 1
  echo
  echo "Time by object (perf report --sort dso):"
  perf report -i "$data" --stdio --no-children --sort dso -g none 2>/dev/null | top 8
} >"$out"
echo "bench/profile.sh: wrote $out"
