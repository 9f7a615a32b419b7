//! The native recipe for Istio 1.31+ (istio/native/: an EnvoyFilter inserting tether's
//! dynamic module before the gateway's router, the gateway chart's values that mount the
//! file) through a real Envoy 1.39.3, without a cluster: scripts/istio-render.py
//! (`--native-module`) renders the EnvoyFilter with istio/'s Service label, DestinationRule
//! and VirtualService as istiod 1.31 would — no stateful_session filter and no per-route
//! session state (PILOT_ENABLE_PERSISTENT_SESSION_FILTER left off), the label's
//! override_host_status and DRAINING endpoints — with the module's in-pod filename replaced
//! by the build for Envoy 1.39 (`make build-native-1.39`). Istio 1.31's proxy runs Envoy
//! 1.39, so this is the release these tests pin, whatever `ENVOY` says. Istio does not
//! support dynamic modules: this is tether's recipe, tested against the renderer's model of
//! istiod, not against istiod.

mod common;

use common::renderers::envoy_gateway::drain;
use common::renderers::istio::{cluster_name, native_renderer, render_native};
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

const ENVOY_FILTER: &str = "istio/native/envoyfilter-gateway.yaml";
const CLUSTER: &str = "outbound|80||media.demo.svc.cluster.local";
/// The module's path in the gateway pod (istio/native/gateway-values.yaml).
const IN_POD: &str = "/var/lib/tether/libtether.so";
/// The Envoy release of Istio 1.31's proxy (1.39), as pinned by scripts/envoy.sh.
const ENVOY_RELEASE: &str = "1.39.3";
/// Binomial(30, 1/3) exceeds 20 with probability 4.4e-5 (tests/envoy_gateway.rs).
const BY_CHANCE_MAX: usize = 20;

/// The build for Envoy 1.39 (`make build-native-1.39`, a prerequisite of `make test`).
fn module_for_1_39() -> PathBuf {
    let path = repo().join("target/envoy-1.39/native/libtether.so");
    assert!(path.exists(), "{} is missing: run `make build-native-1.39`", path.display());
    path
}

fn ready(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.addr.to_string()).collect()
}

/// The recipe rendered from `istio_dir` (the Service, DestinationRule and VirtualService).
fn render(istio_dir: &str, endpoints: &[String], out: &Path, endpoints_only: bool, extra: &[&str]) -> String {
    render_native(istio_dir, ENVOY_FILTER, &module_for_1_39(), endpoints, out, endpoints_only, extra)
}

/// Envoy 1.39.3 with the rendering and the keys in its environment (the gateway values'
/// envVarFrom); the module loaded with the ABI it was built for.
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

/// What Envoy's cookie session state reads: base64 of `envoy.Cookie { address }`.
fn owner_cookie(addr: SocketAddr) -> String {
    format!("tether-owner={}", tether::address::override_cookie_value(&addr.into()))
}

