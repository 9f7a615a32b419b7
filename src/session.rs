//! The routing decision, free of any host call: which session a request belongs to,
//! which headers steer it, and which token (if any) the response must carry.

use crate::address::{override_cookie_value, override_host_value, Owner};
use crate::config::{Learn, Settings};
use crate::cookie;
use crate::token::{self, Rejection, SessionId, SessionToken};

/// How the client presented its token, and so how a new one goes back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Carrier {
    Cookie,
    Header,
}

/// What the request carried.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Affinity {
    /// A token that verified: steer to its owner. `current`: sealed with the signing key
    /// in the configured format (otherwise the response re-seals it).
    Pinned { token: SessionToken, current: bool, carrier: Carrier },
    /// No usable token: a new session, placed by the cluster's hash of its id.
    /// `rejected` is why the last token presented was refused, if there was one.
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

/// Most candidate tokens one request can make tether verify (the token header and every
/// distinct value of our cookie count). A browser sends one; a few more arise from stale
/// cookies of other paths or domains. Each costs one HMAC or AEAD, so without a cap a
/// 60 KB Cookie header of fake tokens would cost hundreds of them.
pub const MAX_CANDIDATES: usize = 4;

/// Looks for the first valid token, one source at a time, so that the host reads more
/// headers only when needed. Every distinct value is verified at most once, and at most
/// [`MAX_CANDIDATES`] are verified per request.
pub struct Resolver<'a> {
    scope: &'a str,
    settings: &'a Settings,
    now: u64,
    /// The cookie a token may arrive in: tether's, or the app's (`learn`).
    cookie: Option<&'a str>,
    /// Whether a token may arrive in a header: tether's (header mode) or the app's (`learn`).
    header: bool,
    /// Values already verified (all refused), in order.
    checked: Vec<&'a [u8]>,
    rejected: Option<Rejection>,
    /// Candidates left unverified because the cap was reached.
    over_limit: bool,
}

impl<'a> Resolver<'a> {
    pub fn new(scope: &'a str, settings: &'a Settings, now: u64) -> Resolver<'a> {
        let learn = settings.learn.as_ref();
        let cookie =
            settings.cookie.as_ref().map(|c| c.name.as_str()).or_else(|| learn.and_then(Learn::cookie));
        let header = settings.token_header.is_some() || learn.and_then(Learn::header).is_some();
        Resolver {
            scope,
            settings,
            now,
            cookie,
            header,
            checked: Vec::new(),
            rejected: None,
            over_limit: false,
        }
    }

    /// Verifies one candidate unless it was seen already or the cap is reached.
    fn check(&mut self, value: &'a [u8], carrier: Carrier) -> Option<Affinity> {
        if self.checked.contains(&value) {
            return None;
        }
        if self.checked.len() >= MAX_CANDIDATES {
            self.over_limit = true;
            return None;
        }
        self.checked.push(value);
        let limits = self.settings.limits();
        match token::open(value, &self.settings.keyring, self.scope, self.now, limits) {
            Ok(v) => Some(Affinity::Pinned {
                token: v.token,
                current: v.signed_by_current_key && v.format == self.settings.format,
                carrier,
            }),
            Err(reason) => {
                self.rejected = Some(reason);
                None
            }
        }
    }

    /// The token header's value (header mode, or `learn.header`), if the request has one.
    pub fn token_header(&mut self, value: Option<&'a [u8]>) -> Option<Affinity> {
        match (value, self.header) {
            (Some(value), true) => self.check(value, Carrier::Header),
            _ => None,
        }
    }

    /// Every value of our cookie (or `learn.cookie`) in one `Cookie` header value.
    pub fn cookie_header(&mut self, header: &'a [u8]) -> Option<Affinity> {
        let name = self.cookie?;
        for value in cookie::values_named(header, name.as_bytes()) {
            if let Some(pinned) = self.check(value, Carrier::Cookie) {
                return Some(pinned);
            }
            if self.over_limit {
                break;
            }
        }
        None
    }

    /// Whether another source could still change the answer (cookies on, cap not reached).
    pub fn wants_more(&self) -> bool {
        self.cookie.is_some() && !self.over_limit
    }

    /// The text of the token that verified (the last one checked, once one has).
    pub fn verified_text(&self) -> Option<&'a [u8]> {
        self.checked.last().copied()
    }

    /// Why the last token refused was refused, if one was.
    pub fn rejected(&self) -> Option<Rejection> {
        self.rejected
    }

    /// How many candidates were verified so far.
    pub fn verified(&self) -> usize {
        self.checked.len()
    }

    /// Whether candidates were left unverified because of [`MAX_CANDIDATES`].
    pub fn over_limit(&self) -> bool {
        self.over_limit
    }

    /// No valid token: a new session (`fresh_id` is called only now; `None` from it means
    /// no affinity for this request).
    pub fn new_session(&self, fresh_id: impl FnOnce() -> Option<SessionId>) -> Option<Affinity> {
        fresh_id().map(|session| Affinity::New { session, rejected: self.rejected })
    }
}

