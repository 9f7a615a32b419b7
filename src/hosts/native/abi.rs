//! The few declarations of Envoy's dynamic-module ABI that tether uses, written from Envoy's
//! `abi.h` and its documentation: the same in Envoy 1.39 (ABI `v0.1.0`) and 1.40 (`v0.2.0`).
//! Envoy's own Rust SDK is a git dependency on Envoy's repository, which this build cannot
//! fetch, and the crate of that name on crates.io is an older, incompatible prototype.
#![allow(non_camel_case_types)]

use std::ffi::c_void;
use std::sync::OnceLock;

/// The ABI version of the Envoy this module was built for (build.rs, `ENVOY_VERSION`);
/// Envoy compares it at load time and only warns on a mismatch.
pub const ABI_VERSION: &str = concat!(env!("TETHER_ENVOY_ABI"), "\0");

/// A byte range: `envoy_dynamic_module_type_module_buffer` (module-owned, passed to Envoy)
/// and `envoy_dynamic_module_type_envoy_buffer` (Envoy-owned, valid during the callback)
/// share this layout. A null pointer means "no value" (and removes a header when set).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    pub ptr: *const u8,
    pub len: usize,
}

impl Buffer {
    pub const NULL: Buffer = Buffer { ptr: std::ptr::null(), len: 0 };

    pub fn of(bytes: &[u8]) -> Buffer {
        Buffer { ptr: bytes.as_ptr(), len: bytes.len() }
    }

    /// Copies an Envoy-owned buffer out; `None` for a null one.
    ///
    /// # Safety
    /// `self` must be null or point to `len` readable bytes.
    pub unsafe fn to_vec(self) -> Option<Vec<u8>> {
        if self.ptr.is_null() {
            return None;
        }
        // SAFETY: non-null and `len` bytes long, as the caller guarantees.
        Some(unsafe { std::slice::from_raw_parts(self.ptr, self.len) }.to_vec())
    }
}

/// `envoy_dynamic_module_type_module_http_header`: a header the module passes in.
#[repr(C)]
pub struct HeaderPair {
    pub key: Buffer,
    pub value: Buffer,
}

pub type ConfigEnvoyPtr = *mut c_void;
pub type FilterEnvoyPtr = *mut c_void;
pub type ModulePtr = *const c_void;

/// `envoy_dynamic_module_type_http_header_type`.
pub const REQUEST_HEADERS: u32 = 0;
pub const RESPONSE_HEADERS: u32 = 2;

/// `envoy_dynamic_module_type_log_level`.
pub const LOG_INFO: u32 = 2;
pub const LOG_WARN: u32 = 3;
pub const LOG_ERROR: u32 = 4;
pub const LOG_CRITICAL: u32 = 5;

/// `envoy_dynamic_module_type_attribute_id` values (the same positions in 1.39's and 1.40's enum).
pub const ATTRIBUTE_RESPONSE_CODE_DETAILS: u32 = 16;
pub const ATTRIBUTE_UPSTREAM_ADDRESS: u32 = 41;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (and the response one).
pub const CONTINUE: u32 = 0;
pub const STOP_ITERATION: u32 = 1;

