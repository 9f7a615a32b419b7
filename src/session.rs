//! The routing decision, free of any host call: which session a request belongs to,
//! which headers steer it, and which token (if any) the response must carry.

use crate::address::override_host_value;
use crate::config::Settings;
use crate::cookie;
use crate::token::{self, Rejection, SessionId, SessionToken};
use std::net::SocketAddr;

/// What the request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// A token that verified: steer to its owner.
    Pinned { token: SessionToken, signed_by_current_key: bool },
    /// No usable token: a new session, placed by the cluster's hash of its id.
    /// `rejected` is why the last token of our name was refused, if there was one.
    New { session: SessionId, rejected: Option<Rejection> },
}

impl Affinity {
    pub fn session(&self) -> SessionId {
        match self {
            Affinity::Pinned { token, .. } => token.session,
            Affinity::New { session, .. } => *session,
        }
    }
}

/// Finds the first valid token of our cookie name across all `Cookie` header values.
/// `fresh_id` is called only when a new session is needed.
pub fn resolve<'a>(
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    settings: &Settings,
    now: u64,
    fresh_id: impl FnOnce() -> Option<SessionId>,
) -> Option<Affinity> {
    let name = settings.cookie.name.as_bytes();
    let mut rejected = None;
    for header in cookie_headers {
        for value in cookie::values_named(header, name) {
            match token::open(value, &settings.keyring, now, settings.absolute_timeout_secs) {
                Ok(verified) => {
                    return Some(Affinity::Pinned {
                        token: verified.token,
                        signed_by_current_key: verified.signed_by_current_key,
                    })
                }
                Err(reason) => rejected = Some(reason),
            }
        }
    }
    fresh_id().map(|session| Affinity::New { session, rejected })
}

/// Request headers to set: the override host (only for a pinned session) and the hash key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    pub override_host: Option<String>,
    pub hash_key: String,
}

pub fn steering(affinity: &Affinity) -> Steering {
    match affinity {
        Affinity::Pinned { token, .. } => Steering {
            override_host: Some(override_host_value(&token.owner)),
            hash_key: token.session.to_hex(),
        },
        Affinity::New { session, .. } => Steering { override_host: None, hash_key: session.to_hex() },
    }
}

/// The token the response must set, or `None` when the client's cookie is still right.
/// Call only for responses that came from an upstream (`via_upstream`), with the address
/// that served them.
pub fn token_to_send(
    affinity: &Affinity,
    served_by: SocketAddr,
    now: u64,
    settings: &Settings,
) -> Option<SessionToken> {
    match affinity {
        Affinity::New { session, .. } => Some(SessionToken {
            session: *session,
            owner: served_by,
            issued_at: now,
            expires_at: now.saturating_add(settings.absolute_timeout_secs),
        }),
        Affinity::Pinned { token, signed_by_current_key } => {
            if token.owner == served_by && *signed_by_current_key {
                None
            } else {
                // Re-pin (or re-sign): same session id and the same absolute expiry.
                Some(SessionToken { owner: served_by, issued_at: now, ..token.clone() })
            }
        }
    }
}

