#!/usr/bin/env python3
"""Renders the Envoy configuration Envoy Gateway v1.9.0 would send for envoy-gateway/.

A cluster-free stand-in for Envoy Gateway's translator, for the fields tether's manifests
use, following its source at v1.9.0 (commit 39763b1c07ec; paths below are in
github.com/envoyproxy/gateway; see docs/envoy-gateway.md):

- EnvoyExtensionPolicy.spec.wasm[i] -> an HTTP filter named
  envoy.filters.http.wasm/envoyextensionpolicy/<ns>/<name>/wasm/<i> (irConfigNameForWasm,
  internal/gatewayapi/envoyextensionpolicy.go; perRouteFilterName, xds/translator/utils.go),
  added *disabled* to the listener and enabled on the route by an empty
  envoy.config.route.v3.FilterConfig (xds/translator/wasm.go). Its config
  (wasmConfig): plugin name = wasm.name, root_id = rootID, vm_id = the filter's config name,
  runtime V8, `config` as JSON in a google.protobuf.StringValue, env.hostKeys ->
  host_env_keys, failOpen -> fail_open. Envoy Gateway fetches the OCI image itself and
  serves the module to Envoy over HTTP (remote code, sha256 of the module); here the module
  is the local file it would have served (--wasm).
- HTTPRoute rule sessionPersistence {type: Header, sessionName} -> the stateful_session
  filter with the header session state, *disabled* on the listener and enabled per route by
  a StatefulSessionPerRoute (xds/translator/session_persistence.go).
- Filter order: newOrderedHTTPFilter / sortHTTPFilters (xds/translator/httpfilters.go):
  stateful_session 11, Wasm 200+i, router 310; then EnvoyProxy.spec.filterOrder moves the
  named filter type before/after another. Without filterOrder: stateful_session first.
- BackendTrafficPolicy (internal/gatewayapi/clustersettings.go ->
  xds/translator/cluster.go, route.go): consistentHash Header + tableSize -> route
  hash_policy and the cluster's load_balancing_policy (envoy.load_balancing_policies.maglev
  typed extension); healthCheck.passive -> outlier_detection (CRD defaults applied as the
  API server would); retry -> retry_policy (previous_hosts and
  host_selection_retry_max_attempts 5 always added); circuitBreaker.maxParallelRetries ->
  circuit_breakers max_retries (default 1024).
- The cluster: httproute/<ns>/<name>/rule/<i> (irRouteDestinationName,
  internal/gatewayapi/helpers.go), EDS, ignore_health_on_host_removal: true,
  common_lb_config: {}, connect_timeout 10s. EDS here comes from a file
  (path_config_source, eds.yaml) instead of ADS.
- Endpoints from EndpointSlice conditions (getIREndpointsFromEndpointSlice,
  internal/gatewayapi/route.go): draining = terminating or not serving; every endpoint is
  kept, a draining one as DRAINING, the others UNKNOWN (cluster.go buildWeightedLocalities).
- EnvoyPatchPolicy (JSONPatch, xds/translator/jsonpatch.go): each patch of a Cluster is
  applied as a JSON patch to the cluster's proto-name JSON (add/replace/remove); needs
  extensionApis.enableEnvoyPatchPolicy in helm-values.yaml. A patch that cannot be applied
  is refused with its path.
- tether's config must name what the manifests configure: hostHeader = sessionName,
  keyHeader = the consistent-hash header.
- The native build (envoy-gateway/native/): EnvoyExtensionPolicy.spec.dynamicModule[i] is
  resolved against EnvoyProxy.spec.dynamicModules by name (buildDynamicModules,
  internal/gatewayapi/envoyextensionpolicy.go:1803-1883; a name not registered, or a source
  missing its fields, fails the route closed: a 500 for every request, :1150-1157, which the
  renderer refuses instead of rendering) into an HTTP filter named
  envoy.filters.http.dynamic_modules/envoyextensionpolicy/<ns>/<name>/dynamic-module/<i>
  (irConfigNameForDynamicModule :1796-1801; dynamicModuleFilterName,
  xds/translator/dynamicmodule.go:90-92), added *disabled* to the listener (:79-87) and
  enabled on the route by an empty envoy.config.route.v3.FilterConfig (:191-212): no
  per-route configuration reaches the module. Its DynamicModuleFilter (:94-121):
  dynamic_module_config {do_not_close, load_globally, module}, filter_name = filterName,
  terminal_filter, filter_config = `config` as JSON in a google.protobuf.StringValue. The
  module (:123-155): Local -> module.local.filename = the path in the Envoy container
  (--native-module replaces it with a file on this machine, as --wasm does for Wasm);
  Remote -> module.remote {http_uri {uri, cluster <host>_<port>, timeout 10s}, sha256}
  plus that cluster (patchResources :165-189, url2Cluster xds/translator/utils.go:43-84),
  rendered for a plain http URL only. Order 250+i (httpfilters.go:137-138). The renderer
  also checks what Kubernetes must provide: the Local path lies under a volume mounted
  into the Envoy container, and an emptyDir there is filled by an init container.

Usage:
  scripts/envoy-gateway-render.py --manifests DIR --out OUT [--endpoint IP:PORT[=STATE] ...]
        [--wasm target/.../tether.wasm] [--helm-values envoy-gateway/helm-values.yaml]
        [--native-module target/envoy-1.39/native/libtether.so] [--endpoints-only]
  scripts/envoy-gateway-render.py --pin REGISTRY/REPO[:TAG] --layout target/oci
        --manifests envoy-gateway --out target/envoy-gateway
STATE is the pod's EndpointSlice conditions: ready (default), terminating (graceful
shutdown: serving, terminating, not ready) or stopped (terminating, no longer serving).
Render writes OUT/envoy.yaml (listener 127.0.0.1:10000, admin 127.0.0.1:9901) and
OUT/eds.yaml; --endpoints-only rewrites OUT/eds.yaml alone (atomically: Envoy watches it),
as Envoy Gateway pushes EDS when a pod's conditions change.
--pin writes the Kubernetes manifests of DIR to OUT with the EnvoyExtensionPolicy's image
pinned by the digest of the OCI image layout (what `make image` built); for
envoy-gateway/native, the EnvoyProxy's init-container image pinned to what `make
native-image` built (--layout target/oci-native).
Anything in the manifests it does not know how to render is refused with its path.
"""
import argparse
import copy
import hashlib
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rendering import STATES, Refused, is_prime, load_docs, parse_endpoint, write_atomically  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("scripts/envoy-gateway-render.py needs PyYAML: apt-get install -y python3-yaml")

WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
SESSION = "envoy.filters.http.stateful_session"
WASM = "envoy.filters.http.wasm"
DYNAMIC = "envoy.filters.http.dynamic_modules"
DYNAMIC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"
ROUTER = "envoy.filters.http.router"
# newOrderedHTTPFilter (httpfilters.go:93-167): the filter types tether's manifests produce.
ORDER = {SESSION: 11, WASM: 200, DYNAMIC: 250, ROUTER: 310}
CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
# EndpointSlice conditions of each state (ready, serving, terminating).
CONDITIONS = {"ready": (True, True, False), "terminating": (False, True, True),
              "stopped": (False, False, True)}
# Envoy Gateway's gatewayapi MaxConsistentHashTableSize.
MAX_TABLE_SIZE = 5000011
TRIGGERS = {"5xx", "gateway-error", "reset", "reset-before-request", "connect-failure",
            "retriable-4xx", "refused-stream", "retriable-status-codes", "cancelled",
            "deadline-exceeded", "internal", "resource-exhausted", "unavailable"}



class NoAliases(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def dump(data):
    return yaml.dump(data, Dumper=NoAliases, sort_keys=False, width=120)


def load_dir(directory):
    return load_docs(os.path.join(directory, name) for name in sorted(os.listdir(directory))
                     if name.endswith(".yaml"))


def where(doc, *path):
    return f"{doc['__file']}: {doc['kind']} {doc['metadata']['name']}" + "".join(
        f".{p}" if isinstance(p, str) else f"[{p}]" for p in path)


def check_keys(obj, allowed, doc, *path):
    if not isinstance(obj, dict):
        raise Refused(f"{where(doc, *path)}: expected a mapping")
    for key in obj:
        if key not in allowed:
            raise Refused(f"{where(doc, *path, key)}: not rendered by scripts/envoy-gateway-render.py")


def of_kind(docs, kind, required=True):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) > 1 or (required and not found):
        raise Refused(f"expected {'exactly' if required else 'at most'} one {kind} in the manifests, "
                      f"found {len(found)}")
    return found[0] if found else None


def duration(value, doc, *path):
    """A Gateway API duration (1h, 30s, 500ms, 1m30s) as protojson Duration text."""
    if not isinstance(value, str) or not re.fullmatch(r"(\d+(h|m|s|ms))+", value):
        raise Refused(f"{where(doc, *path)}: expected a duration like 1s or 500ms, got {value!r}")
    ms = 0
    for number, unit in re.findall(r"(\d+)(h|ms|m|s)", value):
        ms += int(number) * {"h": 3600000, "m": 60000, "s": 1000, "ms": 1}[unit]
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms / 1000:.3f}s"


def targets(doc, ref_key, kind, name):
    refs = doc["spec"].get(ref_key)
    refs = [refs] if isinstance(refs, dict) else (refs or [])
    ok = [r for r in refs if r.get("kind") == kind and r.get("name") == name
          and r.get("group") == "gateway.networking.k8s.io"]
    if len(refs) != 1 or not ok:
        raise Refused(f"{where(doc, 'spec', ref_key)}: must target exactly the {kind} {name}")


# ---------------------------------------------------------------- the manifests

def gateway_and_proxy(docs):
    gw = of_kind(docs, "Gateway")
    check_keys(gw["spec"], {"gatewayClassName", "infrastructure", "listeners"}, gw, "spec")
    listeners = gw["spec"]["listeners"]
    if len(listeners) != 1 or listeners[0].get("protocol") != "HTTP":
        raise Refused(f"{where(gw, 'spec', 'listeners')}: one HTTP listener expected")
    check_keys(listeners[0], {"name", "protocol", "port"}, gw, "spec", "listeners", 0)
    proxy = of_kind(docs, "EnvoyProxy")
    ref = gw["spec"].get("infrastructure", {}).get("parametersRef", {})
    if (ref.get("kind"), ref.get("name"), proxy["metadata"]["namespace"]) != (
            "EnvoyProxy", proxy["metadata"]["name"], gw["metadata"]["namespace"]):
        raise Refused(f"{where(gw, 'spec', 'infrastructure', 'parametersRef')}: must name the "
                      f"EnvoyProxy {proxy['metadata']['name']} in the Gateway's namespace")
    check_keys(proxy["spec"], {"filterOrder", "provider", "dynamicModules"}, proxy, "spec")
    for i, pos in enumerate(proxy["spec"].get("filterOrder", [])):
        check_keys(pos, {"name", "before", "after"}, proxy, "spec", "filterOrder", i)
        if ("before" in pos) == ("after" in pos):
            raise Refused(f"{where(proxy, 'spec', 'filterOrder', i)}: exactly one of before, after")
    k8s = proxy["spec"].get("provider", {}).get("kubernetes", {})
    check_keys(k8s, {"envoyDeployment"}, proxy, "spec", "provider", "kubernetes")
    check_keys(k8s.get("envoyDeployment", {}), {"container", "initContainers", "pod"}, proxy, "spec",
               "provider", "kubernetes", "envoyDeployment")
    container = k8s.get("envoyDeployment", {}).get("container", {})
    check_keys(container, {"env", "volumeMounts"}, proxy, "spec", "provider", "kubernetes", "envoyDeployment",
               "container")
    env = [e["name"] for e in container.get("env", [])]
    return gw, proxy, env


