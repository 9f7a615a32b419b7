#!/usr/bin/env python3
"""Ready-to-apply Istio manifests: istio/ with each WasmPlugin pinned to the built image.

  scripts/istio-manifests.py --image REGISTRY/REPO:TAG --digest sha256:D --out target/istio

Copies the Kubernetes resources of istio/ (the base, whose WasmPlugins carry no url on
purpose: Istio's admission refuses them, so they cannot be applied by mistake) to OUT and
gives each WasmPlugin `url: oci://REGISTRY/REPO@sha256:D` and `sha256: D` (for an oci://
url istio-agent compares sha256 with the image manifest digest). Files that are not
resources to apply — Helm values (istiod-values.yaml), patches (proxy-env.yaml) — stay
behind. Also writes OUT/kustomization.yaml, so both `kubectl apply -f OUT` and
`kubectl apply -k OUT` work. Text edits only: comments stay.

The Gateway API variant (files named *gateway-api*: they need the Gateway API CRDs and
deploy a second gateway) goes to OUT/gateway-api/ instead, with its own copies of the
files it shares with the classic set (service.yaml, destinationrule.yaml) and its own
kustomization.yaml: `kubectl apply -k OUT/gateway-api`.

istio/waypoint/ (tether in the namespace's ambient waypoint) goes to OUT/waypoint/, pinned
the same way, with its own kustomization.yaml: `kubectl apply -k OUT/waypoint` next to the
classic set. istio/extras/ (optional resources, such as the EnvoyFilter for
DestinationRule subsets) is copied to OUT/extras/ as it is, to apply one by one.

  scripts/istio-manifests.py --native-image REGISTRY/REPO:TAG --digest sha256:D --out target/istio-native

writes istio/native/ (the native build's recipe, docs/istio.md) to OUT instead, with its
init container's image, a placeholder in the source, pinned to REGISTRY/REPO@sha256:D (the
image index `make native-image` built): the EnvoyFilter, and the gateway chart's values for
`helm upgrade ... -f OUT/gateway-values.yaml`.
"""
import argparse
import os
import re
import sys


# The native recipe's image until it is pinned (istio/native/).
NATIVE_IMAGE_PLACEHOLDER = "registry.example.com/tether-native:0.1.0"

# Resources the Gateway API variant (OUT/gateway-api/) needs from the classic set.
SHARED = {"service.yaml", "destinationrule.yaml"}


def pinned_repo(image):
    """REGISTRY/REPO from REGISTRY/REPO:TAG or REGISTRY/REPO@sha256:... (ports kept)."""
    repo = image.split("@", 1)[0]
    last = repo.rsplit("/", 1)
    if "/" not in repo:
        sys.exit(f"istio-manifests: IMAGE {image!r} must be REGISTRY/REPO[:TAG]")
    if ":" in last[1]:
        repo = repo.rsplit(":", 1)[0]
    return repo


def pin(text, name, url, digest):
    """A WasmPlugin's text with `url` and `sha256` before its `pluginName`."""
    if re.search(r"^  (url|sha256):", text, re.M):
        sys.exit(f"istio-manifests: {name} already has a url or sha256; the base must not")
    text = re.sub(r"^  # No url or sha256.*?\n(?=  [^#])",
                  "  # Pinned to the built image by `make istio` (scripts/istio-manifests.py).\n",
                  text, count=1, flags=re.M | re.S)
    text, n = re.subn(r"^(  pluginName: .*)$", rf"  url: {url}\n  sha256: {digest[len('sha256:'):]}\n\1",
                      text, count=1, flags=re.M)
    if n != 1:
        sys.exit(f"istio-manifests: {name}: no `pluginName:` line to put the url before")
    return text


