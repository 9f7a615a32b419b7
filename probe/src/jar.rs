//! A cookie jar for one session against one URL: keeps `name=value` of each `Set-Cookie`,
//! forgets a cookie set with `Max-Age` ≤ 0. Domain, Path and Expires are not evaluated
//! (every request goes to the same URL).

#[derive(Debug, Default, Clone)]
pub struct Jar {
    cookies: Vec<(String, String)>,
}

impl Jar {
    /// Stores one `Set-Cookie` header value; returns the cookie's name if it was valid.
    pub fn store(&mut self, set_cookie: &str) -> Option<String> {
        let mut parts = set_cookie.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() || name.bytes().any(|b| b <= b' ' || b"()<>@,;:\\\"/[]?={}".contains(&b)) {
            return None;
        }
        let expired = parts.filter_map(|a| a.split_once('=')).any(|(k, v)| {
            k.trim().eq_ignore_ascii_case("max-age") && v.trim().parse::<i64>().is_ok_and(|n| n <= 0)
        });
        self.cookies.retain(|(n, _)| n != name);
        if !expired {
            self.cookies.push((name.to_string(), value.to_string()));
        }
        Some(name.to_string())
    }

    /// The `Cookie` request header, if the jar holds anything.
    pub fn header(&self) -> Option<String> {
        if self.cookies.is_empty() {
            return None;
        }
        Some(self.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect::<Vec<_>>().join("; "))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.cookies.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn is_empty(&self) -> bool {
        self.cookies.is_empty()
    }

    pub fn names(&self) -> Vec<&str> {
        self.cookies.iter().map(|(n, _)| n.as_str()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_replaces_and_expires() {
        let mut jar = Jar::default();
        assert_eq!(jar.header(), None);
        assert_eq!(jar.store("tether=abc; Path=/; HttpOnly; SameSite=Lax").as_deref(), Some("tether"));
        assert_eq!(jar.store(" other = x=y ; Max-Age=60").as_deref(), Some("other"));
        assert_eq!(jar.header().as_deref(), Some("tether=abc; other=x=y"));
        jar.store("tether=def");
        assert_eq!(jar.get("tether"), Some("def"));
        assert_eq!(jar.header().as_deref(), Some("other=x=y; tether=def"));
        jar.store("other=; Max-Age=0");
        assert_eq!(jar.names(), ["tether"]);
        for bad in ["", "novalue", "=v", "a b=c", "a;b=c"] {
            assert_eq!(jar.store(bad), None, "{bad:?}");
        }
        assert_eq!(jar.header().as_deref(), Some("tether=def"));
    }
}
