//! Any bytes as plugin configuration: refused with a named field or accepted, never a
//! panic. Whatever is accepted cannot inject anything into a header: every header name is
//! a lower-case RFC 9110 token, and the rendered Set-Cookie is the token followed by
//! exactly the attributes the settings ask for, each once, with the configured values.
//! (The seed corpus has CR/LF in every header-name field and `;` in the cookie path.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::config;
use tether::cookie::{Lifetime, SameSite};

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fuzz_target!(|data: &[u8]| {
    let env =
        |name: &str| (name == "K").then(|| "k=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=".to_string());
    let settings = match config::load(data, &env) {
        Ok(settings) => settings,
        Err(error) => {
            assert!(!error.field.is_empty());
            return;
        }
    };
    let headers = [
        Some(&settings.host_header),
        Some(&settings.key_header),
        settings.token_header.as_ref(),
        settings.cluster_header.as_ref(),
        settings.debug_header.as_ref(),
    ];
    for name in headers.into_iter().flatten() {
        assert!(is_token(name) && !name.bytes().any(|b| b.is_ascii_uppercase()), "header name {name:?}");
    }
    let Some(cookie) = &settings.cookie else { return };
    assert!(is_token(&cookie.name), "cookie name {:?}", cookie.name);
    let rendered = cookie.render("TOKEN", 60);
    let mut parts = rendered.split("; ");
    assert_eq!(parts.next(), Some(format!("{}=TOKEN", cookie.name).as_str()), "{rendered:?}");
    let mut want = vec![format!("Path={}", cookie.path)];
    want.extend(cookie.domain.as_ref().map(|d| format!("Domain={d}")));
    if cookie.lifetime == Lifetime::Permanent {
        want.push("Max-Age=60".into());
    }
    if cookie.secure {
        want.push("Secure".into());
    }
    if cookie.http_only {
        want.push("HttpOnly".into());
    }
    want.extend(cookie.same_site.map(|s| {
        let s = match s {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        };
        format!("SameSite={s}")
    }));
    assert_eq!(parts.collect::<Vec<_>>(), want, "{rendered:?}");
    assert!(cookie.path.starts_with('/'), "{:?}", cookie.path);
    assert!(
        !rendered.bytes().any(|b| b.is_ascii_control()) && rendered.matches(';').count() == want.len(),
        "{rendered:?}"
    );
});
