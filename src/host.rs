//! The only module that talks to the proxy-wasm host. It moves bytes in and out and
//! leaves every decision to `session`. Every host call goes through
//! `proxy_wasm::hostcalls` and its `Result` is handled: a panic would kill the VM.

use crate::address::parse_upstream_address;
use crate::config::{self, Settings};
use crate::cookie::{self, CookieRewrite};
use crate::session::{self, Affinity, Outcome, Served};
use crate::token::{Rejection, SessionId};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("tether panicked (the VM is now unusable): {info}"));
    }));
    proxy_wasm::set_root_context(|_| Box::new(Root { shared: None }));
}}

/// Whether this VM has already logged a request that arrived without a configuration.
static UNCONFIGURED_WARNED: AtomicBool = AtomicBool::new(false);
/// Whether this VM has already warned about a cluster name too long to pin.
static CLUSTER_WARNED: AtomicBool = AtomicBool::new(false);

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Wall-clock unix seconds, shared by every Envoy so that expiry means the same everywhere.
fn now_secs() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}

fn fresh_session_id() -> Option<SessionId> {
    let mut id = [0u8; 16];
    match getrandom::getrandom(&mut id) {
        Ok(()) => Some(SessionId(id)),
        Err(e) => {
            log(
                LogLevel::Error,
                &format!("no randomness for a session id ({e}); request passes without affinity"),
            );
            None
        }
    }
}

fn random_nonce() -> Option<[u8; crate::token::NONCE_LEN]> {
    let mut nonce = [0u8; crate::token::NONCE_LEN];
    match getrandom::getrandom(&mut nonce) {
        Ok(()) => Some(nonce),
        Err(e) => {
            log(LogLevel::Error, &format!("no randomness for a token nonce ({e}); no token sent"));
            None
        }
    }
}

/// Removes the response's `Set-Cookie` headers for cookie `name` and keeps the others.
fn strip_set_cookie(name: &str) {
    let headers = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default();
    let set_cookies: Vec<Vec<u8>> =
        headers.into_iter().filter(|(n, _)| n == "set-cookie").map(|(_, v)| v).collect();
    if !set_cookies.iter().any(|v| cookie::set_cookie_name(v) == name.as_bytes()) {
        return;
    }
    let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, "set-cookie");
    for value in set_cookies.iter().filter(|v| cookie::set_cookie_name(v) != name.as_bytes()) {
        let _ = hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, "set-cookie", value);
    }
}

/// The first value of a request header (binary-safe).
fn header_value(name: &str) -> Option<Vec<u8>> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// Counters on Envoy's stats (`wasmcustom.tether.*`, `envoy_wasmcustom_tether_*`).
struct Metrics {
    minted: Option<u32>,
    hits: Option<u32>,
    repinned: Option<u32>,
    refreshed: Option<u32>,
    /// Requests carrying more distinct candidate tokens than tether verifies.
    over_limit: Option<u32>,
    invalid: Vec<(Rejection, Option<u32>)>,
}

impl Metrics {
    fn define() -> Metrics {
        let counter =
            |name: &str| hostcalls::define_metric(MetricType::Counter, &format!("tether.{name}")).ok();
        Metrics {
            minted: counter("sessions_minted"),
            hits: counter("affinity_hits"),
            repinned: counter("repinned"),
            refreshed: counter("refreshed"),
            over_limit: counter("tokens_over_limit"),
            invalid: Rejection::ALL
                .iter()
                .map(|r| (*r, counter(&format!("invalid_token.{}", r.as_str()))))
                .collect(),
        }
    }

    fn bump(id: Option<u32>) {
        if let Some(id) = id {
            let _ = hostcalls::increment_metric(id, 1);
        }
    }

    fn outcome(&self, outcome: Outcome) {
        Metrics::bump(match outcome {
            Outcome::Hit => self.hits,
            Outcome::New => self.minted,
            Outcome::Repinned => self.repinned,
            Outcome::Refreshed => self.refreshed,
        });
    }

