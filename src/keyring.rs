//! Signing keys: several verify, one signs. Secrets never leave this module in any
//! printable form: errors name the key id or position, never the secret.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use chacha20poly1305::{KeyInit, XChaCha20Poly1305};
use hmac::{Hmac, HmacCore, Mac};
use sha2::Sha256;

pub type HmacSha256 = Hmac<Sha256>;

/// Shortest accepted secret: 256 bits, the HMAC-SHA256 block-size sweet spot.
pub const MIN_SECRET_BYTES: usize = 32;
pub const MAX_KEY_ID_LEN: usize = 32;

/// One key: its id (carried in every token it signs), a keyed HMAC state (so per-token
/// work does not re-hash the secret) and the XChaCha20-Poly1305 key for encrypted tokens,
/// derived from the same secret.
#[derive(Clone)]
pub struct Key {
    id: String,
    /// The keyed state without its (empty) block buffer: cloning a whole `HmacSha256` for
    /// each token also copied that 64-byte buffer one byte at a time (~330 instructions).
    mac: HmacCore<Sha256>,
    aead: XChaCha20Poly1305,
}

impl Key {
    pub fn new(id: &str, secret: &[u8]) -> Result<Key, String> {
        if !is_valid_key_id(id) {
            return Err(format!(
                "key id `{}` must be 1-{MAX_KEY_ID_LEN} characters of A-Z a-z 0-9 _ -",
                id.escape_debug()
            ));
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "key `{id}` is {} bytes; at least {MIN_SECRET_BYTES} random bytes are needed",
                secret.len()
            ));
        }
        let mac = <HmacSha256 as Mac>::new_from_slice(secret)
            .map_err(|_| format!("key `{id}` cannot key HMAC-SHA256"))?;
        // A separate key for encryption: HMAC-SHA256(secret, label).
        let mut derive = mac.clone();
        derive.update(b"tether aead key v1");
        let aead = XChaCha20Poly1305::new(&derive.finalize().into_bytes());
        // Keying leaves nothing buffered: the core is the whole keyed state.
        let (mac, _) = mac.decompose();
        Ok(Key { id: id.to_string(), mac, aead })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A fresh HMAC state keyed with this key.
    pub fn mac(&self) -> HmacSha256 {
        HmacSha256::from_core(self.mac.clone())
    }

    /// The cipher for encrypted tokens.
    pub fn aead(&self) -> &XChaCha20Poly1305 {
        &self.aead
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key({})", self.id)
    }
}

fn is_valid_key_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_KEY_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// All keys that verify, and the one that signs.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<Key>,
    signing: usize,
}

impl Keyring {
    /// Parses `id=base64secret[,id=base64secret...]`. The signing key is `signing_id`
    /// when given, else the first key listed.
    pub fn parse(spec: &str, signing_id: Option<&str>) -> Result<Keyring, String> {
        let mut keys: Vec<Key> = Vec::new();
        for (position, entry) in spec.split(',').enumerate() {
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!("entry {} is empty", position + 1));
            }
            let Some((id, secret)) = entry.split_once('=') else {
                return Err(format!("entry {} is not `id=base64secret`", position + 1));
            };
            let id = id.trim();
            let secret = decode_secret(secret.trim())
                .ok_or_else(|| format!("the secret of key `{}` is not base64", id.escape_debug()))?;
            let key = Key::new(id, &secret)?;
            if keys.iter().any(|k| k.id == key.id) {
                return Err(format!("key id `{id}` appears twice"));
            }
            keys.push(key);
        }
        Keyring::new(keys, signing_id)
    }

    pub fn new(keys: Vec<Key>, signing_id: Option<&str>) -> Result<Keyring, String> {
        if keys.is_empty() {
            return Err("no keys".into());
        }
        let signing = match signing_id {
            None => 0,
            Some(id) => keys
                .iter()
                .position(|k| k.id == id)
                .ok_or_else(|| format!("signing key `{}` is not among the keys", id.escape_debug()))?,
        };
        Ok(Keyring { keys, signing })
    }

    /// The key that signs new tokens.
    pub fn signing_key(&self) -> Option<&Key> {
        self.keys.get(self.signing)
    }

    /// The verifying key with this id, and whether it is the signing key.
    pub fn find(&self, id: &[u8]) -> Option<(&Key, bool)> {
        let index = self.keys.iter().position(|k| k.id.as_bytes() == id)?;
        Some((self.keys.get(index)?, index == self.signing))
    }

    pub fn key_ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }
}

fn decode_secret(text: &str) -> Option<Vec<u8>> {
    STANDARD.decode(text).ok().or_else(|| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const S1: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY="; // 32 bytes
    const S2: &str = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA="; // 32 bytes

    #[test]
    fn first_key_signs_unless_named() {
        let ring = Keyring::parse(&format!("new={S2}, old={S1}"), None).unwrap();
        assert_eq!(ring.signing_key().unwrap().id(), "new");
        assert!(ring.find(b"new").unwrap().1);
        assert!(!ring.find(b"old").unwrap().1);
        assert!(ring.find(b"gone").is_none());
        let ring = Keyring::parse(&format!("new={S2},old={S1}"), Some("old")).unwrap();
        assert_eq!(ring.signing_key().unwrap().id(), "old");
        assert_eq!(ring.key_ids(), ["new", "old"]);
    }

    #[test]
    fn url_safe_secrets_accepted() {
        let url = URL_SAFE_NO_PAD.encode([0xfbu8; 32]);
        assert!(Keyring::parse(&format!("k={url}"), None).is_ok());
    }

    #[test]
    fn bad_specs_are_refused_without_echoing_secrets() {
        let short = STANDARD.encode([7u8; 16]);
        let cases = [
            (String::new(), "entry 1 is empty"),
            (format!("k1={S1},"), "entry 2 is empty"),
            ("justasecretwithoutid".to_string(), "not `id=base64secret`"),
            (format!("k1={short}"), "16 bytes"),
            ("k1=not base64!!".to_string(), "not base64"),
            (format!("k 1={S1}"), "key id"),
            (format!("k1={S1},k1={S2}"), "appears twice"),
        ];
        for (spec, want) in cases {
            let err = Keyring::parse(&spec, None).unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(!err.contains(S1) && !err.contains(S2) && !err.contains(&short), "{err}");
        }
        let err = Keyring::parse(&format!("k1={S1}"), Some("k9")).unwrap_err();
        assert!(err.contains("k9"), "{err}");
    }

    #[test]
    fn the_kept_state_is_hmac_keyed_with_the_secret() {
        let secret = STANDARD.decode(S1).unwrap();
        let key = Key::new("k1", &secret).unwrap();
        for message in [&b""[..], b"tether", &[7u8; 200]] {
            let fresh = <HmacSha256 as Mac>::new_from_slice(&secret).unwrap();
            assert_eq!(
                key.mac().chain_update(message).finalize().into_bytes(),
                fresh.chain_update(message).finalize().into_bytes()
            );
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let ring = Keyring::parse(&format!("k1={S1}"), None).unwrap();
        let shown = format!("{ring:?}");
        assert!(shown.contains("k1") && !shown.contains(S1), "{shown}");
    }
}
