//! What Envoy does when the tether VM dies, per `failure_policy`, observed with a test-only
//! module that panics on request (`make build-crash-test`). tether itself has no panic path:
//! this is the insurance users choose, and README explains the choice from these results.
//! Each Envoy worker thread has its own VM: a crash kills one of the two workers' VMs, so
//! only the connections that worker accepts are affected (the kernel spreads them).

mod common;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use std::time::{Duration, Instant};

fn crash_module() -> String {
    let path = repo().join("target/crash-test/wasm32-wasip1/release/tether.wasm");
    assert!(path.exists(), "{} is missing: run `make build-crash-test`", path.display());
    path.display().to_string()
}

fn start(pods: &[Pod], policy: &str) -> Envoy {
    let config = EnvoyConfig::shipped()
        .endpoints(&addrs(pods))
        .edit(
            "local: { filename: target/wasm32-wasip1/release/tether.wasm }",
            &format!("local: {{ filename: \"{}\" }}", crash_module()),
        )
        .edit("failure_policy: FAIL_RELOAD\n", &format!("failure_policy: {policy}\n"));
    Envoy::start(config, &pods.iter().collect::<Vec<_>>())
}

fn crash(envoy: &Envoy) -> u16 {
    envoy.get("/", &[("x-tether-crash-test", "1")]).status
}

#[test]
fn fail_closed_fails_every_request_after_a_crash() {
    let pods = Pod::start_many(3);
    let envoy = start(&pods, "FAIL_CLOSED");
    let cookie = envoy.get_with_cookie(None).cookie_value().unwrap();
    assert_eq!(envoy.get_with_cookie(Some(&cookie)).status, 200);
    let crashed = crash(&envoy);
    std::thread::sleep(Duration::from_secs(3));
    let after: Vec<u16> = (0..40).map(|_| envoy.get_with_cookie(Some(&cookie)).status).collect();
    let failed = after.iter().filter(|s| **s != 200).count();
    println!("FAIL_CLOSED: crash request {crashed}; 3 s later {failed} of 40 requests failed (the dead VM's worker)");
    assert!(failed > 0, "the crashed VM's worker still fails requests: {after:?}");
    assert!(after.iter().all(|s| *s == 200 || *s == 503), "{after:?}");
    assert!(envoy.log().contains("tether panicked"), "the panic hook logs at critical level");
}

#[test]
fn fail_open_serves_without_affinity_and_lets_clients_pick_a_pod() {
    let pods = Pod::start_many(3);
    let envoy = start(&pods, "FAIL_OPEN");
    let cookie = envoy.get_with_cookie(None).cookie_value().unwrap();
    crash(&envoy);
    let after: Vec<_> = (0..40).map(|_| envoy.get_with_cookie(Some(&cookie))).collect();
    assert!(after.iter().all(|r| r.status == 200), "FAIL_OPEN serves every request");
    let unfiltered = after.iter().filter(|r| r.header("x-seen-key") == Some("-")).count();
    assert!(unfiltered > 0, "some requests passed the dead VM without tether");
    // On the dead VM's worker nothing strips client-sent steering headers: the client
    // chooses the pod.
    let target = &pods[2];
    let spoof = STANDARD.encode(target.addr.to_string());
    let spoofed: Vec<_> = (0..40).map(|_| envoy.get("/", &[("x-tether-host", &spoof)])).collect();
    let obeyed: Vec<_> = spoofed.iter().filter(|r| r.header("x-seen-host") == Some(spoof.as_str())).collect();
    assert!(!obeyed.is_empty(), "no spoofed header got through");
    assert!(obeyed.iter().all(|r| r.pod() == target.name), "the spoofed header picks the pod");
    println!(
        "FAIL_OPEN: all requests served; {unfiltered} of 40 without tether; {} of 40 spoofed x-tether-host went to {} as the client chose",
        obeyed.len(),
        target.name
    );
}

#[test]
fn fail_reload_recovers_affinity_after_a_crash() {
    let pods = Pod::start_many(3);
    let envoy = start(&pods, "FAIL_RELOAD");
    let first = envoy.get_with_cookie(None);
    let cookie = first.cookie_value().unwrap();
    crash(&envoy);
    let crashed_at = Instant::now();
    let (mut failed, mut total, mut last_failure) = (0, 0, None);
    while crashed_at.elapsed() < Duration::from_secs(4) {
        let r = envoy.get_with_cookie(Some(&cookie));
        total += 1;
        if !(r.status == 200 && r.pod() == first.pod() && r.set_cookie().is_none()) {
            failed += 1;
            last_failure = Some(crashed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    // After the reload every request has affinity again, and spoofed headers are stripped.
    for _ in 0..40 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
        let spoofed = envoy.get("/", &[("x-tether-host", &STANDARD.encode(pods[0].addr.to_string()))]);
        assert_eq!(spoofed.header("x-seen-host"), Some("-"));
    }
    assert!(envoy.log().contains("tether panicked"));
    println!("FAIL_RELOAD: {failed} of {total} requests failed in the 4 s after the crash, the last at {last_failure:?}; then 40 of 40 with affinity");
}
