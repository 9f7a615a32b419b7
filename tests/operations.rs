//! What operators and client developers need after affinity works, through real Envoy:
//! counters, header mode (HTTP/1.1 and h2c), idle timeout, sticky canaries, debug header.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tether::token::{self, SessionId, SessionToken};

const OLD_KEY: &str = "old=b2xkLWtleS10aGF0LXN0aWxsLXZlcmlmaWVzLWZvci1yb3RhdGlvbg==";

fn start(pods: &[Pod], plugin_config: &str, keys: Option<&str>) -> Envoy {
    let mut config = EnvoyConfig::shipped().endpoints(&addrs(pods)).plugin_config(plugin_config);
    if let Some(keys) = keys {
        config = config.keys_env(keys);
    }
    Envoy::start(config, &pods.iter().collect::<Vec<_>>())
}

/// Every counter tether defines, by its `/stats` name under `wasmcustom.tether.`.
const COUNTERS: [&str; 16] = [
    "affinity_hits",
    "app_id_not_wrapped",
    "invalid_token.bad_signature",
    "invalid_token.expired",
    "invalid_token.issued_in_future",
    "invalid_token.lifetime_too_long",
    "invalid_token.malformed",
    "invalid_token.unknown_key",
    "invalid_token.unknown_version",
    "invalid_token.wrong_scope",
    "owner_away",
    "refreshed",
    "repinned",
    "sessions_minted",
    "tokens_over_limit",
    "unusable_host",
];

