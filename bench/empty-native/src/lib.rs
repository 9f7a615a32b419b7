//! Does nothing on every request and response: what any Envoy dynamic module costs
//! (`native_empty` in `make bench`). It uses tether's own ABI declarations.
//!
//! Diagnostic (filter config `callbacks`, `diag_native_callbacks`): on each request it makes
//! only the three Envoy calls no native session-affinity filter can do without — read the
//! `cookie` header, set a 32-byte hash-key header, set the upstream override host — and on
//! each response reads the upstream address, so the bench prices Envoy's side of the ABI.
#![allow(dead_code)]

#[path = "../../../src/hosts/native/abi.rs"]
mod abi;

use std::ffi::{c_char, c_void};

/// Something non-null for Envoy to hold: a null configuration or filter means failure.
static EMPTY: u8 = 0;
/// The `callbacks` diagnostic's configuration (and its filters).
static CALLBACKS: u8 = 1;

fn empty() -> *const c_void {
    std::ptr::addr_of!(EMPTY).cast()
}

fn callbacks() -> *const c_void {
    std::ptr::addr_of!(CALLBACKS).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    match abi::bind() {
        Ok(_) => abi::ABI_VERSION.as_ptr().cast(),
        Err(_) => std::ptr::null(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _: abi::ConfigEnvoyPtr,
    _: abi::Buffer,
    config: abi::Buffer,
) -> *const c_void {
    // SAFETY: Envoy passes a buffer valid for this call.
    match unsafe { config.to_vec() }.as_deref() {
        Some(b"callbacks") => callbacks(),
        _ => empty(),
    }
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(config: *const c_void, _: abi::FilterEnvoyPtr) -> *const c_void {
    config
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    envoy: abi::FilterEnvoyPtr,
    filter: *const c_void,
    _: bool,
) -> u32 {
    if let (true, Some(call)) = (filter == callbacks(), abi::callbacks()) {
        let mut value = abi::Buffer::NULL;
        let mut count = 0;
        // SAFETY: the filter Envoy passed to this callback; buffers live for each call.
        unsafe {
            (call.http_get_header)(
                envoy,
                abi::REQUEST_HEADERS,
                abi::Buffer::of(b"cookie"),
                &mut value,
                0,
                &mut count,
            );
            (call.http_set_header)(
                envoy,
                abi::REQUEST_HEADERS,
                abi::Buffer::of(b"x-tether-key"),
                abi::Buffer::of(b"0123456789abcdef0123456789abcdef"),
            );
            (call.http_set_upstream_override_host)(
                envoy,
                abi::Buffer::of(b"127.0.0.1:17081"),
                false,
            );
        }
    }
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    envoy: abi::FilterEnvoyPtr,
    filter: *const c_void,
    _: bool,
) -> u32 {
    if let (true, Some(call)) = (filter == callbacks(), abi::callbacks()) {
        // The upstream host's name, as tether reads it (`upstream.address`).
        let mut address = abi::Buffer::NULL;
        // SAFETY: as above.
        unsafe {
            (call.http_filter_get_attribute_string)(
                envoy,
                abi::ATTRIBUTE_UPSTREAM_ADDRESS,
                &mut address,
            )
        };
    }
    abi::CONTINUE
}

export_unused_hooks!();
