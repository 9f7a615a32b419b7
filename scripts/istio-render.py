#!/usr/bin/env python3
"""Renders the Envoy configuration istiod would send for the manifests in istio/.

A cluster-free stand-in for istiod, for the fields tether's manifests use, following
istiod's own code (Istio 1.30.3, pilot/pkg/...; see docs/istio.md):

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
- A VirtualService destination `subset` -> the subset's cluster `outbound|<port>|<subset>|
  <host>` (buildSubsetCluster, cluster_builder.go:318-340): the DestinationRule's policy on
  a fresh CommonLbConfig, so no override_host_status whatever the Service's label.
- EnvoyFilter `applyTo: CLUSTER` with MERGE (cluster_patch.go), matched by workloadSelector,
  context and cluster service / subset / portNumber; lists are appended to, as proto.Merge
  does (istio/extras/envoyfilter-subset-draining.yaml). Other patches are refused.
- Gateway API (a WasmPlugin with targetRefs to a Gateway of class istio): the plugin
  reaches the proxy istiod deploys for that Gateway (ShouldAttachPolicy,
  pilot/pkg/model/policyattachment.go); admission's rules (one of selector and targetRefs,
  no targetRef namespace, allowed kinds: pkg/config/validation/validation.go) and kinds
  that only attach to waypoints are refused. The HTTPRoute whose parentRef is that Gateway
  is rendered as istiod converts it (pilot/pkg/config/kube/gateway/conversion.go:
  convertHTTPRoute): route name <ns>.<name>.<rule>, `retry` -> retry_on
  connect-failure,refused-stream,unavailable,cancelled + codes, never previous_hosts (the
  DestinationRule hashes); no `retry` -> the mesh default retry policy (2 retries); the
  DestinationRule's hash policy and the per-route session state as for any route. The
  Gateway's infrastructure.parametersRef ConfigMap must put every vmConfig.env HOST
  variable into the generated proxy's environment. With such a plugin the HTTPRoute is
  used and VirtualServices are ignored; otherwise the reverse.
- tether's pluginConfig must name what istiod configures: hostCookie = the cookie label's
  name, or hostHeader = the header label.
- A WasmPlugin with targetRefs to a Gateway of class istio-waypoint renders that waypoint
  (istio/waypoint/): the Service must carry istio.io/use-waypoint; the HTTP chain of
  buildWaypointInboundHTTPFilters (listener_waypoint.go:872-962: grpc_stats, fault, cors,
  then STATS-phase plugins, router; no session filter, listener_builder.go:442-445) on a
  socket listener standing in for connect_terminate -> main_internal; the route from a
  VirtualService applying to `mesh` (TranslateRoute, listener_waypoint.go:1228-1320, with the
  DestinationRule's hash and the label's per-route session state, route.go:568-591; without
  a route 1.30 hashes nothing, httproute.go:115-141, fixed in 1.31 by #61048); the cluster
  `inbound-vip|<port>|http|<host>` (cluster_waypoint.go:227-363: the DestinationRule's
  policy, no override_host_status, internal_upstream to connect_originate, endpoints as
  internal addresses without the tunnel match, endpoint_builder.go:764); EnvoyFilters by
  targetRefs only, never MERGE-patching that cluster (cluster.go:363).
- A gateway in front of a Service with istio.io/ingress-use-waypoint is refused: its
  endpoints would be the waypoint's pods (endpoint_builder.go:375-381, 896-929).
- --ambient: the Service's pods are enrolled in ambient (namespace label
  istio.io/dataplane-mode=ambient) and istiod runs with PILOT_ENABLE_AMBIENT=true. Then
  (buildEnvoyLbEndpoint, pilot/pkg/xds/endpoints/endpoint_builder.go:666-806; supportTunnel
  :808-835) each endpoint is `envoy_internal_address {server_listener_name:
  connect_originate, endpoint_id: "<pod ip>:<port>"}` with filter metadata
  envoy.filters.listener.original_dst {local: "<pod ip>:<port>"},
  envoy.transport_socket_match {tunnel: http} and istio {workload}, health status as
  without ambient (draining included); the cluster gets the hbone transport socket match,
  internal_upstream passing that metadata through (applyHBONETransportSocketMatches,
  cluster_tls.go:339-394); the proxy gets the `connect_originate` internal listener and
  cluster (buildConnectForwarder, listener_waypoint.go:806-869; buildConnectOriginate,
  cluster_waypoint.go:487-539) and the bootstrap's envoy.bootstrap.internal_listener
  (tools/packaging/common/envoy_bootstrap.json:52-74). The stand-in: istiod's
  connect_originate opens an HBONE tunnel (HTTP/2 CONNECT with mTLS to port 15008, where
  ztunnel answers); here its tcp_proxy connects to the pod itself in plain TCP (no
  tunneling_config, no TLS, no port override). The addresses Envoy's load balancer, the
  session filter and tether see are the ones istiod's configuration gives.
- --native-module PATH: --plugin is the native recipe's EnvoyFilter for Istio 1.31+
  (istio/native/envoyfilter-gateway.yaml; Istio does not support dynamic modules): its
  HTTP_FILTER patch (a DynamicModuleFilter loading the module by local filename) inserted
  into the gateway chain as listener_patch.go:479-492 does, with the in-pod filename replaced
  by PATH; the Service label, DestinationRule and VirtualService of --istio-dir as above.
  Modelled on 1.31.0-rc.0 where it matters: PILOT_ENABLE_PERSISTENT_SESSION_FILTER stays at
  its default (false), so no stateful_session filter (listener_builder.go:517-519) and no
  per-route session state (util.go:822-825), while the label still sets
  override_host_status (cluster.go:556-571) and keeps DRAINING endpoints (cookie label,
  endpoint_builder.go:633-640); --session-filter renders the flag turned on. The gateway
  chart's values next to the EnvoyFilter (gateway-values.yaml) must mount the filename,
  fill its volume and put keysFromEnv's variable into the environment.

Usage: scripts/istio-render.py --plugin istio/wasmplugin-gateway.yaml --out DIR
         [--endpoint 127.0.0.1:8081[=STATE] ...] [--wasm target/.../tether.wasm]
         [--endpoints-only] [--ambient]
       scripts/istio-render.py --plugin istio/native/envoyfilter-gateway.yaml
         --native-module target/envoy-1.39/native/libtether.so --out DIR [--session-filter] ...
STATE is the pod's EndpointSlice conditions: ready (default), terminating (graceful
shutdown: serving, terminating, not ready) or stopped (terminating, no longer serving).
Writes DIR/envoy.yaml (listener 127.0.0.1:10000, admin 127.0.0.1:9901), DIR/ecds.yaml and
DIR/eds.yaml; --endpoints-only rewrites DIR/eds.yaml alone (atomically: Envoy watches it),
as istiod pushes EDS when a pod's conditions change.
Anything in the manifests it does not know how to render is refused with its path.
"""
import argparse
import copy
import re
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from rendering import STATES, Refused, is_prime, load_docs, parse_endpoint, write_atomically  # noqa: E402

