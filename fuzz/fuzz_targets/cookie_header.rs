//! Any bytes as Cookie headers and a token header: parsing and the routing decision never
//! panic, and a new session never carries an override host.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::config;
use tether::session::{self, Affinity};
use tether::token::SessionId;

fuzz_target!(|data: &[u8]| {
    let settings = config::load(
        br#"{"keys":"a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=","type":"CookieAndHeader"}"#,
        &|_| None,
    )
    .unwrap();
    let _ = tether::cookie::values_named(data, b"tether").count();
    // Split the input into a token header and several cookie headers at 0xff bytes.
    let mut parts = data.split(|&b| b == 0xff);
    let header = parts.next();
    let cookies: Vec<&[u8]> = parts.collect();
    let affinity = session::resolve(header, cookies.iter().copied(), "pods", &settings, 1_800_000_000, || {
        Some(SessionId([1; 16]))
    })
    .unwrap();
    let steering = session::steering(&affinity, &settings);
    if let Affinity::New { .. } = affinity {
        assert!(steering.override_host.is_none());
    }
});
