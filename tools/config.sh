#!/bin/sh
# Writes the build's configuration, a makefile the Makefile includes
# (build/config.mk): installs the packages first (tools/deps.sh LEVEL),
# then records what pkg-config says about them.
#   sh tools/config.sh LEVEL OUT PKG...
# When the packages cannot be installed or found, OUT makes make stop with
# deps.sh's one line, and is remade (installation tried again) on the next
# run: this script itself then succeeds, so make prints nothing but that
# line (a failed recipe would add make's own error lines).
set -u
level=$1
out=$2
shift 2
here=$(dirname "$0")

fail() { # one-line message
  [ -n "$1" ] || set -- "deps: tools/deps.sh $level failed without a message"
  # In a make assignment, $ and # are special.
  msg=$(printf '%s' "$1" | tr -d '\n' | sed -e 's/\$/$$/g' -e 's/#/\\#/g')
  {
    echo "# The build's packages could not be installed: make stops right after"
    echo "# writing this (MAKE_RESTARTS is set when it re-reads its makefiles),"
    echo "# and remakes it, trying again, the next time it runs."
    echo "CONFIG_ERROR := $msg"
    echo "ifneq (\$(MAKE_RESTARTS),)"
    echo "\$(error \$(CONFIG_ERROR))"
    echo "endif"
    echo "$out: FORCE"
  } >"$out"
  exit 0
}

# deps.sh's progress goes to the terminal; its stderr (the one line saying
# what to install by hand) is kept for the message above.
exec 3>&1
err=$(sh "$here/deps.sh" --quiet "$level" 2>&1 1>&3 3>&-) || fail "$err"
exec 3>&-

missing=""
for p in "$@"; do pkg-config --exists "$p" 2>/dev/null || missing="$missing $p"; done
[ -z "$missing" ] || fail "config: pkg-config does not find$missing (see 'make deps')"

# The Lua library itself is left out of PKG_LIBS, the module's link line:
# its symbols come from the interpreter that loads core.so.
libs=""
for p in "$@"; do [ "$p" = lua5.4 ] || libs="$libs $p"; done
pcs=$(pkg-config --path "$@" | tr '\n' ' ')
{
  echo "# Written by tools/config.sh from pkg-config; make remakes it when the"
  echo "# Makefile, the scripts or one of these .pc files change or vanish."
  echo "PKG_CFLAGS = $(pkg-config --cflags "$@")"
  # shellcheck disable=SC2086
  echo "PKG_LIBS = $(pkg-config --libs $libs)"
  echo "LUA_LIBS = $(pkg-config --libs lua5.4)"
  echo "$out: $pcs"
  echo "$pcs:"
} >"$out.tmp" && mv "$out.tmp" "$out"
