#!/bin/sh
# Runs every busted spec, each file in its own process (a crash in one file
# is that file's failure, not the end of the run), and ends with the total:
# "N passed, N failed". Exits non-zero on any failure.
# Usage: spec/run.sh [spec files...]
cd "$(dirname "$0")/.." || exit 1
LUA=${LUA:-lua5.4}
BUSTED=$(command -v busted)
[ -n "$BUSTED" ] || { echo "busted not found: run 'make deps'"; exit 1; }
# Under SANITIZER=address and/or undefined (comma-separated, as make takes
# it) the module is instrumented but lua5.4 is not: the sanitizer runtimes
# must be loaded first, into the spec process only (not into this script's
# own tools). ASan checks for leaks at the exit of every process a spec
# starts, but only chronis processes (the Lua interpreter, the host and
# core_test) count: compilers, shells and servers that the specs run
# inherit the runtime and may leak on their own. So no process changes its
# exit status for a report (exitcode=0, and UBSan goes on after one); each
# runtime writes its reports to a file named after the executable (report.*
# for ASan and LSan, ubsan.* for UBSan), and this script reads them.
# spec/lsan.supp names the interpreter's own allocations.
sanlog=
san_preload=
case ",$SANITIZER," in
*,address,*) san_preload=$(${CC:-cc} -print-file-name=libasan.so) ;;
esac
case ",$SANITIZER," in
*,undefined,*) san_preload="$san_preload${san_preload:+ }$(${CC:-cc} -print-file-name=libubsan.so)" ;;
esac
if [ -n "$SANITIZER" ]; then
  [ -n "$san_preload" ] || { echo "SANITIZER=$SANITIZER: spec/run.sh knows address and undefined"; exit 1; }
  sanlog=$(mktemp -d)
  trap 'rm -rf "$sanlog"' EXIT
  asan_opts="abort_on_error=1:detect_leaks=1:exitcode=0:log_exe_name=1:log_path=$sanlog/report${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
  lsan_opts="suppressions=$PWD/spec/lsan.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
  # UBSan's log_path goes to ASan's runtime when both are loaded: it names
  # ASan's file here, and spec/support/ubsan_log.c points UBSan's own
  # reports at ubsan.*.
  ubsan_opts="print_stacktrace=1:halt_on_error=0:log_exe_name=1:log_path=$sanlog/report${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
  case ",$SANITIZER," in
  *,undefined,*)
    ${CC:-cc} -std=c11 -Wall -Wextra -Werror -shared -fPIC -o "$sanlog/ubsan_log.so" \
      spec/support/ubsan_log.c -ldl || { echo "cannot build spec/support/ubsan_log.c"; exit 1; }
    san_preload="$san_preload $sanlog/ubsan_log.so"
    ;;
  esac
  export CHRONIS_UBSAN_LOG="$sanlog/ubsan"
fi
# The reports that chronis processes left for spec file $1: prints them with
# one line per leak naming where it was allocated, or per undefined
# behaviour naming where it happened, and returns how many processes
# reported (0: none).
sanitizer_reports() {
  n=0
  for r in "$sanlog"/report.* "$sanlog"/ubsan.*; do
    [ -e "$r" ] || continue
    exe=${r#"$sanlog"/*.}
    exe=${exe%.*}
    case $exe in
    "$(basename "$LUA")" | chronis | core_test) ;;
    *) continue ;;
    esac
    n=$((n + 1))
    echo "!! $1: a $exe process (pid ${r##*.}) reported: $(grep -m 1 '^SUMMARY' "$r" || grep -m 1 -E 'ERROR:|runtime error:' "$r")"
    # One line per direct leak: its size and the first frames in chronis
    # code below the allocation wrappers.
    awk '/^Direct leak/ { if (l) print l; l = "   leaked " $4 " bytes in " $7 " object(s), allocated by"; k = 0; next }
         /^Indirect leak/ { if (l) print l; l = ""; next }
         l && $5 ~ /^(runtime|adapters)\// && $5 !~ /common\.c/ && k < 3 {
           l = l (k ? " <- " : " ") $4 " (" $5 ")"; k++ }
         END { if (l) print l }' "$r"
    # One line per undefined behaviour: where, and what.
    grep -E 'runtime error:' "$r" | sort -u | sed 's/^/   /'
    cat "$r"
  done
  rm -f "$sanlog"/report.* "$sanlog"/ubsan.*
  return $n
}
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
    # Built with the sanitizers itself: their runtimes are loaded anyway,
    # the preload only adds UBSan's report files.
    if [ -x "${CHRONIS_BUILD:-build}/core_test" ]; then
      LD_PRELOAD=$san_preload ASAN_OPTIONS=${sanlog:+$asan_opts} LSAN_OPTIONS=${sanlog:+$lsan_opts} \
        UBSAN_OPTIONS=${sanlog:+$ubsan_opts} \
        timeout -k 10 "${SPEC_TIMEOUT:-900}" "${CHRONIS_BUILD:-build}/core_test" 2>&1 | tee "$out"
    else
      echo "${CHRONIS_BUILD:-build}/core_test is missing: build it with 'make' (make test does)" |
        tee "$out"
    fi
  elif [ -n "$sanlog" ]; then
    LD_PRELOAD=$san_preload ASAN_OPTIONS=$asan_opts LSAN_OPTIONS=$lsan_opts UBSAN_OPTIONS=$ubsan_opts \
      timeout -k 10 "${SPEC_TIMEOUT:-900}" "$LUA" "$BUSTED" --helper=spec/support/helper.lua "$f" 2>&1 |
      tee "$out"
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
  if [ -n "$sanlog" ] && ! sanitizer_reports "$f"; then
    echo "!! $f: sanitizer reports from chronis code (above): counted as 1 failure"
    failed=$((failed + 1))
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
