//! `make run` as README.md describes it: scripts/run-demo.sh with the shipped config on
//! its documented ports (10000, 9901, pods 8081-8083), then the README's curl steps.

mod common;

use common::*;
use std::net::{SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo's process group (the script leads it); signalled and reaped on drop.
struct Group(std::process::Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `kill -s SIG -- -PGID` signals exactly the demo's process group.
        let leader = self.0.id();
        assert!(leader > 1, "refusing to signal process group {leader}");
        for signal in ["TERM", "KILL"] {
            let group = format!("-{leader}");
            let _ = Command::new("kill").args(["-s", signal, "--", &group]).stderr(Stdio::null()).status();
            std::thread::sleep(Duration::from_millis(300));
        }
        let _ = self.0.wait();
    }
}

#[test]
fn make_run_demo_works_as_documented() {
    for port in [10000, 9901, 8081, 8082, 8083] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is busy (is `make run` already running?); the demo test needs the documented ports"
        );
    }
    let group = Group(
        Command::new(repo().join("scripts/run-demo.sh"))
            .env("ENVOY", envoy_binary())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("scripts/run-demo.sh"),
    );
    let listener = SocketAddr::from(([127, 0, 0, 1], 10000));
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        assert!(Instant::now() < deadline, "the demo did not answer on 127.0.0.1:10000 within 30s");
        match http_to(listener, "GET", "/", &[]) {
            Ok(r) if r.status == 200 && r.set_cookie().is_some() => break r,
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let cookie = first.cookie_value().unwrap();
    assert!(first.pod().starts_with("pod-808"), "{}", first.pod());
    for _ in 0..10 {
        let r = http_to(listener, "GET", "/", &[("cookie", &format!("tether={cookie}"))]).unwrap();
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
    }
    let admin = http_to(SocketAddr::from(([127, 0, 0, 1], 9901)), "GET", "/ready", &[]).unwrap();
    assert_eq!(admin.status, 200);
    drop(group);
}
