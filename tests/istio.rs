//! The manifests in istio/ through a real Envoy, without a cluster: scripts/istio-render.py
//! turns each WasmPlugin (with the Service label, DestinationRule and VirtualService) into
//! the configuration istiod would send — the plugin delivered by ECDS from a file, its
//! pluginConfig as JSON in a google.protobuf.StringValue, keys from Envoy's environment
//! (vmConfig.env valueFrom: HOST), istiod's filter order — and the core behaviour runs
//! through it. Also: `envoy --mode validate` on every shipped and rendered configuration.

mod common;

use common::renderers::istio::{cluster_name, render_from, render_with};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use tether::address::Owner;
use tether::token::SessionId;

/// Runs scripts/istio-render.py; returns (envoy.yaml, ecds.yaml) contents.
fn render(plugin: &str, pods: &[SocketAddr], out: &Path) -> (String, String) {
    render_as(plugin, pods, out, Mesh::Sidecar)
}

/// Where the Service's pods are: in the sidecar world (istiod sends `ip:port` endpoints),
/// or enrolled in Istio ambient (internal addresses of `connect_originate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mesh {
    Sidecar,
    Ambient,
}

impl Mesh {
    /// The owner as the gateway's cluster names the pod.
    fn owner(self, pod: SocketAddr) -> Owner {
        match self {
            Mesh::Sidecar => pod.into(),
            Mesh::Ambient => Owner { addr: pod, listener: Some("connect_originate".into()) },
        }
    }
}

fn render_as(plugin: &str, pods: &[SocketAddr], out: &Path, mesh: Mesh) -> (String, String) {
    render_in("istio", plugin, pods, out, mesh)
}

fn render_in(istio_dir: &str, plugin: &str, pods: &[SocketAddr], out: &Path, mesh: Mesh) -> (String, String) {
    let endpoints: Vec<String> = pods.iter().map(|p| p.to_string()).collect();
    render_with(istio_dir, plugin, &endpoints, out, false, mesh == Mesh::Ambient)
}

/// The JSON plugin configuration inside the ECDS StringValue.
fn plugin_json(ecds: &str) -> serde_json::Value {
    let line = ecds.lines().find(|l| l.trim_start().starts_with("value: '")).expect("StringValue value");
    let quoted = line.trim_start().trim_start_matches("value: '").trim_end_matches('\'');
    serde_json::from_str(&quoted.replace("''", "'")).expect("pluginConfig is JSON")
}

/// Position of the first line containing `needle` (panics if absent).
fn position(yaml: &str, needle: &str) -> usize {
    yaml.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the rendered configuration"))
}

/// mint, sticky, forged token, owner gone — through the Envoy istiod would configure.
fn core_behaviour(plugin: &str, expect_secure: bool, mesh: Mesh) {
    core_behaviour_in("istio", plugin, expect_secure, mesh)
}

fn core_behaviour_in(istio_dir: &str, plugin: &str, expect_secure: bool, mesh: Mesh) {
    let mut pods = Pod::start_many(3);
    let name = Path::new(plugin).file_stem().unwrap().to_str().unwrap();
    let out = scratch_dir(&format!("istio-{name}-{mesh:?}"));
    let (envoy_yaml, ecds) = render_in(istio_dir, plugin, &addrs(&pods), &out, mesh);

    // The filter order istiod produces: the WasmPlugin (by ECDS) before stateful_session,
    // router last; the per-route session state reads the cookie tether writes.
    let config = plugin_json(&ecds);
    let host_cookie = config["hostCookie"].as_str().unwrap();
    let key_header = config["keyHeader"].as_str().unwrap();
    let wasm_at = position(&envoy_yaml, "name: extensions.istio.io/trafficextension/");
    let session_at = position(&envoy_yaml, "name: envoy.filters.http.stateful_session\n");
    let router_at = position(&envoy_yaml, "name: envoy.filters.http.router");
    assert!(wasm_at < session_at && session_at < router_at, "filter order:\n{envoy_yaml}");
    assert!(envoy_yaml.contains("config_discovery:") && envoy_yaml.contains("path_config_source:"));
    assert!(ecds.contains("host_env_keys:\n          - TETHER_KEYS"), "keys from the proxy's environment");
    assert!(envoy_yaml.contains("cookie.v3.CookieBasedSessionState"), "cookie session state");
    assert!(
        envoy_yaml.contains(&format!("name: {host_cookie}\n")),
        "the Service label names tether's hostCookie `{host_cookie}`"
    );
    assert!(
        envoy_yaml.contains(&format!("header_name: {key_header}\n")),
        "the DestinationRule hashes tether's keyHeader `{key_header}`"
    );

    let scope = cluster_name(&out);
    assert!(scope.starts_with("outbound|") || scope.starts_with("inbound-vip|"), "{scope}");
    let open_demo = |value: &str| open_scoped(value, &scope);
    let forged = |owner| forged_token(owner, &scope);
    let config = EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    assert!(envoy.log().contains("configured: cookie `tether`"), "the plugin read its pluginConfig");

    // Mint: the cookie names the pod that served, with the attributes of pluginConfig.
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let set_cookie = first.set_cookie().expect("a new session sets the cookie").to_string();
    assert_eq!(set_cookie.contains("; Secure"), expect_secure, "{set_cookie}");
    let value = first.cookie_value().unwrap();
    let owner = open_demo(&value).owner;
    // The token names the pod as the cluster keys it (ambient: its internal address).
    assert_eq!(owner, mesh.owner(pod_by_name(&pods, first.pod()).addr));
    let owner = owner.addr;
    assert_no_owner_cookie_for_client(&first, host_cookie);

    // Sticky; the pod receives exactly one owner cookie, tether's, first.
    let presented = format!("{host_cookie}={}", owner_cookie_value(mesh.owner(owner)));
    for i in 0..20 {
        let r = envoy.get_with_cookie(Some(&value));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "request {i}");
        assert_eq!(r.header("x-seen-cookie"), Some(format!("{presented}; {COOKIE}={value}").as_str()));
        assert_eq!(r.all("set-cookie").len(), 0);
    }

    // A forged token aimed at another pod never steers.
    let target = pods.iter().find(|p| p.addr != owner).unwrap().addr;
    for _ in 0..5 {
        let r = envoy.get_with_cookie(Some(&forged(mesh.owner(target))));
        assert_eq!(r.status, 200);
        let seen = r.header("x-seen-cookie").unwrap();
        assert!(!seen.contains(host_cookie), "a forged token must not steer: the pod saw `{seen}`");
        assert_no_owner_cookie_for_client(&r, host_cookie);
        let minted = open_demo(&r.cookie_value().expect("a forged token starts a new session"));
        assert_ne!(minted.session, SessionId([7; 16]));
    }

    // Owner gone: Istio has no active health check here; outlier detection (2 refused
    // connections) and the route's retries (VirtualService or HTTPRoute) move the session
    // without a failure.
    let owner_name = first.pod().to_string();
    let owner = pod_by_name(&pods, &owner_name).addr;
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    // Through an internal address the gateway's connection to a dead pod is accepted and
    // then closed: the router sees a reset, which an HTTPRoute's retry (connect-failure,
    // refused-stream, unavailable, cancelled, status codes) does not retry. Until outlier
    // detection ejects the pod (2 consecutive local-origin failures, istio/destinationrule.yaml)
    // its sessions' requests fail: at most 2 (measured: 0 or 1).
    let mut failed = 0;
    if mesh == Mesh::Ambient && plugin.contains("gateway-api") {
        while envoy.get_with_cookie(Some(&value)).status == 503 && failed < 10 {
            failed += 1;
        }
        println!("{plugin} ({mesh:?}): {failed} requests failed (503) before the dead owner was ejected");
        assert!(failed <= 2, "{failed} requests failed");
    }
    let served = ask_while_owner_away(&envoy, &value, (owner, &owner_name), 10, open_demo, |r| {
        assert_no_owner_cookie_for_client(r, host_cookie)
    });
    println!("{plugin}: owner {owner_name} killed; its session kept it (repinAfter), answered by {served:?}");
}