def copy_subdir(src, out, url, digest, kustomize):
    """The resources of `src` to `out`, WasmPlugins pinned; their names, sorted."""
    os.makedirs(out, exist_ok=True)
    names = []
    for name in sorted(f for f in os.listdir(src) if f.endswith(".yaml")):
        with open(os.path.join(src, name)) as f:
            text = f.read()
        if re.search(r"^kind: WasmPlugin$", text, re.M):
            text = pin(text, name, url, digest)
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
        names.append(name)
    if kustomize:
        with open(os.path.join(out, "kustomization.yaml"), "w") as f:
            f.write("# Written by scripts/istio-manifests.py (make istio).\n"
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
            f.writelines(f"- {name}\n" for name in names)
    return names


def native(image, digest, src, out):
    """istio/native/ to `out`, the init container's image pinned to `image`@`digest`."""
    pinned = f"{pinned_repo(image)}@{digest}"
    os.makedirs(out, exist_ok=True)
    names = sorted(f for f in os.listdir(src) if f.endswith(".yaml"))
    for name in names:
        with open(os.path.join(src, name)) as f:
            text = f.read()
        with open(os.path.join(out, name), "w") as f:
            f.write(text.replace(NATIVE_IMAGE_PLACEHOLDER, pinned))
    print(f"wrote {', '.join(names)} to {out}/ (image {pinned})")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--image")
    ap.add_argument("--native-image", help="write istio/native/ pinned to this image instead")
    ap.add_argument("--digest", required=True)
    ap.add_argument("--istio-dir", default="istio")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    if not re.fullmatch(r"sha256:[0-9a-f]{64}", args.digest):
        sys.exit(f"istio-manifests: --digest {args.digest!r} is not sha256:<64 hex digits>")
    if args.native_image:
        native(args.native_image, args.digest, os.path.join(args.istio_dir, "native"), args.out)
        return
    if not args.image:
        sys.exit("istio-manifests: --image (or --native-image) is required")
    url = f"oci://{pinned_repo(args.image)}@{args.digest}"
    gateway_api_dir = os.path.join(args.out, "gateway-api")
    os.makedirs(gateway_api_dir, exist_ok=True)
    names, gateway_api_names = [], []
    plugins = 0
    for name in sorted(f for f in os.listdir(args.istio_dir) if f.endswith(".yaml")):
        with open(os.path.join(args.istio_dir, name)) as f:
            text = f.read()
        if not re.search(r"^apiVersion: ", text, re.M) or name == "kustomization.yaml":
            continue  # Helm values or a patch, not a resource to apply
        if "gateway-api" in name:
            gateway_api_names.append(name)
        else:
            names.append(name)
        if re.search(r"^kind: WasmPlugin$", text, re.M):
            text = pin(text, name, url, args.digest)
            plugins += 1
        if "gateway-api" in name or name in SHARED:
            with open(os.path.join(gateway_api_dir, name), "w") as f:
                f.write(text)
            if name in SHARED:
                gateway_api_names.append(name)
        if "gateway-api" not in name:
            with open(os.path.join(args.out, name), "w") as f:
                f.write(text)
    missing = SHARED - set(gateway_api_names)
    if missing:
        sys.exit(f"istio-manifests: {args.istio_dir}/ lacks {', '.join(sorted(missing))}")
    for out, files in ((args.out, names), (gateway_api_dir, sorted(gateway_api_names))):
        with open(os.path.join(out, "kustomization.yaml"), "w") as f:
            f.write("# Written by scripts/istio-manifests.py (make istio).\n"
                    "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n")
            f.writelines(f"- {name}\n" for name in files)
    waypoint = copy_subdir(os.path.join(args.istio_dir, "waypoint"), os.path.join(args.out, "waypoint"),
                           url, args.digest, kustomize=True)
    extras = copy_subdir(os.path.join(args.istio_dir, "extras"), os.path.join(args.out, "extras"),
                         url, args.digest, kustomize=False)
    print(f"wrote {len(names)} manifests to {args.out}/, {len(gateway_api_names)} to {gateway_api_dir}/, "
          f"{len(waypoint)} to waypoint/ and {len(extras)} to extras/ ({plugins + 1} WasmPlugins with url: {url})")


if __name__ == "__main__":
    main()
