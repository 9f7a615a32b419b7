//! Gateway replicas that disagree for a moment. Two Envoys run the same configuration, the
//! pod cluster of each fed by EDS from a file of its own, so each learns of a change when
//! the test says (as istiod's pushes reach replicas at different moments); browser-like
//! clients (one cookie jar each) alternate between them, as a load balancer in front of
//! the replicas spreads them. Each test prints its figures
//! (docs/behaviour-under-change.md, "Replicas that disagree").

mod common;

use common::http::Connection;
use common::renderers::istio::{cluster_name, render_from};
use common::*;
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const ISTIO_GATEWAY: &str = "istio/wasmplugin-gateway.yaml";
const SHIPPED_REPIN_AFTER: &str = r#""repinAfter": "10s""#;

/// Which configuration both replicas run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Deployment {
    /// `envoy/envoy.yaml` or `envoy/native.yaml` (TETHER_BUILD), as shipped.
    Shipped,
    /// The same with `repinAfter: 0s`: what every release before it did.
    RepinAtOnce,
    /// Shipped, with the endpoints from EDS taken as they are: a host removed from EDS
    /// leaves at once (`ignore_health_on_host_removal`), as with a control plane and no
    /// active health checks; Envoy's default keeps a removed host while it passes them.
    EdsAuthoritative,
    /// `istio/wasmplugin-gateway.yaml` (cookie mode) as scripts/istio-render.py renders it.
    IstioCookie,
}

/// How a replica learns its endpoints.
enum Feed {
    File(Eds),
    Rendered(PathBuf),
}

impl Feed {
    fn set(&mut self, pods: &[SocketAddr]) {
        match self {
            Feed::File(eds) => eds.set(&pods.iter().map(|p| (*p, Announce::Healthy)).collect::<Vec<_>>()),
            Feed::Rendered(out) => {
                render_from("istio", ISTIO_GATEWAY, &endpoint_args(pods), out, true);
            }
        }
    }
}

fn endpoint_args(pods: &[SocketAddr]) -> Vec<String> {
    pods.iter().map(SocketAddr::to_string).collect()
}

struct Replica {
    envoy: Envoy,
    feed: Feed,
}

