//! The owner of a session dies: through a real Envoy with the shipped cluster, health
//! check and retry settings, no request started after the kill fails, the dead pod's
//! sessions are re-pinned once `repinAfter` has passed, and two Envoys sharing a key pick
//! the same new owner.

mod common;

use common::*;
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Outcome {
    started: Instant,
    session: usize,
    status: u16,
    pod: String,
    set_cookie: bool,
    /// The owner the cookie the response set names, if it set one.
    new_owner: Option<SocketAddr>,
}

/// Mints `n` sessions through `envoy` and returns (cookie, owner pod name) for each.
fn mint(envoy: &Envoy, n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|_| {
            let r = envoy.get_with_cookie(None);
            assert_eq!(r.status, 200);
            (r.cookie_value().expect("cookie"), r.pod().to_string())
        })
        .collect()
}

#[test]
fn owner_killed_under_load_loses_no_requests_and_sessions_repin() {
    let mut pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());

    let sessions = mint(&envoy, 24);
    let mut per_pod: HashMap<&str, usize> = HashMap::new();
    for (_, pod) in &sessions {
        *per_pod.entry(pod).or_default() += 1;
    }
    let victim_name = per_pod.iter().max_by_key(|(_, n)| **n).map(|(p, _)| p.to_string()).unwrap();
    let victim_index = pods.iter().position(|p| p.name == victim_name).unwrap();
    let victim_addr = pods[victim_index].addr;
    let victim_sessions: HashSet<usize> =
        sessions.iter().enumerate().filter(|(_, (_, p))| *p == victim_name).map(|(i, _)| i).collect();
    assert!(victim_sessions.len() >= 3, "{per_pod:?}");

    let cookies: Arc<Vec<Mutex<String>>> =
        Arc::new(sessions.iter().map(|(c, _)| Mutex::new(c.clone())).collect());
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let envoy_addr = envoy.addr();
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (cookies, outcomes, stop) = (cookies.clone(), outcomes.clone(), stop.clone());
            std::thread::spawn(move || {
                let mine: Vec<usize> = (client..cookies.len()).step_by(4).collect();
                // Bounded in time (the stop flag) and in count.
                for n in 0..20_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let session = mine[n % mine.len()];
                    let cookie = cookies[session].lock().unwrap().clone();
                    let started = Instant::now();
                    let header = format!("{COOKIE}={cookie}");
                    let (status, pod, new_cookie) =
                        match http_to(envoy_addr, "GET", "/", &[("cookie", &header)]) {
                            Ok(r) => (r.status, r.pod().to_string(), r.cookie_value()),
                            Err(_) => (0, String::new(), None),
                        };
                    let set_cookie = new_cookie.is_some();
                    let new_owner = new_cookie.as_deref().map(|c| open_demo(c).owner.addr);
                    if let Some(c) = new_cookie {
                        *cookies[session].lock().unwrap() = c;
                    }
                    outcomes.lock().unwrap().push(Outcome {
                        started,
                        session,
                        status,
                        pod,
                        set_cookie,
                        new_owner,
                    });
                }
            })
        })
        .collect();

    std::thread::sleep(Duration::from_millis(1000));
    let killed_at = Instant::now();
    pods[victim_index].kill();
    let mut marked_down_after = None;
    // The shipped repinAfter is 10 s (counted in whole seconds): the load goes on 12 s.
    while killed_at.elapsed() < Duration::from_secs(12) {
        if marked_down_after.is_none() && !envoy.is_healthy(victim_addr) {
            marked_down_after = Some(killed_at.elapsed());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }

    let outcomes = outcomes.lock().unwrap();
    let after: Vec<&Outcome> = outcomes.iter().filter(|o| o.started >= killed_at).collect();
    let before_failed = outcomes.iter().filter(|o| o.started < killed_at && o.status != 200).count();
    let after_failed: Vec<(u16, &str)> =
        after.iter().filter(|o| o.status != 200).map(|o| (o.status, o.pod.as_str())).collect();
    let victim_after = after.iter().filter(|o| victim_sessions.contains(&o.session)).count();
    // The first miss of each session sends a token that keeps the owner; the re-pin names
    // a live pod.
    let repins =
        |o: &&&Outcome| victim_sessions.contains(&o.session) && o.new_owner.is_some_and(|a| a != victim_addr);
    let first_repin = after.iter().filter(repins).map(|o| o.started.duration_since(killed_at)).min();
    let last_repin = after.iter().filter(repins).map(|o| o.started.duration_since(killed_at)).max();
    let retries = envoy.stat("cluster.pods.upstream_rq_retry");
    println!(
        "failover: {} requests, {} started after SIGKILL of {victim_name} ({victim_after} of them for its {} sessions); \
         failed after kill: {}; failed in flight at kill: {before_failed}; Envoy retries: {retries}; \
         Envoy marked it down (ejection or health check) after {marked_down_after:?}; re-pins from {first_repin:?} to \
         {last_repin:?} after the kill (repinAfter 10 s)",
        outcomes.len(),
        after.len(),
        victim_sessions.len(),
        after_failed.len(),
    );
    assert!(after.len() >= 200, "too little load after the kill: {}", after.len());
    assert!(victim_after >= 50, "too few requests of the dead pod's sessions: {victim_after}");
    assert!(after_failed.is_empty(), "requests failed after the kill: {after_failed:?}");
    assert!(after.iter().all(|o| o.pod != victim_name), "a dead pod answered");
    assert!(
        first_repin.is_some_and(|t| t >= Duration::from_secs(9)),
        "re-pinned before repinAfter: {first_repin:?}"
    );

    // Sessions of live pods never moved and were never re-pinned.
    for o in outcomes.iter().filter(|o| !victim_sessions.contains(&o.session)) {
        assert_eq!(o.pod, sessions[o.session].1, "a live pod's session moved");
        assert!(!o.set_cookie, "a live pod's session was re-pinned");
    }
    // Every dead pod's session is re-pinned to a live pod and sticks there.
    let live: HashSet<SocketAddr> = pods.iter().filter(|p| p.name != victim_name).map(|p| p.addr).collect();
    for &i in &victim_sessions {
        let cookie = cookies[i].lock().unwrap().clone();
        let owner = open_demo(&cookie).owner.addr;
        assert!(live.contains(&owner), "session {i} still pinned to {owner}");
        for _ in 0..3 {
            let r = envoy.get_with_cookie(Some(&cookie));
            assert_eq!(r.status, 200);
            assert_eq!(pod_by_name(&pods, r.pod()).addr, owner, "re-pinned session {i} left its new owner");
            assert_eq!(r.set_cookie(), None);
        }
    }
}

