//! One harness for every real-Envoy test: demo pods, Envoy built from the shipped
//! `envoy/envoy.yaml`, readiness polling, a tiny HTTP/1.1 client, and clean-up that
//! always runs (Drop) and prints Envoy's log when a test fails.
//!
//! `TETHER_BUILD=native` runs the same tests against the native build instead
//! (`envoy/native.yaml`, `target/native/libtether.so`): see [`native`].
#![allow(dead_code)]

pub mod http;
pub mod learn;
pub mod renderers;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tether::address::Owner;
use tether::keyring::Keyring;
use tether::token::{self, Limits, SessionId, SessionToken};

/// The demo key of `envoy/envoy.yaml` (checked against the file by `EnvoyConfig::shipped`).
pub const DEMO_KEYS: &str = "demo=dGV0aGVyLWRlbW8ta2V5LURPLU5PVC1VU0UtSU4tUFJPRCEh";
pub const DEMO_SECRET: &str = "dGV0aGVyLWRlbW8ta2V5LURPLU5PVC1VU0UtSU4tUFJPRCEh";
pub const COOKIE: &str = "tether";
/// The scope tokens are bound to by default: the shipped cluster's name.
pub const DEMO_SCOPE: &str = "pods";
pub const DEMO_LIMITS: Limits = Limits { max_lifetime: 86_400, idle_timeout: None, envelopes: false };

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether the tests run against the native build (`TETHER_BUILD=native`) instead of the
/// wasm module (`TETHER_BUILD` unset or `wasm`).
pub fn native() -> bool {
    match std::env::var("TETHER_BUILD").as_deref() {
        Ok("native") => true,
        Ok("wasm") | Err(_) => false,
        Ok(other) => panic!("TETHER_BUILD={other}: use `wasm` or `native`"),
    }
}

/// tether's counter `name` (e.g. `affinity_hits`) as Envoy's `/stats` names it for the
/// build under test.
pub fn counter(name: &str) -> String {
    let namespace = if native() { "dynamicmodulescustom" } else { "wasmcustom" };
    format!("{namespace}.tether.{name}")
}

/// The `x-tether-host` a pod receives on a request pinned to `owner`: the wasm build hands
/// the owner to `stateful_session` in that header (base64 `ip:port`); the native build sets
/// Envoy's upstream override host and removes the header (`-`: absent).
pub fn seen_host(owner: SocketAddr) -> String {
    use base64::Engine;
    if native() {
        "-".to_string()
    } else {
        base64::engine::general_purpose::STANDARD.encode(owner.to_string())
    }
}

/// The inline demo key of `envoy/native.yaml`.
const NATIVE_INLINE_KEYS: &str = "\"keys\": \"demo=dGV0aGVyLWRlbW8ta2V5LURPLU5PVC1VU0UtSU4tUFJPRCEh\",";

/// A base64 secret as the bytes it stands for (what a careless log line would print).
pub fn decoded_secret(secret: &str) -> String {
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD.decode(secret).unwrap();
    String::from_utf8(raw).expect("the tests' secrets are printable")
}

pub fn demo_keyring() -> Keyring {
    Keyring::parse(DEMO_KEYS, None).unwrap()
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Opens a cookie value with the demo key and scope, as the shipped Envoy would.
pub fn open_demo(value: &str) -> SessionToken {
    open_scoped(value, DEMO_SCOPE)
}

pub fn open_scoped(value: &str, scope: &str) -> SessionToken {
    token::open(value.as_bytes(), &demo_keyring(), scope, now(), DEMO_LIMITS)
        .unwrap_or_else(|e| panic!("token {value} does not verify in scope {scope}: {e:?}"))
        .token
}

/// A demo-key token for `owner`, valid for an hour in the shipped cluster's scope.
pub fn demo_token(owner: impl Into<Owner>, session: [u8; 16]) -> String {
    scoped_token(owner, session, DEMO_SCOPE, "")
}

/// A token with every field chosen, signed by the first key of `keys`, in the demo scope
/// (for forged, expired, future and over-long tokens).
pub fn sealed_token(
    keys: &str,
    owner: impl Into<Owner>,
    issued_at: u64,
    expires_at: u64,
    session: [u8; 16],
) -> String {
    let ring = Keyring::parse(keys, None).unwrap();
    let t = SessionToken {
        session: SessionId(session),
        owner: owner.into(),
        issued_at,
        expires_at,
        cluster: String::new(),
        owner_away_since: None,
        app_id: None,
    };
    token::seal(&t, ring.signing_key().unwrap(), DEMO_SCOPE)
}

/// A well-formed token for `owner` in `scope`, signed with a key no test Envoy has.
pub fn forged_token(owner: impl Into<Owner>, scope: &str) -> String {
    let other = Keyring::parse("demo=b3RoZXItc2VjcmV0LW9mLXRoaXJ0eS10d28tYnl0ZXMhISE=", None).unwrap();
    let t = SessionToken {
        session: SessionId([7; 16]),
        owner: owner.into(),
        issued_at: now(),
        expires_at: now() + 600,
        cluster: String::new(),
        owner_away_since: None,
        app_id: None,
    };
    token::seal(&t, other.signing_key().unwrap(), scope)
}

/// A native-build session's first steps through `envoy`, tokens scoped to `scope` (the
/// Envoy Gateway and Istio native suites): minted by the pod its token names (Secure,
/// HttpOnly); 20 hits through Envoy's override host, the pod seeing the session id and no
/// `x-tether-host`; then 30 forged tokens aimed at another pod, each a new session.
/// Returns the first response, its cookie value and token, and how many forged tokens
/// reached the pod they aimed at.
pub fn native_mint_stick_and_forge(
    envoy: &Envoy,
    pods: &[Pod],
    scope: &str,
) -> (Response, String, SessionToken, usize) {
    let open = |value: &str| open_scoped(value, scope);
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let set_cookie = first.set_cookie().expect("a new session sets the cookie").to_string();
    assert!(set_cookie.contains("; Secure") && set_cookie.contains("; HttpOnly"), "{set_cookie}");
    let value = first.cookie_value().unwrap();
    let token = open(&value);
    assert_eq!(token.owner.addr, pod_by_name(pods, first.pod()).addr);
    let session_hex = token.session.to_hex();
    for i in 0..20 {
        let r = envoy.get_with_cookie(Some(&value));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "request {i}");
        assert_eq!(r.header("x-seen-host"), Some("-"));
        assert_eq!(r.header("x-seen-key"), Some(session_hex.as_str()));
    }
    assert_eq!(envoy.stat("dynamicmodulescustom.tether.affinity_hits"), 20);
    let target = pods.iter().find(|p| p.addr != token.owner.addr).unwrap();
    let forged_on_target = (0..30)
        .filter(|i| {
            let r = envoy.get_with_cookie(Some(&forged_token(target.addr, scope)));
            assert_eq!(r.status, 200, "request {i}");
            assert_ne!(open(&r.cookie_value().expect("a new session")).session, SessionId([7; 16]));
            r.pod() == target.name
        })
        .count();
    (first, value, token, forged_on_target)
}

