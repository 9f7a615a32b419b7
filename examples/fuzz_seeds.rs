//! Writes seed inputs for the fuzz targets into fuzz/corpus/ (run once; the corpus is kept).
use tether::keyring::Keyring;
use tether::token::{self, SessionId, SessionToken};

fn main() {
    let keys = Keyring::parse("a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=", None).unwrap();
    let key = keys.signing_key().unwrap();
    let now = 1_800_000_000;
    let dir = std::path::Path::new("fuzz/corpus");
    for (i, (owner, cluster)) in [("10.0.0.1:8080", ""), ("[fd00::7]:443", "canary")].iter().enumerate() {
        let t = SessionToken {
            session: SessionId([i as u8; 16]),
            owner: owner.parse().unwrap(),
            issued_at: now - 10,
            expires_at: now + 600,
            cluster: cluster.to_string(),
            owner_away_since: None,
            app_id: None,
        };
        let signed = token::seal(&t, key, "pods");
        let hidden = token::seal_encrypted(&t, key, "pods", [i as u8; token::NONCE_LEN]).unwrap();
        for (name, text) in [("signed", &signed), ("encrypted", &hidden)] {
            std::fs::create_dir_all(dir.join("token_open")).unwrap();
            std::fs::write(dir.join("token_open").join(format!("{name}-{i}")), text).unwrap();
            std::fs::create_dir_all(dir.join("cookie_header")).unwrap();
            // The target splits its input at the byte 0xff (not the character U+00FF).
            let header =
                [text.as_bytes(), b"\xffa=1; tether=\"", text.as_bytes(), b"\"; b=2\xfftether=junk"].concat();
            std::fs::write(dir.join("cookie_header").join(format!("{name}-{i}")), header).unwrap();
        }
        // A session whose owner has been missed for 20 s (repinAfter).
        let away = SessionToken { owner_away_since: Some(now - 20), ..t };
        std::fs::write(dir.join("token_open").join(format!("away-{i}")), token::seal(&away, key, "pods"))
            .unwrap();
    }
    std::fs::write(dir.join("cookie_header").join("away-marker"), b"\x00@A\xfftether=@A; tether=@S").unwrap();
    let ambient = SessionToken {
        session: SessionId([9; 16]),
        owner: "envoy://connect_originate/10.0.0.5:8080".parse().unwrap(),
        issued_at: now - 10,
        expires_at: now + 3600,
        cluster: String::new(),
        owner_away_since: None,
        app_id: None,
    };
    std::fs::write(dir.join("token_open").join("internal-listener"), token::seal(&ambient, key, "pods"))
        .unwrap();
    // An envelope (learn mode) around an MCP session id.
    let app_id = b"3f2a9c1e-77b0-4f1e-9d2a-0c5e8b1d2f40".to_vec();
    let envelope =
        SessionToken { session: SessionId::of_app_id(&app_id), app_id: Some(app_id), ..ambient.clone() };
    std::fs::write(dir.join("token_open").join("envelope"), token::seal(&envelope, key, "pods")).unwrap();
    // An owner behind Istio ambient's internal listener, served in both forms.
    for (name, control) in [("internal-marker", 0u8), ("internal-marker-served-internal", 4)] {
        std::fs::write(dir.join("cookie_header").join(name), [&[control][..], b"@I\xfftether=@I"].concat())
            .unwrap();
    }
    std::fs::create_dir_all(dir.join("config_load")).unwrap();
    let configs = [
        r#"{"keys":"k=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE="}"#,
        r#"{"keysFromEnv":"K","type":"CookieAndHeader","header":{"name":"x-s"},"idleTimeout":"10m","absoluteTimeout":"1h30m","tokenFormat":"Encrypted","scope":"svc","clusterHeader":"x-c","debugHeader":"x-d","cookie":{"name":"sid","path":"/a","domain":"example.com","secure":true,"httpOnly":false,"sameSite":"None","lifetimeType":"Permanent"}}"#,
        r#"{"keysFromEnv":"K","cookie":{"sameSite":"Strict"},"signingKeyId":"k"}"#,
        r#"{"keysFromEnv":"K","repinAfter":"1m30s"}"#,
        r#"{"keysFromEnv":"K","learn":{"header":"mcp-session-id"},"tokenFormat":"Encrypted"}"#,
        r#"{"keysFromEnv":"K","learn":{"cookie":"JSESSIONID"},"hostCookie":"o"}"#,
    ];
    for (i, c) in configs.iter().enumerate() {
        std::fs::write(dir.join("config_load").join(format!("seed-{i}")), c).unwrap();
    }
}
