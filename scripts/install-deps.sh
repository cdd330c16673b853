#!/usr/bin/env bash
# Installs the Debian packages lethe needs, when they are missing and we can
# (Debian/Ubuntu, as root or with passwordless sudo). Never fails `make run`
# on its own: `lethe run` says exactly what is missing at start.
#   install-deps.sh run   packages for running the pipeline
#   install-deps.sh test  plus the tools tests use
set -u
want=(pocketsphinx pocketsphinx-en-us)
[ "${1:-run}" = test ] && want+=(espeak-ng sox chromium)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
# The dev console's browser test: playwright-core (pinned in
# scripts/browser/package-lock.json) drives Debian's chromium; no browser
# download.
if [ "${1:-run}" = test ] && command -v npm >/dev/null 2>&1 && [ ! -d "$(dirname "$0")/browser/node_modules/playwright-core" ]; then
  npm ci --prefix "$(dirname "$0")/browser" --no-audit --no-fund >/dev/null 2>&1 || echo "lethe: npm ci --prefix scripts/browser failed" >&2
fi

[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
  echo "lethe: please install: ${missing[*]} (Debian package names)" >&2
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if sudo -n true 2>/dev/null; then sudo="sudo -n"; else
    echo "lethe: not root; install with: sudo apt-get install ${missing[*]}" >&2
    exit 0
  fi
fi
echo "lethe: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
  $sudo apt-get update -qq >/dev/null 2>&1
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