/// What Envoy's cookie session state reads: base64 of `envoy.Cookie { address }`.
fn owner_cookie_value(owner: impl Into<Owner>) -> String {
    tether::address::override_cookie_value(&owner.into())
}

/// The session filter's own Set-Cookie (naming the pod) never reaches the client.
fn assert_no_owner_cookie_for_client(r: &Response, host_cookie: &str) {
    for value in r.all("set-cookie") {
        assert!(
            !value.starts_with(&format!("{host_cookie}=")),
            "the owner cookie leaked to the client: {value}"
        );
    }
}

#[test]
fn gateway_wasmplugin_as_istiod_renders_it() {
    core_behaviour("istio/wasmplugin-gateway.yaml", true, Mesh::Sidecar);
}

#[test]
fn sidecar_wasmplugin_as_istiod_renders_it() {
    core_behaviour("istio/wasmplugin-sidecar.yaml", false, Mesh::Sidecar);
}

/// The Gateway API variant: the WasmPlugin attached by targetRefs to a Gateway of class
/// istio, the HTTPRoute rendered as istiod converts it (route name, retries without
/// previous_hosts, the DestinationRule's hash, the per-route session state), and the core
/// behaviour through it.
#[test]
fn gateway_api_wasmplugin_as_istiod_renders_it() {
    let plugin = "istio/wasmplugin-gateway-api.yaml";
    let out = scratch_dir("istio-gateway-api-config");
    let (envoy_yaml, _) = render(plugin, &[], &out);
    let route = &envoy_yaml[position(&envoy_yaml, "routes:")..position(&envoy_yaml, "http_filters:")];
    for want in [
        "- name: demo.media.0\n",
        "cluster: outbound|80||media.demo.svc.cluster.local\n",
        "header_name: x-tether-key\n",
        "cluster_not_found_response_code: INTERNAL_SERVER_ERROR\n",
        "num_retries: 3\n",
        "retry_on: connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes\n",
        "StatefulSessionPerRoute",
        "name: tether-owner\n",
    ] {
        assert!(route.contains(want), "`{want}` not in the Gateway API route:\n{route}");
    }
    assert!(!route.contains("previous_hosts"), "istiod cannot set previous_hosts for an HTTPRoute:\n{route}");
    assert!(
        envoy_yaml.contains("istio-ingress.tether-gateway-api~istio-translated-wasmplugin"),
        "the plugin reaches the Gateway's proxy"
    );
    assert!(envoy_yaml.contains("id: router~"), "a gateway proxy");
    core_behaviour(plugin, true, Mesh::Sidecar);
}

// ---------------------------------------------------------------- Istio ambient

/// An ingress gateway in front of ambient-enrolled pods (istiod sends them as internal
/// addresses of `connect_originate`; here that listener connects to the pod in plain TCP
/// instead of an HBONE tunnel, the addresses are istiod's): mint, sticky, forged, owner
/// killed, with the token naming the pod as the gateway's cluster keys it.
#[test]
fn gateway_to_ambient_pods_as_istiod_renders_them() {
    let out = scratch_dir("istio-ambient-config");
    let (envoy_yaml, _) =
        render_as("istio/wasmplugin-gateway.yaml", &["127.0.0.1:8081".parse().unwrap()], &out, Mesh::Ambient);
    let eds = std::fs::read_to_string(out.join("eds.yaml")).unwrap();
    for want in [
        "server_listener_name: connect_originate\n",
        "endpoint_id: 127.0.0.1:8081\n",
        "local: 127.0.0.1:8081\n",
        "tunnel: http\n",
    ] {
        assert!(eds.contains(want), "`{want}` not in the ambient EDS:\n{eds}");
    }
    for want in [
        "internal_listener: {}",
        "envoy.transport_sockets.internal_upstream",
        "envoy.bootstrap.internal_listener",
    ] {
        assert!(envoy_yaml.contains(want), "`{want}` not in the ambient gateway:\n{envoy_yaml}");
    }
    core_behaviour("istio/wasmplugin-gateway.yaml", true, Mesh::Ambient);
}

