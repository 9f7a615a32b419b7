#!/usr/bin/env bash
# Installs what the MCP suite (tests/mcp.rs, tests/mcp/) needs and prints the Python to run
# its servers and client: the MCP Python SDK and httpx2 with HTTP/2, pinned in
# tests/mcp/requirements.txt, in a virtualenv at .tools/mcp-venv (git-ignored), rebuilt
# when the pins change. Wheels only: nothing is compiled.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.tools/mcp-venv
req=tests/mcp/requirements.txt
# One install at a time (the test files may ask for it from two test threads at once).
mkdir -p .tools
exec 9>.tools/mcp-venv.lock
flock 9
if ! cmp -s "$req" "$venv/requirements.txt" 2>/dev/null; then
  echo "installing $(grep -v '^#' "$req" | grep -o '^[a-z0-9-]*==[^ ]*' | grep -E '^(mcp|httpx2|h2)==' | tr '\n' ' ')and their pinned dependencies into $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: --no-deps -r "$req" >&2
  "$venv/bin/python" -m pip check >&2
  cp "$req" "$venv/requirements.txt"
fi
echo "$PWD/$venv/bin/python"
