//! One request's path through tether, for any host: what to read, what `session`
//! decides, which edits to make. A host (`hosts::wasm`, `hosts::native`) implements
//! [`Host`] — moving bytes in and out of Envoy — and nothing else, so the two builds
//! cannot drift apart.

use crate::address::Owner;
use crate::config::{self, ConfigError, Learn, Settings};
use crate::cookie::{self, CookieRewrite};
use crate::learn::{self, Envelope};
use crate::session::{self, Affinity, HeaderPlan, Outcome, Served};
use crate::token::{is_app_id, Rejection, SessionId, MAX_APP_ID_LEN, NONCE_LEN};
use std::sync::atomic::{AtomicBool, Ordering};

/// How a host hands a session's owner to Envoy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerVia {
    /// A request header (`hostHeader`) or cookie (`hostCookie`) that Envoy's
    /// `stateful_session` filter reads: proxy-wasm has no call for the override host.
    SessionFilter,
    /// Envoy's upstream override host, set by the host itself (dynamic modules). The
    /// host header is then only ever removed.
    OverrideHost,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// tether's counters; every host names them `tether.<name>` in its stats namespace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    Minted,
    Hits,
    Repinned,
    Refreshed,
    /// Responses from another pod while the session keeps its missed owner (`repinAfter`).
    OwnerAway,
    /// Requests carrying more distinct candidate tokens than tether verifies.
    OverLimit,
    /// Responses from an upstream host named in a form tether cannot pin (see
    /// [`Host::INTERNAL_OWNERS`] and [`Owner::parse`]): no session is pinned to it.
    UnusableHost,
    /// App-issued ids (`learn`) passed to the client unwrapped: too long, or not visible
    /// ASCII, for an envelope.
    AppIdNotWrapped,
    Invalid(Rejection),
}

impl Counter {
    pub const COUNT: usize = 8 + Rejection::ALL.len();

    /// Every counter, in [`Counter::index`] order.
    pub fn all() -> impl Iterator<Item = Counter> {
        [
            Counter::Minted,
            Counter::Hits,
            Counter::Repinned,
            Counter::Refreshed,
            Counter::OverLimit,
            Counter::OwnerAway,
            Counter::UnusableHost,
            Counter::AppIdNotWrapped,
        ]
        .into_iter()
        .chain(Rejection::ALL.into_iter().map(Counter::Invalid))
    }

    /// The counter of what a response did to its session.
    pub fn of(outcome: Outcome) -> Counter {
        match outcome {
            Outcome::Hit => Counter::Hits,
            Outcome::New => Counter::Minted,
            Outcome::Repinned => Counter::Repinned,
            Outcome::Refreshed => Counter::Refreshed,
            Outcome::OwnerAway => Counter::OwnerAway,
        }
    }

    /// A dense index (0..[`Counter::COUNT`]) for hosts that keep ids in an array.
    pub fn index(self) -> usize {
        match self {
            Counter::Minted => 0,
            Counter::Hits => 1,
            Counter::Repinned => 2,
            Counter::Refreshed => 3,
            Counter::OverLimit => 4,
            Counter::OwnerAway => 5,
            Counter::UnusableHost => 6,
            Counter::AppIdNotWrapped => 7,
            Counter::Invalid(r) => 8 + Rejection::ALL.iter().position(|x| *x == r).unwrap_or(0),
        }
    }

    /// The stat name, without the host's namespace.
    pub fn name(self) -> String {
        match self {
            Counter::Minted => "tether.sessions_minted".into(),
            Counter::Hits => "tether.affinity_hits".into(),
            Counter::Repinned => "tether.repinned".into(),
            Counter::Refreshed => "tether.refreshed".into(),
            Counter::OverLimit => "tether.tokens_over_limit".into(),
            Counter::OwnerAway => "tether.owner_away".into(),
            Counter::UnusableHost => "tether.unusable_host".into(),
            Counter::AppIdNotWrapped => "tether.app_id_not_wrapped".into(),
            Counter::Invalid(r) => format!("tether.invalid_token.{}", r.as_str()),
        }
    }
}

/// What tether needs from Envoy. Header names are lower case. Errors are the host's own
/// description of a failed call (for the log line).
pub trait Host {
    /// How this host presents the owner.
    const OWNER_VIA: OwnerVia;
    /// Whether reading the response code details costs next to nothing (native), so that a
    /// hit checks too that the upstream answered. In wasm the read costs as much as a
    /// tenth of the hit path, and a hit sends nothing either way: there an Envoy reply
    /// after trying the owner last is labelled and counted as a hit.
    const CHEAP_DETAILS: bool;
    /// Whether this host can steer to a pod behind an Envoy internal listener
    /// (`envoy://<listener>/<ip:port>`, Istio ambient). The session filter can (it matches
    /// the host's name); Envoy's dynamic-module override host accepts IP addresses only.
    const INTERNAL_OWNERS: bool;

    /// The first value of a request header (binary-safe).
    fn request_header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// Every value of a request header, in order.
    fn request_header_values(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String>;
    /// Replaces every value of a request header with one; an empty value removes the
    /// header, in both hosts (Envoy's dynamic-module ABI cannot set an empty value).
    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    fn remove_request_header(&mut self, name: &str) -> Result<(), String>;
    /// Makes Envoy match the route again after the edits (`clusterHeader` routes on a header
    /// tether sets). proxy-wasm hosts need nothing: Envoy re-matches after their edits.
    fn reroute(&mut self);
    /// Sends the request to `owner` when the cluster has it in an allowed health state,
    /// else lets the load balancer choose ([`OwnerVia::OverrideHost`] hosts only).
    fn set_override_host(&mut self, owner: &Owner) -> Result<(), String>;
    /// The upstream cluster the route chose.
    fn cluster_name(&mut self) -> Option<String>;
    /// Envoy's name of the upstream host that served (or, on a local reply, was tried
    /// last), if any: `upstream.address`, e.g. `10.0.0.5:8080`.
    fn upstream_address(&mut self) -> Option<Vec<u8>>;
    /// Envoy's response code details (`via_upstream` when the upstream answered).
    fn response_code_details(&mut self) -> Option<Vec<u8>>;
    /// The first value of a response header.
    fn response_header(&mut self, name: &str) -> Option<Vec<u8>>;
    fn response_header_values(&mut self, name: &str) -> Vec<Vec<u8>>;
    fn remove_response_header(&mut self, name: &str);
    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), String>;
    /// As `set_request_header`, for a response header.
    fn set_response_header(&mut self, name: &str, value: &[u8]);
    /// Wall-clock unix seconds, shared by every Envoy so that expiry means the same everywhere.
    fn now_secs(&mut self) -> u64;
    fn log(&mut self, level: Level, message: &str);
    /// Answers the request locally; it is not forwarded.
    fn local_reply(&mut self, status: u32, body: &[u8]);
    fn count(&mut self, counter: Counter);
    /// Records `value` under `key` in the stream's filter state, where Envoy's access log
    /// reads it (`%FILTER_STATE(key:PLAIN)%`; proxy-wasm stores it as `wasm.<key>`).
    fn set_log_field(&mut self, key: &str, value: &str) -> Result<(), String>;
}