/// A served host whose name tether cannot read (an internal address whose endpoint id is
/// not `ip:port`) pins nothing and leaks nothing: each response is counted, the log says so
/// once per VM, no token names it and the session filter's owner cookie never reaches the client.
#[test]
fn an_internal_endpoint_tether_cannot_read_is_counted_and_pins_nothing() {
    let pod = Pod::start_many(1).remove(0);
    let out = scratch_dir("istio-ambient-unusable");
    let (envoy_yaml, _) = render_as("istio/wasmplugin-gateway.yaml", &[pod.addr], &out, Mesh::Ambient);
    let eds_path = out.join("eds.yaml");
    let eds = std::fs::read_to_string(&eds_path).unwrap();
    let edited = eds.replacen(&format!("endpoint_id: {}", pod.addr), "endpoint_id: media-0", 1);
    assert_ne!(edited, eds);
    std::fs::write(&eds_path, edited).unwrap();
    let cluster = cluster_name(&out);
    let envoy = Envoy::start(EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS), &[]);
    envoy.wait_flags_in(&cluster, "envoy://connect_originate/media-0", "healthy");
    envoy.settle();
    for i in 0..5 {
        let r = envoy.get_with_cookie(None);
        assert_eq!((r.status, r.pod()), (200, pod.name.as_str()), "request {i}");
        assert_eq!(r.cookie_value(), None, "request {i}: a token named a host tether cannot steer to");
        assert_no_owner_cookie_for_client(&r, "tether-owner");
    }
    assert_eq!(envoy.stat(&counter("unusable_host")), 5);
    assert_eq!(envoy.stat(&counter("sessions_minted")), 0);
    let warned =
        envoy.log().matches("upstream host `envoy://connect_originate/media-0` is not in a form").count();
    // Once per VM: each of Envoy's 2 workers runs its own (the native module: once).
    assert!((1..=2).contains(&warned), "logged {warned} times");
}

/// istio/ and istio/waypoint/ in one directory, the Service labelled to use the waypoint
/// (`kubectl label service media istio.io/use-waypoint=waypoint`).
fn waypoint_copy(tag: &str) -> PathBuf {
    let dir = istio_copy(tag);
    copy_files(&repo().join("istio/waypoint"), &dir);
    let label = "    istio.io/persistent-session: tether-owner\n";
    edit_once(&dir, "service.yaml", label, &format!("{label}    istio.io/use-waypoint: waypoint\n"));
    dir
}

/// The waypoint recipe (istio/waypoint/): the WasmPlugin attached by targetRefs to the
/// namespace's waypoint, the session filter added by an EnvoyFilter (istiod adds none to a
/// waypoint), the route from the VirtualService's `mesh` gateway with the DestinationRule's
/// hash, the pods reached by internal address. Mint, sticky, forged, owner killed.
#[test]
fn waypoint_recipe_as_istiod_renders_it() {
    let dir = waypoint_copy("istio-waypoint-manifests");
    let plugin = dir.join("wasmplugin-waypoint.yaml");
    let out = scratch_dir("istio-waypoint-config");
    let (envoy_yaml, _) =
        render_with(dir.to_str().unwrap(), plugin.to_str().unwrap(), &[], &out, false, false);
    let cluster = "inbound-vip|80|http|media.demo.svc.cluster.local";
    assert_eq!(cluster_name(&out), cluster);
    let filters = &envoy_yaml[position(&envoy_yaml, "http_filters:")..];
    let at = |name: &str| position(filters, &format!("- name: {name}"));
    assert!(at("envoy.filters.http.cors") < at("extensions.istio.io/trafficextension/demo.tether"));
    assert!(
        at("extensions.istio.io/trafficextension/demo.tether") < at("envoy.filters.http.stateful_session")
    );
    assert!(at("envoy.filters.http.stateful_session") < at("envoy.filters.http.router"));
    assert!(!envoy_yaml.contains("override_host_status"), "a waypoint cluster has none:\n{envoy_yaml}");
    let report =
        tether_cli::doctor::diagnose(tether_cli::doctor::Input::File(&out.join("envoy.yaml"))).unwrap();
    let found: Vec<String> =
        report.summary().into_iter().map(|(_, code, place)| format!("{code} {place}")).collect();
    assert_eq!(found, [format!("waypoint-draining cluster {cluster}")]);
    // A targetRef to the Service that uses the waypoint gives the same proxy configuration
    // (the Service's own chain; there is one here).
    let text = std::fs::read_to_string(&plugin).unwrap();
    let by_gateway = "  - group: gateway.networking.k8s.io\n    kind: Gateway\n    name: waypoint\n";
    assert_eq!(text.matches(by_gateway).count(), 1);
    let by_service = dir.join("wasmplugin-waypoint-service.yaml");
    std::fs::write(
        &by_service,
        text.replace(by_gateway, "  - group: \"\"\n    kind: Service\n    name: media\n"),
    )
    .unwrap();
    let out_service = scratch_dir("istio-waypoint-service-config");
    let (service_yaml, _) =
        render_with(dir.to_str().unwrap(), by_service.to_str().unwrap(), &[], &out_service, false, false);
    let paths = |yaml: &str, out: &Path| yaml.replace(out.to_str().unwrap(), "OUT");
    let body = |yaml: &str| yaml.lines().skip(2).collect::<Vec<_>>().join("\n");
    assert_eq!(body(&paths(&service_yaml, &out_service)), body(&paths(&envoy_yaml, &out)));
    core_behaviour_in(dir.to_str().unwrap(), plugin.to_str().unwrap(), true, Mesh::Ambient);
}

/// What cannot work without an Istio change: a waypoint's cluster has no
/// `override_host_status` and an EnvoyFilter cannot MERGE it, so a draining pod's sessions
/// leave it at once although istiod keeps it in EDS.
#[test]
fn a_draining_pod_behind_a_waypoint_loses_its_sessions() {
    let dir = waypoint_copy("istio-waypoint-drain-manifests");
    let (d, _) = drain_one_pod_with(
        dir.to_str().unwrap(),
        "wasmplugin-waypoint.yaml",
        "istio-waypoint-drain",
        Mesh::Ambient,
        true,
    );
    println!(
        "waypoint, pod draining: {} of its {} sessions stayed, {} of {} WebSocket reconnects",
        d.kept, d.own, d.ws_kept, d.own
    );
    assert_eq!((d.kept, d.ws_kept), (0, 0), "no DRAINING in the waypoint cluster's override statuses");
    assert_eq!(d.fresh_on_drained, 0);
}

