#!/usr/bin/env python3
"""tether's .wasm as an OCI image Istio pulls, and its native module as a multi-platform
image for an init container, with no docker engine (Python stdlib only).

Format: the Wasm image spec's *compat* variant with OCI media types — what `docker build`
of `FROM scratch` + `COPY tether.wasm plugin.wasm` produces, and the first format istio-agent
tries for an OCI manifest (pkg/wasm/imagefetcher.go: last layer
application/vnd.oci.image.layer.v1.tar+gzip, a tar.gz holding plugin.wasm). Any registry
stores it like any image. The build is reproducible: the same .wasm gives the same digest.

Why a layout writer here: the standard tools either need a container engine (docker,
podman, buildah) or do not write a byte-reproducible single-file image (fixed tar header,
gzip without timestamp), and the digest is what WasmPlugin pins. Moving images between
layouts and registries is skopeo's job (scripts/push.sh); nothing here speaks to a registry.

  oci.py build WASM LAYOUT_DIR      OCI image layout; prints digest and sha256
  oci.py digest LAYOUT_DIR          the image (manifest) digest, sha256:...
  oci.py extract LAYOUT_DIR OUT     checks every digest, writes plugin.wasm as istio-agent
                                    extracts it (e.g. from `skopeo copy docker://... oci:DIR`)
  oci.py native LAYOUT_DIR ENVOY ARCH=MODULE,INSTALL ...
                                    the native image (scripts/native-image.sh): an image index
                                    with one image per linux ARCH holding /libtether.so and its
                                    entrypoint /install; prints the index digest
  oci.py extract-native LAYOUT_DIR ARCH DIR
                                    checks every digest, unpacks ARCH's image into DIR

For WasmPlugin with url oci://...: sha256 is the *manifest digest* (istio-agent compares
it with the image digest, pkg/wasm/cache.go), not the sha256 of the .wasm file.
"""
import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
INDEX = "application/vnd.oci.image.index.v1+json"


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm):
    """A reproducible tar with one file, plugin.wasm (fixed owner, mode and time)."""
    return files_tar([("plugin.wasm", wasm, 0o644)])


