//! Plugin configuration: JSON (as Istio passes `pluginConfig`), parsed and validated once
//! into [`Settings`]. Every error names the field; no error repeats a secret.

use crate::cookie::{CookieSpec, Lifetime, SameSite};
use crate::duration;
use crate::keyring::Keyring;
use serde_json::{Map, Value};

pub const DEFAULT_COOKIE_NAME: &str = "tether";
pub const DEFAULT_HOST_HEADER: &str = "x-tether-host";
pub const DEFAULT_KEY_HEADER: &str = "x-tether-key";
pub const DEFAULT_TOKEN_HEADER: &str = "x-tether-session";
pub const DEFAULT_ABSOLUTE_TIMEOUT_SECS: u64 = 24 * 3600;
/// Browsers cap cookie lifetimes at 400 days (RFC 6265bis).
pub const MAX_ABSOLUTE_TIMEOUT_SECS: u64 = 400 * 86_400;
/// How long a session's owner must go unserved before the session is re-pinned: longer
/// than the push lag between gateway replicas (seconds under load), short enough that the
/// sessions of a pod that is really gone settle on their new owner soon.
pub const DEFAULT_REPIN_AFTER_SECS: u64 = 10;
pub const MAX_REPIN_AFTER_SECS: u64 = 3600;
/// What a response carrying a new token says to caches when the app said nothing: a shared
/// cache must not hand one session's token to other clients.
pub const DEFAULT_CACHE_CONTROL: &str = "private";
/// Longest `cacheControl` value accepted.
pub const MAX_CACHE_CONTROL_LEN: usize = 256;

/// The validated runtime configuration, built once per `on_configure`.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The cookie, unless the session travels in a header only.
    pub cookie: Option<CookieSpec>,
    /// Request/response header carrying the token (header mode), if enabled.
    pub token_header: Option<String>,
    pub absolute_timeout_secs: u64,
    /// Sliding expiry: a token unused for this long is expired.
    pub idle_timeout_secs: Option<u64>,
    /// A session whose owner did not serve it keeps that owner until the owner has been
    /// missed for this long (0: re-pin at once).
    pub repin_after_secs: u64,
    /// Format of new tokens: signed (owner readable) or encrypted (owner hidden).
    pub format: crate::token::Format,
    /// Fixed scope tokens are bound to; `None` = the request's upstream cluster name.
    pub scope: Option<String>,
    /// Request header naming the session's cluster (sticky canaries), if enabled.
    pub cluster_header: Option<String>,
    /// Response header explaining each decision (`hit`, `new`, ...), if enabled.
    pub debug_header: Option<String>,
    /// `Cache-Control` value added to a response that carries a token when the app set no
    /// `Cache-Control` of its own; `None`: never added.
    pub cache_control: Option<String>,
    /// Hand the decision and a short hash of the session id to Envoy's access log (filter
    /// state), one host call each per response.
    pub access_log: bool,
    pub keyring: Keyring,
    /// Request header read by stateful_session (base64 `ip:port` of the owner).
    pub host_header: String,
    /// Cookie read by stateful_session's cookie session state instead of `host_header`
    /// (Istio's cookie label `istio.io/persistent-session`, the one that keeps draining
    /// endpoints): tether writes the owner into the request's `Cookie` header under this
    /// name and strips the session filter's `Set-Cookie` of it from responses.
    pub host_cookie: Option<String>,
    /// Request header the cluster's hash policy reads (the session id).
    pub key_header: String,
    /// Keys came inline in the configuration: fine for demos, not for production.
    pub inline_keys: bool,
    /// Learn mode: the app issues the session id and tether wraps it in an envelope, in
    /// place, instead of minting sessions of its own (`cookie` and `token_header` are off).
    pub learn: Option<Learn>,
}

/// Where the app issues its session id (`learn`), and where clients send it back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Learn {
    /// A response and request header (MCP's `mcp-session-id`), lower case.
    Header(String),
    /// A cookie the app sets with `Set-Cookie` (`JSESSIONID`, `PHPSESSID`).
    Cookie(String),
}

impl Learn {
    /// The request header an envelope arrives in, when it travels in a header.
    pub fn header(&self) -> Option<&str> {
        match self {
            Learn::Header(name) => Some(name),
            Learn::Cookie(_) => None,
        }
    }

    /// The cookie an envelope arrives in, when it travels in a cookie.
    pub fn cookie(&self) -> Option<&str> {
        match self {
            Learn::Header(_) => None,
            Learn::Cookie(name) => Some(name),
        }
    }
}

/// A refused configuration: which field, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid configuration: `{}`: {}", self.field, self.reason)
    }
}

fn fail<T>(field: &str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError { field: field.to_string(), reason: reason.into() })
}