pub fn scoped_token(owner: impl Into<Owner>, session: [u8; 16], scope: &str, cluster: &str) -> String {
    let t = SessionToken {
        session: SessionId(session),
        owner: owner.into(),
        issued_at: now(),
        expires_at: now() + 3600,
        cluster: cluster.to_string(),
        owner_away_since: None,
        app_id: None,
    };
    token::seal(&t, demo_keyring().signing_key().unwrap(), scope)
}

/// A valid demo token re-encoded with the standard base64 alphabet (`+` and `/`); it is
/// chosen to contain `-` or `_`, so the re-encoding always differs from the original.
pub fn standard_alphabet(owner: SocketAddr) -> String {
    (0..=255u8)
        .map(|b| demo_token(owner, [b; 16]))
        .find(|t| t.contains(['-', '_']))
        .unwrap()
        .replace('-', "+")
        .replace('_', "/")
}

/// The shipped configuration in front of `pods`, with the debug header `x-tether` on.
pub fn debug_config(pods: &[Pod]) -> EnvoyConfig {
    EnvoyConfig::shipped()
        .endpoints(&addrs(pods))
        .plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "debugHeader": "x-tether" }"#)
}

static PORTS: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A free loopback port below the kernel's ephemeral range, never handed out twice in
/// this process. Ports from the ephemeral range (what binding port 0 returns) get taken
/// by the thousands of outgoing connections the load tests open between the moment a
/// port is chosen and the moment Envoy binds it.
pub fn free_port() -> u16 {
    let (low, high) = ephemeral_start()
        .filter(|start| *start > 12_000)
        .map_or((10_000u32, 30_000u32), |start| (u32::from(start) / 2, u32::from(start)));
    let mut given = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    let mut state = u64::from(std::process::id())
        ^ SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as u64;
    for _ in 0..10_000 {
        // xorshift: a different walk per process and run.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = (low + (state % u64::from(high - low)) as u32) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

fn ephemeral_start() -> Option<u16> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    range.split_whitespace().next()?.parse().ok()
}

pub fn scratch_dir(tag: &str) -> PathBuf {
    static COUNTER: Mutex<u32> = Mutex::new(0);
    let mut n = COUNTER.lock().unwrap_or_else(|e| e.into_inner());
    *n += 1;
    let dir = repo().join("target").join("it").join(format!("{tag}-{}-{}", std::process::id(), *n));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ready() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// The failure of a health wait or check on a host Envoy does not have.
fn no_host(pod: impl std::fmt::Display, cluster: &str) -> String {
    format!("{pod} is not a host of {cluster} in Envoy's /clusters")
}

// ---------------------------------------------------------------- pods

/// A demo pod process (`demo/pod.py`). Killed with SIGKILL on drop.
pub struct Pod {
    pub name: String,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Pod {
    pub fn start(name: &str) -> Pod {
        Pod::start_on("127.0.0.1", name)
    }

    pub fn start_on(host: &str, name: &str) -> Pod {
        let ip: std::net::IpAddr = host.parse().unwrap();
        Pod::start_at(SocketAddr::new(ip, free_port()), name)
    }

    /// Starts a pod on a given address (e.g. a pod coming back where it was).
    pub fn start_at(addr: SocketAddr, name: &str) -> Pod {
        let (host, port) = (addr.ip().to_string(), addr.port());
        let child = Command::new("python3")
            .arg(repo().join("demo/pod.py"))
            .args(["--name", name, "--port", &port.to_string(), "--host", &host])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 demo/pod.py");
        let pod = Pod { name: name.to_string(), addr, child: Some(child) };
        wait_until(&format!("pod {name} on {addr}"), Duration::from_secs(10), || {
            http_to(addr, "GET", "/healthz", &[]).map(|r| r.status == 200).unwrap_or(false)
        });
        pod
    }

    pub fn start_many(n: usize) -> Vec<Pod> {
        (0..n).map(|i| Pod::start(&format!("pod-{}", (b'a' + i as u8) as char))).collect()
    }

    /// Starts the pod again on the same address, after `kill`.
    pub fn restart(&mut self) {
        self.kill();
        let (addr, name) = (self.addr, self.name.clone());
        *self = Pod::start_at(addr, &name);
    }

    /// SIGKILL: the process dies at once, connections are reset.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.kill();
    }
}

// ---------------------------------------------------------------- Envoy config

/// `envoy/envoy.yaml` with its ports, endpoints and (optionally) plugin settings replaced,
/// so every test runs the configuration users copy.
#[derive(Clone)]
pub struct EnvoyConfig {
    pub yaml: String,
    /// Extra environment variables for the Envoy process (e.g. keys read by host_env_keys).
    pub env: Vec<(String, String)>,
    /// Envoy's `--log-level` (the wasm component always logs at debug or finer).
    pub log_level: &'static str,
    /// Envoy's worker threads (`--concurrency`), 2 unless a test needs otherwise.
    pub concurrency: u32,
    /// The Envoy binary to run, when a test needs one release whatever `ENVOY` says
    /// (else [`envoy_binary`]).
    pub envoy: Option<PathBuf>,
}

const SHIPPED_ENDPOINTS_MARK: &str = "      - lb_endpoints:\n";

impl EnvoyConfig {
    /// `envoy/envoy.yaml`, or `envoy/native.yaml` for the native build. The native file's
    /// inline demo key moves to Envoy's environment (`keysFromEnv`, as production does),
    /// so that [`EnvoyConfig::keys_env`] works the same for both builds.
    pub fn shipped() -> EnvoyConfig {
        if native() {
            return EnvoyConfig::shipped_native();
        }
        let yaml = std::fs::read_to_string(repo().join("envoy/envoy.yaml")).unwrap();
        assert!(yaml.contains(DEMO_KEYS), "envoy/envoy.yaml no longer carries the demo key the tests use");
        EnvoyConfig::from_yaml(yaml)
    }

    /// `envoy/native.yaml` whatever `TETHER_BUILD` says, its demo key moved to Envoy's
    /// environment (see [`EnvoyConfig::shipped`]).
    pub fn shipped_native() -> EnvoyConfig {
        let yaml = std::fs::read_to_string(repo().join("envoy/native.yaml")).unwrap();
        assert_eq!(
            yaml.matches(NATIVE_INLINE_KEYS).count(),
            1,
            "envoy/native.yaml no longer carries the demo key"
        );
        let yaml = yaml.replace(NATIVE_INLINE_KEYS, "\"keysFromEnv\": \"TETHER_KEYS\",");
        EnvoyConfig::from_yaml(yaml).process_env("TETHER_KEYS", DEMO_KEYS).native_module(&native_module())
    }

    /// Loads the native module from `path` instead of the file the config names.
    pub fn native_module(mut self, path: &Path) -> EnvoyConfig {
        const MARK: &str = "local: { filename: ";
        assert_eq!(self.yaml.matches(MARK).count(), 1, "the config names no native module file");
        let start = self.yaml.find(MARK).unwrap() + MARK.len();
        let end = start + self.yaml[start..].find(" }").unwrap();
        self.yaml.replace_range(start..end, path.to_str().unwrap());
        self
    }

    /// Any configuration with listener port 10000 and admin port 9901 (replaced at start).
    pub fn from_yaml(yaml: String) -> EnvoyConfig {
        EnvoyConfig { yaml, env: Vec::new(), log_level: "info", concurrency: 2, envoy: None }
    }

    /// Runs this Envoy binary instead of [`envoy_binary`]'s.
    pub fn envoy_binary(mut self, path: PathBuf) -> Self {
        self.envoy = Some(path);
        self
    }

    /// Runs Envoy at this log level (`trace` logs every header and the whole config).
    pub fn log_level(mut self, level: &'static str) -> Self {
        self.log_level = level;
        self
    }

    /// Runs Envoy with this many worker threads.
    pub fn concurrency(mut self, workers: u32) -> Self {
        self.concurrency = workers;
        self
    }

    /// Sets a variable of Envoy's own environment.
    pub fn process_env(mut self, name: &str, value: &str) -> Self {
        self.env.retain(|(n, _)| n != name);
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    /// Another configuration shipped in `envoy/` (it must carry the demo key too), as the
    /// build under test needs it ([`EnvoyConfig::for_build`]).
    pub fn file(name: &str) -> EnvoyConfig {
        let yaml = std::fs::read_to_string(repo().join("envoy").join(name)).unwrap();
        assert!(yaml.contains(DEMO_KEYS), "envoy/{name} no longer carries the demo key the tests use");
        EnvoyConfig::for_build(yaml)
    }

    /// A configuration written for the wasm build (tether + stateful_session filters), as
    /// the build under test needs it: unchanged for wasm; for the native build its tether
    /// and stateful_session filters become `envoy/native.yaml`'s tether filter, with the
    /// file's own JSON configuration.
    pub fn for_build(yaml: String) -> EnvoyConfig {
        let config = EnvoyConfig::from_yaml(yaml);
        if !native() {
            return config;
        }
        let json = config.plugin_json();
        let native = EnvoyConfig::shipped();
        let filters = |yaml: &str| {
            let start = yaml.find("          - name: tether\n").expect("tether filter");
            let end = yaml.find("          - name: envoy.filters.http.router\n").expect("router filter");
            start..end
        };
        let mut yaml = config.yaml.clone();
        yaml.replace_range(filters(&config.yaml), &native.yaml[filters(&native.yaml)]);
        EnvoyConfig { yaml, ..native }.plugin_config(&json)
    }

    /// The JSON plugin configuration, unindented.
    fn plugin_json(&self) -> String {
        let (range, indent) = self.plugin_block();
        self.yaml[range].lines().map(|l| format!("{}\n", l.get(indent..).unwrap_or(""))).collect()
    }

    /// Where the JSON plugin configuration sits (the block after `value: |`, up to the next
    /// filter) and its indentation.
    fn plugin_block(&self) -> (std::ops::Range<usize>, usize) {
        let start = self.yaml.find("value: |\n").expect("plugin configuration") + "value: |\n".len();
        let end = self.yaml[start..].find("\n          - name: ").unwrap() + start + 1;
        let indent = self.yaml[start..].len() - self.yaml[start..].trim_start_matches(' ').len();
        (start..end, indent)
    }

    /// Points the endpoint documented as 127.0.0.1:`port` at `pod`.
    pub fn repoint(self, port: u16, pod: SocketAddr) -> Self {
        self.replace_once(
            &format!("address: 127.0.0.1, port_value: {port} "),
            &format!("address: \"{}\", port_value: {} ", pod.ip(), pod.port()),
        )
    }

    /// Replaces any text that occurs exactly once.
    pub fn edit(self, from: &str, to: &str) -> Self {
        self.replace_once(from, to)
    }

    fn replace_once(mut self, from: &str, to: &str) -> Self {
        assert_eq!(self.yaml.matches(from).count(), 1, "envoy.yaml must contain `{from}` exactly once");
        self.yaml = self.yaml.replacen(from, to, 1);
        self
    }

    /// Points the cluster at `pods` instead of 127.0.0.1:8081-8083.
    pub fn endpoints(mut self, pods: &[SocketAddr]) -> Self {
        let at = self.yaml.find(SHIPPED_ENDPOINTS_MARK).expect("lb_endpoints block")
            + SHIPPED_ENDPOINTS_MARK.len();
        let tail = &self.yaml[at..];
        assert!(
            tail.lines().all(|l| l.contains("- endpoint:") || l.trim().is_empty()),
            "lb_endpoints must end envoy.yaml"
        );
        self.yaml.truncate(at);
        for pod in pods {
            self.yaml.push_str(&format!(
                "        - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}\n",
                pod.ip(),
                pod.port()
            ));
        }
        self
    }

    /// Replaces the JSON plugin configuration (the block after `value: |`, up to the next
    /// filter, keeping its indentation).
    pub fn plugin_config(mut self, json: &str) -> Self {
        let (range, indent) = self.plugin_block();
        let indented: String = json.lines().map(|l| format!("{}{l}\n", " ".repeat(indent))).collect();
        self.yaml.replace_range(range, &indented);
        self
    }

    /// Replaces the value of TETHER_KEYS: in the VM's environment (wasm), or in Envoy's
    /// own environment (native).
    pub fn keys_env(self, spec: &str) -> Self {
        if native() {
            return self.process_env("TETHER_KEYS", spec);
        }
        self.replace_once(&format!("TETHER_KEYS: \"{DEMO_KEYS}\""), &format!("TETHER_KEYS: \"{spec}\""))
    }

    /// Serves the cluster's endpoints through EDS from `eds.path` (a `path_config_source`
    /// that Envoy watches), instead of the static `load_assignment`, the way istiod updates
    /// a sidecar. Everything else (MAGLEV, health checks, outlier detection) is unchanged.
    pub fn eds(self, eds: &Eds) -> Self {
        let mut config = self.replace_once(
            "    type: STATIC\n",
            &format!(
                "    type: EDS\n    eds_cluster_config:\n      eds_config:\n        resource_api_version: V3\n        \
                 path_config_source: {{ path: \"{}\" }}\n",
                eds.path.display()
            ),
        );
        let at = config.yaml.find("    load_assignment:\n").expect("load_assignment block");
        let tail = &config.yaml[at..];
        assert!(
            tail.lines().skip(1).all(|l| l.starts_with("      ") || l.trim().is_empty()),
            "load_assignment must end envoy.yaml"
        );
        config.yaml.truncate(at);
        // xDS subscriptions need a node identity (istiod gives each sidecar one).
        config.yaml.insert_str(0, "node: { id: tether-test, cluster: tether-test }\n");
        config
    }

    /// Plain consistent hashing with no cookie pinning, as a baseline: the tether and
    /// stateful_session filters removed, the route hashing the client header `header`
    /// (the session id), the cluster's `lb_policy` set to `lb_policy`.
    pub fn plain_hash(self, lb_policy: &str, header: &str) -> Self {
        let start = self.yaml.find("          - name: tether\n").expect("tether filter");
        let end = self.yaml.find("          - name: envoy.filters.http.router\n").expect("router filter");
        let mut config = self;
        config.yaml.replace_range(start..end, "");
        config
            .replace_once(
                "header: { header_name: x-tether-key }",
                &format!("header: {{ header_name: {header} }}"),
            )
            .replace_once("lb_policy: MAGLEV", &format!("lb_policy: {lb_policy}"))
    }

    fn ports(self, listener: u16, admin: u16) -> Self {
        self.replace_once("port_value: 10000", &format!("port_value: {listener}"))
            .replace_once("port_value: 9901", &format!("port_value: {admin}"))
    }
}

// ---------------------------------------------------------------- EDS from a file

/// How an endpoint is announced through EDS (`health_status` of its `lb_endpoint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    Healthy,
    Draining,
}

/// The endpoints of cluster `pods`, served to Envoy from a file. Every `set` writes a new
/// ClusterLoadAssignment to a temporary file and renames it into place: Envoy watches the
/// path for moves (inotify) and applies it without a restart.
pub struct Eds {
    pub path: PathBuf,
    version: u32,
}

impl Eds {
    pub fn new(endpoints: &[(SocketAddr, Announce)]) -> Eds {
        let mut eds = Eds { path: scratch_dir("eds").join("eds.yaml"), version: 0 };
        eds.set(endpoints);
        eds
    }

    pub fn healthy(pods: &[SocketAddr]) -> Eds {
        Eds::new(&pods.iter().map(|p| (*p, Announce::Healthy)).collect::<Vec<_>>())
    }

    pub fn set(&mut self, endpoints: &[(SocketAddr, Announce)]) {
        self.version += 1;
        let mut yaml = format!(
            "version_info: \"{}\"\nresources:\n- \"@type\": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment\n  \
             cluster_name: pods\n  endpoints:\n  - lb_endpoints:\n",
            self.version
        );
        if endpoints.is_empty() {
            yaml.push_str("    []\n");
        }
        for (addr, announce) in endpoints {
            yaml.push_str(&format!(
                "    - endpoint: {{ address: {{ socket_address: {{ address: \"{}\", port_value: {} }} }} }}\n",
                addr.ip(),
                addr.port()
            ));
            if *announce == Announce::Draining {
                yaml.push_str("      health_status: DRAINING\n");
            }
        }
        let tmp = self.path.with_extension(format!("{}.tmp", self.version));
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }
}

// ---------------------------------------------------------------- Envoy

pub fn envoy_binary() -> PathBuf {
    if let Ok(path) = std::env::var("ENVOY") {
        return PathBuf::from(path);
    }
    let out = Command::new(repo().join("scripts/envoy.sh")).output().expect("scripts/envoy.sh");
    assert!(out.status.success(), "scripts/envoy.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The pinned Envoy `release` (`ENVOY_VERSION=release scripts/envoy.sh`, installing it if
/// needed), whatever `ENVOY` says. One call at a time: two installs of the same release
/// into .tools/ would race.
pub fn pinned_envoy(release: &str) -> PathBuf {
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one = INSTALLING.lock().unwrap_or_else(|e| e.into_inner());
    let out = Command::new(repo().join("scripts/envoy.sh"))
        .env("ENVOY_VERSION", release)
        .output()
        .expect("scripts/envoy.sh");
    assert!(out.status.success(), "scripts/envoy.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The release of the Envoy under test (`1.40.0`), from `envoy --version`.
pub fn envoy_release() -> String {
    let out = Command::new(envoy_binary()).arg("--version").output().expect("envoy --version");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split('/')
        .find(|part| part.split('.').count() == 3 && part.split('.').all(|n| n.parse::<u32>().is_ok()))
        .unwrap_or_else(|| panic!("no release in `envoy --version`: {text}"))
        .to_string()
}

/// The minor release of the Envoy under test (40 for 1.40.0).
pub fn envoy_minor() -> u32 {
    envoy_release().split('.').nth(1).and_then(|m| m.parse().ok()).expect("a release like 1.40.0")
}

/// Whether the Envoy under test runs the native module: 1.39 and later (docs/native.md).
pub fn envoy_loads_native() -> bool {
    envoy_minor() >= 39
}

/// Where `envoy/native.yaml` loads the native module from (relative to the repository).
pub const NATIVE_MODULE_PATH: &str = "target/native/libtether.so";

/// The native module under test: `TETHER_NATIVE_MODULE` (`make test-matrix` runs each
/// Envoy with the build for it), else `envoy/native.yaml`'s.
pub fn native_module() -> PathBuf {
    let path =
        repo().join(std::env::var("TETHER_NATIVE_MODULE").unwrap_or_else(|_| NATIVE_MODULE_PATH.into()));
    assert!(path.exists(), "{} is missing: run `make build-native` (or `make test`)", path.display());
    path
}

/// Checks that the module under test (the .wasm, or the native build) was built.
fn require_module() {
    if native() {
        native_module();
        return;
    }
    let wasm = repo().join("target/wasm32-wasip1/release/tether.wasm");
    assert!(wasm.exists(), "{} is missing: run `make build` (or `make test`)", wasm.display());
}

/// A running Envoy. Killed on drop; its log is printed if the test is failing.
pub struct Envoy {
    pub port: u16,
    pub admin: u16,
    pub log_path: PathBuf,
    child: Option<Child>,
}

impl Envoy {
    /// Starts Envoy and waits until it is ready and its workers route to every pod.
    ///
    /// Envoy builds its load balancers from the first health-check round. A pod that failed
    /// a check (on a loaded machine, a first check can exceed the 0.5 s timeout) turns
    /// healthy on `/clusters` a merge window (`update_merge_window`, 1 s) before the workers
    /// route to it: traffic sent at once would avoid it (a test then saw 1,000 new sessions
    /// skip a pod, and a session's hash owner change between two requests). So after any
    /// failed health check, the start waits the merge window out.
    pub fn start(config: EnvoyConfig, pods: &[&Pod]) -> Envoy {
        let mut envoy = Envoy::spawn(config);
        envoy.wait_ready();
        for pod in pods {
            envoy.wait_health(pod.addr, true);
        }
        let failed_checks: u64 = envoy
            .admin_get("/stats?filter=health_check\\.failure$")
            .lines()
            .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
            .sum();
        if failed_checks > 0 {
            eprintln!(
                "Envoy start: {failed_checks} failed health checks; waiting for the workers' load balancers"
            );
            envoy.settle();
        }
        envoy
    }

    /// Starts Envoy from the repository root (the shipped config's relative wasm path).
    pub fn spawn(config: EnvoyConfig) -> Envoy {
        require_module();
        let (port, admin) = (free_port(), free_port());
        let dir = scratch_dir("envoy");
        let config_path = dir.join("envoy.yaml");
        let env = config.env.clone();
        let level = config.log_level;
        let workers = config.concurrency.to_string();
        let binary = config.envoy.clone().unwrap_or_else(envoy_binary);
        let wasm_level = if level == "trace" { "wasm:trace" } else { "wasm:debug" };
        std::fs::write(&config_path, config.ports(port, admin).yaml).unwrap();
        let log_path = dir.join("envoy.log");
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new(binary)
            .current_dir(repo())
            .arg("-c")
            .arg(&config_path)
            .args(["--disable-hot-restart", "--concurrency", &workers, "--log-level", level])
            .args(["--component-log-level", wasm_level])
            .envs(env)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start envoy");
        Envoy { port, admin, log_path, child: Some(child) }
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.log_path).unwrap_or_default()).into_owned()
    }

    /// Waits for Envoy to exit (it should, on a refused configuration) and returns its code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    fn wait_ready(&mut self) {
        let admin = self.admin_addr();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(30) {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!("Envoy exited ({status}) before it was ready");
                }
            }
            if let Ok(r) = http_to(admin, "GET", "/ready", &[]) {
                if r.status == 200 {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("Envoy not ready after 30s");
    }

    pub fn admin_addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.admin))
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Whether Envoy currently sees `pod` healthy (health checks, outlier ejection), in
    /// whichever cluster holds it. A host no cluster has fails the test: a removed host is
    /// not an unhealthy one.
    pub fn is_healthy(&self, pod: SocketAddr) -> bool {
        self.health(pod).unwrap_or_else(|| panic!("{}", no_host(pod, "any cluster")))
    }

    /// Whether `pod` is healthy in whichever cluster holds it; None when no cluster has it.
    /// Whether any cluster has `pod` healthy: as `ip:port`, or behind an internal listener
    /// (`envoy://<listener>/<ip:port>`, Istio ambient).
    fn health(&self, pod: SocketAddr) -> Option<bool> {
        let clusters = self.admin_get("/clusters");
        let (plain, internal) = (format!("::{pod}::health_flags::"), format!("/{pod}::health_flags::"));
        let flags: Vec<&str> = clusters
            .lines()
            .filter_map(|l| match l.split_once(&plain) {
                Some((_, flags)) => Some(flags),
                None => l.contains("::envoy://").then(|| Some(l.split_once(&internal)?.1)).flatten(),
            })
            .collect();
        (!flags.is_empty()).then(|| flags.contains(&"healthy"))
    }

    /// The `health_flags` of `pod` in cluster `pods` (`healthy`, `/eds_status_draining`,
    /// `/failed_active_hc`, ...), or None when the cluster does not have the host.
    pub fn health_flags(&self, pod: SocketAddr) -> Option<String> {
        self.health_flags_in("pods", pod)
    }

    /// The `health_flags` of `pod` in the cluster named `cluster` (rendered Istio and Envoy
    /// Gateway configurations name theirs as istiod and Envoy Gateway do), or None when the
    /// cluster does not have the host. A cluster Envoy does not have fails the test (a
    /// misspelt cluster name must not read as "host gone").
    /// `pod` as Envoy names the host (`ip:port`, or an [`Owner`] behind an internal listener).
    pub fn health_flags_in(&self, cluster: &str, pod: impl std::fmt::Display) -> Option<String> {
        let clusters = self.admin_get("/clusters");
        let prefix = format!("{cluster}::");
        assert!(
            clusters.lines().any(|l| l.starts_with(&prefix)),
            "Envoy has no cluster `{cluster}`; /clusters:\n{clusters}"
        );
        let key = format!("{prefix}{pod}::health_flags::");
        clusters.lines().find_map(|l| l.strip_prefix(&key).map(str::to_string))
    }

    /// Waits until Envoy reports `flags` for `pod` in cluster `pods`. The host must be there
    /// (waiting for a removal is [`Envoy::wait_removed`]).
    pub fn wait_flags(&self, pod: SocketAddr, flags: &str) {
        self.wait_flags_in("pods", pod, flags)
    }

    pub fn wait_flags_in(&self, cluster: &str, pod: impl std::fmt::Display, flags: &str) {
        let pod = pod.to_string();
        wait_until(&format!("{pod} health_flags {flags} in Envoy"), Duration::from_secs(20), || {
            match self.health_flags_in(cluster, &pod) {
                Some(now) => now == flags,
                None => panic!("waiting for health_flags {flags}: {}", no_host(&pod, cluster)),
            }
        });
    }

    /// Waits until cluster `pods` no longer has `pod` (an EDS update removed it).
    pub fn wait_removed(&self, pod: SocketAddr) {
        self.wait_removed_in("pods", pod)
    }

    /// Waits until cluster `cluster`, which must exist, no longer has `pod`.
    pub fn wait_removed_in(&self, cluster: &str, pod: impl std::fmt::Display) {
        let pod = pod.to_string();
        wait_until(&format!("{pod} removed from cluster {cluster}"), Duration::from_secs(20), || {
            self.health_flags_in(cluster, &pod).is_none()
        });
    }

    /// Waits until the workers' load balancers have the latest host set: Envoy merges host
    /// changes (EDS, health checks) over `common_lb_config.update_merge_window`, 1 s by
    /// default, so `/clusters` can show a new host healthy a second before traffic reaches it.
    /// (`envoy/envoy.yaml` sets the window to 0s; configurations rendered as istiod would
    /// keep the default.)
    pub fn settle(&self) {
        std::thread::sleep(Duration::from_millis(1500));
    }

    /// A keep-alive HTTP/1.1 connection to the listener (the probe's client).
    pub fn keep_alive(&self) -> http::Connection {
        http::Connection::new(self.addr(), "app.test", Duration::from_secs(15))
    }

    /// Waits until Envoy sees `pod` healthy (`true`) or not (`false`). Waiting for `true`
    /// also waits for the host to arrive (an EDS update is applied asynchronously); waiting
    /// for `false` fails at once when no cluster has the host: a removed host is not an
    /// unhealthy one (waiting for a removal is [`Envoy::wait_removed`]).
    pub fn wait_health(&self, pod: SocketAddr, healthy: bool) {
        wait_until(&format!("{pod} healthy={healthy} in Envoy"), Duration::from_secs(20), || {
            match self.health(pod) {
                Some(now) => now == healthy,
                None if healthy => false,
                None => panic!("waiting for it to be unhealthy: {}", no_host(pod, "any cluster")),
            }
        });
    }

    /// The body of an admin endpoint. An unreachable admin port or a non-200 answer fails
    /// the test: a wait or check built on admin output must never pass on an empty body.
    pub fn admin_get(&self, path: &str) -> String {
        match http_to(self.admin_addr(), "GET", path, &[]) {
            Ok(r) if r.status == 200 => r.body_text(),
            Ok(r) => panic!("Envoy admin GET {path}: status {}: {}", r.status, r.body_text()),
            Err(e) => panic!("Envoy admin GET {path} on {}: {e}", self.admin_addr()),
        }
    }

    /// A counter or gauge from `/stats`. A name Envoy does not have fails the test (a
    /// misspelt or renamed stat must not read as 0).
    pub fn stat(&self, name: &str) -> u64 {
        let stats = self.admin_get(&format!("/stats?filter=^{}$", name.replace('.', "\\.")));
        let value = stats
            .lines()
            .filter_map(|l| l.split_once(": "))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.trim())
            .unwrap_or_else(|| panic!("Envoy has no stat named `{name}`"));
        value.parse().unwrap_or_else(|_| panic!("stat `{name}` is not a number: {value:?}"))
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Response {
        http_to(self.addr(), "GET", path, headers).unwrap_or_else(|e| panic!("GET {path} via Envoy: {e}"))
    }

    /// GET with a tether cookie (if any).
    pub fn get_with_cookie(&self, cookie: Option<&str>) -> Response {
        match cookie {
            Some(value) => self.get("/", &[("cookie", &format!("{COOKIE}={value}"))]),
            None => self.get("/", &[]),
        }
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(120)..];
            eprintln!("---- Envoy log ({}), last {} lines ----", self.log_path.display(), tail.len());
            for line in tail {
                eprintln!("{line}");
            }
            eprintln!("---- end of Envoy log ----");
        }
    }
}