def route_rule(docs, gw):
    route = of_kind(docs, "HTTPRoute")
    check_keys(route["spec"], {"parentRefs", "hostnames", "rules"}, route, "spec")
    parents = route["spec"]["parentRefs"]
    if len(parents) != 1 or parents[0].get("name") != gw["metadata"]["name"]:
        raise Refused(f"{where(route, 'spec', 'parentRefs')}: must name the Gateway {gw['metadata']['name']}")
    rules = route["spec"]["rules"]
    if len(rules) != 1:
        raise Refused(f"{where(route, 'spec', 'rules')}: one rule expected")
    rule = rules[0]
    check_keys(rule, {"backendRefs", "sessionPersistence"}, route, "spec", "rules", 0)
    if len(rule["backendRefs"]) != 1:
        raise Refused(f"{where(route, 'spec', 'rules', 0, 'backendRefs')}: one backend expected")
    sp = rule.get("sessionPersistence")
    if sp is None:
        return route, None
    check_keys(sp, {"type", "sessionName"}, route, "spec", "rules", 0, "sessionPersistence")
    if sp.get("type") != "Header":
        raise Refused(f"{where(route, 'spec', 'rules', 0, 'sessionPersistence', 'type')}: must be Header "
                      "(tether writes the owner into a request header)")
    if not sp.get("sessionName"):
        raise Refused(f"{where(route, 'spec', 'rules', 0, 'sessionPersistence', 'sessionName')}: required "
                      "(Envoy Gateway would invent one that tether does not know)")
    return route, sp["sessionName"]


def extension_policy(docs, route):
    """The EnvoyExtensionPolicy on the route, and which build of tether it loads."""
    eep = of_kind(docs, "EnvoyExtensionPolicy")
    check_keys(eep["spec"], {"targetRefs", "wasm", "dynamicModule"}, eep, "spec")
    targets(eep, "targetRefs", "HTTPRoute", route["metadata"]["name"])
    if eep["metadata"]["namespace"] != route["metadata"]["namespace"]:
        raise Refused(f"{where(eep)}: must be in the HTTPRoute's namespace")
    if ("wasm" in eep["spec"]) == ("dynamicModule" in eep["spec"]):
        raise Refused(f"{where(eep, 'spec')}: exactly one of wasm (tether's Wasm build) and dynamicModule "
                      "(its native build) is rendered")
    return eep


def wasm_filter(eep, wasm_path):
    if len(eep["spec"]["wasm"]) != 1:
        raise Refused(f"{where(eep, 'spec', 'wasm')}: one Wasm extension expected")
    w = eep["spec"]["wasm"][0]
    check_keys(w, {"name", "rootID", "code", "config", "failOpen", "env"}, eep, "spec", "wasm", 0)
    code = w["code"]
    check_keys(code, {"type", "image", "pullPolicy"}, eep, "spec", "wasm", 0, "code")
    if code.get("type") != "Image":
        raise Refused(f"{where(eep, 'spec', 'wasm', 0, 'code', 'type')}: Image expected")
    image = code.get("image")
    if not image:
        raise Refused(f"{where(eep, 'spec', 'wasm', 0, 'code', 'image')}: not set — the API server "
                      "refuses this; `make envoy-gateway IMAGE=...` writes it, pinned by digest")
    check_keys(image, {"url", "sha256"}, eep, "spec", "wasm", 0, "code", "image")
    digest = image["url"].rpartition("@sha256:")[2] if "@sha256:" in image["url"] else None
    if not digest or image.get("sha256") != digest:
        raise Refused(f"{where(eep, 'spec', 'wasm', 0, 'code', 'image')}: url must be pinned by digest "
                      "(@sha256:D) and sha256 must be D")
    check_keys(w.get("env", {}), {"hostKeys"}, eep, "spec", "wasm", 0, "env")
    config_name = f"envoyextensionpolicy/{eep['metadata']['namespace']}/{eep['metadata']['name']}/wasm/0"
    vm = {"vm_id": config_name, "runtime": "envoy.wasm.runtime.v8",
          "code": {"local": {"filename": os.path.abspath(wasm_path)}}}
    host_keys = w.get("env", {}).get("hostKeys")
    if host_keys:
        vm["environment_variables"] = {"host_env_keys": host_keys}
    config = {"name": w.get("name", config_name), "vm_config": vm,
              # The raw JSON of spec.wasm[].config, as the API server stores it.
              "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                "value": json.dumps(w.get("config", ""), separators=(",", ":"))
                                if "config" in w else ""},
              "fail_open": bool(w.get("failOpen", False))}
    if "rootID" in w:
        config["root_id"] = w["rootID"]
    name = f"{WASM}/{config_name}"
    return name, {"name": name, "disabled": True, "typed_config": {"@type": WASM_TYPE, "config": config}}, \
        w.get("config", {}), host_keys or [], eep


def module_file_provided(proxy, path, entry_at):
    """Kubernetes, not Envoy Gateway: the Local path must lie under a volume mounted into
    the Envoy container, and an emptyDir there must be filled by an init container, or
    Envoy cannot load the module (the rendered Envoy then refuses the listener)."""
    deployment = proxy["spec"].get("provider", {}).get("kubernetes", {}).get("envoyDeployment", {})
    at = ("spec", "provider", "kubernetes", "envoyDeployment")
    mounts = deployment.get("container", {}).get("volumeMounts", [])
    for i, m in enumerate(mounts):
        check_keys(m, {"name", "mountPath", "readOnly", "subPath"}, proxy, *at, "container", "volumeMounts", i)
    mount = next((m for m in mounts if "subPath" not in m
                  and path.startswith(m["mountPath"].rstrip("/") + "/")), None)
    if mount is None:
        raise Refused(f"{where(proxy, *entry_at)}: {path} is under no volume mounted into the Envoy container "
                      f"({where(proxy, *at, 'container', 'volumeMounts')}): Envoy could not load it")
    volumes = deployment.get("pod", {}).get("volumes", [])
    check_keys(deployment.get("pod", {}), {"volumes"}, proxy, *at, "pod")
    for i, v in enumerate(volumes):
        check_keys(v, {"name", "emptyDir", "image"}, proxy, *at, "pod", "volumes", i)
    volume = next((v for v in volumes if v["name"] == mount["name"]), None)
    if volume is None:
        raise Refused(f"{where(proxy, *at, 'container', 'volumeMounts')}: no volume {mount['name']!r} in "
                      f"{where(proxy, *at, 'pod', 'volumes')}")
    if "emptyDir" in volume:
        fillers = []
        for i, c in enumerate(deployment.get("initContainers", [])):
            check_keys(c, {"name", "image", "command", "args", "volumeMounts", "securityContext", "resources"},
                       proxy, *at, "initContainers", i)
            if any(m.get("name") == volume["name"] and not m.get("readOnly") for m in c.get("volumeMounts", [])):
                fillers.append(c["name"])
        if not fillers:
            raise Refused(f"{where(proxy, *at, 'pod', 'volumes')}: the emptyDir {volume['name']!r} holding {path} "
                          "is written by no init container, so it stays empty")
    elif deployment.get("initContainers"):
        raise Refused(f"{where(proxy, *at, 'initContainers')}: not rendered unless they fill the module's emptyDir")