const TOP_FIELDS: &[&str] = &[
    "type",
    "cookie",
    "header",
    "absoluteTimeout",
    "idleTimeout",
    "repinAfter",
    "keys",
    "keysFromEnv",
    "signingKeyId",
    "tokenFormat",
    "scope",
    "hostHeader",
    "hostCookie",
    "keyHeader",
    "clusterHeader",
    "debugHeader",
    "cacheControl",
    "accessLog",
    "learn",
];
const LEARN_FIELDS: &[&str] = &["header", "cookie"];
/// Fields `learn` replaces or has no use for: with `learn` the app's id is the carrier, and
/// an envelope is renewed only when the app sends its id.
const NOT_WITH_LEARN: &[(&str, &str)] = &[
    ("type", "the app's own header or cookie carries the envelope"),
    ("cookie", "the app's own cookie carries the envelope (its attributes are kept)"),
    ("header", "the app's own header carries the envelope"),
    (
        "idleTimeout",
        "an envelope is renewed only when the app sends its id again; the app's own session timeout applies",
    ),
    ("repinAfter", "a session keeps the pod that issued its id until the app issues another"),
];
const HEADER_FIELDS: &[&str] = &["name"];
const COOKIE_FIELDS: &[&str] = &["name", "path", "domain", "secure", "httpOnly", "sameSite", "lifetimeType"];

