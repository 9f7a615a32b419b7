//! Reading the affinity cookie from `Cookie` headers and writing `Set-Cookie`.

/// Values of every cookie called `name` in one `Cookie` header value, in order.
///
/// Follows RFC 6265 section 5.4 leniently, as browsers send it: pairs separated by `;`,
/// optional whitespace around names and values, a value may be wrapped in double quotes.
/// Pairs without `=` are skipped. Bytes need not be UTF-8.
pub fn values_named<'a>(header: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
    header.split(|&b| b == b';').filter_map(move |pair| {
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (raw_name, raw_value) = pair.split_at(eq);
        if trim(raw_name) != name {
            return None;
        }
        Some(unquote(trim(raw_value.get(1..).unwrap_or(&[]))))
    })
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_space = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes.iter().position(|b| !is_space(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_space(b)).map_or(start, |i| i + 1);
    bytes.get(start..end).unwrap_or(&[])
}

fn unquote(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Strict,
    Lax,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    /// No Max-Age: the browser drops the cookie when it closes; the token still expires.
    Session,
    /// Max-Age = the time left until the token expires.
    Permanent,
}

/// How the affinity cookie is written. Values are validated by `config` so that nothing
/// here can inject another header attribute.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CookieSpec {
    pub name: String,
    pub path: String,
    pub domain: Option<String>,
    pub secure: bool,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    pub lifetime: Lifetime,
}

impl CookieSpec {
    /// The `Set-Cookie` value for `token`, which stays valid for `remaining_secs`.
    pub fn render(&self, token: &str, remaining_secs: u64) -> String {
        let mut out = String::with_capacity(self.name.len() + token.len() + 96);
        out.push_str(&self.name);
        out.push('=');
        out.push_str(token);
        out.push_str("; Path=");
        out.push_str(&self.path);
        if let Some(domain) = &self.domain {
            out.push_str("; Domain=");
            out.push_str(domain);
        }
        if self.lifetime == Lifetime::Permanent {
            out.push_str("; Max-Age=");
            out.push_str(&remaining_secs.to_string());
        }
        if self.secure {
            out.push_str("; Secure");
        }
        if self.http_only {
            out.push_str("; HttpOnly");
        }
        match self.same_site {
            Some(SameSite::Strict) => out.push_str("; SameSite=Strict"),
            Some(SameSite::Lax) => out.push_str("; SameSite=Lax"),
            Some(SameSite::None) => out.push_str("; SameSite=None"),
            None => {}
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(header: &[u8]) -> Vec<&[u8]> {
        values_named(header, b"tether").collect()
    }

    #[test]
    fn cookie_header_parsing() {
        let cases: &[(&[u8], &[&[u8]])] = &[
            (b"tether=abc", &[b"abc"]),
            (b"a=1; tether=abc; b=2", &[b"abc"]),
            (b"a=1;tether=abc;b=2", &[b"abc"]),
            (b"  tether  =  abc  ", &[b"abc"]),
            (b"\ttether=abc\t;", &[b"abc"]),
            (b"tether=\"abc\"", &[b"abc"]),
            (b"tether=\"", &[b"\""]),
            (b"tether=", &[b""]),
            (b"tether=a=b", &[b"a=b"]),
            (b"tether=one; tether=two", &[b"one", b"two"]),
            (b"Tether=abc; xtether=abc; tether2=abc", &[]),
            (b"tether; =tether; ;;", &[]),
            (b"", &[]),
            (b"tether=\xff\x00; a=b", &[b"\xff\x00"]),
        ];
        for (header, want) in cases {
            assert_eq!(found(header), *want, "{}", String::from_utf8_lossy(header));
        }
    }

    fn spec() -> CookieSpec {
        CookieSpec {
            name: "tether".into(),
            path: "/".into(),
            domain: None,
            secure: false,
            http_only: true,
            same_site: Some(SameSite::Lax),
            lifetime: Lifetime::Session,
        }
    }

    #[test]
    fn set_cookie_rendering() {
        assert_eq!(spec().render("TOK", 60), "tether=TOK; Path=/; HttpOnly; SameSite=Lax");
        let full = CookieSpec {
            path: "/app".into(),
            domain: Some("example.com".into()),
            secure: true,
            http_only: false,
            same_site: Some(SameSite::None),
            lifetime: Lifetime::Permanent,
            ..spec()
        };
        assert_eq!(
            full.render("TOK", 3600),
            "tether=TOK; Path=/app; Domain=example.com; Max-Age=3600; Secure; SameSite=None"
        );
        let bare = CookieSpec { http_only: false, same_site: None, ..spec() };
        assert_eq!(bare.render("T", 1), "tether=T; Path=/");
    }
}
