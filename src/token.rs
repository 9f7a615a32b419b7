//! The session token: a signed, expiring statement "session S is owned by ip:port".
//!
//! Wire form: base64url (no padding) of
//!
//! ```text
//! version(1)=1 | key-id length(1) | key id | issued_at(8, BE unix s) | expires_at(8)
//!   | session id(16) | family(1: 4 or 6) | ip(4 or 16) | port(2, BE) | tag(16)
//! ```
//!
//! `tag` is HMAC-SHA256 over every byte before it, truncated to 128 bits and compared in
//! constant time. The key id lets several keys verify while one signs.

use crate::keyring::{Key, Keyring};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::Mac;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const VERSION: u8 = 1;
pub const TAG_LEN: usize = 16;
pub const SESSION_ID_LEN: usize = 16;
/// Longest token text worth decoding: anything longer is malformed without further work.
pub const MAX_TOKEN_TEXT: usize = 160;
/// Tolerated clock difference between Envoys for a token's issue time.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// A random session id, 128 bits. Hashing it picks the fallback owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

impl SessionId {
    /// The value of the hash-key header: 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        let mut out = String::with_capacity(SESSION_ID_LEN * 2);
        for byte in self.0 {
            for nibble in [byte >> 4, byte & 0x0f] {
                out.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
            }
        }
        out
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionToken {
    pub session: SessionId,
    pub owner: SocketAddr,
    /// Unix seconds when this token was signed (a re-pin signs a new one).
    pub issued_at: u64,
    /// Unix seconds after which the session is over; kept across re-pins.
    pub expires_at: u64,
}

/// Why a token was not accepted. Every reason means the same to the user: no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    UnknownVersion,
    UnknownKey,
    BadSignature,
    Expired,
    IssuedInFuture,
    LifetimeTooLong,
}

impl Rejection {
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::UnknownVersion => "unknown_version",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::Expired => "expired",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::LifetimeTooLong => "lifetime_too_long",
        }
    }
}

/// A token that verified, and whether its key is the current signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub token: SessionToken,
    pub signed_by_current_key: bool,
}