def files_tar(files):
    """A reproducible tar of (name, bytes, mode) (fixed owner and time)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def write_blobs(layout, *blobs):
    os.makedirs(os.path.join(layout, "blobs", "sha256"), exist_ok=True)
    for data in blobs:
        with open(os.path.join(layout, "blobs", "sha256", sha256(data)), "wb") as f:
            f.write(data)


def native(layout, envoy, platforms):
    """One image per platform (/libtether.so, /install as entrypoint) under an image index."""
    entries = []
    for spec in platforms:
        arch, _, paths = spec.partition("=")
        module_path, _, install_path = paths.partition(",")
        with open(module_path, "rb") as f:
            module = f.read()
        with open(install_path, "rb") as f:
            install = f.read()
        if module[:4] != b"\x7fELF" or install[:4] != b"\x7fELF":
            sys.exit(f"oci.py: {spec}: not ELF files")
        tar = files_tar([("install", install, 0o755), ("libtether.so", module, 0o644)])
        layer = gzip.compress(tar, mtime=0)
        config = canonical({
            "architecture": arch, "os": "linux",
            "config": {"Entrypoint": ["/install"], "User": "65532:65532",
                       "Labels": {"io.tether.envoy": envoy}},
            "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar)]},
        })
        manifest = canonical({
            "schemaVersion": 2, "mediaType": MANIFEST,
            "config": {"mediaType": CONFIG, "digest": "sha256:" + sha256(config), "size": len(config)},
            "layers": [{"mediaType": LAYER, "digest": "sha256:" + sha256(layer), "size": len(layer)}],
        })
        write_blobs(layout, layer, config, manifest)
        entries.append({"mediaType": MANIFEST, "digest": "sha256:" + sha256(manifest), "size": len(manifest),
                        "platform": {"architecture": arch, "os": "linux"}})
        print(f"linux/{arch}: libtether.so sha256 {sha256(module)} ({len(module)} bytes)")
    index = canonical({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries,
                       "annotations": {"io.tether.envoy": envoy}})
    write_blobs(layout, index)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": INDEX,
                   "manifests": [{"mediaType": INDEX, "digest": "sha256:" + sha256(index), "size": len(index)}]}, f)
    print(f"image layout:   {layout} (for Envoy {envoy})")
    print(f"image digest:   sha256:{sha256(index)}")


def build(wasm_path, layout):
    with open(wasm_path, "rb") as f:
        wasm = f.read()
    if wasm[:4] != b"\0asm":
        sys.exit(f"oci.py: {wasm_path} is not a Wasm module")
    tar = layer_tar(wasm)
    layer = gzip.compress(tar, mtime=0)
    config = json.dumps({
        "architecture": "wasm", "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha256(tar)]},
    }, sort_keys=True, separators=(",", ":")).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": "sha256:" + sha256(config), "size": len(config)},
        "layers": [{"mediaType": LAYER, "digest": "sha256:" + sha256(layer), "size": len(layer)}],
        "annotations": {"module.wasm.image/variant": "compat"},
    }, sort_keys=True, separators=(",", ":")).encode()
    blobs = os.path.join(layout, "blobs", "sha256")
    os.makedirs(blobs, exist_ok=True)
    for blob in (layer, config, manifest):
        with open(os.path.join(blobs, sha256(blob)), "wb") as f:
            f.write(blob)
    with open(os.path.join(layout, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(layout, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                   "manifests": [{"mediaType": MANIFEST, "digest": "sha256:" + sha256(manifest),
                                  "size": len(manifest)}]}, f)
    print(f"image layout:   {layout}")
    print(f"module sha256:  {sha256(wasm)}  ({len(wasm)} bytes; for http(s):// or file:// urls)")
    print(f"image digest:   sha256:{sha256(manifest)}")
    print(f"WasmPlugin:     url: oci://<registry>/<repo>@sha256:{sha256(manifest)}")
    print(f"                sha256: {sha256(manifest)}")


def manifest_digest(layout):
    with open(os.path.join(layout, "index.json")) as f:
        manifests = json.load(f)["manifests"]
    if len(manifests) != 1:
        sys.exit(f"oci.py: {layout} holds {len(manifests)} images, expected one")
    return manifests[0]["digest"]


def blob(layout, digest, what):
    algo, _, hexdigest = digest.partition(":")
    if algo != "sha256":
        sys.exit(f"oci.py: {what} digest {digest} is not sha256")
    with open(os.path.join(layout, "blobs", "sha256", hexdigest), "rb") as f:
        return checked(f.read(), digest, what)


def checked(data, digest, what):
    if "sha256:" + sha256(data) != digest:
        sys.exit(f"oci.py: {what} does not match its digest {digest}")
    return data


def extract(layout, out):
    digest = manifest_digest(layout)
    m = json.loads(blob(layout, digest, "manifest"))
    layers = m.get("layers") or sys.exit("oci.py: the image has no layers")
    last = layers[-1]  # istio-agent reads the last layer
    if last["mediaType"] != LAYER:
        sys.exit(f"oci.py: last layer is {last['mediaType']}, expected {LAYER}")
    blob(layout, m["config"]["digest"], "config")
    layer = blob(layout, last["digest"], "layer")
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        for member in tar.getmembers():
            if os.path.basename(member.name) == "plugin.wasm":
                wasm = tar.extractfile(member).read()
                break
        else:
            sys.exit("oci.py: plugin.wasm not found in the layer")
    with open(out, "wb") as f:
        f.write(wasm)
    print(f"extracted {digest} -> {out} ({len(wasm)} bytes, sha256 {sha256(wasm)})")


def extract_native(layout, arch, out):
    """ARCH's image, every digest checked, unpacked into directory OUT (libtether.so, install)."""
    index = json.loads(blob(layout, manifest_digest(layout), "image index"))
    entry = next((m for m in index["manifests"] if m.get("platform", {}).get("architecture") == arch), None)
    if entry is None:
        sys.exit(f"oci.py: no linux/{arch} image in {layout}")
    m = json.loads(blob(layout, entry["digest"], "manifest"))
    config = json.loads(blob(layout, m["config"]["digest"], "config"))
    if config.get("architecture") != arch or config.get("config", {}).get("Entrypoint") != ["/install"]:
        sys.exit(f"oci.py: linux/{arch}: unexpected image config {config}")
    layer = blob(layout, m["layers"][-1]["digest"], "layer")
    os.makedirs(out, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(layer))) as tar:
        for name in ("libtether.so", "install"):
            member = tar.getmember(name)
            path = os.path.join(out, name)
            with open(path, "wb") as f:
                f.write(tar.extractfile(member).read())
            os.chmod(path, member.mode)
    module = open(os.path.join(out, "libtether.so"), "rb").read()
    print(f"extracted linux/{arch} -> {out} (libtether.so {len(module)} bytes, sha256 {sha256(module)}; install)")


def main():
    args = sys.argv[1:]
    if len(args) == 3 and args[0] == "build":
        build(args[1], args[2])
    elif len(args) == 2 and args[0] == "digest":
        print(manifest_digest(args[1]))
    elif len(args) == 3 and args[0] == "extract":
        extract(args[1], args[2])
    elif len(args) >= 4 and args[0] == "native":
        native(args[1], args[2], args[3:])
    elif len(args) == 4 and args[0] == "extract-native":
        extract_native(args[1], args[2], args[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