/// The Gateway API gateway in front of ambient pods.
#[test]
fn gateway_api_to_ambient_pods_as_istiod_renders_them() {
    core_behaviour("istio/wasmplugin-gateway-api.yaml", true, Mesh::Ambient);
}

/// Header mode (only the `istio.io/persistent-session-header` label) in front of ambient
/// pods: tether's override-host header names the internal address, and a client's copy
/// of it, aimed at another pod, never steers.
#[test]
fn header_mode_gateway_to_ambient_pods() {
    let dir = header_label_copy("istio-ambient-header-manifests");
    let mut pods = Pod::start_many(3);
    let out = scratch_dir("istio-ambient-header");
    let plugin = dir.join("wasmplugin-gateway.yaml");
    let endpoints: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let (envoy_yaml, _) =
        render_with(dir.to_str().unwrap(), plugin.to_str().unwrap(), &endpoints, &out, false, true);
    assert!(envoy_yaml.contains("header.v3.HeaderBasedSessionState"), "header session state");
    let scope = cluster_name(&out);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    let header = |owner: &Owner| tether::address::override_host_value(owner);
    let spoof = |pod: &Pod| header(&Mesh::Ambient.owner(pod.addr));

    // Mint, then sticky: the pod sees tether's header naming its internal address.
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let value = first.cookie_value().expect("a new session");
    let token = open_scoped(&value, &scope);
    let owner_pod = pod_by_name(&pods, first.pod()).addr;
    assert_eq!(token.owner, Mesh::Ambient.owner(owner_pod));
    let other = pods.iter().find(|p| p.addr != owner_pod).unwrap();
    for i in 0..20 {
        let r = http_to(
            envoy.addr(),
            "GET",
            "/",
            &[("cookie", &format!("{COOKIE}={value}")), ("x-tether-host", &spoof(other))],
        )
        .unwrap();
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "request {i}");
        assert_eq!(r.header("x-seen-host"), Some(header(&token.owner).as_str()), "request {i}");
        assert_eq!(r.header("x-tether-host"), None, "the session filter's header reached the client");
    }
    // No token: a client's header aimed at one pod does not place the session.
    let aimed = (0..30)
        .filter(|_| {
            let r = http_to(envoy.addr(), "GET", "/", &[("x-tether-host", &spoof(other))]).unwrap();
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-seen-host"), Some("-"), "a client's header reached the pod");
            r.pod() == other.name
        })
        .count();
    assert!(aimed < 30, "every request reached the pod the client chose");
    // Owner killed: the session keeps its owner for repinAfter, served by one other pod.
    let owner_name = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    let served = ask_while_owner_away(
        &envoy,
        &value,
        (owner_pod, &owner_name),
        10,
        |v| open_scoped(v, &scope),
        |_| {},
    );
    println!("ambient, header mode: {aimed} of 30 spoofed new sessions on the aimed pod (hash: ~10); owner killed, answered by {served:?}");
}

/// Learn mode under Istio: the gateway's WasmPlugin with exactly the pluginConfig
/// docs/configuration.md shows (the app's `mcp-session-id` learned), every other manifest as
/// shipped (the cookie label, hostCookie): the app's id is wrapped, steers, and the session
/// moves only when the app issues a new id.
#[test]
fn learn_mode_needs_only_the_documented_plugin_configuration() {
    let dir = istio_copy("istio-learn-manifests");
    let file = dir.join("wasmplugin-gateway.yaml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    let documented = learn::documented_config("istio/wasmplugin-gateway.yaml");
    std::fs::write(&file, learn::replace_block(&shipped, "  pluginConfig:\n", &documented)).unwrap();
    let mut pods = Pod::start_many(3);
    let out = scratch_dir("istio-learn");
    let (envoy_yaml, ecds) = render_in(
        dir.to_str().unwrap(),
        file.to_str().unwrap(),
        &pods.iter().map(|p| p.addr).collect::<Vec<_>>(),
        &out,
        Mesh::Sidecar,
    );
    assert_eq!(plugin_json(&ecds)["learn"]["header"], learn::HEADER);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    learn::header_session(&envoy, &mut pods, &cluster_name(&out), |addr| Mesh::Sidecar.owner(addr));
}

/// Without previous_hosts (istiod cannot set it for an HTTPRoute, and leaves it out with a
/// consistent hash anyway), a retry goes back to the dead owner until outlier detection
/// (2 local-origin failures) ejects it. So one retry is not enough: the first request of
/// the dead owner's session fails with `attempts: 1`; with the shipped `attempts: 3`
/// `gateway_api_wasmplugin_as_istiod_renders_it` loses none.
#[test]
fn gateway_api_retries_return_to_the_dead_owner_until_it_is_ejected() {
    let dir = istio_copy("istio-gateway-api-one-retry");
    edit_once(&dir, "gateway-api.yaml", "      attempts: 3\n", "      attempts: 1\n");
    let mut pods = Pod::start_many(3);
    let out = dir.join("rendered");
    let endpoints: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let plugin = dir.join("wasmplugin-gateway-api.yaml");
    let (envoy_yaml, _) =
        render_from(dir.to_str().unwrap(), plugin.to_str().unwrap(), &endpoints, &out, false);
    assert!(envoy_yaml.contains("num_retries: 1\n"), "{envoy_yaml}");
    let cluster = cluster_name(&out);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let cookie = first.cookie_value().unwrap();
    let owner = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner).unwrap().kill();

    let failed = envoy.get_with_cookie(Some(&cookie));
    assert_eq!(failed.status, 503, "both tries went to the dead owner, so the request fails");
    // (Not `Envoy::stat`: its filter is a regex, and the cluster name holds `|`.)
    let name = format!("cluster.{cluster}.outlier_detection.ejections_enforced_total: ");
    let stats = envoy.admin_get("/stats");
    let ejected: u64 =
        stats.lines().find_map(|l| l.strip_prefix(&name)).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
    assert!(ejected >= 1, "outlier detection ejected the dead owner");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_ne!(r.pod(), owner);
        statuses.push(r.status);
    }
    assert_eq!(statuses, [200; 5], "once ejected, the session moves to a live pod");
    println!(
        "gateway API, attempts 1: the first request after the owner died failed (503), {ejected} ejection, \
         then 5 of 5 served by a live pod"
    );
}

