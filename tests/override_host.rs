//! envoy/override-host.yaml, the documented alternative: tether with Envoy's override_host
//! load-balancing policy. It mints and sticks like envoy.yaml, and its caveat is measured
//! here against envoy.yaml: once the owner is dead and marked unhealthy, override_host still
//! sends every request of its sessions to it first (each one needs a retry), while
//! stateful_session sends none there.

mod common;

use common::*;

fn config(file: &str, pods: &[Pod]) -> EnvoyConfig {
    let yaml = std::fs::read_to_string(repo().join("envoy").join(file)).unwrap();
    EnvoyConfig::from_yaml(yaml).endpoints(&addrs(pods))
}

/// Mints a session, checks it sticks, kills its owner, waits until Envoy's health check
/// marks it down, then sends `n` requests with the old cookie. Returns the retries they took.
fn retries_after_owner_death(file: &str, n: u64) -> u64 {
    let mut pods = Pod::start_many(3);
    let envoy = Envoy::start(config(file, &pods), &pods.iter().collect::<Vec<_>>());
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200, "{file}");
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    let owner = open_demo(&cookie).owner.addr;
    assert_eq!(owner, pod_by_name(&pods, first.pod()).addr, "{file}");
    for i in 0..10 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None), "{file}: request {i}");
    }

    let owner_name = first.pod().to_string();
    pods.iter_mut().find(|p| p.name == owner_name).unwrap().kill();
    envoy.wait_health(owner, false);
    let before = envoy.stat("cluster.pods.upstream_rq_retry");
    for i in 0..n {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!(r.status, 200, "{file}: request {i} after the owner died");
        assert_ne!(r.pod(), owner_name);
        // The old cookie's first miss: the owner is kept for `repinAfter`, the miss recorded.
        let kept = open_demo(&r.cookie_value().expect("the first miss sends a token"));
        assert_eq!((kept.owner.addr, kept.owner_away_since.is_some()), (owner, true));
    }
    envoy.stat("cluster.pods.upstream_rq_retry") - before
}

#[test]
fn override_host_alternative_works_but_retries_every_request_of_a_dead_owner() {
    let n = 20;
    let stateful = retries_after_owner_death("envoy.yaml", n);
    let override_host = retries_after_owner_death("override-host.yaml", n);
    println!(
        "{n} requests with a dead owner's cookie, owner marked unhealthy: retries with \
         stateful_session {stateful}, with override_host {override_host}"
    );
    assert_eq!(stateful, 0, "stateful_session never picks an unhealthy owner");
    assert!(override_host >= n, "override_host picks the unhealthy owner first: {override_host} retries");
}
