//! The manifests in envoy-gateway/native/ (tether's native build through Envoy Gateway's
//! dynamic modules) through a real Envoy 1.39.3, without a cluster:
//! scripts/envoy-gateway-render.py turns them into the configuration Envoy Gateway v1.9.0
//! would send — EnvoyProxy.spec.dynamicModules resolved for the EnvoyExtensionPolicy's
//! dynamicModule into a disabled `envoy.filters.http.dynamic_modules/…` filter enabled per
//! route, its config as JSON in a StringValue, no stateful_session, the BackendTrafficPolicy's
//! Maglev cluster, outlier detection and retries, the EnvoyPatchPolicy's
//! override_host_status — with the module's in-pod path replaced by the build for Envoy
//! 1.39 (`--native-module`; `make build-native-1.39`). Envoy Gateway v1.9's default Envoy is
//! 1.39, so this is the release these tests pin, whatever `ENVOY` says.

mod common;

use common::renderers::envoy_gateway::*;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLUSTER: &str = "httproute/demo/media/rule/0";
const FILTER: &str = "envoy.filters.http.dynamic_modules/envoyextensionpolicy/demo/tether/dynamic-module/0";
/// Where the EnvoyProxy's Local source puts the module in the Envoy container.
const IN_POD: &str = "/var/lib/tether/libtether.so";
/// The Envoy release Envoy Gateway v1.9 defaults to (1.39.0), as pinned by scripts/envoy.sh.
const ENVOY_RELEASE: &str = "1.39.3";
/// See tests/envoy_gateway.rs: Binomial(30, 1/3) exceeds 20 with probability 4.4e-5.
const BY_CHANCE_MAX: usize = 20;

fn native_dir() -> PathBuf {
    repo().join("envoy-gateway/native")
}

/// The build for Envoy 1.39 (`make build-native-1.39`, a prerequisite of `make test`).
fn module_for_1_39() -> PathBuf {
    let path = repo().join("target/envoy-1.39/native/libtether.so");
    assert!(path.exists(), "{} is missing: run `make build-native-1.39`", path.display());
    path
}

fn ready(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.addr.to_string()).collect()
}

/// Renders `manifests` with the module replaced by the build for Envoy 1.39.
fn render_native(manifests: &Path, endpoints: &[String], out: &Path, endpoints_only: bool) -> String {
    let module = module_for_1_39();
    render_with(manifests, endpoints, out, endpoints_only, &["--native-module", module.to_str().unwrap()])
}

/// Envoy 1.39.3 with the rendering and the keys in its environment; the module loaded with
/// the ABI it was built for.
fn start(envoy_yaml: String, pods: &[Pod]) -> Envoy {
    let config = EnvoyConfig::from_yaml(envoy_yaml)
        .process_env("TETHER_KEYS", DEMO_KEYS)
        .envoy_binary(pinned_envoy(ENVOY_RELEASE));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let log = envoy.log();
    assert!(log.contains("Dynamic module ABI version v0.1.0 matched"), "{log}");
    assert!(log.contains("native for Envoy 1.39) configured: cookie `tether`"), "{log}");
    envoy
}

fn position(yaml: &str, needle: &str) -> usize {
    yaml.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the rendered configuration:\n{yaml}"))
}

fn host_header(addr: SocketAddr) -> String {
    tether::address::override_host_value(&addr.into())
}

