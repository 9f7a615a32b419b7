#!/usr/bin/env bash
# Builds tether's native image (`make native-image`): an OCI image layout in target/oci-native
# with one image per platform, linux/amd64 and linux/arm64, each holding
#   /libtether.so   the native module, built for Envoy $ENVOY_VERSION (default 1.39.3: what
#                   Envoy Gateway v1.9 and Istio 1.31 run; docs/native.md)
#   /install        its entrypoint, a static binary that copies /libtether.so into the
#                   directory it is given (an init container's job)
# The module may need no more than the C library: Envoy's distroless images hold glibc and
# nothing else, so the unwinder is linked in statically (libgcc_eh, through a linker script
# named libgcc_s.so that the linker finds first), and the glibc symbol versions it needs
# must be no newer than GLIBC_FLOOR (Debian 12, the oldest base of the Envoy images: 2.36).
# Both are checked here, for each platform, and the build fails otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
ENVOY_VERSION="${ENVOY_VERSION:-1.39.3}"
GLIBC_FLOOR=2.36
out=target/native-image

# Cross toolchain (Debian) and Rust targets, installed on first use.
command -v aarch64-linux-gnu-gcc >/dev/null || { apt-get update -qq && apt-get install -y -qq gcc-aarch64-linux-gnu; }
for t in aarch64-unknown-linux-gnu x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
  rustup target list --installed | grep -qx "$t" || rustup target add "$t"
done

declare -A GNU=([amd64]=x86_64-unknown-linux-gnu [arm64]=aarch64-unknown-linux-gnu)
declare -A MUSL=([amd64]=x86_64-unknown-linux-musl [arm64]=aarch64-unknown-linux-musl)
declare -A CC=([amd64]=gcc [arm64]=aarch64-linux-gnu-gcc)
platforms=()
for arch in amd64 arm64; do
  gnu=${GNU[$arch]} musl=${MUSL[$arch]} cc=${CC[$arch]}
  shim="$out/shim-$arch"
  mkdir -p "$shim"
  echo "INPUT($("$cc" -print-file-name=libgcc_eh.a))" > "$shim/libgcc_s.so"
  upper=$(echo "$gnu" | tr a-z- A-Z_)
  env "CARGO_TARGET_${upper}_LINKER=$cc" "CARGO_TARGET_${upper}_RUSTFLAGS=-L native=$PWD/$shim" \
    ENVOY_VERSION="$ENVOY_VERSION" cargo build --profile native --features native --lib \
    --target "$gnu" --target-dir "$out/build"
  upper=$(echo "$musl" | tr a-z- A-Z_)
  env "CARGO_TARGET_${upper}_LINKER=$cc" cargo build --release -p tether-install \
    --target "$musl" --target-dir "$out/build"
  module="$out/build/$gnu/native/libtether.so"
  install="$out/build/$musl/release/install"
  needed=$(readelf -d "$module" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v -e '^libc\.so\.6$' -e '^ld-linux' || true)
  [ -z "$needed" ] || { echo "$module ($arch) needs more than the C library: $needed" >&2; exit 1; }
  newest=$(objdump -T "$module" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -V | tail -1)
  [ "$(printf '%s\n%s\n' "$newest" "$GLIBC_FLOOR" | sort -V | tail -1)" = "$GLIBC_FLOOR" ] \
    || { echo "$module ($arch) needs GLIBC_$newest, newer than $GLIBC_FLOOR" >&2; exit 1; }
  readelf -d "$install" | grep -q NEEDED && { echo "$install ($arch) is not static" >&2; exit 1; }
  echo "linux/$arch: $module needs only the C library, GLIBC_$newest at most; $install is static"
  platforms+=("$arch=$module,$install")
done
rm -rf target/oci-native
python3 scripts/oci.py native target/oci-native "$ENVOY_VERSION" "${platforms[@]}"
