//! The session token: a statement "session S of scope X is owned by ip:port (in cluster
//! C)", signed (format 1) or encrypted (format 2), base64url without padding.
//!
//! ```text
//! claims  = issued_at(8, BE unix s) | expires_at(8) | session id(16)
//!           | family(1: 4 or 6) | ip(4 or 16) | port(2) | cluster length(1) | cluster
//!           [ | listener length(1) | listener ] only when the version byte has INTERNAL
//!           [ | owner_away_since(8) ]           only when the version byte has OWNER_AWAY
//!           [ | app id length(2) | app id ]     only when the version byte has APP_ID
//! format 1 = 1 | key-id length(1) | key id | scope fingerprint(4) | claims | tag(16)
//!            tag = HMAC-SHA256(key, label | scope | every byte before the tag), 128 bits
//! format 2 = 2 | key-id length(1) | key id | nonce(24) | encrypted claims | tag(16)
//!            XChaCha20-Poly1305, associated data = label | scope | version | key id
//! version  = format, plus OWNER_AWAY (0x10) when the claims end with owner_away_since,
//!            plus INTERNAL (0x20) when the owner is reached through an Envoy internal
//!            listener (Istio ambient: `envoy://connect_originate/<ip:port>`),
//!            plus APP_ID (0x40) in an envelope: the token wraps a session id the app
//!            issued (`learn`), and its session id is the hash of that id
//! ```
//!
//! A token whose owner is a plain `ip:port` host and is served (the usual case) is byte for
//! byte what earlier releases minted and read; only a session whose owner is being missed
//! (`repinAfter`), or whose owner sits behind an internal listener, carries an extra claim,
//! which the version byte announces and the tag or AEAD covers. The pod is always signed
//! as its `ip:port`; the listener only says how this cluster reaches it.
//!
//! Format 1 lets anyone read the owner address but nobody forge it; format 2 also hides
//! it. Both bind the scope (by default the upstream cluster) without storing it: a token
//! minted for one scope never verifies in another. Format 1's 4-byte fingerprint only
//! lets a refusal say "wrong scope" instead of "bad signature". Tags are compared in
//! constant time. `issued_at` is when the token was last (re)signed, which the idle timeout
//! counts from; `expires_at` is the absolute end of the session.

use crate::address::{is_listener_name, Owner};
use crate::keyring::{Key, Keyring};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{Tag, XNonce};
use hmac::Mac;
use sha2::{Digest, Sha256};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub const SIGNED: u8 = 1;
pub const ENCRYPTED: u8 = 2;
/// Version flag: the claims end with `owner_away_since`.
pub const OWNER_AWAY: u8 = 0x10;
/// Version flag: the claims name the internal listener in front of the owner.
pub const INTERNAL: u8 = 0x20;
/// Version flag: the claims end with the app's own session id (an envelope, `learn`).
pub const APP_ID: u8 = 0x40;
/// Longest app-issued session id an envelope carries. MCP allows any visible ASCII (a
/// UUID, a hash, a JWT); servlet and PHP ids are 26-40 characters.
pub const MAX_APP_ID_LEN: usize = 1024;
/// Longest envelope text worth decoding: the largest token plus a length and the longest
/// app id (1479 bytes).
pub const MAX_ENVELOPE_TEXT: usize = (MAX_TOKEN_BYTES + 2 + MAX_APP_ID_LEN).div_ceil(3) * 4;
pub const TAG_LEN: usize = 16;
pub const NONCE_LEN: usize = 24;
pub const SESSION_ID_LEN: usize = 16;
/// Longest cluster name a token records (its length is one byte). Envoy sets no limit of
/// its own; Istio's `outbound|port|subset|<svc>.<ns>.svc.cluster.local` names of
/// Kubernetes services (63-byte labels) stay under it.
pub const MAX_CLUSTER_LEN: usize = 255;
/// Longest token text worth decoding: anything longer is malformed without further work.
/// The largest token, encrypted with a 32-byte key id, an IPv6 owner behind a 63-byte
/// internal listener, a 255-byte cluster and an away time, is 453 bytes, 604 in base64.
pub const MAX_TOKEN_TEXT: usize = 604;
/// The most bytes `MAX_TOKEN_TEXT` base64 characters decode to (453): `open` decodes into a
/// stack buffer of this size instead of allocating.
const MAX_TOKEN_BYTES: usize = MAX_TOKEN_TEXT.div_ceil(4) * 3;
/// Tolerated clock difference between Envoys for a token's issue time.
pub const CLOCK_SKEW_SECS: u64 = 60;
const MAC_LABEL: &[u8] = b"tether-token-v1\0";
const AEAD_LABEL: &[u8] = b"tether-token-v2\0";

/// Which token format new tokens use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// HMAC-signed: the owner address is readable, not forgeable.
    Signed,
    /// Encrypted and authenticated: the owner address is hidden too.
    Encrypted,
}