/// Signs `token` with `key` and returns the cookie-safe text.
pub fn seal(token: &SessionToken, key: &Key) -> String {
    let id = key.id().as_bytes();
    let mut bytes = Vec::with_capacity(2 + id.len() + 8 + 8 + SESSION_ID_LEN + 19 + TAG_LEN);
    bytes.push(VERSION);
    // Key ids are at most 32 bytes (checked when the keyring is built).
    bytes.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(id);
    bytes.extend_from_slice(&token.issued_at.to_be_bytes());
    bytes.extend_from_slice(&token.expires_at.to_be_bytes());
    bytes.extend_from_slice(&token.session.0);
    match token.owner.ip() {
        IpAddr::V4(ip) => {
            bytes.push(4);
            bytes.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            bytes.push(6);
            bytes.extend_from_slice(&ip.octets());
        }
    }
    bytes.extend_from_slice(&token.owner.port().to_be_bytes());
    let mut mac = key.mac();
    mac.update(&bytes);
    let tag = mac.finalize().into_bytes();
    bytes.extend_from_slice(tag.get(..TAG_LEN).unwrap_or(&[]));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes and verifies a token. `now` is wall-clock unix seconds; `max_lifetime` is the
/// configured absolute timeout: a token promising a longer life than that is refused.
pub fn open(text: &[u8], keyring: &Keyring, now: u64, max_lifetime: u64) -> Result<Verified, Rejection> {
    if text.is_empty() || text.len() > MAX_TOKEN_TEXT {
        return Err(Rejection::Malformed);
    }
    let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| Rejection::Malformed)?;
    let mut reader = Reader { rest: &bytes };
    if reader.byte()? != VERSION {
        return Err(Rejection::UnknownVersion);
    }
    let id_len = usize::from(reader.byte()?);
    let key_id = reader.take(id_len)?;
    let issued_at = reader.u64()?;
    let expires_at = reader.u64()?;
    let session = SessionId(reader.array::<SESSION_ID_LEN>()?);
    let ip = match reader.byte()? {
        4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>()?)),
        _ => return Err(Rejection::Malformed),
    };
    let port = u16::from_be_bytes(reader.array::<2>()?);
    let signed_len = bytes.len() - reader.rest.len();
    let tag = reader.take(TAG_LEN)?;
    if !reader.rest.is_empty() {
        return Err(Rejection::Malformed);
    }
    let (key, is_current) = keyring.find(key_id).ok_or(Rejection::UnknownKey)?;
    let mut mac = key.mac();
    mac.update(bytes.get(..signed_len).ok_or(Rejection::Malformed)?);
    // Constant-time comparison of the leftmost 128 bits.
    mac.verify_truncated_left(tag).map_err(|_| Rejection::BadSignature)?;
    if now >= expires_at {
        return Err(Rejection::Expired);
    }
    if issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::IssuedInFuture);
    }
    if expires_at > now.saturating_add(max_lifetime).saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(Verified {
        token: SessionToken { session, owner: SocketAddr::new(ip, port), issued_at, expires_at },
        signed_by_current_key: is_current,
    })
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejection> {
        if self.rest.len() < n {
            return Err(Rejection::Malformed);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Rejection> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Rejection> {
        self.take(N)?.try_into().map_err(|_| Rejection::Malformed)
    }

    fn u64(&mut self) -> Result<u64, Rejection> {
        Ok(u64::from_be_bytes(self.array::<8>()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keyring::Keyring;

    const K1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";
    const K2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=";
    const NOW: u64 = 1_790_000_000;
    const DAY: u64 = 86_400;

    fn ring(spec: &str) -> Keyring {
        Keyring::parse(spec, None).unwrap()
    }

    fn sample(owner: &str) -> SessionToken {
        SessionToken {
            session: SessionId([0xab; 16]),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 10,
            expires_at: NOW + 3600,
        }
    }

    fn seal_with(token: &SessionToken, keys: &Keyring) -> String {
        seal(token, keys.signing_key().unwrap())
    }

    #[test]
    fn round_trip_ipv4_and_ipv6() {
        let keys = ring(&format!("k1={K1}"));
        for owner in ["127.0.0.1:8081", "[::1]:8083", "[2001:db8::7]:65535", "0.0.0.0:0"] {
            let token = sample(owner);
            let text = seal_with(&token, &keys);
            assert!(text.len() <= MAX_TOKEN_TEXT, "{}", text.len());
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let got = open(text.as_bytes(), &keys, NOW, DAY).unwrap();
            assert_eq!(got, Verified { token, signed_by_current_key: true });
        }
    }

    #[test]
    fn every_single_byte_change_is_refused() {
        let keys = ring(&format!("k1={K1}"));
        let text = seal_with(&sample("10.1.2.3:80"), &keys);
        let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
        for i in 0..raw.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bad = raw.clone();
                bad[i] ^= flip;
                let bad_text = URL_SAFE_NO_PAD.encode(&bad);
                assert!(open(bad_text.as_bytes(), &keys, NOW, DAY).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
    }

    #[test]
    fn rejection_reasons() {
        let keys = ring(&format!("k1={K1}"));
        let other = ring(&format!("k1={K2}"));
        let renamed = ring(&format!("k9={K1}"));
        let good = seal_with(&sample("10.0.0.1:80"), &keys);
        let expired = seal_with(
            &SessionToken { issued_at: NOW - 7200, expires_at: NOW - 1, ..sample("10.0.0.1:80") },
            &keys,
        );
        let future = seal_with(
            &SessionToken { issued_at: NOW + 3600, expires_at: NOW + 7200, ..sample("10.0.0.1:80") },
            &keys,
        );
        let too_long =
            seal_with(&SessionToken { expires_at: NOW + 30 * DAY, ..sample("10.0.0.1:80") }, &keys);
        let mut v2 = URL_SAFE_NO_PAD.decode(&good).unwrap();
        v2[0] = 2;
        let v2 = URL_SAFE_NO_PAD.encode(v2);
        let truncated = &good[..good.len() - 3];
        let padded = format!("{good}==");
        let std_alphabet = good.replace('-', "+").replace('_', "/") + "+/";
        let long = "A".repeat(MAX_TOKEN_TEXT + 1);
        let cases: Vec<(&[u8], &Keyring, Rejection)> = vec![
            (good.as_bytes(), &other, Rejection::BadSignature),
            (good.as_bytes(), &renamed, Rejection::UnknownKey),
            (expired.as_bytes(), &keys, Rejection::Expired),
            (future.as_bytes(), &keys, Rejection::IssuedInFuture),
            (too_long.as_bytes(), &keys, Rejection::LifetimeTooLong),
            (v2.as_bytes(), &keys, Rejection::UnknownVersion),
            (truncated.as_bytes(), &keys, Rejection::Malformed),
            (padded.as_bytes(), &keys, Rejection::Malformed),
            (std_alphabet.as_bytes(), &keys, Rejection::Malformed),
            (long.as_bytes(), &keys, Rejection::Malformed),
            (b"", &keys, Rejection::Malformed),
            (b"\xff\x00garbage", &keys, Rejection::Malformed),
            (b"AQ", &keys, Rejection::Malformed),
        ];
        for (text, keyring, want) in cases {
            assert_eq!(open(text, keyring, NOW, DAY), Err(want), "{}", String::from_utf8_lossy(text));
        }
    }

    #[test]
    fn expiry_boundary_is_exclusive() {
        let keys = ring(&format!("k1={K1}"));
        let text = seal_with(&sample("10.0.0.1:80"), &keys);
        assert!(open(text.as_bytes(), &keys, NOW + 3599, DAY).is_ok());
        assert_eq!(open(text.as_bytes(), &keys, NOW + 3600, DAY), Err(Rejection::Expired));
    }

    #[test]
    fn old_keys_verify_but_are_not_current() {
        let old = ring(&format!("k1={K1}"));
        let rotated = ring(&format!("k2={K2},k1={K1}"));
        let text = seal_with(&sample("10.0.0.1:80"), &old);
        let got = open(text.as_bytes(), &rotated, NOW, DAY).unwrap();
        assert!(!got.signed_by_current_key);
        let text = seal_with(&sample("10.0.0.1:80"), &rotated);
        assert!(open(text.as_bytes(), &rotated, NOW, DAY).unwrap().signed_by_current_key);
    }

    #[test]
    fn session_id_hex() {
        let mut id = [0u8; 16];
        id[0] = 0x0f;
        id[15] = 0xa0;
        assert_eq!(SessionId(id).to_hex(), "0f0000000000000000000000000000a0");
    }
}
