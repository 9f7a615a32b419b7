//! The owner of a session as Envoy names its upstream host, and the values of the
//! override-host header and cookie.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

/// How Envoy names a host behind one of its internal listeners (`envoy_internal_address`).
const INTERNAL_PREFIX: &str = "envoy://";
/// Longest internal listener name an owner may carry: it keeps the override cookie's
/// address under 128 bytes (a one-byte protobuf length) and the token small. Istio's is
/// `connect_originate` (17 bytes).
pub const MAX_LISTENER_LEN: usize = 63;

/// A pod as Envoy's load balancer names it: `ip:port`, or, when the cluster reaches it
/// through an Envoy internal listener, `envoy://<listener>/<ip:port>` (Istio ambient: every
/// ambient pod is `envoy://connect_originate/<pod ip:port>`). The override host must name
/// a host exactly as the cluster keys it, so the form travels with the owner; the pod
/// itself is `addr`, which is what tells one pod from another and what tokens sign.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Owner {
    pub addr: SocketAddr,
    /// The internal listener (`server_listener_name`) in front of the pod, if any.
    pub listener: Option<String>,
}

impl Owner {
    /// Parses Envoy's name of an upstream host (`upstream.address`): `1.2.3.4:80`,
    /// `[::1]:80`, or `envoy://<listener>/<ip:port>`. `None` for any other form (a pipe,
    /// an internal address whose endpoint id is not `ip:port`): tether cannot pin it.
    pub fn parse(raw: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(raw).ok()?;
        let Some(rest) = text.strip_prefix(INTERNAL_PREFIX) else {
            return Some(Owner { addr: text.parse().ok()?, listener: None });
        };
        let (listener, endpoint) = rest.split_once('/')?;
        if !is_listener_name(listener.as_bytes()) {
            return None;
        }
        Some(Owner { addr: endpoint.parse().ok()?, listener: Some(listener.to_string()) })
    }

    /// Whether `other` is the same pod, whichever form either was reached in.
    pub fn same_pod(&self, other: &Owner) -> bool {
        self.addr == other.addr
    }

    /// The host as Envoy names it, which the override host must match exactly.
    pub fn host_key(&self) -> String {
        match &self.listener {
            None => host_port(&self.addr),
            Some(listener) => format!("{INTERNAL_PREFIX}{listener}/{}", host_port(&self.addr)),
        }
    }
}

/// An internal listener name tokens carry: 1 to [`MAX_LISTENER_LEN`] visible ASCII
/// characters without `/` (which ends it in Envoy's host name).
pub fn is_listener_name(name: &[u8]) -> bool {
    (1..=MAX_LISTENER_LEN).contains(&name.len()) && name.iter().all(|b| b.is_ascii_graphic() && *b != b'/')
}

impl From<SocketAddr> for Owner {
    fn from(addr: SocketAddr) -> Owner {
        Owner { addr, listener: None }
    }
}

/// A plain `ip:port` host equal to `other` (an owner behind an internal listener is not).
impl PartialEq<SocketAddr> for Owner {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.listener.is_none() && self.addr == *other
    }
}

impl FromStr for Owner {
    type Err = ();
    fn from_str(text: &str) -> Result<Owner, ()> {
        Owner::parse(text.as_bytes()).ok_or(())
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host_key())
    }
}

/// `ip:port` as Envoy prints a host (IPv6 as `[ip]:port`). IPv4, the common case, is
/// written by hand: `SocketAddr`'s `Display` goes through the formatting machinery, which
/// cost ~3,000 instructions per request here (more inside V8).
pub fn host_port(owner: &SocketAddr) -> String {
    let SocketAddr::V4(v4) = owner else {
        return owner.to_string();
    };
    let mut out = String::with_capacity(21);
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_decimal(&mut out, u32::from(octet));
    }
    out.push(':');
    push_decimal(&mut out, u32::from(v4.port()));
    out
}

fn push_decimal(out: &mut String, n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut rest = n;
    loop {
        if let Some(d) = digits.get_mut(len) {
            // `rest % 10` is a single digit.
            *d = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        }
        len += 1;
        rest /= 10;
        if rest == 0 || len == digits.len() {
            break;
        }
    }
    for d in digits.iter().take(len).rev() {
        out.push(char::from(*d));
    }
}

/// The value Envoy's `envoy.http.stateful_session.header` extension decodes: standard,
/// padded base64 of the host's name (`ip:port`, IPv6 as `[ip]:port`, as Envoy prints it).
pub fn override_host_value(owner: &Owner) -> String {
    STANDARD.encode(owner.host_key())
}

