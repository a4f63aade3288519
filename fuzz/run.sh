#!/bin/sh
# Runs libFuzzer targets (built by make fuzz-build) one after the other,
# each for SECONDS, on its seed corpus in the repository (read only) and a
# work folder that keeps the inputs it finds between runs.
#   sh fuzz/run.sh SECONDS TARGET...
# FUZZ_WORK: the work folder (default build/fuzz/work); FUZZ_RUNS: a bound
# on executions per target as well. Prints each target's last libFuzzer
# status line; on a crash, the path of the input that caused it, and exits
# non-zero after the remaining targets.
set -u
cd "$(dirname "$0")/.." || exit 1
secs=$1
shift
work=${FUZZ_WORK:-build/fuzz/work}
bin=${CHRONIS_BUILD:-build}/fuzz/bin
# A preloaded sanitizer runtime (spec/run.sh under SANITIZER=address) is
# not the one the targets carry.
unset LD_PRELOAD
export ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1
failed=0
for t in "$@"; do
  mkdir -p "$work/$t" "$work/crashes"
  log="$work/$t.log"
  if "$bin/$t" -max_total_time="$secs" ${FUZZ_RUNS:+-runs=$FUZZ_RUNS} -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$work/crashes/$t-" "$work/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    echo "$t: $(grep -E '^#[0-9]+' "$log" | tail -n 1)"
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" |
      sed 's/^/  /'
  else
    failed=1
    crash=$(sed -n 's/.*Test unit written to \(.*\)/\1/p' "$log" | tail -n 1)
    echo "$t: FAILED, input: ${crash:-none saved}; log: $log"
    grep -a -m 1 -E 'ERROR: |runtime error|invariant broken' "$log" | sed 's/^/  /'
  fi
done
exit $failed