#[test]
fn native_manifests_as_envoy_gateway_renders_them() {
    let mut pods = Pod::start_many(3);
    // As Envoy Gateway sends it: the module's path in the Envoy container.
    let in_pod = render(&native_dir(), &ready(&pods), &scratch_dir("egn-inpod"), false);
    assert!(in_pod.contains(&format!("filename: {IN_POD}\n")), "{in_pod}");
    let out = scratch_dir("egn-core-rendered");
    let yaml = render_native(&native_dir(), &ready(&pods), &out, false);
    assert!(yaml.contains(&format!("filename: {}\n", module_for_1_39().display())));

    // tether then the router; no stateful_session; disabled on the listener and enabled on
    // the route by an empty FilterConfig; its config a JSON string; the module's filter name.
    let filter_at = position(&yaml, &format!("- name: {FILTER}\n"));
    assert!(filter_at < position(&yaml, "- name: envoy.filters.http.router\n"), "filter order:\n{yaml}");
    assert!(!yaml.contains("stateful_session"), "the native build needs no session filter:\n{yaml}");
    assert_eq!(yaml.matches("disabled: true").count(), 1);
    assert!(yaml.contains(&format!(
        "{FILTER}:\n                    '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig\n                    config: {{}}\n"
    )));
    assert!(yaml.contains("v3.DynamicModuleFilter\n"));
    assert!(yaml.contains("              filter_name: tether\n"));
    assert!(yaml.contains(
        "'@type': type.googleapis.com/google.protobuf.StringValue\n                value: '{\"keysFromEnv\":\"TETHER_KEYS\","
    ));
    assert!(yaml.contains("header_name: x-tether-key\n") && yaml.contains("table_size: '65537'"));
    assert!(
        yaml.contains("consecutive_local_origin_failure: 2\n")
            && yaml.contains("retry_on: connect-failure,reset\n")
    );
    assert!(yaml.contains("        - DRAINING\n"), "the EnvoyPatchPolicy's override_host_status");

    let envoy = start(yaml, &pods);
    let open = |value: &str| open_scoped(value, CLUSTER);

    // Mint, 20 hits through Envoy's override host, 30 forged tokens aimed at another pod.
    let (first, value, token, forged_on_target) = native_mint_stick_and_forge(&envoy, &pods, CLUSTER);
    let (owner, session_hex) = (token.owner.addr, token.session.to_hex());
    assert!(forged_on_target <= BY_CHANCE_MAX, "{forged_on_target} of 30 forged tokens reached their pod");

    // A client-sent x-tether-host never steers: without a token the request is a new
    // session placed by the hash; with the owner's token it goes to the owner.
    let aimed = pods.iter().find(|p| p.addr != owner).unwrap();
    let mut host_on_aimed = 0;
    for i in 0..30 {
        let r = envoy.get("/", &[("x-tether-host", &host_header(aimed.addr))]);
        assert_eq!((r.status, r.header("x-seen-host")), (200, Some("-")), "request {i}");
        host_on_aimed += usize::from(r.pod() == aimed.name);
        let cookie = format!("tether={value}");
        let r = envoy.get("/", &[("cookie", &cookie), ("x-tether-host", &host_header(aimed.addr))]);
        assert_eq!(
            (r.status, r.pod(), r.header("x-seen-host")),
            (200, first.pod(), Some("-")),
            "request {i}"
        );
    }
    assert!(
        host_on_aimed <= BY_CHANCE_MAX,
        "{host_on_aimed} of 30 requests reached the pod the client chose"
    );

    // A client-sent x-tether-key never reaches the hash: tether replaces it with the
    // session id (a new one without a token, the token's with one).
    let chosen = "00000000000000000000000000000000";
    let mut by_pod = std::collections::HashMap::new();
    for i in 0..30 {
        let r = envoy.get("/", &[("x-tether-key", chosen)]);
        assert_eq!(r.status, 200, "request {i}");
        let minted = open(&r.cookie_value().expect("a new session")).session.to_hex();
        assert_eq!(r.header("x-seen-key"), Some(minted.as_str()), "the client's key got through");
        *by_pod.entry(r.pod().to_string()).or_insert(0usize) += 1;
        let cookie = format!("tether={value}");
        let r = envoy.get("/", &[("cookie", &cookie), ("x-tether-key", chosen)]);
        assert_eq!((r.status, r.pod()), (200, first.pod()), "request {i}");
        assert_eq!(r.header("x-seen-key"), Some(session_hex.as_str()));
    }
    let key_max = by_pod.values().copied().max().unwrap_or(0);
    assert!(key_max <= BY_CHANCE_MAX, "one client-chosen key put {key_max} of 30 new sessions on one pod");

    // Owner killed: no request fails (outlier detection and the retries), the session
    // keeps its owner for repinAfter (10 s), then re-pins to the pod that serves it.
    let owner_name = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    let killed = Instant::now();
    let (served, cookie) =
        ask_while_owner_away_keeping(&envoy, &value, (owner, &owner_name), 10, open, |_| {});
    std::thread::sleep(Duration::from_secs(11).saturating_sub(killed.elapsed()));
    let r = envoy.get_with_cookie(Some(&cookie));
    assert_eq!(r.status, 200);
    let repinned = open(&r.cookie_value().expect("the re-pin sends a token"));
    let new_owner = pod_by_name(&pods, r.pod()).addr;
    assert_eq!(
        (repinned.owner.addr, repinned.owner_away_since),
        (new_owner, None),
        "re-pinned to the server"
    );
    assert_eq!(repinned.session, token.session, "the session survives its pod");
    let cookie = r.cookie_value().unwrap();
    for i in 0..5 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!(
            (r.status, r.pod(), r.set_cookie()),
            (200, pod_by_name(&pods, r.pod()).name.as_str(), None)
        );
        assert_eq!(pod_by_name(&pods, r.pod()).addr, new_owner, "request {i} after the re-pin");
    }
    println!(
        "envoy gateway (native, Envoy {ENVOY_RELEASE}): forged tokens reached the pod they name {forged_on_target} \
         of 30 times, client-aimed x-tether-host {host_on_aimed} of 30, one client-chosen x-tether-key put at most \
         {key_max} of 30 new sessions on one pod (hash: ~10); owner {owner_name} killed, 10 of 10 requests \
         answered by {served:?}; re-pinned to {} after repinAfter",
        r.pod()
    );
}

