//! The proxy-wasm host: the only module that calls proxy-wasm. It moves bytes in and out
//! and leaves every decision to `filter` and `session`. Every host call goes through
//! `proxy_wasm::hostcalls` and its `Result` is handled: a panic would kill the VM.

use crate::address::Owner;
use crate::filter::{Counter, Filter, Host, Level, OwnerVia, Stream, Verdict};
use crate::session;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
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

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn status(s: proxy_wasm::types::Status) -> String {
    format!("{s:?}")
}

/// A stream's view of the host: header maps, properties and the counters' ids.
struct Wasm<'a> {
    counters: &'a [Option<u32>],
}

impl Host for Wasm<'_> {
    const OWNER_VIA: OwnerVia = OwnerVia::SessionFilter;
    // A property read with a value costs ~12 k instructions in Envoy's V8.
    const CHEAP_DETAILS: bool = false;
    // stateful_session matches the host header's value against the cluster's host names.
    const INTERNAL_OWNERS: bool = true;

    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name).ok().flatten()
    }

    fn request_header_values(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).map_err(status)?;
        Ok(headers.into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect())
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        // An empty value removes the header, as the native host must (`Host`).
        let value = Some(value).filter(|v| !v.is_empty());
        hostcalls::set_map_value_bytes(MapType::HttpRequestHeaders, name, value).map_err(status)
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), String> {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name).map_err(status)
    }

    fn reroute(&mut self) {}

    fn set_override_host(&mut self, _: &Owner) -> Result<(), String> {
        Err("proxy-wasm has no override-host call; the session filter reads the host header".into())
    }

    fn cluster_name(&mut self) -> Option<String> {
        property(&["xds", "cluster_name"]).and_then(|b| String::from_utf8(b).ok())
    }

    fn upstream_address(&mut self) -> Option<Vec<u8>> {
        property(&["upstream", "address"])
    }

    fn response_code_details(&mut self) -> Option<Vec<u8>> {
        property(&["response", "code_details"])
    }

    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        hostcalls::get_map_value_bytes(MapType::HttpResponseHeaders, name).ok().flatten()
    }

    fn response_header_values(&mut self, name: &str) -> Vec<Vec<u8>> {
        let headers = hostcalls::get_map_bytes(MapType::HttpResponseHeaders).unwrap_or_default();
        headers.into_iter().filter(|(n, _)| n == name).map(|(_, v)| v).collect()
    }

    fn remove_response_header(&mut self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpResponseHeaders, name);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        hostcalls::add_map_value_bytes(MapType::HttpResponseHeaders, name, value).map_err(status)
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        let value = Some(value).filter(|v| !v.is_empty());
        let _ = hostcalls::set_map_value_bytes(MapType::HttpResponseHeaders, name, value);
    }

    fn now_secs(&mut self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs())
    }

    fn log(&mut self, level: Level, message: &str) {
        log(
            match level {
                Level::Info => LogLevel::Info,
                Level::Warn => LogLevel::Warn,
                Level::Error => LogLevel::Error,
            },
            message,
        );
    }

    fn local_reply(&mut self, status: u32, body: &[u8]) {
        let body = (!body.is_empty()).then_some(body);
        let _ = hostcalls::send_http_response(status, vec![], body);
    }

    fn count(&mut self, counter: Counter) {
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            let _ = hostcalls::increment_metric(*id, 1);
        }
    }

    fn set_log_field(&mut self, key: &str, value: &str) -> Result<(), String> {
        // Not `hostcalls::set_property`: it panics on any status but Ok. A one-part
        // property path is the part itself; Envoy keeps it in filter state as `wasm.<key>`.
        // SAFETY: both pointers point into live slices for the duration of the call.
        let status = unsafe { proxy_set_property(key.as_ptr(), key.len(), value.as_ptr(), value.len()) };
        match status {
            0 => Ok(()),
            other => Err(format!("status {other}")),
        }
    }
}

#[link(wasm_import_module = "env")]
extern "C" {
    /// proxy-wasm ABI 0.2.1 `proxy_set_property`; returns a `proxy_status_t` (0: Ok).
    fn proxy_set_property(path: *const u8, path_len: usize, value: *const u8, value_len: usize) -> u32;
}

fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

struct Shared {
    filter: Filter,
    /// Counter ids (`wasmcustom.tether.*`), by [`Counter::index`].
    counters: Vec<Option<u32>>,
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
        // `keysFromEnv` reads the VM's environment (`vm_config.environment_variables`).
        match Filter::load(&raw, &|var| std::env::var(var).ok(), OwnerVia::SessionFilter) {
            Ok(filter) => {
                log(LogLevel::Info, &filter.describe());
                if let Some(warning) = filter.warning() {
                    log(LogLevel::Warn, warning);
                }
                let counters = Counter::all()
                    .map(|c| hostcalls::define_metric(MetricType::Counter, &c.name()).ok())
                    .collect();
                self.shared = Some(Rc::new(Shared { filter, counters }));
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
        Some(Box::new(HttpStream { shared: self.shared.clone(), stream: Stream::default() }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct HttpStream {
    shared: Option<Rc<Shared>>,
    stream: Stream,
}

impl Context for HttpStream {}

impl HttpContext for HttpStream {
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
        let mut host = Wasm { counters: &shared.counters };
        match self.stream.on_request(&mut host, &shared.filter) {
            Verdict::Continue => Action::Continue,
            Verdict::Stop => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        if let Some(shared) = self.shared.clone() {
            let mut host = Wasm { counters: &shared.counters };
            self.stream.on_response(&mut host, &shared.filter);
        }
        Action::Continue
    }
}
