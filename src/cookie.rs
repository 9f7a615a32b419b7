//! Reading the affinity cookie from `Cookie` headers and writing `Set-Cookie`, and the
//! edits learn mode makes to the app's cookie. Hand-written: tether needs a few byte-level
//! operations on header values, not a cookie jar, and a cookie crate would bring its
//! parser and date handling into the wasm module.

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

/// What to do with the request's `Cookie` headers when the owner travels to Envoy's cookie
/// session state as cookie `name` (`hostCookie`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CookieRewrite {
    /// No cookie of that name and no owner to present: forward the headers as they are.
    Keep,
    /// Forward no `Cookie` header (the client's held only cookies of that name).
    Remove,
    /// Replace every `Cookie` header with this one value.
    Set(Vec<u8>),
}

/// The `Cookie` header to forward: every client-sent cookie called `name` removed (a client
/// must not pick its pod), then `name=owner` first if there is an owner, then the other
/// cookies of all `Cookie` headers in order, joined with `; ` as HTTP/2 joins them.
pub fn with_owner_cookie<'a>(
    headers: impl IntoIterator<Item = &'a [u8]>,
    name: &[u8],
    owner: Option<&[u8]>,
) -> CookieRewrite {
    let mut found = false;
    let mut others: Vec<&[u8]> = Vec::new();
    for header in headers {
        for pair in header.split(|&b| b == b';').map(trim).filter(|p| !p.is_empty()) {
            let pair_name = pair.iter().position(|&b| b == b'=').and_then(|eq| pair.get(..eq)).map(trim);
            if pair_name == Some(name) {
                found = true;
            } else {
                others.push(pair);
            }
        }
    }
    if !found && owner.is_none() {
        return CookieRewrite::Keep;
    }
    let mut out = Vec::new();
    if let Some(owner) = owner {
        out.extend_from_slice(name);
        out.push(b'=');
        out.extend_from_slice(owner);
    }
    for pair in others {
        if !out.is_empty() {
            out.extend_from_slice(b"; ");
        }
        out.extend_from_slice(pair);
    }
    if out.is_empty() {
        CookieRewrite::Remove
    } else {
        CookieRewrite::Set(out)
    }
}

/// The cookie name of a `Set-Cookie` value (`name=value; attributes`).
pub fn set_cookie_name(value: &[u8]) -> &[u8] {
    let pair = value.split(|&b| b == b';').next().unwrap_or_default();
    trim(pair.split(|&b| b == b'=').next().unwrap_or_default())
}

/// The value a `Set-Cookie` header gives cookie `name`, unless it deletes the cookie (an
/// empty value, or `Max-Age` of zero or less); `None` too for another cookie. Learn mode:
/// the session id an app issues.
pub fn set_cookie_value<'a>(set_cookie: &'a [u8], name: &str) -> Option<&'a [u8]> {
    if set_cookie_name(set_cookie) != name.as_bytes() {
        return None;
    }
    let mut parts = set_cookie.split(|&b| b == b';');
    let pair = parts.next()?;
    let eq = pair.iter().position(|&b| b == b'=')?;
    let value = trim(pair.get(eq + 1..).unwrap_or_default());
    let deletes = parts.any(|attribute| {
        let attribute = trim(attribute);
        let eq = attribute.iter().position(|&b| b == b'=').unwrap_or(attribute.len());
        let (key, value) = attribute.split_at(eq);
        key.eq_ignore_ascii_case(b"max-age")
            && trim(value.get(1..).unwrap_or_default()).first().is_some_and(|b| *b == b'-' || *b == b'0')
    });
    (!deletes && !value.is_empty()).then_some(value)
}

/// `set_cookie` with its value replaced by `value`; the name and every attribute are kept
/// byte for byte.
pub fn with_set_cookie_value(set_cookie: &[u8], value: &[u8]) -> Vec<u8> {
    let eq = set_cookie.iter().position(|&b| b == b'=').unwrap_or(set_cookie.len());
    let end = set_cookie.iter().position(|&b| b == b';').unwrap_or(set_cookie.len());
    let mut out = Vec::with_capacity(set_cookie.len() + value.len());
    out.extend_from_slice(set_cookie.get(..eq).unwrap_or(set_cookie));
    out.push(b'=');
    out.extend_from_slice(value);
    out.extend_from_slice(set_cookie.get(end.max(eq)..).unwrap_or_default());
    out
}

