//! `tether keygen` and `tether token inspect`: key entries in the format `keys` and
//! `keysFromEnv` accept, and tokens verified by the filter's own code (`tether::token::open`).

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use std::io::Write;
use tether::keyring::Keyring;
use tether::token::{self, Format, Limits, Rejection};

/// `ID=<standard base64 of 32 random bytes>`, checked with the filter's key parser.
pub fn keygen(id: &str) -> Result<String, String> {
    let mut secret = [0u8; 32];
    getrandom::getrandom(&mut secret).map_err(|e| format!("no randomness from the OS: {e}"))?;
    let entry = format!("{id}={}", STANDARD.encode(secret));
    Keyring::parse(&entry, None).map_err(|e| format!("`{id}` cannot be a key id: {e}"))?;
    Ok(entry)
}

pub struct Inspect<'a> {
    pub keys: &'a str,
    pub scope: &'a str,
    pub absolute_timeout: &'a str,
    pub idle_timeout: Option<&'a str>,
    pub now: u64,
}

/// A cookie value, a `name=value` pair, a whole `Set-Cookie` line or a `Name: value` header
/// line (an envelope in `Mcp-Session-Id`): the token in it.
pub fn token_text(input: &str) -> &str {
    let input = input.trim();
    let input =
        input.strip_prefix("Set-Cookie:").or_else(|| input.strip_prefix("set-cookie:")).unwrap_or(input);
    let first = input.split(';').next().unwrap_or("").trim();
    // base64url has no `:` either: a header line's name goes.
    let first = first.split_once(':').map_or(first, |(_, value)| value.trim());
    match first.split_once('=') {
        // base64url has no `=`: a `=` separates a cookie name from the token.
        Some((_, value)) => value.trim(),
        None => first,
    }
}

/// Verifies `input` like the filter; prints the claims or the reason. Exit status 0 valid,
/// 1 refused, 2 bad arguments.
pub fn inspect(o: &Inspect, input: &str, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let keyring = match Keyring::parse(o.keys, None) {
        Ok(k) => k,
        Err(e) => {
            let _ = writeln!(err, "tether token inspect: --keys: {e}");
            return 2;
        }
    };
    let lifetime = match tether::duration::parse_seconds(o.absolute_timeout) {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "tether token inspect: --absolute-timeout: {e}");
            return 2;
        }
    };
    let idle = match o.idle_timeout.map(tether::duration::parse_seconds).transpose() {
        Ok(s) => s,
        Err(e) => {
            let _ = writeln!(err, "tether token inspect: --idle-timeout: {e}");
            return 2;
        }
    };
    let text = token_text(input);
    let header = describe_header(text);
    // An envelope (learn mode) says so in its version byte.
    let envelope = header.version & token::APP_ID != 0;
    let limits = Limits { max_lifetime: lifetime, idle_timeout: idle, envelopes: envelope };
    let fingerprint = hex(&token::scope_fingerprint(o.scope));
    match token::open(text.as_bytes(), &keyring, o.scope, o.now, limits) {
        Ok(v) => {
            let t = &v.token;
            let format = match v.format {
                Format::Signed => "signed",
                Format::Encrypted => "encrypted",
            };
            let _ = writeln!(
                out,
                "token:    valid ({format}, key {}{})",
                header.key_id,
                if v.signed_by_current_key {
                    ", the signing key"
                } else {
                    ", not the signing key: re-signed as it passes"
                }
            );
            if let Some(id) = &t.app_id {
                let _ = writeln!(
                    out,
                    "app id:   {} (an envelope: the app's own session id)",
                    String::from_utf8_lossy(id)
                );
            }
            let _ = writeln!(out, "session:  {}", t.session.to_hex());
            let _ = writeln!(out, "log name: {} (accessLog's session field)", t.session.log_name());
            let _ = writeln!(out, "owner:    {}", t.owner);
            let _ = writeln!(out, "cluster:  {}", if t.cluster.is_empty() { "(none)" } else { &t.cluster });
            let _ = writeln!(out, "scope:    {} (fingerprint {fingerprint})", o.scope);
            let _ = writeln!(out, "issued:   {} ({})", utc(t.issued_at), relative(t.issued_at, o.now));
            let _ = writeln!(out, "expires:  {} ({})", utc(t.expires_at), relative(t.expires_at, o.now));
            if let Some(idle) = idle {
                let at = t.issued_at.saturating_add(idle);
                let _ =
                    writeln!(out, "idle:     expires at {} unless used ({})", utc(at), relative(at, o.now));
            }
            0
        }
        Err(r) => {
            let why = match r {
                Rejection::Malformed => {
                    "not a tether token (bad base64, truncated or wrong length)".to_string()
                }
                Rejection::UnknownVersion => format!("unknown token version {}", header.version),
                Rejection::UnknownKey => format!(
                    "signed by key `{}`, which is not among --keys ({})",
                    header.key_id,
                    keyring.key_ids().join(", ")
                ),
                Rejection::BadSignature => format!(
                    "the tag does not verify under key `{}`: forged, tampered or another secret",
                    header.key_id
                ),
                Rejection::WrongScope => format!(
                    "minted for another scope (its fingerprint {}, `{}` has {fingerprint})",
                    header.fingerprint.as_deref().unwrap_or("?"),
                    o.scope
                ),
                Rejection::Expired => "expired".to_string(),
                Rejection::IssuedInFuture => "issued in the future (clock skew over 60 s)".to_string(),
                Rejection::LifetimeTooLong => {
                    format!("promises a longer life than --absolute-timeout {}", o.absolute_timeout)
                }
            };
            let _ = writeln!(out, "token:    refused: {} — {why}", r.as_str());
            let _ = writeln!(
                out,
                "          {}",
                if envelope {
                    "the filter passes it to the app unchanged, without affinity (learn mode)"
                } else {
                    "the filter treats it as no token: a new session"
                }
            );
            1
        }
    }
}