impl Replica {
    fn start(deployment: Deployment, pods: &[&Pod], repin_after: &str) -> Replica {
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        let (config, feed) = match deployment {
            Deployment::Shipped | Deployment::RepinAtOnce | Deployment::EdsAuthoritative => {
                let eds = Eds::healthy(&addrs);
                let repin = if deployment == Deployment::RepinAtOnce { "0s" } else { repin_after };
                let mut config = EnvoyConfig::shipped()
                    .eds(&eds)
                    .edit(SHIPPED_REPIN_AFTER, &format!(r#""repinAfter": "{repin}""#));
                if deployment == Deployment::EdsAuthoritative {
                    config = config.edit(
                        "    lb_policy: MAGLEV\n",
                        "    lb_policy: MAGLEV\n    ignore_health_on_host_removal: true\n",
                    );
                }
                (config, Feed::File(eds))
            }
            Deployment::IstioCookie => {
                assert_eq!(repin_after, "10s", "the rendered WasmPlugin keeps the default");
                let out = scratch_dir("replica-istio");
                let (yaml, _) = render_from("istio", ISTIO_GATEWAY, &endpoint_args(&addrs), &out, false);
                (EnvoyConfig::from_yaml(yaml).process_env("TETHER_KEYS", DEMO_KEYS), Feed::Rendered(out))
            }
        };
        Replica { envoy: Envoy::start(config, pods), feed }
    }

    /// Tells this replica the endpoints are `pods` and waits until it routes to `new`.
    fn learn(&mut self, pods: &[SocketAddr], new: Option<SocketAddr>) {
        self.feed.set(pods);
        if let Some(new) = new {
            self.envoy.wait_health(new, true);
        }
    }
}

/// One browser: its cookie jar and the pod its session started on.
struct Browser {
    cookie: String,
    first: String,
}

impl Browser {
    fn start(conn: &mut Connection) -> Browser {
        let (pod, cookie) = ask_session(conn, None);
        Browser { cookie: cookie.expect("a new session sets the cookie"), first: pod }
    }

    /// One request with the jar's cookie; keeps what the response sets. Returns the pod.
    fn visit(&mut self, conn: &mut Connection) -> String {
        let (pod, set) = ask_session(conn, Some(&self.cookie));
        if let Some(cookie) = set {
            self.cookie = cookie;
        }
        pod
    }

    /// The pod the jar's token names (the session's owner as every replica reads it).
    fn owner(&self, pods: &[Pod]) -> String {
        let owner = open_scoped(&self.cookie, &self.scope()).owner.addr;
        pods.iter().find(|p| p.addr == owner).map_or_else(|| owner.to_string(), |p| p.name.clone())
    }

    fn scope(&self) -> String {
        SCOPE.with(|s| s.borrow().clone())
    }
}

thread_local! {
    /// The scope tokens are bound to in the running test (the cluster's name).
    static SCOPE: std::cell::RefCell<String> = std::cell::RefCell::new(DEMO_SCOPE.to_string());
}

/// What one run of the late-replica scenario gave.
#[derive(Debug)]
struct Late {
    sessions: usize,
    on_new: usize,
    /// Sessions (of any pod) whose last requests, through either replica, reached another
    /// pod than their first.
    moved: usize,
    /// Requests of the new pod's sessions while B did not route to it, and how many of
    /// them another pod served.
    lag_requests: usize,
    lag_elsewhere: usize,
    /// When B routed to the new pod, after A did.
    b_routed_after: Duration,
}

/// A fourth pod reaches replica A; B hears of it `lag` later. Browsers start sessions
/// through A, then alternate B, A, B, ... until B has routed to the new pod for 2 s.
fn late_replica(deployment: Deployment, lag: Duration) -> Late {
    let pods = Pod::start_many(4);
    let (old, new) = (&pods[..3], &pods[3]);
    let old_refs: Vec<&Pod> = old.iter().collect();
    let mut a = Replica::start(deployment, &old_refs, "10s");
    let mut b = Replica::start(deployment, &old_refs, "10s");
    if deployment == Deployment::IstioCookie {
        let Feed::Rendered(out) = &a.feed else { unreachable!() };
        SCOPE.with(|s| *s.borrow_mut() = cluster_name(out));
    }
    let all = addrs(&pods);
    a.learn(&all, Some(new.addr));
    a.envoy.settle();
    let t0 = Instant::now();
    let (mut via_a, mut via_b) = (a.envoy.keep_alive(), b.envoy.keep_alive());
    let mut browsers: Vec<Browser> = (0..60).map(|_| Browser::start(&mut via_a)).collect();
    let on_new = browsers.iter().filter(|b| b.first == new.name).count();
    let (mut told_b, mut b_routed) = (false, None::<Instant>);
    let (mut lag_requests, mut lag_elsewhere) = (0, 0);
    for round in 0.. {
        assert!(t0.elapsed() < Duration::from_secs(40), "B never routed to the new pod");
        if !told_b && t0.elapsed() >= lag {
            b.feed.set(&all);
            told_b = true;
        }
        if told_b && b_routed.is_none() && b.envoy.is_healthy(new.addr) {
            // Routed to from now on (the shipped configs merge host changes at once; the
            // rendered one within update_merge_window, 1 s, counted as part of the lag).
            b_routed = Some(Instant::now());
        }
        if b_routed.is_some_and(|at| at.elapsed() > Duration::from_secs(2)) {
            break;
        }
        let conn = if round % 2 == 0 { &mut via_b } else { &mut via_a };
        for browser in browsers.iter_mut() {
            let pod = browser.visit(conn);
            if browser.first == new.name && b_routed.is_none() {
                lag_requests += 1;
                lag_elsewhere += usize::from(pod != new.name);
            }
        }
    }
    // Where each session is now, through both replicas.
    let mut moved = 0;
    for browser in browsers.iter_mut() {
        let now = [browser.visit(&mut via_b), browser.visit(&mut via_a)];
        moved += usize::from(now.iter().any(|p| *p != browser.first));
    }
    let b_routed_after = b_routed.map(|at| at - t0).unwrap_or_default();
    let figures =
        Late { sessions: browsers.len(), on_new, moved, lag_requests, lag_elsewhere, b_routed_after };
    println!(
        "{deployment:?}, {} build, B told {lag:?} after A (routed {:.1} s after A): {} sessions, {} on the new pod; \
         their requests while B did not route to it: {}, served elsewhere: {}; sessions moved: {}",
        build_name(),
        figures.b_routed_after.as_secs_f64(),
        figures.sessions,
        figures.on_new,
        figures.lag_requests,
        figures.lag_elsewhere,
        figures.moved
    );
    assert!(on_new >= 3, "only {on_new} of 60 sessions started on the new pod: nothing to measure");
    figures
}

fn build_name() -> &'static str {
    if native() {
        "native"
    } else {
        "wasm"
    }
}

#[test]
fn a_pod_one_replica_has_not_heard_of_keeps_its_sessions() {
    for lag in [Duration::from_millis(200), Duration::from_secs(5)] {
        let late = late_replica(Deployment::Shipped, lag);
        assert_eq!(late.moved, 0, "{late:?}");
    }
}

#[test]
fn istio_cookie_mode_a_pod_one_replica_has_not_heard_of_keeps_its_sessions() {
    for lag in [Duration::from_millis(200), Duration::from_secs(5)] {
        let late = late_replica(Deployment::IstioCookie, lag);
        assert_eq!(late.moved, 0, "{late:?}");
    }
}

/// The control: re-pinning at once (every release before `repinAfter`) moves every session
/// of the new pod for good, the moment the late replica serves it elsewhere.
#[test]
fn without_repin_after_the_late_replica_moves_every_session_of_the_new_pod() {
    let late = late_replica(Deployment::RepinAtOnce, Duration::from_secs(2));
    assert_eq!(late.moved, late.on_new, "{late:?}");
}

/// Requests through both replicas until `done` says so or `limit` passes; panics on any
/// request that fails (ask_session: every answer must be a 200 from a pod).
fn alternate(
    browsers: &mut [Browser],
    a: &Envoy,
    b: &Envoy,
    limit: Duration,
    mut each: impl FnMut(usize, &Browser, &str),
    mut done: impl FnMut() -> bool,
) {
    let start = Instant::now();
    let (mut via_a, mut via_b) = (a.keep_alive(), b.keep_alive());
    for round in 0.. {
        if done() || start.elapsed() > limit {
            return;
        }
        let conn = if round % 2 == 0 { &mut via_b } else { &mut via_a };
        for (i, browser) in browsers.iter_mut().enumerate() {
            let pod = browser.visit(conn);
            each(i, browser, &pod);
        }
    }
}

/// A killed owner: its sessions are served by the same pod on both replicas (the hash of
/// the session id over the same endpoints) and re-pinned there once the owner has been
/// missed for `repinAfter` (3 s here); no request fails; no other session moves.
#[test]
fn a_killed_owners_sessions_move_to_one_new_owner_on_every_replica() {
    let mut pods = Pod::start_many(3);
    let refs: Vec<&Pod> = pods.iter().collect();
    let a = Replica::start(Deployment::Shipped, &refs, "3s");
    let b = Replica::start(Deployment::Shipped, &refs, "3s");
    drop(refs);
    let mut via_a = a.envoy.keep_alive();
    let mut browsers: Vec<Browser> = (0..60).map(|_| Browser::start(&mut via_a)).collect();
    let victim = pods[0].name.clone();
    let own: BTreeSet<usize> = (0..browsers.len()).filter(|i| browsers[*i].first == victim).collect();
    assert!(own.len() >= 5, "{} of 60 sessions on {victim}", own.len());
    let victim_addr = pods[0].addr;
    pods[0].kill();
    let killed = Instant::now();
    let mut repinned_at: Vec<Option<Duration>> = vec![None; browsers.len()];
    let mut note = |i: usize, browser: &Browser, pod: &str| {
        if !own.contains(&i) {
            assert_eq!(pod, browser.first, "a session of a live pod moved");
        } else if repinned_at[i].is_none() && browser.owner(&pods) != victim {
            repinned_at[i] = Some(killed.elapsed());
        }
    };
    // Until both replicas took the pod out (outlier ejection or health checks), a request
    // may be retried anywhere; from then on the hash decides.
    let out = || !a.envoy.is_healthy(victim_addr) && !b.envoy.is_healthy(victim_addr);
    alternate(&mut browsers, &a.envoy, &b.envoy, Duration::from_secs(10), &mut note, out);
    assert!(out(), "the killed pod is still healthy in a replica after 10 s");
    let ejected = killed.elapsed();
    // Where each of the victim's sessions went, per replica, from then on.
    let mut served: Vec<BTreeSet<String>> = vec![BTreeSet::new(); browsers.len()];
    alternate(
        &mut browsers,
        &a.envoy,
        &b.envoy,
        Duration::from_secs(10),
        |i, browser, pod| {
            note(i, browser, pod);
            if own.contains(&i) {
                served[i].insert(pod.to_string());
            }
        },
        || false,
    );
    let slowest = repinned_at.iter().flatten().max().copied();
    println!(
        "{} build: {} sessions of the killed pod; both replicas took it out after {ejected:?}; each session re-pinned after {:?} at most; pods that served them afterwards: {:?}",
        build_name(),
        own.len(),
        slowest,
        own.iter().map(|i| served[*i].iter().cloned().collect::<Vec<_>>().join("+")).collect::<Vec<_>>()
    );
    for i in &own {
        let new_owner = browsers[*i].owner(&pods);
        assert_ne!(new_owner, victim, "session {i} still names the killed pod");
        // Every request since both replicas took the pod out went to the new owner,
        // whichever replica took it.
        assert_eq!(served[*i], BTreeSet::from([new_owner.clone()]), "session {i}");
        let after = repinned_at[*i].expect("re-pinned");
        // The token counts whole seconds: a re-pin comes 2-3 s after the first miss.
        assert!(after >= Duration::from_secs(2) && after < Duration::from_secs(8), "session {i}: {after:?}");
    }
}

/// Scale-in seen by A first: the pod still serves (its grace period) but only B routes to
/// it. Its sessions keep their owner while B serves them, then settle on one new pod once
/// both replicas dropped it — one move each, no flapping, nothing failed.
#[test]
fn a_pod_one_replica_dropped_first_moves_its_sessions_once() {
    let pods = Pod::start_many(3);
    let refs: Vec<&Pod> = pods.iter().collect();
    let mut a = Replica::start(Deployment::EdsAuthoritative, &refs, "3s");
    let mut b = Replica::start(Deployment::EdsAuthoritative, &refs, "3s");
    let mut via_a = a.envoy.keep_alive();
    let mut browsers: Vec<Browser> = (0..60).map(|_| Browser::start(&mut via_a)).collect();
    let leaving = pods[0].name.clone();
    let rest = addrs(&pods[1..]);
    a.feed.set(&rest);
    a.envoy.wait_removed(pods[0].addr);
    let mut owners: Vec<Vec<String>> = browsers.iter().map(|b| vec![b.owner(&pods)]).collect();
    let record = |owners: &mut [Vec<String>], i: usize, owner: String| {
        if owners[i].last() != Some(&owner) {
            owners[i].push(owner);
        }
    };
    // B keeps the pod for 5 s: longer than repinAfter, but B serves it every other request.
    let five = Duration::from_secs(5);
    alternate(
        &mut browsers,
        &a.envoy,
        &b.envoy,
        five,
        |i, br, _| record(&mut owners, i, br.owner(&pods)),
        || false,
    );
    let kept = owners.iter().filter(|o| o[0] == leaving && o.len() == 1).count();
    b.feed.set(&rest);
    b.envoy.wait_removed(pods[0].addr);
    let six = Duration::from_secs(6);
    alternate(
        &mut browsers,
        &a.envoy,
        &b.envoy,
        six,
        |i, br, _| record(&mut owners, i, br.owner(&pods)),
        || false,
    );
    let own = owners.iter().filter(|o| o[0] == leaving).count();
    println!(
        "{} build: {own} sessions on the leaving pod; {kept} kept their owner while only A had dropped it (5 s); owner sequences: {:?}",
        build_name(),
        owners.iter().filter(|o| o[0] == leaving).collect::<Vec<_>>()
    );
    assert!(own >= 5, "{own} of 60 sessions on {leaving}");
    assert_eq!(kept, own, "a session moved while B still served its owner");
    for o in &owners {
        if o[0] == leaving {
            assert_eq!(o.len(), 2, "not exactly one move: {o:?}");
        } else {
            assert_eq!(o.len(), 1, "a session of a staying pod moved: {o:?}");
        }
    }
    // One new owner per session whichever replica serves it.
    let mut via_b = b.envoy.keep_alive();
    for browser in browsers.iter_mut() {
        let owner = browser.owner(&pods);
        assert_eq!(browser.visit(&mut via_a), owner);
        assert_eq!(browser.visit(&mut via_b), owner);
    }
}

/// A pod unknown to both replicas for less than `repinAfter` (5 s here) gets its sessions
/// back when it returns; for longer, they stay where they went. Also a pod killed and
/// restarted on its address within the window (health checks failed, outlier detection
/// ejected it; a passing health check un-ejects it).
#[test]
fn a_pod_that_returns_within_repin_after_gets_its_sessions_back() {
    let mut pods = Pod::start_many(3);
    let refs: Vec<&Pod> = pods.iter().collect();
    let mut a = Replica::start(Deployment::EdsAuthoritative, &refs, "5s");
    let mut b = Replica::start(Deployment::EdsAuthoritative, &refs, "5s");
    drop(refs);
    let mut via_a = a.envoy.keep_alive();
    let mut browsers: Vec<Browser> = (0..60).map(|_| Browser::start(&mut via_a)).collect();
    let (name, addr) = (pods[0].name.clone(), pods[0].addr);
    let own = browsers.iter().filter(|b| b.first == name).count();
    assert!(own >= 5, "{own} of 60 sessions on {name}");
    let (all, rest) = (addrs(&pods), addrs(&pods[1..]));
    let second = Duration::from_secs(1);
    let back = |browsers: &mut [Browser], a: &Replica, b: &Replica, pods: &[Pod]| {
        a.envoy.wait_health(addr, true);
        b.envoy.wait_health(addr, true);
        alternate(browsers, &a.envoy, &b.envoy, second, |_, _, _| {}, || false);
        browsers.iter().filter(|b| b.first == name && b.owner(pods) == name).count()
    };
    let mut figures = Vec::new();
    for away in [Duration::from_millis(1500), Duration::from_secs(8)] {
        if away > Duration::from_secs(5) {
            // Killed and restarted in place within the window, before the long absence.
            pods[0].kill();
            alternate(&mut browsers, &a.envoy, &b.envoy, second, |_, _, _| {}, || false);
            pods[0] = Pod::start_at(addr, &name);
            figures.push(("killed, restarted 1 s later", back(&mut browsers, &a, &b, &pods)));
        }
        a.feed.set(&rest);
        b.feed.set(&rest);
        a.envoy.wait_removed(addr);
        b.envoy.wait_removed(addr);
        alternate(
            &mut browsers,
            &a.envoy,
            &b.envoy,
            away,
            |_, browser, pod| assert!(browser.first != name || pod != name),
            || false,
        );
        a.learn(&all, Some(addr));
        b.learn(&all, Some(addr));
        let label = if away < Duration::from_secs(5) { "unknown for 1.5 s" } else { "unknown for 8 s" };
        figures.push((label, back(&mut browsers, &a, &b, &pods)));
    }
    println!("{} build: {own} sessions on {name}; back on it afterwards: {figures:?}", build_name());
    assert_eq!(
        figures,
        [("unknown for 1.5 s", own), ("killed, restarted 1 s later", own), ("unknown for 8 s", 0)]
    );
}
