#!/usr/bin/env bash
# What `make e2e` needs, installed by itself (idempotent; a second run does nothing):
#   Debian: orthanc, orthanc-dicomweb (a real PACS with DICOMweb), chromium (headless
#           browser), dicom3tools (dciodvfy) - only when missing, and only as root;
#   npm:    tests/e2e/node_modules from the committed package-lock.json (puppeteer-core,
#           @cornerstonejs/adapters, ...) - `npm ci`, no browser download, no install scripts;
#           .e2e/ohif/package/dist - the prebuilt viewer of @ohif/app@3.13.2 (`npm pack`,
#           checked against the sha512 pinned in tests/e2e/package.json, then unpacked).
# Both npm folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/../.."
E2E_DIR=.e2e
export PUPPETEER_SKIP_DOWNLOAD=1 npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

# --- Debian packages ------------------------------------------------------------------
missing=()
command -v chromium >/dev/null || missing+=(chromium)
{ command -v Orthanc >/dev/null || [ -x /usr/sbin/Orthanc ]; } || missing+=(orthanc)
[ -e /usr/share/orthanc/plugins/libOrthancDicomWeb.so ] || [ -e /usr/lib/orthanc/libOrthancDicomWeb.so ] || missing+=(orthanc-dicomweb)
command -v dciodvfy >/dev/null || missing+=(dicom3tools)
command -v node >/dev/null || missing+=(nodejs npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "e2e: missing ${missing[*]}: install them (Debian: apt-get install ${missing[*]})" >&2
    exit 1
  fi
  echo "e2e: installing Debian packages: ${missing[*]}"
  # The orthanc package would start a system service on 4242/8042; the test runs its own
  # Orthanc in a private network namespace, so deny service starts while installing.
  own_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }
  [ -z "$own_policy" ] || rm -f /usr/sbin/policy-rc.d
  if [ -d /run/systemd/system ]; then systemctl disable --now orthanc.service >/dev/null 2>&1 || true; fi
fi

# --- npm: the test's Node packages ----------------------------------------------------
stamp=tests/e2e/node_modules/.dermpacs-lock.sha256
lock_hash=$(sha256sum tests/e2e/package-lock.json | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$lock_hash" ]; then
  echo "e2e: npm ci in tests/e2e"
  (cd tests/e2e && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > "$stamp"
fi

# --- npm: the OHIF viewer dist --------------------------------------------------------
read -r spec integrity < <(node -e '
  const p = require("./tests/e2e/package.json").ohifDist;
  console.log(p.package, p.integrity);')
ohif_stamp=$E2E_DIR/ohif/.installed
if [ "$(cat "$ohif_stamp" 2>/dev/null)" != "$spec $integrity" ] || [ ! -f $E2E_DIR/ohif/package/dist/index.html ]; then
  echo "e2e: fetching $spec (prebuilt OHIF dist)"
  rm -rf $E2E_DIR/ohif && mkdir -p $E2E_DIR/ohif
  tarball=$(cd $E2E_DIR/ohif && npm pack "$spec" --silent)
  actual=$(python3 -c 'import base64, hashlib, sys; print("sha512-" + base64.b64encode(hashlib.sha512(open(sys.argv[1], "rb").read()).digest()).decode())' "$E2E_DIR/ohif/$tarball")
  if [ "$actual" != "$integrity" ]; then
    echo "e2e: $spec integrity mismatch: got $actual, tests/e2e/package.json pins $integrity" >&2
    exit 1
  fi
  tar -xzf "$E2E_DIR/ohif/$tarball" -C $E2E_DIR/ohif
  rm -f "$E2E_DIR/ohif/$tarball"
  echo "$spec $integrity" > "$ohif_stamp"
fi
