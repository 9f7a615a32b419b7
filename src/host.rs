//! The only module that talks to the proxy-wasm host. It moves bytes in and out and
//! leaves every decision to `session`. Every host call goes through
//! `proxy_wasm::hostcalls` and its `Result` is handled: a panic would kill the VM.

use crate::address::parse_upstream_address;
use crate::config::{self, Settings};
use crate::session::{self, Affinity};
use crate::token::SessionId;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use std::rc::Rc;
use std::time::UNIX_EPOCH;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        log(LogLevel::Critical, &format!("tether panicked (the VM is now unusable): {info}"));
    }));
    proxy_wasm::set_root_context(|_| Box::new(Root { settings: None }));
}}

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

struct Root {
    settings: Option<Rc<Settings>>,
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
                let keys = settings.keyring.key_ids().join(",");
                let signing = settings.keyring.signing_key().map_or("", |k| k.id());
                log(
                    LogLevel::Info,
                    &format!(
                        "configured: cookie `{}`, keys [{keys}] signing with `{signing}`, absolute timeout {}s, headers {} / {}",
                        settings.cookie.name, settings.absolute_timeout_secs, settings.host_header, settings.key_header
                    ),
                );
                if settings.inline_keys {
                    log(LogLevel::Warn, "signing keys are inline in the configuration: for demos only, use keysFromEnv in production");
                }
                self.settings = Some(Rc::new(settings));
                true
            }
            Err(error) => {
                log(LogLevel::Error, &format!("{error}"));
                false
            }
        }
    }

    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        // Returning None would panic inside the SDK's dispatcher: always return a context.
        Some(Box::new(Stream { settings: self.settings.clone(), affinity: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    settings: Option<Rc<Settings>>,
    affinity: Option<Affinity>,
}

impl Context for Stream {}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(settings) = self.settings.clone() else {
            return Action::Continue;
        };
        // Client-sent copies would let a client pick its pod without a valid token.
        for name in [&settings.host_header, &settings.key_header] {
            if let Err(status) = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name) {
                log(
                    LogLevel::Error,
                    &format!(
                        "cannot remove request header {name} ({status:?}); request passes without affinity"
                    ),
                );
                return Action::Continue;
            }
        }
        let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                log(LogLevel::Error, &format!("cannot read request headers ({status:?})"));
                return Action::Continue;
            }
        };
        let cookies = headers.iter().filter(|(name, _)| name == "cookie").map(|(_, v)| v.as_slice());
        let Some(affinity) = session::resolve(cookies, &settings, now_secs(), fresh_session_id) else {
            return Action::Continue;
        };
        let steering = session::steering(&affinity);
        if let Some(host) = &steering.override_host {
            if hostcalls::set_map_value(MapType::HttpRequestHeaders, &settings.host_header, Some(host))
                .is_err()
            {
                return Action::Continue;
            }
        }
        if hostcalls::set_map_value(
            MapType::HttpRequestHeaders,
            &settings.key_header,
            Some(&steering.hash_key),
        )
        .is_err()
        {
            return Action::Continue;
        }
        self.affinity = Some(affinity);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(settings) = self.settings.clone() else {
            return Action::Continue;
        };
        // stateful_session announces the host it used in this header; clients need not see it.
        let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, &settings.host_header);
        let Some(affinity) = &self.affinity else {
            return Action::Continue;
        };
        // On a local reply (e.g. 503 after retries) upstream.address is the last failed host.
        match hostcalls::get_property(vec!["response", "code_details"]) {
            Ok(Some(details)) if details == b"via_upstream" => {}
            _ => return Action::Continue,
        }
        let served_by = match hostcalls::get_property(vec!["upstream", "address"]) {
            Ok(Some(raw)) => parse_upstream_address(&raw),
            _ => None,
        };
        let Some(served_by) = served_by else {
            return Action::Continue;
        };
        let now = now_secs();
        let Some(token) = session::token_to_send(affinity, served_by, now, &settings) else {
            return Action::Continue;
        };
        if let Some(cookie) = session::set_cookie(&token, now, &settings) {
            if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, "set-cookie", &cookie)
            {
                log(LogLevel::Warn, &format!("cannot add set-cookie ({status:?})"));
            }
        }
        Action::Continue
    }
}
