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
        ("bad sameSite", with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookie": {"sameSite": "Sometimes"}}"#), "cookie.sameSite"),
        ("unknown field", with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookieName": "x"}"#), "cookieName"),
        ("header injection in cookie name", with_env(r#"{"keysFromEnv": "TETHER_KEYS", "cookie": {"name": "a\r\nx-evil: 1"}}"#), "cookie.name"),
        ("missing env variable", with_env(r#"{"keysFromEnv": "NOT_SET_ANYWHERE"}"#), "keysFromEnv"),
        ("no keys at all", with_env(r#"{"absoluteTimeout": "1h"}"#), "keys"),
        ("bad duration", with_env(r#"{"keysFromEnv": "TETHER_KEYS", "absoluteTimeout": "2 days"}"#), "absoluteTimeout"),
        ("not JSON", with_env("keysFromEnv: TETHER_KEYS"), "(root)"),
        ("short secret", EnvoyConfig::shipped().keys_env(&format!("weak={SHORT_SECRET}")), "keysFromEnv"),
    ];
    for (case, config, field) in cases {
        let mut envoy = Envoy::spawn(config);
        let code = envoy.wait_exit(Duration::from_secs(30));
        let log = envoy.log();
        assert!(matches!(code, Some(c) if c != 0), "{case}: Envoy did not refuse the configuration (exit {code:?})\n{log}");
        let named: Vec<&str> = log.lines().filter(|l| l.contains("invalid configuration")).collect();
        assert!(!named.is_empty(), "{case}: no configuration error logged\n{log}");
        assert!(
            named.iter().all(|l| l.contains(&format!("invalid configuration: `{field}`"))),
            "{case}: the error does not name `{field}`: {named:?}"
        );
        assert!(log.contains("Unable to create Wasm plugin tether"), "{case}\n{log}");
        assert!(!log.contains(SHORT_SECRET) && !log.contains(DEMO_SECRET), "{case}: a secret reached the log");
        println!("{case}: refused: {}", named[0].rsplit("tether: ").next().unwrap_or(named[0]));
    }
}

#[test]
fn secrets_never_appear_in_the_log() {
    let pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let mut cookie = None;
    for _ in 0..10 {
        let r = envoy.get_with_cookie(cookie.as_deref());
        cookie = r.cookie_value().or(cookie);
    }
    let _ = envoy.get("/", &[("cookie", "tether=garbage")]);
    let log = envoy.log();
    assert!(log.contains("keys [demo] signing with `demo`"), "the start-up line names key ids\n{log}");
    assert!(!log.contains(DEMO_SECRET), "the signing secret reached Envoy's log");
}