/// With the EnvoyPatchPolicy, a terminating pod keeps its sessions (HTTP and WebSocket
/// reconnects) through Envoy's override host, gets no new one, and its sessions move once
/// it is gone.
#[test]
fn native_draining_pod_keeps_its_sessions_with_the_envoy_patch_policy() {
    let d = drain(&native_dir(), "egn-drain-rendered", true, CLUSTER, &render_native, &start);
    let gone_moved = d.gone_moved.unwrap();
    println!(
        "envoy gateway (native) + EnvoyPatchPolicy, pod terminating: {} of its {} sessions stayed (HTTP), {} of {} \
         WebSocket reconnects stayed; new sessions on it: {} of 150; once gone: {gone_moved} of {} moved",
        d.stayed, d.own, d.ws_stayed, d.own, d.fresh_on_drained, d.own
    );
    assert_eq!((d.stayed, d.ws_stayed), (d.own, d.own), "a draining pod's session left it");
    assert_eq!(d.fresh_on_drained, 0, "a new session landed on the draining pod");
    assert_eq!(gone_moved, d.own, "every session of the gone pod moves");
}

/// The baseline: without the patch, Envoy's default override_host_status leaves DRAINING
/// out, so the override host of a terminating pod is ignored and its sessions move at once.
#[test]
fn native_without_the_patch_a_draining_pods_sessions_move_at_once() {
    let manifests = copy_of(&native_dir(), "egn-nopatch");
    std::fs::remove_file(manifests.join("envoypatchpolicy.yaml")).unwrap();
    let d = drain(&manifests, "egn-nopatch-rendered", false, CLUSTER, &render_native, &start);
    println!(
        "envoy gateway (native) without the EnvoyPatchPolicy, pod terminating: {} of its {} sessions stayed, {} of \
         {} WebSocket reconnects stayed; new sessions on it: {} of 150",
        d.stayed, d.own, d.ws_stayed, d.own, d.fresh_on_drained
    );
    assert_eq!((d.stayed, d.ws_stayed), (0, 0));
    assert_eq!(d.fresh_on_drained, 0);
}

