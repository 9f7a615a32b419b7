//! Learn mode, free of any host call: the app issues the session id (MCP's
//! `Mcp-Session-Id`, `JSESSIONID`) and tether hands the client, in its place, an envelope —
//! a token carrying the app's id and the pod that issued it. Requests get the app's exact
//! id back; the client never holds the raw id, the app never sees the envelope.

use crate::config::Settings;
use crate::session::{can_pin_cluster, Outcome, Served};
use crate::token::{SessionId, SessionToken};

/// What a response does to a learned session: the outcome, and the envelope to send in
/// place of the app's id (`Echo`: the one the request carried is still right).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Envelope {
    /// Nothing to send: the app issued no id.
    None,
    /// The request's envelope names this id, this pod and the current key: send it again.
    Echo,
    /// Seal this token and send it.
    Seal(SessionToken),
}

/// Decides what a response from the upstream means for a learned session. `pinned` is the
/// request's verified envelope and whether it was sealed as tether seals today; `issued`
/// is the id the app sent in this response, if any (one an envelope can carry: [`crate::token::is_app_id`]).
///
/// A session keeps the pod that issued its id until the app issues one again: when
/// another pod serves and the app says nothing (it shares the state, or the request needed
/// none), the envelope is left alone, and the owner is tried first again next time. When
/// the owner is gone, Envoy's hash of the id picks the same pod on every Envoy; the app
/// there answers an id it does not know (MCP: 404, then a new `initialize`) and the id it
/// issues next is wrapped naming that pod.
pub fn respond(
    pinned: Option<(&SessionToken, bool)>,
    issued: Option<&[u8]>,
    served: &Served,
    now: u64,
    settings: &Settings,
) -> (Outcome, Envelope) {
    let Some(id) = issued else {
        return match pinned {
            Some((token, _)) if !token.owner.same_pod(&served.by) => (Outcome::OwnerAway, Envelope::None),
            _ => (Outcome::Hit, Envelope::None),
        };
    };
    let cluster = if settings.cluster_header.is_some() && can_pin_cluster(&served.cluster) {
        served.cluster.clone()
    } else {
        String::new()
    };
    let outcome = match pinned {
        Some((token, current)) if token.app_id.as_deref() == Some(id) => {
            if !token.owner.same_pod(&served.by) || token.cluster != cluster {
                Outcome::Repinned
            } else if !current || token.owner.listener != served.by.listener {
                Outcome::Refreshed
            } else {
                return (Outcome::Hit, Envelope::Echo);
            }
        }
        _ => Outcome::New,
    };
    let token = SessionToken {
        session: SessionId::of_app_id(id),
        owner: served.by.clone(),
        issued_at: now,
        expires_at: now.saturating_add(settings.absolute_timeout_secs),
        cluster,
        owner_away_since: None,
        app_id: Some(id.to_vec()),
    };
    (outcome, Envelope::Seal(token))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const NOW: u64 = 1_790_000_000;

    fn settings() -> Settings {
        let json =
            format!(r#"{{"keys":"k1={K1}","absoluteTimeout":"1h","learn":{{"header":"mcp-session-id"}}}}"#);
        config::load(json.as_bytes(), &|_| None).unwrap()
    }

    fn served(addr: &str) -> Served {
        Served { by: addr.parse().unwrap(), cluster: "pods".into() }
    }

    fn envelope(id: &[u8], owner: &str) -> SessionToken {
        SessionToken {
            session: SessionId::of_app_id(id),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 30,
            expires_at: NOW + 600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: Some(id.to_vec()),
        }
    }

    #[test]
    fn an_issued_id_is_wrapped_naming_the_pod_that_served() {
        let s = settings();
        let (outcome, sent) = respond(None, Some(b"a1b2"), &served("10.0.0.2:80"), NOW, &s);
        let Envelope::Seal(token) = sent else { panic!("{sent:?}") };
        assert_eq!(outcome, Outcome::New);
        assert_eq!(token.app_id.as_deref(), Some(b"a1b2".as_slice()));
        assert_eq!(token.session, SessionId::of_app_id(b"a1b2"));
        assert_eq!(
            (token.owner, token.issued_at, token.expires_at),
            ("10.0.0.2:80".parse().unwrap(), NOW, NOW + 3600)
        );
        // Nothing issued, nothing pinned: nothing to do.
        assert_eq!(respond(None, None, &served("10.0.0.2:80"), NOW, &s), (Outcome::Hit, Envelope::None));
    }

    #[test]
    fn the_same_id_from_its_owner_echoes_the_envelope_and_from_another_pod_repins() {
        let s = settings();
        let t = envelope(b"a1b2", "10.0.0.2:80");
        let got = respond(Some((&t, true)), Some(b"a1b2"), &served("10.0.0.2:80"), NOW, &s);
        assert_eq!(got, (Outcome::Hit, Envelope::Echo));
        // Sealed with a retired key: re-sealed, same pod.
        let (outcome, sent) = respond(Some((&t, false)), Some(b"a1b2"), &served("10.0.0.2:80"), NOW, &s);
        assert!(outcome == Outcome::Refreshed && matches!(sent, Envelope::Seal(_)));
        // Another pod answered the same id: the app has it there now.
        let (outcome, sent) = respond(Some((&t, true)), Some(b"a1b2"), &served("10.0.0.3:80"), NOW, &s);
        let Envelope::Seal(token) = sent else { panic!() };
        assert_eq!((outcome, token.owner), (Outcome::Repinned, "10.0.0.3:80".parse().unwrap()));
        // A new id (the app re-issued after an unknown one) replaces the envelope.
        let (outcome, sent) = respond(Some((&t, true)), Some(b"c3d4"), &served("10.0.0.3:80"), NOW, &s);
        let Envelope::Seal(token) = sent else { panic!() };
        assert_eq!((outcome, token.app_id), (Outcome::New, Some(b"c3d4".to_vec())));
    }

    #[test]
    fn without_a_new_id_the_session_keeps_the_pod_that_issued_it() {
        let s = settings();
        let t = envelope(b"a1b2", "10.0.0.2:80");
        assert_eq!(
            respond(Some((&t, true)), None, &served("10.0.0.2:80"), NOW, &s),
            (Outcome::Hit, Envelope::None)
        );
        let away = respond(Some((&t, false)), None, &served("10.0.0.3:80"), NOW, &s);
        assert_eq!(away, (Outcome::OwnerAway, Envelope::None));
    }
}
