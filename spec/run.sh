#!/bin/sh
# Runs every busted spec, each file in its own process (a crash in one file
# is that file's failure, not the end of the run), and ends with the total:
# "N passed, N failed". Exits non-zero on any failure.
# Usage: spec/run.sh [spec files...]
cd "$(dirname "$0")/.." || exit 1
LUA=${LUA:-lua5.4}
BUSTED=$(command -v busted)
[ -n "$BUSTED" ] || { echo "busted not found: run 'make deps'"; exit 1; }
# Under SANITIZER=address the module is instrumented but lua5.4 is not:
# the ASan runtime must be loaded first. Leak checking is off because the
# interpreter itself does not free everything at exit.
if [ "$SANITIZER" = address ]; then
  LD_PRELOAD=$(${CC:-cc} -print-file-name=libasan.so)
  export LD_PRELOAD
  ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
  export ASAN_OPTIONS
fi
files="$*"
# The C core's own tests (spec/core_test.c, built by make) come first in a
# full run.
[ -n "$files" ] || files="spec/core_test.c $(find spec -name '*_spec.lua' | sort)"
passed=0
failed=0
for f in $files; do
  echo "== $f"
  out=$(mktemp)
  # A hung spec file must not hold the whole run: it is stopped after
  # SPEC_TIMEOUT seconds and counted as a failure.
  if [ "$f" = spec/core_test.c ]; then
    if [ -x "${CHRONIS_BUILD:-build}/core_test" ]; then
      LD_PRELOAD= timeout -k 10 "${SPEC_TIMEOUT:-900}" "${CHRONIS_BUILD:-build}/core_test" 2>&1 |
        tee "$out"
    else
      echo "${CHRONIS_BUILD:-build}/core_test is missing: build it with 'make' (make test does)" |
        tee "$out"
    fi
  else
    timeout -k 10 "${SPEC_TIMEOUT:-900}" "$LUA" "$BUSTED" --helper=spec/support/helper.lua "$f" 2>&1 |
      tee "$out"
  fi
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1)
  if [ -z "$line" ]; then
    echo "!! $f ended without a summary (crash?): counted as 1 failure"
    failed=$((failed + 1))
  else
    p=${line%% passed*}
    rest=${line#*, }
    passed=$((passed + p))
    failed=$((failed + ${rest%% failed*}))
  fi
  rm -f "$out"
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