struct Header {
    version: u8,
    key_id: String,
    fingerprint: Option<String>,
}

/// The clear-text head of a token: version, key id, and (signed format) scope fingerprint.
fn describe_header(text: &str) -> Header {
    let bytes = URL_SAFE_NO_PAD.decode(text).unwrap_or_default();
    let version = bytes.first().copied().unwrap_or(0);
    let id_len = usize::from(bytes.get(1).copied().unwrap_or(0));
    let key_id =
        bytes.get(2..2 + id_len).map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
    let fingerprint =
        (version & 0x0f == token::SIGNED).then(|| bytes.get(2 + id_len..6 + id_len).map(hex)).flatten();
    Header { version, key_id, fingerprint }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (civil-from-days, proleptic Gregorian).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem / 60 % 60, rem % 60)
}

fn relative(at: u64, now: u64) -> String {
    let span = |s: u64| {
        if s >= 3600 {
            format!("{}h{:02}m", s / 3600, s / 60 % 60)
        } else if s >= 60 {
            format!("{}m{:02}s", s / 60, s % 60)
        } else {
            format!("{s}s")
        }
    };
    if at >= now {
        format!("in {}", span(at - now))
    } else {
        format!("{} ago", span(now - at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_entries_parse_and_differ() {
        let a = keygen("k1").unwrap();
        let b = keygen("k1").unwrap();
        assert!(a.starts_with("k1=") && a != b);
        assert_eq!(STANDARD.decode(&a[3..]).unwrap().len(), 32);
        assert!(keygen("bad id").is_err());
    }

    #[test]
    fn token_text_takes_cookies_and_set_cookie_lines() {
        assert_eq!(token_text("AQRkZW1v"), "AQRkZW1v");
        assert_eq!(token_text("tether=AQRkZW1v"), "AQRkZW1v");
        assert_eq!(token_text("Set-Cookie: tether=AQRkZW1v; Path=/; HttpOnly"), "AQRkZW1v");
    }

    #[test]
    fn dates() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }
}
