//! The hosts: thin adapters between Envoy and `filter`.

#[cfg(all(feature = "native", not(target_arch = "wasm32")))]
mod native;
#[cfg(target_arch = "wasm32")]
mod wasm;
