#!/usr/bin/env python3
"""Renders the Envoy configuration istiod would send for the manifests in istio/.

A cluster-free stand-in for istiod, for the fields tether's manifests use, following
istiod's own code (Istio 1.30.3, pilot/pkg/...; see istio/README.md):

- WasmPlugin -> an HTTP filter named
  extensions.istio.io/trafficextension/<ns>.<name>~istio-translated-wasmplugin (1.30
  turns every WasmPlugin into a TrafficExtension: translateWasmPlugin,
  pilot/pkg/config/kube/extensions/translate.go; up to 1.29 the name is
  extensions.istio.io/wasmplugin/<ns>.<name>) whose config comes by ECDS (here: a file,
  path_config_source), holding an envoy.extensions.filters.http.wasm.v3.Wasm with
  pluginConfig as JSON in a google.protobuf.StringValue, vmConfig.env (HOST ->
  host_env_keys, INLINE -> key_values), failStrategy -> failure_policy. The module is the
  local file istio-agent would have pulled (--wasm).
- filter order of listener_builder.go: WasmPlugins by phase (AUTHN, AUTHZ, STATS,
  unspecified; by priority, highest first, inside a phase), grpc_stats, fault, cors, the
  empty stateful_session filter, router. Istio-only filters that stock Envoy lacks
  (istio.metadata_exchange, istio.alpn, istio.stats) are left out; none reads tether's
  headers.
- Service labels (MaybeBuildStatefulSessionFilterConfig, pilot/pkg/networking/util/util.go):
  istio.io/persistent-session: <name>[:<path>] -> the cookie session state (no TTL);
  istio.io/persistent-session-header: <name> -> the header session state; with both, the
  cookie label wins. On the route (gateway) or the virtual host (sidecar outbound), and
  override_host_status [HEALTHY, DRAINING, UNKNOWN, DEGRADED] on the cluster for either.
- Endpoints by EDS (a file, eds.yaml), from Kubernetes EndpointSlice conditions the way
  istiod turns them into health statuses (endpointHealthStatus,
  pilot/pkg/serviceregistry/kube/controller/endpointslice.go) and filters them
  (filterIstioEndpoint, pilot/pkg/xds/endpoints/endpoint_builder.go): a terminating but
  still serving endpoint is DRAINING for a service with either label, and is sent only
  when the service has the *cookie* label; otherwise it leaves EDS.
- DestinationRule consistentHash.httpHeaderName + maglev (tableSize required and prime,
  as istiod's validateLoadBalancer demands) / ringHash -> route hash_policy and lb_policy;
  outlierDetection, connectionPool.http.maxRetries as istiod maps them.
- VirtualService retries -> retry_policy (previous_hosts only with
  retryIgnorePreviousHosts when a consistent hash is in use, as istiod does).
- tether's pluginConfig must name what istiod configures: hostCookie = the cookie label's
  name, or hostHeader = the header label.

Usage: scripts/istio-render.py --plugin istio/wasmplugin-gateway.yaml --out DIR
         [--endpoint 127.0.0.1:8081[=STATE] ...] [--wasm target/.../tether.wasm]
         [--endpoints-only]
STATE is the pod's EndpointSlice conditions: ready (default), terminating (graceful
shutdown: serving, terminating, not ready) or stopped (terminating, no longer serving).
Writes DIR/envoy.yaml (listener 127.0.0.1:10000, admin 127.0.0.1:9901), DIR/ecds.yaml and
DIR/eds.yaml; --endpoints-only rewrites DIR/eds.yaml alone (atomically: Envoy watches it),
as istiod pushes EDS when a pod's conditions change.
Anything in the manifests it does not know how to render is refused with its path.
"""
import argparse
import json
import os
import sys

try:
    import yaml
except ImportError:
    sys.exit("scripts/istio-render.py needs PyYAML: apt-get install -y python3-yaml")

PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]
FAIL = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"


class Refused(Exception):
    pass


def load_docs(paths):
    docs = []
    for path in paths:
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    doc["__file"] = path
                    docs.append(doc)
    return docs


def only(docs, kind, what):
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise Refused(f"expected exactly one {kind} ({what}) in istio/, found {len(found)}")
    return found[0]