/// Parses and validates the plugin configuration. `env` looks up environment variables
/// (the VM's `environment_variables`), injected so tests need no process environment.
pub fn load(raw: &[u8], env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
    let text = std::str::from_utf8(raw).or_else(|_| fail("(root)", "not UTF-8"))?;
    let root: Value = if text.trim().is_empty() {
        return fail("keys", "no configuration given; at least `keys` or `keysFromEnv` is required");
    } else {
        serde_json::from_str(text).or_else(|e| fail("(root)", format!("not valid JSON: {e}")))?
    };
    let Value::Object(top) = root else {
        return fail("(root)", "must be a JSON object");
    };
    check_known(&top, TOP_FIELDS, "")?;

    let empty = Map::new();
    let cookie = match top.get("cookie") {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return fail("cookie", "must be an object"),
    };
    check_known(cookie, COOKIE_FIELDS, "cookie.")?;

    let name = string(cookie, "name", "cookie.name")?.unwrap_or(DEFAULT_COOKIE_NAME);
    if name.is_empty() || name.len() > 64 || !name.bytes().all(is_token_char) {
        return fail(
            "cookie.name",
            "must be 1-64 characters of an HTTP token (no spaces, separators or control characters)",
        );
    }
    let path = string(cookie, "path", "cookie.path")?.unwrap_or("/");
    if !path.starts_with('/') || !path.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';') {
        return fail("cookie.path", "must start with `/` and hold only visible ASCII other than `;`");
    }
    let domain = string(cookie, "domain", "cookie.domain")?.filter(|d| !d.is_empty());
    if let Some(d) = domain {
        let ok = d.len() <= 253 && d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        if !ok {
            return fail("cookie.domain", "must be a host name (letters, digits, `.` and `-`)");
        }
    }
    let secure = boolean(cookie, "secure", "cookie.secure")?;
    let http_only = boolean(cookie, "httpOnly", "cookie.httpOnly")?.unwrap_or(true);
    let same_site = match string(cookie, "sameSite", "cookie.sameSite")? {
        None | Some("Lax") => Some(SameSite::Lax),
        Some("Strict") => Some(SameSite::Strict),
        Some("None") => Some(SameSite::None),
        Some("Unset") => None,
        Some(other) => {
            return fail(
                "cookie.sameSite",
                format!("`{}` is not one of Strict, Lax, None, Unset", other.escape_debug()),
            )
        }
    };
    // Browsers drop SameSite=None cookies without Secure.
    let secure = match (same_site, secure) {
        (Some(SameSite::None), Some(false)) => {
            return fail("cookie.secure", "must be true when sameSite is None (browsers reject it otherwise)")
        }
        (Some(SameSite::None), _) => true,
        (_, explicit) => explicit.unwrap_or(false),
    };
    check_prefix(name, path, domain, secure)?;
    let lifetime = match string(cookie, "lifetimeType", "cookie.lifetimeType")? {
        None | Some("Session") => Lifetime::Session,
        Some("Permanent") => Lifetime::Permanent,
        Some(other) => {
            return fail(
                "cookie.lifetimeType",
                format!("`{}` is not Session or Permanent", other.escape_debug()),
            )
        }
    };

    let absolute_timeout_secs = match string(&top, "absoluteTimeout", "absoluteTimeout")? {
        None => DEFAULT_ABSOLUTE_TIMEOUT_SECS,
        Some(text) => {
            let secs = duration::parse_seconds(text).or_else(|e| fail("absoluteTimeout", e))?;
            if !(1..=MAX_ABSOLUTE_TIMEOUT_SECS).contains(&secs) {
                return fail("absoluteTimeout", "must be between 1s and 9600h (400 days)");
            }
            secs
        }
    };

    let idle_timeout_secs = match string(&top, "idleTimeout", "idleTimeout")? {
        None => None,
        Some(text) => {
            let secs = duration::parse_seconds(text).or_else(|e| fail("idleTimeout", e))?;
            if secs < 2 || secs > absolute_timeout_secs {
                return fail("idleTimeout", "must be between 2s and absoluteTimeout");
            }
            Some(secs)
        }
    };
    let repin_after_secs = match string(&top, "repinAfter", "repinAfter")? {
        None => DEFAULT_REPIN_AFTER_SECS,
        Some(text) => {
            let secs = duration::parse_seconds(text).or_else(|e| fail("repinAfter", e))?;
            if secs > MAX_REPIN_AFTER_SECS {
                return fail("repinAfter", "must be between 0s (re-pin at once) and 1h");
            }
            secs
        }
    };
    let format = match string(&top, "tokenFormat", "tokenFormat")? {
        None | Some("Signed") => crate::token::Format::Signed,
        Some("Encrypted") => crate::token::Format::Encrypted,
        Some(other) => {
            return fail("tokenFormat", format!("`{}` is not Signed or Encrypted", other.escape_debug()))
        }
    };
    let scope = string(&top, "scope", "scope")?.map(str::to_string);
    if scope.as_ref().is_some_and(|s| s.is_empty() || s.len() > 253) {
        return fail("scope", "must be 1-253 characters (or absent: the upstream cluster name)");
    }

    let (use_cookie, use_header) = match string(&top, "type", "type")? {
        None | Some("Cookie") => (true, false),
        Some("Header") => (false, true),
        Some("CookieAndHeader") => (true, true),
        Some(other) => {
            return fail(
                "type",
                format!("`{}` is not Cookie, Header or CookieAndHeader", other.escape_debug()),
            )
        }
    };
    let header = match top.get("header") {
        None => &empty,
        Some(Value::Object(map)) => map,
        Some(_) => return fail("header", "must be an object"),
    };
    check_known(header, HEADER_FIELDS, "header.")?;
    let token_header = header_name(header, "name", "header.name", DEFAULT_TOKEN_HEADER)?;

    let signing_id = string(&top, "signingKeyId", "signingKeyId")?;
    let inline = string(&top, "keys", "keys")?;
    let from_env = string(&top, "keysFromEnv", "keysFromEnv")?;
    let (keyring, inline_keys) = match (inline, from_env) {
        (Some(_), Some(_)) => return fail("keys", "give either `keys` or `keysFromEnv`, not both"),
        (None, None) => return fail("keys", "required: `keysFromEnv` (production) or `keys` (demos)"),
        (Some(spec), None) => {
            (Keyring::parse(spec, signing_id).or_else(|e| fail(key_field(&e, "keys"), e))?, true)
        }
        (None, Some(var)) => {
            let Some(spec) = env(var).filter(|v| !v.trim().is_empty()) else {
                return fail(
                    "keysFromEnv",
                    format!("environment variable `{}` is not set or empty (wasm: the VM's vm_config.environment_variables / vmConfig.env; native: Envoy's own environment)", var.escape_debug()),
                );
            };
            let ring = Keyring::parse(&spec, signing_id)
                .or_else(|e| fail(key_field(&e, "keysFromEnv"), format!("in `{var}`: {e}")))?;
            (ring, false)
        }
    };

    let host_header = header_name(&top, "hostHeader", "hostHeader", DEFAULT_HOST_HEADER)?;
    let host_cookie = string(&top, "hostCookie", "hostCookie")?;
    if let Some(owner) = host_cookie {
        if owner.is_empty() || owner.len() > 64 || !owner.bytes().all(is_token_char) {
            return fail("hostCookie", "must be 1-64 characters of an HTTP token (a cookie name)");
        }
        if top.contains_key("hostHeader") {
            return fail("hostCookie", "give either `hostHeader` or `hostCookie`, not both");
        }
        // tether removes every client-sent cookie of this name, so it cannot be its own.
        if use_cookie && owner == name {
            return fail("hostCookie", format!("`{owner}` is already used by cookie.name"));
        }
    }
    let key_header = header_name(&top, "keyHeader", "keyHeader", DEFAULT_KEY_HEADER)?;
    let cluster_header = optional_header_name(&top, "clusterHeader")?;
    let debug_header = optional_header_name(&top, "debugHeader")?;
    let cache_control = match string(&top, "cacheControl", "cacheControl")? {
        None => Some(DEFAULT_CACHE_CONTROL.to_string()),
        Some("") => None,
        Some(value) => {
            // Visible ASCII and inner spaces: nothing that could end the header or start another.
            let bytes = value.as_bytes();
            let visible = bytes.iter().all(|b| *b == b' ' || (0x21..0x7f).contains(b));
            let edges = [bytes.first(), bytes.last()].into_iter().flatten().all(|b| *b != b' ');
            if bytes.len() > MAX_CACHE_CONTROL_LEN || !visible || !edges {
                return fail(
                    "cacheControl",
                    "must be a header value: visible ASCII and inner spaces, at most 256 bytes (\"\": none)",
                );
            }
            Some(value.to_string())
        }
    };
    let access_log = boolean(&top, "accessLog", "accessLog")?.unwrap_or(false);
    let learn = learn(&top)?;
    if let Some(learn) = &learn {
        if let Some((field, why)) = NOT_WITH_LEARN.iter().find(|(field, _)| top.contains_key(*field)) {
            return fail(field, format!("not used with `learn`: {why}"));
        }
        if let (Learn::Cookie(app), Some(owner)) = (learn, host_cookie) {
            if app == owner {
                return fail("hostCookie", format!("`{owner}` is already used by learn.cookie"));
            }
        }
    }
    let (use_cookie, use_header) = if learn.is_some() { (false, false) } else { (use_cookie, use_header) };
    let mut seen: Vec<(&str, &str)> = vec![("hostHeader", &host_header), ("keyHeader", &key_header)];
    if use_header {
        seen.push(("header.name", &token_header));
    }
    seen.extend(cluster_header.as_deref().map(|h| ("clusterHeader", h)));
    seen.extend(debug_header.as_deref().map(|h| ("debugHeader", h)));
    seen.extend(learn.as_ref().and_then(Learn::header).map(|h| ("learn.header", h)));
    for (i, (field, name)) in seen.iter().enumerate() {
        if let Some((other, _)) = seen.iter().take(i).find(|(_, n)| n == name) {
            return fail(field, format!("`{name}` is already used by {other}"));
        }
    }
    // With cluster pinning, the upstream cluster differs between sessions, and at request
    // time `xds.cluster_name` is the route's pick before tether sets the cluster header:
    // one the client's own header or the weighted split chose. A token must verify
    // whichever cluster that is, so its scope has to be fixed.
    if cluster_header.is_some() && scope.is_none() {
        return fail(
            "scope",
            "required with clusterHeader (e.g. the service name): without it tokens would be bound to whichever cluster the route picked before tether ran",
        );
    }

    Ok(Settings {
        cookie: use_cookie.then(|| CookieSpec {
            name: name.to_string(),
            path: path.to_string(),
            domain: domain.map(str::to_string),
            secure,
            http_only,
            same_site,
            lifetime,
        }),
        token_header: use_header.then_some(token_header),
        absolute_timeout_secs,
        idle_timeout_secs,
        repin_after_secs,
        format,
        scope,
        cluster_header,
        debug_header,
        cache_control,
        access_log,
        keyring,
        host_header,
        host_cookie: host_cookie.map(str::to_string),
        key_header,
        inline_keys,
        learn,
    })
}

