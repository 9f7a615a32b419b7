//! Envoy refuses a bad tether configuration, with one log line naming the field; secrets
//! never reach the log.

mod common;

use common::*;
use std::time::Duration;

const SHORT_SECRET: &str = "c2hvcnQtc2VjcmV0LTE2Qg==";

#[test]
fn bad_configuration_is_refused_by_envoy_with_the_field_named() {
    let with_env = |json: &str| EnvoyConfig::shipped().plugin_config(json);
    let cases: Vec<(&str, EnvoyConfig, &str)> = vec![
        (
            "bad sameSite",
            with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookie": {"sameSite": "Sometimes"}}"#),
            "cookie.sameSite",
        ),
        ("unknown field", with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookieName": "x"}"#), "cookieName"),
        (
            "header injection in cookie name",
            with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookie": {"name": "a\r\nx-evil: 1"}}"#),
            "cookie.name",
        ),
        ("missing env variable", with_env(r#"{"keysFromEnv": "NOT_SET_ANYWHERE"}"#), "keysFromEnv"),
        ("no keys at all", with_env(r#"{"absoluteTimeout": "1h"}"#), "keys"),
        (
            "bad duration",
            with_env(r#"{"keysFromEnv": "TETHER_KEYS", "absoluteTimeout": "2 days"}"#),
            "absoluteTimeout",
        ),
        ("not JSON", with_env("keysFromEnv: TETHER_KEYS"), "(root)"),
        ("short secret", EnvoyConfig::shipped().keys_env(&format!("weak={SHORT_SECRET}")), "keysFromEnv"),
    ];
    for (case, config, field) in cases {
        let mut envoy = Envoy::spawn(config);
        let code = envoy.wait_exit(Duration::from_secs(30));
        let log = envoy.log();
        assert!(
            matches!(code, Some(c) if c != 0),
            "{case}: Envoy did not refuse the configuration (exit {code:?})\n{log}"
        );
        let named: Vec<&str> = log.lines().filter(|l| l.contains("invalid configuration")).collect();
        assert!(!named.is_empty(), "{case}: no configuration error logged\n{log}");
        assert!(
            named.iter().all(|l| l.contains(&format!("invalid configuration: `{field}`"))),
            "{case}: the error does not name `{field}`: {named:?}"
        );
        let refusal = if native() {
            "Failed to initialize dynamic module"
        } else {
            "Unable to create Wasm plugin tether"
        };
        assert!(log.contains(refusal), "{case}\n{log}");
        for secret in [SHORT_SECRET, DEMO_SECRET] {
            assert!(
                !log.contains(secret) && !log.contains(&decoded_secret(secret)),
                "{case}: a secret reached the log"
            );
        }
        println!("{case}: refused: {}", named[0].rsplit("tether: ").next().unwrap_or(named[0]));
    }
}

#[test]
fn secrets_never_appear_in_the_log() {
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    // A new session, nine hits on it, a refused token: the paths that sign and verify.
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    for _ in 0..9 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
    }
    let refused = envoy.get("/", &[("cookie", "tether=garbage")]);
    assert_eq!(refused.status, 200);
    assert!(refused.cookie_value().is_some(), "a refused token starts a new session");
    let log = envoy.log();
    assert!(log.contains("keys [demo] signing with `demo`"), "the start-up line names key ids\n{log}");
    assert!(!log.contains(DEMO_SECRET), "the signing secret (base64) reached Envoy's log");
    assert!(!log.contains(&decoded_secret(DEMO_SECRET)), "the signing secret (decoded) reached Envoy's log");
}

#[test]
fn cookie_attributes_follow_the_configuration() {
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods)).plugin_config(
        r#"{
  "keysFromEnv": "TETHER_KEYS",
  "absoluteTimeout": "2h",
  "cookie": { "name": "affinity", "path": "/app", "domain": "example.test", "secure": true,
              "httpOnly": false, "sameSite": "Strict", "lifetimeType": "Permanent" }
}"#,
    );
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let r = envoy.get("/app/x", &[]);
    let header =
        r.all("set-cookie").into_iter().find(|h| h.starts_with("affinity=")).expect("cookie named affinity");
    let (value, attributes) = header["affinity=".len()..].split_once(';').unwrap();
    let max_age: u64 = attributes
        .split("; ")
        .find_map(|a| a.trim().strip_prefix("Max-Age="))
        .and_then(|v| v.parse().ok())
        .expect("Permanent sets Max-Age");
    assert!((7190..=7200).contains(&max_age), "Max-Age {max_age} for a 2h absoluteTimeout");
    assert_eq!(
        attributes.replace(&format!("Max-Age={max_age}"), "Max-Age=N"),
        " Path=/app; Domain=example.test; Max-Age=N; Secure; SameSite=Strict"
    );
    let token = open_demo(value);
    assert_eq!(token.expires_at - token.issued_at, 7200);
    // The renamed cookie steers; a cookie under the default name is ignored.
    for _ in 0..5 {
        let again = envoy.get("/app/x", &[("cookie", &format!("tether=junk; affinity={value}"))]);
        assert_eq!((again.pod(), again.set_cookie()), (r.pod(), None));
        assert!(again.all("set-cookie").is_empty());
    }
    let other = pods.iter().find(|p| p.name != r.pod()).unwrap();
    let wrong_name =
        envoy.get("/app/x", &[("cookie", &format!("tether={}", demo_token(other.addr, [1; 16])))]);
    assert_eq!(wrong_name.header("x-seen-host"), Some("-"), "only the configured name is read");
}

#[test]
fn tokens_of_an_older_key_still_steer_and_are_re_signed() {
    const NEW: &str = "new=bmV3LXNpZ25pbmcta2V5LWZvci1yb3RhdGlvbi10ZXN0IQ==";
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods)).keys_env(&format!("{NEW},{DEMO_KEYS}"));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let rotated = tether::keyring::Keyring::parse(&format!("{NEW},{DEMO_KEYS}"), None).unwrap();
    let new_only = tether::keyring::Keyring::parse(NEW, None).unwrap();
    for pod in &pods {
        let old = demo_token(pod.addr, [6; 16]);
        let old_token = open_demo(&old);
        let r = envoy.get_with_cookie(Some(&old));
        assert_eq!(r.pod(), pod.name, "a token of the older key still steers");
        let fresh = r.cookie_value().expect("re-signed with the signing key");
        let verified = tether::token::open(fresh.as_bytes(), &new_only, DEMO_SCOPE, now(), DEMO_LIMITS)
            .expect("signed by `new`");
        assert_eq!(verified.token.session, old_token.session);
        assert_eq!(verified.token.owner, pod.addr);
        assert_eq!(verified.token.expires_at, old_token.expires_at, "re-signing keeps the absolute expiry");
        assert!(
            tether::token::open(fresh.as_bytes(), &rotated, DEMO_SCOPE, now(), DEMO_LIMITS)
                .unwrap()
                .signed_by_current_key
        );
        let again = envoy.get_with_cookie(Some(&fresh));
        assert_eq!((again.pod(), again.set_cookie()), (pod.name.as_str(), None));
    }
}