def check_keys(obj, allowed, where):
    for key in obj:
        if key not in allowed:
            raise Refused(f"{where}.{key}: not rendered by scripts/istio-render.py")


def duration(value, where):
    if not isinstance(value, str) or not value.endswith("s"):
        raise Refused(f"{where}: expected a duration like 1s, got {value!r}")
    return value


def wasm_filter(plugin, wasm_path):
    spec, meta = plugin["spec"], plugin["metadata"]
    where = f"{plugin['__file']}: WasmPlugin {meta['name']}.spec"
    check_keys(spec, {"selector", "url", "sha256", "imagePullPolicy", "pluginName", "phase",
                      "priority", "failStrategy", "match", "vmConfig", "pluginConfig", "type"}, where)
    if spec.get("type", "HTTP") != "HTTP":
        raise Refused(f"{where}.type: tether is an HTTP filter")
    if spec.get("phase", "UNSPECIFIED_PHASE") not in PHASES:
        raise Refused(f"{where}.phase: {spec['phase']!r} is not one of {PHASES}")
    if spec.get("failStrategy", "FAIL_CLOSE") not in FAIL:
        raise Refused(f"{where}.failStrategy: {spec['failStrategy']!r} is not one of {list(FAIL)}")
    for m in spec.get("match", []):
        if m.get("mode", "CLIENT") not in ("CLIENT", "CLIENT_AND_SERVER"):
            raise Refused(f"{where}.match.mode: the persistent-session filter exists on "
                          "gateway and outbound (CLIENT) listeners only")
    resource = f"{meta['namespace']}.{meta['name']}"
    key_values = {"ISTIO_META_WASM_PLUGIN_RESOURCE_VERSION": "1"}
    if "imagePullPolicy" in spec:
        key_values["ISTIO_META_WASM_IMAGE_PULL_POLICY"] = spec["imagePullPolicy"]
    host_keys = []
    for env in spec.get("vmConfig", {}).get("env", []):
        if env.get("valueFrom", "INLINE") == "HOST":
            host_keys.append(env["name"])
        else:
            key_values[env["name"]] = env.get("value", "")
    vm = {"runtime": "envoy.wasm.runtime.v8",
          "code": {"local": {"filename": os.path.abspath(wasm_path)}},
          "environment_variables": {"key_values": key_values}}
    if host_keys:
        vm["environment_variables"]["host_env_keys"] = host_keys
    config = {"name": resource, "root_id": spec.get("pluginName", ""), "vm_config": vm,
              "failure_policy": FAIL[spec.get("failStrategy", "FAIL_CLOSE")]}
    if spec.get("pluginConfig"):
        # protojson of a google.protobuf.Struct: compact JSON.
        config["configuration"] = {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": json.dumps(spec["pluginConfig"], separators=(",", ":"), sort_keys=True)}
    name = f"extensions.istio.io/trafficextension/{resource}~istio-translated-wasmplugin"
    return {"name": name,
            "phase": spec.get("phase", "UNSPECIFIED_PHASE"),
            "priority": spec.get("priority"),
            "plugin_config": spec.get("pluginConfig") or {},
            "ecds": {"@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
                     "name": name,
                     "typed_config": {"@type": WASM_TYPE, "config": config}}}


COOKIE_LABEL = "istio.io/persistent-session"
HEADER_LABEL = "istio.io/persistent-session-header"
STATES = ("ready", "terminating", "stopped")


def is_prime(n):
    # istiod's validateLoadBalancer uses Envoy's own primality test; trial division agrees.
    return n >= 2 and all(n % d for d in range(2, int(n ** 0.5) + 1))


def session_state(svc):
    """What istiod's MaybeBuildStatefulSessionFilterConfig builds for the Service labels."""
    labels = svc["metadata"].get("labels", {})
    cookie, header = labels.get(COOKIE_LABEL), labels.get(HEADER_LABEL)
    if cookie:  # the cookie label wins when both are set
        name, _, path = cookie.partition(":")
        return "cookie", name, {
            "name": "envoy.http.stateful_session.cookie",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.http.stateful_session."
                             "cookie.v3.CookieBasedSessionState",
                             "cookie": {"name": name, "path": path or "/"}}}
    if header:
        return "header", header, {
            "name": "envoy.http.stateful_session.header",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.http.stateful_session."
                             "header.v3.HeaderBasedSessionState", "name": header}}
    raise Refused(f"{svc['__file']}: Service {svc['metadata']['name']} has neither {COOKIE_LABEL} "
                  f"nor {HEADER_LABEL}: istiod adds no session filter for it")


