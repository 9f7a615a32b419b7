//! tether parses attacker-controlled bytes in front of every request. Through a real Envoy:
//! hostile requests never hurt the VM, tokens are bound to their scope, keys rotate across
//! two Envoys without losing sessions, and no log line at any level carries a secret.

mod common;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use common::*;
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

fn request_bytes(headers: &[(&str, &[u8])]) -> Vec<u8> {
    let mut req = b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n".to_vec();
    for (k, v) in headers {
        req.extend_from_slice(k.as_bytes());
        req.extend_from_slice(b": ");
        req.extend_from_slice(v);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"\r\n");
    req
}

#[test]
fn hostile_requests_never_hurt_the_vm() {
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods)).plugin_config(
        r#"{ "keysFromEnv": "TETHER_KEYS", "type": "CookieAndHeader", "debugHeader": "x-tether" }"#,
    );
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let owner = &pods[1];
    let good = demo_token(owner.addr, [0x42; 16]);
    let now = now();
    let raw = URL_SAFE_NO_PAD.decode(&good).unwrap();
    let with = |i: usize, v: u8| {
        let mut b = raw.clone();
        b[i] = v;
        URL_SAFE_NO_PAD.encode(b)
    };
    let family_at = 2 + 4 + 4 + 8 + 8 + 16; // version, key id "demo", fingerprint, times, session
    let many: String = (0..300).map(|i| format!("c{i}=v{i}; ")).collect();
    type Headers = Vec<(&'static str, Vec<u8>)>;
    use Answer::{Codec, Tether};
    let malformed = Tether("invalid:malformed");
    let cases: Vec<(&str, Headers, Answer)> = vec![
        (
            "59 KB cookie header",
            vec![("cookie", format!("tether={}", "A".repeat(59 * 1024)).into_bytes())],
            malformed,
        ),
        // Over Envoy's 60 KB default `max_request_headers_kb`: Envoy answers, tether never runs.
        (
            "61 KB cookie header (over Envoy's limit)",
            vec![("cookie", "x".repeat(61 * 1024).into_bytes())],
            Codec(431),
        ),
        // "junk" is valid base64url; its first decoded byte (0x8e) is no token version.
        (
            "300 cookies then ours broken",
            vec![("cookie", format!("{many}tether=junk").into_bytes())],
            Tether("invalid:unknown_version"),
        ),
        ("invalid UTF-8", vec![("cookie", b"tether=\xff\xfe\xfd; a=\xc3\x28".to_vec())], malformed),
        // Envoy's HTTP/1 codec refuses NUL in a header value.
        ("NUL byte", vec![("cookie", b"tether=ab\x00cd".to_vec())], Codec(400)),
        // ...and control bytes (here SOH, STX, ESC).
        ("control bytes", vec![("cookie", b"tether=\x01\x02\x1b[31m".to_vec())], Codec(400)),
        (
            "duplicate names, all bad",
            vec![("cookie", b"tether=bad1; tether=\"bad2\"; tether=".to_vec())],
            malformed,
        ),
        ("unbalanced quotes", vec![("cookie", b"tether=\"abc; tether=abc\"".to_vec())], malformed),
        (
            "unknown version",
            vec![("cookie", format!("tether={}", with(0, 7)).into_bytes())],
            Tether("invalid:unknown_version"),
        ),
        (
            "unknown key id",
            vec![(
                "cookie",
                format!(
                    "tether={}",
                    sealed_token(&format!("zz={DEMO_SECRET}"), owner.addr, now, now + 60, [0x77; 16])
                )
                .into_bytes(),
            )],
            Tether("invalid:unknown_key"),
        ),
        (
            "future issue time",
            vec![(
                "cookie",
                format!("tether={}", sealed_token(DEMO_KEYS, owner.addr, now + 7200, now + 9000, [0x77; 16]))
                    .into_bytes(),
            )],
            Tether("invalid:issued_in_future"),
        ),
        (
            "expiry beyond the maximum",
            vec![(
                "cookie",
                format!("tether={}", sealed_token(DEMO_KEYS, owner.addr, now, now + 90 * 86_400, [0x77; 16]))
                    .into_bytes(),
            )],
            Tether("invalid:lifetime_too_long"),
        ),
        (
            "standard base64 alphabet",
            vec![("cookie", format!("tether={}", standard_alphabet(owner.addr)).into_bytes())],
            malformed,
        ),
        (
            "truncated",
            vec![("cookie", format!("tether={}", &good[..good.len() / 2]).into_bytes())],
            malformed,
        ),
        (
            "address that is not ip:port",
            vec![("cookie", format!("tether={}", with(family_at, 5)).into_bytes())],
            malformed,
        ),
        ("huge token header", vec![("x-tether-session", "Q".repeat(40 * 1024).into_bytes())], malformed),
        ("invalid UTF-8 token header", vec![("x-tether-session", b"\xff\xff\x80".to_vec())], malformed),
        (
            "spoofed internal headers",
            vec![("x-tether-host", b"\xff==".to_vec()), ("x-tether-key", vec![b'k'; 5000])],
            Tether("new"),
        ),
    ];
    let created_before = (!native()).then(|| envoy.stat("wasm.envoy.wasm.runtime.v8.created"));
    let mut answered = Vec::new();
    for (case, headers, want) in &cases {
        let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        let r = raw_request(envoy.addr(), &request_bytes(&headers))
            .unwrap_or_else(|e| panic!("{case}: no HTTP answer from Envoy: {e}"));
        let got = (r.status, r.header("x-tether"));
        answered.push(format!("{case}: {} {:?}", r.status, r.header("x-tether")));
        match want {
            // tether ran: a new session, on whichever pod the hash picks, never steered.
            Tether(label) => {
                assert_eq!(got, (200, Some(*label)), "{case}");
                assert!(r.cookie_value().is_some(), "{case}: a new session sets the cookie");
                assert_eq!(r.header("x-seen-host"), Some("-"), "{case}: the request was steered");
            }
            // Envoy's codec refused the request before any filter: no pod, no tether.
            Codec(status) => {
                assert_eq!(got, (*status, None), "{case}");
                assert_eq!(r.header("x-pod"), None, "{case}: the request reached a pod");
                assert_eq!(r.set_cookie(), None, "{case}");
            }
        }
        // The VM survived: a normal request still gets affinity.
        let r = envoy.get_with_cookie(Some(&good));
        assert_eq!(
            (r.status, r.pod(), r.header("x-tether")),
            (200, owner.name.as_str(), Some("hit")),
            "after {case}"
        );
    }
    println!("{}", answered.join("\n"));
    let log = envoy.log();
    for bad in ["panicked", "Function: proxy_on", "wasm trap", "RuntimeError", "VM failed"] {
        assert!(!log.contains(bad), "the log mentions `{bad}`");
    }
    // Envoy 1.40's per-plugin VM stats: no reload was needed, attempted, skipped or failed,
    // and no wasm VM was created after start-up (a crashed and replaced VM would be one).
    // The native build has no VM: a panic there is caught and logged ("panicked", above).
    if let Some(created_before) = created_before {
        for stat in ["vm_reload", "vm_reload_success", "vm_reload_failure", "vm_reload_backoff"] {
            assert_eq!(envoy.stat(&format!("wasm.tether.{stat}")), 0, "wasm.tether.{stat}");
        }
        assert_eq!(envoy.stat("wasm.envoy.wasm.runtime.v8.created"), created_before, "a wasm VM was created");
    }
    assert_eq!(envoy.stat(&counter("affinity_hits")), cases.len() as u64);
    let new_sessions = cases.iter().filter(|(_, _, want)| matches!(want, Tether(_))).count() as u64;
    assert_eq!(envoy.stat(&counter("sessions_minted")), new_sessions);
}

