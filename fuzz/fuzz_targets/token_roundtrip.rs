//! Arbitrary claims sealed in both formats, with either key, for any scope, checked at any
//! time: opening what was sealed gives back exactly those claims, or exactly the refusal
//! the claims call for (a missed owner's time later than the issue time, expired, issued in
//! the future, lifetime too long); the same token never opens in another scope, nor
//! without its key. An envelope (claims with an app-issued id, `learn`) opens only where
//! envelopes are expected, and a session token only where they are not.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use tether::address::{is_listener_name, Owner};
use tether::keyring::Keyring;
use tether::token::{self, Format, Limits, Rejection, SessionId, SessionToken};

const KEYS: &str =
    "a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=,b=dGV0aGVyLWZ1enota2V5LXR3by0zMi1ieXRlcy1sb25nISE=";
const ONLY_A: &str = "a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=";

/// Reads fixed-size fields from the fuzzer's bytes (zeros once they run out).
struct Input<'a>(&'a [u8]);

impl Input<'_> {
    fn bytes<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }
    fn u8(&mut self) -> u8 {
        self.bytes::<1>()[0]
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.bytes())
    }
    fn raw(&mut self, len: usize) -> Vec<u8> {
        let (head, tail) = self.0.split_at(len.min(self.0.len()));
        self.0 = tail;
        head.to_vec()
    }
    fn text(&mut self, max: usize) -> String {
        let len = usize::from(self.u8()).min(max).min(self.0.len());
        let (head, tail) = self.0.split_at(len);
        self.0 = tail;
        String::from_utf8_lossy(head).into_owned()
    }
}

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let flags = input.u8();
    // Times near each other (so that tokens often verify) or anywhere in u64.
    let base = input.u64();
    let near = |d: u64| base.wrapping_add(d % 200_000).wrapping_sub(100_000);
    let (issued_at, expires_at, now) = if flags & 1 == 0 {
        (near(input.u64()), near(input.u64()), near(input.u64()))
    } else {
        (input.u64(), input.u64(), input.u64())
    };
    let ip = if flags & 2 == 0 {
        IpAddr::V4(Ipv4Addr::from(input.bytes::<4>()))
    } else {
        IpAddr::V6(Ipv6Addr::from(input.bytes::<16>()))
    };
    let owner = SocketAddr::new(ip, u16::from_be_bytes(input.bytes()));
    let session = SessionId(input.bytes());
    let cluster = input.text(200);
    let scope = input.text(64);
    let nonce: [u8; token::NONCE_LEN] = input.bytes();
    let limits = Limits {
        max_lifetime: input.u64() % 1_000_000 + 1,
        idle_timeout: (flags & 4 != 0).then(|| input.u64() % 100_000 + 2),
        envelopes: flags & 128 != 0,
    };
    // Read last, so the committed corpus keeps its meaning for the fields above.
    let owner_away_since = (flags & 32 != 0).then(|| near(input.u64()));
    // An owner behind an Envoy internal listener (Istio ambient); any name the fuzzer gives
    // that a token cannot carry is left out, as the encoder does.
    let listener = (flags & 64 != 0).then(|| input.text(80));
    let owner = Owner { addr: owner, listener };
    // An app-issued id of up to 1100 bytes (the envelope holds 1 to 1024 of visible ASCII).
    let app_id = limits.envelopes.then(|| {
        let len = usize::from(u16::from_be_bytes(input.bytes())) % 1100;
        input.raw(len)
    });
    let claims = SessionToken { session, owner, issued_at, expires_at, cluster, owner_away_since, app_id };

    let keys = Keyring::parse(KEYS, None).unwrap();
    let only_a = Keyring::parse(ONLY_A, None).unwrap();
    let (key, current) = if flags & 8 == 0 {
        (keys.signing_key().unwrap(), true)
    } else {
        (keys.find(b"b").unwrap().0, false)
    };
    let format = if flags & 16 == 0 { Format::Signed } else { Format::Encrypted };
    let sealed = match format {
        Format::Signed => token::seal(&claims, key, &scope),
        Format::Encrypted => token::seal_encrypted(&claims, key, &scope, nonce).expect("encryption"),
    };
    assert!(sealed.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{sealed}");

    // What the claims call for: a cluster longer than the format holds is dropped.
    let mut expected_claims = claims.clone();
    if expected_claims.cluster.len() > token::MAX_CLUSTER_LEN {
        expected_claims.cluster.clear();
    }
    if !expected_claims.owner.listener.as_deref().is_some_and(|l| is_listener_name(l.as_bytes())) {
        expected_claims.owner.listener = None;
    }
    // An id an envelope cannot carry is left out: the token is then no envelope.
    let unwrappable = claims.app_id.as_deref().is_some_and(|id| !token::is_app_id(id));
    let expected = if unwrappable || owner_away_since.is_some_and(|since| since > issued_at) {
        Err(Rejection::Malformed)
    } else if now >= expires_at
        || limits.idle_timeout.is_some_and(|idle| now >= issued_at.saturating_add(idle))
    {
        Err(Rejection::Expired)
    } else if issued_at > now.saturating_add(token::CLOCK_SKEW_SECS) {
        Err(Rejection::IssuedInFuture)
    } else if expires_at > now.saturating_add(limits.max_lifetime).saturating_add(token::CLOCK_SKEW_SECS) {
        Err(Rejection::LifetimeTooLong)
    } else {
        Ok(expected_claims)
    };
    let opened = token::open(sealed.as_bytes(), &keys, &scope, now, limits);
    match (&opened, &expected) {
        (Ok(v), Ok(want)) => {
            assert_eq!(&v.token, want);
            assert_eq!((v.format, v.signed_by_current_key), (format, current));
        }
        (Err(got), Err(want)) => assert_eq!(got, want),
        _ => panic!("open(seal(x)) = {opened:?}, expected {expected:?} for {claims:?} at {now}"),
    }

    // Never in another scope, never without the key that sealed it (opened as the kind it is).
    let as_sealed = Limits { envelopes: !unwrappable && limits.envelopes, ..limits };
    let other = format!("{scope}.other");
    let elsewhere = token::open(sealed.as_bytes(), &keys, &other, now, as_sealed);
    assert!(
        matches!(elsewhere, Err(Rejection::WrongScope | Rejection::BadSignature)),
        "opened in scope {other:?}: {elsewhere:?}"
    );
    // Neither kind passes for the other.
    let other_kind = Limits { envelopes: !as_sealed.envelopes, ..limits };
    assert_eq!(token::open(sealed.as_bytes(), &keys, &scope, now, other_kind).err(), Some(Rejection::Malformed));
    if !current {
        assert_eq!(
            token::open(sealed.as_bytes(), &only_a, &scope, now, as_sealed).err(),
            Some(Rejection::UnknownKey)
        );
    }
});