def check_plugin_agrees(plugin_config, kind, name, where):
    """tether must present the owner where istiod's session filter reads it."""
    if kind == "cookie" and plugin_config.get("hostCookie") != name:
        raise Refused(f"{where}.pluginConfig.hostCookie must be `{name}`: the Service's {COOKIE_LABEL} "
                      "label makes istiod's session filter read that cookie")
    if kind == "header":
        if "hostCookie" in plugin_config:
            raise Refused(f"{where}.pluginConfig.hostCookie: the Service has only the {HEADER_LABEL} "
                          "label, so istiod's session filter reads a header (use hostHeader)")
        if plugin_config.get("hostHeader", "x-tether-host") != name:
            raise Refused(f"{where}.pluginConfig.hostHeader must be `{name}` (the {HEADER_LABEL} label)")


def parse_endpoint(text):
    addr, _, state = text.partition("=")
    state = state or "ready"
    if state not in STATES:
        raise Refused(f"--endpoint {text}: state must be one of {', '.join(STATES)}")
    ip, _, port = addr.rpartition(":")
    return ip.strip("[]"), int(port), state


def eds(svc, cluster_name, endpoints):
    """The ClusterLoadAssignment istiod sends for pods in these EndpointSlice states."""
    labels = svc["metadata"].get("labels", {})
    supports_draining = bool(labels.get(COOKIE_LABEL) or labels.get(HEADER_LABEL))
    lb_endpoints = []
    for ip, port, state in map(parse_endpoint, endpoints):
        # endpointHealthStatus: ready -> Healthy; serving and terminating -> Draining when
        # the service has either label, else Terminating; not serving -> Terminating.
        if state == "ready":
            status = "HEALTHY"
        elif state == "terminating" and supports_draining:
            status = "DRAINING"
        else:
            status = "TERMINATING"
        # filterIstioEndpoint: Terminating never; Draining only with the cookie label.
        if status == "TERMINATING" or (status == "DRAINING" and not labels.get(COOKIE_LABEL)):
            continue
        lb_endpoints.append({"endpoint": {"address": {"socket_address": {
            "address": ip, "port_value": port}}}, "health_status": status})
    return {"version_info": str(len(endpoints)) + "-" + ",".join(endpoints),
            "resources": [{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                           "cluster_name": cluster_name,
                           "endpoints": [{"lb_endpoints": lb_endpoints}]}]}