/// The `learn` object: exactly one of `header` and `cookie`.
fn learn(top: &Map<String, Value>) -> Result<Option<Learn>, ConfigError> {
    let map = match top.get("learn") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(map)) => map,
        Some(_) => return fail("learn", "must be an object: {\"header\": name} or {\"cookie\": name}"),
    };
    check_known(map, LEARN_FIELDS, "learn.")?;
    match (map.contains_key("header"), map.contains_key("cookie")) {
        (true, false) => Ok(Some(Learn::Header(header_name(map, "header", "learn.header", "")?))),
        (false, true) => {
            let name = string(map, "cookie", "learn.cookie")?.unwrap_or("");
            if name.is_empty() || name.len() > 64 || !name.bytes().all(is_token_char) {
                return fail("learn.cookie", "must be 1-64 characters of an HTTP token (a cookie name)");
            }
            Ok(Some(Learn::Cookie(name.to_string())))
        }
        _ => {
            fail("learn", "give exactly one of `header` (e.g. mcp-session-id) and `cookie` (e.g. JSESSIONID)")
        }
    }
}

impl Settings {
    pub fn limits(&self) -> crate::token::Limits {
        crate::token::Limits {
            max_lifetime: self.absolute_timeout_secs,
            idle_timeout: self.idle_timeout_secs,
            envelopes: self.learn.is_some(),
        }
    }
}

