//! The few declarations of Envoy's dynamic-module ABI (Envoy 1.40.0, ABI `v0.2.0`) that
//! tether uses, written from Envoy's `abi.h` and its documentation. Envoy's own Rust SDK is
//! a git dependency on Envoy's repository, which this build cannot fetch, and the crate of
//! that name on crates.io is an older, incompatible prototype.
#![allow(non_camel_case_types)]

use std::ffi::c_void;

/// The ABI version this module was written against; Envoy compares it at load time.
pub const ABI_VERSION: &[u8] = b"v0.2.0\0";

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

/// `envoy_dynamic_module_type_attribute_id` values (positions in Envoy 1.40's enum).
pub const ATTRIBUTE_RESPONSE_CODE_DETAILS: u32 = 16;
pub const ATTRIBUTE_UPSTREAM_ADDRESS: u32 = 41;
pub const ATTRIBUTE_XDS_CLUSTER_NAME: u32 = 57;

/// `envoy_dynamic_module_type_on_http_filter_request_headers_status` (and the response one).
pub const CONTINUE: u32 = 0;
pub const STOP_ITERATION: u32 = 1;

extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: u32, message: Buffer);

    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: Buffer,
        label_names: *const Buffer,
        label_count: usize,
        id: *mut usize,
    ) -> u32;

    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *const Buffer,
        label_count: usize,
        value: u64,
    ) -> u32;

    /// Value number `index` of header `key`; `count` receives how many values it has.
    pub fn envoy_dynamic_module_callback_http_get_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;

    /// Replaces every value of `key`; a null `value` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_add_header(
        filter: FilterEnvoyPtr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_filter_get_attribute_string(
        filter: FilterEnvoyPtr,
        attribute: u32,
        value: *mut Buffer,
    ) -> bool;

    /// The upstream host's IP address. New in Envoy 1.40, and never called: the module
    /// only takes its address (`on_program_init`), so that older Envoys refuse the module
    /// at load ("undefined symbol") instead of running it with attribute ids that mean
    /// something else there. tether reads the host's full name (`upstream.address`, which
    /// also covers internal addresses) instead.
    pub fn envoy_dynamic_module_callback_http_get_upstream_remote_address(
        filter: FilterEnvoyPtr,
        address: *mut Buffer,
    ) -> bool;

    /// Makes Envoy match the route again (after header edits the route depends on).
    pub fn envoy_dynamic_module_callback_http_clear_route_cache(filter: FilterEnvoyPtr);

    /// The host the load balancer must pick if the cluster has it in a state its
    /// `override_host_status` allows; with `strict` false, else the load balancer decides.
    pub fn envoy_dynamic_module_callback_http_set_upstream_override_host(
        filter: FilterEnvoyPtr,
        host: Buffer,
        strict: bool,
    ) -> bool;

    /// Sets a read-only string object (`Router::StringAccessor`) in the stream's filter
    /// state under `key`, which `%FILTER_STATE(key:PLAIN)%` prints in the access log.
    pub fn envoy_dynamic_module_callback_http_set_filter_state_bytes(
        filter: FilterEnvoyPtr,
        key: Buffer,
        value: Buffer,
    ) -> bool;

    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *const HeaderPair,
        header_count: usize,
        body: Buffer,
        details: Buffer,
    );
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
