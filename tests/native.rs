//! The native build (an Envoy dynamic module) on its own: `envoy/native.yaml` runs as its
//! header says, a panic inside the module is caught and fails safe, and the module loads
//! where its ABI says it does. These tests use the native build whatever `TETHER_BUILD`
//! says; every other behaviour is proven by the shared suite run with `TETHER_BUILD=native`
//! (`make test` does both).

mod common;

use common::*;
use std::net::SocketAddr;
use std::time::Duration;

/// The pods `envoy/native.yaml` names, started where it expects them.
fn shipped_pods() -> Option<Vec<Pod>> {
    let addrs: Vec<SocketAddr> = (8081..=8083).map(|p| SocketAddr::from(([127, 0, 0, 1], p))).collect();
    // Another test run (or `make run`) may hold the demo ports: then this test cannot run
    // the file unchanged, and says so instead of guessing.
    if addrs.iter().any(|a| std::net::TcpListener::bind(a).is_err()) {
        return None;
    }
    Some(addrs.iter().enumerate().map(|(i, a)| Pod::start_at(*a, &format!("pod-{}", i + 1))).collect())
}

/// `envoy/native.yaml` for `pods`, keys from Envoy's environment, `x-tether` labelling
/// each decision.
fn native_with_debug_header(pods: &[Pod]) -> EnvoyConfig {
    EnvoyConfig::shipped_native()
        .endpoints(&addrs(pods))
        .plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether" }"#)
}

#[test]
fn native_yaml_runs_as_shipped() {
    let native = repo().join("target/native/libtether.so");
    assert!(native.exists(), "run `make build-native` first");
    let Some(pods) = shipped_pods() else {
        panic!("127.0.0.1:8081-8083 are taken: envoy/native.yaml cannot run unchanged (stop `make run`)");
    };
    // The file as shipped (inline demo key, the module's path relative to the repository
    // root, where its header says to run it), only its listener and admin ports moved.
    let yaml = std::fs::read_to_string(repo().join("envoy/native.yaml")).unwrap();
    assert!(yaml.contains("#   envoy -c envoy/native.yaml\n"));
    let config = EnvoyConfig::from_yaml(yaml);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    let token = open_demo(&cookie);
    assert_eq!(token.owner, pod_by_name(&pods, first.pod()).addr, "the cookie names the pod that served");
    for _ in 0..10 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
        // No stateful_session here: the owner goes through Envoy's override host, and the
        // header a client could send is removed.
        assert_eq!(r.header("x-seen-host"), Some("-"));
    }
    let log = envoy.log();
    // The file names the default build, for Envoy 1.40: 1.39 runs it and only warns.
    let abi = if envoy_minor() == 40 { "v0.2.0 matched" } else { "v0.2.0 is deprecated" };
    assert!(log.contains(&format!("Dynamic module ABI version {abi}")), "{log}");
    assert!(log.contains("native for Envoy 1.40) configured: cookie `tether`"), "{log}");
    assert!(log.contains("signing keys are inline in the configuration: for demos only"), "{log}");
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.affinity_hits"), 10);
}

/// The override host is what steers: one session id, three tokens each naming another pod,
/// so at least two of them name a pod the hash fallback would not pick. Each lands on the
/// pod it names, on every request and both workers; a client-sent `x-tether-host` (the
/// wasm build's steering header) is removed and steers nothing, with a token or without.
#[test]
fn the_override_host_sends_each_token_to_the_pod_it_names() {
    let pods = Pod::start_many(3);
    let config = native_with_debug_header(&pods);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let spoof = |pod: &Pod| tether::address::override_host_value(&pod.addr.into());
    for (i, owner) in pods.iter().enumerate() {
        let cookie = format!("tether={}", demo_token(owner.addr, [42; 16]));
        let other = &pods[(i + 1) % pods.len()];
        for _ in 0..10 {
            let r = envoy.get("/", &[("cookie", &cookie), ("x-tether-host", &spoof(other))]);
            assert_eq!(
                (r.status, r.pod(), r.header("x-tether"), r.set_cookie()),
                (200, owner.name.as_str(), Some("hit"), None),
                "the token names {}",
                owner.name
            );
            assert_eq!(r.header("x-seen-host"), Some("-"), "the client's x-tether-host reached the pod");
        }
    }
    // Without a token a spoofed header steers nothing either: new sessions spread over the
    // pods by the hash of their new ids, whatever pod the header names.
    let mut served = std::collections::BTreeSet::new();
    for _ in 0..30 {
        let r = envoy.get("/", &[("x-tether-host", &spoof(&pods[0]))]);
        assert_eq!((r.status, r.header("x-tether"), r.header("x-seen-host")), (200, Some("new"), Some("-")));
        served.insert(r.pod().to_string());
    }
    assert!(served.len() > 1, "30 new sessions all went to the pod the spoofed header names: {served:?}");
    let log = envoy.log();
    assert!(!log.contains("cannot set the upstream override host"), "{log}");
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.affinity_hits"), 30);
}