def write_atomically(path, text):
    # Envoy watches a path_config_source for moves into place (inotify), not for writes.
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def cluster_and_route(docs, eds_path):
    svc = only(docs, "Service", "the stateful service")
    dr = only(docs, "DestinationRule", "its traffic policy")
    vs = only(docs, "VirtualService", "its routes")
    name, ns = svc["metadata"]["name"], svc["metadata"]["namespace"]
    host = f"{name}.{ns}.svc.cluster.local"
    port = svc["spec"]["ports"][0]["port"]
    _, _, state_config = session_state(svc)
    if dr["spec"]["host"] != host:
        raise Refused(f"{dr['__file']}: DestinationRule host {dr['spec']['host']} is not {host}")
    tp = dr["spec"].get("trafficPolicy", {})
    where = f"{dr['__file']}: DestinationRule.spec.trafficPolicy"
    check_keys(tp, {"loadBalancer", "connectionPool", "outlierDetection"}, where)
    ch = tp.get("loadBalancer", {}).get("consistentHash")
    if not ch or "httpHeaderName" not in ch:
        raise Refused(f"{where}.loadBalancer.consistentHash.httpHeaderName is required")
    check_keys(ch, {"httpHeaderName", "maglev", "ringHash"}, f"{where}.loadBalancer.consistentHash")
    cluster = {
        "name": f"outbound|{port}||{host}",
        "type": "EDS",
        "eds_cluster_config": {"eds_config": {"resource_api_version": "V3",
                                              "path_config_source": {"path": os.path.abspath(eds_path)}}},
        "connect_timeout": "10s",
        "lb_policy": "MAGLEV" if "maglev" in ch else "RING_HASH",
        "common_lb_config": {
            "override_host_status": {"statuses": ["HEALTHY", "DRAINING", "UNKNOWN", "DEGRADED"]}},
    }
    if "maglev" in ch:
        # validateLoadBalancer (pkg/config/validation/validation.go): admission refuses a
        # maglev without a prime tableSize below 5000011.
        table = (ch["maglev"] or {}).get("tableSize", 0)
        if not table:
            raise Refused(f"{where}.loadBalancer.consistentHash.maglev.tableSize: tableSize must be set "
                          "for maglev (istiod's validation refuses the DestinationRule)")
        if table >= 5000011 or not is_prime(table):
            raise Refused(f"{where}.loadBalancer.consistentHash.maglev.tableSize: {table} must be a prime "
                          "below 5000011 (istiod's validation refuses the DestinationRule)")
        cluster["maglev_lb_config"] = {"table_size": table}
    od = tp.get("outlierDetection")
    if od:
        check_keys(od, {"splitExternalLocalOriginErrors", "consecutiveLocalOriginFailures",
                        "consecutive5xxErrors", "consecutiveGatewayErrors", "interval",
                        "baseEjectionTime", "maxEjectionPercent", "minHealthPercent"},
                   f"{where}.outlierDetection")
        out = {"enforcing_success_rate": 0}
        for field, envoy in (("consecutive5xxErrors", "5xx"), ("consecutiveGatewayErrors", "gateway_failure")):
            if field in od:
                out[f"consecutive_{envoy}"] = od[field]
                out[f"enforcing_consecutive_{envoy}"] = 100 if od[field] > 0 else 0
        for field, envoy in (("interval", "interval"), ("baseEjectionTime", "base_ejection_time")):
            if field in od:
                out[envoy] = duration(od[field], f"{where}.outlierDetection.{field}")
        if od.get("maxEjectionPercent", 0) > 0:
            out["max_ejection_percent"] = od["maxEjectionPercent"]
        if od.get("splitExternalLocalOriginErrors"):
            out["split_external_local_origin_errors"] = True
            if od.get("consecutiveLocalOriginFailures", 0) > 0:
                out["consecutive_local_origin_failure"] = od["consecutiveLocalOriginFailures"]
                out["enforcing_consecutive_local_origin_failure"] = 100
            out["enforcing_local_origin_success_rate"] = 0
        cluster["outlier_detection"] = out
        cluster["common_lb_config"]["healthy_panic_threshold"] = {"value": od.get("minHealthPercent", 0)}
    max_retries = tp.get("connectionPool", {}).get("http", {}).get("maxRetries")
    if max_retries:
        cluster["circuit_breakers"] = {"thresholds": [{"max_retries": max_retries}]}

    http = vs["spec"]["http"]
    if len(http) != 1:
        raise Refused(f"{vs['__file']}: one http route expected")
    retries = http[0].get("retries")
    route = {"cluster": cluster["name"], "hash_policy": [{"header": {"header_name": ch["httpHeaderName"]}}]}
    if retries and retries.get("attempts", 0) > 0:
        policy = {"num_retries": retries["attempts"],
                  "retry_on": retries.get("retryOn", "connect-failure,refused-stream,unavailable,"
                                          "cancelled,retriable-status-codes"),
                  "host_selection_retry_max_attempts": 5}
        if "perTryTimeout" in retries:
            policy["per_try_timeout"] = duration(retries["perTryTimeout"], "retries.perTryTimeout")
        if retries.get("retryIgnorePreviousHosts"):
            policy["retry_host_predicate"] = [{
                "name": "envoy.retry_host_predicates.previous_hosts",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.retry.host."
                                 "previous_hosts.v3.PreviousHostsPredicate"}}]
        route["retry_policy"] = policy
    session = {"envoy.filters.http.stateful_session": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
        "stateful_session": {"session_state": state_config}}}
    return cluster, route, session