/// The filter-state keys of `accessLog` (the wasm build's are prefixed `wasm.` by Envoy).
pub const LOG_DECISION: &str = "tether.decision";
pub const LOG_SESSION: &str = "tether.session";

/// A loaded configuration, shared by every stream of a filter instance.
pub struct Filter {
    pub settings: Settings,
    via: OwnerVia,
    /// Bench-only (feature `bench-diag`): extra token verifications per request.
    #[cfg(feature = "bench-diag")]
    token_repeat: usize,
}

impl Filter {
    /// Loads the JSON configuration; `env` looks up the environment `keysFromEnv` names.
    pub fn load(
        raw: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
        via: OwnerVia,
    ) -> Result<Filter, ConfigError> {
        let settings = config::load(raw, env)?;
        if via == OwnerVia::OverrideHost && settings.host_cookie.is_some() {
            return Err(ConfigError {
                field: "hostCookie".into(),
                reason: "not used by the native module, which sets Envoy's upstream override host itself (hostCookie is for Istio's stateful_session)".into(),
            });
        }
        Ok(Filter {
            settings,
            via,
            #[cfg(feature = "bench-diag")]
            token_repeat: env("TETHER_BENCH_TOKEN_REPEAT").and_then(|v| v.parse().ok()).unwrap_or(0),
        })
    }

    /// The start-up line: what is configured, naming key ids and never secrets.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        let keys = s.keyring.key_ids().join(",");
        let signing = s.keyring.signing_key().map_or("", |k| k.id());
        let carriers = match (&s.cookie, &s.token_header, &s.learn) {
            (_, _, Some(Learn::Header(h))) => {
                format!("envelopes of the app's session id in header `{h}` (learn)")
            }
            (_, _, Some(Learn::Cookie(c))) => {
                format!("envelopes of the app's session id in cookie `{c}` (learn)")
            }
            (Some(c), Some(h), None) => format!("cookie `{}` and header `{h}`", c.name),
            (Some(c), None, None) => format!("cookie `{}`", c.name),
            (None, Some(h), None) => format!("header `{h}`"),
            (None, None, None) => "nothing".into(),
        };
        format!(
            "configured: {carriers}, {:?} tokens, keys [{keys}] signing with `{signing}`, absolute timeout {}s, idle timeout {}, scope {}, owner to {} / key header {}",
            s.format,
            s.absolute_timeout_secs,
            s.idle_timeout_secs.map_or("off".into(), |t| format!("{t}s")),
            s.scope.as_deref().unwrap_or("(upstream cluster)"),
            match (self.via, &s.host_cookie) {
                (OwnerVia::OverrideHost, _) => "Envoy's upstream override host".to_string(),
                (OwnerVia::SessionFilter, Some(c)) => format!("cookie {c}"),
                (OwnerVia::SessionFilter, None) => format!("header {}", s.host_header),
            },
            s.key_header
        )
    }

    /// The warning to log once at start-up, if any.
    pub fn warning(&self) -> Option<&'static str> {
        self.settings.inline_keys.then_some(
            "signing keys are inline in the configuration: for demos only, use keysFromEnv in production",
        )
    }
}

/// Whether the request goes on to the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    /// A local reply was sent.
    Stop,
}

/// Whether this process has already warned about a cluster name too long to pin.
static CLUSTER_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether this process (wasm: this VM) has already warned about a request without a scope.
static SCOPE_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether this process (wasm: this VM, one per Envoy worker) has already warned about an
/// upstream host it cannot pin.
static UNUSABLE_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether this process (wasm: this VM) has already warned about an app-issued id it
/// cannot wrap.
static NOT_WRAPPED_WARNED: AtomicBool = AtomicBool::new(false);

/// One request/response exchange.
#[derive(Default)]
pub struct Stream {
    affinity: Option<Affinity>,
    /// The upstream cluster's name, read per request when no `scope` is configured.
    cluster_scope: String,
    /// The clock as the request read it (unix seconds).
    request_now: u64,
    /// Learn mode: the text of the envelope that verified, sent again when the app repeats
    /// the id to the pod that issued it.
    envelope: Option<Vec<u8>>,
}

fn fresh_session_id<H: Host>(host: &mut H) -> Option<SessionId> {
    let mut id = [0u8; 16];
    match getrandom::getrandom(&mut id) {
        Ok(()) => Some(SessionId(id)),
        Err(e) => {
            host.log(
                Level::Error,
                &format!(
                    "no randomness for a session id (getrandom error {}); request passes without affinity",
                    e.code()
                ),
            );
            None
        }
    }
}

fn random_nonce<H: Host>(host: &mut H) -> Option<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    match getrandom::getrandom(&mut nonce) {
        Ok(()) => Some(nonce),
        Err(e) => {
            host.log(
                Level::Error,
                &format!("no randomness for a token nonce (getrandom error {}); no token sent", e.code()),
            );
            None
        }
    }
}

/// Refuses the request: its steering headers may be the client's, so it must not go on.
fn refuse<H: Host>(host: &mut H, what: &str, error: &str) -> Verdict {
    host.log(Level::Error, &format!("cannot {what} ({error}); request refused"));
    host.local_reply(500, b"");
    Verdict::Stop
}

/// Removes the response's `Set-Cookie` headers for cookie `name` and keeps the others.
fn strip_set_cookie<H: Host>(host: &mut H, name: &str) {
    let set_cookies = host.response_header_values("set-cookie");
    if !set_cookies.iter().any(|v| cookie::set_cookie_name(v) == name.as_bytes()) {
        return;
    }
    host.remove_response_header("set-cookie");
    for value in set_cookies.iter().filter(|v| cookie::set_cookie_name(v) != name.as_bytes()) {
        let _ = host.add_response_header("set-cookie", value);
    }
}

/// The served host as an owner this host can steer to. A host in any other form is
/// counted, and logged once per process (wasm: per VM): its sessions are not pinned, never
/// silently.
fn served_owner<H: Host>(host: &mut H, raw: &[u8]) -> Option<Owner> {
    let owner = Owner::parse(raw).filter(|o| o.listener.is_none() || H::INTERNAL_OWNERS);
    if owner.is_none() {
        host.count(Counter::UnusableHost);
        if !UNUSABLE_WARNED.swap(true, Ordering::Relaxed) {
            // Shown as visible ASCII only: the name is not ours to trust.
            let shown: String = raw
                .iter()
                .take(160)
                .map(|&b| if b.is_ascii_graphic() { char::from(b) } else { '?' })
                .collect();
            let forms = if H::INTERNAL_OWNERS {
                "ip:port or envoy://<internal listener>/<ip:port>"
            } else {
                "ip:port; Envoy's dynamic-module override host takes no internal address"
            };
            host.log(
                Level::Warn,
                &format!(
                    "upstream host `{shown}` is not in a form tether can steer to ({forms}): sessions it serves are not pinned (counter tether.unusable_host)"
                ),
            );
        }
    }
    owner
}