/// A random session id, 128 bits. Hashing it picks the fallback owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; SESSION_ID_LEN]);

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        for nibble in [byte >> 4, byte & 0x0f] {
            // A nibble indexes the 16 digits.
            out.push(char::from(DIGITS.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    out
}

impl SessionId {
    /// The value of the hash-key header: 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// The name of the session in Envoy's access log (`accessLog`): the first 8 hex digits
    /// of SHA-256 of the 16-byte id. It tells one session's lines apart from another's
    /// without revealing the id (which is also the hash key) or the token.
    pub fn log_name(&self) -> String {
        hex(&sha256_prefix(&self.0))
    }

    /// The session id of an app-issued id: the first 128 bits of its SHA-256. Every Envoy
    /// derives the same one, so the fallback owner is the same everywhere, whichever Envoy
    /// wrapped the id.
    pub fn of_app_id(app_id: &[u8]) -> SessionId {
        let mut id = [0u8; SESSION_ID_LEN];
        id.copy_from_slice(Sha256::digest(app_id).get(..SESSION_ID_LEN).unwrap_or(&[0; SESSION_ID_LEN]));
        SessionId(id)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionToken {
    pub session: SessionId,
    pub owner: Owner,
    /// Unix seconds when this token was signed (a re-pin or refresh signs a new one).
    pub issued_at: u64,
    /// Unix seconds after which the session is over; kept across re-pins.
    pub expires_at: u64,
    /// The cluster that served, when cluster pinning is on (sticky canaries); else empty.
    pub cluster: String,
    /// Unix seconds since which responses have come from another pod than `owner` (no
    /// response from the owner in between): the session keeps its owner until this is
    /// `repinAfter` old. `None` while the owner serves. Never later than `issued_at`.
    pub owner_away_since: Option<u64>,
    /// The session id the app issued (an envelope, `learn`): visible ASCII, at most
    /// [`MAX_APP_ID_LEN`] bytes. `session` is then [`SessionId::of_app_id`] of it.
    pub app_id: Option<Vec<u8>>,
}

/// Whether `id` can travel in an envelope: 1 to [`MAX_APP_ID_LEN`] bytes of visible ASCII
/// (what MCP allows in `Mcp-Session-Id`; a cookie value never holds more).
pub fn is_app_id(id: &[u8]) -> bool {
    (1..=MAX_APP_ID_LEN).contains(&id.len()) && id.iter().all(|b| (0x21..0x7f).contains(b))
}

/// Why a token was not accepted. Every reason means the same to the user: no session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    Malformed,
    UnknownVersion,
    UnknownKey,
    BadSignature,
    WrongScope,
    Expired,
    IssuedInFuture,
    LifetimeTooLong,
}

impl Rejection {
    pub const ALL: [Rejection; 8] = [
        Rejection::Malformed,
        Rejection::UnknownVersion,
        Rejection::UnknownKey,
        Rejection::BadSignature,
        Rejection::WrongScope,
        Rejection::Expired,
        Rejection::IssuedInFuture,
        Rejection::LifetimeTooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Malformed => "malformed",
            Rejection::UnknownVersion => "unknown_version",
            Rejection::UnknownKey => "unknown_key",
            Rejection::BadSignature => "bad_signature",
            Rejection::WrongScope => "wrong_scope",
            Rejection::Expired => "expired",
            Rejection::IssuedInFuture => "issued_in_future",
            Rejection::LifetimeTooLong => "lifetime_too_long",
        }
    }
}

/// What a token must satisfy besides its signature.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// The configured absolute timeout: a token promising a longer life is refused.
    pub max_lifetime: u64,
    /// The configured idle timeout, counted from `issued_at`.
    pub idle_timeout: Option<u64>,
    /// Envelopes (`learn`) are expected: only a token carrying an app id verifies. Otherwise
    /// only one without does, so neither kind passes for the other.
    pub envelopes: bool,
}

/// A token that verified, with what it was sealed by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub token: SessionToken,
    pub signed_by_current_key: bool,
    pub format: Format,
}

/// The first 4 bytes of SHA-256(scope).
pub fn scope_fingerprint(scope: &str) -> [u8; 4] {
    sha256_prefix(scope.as_bytes())
}

/// The first 4 bytes of SHA-256(bytes).
fn sha256_prefix(bytes: &[u8]) -> [u8; 4] {
    let digest = Sha256::digest(bytes);
    let mut out = [0u8; 4];
    out.copy_from_slice(digest.get(..4).unwrap_or(&[0; 4]));
    out
}

fn scope_bytes(scope: &str) -> ([u8; 2], &[u8]) {
    let bytes = scope.as_bytes();
    let bytes = bytes.get(..usize::from(u16::MAX)).unwrap_or(bytes);
    (u16::try_from(bytes.len()).unwrap_or(u16::MAX).to_be_bytes(), bytes)
}

fn tag(key: &Key, scope: &str, signed: &[u8]) -> hmac::Hmac<Sha256> {
    let (len, scope) = scope_bytes(scope);
    let mut mac = key.mac();
    mac.update(MAC_LABEL);
    mac.update(&len);
    mac.update(scope);
    mac.update(signed);
    mac
}

