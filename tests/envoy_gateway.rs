//! The manifests in envoy-gateway/ through a real Envoy, without a cluster: the
//! EnvoyExtensionPolicy is pinned to an image digest the way `make envoy-gateway` does it,
//! then scripts/envoy-gateway-render.py turns the manifests into the configuration Envoy
//! Gateway v1.9.0 would send — tether as a disabled Wasm filter enabled per route, keys
//! from Envoy's environment (env.hostKeys), the header session state of the HTTPRoute's
//! sessionPersistence, Envoy Gateway's filter order moved by EnvoyProxy.filterOrder, the
//! BackendTrafficPolicy's Maglev cluster, outlier detection and retries, the
//! EnvoyPatchPolicy's override_host_status, and endpoints by EDS from a file as Envoy
//! Gateway derives them from EndpointSlice conditions.

mod common;

use common::renderers::envoy_gateway::*;
use common::*;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use tether::token::SessionId;

/// The route's cluster (tokens are bound to it: tether's config sets no `scope`).
const CLUSTER: &str = "httproute/demo/media/rule/0";
const WASM_FILTER: &str = "envoy.filters.http.wasm/envoyextensionpolicy/demo/tether/wasm/0";

fn ready(pods: &[Pod]) -> Vec<String> {
    pods.iter().map(|p| p.addr.to_string()).collect()
}

fn start(envoy_yaml: String, pods: &[Pod]) -> Envoy {
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(envoy_yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    assert!(envoy.log().contains("configured: cookie `tether`"), "the plugin read its config");
    envoy
}

/// Position of `needle` in the rendered configuration (panics if absent).
fn position(yaml: &str, needle: &str) -> usize {
    yaml.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the rendered configuration:\n{yaml}"))
}

/// Most of 30 requests that may reach the pod they aim at only by chance. Each is placed by
/// the hash of a session id the client does not choose, and Maglev gives each of 3 equally
/// weighted pods 1/3 of its table: the count is Binomial(30, 1/3), mean 10, above 20 with
/// probability 4.4e-5. A filter that let the aim steer puts all 30 there.
const BY_CHANCE_MAX: usize = 20;

/// What the header session state reads: standard padded base64 of `ip:port`.
fn host_header(addr: SocketAddr) -> String {
    tether::address::override_host_value(&addr.into())
}

#[test]
fn envoy_gateway_manifests_as_envoy_gateway_renders_them() {
    let mut pods = Pod::start_many(3);
    let manifests = pinned("eg-core");
    let out = scratch_dir("eg-core-rendered");
    let yaml = render(&manifests, &ready(&pods), &out, false);

    // Envoy Gateway's filter order moved by filterOrder: tether, stateful_session, router;
    // both added disabled and enabled on the route.
    let wasm_at = position(&yaml, &format!("- name: {WASM_FILTER}\n"));
    let session_at = position(&yaml, "- name: envoy.filters.http.stateful_session\n");
    let router_at = position(&yaml, "- name: envoy.filters.http.router\n");
    assert!(wasm_at < session_at && session_at < router_at, "filter order:\n{yaml}");
    assert_eq!(yaml.matches("disabled: true").count(), 2);
    assert!(yaml.contains(&format!(
        "{WASM_FILTER}:\n                    '@type': type.googleapis.com/envoy.config.route.v3.FilterConfig"
    )));
    assert!(yaml.contains("StatefulSessionPerRoute"));
    assert!(yaml.contains("HeaderBasedSessionState\n                          name: x-tether-host\n"));
    assert!(
        yaml.contains("host_env_keys:\n                    - TETHER_KEYS\n"),
        "keys from Envoy's environment"
    );
    assert!(yaml.contains("fail_open: false"));
    assert!(yaml.contains("header_name: x-tether-key\n"));
    assert!(
        yaml.contains("name: envoy.load_balancing_policies.maglev") && yaml.contains("table_size: '65537'")
    );
    assert!(yaml.contains("consecutive_local_origin_failure: 2\n") && yaml.contains("consecutive_5xx: 0\n"));
    assert!(yaml.contains("retry_on: connect-failure,reset\n") && yaml.contains("previous_hosts"));
    assert!(yaml.contains("max_retries: 1024\n"));
    assert!(
        yaml.contains("override_host_status:\n        statuses:\n        - UNKNOWN\n        - HEALTHY\n        - DEGRADED\n        - DRAINING\n"),
        "the EnvoyPatchPolicy's override_host_status on the route's cluster:\n{yaml}"
    );

    let envoy = start(yaml, &pods);
    let open = |value: &str| open_scoped(value, CLUSTER);

    // Mint: the cookie names the pod that served, with the config's attributes.
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let set_cookie = first.set_cookie().expect("a new session sets the cookie").to_string();
    assert!(set_cookie.contains("; Secure") && set_cookie.contains("; HttpOnly"), "{set_cookie}");
    let value = first.cookie_value().unwrap();
    let owner = open(&value).owner.addr;
    assert_eq!(owner, pod_by_name(&pods, first.pod()).addr);

    // Sticky: the pod sees tether's header, the client never gets stateful_session's.
    for i in 0..20 {
        let r = envoy.get_with_cookie(Some(&value));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "request {i}");
        assert_eq!(r.header("x-seen-host"), Some(host_header(owner).as_str()));
        assert_eq!(r.header("x-tether-host"), None);
    }

    // A forged token aimed at another pod never steers: each is a new session, placed by
    // the hash.
    let target = pods.iter().find(|p| p.addr != owner).unwrap();
    let forged_on_target = (0..30)
        .filter(|i| {
            let r = envoy.get_with_cookie(Some(&forged_token(target.addr, CLUSTER)));
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.header("x-seen-host"), Some("-"), "a forged token must not steer");
            assert_ne!(open(&r.cookie_value().expect("a new session")).session, SessionId([7; 16]));
            r.pod() == target.name
        })
        .count();
    assert!(forged_on_target <= BY_CHANCE_MAX, "{forged_on_target} of 30 forged tokens reached their pod");

    // A client-sent x-tether-host never reaches stateful_session: tether runs first.
    let aimed = &pods[2];
    let on_aimed = (0..30)
        .filter(|i| {
            let r = envoy.get("/", &[("x-tether-host", &host_header(aimed.addr))]);
            assert_eq!(r.status, 200, "request {i}");
            assert_eq!(r.header("x-seen-host"), Some("-"), "the client's header got through");
            r.pod() == aimed.name
        })
        .count();
    assert!(on_aimed <= BY_CHANCE_MAX, "{on_aimed} of 30 requests reached the pod the client chose");

    // Owner killed: outlier detection (2 refused connections) and the retries move the
    // session's requests without a failure; the session keeps its owner for repinAfter.
    let owner_name = first.pod().to_string();
    let owner = pod_by_name(&pods, &owner_name).addr;
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    let served = ask_while_owner_away(&envoy, &value, (owner, &owner_name), 10, open, |_| {});
    println!(
        "envoy gateway: forged tokens reached the pod they name {forged_on_target} of 30 times, client-aimed \
         x-tether-host {on_aimed} of 30 (hash: ~10); owner {owner_name} killed, 10 of 10 requests answered, \
         by {served:?}"
    );
}

