//! The `tether` command's exit statuses (`tether_cli::run`, what `main` exits with): doctor 0/1/2 on files and an unreachable admin,
//! keygen entries the filter's key parser accepts, token inspect on good and bad tokens
//! (the filter's own `token::open`). Real-Envoy tests are in the workspace's tests/doctor.rs.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

fn tether(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = tether_cli::run(std::iter::once("tether").chain(args.iter().copied()), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = repo().join("target").join("cli-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}-{name}", std::process::id()));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn doctor_exit_status_is_0_clean_1_error_2_unreadable() {
    let shipped = repo().join("envoy/envoy.yaml");
    let (code, out, err) = tether(&["doctor", "--config", shipped.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("1 warning, 0 errors"), "{out}");

    let yaml = std::fs::read_to_string(&shipped).unwrap().replace("strict: false", "strict: true");
    let broken = scratch("strict.yaml", &yaml);
    let (code, out, _) = tether(&["doctor", "--config", broken.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.lines().any(|l| l.starts_with("error   strict ") && l.contains("route local/app/routes[0]")),
        "{out}"
    );

    let (code, out, _) = tether(&["doctor", "--json", "--config", broken.to_str().unwrap()]);
    assert_eq!(code, 1);
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["errors"], 1);

    for (input, why) in [
        (repo().join("envoy/no-such.yaml"), "cannot read"),
        (scratch("garbage.yaml", "listeners: [unclosed"), "not valid YAML"),
        (scratch("empty.yaml", "admin: {}\n"), "no listeners and no clusters"),
    ] {
        let (code, _, err) = tether(&["doctor", "--config", input.to_str().unwrap()]);
        assert_eq!(code, 2, "{}", input.display());
        assert!(err.contains(why), "{err}");
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, _, err) = tether(&["doctor", "--admin", &format!("127.0.0.1:{port}")]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read http://127.0.0.1:") && err.contains("refused"), "{err}");
    let (code, _, err) = tether(&["doctor"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn keygen_prints_an_entry_the_filter_accepts() {
    let (code, out, _) = tether(&["keygen", "k7"]);
    assert_eq!(code, 0);
    let entry = out.trim();
    let ring = Keyring::parse(entry, None).unwrap();
    assert_eq!(ring.key_ids(), ["k7"]);
    // The same as `keys` in a plugin configuration.
    let config = format!(r#"{{"keys":"{entry}"}}"#);
    assert!(tether::config::load(config.as_bytes(), &|_| None).is_ok());
    let (code, _, err) = tether(&["keygen", "not valid"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot be a key id"), "{err}");
}

const KEYS: &str =
    "k2=ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=,k1=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

#[test]
fn token_inspect_prints_claims_or_the_reason() {
    let ring = Keyring::parse(KEYS, None).unwrap();
    let owner: SocketAddr = "10.1.2.3:8080".parse().unwrap();
    let t = SessionToken {
        session: SessionId([7; 16]),
        owner: owner.into(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        cluster: "canary".into(),
        owner_away_since: None,
        app_id: None,
    };
    let good = token::seal(&t, ring.signing_key().unwrap(), "pods");
    let now = "1800000100";
    let (code, out, err) = tether(&[
        "token",
        "inspect",
        "--keys",
        KEYS,
        "--scope",
        "pods",
        "--now",
        now,
        &format!("tether={good}"),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "token:    valid (signed, key k2, the signing key)",
        "session:  07070707070707070707070707070707",
        "log name: d761d406 (accessLog's session field)",
        "owner:    10.1.2.3:8080",
        "cluster:  canary",
        "issued:   2027-01-15T08:00:00Z (1m40s ago)",
        "expires:  2027-01-15T09:00:00Z (in 58m20s)",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let tampered = {
        let mut t = good.clone().into_bytes();
        let i = t.len() - 3;
        t[i] = if t[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(t).unwrap()
    };
    let cases: Vec<(&str, &str, &str, &str)> = vec![
        (&good, "other", now, "refused: wrong_scope"),
        (&tampered, "pods", now, "refused: bad_signature"),
        (&good, "pods", "1800004000", "refused: expired"),
        ("AAAA", "pods", now, "refused: unknown_version"),
        ("AQ", "pods", now, "refused: malformed"),
    ];
    for (tok, scope, at, want) in cases {
        let (code, out, _) =
            tether(&["token", "inspect", "--keys", KEYS, "--scope", scope, "--now", at, tok]);
        assert_eq!(code, 1, "{scope} {at} {tok}\n{out}");
        assert!(out.contains(want), "{want}\n{out}");
    }
    let only_k1 = KEYS.split(',').nth(1).unwrap();
    let (code, out, _) =
        tether(&["token", "inspect", "--keys", only_k1, "--scope", "pods", "--now", now, &good]);
    assert_eq!(code, 1);
    assert!(
        out.contains("refused: unknown_key — signed by key `k2`, which is not among --keys (k1)"),
        "{out}"
    );
    let (code, _, err) = tether(&["token", "inspect", "--keys", "x", "--scope", "pods", &good]);
    assert_eq!(code, 2);
    assert!(err.contains("--keys"), "{err}");
}

#[test]
fn token_inspect_opens_an_envelope_and_names_the_apps_id() {
    let ring = Keyring::parse(KEYS, None).unwrap();
    let id = b"3f2a9c1e-77b0-4f1e-9d2a-0c5e8b1d2f40".to_vec();
    let t = SessionToken {
        session: SessionId::of_app_id(&id),
        owner: "10.1.2.3:8080".parse::<SocketAddr>().unwrap().into(),
        issued_at: 1_800_000_000,
        expires_at: 1_800_003_600,
        cluster: String::new(),
        owner_away_since: None,
        app_id: Some(id),
    };
    let envelope = token::seal(&t, ring.signing_key().unwrap(), "pods");
    let line = format!("Mcp-Session-Id: {envelope}");
    let inspect = |text: &str, at: &str| {
        tether(&["token", "inspect", "--keys", KEYS, "--scope", "pods", "--now", at, text])
    };
    let (code, out, err) = inspect(&line, "1800000100");
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "token:    valid (signed, key k2, the signing key)",
        "app id:   3f2a9c1e-77b0-4f1e-9d2a-0c5e8b1d2f40 (an envelope: the app's own session id)",
        "owner:    10.1.2.3:8080",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let (code, out, _) = inspect(&envelope, "1800004000");
    assert_eq!(code, 1);
    assert!(out.contains("refused: expired") && out.contains("passes it to the app unchanged"), "{out}");
}

#[test]
fn keygen_keys_run_the_filter_and_token_inspect_agrees_with_it() {
    let (_, entry, _) = tether(&["keygen", "fresh"]);
    let entry = entry.trim().to_string();
    let pods = common::Pod::start_many(2);
    let config = common::debug_config(&pods).keys_env(&entry);
    let envoy = common::Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let first = envoy.get("/", &[]);
    assert_eq!(first.header("x-tether"), Some("new"));
    let token = first.cookie_value().expect("the filter minted a token with the generated key");
    let owner = common::pod_by_name(&pods, first.pod()).addr;
    let (code, out, _) = tether(&["token", "inspect", "--keys", &entry, "--scope", "pods", &token]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("valid (signed, key fresh, the signing key)")
            && out.contains(&format!("owner:    {owner}")),
        "{out}"
    );
    // A tampered token, another key, another scope: the filter's reason and inspect's agree.
    let mut tampered = token.clone().into_bytes();
    let i = tampered.len() - 2;
    tampered[i] = if tampered[i] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let other_key = common::scoped_token(owner, [9; 16], "pods", "");
    let other_scope = {
        let ring = Keyring::parse(&entry, None).unwrap();
        let t = SessionToken {
            session: SessionId([3; 16]),
            owner: owner.into(),
            issued_at: common::now(),
            expires_at: common::now() + 60,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        };
        token::seal(&t, ring.signing_key().unwrap(), "elsewhere")
    };
    for (tok, reason) in [
        (&token, None),
        (&tampered, Some("bad_signature")),
        (&other_key, Some("unknown_key")),
        (&other_scope, Some("wrong_scope")),
    ] {
        let filter = envoy.get_with_cookie(Some(tok));
        let (code, out, _) = tether(&["token", "inspect", "--keys", &entry, "--scope", "pods", tok]);
        match reason {
            None => {
                assert_eq!(filter.header("x-tether"), Some("hit"));
                assert_eq!(code, 0, "{out}");
            }
            Some(reason) => {
                assert_eq!(
                    filter.header("x-tether"),
                    Some(format!("invalid:{reason}").as_str()),
                    "filter on {tok}"
                );
                assert_eq!(code, 1, "{out}");
                assert!(out.contains(&format!("refused: {reason}")), "{out}");
            }
        }
    }
}
