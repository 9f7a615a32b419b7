//! A live configuration change under load, the way a `WasmPlugin` edit reaches a proxy:
//! the WasmPlugin is edited, rendered as istiod would (scripts/istio-render.py), and its
//! filter configuration reaches the running Envoy by ECDS from a file (moved into place).
//! While 8 clients send requests, three edits: add a key; make it the signing key; change
//! a cookie attribute. No request fails and no session changes pod. The keys travel in the
//! VM's environment (`vmConfig.env`): Envoy 1.39+ builds a new VM for such an edit, 1.36-1.38
//! keep the running VM and its environment until the proxy restarts.

mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether::keyring::Keyring;
use tether::token;

const K2: &str = "k2=c2Vjb25kLWtleS1vZi10aGlydHktdHdvLWJ5dGVzLSE=";

/// The gateway WasmPlugin with its keys in `vmConfig.env` as an inline value (an ECDS push,
/// unlike a Secret in the proxy's environment, which needs a restart) and `same_site`.
fn plugin(keys: &str, same_site: &str) -> String {
    let base = std::fs::read_to_string(repo().join("istio/wasmplugin-gateway.yaml")).unwrap();
    let from_host = "    - name: TETHER_KEYS\n      valueFrom: HOST\n";
    assert_eq!(base.matches(from_host).count(), 1);
    assert_eq!(base.matches("      sameSite: Lax\n").count(), 1);
    base.replace(from_host, &format!("    - name: TETHER_KEYS\n      value: \"{keys}\"\n"))
        .replace("      sameSite: Lax\n", &format!("      sameSite: {same_site}\n"))
}

/// Renders `plugin_yaml` into `work` and moves its ECDS resource onto `live` (Envoy watches
/// the path for moves, as it does for every path_config_source).
fn push(plugin_yaml: &str, work: &Path, live: &Path) {
    std::fs::create_dir_all(work).unwrap();
    let plugin = work.join("wasmplugin-gateway.yaml");
    std::fs::write(&plugin, plugin_yaml).unwrap();
    let out = Command::new("python3")
        .current_dir(repo())
        .arg("scripts/istio-render.py")
        .arg("--plugin")
        .arg(&plugin)
        .arg("--out")
        .arg(work)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::rename(work.join("ecds.yaml"), live).unwrap();
}

