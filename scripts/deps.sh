#!/bin/sh
# Installs every Debian package chronis and its tests need. Idempotent: one
# line and nothing else when all are present.
set -e
PKGS="build-essential pkg-config liblua5.4-dev lua5.4 libuv1-dev libhiredis-dev
libpq-dev libjansson-dev libsqlite3-dev libcurl4-openssl-dev libssl-dev
lua-cjson lua-busted tzdata redis-server postgresql"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
    missing="$missing $p"
done
# Node.js may come from another packaging that bundles npm (and conflicts
# with Debian's npm package): only ask for it when the commands are absent.
command -v node >/dev/null 2>&1 || missing="$missing nodejs"
command -v npm >/dev/null 2>&1 || missing="$missing npm"
# Test servers from npm (dynalite), pinned by spec/package-lock.json;
# installed only when spec/node_modules lacks them.
spec_npm() {
  root=$(dirname "$0")/..
  [ -d "$root/spec/node_modules/dynalite" ] && return 0
  echo "deps: installing the spec servers (npm ci --prefix spec)"
  npm ci --prefix "$root/spec" --no-audit --no-fund --loglevel=error >/dev/null
}
if [ -z "$missing" ]; then
  spec_npm
  echo "deps: all packages present"
  exit 0
fi
echo "deps: installing$missing"
SUDO=""
[ "$(id -u)" = 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
spec_npm
echo "deps: done"
