//! The owner address of a session and the value of the override-host header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::net::SocketAddr;

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
/// padded base64 of the host's `ip:port` (IPv6 as `[ip]:port`, as Envoy prints it).
pub fn override_host_value(owner: &SocketAddr) -> String {
    STANDARD.encode(host_port(owner))
}

/// The value Envoy's `envoy.http.stateful_session.cookie` extension decodes: standard,
/// padded base64 of the protobuf message `envoy.Cookie { string address = 1; uint64
/// expires = 2; }` with the address only (no expiry: the token carries tether's). Written
/// by hand: one length-delimited field, where a protobuf crate would add weight to the
/// module for two bytes of framing.
pub fn override_cookie_value(owner: &SocketAddr) -> String {
    let address = host_port(owner);
    // `[ffff:...:ffff%scope]:65535` stays far below 128 bytes: a one-byte varint length.
    let len = u8::try_from(address.len()).unwrap_or(u8::MAX).min(127);
    let mut message = Vec::with_capacity(address.len() + 2);
    message.extend_from_slice(&[0x0a, len]);
    message.extend_from_slice(address.as_bytes().get(..usize::from(len)).unwrap_or_default());
    STANDARD.encode(message)
}

/// Parses Envoy's `upstream.address` property (`1.2.3.4:80`, `[::1]:80`).
pub fn parse_upstream_address(raw: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(raw).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_value_is_padded_base64_of_ip_port() {
        let v4: SocketAddr = "127.0.0.1:8083".parse().unwrap();
        assert_eq!(override_host_value(&v4), "MTI3LjAuMC4xOjgwODM=");
        let v6: SocketAddr = "[::1]:8083".parse().unwrap();
        assert_eq!(STANDARD.decode(override_host_value(&v6)).unwrap(), b"[::1]:8083");
    }

    #[test]
    fn override_cookie_is_base64_of_envoys_cookie_message() {
        // What Envoy 1.40's cookie session state itself sets for this host (seen in its
        // Set-Cookie: `owner="Cg8xMjcuMC4wLjE6MTgwODE="`).
        let v4: SocketAddr = "127.0.0.1:18081".parse().unwrap();
        assert_eq!(override_cookie_value(&v4), "Cg8xMjcuMC4wLjE6MTgwODE=");
        let v6: SocketAddr = "[2001:db8::5]:443".parse().unwrap();
        let raw = STANDARD.decode(override_cookie_value(&v6)).unwrap();
        assert_eq!(raw[..2], [0x0a, 17]);
        assert_eq!(&raw[2..], b"[2001:db8::5]:443");
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
        assert_eq!(parse_upstream_address(b"10.0.0.7:8080"), Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(parse_upstream_address(b"[2001:db8::5]:443"), Some("[2001:db8::5]:443".parse().unwrap()));
        for bad in [&b""[..], b"10.0.0.7", b"pipe:/tmp/x", b"envoy://internal", b"\xff\xfe"] {
            assert_eq!(parse_upstream_address(bad), None, "{bad:?}");
        }
    }
}
