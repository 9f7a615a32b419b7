//! tether: signed, expiring session affinity for Envoy and Istio.
//!
//! Everything except `host` is pure logic with native unit tests; `host` is the only
//! module that talks to the proxy-wasm host, and it exists only on the wasm target.
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
pub mod keyring;
pub mod session;
pub mod token;

#[cfg(target_arch = "wasm32")]
mod host;
