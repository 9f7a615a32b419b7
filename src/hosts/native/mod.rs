//! The native host: tether as an Envoy dynamic module (`envoy.filters.http.dynamic_modules`,
//! `make build-native`). Like `hosts::wasm` it only moves bytes between Envoy and `filter`.
//! It steers with Envoy's upstream override host ([`OwnerVia::OverrideHost`]), so no
//! `stateful_session` filter is needed. No panic unwinds into Envoy: every exported
//! function that runs tether's code catches it and fails safe (a request whose steering
//! headers may be the client's is answered locally, never forwarded).

mod abi;

use crate::address::Owner;
use crate::filter::{Counter, Filter, Host, Level, OwnerVia, Stream, Verdict};
use abi::{Buffer, Callbacks, ConfigEnvoyPtr, FilterEnvoyPtr, ModulePtr};
use std::ffi::c_char;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

fn log(level: u32, message: &str) {
    if let Some(envoy) = abi::callbacks() {
        // SAFETY: the buffer points into `message` for the duration of the call.
        unsafe { (envoy.log)(level, Buffer::of(message.as_bytes())) }
    }
}

/// Whether this process has said that Envoy does not report response code details.
static DETAILS_WARNED: AtomicBool = AtomicBool::new(false);

/// A loaded configuration and the ids of its counters (`dynamicmodulescustom.tether.*`).
struct Config {
    call: &'static Callbacks,
    filter: Filter,
    counters: Vec<Option<usize>>,
}

/// One stream: the shared configuration and the exchange's state.
struct NativeStream {
    config: *const Config,
    stream: Stream,
}

/// A stream's view of Envoy during one callback.
struct Native<'a> {
    call: &'static Callbacks,
    envoy: FilterEnvoyPtr,
    counters: &'a [Option<usize>],
}

impl Native<'_> {
    /// Value number `index` of a header, and how many values it has.
    fn header_value(&self, header_type: u32, name: &str, index: usize) -> (Option<Vec<u8>>, usize) {
        let mut value = Buffer::NULL;
        let mut count = 0;
        // SAFETY: `self.envoy` is the filter Envoy passed to this callback; the value
        // buffer it fills stays valid until the headers change, and is copied at once.
        let found = unsafe {
            (self.call.http_get_header)(
                self.envoy,
                header_type,
                Buffer::of(name.as_bytes()),
                &mut value,
                index,
                &mut count,
            )
        };
        (found.then(|| unsafe { value.to_vec() }).flatten(), count)
    }

    fn header_values(&self, header_type: u32, name: &str) -> Vec<Vec<u8>> {
        let mut values = Vec::new();
        let mut count = 1;
        while values.len() < count {
            let (value, total) = self.header_value(header_type, name, values.len());
            let Some(value) = value else { break };
            values.push(value);
            count = total;
        }
        values
    }

    fn set_header(&self, header_type: u32, name: &str, value: Buffer) -> Result<(), String> {
        // SAFETY: both buffers point into live slices for the duration of the call.
        let done = unsafe {
            (self.call.http_set_header)(self.envoy, header_type, Buffer::of(name.as_bytes()), value)
        };
        done.then_some(()).ok_or_else(|| "Envoy refused the header edit".to_string())
    }

    fn attribute(&self, id: u32) -> Option<Vec<u8>> {
        let mut value = Buffer::NULL;
        // SAFETY: as in `header_values`.
        let found = unsafe { (self.call.http_filter_get_attribute_string)(self.envoy, id, &mut value) };
        found.then(|| unsafe { value.to_vec() }).flatten()
    }
}

