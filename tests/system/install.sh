#!/usr/bin/env bash
# Installs the Debian packages that `make test` (or `make e2e`) needs, only those missing:
#   tests/system/install.sh test|e2e
# As root with apt-get: one `apt-get update`, then `apt-get install` of what is missing; a
# second run finds everything and does nothing. Otherwise (not root, no apt) it stops at
# once with one line naming the packages, so nobody sees a wall of failing tests instead.
# The list is tests/system/packages.txt (DERMPACS_SYSTEM_PACKAGES names another, for its test).
set -euo pipefail
cd "$(dirname "$0")"
want=${1:-test}
case "$want" in test|e2e) ;; *) echo "usage: $0 test|e2e" >&2; exit 2 ;; esac

found() {  # any of the '|'-separated commands or paths exists
  local alternative
  IFS='|' read -ra alternatives <<< "$1"
  for alternative in "${alternatives[@]}"; do
    if [[ $alternative == /* ]]; then [ -e "$alternative" ] && return 0
    else command -v "$alternative" >/dev/null 2>&1 && return 0; fi
  done
  return 1
}

missing=()
while read -r who check package _; do
  [[ -z ${who:-} || $who == \#* ]] && continue
  [[ $who == test || $want == e2e ]] || continue
  found "$check" && continue
  [[ " ${missing[*]:-} " == *" $package "* ]] || missing+=("$package")
done < "${DERMPACS_SYSTEM_PACKAGES:-packages.txt}"
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "make $want needs Debian packages that are missing; install them first: apt-get install ${missing[*]}" >&2
  exit 1
fi
echo "installing Debian packages for make $want: ${missing[*]}"
# The orthanc package would start a system service on ports 4242/8042; the tests start their
# own Orthanc processes on free ports in private network namespaces, so deny service starts
# while installing (policy-rc.d exit 101 = denied) and disable the unit where systemd runs.
own_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
fi
trap '[ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d' EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
if [ -d /run/systemd/system ]; then systemctl disable --now orthanc.service >/dev/null 2>&1 || true; fi