#[test]
fn counters_and_debug_header_match_known_traffic() {
    let mut pods = Pod::start_many(3);
    let envoy = start(
        &pods,
        r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether" }"#,
        Some(&format!("{DEMO_KEYS},{OLD_KEY}")),
    );
    // Envoy has exactly these counters of tether's, no more, no fewer.
    let defined: Vec<String> = envoy
        .admin_get(&format!("/stats?filter=^{}", counter("").replace('.', "\\.")))
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, _)| k.trim_start_matches(&counter("")).to_string())
        .collect();
    assert_eq!(defined, COUNTERS, "tether's counters on /stats");
    let now = now();
    let owner = pods[0].addr;
    let gone: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let expect = |cookie: Option<&str>, label: &str, times: usize| {
        for _ in 0..times {
            let r = envoy.get_with_cookie(cookie);
            assert_eq!(r.status, 200);
            assert_eq!(r.header("x-tether"), Some(label), "cookie {cookie:?}");
        }
    };
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.header("x-tether"), Some("new"));
    expect(None, "new", 4);
    expect(first.cookie_value().as_deref(), "hit", 10);
    // One refused token of each kind.
    expect(Some("garbage"), "invalid:malformed", 1);
    let mut version_7 = URL_SAFE_NO_PAD.decode(demo_token(owner, [0x34; 16])).unwrap();
    version_7[0] = 7;
    expect(Some(&URL_SAFE_NO_PAD.encode(version_7)), "invalid:unknown_version", 1);
    let forged = "demo=Zm9yZ2VkLXNlY3JldC1vZi10aGlydHktdHdvLWJ5dGVzISE=";
    expect(Some(&sealed_token(forged, owner, now, now + 60, [0x33; 16])), "invalid:bad_signature", 1);
    expect(Some(&sealed_token(DEMO_KEYS, owner, now - 100, now - 1, [0x33; 16])), "invalid:expired", 1);
    expect(
        Some(&sealed_token(&format!("nokey={DEMO_SECRET}"), owner, now, now + 60, [0x33; 16])),
        "invalid:unknown_key",
        1,
    );
    expect(Some(&scoped_token(owner, [1; 16], "another-service", "")), "invalid:wrong_scope", 1);
    expect(
        Some(&sealed_token(DEMO_KEYS, owner, now + 3600, now + 7200, [0x35; 16])),
        "invalid:issued_in_future",
        1,
    );
    expect(
        Some(&sealed_token(DEMO_KEYS, owner, now, now + 30 * 86_400, [0x36; 16])),
        "invalid:lifetime_too_long",
        1,
    );
    // An owner outside the cluster: kept for `repinAfter` (10 s), then re-pinned.
    expect(Some(&demo_token(gone, [2; 16])), "owner-away", 2);
    let away = SessionToken {
        session: SessionId([3; 16]),
        owner: gone.into(),
        issued_at: now - 20,
        expires_at: now + 60,
        cluster: String::new(),
        owner_away_since: Some(now - 30),
        app_id: None,
    };
    let away = token::seal(&away, demo_keyring().signing_key().unwrap(), DEMO_SCOPE);
    expect(Some(&away), "repinned", 2);
    expect(Some(&sealed_token(OLD_KEY, owner, now, now + 60, [0x33; 16])), "refreshed", 3);

    // 5 new sessions plus one for each of the 8 refused tokens.
    let want: HashMap<&str, u64> = COUNTERS
        .iter()
        .map(|name| {
            let n = match *name {
                "sessions_minted" => 13,
                "affinity_hits" => 10,
                "repinned" => 2,
                "owner_away" => 2,
                "refreshed" => 3,
                // No request here presents more candidates than the cap (review.rs floods).
                "tokens_over_limit" => 0,
                // Every pod here is an ip:port host (internal addresses: istio.rs, doctor.rs).
                "unusable_host" => 0,
                // Learn mode only (mcp.rs, and learn_tests in the core).
                "app_id_not_wrapped" => 0,
                _ => 1,
            };
            (*name, n)
        })
        .collect();
    let read = |envoy: &Envoy| -> HashMap<&str, u64> {
        COUNTERS.iter().map(|name| (*name, envoy.stat(&counter(name)))).collect()
    };
    assert_eq!(read(&envoy), want);
    let prometheus = envoy.admin_get("/stats/prometheus");
    let tether_lines: Vec<&str> =
        prometheus.lines().filter(|l| l.contains("tether") && !l.starts_with('#')).collect();
    println!("prometheus:\n{}", tether_lines.join("\n"));
    // Envoy exports wasm's namespace bare, and a dynamic module's with `envoy_` and its own.
    let prefix = if native() { "envoy_dynamicmodulescustom_" } else { "" };
    for line in [
        "tether_affinity_hits{} 10",
        "tether_sessions_minted{} 13",
        "tether_invalid_token_lifetime_too_long{} 1",
    ] {
        let line = format!("{prefix}{line}");
        assert!(tether_lines.contains(&line.as_str()), "{line} not in {tether_lines:?}");
    }

    // Envoy's own replies: labelled `local-reply`, no cookie, no counter moves. First
    // while Envoy still tries the dead pods (the reply names the last failed host as
    // upstream), then once health checks have marked them all down. The pinned token here
    // names an owner outside the cluster, so the host Envoy last tried is never its owner.
    // (Known limit of the wasm build, reported with issue 16: when that host IS the
    // session's owner, e.g. a session pinned to the only pod, which is dead, tether labels
    // Envoy's 503 `hit` and counts it in `affinity_hits`, because it reads
    // `response.code_details` only when the outcome is not a hit. The native build reads it
    // always: `native::envoys_own_reply_after_trying_the_owner_is_not_a_hit`.)
    let pinned = demo_token(gone, [0x37; 16]);
    for pod in &mut pods {
        pod.kill();
    }
    let local = |cookie: Option<&str>, when: &str| {
        let r = envoy.get_with_cookie(cookie);
        assert_eq!(
            (r.status, r.header("x-tether"), r.set_cookie()),
            (503, Some("local-reply"), None),
            "{when}, cookie {cookie:?}"
        );
    };
    local(None, "pods just killed");
    local(Some(&pinned), "pods just killed");
    for pod in &pods {
        envoy.wait_health(pod.addr, false);
    }
    local(None, "no healthy pod");
    local(Some(&pinned), "no healthy pod");
    assert_eq!(read(&envoy), want, "a local reply moved a counter");
}

/// `repeat` HTTP/2 requests with prior knowledge (h2c), each on its own connection:
/// curl 7.88 fails to reuse an h2c prior-knowledge connection even without tether
/// ("Error in the HTTP2 framing layer"), so streams are not multiplexed here.
fn curl_h2c(url: &str, headers: &[(&str, &str)], repeat: usize) -> Vec<Response> {
    (0..repeat)
        .map(|_| {
            let mut cmd = Command::new("curl");
            cmd.args(["--http2-prior-knowledge", "-sS", "-o", "/dev/null", "-D", "-", "--max-time", "10"]);
            for (k, v) in headers {
                cmd.arg("-H").arg(format!("{k}: {v}"));
            }
            let out = cmd.arg(url).output().expect("curl (with HTTP/2 support) is needed for the h2c test");
            assert!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
            let text = String::from_utf8(out.stdout).unwrap();
            assert!(text.starts_with("HTTP/2 "), "not an HTTP/2 response: {text}");
            parse_response(text.as_bytes()).unwrap()
        })
        .collect()
}