/// The native directory carries the same Gateway, BackendTrafficPolicy and EnvoyPatchPolicy
/// as the Wasm one (only their comments differ).
#[test]
fn native_manifests_share_the_wasm_policies() {
    for file in ["gateway.yaml", "backendtrafficpolicy.yaml", "envoypatchpolicy.yaml"] {
        let body = |dir: &str| {
            let text = std::fs::read_to_string(repo().join(dir).join(file)).unwrap();
            let at = text.find("apiVersion:").unwrap();
            text[at..].to_string()
        };
        assert_eq!(body("envoy-gateway/native"), body("envoy-gateway"), "{file}");
    }
}

/// What Envoy Gateway (or its API server, or Kubernetes) would not run as intended is
/// refused with the field named.
#[test]
fn native_render_refuses_what_would_not_work() {
    let dir = native_dir();
    let cases: Vec<(PathBuf, &str)> = vec![
        (
            edited(&dir, "httproute.yaml", "      port: 80\n", "      port: 80\n    sessionPersistence:\n      type: Header\n      sessionName: x-tether-host\n", "egn-r1"),
            "sessionPersistence: not with tether's native build",
        ),
        (
            edited(&dir, "envoyextensionpolicy.yaml", "  - name: tether\n    filterName", "  - name: other\n    filterName", "egn-r2"),
            "'other' is not in",
        ),
        (
            edited(&dir, "envoyproxy.yaml", "          - name: TETHER_KEYS\n", "          - name: OTHER\n", "egn-r3"),
            "keysFromEnv: TETHER_KEYS is not in the Envoy container's env",
        ),
        (
            edited(&dir, "envoyproxy.yaml", "        path: /var/lib/tether/libtether.so\n", "        path: /opt/libtether.so\n", "egn-r4"),
            "/opt/libtether.so is under no volume mounted into the Envoy container",
        ),
        (
            edited(&dir, "envoyproxy.yaml", "          - /var/lib/tether\n          volumeMounts:\n          - name: tether-module\n", "          - /var/lib/tether\n          volumeMounts:\n          - name: elsewhere\n", "egn-r5"),
            "is written by no init container",
        ),
        (
            edited(&dir, "envoyextensionpolicy.yaml", "      keyHeader: x-tether-key\n", "      keyHeader: x-other\n", "egn-r6"),
            "config.keyHeader: must be `x-tether-key`",
        ),
        (
            edited(&dir, "envoyproxy.yaml", "      type: Local\n      local:\n        path: /var/lib/tether/libtether.so\n", "      type: Remote\n      remote:\n        url: https://modules.example.com/libtether.so\n        sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n", "egn-r7"),
            "only http:// with an IPv4 address is rendered",
        ),
        (
            edited(&dir, "envoyextensionpolicy.yaml", "    filterName: tether\n", "    filterName: tether\n    terminalFilter: true\n", "egn-r8"),
            "terminalFilter: tether is not a terminal filter",
        ),
    ];
    for (manifests, want) in cases {
        let out = scratch_dir("egn-refuse-out");
        let result = renderer(&["--manifests", path(&manifests), "--out", path(&out)]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && stderr.contains(want), "want `{want}`, got: {stderr}");
    }
}

