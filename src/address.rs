//! The owner address of a session and the value of the override-host header.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::net::SocketAddr;

/// The value Envoy's `envoy.http.stateful_session.header` extension decodes: standard,
/// padded base64 of the host's `ip:port` (IPv6 as `[ip]:port`, as Envoy prints it).
pub fn override_host_value(owner: &SocketAddr) -> String {
    STANDARD.encode(owner.to_string())
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
    fn upstream_address_parsing() {
        assert_eq!(parse_upstream_address(b"10.0.0.7:8080"), Some("10.0.0.7:8080".parse().unwrap()));
        assert_eq!(parse_upstream_address(b"[2001:db8::5]:443"), Some("[2001:db8::5]:443".parse().unwrap()));
        for bad in [&b""[..], b"10.0.0.7", b"pipe:/tmp/x", b"envoy://internal", b"\xff\xfe"] {
            assert_eq!(parse_upstream_address(bad), None, "{bad:?}");
        }
    }
}