fn associated_data(scope: &str, head: &[u8]) -> Vec<u8> {
    let (len, scope) = scope_bytes(scope);
    [AEAD_LABEL, &len, scope, head].concat()
}

fn head(format: u8, token: &SessionToken, key: &Key) -> Vec<u8> {
    let id = key.id().as_bytes();
    let mut bytes = Vec::with_capacity(104 + id.len());
    let mut version = format;
    if token.owner_away_since.is_some() {
        version |= OWNER_AWAY;
    }
    if internal_listener(token).is_some() {
        version |= INTERNAL;
    }
    if envelope_app_id(token).is_some() {
        version |= APP_ID;
    }
    bytes.push(version);
    // Key ids are at most 32 bytes (checked when the keyring is built).
    bytes.push(u8::try_from(id.len()).unwrap_or(u8::MAX));
    bytes.extend_from_slice(id);
    bytes
}

/// The owner's internal listener, if it has one a token can carry (an owner parsed from
/// Envoy always can; a name that cannot is left out, as `encode_claims` leaves it).
fn internal_listener(token: &SessionToken) -> Option<&[u8]> {
    token.owner.listener.as_deref().map(str::as_bytes).filter(|name| is_listener_name(name))
}

/// The app id, if the token has one an envelope can carry (one that cannot is left out,
/// as `encode_claims` leaves it; the host never wraps such an id).
fn envelope_app_id(token: &SessionToken) -> Option<&[u8]> {
    token.app_id.as_deref().filter(|id| is_app_id(id))
}

fn encode_claims(token: &SessionToken, out: &mut Vec<u8>) {
    out.extend_from_slice(&token.issued_at.to_be_bytes());
    out.extend_from_slice(&token.expires_at.to_be_bytes());
    out.extend_from_slice(&token.session.0);
    match token.owner.addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&token.owner.addr.port().to_be_bytes());
    let cluster = token.cluster.as_bytes();
    let cluster = if cluster.len() <= MAX_CLUSTER_LEN { cluster } else { &[] };
    out.push(u8::try_from(cluster.len()).unwrap_or(0));
    out.extend_from_slice(cluster);
    if let Some(listener) = internal_listener(token) {
        // `is_listener_name`: at most MAX_LISTENER_LEN (63) bytes.
        out.push(u8::try_from(listener.len()).unwrap_or(0));
        out.extend_from_slice(listener);
    }
    if let Some(since) = token.owner_away_since {
        out.extend_from_slice(&since.to_be_bytes());
    }
    if let Some(id) = envelope_app_id(token) {
        // `is_app_id`: at most MAX_APP_ID_LEN (1024) bytes.
        out.extend_from_slice(&u16::try_from(id.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(id);
    }
}

fn decode_claims(reader: &mut Reader, flags: u8) -> Result<SessionToken, Rejection> {
    let (owner_away, internal) = (flags & OWNER_AWAY != 0, flags & INTERNAL != 0);
    let issued_at = reader.u64()?;
    let expires_at = reader.u64()?;
    let session = SessionId(reader.array::<SESSION_ID_LEN>()?);
    let ip = match reader.byte()? {
        4 => IpAddr::V4(Ipv4Addr::from(reader.array::<4>()?)),
        6 => IpAddr::V6(Ipv6Addr::from(reader.array::<16>()?)),
        _ => return Err(Rejection::Malformed),
    };
    let port = u16::from_be_bytes(reader.array::<2>()?);
    let cluster_len = usize::from(reader.byte()?);
    if cluster_len > MAX_CLUSTER_LEN {
        return Err(Rejection::Malformed);
    }
    let cluster = std::str::from_utf8(reader.take(cluster_len)?).map_err(|_| Rejection::Malformed)?;
    let listener = if internal {
        let len = usize::from(reader.byte()?);
        let name = reader.take(len)?;
        if !is_listener_name(name) {
            return Err(Rejection::Malformed);
        }
        Some(std::str::from_utf8(name).map_err(|_| Rejection::Malformed)?.to_string())
    } else {
        None
    };
    let owner_away_since = if owner_away { Some(reader.u64()?) } else { None };
    let app_id = if flags & APP_ID != 0 {
        let len = usize::from(u16::from_be_bytes(reader.array::<2>()?));
        let id = reader.take(len)?;
        if !is_app_id(id) {
            return Err(Rejection::Malformed);
        }
        Some(id.to_vec())
    } else {
        None
    };
    Ok(SessionToken {
        session,
        owner: Owner { addr: SocketAddr::new(ip, port), listener },
        issued_at,
        expires_at,
        cluster: cluster.to_string(),
        owner_away_since,
        app_id,
    })
}

/// Signs `token` for `scope` with `key` (format 1) and returns the cookie-safe text.
pub fn seal(token: &SessionToken, key: &Key, scope: &str) -> String {
    let mut bytes = head(SIGNED, token, key);
    bytes.extend_from_slice(&scope_fingerprint(scope));
    encode_claims(token, &mut bytes);
    let full = tag(key, scope, &bytes).finalize().into_bytes();
    bytes.extend_from_slice(full.get(..TAG_LEN).unwrap_or(&[]));
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Encrypts `token` for `scope` with `key` (format 2). `nonce` must be random: 192 bits
/// make collisions negligible.
pub fn seal_encrypted(
    token: &SessionToken,
    key: &Key,
    scope: &str,
    nonce: [u8; NONCE_LEN],
) -> Option<String> {
    let mut bytes = head(ENCRYPTED, token, key);
    let aad = associated_data(scope, &bytes);
    bytes.extend_from_slice(&nonce);
    let start = bytes.len();
    encode_claims(token, &mut bytes);
    let plain = bytes.get_mut(start..)?;
    let tag = key.aead().encrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, plain).ok()?;
    bytes.extend_from_slice(&tag);
    Some(URL_SAFE_NO_PAD.encode(bytes))
}

/// Decodes and verifies a token of either format for `scope` at wall-clock unix second `now`.
pub fn open(
    text: &[u8],
    keyring: &Keyring,
    scope: &str,
    now: u64,
    limits: Limits,
) -> Result<Verified, Rejection> {
    let max = if limits.envelopes { MAX_ENVELOPE_TEXT } else { MAX_TOKEN_TEXT };
    if text.is_empty() || text.len() > max {
        return Err(Rejection::Malformed);
    }
    if limits.envelopes {
        // Envelopes are rare enough (one per request in `learn` mode) to decode on the heap.
        let mut bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| Rejection::Malformed)?;
        return open_decoded(&mut bytes, keyring, scope, now, limits);
    }
    // The buffer holds the decoder's conservative estimate for any text up to the cap, so
    // `decode_slice` accepts and refuses exactly the texts `decode` would.
    let mut buffer = [0u8; MAX_TOKEN_BYTES];
    let len = URL_SAFE_NO_PAD.decode_slice(text, &mut buffer).map_err(|_| Rejection::Malformed)?;
    let bytes = buffer.get_mut(..len).ok_or(Rejection::Malformed)?;
    open_decoded(bytes, keyring, scope, now, limits)
}

