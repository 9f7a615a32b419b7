//! Any bytes as plugin configuration: refused with a named field or accepted, never a
//! panic; an accepted cookie renders without CR, LF or NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::config;

fuzz_target!(|data: &[u8]| {
    let env = |name: &str| (name == "K").then(|| "k=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=".to_string());
    match config::load(data, &env) {
        Ok(settings) => {
            if let Some(cookie) = &settings.cookie {
                let rendered = cookie.render("TOKEN", 60);
                assert!(!rendered.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0), "{rendered:?}");
            }
        }
        Err(error) => assert!(!error.field.is_empty()),
    }
});