#[test]
fn render_refuses_a_plugin_on_the_inbound_side() {
    let out = scratch_dir("istio-refuse");
    let original = std::fs::read_to_string(repo().join("istio/wasmplugin-sidecar.yaml")).unwrap();
    assert_eq!(original.matches("- mode: CLIENT").count(), 1);
    let plugin = out.join("wasmplugin-server.yaml");
    std::fs::write(&plugin, original.replace("- mode: CLIENT", "- mode: SERVER")).unwrap();
    let result = Command::new("python3")
        .current_dir(repo())
        .arg("scripts/istio-render.py")
        .arg("--plugin")
        .arg(&plugin)
        .arg("--out")
        .arg(out.join("rendered"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success());
    assert!(stderr.contains("match.mode") && stderr.contains("CLIENT"), "{stderr}");
}

/// A scratch copy of istio/, for a test to edit one manifest in.
fn istio_copy(tag: &str) -> PathBuf {
    let dir = scratch_dir(tag);
    copy_files(&repo().join("istio"), &dir);
    dir
}

/// The files of `from` (not its folders: istio/extras/, istio/waypoint/) copied into `to`.
fn copy_files(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// Replaces `from`, which must occur exactly once in `dir/file`, with `to`.
fn edit_once(dir: &Path, file: &str, from: &str, to: &str) {
    let text = std::fs::read_to_string(dir.join(file)).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{file} must contain `{from}` once");
    std::fs::write(dir.join(file), text.replace(from, to)).unwrap();
}

/// Runs the renderer on such a copy (its `plugin`), for the refusals it must give.
fn render_copy(dir: &Path, plugin: &str) -> std::process::Output {
    Command::new("python3")
        .current_dir(repo())
        .arg("scripts/istio-render.py")
        .arg("--plugin")
        .arg(dir.join(plugin))
        .arg("--istio-dir")
        .arg(dir)
        .arg("--out")
        .arg(dir.join("rendered"))
        .output()
        .unwrap()
}

/// What istiod's admission or its session filter would not accept is refused by the
/// renderer with the field named: a maglev DestinationRule without a prime tableSize
/// (validateLoadBalancer), and a pluginConfig that presents the owner where the Service
/// label does not make istiod's session filter look.
#[test]
fn render_refuses_what_istio_would_not_accept() {
    let cases = [
        ("destinationrule.yaml", "          tableSize: 65537\n", "", "tableSize must be set"),
        ("destinationrule.yaml", "tableSize: 65537", "tableSize: 65536", "must be a prime"),
        (
            "service.yaml",
            "persistent-session: tether-owner",
            "persistent-session: other",
            "hostCookie must be `other`",
        ),
        (
            "service.yaml",
            "istio.io/persistent-session: tether-owner",
            "istio.io/persistent-session-header: x-tether-host",
            "pluginConfig.hostCookie: the Service has only",
        ),
        ("service.yaml", "    istio.io/persistent-session: tether-owner\n", "", "has neither"),
        // The gateway would reach the Service's waypoint, not its pods.
        (
            "service.yaml",
            "    istio.io/persistent-session: tether-owner\n",
            "    istio.io/persistent-session: tether-owner\n    istio.io/use-waypoint: waypoint\n    istio.io/ingress-use-waypoint: \"true\"\n",
            "would pin sessions to a waypoint pod",
        ),
        ("gateway.yaml", "  gateways: [\"media\", \"mesh\"]\n", "  gateways: [\"media\"]\n", ""),
    ];
    for (file, from, to, want) in cases {
        let dir = istio_copy("istio-refuse-dr");
        edit_once(&dir, file, from, to);
        if want.is_empty() {
            // The waypoint needs a VirtualService that applies to `mesh`.
            let waypoint = waypoint_copy("istio-refuse-waypoint");
            std::fs::copy(dir.join(file), waypoint.join(file)).unwrap();
            let result = render_copy(&waypoint, "wasmplugin-waypoint.yaml");
            let stderr = String::from_utf8_lossy(&result.stderr);
            assert!(!result.status.success() && stderr.contains("must include `mesh`"), "{stderr}");
            continue;
        }
        let result = render_copy(&dir, "wasmplugin-gateway.yaml");
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && stderr.contains(want), "{file} `{to}`: {stderr}");
    }
}

/// What istiod would refuse or never give the Gateway API proxy: a plugin with both a
/// selector and targetRefs, a targetRef namespace or a kind admission refuses, a kind that
/// only attaches to waypoints, a Gateway that is not in the manifests or not of class
/// istio, a parametersRef ConfigMap that leaves the keys out of the proxy's environment, an
/// HTTPRoute the listener does not admit; and ambiguous routes, with their files named.
#[test]
fn render_refuses_gateway_api_input_istiod_would_not_use() {
    let api = "wasmplugin-gateway-api.yaml";
    let classic = "wasmplugin-gateway.yaml";
    let selector = "spec:\n  selector:\n    matchLabels:\n      istio: ingressgateway\n  targetRefs:";
    let extra_route = "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: other, namespace: demo}\n\
        spec:\n  parentRefs: [{name: media, namespace: istio-ingress}]\n  rules: [{backendRefs: [{name: media, port: 80}]}]\n";
    let extra_vs = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: other, namespace: demo}\n\
        spec:\n  hosts: [media.example.com]\n  http: [{route: [{destination: {host: media.demo.svc.cluster.local}}]}]\n";
    // (plugin, file edited or added, from, to, expected message)
    let cases: [(&str, &str, &str, &str, &[&str]); 11] = [
        (api, api, "spec:\n  targetRefs:", selector, &["only one of targetRefs or workloadSelector"]),
        (api, api, "    kind: Gateway\n", "    kind: GatewayClass\n", &["attaches only to waypoint"]),
        (
            api,
            api,
            "  - group: gateway.networking.k8s.io\n    kind: Gateway\n",
            "  - group: \"\"\n    kind: Service\n",
            &["attaches only to waypoint"],
        ),
        (
            api,
            api,
            "    kind: Gateway\n",
            "    kind: HTTPRoute\n",
            &["not a kind istiod's admission accepts"],
        ),
        (
            api,
            api,
            "    name: media\n",
            "    name: media\n    namespace: istio-ingress\n",
            &["must not be set"],
        ),
        (api, api, "    name: media\n", "    name: other\n", &["no Gateway istio-ingress/other"]),
        (api, "gateway-api.yaml", "gatewayClassName: istio", "gatewayClassName: other", &["must be `istio`"]),
        (
            api,
            "gateway-api.yaml",
            "            - name: TETHER_KEYS\n",
            "            - name: OTHER\n",
            &["no TETHER_KEYS"],
        ),
        (
            api,
            "gateway-api.yaml",
            "        from: Selector\n",
            "        from: Same\n",
            &["does not allow routes from namespace demo"],
        ),
        (
            api,
            "extra.yaml",
            "",
            extra_route,
            &["exactly one HTTPRoute", "found 2", "gateway-api.yaml", "extra.yaml"],
        ),
        (
            classic,
            "extra.yaml",
            "",
            extra_vs,
            &["exactly one VirtualService", "found 2", "gateway.yaml", "extra.yaml"],
        ),
    ];
    for (plugin, file, from, to, want) in cases {
        let dir = istio_copy("istio-refuse-gateway-api");
        let text = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if !from.is_empty() {
            assert_eq!(text.matches(from).count(), 1, "{file} must contain `{from}` once");
        }
        let edited = if from.is_empty() { to.to_string() } else { text.replace(from, to) };
        std::fs::write(dir.join(file), edited).unwrap();
        let result = render_copy(&dir, plugin);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "{file} `{to}` was rendered");
        for w in want {
            assert!(stderr.contains(w), "{file} `{to}`: `{w}` not in: {stderr}");
        }
    }
}