/// Adds a response header; a refusal is logged. Whether it was added.
fn add_response_header<H: Host>(host: &mut H, name: &str, value: &str) -> bool {
    let done = host.add_response_header(name, value.as_bytes());
    if let Err(error) = &done {
        host.log(Level::Warn, &format!("cannot add {name} ({error})"));
    }
    done.is_ok()
}

/// Test-only (feature `crash-test`, `make build-crash-test`): panics when the request asks
/// for it, after the internal headers were edited, so tests can see what each host does
/// with a panic (wasm: Envoy's failure policy; native: the request is refused).
#[cfg(feature = "crash-test")]
#[allow(clippy::panic)]
fn crash_test<H: Host>(host: &mut H) {
    if host.request_header("x-tether-crash-test").is_some() {
        panic!("crash test requested");
    }
}

/// Bench-only (feature `bench-diag`, `make bench`): verifies the request's first Cookie
/// header and computes the steering headers `n` more times, so the bench can price the
/// token work inside Envoy's V8 (`diag_tether_token_x10`).
#[cfg(feature = "bench-diag")]
fn token_work_again(n: usize, scope: &str, settings: &Settings, now: u64, cookie: Option<&[u8]>) {
    for _ in 0..n {
        let mut resolver = session::Resolver::new(scope, settings, now);
        if let Some(affinity) = cookie.and_then(|c| resolver.cookie_header(std::hint::black_box(c))) {
            std::hint::black_box(session::steering(&affinity, settings));
        }
    }
}

/// What a request carries that may hold its token.
struct Cookies<'a> {
    token_header: Option<&'a [u8]>,
    first: Option<&'a [u8]>,
    /// Every Cookie header, when the host already read them all (`hostCookie`).
    all: Option<&'a [Vec<u8>]>,
}

/// The request's session: its first valid token, else a new session (`None` when no
/// session id could be drawn). In learn mode only an envelope makes a session (the app
/// issues new ones); the text of the one that verified goes to `envelope`.
fn find_session<H: Host>(
    host: &mut H,
    filter: &Filter,
    scope: &str,
    now: u64,
    cookies: Cookies<'_>,
    envelope: &mut Option<Vec<u8>>,
) -> Option<Affinity> {
    let settings = &filter.settings;
    let all_cookies: Vec<Vec<u8>>;
    let mut resolver = session::Resolver::new(scope, settings, now);
    let mut found = resolver.token_header(cookies.token_header);
    if let Some(values) = cookies.all {
        for value in values {
            if found.is_some() || !resolver.wants_more() {
                break;
            }
            found = resolver.cookie_header(value);
        }
    } else if let (None, Some(first)) = (&found, cookies.first) {
        found = resolver.cookie_header(first);
        if found.is_none() && resolver.wants_more() {
            all_cookies = host.request_header_values("cookie").unwrap_or_default();
            for value in &all_cookies {
                found = resolver.cookie_header(value);
                if found.is_some() || !resolver.wants_more() {
                    break;
                }
            }
        }
    }
    #[cfg(feature = "bench-diag")]
    token_work_again(filter.token_repeat, scope, settings, now, cookies.first);
    if resolver.over_limit() {
        host.count(Counter::OverLimit);
    }
    if settings.learn.is_some() {
        match (&found, resolver.rejected()) {
            (Some(_), _) => *envelope = resolver.verified_text().map(<[u8]>::to_vec),
            (None, Some(reason)) => host.count(Counter::Invalid(reason)),
            (None, None) => {}
        }
        return found;
    }
    found.or_else(|| resolver.new_session(|| fresh_session_id(host)))
}

/// Learn mode: gives the app back its own id in place of the envelope that verified.
/// `cookies`: every Cookie header, when the host already read them (`hostCookie`, which
/// writes them back itself).
fn unwrap_envelope<H: Host>(
    host: &mut H,
    learn: &Learn,
    app_id: &[u8],
    envelope: &[u8],
    cookies: Option<&mut Vec<Vec<u8>>>,
) -> Result<(), String> {
    match learn {
        Learn::Header(name) => host.set_request_header(name, app_id),
        Learn::Cookie(name) => {
            if let Some(values) = cookies {
                for value in values.iter_mut() {
                    *value = cookie::with_value_replaced(value, name, envelope, app_id);
                }
                return Ok(());
            }
            let values = host.request_header_values("cookie")?;
            let unwrapped: Vec<Vec<u8>> =
                values.iter().map(|v| cookie::with_value_replaced(v, name, envelope, app_id)).collect();
            host.set_request_header("cookie", &unwrapped.join(b"; ".as_slice()))
        }
    }
}