#[test]
fn header_mode_over_http1_and_h2c() {
    let pods = Pod::start_many(3);
    let both = start(&pods, r#"{ "keysFromEnv": "TETHER_KEYS", "type": "CookieAndHeader" }"#, None);
    // A new session is offered both ways.
    let first = both.get("/", &[]);
    let header_token = first.header("x-tether-session").expect("token header on a new session").to_string();
    let cookie_token = first.cookie_value().expect("cookie on a new session");
    assert_eq!(open_demo(&header_token), open_demo(&cookie_token));
    // The header alone keeps the session, and a hit sends nothing back.
    for _ in 0..10 {
        let r = both.get("/", &[("x-tether-session", &header_token)]);
        assert_eq!((r.pod(), r.header("x-tether-session"), r.set_cookie()), (first.pod(), None, None));
    }
    // A re-pin answers in the carrier the token came in.
    let r = both.get(
        "/",
        &[("x-tether-session", &demo_token("127.0.0.1:1".parse::<SocketAddr>().unwrap(), [5; 16]))],
    );
    let repinned = open_demo(r.header("x-tether-session").expect("re-pinned token in the header"));
    assert_eq!((repinned.session, r.set_cookie()), (SessionId([5; 16]), None));

    let header_only = start(&pods, r#"{ "keysFromEnv": "TETHER_KEYS", "type": "Header" }"#, None);
    let fresh = header_only.get("/", &[("cookie", &format!("tether={cookie_token}"))]);
    assert!(fresh.set_cookie().is_none(), "header mode sets no cookie");
    assert!(fresh.header("x-tether-session").is_some(), "the cookie is ignored in header-only mode");

    // h2c: each request steered by the header.
    let url = format!("http://127.0.0.1:{}/", header_only.port);
    let minted = curl_h2c(&url, &[], 1).remove(0);
    let token = minted.header("x-tether-session").expect("token over h2c").to_string();
    let pod = minted.pod().to_string();
    for r in curl_h2c(&url, &[("x-tether-session", &token)], 8) {
        assert_eq!(r.status, 200);
        assert_eq!((r.pod(), r.header("x-tether-session")), (pod.as_str(), None));
    }
    // h2c cookies (which HTTP/2 may split into several headers) steer too.
    let url = format!("http://127.0.0.1:{}/", both.port);
    for r in curl_h2c(
        &url,
        &[("cookie", "a=1"), ("cookie", &format!("tether={cookie_token}")), ("cookie", "b=2")],
        4,
    ) {
        assert_eq!((r.pod(), r.set_cookie()), (first.pod(), None));
    }
}

#[test]
fn idle_timeout_slides_and_expires() {
    let pods = Pod::start_many(3);
    let envoy = start(
        &pods,
        r#"{ "keysFromEnv": "TETHER_KEYS", "absoluteTimeout": "1h", "idleTimeout": "4s", "debugHeader": "x-tether" }"#,
        None,
    );
    let first = envoy.get_with_cookie(None);
    let original = open_demo(&first.cookie_value().unwrap());
    let r = envoy.get_with_cookie(first.cookie_value().as_deref());
    assert_eq!((r.header("x-tether"), r.set_cookie()), (Some("hit"), None), "no refresh in the first half");
    std::thread::sleep(Duration::from_millis(2300));
    let r = envoy.get_with_cookie(first.cookie_value().as_deref());
    assert_eq!(r.header("x-tether"), Some("refreshed"), "past half the idle window");
    let refreshed_value = r.cookie_value().expect("refreshed cookie");
    let refreshed = open_demo(&refreshed_value);
    assert_eq!(
        (refreshed.session, refreshed.owner, refreshed.expires_at),
        (original.session, original.owner, original.expires_at)
    );
    assert!(refreshed.issued_at > original.issued_at);
    assert_eq!(envoy.get_with_cookie(Some(&refreshed_value)).header("x-tether"), Some("hit"));
    // Idle for longer than the window: the session is over.
    std::thread::sleep(Duration::from_millis(4300));
    let r = envoy.get_with_cookie(Some(&refreshed_value));
    assert_eq!(r.header("x-tether"), Some("invalid:expired"));
    assert_ne!(open_demo(&r.cookie_value().unwrap()).session, original.session);
}

/// Sends `n` requests spread over 4 threads; `make(i)` gives request i's cookie.
fn parallel<T: Send + 'static>(n: usize, f: impl Fn(usize) -> T + Send + Sync + 'static) -> Vec<T> {
    let f = Arc::new(f);
    let results: Arc<Mutex<Vec<(usize, T)>>> = Arc::new(Mutex::new(Vec::with_capacity(n)));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (f, results) = (f.clone(), results.clone());
            std::thread::spawn(move || {
                for i in (t..n).step_by(4) {
                    let value = f(i);
                    results.lock().unwrap().push((i, value));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut results = Arc::try_unwrap(results).ok().unwrap().into_inner().unwrap();
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, v)| v).collect()
}

#[test]
fn sticky_canaries_keep_sessions_on_their_cluster() {
    let mut pods = [Pod::start("stable-1"), Pod::start("stable-2"), Pod::start("canary-1")];
    let canary_config = |stable: u32, canary: u32| {
        EnvoyConfig::file("canary.yaml")
            .repoint(8081, pods[0].addr)
            .repoint(8082, pods[1].addr)
            .repoint(8083, pods[2].addr)
            .edit("{ name: stable, weight: 90 }", &format!("{{ name: stable, weight: {stable} }}"))
            .edit("{ name: canary, weight: 10 }", &format!("{{ name: canary, weight: {canary} }}"))
    };
    let all: Vec<&Pod> = pods.iter().collect();
    let split = Envoy::start(canary_config(90, 10), &all);
    let addr = split.addr();

    // 1,000 new sessions under a 90/10 split, then 2 more requests each.
    let sessions: Vec<(String, String)> = parallel(1000, move |_| {
        let r = http_to(addr, "GET", "/", &[]).unwrap();
        (r.cookie_value().expect("cookie"), r.pod().to_string())
    });
    let on_canary = sessions.iter().filter(|(_, p)| p == "canary-1").count();
    println!("1000 new sessions under 90/10: {on_canary} on the canary");
    assert!((50..=160).contains(&on_canary), "{on_canary} of 1000 on the canary");
    for (cookie, pod) in sessions.iter().take(3) {
        let cluster = if pod.starts_with("canary") { "canary" } else { "stable" };
        assert_eq!(open_scoped(cookie, "app").cluster, cluster, "the token records the cluster");
    }
    let checks = sessions.clone();
    let flips: Vec<usize> = parallel(1000, move |i| {
        let (cookie, pod) = &checks[i];
        (0..2)
            .filter(|_| {
                let r = http_to(addr, "GET", "/", &[("cookie", &format!("tether={cookie}"))]).unwrap();
                r.pod() != pod || r.set_cookie().is_some()
            })
            .count()
    });
    assert_eq!(flips.iter().sum::<usize>(), 0, "sessions left their pod under a 90/10 split");

    // Weights move to 0/100: new sessions go to the canary only, stable sessions stay.
    let canary_only = Envoy::start(canary_config(0, 100), &all);
    let addr = canary_only.addr();
    let new_pods = parallel(100, move |_| http_to(addr, "GET", "/", &[]).unwrap().pod().to_string());
    assert!(new_pods.iter().all(|p| p == "canary-1"), "{new_pods:?}");
    let stable: Vec<(String, String)> =
        sessions.iter().filter(|(_, p)| p.starts_with("stable")).cloned().collect();
    let check = stable.clone();
    let served = parallel(stable.len(), move |i| {
        http_to(addr, "GET", "/", &[("cookie", &format!("tether={}", check[i].0))]).unwrap().pod().to_string()
    });
    assert!(served.iter().zip(&stable).all(|(got, (_, want))| got == want), "stable sessions moved at 0/100");

    // Until their pod is gone: then they move to the other stable pod, not to the canary.
    let gone = pods[0].addr;
    pods[0].kill();
    canary_only.wait_health(gone, false);
    let orphans: Vec<String> =
        stable.iter().filter(|(_, p)| p == "stable-1").map(|(c, _)| c.clone()).collect();
    let mut moved_to: HashMap<String, usize> = HashMap::new();
    for cookie in &orphans {
        let r = canary_only.get_with_cookie(Some(cookie));
        assert_eq!(r.status, 200);
        *moved_to.entry(r.pod().to_string()).or_default() += 1;
        let repinned = open_scoped(&r.cookie_value().expect("re-pinned"), "app");
        assert_eq!(repinned.cluster, "stable");
    }
    println!("{} sessions of the dead stable pod moved to {moved_to:?}", orphans.len());
    assert_eq!(moved_to.keys().collect::<Vec<_>>(), vec!["stable-2"], "{moved_to:?}");
}

/// The symptom README's troubleshooting describes for a wrong filter order: the owner in
/// the token is ignored, every response misses it (`owner-away`, then re-pinned once
/// `repinAfter` has passed), and sessions follow the hash instead.
#[test]
fn troubleshooting_stateful_session_before_tether_ignores_the_owner() {
    let pods = Pod::start_many(3);
    let good = debug_config(&pods);
    let tether_start = good.yaml.find("          - name: tether\n").unwrap();
    let session_start = good.yaml.find("          - name: envoy.filters.http.stateful_session\n").unwrap();
    let router_start = good.yaml.find("          - name: envoy.filters.http.router\n").unwrap();
    let tether = &good.yaml[tether_start..session_start];
    let stateful = &good.yaml[session_start..router_start];
    let swapped = good.yaml.replacen(&format!("{tether}{stateful}"), &format!("{stateful}{tether}"), 1);
    let envoy = Envoy::start(EnvoyConfig::from_yaml(swapped), &pods.iter().collect::<Vec<_>>());
    // Each of 10 sessions is presented with a token naming each of the 3 pods in turn. With
    // the owner ignored, all three land on the one pod the hash of the session id picks:
    // exactly one token of each session names that pod (a hit), the other two move.
    let mut missed = 0;
    for j in 0..10u8 {
        let session = [0x50 + j; 16];
        let served: Vec<String> = pods
            .iter()
            .map(|pod| {
                let r = envoy.get_with_cookie(Some(&demo_token(pod.addr, session)));
                assert_eq!(r.status, 200);
                let label = if r.pod() == pod.name { "hit" } else { "owner-away" };
                assert_eq!(r.header("x-tether"), Some(label), "session {j}, token naming {}", pod.name);
                missed += usize::from(label == "owner-away");
                r.pod().to_string()
            })
            .collect();
        assert!(served.iter().all(|p| *p == served[0]), "session {j}: the owner was honoured: {served:?}");
    }
    println!("wrong filter order: {missed} of 30 pinned requests left their owner");
    assert_eq!(missed, 20);
}

/// `cacheControl` (on by default): a response that carries a token is `Cache-Control:
/// private` unless the app set its own, so a shared cache never hands one session's token
/// to other clients; a hit carries no token and gets nothing; `""` turns it off.
#[test]
fn responses_carrying_a_token_are_private_unless_the_app_set_cache_control() {
    let pod = Pod::start("pod-a");
    let app_sets = [("x-demo-cache-control", "public, max-age=60")];
    // The shipped configuration (no cacheControl field: the default).
    let envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&[pod.addr]), &[&pod]);
    let new = envoy.get("/", &[]);
    assert!(new.set_cookie().is_some(), "{:?}", new.headers);
    assert_eq!(new.all("cache-control"), ["private"], "new session");
    let cookie = format!("{COOKIE}={}", new.cookie_value().unwrap());
    let hit = envoy.get("/", &[("cookie", &cookie)]);
    assert_eq!((hit.set_cookie(), hit.all("cache-control")), (None, vec![]), "hit");
    let own = envoy.get("/", &app_sets);
    assert!(own.set_cookie().is_some());
    assert_eq!(own.all("cache-control"), ["public, max-age=60"], "new session, the app's own");
    let own_hit = envoy.get("/", &[app_sets[0], ("cookie", &cookie)]);
    assert_eq!(own_hit.all("cache-control"), ["public, max-age=60"], "hit, the app's own");
    let repinned =
        envoy.get_with_cookie(Some(&demo_token("127.0.0.1:1".parse::<SocketAddr>().unwrap(), [0x61; 16])));
    assert!(repinned.set_cookie().is_some(), "owner-away records the first miss");
    assert_eq!(repinned.all("cache-control"), ["private"], "owner-away with a token");
    drop(envoy);

    // Header mode, another value.
    let json = r#"{ "keysFromEnv": "TETHER_KEYS", "type": "Header", "cacheControl": "no-cache=\"x-tether-session\"" }"#;
    let envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&[pod.addr]).plugin_config(json), &[&pod]);
    let new = envoy.get("/", &[]);
    let token = new.header("x-tether-session").expect("token header").to_string();
    assert_eq!(new.all("cache-control"), ["no-cache=\"x-tether-session\""], "header mode");
    let hit = envoy.get("/", &[("x-tether-session", &token)]);
    assert_eq!((hit.header("x-tether-session"), hit.all("cache-control")), (None, vec![]));
    drop(envoy);

    // Off.
    let json = r#"{ "keysFromEnv": "TETHER_KEYS", "cacheControl": "" }"#;
    let envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&[pod.addr]).plugin_config(json), &[&pod]);
    let new = envoy.get("/", &[]);
    assert!(new.set_cookie().is_some());
    assert_eq!(new.all("cache-control"), Vec::<&str>::new(), "cacheControl off");
}