/// Finds the first valid token: the token header (header mode) first, then every cookie
/// of our name across all `Cookie` header values, within [`MAX_CANDIDATES`]. `fresh_id`
/// is called only when a new session is needed; `None` from it means no affinity for this
/// request.
pub fn resolve<'a>(
    token_header: Option<&'a [u8]>,
    cookie_headers: impl IntoIterator<Item = &'a [u8]>,
    scope: &'a str,
    settings: &'a Settings,
    now: u64,
    fresh_id: impl FnOnce() -> Option<SessionId>,
) -> Option<Affinity> {
    let mut resolver = Resolver::new(scope, settings, now);
    if let Some(pinned) = resolver.token_header(token_header) {
        return Some(pinned);
    }
    for header in cookie_headers {
        if !resolver.wants_more() {
            break;
        }
        if let Some(pinned) = resolver.cookie_header(header) {
            return Some(pinned);
        }
    }
    resolver.new_session(fresh_id)
}

/// Request headers to set: the override host and the session's cluster (only for a
/// pinned session), and the hash key. `override_host` is in the form the session filter
/// reads: the header value, or the cookie value when `hostCookie` is set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steering {
    pub override_host: Option<String>,
    pub cluster: Option<String>,
    pub hash_key: String,
}

pub fn steering(affinity: &Affinity, settings: &Settings) -> Steering {
    steering_by(affinity, settings, true)
}

/// [`steering`] for a host that presents the owner by a header or cookie
/// (`owner_value`), or hands it to Envoy itself (no `override_host` value is made).
pub fn steering_by(affinity: &Affinity, settings: &Settings, owner_value: bool) -> Steering {
    match affinity {
        Affinity::Pinned { token, .. } => Steering {
            override_host: owner_value.then(|| match settings.host_cookie {
                Some(_) => override_cookie_value(&token.owner),
                None => override_host_value(&token.owner),
            }),
            cluster: (settings.cluster_header.is_some() && !token.cluster.is_empty())
                .then(|| token.cluster.clone()),
            hash_key: token.session.to_hex(),
        },
        Affinity::New { session, .. } => {
            Steering { override_host: None, cluster: None, hash_key: session.to_hex() }
        }
    }
}

/// What tether does to the internal request headers (`hostHeader`, `keyHeader`,
/// `clusterHeader`) of a request. Client-sent copies would let a client pick its pod (or
/// cluster) without a token, so none may ever reach the upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderPlan<'a> {
    /// Set each header to tether's value (`Some`) or remove it (`None`).
    Edit(Vec<(&'a str, Option<&'a str>)>),
    /// Answer the request locally instead of forwarding it.
    Refuse,
}

/// The internal-header plan of a request. Without settings (no configuration reached this
/// stream) the request is refused: the names of the internal headers come from that
/// configuration, so removing the default names would not be enough when the deployment
/// renamed them, and Envoy never runs a filter whose configuration was refused, so this
/// case means something is wrong, never normal traffic. `steering` is `None` when the
/// request has no affinity (no randomness): every internal header is removed.
pub fn header_plan<'a>(settings: Option<&'a Settings>, steering: Option<&'a Steering>) -> HeaderPlan<'a> {
    let Some(settings) = settings else {
        return HeaderPlan::Refuse;
    };
    // With `hostCookie` the owner travels in the Cookie header (rewritten by the host); the
    // host header is still removed, so a client's copy never reaches a header session state.
    let host_header_value = match settings.host_cookie {
        Some(_) => None,
        None => steering.and_then(|s| s.override_host.as_deref()),
    };
    let mut edits = vec![
        (settings.key_header.as_str(), steering.map(|s| s.hash_key.as_str())),
        (settings.host_header.as_str(), host_header_value),
    ];
    if let Some(name) = &settings.cluster_header {
        edits.push((name.as_str(), steering.and_then(|s| s.cluster.as_deref())));
    }
    HeaderPlan::Edit(edits)
}

/// Where a response came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    pub by: Owner,
    /// The upstream cluster; only compared when cluster pinning is on.
    pub cluster: String,
}

/// What happened to the session on this response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Served by its owner; nothing to send.
    Hit,
    /// A new session: a token is sent.
    New,
    /// The owner (or cluster) changed: a token naming the new owner is sent.
    Repinned,
    /// Same owner, but the token is re-signed (older key, idle refresh, or the owner served
    /// again after being missed).
    Refreshed,
    /// Another pod served, but the owner has been missed for less than `repinAfter`: the
    /// session keeps its owner (a token recording since when is sent on the first miss).
    OwnerAway,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::New => "new",
            Outcome::Repinned => "repinned",
            Outcome::Refreshed => "refreshed",
            Outcome::OwnerAway => "owner-away",
        }
    }
}