fn open_decoded(
    bytes: &mut [u8],
    keyring: &Keyring,
    scope: &str,
    now: u64,
    limits: Limits,
) -> Result<Verified, Rejection> {
    let mut reader = Reader { rest: bytes };
    let version = reader.byte()?;
    let flags = version & (OWNER_AWAY | INTERNAL | APP_ID);
    let format = version & !flags;
    if format != SIGNED && format != ENCRYPTED {
        return Err(Rejection::UnknownVersion);
    }
    // An envelope is not a session cookie, nor the reverse (same keys, same scope).
    if (flags & APP_ID != 0) != limits.envelopes {
        return Err(Rejection::Malformed);
    }
    let id_len = usize::from(reader.byte()?);
    let key_id = reader.take(id_len)?;
    let head_len = 2 + id_len;
    let (key, is_current) = keyring.find(key_id).ok_or(Rejection::UnknownKey)?;
    let (token, format) = if format == SIGNED {
        let fingerprint = reader.array::<4>()?;
        let token = decode_claims(&mut reader, flags)?;
        let signed_len = bytes.len() - reader.rest.len();
        let tag_bytes = reader.take(TAG_LEN)?;
        if !reader.rest.is_empty() {
            return Err(Rejection::Malformed);
        }
        let signed = bytes.get(..signed_len).ok_or(Rejection::Malformed)?;
        // Constant-time comparison of the leftmost 128 bits.
        if tag(key, scope, signed).verify_truncated_left(tag_bytes).is_err() {
            let wrong_scope = fingerprint != scope_fingerprint(scope);
            return Err(if wrong_scope { Rejection::WrongScope } else { Rejection::BadSignature });
        }
        (token, Format::Signed)
    } else {
        let nonce = reader.array::<NONCE_LEN>()?;
        let body_len = reader.rest.len().checked_sub(TAG_LEN).ok_or(Rejection::Malformed)?;
        let aad = associated_data(scope, bytes.get(..head_len).ok_or(Rejection::Malformed)?);
        let body_start = head_len + NONCE_LEN;
        let tag_start = body_start + body_len;
        let tag = *Tag::from_slice(bytes.get(tag_start..).ok_or(Rejection::Malformed)?);
        let body = bytes.get_mut(body_start..tag_start).ok_or(Rejection::Malformed)?;
        // The Poly1305 tag is checked (in constant time) before anything is decrypted.
        key.aead()
            .decrypt_in_place_detached(XNonce::from_slice(&nonce), &aad, body, &tag)
            .map_err(|_| Rejection::BadSignature)?;
        let mut claims = Reader { rest: body };
        let token = decode_claims(&mut claims, flags)?;
        if !claims.rest.is_empty() {
            return Err(Rejection::Malformed);
        }
        (token, Format::Encrypted)
    };
    // Claims are judged only once the tag (or AEAD) has verified them. A miss is recorded
    // by the signing it happens at, so it is never later than the issue time.
    if token.owner_away_since.is_some_and(|since| since > token.issued_at) {
        return Err(Rejection::Malformed);
    }
    if now >= token.expires_at {
        return Err(Rejection::Expired);
    }
    if let Some(idle) = limits.idle_timeout {
        if now >= token.issued_at.saturating_add(idle) {
            return Err(Rejection::Expired);
        }
    }
    if token.issued_at > now.saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::IssuedInFuture);
    }
    if token.expires_at > now.saturating_add(limits.max_lifetime).saturating_add(CLOCK_SKEW_SECS) {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(Verified { token, signed_by_current_key: is_current, format })
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

    #[test]
    fn an_envelope_carries_the_apps_id_in_either_format_and_only_where_envelopes_are_expected() {
        let keys = ring(&format!("k1={K1}"));
        let key = keys.signing_key().unwrap();
        let envelopes = Limits { envelopes: true, ..LIMITS };
        for id in [b"3f2a9c1e-77b0".to_vec(), vec![b'~'; MAX_APP_ID_LEN]] {
            let t = SessionToken {
                session: SessionId::of_app_id(&id),
                app_id: Some(id.clone()),
                ..sample("10.0.0.2:80")
            };
            for text in [seal(&t, key, SCOPE), seal_encrypted(&t, key, SCOPE, [3; NONCE_LEN]).unwrap()] {
                assert!(text.len() <= MAX_ENVELOPE_TEXT, "{}", text.len());
                assert_eq!(open(text.as_bytes(), &keys, SCOPE, NOW, envelopes).unwrap().token, t);
                assert_eq!(open_at(text.as_bytes(), &keys, NOW).err(), Some(Rejection::Malformed));
            }
        }
        let plain = seal_with(&sample("10.0.0.2:80"), &keys);
        assert_eq!(open(plain.as_bytes(), &keys, SCOPE, NOW, envelopes).err(), Some(Rejection::Malformed));
        // The session id of an app id is the same everywhere (the fallback hashes it).
        assert_eq!(SessionId::of_app_id(b"abc").to_hex(), "ba7816bf8f01cfea414140de5dae2223");
        assert!(!is_app_id(b"") && !is_app_id(b"a b") && !is_app_id(&[b'a'; MAX_APP_ID_LEN + 1]));
    }

    #[test]
    fn a_session_is_logged_by_a_short_hash_of_its_id() {
        // `python3 -c 'import hashlib; print(hashlib.sha256(bytes(16)).hexdigest()[:8])'`
        assert_eq!(SessionId([0; 16]).log_name(), "374708ff");
        assert_eq!(SessionId([5; 16]).log_name(), "f98a594c");
        assert_eq!(SessionId([0; 16]).to_hex(), "0".repeat(32));
    }

    const SCOPE: &str = "pods";
    const LIMITS: Limits = Limits { max_lifetime: DAY, idle_timeout: None, envelopes: false };

    fn sample(owner: &str) -> SessionToken {
        SessionToken {
            session: SessionId([0xab; 16]),
            owner: owner.parse().unwrap(),
            issued_at: NOW - 10,
            expires_at: NOW + 3600,
            cluster: String::new(),
            owner_away_since: None,
            app_id: None,
        }
    }

    fn seal_with(token: &SessionToken, keys: &Keyring) -> String {
        seal(token, keys.signing_key().unwrap(), SCOPE)
    }

    fn open_at(text: &[u8], keys: &Keyring, now: u64) -> Result<Verified, Rejection> {
        open(text, keys, SCOPE, now, LIMITS)
    }

    #[test]
    fn round_trip_ipv4_and_ipv6() {
        let keys = ring(&format!("k1={K1}"));
        for (owner, cluster) in [
            ("127.0.0.1:8081", ""),
            ("[::1]:8083", "canary"),
            ("[2001:db8::7]:65535", "outbound|80||a.b.svc"),
            ("0.0.0.0:0", ""),
        ] {
            let token = SessionToken { cluster: cluster.into(), ..sample(owner) };
            let text = seal_with(&token, &keys);
            assert!(text.len() <= MAX_TOKEN_TEXT, "{}", text.len());
            assert!(text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
            let got = open_at(text.as_bytes(), &keys, NOW).unwrap();
            assert_eq!(got, Verified { token, signed_by_current_key: true, format: Format::Signed });
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
                assert!(open_at(bad_text.as_bytes(), &keys, NOW).is_err(), "byte {i} ^ {flip:#x}");
            }
        }
    }

    /// A missed owner's time travels in the claims, announced by the version byte and
    /// covered by the tag (or AEAD): removing, adding or editing it is refused.
    #[test]
    fn owner_away_tokens_round_trip_and_their_flag_is_signed() {
        let keys = ring(&format!("k1={K1}"));
        let away = SessionToken { owner_away_since: Some(NOW - 10), ..sample("10.1.2.3:80") };
        for text in [
            seal_with(&away, &keys),
            seal_encrypted(&away, keys.signing_key().unwrap(), SCOPE, [9; NONCE_LEN]).unwrap(),
        ] {
            assert_eq!(open_at(text.as_bytes(), &keys, NOW).unwrap().token, away);
            let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
            assert_eq!(raw[0] & OWNER_AWAY, OWNER_AWAY);
            let mut unflagged = raw.clone();
            unflagged[0] ^= OWNER_AWAY;
            let without_claim = &raw[..raw.len() - TAG_LEN - 8];
            let dropped = [without_claim, &raw[raw.len() - TAG_LEN..]].concat();
            for bad in [unflagged, dropped] {
                assert!(open_at(URL_SAFE_NO_PAD.encode(&bad).as_bytes(), &keys, NOW).is_err());
            }
        }
        // Tokens whose owner serves carry no flag: byte for byte the earlier format.
        let plain = URL_SAFE_NO_PAD.decode(seal_with(&sample("10.1.2.3:80"), &keys)).unwrap();
        assert_eq!(plain[0], SIGNED);
        // A miss is never later than the signing it was recorded by.
        let later = SessionToken { owner_away_since: Some(NOW - 9), issued_at: NOW - 10, ..away };
        assert_eq!(open_at(seal_with(&later, &keys).as_bytes(), &keys, NOW), Err(Rejection::Malformed));
    }

    /// An owner behind an Envoy internal listener (Istio ambient) keeps its listener, which
    /// the version byte announces and the tag (or AEAD) covers.
    #[test]
    fn internal_listener_owners_round_trip_and_their_flag_is_signed() {
        let keys = ring(&format!("k1={K1}"));
        let ambient = sample("envoy://connect_originate/10.1.2.3:8080");
        let away = SessionToken { owner_away_since: Some(NOW - 10), ..ambient.clone() };
        for token in [ambient.clone(), away] {
            for text in [
                seal_with(&token, &keys),
                seal_encrypted(&token, keys.signing_key().unwrap(), SCOPE, [9; NONCE_LEN]).unwrap(),
            ] {
                assert_eq!(open_at(text.as_bytes(), &keys, NOW).unwrap().token, token);
                let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
                assert_eq!(raw[0] & INTERNAL, INTERNAL);
                let mut unflagged = raw.clone();
                unflagged[0] ^= INTERNAL;
                assert!(open_at(URL_SAFE_NO_PAD.encode(&unflagged).as_bytes(), &keys, NOW).is_err());
            }
        }
        // The pod is signed as its ip:port, as the sidecar world sees it.
        let plain = seal_with(&sample("10.1.2.3:8080"), &keys);
        let raw_plain = URL_SAFE_NO_PAD.decode(&plain).unwrap();
        let raw_ambient = URL_SAFE_NO_PAD.decode(seal_with(&ambient, &keys)).unwrap();
        let claims = |raw: &[u8]| raw[2 + 2 + 4..2 + 2 + 4 + 8 + 8 + 16 + 1 + 4 + 2].to_vec();
        assert_eq!(claims(&raw_plain), claims(&raw_ambient));
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
        v2[0] = 9;
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
            assert_eq!(open_at(text, keyring, NOW), Err(want), "{}", String::from_utf8_lossy(text));
        }
    }

    /// Format 1 is fixed: this text was computed outside Rust (Python's `hmac`/`hashlib`)
    /// from the layout in the module comment.
    #[test]
    fn signed_format_matches_an_independent_computation() {
        let keys = ring(&format!("k1={K1}"));
        let want = "AQJrMQScKH4AAAAAarE7dgAAAABqsUmQq6urq6urq6urq6urq6urqwQKAAABAFAAyYWdHdMSnp78zWH_6NO3Xw";
        assert_eq!(seal_with(&sample("10.0.0.1:80"), &keys), want);
        assert_eq!(open_at(want.as_bytes(), &keys, NOW).unwrap().token, sample("10.0.0.1:80"));
    }

    /// A token that does not verify is refused as such, whatever its claims say: an expired
    /// (or future, or too long) token under another key is a bad signature, in another scope a
    /// wrong scope, never "expired".
    #[test]
    fn claims_are_judged_only_after_the_tag_verifies() {
        let keys = ring(&format!("k1={K1}"));
        let other = ring(&format!("k1={K2}"));
        let key = keys.signing_key().unwrap();
        for claims in [
            SessionToken { issued_at: NOW - 7200, expires_at: NOW - 1, ..sample("10.0.0.1:80") },
            SessionToken { issued_at: NOW + 3600, expires_at: NOW + 7200, ..sample("10.0.0.1:80") },
            SessionToken { expires_at: NOW + 30 * DAY, ..sample("10.0.0.1:80") },
            SessionToken { owner_away_since: Some(NOW), ..sample("10.0.0.1:80") },
        ] {
            let text = seal(&claims, key, SCOPE);
            assert!(open_at(text.as_bytes(), &keys, NOW).is_err());
            assert_eq!(open_at(text.as_bytes(), &other, NOW), Err(Rejection::BadSignature));
            assert_eq!(open(text.as_bytes(), &keys, "elsewhere", NOW, LIMITS), Err(Rejection::WrongScope));
            assert_eq!(open(text.as_bytes(), &other, "elsewhere", NOW, LIMITS), Err(Rejection::WrongScope));
            let hidden = seal_encrypted(&claims, key, SCOPE, [4; NONCE_LEN]).unwrap();
            assert_eq!(open_at(hidden.as_bytes(), &other, NOW), Err(Rejection::BadSignature));
            assert_eq!(
                open(hidden.as_bytes(), &keys, "elsewhere", NOW, LIMITS),
                Err(Rejection::BadSignature)
            );
        }
    }

    /// `open` decodes into a fixed buffer: at and near the text cap it refuses exactly what
    /// the allocating decoder refuses.
    #[test]
    fn the_decode_buffer_holds_every_text_up_to_the_cap() {
        let keys = ring(&format!("k1={K1}"));
        for len in MAX_TOKEN_TEXT - 8..=MAX_TOKEN_TEXT + 1 {
            for fill in ["A", "_", "w"] {
                let text = fill.repeat(len);
                let want = if len > MAX_TOKEN_TEXT {
                    Rejection::Malformed
                } else {
                    match URL_SAFE_NO_PAD.decode(&text) {
                        Ok(bytes) if bytes[0] == SIGNED || bytes[0] == ENCRYPTED => Rejection::UnknownKey,
                        Ok(_) => Rejection::UnknownVersion,
                        Err(_) => Rejection::Malformed,
                    }
                };
                assert_eq!(open_at(text.as_bytes(), &keys, NOW), Err(want), "{len} x {fill}");
            }
        }
    }

    #[test]
    fn expiry_boundary_is_exclusive() {
        let keys = ring(&format!("k1={K1}"));
        let text = seal_with(&sample("10.0.0.1:80"), &keys);
        assert!(open_at(text.as_bytes(), &keys, NOW + 3599).is_ok());
        assert_eq!(open_at(text.as_bytes(), &keys, NOW + 3600), Err(Rejection::Expired));
    }

    #[test]
    fn old_keys_verify_but_are_not_current() {
        let old = ring(&format!("k1={K1}"));
        let rotated = ring(&format!("k2={K2},k1={K1}"));
        let text = seal_with(&sample("10.0.0.1:80"), &old);
        let got = open_at(text.as_bytes(), &rotated, NOW).unwrap();
        assert!(!got.signed_by_current_key);
        let text = seal_with(&sample("10.0.0.1:80"), &rotated);
        assert!(open_at(text.as_bytes(), &rotated, NOW).unwrap().signed_by_current_key);
    }

    #[test]
    fn scope_binds_tokens() {
        let keys = ring(&format!("k1={K1}"));
        let text = seal(&sample("10.0.0.1:80"), keys.signing_key().unwrap(), "svc-a");
        assert!(open(text.as_bytes(), &keys, "svc-a", NOW, LIMITS).is_ok());
        assert_eq!(open(text.as_bytes(), &keys, "svc-b", NOW, LIMITS), Err(Rejection::WrongScope));
        assert_eq!(open(text.as_bytes(), &keys, "", NOW, LIMITS), Err(Rejection::WrongScope));
    }

    #[test]
    fn idle_timeout_counts_from_issue_time() {
        let keys = ring(&format!("k1={K1}"));
        let idle = Limits { max_lifetime: DAY, idle_timeout: Some(600), envelopes: false };
        let text = seal_with(&sample("10.0.0.1:80"), &keys); // issued NOW - 10
        assert!(open(text.as_bytes(), &keys, SCOPE, NOW + 589, idle).is_ok());
        assert_eq!(open(text.as_bytes(), &keys, SCOPE, NOW + 590, idle), Err(Rejection::Expired));
    }

    #[test]
    fn the_longest_token_fits_the_text_cap() {
        let id = "k".repeat(crate::keyring::MAX_KEY_ID_LEN);
        let keys = ring(&format!("{id}={K1}"));
        let key = keys.signing_key().unwrap();
        let token = SessionToken {
            cluster: "c".repeat(MAX_CLUSTER_LEN),
            owner_away_since: Some(NOW - 20),
            ..sample(&format!("envoy://{}/[2001:db8::7]:65535", "l".repeat(crate::address::MAX_LISTENER_LEN)))
        };
        let signed = seal(&token, key, SCOPE);
        let hidden = seal_encrypted(&token, key, SCOPE, [5; NONCE_LEN]).unwrap();
        assert_eq!((signed.len(), hidden.len()), (578, MAX_TOKEN_TEXT));
        for text in [signed, hidden] {
            assert_eq!(open_at(text.as_bytes(), &keys, NOW).unwrap().token, token);
        }
    }

    #[test]
    fn istio_cluster_names_are_recorded() {
        let keys = ring(&format!("k1={K1}"));
        let key = keys.signing_key().unwrap();
        // 146 bytes, as seen in the review; and the longest a Kubernetes service can give.
        let seen = format!("outbound|8080|canary-v2|{}.{}.svc.cluster.local", "s".repeat(60), "n".repeat(43));
        assert_eq!(seen.len(), 146);
        let longest = format!(
            "outbound|65535|{}|{}.{}.svc.cluster.local",
            "v".repeat(63),
            "s".repeat(63),
            "n".repeat(63)
        );
        assert!(longest.len() <= MAX_CLUSTER_LEN, "{}", longest.len());
        for cluster in [seen, longest] {
            let token = SessionToken { cluster, ..sample("10.0.0.1:80") };
            assert_eq!(open_at(seal_with(&token, &keys).as_bytes(), &keys, NOW).unwrap().token, token);
            let hidden = seal_encrypted(&token, key, SCOPE, [1; NONCE_LEN]).unwrap();
            assert_eq!(open_at(hidden.as_bytes(), &keys, NOW).unwrap().token, token);
        }
    }

    #[test]
    fn overlong_clusters_are_not_recorded() {
        let keys = ring(&format!("k1={K1}"));
        let token = SessionToken { cluster: "c".repeat(MAX_CLUSTER_LEN + 1), ..sample("10.0.0.1:80") };
        let text = seal_with(&token, &keys);
        assert_eq!(open_at(text.as_bytes(), &keys, NOW).unwrap().token.cluster, "");
    }

    #[test]
    fn encrypted_tokens_round_trip_hide_the_owner_and_bind_the_scope() {
        let keys = ring(&format!("k1={K1}"));
        let key = keys.signing_key().unwrap();
        for owner in ["10.20.30.40:8080", "[2001:db8::1234]:443"] {
            let token = SessionToken { cluster: "canary".into(), ..sample(owner) };
            let text = seal_encrypted(&token, key, SCOPE, [7; NONCE_LEN]).unwrap();
            assert!(text.len() <= MAX_TOKEN_TEXT);
            let raw = URL_SAFE_NO_PAD.decode(&text).unwrap();
            let ip = match token.owner.addr.ip() {
                IpAddr::V4(ip) => ip.octets().to_vec(),
                IpAddr::V6(ip) => ip.octets().to_vec(),
            };
            assert!(!raw.windows(ip.len()).any(|w| w == ip.as_slice()), "owner visible in {text}");
            assert!(!raw.windows(6).any(|w| w == b"canary"), "cluster visible");
            let got = open_at(text.as_bytes(), &keys, NOW).unwrap();
            assert_eq!(got, Verified { token, signed_by_current_key: true, format: Format::Encrypted });
            assert_eq!(open(text.as_bytes(), &keys, "other", NOW, LIMITS), Err(Rejection::BadSignature));
            for i in 0..raw.len() {
                let mut bad = raw.clone();
                bad[i] ^= 0x20;
                assert!(open_at(URL_SAFE_NO_PAD.encode(&bad).as_bytes(), &keys, NOW).is_err(), "byte {i}");
            }
        }
        // Different nonces give different texts for the same claims.
        let a = seal_encrypted(&sample("10.0.0.1:80"), key, SCOPE, [1; NONCE_LEN]).unwrap();
        let b = seal_encrypted(&sample("10.0.0.1:80"), key, SCOPE, [2; NONCE_LEN]).unwrap();
        assert_ne!(a, b);
        // Wrong key: refused.
        let other = ring(&format!("k1={K2}"));
        assert_eq!(open_at(a.as_bytes(), &other, NOW), Err(Rejection::BadSignature));
    }

    /// Instruction counts of `open` on the hit path (a valid signed token, as in
    /// `benches/codec.rs`): run under `valgrind --tool=callgrind` with
    /// `TETHER_OPEN_REPEAT=10000` and with `=0`; the difference / 10,000 is one open.
    /// `TETHER_OPEN_SCOPE` replaces the scope `pods` (e.g. with an Istio cluster name).
    #[test]
    #[ignore]
    fn open_repeatedly() {
        let n: u32 = std::env::var("TETHER_OPEN_REPEAT").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        let scope = std::env::var("TETHER_OPEN_SCOPE").unwrap_or_else(|_| "pods".into());
        let keys = ring("demo=dGV0aGVyLWRlbW8ta2V5LURPLU5PVC1VU0UtSU4tUFJPRCEh");
        let now = 1_800_000_000;
        let token = SessionToken { issued_at: now - 5, expires_at: now + 3600, ..sample("10.1.2.3:8080") };
        let text = seal(&token, keys.signing_key().unwrap(), &scope);
        for _ in 0..n {
            let got = open(std::hint::black_box(text.as_bytes()), &keys, &scope, now, LIMITS);
            assert!(std::hint::black_box(got).is_ok());
        }
    }

    #[test]
    fn session_id_hex() {
        let mut id = [0u8; 16];
        id[0] = 0x0f;
        id[15] = 0xa0;
        assert_eq!(SessionId(id).to_hex(), "0f0000000000000000000000000000a0");
    }
}