/// What a hostile request must get back.
#[derive(Clone, Copy, Debug)]
enum Answer {
    /// tether handled it: status 200 and this debug label (a new session).
    Tether(&'static str),
    /// Envoy's HTTP/1 codec refused it with this status before any filter ran.
    Codec(u16),
}

#[test]
fn configuration_values_that_could_inject_headers_are_refused() {
    let cases = [
        (r#"{"keysFromEnv":"TETHER_KEYS","cookie":{"name":"a\r\nx: y"}}"#, "cookie.name"),
        (r#"{"keysFromEnv":"TETHER_KEYS","cookie":{"path":"/\r\nx: y"}}"#, "cookie.path"),
        (r#"{"keysFromEnv":"TETHER_KEYS","cookie":{"domain":"a.test\nx: y"}}"#, "cookie.domain"),
        (r#"{"keysFromEnv":"TETHER_KEYS","cookie":{"path":"/; Domain=evil.test"}}"#, "cookie.path"),
        (r#"{"keysFromEnv":"TETHER_KEYS","header":{"name":"x\r\ny"},"type":"Header"}"#, "header.name"),
        (r#"{"keysFromEnv":"TETHER_KEYS","debugHeader":"x-a\r\nx-b"}"#, "debugHeader"),
    ];
    for (json, field) in cases {
        let mut envoy = Envoy::spawn(EnvoyConfig::shipped().plugin_config(json));
        let code = envoy.wait_exit(std::time::Duration::from_secs(30));
        assert!(matches!(code, Some(c) if c != 0), "{json}: not refused");
        assert!(envoy.log().contains(&format!("invalid configuration: `{field}`")), "{json}");
    }
}

#[test]
fn a_token_of_one_service_never_steers_another() {
    let pods = Pod::start_many(3);
    // Two clusters over the same pods: without scope binding a token of one would pin the
    // other's requests, since its owner address is in both.
    let shipped = debug_config(&pods);
    let cluster_at = shipped.yaml.find("  - name: pods\n").unwrap();
    let cluster_b = shipped.yaml[cluster_at..]
        .replace("  - name: pods\n", "  - name: svc-b\n")
        .replace("cluster_name: pods", "cluster_name: svc-b");
    let yaml = format!("{}{cluster_b}", shipped.yaml).replacen(
        "              - match: { prefix: \"/\" }\n",
        "              - match: { prefix: \"/b/\" }\n                route:\n                  cluster: svc-b\n                  hash_policy:\n                  - header: { header_name: x-tether-key }\n              - match: { prefix: \"/\" }\n",
        1,
    );
    let envoy = Envoy::start(EnvoyConfig { yaml, ..shipped.clone() }, &pods.iter().collect::<Vec<_>>());
    let a = envoy.get("/a/", &[]);
    let b = envoy.get("/b/", &[]);
    let (token_a, token_b) = (a.cookie_value().unwrap(), b.cookie_value().unwrap());
    assert_eq!(open_scoped(&token_a, "pods").owner, pod_by_name(&pods, a.pod()).addr);
    assert_eq!(open_scoped(&token_b, "svc-b").owner, pod_by_name(&pods, b.pod()).addr);
    for _ in 0..5 {
        // Each token pins its own service...
        let own_a = envoy.get("/a/", &[("cookie", &format!("tether={token_a}"))]);
        let own_b = envoy.get("/b/", &[("cookie", &format!("tether={token_b}"))]);
        assert_eq!((own_a.pod(), own_a.header("x-tether")), (a.pod(), Some("hit")));
        assert_eq!((own_b.pod(), own_b.header("x-tether")), (b.pod(), Some("hit")));
        // ...and is refused by the other, same key notwithstanding.
        for (path, token) in [("/b/", &token_a), ("/a/", &token_b)] {
            let r = envoy.get(path, &[("cookie", &format!("tether={token}"))]);
            assert_eq!(r.header("x-seen-host"), Some("-"), "{path}: a foreign token steered");
            assert_eq!(r.header("x-tether"), Some("invalid:wrong_scope"));
        }
    }
    assert_eq!(envoy.stat(&counter("invalid_token.wrong_scope")), 10);
}

const K1: &str = "k1=cm90YXRpb24ta2V5LW9uZS1mb3ItdGhlLWhhcmRlbmluZy10ZXN0";
const K2: &str = "k2=cm90YXRpb24ta2V5LXR3by1mb3ItdGhlLWhhcmRlbmluZy10ZXN0";

fn key_id(value: &str) -> String {
    let raw = URL_SAFE_NO_PAD.decode(value).unwrap();
    String::from_utf8(raw[2..2 + raw[1] as usize].to_vec()).unwrap()
}

#[test]
fn keys_rotate_across_two_envoys_without_losing_sessions() {
    let pods = Pod::start_many(3);
    let all: Vec<&Pod> = pods.iter().collect();
    let envoy_with = |keys: &str| {
        let config = EnvoyConfig::shipped()
            .endpoints(&addrs(&pods))
            .keys_env(keys)
            .plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether" }"#);
        Envoy::start(config, &all)
    };
    // Phase 0: k1 everywhere. 20 sessions, 10 of them left idle for the rest of the rollout.
    let (a, _b) = (envoy_with(K1), envoy_with(K1));
    let mut sessions: Vec<(String, String, SessionId)> = (0..20)
        .map(|_| {
            let r = a.get_with_cookie(None);
            let v = r.cookie_value().unwrap();
            let id = open_demo_keys(&v, K1).session;
            (v, r.pod().to_string(), id)
        })
        .collect();
    let idle: Vec<(String, String, SessionId)> = sessions.split_off(10);

    // Phase 1: k2 added after k1 on both (k1 still signs): nothing changes.
    let (a, b) = (envoy_with(&format!("{K1},{K2}")), envoy_with(&format!("{K1},{K2}")));
    for (cookie, pod, _) in &sessions {
        for envoy in [&a, &b] {
            let r = envoy.get_with_cookie(Some(cookie));
            assert_eq!((r.pod(), r.header("x-tether")), (pod.as_str(), Some("hit")));
        }
    }

    // Phase 2: A signs with k2, B still with k1. Clients bounce between them, keeping
    // whatever cookie they get: no session is lost, each is re-signed as it passes.
    let (a, b) = (envoy_with(&format!("{K2},{K1}")), envoy_with(&format!("{K1},{K2}")));
    for (cookie, pod, id) in sessions.iter_mut() {
        for (round, envoy) in [&a, &b, &a, &b].into_iter().enumerate() {
            let r = envoy.get_with_cookie(Some(cookie));
            assert_eq!(r.pod(), pod.as_str(), "round {round}: the session left its pod");
            assert_eq!(r.header("x-tether"), Some("refreshed"), "round {round}");
            let next = r.cookie_value().expect("re-signed");
            assert_eq!(key_id(&next), if round % 2 == 0 { "k2" } else { "k1" });
            assert_eq!(open_demo_keys(&next, &format!("{K1},{K2}")).session, *id);
            *cookie = next;
        }
    }

    // Phase 3: k2 signs everywhere: tokens move to k2 as they pass, then stay quiet.
    let (a, b) = (envoy_with(&format!("{K2},{K1}")), envoy_with(&format!("{K2},{K1}")));
    for (cookie, pod, _) in sessions.iter_mut() {
        let r = b.get_with_cookie(Some(cookie));
        assert_eq!((r.pod(), r.header("x-tether")), (pod.as_str(), Some("refreshed")));
        *cookie = r.cookie_value().unwrap();
        assert_eq!(key_id(cookie), "k2");
        let again = a.get_with_cookie(Some(cookie));
        assert_eq!(
            (again.pod(), again.header("x-tether"), again.set_cookie()),
            (pod.as_str(), Some("hit"), None)
        );
    }

    // Phase 4: k1 removed. Sessions that passed keep their pod; tokens only k1 signed are
    // new sessions.
    let (a, b) = (envoy_with(K2), envoy_with(K2));
    for (cookie, pod, _) in &sessions {
        for envoy in [&a, &b] {
            let r = envoy.get_with_cookie(Some(cookie));
            assert_eq!((r.pod(), r.header("x-tether")), (pod.as_str(), Some("hit")));
        }
    }
    for (cookie, _, id) in &idle {
        let r = a.get_with_cookie(Some(cookie));
        assert_eq!(r.header("x-tether"), Some("invalid:unknown_key"));
        assert_ne!(open_demo_keys(&r.cookie_value().unwrap(), K2).session, *id);
    }
}

fn open_demo_keys(value: &str, keys: &str) -> SessionToken {
    let ring = Keyring::parse(keys, None).unwrap();
    token::open(value.as_bytes(), &ring, DEMO_SCOPE, now(), DEMO_LIMITS).unwrap().token
}

#[test]
fn no_log_line_at_any_level_carries_a_secret() {
    // Production setup: the keys live in Envoy's own environment (host_env_keys).
    let secret = "c2VjcmV0LWtleS10aGF0LW11c3QtbmV2ZXItYmUtbG9nZ2VkIQ==";
    let decoded = String::from_utf8(STANDARD.decode(secret).unwrap()).unwrap();
    let pods = Pod::start_many(3);
    let mut config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    if !native() {
        // The native build reads Envoy's environment already.
        config = config.edit(
            &format!("key_values:\n                      TETHER_KEYS: \"{DEMO_KEYS}\""),
            "host_env_keys: [TETHER_KEYS]",
        );
    }
    let config =
        config.process_env("TETHER_KEYS", &format!("prod={secret},old={DEMO_SECRET}")).log_level("trace");
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    // Sign (new session), verify (hits), verify with the older key (re-signed), refuse.
    let first = envoy.get_with_cookie(None);
    assert_eq!((first.status, first.header("x-tether")), (200, None));
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    for _ in 0..4 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
    }
    let now = now();
    let old_token = sealed_token(&format!("old={DEMO_SECRET}"), pods[0].addr, now, now + 600, [1; 16]);
    let old = envoy.get_with_cookie(Some(&old_token));
    assert_eq!(old.pod(), pods[0].name, "a token of the older key steers");
    assert!(old.cookie_value().is_some(), "and is re-signed with `prod`");
    let forged = envoy.get("/", &[("cookie", "tether=forged")]);
    assert_eq!(forged.status, 200);
    assert!(forged.cookie_value().is_some(), "a forged token starts a new session");
    let log = envoy.log();
    assert!(
        log.contains("[trace]") && log.contains("keys [prod,old] signing with `prod`"),
        "trace logging is on"
    );
    let demo_decoded = decoded_secret(DEMO_SECRET);
    for needle in [secret, &decoded, DEMO_SECRET, &demo_decoded] {
        assert!(!log.contains(needle), "a secret reached Envoy's trace log: {needle}");
    }
}
