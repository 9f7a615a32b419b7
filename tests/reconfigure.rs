//! A live configuration change under load, the way a `WasmPlugin` edit reaches a proxy:
//! the WasmPlugin is edited, rendered as istiod would (scripts/istio-render.py), and its
//! filter configuration reaches the running Envoy by ECDS from a file (moved into place).
//! While 8 clients send requests, three edits: add a key; make it the signing key; change
//! a cookie attribute. No request fails or has to be resent, no session changes pod, and
//! the only Set-Cookies are the ones the edits call for: each session re-signed once by the
//! new signing key, and the new attribute on sessions minted after its edit. The keys travel in the
//! VM's environment (`vmConfig.env`): Envoy 1.39+ builds a new VM for such an edit, 1.36-1.38
//! keep the running VM and its environment until the proxy restarts.

mod common;

use common::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

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

    // 200 sessions, each with its pod, minted under `sameSite: Lax`.
    let (minted_headers, sessions): (Vec<String>, Vec<Mutex<(String, String)>>) = {
        let mut conn = envoy.keep_alive();
        (0..200)
            .map(|_| {
                let (header, pod) = new_session(&mut conn);
                let cookie = set_cookie_value(&header).to_string();
                (header, Mutex::new((cookie, pod)))
            })
            .unzip()
    };
    let minted: Vec<SessionToken> =
        sessions.iter().map(|s| open_scoped(&s.lock().unwrap().0, &scope)).collect();

    let stop = AtomicBool::new(false);
    let failed = Mutex::new(Vec::<String>::new());
    let moved = Mutex::new(0usize);
    let requests = Mutex::new(0usize);
    // Every Set-Cookie the load got: (session index, header).
    let set_cookies = Mutex::new(Vec::<(usize, String)>::new());
    let work = dir.join("work");
    let mut steps = Vec::new();
    let mut fresh = Vec::new();
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
                    // Each session belongs to one client (200 is a multiple of 8): its
                    // requests are sequential, each with the latest cookie it was given.
                    let index = (client + 8 * n) % sessions.len();
                    let (cookie, pod) = sessions[index].lock().unwrap().clone();
                    let header = format!("{COOKIE}={cookie}");
                    match get_once(&mut conn, &[("cookie", &header)]) {
                        Ok(r) if r.all("set-cookie").any(|v| v.starts_with("tether-owner=")) => {
                            failed.lock().unwrap().push(format!("the owner cookie leaked: {:?}", r.headers))
                        }
                        Ok(r) if r.status == 200 => {
                            if r.header("x-pod") != Some(pod.as_str()) {
                                *moved.lock().unwrap() += 1;
                            }
                            if let Some(set) = tether_set_cookie(&r) {
                                set_cookies.lock().unwrap().push((index, set.to_string()));
                                sessions[index].lock().unwrap().0 = set_cookie_value(set).to_string();
                            }
                        }
                        Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status)),
                        Err(e) => failed.lock().unwrap().push(e),
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
        // New sessions minted under load after the cookie edit.
        let mut conn = envoy.keep_alive();
        for _ in 0..20 {
            fresh.push(new_session(&mut conn).0);
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
    });

    let failed = failed.into_inner().unwrap();
    let moved = moved.into_inner().unwrap();
    let requests = requests.into_inner().unwrap();
    let set_cookies = set_cookies.into_inner().unwrap();
    // Only `k2 signs` calls for a Set-Cookie on the load: a token signed by the demo key is
    // re-signed by k2 as it passes, the same token but for its issue time, once per
    // session. Any other Set-Cookie (one not signed by k2, another session's or owner's
    // token, a second re-sign) is a resend no edit called for.
    let k2_only = Keyring::parse(K2, None).unwrap();
    let open_k2 = |value: &str| token::open(value.as_bytes(), &k2_only, &scope, now(), DEMO_LIMITS);
    let mut resigns: HashMap<SessionId, usize> = HashMap::new();
    let mut unexplained = Vec::new();
    for (index, header) in &set_cookies {
        let was = &minted[*index];
        match open_k2(set_cookie_value(header)) {
            Ok(v) if v.token == SessionToken { issued_at: v.token.issued_at, ..was.clone() } => {
                *resigns.entry(was.session).or_default() += 1;
            }
            _ => unexplained.push(format!("session {index}: {header}")),
        }
    }
    // Per session id: how often it was re-signed (0 if never).
    let per_session: Vec<usize> =
        minted.iter().map(|t| resigns.get(&t.session).copied().unwrap_or(0)).collect();
    let not_once = per_session.iter().filter(|n| **n != 1).count();
    // `sameSite`: Lax on the sessions minted before its edit, Strict on those minted after.
    let lax_before = minted_headers.iter().filter(|c| c.contains("; SameSite=Lax")).count();
    let strict_after = fresh.iter().filter(|c| c.contains("; SameSite=Strict")).count();
    let fresh_by_k2 = fresh.iter().filter(|c| open_k2(set_cookie_value(c)).is_ok()).count();
    println!(
        "live WasmPlugin edits under 8 clients: {requests} requests, {} failed, {moved} answered by another pod \
         than their session's; edits at {steps:?} (name, Set-Cookies so far, requests so far); {} Set-Cookies on \
         the load, {} of them re-signs by k2 ({} sessions not re-signed exactly once), {} unexplained; \
         sessions minted before the cookie edit with SameSite=Lax: {lax_before} of {}, after it with \
         SameSite=Strict: {strict_after} of {}, signed by k2: {fresh_by_k2}",
        failed.len(),
        set_cookies.len(),
        set_cookies.len() - unexplained.len(),
        not_once,
        unexplained.len(),
        sessions.len(),
        fresh.len()
    );
    assert!(failed.is_empty(), "requests failed during the edits: {:?}", &failed[..failed.len().min(10)]);
    assert_eq!(moved, 0, "sessions changed pod during the edits");
    assert!(requests >= 1000, "too little load: {requests}");
    assert_eq!(lax_before, sessions.len(), "sessions minted before the cookie edit carry SameSite=Lax");
    assert_eq!(
        strict_after,
        fresh.len(),
        "every session minted after the cookie edit carries SameSite=Strict"
    );
    if envoy_minor() >= 39 {
        assert!(
            unexplained.is_empty(),
            "Set-Cookies no edit called for: {:?}",
            &unexplained[..unexplained.len().min(10)]
        );
        let counts: Vec<(usize, usize)> =
            per_session.iter().enumerate().filter(|(_, n)| **n != 1).map(|(i, n)| (i, *n)).take(10).collect();
        assert_eq!(not_once, 0, "sessions not re-signed by k2 exactly once (session, re-signs): {counts:?}");
        assert_eq!(fresh_by_k2, fresh.len(), "sessions minted after `k2 signs` are signed by k2");
    } else {
        // Up to Envoy 1.38 a change of the VM's environment alone keeps the running VM (and
        // the keys it read at start); the new pluginConfig still applies. README says so.
        assert!(
            set_cookies.is_empty(),
            "Envoy {} applied an environment-only edit (update README), or resent cookies: {:?}",
            envoy_minor(),
            &set_cookies[..set_cookies.len().min(10)]
        );
        assert_eq!(fresh_by_k2, 0, "Envoy {} applied an environment-only edit: update README", envoy_minor());
    }
}

/// A request without a cookie, which must start a new session: (its tether Set-Cookie
/// header, the pod).
fn new_session(conn: &mut common::http::Connection) -> (String, String) {
    let r = session_response(conn, None);
    let header = tether_set_cookie(&r).expect("a new session sets the cookie");
    (header.to_string(), r.header("x-pod").unwrap_or_default().to_string())
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