impl Stream {
    /// The request headers: find the session, steer, and remove every client-sent copy of
    /// the internal headers.
    pub fn on_request<H: Host>(&mut self, host: &mut H, filter: &Filter) -> Verdict {
        let settings = &filter.settings;
        if settings.scope.is_none() {
            self.cluster_scope = host.cluster_name().unwrap_or_default();
        }
        // Tokens are bound to the cluster: without its name no token may verify (one bound
        // to "" would verify in every such request) and none is minted. Envoy has no name
        // for a route without a cluster (a direct response, a redirect).
        let scope = settings.scope.as_deref().or(Some(self.cluster_scope.as_str()).filter(|s| !s.is_empty()));
        if scope.is_none() && !SCOPE_WARNED.swap(true, Ordering::Relaxed) {
            host.log(
                Level::Warn,
                "a request's upstream cluster has no name tether can read (a route without a cluster, or an Envoy that does not report xds.cluster_name): such requests are neither pinned nor given a token; set `scope` to bind tokens to a fixed name",
            );
        }
        let now = host.now_secs();
        self.request_now = now;
        let token_header_name =
            settings.token_header.as_deref().or(settings.learn.as_ref().and_then(Learn::header));
        let token_header = token_header_name.and_then(|name| host.request_header(name));
        // Fast path: the first Cookie header (clients send one; HTTP/2 cookies arrive joined).
        // Only when it holds no valid token are all Cookie headers read, so a token in a
        // second Cookie header still counts. The resolver verifies each distinct value once
        // (the first header's values are not verified again in the full pass) and at most
        // `session::MAX_CANDIDATES` of them per request. With `hostCookie` every Cookie
        // header is rewritten below, so all of them are read at once.
        let first_cookie = host.request_header("cookie");
        let mut rewritten: Option<Vec<Vec<u8>>> = match (&settings.host_cookie, &first_cookie) {
            (Some(_), Some(_)) => match host.request_header_values("cookie") {
                Ok(values) => Some(values),
                // Without every Cookie header, a client's owner cookie could survive.
                Err(error) => return refuse(host, "read the request headers", &error),
            },
            _ => None,
        };
        let affinity = scope.and_then(|scope| {
            let cookies = Cookies {
                token_header: token_header.as_deref(),
                first: first_cookie.as_deref(),
                all: rewritten.as_deref(),
            };
            find_session(host, filter, scope, now, cookies, &mut self.envelope)
        });
        // Client-sent copies of the internal headers would let a client pick its pod (or
        // cluster) without a token: each is replaced with tether's value, or removed.
        let by_header = H::OWNER_VIA == OwnerVia::SessionFilter;
        let steering = affinity.as_ref().map(|a| session::steering_by(a, settings, by_header));
        // A host that cannot steer to an internal address (a token minted by a wasm build in
        // front of Istio ambient pods, same keys and scope) lets the hash decide, unlogged.
        let owner = match &affinity {
            Some(Affinity::Pinned { token, .. }) if !by_header => {
                Some(&token.owner).filter(|o| o.listener.is_none() || H::INTERNAL_OWNERS)
            }
            _ => None,
        };
        let HeaderPlan::Edit(internal) = session::header_plan(Some(settings), steering.as_ref()) else {
            host.local_reply(503, b"");
            return Verdict::Stop;
        };
        for (name, value) in internal {
            let done = match value {
                Some(value) => host.set_request_header(name, value.as_bytes()),
                None => host.remove_request_header(name),
            };
            if let Err(error) = done {
                return refuse(host, &format!("set request header {name}"), &error);
            }
        }
        #[cfg(feature = "crash-test")]
        crash_test(host);
        if let (Some(learn), Some(Affinity::Pinned { token, .. }), Some(envelope)) =
            (&settings.learn, &affinity, &self.envelope)
        {
            let app_id = token.app_id.as_deref().unwrap_or_default();
            if let Err(error) = unwrap_envelope(host, learn, app_id, envelope, rewritten.as_mut()) {
                // The app must never see tether's envelope in place of its id.
                return refuse(host, "give the app its session id back", &error);
            }
        }
        if settings.cluster_header.is_some() {
            host.reroute();
        }
        if let Some(owner) = owner {
            // Failing here loses affinity for this request (the hash decides), never safety.
            if let Err(error) = host.set_override_host(owner) {
                host.log(Level::Warn, &format!("cannot set the upstream override host ({error})"));
            }
        }
        if let Some(name) = &settings.host_cookie {
            let cookies = rewritten.iter().flatten().map(Vec::as_slice);
            let owner = steering.as_ref().and_then(|s| s.override_host.as_deref()).map(str::as_bytes);
            let done = match cookie::with_owner_cookie(cookies, name.as_bytes(), owner) {
                CookieRewrite::Keep => Ok(()),
                CookieRewrite::Remove => host.remove_request_header("cookie"),
                CookieRewrite::Set(value) => host.set_request_header("cookie", &value),
            };
            if let Err(error) = done {
                return refuse(host, "rewrite the cookie header", &error);
            }
        }
        let Some(affinity) = affinity else {
            return Verdict::Continue;
        };
        if let Affinity::New { rejected: Some(reason), .. } = &affinity {
            host.count(Counter::Invalid(*reason));
        }
        self.affinity = Some(affinity);
        Verdict::Continue
    }

    /// The response headers: which host served, and the token the client needs, if any.
    pub fn on_response<H: Host>(&mut self, host: &mut H, filter: &Filter) {
        let settings = &filter.settings;
        let address = host.upstream_address();
        let by = address.as_deref().and_then(|raw| served_owner(host, raw));
        let unusable = address.is_some() && by.is_none();
        let presented = match &self.affinity {
            Some(Affinity::Pinned { token, .. }) => Some(&token.owner),
            _ => None,
        };
        match (H::OWNER_VIA, &settings.host_cookie) {
            (OwnerVia::OverrideHost, _) => {}
            // stateful_session announces the host it used in this header when it is not the
            // one tether presented; clients need not see it. When the presented owner served,
            // it added nothing, so there is nothing to remove (one host call saved per hit).
            (OwnerVia::SessionFilter, None) => {
                if by.is_none() || by.as_ref() != presented {
                    host.remove_response_header(&settings.host_header);
                }
            }
            // The cookie session state sets its cookie when the host it used is not the one
            // tether presented (a new session, a re-pin, a retry, a local reply, a host
            // tether cannot pin): its unsigned owner cookie never reaches the client.
            (OwnerVia::SessionFilter, Some(name)) => {
                if address.is_some() && (unusable || by.as_ref() != presented) {
                    strip_set_cookie(host, name);
                }
            }
        }
        let (session, decision) = match &settings.learn {
            Some(learn) => match self.learned(host, learn, by, unusable, settings) {
                Some(learned) => learned,
                None => return,
            },
            None => {
                let Some(affinity) = &self.affinity else {
                    return;
                };
                let decision = if unusable {
                    Some(Decision::UnusableHost)
                } else {
                    self.respond(host, affinity, by, settings)
                };
                (affinity.session(), decision)
            }
        };
        if settings.debug_header.is_none() && !settings.access_log {
            return;
        }
        let label = decision.map(|decision| match decision {
            Decision::LocalReply => "local-reply".to_string(),
            Decision::UnusableHost => "unusable-host".to_string(),
            Decision::Upstream(outcome) => match &self.affinity {
                Some(affinity) if settings.learn.is_none() => session::debug_label(affinity, outcome),
                _ => outcome.as_str().to_string(),
            },
        });
        if let (Some(name), Some(label)) = (&settings.debug_header, &label) {
            host.set_response_header(name, label.as_bytes());
        }
        if settings.access_log {
            let decision = label.as_deref().map(|l| host.set_log_field(LOG_DECISION, l));
            let done = host.set_log_field(LOG_SESSION, &session.log_name()).and(decision.unwrap_or(Ok(())));
            if let Err(error) = done {
                host.log(Level::Warn, &format!("cannot record the access log fields ({error})"));
            }
        }
    }

