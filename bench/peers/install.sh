#!/bin/sh
# Installs the peer schedulers at pinned versions and records what is
# usable in build/bench/peers.status (read by bench/harness.lua).
#   sh bench/peers/install.sh          full: a pinned peer that cannot be
#                                      installed is an error (exit 1)
#   sh bench/peers/install.sh --smoke  only the npm peers (repo-local, a few
#                                      seconds); Debian packages are used
#                                      when present, never installed
# APScheduler 3 comes from Debian (python3-apscheduler, for /usr/bin/python3)
# with python3-sqlalchemy for its SQLite job store; BullMQ, graphile-worker
# and croner from npm, pinned by bench/peers/node/package-lock.json.
cd "$(dirname "$0")/../.." || exit 1
smoke=0
[ "${1:-}" = "--smoke" ] && smoke=1
APT_PINS="python3-apscheduler=3.9.1-2 python3-sqlalchemy=1.4.46+ds1-1"
STATUS=build/bench/peers.status
mkdir -p build/bench
: >"$STATUS"
rc=0

have_pin() { # package=version
  [ "$(dpkg-query -W -f='${Version}' "${1%%=*}" 2>/dev/null)" = "${1#*=}" ]
}

missing=""
for p in $APT_PINS; do have_pin "$p" || missing="$missing $p"; done
if [ -n "$missing" ] && [ $smoke = 0 ]; then
  echo "bench: installing$missing"
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 ||
    { $SUDO apt-get update -qq >/dev/null 2>&1 &&
      $SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null; }
  missing=""
  for p in $APT_PINS; do have_pin "$p" || missing="$missing $p"; done
fi
if [ -z "$missing" ] && /usr/bin/python3 -c 'import apscheduler, sqlalchemy, pytz' 2>/dev/null; then
  echo "apscheduler=ok" >>"$STATUS"
elif [ $smoke = 1 ]; then
  echo "apscheduler=not installed ($missing ); make bench installs it, smoke does not (apt is too slow for make test)" >>"$STATUS"
else
  echo "apscheduler=could not install$missing" >>"$STATUS"
  echo "bench: ERROR: could not install$missing" >&2
  rc=1
fi

node_ok=0
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
  major=$(node -p 'process.versions.node.split(".")[0]')
  if [ "$major" -lt 18 ]; then
    echo "node=Node $major is too old for the npm peers (18 or later)" >>"$STATUS"
  else
    dir=bench/peers/node
    if [ ! -f $dir/node_modules/.package-lock.json ] ||
       [ $dir/package-lock.json -nt $dir/node_modules/.package-lock.json ]; then
      [ $smoke = 1 ] || echo "bench: npm ci in $dir"
      if [ $smoke = 1 ] && command -v timeout >/dev/null; then t="timeout 90"; else t=""; fi
      (cd $dir && $t npm ci --no-audit --no-fund --loglevel=error >/dev/null 2>npm-error.log) &&
        rm -f $dir/npm-error.log
    fi
    if [ -f $dir/node_modules/bullmq/package.json ] &&
       [ -f $dir/node_modules/graphile-worker/package.json ] &&
       [ -f $dir/node_modules/croner/package.json ]; then
      node_ok=1
      echo "node=ok" >>"$STATUS"
    else
      echo "node=npm ci failed in $dir (see $dir/npm-error.log)" >>"$STATUS"
    fi
  fi
else
  echo "node=node/npm not found (make deps installs them)" >>"$STATUS"
fi
if [ $node_ok = 0 ] && [ $smoke = 0 ]; then
  echo "bench: ERROR: npm peers: $(grep '^node=' "$STATUS" | cut -d= -f2-)" >&2
  rc=1
fi

# perf, for the profiles of full runs only.
if [ $smoke = 0 ] && ! command -v perf >/dev/null 2>&1; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO=sudo
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends linux-perf \
    >/dev/null 2>&1 || echo "bench: perf could not be installed: no profiles" >&2
fi
exit $rc