/// Decides the outcome of a response that came from an upstream (`via_upstream`) and
/// the token to send, if any.
pub fn respond(
    affinity: &Affinity,
    served: &Served,
    now: u64,
    settings: &Settings,
) -> (Outcome, Option<SessionToken>) {
    // A cluster name a token cannot hold is not recorded at all (the host warns): recording
    // nothing consistently keeps such sessions from re-pinning on every response.
    let cluster = if settings.cluster_header.is_some() && can_pin_cluster(&served.cluster) {
        served.cluster.clone()
    } else {
        String::new()
    };
    match affinity {
        Affinity::New { session, .. } => (
            Outcome::New,
            Some(SessionToken {
                session: *session,
                owner: served.by.clone(),
                issued_at: now,
                expires_at: now.saturating_add(settings.absolute_timeout_secs),
                cluster,
                owner_away_since: None,
                app_id: None,
            }),
        ),
        Affinity::Pinned { token, current, .. } => {
            // Every token sent keeps the session id and the absolute expiry.
            let resigned = |owner, cluster, owner_away_since| SessionToken {
                owner,
                issued_at: now,
                cluster,
                owner_away_since,
                ..token.clone()
            };
            let resign_due = !current || idle_refresh_due(token, now, settings);
            if token.owner.same_pod(&served.by) && token.cluster == cluster {
                // The same pod reached in another form (its namespace joined or left Istio
                // ambient): the token names the form the cluster now keys it by.
                let form_changed = token.owner.listener != served.by.listener;
                return match (token.owner_away_since, resign_due || form_changed) {
                    (None, false) => (Outcome::Hit, None),
                    // The owner is back: its absence ends (or the token was due anyway).
                    _ => (Outcome::Refreshed, Some(resigned(served.by.clone(), cluster, None))),
                };
            }
            // Another pod served. This Envoy may not know the owner yet (another replica
            // minted the session on a pod this one has not heard of), or the owner is
            // briefly unready or ejected: the session keeps its owner until the owner has
            // been missed for `repinAfter` without serving in between, so replicas that
            // disagree for a moment do not move it for good. Meanwhile the hash picks the
            // same pod on every Envoy that knows the same pods.
            let away_since = token.owner_away_since.unwrap_or(now);
            if now.saturating_sub(away_since) >= settings.repin_after_secs {
                return (Outcome::Repinned, Some(resigned(served.by.clone(), cluster, None)));
            }
            // The first miss is recorded in the token; later ones send nothing unless due.
            let send = token.owner_away_since.is_none() || resign_due;
            let kept = send.then(|| resigned(token.owner.clone(), token.cluster.clone(), Some(away_since)));
            (Outcome::OwnerAway, kept)
        }
    }
}

/// Whether the response must read the clock again before [`respond`] decides. A response
/// judges time at response time, so a long request does not lose its session; but a hit
/// without an idle timeout does not depend on time at all (nothing is sent, and only an
/// idle refresh could turn a hit into something else), so the request's reading stands.
/// `early` is what [`respond`] decided with the request's clock reading.
pub fn needs_fresh_clock(early: Outcome, settings: &Settings) -> bool {
    early != Outcome::Hit || settings.idle_timeout_secs.is_some()
}

/// Whether a token can record this cluster name (cluster pinning).
pub fn can_pin_cluster(name: &str) -> bool {
    name.len() <= token::MAX_CLUSTER_LEN
}

/// Past half its idle window, a token is re-signed so an active session never idles out;
/// before that, responses carry nothing.
fn idle_refresh_due(token: &SessionToken, now: u64, settings: &Settings) -> bool {
    settings.idle_timeout_secs.is_some_and(|idle| now.saturating_sub(token.issued_at) >= idle / 2)
}

/// How a token goes back: in the carrier it came in, or every enabled one for a new session.
pub fn carriers(affinity: &Affinity, settings: &Settings) -> (bool, bool) {
    match affinity {
        Affinity::Pinned { carrier: Carrier::Cookie, .. } => (true, false),
        Affinity::Pinned { carrier: Carrier::Header, .. } => (false, true),
        Affinity::New { .. } => (settings.cookie.is_some(), settings.token_header.is_some()),
    }
}

/// The token text for the response, in the configured format. `nonce` is called only
/// for encrypted tokens.
pub fn seal(
    token: &SessionToken,
    scope: &str,
    settings: &Settings,
    nonce: impl FnOnce() -> Option<[u8; token::NONCE_LEN]>,
) -> Option<String> {
    let key = settings.keyring.signing_key()?;
    match settings.format {
        token::Format::Signed => Some(token::seal(token, key, scope)),
        token::Format::Encrypted => token::seal_encrypted(token, key, scope, nonce()?),
    }
}

/// The `Set-Cookie` value carrying `sealed`; Max-Age (Permanent cookies) runs to the
/// token's effective expiry.
pub fn set_cookie(sealed: &str, token: &SessionToken, now: u64, settings: &Settings) -> Option<String> {
    let spec = settings.cookie.as_ref()?;
    let mut ends = token.expires_at;
    if let Some(idle) = settings.idle_timeout_secs {
        ends = ends.min(token.issued_at.saturating_add(idle));
    }
    Some(spec.render(sealed, ends.saturating_sub(now)))
}