/// Envoy's own 503 after the owner accepted the connection and dropped it (the pod's
/// `/reset`; every retry goes to it again, a one-pod cluster) is labelled `local-reply`
/// and counted nowhere: the native build reads the response code details on hits too (the
/// wasm build does not; docs/native.md).
#[test]
fn envoys_own_reply_after_trying_the_owner_is_not_a_hit() {
    let pods = Pod::start_many(1);
    let config = native_with_debug_header(&pods);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let first = envoy.get_with_cookie(None);
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    let hit = envoy.get_with_cookie(Some(&cookie));
    assert_eq!((hit.status, hit.header("x-tether")), (200, Some("hit")));
    let r = envoy.get("/reset", &[("cookie", &format!("tether={cookie}"))]);
    assert_eq!((r.status, r.header("x-tether"), r.set_cookie()), (503, Some("local-reply"), None));
    // The access log shows the scenario: Envoy's reply names the owner as the last host
    // (Envoy flushes its access log every 10 s by default).
    let owner = format!("upstream={}", pods[0].addr);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !envoy.log().lines().any(|l| l.starts_with("access GET /reset 503 ") && l.contains(&owner)) {
        assert!(
            std::time::Instant::now() < deadline,
            "no 503 naming the owner in the access log:\n{}",
            envoy.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.affinity_hits"), 1, "Envoy's 503 was counted a hit");
}

/// Pods behind an Envoy internal listener (Istio ambient's `connect_originate`): Envoy's
/// dynamic-module override host takes IP addresses only, so the native build cannot steer
/// to them. It pins nothing, says so once, counts each response, and every request is still
/// served.
#[test]
fn internal_address_pods_are_served_unpinned_and_counted() {
    let pods = Pod::start_many(3);
    let mut yaml = native_with_debug_header(&pods).yaml;
    for pod in &pods {
        let plain = format!(
            "        - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}\n",
            pod.addr.ip(),
            pod.addr.port()
        );
        let internal = format!(
            "        - endpoint: {{ address: {{ envoy_internal_address: {{ server_listener_name: connect_originate, endpoint_id: \"{0}\" }} }} }}\n          metadata: {{ filter_metadata: {{ envoy.filters.listener.original_dst: {{ local: \"{0}\" }} }} }}\n",
            pod.addr
        );
        assert_eq!(yaml.matches(&plain).count(), 1, "{plain}");
        yaml = yaml.replace(&plain, &internal);
    }
    // No active health check (Istio sends none either), the internal_upstream transport
    // socket, and the internal listener in front of the pods (plain TCP, as in tests/istio.rs).
    let start = yaml.find("    health_checks:\n").unwrap();
    let end = start + yaml[start..].find("    # The override host keeps").unwrap();
    yaml.replace_range(start..end, "");
    let raw = r#"{ name: envoy.transport_sockets.raw_buffer, typed_config: { "@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer } }"#;
    let socket = format!(
        "    transport_socket: {{ name: envoy.transport_sockets.internal_upstream, typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.internal_upstream.v3.InternalUpstreamTransport, passthrough_metadata: [{{ kind: {{ host: {{}} }}, name: envoy.filters.listener.original_dst }}], transport_socket: {raw} }} }}\n"
    );
    yaml = yaml.replacen("    lb_policy: MAGLEV\n", &format!("    lb_policy: MAGLEV\n{socket}"), 1);
    let listener = "  - name: connect_originate\n    internal_listener: {}\n    listener_filters:\n    - name: envoy.filters.listener.original_dst\n      typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.listener.original_dst.v3.OriginalDst }\n    filter_chains:\n    - filters:\n      - name: envoy.filters.network.tcp_proxy\n        typed_config: { \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy, stat_prefix: connect_originate, cluster: connect_originate }\n";
    let cluster = "  - name: connect_originate\n    type: ORIGINAL_DST\n    lb_policy: CLUSTER_PROVIDED\n    connect_timeout: 1s\n";
    yaml = yaml.replacen("  listeners:\n", &format!("  listeners:\n{listener}"), 1);
    yaml = yaml.replacen("  clusters:\n", &format!("  clusters:\n{cluster}"), 1);
    yaml.push_str("bootstrap_extensions:\n- name: envoy.bootstrap.internal_listener\n  typed_config: { \"@type\": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener }\n");
    let config = EnvoyConfig { yaml, ..native_with_debug_header(&pods) };
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let mut served = std::collections::HashSet::new();
    for i in 0..12 {
        let r = envoy.get_with_cookie(None);
        assert_eq!(
            (r.status, r.header("x-tether"), r.set_cookie()),
            (200, Some("unusable-host"), None),
            "request {i}"
        );
        served.insert(r.pod().to_string());
    }
    assert!(served.len() > 1, "served by {served:?}");
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.unusable_host"), 12);
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.sessions_minted"), 0);
    let warned = envoy.log().matches("takes no internal address").count();
    assert_eq!(warned, 1, "once per process");
}

fn crash_module() -> std::path::PathBuf {
    let module = repo().join("target/crash-test/native/libtether.so");
    assert!(module.exists(), "run `make build-crash-test` first");
    module
}

#[test]
fn a_panic_in_the_module_refuses_that_request_and_nothing_else() {
    let pods = Pod::start_many(3);
    let config = native_with_debug_header(&pods).native_module(&crash_module());
    let mut envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let first = envoy.get_with_cookie(None);
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    // The module panics after it edited the internal headers: the request is answered by
    // Envoy with a 500 and never reaches a pod, whatever steering headers it carried.
    for _ in 0..20 {
        let r = envoy.get(
            "/",
            &[
                ("x-tether-crash-test", "1"),
                ("cookie", &format!("tether={cookie}")),
                ("x-tether-host", "MTI3LjAuMC4xOjE="),
            ],
        );
        assert_eq!(r.status, 500);
        assert_eq!(r.header("x-pod"), None, "a request whose callback panicked reached a pod");
    }
    // Envoy and the module go on: affinity on every other request, on both workers.
    for _ in 0..50 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.header("x-tether")), (200, first.pod(), Some("hit")));
    }
    let log = envoy.log();
    let panics: Vec<&str> = log.lines().filter(|l| l.contains("tether panicked")).collect();
    assert_eq!(panics.len(), 20, "{log}");
    assert!(
        panics.iter().all(|l| l.ends_with(": crash test requested; the callback failed safe")),
        "{panics:?}"
    );
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.affinity_hits"), 50);
    assert!(envoy.wait_exit(Duration::from_millis(100)).is_none(), "Envoy exited");
}