    fn rejected(&self, reason: Rejection) {
        Metrics::bump(self.invalid.iter().find(|(r, _)| *r == reason).and_then(|(_, id)| *id));
    }
}

/// Test-only (feature `crash-test`): panics when the request asks for it.
#[cfg(feature = "crash-test")]
#[allow(clippy::panic)]
fn crash_test() {
    if let Ok(Some(_)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, "x-tether-crash-test") {
        panic!("crash test requested");
    }
}

struct Shared {
    settings: Settings,
    metrics: Metrics,
    /// Bench-only (feature `bench-diag`): extra token verifications per request.
    #[cfg(feature = "bench-diag")]
    token_repeat: usize,
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

struct Root {
    shared: Option<Rc<Shared>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        log(
            LogLevel::Info,
            concat!("tether ", env!("CARGO_PKG_VERSION"), " (", env!("TETHER_GIT_SHA"), ") started"),
        );
        true
    }

    fn on_configure(&mut self, _: usize) -> bool {
        let raw = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                log(LogLevel::Error, &format!("cannot read the plugin configuration ({status:?})"));
                return false;
            }
        };
        match config::load(&raw, &|var| std::env::var(var).ok()) {
            Ok(settings) => {
                log(LogLevel::Info, &describe(&settings));
                if settings.inline_keys {
                    log(
                        LogLevel::Warn,
                        "signing keys are inline in the configuration: for demos only, use keysFromEnv in production",
                    );
                }
                self.shared = Some(Rc::new(Shared {
                    settings,
                    metrics: Metrics::define(),
                    #[cfg(feature = "bench-diag")]
                    token_repeat: std::env::var("TETHER_BENCH_TOKEN_REPEAT")
                        .ok()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0),
                }));
                true
            }
            Err(error) => {
                log(LogLevel::Error, &error.to_string());
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would panic inside the SDK's dispatcher: always return a context.
        Some(Box::new(Stream {
            shared: self.shared.clone(),
            affinity: None,
            cluster_scope: String::new(),
            request_now: 0,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// The start-up line: what is configured, naming key ids and never secrets.
fn describe(s: &Settings) -> String {
    let keys = s.keyring.key_ids().join(",");
    let signing = s.keyring.signing_key().map_or("", |k| k.id());
    let carriers = match (&s.cookie, &s.token_header) {
        (Some(c), Some(h)) => format!("cookie `{}` and header `{h}`", c.name),
        (Some(c), None) => format!("cookie `{}`", c.name),
        (None, Some(h)) => format!("header `{h}`"),
        (None, None) => "nothing".into(),
    };
    format!(
        "configured: {carriers}, {:?} tokens, keys [{keys}] signing with `{signing}`, absolute timeout {}s, idle timeout {}, scope {}, owner to {} / key header {}",
        s.format,
        s.absolute_timeout_secs,
        s.idle_timeout_secs.map_or("off".into(), |t| format!("{t}s")),
        s.scope.as_deref().unwrap_or("(upstream cluster)"),
        s.host_cookie.as_ref().map_or(format!("header {}", s.host_header), |c| format!("cookie {c}")),
        s.key_header
    )
}

struct Stream {
    shared: Option<Rc<Shared>>,
    affinity: Option<Affinity>,
    /// The upstream cluster's name, read per request when no `scope` is configured.
    cluster_scope: String,
    /// The clock as the request read it (unix seconds).
    request_now: u64,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            // No configuration reached this stream: fail safe (see `session::header_plan`).
            if let session::HeaderPlan::Refuse = session::header_plan(None, None) {
                if !UNCONFIGURED_WARNED.swap(true, Ordering::Relaxed) {
                    log(
                        LogLevel::Error,
                        "a request reached tether before any valid configuration; refused (503)",
                    );
                }
                let _ = hostcalls::send_http_response(503, vec![], Some(b"tether is not configured\n"));
                return Action::Pause;
            }
            return Action::Continue;
        };
        let settings = &shared.settings;
        #[cfg(feature = "crash-test")]
        crash_test();
        if settings.scope.is_none() {
            self.cluster_scope = property(&["xds", "cluster_name"])
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
        }
        let scope = settings.scope.as_deref().unwrap_or(&self.cluster_scope);
        let now = now_secs();
        self.request_now = now;
        let token_header = settings.token_header.as_ref().and_then(|name| header_value(name));
        // Fast path: the first Cookie header (clients send one; HTTP/2 cookies arrive joined).
        // Only when it holds no valid token are all Cookie headers read, so a token in a
        // second Cookie header still counts. The resolver verifies each distinct value once
        // (the first header's values are not verified again in the full pass) and at most
        // `session::MAX_CANDIDATES` of them per request. With `hostCookie` every Cookie
        // header is rewritten below, so all of them are read at once.
        let first_cookie = header_value("cookie");
        let rewritten: Option<Vec<(String, Vec<u8>)>> = match (&settings.host_cookie, &first_cookie) {
            (Some(_), Some(_)) => match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
                Ok(headers) => Some(headers),
                Err(status) => {
                    // Without every Cookie header, a client's owner cookie could survive.
                    log(
                        LogLevel::Error,
                        &format!("cannot read the request headers ({status:?}); request refused"),
                    );
                    let _ = hostcalls::send_http_response(500, vec![], None);
                    return Action::Pause;
                }
            },
            _ => None,
        };
        let all_headers: Vec<(String, Vec<u8>)>;
        let mut resolver = session::Resolver::new(scope, settings, now);
        let mut found = resolver.token_header(token_header.as_deref());
        if let Some(headers) = &rewritten {
            for (_, value) in headers.iter().filter(|(name, _)| name == "cookie") {
                if found.is_some() || !resolver.wants_more() {
                    break;
                }
                found = resolver.cookie_header(value);
            }
        } else if let (None, Some(first)) = (&found, first_cookie.as_deref()) {
            found = resolver.cookie_header(first);
            if found.is_none() && resolver.wants_more() {
                all_headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
                for (_, value) in all_headers.iter().filter(|(name, _)| name == "cookie") {
                    found = resolver.cookie_header(value);
                    if found.is_some() || !resolver.wants_more() {
                        break;
                    }
                }
            }
        }
        #[cfg(feature = "bench-diag")]
        token_work_again(shared.token_repeat, scope, settings, now, first_cookie.as_deref());
        if resolver.over_limit() {
            Metrics::bump(shared.metrics.over_limit);
        }
        let affinity = found.or_else(|| resolver.new_session(fresh_session_id));
        // Client-sent copies of the internal headers would let a client pick its pod (or
        // cluster) without a token: each is replaced with tether's value, or removed.
        let steering = affinity.as_ref().map(|a| session::steering(a, settings));
        let session::HeaderPlan::Edit(internal) = session::header_plan(Some(settings), steering.as_ref())
        else {
            let _ = hostcalls::send_http_response(503, vec![], None);
            return Action::Pause;
        };
        for (name, value) in internal {
            let done = match value {
                Some(value) => hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)),
                None => hostcalls::remove_map_value(MapType::HttpRequestHeaders, name),
            };
            if let Err(status) = done {
                log(
                    LogLevel::Error,
                    &format!("cannot set request header {name} ({status:?}); request refused"),
                );
                // Never forward a request whose steering headers may be the client's.
                let _ = hostcalls::send_http_response(500, vec![], None);
                return Action::Pause;
            }
        }
        if let Some(name) = &settings.host_cookie {
            let cookies =
                rewritten.iter().flatten().filter(|(n, _)| n == "cookie").map(|(_, v)| v.as_slice());
            let owner = steering.as_ref().and_then(|s| s.override_host.as_deref()).map(str::as_bytes);
            let rewrite = cookie::with_owner_cookie(cookies, name.as_bytes(), owner);
            let done = match rewrite {
                CookieRewrite::Keep => Ok(()),
                CookieRewrite::Remove => hostcalls::remove_map_value(MapType::HttpRequestHeaders, "cookie"),
                CookieRewrite::Set(value) => {
                    hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, "cookie", Some(&value))
                }
            };
            if let Err(status) = done {
                log(
                    LogLevel::Error,
                    &format!("cannot rewrite the cookie header ({status:?}); request refused"),
                );
                let _ = hostcalls::send_http_response(500, vec![], None);
                return Action::Pause;
            }
        }
        let Some(affinity) = affinity else {
            return Action::Continue;
        };
        if let Affinity::New { rejected: Some(reason), .. } = &affinity {
            shared.metrics.rejected(*reason);
        }
        self.affinity = Some(affinity);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(shared) = self.shared.clone() else {
            return Action::Continue;
        };
        let settings = &shared.settings;
        let by = property(&["upstream", "address"]).and_then(|raw| parse_upstream_address(&raw));
        let presented = match &self.affinity {
            Some(Affinity::Pinned { token, .. }) => Some(token.owner),
            _ => None,
        };
        match &settings.host_cookie {
            // stateful_session announces the host it used in this header when it is not the
            // one tether presented; clients need not see it. When the presented owner served,
            // it added nothing, so there is nothing to remove (one host call saved per hit).
            None => {
                if by.is_none() || by != presented {
                    let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, &settings.host_header);
                }
            }
            // The cookie session state sets its cookie when the host it used is not the one
            // tether presented (a new session, a re-pin, a retry, a local reply).
            Some(name) => {
                if by.is_some() && by != presented {
                    strip_set_cookie(name);
                }
            }
        }
        let Some(affinity) = &self.affinity else {
            return Action::Continue;
        };
        let label = self.respond(affinity, by, &shared);
        if let (Some(name), Some(label)) = (&settings.debug_header, label) {
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&label));
        }
        Action::Continue
    }
}

