#!/bin/sh
# Installs the Debian packages chronis needs, and for the tests the npm test
# servers pinned by spec/package-lock.json. Idempotent.
#   sh tools/deps.sh [--quiet] [run|test]
#     run    what building and running need (make all, make run)
#     fuzz   that, plus clang and its fuzzer runtime (make fuzz)
#     test   all of that, plus the test tools and servers (make deps, make
#            test, whose specs run the fuzzers briefly); the default
#     --quiet  print nothing when everything is present (the Makefile's own
#            calls); without it, one line
# Something missing that cannot be installed here (no apt-get, not root and
# no sudo, no network to the registry) ends it with exit status 1 and one
# line on stderr naming what to install by hand.
set -u
level=test
quiet=0
for a in "$@"; do
  case $a in
    --quiet) quiet=1 ;;
    run | fuzz | test) level=$a ;;
    *)
      echo "deps: unknown argument '$a' (usage: tools/deps.sh [--quiet] [run|fuzz|test])" >&2
      exit 2
      ;;
  esac
done
root=$(cd "$(dirname "$0")/.." && pwd)

# Running needs the compiler, pkg-config, the -dev libraries, the Lua
# interpreter and the zone database; the tests add busted, cjson and the
# servers the specs start.
RUN_PKGS="build-essential pkg-config liblua5.4-dev lua5.4 libuv1-dev libhiredis-dev
libpq-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev libhttp-parser-dev tzdata"
# libFuzzer and the sanitizers' runtimes come with clang-rt.
FUZZ_PKGS="clang-14 libclang-rt-14-dev"
# chromium drives the dashboard's browser specs, prometheus scrapes /metrics.
TEST_PKGS="lua-cjson lua-busted redis-server postgresql chromium prometheus"
pkgs=$RUN_PKGS
[ "$level" = run ] || pkgs="$pkgs $FUZZ_PKGS"
[ "$level" = test ] && pkgs="$pkgs $TEST_PKGS"

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
if [ "$level" = test ]; then
  # Node.js may come from another packaging that bundles npm (and conflicts
  # with Debian's npm package): only ask for it when the commands are absent.
  command -v node >/dev/null 2>&1 || missing="$missing nodejs"
  command -v npm >/dev/null 2>&1 || missing="$missing npm"
fi

# One line, whatever went wrong: what to install by hand, and why it was not.
cannot() { # reason
  echo "deps: cannot install packages here ($1); install them by hand: apt-get install$missing" >&2
  exit 1
}

log=$(mktemp "${TMPDIR:-/tmp}/chronis-deps.XXXXXX") || exit 1
ulog=$log.update
trap 'rm -f "$log" "$ulog"' EXIT
# The most telling line of a failed command's output (file $1): its last
# error.
reason() {
  r=$(grep -E '^(E:|npm ERR!|npm error)' "$1" | tail -n 1)
  [ -n "$r" ] || r=$(grep -v '^[[:space:]]*$' "$1" | tail -n 1)
  printf '%s' "$r" | tr -s '\t ' '  ' | cut -c1-200
}

if [ -n "$missing" ]; then
  command -v apt-get >/dev/null 2>&1 || cannot "no apt-get on this machine"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null 2>&1 || cannot "not root, and no sudo"
    SUDO=sudo
  fi
  echo "deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt_install() { $SUDO apt-get install -y -qq --no-install-recommends $missing >"$log" 2>&1; }
  # The package lists are refreshed only when the install fails with the
  # ones present (none yet on a fresh machine, or stale ones). apt-get
  # update says it could not fetch them with warnings and exit status 0:
  # the install that then fails is told why.
  if ! apt_install; then
    $SUDO apt-get update -qq >"$ulog" 2>&1 || cannot "apt-get update: $(reason "$ulog")"
    if ! apt_install; then
      why=$(reason "$log")
      fetch=$(grep -m 1 'Failed to fetch' "$ulog" | sed 's/.*  //' | cut -c1-120)
      [ -z "$fetch" ] || why="$why; the package lists could not be fetched: $fetch"
      cannot "apt-get: $why"
    fi
  fi
fi

# The spec servers, reinstalled when spec/package-lock.json is newer than
# the copy npm keeps in node_modules (a fresh clone has none).
installed=0
if [ "$level" = test ] &&
  ! [ "$root/spec/node_modules/.package-lock.json" -nt "$root/spec/package-lock.json" ]; then
  echo "deps: installing the spec servers (npm ci --prefix spec)"
  npm ci --prefix "$root/spec" --no-audit --no-fund --loglevel=error >"$log" 2>&1 || {
    echo "deps: cannot install the spec servers of spec/package.json (npm: $(reason "$log"));" \
      "install them by hand: npm ci --prefix spec" >&2
    exit 1
  }
  installed=1
fi

if [ -n "$missing" ] || [ "$installed" = 1 ]; then
  echo "deps: done"
elif [ "$quiet" = 0 ]; then
  echo "deps: all packages present"
fi
