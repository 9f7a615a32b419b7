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

    // README's third step: kill the session's pod (README: `pkill -f 'pod.py --name pod-808N'`,
    // i.e. SIGTERM; here by the pid of that pod in the demo's own process group). Its
    // session moves to a live pod and stays there (re-pinned once `repinAfter` has passed).
    let victim = first.pod().to_string();
    let pid = demo_pod_pid(group.0.id(), &victim);
    let killed = Command::new("kill").args(["-s", "TERM", &pid.to_string()]).status().unwrap();
    assert!(killed.success(), "kill {pid} ({victim})");
    let moved = http_to(listener, "GET", "/", &[("cookie", &format!("tether={cookie}"))])
        .unwrap_or_else(|e| panic!("after killing {victim}, the demo no longer answers: {e}"));
    assert_eq!(moved.status, 200, "after killing {victim}");
    assert_ne!(moved.pod(), victim);
    assert!(moved.pod().starts_with("pod-808"), "{}", moved.pod());
    let kept = moved.cookie_value().expect("the first miss sends a token keeping the owner");
    let ask = || http_to(listener, "GET", "/", &[("cookie", &format!("tether={kept}"))]).unwrap();
    // Until Envoy ejects the dead pod (two refused connections) or its health check fails,
    // a request is retried on whichever pod the retry's pick gives; from then on the hash
    // places it on one pod.
    let flags = format!("pods::127.0.0.1:{}::health_flags::", victim.trim_start_matches("pod-"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = ask();
        assert_eq!(r.status, 200, "after killing {victim}");
        assert_ne!(r.pod(), victim);
        let admin = http_to(SocketAddr::from(([127, 0, 0, 1], 9901)), "GET", "/clusters", &[]).unwrap();
        let down = admin.body_text().lines().any(|l| l.strip_prefix(&flags).is_some_and(|f| f != "healthy"));
        if down {
            break;
        }
        assert!(Instant::now() < deadline, "Envoy still sees {victim} healthy:\n{}", admin.body_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // The workers' load balancers get the change right after the main thread shows it.
    std::thread::sleep(Duration::from_millis(200));
    let settled = ask().pod().to_string();
    for _ in 0..10 {
        let r = ask();
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, settled.as_str(), None));
    }
    drop(group);
}

/// The pid of the demo pod named `name` (`demo/pod.py --name NAME`) in process group `group`.
fn demo_pod_pid(group: u32, name: &str) -> u32 {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let (Ok(stat), Ok(cmdline)) =
            (std::fs::read_to_string(entry.path().join("stat")), std::fs::read(entry.path().join("cmdline")))
        else {
            continue;
        };
        // Fields after the parenthesised command: state, ppid, pgrp, ...
        let pgrp = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(2)?.parse::<u32>().ok());
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let is_pod = args.iter().any(|a| a.ends_with(b"demo/pod.py"))
            && args.windows(2).any(|w| w[0] == b"--name" && w[1] == name.as_bytes());
        if pgrp == Some(group) && is_pod {
            found.push(pid);
        }
    }
    assert_eq!(found.len(), 1, "demo pod {name} in process group {group}: {found:?}");
    found[0]
}