def dynamic_module_filter(eep, proxy, native_path):
    """EnvoyExtensionPolicy.spec.dynamicModule[0] resolved against EnvoyProxy.spec.dynamicModules
    (buildDynamicModules, envoyextensionpolicy.go:1803-1883) and written as the disabled
    DynamicModuleFilter (dynamicmodule.go:68-155). Returns (filter name, filter, config,
    extra clusters)."""
    modules = eep["spec"]["dynamicModule"]
    if len(modules) != 1:
        raise Refused(f"{where(eep, 'spec', 'dynamicModule')}: one dynamic module expected")
    dm = modules[0]
    check_keys(dm, {"name", "filterName", "config", "terminalFilter"}, eep, "spec", "dynamicModule", 0)
    if dm.get("terminalFilter"):
        raise Refused(f"{where(eep, 'spec', 'dynamicModule', 0, 'terminalFilter')}: tether is not a terminal "
                      "filter (it steers requests to the route's backend)")
    # A failure to resolve the module fails the route closed: Envoy Gateway answers every
    # request of the route with a 500 direct response (envoyextensionpolicy.go:1150-1157).
    closed = "Envoy Gateway would answer every request of the route with a 500 (envoyextensionpolicy.go:1150-1157)"
    registry = proxy["spec"].get("dynamicModules", [])
    index = next((i for i, e in enumerate(registry) if e.get("name") == dm.get("name")), None)
    if index is None:
        raise Refused(f"{where(eep, 'spec', 'dynamicModule', 0, 'name')}: {dm.get('name')!r} is not in "
                      f"{where(proxy, 'spec', 'dynamicModules')}: {closed}")
    entry = registry[index]
    at = ("spec", "dynamicModules", index)
    check_keys(entry, {"name", "source", "doNotClose", "loadGlobally"}, proxy, *at)
    source = entry.get("source", {})
    check_keys(source, {"type", "local", "remote"}, proxy, *at, "source")
    kind = source.get("type", "Local")
    extra_clusters = []
    if kind == "Local":
        if "local" not in source or "remote" in source:
            raise Refused(f"{where(proxy, *at, 'source')}: type Local needs local and no remote "
                          "(the API server refuses it)")
        check_keys(source["local"], {"path"}, proxy, *at, "source", "local")
        path = source["local"].get("path", "")
        if not path.startswith("/"):
            raise Refused(f"{where(proxy, *at, 'source', 'local', 'path')}: an absolute path in the Envoy "
                          f"container expected, got {path!r}")
        module_file_provided(proxy, path, at + ("source", "local", "path"))
        module = {"local": {"filename": os.path.abspath(native_path) if native_path else path}}
    elif kind == "Remote":
        if "remote" not in source or "local" in source:
            raise Refused(f"{where(proxy, *at, 'source')}: type Remote needs remote and no local "
                          "(the API server refuses it)")
        remote = source["remote"]
        check_keys(remote, {"url", "sha256"}, proxy, *at, "source", "remote")
        url, sha = remote.get("url", ""), remote.get("sha256", "")
        if not isinstance(sha, str) or not re.fullmatch(r"[a-f0-9]{64}", sha):
            raise Refused(f"{where(proxy, *at, 'source', 'remote', 'sha256')}: 64 lowercase hex digits expected, "
                          "as a string (quote it if YAML reads it as a number; the API server refuses anything "
                          "else)")
        # validateDynamicModuleRemoteURL (envoyextensionpolicy.go:51-74), then url2Cluster
        # (xds/translator/utils.go:43-84): cluster <host with . as _>_<port>, STATIC for an
        # IP address, DNS otherwise; https adds an upstream TLS socket, not rendered here.
        m = re.fullmatch(r"(https?)://([^/?#:]+)(?::(\d+))?([/?#].*)?", url)
        if not m:
            raise Refused(f"{where(proxy, *at, 'source', 'remote', 'url')}: {url!r} is not an http(s) URL "
                          f"with a host: {closed}")
        scheme, host, port = m.group(1), m.group(2), int(m.group(3) or (443 if m.group(1) == "https" else 80))
        if scheme != "http" or not re.fullmatch(r"\d+\.\d+\.\d+\.\d+", host):
            raise Refused(f"{where(proxy, *at, 'source', 'remote', 'url')}: only http:// with an IPv4 address is "
                          "rendered (Envoy Gateway would add an upstream TLS socket for https and a DNS cluster "
                          "for a host name; not modelled)")
        cluster = f"{host.replace('.', '_')}_{port}"
        module = {"remote": {"http_uri": {"uri": url, "cluster": cluster, "timeout": "10s"}, "sha256": sha}}
        # addClusterFromURL (utils.go:164-200): the fields tether's Envoy needs to fetch
        # from it; Envoy Gateway's other cluster defaults are left out.
        extra_clusters.append({"name": cluster, "type": "STATIC", "connect_timeout": "10s",
                               "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [
                                   {"endpoint": {"address": {"socket_address": {
                                       "address": host, "port_value": port}}}}]}]}})
    else:
        raise Refused(f"{where(proxy, *at, 'source', 'type')}: {kind!r} is not Local or Remote: {closed}")
    module_config = {}
    if entry.get("doNotClose"):
        module_config["do_not_close"] = True
    if entry.get("loadGlobally"):
        module_config["load_globally"] = True
    module_config["module"] = module
    typed = {"@type": DYNAMIC_TYPE, "dynamic_module_config": module_config}
    if dm.get("filterName"):
        typed["filter_name"] = dm["filterName"]
    if "config" in dm:
        # The raw JSON of spec.dynamicModule[].config, as the API server stores it.
        typed["filter_config"] = {"@type": "type.googleapis.com/google.protobuf.StringValue",
                                  "value": json.dumps(dm["config"], separators=(",", ":"))}
    config_name = f"envoyextensionpolicy/{eep['metadata']['namespace']}/{eep['metadata']['name']}/dynamic-module/0"
    name = f"{DYNAMIC}/{config_name}"
    return name, {"name": name, "disabled": True, "typed_config": typed}, dm.get("config", {}), extra_clusters