/// Cookie name prefixes (RFC 6265bis 4.1.3): browsers refuse a `__Secure-` cookie without
/// `Secure`, and a `__Host-` cookie without `Secure`, with a `Domain` or with a `Path`
/// other than `/`. Such a configuration would make every request a new session. Browsers
/// match the prefixes without regard to case.
fn check_prefix(name: &str, path: &str, domain: Option<&str>, secure: bool) -> Result<(), ConfigError> {
    let starts = |prefix: &str| name.get(..prefix.len()).is_some_and(|p| p.eq_ignore_ascii_case(prefix));
    let prefix = if starts("__Host-") {
        "__Host-"
    } else if starts("__Secure-") {
        "__Secure-"
    } else {
        return Ok(());
    };
    if !secure {
        return fail(
            "cookie.secure",
            format!("must be true for a `{prefix}` cookie name (browsers refuse it otherwise)"),
        );
    }
    if prefix == "__Host-" {
        if domain.is_some() {
            return fail(
                "cookie.domain",
                "must be absent for a `__Host-` cookie name (browsers refuse it otherwise)",
            );
        }
        if path != "/" {
            return fail(
                "cookie.path",
                "must be `/` for a `__Host-` cookie name (browsers refuse it otherwise)",
            );
        }
    }
    Ok(())
}

fn key_field(reason: &str, default: &'static str) -> &'static str {
    if reason.starts_with("signing key") {
        "signingKeyId"
    } else {
        default
    }
}

fn check_known(map: &Map<String, Value>, known: &[&str], prefix: &str) -> Result<(), ConfigError> {
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            let name =
                if key.is_empty() { "(empty name)".to_string() } else { key.escape_debug().to_string() };
            return fail(
                &format!("{prefix}{name}"),
                format!("unknown field; known fields are {}", known.join(", ")),
            );
        }
    }
    Ok(())
}

fn string<'a>(map: &'a Map<String, Value>, key: &str, field: &str) -> Result<Option<&'a str>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.as_str())),
        Some(_) => fail(field, "must be a string"),
    }
}

fn boolean(map: &Map<String, Value>, key: &str, field: &str) -> Result<Option<bool>, ConfigError> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => fail(field, "must be true or false"),
    }
}

fn optional_header_name(map: &Map<String, Value>, key: &str) -> Result<Option<String>, ConfigError> {
    match string(map, key, key)? {
        None => Ok(None),
        Some(_) => header_name(map, key, key, "").map(Some),
    }
}

fn header_name(
    map: &Map<String, Value>,
    key: &str,
    field: &str,
    default: &str,
) -> Result<String, ConfigError> {
    let name = string(map, key, field)?.unwrap_or(default);
    let reserved = ["cookie", "set-cookie", "host", "content-length", "transfer-encoding", "connection"];
    if name.is_empty() || !name.bytes().all(|b| is_token_char(b) && !b.is_ascii_uppercase()) {
        return fail(field, "must be a lowercase HTTP header name");
    }
    if reserved.contains(&name) {
        return fail(field, format!("`{name}` is reserved"));
    }
    Ok(name.to_string())
}

