//! Any bytes as a token header and Cookie headers, through the request decision and the
//! response path, in both token formats. Oracles:
//! - a pinned session comes from a presented value that verifies (the first one that does,
//!   header before cookies), and steers to that token's owner; a new session means no
//!   presented value verifies, and names the last value's refusal;
//! - the response outcome and token follow the rules (new / re-pinned / refreshed / hit /
//!   owner away until `repinAfter` has passed since the first miss, session and absolute
//!   expiry kept), the sealed token opens to exactly that token, the
//!   Set-Cookie line carries it with no CR, LF or NUL, the debug label names the refusal.
//!
//! Input: byte 0 picks the format and the serving pod; the rest is split at 0xff into the
//! token header and Cookie headers. In them `@S`, `@E`, `@B`, `@X`, `@A`, `@I` become a valid
//! signed token, a valid encrypted one, one sealed by the older key, an expired one, one
//! whose owner has been missed since it was issued, and one whose owner sits behind an Envoy
//! internal listener (so the fuzzer reaches the pinned paths without forging an HMAC). The
//! serving pod may be the first pod reached in the other form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::address::Owner;
use tether::address::override_host_value;
use tether::config::{self, Settings};
use tether::session::{self, Affinity, Carrier, Outcome, Served};
use tether::token::{self, SessionId, SessionToken};

const NOW: u64 = 1_800_000_000;
const SCOPE: &str = "pods";
const KEYS: &str =
    "a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=,b=dGV0aGVyLWZ1enota2V5LXR3by0zMi1ieXRlcy1sb25nISE=";
const FRESH: SessionId = SessionId([1; 16]);
/// The third is the first pod reached through an Envoy internal listener (Istio ambient).
const PODS: [&str; 3] = ["10.0.0.1:8080", "[fd00::2]:8443", "envoy://connect_originate/10.0.0.1:8080"];
const REPIN_AFTER: u64 = 300;

fn settings(format: &str) -> Settings {
    let json = format!(
        r#"{{"keys":"{KEYS}","type":"CookieAndHeader","tokenFormat":"{format}","absoluteTimeout":"1h","idleTimeout":"30m","repinAfter":"5m"}}"#
    );
    config::load(json.as_bytes(), &|_| None).unwrap()
}

fn claims(owner: &str, session: u8, issued_at: u64) -> SessionToken {
    SessionToken {
        session: SessionId([session; 16]),
        owner: owner.parse().unwrap(),
        issued_at,
        expires_at: issued_at + 3000,
        cluster: String::new(),
        owner_away_since: None,
        app_id: None,
    }
}