impl Host for Native<'_> {
    const OWNER_VIA: OwnerVia = OwnerVia::OverrideHost;
    // An attribute read is ~100 instructions here.
    const CHEAP_DETAILS: bool = true;
    // `set_upstream_override_host` refuses anything but an IP address.
    const INTERNAL_OWNERS: bool = false;

    fn request_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.header_value(abi::REQUEST_HEADERS, name, 0).0
    }

    fn request_header_values(&mut self, name: &str) -> Result<Vec<Vec<u8>>, String> {
        Ok(self.header_values(abi::REQUEST_HEADERS, name))
    }

    fn set_request_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        self.set_header(abi::REQUEST_HEADERS, name, Buffer::of(value))
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), String> {
        self.set_header(abi::REQUEST_HEADERS, name, Buffer::NULL)
    }

    fn reroute(&mut self) {
        // SAFETY: `self.envoy` is the filter Envoy passed to this callback.
        unsafe { (self.call.http_clear_route_cache)(self.envoy) }
    }

    fn set_override_host(&mut self, owner: &Owner) -> Result<(), String> {
        let host = owner.host_key();
        // SAFETY: the buffer points into `host` for the duration of the call.
        let done = unsafe {
            (self.call.http_set_upstream_override_host)(self.envoy, Buffer::of(host.as_bytes()), false)
        };
        done.then_some(()).ok_or_else(|| format!("Envoy refused {host}"))
    }

    fn cluster_name(&mut self) -> Option<String> {
        let mut name = Buffer::NULL;
        // SAFETY: as in `header_values`.
        let found = unsafe { (self.call.http_get_cluster_name)(self.envoy, &mut name) };
        found.then(|| unsafe { name.to_vec() }).flatten().and_then(|b| String::from_utf8(b).ok())
    }

    fn upstream_address(&mut self) -> Option<Vec<u8>> {
        // The host's name as Envoy prints it, in any form (`upstream.address`, as in wasm).
        self.attribute(abi::ATTRIBUTE_UPSTREAM_ADDRESS)
    }

    fn response_code_details(&mut self) -> Option<Vec<u8>> {
        let details = self.attribute(abi::ATTRIBUTE_RESPONSE_CODE_DETAILS);
        // Envoy 1.38 exports every callback tether calls but cannot read this attribute:
        // every answer then counts as Envoy's own and gets no token. Said once, not silently.
        if details.is_none() && !DETAILS_WARNED.swap(true, Ordering::Relaxed) {
            log(
                abi::LOG_ERROR,
                "this Envoy does not report response.code_details to dynamic modules (Envoy 1.38 and older): tether cannot tell the upstream's answers from Envoy's own, so no session is pinned; run Envoy 1.39 or later",
            );
        }
        details
    }

    fn response_header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.header_value(abi::RESPONSE_HEADERS, name, 0).0
    }

    fn response_header_values(&mut self, name: &str) -> Vec<Vec<u8>> {
        self.header_values(abi::RESPONSE_HEADERS, name)
    }

    fn remove_response_header(&mut self, name: &str) {
        let _ = self.set_header(abi::RESPONSE_HEADERS, name, Buffer::NULL);
    }

    fn add_response_header(&mut self, name: &str, value: &[u8]) -> Result<(), String> {
        // SAFETY: both buffers point into live slices for the duration of the call.
        let done = unsafe {
            (self.call.http_add_header)(
                self.envoy,
                abi::RESPONSE_HEADERS,
                Buffer::of(name.as_bytes()),
                Buffer::of(value),
            )
        };
        done.then_some(()).ok_or_else(|| "Envoy refused the header".to_string())
    }

    fn set_response_header(&mut self, name: &str, value: &[u8]) {
        let _ = self.set_header(abi::RESPONSE_HEADERS, name, Buffer::of(value));
    }

    fn now_secs(&mut self) -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    fn log(&mut self, level: Level, message: &str) {
        log(
            match level {
                Level::Info => abi::LOG_INFO,
                Level::Warn => abi::LOG_WARN,
                Level::Error => abi::LOG_ERROR,
            },
            message,
        );
    }

    fn local_reply(&mut self, status: u32, body: &[u8]) {
        refuse(self.call, self.envoy, status, body);
    }

    fn count(&mut self, counter: Counter) {
        if let Some(Some(id)) = self.counters.get(counter.index()) {
            // SAFETY: `id` came from `define_counter` on this filter's configuration.
            unsafe {
                (self.call.http_filter_increment_counter)(self.envoy, *id, std::ptr::null(), 0, 1);
            }
        }
    }

    fn set_log_field(&mut self, key: &str, value: &str) -> Result<(), String> {
        // SAFETY: both buffers point into live slices for the duration of the call; Envoy
        // copies the value into a string filter-state object.
        let done = unsafe {
            (self.call.http_set_filter_state_bytes)(
                self.envoy,
                Buffer::of(key.as_bytes()),
                Buffer::of(value.as_bytes()),
            )
        };
        done.then_some(()).ok_or_else(|| "Envoy has no filter state for this stream".to_string())
    }
}

fn refuse(call: &Callbacks, envoy: FilterEnvoyPtr, status: u32, body: &[u8]) {
    // SAFETY: the buffers point into live slices for the duration of the call.
    unsafe {
        (call.http_send_response)(
            envoy,
            status,
            std::ptr::null(),
            0,
            Buffer::of(body),
            Buffer::of(b"tether_refused"),
        )
    }
}

// ------------------------------------------------------------------ exported to Envoy

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| info.payload().downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let at = info.location().map_or(String::new(), |l| format!(" at {}:{}", l.file(), l.line()));
        log(abi::LOG_CRITICAL, &format!("tether panicked{at}: {message}; the callback failed safe"));
    }));
    // A null return makes Envoy refuse the module, with its own line after ours.
    match abi::bind() {
        Ok(_) => abi::ABI_VERSION.as_ptr().cast(),
        Err(missing) => {
            let message = format!("tether cannot run in this Envoy: it does not export {missing}");
            match abi::find_log() {
                // SAFETY: the buffer points into `message` for the duration of the call.
                Some(log) => unsafe { log(abi::LOG_CRITICAL, Buffer::of(message.as_bytes())) },
                None => eprintln!("{message}"),
            }
            std::ptr::null()
        }
    }
}