try:
    import yaml
except ImportError:
    sys.exit("scripts/istio-render.py needs PyYAML: apt-get install -y python3-yaml")

PHASES = ["AUTHN", "AUTHZ", "STATS", "UNSPECIFIED_PHASE"]
FAIL = {"FAIL_CLOSE": "FAIL_CLOSED", "FAIL_OPEN": "FAIL_OPEN", "FAIL_RELOAD": "FAIL_RELOAD"}
WASM_TYPE = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm"
RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"



def only(docs, kind, what, found=None):
    found = [d for d in docs if d.get("kind") == kind] if found is None else found
    if len(found) != 1:
        files = ", ".join(sorted({d["__file"] for d in found}))
        raise Refused(f"expected exactly one {kind} ({what}) in istio/, found {len(found)}"
                      + (f": {files}" if files else ""))
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
    check_keys(spec, {"selector", "targetRef", "targetRefs", "url", "sha256", "imagePullPolicy", "pluginName", "phase",
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


CONNECT_ORIGINATE = "connect_originate"
RAW_BUFFER = {"name": "envoy.transport_sockets.raw_buffer", "typed_config": {
    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer"}}
ORIGINAL_DST_KEY = "envoy.filters.listener.original_dst"


def lb_address(ip, port, ambient, svc, tunnel_match=True):
    """An lb_endpoint's address and metadata (buildEnvoyLbEndpoint): a plain socket address,
    or for an ambient pod the internal address of connect_originate with the pod in
    endpoint_id and in the original_dst metadata."""
    if not ambient:
        return {"socket_address": {"address": ip, "port_value": port}}, None
    target = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
    ns = svc["metadata"]["namespace"]
    name = svc["metadata"]["name"]
    metadata = {"filter_metadata": {
        ORIGINAL_DST_KEY: {"local": target},                      # BuildTunnelMetadataStruct
        "envoy.transport_socket_match": {"tunnel": "http"},       # replaces {tlsMode: istio}
        "istio": {"workload": f"{name};{ns};{name};;Kubernetes"}}}  # AppendLbEndpointMetadata
    if not tunnel_match:
        # A waypoint's inbound-vip endpoints carry none (endpoint_builder.go:764).
        del metadata["filter_metadata"]["envoy.transport_socket_match"]
    return {"envoy_internal_address": {"server_listener_name": CONNECT_ORIGINATE,
                                       "endpoint_id": target}}, metadata


def eds(svc, cluster_name, endpoints, ambient=False, tunnel_match=True):
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
        address, metadata = lb_address(ip, port, ambient, svc, tunnel_match)
        lb_endpoint = {"endpoint": {"address": address}, "health_status": status}
        if metadata:
            lb_endpoint["metadata"] = metadata
        lb_endpoints.append(lb_endpoint)
    return {"version_info": str(len(endpoints)) + "-" + ",".join(endpoints),
            "resources": [{"@type": "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
                           "cluster_name": cluster_name,
                           "endpoints": [{"lb_endpoints": lb_endpoints}]}]}


def cluster_and_route(docs, eds_path, gateway_api=None, waypoint=None):
    """gateway_api: the Gateway API Gateway the plugin targets (its HTTPRoute is rendered),
    or None (the VirtualService is; for a `waypoint`, one that applies to the mesh)."""
    svc = only(docs, "Service", "the stateful service")
    dr = only(docs, "DestinationRule", "its traffic policy")
    if gateway_api is not None:
        hr = http_route_for(gateway_api, docs)
    else:
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

    route = {"cluster": cluster["name"], "hash_policy": [{"header": {"header_name": ch["httpHeaderName"]}}]}
    session = {"envoy.filters.http.stateful_session": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute",
        "stateful_session": {"session_state": state_config}}}
    if gateway_api is not None:
        name = convert_http_route(hr, svc, port, route)
        return cluster, route, session, name

    http = vs["spec"]["http"]
    if len(http) != 1:
        raise Refused(f"{vs['__file']}: one http route expected")
    if waypoint and "mesh" not in vs["spec"].get("gateways", ["mesh"]):
        raise Refused(f"{vs['__file']}: VirtualService.spec.gateways must include `mesh` for the waypoint "
                      "to use it; without a route Istio 1.30 puts no hash policy on a waypoint's default "
                      "route (httproute.go), and sessions spread at random")
    subset = ((http[0].get("route") or [{}])[0].get("destination") or {}).get("subset")
    if subset:
        cluster = subset_cluster(cluster, dr, subset, host, port)
        route["cluster"] = cluster["name"]
    retries = http[0].get("retries")
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
    return cluster, route, session, None


def subset_cluster(default, dr, subset, host, port):
    """buildSubsetCluster (pilot/pkg/networking/core/cluster_builder.go:318-340, the fresh
    CommonLbConfig at :484): the subset's own cluster `outbound|<port>|<subset>|<host>` with
    the DestinationRule's traffic policy, on a CommonLbConfig that never gets the
    override_host_status the Service label gives the default cluster (cluster.go:555-567).
    Only the routed cluster is rendered (the default one istiod also sends carries no route
    here), and every pod given carries the subset's labels."""
    where = f"{dr['__file']}: DestinationRule.spec.subsets"
    subsets = {s.get("name"): s for s in dr["spec"].get("subsets", [])}
    if subset not in subsets:
        raise Refused(f"{where}: the VirtualService routes to subset `{subset}`, which the DestinationRule "
                      "does not define (istiod would route to a cluster that does not exist)")
    check_keys(subsets[subset], {"name", "labels"}, f"{where}[{subset}]")
    cluster = copy.deepcopy(default)
    cluster["name"] = f"outbound|{port}|{subset}|{host}"
    lb = {k: v for k, v in cluster.get("common_lb_config", {}).items() if k != "override_host_status"}
    cluster["common_lb_config"] = lb
    return cluster


def waypoint_cluster(outbound, svc, waypoint):
    """The waypoint's cluster for the Service (buildWaypointInboundVIPCluster,
    cluster_waypoint.go:227-363): `inbound-vip|<port>|http|<host>` with the
    DestinationRule's traffic policy on a fresh CommonLbConfig — no override_host_status,
    whatever the Service's label (only buildOutboundClusters sets it, cluster.go:555-567) —
    and the internal_upstream transport socket to connect_originate. The Service must use
    the waypoint (`istio.io/use-waypoint`)."""
    meta = svc["metadata"]
    if meta.get("labels", {}).get("istio.io/use-waypoint") != waypoint["metadata"]["name"]:
        raise Refused(f"{svc['__file']}: Service {meta['name']} has no label istio.io/use-waypoint: "
                      f"{waypoint['metadata']['name']}, so its traffic does not pass the waypoint the plugin targets")
    parts = outbound["name"].split("|")
    if parts[2]:
        raise Refused("a waypoint's subset clusters (inbound-vip|<port>|http/<subset>|<host>) are not rendered")
    cluster = copy.deepcopy(outbound)
    cluster["name"] = f"inbound-vip|{parts[1]}|http|{parts[3]}"
    cluster["common_lb_config"] = {k: v for k, v in cluster.get("common_lb_config", {}).items()
                                   if k != "override_host_status"}
    cluster["transport_socket"] = {"name": "envoy.transport_sockets.internal_upstream", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3."
                 "InternalUpstreamTransport",
        "passthrough_metadata": [{"kind": {"host": {}}, "name": ORIGINAL_DST_KEY},
                                 {"kind": {"host": {}}, "name": "istio"}],
        "transport_socket": RAW_BUFFER}}
    return cluster


def proto_merge(into, value, where):
    """An EnvoyFilter MERGE (proto.Merge): messages merge field by field, repeated fields
    are appended to, scalars replaced."""
    for key, v in value.items():
        if isinstance(v, dict) and isinstance(into.get(key), dict):
            proto_merge(into[key], v, f"{where}.{key}")
        elif isinstance(v, list):
            into[key] = list(into.get(key, [])) + v
        else:
            into[key] = copy.deepcopy(v)


def attached_envoy_filters(docs, proxy):
    """The EnvoyFilters istiod gives `proxy` (push_context.go EnvoyFilters, ShouldAttachPolicy):
    a waypoint takes only those with targetRefs to its Gateway (a selector is ignored); another
    proxy those with targetRefs to its Gateway API Gateway, or with a workloadSelector its
    labels match, or with neither."""
    out = []
    for ef in (d for d in docs if d.get("kind") == "EnvoyFilter"):
        spec = ef.get("spec", {})
        where = f"{ef['__file']}: EnvoyFilter {ef['metadata']['name']}.spec"
        check_keys(spec, {"workloadSelector", "targetRefs", "configPatches"}, where)
        refs = [r for r in spec.get("targetRefs", [])
                if (r.get("group"), r.get("kind")) == (GW_GROUP, "Gateway")]
        if spec.get("targetRefs"):
            attached = any(r.get("name") == proxy["gateway"] for r in refs)
        elif proxy["waypoint"]:
            attached = False
        else:
            selector = (spec.get("workloadSelector") or {}).get("labels") or {}
            attached = all(proxy["labels"].get(k) == v for k, v in selector.items())
        if attached:
            out.extend((f"{where}.configPatches[{i}]", patch) for i, patch in enumerate(spec.get("configPatches", [])))
    return out


def apply_envoy_filters(patches, cluster, filters, proxy):
    """EnvoyFilter patches (pilot/pkg/networking/core/envoyfilter/): CLUSTER with MERGE on the
    rendered outbound cluster (cluster_patch.go; a waypoint's inbound-vip clusters are never
    patched, cluster.go:363), and HTTP_FILTER with INSERT_BEFORE on the rendered listener's
    HTTP filters (listener_patch.go). Anything else is refused."""
    context = "SIDECAR_INBOUND" if proxy["waypoint"] else ("GATEWAY" if proxy["router"] else "SIDECAR_OUTBOUND")
    parts = cluster["name"].split("|")  # outbound|<port>|<subset>|<host> or inbound-vip|<port>|http|<host>
    for at, patch in patches:
        check_keys(patch, {"applyTo", "match", "patch"}, at)
        match = patch.get("match") or {}
        check_keys(match, {"context", "cluster", "listener"}, f"{at}.match")
        body = patch.get("patch") or {}
        check_keys(body, {"operation", "value"}, f"{at}.patch")
        if match.get("context", "ANY") not in ("ANY", context):
            continue
        if patch.get("applyTo") == "CLUSTER":
            wanted = match.get("cluster") or {}
            check_keys(wanted, {"service", "subset", "portNumber"}, f"{at}.match.cluster")
            if body.get("operation") != "MERGE":
                raise Refused(f"{at}.patch.operation: only MERGE is rendered for CLUSTER")
            if parts[0] != "outbound" or (
                    wanted.get("service", parts[3]) != parts[3] or wanted.get("subset", parts[2]) != parts[2]
                    or wanted.get("portNumber", int(parts[1])) != int(parts[1])):
                continue
            proto_merge(cluster, body.get("value") or {}, f"{at}.patch.value")
        elif patch.get("applyTo") == "HTTP_FILTER":
            listener = match.get("listener") or {}
            check_keys(listener, {"name", "filterChain"}, f"{at}.match.listener")
            if listener.get("name", proxy["listener"]) != proxy["listener"]:
                continue
            sub = (((listener.get("filterChain") or {}).get("filter") or {}).get("subFilter") or {}).get("name")
            if body.get("operation") != "INSERT_BEFORE" or not sub:
                raise Refused(f"{at}: only INSERT_BEFORE a named subFilter is rendered for HTTP_FILTER")
            names = [f["name"] for f in filters]
            if sub in names:
                filters.insert(names.index(sub), copy.deepcopy(body.get("value")))
        else:
            raise Refused(f"{at}.applyTo: only CLUSTER and HTTP_FILTER patches are rendered")


# ---------------------------------------------------------------- Gateway API

GW_GROUP = "gateway.networking.k8s.io"
WAYPOINT_CLASS = "istio-waypoint"
# validatePolicyTargetReference (pkg/config/validation/validation.go:1326-1358): admission
# accepts these (group, kind) and no other.
ADMITTED_TARGETS = {("", "Service"), ("networking.istio.io", "ServiceEntry"),
                    (GW_GROUP, "Gateway"), (GW_GROUP, "GatewayClass")}
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


def is_gateway_api(doc):
    return doc.get("kind") == "Gateway" and doc.get("apiVersion", "").startswith(GW_GROUP + "/")


def gateway_api_target(plugin, docs):
    """The Gateway API Gateway a targetRefs plugin attaches to, or None for a selector plugin."""
    spec, meta = plugin["spec"], plugin["metadata"]
    where = f"{plugin['__file']}: WasmPlugin {meta['name']}.spec"
    # validateOneOfSelectorType (validation.go:1382-1401), run by ValidateWasmPlugin.
    if sum(1 for k in ("selector", "targetRef", "targetRefs") if spec.get(k)) > 1:
        raise Refused(f"{where}: only one of targetRefs or workloadSelector can be set "
                      "(istiod's admission refuses the WasmPlugin)")
    refs = spec.get("targetRefs") or ([spec["targetRef"]] if spec.get("targetRef") else [])
    if not refs:
        return None
    if len(refs) != 1:
        raise Refused(f"{where}.targetRefs: one Gateway expected (the renderer builds one proxy)")
    ref = refs[0]
    group, kind, name = ref.get("group", ""), ref.get("kind"), ref.get("name")
    if not name:
        raise Refused(f"{where}.targetRefs.name: targetRef name must be set (istiod's admission)")
    if ref.get("namespace"):
        raise Refused(f"{where}.targetRefs.namespace: must not be set; istiod's admission refuses "
                      "cross-namespace references (put the plugin in the Gateway's namespace)")
    if (group, kind) not in ADMITTED_TARGETS:
        raise Refused(f"{where}.targetRefs: {group or 'core'}/{kind} is not a kind istiod's admission "
                      f"accepts ({', '.join(sorted(k for _, k in ADMITTED_TARGETS))})")
    if (group, kind) == ("", "Service"):
        # policyattachment.go:154-163: on the waypoint the Service uses, the Service's own chain.
        svcs = [d for d in docs if d.get("kind") == "Service" and d["metadata"]["name"] == name
                and d["metadata"].get("namespace") == meta["namespace"]]
        use = svcs[0]["metadata"].get("labels", {}).get("istio.io/use-waypoint") if svcs else None
        if not use:
            raise Refused(f"{where}.targetRefs: Service attaches only to waypoint proxies (ambient) "
                          "(ShouldAttachPolicy, pilot/pkg/model/policyattachment.go), and no Service "
                          f"{meta['namespace']}/{name} with istio.io/use-waypoint is in the manifests")
        kind, group, name = "Gateway", GW_GROUP, use
    if (group, kind) != (GW_GROUP, "Gateway"):
        raise Refused(f"{where}.targetRefs: {kind} attaches only to waypoint proxies (ambient) "
                      "(ShouldAttachPolicy, pilot/pkg/model/policyattachment.go); the renderer renders "
                      f"a waypoint from a targetRef to its {GW_GROUP} Gateway or to the Service that uses "
                      "it (istio/waypoint/)")
    found = [d for d in docs if is_gateway_api(d) and d["metadata"]["name"] == name
             and d["metadata"].get("namespace") == meta["namespace"]]
    if not found:
        raise Refused(f"{where}.targetRefs: no Gateway {meta['namespace']}/{name} ({GW_GROUP}) in the "
                      "manifests; istiod attaches a targetRef only to a Gateway in the plugin's "
                      "own namespace")
    gw = found[0]
    if gw["spec"].get("gatewayClassName") not in ("istio", WAYPOINT_CLASS):
        raise Refused(f"{gw['__file']}: Gateway {name}.spec.gatewayClassName must be `istio` or "
                      f"`{WAYPOINT_CLASS}` (istiod deploys and configures the proxy only for its own classes)")
    if gw["spec"]["gatewayClassName"] == WAYPOINT_CLASS:
        for m in spec.get("match", []):
            if m.get("mode", "CLIENT_AND_SERVER") == "CLIENT" or m.get("ports"):
                raise Refused(f"{where}.match: on a waypoint `mode: CLIENT` and `ports` never match "
                              "(pilot/pkg/model/extensions.go): the plugin would run nowhere")
    check_gateway_env(gw, docs, [e["name"] for e in spec.get("vmConfig", {}).get("env", [])
                                 if e.get("valueFrom", "INLINE") == "HOST"])
    return gw


def check_gateway_env(gw, docs, names):
    """valueFrom: HOST reads the generated proxy's environment: the Gateway's parametersRef
    ConfigMap overlay must put `names` there (deploymentcontroller.go render/applyOverlay)."""
    where = f"{gw['__file']}: Gateway {gw['metadata']['name']}.spec.infrastructure.parametersRef"
    ref = gw["spec"].get("infrastructure", {}).get("parametersRef")
    if not ref:
        if names:
            raise Refused(f"{where}: not set, so nothing puts {', '.join(names)} into the environment of "
                          "the proxy istiod deploys for the Gateway (vmConfig.env valueFrom: HOST)")
        return
    if (ref.get("group", ""), ref.get("kind")) != ("", "ConfigMap"):
        raise Refused(f"{where}: istiod only reads a ConfigMap (fetchParameters)")
    cms = [d for d in docs if d.get("kind") == "ConfigMap" and d["metadata"]["name"] == ref.get("name")
           and d["metadata"].get("namespace") == gw["metadata"].get("namespace")]
    if not cms:
        raise Refused(f"{where}: ConfigMap {ref.get('name')} is not in the manifests (istiod does not "
                      "deploy a Gateway whose parametersRef ConfigMap is missing)")
    data = cms[0].get("data", {})
    for key in data:
        if key not in ("deployment", "service", "serviceAccount", "horizontalPodAutoscaler",
                       "podDisruptionBudget"):
            raise Refused(f"{cms[0]['__file']}: ConfigMap data.{key}: not an overlay istiod supports")
    overlay = yaml.safe_load(data.get("deployment", "")) or {}
    containers = overlay.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    env = {e.get("name") for c in containers if c.get("name") == "istio-proxy" for e in c.get("env", [])}
    for name in names:
        if name not in env:
            raise Refused(f"{cms[0]['__file']}: ConfigMap data.deployment gives the istio-proxy container "
                          f"no {name}: the plugin's vmConfig.env reads it from the proxy's environment")


def http_route_for(gw, docs):
    """The one HTTPRoute attached to `gw`; refuses none, several, or one that would not attach."""
    gw_ns, gw_name = gw["metadata"].get("namespace"), gw["metadata"]["name"]

    def parents(hr):
        ns = hr["metadata"].get("namespace")
        return [p for p in hr["spec"].get("parentRefs", [])
                if p.get("group", GW_GROUP) == GW_GROUP and p.get("kind", "Gateway") == "Gateway"
                and p.get("name") == gw_name and p.get("namespace", ns) == gw_ns]

    found = [d for d in docs if d.get("kind") == "HTTPRoute" and parents(d)]
    hr = only(docs, "HTTPRoute", f"with parentRef Gateway {gw_ns}/{gw_name}", found)
    where = f"{hr['__file']}: HTTPRoute {hr['metadata']['name']}"
    ns = hr["metadata"].get("namespace")
    listeners = [li for li in gw["spec"].get("listeners", []) if li.get("protocol") == "HTTP"]
    section = parents(hr)[0].get("sectionName")
    listeners = [li for li in listeners if section in (None, li.get("name"))]
    if not listeners:
        raise Refused(f"{where}: the Gateway has no HTTP listener for it")
    listener = listeners[0]
    if listener.get("hostname") and hr["spec"].get("hostnames") and \
            listener["hostname"] not in hr["spec"]["hostnames"]:
        raise Refused(f"{where}.spec.hostnames: none is the listener's hostname {listener['hostname']}")
    allowed = listener.get("allowedRoutes", {}).get("namespaces", {"from": "Same"})
    if ns != gw_ns:
        selector = allowed.get("selector", {})
        if not (allowed.get("from") == "All" or (
                allowed.get("from") == "Selector" and set(selector) == {"matchLabels"}
                and selector["matchLabels"] == {"kubernetes.io/metadata.name": ns})):
            raise Refused(f"{where}: the Gateway's listener {listener.get('name')} does not allow routes "
                          f"from namespace {ns} (allowedRoutes.namespaces)")
    return hr


def gw_duration(value, where):
    """A Gateway API duration (1h30m, 500ms) as a protobuf JSON duration."""
    parts = re.findall(r"([0-9]+)(ms|h|m|s)", value or "")
    if not parts or "".join(n + u for n, u in parts) != value:
        raise Refused(f"{where}: {value!r} is not a Gateway API duration")
    ms = sum(int(n) * {"h": 3600000, "m": 60000, "s": 1000, "ms": 1}[u] for n, u in parts)
    return f"{ms / 1000:g}s"


def convert_http_route(hr, svc, port, route):
    """convertHTTPRoute (conversion.go) and applyHTTPRouteDestination (route.go) for the one
    rule; fills `route` (the RouteAction) and returns the route's name."""
    where = f"{hr['__file']}: HTTPRoute {hr['metadata']['name']}.spec"
    ns, name = hr["metadata"].get("namespace"), hr["metadata"]["name"]
    check_keys(hr["spec"], {"parentRefs", "hostnames", "rules"}, where)
    rules = hr["spec"].get("rules", [])
    if len(rules) != 1:
        raise Refused(f"{where}.rules: one rule expected")
    rule = rules[0]
    check_keys(rule, {"name", "matches", "backendRefs", "retry", "timeouts"}, f"{where}.rules[0]")
    for m in rule.get("matches", []):
        if m != {"path": {"type": "PathPrefix", "value": "/"}}:
            raise Refused(f"{where}.rules[0].matches: only PathPrefix / is rendered")
    refs = rule.get("backendRefs", [])
    if len(refs) != 1:
        raise Refused(f"{where}.rules[0].backendRefs: one backend expected")
    ref = refs[0]
    check_keys(ref, {"group", "kind", "name", "namespace", "port", "weight"}, f"{where}.rules[0].backendRefs[0]")
    if (ref.get("group", ""), ref.get("kind", "Service")) != ("", "Service") or \
            ref.get("namespace", ns) != ns:
        raise Refused(f"{where}.rules[0].backendRefs[0]: a Service in the route's namespace expected "
                      "(another namespace needs a ReferenceGrant, not rendered)")
    if (ref.get("name"), ns, ref.get("port")) != (svc["metadata"]["name"], svc["metadata"]["namespace"], port):
        raise Refused(f"{where}.rules[0].backendRefs[0]: must be Service {svc['metadata']['namespace']}/"
                      f"{svc['metadata']['name']} port {port}")
    # conversion.go: route name; gateway semantics answer 500 for a missing backend (route.go).
    route_name = rule.get("name") or f"{ns}.{name}.0"
    route["cluster_not_found_response_code"] = "INTERNAL_SERVER_ERROR"
    timeouts = rule.get("timeouts", {})
    check_keys(timeouts, {"request", "backendRequest"}, f"{where}.rules[0].timeouts")
    retry = rule.get("retry")
    if retry is None:
        # No retries on the VirtualService: the mesh default (route.go), without previous_hosts
        # because the DestinationRule hashes (retry.go ConvertPolicy).
        policy = {"num_retries": 2, "retry_on": DEFAULT_RETRY_ON, "host_selection_retry_max_attempts": 5}
    else:
        check_keys(retry, {"attempts", "codes", "backoff"}, f"{where}.rules[0].retry")
        attempts = retry.get("attempts", 2)
        policy = None
        if attempts > 0:
            codes = retry.get("codes", [])
            retry_on = "connect-failure,refused-stream,unavailable,cancelled"
            policy = {"num_retries": attempts,
                      "retry_on": retry_on + (",retriable-status-codes" if codes else ""),
                      "host_selection_retry_max_attempts": 5}
            if codes:
                policy["retriable_status_codes"] = list(codes)
            if "backoff" in retry:
                policy["retry_back_off"] = {"base_interval": gw_duration(
                    retry["backoff"], f"{where}.rules[0].retry.backoff")}
    if "request" in timeouts:
        route["timeout"] = gw_duration(timeouts["request"], f"{where}.rules[0].timeouts.request")
    if "backendRequest" in timeouts:
        t = gw_duration(timeouts["backendRequest"], f"{where}.rules[0].timeouts.backendRequest")
        if retry is not None and policy:
            policy["per_try_timeout"] = t
        else:
            route["timeout"] = t
    if policy:
        route["retry_policy"] = policy
    return route_name


def hbone_transport_socket_matches():
    """applyHBONETransportSocketMatches (cluster_tls.go:339-394) for the auto-mTLS case:
    the hbone match (internal_upstream passing the original_dst and istio metadata through
    to connect_originate), then the plain-text default. The tlsMode-istio match between
    them (Istio mTLS to sidecar pods, with certificates from istio-agent) is left out: no
    endpoint here carries {tlsMode: istio}, so it would match nothing."""
    return [
        {"name": "hbone", "match": {"tunnel": "http"}, "transport_socket": {
            "name": "envoy.transport_sockets.internal_upstream",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3."
                         "InternalUpstreamTransport",
                "passthrough_metadata": [
                    {"kind": {"host": {}}, "name": ORIGINAL_DST_KEY},
                    {"kind": {"cluster": {}}, "name": "istio"},
                    {"kind": {"host": {}}, "name": "istio"}],
                "transport_socket": RAW_BUFFER}}},
        {"name": "tlsMode-disabled", "match": {}, "transport_socket": RAW_BUFFER},
    ]


def connect_originate():
    """The connect_originate internal listener and cluster every proxy gets when istiod
    sends HBONE (buildConnectForwarder, buildConnectOriginate), as the stand-in described
    in the module's docstring: the listener restores the pod address from the metadata
    (original_dst listener filter) and its tcp_proxy connects to it in plain TCP."""
    listener = {
        "name": CONNECT_ORIGINATE, "use_original_dst": False, "internal_listener": {},
        "listener_filters": [{"name": ORIGINAL_DST_KEY, "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst"}}],
        "filter_chains": [{"filters": [{"name": "envoy.filters.network.tcp_proxy", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy",
            "stat_prefix": CONNECT_ORIGINATE, "cluster": CONNECT_ORIGINATE}}]}]}
    cluster = {"name": CONNECT_ORIGINATE, "type": "ORIGINAL_DST", "lb_policy": "CLUSTER_PROVIDED",
               "connect_timeout": "10s", "cleanup_interval": "60s"}
    return listener, cluster