impl Stream {
    /// Sends the token the response needs, if any; returns the debug label.
    fn respond(&self, affinity: &Affinity, by: Option<SocketAddr>, shared: &Shared) -> Option<String> {
        let settings = &shared.settings;
        let cluster = match (settings.cluster_header.is_some(), by.is_some()) {
            (true, true) => {
                property(&["xds", "cluster_name"]).and_then(|b| String::from_utf8(b).ok()).unwrap_or_default()
            }
            _ => String::new(),
        };
        if !session::can_pin_cluster(&cluster) && !CLUSTER_WARNED.swap(true, Ordering::Relaxed) {
            log(
                LogLevel::Warn,
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
                    now = now_secs();
                    session::respond(affinity, &served, now, settings)
                } else {
                    early
                }
            }
            None => (Outcome::New, None),
        };
        // A hit sends nothing, so whether the answer came from the upstream matters only
        // otherwise: on a local reply (e.g. 503 after retries) upstream.address is the last
        // failed host, and no token may name it.
        if outcome != Outcome::Hit || by.is_none() {
            let details = property(&["response", "code_details"]);
            if by.is_none() || details.as_deref() != Some(b"via_upstream".as_slice()) {
                return settings.debug_header.as_ref().map(|_| "local-reply".to_string());
            }
        }
        shared.metrics.outcome(outcome);
        if let Some(token) = token {
            let scope = settings.scope.as_deref().unwrap_or(&self.cluster_scope);
            let sealed = session::seal(&token, scope, settings, random_nonce)?;
            let (by_cookie, by_header) = session::carriers(affinity, settings);
            if by_cookie {
                if let Some(cookie) = session::set_cookie(&sealed, &token, now, settings) {
                    if let Err(status) =
                        hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie)
                    {
                        log(LogLevel::Warn, &format!("cannot add set-cookie ({status:?})"));
                    }
                }
            }
            if let (true, Some(name)) = (by_header, &settings.token_header) {
                let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(&sealed));
            }
        }
        settings.debug_header.as_ref().map(|_| session::debug_label(affinity, outcome))
    }
}