/// A `Cookie` header value with every `name=<from>` pair (the value as [`values_named`]
/// reads it) turned into `name=<to>`; everything else is kept byte for byte.
pub fn with_value_replaced(header: &[u8], name: &str, from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(header.len() + to.len());
    for (i, pair) in header.split(|&b| b == b';').enumerate() {
        if i > 0 {
            out.push(b';');
        }
        if values_named(pair, name.as_bytes()).next() == Some(from) {
            let lead = pair.iter().take_while(|b| **b == b' ' || **b == b'\t').count();
            out.extend_from_slice(pair.get(..lead).unwrap_or_default());
            out.extend_from_slice(name.as_bytes());
            out.push(b'=');
            out.extend_from_slice(to);
        } else {
            out.extend_from_slice(pair);
        }
    }
    out
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

    #[test]
    fn owner_cookie_rewrite() {
        use CookieRewrite::*;
        let rewrite = |headers: &[&[u8]], owner: Option<&[u8]>| {
            with_owner_cookie(headers.iter().copied(), b"owner", owner)
        };
        let set = |v: &str| Set(v.as_bytes().to_vec());
        // Nothing to hide and nothing to present: untouched.
        assert_eq!(rewrite(&[b"a=1; tether=T"], None), Keep);
        assert_eq!(rewrite(&[], None), Keep);
        // The owner goes first (Envoy reads the first cookie of the name).
        assert_eq!(rewrite(&[b"a=1; tether=T"], Some(b"V")), set("owner=V; a=1; tether=T"));
        assert_eq!(rewrite(&[], Some(b"V")), set("owner=V"));
        // Client-sent copies are removed, in every header, however they are spaced or quoted.
        assert_eq!(
            rewrite(&[b"owner=X; a=1", b" owner = \"Y\" ;b=2;owner="], Some(b"V")),
            set("owner=V; a=1; b=2")
        );
        assert_eq!(rewrite(&[b"owner=X; a=1", b"b=2"], None), set("a=1; b=2"));
        assert_eq!(rewrite(&[b"owner=X", b"owner=Y;"], None), Remove);
        // Only that exact name; pairs without `=` and odd bytes pass through.
        assert_eq!(rewrite(&[b"Owner=1; owner2=2; flag; \xff=\x00"], None), Keep);
        assert_eq!(
            rewrite(&[b"Owner=1; owner2=2; flag; \xff=\x00"], Some(b"V")),
            Set(b"owner=V; Owner=1; owner2=2; flag; \xff=\x00".to_vec())
        );
    }

    #[test]
    fn set_cookie_names() {
        assert_eq!(set_cookie_name(b"owner=\"Cg8=\"; Path=/; HttpOnly"), b"owner");
        assert_eq!(set_cookie_name(b" owner =x"), b"owner");
        assert_eq!(set_cookie_name(b"owner"), b"owner");
        assert_eq!(set_cookie_name(b""), b"");
        assert_eq!(set_cookie_name(b"tether=owner=1"), b"tether");
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

    #[test]
    fn set_cookie_issues_its_value_unless_it_deletes_the_cookie() {
        let cases: &[(&[u8], Option<&[u8]>)] = &[
            (b"JSESSIONID=ABC123; Path=/app; HttpOnly", Some(b"ABC123")),
            (b" JSESSIONID = ABC123 ;Secure", Some(b"ABC123")),
            (b"JSESSIONID=\"ABC\"; Path=/", Some(b"\"ABC\"")),
            (b"JSESSIONID=; Path=/", None),
            (b"JSESSIONID=ABC; Max-Age=0", None),
            (b"JSESSIONID=ABC; max-age=-1; Path=/", None),
            (b"JSESSIONID=ABC; Max-Age=3600", Some(b"ABC")),
            (b"OTHER=ABC", None),
            (b"JSESSIONIDX=ABC", None),
            (b"JSESSIONID", None),
            (b"JSESSIONID=a b", Some(b"a b")),
        ];
        for (value, want) in cases {
            assert_eq!(set_cookie_value(value, "JSESSIONID"), *want, "{}", String::from_utf8_lossy(value));
        }
    }

    #[test]
    fn wrapping_keeps_every_attribute_and_unwrapping_every_other_cookie() {
        assert_eq!(
            with_set_cookie_value(b"JSESSIONID=ABC; Path=/app; HttpOnly", b"ENV"),
            b"JSESSIONID=ENV; Path=/app; HttpOnly"
        );
        assert_eq!(with_set_cookie_value(b"JSESSIONID=ABC", b"ENV"), b"JSESSIONID=ENV");
        let header = b"a=1; JSESSIONID=ENV;b=\"2\"; JSESSIONID=OTHER";
        assert_eq!(
            with_value_replaced(header, "JSESSIONID", b"ENV", b"ABC"),
            b"a=1; JSESSIONID=ABC;b=\"2\"; JSESSIONID=OTHER".to_vec()
        );
        assert_eq!(with_value_replaced(b"x=ENV", "JSESSIONID", b"ENV", b"ABC"), b"x=ENV".to_vec());
    }
}