// ---------------------------------------------------------------- draining

/// With the EnvoyPatchPolicy (override_host_status with DRAINING), a terminating pod keeps
/// its sessions (HTTP and WebSocket reconnects), gets no new one, and its sessions move only
/// once it is gone.
/// Learn mode under Envoy Gateway: the EnvoyExtensionPolicy's config exactly as
/// docs/configuration.md shows it (the app's `mcp-session-id` learned), every other manifest
/// as shipped.
#[test]
fn learn_mode_needs_only_the_documented_plugin_configuration() {
    let mut pods = Pod::start_many(3);
    let manifests = pinned("eg-learn");
    let file = manifests.join("envoyextensionpolicy.yaml");
    let shipped = std::fs::read_to_string(&file).unwrap();
    let documented = learn::documented_config("envoy-gateway/envoyextensionpolicy.yaml");
    std::fs::write(&file, learn::replace_block(&shipped, "    config:\n", &documented)).unwrap();
    let out = scratch_dir("eg-learn-rendered");
    let yaml = render(&manifests, &ready(&pods), &out, false);
    let envoy = Envoy::start(
        EnvoyConfig::from_yaml(yaml).process_env("TETHER_KEYS", DEMO_KEYS),
        &pods.iter().collect::<Vec<_>>(),
    );
    assert!(
        envoy.log().contains("in header `mcp-session-id` (learn)"),
        "the plugin read the documented config"
    );
    learn::header_session(&envoy, &mut pods, CLUSTER, |addr| addr.into());
}

