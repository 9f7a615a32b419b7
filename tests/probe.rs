//! `tether probe` against tether: the demo pods behind the shipped Envoy. A measured run
//! reports full stickiness over the three pods; in watch mode, killing a pod shows its
//! sessions (and only those) moving to the survivors.

mod common;

use common::*;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A `Write` the test can read while the probe is still writing.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines().find(|l| l.starts_with(prefix)).unwrap_or_else(|| panic!("no `{prefix}` line in:\n{out}"))
}

#[test]
fn probe_reports_stickiness_and_the_sessions_a_dead_pod_loses() {
    let mut pods = Pod::start_many(3);
    let envoy =
        Envoy::start(EnvoyConfig::shipped().endpoints(&addrs(&pods)), &pods.iter().collect::<Vec<_>>());
    let url = format!("http://{}/", envoy.addr());
    let args: Vec<String> = [
        "-n",
        "300",
        "-m",
        "4",
        "--cookie",
        "tether",
        "--no-progress",
        "--watch",
        "8s",
        "--interval",
        "400ms",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let (out, err) = (Shared::default(), Shared::default());
    let probe = {
        let (mut out, mut err) = (out.clone(), err.clone());
        std::thread::spawn(move || {
            tether_cli::run(["tether", "probe"].into_iter().map(String::from).chain(args), &mut out, &mut err)
        })
    };
    // Kill pod-b once the measured run is over and the watch has begun.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !out.text().contains("round 2:") {
        assert!(Instant::now() < deadline, "the probe did not start watching:\n{}{}", out.text(), err.text());
        std::thread::sleep(Duration::from_millis(50));
    }
    pods[1].kill();
    let code = probe.join().unwrap();
    let out = out.text();
    println!("{out}");
    assert_eq!(code, 0, "{out}{}", err.text());
    assert!(line(&out, "requests:").contains("1200 sent"), "{out}");
    assert!(line(&out, "requests:").contains("1200 answered by a pod, 0 failed"), "{out}");
    assert!(line(&out, "cookies:").contains("300 of 300 sessions hold a `tether` cookie; 0 later"), "{out}");
    assert!(
        line(&out, "stickiness:").contains("100.00% of sessions stayed on one pod (300 of 300)"),
        "{out}"
    );
    assert!(line(&out, "pods:").contains("3 "), "{out}");
    // pod-b's share of the distribution is exactly what the watch saw move, all from pod-b,
    // each to a live pod. A session whose first request after the kill was retried on
    // another pod than the one the hash picks once Envoy has ejected pod-b moves twice (it
    // keeps pod-b as its owner for `repinAfter`, so it follows the hash): pod-b→X→Y.
    let on_b: usize = line(&out, "  pod-b").split_whitespace().nth(1).unwrap().parse().unwrap();
    let moved = line(&out, "moved:");
    assert!(
        moved.starts_with(&format!("moved:       {on_b} of 300 sessions moved at least once (")),
        "{out}"
    );
    let transitions = moved.split(" moves: ").nth(1).and_then(|t| t.split(')').next()).unwrap();
    let count = |t: &str| t.rsplit(' ').next().and_then(|n| n.parse::<usize>().ok()).unwrap();
    let from_b: usize = transitions.split(", ").filter(|t| t.starts_with("pod-b→")).map(count).sum();
    let between_live: usize = transitions.split(", ").filter(|t| !t.starts_with("pod-b→")).map(count).sum();
    assert_eq!(from_b, on_b, "{out}");
    assert!(transitions.split(", ").all(|t| !t.contains("→pod-b")), "{out}");
    // Only requests sent before Envoy ejected pod-b (two refused connections) are retried:
    // a few sessions, never most of them.
    assert!(between_live * 4 <= on_b, "more than a quarter of pod-b's sessions moved twice:\n{out}");
    assert!(line(&out, "moved:").ends_with("; 0 requests failed"), "{out}");
    assert!(line(&out, "now:").contains(&format!("{on_b} sessions away from their first pod")), "{out}");
}

/// A self-signed certificate for 127.0.0.1, made now with `openssl req`.
fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
        .args(["-days", "1", "-subj", "/CN=tether-test", "-addext", "subjectAltName=IP:127.0.0.1"])
        // An end-entity certificate (webpki refuses a CA certificate as the server's own).
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success(), "openssl req failed");
    (cert, key)
}

fn probe(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        tether_cli::run(["tether", "probe"].into_iter().chain(args.iter().copied()), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn probe_measures_through_an_envoy_tls_listener_over_http2_and_http1() {
    let dir = scratch_dir("probe-tls");
    let (cert, key) = certificate(&dir);
    let pods = Pod::start_many(3);
    let tls = format!(
        "    filter_chains:\n    - transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          \
         common_tls_context:\n            alpn_protocols: [h2, http/1.1]\n            tls_certificates:\n            \
         - certificate_chain: {{ filename: \"{}\" }}\n              private_key: {{ filename: \"{}\" }}\n      filters:\n",
        cert.display(),
        key.display()
    );
    let config =
        EnvoyConfig::shipped().endpoints(&addrs(&pods)).edit("    filter_chains:\n    - filters:\n", &tls);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let url = format!("https://{}/", envoy.addr());
    let cacert = cert.to_str().unwrap();
    for (flags, version) in [(&[][..], "HTTP/2.0"), (&["--http1"][..], "HTTP/1.1")] {
        let mut args = vec!["-n", "60", "-m", "4", "--cookie", "tether", "--no-progress", "--cacert", cacert];
        args.extend_from_slice(flags);
        args.push(&url);
        let (code, out, err) = probe(&args);
        println!("{out}");
        assert_eq!(code, 0, "{out}{err}");
        assert!(line(&out, "tether probe:").contains(&format!("over {version}")), "{out}");
        assert!(line(&out, "requests:").contains("240 sent"), "{out}");
        assert!(line(&out, "requests:").contains("240 answered by a pod, 0 failed"), "{out}");
        assert!(
            line(&out, "cookies:").contains("60 of 60 sessions hold a `tether` cookie; 0 later"),
            "{out}"
        );
        assert!(
            line(&out, "stickiness:").contains("100.00% of sessions stayed on one pod (60 of 60)"),
            "{out}"
        );
        assert!(line(&out, "pods:").starts_with("pods:        3 "), "{out}");
    }
    // The certificate is verified: without --cacert the probe refuses the server.
    let (code, _, err) = probe(&["-n", "2", "-m", "1", "--no-progress", &url]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("cannot reach") && err.to_lowercase().contains("certificate"), "{err}");
    // --insecure skips verification.
    let (code, out, err) = probe(&["-n", "2", "-m", "1", "--no-progress", "--insecure", &url]);
    assert_eq!(code, 0, "{out}{err}");
}