def render(plugin_path, istio_dir, endpoints, wasm_path, out_dir, endpoints_only=False):
    plugin_doc = load_docs([plugin_path])
    plugins = [d for d in plugin_doc if d.get("kind") == "WasmPlugin"]
    if len(plugins) != 1:
        raise Refused(f"{plugin_path}: expected one WasmPlugin")
    others = sorted(os.path.join(istio_dir, f) for f in os.listdir(istio_dir)
                    if f.endswith(".yaml") and not f.startswith("wasmplugin-"))
    docs = load_docs(others)
    gateway = "matchLabels" in plugins[0]["spec"]["selector"] and \
        "istio" in plugins[0]["spec"]["selector"]["matchLabels"]
    ext = wasm_filter(plugins[0], wasm_path)
    os.makedirs(out_dir, exist_ok=True)
    eds_path = os.path.join(out_dir, "eds.yaml")
    cluster, route, session = cluster_and_route(docs, eds_path)
    svc = only(docs, "Service", "the stateful service")
    kind, name, _ = session_state(svc)
    check_plugin_agrees(ext["plugin_config"], kind, name,
                        f"{plugin_path}: WasmPlugin {plugins[0]['metadata']['name']}.spec")
    header = (f"# Rendered by scripts/istio-render.py from {plugin_path} and {istio_dir}/:\n"
              "# the Envoy configuration istiod would produce (see istio/README.md).\n")
    write_atomically(eds_path, header + yaml.safe_dump(eds(svc, cluster["name"], endpoints),
                                                       sort_keys=False, width=120))
    if endpoints_only:
        return

    # listener_builder.go: plugins by phase (one plugin here), then Istio's own filters,
    # router last.
    filters = []
    for phase in PHASES:
        if ext["phase"] == phase:
            filters.append({"name": ext["name"], "config_discovery": {
                "config_source": {"path_config_source": {"path": os.path.abspath(
                    os.path.join(out_dir, "ecds.yaml"))}, "resource_api_version": "V3"},
                "type_urls": [WASM_TYPE, RBAC_TYPE]}})
    filters += [
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
        # EmptySessionFilter: configured per route / virtual host below.
        {"name": "envoy.filters.http.stateful_session", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"}},
        {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}},
    ]
    rt = {"match": {"prefix": "/"}, "route": route}
    vhost = {"name": "media", "domains": ["*"], "routes": [rt]}
    if gateway:
        rt["typed_per_filter_config"] = session        # gateway.go: per route
    else:
        vhost["typed_per_filter_config"] = session     # httproute.go: per virtual host
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "outbound_0.0.0.0_80" if not gateway else "http.80",
           "upgrade_configs": [{"upgrade_type": "websocket"}],
           "route_config": {"name": "http.80", "virtual_hosts": [vhost]},
           "http_filters": filters}
    kind = "router" if gateway else "sidecar"
    workload = plugins[0]["metadata"]["namespace"]
    bootstrap = {
        "node": {"id": f"{kind}~127.0.0.1~tether-test.{workload}~{workload}.svc.cluster.local",
                 "cluster": f"tether-test.{workload}"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{"name": "0.0.0.0_80", "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [cluster]}}
    with open(os.path.join(out_dir, "envoy.yaml"), "w") as f:
        f.write(header + yaml.safe_dump(bootstrap, sort_keys=False, width=120))
    with open(os.path.join(out_dir, "ecds.yaml"), "w") as f:
        f.write(header + yaml.safe_dump({"resources": [ext["ecds"]]}, sort_keys=False, width=120))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--istio-dir", default="istio")
    ap.add_argument("--endpoint", action="append", default=[])
    ap.add_argument("--wasm", default="target/wasm32-wasip1/release/tether.wasm")
    ap.add_argument("--out", required=True)
    ap.add_argument("--endpoints-only", action="store_true",
                    help="rewrite only DIR/eds.yaml (a pod's conditions changed)")
    args = ap.parse_args()
    endpoints = args.endpoint or ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
    try:
        render(args.plugin, args.istio_dir, endpoints, args.wasm, args.out, args.endpoints_only)
    except Refused as e:
        sys.exit(f"istio-render: {e}")
    except (KeyError, TypeError, ValueError) as e:
        sys.exit(f"istio-render: malformed manifest: missing or wrong field {e}")


if __name__ == "__main__":
    main()