/// `envoy --mode validate` on every Envoy configuration in envoy/ and rendered from istio/.
#[test]
fn every_shipped_and_rendered_config_validates() {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    for plugin in [
        "istio/wasmplugin-gateway.yaml",
        "istio/wasmplugin-sidecar.yaml",
        "istio/wasmplugin-gateway-api.yaml",
    ] {
        let out = scratch_dir(&format!(
            "validate-{}",
            plugin.trim_start_matches("istio/").trim_end_matches(".yaml")
        ));
        render(plugin, &[], &out);
        configs.push(out.join("envoy.yaml"));
    }
    assert!(configs.len() >= 4, "{configs:?}");
    for config in &configs {
        let result = Command::new(envoy_binary())
            .current_dir(repo())
            .args(["--mode", "validate", "-c"])
            .arg(config)
            .output()
            .unwrap();
        let log =
            String::from_utf8_lossy(&result.stderr).into_owned() + &String::from_utf8_lossy(&result.stdout);
        if config.ends_with("native.yaml") && envoy_minor() < 38 {
            // Envoy 1.36 and 1.37 predate loading a module by path (and lack callbacks the
            // module needs: docs/native.md); 1.38 loads it (it pins nothing at run time).
            // (Protobuf's error text varies its spacing on purpose: compare it squeezed.)
            let squeezed = log.split_whitespace().collect::<Vec<_>>().join(" ");
            let unknown_field = squeezed.contains("no such field: 'module'");
            assert!(!result.status.success() && unknown_field, "{log}");
            println!("refused as documented: {}", config.display());
            continue;
        }
        assert!(result.status.success() && log.contains("OK"), "{}:\n{log}", config.display());
        println!("validated {}", config.display());
    }
}

// ---------------------------------------------------------------- draining under Istio

struct Drained {
    own: usize,
    kept: usize,
    ws_kept: usize,
    fresh_on_drained: usize,
    fresh: usize,
    fresh_ws_on_drained: usize,
}

/// 600 sessions over 3 pods; one pod starts its graceful shutdown (EndpointSlice: serving,
/// terminating, not ready) and istiod's EDS is rendered for it from `istio_dir`'s labels.
/// Returns what its sessions and new sessions did, then (with `then_gone`) stops the pod.
/// `in_eds`: istiod keeps the draining endpoint (the cookie label); then the pod is also
/// stopped at the end and what its sessions did then is returned.
fn drain_one_pod(istio_dir: &str, tag: &str, mesh: Mesh, in_eds: bool) -> (Drained, Option<(usize, usize)>) {
    drain_one_pod_with(istio_dir, "wasmplugin-gateway.yaml", tag, mesh, in_eds)
}