/// The `Set-Cookie` value carrying `token`, signed with the current key.
pub fn set_cookie(token: &SessionToken, now: u64, settings: &Settings) -> Option<String> {
    let key = settings.keyring.signing_key()?;
    let text = token::seal(token, key);
    Some(settings.cookie.render(&text, token.expires_at.saturating_sub(now)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::keyring::Keyring;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    const NOW: u64 = 1_790_000_000;

    fn settings(keys: &str) -> Settings {
        config::load(format!(r#"{{"keys":"{keys}","absoluteTimeout":"1h"}}"#).as_bytes(), &|_| None).unwrap()
    }

    fn token(owner: &str) -> SessionToken {
        SessionToken {
            session: SessionId([7; 16]),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 5,
            expires_at: NOW + 600,
        }
    }

    fn cookie_for(t: &SessionToken, s: &Settings) -> String {
        format!("tether={}", token::seal(t, s.keyring.signing_key().unwrap()))
    }

    const FRESH: SessionId = SessionId([9; 16]);

    #[test]
    fn valid_cookie_pins_and_steers() {
        let s = settings(&format!("k1={K1}"));
        let t = token("10.0.0.2:8080");
        let header = format!("a=b; {}", cookie_for(&t, &s));
        let affinity = resolve([header.as_bytes()], &s, NOW, || Some(FRESH)).unwrap();
        assert_eq!(affinity, Affinity::Pinned { token: t.clone(), signed_by_current_key: true });
        let steer = steering(&affinity);
        assert_eq!(steer.override_host.as_deref(), Some("MTAuMC4wLjI6ODA4MA=="));
        assert_eq!(steer.hash_key, "07".repeat(16));
        // Same owner, current key: nothing to send.
        assert_eq!(token_to_send(&affinity, t.owner, NOW, &s), None);
    }

    #[test]
    fn first_valid_token_wins_across_headers() {
        let s = settings(&format!("k1={K1}"));
        let t = token("10.0.0.2:8080");
        let other = SessionToken { owner: "10.0.0.3:8080".parse().unwrap(), ..token("10.0.0.3:8080") };
        let second = cookie_for(&other, &s);
        let headers = ["tether=garbage; x=1".to_string(), cookie_for(&t, &s), second];
        let affinity = resolve(headers.iter().map(|h| h.as_bytes()), &s, NOW, || None).unwrap();
        assert_eq!(affinity, Affinity::Pinned { token: t, signed_by_current_key: true });
    }

    #[test]
    fn missing_or_bad_tokens_start_new_sessions() {
        let s = settings(&format!("k1={K1}"));
        let forged = settings(&format!("k1={K2}"));
        let cases: Vec<(String, Option<Rejection>)> = vec![
            (String::new(), None),
            ("other=1".into(), None),
            ("tether=".into(), Some(Rejection::Malformed)),
            ("tether=%%%".into(), Some(Rejection::Malformed)),
            (cookie_for(&token("10.0.0.2:1"), &forged), Some(Rejection::BadSignature)),
        ];
        for (header, rejected) in cases {
            let affinity = resolve([header.as_bytes()], &s, NOW, || Some(FRESH)).unwrap();
            assert_eq!(affinity, Affinity::New { session: FRESH, rejected }, "{header}");
            let steer = steering(&affinity);
            assert_eq!(steer, Steering { override_host: None, hash_key: "09".repeat(16) });
        }
    }

    #[test]
    fn no_randomness_means_no_affinity() {
        let s = settings(&format!("k1={K1}"));
        assert_eq!(resolve([&b""[..]], &s, NOW, || None), None);
    }

    #[test]
    fn response_tokens() {
        let s = settings(&format!("k1={K1}"));
        let a: SocketAddr = "10.0.0.2:8080".parse().unwrap();
        let b: SocketAddr = "[fd00::3]:8080".parse().unwrap();

        let new = Affinity::New { session: FRESH, rejected: None };
        let minted = token_to_send(&new, a, NOW, &s).unwrap();
        assert_eq!(minted, SessionToken { session: FRESH, owner: a, issued_at: NOW, expires_at: NOW + 3600 });

        let pinned = Affinity::Pinned { token: token("10.0.0.2:8080"), signed_by_current_key: true };
        let repinned = token_to_send(&pinned, b, NOW, &s).unwrap();
        assert_eq!(repinned, SessionToken { owner: b, issued_at: NOW, ..token("10.0.0.2:8080") });

        let old_key = Affinity::Pinned { token: token("10.0.0.2:8080"), signed_by_current_key: false };
        let resigned = token_to_send(&old_key, a, NOW, &s).unwrap();
        assert_eq!(resigned, SessionToken { issued_at: NOW, ..token("10.0.0.2:8080") });
    }

    #[test]
    fn set_cookie_verifies_with_the_same_keyring() {
        let s = settings(&format!("k2={K2},k1={K1}"));
        let t = token("10.0.0.2:8080");
        let header = set_cookie(&t, NOW, &s).unwrap();
        let value = header.strip_prefix("tether=").unwrap().split(';').next().unwrap();
        let ring = Keyring::parse(&format!("k2={K2}"), None).unwrap();
        let verified = token::open(value.as_bytes(), &ring, NOW, 3600).unwrap();
        assert_eq!(verified.token, t);
    }
}