    /// Learn mode's response: the id the app issued, if any, goes to the client in an
    /// envelope naming the pod that served. Returns the session and what happened (`None`:
    /// the app issued no id and the request had no envelope).
    fn learned<H: Host>(
        &self,
        host: &mut H,
        learn: &Learn,
        by: Option<Owner>,
        unusable: bool,
        settings: &Settings,
    ) -> Option<(SessionId, Option<Decision>)> {
        let pinned = match &self.affinity {
            Some(Affinity::Pinned { token, current, .. }) => Some((token, *current)),
            _ => None,
        };
        // The id the app issued, if any (and, for a cookie, every Set-Cookie to rewrite).
        let (set_cookies, issued) = match learn {
            Learn::Header(name) => (Vec::new(), host.response_header(name).filter(|v| !v.is_empty())),
            Learn::Cookie(name) => {
                let set_cookies = host.response_header_values("set-cookie");
                let issued = set_cookies
                    .iter()
                    .rev()
                    .find_map(|v| cookie::set_cookie_value(v, name))
                    .map(<[u8]>::to_vec);
                (set_cookies, issued)
            }
        };
        let session = match (&issued, pinned) {
            (Some(id), _) => SessionId::of_app_id(id),
            (None, Some((token, _))) => token.session,
            (None, None) => return None,
        };
        if issued.as_deref().is_some_and(|id| !is_app_id(id)) {
            host.count(Counter::AppIdNotWrapped);
            if !NOT_WRAPPED_WARNED.swap(true, Ordering::Relaxed) {
                host.log(
                    Level::Warn,
                    &format!("an app-issued session id is not 1-{MAX_APP_ID_LEN} bytes of visible ASCII: it reaches the client as the app sent it, without affinity (counter tether.app_id_not_wrapped)"),
                );
            }
            return Some((session, None));
        }
        if unusable {
            return Some((session, Some(Decision::UnusableHost)));
        }
        let Some(by) = by else {
            return Some((session, Some(Decision::LocalReply)));
        };
        let cluster = match settings.cluster_header {
            Some(_) => host.cluster_name().unwrap_or_default(),
            None => String::new(),
        };
        // An envelope's issue time is the response's (a long request does not age it).
        let now = if issued.is_some() { host.now_secs() } else { self.request_now };
        let served = Served { by, cluster };
        let (outcome, envelope) = learn::respond(pinned, issued.as_deref(), &served, now, settings);
        if outcome != Outcome::Hit || H::CHEAP_DETAILS || envelope != Envelope::None {
            let details = host.response_code_details();
            if details.as_deref() != Some(b"via_upstream".as_slice()) {
                return Some((session, Some(Decision::LocalReply)));
            }
        }
        host.count(Counter::of(outcome));
        let text = match envelope {
            Envelope::None => None,
            Envelope::Echo => self.envelope.clone(),
            Envelope::Seal(token) => {
                let scope = settings.scope.as_deref().unwrap_or(&self.cluster_scope);
                session::seal(&token, scope, settings, || random_nonce(host)).map(String::into_bytes)
            }
        };
        if let (Some(text), Some(id)) = (text, &issued) {
            match learn {
                Learn::Header(name) => host.set_response_header(name, &text),
                Learn::Cookie(name) => {
                    host.remove_response_header("set-cookie");
                    for value in &set_cookies {
                        let wrap = cookie::set_cookie_value(value, name) == Some(id.as_slice());
                        let value =
                            if wrap { cookie::with_set_cookie_value(value, &text) } else { value.clone() };
                        if let Err(error) = host.add_response_header("set-cookie", &value) {
                            host.log(Level::Warn, &format!("cannot add set-cookie ({error})"));
                        }
                    }
                }
            }
            if let Some(value) = &settings.cache_control {
                if host.response_header("cache-control").is_none() {
                    add_response_header(host, "cache-control", value);
                }
            }
        }
        Some((session, Some(Decision::Upstream(outcome))))
    }

    /// Sends the token the response needs, if any, and asks caches to keep a response that
    /// carries one private (`cacheControl`); returns what happened (`None`: no token could
    /// be sealed).
    fn respond<H: Host>(
        &self,
        host: &mut H,
        affinity: &Affinity,
        by: Option<Owner>,
        settings: &Settings,
    ) -> Option<Decision> {
        let served_any = by.is_some();
        let cluster = match (settings.cluster_header.is_some(), served_any) {
            (true, true) => host.cluster_name().unwrap_or_default(),
            _ => String::new(),
        };
        if !session::can_pin_cluster(&cluster) && !CLUSTER_WARNED.swap(true, Ordering::Relaxed) {
            host.log(
                Level::Warn,
                &format!(
                    "cluster name of {} bytes is longer than a token can record ({} bytes): sessions served by it are not pinned to their cluster (clusterHeader) and follow the route's weights",
                    cluster.len(),
                    crate::token::MAX_CLUSTER_LEN
                ),
            );
        }
        // The clock is read again unless the outcome cannot depend on it (a hit without an
        // idle timeout): a long poll or a slow upload can outlast the idle window, and the
        // token's issue time, the refresh decision and Max-Age must count from now.
        let mut now = self.request_now;
        let (outcome, token) = match by {
            Some(by) => {
                let served = Served { by, cluster };
                let early = session::respond(affinity, &served, now, settings);
                if session::needs_fresh_clock(early.0, settings) {
                    now = host.now_secs();
                    session::respond(affinity, &served, now, settings)
                } else {
                    early
                }
            }
            None => (Outcome::New, None),
        };
        // A hit sends nothing, so whether the answer came from the upstream matters only
        // otherwise (and for the label and counter): on a local reply (e.g. 503 after
        // retries) the upstream host is the last failed one, and no token may name it.
        if outcome != Outcome::Hit || !served_any || H::CHEAP_DETAILS {
            let details = host.response_code_details();
            if !served_any || details.as_deref() != Some(b"via_upstream".as_slice()) {
                return Some(Decision::LocalReply);
            }
        }
        host.count(Counter::of(outcome));
        if let Some(token) = token {
            let scope = settings.scope.as_deref().unwrap_or(&self.cluster_scope);
            let sealed = session::seal(&token, scope, settings, || random_nonce(host))?;
            let (by_cookie, by_header) = session::carriers(affinity, settings);
            let mut sent = false;
            if by_cookie {
                if let Some(cookie) = session::set_cookie(&sealed, &token, now, settings) {
                    sent = add_response_header(host, "set-cookie", &cookie);
                }
            }
            if let (true, Some(name)) = (by_header, &settings.token_header) {
                host.set_response_header(name, sealed.as_bytes());
                sent = true;
            }
            // A shared cache must not hand this session's token to other clients. The app's
            // own Cache-Control, if any, stands: it knows its content.
            if let (true, Some(value)) = (sent, &settings.cache_control) {
                if host.response_header("cache-control").is_none() {
                    add_response_header(host, "cache-control", value);
                }
            }
        }
        Some(Decision::Upstream(outcome))
    }
}

/// What a response turned out to be, for the debug header and the access log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// Envoy answered (`local-reply`): no token, no counter.
    LocalReply,
    /// An upstream host tether cannot pin served (`unusable-host`): no token; counted.
    UnusableHost,
    /// The upstream answered.
    Upstream(Outcome),
}

