//! Native micro-benchmarks of the per-request work: `cargo bench --bench codec`.
//! Prints nanoseconds per operation (median of 5 batches); compare runs on one machine.
use std::hint::black_box;
use std::time::Instant;
use tether::config;
use tether::session;
use tether::token::{self, SessionId, SessionToken};

fn measure(name: &str, iterations: u32, mut f: impl FnMut()) {
    let mut batches: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iterations {
                f();
            }
            start.elapsed().as_nanos() as f64 / f64::from(iterations)
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    println!("{name:<40} {:>9.0} ns", batches[2]);
}

fn main() {
    let keys = "demo=dGV0aGVyLWRlbW8ta2V5LURPLU5PVC1VU0UtSU4tUFJPRCEh";
    let settings = config::load(format!(r#"{{"keys":"{keys}"}}"#).as_bytes(), &|_| None).unwrap();
    let encrypted =
        config::load(format!(r#"{{"keys":"{keys}","tokenFormat":"Encrypted"}}"#).as_bytes(), &|_| None)
            .unwrap();
    let now = 1_800_000_000;
    let t = SessionToken {
        session: SessionId([7; 16]),
        owner: "10.1.2.3:8080".parse().unwrap(),
        issued_at: now - 5,
        expires_at: now + 3600,
        cluster: String::new(),
        owner_away_since: None,
        app_id: None,
    };
    let key = settings.keyring.signing_key().unwrap();
    let signed = token::seal(&t, key, "pods");
    let hidden = token::seal_encrypted(&t, key, "pods", [3; 24]).unwrap();
    let cookie = format!("_ga=GA1.2.3; theme=dark; tether={signed}; lang=en");
    let cookie_hidden = format!("_ga=GA1.2.3; theme=dark; tether={hidden}; lang=en");
    let limits = settings.limits();
    println!("operation                                 median");
    measure("seal (signed)", 200_000, || {
        black_box(token::seal(black_box(&t), key, "pods"));
    });
    measure("open (signed)", 200_000, || {
        black_box(token::open(black_box(signed.as_bytes()), &settings.keyring, "pods", now, limits).unwrap());
    });
    measure("seal (encrypted)", 200_000, || {
        black_box(token::seal_encrypted(black_box(&t), key, "pods", [3; 24]));
    });
    measure("open (encrypted)", 200_000, || {
        black_box(token::open(black_box(hidden.as_bytes()), &settings.keyring, "pods", now, limits).unwrap());
    });
    measure("request path: resolve + steering (signed)", 200_000, || {
        let a = session::resolve(None, [cookie.as_bytes()], "pods", &settings, now, || None).unwrap();
        black_box(session::steering(&a, &settings));
    });
    measure("request path: resolve + steering (encrypted)", 200_000, || {
        let a = session::resolve(None, [cookie_hidden.as_bytes()], "pods", &encrypted, now, || None).unwrap();
        black_box(session::steering(&a, &encrypted));
    });
    // The worst case a client can send: a 61 KB Cookie header of fake tokens that carry the
    // right key id, so each would need a full HMAC / AEAD check (issue 15, item 2).
    let forged =
        tether::keyring::Keyring::parse("demo=ZmFrZS1rZXktZmFrZS1rZXktZmFrZS1rZXktZmFrZS0=", None).unwrap();
    let forged_key = forged.signing_key().unwrap();
    let fake = |i: u32, sealed: &dyn Fn(&SessionToken) -> String| {
        let mut f = t.clone();
        f.session = SessionId([(i % 251) as u8; 16]);
        f.owner = std::net::SocketAddr::from(([10, (i >> 8) as u8, i as u8, 1], 80)).into();
        format!("tether={}", sealed(&f))
    };
    let fakes_signed: Vec<String> =
        (0..650).map(|i| fake(i, &|f| token::seal(f, forged_key, "pods"))).collect();
    let fakes_hidden: Vec<String> = (0..520)
        .map(|i| fake(i, &|f| token::seal_encrypted(f, forged_key, "pods", [i as u8; 24]).unwrap()))
        .collect();
    let many_signed = fakes_signed.join("; ");
    let many_hidden = fakes_hidden.join("; ");
    measure(
        &format!("resolve: {} fake signed tokens ({} B)", fakes_signed.len(), many_signed.len()),
        200,
        || {
            black_box(session::resolve(None, [many_signed.as_bytes()], "pods", &settings, now, || None));
        },
    );
    measure(
        &format!("resolve: {} fake encrypted tokens ({} B)", fakes_hidden.len(), many_hidden.len()),
        200,
        || {
            black_box(session::resolve(None, [many_hidden.as_bytes()], "pods", &encrypted, now, || None));
        },
    );
    measure("mint: respond + seal + Set-Cookie", 200_000, || {
        let a = session::Affinity::New { session: SessionId([1; 16]), rejected: None };
        let served = session::Served { by: "10.1.2.3:8080".parse().unwrap(), cluster: String::new() };
        let (_, tok) = session::respond(&a, &served, now, &settings);
        let tok = tok.unwrap();
        let text = session::seal(&tok, "pods", &settings, || None).unwrap();
        black_box(session::set_cookie(&text, &tok, now, &settings));
    });
}