#[test]
fn draining_pod_keeps_its_sessions_with_the_envoy_patch_policy() {
    let manifests = pinned("eg-drain");
    let d = drain(&manifests, "eg-drain-rendered", true, CLUSTER, &render, &start);
    let gone_moved = d.gone_moved.unwrap();
    println!(
        "envoy gateway + EnvoyPatchPolicy, pod terminating: {} of its {} sessions stayed (HTTP), {} of {} \
         WebSocket reconnects stayed; new sessions on it: {} of 150; once gone: {gone_moved} of {} moved and \
         were re-pinned, 0 other sessions moved",
        d.stayed, d.own, d.ws_stayed, d.own, d.fresh_on_drained, d.own
    );
    assert_eq!((d.stayed, d.ws_stayed), (d.own, d.own), "a draining pod's session left it");
    assert_eq!(d.fresh_on_drained, 0, "a new session landed on the draining pod");
    assert_eq!(gone_moved, d.own, "every session of the gone pod moves and is re-pinned");
}

/// The baseline the patch fixes: Envoy Gateway alone sends the terminating pod as DRAINING
/// with Envoy's default override_host_status (no DRAINING), so none of its sessions stay.
#[test]
fn without_the_patch_a_draining_pods_sessions_move_at_once() {
    let manifests = pinned("eg-nopatch");
    std::fs::remove_file(manifests.join("envoypatchpolicy.yaml")).unwrap();
    let d = drain(&manifests, "eg-nopatch-rendered", false, CLUSTER, &render, &start);
    println!(
        "envoy gateway without the EnvoyPatchPolicy, pod terminating: {} of its {} sessions stayed (HTTP), \
         {} of {} WebSocket reconnects stayed; new sessions on it: {} of 150",
        d.stayed, d.own, d.ws_stayed, d.own, d.fresh_on_drained
    );
    assert_eq!((d.stayed, d.ws_stayed), (0, 0), "without DRAINING in override_host_status none can stay");
    assert_eq!(d.fresh_on_drained, 0);
}

// ---------------------------------------------------------------- default filter order

/// Without EnvoyProxy.filterOrder, Envoy Gateway puts stateful_session (11) before the Wasm
/// filter (200+i): it reads x-tether-host before tether has written (or removed) it. So a
/// valid token no longer steers — requests go where the hash of the session id sends
/// them — and a client-sent x-tether-host chooses the pod.
#[test]
fn default_filter_order_does_not_steer_and_lets_clients_choose() {
    let pods = Pod::start_many(3);
    let manifests = edited(&pinned("eg-order"), "envoyproxy.yaml", FILTER_ORDER, "", "eg-order-edited");
    let out = scratch_dir("eg-order-rendered");
    let yaml = render(&manifests, &ready(&pods), &out, false);
    let session_at = position(&yaml, "- name: envoy.filters.http.stateful_session\n");
    let wasm_at = position(&yaml, &format!("- name: {WASM_FILTER}\n"));
    assert!(session_at < wasm_at, "Envoy Gateway's default order puts stateful_session first:\n{yaml}");
    let envoy = start(yaml, &pods);

    // 30 valid tokens, all pinned to pod a, with different session ids.
    let owner = &pods[0];
    let mut reached = 0;
    let mut missed = 0;
    for i in 0..30u8 {
        let t = scoped_token(owner.addr, [i; 16], CLUSTER, "");
        let r = envoy.get_with_cookie(Some(&t));
        assert_eq!(r.status, 200);
        reached += usize::from(r.pod() == owner.name);
        missed += usize::from(r.cookie_value().is_some());
    }
    // A client-sent owner header, no token.
    let aimed = &pods[2];
    let mut on_aimed = 0;
    for _ in 0..30 {
        let r = envoy.get("/", &[("x-tether-host", &host_header(aimed.addr))]);
        assert_eq!(r.status, 200);
        on_aimed += usize::from(r.pod() == aimed.name);
    }
    println!(
        "envoy gateway default filter order: {reached} of 30 pinned requests reached their owner ({missed} \
         answered elsewhere, the miss recorded in a new token); a client-sent x-tether-host chose the pod \
         {on_aimed} of 30 times"
    );
    assert!(reached <= BY_CHANCE_MAX, "the owner was honoured although stateful_session ran first");
    assert_eq!(reached + missed, 30, "every request that missed its owner recorded it");
    assert_eq!(on_aimed, 30, "stateful_session honours the client's own header when it runs first");
}

// ---------------------------------------------------------------- refusals, validation