#[cfg(test)]
mod learn_tests;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token;

    pub(super) const KEYS: &str = "k1=MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    pub(super) const NOW: u64 = 1_790_000_000;

    /// Envoy as a map of headers and a few facts; records what the filter did.
    #[derive(Default)]
    pub(super) struct Fake<const DIRECT: bool> {
        pub(super) request: Vec<(String, Vec<u8>)>,
        pub(super) response: Vec<(String, Vec<u8>)>,
        pub(super) refuse_edits: bool,
        /// Envoy cannot name the upstream cluster (`xds.cluster_name` absent).
        pub(super) no_cluster: bool,
        /// `upstream.address` as Envoy prints it.
        pub(super) served_by: Option<String>,
        pub(super) via_upstream: bool,
        pub(super) override_host: Option<Owner>,
        pub(super) replied: Option<u32>,
        pub(super) counted: Vec<Counter>,
        pub(super) logged: Vec<(String, String)>,
    }

    impl<const DIRECT: bool> Host for Fake<DIRECT> {
        const OWNER_VIA: OwnerVia = if DIRECT { OwnerVia::OverrideHost } else { OwnerVia::SessionFilter };
        const CHEAP_DETAILS: bool = DIRECT;
        const INTERNAL_OWNERS: bool = !DIRECT;

        fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
            self.request.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        }
        fn request_header_values(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
            Ok(self.request.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect())
        }
        fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
            if self.refuse_edits {
                return Err("refused".into());
            }
            self.request.retain(|(n, _)| n != name);
            self.request.push((name.into(), value.to_vec()));
            Ok(())
        }
        fn remove_request_header(&mut self, name: &str) -> Result<(), String> {
            self.request.retain(|(n, _)| n != name);
            Ok(())
        }
        fn reroute(&mut self) {}
        fn set_override_host(&mut self, owner: &Owner) -> Result<(), String> {
            self.override_host = Some(owner.clone());
            Ok(())
        }
        fn cluster_name(&mut self) -> Option<String> {
            (!self.no_cluster).then(|| "pods".into())
        }
        fn upstream_address(&mut self) -> Option<Vec<u8>> {
            self.served_by.clone().map(String::into_bytes)
        }
        fn response_code_details(&mut self) -> Option<Vec<u8>> {
            Some(if self.via_upstream { b"via_upstream".to_vec() } else { b"upstream_reset".to_vec() })
        }
        fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
            self.response.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
        }
        fn response_header_values(&mut self, name: &str) -> Vec<Vec<u8>> {
            self.response.iter().filter(|(n, _)| n == name).map(|(_, v)| v.clone()).collect()
        }
        fn remove_response_header(&mut self, name: &str) {
            self.response.retain(|(n, _)| n != name);
        }
        fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
            self.response.push((name.into(), value.to_vec()));
            Ok(())
        }
        fn set_response_header(&mut self, name: &str, value: &[u8]) {
            self.remove_response_header(name);
            self.response.push((name.into(), value.to_vec()));
        }
        fn now_secs(&mut self) -> u64 {
            NOW
        }
        fn log(&mut self, _: Level, _: &str) {}
        fn local_reply(&mut self, status: u32, _: &[u8]) {
            self.replied = Some(status);
        }
        fn count(&mut self, counter: Counter) {
            self.counted.push(counter);
        }
        fn set_log_field(&mut self, key: &str, value: &str) -> Result<(), String> {
            self.logged.push((key.into(), value.into()));
            Ok(())
        }
    }

    fn filter(via: OwnerVia) -> Filter {
        let json = format!(r#"{{"keys":"{KEYS}","debugHeader":"x-tether"}}"#);
        Filter::load(json.as_bytes(), &|_| None, via).unwrap()
    }

    pub(super) fn token_for(owner: &str, filter: &Filter) -> String {
        token_in(owner, filter, "pods")
    }

    fn token_in(owner: &str, filter: &Filter, scope: &str) -> String {
        let t = token::SessionToken {
            session: SessionId([5; 16]),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 10,
            expires_at: NOW + 600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        };
        token::seal(&t, filter.settings.keyring.signing_key().unwrap(), scope)
    }

    pub(super) fn request<const D: bool>(headers: &[(&str, &str)]) -> Fake<D> {
        Fake {
            request: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
            via_upstream: true,
            ..Fake::default()
        }
    }

    pub(super) fn header<const D: bool>(host: &Fake<D>, name: &str) -> Option<String> {
        host.request.iter().find(|(n, _)| n == name).map(|(_, v)| String::from_utf8(v.clone()).unwrap())
    }

    #[test]
    fn both_hosts_pin_the_same_way_and_remove_client_copies() {
        let spoofed = [("x-tether-host", "MTI3LjAuMC4xOjE="), ("x-tether-key", "mine")];
        for direct in [false, true] {
            let f = filter(if direct { OwnerVia::OverrideHost } else { OwnerVia::SessionFilter });
            let cookie = format!("tether={}", token_for("10.0.0.2:8080", &f));
            let headers = [spoofed[0], spoofed[1], ("cookie", cookie.as_str())];
            let (host_header, override_host, key) = if direct {
                let mut host: Fake<true> = request(&headers);
                assert_eq!(Stream::default().on_request(&mut host, &f), Verdict::Continue);
                (header(&host, "x-tether-host"), host.override_host.clone(), header(&host, "x-tether-key"))
            } else {
                let mut host: Fake<false> = request(&headers);
                assert_eq!(Stream::default().on_request(&mut host, &f), Verdict::Continue);
                (header(&host, "x-tether-host"), host.override_host.clone(), header(&host, "x-tether-key"))
            };
            assert_eq!(key.as_deref(), Some("05".repeat(16).as_str()), "direct {direct}");
            if direct {
                assert_eq!((host_header, override_host), (None, Some("10.0.0.2:8080".parse().unwrap())));
            } else {
                assert_eq!((host_header.as_deref(), override_host), (Some("MTAuMC4wLjI6ODA4MA=="), None));
            }
        }
    }

    #[test]
    fn a_forged_token_never_steers_either_host() {
        let f = filter(OwnerVia::OverrideHost);
        let mut forged = token_for("10.0.0.2:8080", &f);
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        let mut host: Fake<true> =
            request(&[("cookie", &format!("tether={forged}")), ("x-tether-host", "x")]);
        let mut stream = Stream::default();
        assert_eq!(stream.on_request(&mut host, &f), Verdict::Continue);
        assert_eq!((host.override_host.clone(), header(&host, "x-tether-host")), (None, None));
        host.served_by = Some("10.0.0.3:8080".parse().unwrap());
        stream.on_response(&mut host, &f);
        let label = host.response.iter().find(|(n, _)| n == "x-tether").map(|(_, v)| v.clone());
        assert!(label.is_some_and(|l| l.starts_with(b"invalid:")), "{:?}", host.response);
    }

    /// A token bound to "" would verify wherever the cluster is unknown: without a cluster
    /// name nothing verifies and nothing is minted, and client copies still go.
    #[test]
    fn without_a_cluster_name_no_token_steers_and_none_is_minted() {
        fn check<const D: bool>(f: &Filter) {
            for token in [token_in("10.0.0.2:8080", f, ""), token_for("10.0.0.2:8080", f)] {
                let cookie = format!("tether={token}");
                let spoofed = [("cookie", cookie.as_str()), ("x-tether-host", "x"), ("x-tether-key", "mine")];
                let mut host: Fake<D> = Fake { no_cluster: true, ..request(&spoofed) };
                let mut stream = Stream::default();
                assert_eq!(stream.on_request(&mut host, f), Verdict::Continue);
                let steered = (
                    host.override_host.clone(),
                    header(&host, "x-tether-host"),
                    header(&host, "x-tether-key"),
                );
                assert_eq!(steered, (None, None, None), "direct {D}");
                host.served_by = Some("10.0.0.3:8080".into());
                stream.on_response(&mut host, f);
                assert!(!host.response.iter().any(|(n, _)| n == "set-cookie"), "{:?}", host.response);
                assert!(host.counted.is_empty(), "{:?}", host.counted);
            }
        }
        check::<true>(&filter(OwnerVia::OverrideHost));
        check::<false>(&filter(OwnerVia::SessionFilter));
    }

    #[test]
    fn a_refused_header_edit_refuses_the_request() {
        let f = filter(OwnerVia::OverrideHost);
        let mut host: Fake<true> = request(&[("x-tether-host", "x")]);
        host.refuse_edits = true;
        assert_eq!(Stream::default().on_request(&mut host, &f), Verdict::Stop);
        assert_eq!(host.replied, Some(500));
    }

    #[test]
    fn only_an_upstream_answer_sets_the_cookie() {
        let f = filter(OwnerVia::OverrideHost);
        for (served_by, via_upstream, cookie) in
            [(Some("10.0.0.3:8080"), true, true), (Some("10.0.0.3:8080"), false, false), (None, false, false)]
        {
            let mut host: Fake<true> = request(&[]);
            let mut stream = Stream::default();
            stream.on_request(&mut host, &f);
            host.served_by = served_by.map(|s| s.parse().unwrap());
            host.via_upstream = via_upstream;
            stream.on_response(&mut host, &f);
            let set = host.response.iter().any(|(n, _)| n == "set-cookie");
            assert_eq!(set, cookie, "{served_by:?} {via_upstream}");
            assert_eq!(host.counted.contains(&Counter::Minted), cookie);
        }
    }

    #[test]
    fn envoys_reply_after_trying_the_owner_is_a_hit_only_where_details_cost_a_tenth_of_the_path() {
        for direct in [false, true] {
            let f = filter(if direct { OwnerVia::OverrideHost } else { OwnerVia::SessionFilter });
            let cookie = format!("tether={}", token_for("10.0.0.2:8080", &f));
            let label = |host: &Fake<true>| {
                host.response.iter().find(|(n, _)| n == "x-tether").map(|(_, v)| v.clone())
            };
            if direct {
                let mut host: Fake<true> = request(&[("cookie", &cookie)]);
                let mut stream = Stream::default();
                stream.on_request(&mut host, &f);
                (host.served_by, host.via_upstream) = (Some("10.0.0.2:8080".parse().unwrap()), false);
                stream.on_response(&mut host, &f);
                assert_eq!(label(&host).as_deref(), Some(b"local-reply".as_slice()));
                assert!(host.counted.is_empty(), "{:?}", host.counted);
            } else {
                let mut host: Fake<false> = request(&[("cookie", &cookie)]);
                let mut stream = Stream::default();
                stream.on_request(&mut host, &f);
                (host.served_by, host.via_upstream) = (Some("10.0.0.2:8080".parse().unwrap()), false);
                stream.on_response(&mut host, &f);
                // The known limit of the wasm build (documented): labelled and counted a hit.
                assert_eq!(host.counted, vec![Counter::Hits]);
                assert!(!host.response.iter().any(|(n, _)| n == "set-cookie"));
            }
        }
    }

    /// One exchange through a host of either kind: the request's headers, the pod that
    /// served (and whether it answered), the app's response headers; the response after
    /// tether and what it gave the access log.
    pub(super) fn exchange<const D: bool>(
        f: &Filter,
        request_headers: &[(&str, &str)],
        served_by: &str,
        via_upstream: bool,
        app_headers: &[(&str, &str)],
    ) -> Fake<D> {
        let mut host: Fake<D> = request(request_headers);
        let mut stream = Stream::default();
        stream.on_request(&mut host, f);
        host.served_by = Some(served_by.parse().unwrap());
        host.via_upstream = via_upstream;
        host.response = app_headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect();
        stream.on_response(&mut host, f);
        host
    }

    pub(super) fn response_values<const D: bool>(host: &Fake<D>, name: &str) -> Vec<String> {
        host.response
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into())
            .collect()
    }

    /// Istio ambient: a pod behind the internal listener `connect_originate`. The token
    /// records the listener, and the owner is presented as Envoy names the host.
    #[test]
    fn an_owner_behind_an_internal_listener_is_presented_as_envoy_names_it() {
        const AMBIENT: &str = "envoy://connect_originate/10.0.0.5:8080";
        let header_mode = filter(OwnerVia::SessionFilter);
        let json = format!(r#"{{"keys":"{KEYS}","debugHeader":"x-tether","hostCookie":"owner"}}"#);
        let cookie_mode = Filter::load(json.as_bytes(), &|_| None, OwnerVia::SessionFilter).unwrap();
        for f in [&header_mode, &cookie_mode] {
            // The session filter's own unsigned cookie for the new host.
            let minted: Fake<false> = exchange(f, &[], AMBIENT, true, &[("set-cookie", "owner=x; Path=/")]);
            assert_eq!(response_values(&minted, "x-tether"), ["new"]);
            let set = response_values(&minted, "set-cookie");
            let ours: Vec<&String> = set.iter().filter(|v| v.starts_with("tether=")).collect();
            assert_eq!(ours.len(), 1, "{set:?}");
            // In cookie mode the session filter's unsigned owner cookie is stripped.
            let stripped = set.iter().all(|v| !v.starts_with("owner="));
            assert_eq!(stripped, f.settings.host_cookie.is_some(), "{set:?}");
            let text = ours[0].trim_start_matches("tether=").split(';').next().unwrap().to_string();
            let scope = "pods";
            let keys = &f.settings.keyring;
            let token = token::open(text.as_bytes(), keys, scope, NOW, f.settings.limits()).unwrap().token;
            assert_eq!(token.owner, AMBIENT.parse::<Owner>().unwrap());
            let cookie = format!("tether={text}");
            let hit: Fake<false> = exchange(f, &[("cookie", &cookie)], AMBIENT, true, &[]);
            assert_eq!(response_values(&hit, "x-tether"), ["hit"]);
            let presented = match &f.settings.host_cookie {
                None => header(&hit, "x-tether-host").unwrap(),
                Some(_) => {
                    let cookies = header(&hit, "cookie").unwrap();
                    cookies.split("; ").find_map(|c| c.strip_prefix("owner=")).unwrap().to_string()
                }
            };
            let want = &AMBIENT.parse::<Owner>().unwrap();
            let expected = match &f.settings.host_cookie {
                None => crate::address::override_host_value(want),
                Some(_) => crate::address::override_cookie_value(want),
            };
            assert_eq!(presented, expected);
            // The same pod reached as a plain ip:port (its namespace left ambient): same owner,
            // the token re-signed with the form the cluster now uses.
            let plain: Fake<false> = exchange(f, &[("cookie", &cookie)], "10.0.0.5:8080", true, &[]);
            assert_eq!(response_values(&plain, "x-tether"), ["refreshed"]);
        }
    }

    /// The native host never hands Envoy an internal address (it would refuse it).
    #[test]
    fn an_internal_owner_is_not_given_to_an_override_host_that_takes_ips_only() {
        let f = filter(OwnerVia::OverrideHost);
        let cookie = format!("tether={}", token_for("envoy://connect_originate/10.0.0.5:8080", &f));
        let mut host: Fake<true> = request(&[("cookie", &cookie)]);
        assert_eq!(Stream::default().on_request(&mut host, &f), Verdict::Continue);
        assert_eq!(host.override_host, None);
        assert_eq!(header(&host, "x-tether-key").as_deref(), Some("05".repeat(16).as_str()));
    }

    /// A served host tether cannot steer to is counted and labelled, no token names it,
    /// and the session filter's own owner cookie is still stripped.
    #[test]
    fn a_host_in_a_form_tether_cannot_use_pins_nothing_and_leaks_nothing() {
        let json = format!(r#"{{"keys":"{KEYS}","debugHeader":"x-tether","hostCookie":"owner"}}"#);
        let cookie_mode = Filter::load(json.as_bytes(), &|_| None, OwnerVia::SessionFilter).unwrap();
        let app = [("set-cookie", "owner=Cg8; Path=/"), ("set-cookie", "app=1")];
        for by in ["envoy://connect_originate/not-an-address", "pipe:/run/app.sock"] {
            let host: Fake<false> = exchange(&cookie_mode, &[], by, true, &app);
            assert_eq!(response_values(&host, "x-tether"), ["unusable-host"], "{by}");
            assert_eq!(response_values(&host, "set-cookie"), ["app=1"], "{by}");
            assert_eq!(host.counted, vec![Counter::UnusableHost], "{by}");
        }
        // The native module cannot hand Envoy an internal address: such pods are unusable there.
        let native = filter(OwnerVia::OverrideHost);
        let host: Fake<true> = exchange(&native, &[], "envoy://connect_originate/10.0.0.5:8080", true, &[]);
        assert_eq!(response_values(&host, "x-tether"), ["unusable-host"]);
        assert!(response_values(&host, "set-cookie").is_empty());
        assert_eq!(host.counted, vec![Counter::UnusableHost]);
    }

    #[test]
    fn a_response_carrying_a_token_is_private_unless_the_app_said_otherwise() {
        let load = |extra: &str| {
            let json = format!(r#"{{"keys":"{KEYS}"{extra}}}"#);
            Filter::load(json.as_bytes(), &|_| None, OwnerVia::SessionFilter).unwrap()
        };
        let on = load("");
        let cookie = format!("tether={}", token_for("10.0.0.2:8080", &on));
        let pinned = [("cookie", cookie.as_str())];
        let own = [("cache-control", "public, max-age=60")];
        let header_mode = load(r#","type":"Header","cacheControl":"no-cache=\"Set-Cookie\"""#);
        type Headers<'a> = &'a [(&'a str, &'a str)];
        // (filter, request, served by, app's headers, Cache-Control wanted, token sent)
        type Case<'a> = (&'a Filter, Headers<'a>, &'a str, Headers<'a>, &'a [&'a str], bool);
        let cases: [Case; 7] = [
            (&on, &[], "10.0.0.2:8080", &[], &["private"], true),
            (&on, &[], "10.0.0.2:8080", &own, &["public, max-age=60"], true),
            (&on, &pinned, "10.0.0.2:8080", &[], &[], false),
            (&on, &pinned, "10.0.0.2:8080", &own, &["public, max-age=60"], false),
            (&load(r#","repinAfter":"0s""#), &pinned, "10.0.0.3:8080", &[], &["private"], true),
            (&load(r#","cacheControl":"""#), &[], "10.0.0.2:8080", &[], &[], true),
            (&header_mode, &[], "10.0.0.2:8080", &[], &["no-cache=\"Set-Cookie\""], true),
        ];
        for (i, (f, req, by, app, want, token)) in cases.into_iter().enumerate() {
            let host: Fake<false> = exchange(f, req, by, true, app);
            assert_eq!(response_values(&host, "cache-control"), want, "case {i}: {:?}", host.response);
            let sent = host.response.iter().any(|(n, _)| n == "set-cookie" || n == "x-tether-session");
            assert_eq!(sent, token, "case {i}");
        }
        // Envoy's own reply carries no token, so nothing is added.
        let host: Fake<true> = exchange(&on, &[], "10.0.0.2:8080", false, &[]);
        assert!(response_values(&host, "cache-control").is_empty(), "{:?}", host.response);
    }

    #[test]
    fn the_access_log_gets_the_debug_label_and_a_hash_of_the_session_only_when_asked() {
        let json = format!(r#"{{"keys":"{KEYS}","accessLog":true}}"#);
        let on = Filter::load(json.as_bytes(), &|_| None, OwnerVia::OverrideHost).unwrap();
        let cookie = format!("tether={}", token_for("10.0.0.2:8080", &on));
        let hit: Fake<true> = exchange(&on, &[("cookie", &cookie)], "10.0.0.2:8080", true, &[]);
        let ours = SessionId([5; 16]).log_name();
        let fields = |decision: &str, session: &str| {
            vec![
                (LOG_DECISION.to_string(), decision.to_string()),
                (LOG_SESSION.to_string(), session.to_string()),
            ]
        };
        assert_eq!(hit.logged, fields("hit", &ours));
        // No debug header was asked for: the access log does not add one.
        assert!(response_values(&hit, "x-tether").is_empty());
        let away: Fake<true> = exchange(&on, &[("cookie", &cookie)], "10.0.0.3:8080", true, &[]);
        assert_eq!(away.logged, fields("owner-away", &ours));
        let local: Fake<true> = exchange(&on, &[("cookie", &cookie)], "10.0.0.2:8080", false, &[]);
        assert_eq!(local.logged, fields("local-reply", &ours));
        let new: Fake<true> = exchange(&on, &[], "10.0.0.2:8080", true, &[]);
        let invalid: Fake<true> = exchange(&on, &[("cookie", "tether=garbage")], "10.0.0.2:8080", true, &[]);
        for (host, label) in [(&new, "new"), (&invalid, "invalid:malformed")] {
            let (decision, session) = (&host.logged[0], &host.logged[1]);
            assert_eq!(decision, &(LOG_DECISION.to_string(), label.to_string()));
            assert_eq!(session.0, LOG_SESSION);
            assert!(
                session.1.len() == 8 && session.1 != ours && session.1.bytes().all(|b| b.is_ascii_hexdigit())
            );
            // Never the session id (the hash key the request carried upstream) or the token.
            let key = header(host, "x-tether-key").unwrap();
            assert!(!key.starts_with(&session.1), "{key} {}", session.1);
        }
        let off: Fake<true> =
            exchange(&filter(OwnerVia::OverrideHost), &[("cookie", &cookie)], "10.0.0.2:8080", true, &[]);
        assert!(off.logged.is_empty(), "{:?}", off.logged);
    }

    #[test]
    fn counters_have_dense_indexes_and_their_names() {
        let all: Vec<Counter> = Counter::all().collect();
        assert_eq!(all.len(), Counter::COUNT);
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert_eq!(Counter::Invalid(Rejection::Expired).name(), "tether.invalid_token.expired");
    }
}
