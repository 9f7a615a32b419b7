//! The manifests in istio/ through a real Envoy, without a cluster: scripts/istio-render.py
//! turns each WasmPlugin (with the Service label, DestinationRule and VirtualService) into
//! the configuration istiod would send — the plugin delivered by ECDS from a file, its
//! pluginConfig as JSON in a google.protobuf.StringValue, keys from Envoy's environment
//! (vmConfig.env valueFrom: HOST), istiod's filter order — and the core behaviour runs
//! through it. Also: `envoy --mode validate` on every shipped and rendered configuration.

mod common;

use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

/// Runs scripts/istio-render.py; returns (envoy.yaml, ecds.yaml) contents.
fn render(plugin: &str, pods: &[SocketAddr], out: &Path) -> (String, String) {
    let mut cmd = Command::new("python3");
    cmd.current_dir(repo()).arg("scripts/istio-render.py").args(["--plugin", plugin]);
    for pod in pods {
        cmd.args(["--endpoint", &pod.to_string()]);
    }
    let result = cmd.arg("--out").arg(out).output().expect("python3 scripts/istio-render.py");
    assert!(result.status.success(), "render failed: {}", String::from_utf8_lossy(&result.stderr));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap();
    (read("envoy.yaml"), read("ecds.yaml"))
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

fn forged(owner: SocketAddr, scope: &str) -> String {
    let other = Keyring::parse("demo=b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMhISE=", None).unwrap();
    let t = SessionToken {
        session: SessionId([7; 16]),
        owner,
        issued_at: now(),
        expires_at: now() + 600,
        cluster: String::new(),
    };
    token::seal(&t, other.signing_key().unwrap(), scope)
}

/// mint, sticky, forged token, owner gone — through the Envoy istiod would configure.
fn core_behaviour(plugin: &str, expect_secure: bool) {
    let mut pods = Pod::start_many(3);
    let out =
        scratch_dir(&format!("istio-{}", plugin.trim_start_matches("istio/").trim_end_matches(".yaml")));
    let (envoy_yaml, ecds) = render(plugin, &addrs(&pods), &out);

    // The filter order istiod produces: the WasmPlugin (by ECDS) before stateful_session,
    // router last; the per-route session state reads tether's host header.
    let config = plugin_json(&ecds);
    let host_header = config["hostHeader"].as_str().unwrap();
    let key_header = config["keyHeader"].as_str().unwrap();
    let wasm_at = position(&envoy_yaml, "name: extensions.istio.io/trafficextension/");
    let session_at = position(&envoy_yaml, "name: envoy.filters.http.stateful_session\n");
    let router_at = position(&envoy_yaml, "name: envoy.filters.http.router");
    assert!(wasm_at < session_at && session_at < router_at, "filter order:\n{envoy_yaml}");
    assert!(envoy_yaml.contains("config_discovery:") && envoy_yaml.contains("path_config_source:"));
    assert!(ecds.contains("host_env_keys:\n          - TETHER_KEYS"), "keys from the proxy's environment");
    assert!(envoy_yaml.contains("header.v3.HeaderBasedSessionState"), "header session state");
    assert!(
        envoy_yaml.contains(&format!("name: {host_header}\n")),
        "the Service label names tether's hostHeader `{host_header}`"
    );
    assert!(
        envoy_yaml.contains(&format!("header_name: {key_header}\n")),
        "the DestinationRule hashes tether's keyHeader `{key_header}`"
    );

    // Tokens are bound to the upstream cluster's name (no `scope` in pluginConfig).
    let scope = envoy_yaml
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_name: "))
        .expect("the rendered cluster")
        .trim_matches(['"', '\''])
        .to_string();
    assert!(scope.starts_with("outbound|"), "{scope}");
    let open_demo = |value: &str| open_scoped(value, &scope);
    let forged = |owner| forged(owner, &scope);
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
    assert_eq!(owner, pod_by_name(&pods, first.pod()).addr);

    // Sticky.
    for i in 0..20 {
        let r = envoy.get_with_cookie(Some(&value));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "request {i}");
    }

    // A forged token aimed at another pod never steers.
    let target = pods.iter().find(|p| p.addr != owner).unwrap().addr;
    for _ in 0..5 {
        let r = envoy.get_with_cookie(Some(&forged(target)));
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-seen-host"), Some("-"), "a forged token must not steer");
        let minted = open_demo(&r.cookie_value().expect("a forged token starts a new session"));
        assert_ne!(minted.session, SessionId([7; 16]));
    }

    // Owner gone: Istio has no active health check here; outlier detection (2 refused
    // connections) and the VirtualService retries move the session without a failure.
    let owner_name = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    let mut cookie = value.clone();
    let mut repinned = None;
    for i in 0..10 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!(r.status, 200, "request {i} after the owner died");
        assert_ne!(r.pod(), owner_name);
        if let Some(new) = r.cookie_value() {
            let token = open_demo(&new);
            assert_eq!(token.owner, pod_by_name(&pods, r.pod()).addr, "re-pinned to the pod that served");
            repinned.get_or_insert_with(|| r.pod().to_string());
            cookie = new;
        }
        if let Some(pod) = &repinned {
            assert_eq!(r.pod(), pod, "request {i}: the session stays on its new pod");
        }
    }
    assert!(repinned.is_some(), "the session was re-pinned to a live pod");
    println!("{plugin}: owner {owner_name} killed, session moved to {}", repinned.unwrap());
}

#[test]
fn gateway_wasmplugin_as_istiod_renders_it() {
    core_behaviour("istio/wasmplugin-gateway.yaml", true);
}

#[test]
fn sidecar_wasmplugin_as_istiod_renders_it() {
    core_behaviour("istio/wasmplugin-sidecar.yaml", false);
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

/// `envoy --mode validate` on every Envoy configuration in envoy/ and rendered from istio/.
#[test]
fn every_shipped_and_rendered_config_validates() {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(repo().join("envoy"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    for plugin in ["istio/wasmplugin-gateway.yaml", "istio/wasmplugin-sidecar.yaml"] {
        let out = scratch_dir(&format!(
            "validate-{}",
            plugin.trim_start_matches("istio/").trim_end_matches(".yaml")
        ));
        render(plugin, &[], &out);
        configs.push(out.join("envoy.yaml"));
    }
    assert!(configs.len() >= 3, "{configs:?}");
    for config in &configs {
        let result = Command::new(envoy_binary())
            .current_dir(repo())
            .args(["--mode", "validate", "-c"])
            .arg(config)
            .output()
            .unwrap();
        let log =
            String::from_utf8_lossy(&result.stderr).into_owned() + &String::from_utf8_lossy(&result.stdout);
        assert!(result.status.success() && log.contains("OK"), "{}:\n{log}", config.display());
        println!("validated {}", config.display());
    }
}