def traffic(docs, route):
    btp = of_kind(docs, "BackendTrafficPolicy")
    check_keys(btp["spec"], {"targetRefs", "loadBalancer", "healthCheck", "retry", "circuitBreaker"},
               btp, "spec")
    targets(btp, "targetRefs", "HTTPRoute", route["metadata"]["name"])
    lb = btp["spec"].get("loadBalancer", {})
    check_keys(lb, {"type", "consistentHash"}, btp, "spec", "loadBalancer")
    ch = lb.get("consistentHash", {})
    if lb.get("type") != "ConsistentHash" or ch.get("type") != "Header":
        raise Refused(f"{where(btp, 'spec', 'loadBalancer')}: type ConsistentHash with consistentHash.type "
                      "Header is required (tether's fallback owner)")
    check_keys(ch, {"type", "header", "tableSize"}, btp, "spec", "loadBalancer", "consistentHash")
    maglev = {"@type": "type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev"}
    if "tableSize" in ch:
        # buildConsistentHashLoadBalancer (clustersettings.go) refuses a non-prime or too big one.
        if ch["tableSize"] > MAX_TABLE_SIZE or not is_prime(ch["tableSize"]):
            raise Refused(f"{where(btp, 'spec', 'loadBalancer', 'consistentHash', 'tableSize')}: "
                          f"{ch['tableSize']} must be a prime up to {MAX_TABLE_SIZE}")
        maglev["table_size"] = str(ch["tableSize"])
    cluster = {
        "connect_timeout": "10s",
        "per_connection_buffer_limit_bytes": 32768,
        "common_lb_config": {},
        "ignore_health_on_host_removal": True,
        "load_balancing_policy": {"policies": [{"typed_extension_config": {
            "name": "envoy.load_balancing_policies.maglev", "typed_config": maglev}}]},
    }
    hc = btp["spec"].get("healthCheck", {})
    check_keys(hc, {"passive"}, btp, "spec", "healthCheck")
    if "passive" in hc:
        p = hc["passive"]
        path = ("spec", "healthCheck", "passive")
        check_keys(p, {"splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures",
                       "consecutive5XxErrors", "consecutiveGatewayErrors", "interval", "baseEjectionTime",
                       "maxEjectionPercent"}, btp, *path)
        # CRD defaults (api/v1alpha1/healthcheck_types.go), then buildXdsOutlierDetection.
        od = {"base_ejection_time": duration(p.get("baseEjectionTime", "30s"), btp, *path, "baseEjectionTime"),
              "interval": duration(p.get("interval", "3s"), btp, *path, "interval"),
              "split_external_local_origin_errors": bool(p.get("splitExternalLocalOriginErrors", False))}
        if p.get("maxEjectionPercent", 10) > 0:
            od["max_ejection_percent"] = p.get("maxEjectionPercent", 10)
        od["consecutive_local_origin_failure"] = p.get("consecutiveLocalOriginFailures", 5)
        od["consecutive_5xx"] = p.get("consecutive5XxErrors", 5)
        if "consecutiveGatewayErrors" in p:
            od["enforcing_consecutive_gateway_failure"] = 100
            od["consecutive_gateway_failure"] = p["consecutiveGatewayErrors"]
        cluster["outlier_detection"] = od
    thresholds = {"priority": "DEFAULT", "max_retries": 1024}
    cb = btp["spec"].get("circuitBreaker", {})
    check_keys(cb, {"maxParallelRetries"}, btp, "spec", "circuitBreaker")
    if "maxParallelRetries" in cb:
        thresholds["max_retries"] = cb["maxParallelRetries"]
    cluster["circuit_breakers"] = {"thresholds": [thresholds]}

    action = {"hash_policy": [{"header": {"header_name": ch["header"]["name"]}}]}
    retry = btp["spec"].get("retry")
    if retry is not None:
        path = ("spec", "retry")
        check_keys(retry, {"numRetries", "retryOn", "perRetry"}, btp, *path)
        rp = {"retry_on": "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes",
              "retriable_status_codes": [503], "num_retries": retry.get("numRetries", 2),
              "retry_host_predicate": [{"name": "envoy.retry_host_predicates.previous_hosts",
                                        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry."
                                                         "host.previous_hosts.v3.PreviousHostsPredicate"}}],
              "host_selection_retry_max_attempts": "5"}
        if "retryOn" in retry:
            ro = retry["retryOn"]
            check_keys(ro, {"triggers", "httpStatusCodes"}, btp, *path, "retryOn")
            for t in ro.get("triggers", []):
                if t not in TRIGGERS:
                    raise Refused(f"{where(btp, *path, 'retryOn', 'triggers')}: unknown trigger {t!r}")
            if ro.get("triggers"):
                rp["retry_on"] = ",".join(ro["triggers"])
            rp["retriable_status_codes"] = sorted(ro.get("httpStatusCodes", []))
            if not rp["retriable_status_codes"]:
                del rp["retriable_status_codes"]
        per = retry.get("perRetry", {})
        check_keys(per, {"timeout", "backOff"}, btp, *path, "perRetry")
        if "timeout" in per:
            rp["per_try_timeout"] = duration(per["timeout"], btp, *path, "perRetry", "timeout")
        if "backOff" in per:
            check_keys(per["backOff"], {"baseInterval", "maxInterval"}, btp, *path, "perRetry", "backOff")
            rp["retry_back_off"] = {
                k2: duration(per["backOff"][k1], btp, *path, "perRetry", "backOff", k1)
                for k1, k2 in (("baseInterval", "base_interval"), ("maxInterval", "max_interval"))
                if k1 in per["backOff"]}
        action["retry_policy"] = rp
    return cluster, action, ch["header"]["name"]


