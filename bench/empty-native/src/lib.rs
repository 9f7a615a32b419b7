//! Does nothing on every request and response: what any Envoy dynamic module costs
//! (`native_empty` in `make bench`). It uses tether's own ABI declarations.
#![allow(dead_code)]

#[path = "../../../src/hosts/native/abi.rs"]
mod abi;

use std::ffi::{c_char, c_void};

/// Something non-null for Envoy to hold: a null configuration or filter means failure.
static THING: u8 = 0;

fn thing() -> *const c_void {
    std::ptr::addr_of!(THING).cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr().cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    _: abi::ConfigEnvoyPtr,
    _: abi::Buffer,
    _: abi::Buffer,
) -> *const c_void {
    thing()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(_: *const c_void, _: abi::FilterEnvoyPtr) -> *const c_void {
    thing()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    _: abi::FilterEnvoyPtr,
    _: *const c_void,
    _: bool,
) -> u32 {
    abi::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    _: abi::FilterEnvoyPtr,
    _: *const c_void,
    _: bool,
) -> u32 {
    abi::CONTINUE
}

export_unused_hooks!();
