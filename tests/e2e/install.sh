#!/usr/bin/env bash
# What `make e2e` needs, installed by itself (idempotent; a second run does nothing):
#   Debian: tests/system/packages.txt (chromium, orthanc, orthanc-dicomweb, dicom3tools, ...)
#           - only when missing, and only as root;
#   npm:    tests/e2e/node_modules from the committed package-lock.json (puppeteer-core,
#           @cornerstonejs/adapters, ...) - `npm ci`, no browser download, no install scripts;
#           .e2e/ohif/package/dist - the prebuilt viewer of @ohif/app@3.13.2 (`npm pack`,
#           checked against the sha512 pinned in tests/e2e/package.json, then unpacked).
# Both npm folders are git-ignored.
set -euo pipefail
cd "$(dirname "$0")/../.."
E2E_DIR=.e2e
export PUPPETEER_SKIP_DOWNLOAD=1 npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false

# --- Debian packages (tests/system/packages.txt, the e2e lines and the test lines) ------
tests/system/install.sh e2e

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