/// RFC 9110 `tchar`.
fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn load_str(json: &str) -> Result<Settings, ConfigError> {
        load(json.as_bytes(), &|var| (var == "TETHER_KEYS").then(|| format!("k2={K2},k1={K1}")))
    }

    #[test]
    fn defaults() {
        let s = load(format!(r#"{{"keys":"demo={K1}"}}"#).as_bytes(), &no_env).unwrap();
        assert_eq!(s.cookie.as_ref().unwrap().render("T", 5), "tether=T; Path=/; HttpOnly; SameSite=Lax");
        assert_eq!(s.absolute_timeout_secs, 86_400);
        assert_eq!((s.idle_timeout_secs, s.scope.as_deref(), s.token_header.as_deref()), (None, None, None));
        assert_eq!((s.cluster_header.as_deref(), s.debug_header.as_deref()), (None, None));
        assert_eq!(s.host_header, "x-tether-host");
        assert_eq!(s.host_cookie, None);
        assert_eq!(s.key_header, "x-tether-key");
        assert_eq!((s.cache_control.as_deref(), s.access_log), (Some("private"), false));
        assert!(s.inline_keys);
    }

    #[test]
    fn cache_control_takes_a_header_value_or_nothing() {
        let cases = [
            (r#""private""#, Some("private")),
            (r#""no-cache=\"Set-Cookie\"""#, Some("no-cache=\"Set-Cookie\"")),
            (r#""private, max-age=0""#, Some("private, max-age=0")),
            (r#""""#, None),
            ("null", Some("private")),
        ];
        for (value, want) in cases {
            let s = load_str(&format!(r#"{{"keysFromEnv":"TETHER_KEYS","cacheControl":{value}}}"#)).unwrap();
            assert_eq!(s.cache_control.as_deref(), want, "{value}");
        }
    }

    #[test]
    fn host_cookie_replaces_the_host_header() {
        let s = load_str(r#"{"keysFromEnv":"TETHER_KEYS","hostCookie":"tether-owner"}"#).unwrap();
        assert_eq!(s.host_cookie.as_deref(), Some("tether-owner"));
        // In header mode there is no tether cookie for the name to collide with.
        let s = load_str(r#"{"keysFromEnv":"TETHER_KEYS","type":"Header","hostCookie":"tether"}"#).unwrap();
        assert_eq!(s.host_cookie.as_deref(), Some("tether"));
    }

    #[test]
    fn every_field() {
        let s = load_str(
            r#"{"cookie":{"name":"sid","path":"/app","domain":"example.com","secure":true,
                "httpOnly":false,"sameSite":"Strict","lifetimeType":"Permanent"},
               "absoluteTimeout":"1h30m","keysFromEnv":"TETHER_KEYS","signingKeyId":"k1",
               "hostHeader":"x-h","keyHeader":"x-k","type":"CookieAndHeader","header":{"name":"x-s"},
               "idleTimeout":"10m","scope":"checkout.shop","clusterHeader":"x-c","debugHeader":"x-d",
               "tokenFormat":"Encrypted","cacheControl":"no-store","accessLog":true}"#,
        )
        .unwrap();
        assert_eq!(
            s.cookie.as_ref().unwrap().render("T", 5),
            "sid=T; Path=/app; Domain=example.com; Max-Age=5; Secure; SameSite=Strict"
        );
        assert_eq!(s.token_header.as_deref(), Some("x-s"));
        assert_eq!(s.format, crate::token::Format::Encrypted);
        assert_eq!((s.idle_timeout_secs, s.scope.as_deref()), (Some(600), Some("checkout.shop")));
        assert_eq!((s.cluster_header.as_deref(), s.debug_header.as_deref()), (Some("x-c"), Some("x-d")));
        assert_eq!(s.absolute_timeout_secs, 5400);
        assert_eq!((s.cache_control.as_deref(), s.access_log), (Some("no-store"), true));
        assert_eq!(s.keyring.signing_key().unwrap().id(), "k1");
        assert_eq!(s.keyring.key_ids(), ["k2", "k1"]);
        assert!(!s.inline_keys);
        assert_eq!((s.host_header.as_str(), s.key_header.as_str()), ("x-h", "x-k"));
    }

    #[test]
    fn learn_takes_the_apps_header_or_cookie_in_place_of_tethers() {
        let s = load_str(r#"{"keysFromEnv":"TETHER_KEYS","learn":{"header":"mcp-session-id"}}"#).unwrap();
        assert_eq!(s.learn, Some(Learn::Header("mcp-session-id".into())));
        assert_eq!((s.cookie.is_none(), s.token_header.is_none()), (true, true));
        assert!(s.limits().envelopes);
        let s = load_str(r#"{"keysFromEnv":"TETHER_KEYS","learn":{"cookie":"JSESSIONID"},"hostCookie":"o"}"#)
            .unwrap();
        assert_eq!(
            (s.learn, s.cookie, s.host_cookie.as_deref()),
            (Some(Learn::Cookie("JSESSIONID".into())), None, Some("o"))
        );
        assert!(!load_str(r#"{"keysFromEnv":"TETHER_KEYS"}"#).unwrap().limits().envelopes);
    }

    #[test]
    fn same_site_none_implies_secure() {
        let s = load_str(r#"{"cookie":{"sameSite":"None"},"keysFromEnv":"TETHER_KEYS"}"#).unwrap();
        assert!(s.cookie.unwrap().secure);
        let s = load_str(r#"{"cookie":{"sameSite":"Unset"},"keysFromEnv":"TETHER_KEYS"}"#).unwrap();
        assert_eq!(s.cookie.unwrap().render("T", 1), "tether=T; Path=/; HttpOnly");
        let s = load_str(r#"{"type":"Header","keysFromEnv":"TETHER_KEYS"}"#).unwrap();
        assert_eq!((s.cookie, s.token_header.as_deref()), (None, Some("x-tether-session")));
    }

    #[test]
    fn cookie_prefixes_load_with_the_attributes_browsers_require() {
        let cases = [
            (
                r#"{"name":"__Host-tether","secure":true}"#,
                "__Host-tether=T; Path=/; Secure; HttpOnly; SameSite=Lax",
            ),
            (
                r#"{"name":"__Host-tether","sameSite":"None"}"#,
                "__Host-tether=T; Path=/; Secure; HttpOnly; SameSite=None",
            ),
            (
                r#"{"name":"__Secure-tether","secure":true,"domain":"example.com","path":"/app"}"#,
                "__Secure-tether=T; Path=/app; Domain=example.com; Secure; HttpOnly; SameSite=Lax",
            ),
            (r#"{"name":"_Host-tether"}"#, "_Host-tether=T; Path=/; HttpOnly; SameSite=Lax"),
        ];
        for (cookie, want) in cases {
            let s = load_str(&format!(r#"{{"keysFromEnv":"TETHER_KEYS","cookie":{cookie}}}"#)).unwrap();
            assert_eq!(s.cookie.unwrap().render("T", 1), want);
        }
    }

    #[test]
    fn refusals_name_the_field() {
        let k = r#""keysFromEnv":"TETHER_KEYS""#;
        let cases = [
            ("", "keys"),
            ("[]", "(root)"),
            ("{", "(root)"),
            ("{}", "keys"),
            (&format!(r#"{{{k},"bogus":1}}"#) as &str, "bogus"),
            (&format!(r#"{{{k},"cookie":{{"nmae":"x"}}}}"#), "cookie.nmae"),
            (&format!(r#"{{{k},"cookie":"x"}}"#), "cookie"),
            (&format!(r#"{{{k},"cookie":{{"name":"a b"}}}}"#), "cookie.name"),
            (&format!(r#"{{{k},"cookie":{{"name":"a\r\nSet-Cookie: x=1"}}}}"#), "cookie.name"),
            (&format!(r#"{{{k},"cookie":{{"name":""}}}}"#), "cookie.name"),
            (&format!(r#"{{{k},"cookie":{{"path":"app"}}}}"#), "cookie.path"),
            (&format!(r#"{{{k},"cookie":{{"path":"/a;Domain=evil"}}}}"#), "cookie.path"),
            (&format!(r#"{{{k},"cookie":{{"path":"/a\r\nx: y"}}}}"#), "cookie.path"),
            (&format!(r#"{{{k},"cookie":{{"domain":"a.com\r\nx: y"}}}}"#), "cookie.domain"),
            (&format!(r#"{{{k},"cookie":{{"secure":"yes"}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cookie":{{"sameSite":"lax"}}}}"#), "cookie.sameSite"),
            (&format!(r#"{{{k},"cookie":{{"sameSite":"None","secure":false}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cookie":{{"lifetimeType":"Forever"}}}}"#), "cookie.lifetimeType"),
            (&format!(r#"{{{k},"absoluteTimeout":"1d"}}"#), "absoluteTimeout"),
            (&format!(r#"{{{k},"absoluteTimeout":"0s"}}"#), "absoluteTimeout"),
            (&format!(r#"{{{k},"absoluteTimeout":"9601h"}}"#), "absoluteTimeout"),
            (&format!(r#"{{{k},"absoluteTimeout":3600}}"#), "absoluteTimeout"),
            (r#"{"keysFromEnv":"MISSING"}"#, "keysFromEnv"),
            (&format!(r#"{{{k},"keys":"a={K1}"}}"#), "keys"),
            (r#"{"keys":"short=AAAA"}"#, "keys"),
            (&format!(r#"{{{k},"signingKeyId":"k9"}}"#), "signingKeyId"),
            (&format!(r#"{{{k},"hostHeader":"X-Upper"}}"#), "hostHeader"),
            (&format!(r#"{{{k},"hostHeader":"cookie"}}"#), "hostHeader"),
            (&format!(r#"{{{k},"keyHeader":"x-tether-host"}}"#), "keyHeader"),
            (&format!(r#"{{{k},"keyHeader":"x k"}}"#), "keyHeader"),
            (&format!(r#"{{{k},"type":"Both"}}"#), "type"),
            (&format!(r#"{{{k},"header":{{"name":"X-Up"}}}}"#), "header.name"),
            (&format!(r#"{{{k},"header":{{"nam":"x"}}}}"#), "header.nam"),
            (&format!(r#"{{{k},"type":"Header","header":{{"name":"x-tether-key"}}}}"#), "header.name"),
            (&format!(r#"{{{k},"idleTimeout":"1s"}}"#), "idleTimeout"),
            (&format!(r#"{{{k},"absoluteTimeout":"1h","idleTimeout":"2h"}}"#), "idleTimeout"),
            (&format!(r#"{{{k},"scope":""}}"#), "scope"),
            // Found by fuzzing: an empty field name must still be named.
            (&format!(r#"{{{k},"":1}}"#), "(empty name)"),
            (&format!(r#"{{{k},"cookie":{{"":1}}}}"#), "cookie.(empty name)"),
            (&format!(r#"{{{k},"tokenFormat":"Hidden"}}"#), "tokenFormat"),
            (&format!(r#"{{{k},"hostCookie":""}}"#), "hostCookie"),
            (&format!(r#"{{{k},"hostCookie":"a;b"}}"#), "hostCookie"),
            (&format!(r#"{{{k},"hostCookie":"o\r\nx: y"}}"#), "hostCookie"),
            (&format!(r#"{{{k},"learn":"mcp-session-id"}}"#), "learn"),
            (&format!(r#"{{{k},"learn":{{}}}}"#), "learn"),
            (&format!(r#"{{{k},"learn":{{"header":"a","cookie":"b"}}}}"#), "learn"),
            (&format!(r#"{{{k},"learn":{{"name":"a"}}}}"#), "learn.name"),
            (&format!(r#"{{{k},"learn":{{"header":"Mcp-Session-Id"}}}}"#), "learn.header"),
            (&format!(r#"{{{k},"learn":{{"header":"cookie"}}}}"#), "learn.header"),
            (&format!(r#"{{{k},"learn":{{"header":"x-tether-key"}}}}"#), "learn.header"),
            (&format!(r#"{{{k},"learn":{{"cookie":"a b"}}}}"#), "learn.cookie"),
            (&format!(r#"{{{k},"learn":{{"cookie":""}}}}"#), "learn.cookie"),
            (&format!(r#"{{{k},"learn":{{"cookie":"JSESSIONID"}},"cookie":{{}}}}"#), "cookie"),
            (&format!(r#"{{{k},"learn":{{"cookie":"JSESSIONID"}},"type":"Header"}}"#), "type"),
            (&format!(r#"{{{k},"learn":{{"header":"mcp-session-id"}},"idleTimeout":"1h"}}"#), "idleTimeout"),
            (&format!(r#"{{{k},"learn":{{"header":"mcp-session-id"}},"repinAfter":"1s"}}"#), "repinAfter"),
            (&format!(r#"{{{k},"learn":{{"cookie":"sid"}},"hostCookie":"sid"}}"#), "hostCookie"),
            (&format!(r#"{{{k},"hostCookie":"tether"}}"#), "hostCookie"),
            (&format!(r#"{{{k},"hostCookie":"o","hostHeader":"x-h"}}"#), "hostCookie"),
            (&format!(r#"{{{k},"clusterHeader":"x-tether-host"}}"#), "clusterHeader"),
            (&format!(r#"{{{k},"debugHeader":"Bad Name"}}"#), "debugHeader"),
            (&format!(r#"{{{k},"clusterHeader":"x-tether-cluster"}}"#), "scope"),
            (&format!(r#"{{{k},"absoluteTimeout":"30m30m"}}"#), "absoluteTimeout"),
            (&format!(r#"{{{k},"idleTimeout":"1s1m"}}"#), "idleTimeout"),
            (&format!(r#"{{{k},"cookie":{{"name":"__Host-tether"}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cookie":{{"name":"__Host-tether","secure":false}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cookie":{{"name":"__host-tether","secure":false}}}}"#), "cookie.secure"),
            (
                &format!(r#"{{{k},"cookie":{{"name":"__Host-t","secure":true,"domain":"a.com"}}}}"#),
                "cookie.domain",
            ),
            (
                &format!(r#"{{{k},"cookie":{{"name":"__Host-t","secure":true,"path":"/app"}}}}"#),
                "cookie.path",
            ),
            (&format!(r#"{{{k},"cookie":{{"name":"__Secure-tether"}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cookie":{{"name":"__SECURE-tether","secure":false}}}}"#), "cookie.secure"),
            (&format!(r#"{{{k},"cacheControl":"private\r\nSet-Cookie: x=1"}}"#), "cacheControl"),
            (&format!(r#"{{{k},"cacheControl":"private\u0000"}}"#), "cacheControl"),
            (&format!(r#"{{{k},"cacheControl":" private"}}"#), "cacheControl"),
            (&format!(r#"{{{k},"cacheControl":"privé"}}"#), "cacheControl"),
            (&format!(r#"{{{k},"cacheControl":"{}"}}"#, "p".repeat(257)), "cacheControl"),
            (&format!(r#"{{{k},"cacheControl":false}}"#), "cacheControl"),
            (&format!(r#"{{{k},"accessLog":"yes"}}"#), "accessLog"),
            (&format!(r#"{{{k},"accesslog":true}}"#), "accesslog"),
        ];
        for (json, field) in cases {
            let err = load_str(json).unwrap_err();
            assert_eq!(err.field, field, "{json}: {err}");
            let shown = err.to_string();
            assert!(shown.contains(field) && !shown.contains(K1) && !shown.contains(K2), "{shown}");
        }
    }
}
