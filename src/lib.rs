//! tether: signed, expiring session affinity for Envoy and Istio.
//!
//! Everything except `hosts` is pure logic with native unit tests. `filter` is one
//! request's path, written against the `filter::Host` trait; `hosts::wasm` (proxy-wasm,
//! the wasm32 build) and `hosts::native` (Envoy's dynamic-module ABI, feature `native`)
//! implement it and are the only modules that talk to Envoy.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod address;
pub mod config;
pub mod cookie;
pub mod duration;
pub mod filter;
pub mod keyring;
pub mod learn;
pub mod session;
pub mod token;

mod hosts;