fn drain_one_pod_with(
    istio_dir: &str,
    plugin_file: &str,
    tag: &str,
    mesh: Mesh,
    in_eds: bool,
) -> (Drained, Option<(usize, usize)>) {
    let ambient = mesh == Mesh::Ambient;
    let mut pods = Pod::start_many(3);
    let out = scratch_dir(tag);
    let plugin = format!("{istio_dir}/{plugin_file}");
    let plugin = plugin.as_str();
    let ready: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
    let (envoy_yaml, _) = render_with(istio_dir, plugin, &ready, &out, false, ambient);
    let cluster = cluster_name(&out);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    let sessions = mint_sessions(&envoy, 600);
    let drained = pods[0].name.clone();
    let drained_addr = pods[0].addr;
    let drained_host = mesh.owner(drained_addr);
    let own: Vec<&(String, String)> = sessions.iter().filter(|(_, pod)| *pod == drained).collect();
    assert!(own.len() >= 120, "{} of 600 sessions on {drained}", own.len());

    let mut states = ready.clone();
    states[0] = format!("{}=terminating", drained_addr);
    render_with(istio_dir, plugin, &states, &out, true, ambient);
    if in_eds {
        envoy.wait_flags_in(&cluster, &drained_host, "/eds_status_draining");
    } else {
        envoy.wait_removed_in(&cluster, &drained_host);
    }
    envoy.settle();

    let after = visit_sessions(&envoy, &sessions);
    let kept = sessions
        .iter()
        .zip(&after)
        .filter(|((_, pod), (now, repinned))| *pod == drained && *now == drained && !repinned)
        .count();
    let moved_elsewhere = sessions
        .iter()
        .zip(&after)
        .filter(|((_, pod), (now, repinned))| *pod != drained && (now != pod || *repinned))
        .count();
    assert_eq!(moved_elsewhere, 0, "sessions of the other pods moved");
    let ws_kept = own
        .iter()
        .filter(|(cookie, _)| {
            let (r, first_frame) = websocket(envoy.addr(), Some(cookie));
            assert_eq!(r.status, 101);
            first_frame == drained && r.set_cookie().is_none()
        })
        .count();
    let fresh = mint_sessions(&envoy, 300);
    let fresh_on_drained = fresh.iter().filter(|(_, pod)| *pod == drained).count();
    let fresh_ws_on_drained = (0..30).filter(|_| websocket(envoy.addr(), None).1 == drained).count();
    let result =
        Drained { own: own.len(), kept, ws_kept, fresh_on_drained, fresh: fresh.len(), fresh_ws_on_drained };
    if !in_eds {
        return (result, None);
    }

    // The grace period ends: the pod stops serving (istiod drops it from EDS) and exits.
    states[0] = format!("{}=stopped", drained_addr);
    render_with(istio_dir, plugin, &states, &out, true, ambient);
    envoy.wait_removed_in(&cluster, &drained_host);
    pods[0].kill();
    envoy.settle();
    let gone = visit_sessions(&envoy, &sessions);
    let own_moved = sessions
        .iter()
        .zip(&gone)
        .filter(|((_, pod), (now, repinned))| *pod == drained && *now != drained && *repinned)
        .count();
    let others_moved = sessions
        .iter()
        .zip(&gone)
        .filter(|((_, pod), (now, repinned))| *pod != drained && (now != pod || *repinned))
        .count();
    (result, Some((own_moved, others_moved)))
}

/// With the cookie label (istio/service.yaml), istiod keeps a terminating pod in EDS as
/// DRAINING: its sessions stay on it (HTTP and WebSocket reconnects), it gets no new
/// session, and its sessions move only once it is gone.
#[test]
fn draining_pod_keeps_its_sessions_under_istio_with_the_cookie_label() {
    draining_keeps_sessions(Mesh::Sidecar);
}

/// The same with the pods in Istio ambient: the gateway's cluster keys them by internal
/// address, and a draining one keeps its sessions all the same.
#[test]
fn draining_ambient_pod_keeps_its_sessions_behind_an_istio_gateway() {
    draining_keeps_sessions(Mesh::Ambient);
}

fn draining_keeps_sessions(mesh: Mesh) {
    let (d, gone) = drain_one_pod("istio", &format!("istio-drain-cookie-{mesh:?}"), mesh, true);
    let (own_moved, others_moved) = gone.unwrap();
    println!(
        "istio cookie label ({mesh:?}), pod draining: {} of its {} sessions stayed (HTTP), {} of {} WebSocket reconnects \
         stayed; new sessions on it: {} of {}, new WebSockets on it: {} of 30; once gone: {own_moved} of {} moved \
         and were re-pinned, {others_moved} other sessions moved",
        d.kept, d.own, d.ws_kept, d.own, d.fresh_on_drained, d.fresh, d.fresh_ws_on_drained, d.own
    );
    assert_eq!(d.kept, d.own, "a draining pod's session left it");
    assert_eq!(d.ws_kept, d.own, "a draining pod's WebSocket reconnect left it");
    assert_eq!(
        (d.fresh_on_drained, d.fresh_ws_on_drained),
        (0, 0),
        "a new session landed on the draining pod"
    );
    assert_eq!(own_moved, d.own, "every session of the gone pod moves and is re-pinned");
    assert_eq!(others_moved, 0);
}

/// The baseline the cookie label fixes: with only the header label, istiod drops the
/// terminating endpoint at once, and every one of its sessions moves in the first second
/// of its shutdown (while the pod still holds their state).
#[test]
fn header_label_loses_a_draining_pods_sessions_at_once() {
    let dir = header_label_copy("istio-header-label");
    let (d, _) = drain_one_pod(dir.to_str().unwrap(), "istio-drain-header", Mesh::Sidecar, false);
    println!(
        "istio header label, pod terminating: {} of its {} sessions stayed, {} of {} WebSocket reconnects stayed",
        d.kept, d.own, d.ws_kept, d.own
    );
    assert_eq!((d.kept, d.ws_kept), (0, 0), "istiod dropped the endpoint, so none can stay");
    assert_eq!(d.fresh_on_drained, 0);
}

/// istio/ with the VirtualService routing to a DestinationRule subset `stable` (every pod
/// carries its label), and with `extras` copied in.
fn subset_copy(tag: &str, extras: &[&str]) -> PathBuf {
    let dir = istio_copy(tag);
    edit_once(
        &dir,
        "destinationrule.yaml",
        "  trafficPolicy:\n",
        "  subsets:\n  - name: stable\n    labels: { app: media }\n  trafficPolicy:\n",
    );
    edit_once(
        &dir,
        "gateway.yaml",
        "        port: { number: 80 }\n",
        "        port: { number: 80 }\n        subset: stable\n",
    );
    for extra in extras {
        std::fs::copy(repo().join("istio/extras").join(extra), dir.join(extra)).unwrap();
    }
    dir
}