/// The debug header value: `hit`, `new`, `repinned`, `refreshed`, or `invalid:<reason>`
/// for a new session that replaced a refused token.
pub fn debug_label(affinity: &Affinity, outcome: Outcome) -> String {
    match affinity {
        Affinity::New { rejected: Some(reason), .. } => format!("invalid:{}", reason.as_str()),
        _ => outcome.as_str().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::keyring::Keyring;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    const NOW: u64 = 1_790_000_000;
    const SCOPE: &str = "pods";

    fn settings_with(keys: &str, extra: &str) -> Settings {
        config::load(format!(r#"{{"keys":"{keys}","absoluteTimeout":"1h"{extra}}}"#).as_bytes(), &|_| None)
            .unwrap()
    }

    fn settings(keys: &str) -> Settings {
        settings_with(keys, "")
    }

    fn token(owner: &str) -> SessionToken {
        SessionToken {
            session: SessionId([7; 16]),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 5,
            expires_at: NOW + 600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        }
    }

    fn sealed(t: &SessionToken, s: &Settings) -> String {
        token::seal(t, s.keyring.signing_key().unwrap(), SCOPE)
    }

    fn cookie_for(t: &SessionToken, s: &Settings) -> String {
        format!("tether={}", sealed(t, s))
    }

    fn served(addr: &str) -> Served {
        Served { by: addr.parse().unwrap(), cluster: "stable".into() }
    }

    const FRESH: SessionId = SessionId([9; 16]);

    fn pinned(t: SessionToken, current: bool) -> Affinity {
        Affinity::Pinned { token: t, current, carrier: Carrier::Cookie }
    }

    #[test]
    fn valid_cookie_pins_and_steers() {
        let s = settings(&format!("k1={K1}"));
        let t = token("10.0.0.2:8080");
        let header = format!("a=b; {}", cookie_for(&t, &s));
        let affinity = resolve(None, [header.as_bytes()], SCOPE, &s, NOW, || Some(FRESH)).unwrap();
        assert_eq!(affinity, pinned(t.clone(), true));
        let steer = steering(&affinity, &s);
        assert_eq!(steer.override_host.as_deref(), Some("MTAuMC4wLjI6ODA4MA=="));
        assert_eq!(steer.hash_key, "07".repeat(16));
        assert_eq!(steer.cluster, None);
        assert_eq!(respond(&affinity, &served("10.0.0.2:8080"), NOW, &s), (Outcome::Hit, None));
    }

    #[test]
    fn host_cookie_mode_steers_with_envoys_cookie_value() {
        let s = settings_with(&format!("k1={K1}"), r#","hostCookie":"tether-owner""#);
        let t = token("10.0.0.2:8080");
        let header = cookie_for(&t, &s);
        let affinity = resolve(None, [header.as_bytes()], SCOPE, &s, NOW, || Some(FRESH)).unwrap();
        let steer = steering(&affinity, &s);
        // base64 of the protobuf `envoy.Cookie { address: "10.0.0.2:8080" }`.
        assert_eq!(steer.override_host.as_deref(), Some("Cg0xMC4wLjAuMjo4MDgw"));
        assert_eq!(steer.hash_key, "07".repeat(16));
    }

    #[test]
    fn host_cookie_mode_removes_the_host_header() {
        let s = settings_with(&format!("k1={K1}"), r#","hostCookie":"tether-owner""#);
        let header = cookie_for(&token("10.0.0.2:8080"), &s);
        let affinity = resolve(None, [header.as_bytes()], SCOPE, &s, NOW, || Some(FRESH)).unwrap();
        let steer = steering(&affinity, &s);
        let HeaderPlan::Edit(edits) = header_plan(Some(&s), Some(&steer)) else { panic!("refused") };
        assert!(edits.contains(&("x-tether-host", None)), "{edits:?}");
        assert!(edits.contains(&("x-tether-key", Some(steer.hash_key.as_str()))), "{edits:?}");
    }

    #[test]
    fn a_token_for_another_scope_is_a_new_session() {
        let s = settings(&format!("k1={K1}"));
        let header = cookie_for(&token("10.0.0.2:8080"), &s);
        let affinity = resolve(None, [header.as_bytes()], "other-service", &s, NOW, || Some(FRESH)).unwrap();
        assert_eq!(affinity, Affinity::New { session: FRESH, rejected: Some(Rejection::WrongScope) });
    }

    #[test]
    fn first_valid_token_wins_across_headers() {
        let s = settings(&format!("k1={K1}"));
        let t = token("10.0.0.2:8080");
        let second = cookie_for(&token("10.0.0.3:8080"), &s);
        let headers = ["tether=garbage; x=1".to_string(), cookie_for(&t, &s), second];
        let affinity = resolve(None, headers.iter().map(|h| h.as_bytes()), SCOPE, &s, NOW, || None).unwrap();
        assert_eq!(affinity, pinned(t, true));
    }

    #[test]
    fn at_most_a_few_distinct_candidates_are_verified() {
        let s = settings_with(&format!("k1={K1}"), r#","type":"CookieAndHeader""#);
        let forged = settings(&format!("k1={K2}"));
        let valid = cookie_for(&token("10.0.0.2:8080"), &s);
        let fakes: Vec<String> = (0..MAX_CANDIDATES as u8)
            .map(|i| cookie_for(&token(&format!("10.0.0.{i}:1")), &forged))
            .collect();
        // The same fake value many times costs one verification, and the valid token after
        // it still counts.
        let repeated = format!("{}; {valid}", vec![fakes[0].as_str(); 50].join("; "));
        let mut r = Resolver::new(SCOPE, &s, NOW);
        assert!(matches!(r.cookie_header(repeated.as_bytes()), Some(Affinity::Pinned { .. })));
        assert_eq!((r.verified(), r.over_limit()), (2, false));
        // A header seen twice (the host's fast path, then every Cookie header) is not verified again.
        let mut r = Resolver::new(SCOPE, &s, NOW);
        let first = fakes.join("; ");
        assert_eq!(r.cookie_header(first.as_bytes()), None);
        assert_eq!(r.verified(), MAX_CANDIDATES);
        assert_eq!(r.cookie_header(first.as_bytes()), None);
        assert_eq!((r.verified(), r.over_limit()), (MAX_CANDIDATES, false));
        // Past the cap nothing more is verified, not even a valid token: a new session.
        let header = format!("{first}; {valid}");
        let got = resolve(None, [header.as_bytes()], SCOPE, &s, NOW, || Some(FRESH)).unwrap();
        assert_eq!(got, Affinity::New { session: FRESH, rejected: Some(Rejection::BadSignature) });
        let mut r = Resolver::new(SCOPE, &s, NOW);
        assert_eq!(r.cookie_header(header.as_bytes()), None);
        assert!(r.over_limit() && !r.wants_more());
        // The token header counts as a candidate too; cookies in a later header also count.
        let mut r = Resolver::new(SCOPE, &s, NOW);
        let fake_header = fakes[0].strip_prefix("tether=").unwrap();
        assert_eq!(r.token_header(Some(fake_header.as_bytes())), None);
        let rest = fakes[1..].join("; ");
        assert_eq!(r.cookie_header(rest.as_bytes()), None, "the header's value is not verified twice");
        assert_eq!((r.verified(), r.over_limit()), (MAX_CANDIDATES, false));
        assert_eq!(r.cookie_header(valid.as_bytes()), None);
        assert!(r.over_limit());
        // 650 fakes in a 61 KB header: still MAX_CANDIDATES verifications.
        let many: Vec<String> = (0..650u32)
            .map(|i| cookie_for(&token(&format!("10.{}.{}.1:1", i / 256, i % 256)), &forged))
            .collect();
        let header = many.join("; ");
        assert!(header.len() > 61 * 1000, "{}", header.len());
        let mut r = Resolver::new(SCOPE, &s, NOW);
        assert_eq!(r.cookie_header(header.as_bytes()), None);
        assert_eq!((r.verified(), r.over_limit()), (MAX_CANDIDATES, true));
    }

    #[test]
    fn header_mode() {
        let cookie_only = settings(&format!("k1={K1}"));
        let both = settings_with(&format!("k1={K1}"), r#","type":"CookieAndHeader""#);
        let header_only = settings_with(&format!("k1={K1}"), r#","type":"Header""#);
        let a = sealed(&token("10.0.0.2:8080"), &both);
        let b = cookie_for(&token("10.0.0.3:8080"), &both);
        // The header is ignored unless header mode is on.
        let got = resolve(Some(a.as_bytes()), [b.as_bytes()], SCOPE, &cookie_only, NOW, || None).unwrap();
        assert!(matches!(got, Affinity::Pinned { carrier: Carrier::Cookie, .. }));
        // With both on, the header wins; header-only ignores cookies.
        let got = resolve(Some(a.as_bytes()), [b.as_bytes()], SCOPE, &both, NOW, || None).unwrap();
        assert_eq!(
            got,
            Affinity::Pinned { token: token("10.0.0.2:8080"), current: true, carrier: Carrier::Header }
        );
        assert_eq!(carriers(&got, &both), (false, true));
        let got = resolve(None, [b.as_bytes()], SCOPE, &header_only, NOW, || Some(FRESH)).unwrap();
        assert_eq!(got, Affinity::New { session: FRESH, rejected: None });
        assert_eq!(carriers(&got, &header_only), (false, true));
        assert_eq!(carriers(&got, &both), (true, true));
        assert_eq!(carriers(&got, &cookie_only), (true, false));
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
            let affinity = resolve(None, [header.as_bytes()], SCOPE, &s, NOW, || Some(FRESH)).unwrap();
            assert_eq!(affinity, Affinity::New { session: FRESH, rejected }, "{header}");
            let steer = steering(&affinity, &s);
            assert_eq!(steer, Steering { override_host: None, cluster: None, hash_key: "09".repeat(16) });
            let label = debug_label(&affinity, Outcome::New);
            assert_eq!(label, rejected.map_or("new".to_string(), |r| format!("invalid:{}", r.as_str())));
        }
    }

    #[test]
    fn internal_headers_are_always_replaced_or_removed_and_unconfigured_streams_refused() {
        assert_eq!(header_plan(None, None), HeaderPlan::Refuse);
        let steer = Steering {
            override_host: Some("aG9zdA==".into()),
            cluster: Some("stable".into()),
            hash_key: "07".repeat(16),
        };
        assert_eq!(header_plan(None, Some(&steer)), HeaderPlan::Refuse);
        let s = settings_with(
            &format!("k1={K1}"),
            r#","hostHeader":"x-h","keyHeader":"x-k","clusterHeader":"x-c","scope":"app""#,
        );
        let key = "07".repeat(16);
        let want = vec![("x-k", Some(key.as_str())), ("x-h", Some("aG9zdA==")), ("x-c", Some("stable"))];
        assert_eq!(header_plan(Some(&s), Some(&steer)), HeaderPlan::Edit(want));
        let removed = vec![("x-k", None), ("x-h", None), ("x-c", None)];
        assert_eq!(header_plan(Some(&s), None), HeaderPlan::Edit(removed));
        let plain = settings(&format!("k1={K1}"));
        let new = Steering { override_host: None, cluster: None, hash_key: key.clone() };
        let want = vec![("x-tether-key", Some(key.as_str())), ("x-tether-host", None)];
        assert_eq!(header_plan(Some(&plain), Some(&new)), HeaderPlan::Edit(want));
    }

    #[test]
    fn no_randomness_means_no_affinity() {
        let s = settings(&format!("k1={K1}"));
        assert_eq!(resolve(None, [&b""[..]], SCOPE, &s, NOW, || None), None);
    }

    #[test]
    fn response_outcomes() {
        let s = settings(&format!("k1={K1}"));
        let a = served("10.0.0.2:8080");
        let b = served("[fd00::3]:8080");

        let new = Affinity::New { session: FRESH, rejected: None };
        let (outcome, minted) = respond(&new, &a, NOW, &s);
        assert_eq!(outcome, Outcome::New);
        let want = SessionToken {
            session: FRESH,
            owner: a.by.clone(),
            issued_at: NOW,
            expires_at: NOW + 3600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        };
        assert_eq!(minted, Some(want));

        // Another pod served: the owner is kept (repinAfter, 10 s by default) and the token
        // records since when it is missed; with repinAfter 0s the session moves at once.
        let (outcome, kept) = respond(&pinned(token("10.0.0.2:8080"), true), &b, NOW, &s);
        assert_eq!(outcome, Outcome::OwnerAway);
        let away = SessionToken { issued_at: NOW, owner_away_since: Some(NOW), ..token("10.0.0.2:8080") };
        assert_eq!(kept, Some(away));
        let at_once = settings_with(&format!("k1={K1}"), r#","repinAfter":"0s""#);
        let (outcome, repinned) = respond(&pinned(token("10.0.0.2:8080"), true), &b, NOW, &at_once);
        assert_eq!(outcome, Outcome::Repinned);
        assert_eq!(
            repinned,
            Some(SessionToken { owner: b.by.clone(), issued_at: NOW, ..token("10.0.0.2:8080") })
        );

        let (outcome, resigned) = respond(&pinned(token("10.0.0.2:8080"), false), &a, NOW, &s);
        assert_eq!(outcome, Outcome::Refreshed);
        assert_eq!(resigned, Some(SessionToken { issued_at: NOW, ..token("10.0.0.2:8080") }));
    }

    #[test]
    fn idle_refresh_only_past_half_the_window() {
        let s = settings_with(&format!("k1={K1}"), r#","idleTimeout":"10m""#);
        let a = served("10.0.0.2:8080");
        let fresh = SessionToken { issued_at: NOW - 299, ..token("10.0.0.2:8080") };
        assert_eq!(respond(&pinned(fresh, true), &a, NOW, &s), (Outcome::Hit, None));
        let half = SessionToken { issued_at: NOW - 300, ..token("10.0.0.2:8080") };
        let (outcome, refreshed) = respond(&pinned(half.clone(), true), &a, NOW, &s);
        assert_eq!(outcome, Outcome::Refreshed);
        let refreshed = refreshed.unwrap();
        assert_eq!((refreshed.issued_at, refreshed.expires_at), (NOW, half.expires_at));
        // Permanent cookies end at the sooner of idle and absolute expiry.
        let permanent = settings_with(
            &format!("k1={K1}"),
            r#","idleTimeout":"10m","cookie":{"lifetimeType":"Permanent"}"#,
        );
        let header = set_cookie("T", &refreshed, NOW, &permanent).unwrap();
        assert!(header.contains("Max-Age=600;"), "{header}");
        let near_end = SessionToken { expires_at: NOW + 100, ..refreshed };
        assert!(set_cookie("T", &near_end, NOW, &permanent).unwrap().contains("Max-Age=100;"));
    }

    /// The response keeps the request's clock reading only where time cannot matter: a hit
    /// without an idle timeout stays a hit at any later time (the host then skips a clock read).
    #[test]
    fn only_a_hit_without_idle_timeout_skips_the_second_clock_read() {
        let plain = settings(&format!("k1={K1}"));
        let idle = settings_with(&format!("k1={K1}"), r#","idleTimeout":"60s""#);
        for (outcome, s, fresh) in [
            (Outcome::Hit, &plain, false),
            (Outcome::Hit, &idle, true),
            (Outcome::New, &plain, true),
            (Outcome::Repinned, &plain, true),
            (Outcome::Refreshed, &plain, true),
        ] {
            assert_eq!(needs_fresh_clock(outcome, s), fresh, "{outcome:?}");
        }
        // The premise: without an idle timeout a hit is a hit whatever the clock says.
        let t = token("10.0.0.2:8080");
        let affinity = pinned(t.clone(), true);
        for later in [NOW, NOW + 1, NOW + 599, NOW + 600, NOW + 10_000] {
            assert_eq!(respond(&affinity, &served("10.0.0.2:8080"), later, &plain), (Outcome::Hit, None));
        }
    }

    /// The response is judged at its own time, not the request's: a long poll or a slow
    /// upload can outlast the idle window (the host reads the clock again for the response).
    #[test]
    fn a_long_request_is_judged_at_response_time() {
        let s = settings_with(
            &format!("k1={K1}"),
            r#","idleTimeout":"60s","cookie":{"lifetimeType":"Permanent"}"#,
        );
        let a = served("10.0.0.2:8080");
        // A 29 s-old token on a 45 s request.
        let t = SessionToken { issued_at: NOW - 29, ..token("10.0.0.2:8080") };
        let cookie = cookie_for(&t, &s);
        let affinity = resolve(None, [cookie.as_bytes()], SCOPE, &s, NOW, || None).unwrap();
        assert_eq!(respond(&affinity, &a, NOW, &s), (Outcome::Hit, None), "at the request's time");
        let done = NOW + 45;
        let (outcome, refreshed) = respond(&affinity, &a, done, &s);
        assert_eq!(outcome, Outcome::Refreshed, "at the response's time the token is 74 s old");
        let refreshed = refreshed.unwrap();
        assert_eq!(refreshed.issued_at, done);
        let header = set_cookie("T", &refreshed, done, &s).unwrap();
        assert!(header.contains("Max-Age=60;"), "{header}");
        let text = sealed(&refreshed, &s);
        assert!(token::open(text.as_bytes(), &s.keyring, SCOPE, done + 59, s.limits()).is_ok());
        // A session minted on a 70 s request: its token counts from the response.
        let new = Affinity::New { session: FRESH, rejected: None };
        let (_, minted) = respond(&new, &a, NOW + 70, &s);
        let minted = minted.unwrap();
        assert_eq!((minted.issued_at, minted.expires_at), (NOW + 70, NOW + 70 + 3600));
        let text = sealed(&minted, &s);
        assert!(token::open(text.as_bytes(), &s.keyring, SCOPE, NOW + 71, s.limits()).is_ok());
        assert!(set_cookie("T", &minted, NOW + 70, &s).unwrap().contains("Max-Age=60;"));
    }

    /// A session whose owner did not serve keeps it until the owner has been missed for
    /// `repinAfter` with no response from it in between; the token carries since when.
    #[test]
    fn a_missed_owner_keeps_its_sessions_for_repin_after() {
        let s = settings_with(&format!("k1={K1}"), r#","repinAfter":"10s""#);
        let (owner, other) = (served("10.0.0.2:8080"), served("[fd00::3]:8080"));
        let t = token("10.0.0.2:8080");
        let away = SessionToken { issued_at: NOW, owner_away_since: Some(NOW), ..t.clone() };
        // First miss: recorded, owner kept; the request still steers to the owner.
        assert_eq!(
            respond(&pinned(t.clone(), true), &other, NOW, &s),
            (Outcome::OwnerAway, Some(away.clone()))
        );
        let held = pinned(away.clone(), true);
        assert_eq!(steering(&held, &s).override_host, Some(override_host_value(&owner.by)));
        // Later misses inside the window send nothing.
        for later in [NOW + 1, NOW + 9] {
            assert_eq!(respond(&held, &other, later, &s), (Outcome::OwnerAway, None), "at +{}", later - NOW);
        }
        // Missed for the whole window: re-pinned to the pod that served, the absence over.
        let moved = SessionToken {
            owner: other.by.clone(),
            issued_at: NOW + 10,
            owner_away_since: None,
            ..t.clone()
        };
        assert_eq!(respond(&held, &other, NOW + 10, &s), (Outcome::Repinned, Some(moved)));
        // The owner serves again inside the window: the session is its own again.
        let back = SessionToken { issued_at: NOW + 9, owner_away_since: None, ..t.clone() };
        assert_eq!(respond(&held, &owner, NOW + 9, &s), (Outcome::Refreshed, Some(back)));
        // A token due for re-signing (older key) keeps the time of the first miss.
        let resigned = SessionToken { issued_at: NOW + 5, ..away.clone() };
        assert_eq!(respond(&pinned(away, false), &other, NOW + 5, &s), (Outcome::OwnerAway, Some(resigned)));
        // The token records the miss; its text opens to the same claims.
        let text = sealed(&SessionToken { issued_at: NOW, owner_away_since: Some(NOW - 3), ..t }, &s);
        let opened = token::open(text.as_bytes(), &s.keyring, SCOPE, NOW, s.limits()).unwrap();
        assert_eq!(opened.token.owner_away_since, Some(NOW - 3));
    }

    #[test]
    fn cluster_pinning() {
        let s = settings_with(
            &format!("k1={K1}"),
            r#","clusterHeader":"x-tether-cluster","scope":"app","repinAfter":"0s""#,
        );
        let on_stable = SessionToken { cluster: "stable".into(), ..token("10.0.0.2:8080") };
        let affinity = pinned(on_stable.clone(), true);
        assert_eq!(steering(&affinity, &s).cluster.as_deref(), Some("stable"));
        assert_eq!(respond(&affinity, &served("10.0.0.2:8080"), NOW, &s), (Outcome::Hit, None));
        let canary = Served { by: "10.0.0.9:8080".parse().unwrap(), cluster: "canary".into() };
        let (outcome, moved) = respond(&affinity, &canary, NOW, &s);
        assert_eq!(outcome, Outcome::Repinned);
        assert_eq!(moved.unwrap().cluster, "canary");
        // Without cluster pinning the cluster is neither recorded nor steered.
        let plain = settings(&format!("k1={K1}"));
        assert_eq!(steering(&affinity, &plain).cluster, None);
        let (_, minted) = respond(&Affinity::New { session: FRESH, rejected: None }, &canary, NOW, &plain);
        assert_eq!(minted.unwrap().cluster, "");
    }

    /// Sends `rounds` requests of one client through resolve → respond → seal, each carrying
    /// the cookie of the last response that set one; returns each round's outcome and the
    /// cluster steered to.
    fn rounds(s: &Settings, served: &Served, rounds: usize) -> Vec<(Outcome, Option<String>)> {
        let mut cookie = String::new();
        let mut seen = Vec::new();
        for round in 0..rounds {
            let affinity = resolve(None, [cookie.as_bytes()], "app", s, NOW, || Some(FRESH)).unwrap();
            let steer = steering(&affinity, s);
            let (outcome, token) = respond(&affinity, served, NOW + round as u64, s);
            if let Some(token) = token {
                let text = seal(&token, "app", s, || Some([3; 24])).unwrap();
                cookie = set_cookie(&text, &token, NOW, s).unwrap().split(';').next().unwrap().to_string();
            }
            seen.push((outcome, steer.cluster));
        }
        seen
    }

    #[test]
    fn long_cluster_names_pin() {
        let s = settings_with(&format!("k1={K1}"), r#","clusterHeader":"x-tether-cluster","scope":"app""#);
        let name = format!("outbound|8080|canary-v2|{}.{}.svc.cluster.local", "s".repeat(60), "n".repeat(43));
        assert_eq!(name.len(), 146);
        let served = Served { by: "10.0.0.2:8080".parse().unwrap(), cluster: name.clone() };
        let got = rounds(&s, &served, 4);
        assert_eq!(got[0], (Outcome::New, None));
        for later in &got[1..] {
            assert_eq!(*later, (Outcome::Hit, Some(name.clone())));
        }
        for format in [r#","tokenFormat":"Encrypted""#, ""] {
            let s = settings_with(
                &format!("k1={K1}"),
                &format!(r#","clusterHeader":"x-tether-cluster","scope":"app"{format}"#),
            );
            let longest = Served { cluster: "c".repeat(token::MAX_CLUSTER_LEN), ..served.clone() };
            assert_eq!(rounds(&s, &longest, 3)[2], (Outcome::Hit, Some(longest.cluster.clone())));
        }
        // A name no token can hold is not recorded: no re-pin on every response.
        assert!(!can_pin_cluster(&"c".repeat(token::MAX_CLUSTER_LEN + 1)));
        let overlong = Served { cluster: "c".repeat(300), ..served };
        let got = rounds(&s, &overlong, 3);
        assert_eq!(got, [(Outcome::New, None), (Outcome::Hit, None), (Outcome::Hit, None)]);
    }

    #[test]
    fn encrypted_format_hides_the_owner_and_migrates_signed_tokens() {
        let s = settings_with(&format!("k1={K1}"), r#","tokenFormat":"Encrypted""#);
        let t = token("10.0.0.2:8080");
        assert_eq!(seal(&t, SCOPE, &s, || None), None, "no nonce, no encrypted token");
        let text = seal(&t, SCOPE, &s, || Some([4; 24])).unwrap();
        let raw = base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, &text).unwrap();
        assert!(!raw.windows(4).any(|w| w == [10, 0, 0, 2]), "the owner IP is not readable");
        let cookie = format!("tether={text}");
        let got = resolve(None, [cookie.as_bytes()], SCOPE, &s, NOW, || None).unwrap();
        assert_eq!(got, pinned(t.clone(), true));
        // A signed token of the same key still steers and is re-sealed encrypted.
        let signed = cookie_for(&t, &s);
        let got = resolve(None, [signed.as_bytes()], SCOPE, &s, NOW, || None).unwrap();
        assert_eq!(got, pinned(t.clone(), false));
        assert_eq!(respond(&got, &served("10.0.0.2:8080"), NOW, &s).0, Outcome::Refreshed);
    }

    #[test]
    fn set_cookie_verifies_with_the_same_keyring() {
        let s = settings(&format!("k2={K2},k1={K1}"));
        let t = token("10.0.0.2:8080");
        let text = seal(&t, SCOPE, &s, || None).unwrap();
        let header = set_cookie(&text, &t, NOW, &s).unwrap();
        let value = header.strip_prefix("tether=").unwrap().split(';').next().unwrap();
        let ring = Keyring::parse(&format!("k2={K2}"), None).unwrap();
        let verified = token::open(value.as_bytes(), &ring, SCOPE, NOW, s.limits()).unwrap();
        assert_eq!(verified.token, t);
    }
}
