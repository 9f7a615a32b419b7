//! Through a real Envoy, the findings of the outside review (issue 15) that depend on
//! Envoy: long cluster names pin, a flood of fake tokens costs a few verifications, a long
//! request is judged at its response's time, and prefixed cookie names are checked at load.
//!
//! `measure_fake_token_flood` (ignored by default) times the flood through Envoy:
//! `ENVOY="$(scripts/envoy.sh)" cargo test --release --test review measure -- --ignored --nocapture`,
//! with `TETHER_WASM=<path>` to time another build of the module.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

/// Another secret under the demo key's id: tokens that reach the full HMAC / AEAD check.
const FORGED_KEYS: &str = "demo=ZmFrZS1rZXktZmFrZS1rZXktZmFrZS1rZXktZmFrZS0=";

/// An Istio-style cluster name of 146 bytes (the review's case).
fn long_name(subset: &str) -> String {
    let name = format!(
        "outbound|8080|{subset}|{}.{}.svc.cluster.local",
        "s".repeat(60),
        "n".repeat(52 - subset.len())
    );
    assert_eq!(name.len(), 146);
    name
}

/// `envoy/canary.yaml` with both clusters renamed to 146-byte names, weights as given.
fn long_canary(pods: &[Pod], stable_weight: u32, canary_weight: u32) -> (EnvoyConfig, String, String) {
    let (stable, canary) = (long_name("stable"), long_name("canary"));
    let mut yaml = std::fs::read_to_string(repo().join("envoy/canary.yaml")).unwrap();
    for (from, to) in [
        ("string_match: { exact: stable }".to_string(), format!("string_match: {{ exact: \"{stable}\" }}")),
        ("string_match: { exact: canary }".to_string(), format!("string_match: {{ exact: \"{canary}\" }}")),
        ("  cluster: stable\n".to_string(), format!("  cluster: \"{stable}\"\n")),
        ("  cluster: canary\n".to_string(), format!("  cluster: \"{canary}\"\n")),
        (
            "{ name: stable, weight: 90 }".to_string(),
            format!("{{ name: \"{stable}\", weight: {stable_weight} }}"),
        ),
        (
            "{ name: canary, weight: 10 }".to_string(),
            format!("{{ name: \"{canary}\", weight: {canary_weight} }}"),
        ),
        ("  - name: stable\n".to_string(), format!("  - name: \"{stable}\"\n")),
        ("  - name: canary\n".to_string(), format!("  - name: \"{canary}\"\n")),
        ("cluster_name: stable\n".to_string(), format!("cluster_name: \"{stable}\"\n")),
        ("cluster_name: canary\n".to_string(), format!("cluster_name: \"{canary}\"\n")),
    ] {
        assert_eq!(yaml.matches(&from).count(), 1, "canary.yaml must contain `{from}` once");
        yaml = yaml.replacen(&from, &to, 1);
    }
    let config = EnvoyConfig::for_build(yaml)
        .repoint(8081, pods[0].addr)
        .repoint(8082, pods[1].addr)
        .repoint(8083, pods[2].addr)
        .edit(
            r#""clusterHeader": "x-tether-cluster","#,
            r#""clusterHeader": "x-tether-cluster", "debugHeader": "x-tether","#,
        );
    (config, stable, canary)
}

/// Item 1: a 146-byte cluster name is recorded, so the session stays on its cluster: round
/// 0 `new`, every later round a `hit` with no Set-Cookie, even once the weights send every
/// new session to the other cluster (only the steering cluster header can keep it there).
#[test]
fn long_cluster_names_pin_sessions_to_their_cluster() {
    let pods = [Pod::start("stable-1"), Pod::start("stable-2"), Pod::start("canary-1")];
    let all: Vec<&Pod> = pods.iter().collect();
    let (config, stable, _) = long_canary(&pods, 100, 0);
    let envoy = Envoy::start(config, &all);
    let first = envoy.get("/", &[]);
    assert_eq!(first.header("x-tether"), Some("new"));
    assert!(first.pod().starts_with("stable"), "{}", first.pod());
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    assert_eq!(open_scoped(&cookie, "app").cluster, stable, "the token records the 146-byte cluster");
    drop(envoy);

    let (config, _, _) = long_canary(&pods, 0, 100);
    let envoy = Envoy::start(config, &all);
    assert_eq!(envoy.get("/", &[]).pod(), "canary-1", "new sessions follow the weights");
    for round in 1..=10 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!(
            (r.header("x-tether"), r.pod(), r.set_cookie()),
            (Some("hit"), first.pod(), None),
            "round {round}"
        );
    }
    assert_eq!(envoy.stat(&counter("repinned")), 0);
    assert_eq!(envoy.stat(&counter("affinity_hits")), 10);
}