/// Sends one request for each of `cookies` (sessions of the dead pod `pod`: each fails
/// on it, then succeeds on a retry) and waits until outlier detection has ejected `pod`.
fn eject(envoy: &Envoy, pod: SocketAddr, cookies: &[String]) {
    for cookie in cookies {
        assert_eq!(envoy.get_with_cookie(Some(cookie)).status, 200);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while !envoy.health_flags(pod).unwrap_or_default().contains("/failed_outlier_check") {
        assert!(Instant::now() < deadline, "{pod} not ejected: {:?}", envoy.health_flags(pod));
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Once Envoy has ejected a dead owner, the fallback that places its sessions (MAGLEV on
/// the session id) no longer picks it: not one request of its sessions goes to it first.
/// Envoy's default `update_merge_window` (1 s) held an ejection back from the workers'
/// load balancers when another health change had reached them in the previous second;
/// meanwhile every orphaned session was hashed to the dead pod once more, and a session
/// whose retry re-hashes also all landed on it failed with 503 after four attempts (the
/// failover test's rare failure). Here a first ejection opens such a window on purpose.
#[test]
fn an_ejected_owner_is_never_tried_again_even_right_after_another_health_change() {
    let mut pods = Pod::start_many(4);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    envoy.settle();
    let sessions = mint(&envoy, 80);
    let of = |name: &str| -> Vec<String> {
        sessions.iter().filter(|(_, p)| p == name).map(|(c, _)| c.clone()).collect()
    };
    let (first, victim) = (of(&pods[3].name), of(&pods[0].name));
    assert!(first.len() >= 2 && victim.len() >= 8, "sessions per pod: {} and {}", first.len(), victim.len());

    // A first health change: pod-d dies; two requests of its sessions fail on it (and are
    // retried elsewhere), and outlier detection ejects it.
    let first_addr = pods[3].addr;
    pods[3].kill();
    eject(&envoy, first_addr, &first[..2]);

    // Right after it, the owner of `victim` dies and is ejected the same way.
    let victim_addr = pods[0].addr;
    pods[0].kill();
    eject(&envoy, victim_addr, &victim[..2]);

    // Every other orphaned session now goes straight to a live pod, without a retry.
    let retries_before = envoy.stat("cluster.pods.upstream_rq_retry");
    let mut answers = Vec::new();
    for cookie in &victim[2..] {
        let r = envoy.get_with_cookie(Some(cookie));
        answers.push((r.status, r.pod().to_string()));
    }
    let retried = envoy.stat("cluster.pods.upstream_rq_retry") - retries_before;
    println!(
        "{} orphaned sessions of pod-a after its ejection (pod-d ejected just before): {retried} retried",
        answers.len()
    );
    assert!(answers.iter().all(|(s, p)| *s == 200 && p != "pod-a" && p != "pod-d"), "{answers:?}");
    assert_eq!(retried, 0, "requests of an ejected owner's sessions were still sent to it first");
}

/// The shipped configuration with nothing that marks a dead pod down: no health check, no
/// outlier detection. Envoy then keeps a dead pod in its Maglev table and keeps honouring it
/// as an owner, as it does at any time before an ejection reaches the workers, in panic mode
/// (more than half the pods unhealthy: at start-up before the first health checks pass, or
/// two of three pods down), or when `max_ejection_percent` forbids another ejection.
fn nothing_marks_a_dead_pod_down(pods: &[Pod]) -> EnvoyConfig {
    let mut config = EnvoyConfig::shipped().endpoints(&addrs(pods));
    let start = config.yaml.find("    health_checks:\n").expect("health_checks block");
    let end = config.yaml.find("    circuit_breakers:\n").expect("circuit_breakers block");
    let cut = &config.yaml[start..end];
    assert!(cut.contains("    outlier_detection:\n"), "health_checks and outlier_detection must be adjacent");
    config.yaml.replace_range(start..end, "");
    config
}

/// One request for each cookie, on `threads` keep-alive connections: (status, pod) each.
fn ask_each(envoy: &Envoy, cookies: &[&str], threads: usize) -> Vec<(u16, String)> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mut conn = envoy.keep_alive();
                s.spawn(move || {
                    (t..cookies.len())
                        .step_by(threads)
                        .map(|i| {
                            let header = format!("{COOKIE}={}", cookies[i]);
                            let answer = match conn.request("GET", "/", &[("cookie", &header)]) {
                                Ok(r) => (r.status, r.header("x-pod").unwrap_or("(none)").to_string()),
                                Err(e) => (0, e.to_string()),
                            };
                            (i, answer)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<(usize, (u16, String))> =
            handles.into_iter().flat_map(|h| h.join().unwrap()).collect();
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, a)| a).collect()
    })
}

/// A retry never goes back to a pod that already failed the request, even while Envoy still
/// routes to that pod. A retry asks Maglev again for the same session id, varying the pick by
/// attempt number, until `previous_hosts` accepts a host; those picks fall close together in
/// the table. With `host_selection_retry_max_attempts: 5` every pick was the dead pod for
/// 2-3 % of its sessions: all four attempts failed there and Envoy answered 503 (the demo's
/// rare 503 after SIGTERM: its first health checks had failed, so Envoy was in panic mode
/// and the ejection left the dead pod in the table). Here nothing marks the dead pods down:
/// one pod of three dies, and every request of its sessions must be served by a live pod;
/// then a second dies, and the test prints how many requests of both pods' sessions failed.
#[test]
fn every_retry_of_a_dead_owners_session_finds_a_live_pod_while_envoy_still_routes_to_it() {
    let mut pods = Pod::start_many(3);
    let envoy = Envoy::start(nothing_marks_a_dead_pod_down(&pods), &pods.iter().collect::<Vec<_>>());
    let sessions = mint_sessions(&envoy, 600);
    let (first, second) = (pods[0].name.clone(), pods[1].name.clone());
    let of = |names: &[&str]| -> Vec<&str> {
        sessions.iter().filter(|(_, p)| names.contains(&p.as_str())).map(|(c, _)| c.as_str()).collect()
    };

    let mut figures = Vec::new();
    for dead in [vec![first.as_str()], vec![first.as_str(), second.as_str()]] {
        pods.iter_mut().filter(|p| dead.contains(&p.name.as_str())).for_each(Pod::kill);
        let orphans = of(&dead);
        let retries_before = envoy.stat("cluster.pods.upstream_rq_retry");
        let answers = ask_each(&envoy, &orphans, 8);
        let retries = envoy.stat("cluster.pods.upstream_rq_retry") - retries_before;
        let failed: Vec<&(u16, String)> =
            answers.iter().filter(|(status, pod)| *status != 200 || dead.contains(&pod.as_str())).collect();
        figures.push(format!(
            "{} dead: {} of {} requests of their sessions failed, {retries} retries",
            dead.join(" and "),
            failed.len(),
            orphans.len()
        ));
        assert!(orphans.len() >= 120 * dead.len(), "too few sessions on {dead:?}: {}", orphans.len());
        // Every first attempt went to the dead owner: the retries are what is tested.
        assert!(retries >= orphans.len() as u64, "{retries} retries for {} requests", orphans.len());
        // With two of three pods dead and nothing marking them down, a retry needs a pick
        // outside both: one run in ten still saw 6 of 423 requests fail (printed, not asserted).
        if dead.len() == 1 {
            assert!(failed.is_empty(), "{}: {failed:?}", figures.last().unwrap());
        }
    }
    println!("retries while Envoy still routes to the dead pods: {}", figures.join("; "));
}

#[test]
fn two_envoys_sharing_a_key_agree_on_every_session() {
    let mut pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let all: Vec<&Pod> = pods.iter().collect();
    let one = Envoy::start(config.clone(), &all);
    let two = Envoy::start(config, &all);

    // Sessions minted by either Envoy are honoured by the other, with no new cookie.
    let mut sessions = mint(&one, 30);
    sessions.extend(mint(&two, 30));
    for (cookie, pod) in &sessions {
        for envoy in [&one, &two] {
            let r = envoy.get_with_cookie(Some(cookie));
            assert_eq!((r.pod(), r.set_cookie()), (pod.as_str(), None));
        }
    }

    // Kill the pod that owns most sessions; wait until both Envoys' health checks see it.
    let victim = {
        let mut count: HashMap<&str, usize> = HashMap::new();
        for (_, p) in &sessions {
            *count.entry(p).or_default() += 1;
        }
        count.into_iter().max_by_key(|(_, n)| *n).map(|(p, _)| p.to_string()).unwrap()
    };
    let index = pods.iter().position(|p| p.name == victim).unwrap();
    let victim_addr = pods[index].addr;
    pods[index].kill();
    one.wait_health(victim_addr, false);
    two.wait_health(victim_addr, false);

    let orphans: Vec<&(String, String)> = sessions.iter().filter(|(_, p)| *p == victim).collect();
    assert!(orphans.len() >= 10, "{} orphaned sessions", orphans.len());
    let mut new_owners: HashMap<String, usize> = HashMap::new();
    for (cookie, _) in &orphans {
        let session = open_demo(cookie).session;
        let a = one.get_with_cookie(Some(cookie));
        let b = two.get_with_cookie(Some(cookie));
        assert_eq!((a.status, b.status), (200, 200));
        assert_eq!(a.pod(), b.pod(), "the two Envoys disagree on the new owner of a session");
        assert_ne!(a.pod(), victim);
        assert!(a.header("x-tether-host").is_none() && b.header("x-tether-host").is_none());
        for r in [&a, &b] {
            // The first miss keeps the owner for `repinAfter`, recorded in the token.
            let kept = open_demo(&r.cookie_value().expect("the first miss sends a token"));
            assert_eq!(kept.session, session, "the token keeps the session id");
            assert_eq!((kept.owner.addr, kept.owner_away_since.is_some()), (victim_addr, true));
        }
        // The hash owner is stable: asking again gives the same pod.
        assert_eq!(one.get_with_cookie(Some(cookie)).pod(), a.pod());
        *new_owners.entry(a.pod().to_string()).or_default() += 1;
    }
    println!(
        "{} sessions of {victim} moved; new owners (same on both Envoys): {new_owners:?}",
        orphans.len()
    );
    // Sessions of the surviving pods stayed put on both Envoys.
    for (cookie, pod) in sessions.iter().filter(|(_, p)| *p != victim) {
        assert_eq!(one.get_with_cookie(Some(cookie)).pod(), pod);
        assert_eq!(two.get_with_cookie(Some(cookie)).pod(), pod);
    }
}

#[test]
fn local_replies_never_set_a_cookie() {
    let mut pods = Pod::start_many(3);
    let config = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let pinned = envoy.get_with_cookie(None).cookie_value().unwrap();
    for pod in &mut pods {
        pod.kill();
    }
    // Before and after the health checks notice, every reply is Envoy's own 503.
    for round in 0..2 {
        for cookie in [None, Some(pinned.as_str())] {
            let r = envoy.get_with_cookie(cookie);
            assert_eq!(r.status, 503, "round {round}");
            assert_eq!(r.set_cookie(), None, "round {round}: a local reply set a cookie: {:?}", r.headers);
            assert!(r.header("x-tether-host").is_none());
        }
        for pod in &pods {
            envoy.wait_health(pod.addr, false);
        }
    }
}
