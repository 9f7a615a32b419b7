//! Learn mode through [`Stream`] with a fake Envoy, for both hosts: what the client, the
//! app and Envoy each get.

use super::tests::{exchange, header, request, response_values, Fake, KEYS, NOW};
use super::*;
use crate::token::{self, Limits};

const MCP: &str = "mcp-session-id";
const APP_ID: &str = "3f2a9c1e-77b0-4f1e-9d2a-0c5e8b1d2f40";

fn learning(extra: &str, via: OwnerVia) -> Filter {
    let json = format!(r#"{{"keys":"{KEYS}","debugHeader":"x-tether","absoluteTimeout":"1h"{extra}}}"#);
    Filter::load(json.as_bytes(), &|_| None, via).unwrap()
}

fn mcp(via: OwnerVia) -> Filter {
    learning(r#","learn":{"header":"mcp-session-id"}"#, via)
}

fn jsessionid(extra: &str, via: OwnerVia) -> Filter {
    learning(&format!(r#","learn":{{"cookie":"JSESSIONID"}}{extra}"#), via)
}

fn via(direct: bool) -> OwnerVia {
    if direct {
        OwnerVia::OverrideHost
    } else {
        OwnerVia::SessionFilter
    }
}

fn open(f: &Filter, text: &str) -> Result<token::SessionToken, token::Rejection> {
    let limits = Limits { envelopes: true, ..f.settings.limits() };
    token::open(text.as_bytes(), &f.settings.keyring, "pods", NOW, limits).map(|v| v.token)
}

fn envelope_for(f: &Filter, id: &str, owner: &str) -> String {
    let t = token::SessionToken {
        session: SessionId::of_app_id(id.as_bytes()),
        owner: owner.parse().unwrap(),
        issued_at: NOW - 10,
        expires_at: NOW + 600,
        cluster: String::new(),
        owner_away_since: None,
        app_id: Some(id.as_bytes().to_vec()),
    };
    token::seal(&t, f.settings.keyring.signing_key().unwrap(), "pods")
}

/// The owner as the request presents it: Envoy's override host, or the session filter's header.
fn steered_to<const D: bool>(host: &Fake<D>) -> Option<String> {
    if D {
        host.override_host.as_ref().map(|o| o.addr.to_string())
    } else {
        header(host, "x-tether-host")
    }
}

fn check_mcp_session<const D: bool>() {
    let f = mcp(via(D));
    // initialize: no id yet, so the request is balanced as usual and nothing is minted.
    let host: Fake<D> =
        exchange(&f, &[("x-tether-key", "client's")], "10.0.0.2:8080", true, &[(MCP, APP_ID)]);
    assert_eq!((header(&host, "x-tether-key"), steered_to(&host)), (None, None));
    let sent = response_values(&host, MCP);
    assert_eq!(sent.len(), 1);
    assert_ne!(sent[0], APP_ID, "the client never holds the app's raw id");
    let t = open(&f, &sent[0]).unwrap();
    assert_eq!(
        (t.app_id.as_deref(), t.owner.addr.to_string()),
        (Some(APP_ID.as_bytes()), "10.0.0.2:8080".into())
    );
    assert_eq!(t.expires_at, NOW + 3600);
    assert_eq!(host.counted, vec![Counter::Minted]);
    assert_eq!(response_values(&host, "x-tether"), ["new"]);
    assert_eq!(response_values(&host, "cache-control"), ["private"]);

    // A tool call: the app gets its own id back, the owner is steered to, the key is the
    // hash of the app's id; the app repeats its id and the same envelope goes back.
    let host: Fake<D> = exchange(&f, &[(MCP, &sent[0])], "10.0.0.2:8080", true, &[(MCP, APP_ID)]);
    assert_eq!(header(&host, MCP).as_deref(), Some(APP_ID));
    let owner = if D { "10.0.0.2:8080".to_string() } else { crate::address::override_host_value(&t.owner) };
    assert_eq!(steered_to(&host), Some(owner));
    assert_eq!(header(&host, "x-tether-key"), Some(SessionId::of_app_id(APP_ID.as_bytes()).to_hex()));
    assert_eq!(response_values(&host, MCP), sent, "a hit sends the envelope the client has");
    assert_eq!(host.counted, vec![Counter::Hits]);

    // The GET stream's answer carries no id: nothing is sent, still a hit.
    let host: Fake<D> = exchange(&f, &[(MCP, &sent[0])], "10.0.0.2:8080", true, &[]);
    assert_eq!((response_values(&host, MCP).len(), host.counted.clone()), (0, vec![Counter::Hits]));

    // The owner is gone: the hash's pick answers (MCP: 404, no id) and the envelope stays;
    // the client re-initializes and the new id is wrapped naming the pod that issued it.
    let host: Fake<D> = exchange(&f, &[(MCP, &sent[0])], "10.0.0.3:8080", true, &[]);
    assert_eq!(response_values(&host, "x-tether"), ["owner-away"]);
    assert!(response_values(&host, MCP).is_empty());
    let host: Fake<D> = exchange(&f, &[], "10.0.0.3:8080", true, &[(MCP, "second-id")]);
    let t = open(&f, &response_values(&host, MCP)[0]).unwrap();
    assert_eq!(
        (t.app_id.as_deref(), t.owner.addr.to_string()),
        (Some(b"second-id".as_slice()), "10.0.0.3:8080".into())
    );
}

#[test]
fn an_mcp_session_is_wrapped_unwrapped_and_steered_by_both_hosts() {
    check_mcp_session::<false>();
    check_mcp_session::<true>();
}

fn check_invalid<const D: bool>() {
    let f = mcp(via(D));
    let other_keys = learning(
        r#","keys":"k9=ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=","learn":{"header":"mcp-session-id"}"#,
        via(D),
    );
    let forged = envelope_for(&other_keys, APP_ID, "10.0.0.9:1");
    let cookie_token = super::tests::token_for("10.0.0.9:1", &f);
    for value in [APP_ID, forged.as_str(), cookie_token.as_str(), "!!"] {
        let mut host: Fake<D> = request(&[(MCP, value), ("x-tether-host", "MTAuMC4wLjk6MQ==")]);
        assert_eq!(Stream::default().on_request(&mut host, &f), Verdict::Continue);
        // Never steers, reaches the app as the client sent it, and is counted.
        assert_eq!((steered_to(&host), header(&host, "x-tether-key")), (None, None), "{value}");
        assert_eq!(header(&host, MCP).as_deref(), Some(value));
        assert!(matches!(host.counted.as_slice(), [Counter::Invalid(_)]), "{value}: {:?}", host.counted);
    }
}

#[test]
fn a_value_that_is_not_a_valid_envelope_never_steers_and_reaches_the_app_unchanged() {
    check_invalid::<false>();
    check_invalid::<true>();
}

#[test]
fn an_envelope_and_a_session_cookie_never_pass_for_each_other() {
    let f = mcp(OwnerVia::SessionFilter);
    let session = jsessionid("", OwnerVia::SessionFilter);
    // An envelope is no tether cookie, and a tether cookie is no envelope.
    let plain = learning("", OwnerVia::SessionFilter);
    let envelope = envelope_for(&f, APP_ID, "10.0.0.2:8080");
    let cookie = format!("tether={envelope}");
    let host: Fake<false> = exchange(&plain, &[("cookie", &cookie)], "10.0.0.3:1", true, &[]);
    assert!(
        matches!(host.counted.first(), Some(Counter::Invalid(token::Rejection::Malformed))),
        "{:?}",
        host.counted
    );
    let host: Fake<false> = exchange(
        &session,
        &[("cookie", &format!("JSESSIONID={}", super::tests::token_for("10.0.0.2:1", &f)))],
        "10.0.0.3:1",
        true,
        &[],
    );
    assert!(
        matches!(host.counted.first(), Some(Counter::Invalid(token::Rejection::Malformed))),
        "{:?}",
        host.counted
    );
}

fn check_jsessionid<const D: bool>() {
    let f = jsessionid("", via(D));
    let issued = [
        ("set-cookie", "theme=dark; Path=/"),
        ("set-cookie", "JSESSIONID=8C3F0A1B2D; Path=/app; HttpOnly; SameSite=Lax"),
    ];
    let host: Fake<D> = exchange(&f, &[("cookie", "theme=dark")], "10.0.0.2:8080", true, &issued);
    let set = response_values(&host, "set-cookie");
    assert_eq!(set[0], "theme=dark; Path=/");
    let (value, attributes) = set[1].strip_prefix("JSESSIONID=").unwrap().split_once(';').unwrap();
    assert_eq!(attributes, " Path=/app; HttpOnly; SameSite=Lax", "the app's attributes are kept");
    let t = open(&f, value).unwrap();
    assert_eq!(t.app_id.as_deref(), Some(b"8C3F0A1B2D".as_slice()));

    // The browser sends it back among other cookies: only its value changes.
    let cookie = format!("theme=dark; JSESSIONID={value}; other=1");
    let host: Fake<D> = exchange(&f, &[("cookie", &cookie)], "10.0.0.2:8080", true, &[]);
    assert_eq!(header(&host, "cookie").as_deref(), Some("theme=dark; JSESSIONID=8C3F0A1B2D; other=1"));
    assert_eq!(host.counted, vec![Counter::Hits]);
    assert!(response_values(&host, "set-cookie").is_empty());

    // A deletion passes untouched; a new id replaces the envelope.
    let host: Fake<D> = exchange(
        &f,
        &[("cookie", &cookie)],
        "10.0.0.2:8080",
        true,
        &[("set-cookie", "JSESSIONID=; Max-Age=0; Path=/app")],
    );
    assert_eq!(response_values(&host, "set-cookie"), ["JSESSIONID=; Max-Age=0; Path=/app"]);
    let host: Fake<D> = exchange(
        &f,
        &[("cookie", &cookie)],
        "10.0.0.3:8080",
        true,
        &[("set-cookie", "JSESSIONID=NEW1; Path=/app")],
    );
    let set = response_values(&host, "set-cookie");
    let t = open(&f, set[0].strip_prefix("JSESSIONID=").unwrap().split(';').next().unwrap()).unwrap();
    assert_eq!(
        (t.app_id.as_deref(), t.owner.addr.to_string()),
        (Some(b"NEW1".as_slice()), "10.0.0.3:8080".into())
    );
    assert_eq!(host.counted, vec![Counter::Minted]);
}

#[test]
fn a_jsessionid_cookie_keeps_its_attributes_and_every_other_cookie() {
    check_jsessionid::<false>();
    check_jsessionid::<true>();
}

/// Istio's cookie mode: the owner travels in a cookie too, beside the app's.
#[test]
fn with_an_owner_cookie_both_cookies_are_rewritten_in_one_header() {
    let f = jsessionid(r#","hostCookie":"tether-owner""#, OwnerVia::SessionFilter);
    let value = envelope_for(&f, "ABC", "10.0.0.2:8080");
    let cookie = format!("JSESSIONID={value}; tether-owner=client-chosen; a=1");
    let host: Fake<false> = exchange(&f, &[("cookie", &cookie)], "10.0.0.2:8080", true, &[]);
    let sent = header(&host, "cookie").unwrap();
    assert!(sent.contains("JSESSIONID=ABC") && sent.contains("a=1"), "{sent}");
    assert!(sent.contains("tether-owner=Cg0xMC4wLjAuMjo4MDgw") && !sent.contains("client-chosen"), "{sent}");
}

#[test]
fn an_id_an_envelope_cannot_carry_reaches_the_client_as_sent_and_is_counted() {
    let f = mcp(OwnerVia::OverrideHost);
    let long = "x".repeat(token::MAX_APP_ID_LEN + 1);
    let host: Fake<true> = exchange(&f, &[], "10.0.0.2:8080", true, &[(MCP, &long)]);
    assert_eq!(response_values(&host, MCP), [long]);
    assert_eq!(host.counted, vec![Counter::AppIdNotWrapped]);
    // The longest id that fits is wrapped.
    let longest = "y".repeat(token::MAX_APP_ID_LEN);
    let host: Fake<true> = exchange(&f, &[], "10.0.0.2:8080", true, &[(MCP, &longest)]);
    let sent = &response_values(&host, MCP)[0];
    assert!(sent.len() <= token::MAX_ENVELOPE_TEXT, "{}", sent.len());
    assert_eq!(open(&f, sent).unwrap().app_id, Some(longest.into_bytes()));
}

#[test]
fn an_id_in_an_envoy_reply_is_never_wrapped() {
    let f = mcp(OwnerVia::OverrideHost);
    let host: Fake<true> = exchange(&f, &[], "10.0.0.2:8080", false, &[(MCP, APP_ID)]);
    assert_eq!(response_values(&host, "x-tether"), ["local-reply"]);
    assert!(host.counted.is_empty());
}

#[test]
fn the_start_up_line_names_the_apps_carrier() {
    let line = mcp(OwnerVia::OverrideHost).describe();
    assert!(
        line.starts_with("configured: envelopes of the app's session id in header `mcp-session-id` (learn)"),
        "{line}"
    );
    let line = jsessionid("", OwnerVia::SessionFilter).describe();
    assert!(line.contains("in cookie `JSESSIONID` (learn)"), "{line}");
}