/// The access log fields of `accessLog`: tether's filter-state keys (Envoy stores a
/// proxy-wasm property under `wasm.<key>`).
fn log_key(key: &str) -> String {
    if native() {
        key.to_string()
    } else {
        format!("wasm.{key}")
    }
}

/// The shipped configuration with the access log fields of docs/operations.md added.
fn with_decision_log(config: EnvoyConfig) -> EnvoyConfig {
    let fields = format!(
        " decision=%FILTER_STATE({}:PLAIN)% session=%FILTER_STATE({}:PLAIN)%",
        log_key("tether.decision"),
        log_key("tether.session")
    );
    let end = "attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%\\n\"";
    config.edit(end, &format!("attempts=%UPSTREAM_REQUEST_ATTEMPT_COUNT%{fields}\\n\""))
}

/// The `decision=` and `session=` fields of the access log line of `GET path`, waiting for
/// Envoy to flush its access log.
fn logged(envoy: &Envoy, path: &str) -> (String, String) {
    let start = std::time::Instant::now();
    loop {
        let log = envoy.log();
        let prefix = format!("access GET {path} ");
        if let Some(line) = log.lines().find(|l| l.starts_with(&prefix)) {
            let field = |name: &str| {
                line.split(' ').find_map(|f| f.strip_prefix(name)).unwrap_or("(absent)").to_string()
            };
            return (field("decision="), field("session="));
        }
        assert!(start.elapsed() < Duration::from_secs(15), "no access log line for {path}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `accessLog`: the access log shows tether's decision (the debug header's label) and the
/// first 8 hex digits of SHA-256 of the session id, for a new session, a hit, a refused
/// token and Envoy's own reply; off (the default), both fields are empty (`-`).
#[test]
fn access_log_shows_the_decision_and_a_hash_of_the_session() {
    let pod = Pod::start("pod-a");
    let json = r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether", "accessLog": true }"#;
    let config = with_decision_log(EnvoyConfig::shipped().endpoints(&[pod.addr]).plugin_config(json));
    let envoy = Envoy::start(config, &[&pod]);
    let name_of = |cookie: &str| open_demo(cookie).session.log_name();
    let new = envoy.get("/new", &[]);
    let cookie = new.cookie_value().unwrap();
    let hit = envoy.get("/hit", &[("cookie", &format!("{COOKIE}={cookie}"))]);
    let invalid = envoy.get("/invalid", &[("cookie", &format!("{COOKIE}=garbage"))]);
    // The pod drops the connection: Envoy answers 503 after its retries. The token names a
    // gone owner, so the wasm build reads the response details too (a hit would not).
    let away = demo_token("127.0.0.1:1".parse::<SocketAddr>().unwrap(), [0x62; 16]);
    let local = envoy.get("/reset", &[("cookie", &format!("{COOKIE}={away}"))]);
    assert_eq!((new.status, hit.status, invalid.status, local.status), (200, 200, 200, 503));
    let cases = [
        ("/new", &new, "new", name_of(&cookie)),
        ("/hit", &hit, "hit", name_of(&cookie)),
        ("/invalid", &invalid, "invalid:malformed", name_of(&invalid.cookie_value().unwrap())),
        ("/reset", &local, "local-reply", tether::token::SessionId([0x62; 16]).log_name()),
    ];
    for (path, response, label, session) in cases {
        assert_eq!(response.header("x-tether"), Some(label), "{path}: the debug header");
        assert_eq!(logged(&envoy, path), (label.to_string(), session.clone()), "{path}");
        println!("{path}: decision={label} session={session}");
    }
    assert_ne!(name_of(&cookie), name_of(&invalid.cookie_value().unwrap()));
    drop(envoy);

    let config = with_decision_log(EnvoyConfig::shipped().endpoints(&[pod.addr]));
    let envoy = Envoy::start(config, &[&pod]);
    envoy.get("/off", &[]);
    assert_eq!(logged(&envoy, "/off"), ("-".to_string(), "-".to_string()), "accessLog off");
}