def render(plugin_path, istio_dir, endpoints, wasm_path, out_dir, endpoints_only=False, ambient=False):
    plugin_doc = load_docs([plugin_path])
    plugins = [d for d in plugin_doc if d.get("kind") == "WasmPlugin"]
    if len(plugins) != 1:
        raise Refused(f"{plugin_path}: expected one WasmPlugin")
    others = sorted(os.path.join(istio_dir, f) for f in os.listdir(istio_dir)
                    if f.endswith(".yaml") and not f.startswith("wasmplugin-"))
    docs = load_docs(others)
    ext = wasm_filter(plugins[0], wasm_path)
    gateway_api = gateway_api_target(plugins[0], docs)
    waypoint = gateway_api if gateway_api and gateway_api["spec"]["gatewayClassName"] == WAYPOINT_CLASS else None
    if waypoint:
        gateway_api = None
        ambient = True  # a waypoint reaches the Service's (ambient) pods through connect_originate
    labels = (plugins[0]["spec"].get("selector") or {}).get("matchLabels", {})
    gateway = gateway_api is not None or "istio" in labels
    os.makedirs(out_dir, exist_ok=True)
    eds_path = os.path.join(out_dir, "eds.yaml")
    cluster, route, session, route_name = cluster_and_route(docs, eds_path, gateway_api, waypoint)
    svc = only(docs, "Service", "the stateful service")
    if waypoint:
        cluster = waypoint_cluster(cluster, svc, waypoint)
        route["cluster"] = cluster["name"]
    svc_labels = svc["metadata"].get("labels", {})
    if gateway and str(svc_labels.get("istio.io/ingress-use-waypoint", "")).lower() == "true" \
            and svc_labels.get("istio.io/use-waypoint"):
        # endpoint_builder.go:375-381, 896-929: the gateway's EDS for the Service then holds the
        # waypoint's pods (:15008, metadata `waypoint`), not the Service's.
        raise Refused(f"{svc['__file']}: Service {svc['metadata']['name']} has istio.io/ingress-use-waypoint: "
                      "the gateway then reaches its waypoint's pods, not its own, so tether at the gateway "
                      "would pin sessions to a waypoint pod and the waypoint would spread them over the app's "
                      "pods; run tether in the waypoint (istio/waypoint/) or remove the label")
    proxy = {"waypoint": waypoint is not None, "router": gateway,
             "gateway": (waypoint or gateway_api or {}).get("metadata", {}).get("name"),
             "labels": labels, "listener": "main_internal" if waypoint else "0.0.0.0_80"}
    patches = attached_envoy_filters(docs, proxy)
    kind, name, _ = session_state(svc)
    check_plugin_agrees(ext["plugin_config"], kind, name,
                        f"{plugin_path}: WasmPlugin {plugins[0]['metadata']['name']}.spec")
    header = (f"# Rendered by scripts/istio-render.py from {plugin_path} and {istio_dir}/:\n"
              "# the Envoy configuration istiod would produce (see docs/istio.md).\n")
    write_atomically(eds_path, header + yaml.safe_dump(eds(svc, cluster["name"], endpoints, ambient,
                                                           tunnel_match=not waypoint),
                                                       sort_keys=False, width=120))
    if endpoints_only:
        return

    # listener_builder.go: plugins by phase (one plugin here), then Istio's own filters,
    # router last. A waypoint (buildWaypointInboundHTTPFilters, listener_waypoint.go:872-962)
    # runs AUTHN and AUTHZ plugins before, STATS and unspecified ones after grpc_stats, fault
    # and cors, and has no session filter of istiod's (listener_builder.go:442-445).
    plugin_filter = {"name": ext["name"], "config_discovery": {
        "config_source": {"path_config_source": {"path": os.path.abspath(
            os.path.join(out_dir, "ecds.yaml"))}, "resource_api_version": "V3"},
        "type_urls": [WASM_TYPE, RBAC_TYPE]}}
    late = waypoint is not None and ext["phase"] in ("STATS", "UNSPECIFIED_PHASE")
    filters = [] if late else [plugin_filter]
    filters += [
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
    ]
    if late:
        filters.append(plugin_filter)
    if not waypoint:
        # EmptySessionFilter: configured per route / virtual host below.
        filters.append({"name": "envoy.filters.http.stateful_session", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    apply_envoy_filters(patches, cluster, filters, proxy)
    rt = {"match": {"prefix": "/"}, "route": route}
    if route_name:
        rt = {"name": route_name, **rt}
    vhost = {"name": "media", "domains": ["*"], "routes": [rt]}
    if gateway or waypoint:
        # gateway.go per route; a waypoint's routes come from TranslateRoute (route.go), which
        # sets the label's session state per route whether or not a session filter reads it.
        rt["typed_per_filter_config"] = session
    else:
        vhost["typed_per_filter_config"] = session     # httproute.go: per virtual host
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "outbound_0.0.0.0_80" if not gateway else "http.80",
           "upgrade_configs": [{"upgrade_type": "websocket"}],
           "route_config": {"name": "http.80", "virtual_hosts": [vhost]},
           "http_filters": filters}
    if waypoint:
        hcm["stat_prefix"] = cluster["name"]
    kind = "router" if gateway or waypoint else "sidecar"
    workload = plugins[0]["metadata"]["namespace"]
    bootstrap = {
        "node": {"id": f"{kind}~127.0.0.1~tether-test.{workload}~{workload}.svc.cluster.local",
                 "cluster": f"tether-test.{workload}"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            # A waypoint's HTTP chain sits on its internal `main_internal` listener, reached
            # through the HBONE `connect_terminate` one; the stand-in serves it on a socket.
            "listeners": [{"name": proxy["listener"], "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [cluster]}}
    if ambient:
        if not waypoint:
            cluster["transport_socket_matches"] = hbone_transport_socket_matches()
        listener, forwarder = connect_originate()
        bootstrap["static_resources"]["listeners"].append(listener)
        bootstrap["static_resources"]["clusters"].append(forwarder)
        # envoy_bootstrap.json: in every proxy's bootstrap, ambient or not.
        bootstrap["bootstrap_extensions"] = [{"name": "envoy.bootstrap.internal_listener", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener",
            "buffer_size_kb": 64}}]
    with open(os.path.join(out_dir, "envoy.yaml"), "w") as f:
        f.write(header + yaml.safe_dump(bootstrap, sort_keys=False, width=120))
    with open(os.path.join(out_dir, "ecds.yaml"), "w") as f:
        f.write(header + yaml.safe_dump({"resources": [ext["ecds"]]}, sort_keys=False, width=120))


# ---------------------------------------------------------------- native build (Istio 1.31+)

DYNAMIC_MODULE_TYPE = "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter"


def native_patch(ef_docs, ef_path):
    """The one EnvoyFilter of `ef_path` and its HTTP_FILTER patch whose value is a
    DynamicModuleFilter loading a module by local filename (istio/native/)."""
    efs = [d for d in ef_docs if d.get("kind") == "EnvoyFilter"]
    if len(efs) != 1 or len(ef_docs) != 1:
        raise Refused(f"{ef_path}: expected one EnvoyFilter (the native recipe) and nothing else")
    ef = efs[0]
    where = f"{ef_path}: EnvoyFilter {ef['metadata']['name']}.spec"
    found = [(i, p) for i, p in enumerate(ef.get("spec", {}).get("configPatches", []))
             if p.get("applyTo") == "HTTP_FILTER"
             and ((p.get("patch") or {}).get("value") or {}).get("typed_config", {}).get("@type") == DYNAMIC_MODULE_TYPE]
    if len(found) != 1:
        raise Refused(f"{where}.configPatches: expected one HTTP_FILTER patch whose typed_config is a "
                      "DynamicModuleFilter")
    i, patch = found[0]
    at = f"{where}.configPatches[{i}]"
    if (patch.get("match") or {}).get("context") != "GATEWAY":
        raise Refused(f"{at}.match.context: only the gateway recipe (GATEWAY) is rendered; the sidecar one "
                      "is not provided (docs/istio.md, \"Native build\")")
    typed = patch["patch"]["value"]["typed_config"]
    check_keys(typed, {"@type", "dynamic_module_config", "filter_name", "filter_config"}, f"{at}.patch.value.typed_config")
    module = typed.get("dynamic_module_config") or {}
    check_keys(module, {"module"}, f"{at}.patch.value.typed_config.dynamic_module_config")
    filename = (((module.get("module") or {}).get("local") or {}).get("filename"))
    if not filename or not filename.startswith("/"):
        raise Refused(f"{at}.patch.value.typed_config.dynamic_module_config.module.local.filename: an absolute "
                      "path in the gateway pod is required (the file the gateway values mount)")
    config = typed.get("filter_config") or {}
    if config.get("@type") != "type.googleapis.com/google.protobuf.StringValue":
        raise Refused(f"{at}.patch.value.typed_config.filter_config: tether reads its JSON from a "
                      "google.protobuf.StringValue")
    try:
        tether = json.loads(config.get("value", ""))
    except ValueError as e:
        raise Refused(f"{at}.patch.value.typed_config.filter_config.value: not JSON ({e})")
    for field in ("hostCookie", "hostHeader"):
        if field in tether:
            raise Refused(f"{at}.patch.value.typed_config.filter_config.value.{field}: the native module sets "
                          "Envoy's upstream override host itself (the module refuses hostCookie)")
    return ef, at, filename, tether


def check_gateway_values(values_path, filename, tether):
    """The Helm values of Istio's gateway chart (manifests/charts/gateway/values.yaml,
    1.31.0-rc.0): `filename` must be under a volumeMount of the istio-proxy container whose
    volume an init container fills (or an image volume), and the keys variable must be in
    envVarFrom (or env)."""
    values = load_docs([values_path])
    if len(values) != 1:
        raise Refused(f"{values_path}: expected one document of Helm values")
    values = values[0]
    check_keys(values, {"__file", "volumes", "volumeMounts", "initContainers", "envVarFrom", "env"}, values_path)
    volumes = {v.get("name"): v for v in values.get("volumes") or []}
    mounts = [m for m in values.get("volumeMounts") or []
              if filename.startswith(m.get("mountPath", "").rstrip("/") + "/")]
    if not mounts:
        raise Refused(f"{values_path}: volumeMounts: {filename} is under no volume mounted into istio-proxy")
    mount = mounts[0]
    volume = volumes.get(mount.get("name"))
    if volume is None:
        raise Refused(f"{values_path}: volumes: no volume `{mount.get('name')}` (mounted at {mount['mountPath']})")
    fillers = [c for c in values.get("initContainers") or []
               if any(m.get("name") == mount["name"] for m in c.get("volumeMounts") or [])]
    if "image" not in volume and not fillers:
        raise Refused(f"{values_path}: initContainers: nothing fills volume `{mount['name']}` with the module")
    env_name = tether.get("keysFromEnv")
    if env_name:
        names = [e.get("name") for e in values.get("envVarFrom") or []] + list((values.get("env") or {}).keys())
        if env_name not in names:
            raise Refused(f"{values_path}: envVarFrom: no {env_name} for the module's keysFromEnv")


def render_native(ef_path, istio_dir, endpoints, module_path, out_dir, endpoints_only=False, session_filter=False):
    """The gateway with the native EnvoyFilter instead of a WasmPlugin (Istio 1.31+). The same
    Service label, DestinationRule and VirtualService as the Wasm recipe; what differs is
    modelled on 1.31.0-rc.0: PILOT_ENABLE_PERSISTENT_SESSION_FILTER at its default (false)
    puts no stateful_session filter on the chain (listener_builder.go:517-519) and no
    per-route session state (MaybeBuildStatefulSessionFilterConfig returns nil, util.go:822-825),
    while the label still gives the cluster its override_host_status (cluster.go:556-571) and
    keeps a terminating pod in EDS as DRAINING (endpointslice.go:269-274,
    endpoint_builder.go:633-640). `session_filter` renders the flag turned on. The module's
    in-pod filename is replaced by `module_path` (the file the gateway values mount)."""
    ef_docs = load_docs([ef_path])
    ef, at, in_pod, tether = native_patch(ef_docs, ef_path)
    values_path = os.path.join(os.path.dirname(ef_path), "gateway-values.yaml")
    if os.path.exists(values_path):
        check_gateway_values(values_path, in_pod, tether)
    others = sorted(os.path.join(istio_dir, f) for f in os.listdir(istio_dir)
                    if f.endswith(".yaml") and not f.startswith("wasmplugin-")
                    and os.path.abspath(os.path.join(istio_dir, f)) != os.path.abspath(ef_path))
    docs = load_docs(others) + ef_docs
    labels = (ef["spec"].get("workloadSelector") or {}).get("labels") or {}
    if "istio" not in labels:
        raise Refused(f"{ef_path}: EnvoyFilter {ef['metadata']['name']}.spec.workloadSelector: select the "
                      "ingress gateway's pods (istio: ingressgateway)")
    os.makedirs(out_dir, exist_ok=True)
    eds_path = os.path.join(out_dir, "eds.yaml")
    cluster, route, session, _ = cluster_and_route(docs, eds_path)
    dr = only(docs, "DestinationRule", "its traffic policy")
    hashed = dr["spec"]["trafficPolicy"]["loadBalancer"]["consistentHash"]["httpHeaderName"]
    if tether.get("keyHeader", "x-tether-key") != hashed:
        raise Refused(f"{at}.patch.value.typed_config.filter_config.value.keyHeader must be `{hashed}` "
                      "(the DestinationRule's consistentHash.httpHeaderName)")
    svc = only(docs, "Service", "the stateful service")
    session_state(svc)  # the label that gives the cluster override_host_status
    header = (f"# Rendered by scripts/istio-render.py from {ef_path} and {istio_dir}/:\n"
              "# the Envoy configuration istiod would produce (see docs/istio.md).\n")
    write_atomically(eds_path, header + yaml.safe_dump(eds(svc, cluster["name"], endpoints),
                                                       sort_keys=False, width=120))
    if endpoints_only:
        return
    filters = [
        {"name": "envoy.filters.http.grpc_stats", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.grpc_stats.v3.FilterConfig",
            "emit_filter_state": True, "stats_for_all_methods": False}},
        {"name": "envoy.filters.http.fault", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"}},
        {"name": "envoy.filters.http.cors", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"}},
    ]
    if session_filter:
        filters.append({"name": "envoy.filters.http.stateful_session", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.stateful_session.v3.StatefulSession"}})
    filters.append({"name": "envoy.filters.http.router", "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
    proxy = {"waypoint": False, "router": True, "gateway": None, "labels": labels, "listener": "0.0.0.0_80"}
    apply_envoy_filters(attached_envoy_filters(docs, proxy), cluster, filters, proxy)
    modules = [f for f in filters if f.get("typed_config", {}).get("@type") == DYNAMIC_MODULE_TYPE]
    if len(modules) != 1:
        raise Refused(f"{at}: the patch did not insert the module exactly once (found {len(modules)})")
    local = modules[0]["typed_config"]["dynamic_module_config"]["module"]["local"]
    local["filename"] = os.path.abspath(module_path)  # the file the pod mounts at in_pod
    rt = {"match": {"prefix": "/"}, "route": route}
    if session_filter:
        rt["typed_per_filter_config"] = session
    hcm = {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
                    "HttpConnectionManager",
           "stat_prefix": "http.80",
           "upgrade_configs": [{"upgrade_type": "websocket"}],
           "route_config": {"name": "http.80", "virtual_hosts": [
               {"name": "media", "domains": ["*"], "routes": [rt]}]},
           "http_filters": filters}
    workload = ef["metadata"]["namespace"]
    bootstrap = {
        "node": {"id": f"router~127.0.0.1~tether-test.{workload}~{workload}.svc.cluster.local",
                 "cluster": f"tether-test.{workload}"},
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 9901}}},
        "static_resources": {
            "listeners": [{"name": proxy["listener"], "address": {"socket_address": {
                "address": "127.0.0.1", "port_value": 10000}},
                "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                "typed_config": hcm}]}]}],
            "clusters": [cluster]}}
    with open(os.path.join(out_dir, "envoy.yaml"), "w") as f:
        f.write(header + yaml.safe_dump(bootstrap, sort_keys=False, width=120))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--plugin", required=True)
    ap.add_argument("--istio-dir", default="istio")
    ap.add_argument("--endpoint", action="append", default=[])
    ap.add_argument("--wasm", default="target/wasm32-wasip1/release/tether.wasm")
    ap.add_argument("--out", required=True)
    ap.add_argument("--ambient", action="store_true",
                    help="the pods are ambient-enrolled (istiod with PILOT_ENABLE_AMBIENT=true)")
    ap.add_argument("--endpoints-only", action="store_true",
                    help="rewrite only DIR/eds.yaml (a pod's conditions changed)")
    ap.add_argument("--native-module", metavar="PATH",
                    help="--plugin is the native EnvoyFilter (istio/native/envoyfilter-gateway.yaml): render "
                         "it with the module's in-pod filename replaced by PATH")
    ap.add_argument("--session-filter", action="store_true",
                    help="with --native-module: istiod runs with PILOT_ENABLE_PERSISTENT_SESSION_FILTER=true")
    args = ap.parse_args()
    endpoints = args.endpoint or ["127.0.0.1:8081", "127.0.0.1:8082", "127.0.0.1:8083"]
    try:
        if args.native_module:
            if args.ambient:
                raise Refused("--ambient: the native module's override host takes IP addresses only "
                              "(docs/istio.md, \"Ambient\")")
            render_native(args.plugin, args.istio_dir, endpoints, args.native_module, args.out,
                          args.endpoints_only, args.session_filter)
            return
        if args.session_filter:
            raise Refused("--session-filter is for --native-module (the Wasm recipe always has the filter)")
        render(args.plugin, args.istio_dir, endpoints, args.wasm, args.out, args.endpoints_only, args.ambient)
    except Refused as e:
        sys.exit(f"istio-render: {e}")
    except (KeyError, TypeError, ValueError) as e:
        sys.exit(f"istio-render: malformed manifest: missing or wrong field {e}")


if __name__ == "__main__":
    main()