/// A `tether=` cookie value for a fake token: right key id, wrong key.
fn fake_tokens(max_bytes: usize, encrypted: bool) -> String {
    let ring = Keyring::parse(FORGED_KEYS, None).unwrap();
    let key = ring.signing_key().unwrap();
    let mut header = String::new();
    for i in 0u32.. {
        let t = SessionToken {
            session: SessionId([(i % 251) as u8; 16]),
            owner: SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 8080)).into(),
            issued_at: now(),
            expires_at: now() + 3600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        };
        let text = if encrypted {
            token::seal_encrypted(&t, key, DEMO_SCOPE, [(i % 256) as u8; token::NONCE_LEN]).unwrap()
        } else {
            token::seal(&t, key, DEMO_SCOPE)
        };
        let pair = format!("{}{COOKIE}={text}", if header.is_empty() { "" } else { "; " });
        if header.len() + pair.len() > max_bytes {
            break;
        }
        header.push_str(&pair);
    }
    header
}

/// Item 2 through Envoy: a 58 KB Cookie header of fake tokens is a new session and is
/// counted; a valid token among the first few still steers; the VM is unharmed.
#[test]
fn a_flood_of_fake_tokens_is_counted_and_costs_a_few_checks() {
    let pods = Pod::start_many(3);
    let envoy = Envoy::start(debug_config(&pods), &pods.iter().collect::<Vec<_>>());
    let flood = fake_tokens(58 * 1024, false);
    let count = flood.matches("tether=").count();
    assert!(count > 500, "{count} fake tokens");
    for _ in 0..3 {
        let r = envoy.get("/", &[("cookie", &flood)]);
        assert_eq!((r.status, r.header("x-tether")), (200, Some("invalid:bad_signature")));
        assert_eq!(r.header("x-seen-host"), Some("-"));
    }
    assert_eq!(envoy.stat(&counter("tokens_over_limit")), 3);
    assert_eq!(envoy.stat(&counter("invalid_token.bad_signature")), 3);
    // A valid token after three fakes is the fourth candidate: it steers.
    let owner = &pods[1];
    let valid = demo_token(owner.addr, [4; 16]);
    let three: Vec<&str> = flood.split("; ").take(3).collect();
    let header = format!("{}; tether={valid}; {}", three.join("; "), flood);
    let r = envoy.get("/", &[("cookie", &header)]);
    assert_eq!((r.header("x-tether"), r.pod()), (Some("hit"), owner.name.as_str()));
    // The same fake repeated 500 times is one candidate: the valid token after it steers.
    let header = format!("{}; tether={valid}", vec![three[0]; 500].join("; "));
    let r = envoy.get("/", &[("cookie", &header)]);
    assert_eq!((r.header("x-tether"), r.pod()), (Some("hit"), owner.name.as_str()));
    assert_eq!(envoy.stat(&counter("tokens_over_limit")), 3, "neither of the two is over the cap");
    let log = envoy.log();
    assert!(!log.contains("panicked") && !log.contains("Wasm VM failed"), "{log}");
}