/// The usual Istio canary routes to DestinationRule subsets, whose clusters istiod builds
/// without `override_host_status`: a draining pod's sessions leave it at once although
/// the cookie label keeps it in EDS. `istio/extras/envoyfilter-subset-draining.yaml`
/// merges the statuses into the subset's cluster, and the pod keeps every session.
#[test]
fn subsets_lose_draining_and_the_envoy_filter_gives_it_back() {
    let plain = subset_copy("istio-subsets", &[]);
    let out = scratch_dir("istio-subsets-config");
    let plugin = plain.join("wasmplugin-gateway.yaml");
    let (envoy_yaml, _) = render_from(plain.to_str().unwrap(), plugin.to_str().unwrap(), &[], &out, false);
    assert_eq!(cluster_name(&out), "outbound|80|stable|media.demo.svc.cluster.local");
    assert!(!envoy_yaml.contains("override_host_status"), "a subset cluster has none:\n{envoy_yaml}");
    let doctor = |out: &Path| {
        let report =
            tether_cli::doctor::diagnose(tether_cli::doctor::Input::File(&out.join("envoy.yaml"))).unwrap();
        report.summary().into_iter().map(|(_, code, place)| format!("{code} {place}")).collect::<Vec<_>>()
    };
    assert_eq!(doctor(&out), ["draining cluster outbound|80|stable|media.demo.svc.cluster.local"]);
    let (lost, _) = drain_one_pod(plain.to_str().unwrap(), "istio-drain-subset", Mesh::Sidecar, true);
    println!("subset, no EnvoyFilter: {} of {} sessions of the draining pod stayed", lost.kept, lost.own);
    assert_eq!((lost.kept, lost.ws_kept), (0, 0), "without override_host_status none can stay");

    let fixed = subset_copy("istio-subsets-fixed", &["envoyfilter-subset-draining.yaml"]);
    let out = scratch_dir("istio-subsets-fixed-config");
    let plugin = fixed.join("wasmplugin-gateway.yaml");
    let (envoy_yaml, _) = render_from(fixed.to_str().unwrap(), plugin.to_str().unwrap(), &[], &out, false);
    assert_eq!(envoy_yaml.matches("- DRAINING").count(), 1, "merged once:\n{envoy_yaml}");
    assert!(doctor(&out).is_empty(), "{:?}", doctor(&out));
    let (kept, _) = drain_one_pod(fixed.to_str().unwrap(), "istio-drain-subset-fixed", Mesh::Sidecar, true);
    println!(
        "subset with the EnvoyFilter: {} of {} sessions of the draining pod stayed",
        kept.kept, kept.own
    );
    assert_eq!((kept.kept, kept.ws_kept), (kept.own, kept.own), "the EnvoyFilter keeps them");
    assert_eq!((kept.fresh_on_drained, kept.fresh_ws_on_drained), (0, 0));
}

/// istio/ with only the header label on the Service, and the gateway plugin presenting
/// the owner in the header the session filter then reads.
fn header_label_copy(tag: &str) -> PathBuf {
    let dir = istio_copy(tag);
    edit_once(
        &dir,
        "service.yaml",
        "istio.io/persistent-session: tether-owner",
        "istio.io/persistent-session-header: x-tether-host",
    );
    edit_once(&dir, "wasmplugin-gateway.yaml", "hostCookie: tether-owner", "hostHeader: x-tether-host");
    dir
}

/// In cookie mode the client's own `tether-owner` cookies — first, in a second Cookie
/// header, quoted — never reach the session filter: tether removes every copy and puts its
/// own first, only for a token that verifies.
#[test]
fn client_sent_owner_cookies_never_steer() {
    client_sent_owner_cookies(Mesh::Sidecar);
}

/// The same in front of ambient pods, the client's cookies naming the internal address.
#[test]
fn client_sent_owner_cookies_never_steer_to_ambient_pods() {
    client_sent_owner_cookies(Mesh::Ambient);
}

fn client_sent_owner_cookies(mesh: Mesh) {
    let pods = Pod::start_many(3);
    let out = scratch_dir(&format!("istio-owner-cookie-{mesh:?}"));
    let (envoy_yaml, _) = render_as("istio/wasmplugin-gateway.yaml", &addrs(&pods), &out, mesh);
    let scope = cluster_name(&out);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    let target = &pods[2];
    let aimed = format!("tether-owner={}", owner_cookie_value(mesh.owner(target.addr)));
    let quoted = format!("tether-owner=\"{}\"", owner_cookie_value(mesh.owner(target.addr)));

    // No token: a new session, placed by the hash of its id; the pod sees no owner cookie.
    let mut on_target = 0;
    for i in 0..30 {
        let r = http_to(
            envoy.addr(),
            "GET",
            "/",
            &[("cookie", &format!("{aimed}; app=1")), ("cookie", &format!("x=2; {quoted}"))],
        )
        .unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(
            r.header("x-seen-cookie"),
            Some("app=1; x=2"),
            "request {i}: the client's owner cookie got through"
        );
        assert!(r.cookie_value().is_some(), "a new session");
        assert_no_owner_cookie_for_client(&r, "tether-owner");
        on_target += usize::from(r.pod() == target.name);
    }
    assert!(on_target < 30, "every request reached the pod the client chose");

    // A valid token for pod a, with the client's cookie aimed at pod c around it: pod a.
    let owner = &pods[0];
    let token = scoped_token(mesh.owner(owner.addr), [5; 16], &scope, "");
    for i in 0..10 {
        let r = http_to(
            envoy.addr(),
            "GET",
            "/",
            &[("cookie", &format!("{aimed}; {COOKIE}={token}")), ("cookie", &quoted)],
        )
        .unwrap();
        assert_eq!((r.status, r.pod()), (200, owner.name.as_str()), "request {i}");
        let mine = format!("tether-owner={}; {COOKIE}={token}", owner_cookie_value(mesh.owner(owner.addr)));
        assert_eq!(r.header("x-seen-cookie"), Some(mine.as_str()), "request {i}");
        assert_eq!(r.all("set-cookie").len(), 0, "a hit sets nothing");
    }
    println!("client-sent owner cookies ({mesh:?}): {on_target} of 30 new sessions reached the aimed pod (hash: ~10)");
}
