#!/usr/bin/env bash
# A local OCI registry for tests: Debian's docker-registry (the CNCF distribution
# registry), unpacked from its .deb into .tools/ (no service is installed or started),
# listening on 127.0.0.1 only, storing into a scratch directory.
#   scripts/registry.sh install        unpack it if missing; print the binary's path
#   scripts/registry.sh run PORT DIR   run it in the foreground on 127.0.0.1:PORT
set -euo pipefail
cd "$(dirname "$0")/.."

dir=".tools/docker-registry"
bin="$dir/usr/bin/docker-registry"

install() {
  [[ -x "$bin" ]] && return 0
  mkdir -p .tools
  # Tests start registries in parallel: one install at a time, the others wait for it.
  (
    flock 9
    [[ -x "$bin" ]] && exit 0
    echo "installing docker-registry (Debian package, unpacked) into $dir" >&2
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    if ! (cd "$tmp" && apt-get download docker-registry >/dev/null 2>&1); then
      apt-get update -qq >&2
      (cd "$tmp" && apt-get download docker-registry >&2)
    fi
    rm -rf "$dir"
    dpkg-deb -x "$tmp"/docker-registry_*.deb "$dir"
    [[ -x "$bin" ]] || { echo "docker-registry: $bin missing after unpacking" >&2; exit 1; }
  ) 9>.tools/docker-registry.lock
}

case "${1:-}" in
  install)
    install
    echo "$PWD/$bin"
    ;;
  run)
    port="${2:?port}"; data="${3:?data directory}"
    install
    mkdir -p "$data"
    cat >"$data/config.yml" <<YAML
version: 0.1
log: { level: warn }
storage:
  filesystem: { rootdirectory: $data/storage }
  delete: { enabled: true }
http:
  addr: 127.0.0.1:$port
YAML
    exec "$bin" serve "$data/config.yml"
    ;;
  *)
    echo "usage: scripts/registry.sh install | run PORT DIR" >&2; exit 2 ;;
esac