fn mean_micros(envoy: &Envoy, cookie: &str, n: u32) -> f64 {
    let mut conn = envoy.keep_alive();
    for _ in 0..20 {
        conn.request("GET", "/", &[("cookie", cookie)]).unwrap();
    }
    let start = Instant::now();
    for _ in 0..n {
        let r = conn.request("GET", "/", &[("cookie", cookie)]).unwrap();
        assert_eq!(r.status, 200);
    }
    start.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

/// Item 2's figures: time per request through Envoy (one keep-alive connection, sequential)
/// for a normal cookie, a ~58 KB header of fake tokens under our name, and the same bytes
/// under another cookie name (what the header costs without tether verifying it).
#[test]
#[ignore]
fn measure_fake_token_flood() {
    let wasm =
        std::env::var("TETHER_WASM").unwrap_or_else(|_| "target/wasm32-wasip1/release/tether.wasm".into());
    let n: u32 = std::env::var("ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300);
    let pods = Pod::start_many(3);
    for (format, encrypted) in [("Signed", false), ("Encrypted", true)] {
        let config = EnvoyConfig::shipped()
            .endpoints(&addrs(&pods))
            .edit("filename: target/wasm32-wasip1/release/tether.wasm", &format!("filename: {wasm}"))
            .plugin_config(&format!(r#"{{ "keysFromEnv": "TETHER_KEYS", "tokenFormat": "{format}" }}"#));
        let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
        let valid = envoy.get("/", &[]).cookie_value().unwrap();
        let flood = fake_tokens(58 * 1024, encrypted);
        let count = flood.matches("tether=").count();
        let other = flood.replace("tether=", "others=");
        let normal = mean_micros(&envoy, &format!("tether={valid}"), n);
        let fakes = mean_micros(&envoy, &flood, n);
        let bystander = mean_micros(&envoy, &other, n);
        println!(
            "{wasm} {format}: normal cookie {normal:.0} µs/request; {count} fake tokens ({} B) {fakes:.0} µs; \
             same bytes under another name {bystander:.0} µs; cost of the fakes {:.0} µs",
            flood.len(),
            fakes - bystander
        );
    }
}

/// Sends a POST whose 4-byte body follows the headers after `delay`: the response (the pod
/// answers once it has the body) comes `delay` after tether saw the request headers.
fn slow_upload(envoy: &Envoy, cookie: Option<&str>, delay: Duration) -> Response {
    let mut stream = TcpStream::connect(envoy.addr()).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let cookie_line = cookie.map(|c| format!("cookie: {COOKIE}={c}\r\n")).unwrap_or_default();
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\ncontent-length: 4\r\n{cookie_line}\r\n"
    );
    stream.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(delay);
    stream.write_all(b"body").unwrap();
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf).unwrap();
    parse_response(&buf).expect("a response")
}

/// Item 3: a request that outlasts the idle window is judged at its response's time: a
/// token that was fresh when the upload started is refreshed when it ends (not left to
/// expire), and a session minted on a slow upload gets a token valid from the response.
#[test]
fn a_slow_request_is_judged_at_the_time_of_its_response() {
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped()
        .endpoints(&addrs(&pods))
        .plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether", "idleTimeout": "4s" }"#);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let owner = &pods[0];
    // Fresh when the upload starts (age 0-1 s < half of 4 s), 3 s older when it ends.
    let issued = now();
    let fresh = sealed_token(DEMO_KEYS, owner.addr, issued, issued + 3600, [8; 16]);
    let r = slow_upload(&envoy, Some(&fresh), Duration::from_secs(3));
    assert_eq!((r.status, r.pod()), (200, owner.name.as_str()));
    assert_eq!(r.header("x-tether"), Some("refreshed"), "the token is refreshed at the response");
    let cookie = r.cookie_value().expect("refreshed token");
    let t = open_demo(&cookie);
    assert!(t.issued_at >= issued + 3, "issued at {} for a response {} s after {issued}", t.issued_at, 3);
    let next = envoy.get_with_cookie(Some(&cookie));
    assert_eq!((next.header("x-tether"), next.pod()), (Some("hit"), owner.name.as_str()));

    // A session minted on a 5 s upload: its token must still be valid at the next request.
    let r = slow_upload(&envoy, None, Duration::from_secs(5));
    assert_eq!(r.header("x-tether"), Some("new"));
    let cookie = r.cookie_value().expect("new session");
    let next = envoy.get_with_cookie(Some(&cookie));
    assert_eq!(
        (next.header("x-tether"), next.pod()),
        (Some("hit"), r.pod()),
        "the new token expired at once"
    );
}

/// Item 4 through Envoy: a `__Host-` cookie with a Domain is refused at load time, the log
/// naming `cookie.domain`; one with the attributes browsers require loads and works.
#[test]
fn host_prefixed_cookie_names_are_checked_at_load() {
    let bad = EnvoyConfig::shipped().plugin_config(
        r#"{ "keysFromEnv": "TETHER_KEYS", "cookie": { "name": "__Host-tether", "secure": true, "domain": "example.test" } }"#,
    );
    let mut envoy = Envoy::spawn(bad);
    let code = envoy.wait_exit(Duration::from_secs(30));
    let log = envoy.log();
    assert!(matches!(code, Some(c) if c != 0), "Envoy loaded a __Host- cookie with a Domain\n{log}");
    assert!(log.contains("invalid configuration: `cookie.domain`"), "{log}");

    let pods = Pod::start_many(3);
    let good = EnvoyConfig::shipped().endpoints(&addrs(&pods)).plugin_config(
        r#"{ "keysFromEnv": "TETHER_KEYS", "cookie": { "name": "__Host-tether", "secure": true } }"#,
    );
    let envoy = Envoy::start(good, &pods.iter().collect::<Vec<_>>());
    let r = envoy.get("/", &[]);
    let set = r.all("set-cookie").into_iter().find(|h| h.starts_with("__Host-tether=")).expect("cookie");
    assert!(set.ends_with("; Path=/; Secure; HttpOnly; SameSite=Lax"), "{set}");
    let value = set["__Host-tether=".len()..].split(';').next().unwrap();
    let again = envoy.get("/", &[("cookie", &format!("__Host-tether={value}"))]);
    assert_eq!(again.pod(), r.pod());
    assert!(again.all("set-cookie").is_empty(), "{:?}", again.headers);
}
