//! `tether probe` (`tether_cli::run`) against small loopback servers: clear errors for an
//! unreachable URL, a service that sets no cookie or no pod header, bad arguments; and a
//! measured run (keep-alive, chunked bodies, cookie jars).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// A loopback HTTP/1.1 server answering every request with `respond(cookie header)`.
fn serve(respond: impl Fn(Option<&str>) -> String + Send + Sync + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/app", listener.local_addr().unwrap());
    let respond = Arc::new(respond);
    std::thread::spawn(move || {
        for stream in listener.incoming().take(10_000).flatten() {
            let respond = respond.clone();
            std::thread::spawn(move || handle(stream, &*respond));
        }
    });
    url
}

fn handle(stream: TcpStream, respond: &dyn Fn(Option<&str>) -> String) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    for _ in 0..10_000 {
        let mut cookie = None;
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.strip_prefix("cookie: ") {
                cookie = Some(v.trim().to_string());
            }
        }
        if writer.write_all(respond(cookie.as_deref()).as_bytes()).is_err() {
            return;
        }
    }
}

fn probe(args: &[&str]) -> (i32, String, String) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code =
        tether_cli::run(["tether", "probe"].into_iter().chain(args.iter().copied()), &mut out, &mut err);
    (code, String::from_utf8(out).unwrap(), String::from_utf8(err).unwrap())
}

#[test]
fn unreachable_url_is_a_clear_error() {
    // A port nothing listens on: bind, note, close.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (code, out, err) = probe(&[&format!("http://127.0.0.1:{port}/")]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(err.contains("cannot reach http://127.0.0.1:") && err.contains("refused"), "{err}");
    let (code, _, err) = probe(&["http://name.invalid/"]);
    assert_eq!(code, 3);
    assert!(err.contains("cannot reach http://name.invalid/") && err.contains("dns error"), "{err}");
}

#[test]
fn missing_cookie_or_header_is_a_clear_error() {
    let no_cookie = serve(|_| "HTTP/1.1 200 OK\r\nx-pod: a\r\ncontent-length: 2\r\n\r\nok".into());
    let (code, _, err) = probe(&[&no_cookie]);
    assert_eq!(code, 3);
    assert!(err.contains("set no cookie") && err.contains("--allow-no-cookie"), "{err}");
    // --allow-no-cookie measures anyway.
    let (code, out, _) = probe(&["--allow-no-cookie", "-n", "5", "-m", "2", &no_cookie]);
    assert_eq!(code, 0);
    assert!(out.contains("cookies:     0 of 5 sessions hold a cookie"), "{out}");

    let no_header =
        serve(|_| "HTTP/1.1 200 OK\r\nset-cookie: s=1\r\nserver: x\r\ncontent-length: 0\r\n\r\n".into());
    let (code, _, err) = probe(&[&no_header]);
    assert_eq!(code, 3);
    assert!(
        err.contains("no `x-pod` header")
            && err.contains("headers received: content-length, server, set-cookie"),
        "{err}"
    );
    let (code, _, err) = probe(&["--pod-header", "x-served-by", &no_header]);
    assert_eq!(code, 3);
    assert!(err.contains("no `x-served-by` header"), "{err}");

    let (code, _, err) = probe(&[
        "--cookie",
        "tether",
        &serve(|_| "HTTP/1.1 200 OK\r\nx-pod: a\r\nset-cookie: other=1\r\ncontent-length: 0\r\n\r\n".into()),
    ]);
    assert_eq!(code, 3);
    assert!(err.contains("no `tether` cookie (cookies set: [\"other\"])"), "{err}");

    let failing = serve(|_| "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n".into());
    let (code, _, err) = probe(&[&failing]);
    assert_eq!(code, 3);
    assert!(err.contains("answered 503"), "{err}");
}

#[test]
fn bad_arguments_exit_2_with_the_reason() {
    for (args, why) in [
        (&["ftp://example.test/"][..], "`ftp://` is not supported"),
        (&["-n", "many", "http://a.test/"][..], "`many` is not a whole number"),
        (&[][..], "<URL>"),
    ] {
        let (code, _, err) = probe(args);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains(why) && err.contains("--help"), "{args:?}: {err}");
    }
    let (code, out, _) = probe(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("Measure session affinity from outside"), "{out}");
    assert!(out.contains("--cacert") && out.contains("--http2"), "{out}");
}

#[test]
fn measures_a_cookie_sticky_service_and_a_non_sticky_one() {
    // Sticky: the cookie names the pod; a new session gets the next pod in turn. Chunked body.
    let next = AtomicUsize::new(0);
    let sticky = serve(move |cookie| {
        let (pod, set) = match cookie.and_then(|c| c.strip_prefix("s=")) {
            Some(pod) => (pod.to_string(), String::new()),
            None => {
                let pod = format!("p{}", next.fetch_add(1, Ordering::Relaxed) % 4);
                let set = format!("set-cookie: s={pod}; Path=/\r\n");
                (pod, set)
            }
        };
        format!(
            "HTTP/1.1 200 OK\r\nx-pod: {pod}\r\n{set}transfer-encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
        )
    });
    let (code, out, err) = probe(&["-n", "200", "-m", "5", "-c", "4", "--min-stickiness", "100", &sticky]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("requests:    1000 sent"), "{out}");
    assert!(out.contains("1000 answered by a pod, 0 failed"), "{out}");
    assert!(out.contains("stickiness:  100.00% of sessions stayed on one pod (200 of 200)"), "{out}");
    assert!(out.contains("pods:        4"), "{out}");
    assert!(out.contains("spread:      max/mean 1.00, min/mean 1.00"), "{out}");

    // Not sticky: every request goes to the next pod; --min-stickiness fails the run.
    let turn = AtomicUsize::new(0);
    let round_robin = serve(move |_| {
        let pod = turn.fetch_add(1, Ordering::Relaxed) % 2;
        format!("HTTP/1.1 200 OK\r\nx-pod: p{pod}\r\nset-cookie: s=1\r\ncontent-length: 0\r\n\r\n")
    });
    let (code, out, _) = probe(&["-n", "20", "-m", "4", "-c", "1", "--min-stickiness", "90", &round_robin]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("stickiness:  0.00% of sessions stayed on one pod (0 of 20)"), "{out}");
    assert!(out.contains("FAIL: stickiness 0.00% is below --min-stickiness 90%"), "{out}");
}