/// Declares Envoy's callbacks that tether calls, as a table of function pointers filled by
/// name from Envoy's exported symbols ([`Callbacks::find`]) instead of imports the dynamic
/// linker binds: an Envoy that lacks one is then refused by an explicit check that names it,
/// whatever the linker's binding mode (lazy binding would otherwise load the module and
/// crash at the first call of a missing callback).
macro_rules! callbacks {
    ($($(#[$doc:meta])* $field:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?;)*) => {
        pub struct Callbacks {
            $($(#[$doc])* pub $field: unsafe extern "C" fn($($ty),*) $(-> $ret)?,)*
        }

        impl Callbacks {
            /// Every callback by its exported name, or the name of the first one missing.
            pub fn find() -> Result<Callbacks, &'static str> {
                Ok(Callbacks {
                    $($field: {
                        let name = concat!("envoy_dynamic_module_callback_", stringify!($field), "\0");
                        // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the
                        // process's global symbols, Envoy's exported callbacks among them.
                        let found = unsafe { dlsym(RTLD_DEFAULT, name.as_ptr().cast()) };
                        if found.is_null() {
                            return Err(&name[..name.len() - 1]);
                        }
                        // SAFETY: Envoy exports this name as a function of the declared type
                        // (its `abi.h` for the ABI version this module declares).
                        unsafe {
                            std::mem::transmute::<*mut c_void, unsafe extern "C" fn($($ty),*) $(-> $ret)?>(found)
                        }
                    },)*
                })
            }
        }
    };
}

/// glibc's and musl's `RTLD_DEFAULT`.
const RTLD_DEFAULT: *mut c_void = std::ptr::null_mut();

extern "C" {
    // The one libc function this module calls by name (the `libc` crate for one
    // declaration would be a dependency of the bench's empty module too).
    fn dlsym(handle: *mut c_void, symbol: *const std::ffi::c_char) -> *mut c_void;
}

callbacks! {
    log(level: u32, message: Buffer);

    http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_count: usize,
        id: *mut usize
    ) -> u32;

    http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64
    ) -> u32;

    /// Value number `index` of header `key`; `count` receives how many values it has.
    http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: *mut Buffer,
        index: usize,
        count: *mut usize
    ) -> bool;

    /// Replaces every value of `key`; a null `value` removes the header.
    http_set_header(filter: FilterEnvoyPtr, header_type: u32, key: Buffer, value: Buffer) -> bool;

    http_add_header(filter: FilterEnvoyPtr, header_type: u32, key: Buffer, value: Buffer) -> bool;

    http_filter_get_attribute_string(filter: FilterEnvoyPtr, attribute: u32, value: *mut Buffer) -> bool;

    /// The route's upstream cluster (the one `xds.cluster_name` names; that attribute
    /// reads as absent before Envoy 1.40).
    http_get_cluster_name(filter: FilterEnvoyPtr, name: *mut Buffer) -> bool;

    /// Makes Envoy match the route again (after header edits the route depends on).
    http_clear_route_cache(filter: FilterEnvoyPtr);

    /// The host the load balancer must pick if the cluster has it in a state its
    /// `override_host_status` allows; with `strict` false, else the load balancer decides.
    http_set_upstream_override_host(filter: FilterEnvoyPtr, host: Buffer, strict: bool) -> bool;

    /// Sets a read-only string object (`Router::StringAccessor`) in the stream's filter
    /// state under `key`, which `%FILTER_STATE(key:PLAIN)%` prints in the access log.
    http_set_filter_state_bytes(filter: FilterEnvoyPtr, key: Buffer, value: Buffer) -> bool;

    http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *const HeaderPair,
        header_count: usize,
        body: Buffer,
        details: Buffer
    );
}

static CALLBACKS: OnceLock<Callbacks> = OnceLock::new();

/// Finds Envoy's callbacks once (`on_program_init`); the name of one Envoy lacks, if any.
pub fn bind() -> Result<&'static Callbacks, &'static str> {
    if let Some(found) = CALLBACKS.get() {
        return Ok(found);
    }
    let found = Callbacks::find()?;
    Ok(CALLBACKS.get_or_init(|| found))
}

/// Envoy's log callback alone, to say why `bind` failed.
pub fn find_log() -> Option<unsafe extern "C" fn(u32, Buffer)> {
    // SAFETY: as in `Callbacks::find`.
    let found = unsafe { dlsym(RTLD_DEFAULT, c"envoy_dynamic_module_callback_log".as_ptr()) };
    // SAFETY: Envoy exports this name as `void (envoy_dynamic_module_type_log_level, module_buffer)`.
    (!found.is_null())
        .then(|| unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn(u32, Buffer)>(found) })
}

/// The callbacks `bind` found; `None` before it succeeded (Envoy then never calls the
/// module's other hooks).
pub fn callbacks() -> Option<&'static Callbacks> {
    CALLBACKS.get()
}

/// Exports the no-op hooks Envoy requires of every HTTP filter module (bodies, trailers,
/// callouts, streams, scheduling, watermarks); the body and trailer hooks continue. Shared
/// with the bench's empty module (`bench/empty-native`), which includes this file.
#[macro_export]
macro_rules! export_unused_hooks {
    () => {
        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: bool,
        ) -> u32 {
            0
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
        ) -> u32 {
            0
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: bool,
        ) -> u32 {
            0
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
        ) -> u32 {
            0
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
            _: u32,
            _: *const std::ffi::c_void,
            _: usize,
            _: *const std::ffi::c_void,
            _: usize,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
            _: *const std::ffi::c_void,
            _: usize,
            _: bool,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
            _: *const std::ffi::c_void,
            _: usize,
            _: bool,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
            _: *const std::ffi::c_void,
            _: usize,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
            _: u32,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
            _: u64,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
        ) {
        }

        #[no_mangle]
        pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
            _: *mut ::std::ffi::c_void,
            _: *const ::std::ffi::c_void,
        ) {
        }
    };
}
