//! MCP (Model Context Protocol) through tether's learn mode, with the real MCP Python SDK:
//! three stateful MCP servers (`tests/mcp/server.py`, streamable HTTP) behind a real Envoy
//! running `envoy/mcp.yaml`, driven by the SDK's own client (`tests/mcp/client.py`), which
//! reports what happened as JSON lines; the assertions are here.
//!
//! The controls first: without tether, round robin and consistent hashing on the session
//! header (what users try) both lose sessions, so the scenario does show the problem.
//! Then with tether, over HTTP/1.1 and h2c: every call of a session reaches the server
//! that issued it, its GET event stream too, the DELETE ends it there, the server only
//! ever sees its own id and the client only tether's envelope. Then the owner dies.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Python with the pinned MCP SDK (`scripts/mcp.sh`, installing it if needed).
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new(repo().join("scripts/mcp.sh")).output().expect("scripts/mcp.sh");
        assert!(out.status.success(), "scripts/mcp.sh failed: {}", String::from_utf8_lossy(&out.stderr));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

// ---------------------------------------------------------------- MCP servers

/// One `tests/mcp/server.py` process. Killed with SIGKILL on drop; its log is printed if
/// the test is failing.
struct Replica {
    name: String,
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Replica {
    fn spawn(name: &str) -> Replica {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = scratch_dir("mcp-server").join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(python())
            .arg(repo().join("tests/mcp/server.py"))
            .args(["--name", name, "--port", &addr.port().to_string()])
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("tests/mcp/server.py");
        Replica { name: name.to_string(), addr, log, child: Some(child) }
    }

    /// Three replicas, started together (the SDK takes a second to import), each answering
    /// its health check within 20 s.
    fn start_three() -> Vec<Replica> {
        let mut replicas: Vec<Replica> =
            ["replica-a", "replica-b", "replica-c"].iter().map(|n| Replica::spawn(n)).collect();
        for r in &mut replicas {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if http_to(r.addr, "GET", "/healthz", &[]).is_ok_and(|resp| resp.status == 200) {
                    break;
                }
                if let Some(status) = r.child.as_mut().unwrap().try_wait().unwrap() {
                    panic!("{} exited ({status}) before it was healthy", r.name);
                }
                assert!(Instant::now() < deadline, "{} not healthy on {} after 20 s", r.name, r.addr);
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        replicas
    }

    /// The session ids this replica holds.
    fn sessions(&self) -> BTreeSet<String> {
        let r = http_to(self.addr, "GET", "/sessions", &[]).unwrap_or_else(|e| panic!("{}: {e}", self.name));
        assert_eq!(r.status, 200, "{}: {}", self.name, r.body_text());
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        v["sessions"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect()
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("---- {} log ({}), last 40 lines ----", self.name, self.log.display());
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
    }
}

struct Setup {
    replicas: Vec<Replica>,
    envoy: Envoy,
}

/// Three replicas behind Envoy built from `envoy/mcp.yaml` (for the build under test),
/// changed by `edit`.
fn setup(edit: impl FnOnce(EnvoyConfig) -> EnvoyConfig) -> Setup {
    let replicas = Replica::start_three();
    let config = EnvoyConfig::file("mcp.yaml")
        .repoint(8081, replicas[0].addr)
        .repoint(8082, replicas[1].addr)
        .repoint(8083, replicas[2].addr);
    let envoy = Envoy::start(edit(config), &[]);
    for r in &replicas {
        envoy.wait_health(r.addr, true);
    }
    Setup { replicas, envoy }
}

impl Setup {
    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.envoy.port)
    }

    fn replica(&mut self, name: &str) -> &mut Replica {
        self.replicas.iter_mut().find(|r| r.name == name).unwrap_or_else(|| panic!("no replica {name}"))
    }

    /// Every session id any live replica holds.
    fn held_sessions(&self) -> BTreeSet<String> {
        self.replicas.iter().filter(|r| r.child.is_some()).flat_map(Replica::sessions).collect()
    }

    /// Waits (up to 5 s) until no live replica holds any of `ids`: the SDK forgets a session
    /// just after it has answered its DELETE.
    fn wait_forgotten(&self, ids: &BTreeSet<String>) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let held = self.held_sessions();
            if held.is_disjoint(ids) {
                return;
            }
            assert!(Instant::now() < deadline, "sessions still held 5 s after their DELETE: {held:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

// ---------------------------------------------------------------- the client

/// A running `tests/mcp/client.py`: its JSON lines arrive on a channel (a reader thread),
/// so every wait for them is bounded.
struct ClientRun {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    seen: Vec<Value>,
    stderr: PathBuf,
}

impl ClientRun {
    fn start(url: &str, args: &[&str]) -> ClientRun {
        let stderr = scratch_dir("mcp-client").join("client.stderr");
        let mut child = Command::new(python())
            .arg(repo().join("tests/mcp/client.py"))
            .arg(url)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("tests/mcp/client.py");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        ClientRun { child, stdin, lines, seen: Vec::new(), stderr }
    }

    /// Reads lines until one is `{"event": event}` (returned) or the client's output ends
    /// (None), for at most `timeout`.
    fn until(&mut self, event: &str, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("client printed a line that is not JSON ({e}): {line}"));
                    self.seen.push(v.clone());
                    if v["event"] == event {
                        return Some(v);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
                Err(RecvTimeoutError::Timeout) => {
                    self.dump();
                    panic!("the MCP client printed no `{event}` within {timeout:?}");
                }
            }
        }
    }

    /// Every line until the client exits (within `timeout`), which it must do with status 0.
    fn finish(mut self, timeout: Duration) -> Report {
        let start = Instant::now();
        assert!(self.until("(end)", timeout).is_none());
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                self.dump();
                panic!("the MCP client did not exit within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let report = Report { lines: std::mem::take(&mut self.seen), stderr: self.stderr.clone() };
        assert!(status.success(), "the MCP client exited with {status}");
        report
    }

    fn dump(&self) {
        dump_lines(&self.seen, &self.stderr);
    }
}

impl Drop for ClientRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dump_lines(lines: &[Value], stderr: &Path) {
    eprintln!("---- MCP client output ({} lines) ----", lines.len());
    for l in lines {
        eprintln!("{l}");
    }
    let text = std::fs::read_to_string(stderr).unwrap_or_default();
    let tail: Vec<&str> = text.lines().collect();
    eprintln!("---- MCP client stderr, last 40 lines ----");
    for l in &tail[tail.len().saturating_sub(40)..] {
        eprintln!("{l}");
    }
}

/// What one client run printed. Printed whole if the test fails while it is alive.
struct Report {
    lines: Vec<Value>,
    stderr: PathBuf,
}

impl Drop for Report {
    fn drop(&mut self) {
        if std::thread::panicking() {
            dump_lines(&self.lines, &self.stderr);
        }
    }
}

/// Runs the client to its end (at most 90 s).
fn run_client(url: &str, args: &[&str]) -> Report {
    ClientRun::start(url, args).finish(Duration::from_secs(90))
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

impl Report {
    fn of<'a>(&'a self, client: u64, phase: u64) -> impl Iterator<Item = &'a Value> + 'a {
        self.lines.iter().filter(move |v| v["client"] == client && v["phase"] == phase)
    }

    fn events<'a>(&'a self, client: u64, phase: u64, event: &'a str) -> Vec<&'a Value> {
        self.of(client, phase).filter(|v| v["event"] == event).collect()
    }

    fn one<'a>(&'a self, client: u64, phase: u64, event: &'a str) -> &'a Value {
        let found = self.events(client, phase, event);
        assert_eq!(found.len(), 1, "client {client} phase {phase}: {} `{event}` lines", found.len());
        found[0]
    }

    fn http<'a>(&'a self, client: u64, phase: u64, method: &'a str) -> Vec<&'a Value> {
        self.events(client, phase, "http").into_iter().filter(|v| v["method"] == method).collect()
    }

    /// The HTTP exchanges of a session while it was open (before its transport closed).
    fn open_http(&self, client: u64, phase: u64) -> Vec<&Value> {
        self.of(client, phase)
            .take_while(|v| v["event"] != "closed")
            .filter(|v| v["event"] == "http")
            .collect()
    }

    fn errors(&self) -> Vec<&Value> {
        self.lines.iter().filter(|v| v["event"] == "error").collect()
    }

    fn calls(&self, client: u64, phase: u64) -> Vec<&Value> {
        self.events(client, phase, "call")
    }

    /// The clients whose `count` calls include a failure, with the failures' messages.
    fn failed_clients(&self, clients: u64) -> BTreeMap<u64, Vec<String>> {
        (0..clients)
            .filter_map(|c| {
                let failures: Vec<String> = self
                    .calls(c, 0)
                    .into_iter()
                    .filter(|v| v["ok"] == false)
                    .map(|v| format!("{} {}", v["code"], v["message"]))
                    .collect();
                (!failures.is_empty()).then_some((c, failures))
            })
            .collect()
    }
}

/// The server's own session ids are `uuid4().hex`.
fn is_server_id(id: &str) -> bool {
    id.len() == 32 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

// ---------------------------------------------------------------- one tethered session

/// What a session of the `session` scenario did through tether, checked: every exchange
/// (POSTs, the GET stream, the DELETE) answered by the server that answered `initialize`;
/// `calls` calls there counting 1..=calls, each seeing the server's own id while the client
/// held and sent tether's envelope; the envelope verifies and names that id and server;
/// every response that named the session carried that same envelope, none set a cookie;
/// the notification arrived on the GET stream from that server; the DELETE was answered
/// 200, and a later request with the same envelope 404 by that server (the session is
/// gone); every exchange used `http_version`. Returns (server, id).
fn check_tethered_session(
    replicas: &[Replica],
    report: &Report,
    client: u64,
    phase: u64,
    calls: u64,
    http_version: &str,
) -> (String, String) {
    let at = format!("client {client} phase {phase}");
    let server = text(&report.one(client, phase, "initialized")["server"]).to_string();
    let init =
        report.http(client, phase, "POST").into_iter().find(|v| v["rpc"] == "initialize").unwrap().clone();
    assert_eq!(init["status"], 200, "{at}: initialize");
    let envelope = text(&init["got_session"]).to_string();

    let results = report.calls(client, phase);
    assert_eq!(results.len() as u64, calls, "{at}");
    let id = text(&results[0]["session_seen"]).to_string();
    assert!(is_server_id(&id), "{at}: the server saw `{id}`, not one of its own ids");
    assert_ne!(envelope, id, "{at}: the client holds the server's own id");
    let sealed = learn::open_envelope(&envelope, DEMO_SCOPE);
    let addr = replicas.iter().find(|r| r.name == server).unwrap().addr;
    assert_eq!(sealed.app_id.as_deref(), Some(id.as_bytes()), "{at}: the envelope names another id");
    assert_eq!(sealed.owner.addr, addr, "{at}: the envelope names another server");
    assert_eq!(sealed.expires_at - sealed.issued_at, 86_400, "{at}: absoluteTimeout 24h");
    for (i, call) in results.iter().enumerate() {
        assert_eq!(call["ok"], true, "{at}: call {}: {call}", i + 1);
        assert_eq!((text(&call["replica"]), &call["count"]), (server.as_str(), &Value::from(i + 1)), "{at}");
        assert_eq!(text(&call["session_seen"]), id, "{at}: call {}", i + 1);
    }

    let note = report.one(client, phase, "notification");
    assert_eq!(note["ok"], true, "{at}: {note}");
    assert_eq!(
        (&note["tool"]["replica"], &note["tool"]["get_stream_open"]),
        (&Value::from(server.as_str()), &Value::from(true)),
        "{at}"
    );
    let uri = format!("mcp-test://{server}/{id}/c{client}p{phase}");
    assert_eq!(note["arrived"], Value::from(vec![uri]), "{at}: the notification on the GET stream");

    let gets = report.http(client, phase, "GET");
    assert!(!gets.is_empty() && gets.iter().all(|g| g["status"] == 200), "{at}: GET streams {gets:?}");
    let deletes = report.http(client, phase, "DELETE");
    assert_eq!(deletes.len(), 1, "{at}");
    assert_eq!(deletes[0]["status"], 200, "{at}: DELETE");
    let after = report.one(client, phase, "after_delete");
    assert_eq!(after["status"], 404, "{at}: a request after the DELETE: {after}");
    // The SDK forgets a session right after its DELETE is answered: until then it answers
    // "Session has been terminated", after it "Session not found".
    let body = text(&after["body"]);
    assert!(
        body.contains("Session not found") || body.contains("Session has been terminated"),
        "{at}: {after}"
    );

    assert_eq!(after["replica"], Value::from(server.as_str()), "{at}: tether still steers it to its server");

    for exchange in report.events(client, phase, "http") {
        assert_eq!(
            text(&exchange["replica"]),
            server,
            "{at}: an exchange reached another server: {exchange}"
        );
        assert_eq!(exchange["set_cookie"], Value::Null, "{at}: {exchange}");
        assert_eq!(text(&exchange["http_version"]), http_version, "{at}: {exchange}");
        if exchange["rpc"] != "initialize" {
            assert_eq!(
                text(&exchange["sent_session"]),
                envelope,
                "{at}: the client sent another id: {exchange}"
            );
        }
        // The server names the session on every response; tether sends the same envelope.
        let got = &exchange["got_session"];
        assert!(got.is_null() || got.as_str() == Some(envelope.as_str()), "{at}: {exchange}");
    }
    (server, id)
}

/// `clients` concurrent sessions of 20 calls through tether.
fn tethered_sessions(http2: bool) {
    let s = setup(|c| c);
    let clients = 8u64;
    let started = Instant::now();
    let mut args = vec!["--scenario", "session", "--clients", "8", "--calls", "20"];
    if http2 {
        args.push("--http2");
    }
    let report = run_client(&s.url(), &args);
    println!("{clients} MCP clients, 20 calls each: {:?}", started.elapsed());
    assert!(report.errors().is_empty(), "{:?}", report.errors());
    let version = if http2 { "HTTP/2" } else { "HTTP/1.1" };
    let mut per_server: BTreeMap<String, usize> = BTreeMap::new();
    let mut ids = BTreeSet::new();
    for client in 0..clients {
        let (server, id) = check_tethered_session(&s.replicas, &report, client, 0, 20, version);
        *per_server.entry(server).or_default() += 1;
        assert!(ids.insert(id), "two clients got one session");
    }
    println!("sessions per server: {per_server:?}");
    s.wait_forgotten(&ids);
    assert_eq!(s.envoy.stat("cluster.pods.upstream_rq_retry"), 0, "no request was retried");
}

// ---------------------------------------------------------------- the controls

/// Without tether, Envoy's round robin: the client keeps the id the server issued, and the
/// other servers answer it 404; the SDK reports "Session not found".
#[test]
fn without_tether_round_robin_loses_sessions() {
    let s = setup(|c| c.plain_hash("ROUND_ROBIN", "mcp-session-id"));
    let report =
        run_client(&s.url(), &["--scenario", "session", "--clients", "4", "--calls", "6", "--no-notify"]);
    let failed = report.failed_clients(4);
    let lost: usize = failed.values().map(Vec::len).sum();
    println!("round robin: {} of 4 clients had calls fail, {lost} of 24 calls", failed.len());
    assert!(!failed.is_empty(), "every call of every client reached its server: the control shows nothing");
    for failures in failed.values() {
        assert!(failures.iter().all(|f| f.contains("Session not found")), "{failures:?}");
    }
    // Each 404 while the session was open came from a server that did not issue it.
    for client in 0..4 {
        let Some(issuer) = report.events(client, 0, "initialized").first().map(|v| v["server"].clone())
        else {
            panic!("client {client} did not initialize");
        };
        for exchange in report.open_http(client, 0).into_iter().filter(|v| v["status"] == 404) {
            assert_ne!(exchange["replica"], issuer, "client {client}: its own server lost it: {exchange}");
        }
    }
    // No one translates: the client sends the server's own id.
    for client in 0..4 {
        for call in report.calls(client, 0).iter().filter(|c| c["ok"] == true) {
            let init = report.http(client, 0, "POST").into_iter().find(|v| v["rpc"] == "initialize").unwrap();
            assert_eq!(call["session_seen"], init["got_session"]);
        }
    }
}

/// Without tether, consistent hashing on the mcp-session-id header, which users try: the
/// `initialize` request has no id yet, so it lands anywhere, and the session's id then
/// hashes to one server, the issuing one for about a third of the sessions. Each session
/// works entirely or fails entirely; 12 sessions all landing well has a chance of 3^-12.
#[test]
fn without_tether_hashing_the_session_header_loses_sessions() {
    let s = setup(|c| c.plain_hash("MAGLEV", "mcp-session-id"));
    let clients = 12;
    let report =
        run_client(&s.url(), &["--scenario", "session", "--clients", "12", "--calls", "3", "--no-notify"]);
    let failed = report.failed_clients(clients);
    println!("hash on mcp-session-id: {} of {clients} sessions lost", failed.len());
    assert!(!failed.is_empty(), "every session hashed to its server: the control shows nothing");
    for client in 0..clients {
        let calls = report.calls(client, 0);
        let ok = calls.iter().filter(|c| c["ok"] == true).count();
        assert!(ok == 0 || ok == calls.len(), "client {client}: the hash moved within a session: {calls:?}");
        if let Some(failures) = failed.get(&client) {
            assert!(failures.iter().all(|f| f.contains("Session not found")), "{failures:?}");
            let issuer = &report.one(client, 0, "initialized")["server"];
            let calls = report.http(client, 0, "POST").into_iter().filter(|v| v["rpc"] == "tools/call");
            assert!(calls.into_iter().all(|v| v["replica"] != *issuer), "client {client}: the hash moved");
        }
    }
}

// ---------------------------------------------------------------- with tether

#[test]
fn tether_keeps_mcp_sessions_on_their_server_over_http1() {
    tethered_sessions(false);
}

#[test]
fn tether_keeps_mcp_sessions_on_their_server_over_h2c() {
    tethered_sessions(true);
}

/// The owner dies after 5 calls: the session's next call fails (its state died with the
/// server; another server answers 404, which the SDK reports), the client starts a new
/// session, and that one stays on one live server for 20 calls.
#[test]
fn owner_killed_the_client_starts_over_and_the_new_session_sticks() {
    let mut s = setup(|c| c);
    let mut run = ClientRun::start(&s.url(), &["--scenario", "owner-killed", "--calls", "5"]);
    run.until("ready", Duration::from_secs(30)).expect("the client stopped before it was ready");
    let owner = text(&run.seen.iter().find(|v| v["event"] == "initialized").unwrap()["server"]).to_string();
    s.replica(&owner).kill();
    run.stdin.take().unwrap().write_all(b"go\n").unwrap();
    let report = run.finish(Duration::from_secs(60));
    assert!(report.errors().is_empty(), "{:?}", report.errors());

    let before = report.calls(0, 0);
    assert_eq!(before.len(), 6);
    for (i, call) in before[..5].iter().enumerate() {
        assert_eq!(
            (&call["ok"], text(&call["replica"]), &call["count"]),
            (&Value::from(true), owner.as_str(), &Value::from(i + 1))
        );
    }
    let lost = before[5];
    println!("the call after the owner died: {lost}");
    assert_eq!(lost["ok"], false, "the session survived its server");
    assert_eq!((&lost["code"], text(&lost["message"])), (&Value::from(-32600), "Session not found"));
    let answer = report.http(0, 0, "POST").into_iter().rfind(|v| v["rpc"] == "tools/call").unwrap();
    assert_eq!(answer["status"], 404, "{answer}");
    assert!(answer["replica"].as_str().is_some_and(|r| r != owner), "a live server answered: {answer}");

    let (server, id) = check_tethered_session(&s.replicas, &report, 0, 1, 20, "HTTP/1.1");
    assert_ne!(server, owner);
    println!("the new session: {server} ({id})");
    s.wait_forgotten(&BTreeSet::from([id]));
}