/// Replaces the `@S`/`@E`/`@B`/`@X`/`@A`/`@I` markers with real tokens.
fn expand(part: &[u8], keys: &tether::keyring::Keyring) -> Vec<u8> {
    let a = keys.signing_key().unwrap();
    let b = keys.find(b"b").unwrap().0;
    let mut out = Vec::with_capacity(part.len());
    let mut i = 0;
    while i < part.len() {
        let marker = (part[i] == b'@').then(|| part.get(i + 1).copied()).flatten();
        let sealed = match marker {
            Some(b'S') => Some(token::seal(&claims(PODS[0], 2, NOW - 10), a, SCOPE)),
            Some(b'E') => token::seal_encrypted(&claims(PODS[1], 3, NOW - 20), a, SCOPE, [7; 24]),
            Some(b'B') => Some(token::seal(&claims(PODS[0], 4, NOW - 30), b, SCOPE)),
            Some(b'X') => Some(token::seal(&claims(PODS[1], 5, NOW - 4000), a, SCOPE)),
            Some(b'I') => Some(token::seal(&claims(PODS[2], 7, NOW - 50), a, SCOPE)),
            Some(b'A') => {
                let away = SessionToken { owner_away_since: Some(NOW - 40), ..claims(PODS[1], 6, NOW - 40) };
                Some(token::seal(&away, a, SCOPE))
            }
            _ => None,
        };
        match sealed {
            Some(t) => {
                out.extend_from_slice(t.as_bytes());
                i += 2;
            }
            None => {
                out.push(part[i]);
                i += 1;
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, rest)) = data.split_first() else { return };
    // The request's wall-clock second: up to 31.5 min after the marker tokens were issued,
    // across their idle refresh point (15 min) and idle expiry (30 min).
    let now = NOW + u64::from(control >> 2) * 30;
    let settings = settings(if control & 1 == 0 { "Signed" } else { "Encrypted" });
    let limits = settings.limits();
    let mut parts = rest.split(|&b| b == 0xff).map(|p| expand(p, &settings.keyring));
    let header = parts.next();
    let cookies: Vec<Vec<u8>> = parts.collect();
    let _ = tether::cookie::values_named(rest, b"tether").count();

    let affinity =
        session::resolve(header.as_deref(), cookies.iter().map(Vec::as_slice), SCOPE, &settings, now, || {
            Some(FRESH)
        })
        .expect("a fresh id is always available here");

    // The presented values, in the order tether must try them.
    let mut presented: Vec<(&[u8], Carrier)> =
        header.iter().map(|h| (h.as_slice(), Carrier::Header)).collect();
    for c in &cookies {
        presented.extend(tether::cookie::values_named(c, b"tether").map(|v| (v, Carrier::Cookie)));
    }
    // tether verifies each distinct value once, and at most MAX_CANDIDATES of them (#15):
    // a valid token behind that many refused values is not seen.
    let mut distinct: Vec<(&[u8], Carrier)> = Vec::new();
    for (v, carrier) in presented {
        if !distinct.iter().any(|(d, _)| *d == v) {
            distinct.push((v, carrier));
        }
    }
    distinct.truncate(session::MAX_CANDIDATES);
    let presented = distinct;
    let first_valid = presented.iter().find_map(|(v, carrier)| {
        token::open(v, &settings.keyring, SCOPE, now, limits).ok().map(|verified| (verified, *carrier))
    });
    match (&affinity, &first_valid) {
        (Affinity::Pinned { token, current, carrier }, Some((verified, first_carrier))) => {
            assert_eq!(token, &verified.token, "pinned to a token other than the first valid one");
            assert_eq!(carrier, first_carrier);
            assert_eq!(*current, verified.signed_by_current_key && verified.format == settings.format);
        }
        (Affinity::New { session, rejected }, None) => {
            assert_eq!(*session, FRESH);
            let last = presented
                .last()
                .map(|(v, _)| token::open(v, &settings.keyring, SCOPE, now, limits).unwrap_err());
            assert_eq!(*rejected, last, "the refusal named is not the last presented value's");
        }
        _ => panic!("resolve gave {affinity:?}; the first presented value that verifies is {first_valid:?}"),
    }
    let steering = session::steering(&affinity, &settings);
    assert_eq!(steering.hash_key, affinity.session().to_hex());
    match &affinity {
        Affinity::Pinned { token, .. } => {
            assert_eq!(steering.override_host, Some(override_host_value(&token.owner)))
        }
        Affinity::New { .. } => assert_eq!(steering.override_host, None),
    }

    // The response (same second, as in the filter), served by one of the pods, maybe not the owner.
    let by: Owner = PODS[usize::from(control >> 1 & 3) % PODS.len()].parse().unwrap();
    let served = Served { by: by.clone(), cluster: "pods".into() };
    let (outcome, minted) = session::respond(&affinity, &served, now, &settings);
    let want = match &affinity {
        Affinity::New { session, .. } => (
            Outcome::New,
            Some(SessionToken {
                session: *session,
                owner: by.clone(),
                issued_at: now,
                expires_at: now + 3600,
                cluster: String::new(),
                owner_away_since: None,
                app_id: None,
            }),
        ),
        Affinity::Pinned { token, current, .. } => {
            let due = !current || now.saturating_sub(token.issued_at) >= 900;
            let signed = |owner, away| SessionToken { owner, issued_at: now, owner_away_since: away, ..token.clone() };
            let since = token.owner_away_since.unwrap_or(now);
            if token.owner.addr == by.addr {
                // The same pod in another form is re-signed with the form that served.
                match token.owner_away_since.is_some() || due || token.owner != by {
                    true => (Outcome::Refreshed, Some(signed(by.clone(), None))),
                    false => (Outcome::Hit, None),
                }
            } else if now - since >= REPIN_AFTER {
                (Outcome::Repinned, Some(signed(by.clone(), None)))
            } else {
                let send = token.owner_away_since.is_none() || due;
                (Outcome::OwnerAway, send.then(|| signed(token.owner.clone(), Some(since))))
            }
        }
    };
    assert_eq!((outcome, &minted), (want.0, &want.1));
    let label = session::debug_label(&affinity, outcome);
    match &affinity {
        Affinity::New { rejected: Some(r), .. } => assert_eq!(label, format!("invalid:{}", r.as_str())),
        _ => assert_eq!(label, outcome.as_str()),
    }
    if let Some(minted) = minted {
        let sealed = session::seal(&minted, SCOPE, &settings, || Some([control; 24])).expect("sealed");
        let reopened =
            token::open(sealed.as_bytes(), &settings.keyring, SCOPE, now, limits).expect("reopens");
        assert_eq!(reopened.token, minted);
        assert!(reopened.signed_by_current_key && reopened.format == settings.format);
        let cookie = session::set_cookie(&sealed, &minted, now, &settings).expect("a cookie is configured");
        assert!(cookie.starts_with(&format!("tether={sealed}; ")), "{cookie}");
        assert!(!cookie.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0), "{cookie:?}");
        assert_eq!(
            session::carriers(&affinity, &settings),
            match &affinity {
                Affinity::New { .. } => (true, true),
                Affinity::Pinned { carrier: Carrier::Cookie, .. } => (true, false),
                Affinity::Pinned { carrier: Carrier::Header, .. } => (false, true),
            }
        );
    }
});
