//! Any bytes as a token or an envelope (`learn`): never panics; whatever verifies
//! re-seals to a token that verifies to the same claims.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether::keyring::Keyring;
use tether::token::{self, Limits};

const KEYS: &str =
    "a=dGV0aGVyLWZ1enota2V5LW9uZS0zMi1ieXRlcy1sb25nISE=,b=dGV0aGVyLWZ1enota2V5LXR3by0zMi1ieXRlcy1sb25nISE=";
const NOW: u64 = 1_800_000_000;

fuzz_target!(|data: &[u8]| {
    let Ok(keys) = Keyring::parse(KEYS, None) else { return };
    let token = Limits { max_lifetime: 86_400, idle_timeout: Some(3_600), envelopes: false };
    let envelope = Limits { idle_timeout: None, envelopes: true, ..token };
    for (scope, limits) in [("pods", token), ("", token), ("pods", envelope)] {
        if let Ok(verified) = token::open(data, &keys, scope, NOW, limits) {
            let key = keys.signing_key().unwrap();
            let again = token::seal(&verified.token, key, scope);
            let reopened = token::open(again.as_bytes(), &keys, scope, NOW, limits).unwrap();
            assert_eq!(reopened.token, verified.token);
            let hidden = token::seal_encrypted(&verified.token, key, scope, [9; token::NONCE_LEN]).unwrap();
            assert_eq!(
                token::open(hidden.as_bytes(), &keys, scope, NOW, limits).unwrap().token,
                verified.token
            );
        }
    }
});