/// A module Envoy cannot load (here: the in-pod path, absent on this machine, as when the
/// init container did not run) makes Envoy 1.39.3 refuse the whole configuration that
/// carries the filter, naming the file; the build for 1.39 validates. A Remote source
/// renders module.remote with its sha256 and the cluster Envoy Gateway adds for the URL.
#[test]
fn envoy_refuses_a_module_it_cannot_load() {
    let envoy = pinned_envoy(ENVOY_RELEASE);
    let validate = |yaml_path: &Path| {
        let result = Command::new(&envoy)
            .current_dir(repo())
            .env("TETHER_KEYS", DEMO_KEYS)
            .args(["--mode", "validate", "-c"])
            .arg(yaml_path)
            .output()
            .unwrap();
        let log =
            String::from_utf8_lossy(&result.stderr).into_owned() + &String::from_utf8_lossy(&result.stdout);
        (result.status.success(), log)
    };
    let endpoints = ["127.0.0.1:8081".to_string(), "127.0.0.1:8082=terminating".to_string()];
    let out = scratch_dir("egn-validate");
    render_native(&native_dir(), &endpoints, &out, false);
    let (ok, log) = validate(&out.join("envoy.yaml"));
    assert!(ok && log.contains("Dynamic module ABI version v0.1.0 matched"), "{log}");

    let out = scratch_dir("egn-validate-inpod");
    render(&native_dir(), &endpoints, &out, false);
    let (ok, log) = validate(&out.join("envoy.yaml"));
    assert!(!ok && log.contains(&format!("Failed to load dynamic module: {IN_POD}")), "{log}");

    let remote = edited(
        &native_dir(),
        "envoyproxy.yaml",
        "      type: Local\n      local:\n        path: /var/lib/tether/libtether.so\n",
        "      type: Remote\n      remote:\n        url: http://10.0.0.7:8080/libtether.so\n        sha256: 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\n",
        "egn-remote",
    );
    let yaml = render(&remote, &endpoints, &scratch_dir("egn-remote-out"), false);
    assert!(yaml.contains(
        "remote:\n                    http_uri:\n                      uri: http://10.0.0.7:8080/libtether.so\n                      cluster: '10_0_0_7_8080'\n                      timeout: 10s\n                    sha256: 0123456789abcdef"
    ), "{yaml}");
    assert!(yaml.contains("  - name: '10_0_0_7_8080'\n    type: STATIC\n"), "{yaml}");
}

/// A Remote source Envoy cannot fetch (nothing listens at the URL; a sha256 no cache
/// holds): Envoy 1.39.3 logs the failure, counts it, and **starts without the filter** —
/// the route serves, without tether: no cookie, and a client-sent x-tether-key reaches the
/// hash. Envoy Gateway cannot see this (it only validates the URL and sha256), so the
/// route is not failed closed. Ship the module as a Local file (the manifests do).
#[test]
fn an_unfetchable_remote_module_is_skipped_and_the_route_serves_without_tether() {
    let pods = Pod::start_many(3);
    let closed_port = free_port();
    let sha = tether::token::SessionId([0xab; 16]).to_hex().repeat(2);
    let remote = edited(
        &native_dir(),
        "envoyproxy.yaml",
        "      type: Local\n      local:\n        path: /var/lib/tether/libtether.so\n",
        &format!("      type: Remote\n      remote:\n        url: http://127.0.0.1:{closed_port}/libtether.so\n        sha256: {sha}\n"),
        "egn-unfetchable",
    );
    let yaml = render(&remote, &ready(&pods), &scratch_dir("egn-unfetchable-out"), false);
    let config = EnvoyConfig::from_yaml(yaml)
        .process_env("TETHER_KEYS", DEMO_KEYS)
        .envoy_binary(pinned_envoy(ENVOY_RELEASE));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let log = envoy.log();
    assert!(
        log.contains("Remote dynamic module fetch returned empty data; module will not be loaded"),
        "{log}"
    );
    assert!(!log.contains("configured: cookie"), "{log}");
    assert!(envoy.stat("dynamic_modules.remote_fetch_error.config_name.tether") >= 1);
    let mut by_pod = std::collections::HashMap::new();
    for i in 0..10 {
        let r = envoy.get("/", &[("x-tether-key", "chosen-by-the-client")]);
        assert_eq!((r.status, r.set_cookie()), (200, None), "request {i}: served, without tether");
        assert_eq!(r.header("x-seen-key"), Some("chosen-by-the-client"));
        *by_pod.entry(r.pod().to_string()).or_insert(0) += 1;
    }
    println!("envoy gateway (native), unfetchable Remote module: 10 of 10 requests served without tether, by {by_pod:?}");
    assert_eq!(by_pod.len(), 1, "the client's key chose the pod");
}