// ---------------------------------------------------------------- HTTP client

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What `pod()` gives when the response names no pod: unique per parsed response, so
    /// two failed responses never compare equal as "the same pod".
    no_pod: String,
}

/// A placeholder pod name no real pod has, different for every call.
pub fn no_pod_placeholder(status: u16) -> String {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("(no x-pod header: response #{n}, status {status})")
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str()).collect()
    }

    /// The pod that answered (`x-pod`); without that header, a placeholder that equals no
    /// pod name and no other response's placeholder.
    pub fn pod(&self) -> &str {
        self.header("x-pod").unwrap_or(&self.no_pod)
    }

    /// The whole Set-Cookie header for our cookie, if the response set it.
    pub fn set_cookie(&self) -> Option<&str> {
        self.all("set-cookie").into_iter().find(|v| v.starts_with(&format!("{COOKIE}=")))
    }

    /// Just the value of our cookie, if the response set it.
    pub fn cookie_value(&self) -> Option<String> {
        let header = self.set_cookie()?;
        let pair = header.split(';').next()?;
        Some(pair[COOKIE.len() + 1..].to_string())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`).
pub fn http_to(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> std::io::Result<Response> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n").into_bytes();
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    raw_request(addr, &req)
}

/// Sends raw request bytes and reads the response: up to its `content-length` if it has
/// one, else until the server closes. (Envoy keeps a connection it closes after a local
/// reply open for up to `delayed_close_timeout`, 1 s, waiting for the client to close
/// first: reading to the end would make every such reply take a second.)
pub fn raw_request(addr: SocketAddr, request: &[u8]) -> std::io::Result<Response> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(Duration::from_secs(15)))?;
    stream.set_nodelay(true)?;
    stream.write_all(request)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(head_end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let length = parse_response(&buf[..head_end + 4])
                .and_then(|r| r.header("content-length").and_then(|v| v.parse::<usize>().ok()));
            if length.is_some_and(|len| buf.len() >= head_end + 4 + len) {
                break;
            }
        }
    }
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::other(format!("unparsable response: {:?}", String::from_utf8_lossy(&buf)))
    })
}

pub fn parse_response(buf: &[u8]) -> Option<Response> {
    let head_end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    // Header values may carry any byte (obs-text): the pod echoes a client's raw cookies.
    let head = String::from_utf8_lossy(&buf[..head_end]);
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Some(Response { status, headers, body: buf[head_end + 4..].to_vec(), no_pod: no_pod_placeholder(status) })
}

/// Opens a WebSocket through `addr`; returns the handshake response and the first text
/// frame the pod sends (its name).
pub fn websocket(addr: SocketAddr, cookie: Option<&str>) -> (Response, String) {
    try_websocket(addr, cookie).unwrap_or_else(|e| panic!("WebSocket through {addr}: {e}"))
}

/// `websocket`, with failures as errors rather than panics (for tests under load).
pub fn try_websocket(addr: SocketAddr, cookie: Option<&str>) -> std::io::Result<(Response, String)> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let cookie_line = cookie.map(|c| format!("cookie: {COOKIE}={c}\r\n")).unwrap_or_default();
    let req = format!(
        "GET /ws HTTP/1.1\r\nhost: app.test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n\
         sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n{cookie_line}\r\n"
    );
    stream.write_all(req.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read until the handshake and one complete small frame have arrived.
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::Error::other(format!(
                "connection closed during WebSocket handshake: {:?}",
                String::from_utf8_lossy(&buf)
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let frame = &buf[end + 4..];
            if frame.len() >= 2 && frame.len() >= 2 + (frame[1] & 0x7f) as usize {
                let response = parse_response(&buf[..end + 4])
                    .ok_or_else(|| std::io::Error::other("unparsable WebSocket handshake"))?;
                let len = (frame[1] & 0x7f) as usize;
                let text = String::from_utf8_lossy(&frame[2..2 + len]).into_owned();
                // Close frame (masked, as clients must).
                let _ = stream.write_all(&[0x88, 0x80, 0, 0, 0, 0]);
                return Ok((response, text));
            }
        }
    }
}

pub fn pod_by_name<'a>(pods: &'a [Pod], name: &str) -> &'a Pod {
    pods.iter().find(|p| p.name == name).unwrap_or_else(|| panic!("no pod named {name}"))
}

pub fn addrs(pods: &[Pod]) -> Vec<SocketAddr> {
    pods.iter().map(|p| p.addr).collect()
}

// ---------------------------------------------------------------- sessions

/// One GET of `/` on a keep-alive connection, as the load tests send it. An error if it
/// could not be sent or answered, or if the client had to send it a second time (its reused
/// connection failed: a reset or close Envoy did not hide), whatever the second answer was.
pub fn get_once(conn: &mut http::Connection, headers: &[(&str, &str)]) -> Result<http::Response, String> {
    let resends = conn.resends();
    let r = conn.request("GET", "/", headers).map_err(|e| e.to_string())?;
    if conn.resends() != resends {
        return Err(format!("{RESENT}: the reused connection failed (second answer: status {})", r.status));
    }
    Ok(r)
}

/// How [`get_once`]'s error for a resent request begins.
pub const RESENT: &str = "resent";

/// The whole tether Set-Cookie header of a keep-alive response, if it set the cookie.
pub fn tether_set_cookie(r: &http::Response) -> Option<&str> {
    r.all("set-cookie").find(|v| v.strip_prefix(COOKIE).is_some_and(|rest| rest.starts_with('=')))
}

/// The cookie value in a tether Set-Cookie header.
pub fn set_cookie_value(header: &str) -> &str {
    let pair = header.split(';').next().unwrap_or("");
    pair.strip_prefix(&format!("{COOKIE}=")).unwrap_or_else(|| panic!("not a {COOKIE} Set-Cookie: {header}"))
}

/// The tether cookie value a keep-alive response set, if any.
pub fn tether_cookie(r: &http::Response) -> Option<String> {
    tether_set_cookie(r).map(|header| set_cookie_value(header).to_string())
}

/// One GET on a keep-alive connection with the session's cookie (or none), which must be
/// answered 200 by a demo pod (`x-pod`) on the first send. No response may carry the cookie
/// session state's own `tether-owner` cookie (tether strips it: Istio mode).
pub fn session_response(conn: &mut http::Connection, cookie: Option<&str>) -> http::Response {
    let header = cookie.map(|c| format!("{COOKIE}={c}"));
    let headers: Vec<(&str, &str)> = header.iter().map(|h| ("cookie", h.as_str())).collect();
    let r = get_once(conn, &headers).unwrap_or_else(|e| panic!("request through Envoy: {e}"));
    assert_eq!(r.status, 200, "{:?}", r.headers);
    assert!(r.all("set-cookie").all(|v| !v.starts_with("tether-owner=")), "the owner cookie leaked");
    assert!(r.header("x-pod").is_some(), "a 200 that names no pod (x-pod): {:?}", r.headers);
    r
}

/// [`session_response`]: (pod, the tether cookie value the response set).
pub fn ask_session(conn: &mut http::Connection, cookie: Option<&str>) -> (String, Option<String>) {
    let r = session_response(conn, cookie);
    (r.header("x-pod").unwrap_or_default().to_string(), tether_cookie(&r))
}

/// `n` requests with a session's cookie right after its owner (`owner`, named `owner_name`)
/// was killed, as a client would send them (keeping what the responses set). Each must be
/// answered 200 by a live pod and pass `check`; the session keeps its owner for
/// `repinAfter` (10 s as shipped): exactly one response, the first that misses the owner,
/// carries a token, which names the owner and the time of the miss (`open` reads it in
/// the deployment's scope). Returns the pods that answered.
pub fn ask_while_owner_away(
    envoy: &Envoy,
    cookie: &str,
    (owner, owner_name): (SocketAddr, &str),
    n: usize,
    open: impl Fn(&str) -> SessionToken,
    check: impl Fn(&Response),
) -> Vec<String> {
    ask_while_owner_away_keeping(envoy, cookie, (owner, owner_name), n, open, check).0
}

/// [`ask_while_owner_away`], also returning the cookie the client holds at the end (the
/// token that recorded the miss).
pub fn ask_while_owner_away_keeping(
    envoy: &Envoy,
    cookie: &str,
    (owner, owner_name): (SocketAddr, &str),
    n: usize,
    open: impl Fn(&str) -> SessionToken,
    check: impl Fn(&Response),
) -> (Vec<String>, String) {
    let mut cookie = cookie.to_string();
    let mut tokens = 0;
    let mut served = Vec::new();
    for i in 0..n {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!(r.status, 200, "request {i} after the owner died");
        assert_ne!(r.pod(), owner_name, "request {i}: the dead owner answered");
        check(&r);
        if let Some(new) = r.cookie_value() {
            let kept = open(&new);
            assert_eq!((kept.owner.addr, kept.owner_away_since.is_some()), (owner, true), "request {i}");
            tokens += 1;
            cookie = new;
        }
        served.push(r.pod().to_string());
    }
    assert_eq!(tokens, 1, "the first miss, and only it, sends a token");
    (served, cookie)
}

/// `n` new sessions, one after the other: (cookie value, pod).
pub fn mint_sessions(envoy: &Envoy, n: usize) -> Vec<(String, String)> {
    let mut conn = envoy.keep_alive();
    (0..n)
        .map(|_| {
            let (pod, cookie) = ask_session(&mut conn, None);
            (cookie.expect("a new session sets the cookie"), pod)
        })
        .collect()
}

/// One request per session with its cookie: (pod, whether the response set a new cookie).
pub fn visit_sessions(envoy: &Envoy, sessions: &[(String, String)]) -> Vec<(String, bool)> {
    let mut conn = envoy.keep_alive();
    sessions
        .iter()
        .map(|(cookie, _)| {
            let (pod, set) = ask_session(&mut conn, Some(cookie));
            (pod, set.is_some())
        })
        .collect()
}