/// What Envoy Gateway (or its API server) would not accept, or what the renderer cannot
/// render faithfully, is refused with the field named.
#[test]
fn render_refuses_what_envoy_gateway_would_not_accept() {
    let ready_manifests = pinned("eg-refuse");
    let patch_path = "      path: /common_lb_config/override_host_status\n";
    let cases: Vec<(PathBuf, &str)> = vec![
        // The source in envoy-gateway/ has no image: the API server refuses it.
        (repo().join("envoy-gateway"), "code.image: not set"),
        (
            edited(
                &ready_manifests,
                "envoypatchpolicy.yaml",
                patch_path,
                "      path: /outlier/x\n",
                "eg-r1",
            ),
            "/outlier does not exist",
        ),
        (
            edited(
                &ready_manifests,
                "envoypatchpolicy.yaml",
                "name: httproute/demo/media/rule/0",
                "name: x",
                "eg-r2",
            ),
            "no cluster x",
        ),
        (
            edited(
                &ready_manifests,
                "backendtrafficpolicy.yaml",
                "tableSize: 65537",
                "tableSize: 65536",
                "eg-r3",
            ),
            "must be a prime",
        ),
        (
            edited(&ready_manifests, "httproute.yaml", "type: Header", "type: Cookie", "eg-r4"),
            "sessionPersistence.type: must be Header",
        ),
        (
            edited(
                &ready_manifests,
                "httproute.yaml",
                "sessionName: x-tether-host",
                "sessionName: other",
                "eg-r5",
            ),
            "config.hostHeader: must be `other`",
        ),
        (
            edited(
                &ready_manifests,
                "backendtrafficpolicy.yaml",
                "  retry:\n",
                "  timeout: {}\n  retry:\n",
                "eg-r6",
            ),
            "spec.timeout: not rendered",
        ),
        (
            edited(
                &ready_manifests,
                "envoyproxy.yaml",
                "        - name: TETHER_KEYS\n",
                "        - name: OTHER\n",
                "eg-r7",
            ),
            "TETHER_KEYS is not in the Envoy container's env",
        ),
    ];
    for (manifests, want) in cases {
        let out = scratch_dir("eg-refuse-out");
        let result = renderer(&["--manifests", path(&manifests), "--out", path(&out)]);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(!result.status.success() && stderr.contains(want), "want `{want}`, got: {stderr}");
    }
    // EnvoyPatchPolicy while Envoy Gateway's config leaves it off.
    let values = scratch_dir("eg-refuse-values").join("values.yaml");
    std::fs::write(&values, "config:\n  envoyGateway:\n    extensionApis: {}\n").unwrap();
    let out = scratch_dir("eg-refuse-out");
    let result = renderer(&[
        "--manifests",
        path(&ready_manifests),
        "--helm-values",
        path(&values),
        "--out",
        path(&out),
    ]);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(!result.status.success() && stderr.contains("enableEnvoyPatchPolicy must be true"), "{stderr}");
    // Pinning twice is refused: the source keeps code.image unset.
    let result =
        renderer(&["--pin", "r.example/t:1", "--manifests", path(&ready_manifests), "--out", path(&out)]);
    assert!(!result.status.success());
}

/// `envoy --mode validate` (which loads the module and its configuration) on every rendered
/// Envoy Gateway configuration: as shipped, with the default filter order, without the patch.
#[test]
fn every_rendered_envoy_gateway_config_validates() {
    let shipped = pinned("eg-validate");
    let default_order = edited(&shipped, "envoyproxy.yaml", FILTER_ORDER, "", "eg-validate-order");
    let no_patch = copy_of(&shipped, "eg-validate-nopatch");
    std::fs::remove_file(no_patch.join("envoypatchpolicy.yaml")).unwrap();
    assert!(shipped.join("envoypatchpolicy.yaml").exists());
    for (name, manifests) in [("shipped", shipped), ("default order", default_order), ("no patch", no_patch)]
    {
        let out = scratch_dir("eg-validate-out");
        render(
            &manifests,
            &["127.0.0.1:8081".to_string(), "127.0.0.1:8082=terminating".to_string()],
            &out,
            false,
        );
        let result = Command::new(envoy_binary())
            .current_dir(repo())
            .env("TETHER_KEYS", DEMO_KEYS)
            .args(["--mode", "validate", "-c"])
            .arg(out.join("envoy.yaml"))
            .output()
            .unwrap();
        let log =
            String::from_utf8_lossy(&result.stderr).into_owned() + &String::from_utf8_lossy(&result.stdout);
        assert!(result.status.success() && log.contains("OK"), "{name}:\n{log}");
        println!("validated the {name} Envoy Gateway rendering");
    }
}