#[test]
fn wasmplugin_edits_under_load_fail_nothing_and_move_no_session() {
    let pods = Pod::start_many(3);
    let dir = scratch_dir("reconfigure");
    let live = dir.join("live");
    std::fs::create_dir_all(&live).unwrap();
    // First rendering: the Envoy configuration, with its ECDS and EDS files in `live`.
    let mut render = Command::new("python3");
    render.current_dir(repo()).arg("scripts/istio-render.py");
    std::fs::write(dir.join("wasmplugin-gateway.yaml"), plugin(DEMO_KEYS, "Lax")).unwrap();
    render.arg("--plugin").arg(dir.join("wasmplugin-gateway.yaml")).arg("--out").arg(&live);
    for pod in &pods {
        render.args(["--endpoint", &pod.addr.to_string()]);
    }
    let out = render.output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let envoy_yaml = std::fs::read_to_string(live.join("envoy.yaml")).unwrap();
    let scope = std::fs::read_to_string(live.join("eds.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("cluster_name: ").map(|s| s.trim_matches(['"', '\'']).to_string())
        })
        .unwrap();
    let envoy = Envoy::start(EnvoyConfig::from_yaml(envoy_yaml), &pods.iter().collect::<Vec<_>>());
    let reloads = || {
        let stats = envoy.admin_get("/stats?filter=extension_config_discovery");
        stats
            .lines()
            .find(|l| l.contains(".config_reload: ") && l.contains("tether"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no ECDS config_reload stat for tether:\n{stats}"))
    };
    let initial_reloads = reloads();

    // 200 sessions, each with its pod.
    let sessions: Vec<Mutex<(String, String)>> = {
        let mut conn = envoy.keep_alive();
        (0..200)
            .map(|_| {
                let r = conn.request("GET", "/", &[]).unwrap();
                assert_eq!(r.status, 200);
                let cookie = tether_cookie(&r).expect("a new session sets the cookie");
                Mutex::new((cookie, r.header("x-pod").unwrap().to_string()))
            })
            .collect()
    };

    let stop = AtomicBool::new(false);
    let failed = Mutex::new(Vec::<String>::new());
    let moved = Mutex::new(0usize);
    let requests = Mutex::new(0usize);
    let set_cookies = Mutex::new(Vec::<String>::new());
    let work = dir.join("work");
    let mut steps = Vec::new();
    std::thread::scope(|s| {
        for client in 0..8 {
            let (stop, failed, moved, requests, set_cookies, sessions) =
                (&stop, &failed, &moved, &requests, &set_cookies, &sessions);
            let mut conn = envoy.keep_alive();
            s.spawn(move || {
                // Bounded in time (the stop flag) and in count.
                for n in 0..100_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let session = &sessions[(client + 8 * n) % sessions.len()];
                    let (cookie, pod) = session.lock().unwrap().clone();
                    let header = format!("{COOKIE}={cookie}");
                    match conn.request("GET", "/", &[("cookie", &header)]) {
                        Ok(r) if r.status == 200 => {
                            if r.header("x-pod") != Some(pod.as_str()) {
                                *moved.lock().unwrap() += 1;
                            }
                            if let Some(v) = r.all("set-cookie").find(|v| v.starts_with("tether=")) {
                                set_cookies.lock().unwrap().push(v.to_string());
                                session.lock().unwrap().0 = tether_cookie(&r).unwrap();
                            }
                        }
                        Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status)),
                        Err(e) => failed.lock().unwrap().push(e.to_string()),
                    }
                    *requests.lock().unwrap() += 1;
                }
            });
        }
        // The three edits, each once Envoy has applied the previous one.
        let edits = [
            ("add key k2", plugin(&format!("{DEMO_KEYS},{K2}"), "Lax")),
            ("k2 signs", plugin(&format!("{K2},{DEMO_KEYS}"), "Lax")),
            ("sameSite Strict", plugin(&format!("{K2},{DEMO_KEYS}"), "Strict")),
        ];
        for (i, (what, yaml)) in edits.iter().enumerate() {
            std::thread::sleep(Duration::from_millis(800));
            let before = set_cookies.lock().unwrap().len();
            push(yaml, &work.join(i.to_string()), &live.join("ecds.yaml"));
            let deadline = Instant::now() + Duration::from_secs(20);
            while reloads() < initial_reloads + i as u64 + 1 {
                assert!(Instant::now() < deadline, "Envoy did not apply edit `{what}`");
                std::thread::sleep(Duration::from_millis(20));
            }
            steps.push((*what, before, *requests.lock().unwrap()));
        }
        // New sessions minted under load after the cookie edit carry its attribute.
        let mut conn = envoy.keep_alive();
        for _ in 0..20 {
            let r = conn.request("GET", "/", &[]).unwrap();
            assert_eq!(r.status, 200);
            set_cookies.lock().unwrap().extend(r.all("set-cookie").map(str::to_string));
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });

    let failed = failed.into_inner().unwrap();
    let moved = moved.into_inner().unwrap();
    let requests = requests.into_inner().unwrap();
    let set_cookies = set_cookies.into_inner().unwrap();
    // After `k2 signs`, tokens signed by the demo key are re-signed by k2 as they pass (each
    // session once); after the cookie edit, new cookies carry SameSite=Strict.
    let k2_only = Keyring::parse(K2, None).unwrap();
    let resigned = set_cookies
        .iter()
        .filter(|c| {
            let value = c.trim_start_matches("tether=").split(';').next().unwrap();
            token::open(value.as_bytes(), &k2_only, &scope, now(), DEMO_LIMITS).is_ok()
        })
        .count();
    let strict = set_cookies.iter().filter(|c| c.contains("SameSite=Strict")).count();
    println!(
        "live WasmPlugin edits under 8 clients: {requests} requests, {} failed, {moved} answered by another pod \
         than their session's; edits at {steps:?} (name, Set-Cookies so far, requests so far); {} Set-Cookies in \
         all, {resigned} signed by k2, {strict} with SameSite=Strict",
        failed.len(),
        set_cookies.len()
    );
    assert!(failed.is_empty(), "requests failed during the edits: {:?}", &failed[..failed.len().min(10)]);
    assert_eq!(moved, 0, "sessions changed pod during the edits");
    assert!(requests >= 1000, "too little load: {requests}");
    assert_eq!(strict, 20, "every session minted after the cookie edit carries it");
    if envoy_minor() >= 39 {
        assert_eq!(resigned, 220, "each of the 200 sessions re-signed once by k2, and the 20 new ones");
    } else {
        // Up to Envoy 1.38 a change of the VM's environment alone keeps the running VM (and
        // the keys it read at start); the new pluginConfig still applies. README says so.
        assert_eq!(resigned, 0, "Envoy {} applied an environment-only edit: update README", envoy_minor());
    }
    assert!(set_cookies.iter().all(|c| !c.starts_with("tether-owner=")));
}

/// The minor version of the Envoy under test (1.`N`.x).
fn envoy_minor() -> u32 {
    let out = Command::new(envoy_binary()).arg("--version").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // `<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`
    let after = text.split("version: ").nth(1).unwrap_or_else(|| panic!("envoy --version: {text}"));
    let version = after.split('/').nth(1).unwrap_or_else(|| panic!("envoy --version: {text}"));
    version.split('.').nth(1).and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("version {version}"))
}
