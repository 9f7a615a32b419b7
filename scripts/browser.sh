#!/usr/bin/env bash
# Installs what the browser tests (tests/browser/) need and prints the Python to run them:
#   1. Debian's `chromium` (/usr/bin/chromium, or $CHROMIUM if set), with apt-get when
#      missing (as root; no browser is ever downloaded by the driver itself);
#   2. Playwright for Python, pinned in tests/browser/requirements.txt, in a virtualenv
#      at .tools/browser-venv (git-ignored), rebuilt when the pins change.
# Playwright speaks CDP to Chromium directly: chromedriver is not needed.
set -euo pipefail
cd "$(dirname "$0")/.."

chromium="${CHROMIUM:-/usr/bin/chromium}"
if [[ ! -x "$chromium" ]]; then
  echo "installing Debian's chromium (apt-get)" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2
fi

venv=.tools/browser-venv
req=tests/browser/requirements.txt
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  echo "installing $(grep -v '^#' "$req" | tr '\n' ' ')into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: -r "$req" >&2
  cp "$req" "$venv/requirements.txt"
fi
echo "$PWD/$venv/bin/python"