/// Loads the JSON configuration (the filter's `filter_config` string); a null return makes
/// Envoy refuse the configuration, after one log line naming the field.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: Buffer,
    config: Buffer,
) -> ModulePtr {
    let loaded = catch_unwind(|| {
        // Envoy calls no hook but `on_program_init` unless it bound the callbacks.
        let call = abi::callbacks()?;
        // SAFETY: Envoy passes a buffer valid for this call.
        let raw = unsafe { config.to_vec() }.unwrap_or_default();
        // `keysFromEnv` reads Envoy's own environment.
        let filter = match Filter::load(&raw, &|var| std::env::var(var).ok(), OwnerVia::OverrideHost) {
            Ok(filter) => filter,
            Err(error) => {
                log(abi::LOG_ERROR, &error.to_string());
                return None;
            }
        };
        log(
            abi::LOG_INFO,
            &format!(
                concat!(
                    "tether ",
                    env!("CARGO_PKG_VERSION"),
                    " (",
                    env!("TETHER_GIT_SHA"),
                    ", native for Envoy ",
                    env!("TETHER_ENVOY_RELEASE"),
                    ") {}"
                ),
                filter.describe()
            ),
        );
        if let Some(warning) = filter.warning() {
            log(abi::LOG_WARN, warning);
        }
        let counters = Counter::all()
            .map(|counter| {
                let name = counter.name();
                let mut id = 0;
                // SAFETY: counters may be defined only here, on the configuration Envoy passed.
                let result = unsafe {
                    (call.http_filter_config_define_counter)(
                        config_envoy,
                        Buffer::of(name.as_bytes()),
                        std::ptr::null(),
                        0,
                        &mut id,
                    )
                };
                (result == 0).then_some(id)
            })
            .collect();
        Some(Box::into_raw(Box::new(Config { call, filter, counters })) as ModulePtr)
    });
    loaded.ok().flatten().unwrap_or(std::ptr::null())
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(config: ModulePtr) {
    if !config.is_null() {
        // SAFETY: made by `Box::into_raw` in `config_new`; Envoy destroys it once.
        drop(unsafe { Box::from_raw(config as *mut Config) });
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: ModulePtr, _: FilterEnvoyPtr) -> ModulePtr {
    let stream = NativeStream { config: config.cast(), stream: Stream::default() };
    Box::into_raw(Box::new(stream)) as ModulePtr
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(stream: ModulePtr) {
    if !stream.is_null() {
        // SAFETY: made by `Box::into_raw` in `filter_new`; Envoy destroys it once.
        drop(unsafe { Box::from_raw(stream as *mut NativeStream) });
    }
}

/// Runs `f` with the stream and its host view; `None` when it panicked or has no state.
fn with_stream<T>(
    envoy: FilterEnvoyPtr,
    stream: ModulePtr,
    f: impl FnOnce(&mut Stream, &mut Native<'_>, &Filter) -> T,
) -> Option<T> {
    catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `stream` came from `filter_new` and its configuration outlives it (Envoy
        // keeps the configuration alive while any of its filters exists); Envoy runs one
        // callback of a stream at a time.
        let state = unsafe { (stream as *mut NativeStream).as_mut() }?;
        let config = unsafe { state.config.as_ref() }?;
        let mut host = Native { call: config.call, envoy, counters: &config.counters };
        Some(f(&mut state.stream, &mut host, &config.filter))
    }))
    .ok()
    .flatten()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: FilterEnvoyPtr,
    stream: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    match with_stream(envoy, stream, |stream, host, filter| stream.on_request(host, filter)) {
        Some(Verdict::Continue) => abi::CONTINUE,
        Some(Verdict::Stop) => abi::STOP_ITERATION,
        // Its internal headers may still be the client's: never forward it.
        None => {
            if let Some(call) = abi::callbacks() {
                refuse(call, envoy, 500, b"");
            }
            abi::STOP_ITERATION
        }
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: FilterEnvoyPtr,
    stream: ModulePtr,
    _end_of_stream: bool,
) -> u32 {
    // A failure here costs at most this response's token; the response goes on.
    let _ = with_stream(envoy, stream, |stream, host, filter| stream.on_response(host, filter));
    abi::CONTINUE
}

// The hooks Envoy requires of every HTTP filter module; tether needs none of them.
crate::export_unused_hooks!();
