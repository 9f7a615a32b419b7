//! The harness's own traps, closed: a check built on Envoy's admin output fails when the
//! admin port does not answer (instead of reading an empty page as "host gone" or
//! "unhealthy"), a host or cluster Envoy does not have fails a health wait (instead of
//! reading as "unhealthy" or "no flags"), a stat Envoy does not have fails instead of
//! reading 0, and two responses that name no pod never count as "the same pod".

mod common;

use common::*;
use std::time::Duration;

/// An Envoy whose admin address points at a port nothing listens on.
fn unreachable_admin() -> (Vec<Pod>, Envoy) {
    let pods = Pod::start_many(1);
    let mut envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&addrs(&pods)), &[&pods[0]]);
    envoy.admin = free_port();
    (pods, envoy)
}

#[test]
#[should_panic(expected = "Envoy admin GET /clusters")]
fn waiting_for_a_pod_to_be_unhealthy_fails_when_admin_is_unreachable() {
    let (pods, envoy) = unreachable_admin();
    envoy.wait_health(pods[0].addr, false);
}

#[test]
#[should_panic(expected = "Envoy admin GET /clusters")]
fn waiting_for_a_host_to_be_removed_fails_when_admin_is_unreachable() {
    let (pods, envoy) = unreachable_admin();
    envoy.wait_removed(pods[0].addr);
}

/// The message of the panic `f` must raise.
fn panic_message(f: impl FnOnce()) -> String {
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
        .expect_err("it returned instead of failing");
    caught.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn health_waits_on_a_host_or_cluster_envoy_does_not_have_fail() {
    let pods = Pod::start_many(1);
    let envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&addrs(&pods)), &[&pods[0]]);
    let absent: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let not_a_host = format!("{absent} is not a host of");
    let unhealthy = panic_message(|| envoy.wait_health(absent, false));
    assert!(unhealthy.contains(&not_a_host), "{unhealthy}");
    let flags = panic_message(|| envoy.wait_flags(absent, "/eds_status_draining"));
    assert!(flags.contains(&not_a_host), "{flags}");
    let checked = panic_message(|| {
        envoy.is_healthy(absent);
    });
    assert!(checked.contains(&not_a_host), "{checked}");
    let no_cluster = panic_message(|| envoy.wait_removed_in("podz", pods[0].addr));
    assert!(no_cluster.contains("Envoy has no cluster `podz`"), "{no_cluster}");
    // The same waits on the host Envoy has pass.
    envoy.wait_health(pods[0].addr, true);
    envoy.wait_flags(pods[0].addr, "healthy");
}

#[test]
fn a_stat_envoy_does_not_have_fails_the_test() {
    let pods = Pod::start_many(1);
    let envoy = Envoy::start(EnvoyConfig::shipped().endpoints(&addrs(&pods)), &[&pods[0]]);
    assert_eq!(envoy.stat("wasm.tether.vm_reload_success"), 0);
    let missing = std::panic::catch_unwind(|| envoy.stat("wasm.tether.vm_reload_succes"));
    let message = missing.expect_err("a misspelt stat read as a number");
    let message = message.downcast_ref::<String>().map(String::as_str).unwrap_or_default();
    assert!(message.contains("no stat named `wasm.tether.vm_reload_succes`"), "{message}");
}

#[test]
fn two_responses_without_a_pod_never_name_the_same_pod() {
    let reply = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
    let (a, b) = (parse_response(reply).unwrap(), parse_response(reply).unwrap());
    assert_ne!(a.pod(), b.pod());
    let served = parse_response(b"HTTP/1.1 200 OK\r\nx-pod: pod-a\r\ncontent-length: 0\r\n\r\n").unwrap();
    assert_eq!(served.pod(), "pod-a");
    assert!(a.pod().contains("no x-pod header"), "{}", a.pod());
}

/// The keep-alive client resends a request once when a reused connection turns out closed;
/// it counts that, so load tests can report a resend as what it is.
#[test]
fn a_request_resent_after_a_reused_connection_failed_is_counted() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers one request per connection, keep-alive, then closes without a word.
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    let mut c = common::http::Connection::new(addr, "t", Duration::from_secs(5));
    assert_eq!(c.request("GET", "/", &[]).unwrap().status, 200);
    assert_eq!(c.resends(), 0);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(c.request("GET", "/", &[]).unwrap().status, 200);
    assert_eq!(c.resends(), 1, "the second request went out twice");
    server.join().unwrap();
}
