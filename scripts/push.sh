#!/usr/bin/env bash
# Pushes the OCI image `make image` wrote (target/oci) to IMAGE with skopeo, the standard
# tool for copying images between registries (a Debian package: installed if missing).
# Credentials and TLS are skopeo's: `skopeo login REGISTRY`, or REGISTRY_AUTH_FILE; TLS is
# verified unless TLS_VERIFY=false (a plain-HTTP registry on loopback, as in the tests).
#   scripts/push.sh REGISTRY/REPO:TAG [LAYOUT]
# Prints the digest the registry reports, checked against the digest of the built image.
set -euo pipefail
cd "$(dirname "$0")/.."
image="${1:?usage: scripts/push.sh REGISTRY/REPO:TAG [LAYOUT]}"
layout="${2:-target/oci}"
tls="${TLS_VERIFY:-true}"
[[ "$tls" == true || "$tls" == false ]] || { echo "TLS_VERIFY must be true or false" >&2; exit 2; }
[[ -f "$layout/index.json" ]] || { echo "$layout is not an OCI image layout: run make image" >&2; exit 2; }
if ! command -v skopeo >/dev/null; then
  echo "installing skopeo (Debian package)" >&2
  { apt-get update -qq && apt-get install -y -qq skopeo; } >&2
fi
built="$(python3 scripts/oci.py digest "$layout")"
# --all: the native image is an index of one image per platform; every one of them goes.
skopeo copy --quiet --all --dest-tls-verify="$tls" "oci:$layout" "docker://$image"
# The digest of what the registry serves for the tag, as stored (an index stays an index).
pushed="sha256:$(skopeo inspect --raw --tls-verify="$tls" "docker://$image" | sha256sum | cut -d' ' -f1)"
if [[ "$pushed" != "$built" ]]; then
  echo "the registry reports $pushed for $image, but the built image is $built" >&2
  exit 1
fi
repo="${image%@*}"
[[ "${repo##*/}" == *:* ]] && repo="${repo%:*}"   # drop the tag, not a registry port
echo "pushed:         $image"
echo "image digest:   $pushed"
echo "pinned:         $repo@$pushed"