# ---------------------------------------------------------------- EnvoyPatchPolicy

def pointer(path, doc, *at):
    if not isinstance(path, str) or not path.startswith("/"):
        raise Refused(f"{where(doc, *at)}: a JSON pointer starting with / expected, got {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def apply_patch(resource, op, doc, *at):
    """RFC 6902 add/replace/remove on the resource's proto-name JSON (jsonpatch.go)."""
    check_keys(op, {"op", "path", "value"}, doc, *at)
    kind = op.get("op")
    if kind not in ("add", "replace", "remove"):
        raise Refused(f"{where(doc, *at, 'op')}: {kind!r} is not rendered (add, replace, remove)")
    parts = pointer(op.get("path"), doc, *at, "path")
    parent = resource
    for i, part in enumerate(parts[:-1]):
        if isinstance(parent, list) and part.isdigit() and int(part) < len(parent):
            parent = parent[int(part)]
        elif isinstance(parent, dict) and part in parent:
            parent = parent[part]
        else:
            raise Refused(f"{where(doc, *at, 'path')}: /{'/'.join(parts[:i + 1])} does not exist in the "
                          "rendered resource, so the patch cannot be applied")
    last = parts[-1]
    if kind != "remove" and "value" not in op:
        raise Refused(f"{where(doc, *at, 'value')}: required for {kind}")
    if isinstance(parent, dict):
        if kind in ("replace", "remove") and last not in parent:
            raise Refused(f"{where(doc, *at, 'path')}: {op['path']} does not exist, cannot {kind} it")
        if kind == "remove":
            del parent[last]
        else:
            parent[last] = copy.deepcopy(op["value"])
    elif isinstance(parent, list):
        index = len(parent) if last == "-" and kind == "add" else (int(last) if last.isdigit() else None)
        if index is None or index > len(parent) or (kind != "add" and index == len(parent)):
            raise Refused(f"{where(doc, *at, 'path')}: {op['path']}: no such list index")
        if kind == "add":
            parent.insert(index, copy.deepcopy(op["value"]))
        elif kind == "replace":
            parent[index] = copy.deepcopy(op["value"])
        else:
            del parent[index]
    else:
        raise Refused(f"{where(doc, *at, 'path')}: {op['path']}: the parent is not an object or a list")


def patch_policies(docs, gw, cluster, values_path):
    epps = [d for d in docs if d.get("kind") == "EnvoyPatchPolicy"]
    if not epps:
        return []
    values = {}
    if os.path.exists(values_path):
        with open(values_path) as f:
            values = yaml.safe_load(f) or {}
    enabled = values.get("config", {}).get("envoyGateway", {}).get("extensionApis", {}).get(
        "enableEnvoyPatchPolicy")
    if enabled is not True:
        raise Refused(f"{values_path}: config.envoyGateway.extensionApis.enableEnvoyPatchPolicy must be true, "
                      "or Envoy Gateway ignores the EnvoyPatchPolicy")
    applied = []
    for epp in sorted(epps, key=lambda d: (d["spec"].get("priority", 0), d["metadata"]["name"])):
        check_keys(epp["spec"], {"targetRef", "type", "jsonPatches", "priority"}, epp, "spec")
        targets(epp, "targetRef", "Gateway", gw["metadata"]["name"])
        if epp["metadata"]["namespace"] != gw["metadata"]["namespace"]:
            raise Refused(f"{where(epp)}: must be in the Gateway's namespace")
        if epp["spec"]["type"] != "JSONPatch":
            raise Refused(f"{where(epp, 'spec', 'type')}: JSONPatch expected")
        for i, p in enumerate(epp["spec"]["jsonPatches"]):
            check_keys(p, {"type", "name", "operation"}, epp, "spec", "jsonPatches", i)
            if p["type"] != CLUSTER_TYPE:
                raise Refused(f"{where(epp, 'spec', 'jsonPatches', i, 'type')}: only {CLUSTER_TYPE} is rendered")
            if p["name"] != cluster["name"]:
                raise Refused(f"{where(epp, 'spec', 'jsonPatches', i, 'name')}: no cluster {p['name']} "
                              f"(the route's cluster is {cluster['name']})")
            apply_patch(cluster, p["operation"], epp, "spec", "jsonPatches", i, "operation")
        applied.append(epp["metadata"]["name"])
    return applied


# ---------------------------------------------------------------- filter order

def sort_filters(filters, filter_order):
    """sortHTTPFilters (httpfilters.go): default order, then each filterOrder entry."""
    def order(f):
        base = next(t for t in ORDER if f["name"].startswith(t))
        index = int(f["name"].rsplit("/", 1)[1]) if base in (WASM, DYNAMIC) else 0
        return (ORDER[base] + index, f["name"])
    out = sorted(filters, key=order)
    for pos in filter_order:
        current = [f for f in out if f["name"].startswith(pos["name"])]
        if not current:
            continue
        rest = [f for f in out if f not in current]
        if "before" in pos:
            at = next((i for i, f in enumerate(rest) if f["name"].startswith(pos["before"])), None)
            if at is not None:
                out = rest[:at] + current + rest[at:]
        else:
            at = max((i for i, f in enumerate(rest) if f["name"].startswith(pos["after"])), default=None)
            if at is not None:
                out = rest[:at + 1] + current + rest[at + 1:]
    return out


# ---------------------------------------------------------------- endpoints

def eds(cluster_name, endpoints):
    lb_endpoints = []
    for ip, port, state in map(parse_endpoint, endpoints):
        ready, serving, terminating = CONDITIONS[state]
        # getIREndpointsFromEndpointSlice: serving and terminating are set, so draining =
        # terminating or not serving; every endpoint is kept.
        draining = terminating or not serving
        lb_endpoints.append({"endpoint": {"address": {"socket_address": {"address": ip, "port_value": port}}},
                             "health_status": "DRAINING" if draining else "UNKNOWN",
                             "load_balancing_weight": 1})
    return {"version_info": str(len(endpoints)) + "-" + ",".join(endpoints),
            "resources": [{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                           "cluster_name": cluster_name,
                           "endpoints": [{"locality": {"region": cluster_name + "/backend/0"},
                                          "load_balancing_weight": 1,
                                          "lb_endpoints": lb_endpoints}]}]}


# ---------------------------------------------------------------- render

def render(manifests, helm_values, endpoints, wasm_path, out_dir, endpoints_only=False, native_path=None):
    docs = load_dir(manifests)
    known = {"GatewayClass", "Gateway", "EnvoyProxy", "HTTPRoute", "BackendTrafficPolicy",
             "EnvoyExtensionPolicy", "EnvoyPatchPolicy"}
    for d in docs:
        if d.get("kind") not in known and "config" not in d:
            raise Refused(f"{d['__file']}: kind {d.get('kind')!r} is not rendered")
    gw, proxy, proxy_env = gateway_and_proxy(docs)
    route, session_name = route_rule(docs, gw)
    ns, name = route["metadata"]["namespace"], route["metadata"]["name"]
    cluster_name = f"httproute/{ns}/{name}/rule/0"
    os.makedirs(out_dir, exist_ok=True)
    eds_path = os.path.join(out_dir, "eds.yaml")
    header = (f"# Rendered by scripts/envoy-gateway-render.py from {manifests}/:\n"
              "# the Envoy configuration Envoy Gateway v1.9.0 would produce (see docs/envoy-gateway.md).\n")
    write_atomically(eds_path, header + dump(eds(cluster_name, endpoints)))
    if endpoints_only:
        return

    eep = extension_policy(docs, route)
    native = "dynamicModule" in eep["spec"]
    sp_at = where(route, 'spec', 'rules', 0, 'sessionPersistence')
    if native:
        if session_name is not None:
            raise Refused(f"{sp_at}: not with tether's native build, which sets the upstream override host "
                          "itself: Envoy Gateway would add stateful_session (order 11) before tether (250), "
                          "reading a client-sent header before tether removes it")
        ext_name, ext, plugin_config, extra_clusters = dynamic_module_filter(eep, proxy, native_path)
        config_at = ("spec", "dynamicModule", 0, "config")
        keys_var = plugin_config.get("keysFromEnv")
        if keys_var is not None and keys_var not in proxy_env:
            raise Refused(f"{where(eep, *config_at, 'keysFromEnv')}: {keys_var} is not in the Envoy container's "
                          f"env ({where(proxy, 'spec', 'provider')}); the native module reads Envoy's own "
                          "environment")
    else:
        if session_name is None:
            raise Refused(f"{sp_at}: required (Envoy Gateway adds the stateful_session filter only for it)")
        ext_name, ext, plugin_config, host_keys, _ = wasm_filter(eep, wasm_path)
        extra_clusters = []
        config_at = ("spec", "wasm", 0, "config")
        for key in host_keys:
            if key not in proxy_env:
                raise Refused(f"{where(eep, 'spec', 'wasm', 0, 'env', 'hostKeys')}: {key} is not in the Envoy "
                              f"container's env ({where(proxy, 'spec', 'provider')})")
        if plugin_config.get("hostHeader", "x-tether-host") != session_name or "hostCookie" in plugin_config:
            raise Refused(f"{where(eep, *config_at, 'hostHeader')}: must be `{session_name}`, "
                          "the header the HTTPRoute's sessionPersistence reads")
    cluster_extra, action, key_header = traffic(docs, route)
    if plugin_config.get("keyHeader", "x-tether-key") != key_header:
        raise Refused(f"{where(eep, *config_at, 'keyHeader')}: must be `{key_header}`, "
                      "the BackendTrafficPolicy's consistent-hash header")

    cluster = {"name": cluster_name, "type": "EDS",
               "eds_cluster_config": {"service_name": cluster_name, "eds_config": {
                   "resource_api_version": "V3", "path_config_source": {"path": os.path.abspath(eds_path)}}}}
    cluster.update(cluster_extra)
    applied = patch_policies(docs, gw, cluster, helm_values)

    header_state = {"name": "envoy.http.stateful_session.header", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState",
        "name": session_name}}
    filters = [ext]
    per_filter = {}
    if session_name is not None:
        filters.append({"name": SESSION, "disabled": True, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession",
            "session_state": header_state}})
        per_filter[SESSION] = {"@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3."
                                        "StatefulSessionPerRoute", "stateful_session": {"session_state": header_state}}
    per_filter[ext_name] = {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
    filters += [
        {"name": ROUTER, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
            "suppress_envoy_headers": True}},
    ]
    filters = sort_filters(filters, proxy["spec"].get("filterOrder", []))
    listener = gw["spec"]["listeners"][0]
    gw_key = f"{gw['metadata']['namespace']}/{gw['metadata']['name']}/{listener['name']}"
    route_action = {"cluster": cluster_name, "upgrade_configs": [{"upgrade_type": "websocket"}]}
    route_action.update(action)
    hostnames = route["spec"].get("hostnames") or ["*"]
    vhosts = [{"name": f"{gw_key}/{h.replace('.', '_')}", "domains": [h], "routes": [{
        "name": f"httproute/{ns}/{name}/rule/0/match/0/{h.replace('.', '_')}",
        "match": {"prefix": "/"},
        "route": route_action,
        "typed_per_filter_config": per_filter}]}
        for h in hostnames]
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": f"http-{listener['port']}",
           "route_config": {"name": gw_key, "virtual_hosts": vhosts},
           "http_filters": filters}
    bootstrap = {
        "node": {"id": f"envoy-gateway-render.{gw['metadata']['name']}", "cluster": gw_key},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{"name": gw_key, "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [cluster] + extra_clusters}}
    note = (f"# filterOrder: {'EnvoyProxy ' + proxy['metadata']['name'] if proxy['spec'].get('filterOrder') else 'none (Envoy Gateway default)'}"
            f"; EnvoyPatchPolicy applied: {', '.join(applied) or 'none'}\n")
    with open(os.path.join(out_dir, "envoy.yaml"), "w") as f:
        f.write(header + note + dump(bootstrap))


# ---------------------------------------------------------------- pin (make envoy-gateway)

def layout_digest(layout):
    """The manifest digest of the OCI image layout `make image` wrote (its index.json)."""
    index_path = os.path.join(layout, "index.json")
    try:
        with open(index_path) as f:
            manifests = json.load(f)["manifests"]
    except (OSError, KeyError, ValueError) as e:
        raise Refused(f"{index_path}: not an OCI image layout ({e}); run `make image`")
    if len(manifests) != 1 or not manifests[0].get("digest", "").startswith("sha256:"):
        raise Refused(f"{index_path}: expected one image manifest")
    digest = manifests[0]["digest"][len("sha256:"):]
    with open(os.path.join(layout, "blobs", "sha256", digest), "rb") as f:
        if hashlib.sha256(f.read()).hexdigest() != digest:
            raise Refused(f"{layout}: the manifest blob does not match its digest")
    return digest


def repository(image):
    """registry/repo[:tag][@sha256:...] -> registry/repo (a registry's :port is kept)."""
    image = image.removeprefix("oci://").split("@", 1)[0]
    head, _, last = image.rpartition("/")
    if not head or not last:
        raise Refused(f"IMAGE={image!r}: expected registry/repository[:tag]")
    return f"{head}/{last.split(':', 1)[0]}"


# The native manifests' init-container image until `make envoy-gateway-native` pins it.
NATIVE_IMAGE_PLACEHOLDER = "registry.example.com/tether-native:0.1.0"


def pin(image, layout, manifests, out_dir):
    digest = layout_digest(layout)
    url = f"{repository(image)}@sha256:{digest}"
    os.makedirs(out_dir, exist_ok=True)
    written, native = [], False
    for name in sorted(os.listdir(manifests)):
        if not name.endswith(".yaml"):
            continue
        with open(os.path.join(manifests, name)) as f:
            text = f.read()
        docs = [d for d in yaml.safe_load_all(text) if d]
        if not docs or any("kind" not in d for d in docs):
            continue  # helm-values.yaml: Envoy Gateway's own configuration, not a manifest
        if any(d["kind"] == "EnvoyExtensionPolicy" and d.get("spec", {}).get("wasm") for d in docs):
            if any("image" in w.get("code", {}) for d in docs for w in d.get("spec", {}).get("wasm", [])):
                raise Refused(f"{manifests}/{name}: already has code.image; the source keeps it unset")
            marker = "    code:\n      type: Image\n"
            if text.count(marker) != 1:
                raise Refused(f"{manifests}/{name}: expected `code: {{type: Image}}` once, without an image")
            text = text.replace(marker, marker + f"      image:\n        url: {url}\n        sha256: {digest}\n"
                                "      pullPolicy: IfNotPresent\n")
            text = re.sub(r"# This file has no image on purpose:.*?# internal/gatewayapi/envoyextensionpolicy.go\)\.\n",
                          f"# Pinned by `make envoy-gateway` to the image `make image` built: sha256:{digest}.\n",
                          text, flags=re.S)
        if NATIVE_IMAGE_PLACEHOLDER in text:
            # The native image (`make native-image`): the init container's image, by digest.
            text, native = text.replace(NATIVE_IMAGE_PLACEHOLDER, url), True
        write_atomically(os.path.join(out_dir, name), text)
        written.append(name)
    print(f"wrote {', '.join(written)} to {out_dir}/")
    print(f"image:  {url}")
    print(f"push it before applying: make push{'-native' if native else ''} IMAGE={image.removeprefix('oci://')}"
          " (skopeo; it checks the registry reports this digest)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--manifests", default="envoy-gateway")
    ap.add_argument("--helm-values", default="envoy-gateway/helm-values.yaml",
                    help="Envoy Gateway's Helm values (is EnvoyPatchPolicy enabled?)")
    ap.add_argument("--endpoint", action="append", default=[])
    ap.add_argument("--wasm", default="target/wasm32-wasip1/release/tether.wasm")
    ap.add_argument("--native-module", metavar="PATH",
                    help="load the native build from PATH instead of the EnvoyProxy's in-pod Local path")
    ap.add_argument("--out", required=True)
    ap.add_argument("--endpoints-only", action="store_true",
                    help="rewrite only OUT/eds.yaml (a pod's conditions changed)")
    ap.add_argument("--pin", metavar="IMAGE", help="write ready manifests with IMAGE pinned by digest")
    ap.add_argument("--layout", default="target/oci", help="the OCI image layout (with --pin)")
    args = ap.parse_args()
    endpoints = args.endpoint or ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
    try:
        if args.pin:
            pin(args.pin, args.layout, args.manifests, args.out)
        else:
            render(args.manifests, args.helm_values, endpoints, args.wasm, args.out, args.endpoints_only,
                   args.native_module)
    except Refused as e:
        sys.exit(f"envoy-gateway-render: {e}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        sys.exit(f"envoy-gateway-render: malformed manifest: missing or wrong field {e}")


if __name__ == "__main__":
    main()
