//! The owner address of a session and the value of the override-host header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::net::SocketAddr;

/// The value Envoy's `envoy.http.stateful_session.header` extension decodes: standard,
/// padded base64 of the host's `ip:port` (IPv6 as `[ip]:port`, as Envoy prints it).
pub fn override_host_value(owner: &SocketAddr) -> String {
    STANDARD.encode(owner.to_string())
}

/// The value Envoy's `envoy.http.stateful_session.cookie` extension decodes: standard,
/// padded base64 of the protobuf message `envoy.Cookie { string address = 1; uint64
/// expires = 2; }` with the address only (no expiry: the token carries tether's). Written
/// by hand: one length-delimited field, where a protobuf crate would add weight to the
/// module for two bytes of framing.
pub fn override_cookie_value(owner: &SocketAddr) -> String {
    let address = owner.to_string();
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
    fn upstream_address_parsing() {
        assert_eq!(parse_upstream_address(b"10.0.0.7:8080"), Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(parse_upstream_address(b"[2001:db8::5]:443"), Some("[2001:db8::5]:443".parse().unwrap()));
        for bad in [&b""[..], b"10.0.0.7", b"pipe:/tmp/x", b"envoy://internal", b"\xff\xfe"] {
            assert_eq!(parse_upstream_address(bad), None, "{bad:?}");
        }
    }
}