/// Which Envoy releases run the native build under test (`TETHER_NATIVE_MODULE`, else
/// target/native). 1.39 and 1.40 export every callback tether calls, with the same
/// signatures, and compare the ABI version the build declares with their own (a mismatch
/// only warns). 1.38 runs it but does not report response code details, which the module
/// says at the first answer (and pins nothing). 1.36 and 1.37 lack callbacks: the module's
/// own check names the first missing one before Envoy refuses it (they predate loading by
/// path, so the module is found through the search path). Run by `make test-matrix` for
/// each build on each pinned Envoy; prints what that Envoy did.
#[test]
#[ignore]
fn abi_check_of_this_envoy() {
    let release = envoy_release();
    let pods = Pod::start_many(3);
    let mut config = EnvoyConfig::shipped_native().endpoints(&addrs(&pods));
    let module = native_module();
    if envoy_minor() < 38 {
        let by_path = format!("{{ module: {{ local: {{ filename: {} }} }} }}", module.display());
        config.yaml = config.yaml.replace(&by_path, "{ name: tether }");
        config = config
            .process_env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", module.parent().unwrap().to_str().unwrap());
    }
    let mut envoy = Envoy::spawn(config);
    let exited = envoy.wait_exit(Duration::from_secs(5));
    let served = exited.is_none().then(|| envoy.get_with_cookie(None));
    let log = envoy.log();
    let built_for = log.split("native for Envoy ").nth(1).and_then(|rest| rest.split(')').next());
    let abi_line = log.lines().find(|l| l.contains("Dynamic module ABI version")).unwrap_or("");
    let refusal = log.lines().find(|l| l.contains("tether cannot run in this Envoy"));
    let no_details = log.contains("does not report response.code_details");
    let what = match (exited, refusal) {
        (None, _) => format!(
            "loads ({}){}",
            abi_line.split("] ").last().unwrap_or("no ABI line").split(". Please").next().unwrap_or(""),
            if no_details { "; pins nothing: no response code details" } else { "" }
        ),
        (Some(_), Some(line)) => format!("refused: {}", line.split("] ").last().unwrap_or(line)),
        (Some(_), None) => "refused for another reason".to_string(),
    };
    println!(
        "Envoy {release}: native build {} {what}",
        module.strip_prefix(repo()).unwrap_or(&module).display()
    );
    let abi_of = |minor: &str| if minor == "1.40" { "v0.2.0" } else { "v0.1.0" };
    match envoy_minor() {
        38.. => {
            assert!(exited.is_none(), "{log}");
            let envoy_minor = release.rsplit_once('.').map(|(m, _)| m).unwrap();
            let declared = abi_of(built_for.expect("the configured line names the Envoy it was built for"));
            let expected = if declared == abi_of(envoy_minor) {
                format!("Dynamic module ABI version {declared} matched")
            } else {
                format!("Dynamic module ABI version {declared} is deprecated")
            };
            assert!(abi_line.contains(&expected), "{expected}\n{log}");
            let served = served.unwrap();
            assert_eq!(served.status, 200);
            assert_eq!(served.cookie_value().is_some(), envoy_loads_native(), "{log}");
            assert_eq!(no_details, !envoy_loads_native(), "{log}");
        }
        _ => {
            let missing = refusal.unwrap_or_else(|| panic!("no line naming the missing callback\n{log}"));
            assert!(missing.contains("it does not export envoy_dynamic_module_callback_http_"), "{missing}");
            assert!(exited.is_some_and(|c| c != 0), "{log}");
        }
    }
}