/// The value Envoy's `envoy.http.stateful_session.cookie` extension decodes: standard,
/// padded base64 of the protobuf message `envoy.Cookie { string address = 1; uint64
/// expires = 2; }` with the address only (no expiry: the token carries tether's). Written
/// by hand: one length-delimited field, where a protobuf crate would add weight to the
/// module for two bytes of framing.
pub fn override_cookie_value(owner: &Owner) -> String {
    let address = owner.host_key();
    // `envoy://` + a listener of at most 63 bytes + `/[ffff:...:ffff%scope]:65535` stays
    // below 128 bytes: a one-byte varint length.
    let len = u8::try_from(address.len()).unwrap_or(u8::MAX).min(127);
    let mut message = Vec::with_capacity(address.len() + 2);
    message.extend_from_slice(&[0x0a, len]);
    message.extend_from_slice(address.as_bytes().get(..usize::from(len)).unwrap_or_default());
    STANDARD.encode(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_value_is_padded_base64_of_ip_port() {
        let v4: Owner = "127.0.0.1:8083".parse().unwrap();
        assert_eq!(override_host_value(&v4), "MTI3LjAuMC4xOjgwODM=");
        let v6: Owner = "[::1]:8083".parse().unwrap();
        assert_eq!(STANDARD.decode(override_host_value(&v6)).unwrap(), b"[::1]:8083");
        let ambient: Owner = "envoy://connect_originate/10.0.0.5:8080".parse().unwrap();
        assert_eq!(
            STANDARD.decode(override_host_value(&ambient)).unwrap(),
            b"envoy://connect_originate/10.0.0.5:8080"
        );
    }

    #[test]
    fn override_cookie_is_base64_of_envoys_cookie_message() {
        // What Envoy 1.40's cookie session state itself sets for this host (seen in its
        // Set-Cookie: `owner="Cg8xMjcuMC4wLjE6MTgwODE="`).
        let v4: Owner = "127.0.0.1:18081".parse().unwrap();
        assert_eq!(override_cookie_value(&v4), "Cg8xMjcuMC4wLjE6MTgwODE=");
        let v6: Owner = "[2001:db8::5]:443".parse().unwrap();
        let raw = STANDARD.decode(override_cookie_value(&v6)).unwrap();
        assert_eq!(raw[..2], [0x0a, 17]);
        assert_eq!(&raw[2..], b"[2001:db8::5]:443");
        // The longest owner still has a one-byte length.
        let name = "l".repeat(MAX_LISTENER_LEN);
        let text = format!("envoy://{name}/[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535");
        let raw = STANDARD.decode(override_cookie_value(&text.parse().unwrap())).unwrap();
        assert_eq!(raw[..2], [0x0a, u8::try_from(text.len()).unwrap()]);
        assert!(text.len() < 128);
        assert_eq!(&raw[2..], text.as_bytes());
    }

    #[test]
    fn host_port_is_what_display_prints() {
        for text in [
            "0.0.0.0:0",
            "1.2.3.4:5",
            "10.0.0.7:8080",
            "127.0.0.1:65535",
            "255.255.255.255:443",
            "[::1]:8083",
            "[2001:db8::5]:443",
        ] {
            let addr: SocketAddr = text.parse().unwrap();
            assert_eq!(host_port(&addr), text);
            assert_eq!(host_port(&addr), addr.to_string());
        }
        for seed in 0u32..2000 {
            let octets = seed.wrapping_mul(2_654_435_761).to_be_bytes();
            let addr = SocketAddr::from((octets, u16::try_from(seed * 31 % 65536).unwrap()));
            assert_eq!(host_port(&addr), addr.to_string());
        }
    }

    #[test]
    fn upstream_address_parsing() {
        let plain = |text: &str| Owner { addr: text.parse().unwrap(), listener: None };
        assert_eq!(Owner::parse(b"10.0.0.7:8080"), Some(plain("10.0.0.7:8080")));
        assert_eq!(Owner::parse(b"[2001:db8::5]:443"), Some(plain("[2001:db8::5]:443")));
        let ambient = Owner::parse(b"envoy://connect_originate/10.0.0.5:8080").unwrap();
        assert_eq!(ambient.addr, "10.0.0.5:8080".parse::<SocketAddr>().unwrap());
        assert_eq!(ambient.listener.as_deref(), Some("connect_originate"));
        assert_eq!(ambient.host_key(), "envoy://connect_originate/10.0.0.5:8080");
        assert!(ambient.same_pod(&plain("10.0.0.5:8080")) && ambient != plain("10.0.0.5:8080"));
        assert!(ambient != "10.0.0.5:8080".parse::<SocketAddr>().unwrap());
        let v6 = Owner::parse(b"envoy://l/[fd00::5]:80").unwrap();
        assert_eq!(v6.host_key(), "envoy://l/[fd00::5]:80");
        let long = format!("envoy://{}/10.0.0.5:80", "l".repeat(MAX_LISTENER_LEN + 1));
        for bad in [
            &b""[..],
            b"10.0.0.7",
            b"pipe:/tmp/x",
            b"envoy://internal",
            b"envoy://connect_originate/",
            b"envoy:///10.0.0.5:8080",
            b"envoy://connect_originate/some-endpoint-id",
            b"envoy://a b/10.0.0.5:8080",
            b"envoy://l/10.0.0.5:8080/x",
            long.as_bytes(),
            b"\xff\xfe",
        ] {
            assert_eq!(Owner::parse(bad), None, "{bad:?}");
        }
    }
}
