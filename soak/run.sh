#!/bin/sh
# The entry point of the soak test (make soak): one driver process
# (soak/driver.lua) per store, all at once unless SOAK_PARALLEL=0, then
# the table of soak/report.lua. Exits non-zero when a store fails a bound.
#   SOAK_MINUTES=10 SOAK_STORES=memory,sqlite,redis,postgres SOAK_RATE=200 sh soak/run.sh
# The other SOAK_* settings are listed at the top of soak/driver.lua.
# Logs and results: build/soak/<store>.log and .json (or SOAK_OUT/).
cd "$(dirname "$0")/.." || exit 1
LUA=${LUA:-lua5.4}
OUT=${SOAK_OUT:-build/soak}
STORES=$(echo "${SOAK_STORES:-memory,sqlite,redis,postgres}" | tr ',' ' ')
export SOAK_MINUTES=${SOAK_MINUTES:-10} SOAK_RATE=${SOAK_RATE:-200}

[ -f build/lua/chronis/core.so ] || { echo "soak: chronis is not built: run 'make all' first" >&2; exit 1; }
command -v "$LUA" >/dev/null || { echo "soak: $LUA not found: run 'make deps'" >&2; exit 1; }
mkdir -p $OUT
for s in $STORES; do rm -f $OUT/$s.json $OUT/$s.log; done

# Each driver stops its own server and removes its folder when it ends;
# an interrupted run stops the drivers too (their servers' watchdogs follow).
pids=
stop_all() {
  for p in $pids; do kill "$p" 2>/dev/null; done
  exit 130
}
trap stop_all INT TERM

echo "soak: ${SOAK_MINUTES} min per store at ${SOAK_RATE} runs/s on: $STORES (logs in $OUT/)"
if [ "${SOAK_PARALLEL:-1}" = 0 ]; then
  for s in $STORES; do
    "$LUA" soak/driver.lua "$s" $OUT/$s.json >$OUT/$s.log 2>&1 &
    pids=$!
    wait $pids
  done
else
  for s in $STORES; do
    "$LUA" soak/driver.lua "$s" $OUT/$s.json >$OUT/$s.log 2>&1 &
    pids="$pids $!"
  done
  wait
fi
"$LUA" soak/report.lua $OUT $STORES