#[test]
fn native_recipe_as_istiod_renders_it() {
    let mut pods = Pod::start_many(3);
    let out = scratch_dir("istio-native-core");
    let yaml = render("istio", &ready(&pods), &out, false, &[]);
    assert_eq!(cluster_name(&out), CLUSTER);
    let shipped = std::fs::read_to_string(repo().join(ENVOY_FILTER)).unwrap();
    assert!(shipped.contains(&format!("filename: {IN_POD}\n")), "{shipped}");
    assert!(yaml.contains(&format!("filename: {}\n", module_for_1_39().display())), "{yaml}");

    // Inserted right before the router; no stateful_session filter and no per-route session
    // state (the flag is off); the label's override_host_status with DRAINING; Maglev on
    // x-tether-key; the VirtualService's retries with previous_hosts.
    let tether_at = position(&yaml, "- name: tether\n");
    assert!(position(&yaml, "- name: envoy.filters.http.cors\n") < tether_at);
    assert!(tether_at < position(&yaml, "- name: envoy.filters.http.router\n"), "filter order:\n{yaml}");
    assert!(!yaml.contains("stateful_session"), "no session filter with the flag off:\n{yaml}");
    assert!(!yaml.contains("typed_per_filter_config"), "{yaml}");
    assert!(yaml.contains("v3.DynamicModuleFilter\n") && yaml.contains("filter_name: tether\n"));
    assert!(yaml.contains("        - DRAINING\n"), "the label's override_host_status:\n{yaml}");
    assert!(yaml.contains("header_name: x-tether-key\n") && yaml.contains("table_size: 65537\n"));
    assert!(yaml.contains("retry_on: connect-failure,reset,gateway-error\n"));
    assert!(yaml.contains("envoy.retry_host_predicates.previous_hosts"));

    let envoy = start(yaml, &pods);
    let open = |value: &str| open_scoped(value, CLUSTER);

    // Mint, 20 hits through Envoy's override host, 30 forged tokens aimed at another pod.
    let (first, value, token, forged_on_target) = native_mint_stick_and_forge(&envoy, &pods, CLUSTER);
    let (owner, session_hex) = (token.owner.addr, token.session.to_hex());
    let target = pods.iter().find(|p| p.addr != owner).unwrap();
    assert!(forged_on_target <= BY_CHANCE_MAX, "{forged_on_target} of 30 forged tokens reached their pod");

    // Client-sent x-tether-host, and the cookie the Service label names (nothing reads it
    // with the flag off), never steer: without a token the request is a new session placed
    // by the hash; with the owner's token it goes to the owner.
    let aimed = target;
    let (mut host_on_aimed, mut cookie_on_aimed) = (0, 0);
    for i in 0..30 {
        let r = envoy.get("/", &[("x-tether-host", &host_header(aimed.addr))]);
        assert_eq!((r.status, r.header("x-seen-host")), (200, Some("-")), "request {i}");
        host_on_aimed += usize::from(r.pod() == aimed.name);
        let r = envoy.get("/", &[("cookie", &owner_cookie(aimed.addr))]);
        assert!(r.status == 200 && r.cookie_value().is_some(), "request {i}: a new session");
        cookie_on_aimed += usize::from(r.pod() == aimed.name);
        let cookie = format!("{}; tether={value}", owner_cookie(aimed.addr));
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
    assert!(
        cookie_on_aimed <= BY_CHANCE_MAX,
        "{cookie_on_aimed} of 30 requests reached the pod the client chose"
    );

    // A client-sent x-tether-key never reaches the hash: tether replaces it.
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

    // Owner killed: no request fails (outlier detection, the VirtualService's retries), every
    // answer from a live pod, the session keeping its owner for repinAfter.
    let owner_name = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    let served = ask_while_owner_away(&envoy, &value, (owner, &owner_name), 10, open, |_| {});
    println!(
        "istio native (Envoy {ENVOY_RELEASE}): forged tokens reached the pod they name {forged_on_target} of 30 \
         times, client-aimed x-tether-host {host_on_aimed} of 30, client-aimed tether-owner cookie \
         {cookie_on_aimed} of 30, one client-chosen x-tether-key put at most {key_max} of 30 new sessions on one \
         pod (hash: ~10); owner {owner_name} killed, 10 of 10 requests answered by {served:?}"
    );
}

/// The cookie label keeps a terminating pod in istiod's EDS as DRAINING and puts DRAINING in
/// the cluster's override_host_status: the override host tether sets keeps its sessions on
/// it (HTTP and WebSocket reconnects), it gets no new one, and its sessions move once gone.
#[test]
fn native_draining_pod_keeps_its_sessions_under_istio() {
    let render_dir = |dir: &Path, endpoints: &[String], out: &Path, endpoints_only: bool| {
        render(dir.to_str().unwrap(), endpoints, out, endpoints_only, &[])
    };
    let d = drain(Path::new("istio"), "istio-native-drain", true, CLUSTER, &render_dir, &start);
    let gone_moved = d.gone_moved.unwrap();
    println!(
        "istio native, pod terminating: {} of its {} sessions stayed (HTTP), {} of {} WebSocket reconnects stayed; \
         new sessions on it: {} of 150; once gone: {gone_moved} of {} moved",
        d.stayed, d.own, d.ws_stayed, d.own, d.fresh_on_drained, d.own
    );
    assert_eq!((d.stayed, d.ws_stayed), (d.own, d.own), "a draining pod's session left it");
    assert_eq!(d.fresh_on_drained, 0, "a new session landed on the draining pod");
    assert_eq!(gone_moved, d.own, "every session of the gone pod moves");
}

/// istio/ copied with the Service carrying only the header label (`x-tether-host`).
fn header_label_copy(tag: &str) -> PathBuf {
    let dir = scratch_dir(tag);
    for entry in std::fs::read_dir(repo().join("istio")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "yaml") {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let service = dir.join("service.yaml");
    let text = std::fs::read_to_string(&service).unwrap();
    let label = "istio.io/persistent-session: tether-owner";
    assert!(text.contains(label));
    std::fs::write(&service, text.replacen(label, "istio.io/persistent-session-header: x-tether-host", 1))
        .unwrap();
    dir
}

/// Why the recipe needs PILOT_ENABLE_PERSISTENT_SESSION_FILTER off: with it on, istiod puts
/// the stateful_session filter before the router and the EnvoyFilter inserts tether after
/// it, so the Service label's session state reads the client's owner — the `tether-owner`
/// cookie (cookie label) or `x-tether-host` (header label) — before tether could remove it:
/// a client picks the pod of every new session. A valid token still wins (tether sets the
/// override host after the session filter). `tether doctor` reports it.
#[test]
fn with_the_session_filter_on_a_client_picks_the_pod() {
    let pods = Pod::start_many(3);
    let header_dir = header_label_copy("istio-native-header-label");
    for (label, dir, header) in [
        ("cookie", "istio".to_string(), ("cookie", owner_cookie(pods[2].addr))),
        ("header", header_dir.to_str().unwrap().to_string(), ("x-tether-host", host_header(pods[2].addr))),
    ] {
        let out = scratch_dir(&format!("istio-native-session-filter-{label}"));
        let yaml = render(&dir, &ready(&pods), &out, false, &["--session-filter"]);
        let session_at = position(&yaml, "- name: envoy.filters.http.stateful_session\n");
        assert!(session_at < position(&yaml, "- name: tether\n"), "filter order:\n{yaml}");
        let state = if label == "cookie" {
            "cookie.v3.CookieBasedSessionState"
        } else {
            "header.v3.HeaderBasedSessionState"
        };
        assert!(yaml.contains(state), "{yaml}");

        let report =
            tether_cli::doctor::diagnose(tether_cli::doctor::Input::File(&out.join("envoy.yaml"))).unwrap();
        let found: Vec<String> =
            report.summary().into_iter().map(|(_, code, place)| format!("{code} {place}")).collect();
        assert_eq!(found, ["session-filter-before-native listener 0.0.0.0_80 http_filters[4] tether"]);
        assert_eq!(report.exit_code(), 1);

        let envoy = start(yaml, &pods);
        let aimed = &pods[2];
        let on_aimed = (0..30)
            .filter(|i| {
                let r = envoy.get("/", &[(header.0, &header.1)]);
                assert!(r.status == 200 && r.cookie_value().is_some(), "request {i}: a new session");
                r.pod() == aimed.name
            })
            .count();
        let token = scoped_token(pods[0].addr, [5; 16], CLUSTER, "");
        let cookie = format!("tether={token}");
        let with_token = if label == "cookie" {
            vec![("cookie", format!("{}; {cookie}", header.1))]
        } else {
            vec![("cookie", cookie), (header.0, header.1.clone())]
        };
        let with_token: Vec<(&str, &str)> = with_token.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let on_owner = (0..10).filter(|_| envoy.get("/", &with_token).pod() == pods[0].name).count();
        println!(
            "istio native, session filter on, {label} label: {on_aimed} of 30 new sessions went to the client's pod; \
             with a valid token {on_owner} of 10 went to the token's owner"
        );
        assert_eq!(on_aimed, 30, "the session filter honours the client's owner");
        assert_eq!(on_owner, 10, "tether's override host replaces the session filter's");
    }
}

/// `envoy --mode validate` (which loads the module and its configuration) on the rendering,
/// with the pinned Envoy 1.39.3 and the keys in its environment.
#[test]
fn native_rendering_validates() {
    let out = scratch_dir("istio-native-validate");
    render("istio", &[], &out, false, &[]);
    let result = Command::new(pinned_envoy(ENVOY_RELEASE))
        .current_dir(repo())
        .env("TETHER_KEYS", DEMO_KEYS)
        .args(["--mode", "validate", "-c"])
        .arg(out.join("envoy.yaml"))
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&result.stderr).into_owned() + &String::from_utf8_lossy(&result.stdout);
    assert!(result.status.success() && log.contains("OK"), "{log}");
    assert!(log.contains("Dynamic module ABI version v0.1.0 matched"), "{log}");
}

/// `tether doctor` on the rendering.
#[test]
fn doctor_on_the_native_rendering() {
    let out = scratch_dir("istio-native-doctor");
    render("istio", &[], &out, false, &[]);
    let report =
        tether_cli::doctor::diagnose(tether_cli::doctor::Input::File(&out.join("envoy.yaml"))).unwrap();
    let mut text = Vec::new();
    report.render(&mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    println!("{text}");
    assert_eq!(report.summary(), [], "{text}");
    assert_eq!(report.exit_code(), 0, "{text}");
    assert_eq!(report.tether_filters, 1, "{text}");
}

/// istio/native/ copied with one edit; what the renderer must refuse, with its message.
fn edited(file: &str, from: &str, to: &str, tag: &str) -> PathBuf {
    let dir = scratch_dir(tag);
    for name in ["envoyfilter-gateway.yaml", "gateway-values.yaml"] {
        let text = std::fs::read_to_string(repo().join("istio/native").join(name)).unwrap();
        let text = if name == file {
            assert!(text.contains(from), "{file} has no `{from}`");
            text.replacen(from, to, 1)
        } else {
            text
        };
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir.join("envoyfilter-gateway.yaml")
}

#[test]
fn native_render_refuses_what_would_not_work() {
    let filter = "envoyfilter-gateway.yaml";
    let values = "gateway-values.yaml";
    let cases = [
        (
            edited(
                values,
                "  mountPath: /var/lib/tether\n  readOnly",
                "  mountPath: /opt/tether\n  readOnly",
                "inr1",
            ),
            "/var/lib/tether/libtether.so is under no volume mounted into istio-proxy",
        ),
        (
            edited(
                values,
                "  volumeMounts:\n  - name: tether-module\n    mountPath: /var/lib/tether\n  securityContext",
                "  securityContext",
                "inr2",
            ),
            "nothing fills volume `tether-module`",
        ),
        (edited(values, "- name: TETHER_KEYS\n", "- name: OTHER_KEYS\n", "inr3"), "no TETHER_KEYS"),
        (
            edited(filter, "\"keyHeader\": \"x-tether-key\"", "\"keyHeader\": \"x-other\"", "inr4"),
            "keyHeader must be `x-tether-key`",
        ),
        (
            edited(filter, "\"keyHeader\"", "\"hostCookie\": \"tether-owner\", \"keyHeader\"", "inr5"),
            "hostCookie: the native module sets",
        ),
        (
            edited(filter, "context: GATEWAY", "context: SIDECAR_OUTBOUND", "inr6"),
            "the sidecar one is not provided",
        ),
        (
            edited(filter, "filename: /var/lib/tether/libtether.so", "filename: libtether.so", "inr7"),
            "an absolute path in the gateway pod",
        ),
    ];
    for (i, (envoy_filter, want)) in cases.iter().enumerate() {
        let out = scratch_dir(&format!("istio-native-refused-{i}"));
        let result = native_renderer(
            "istio",
            envoy_filter.to_str().unwrap(),
            &module_for_1_39(),
            &[],
            &out,
            false,
            &[],
        );
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success(), "case {i} was rendered");
        assert!(stderr.contains(want), "case {i}: `{want}` not in: {stderr}");
    }
}
