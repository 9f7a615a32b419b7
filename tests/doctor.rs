//! `tether doctor` against the shipped configurations and a table of broken variants of
//! envoy/envoy.yaml. Every variant is first loaded into the real Envoy (`--mode validate`),
//! so each is a configuration Envoy accepts, then the doctor must report exactly the
//! shipped file's findings plus the one expected (severity, code, place). A few are also
//! read from a running Envoy's admin `/config_dump` (with EDS and ECDS).

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use tether_cli::doctor::{self, Input, Severity, Severity::*};

const L: &str = "listener ingress http_filters[0] tether";
const R: &str = "route local/app/routes[0]";
const C: &str = "cluster pods";

type Found = Vec<(Severity, &'static str, String)>;

fn found(list: &[(Severity, &'static str, &str)]) -> Found {
    let mut v: Found = list.iter().map(|(s, c, p)| (*s, *c, p.to_string())).collect();
    v.sort();
    v
}

/// What the doctor says about the shipped envoy/envoy.yaml: only that the demo key sits in
/// `key_values` (README says so too: replace it, use host_env_keys in production).
fn shipped_findings() -> Found {
    found(&[(Warning, "keys-in-config", L)])
}

fn file(path: &Path) -> doctor::Report {
    doctor::diagnose(Input::File(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(report: &doctor::Report) -> String {
    let mut out = Vec::new();
    report.render(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

/// `envoy --mode validate` from the repository root (the config names the .wasm relatively).
fn envoy_validates(path: &Path) -> (bool, String) {
    let out = Command::new(envoy_binary())
        .current_dir(repo())
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(path)
        .env("TETHER_KEYS", DEMO_KEYS)
        .output()
        .expect("envoy --mode validate");
    (
        out.status.success(),
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
    )
}

fn write(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Moves the block of lines starting at `block` (up to the next `          - name:`) to just
/// before the line `before`.
fn move_filter(yaml: &str, block: &str, before: &str) -> String {
    let start = yaml.find(block).expect("block");
    let end = yaml[start + block.len()..]
        .find("          - name: ")
        .map_or(yaml.len(), |e| start + block.len() + e);
    let piece = yaml[start..end].to_string();
    let rest = format!("{}{}", &yaml[..start], &yaml[end..]);
    let at = rest.find(before).expect("anchor");
    format!("{}{}{}", &rest[..at], piece, &rest[at..])
}

fn cut(yaml: &str, from: &str, to: &str) -> String {
    let start = yaml.find(from).unwrap_or_else(|| panic!("no `{from}`"));
    let end = yaml[start..].find(to).unwrap_or_else(|| panic!("no `{to}` after `{from}`")) + start;
    format!("{}{}", &yaml[..start], &yaml[end..])
}

const RETRY_PREDICATE: &str = "                    retry_host_predicate:\n";
const MAGLEV_POLICY: &str = "load_balancing_policy:
      policies:
      - typed_extension_config:
          name: envoy.load_balancing_policies.maglev
          typed_config:
            \"@type\": type.googleapis.com/envoy.extensions.load_balancing_policies.maglev.v3.Maglev";

struct Variant {
    name: &'static str,
    yaml: String,
    /// Findings besides the shipped file's (None: the shipped file's are replaced).
    expect: Found,
}

fn variants() -> Vec<Variant> {
    let shipped = || EnvoyConfig::shipped();
    let y = |c: EnvoyConfig| c.yaml;
    let base = shipped().yaml;
    let plus = |extra: &[(Severity, &'static str, &str)]| {
        let mut v = shipped_findings();
        v.extend(found(extra));
        v.sort();
        v
    };
    vec![
        Variant {
            name: "session-filter-first",
            yaml: move_filter(&base, "          - name: envoy.filters.http.stateful_session\n", "          - name: tether\n"),
            // tether is now http_filters[1].
            expect: found(&[
                (Error, "filter-order", "listener ingress http_filters[1] tether"),
                (Warning, "keys-in-config", "listener ingress http_filters[1] tether"),
            ]),
        },
        Variant {
            name: "no-session-filter",
            yaml: cut(&base, "          - name: envoy.filters.http.stateful_session\n", "          - name: envoy.filters.http.router\n"),
            expect: plus(&[(Error, "no-session-filter", L)]),
        },
        Variant {
            name: "session-header-differs",
            yaml: y(shipped().edit("name: x-tether-host", "name: x-owner")),
            expect: plus(&[(Error, "session-mismatch", R)]),
        },
        Variant {
            name: "host-cookie-with-header-state",
            yaml: y(shipped().plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "hostCookie": "tether-owner" }"#)),
            expect: plus(&[(Error, "session-mismatch", R)]),
        },
        Variant {
            name: "strict",
            yaml: y(shipped().edit("              strict: false\n", "              strict: true\n")),
            expect: plus(&[(Error, "strict", R)]),
        },
        Variant {
            name: "round-robin",
            yaml: y(shipped().edit("lb_policy: MAGLEV", "lb_policy: ROUND_ROBIN")),
            expect: plus(&[(Error, "lb-policy", C)]),
        },
        Variant {
            name: "maglev-extension",
            yaml: y(shipped().edit("lb_policy: MAGLEV", MAGLEV_POLICY)),
            expect: shipped_findings(),
        },
        Variant {
            name: "ring-hash-extension",
            yaml: y(shipped().edit("lb_policy: MAGLEV", &MAGLEV_POLICY.replace("maglev.v3.Maglev", "ring_hash.v3.RingHash").replace("policies.maglev", "policies.ring_hash"))),
            expect: shipped_findings(),
        },
        Variant {
            name: "no-draining",
            yaml: y(shipped().edit("[UNKNOWN, HEALTHY, DEGRADED, DRAINING]", "[UNKNOWN, HEALTHY, DEGRADED]")),
            expect: plus(&[(Warning, "draining", C)]),
        },
        Variant {
            name: "default-override-host-status",
            yaml: cut(&base, "    common_lb_config:\n", "    health_checks:\n"),
            expect: plus(&[(Warning, "draining", C)]),
        },
        Variant {
            name: "owner-only-when-healthy",
            yaml: y(shipped().edit("[UNKNOWN, HEALTHY, DEGRADED, DRAINING]", "[HEALTHY, DRAINING]")),
            expect: plus(&[(Error, "override-host-status", C)]),
        },
        Variant {
            name: "no-outlier-detection",
            yaml: cut(&base, "    outlier_detection:\n", "    circuit_breakers:\n"),
            expect: plus(&[(Warning, "outlier-detection", C)]),
        },
        Variant {
            name: "no-dead-pod-detection",
            yaml: cut(&base, "    health_checks:\n", "    circuit_breakers:\n"),
            expect: plus(&[(Error, "dead-pod", C)]),
        },
        Variant {
            name: "no-previous-hosts",
            yaml: cut(&base, RETRY_PREDICATE, "                    host_selection_retry_max_attempts"),
            expect: plus(&[(Error, "previous-hosts", R)]),
        },
        Variant {
            name: "retries-without-reset",
            yaml: y(shipped().edit("retry_on: connect-failure,reset,gateway-error", "retry_on: connect-failure,gateway-error")),
            expect: plus(&[(Error, "retry-on", R)]),
        },
        Variant {
            name: "no-retries",
            yaml: cut(&base, "                  retry_policy:\n", "          http_filters:\n"),
            expect: plus(&[(Error, "no-retries", R)]),
        },
        Variant {
            name: "default-retry-breaker",
            yaml: cut(&base, "    circuit_breakers:\n", "    load_assignment:\n"),
            expect: plus(&[(Warning, "retry-breaker", C)]),
        },
        Variant {
            name: "fail-open",
            yaml: y(shipped().edit("failure_policy: FAIL_RELOAD", "failure_policy: FAIL_OPEN")),
            expect: plus(&[(Error, "failure-policy", L)]),
        },
        Variant {
            name: "fail-closed-default",
            yaml: y(shipped().edit("                failure_policy: FAIL_RELOAD\n", "")),
            expect: plus(&[(Warning, "failure-policy", L)]),
        },
        Variant {
            name: "hash-other-header",
            yaml: y(shipped().edit("header: { header_name: x-tether-key }", "header: { header_name: x-user }")),
            expect: plus(&[(Error, "hash-policy", R)]),
        },
        Variant {
            name: "key-header-removed",
            yaml: y(shipped().edit(
                "              - match: { prefix: \"/\" }\n",
                "              - match: { prefix: \"/\" }\n                request_headers_to_remove: [x-tether-key]\n",
            )),
            expect: plus(&[(Error, "key-header-removed", R)]),
        },
        Variant {
            name: "inline-keys",
            yaml: y(shipped().plugin_config(&format!(r#"{{ "keys": "{DEMO_KEYS}" }}"#))),
            expect: found(&[(Warning, "keys-inline", L)]),
        },
        Variant {
            name: "keys-from-host-env",
            yaml: cut(&base, "                    key_values:\n", "                configuration:\n").replace(
                "                  environment_variables:\n",
                "                  environment_variables:\n                    host_env_keys: [TETHER_KEYS]\n",
            ),
            expect: found(&[]),
        },
    ]
}

#[test]
fn shipped_and_rendered_configurations_are_clean() {
    for (name, expect) in [
        ("envoy/envoy.yaml", shipped_findings()),
        ("envoy/canary.yaml", shipped_findings()),
        // The native build: no session filter needed; its demo key is inline.
        ("envoy/native.yaml", found(&[(Warning, "keys-inline", L)])),
        // The documented alternative: it works, with its measured caveat, and it does not
        // set a failure policy.
        (
            "envoy/override-host.yaml",
            found(&[
                (Warning, "keys-in-config", L),
                (Warning, "failure-policy", L),
                (Warning, "override-host", C),
            ]),
        ),
    ] {
        let report = file(&repo().join(name));
        println!("{}", text(&report));
        assert_eq!(report.summary(), expect, "{name}:\n{}", text(&report));
        assert_eq!(report.exit_code(), 0);
        assert_eq!(report.tether_filters, 1, "{name}");
    }
    let dir = scratch_dir("doctor-istio");
    for plugin in ["gateway", "sidecar"] {
        let out = dir.join(plugin);
        let status = Command::new("python3")
            .current_dir(repo())
            .args([
                "scripts/istio-render.py",
                "--plugin",
                &format!("istio/wasmplugin-{plugin}.yaml"),
                "--out",
            ])
            .arg(&out)
            .status()
            .unwrap();
        assert!(status.success());
        let report = file(&out.join("envoy.yaml"));
        println!("{}", text(&report));
        assert_eq!(report.summary(), found(&[]), "istio {plugin}:\n{}", text(&report));
        assert_eq!(report.tether_filters, 1);
        assert!(text(&report).contains("tether (ECDS), hostCookie tether-owner"), "{}", text(&report));
    }
}

#[test]
fn each_broken_variant_yields_exactly_its_finding() {
    let dir = scratch_dir("doctor-variants");
    let mut failures = Vec::new();
    for v in variants() {
        let path = write(&dir, v.name, &v.yaml);
        let (valid, log) = envoy_validates(&path);
        assert!(valid, "{}: Envoy refuses the variant itself:\n{log}", v.name);
        let report = file(&path);
        let code = report.exit_code();
        let want_code = i32::from(v.expect.iter().any(|(s, _, _)| *s == Error));
        if report.summary() != v.expect || code != want_code {
            failures.push(format!(
                "{}: expected {:?} (exit {want_code}), got\n{}",
                v.name,
                v.expect,
                text(&report)
            ));
        } else {
            println!("{:<30} exit {code}: {:?}", v.name, report.summary());
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn invalid_plugin_configuration_is_found_and_envoy_refuses_it_too() {
    let dir = scratch_dir("doctor-invalid");
    let yaml = EnvoyConfig::shipped()
        .plugin_config(r#"{ "keysFromEnv": "TETHER_KEYS", "cookie": { "sameSite": "Sometimes" } }"#)
        .yaml;
    let path = write(&dir, "invalid", &yaml);
    let report = file(&path);
    assert_eq!(report.summary(), found(&[(Error, "config-invalid", L)]), "{}", text(&report));
    assert!(text(&report).contains("`cookie.sameSite`: `Sometimes` is not one of"), "{}", text(&report));
    // The same configuration in a running Envoy: tether refuses it, with the same words.
    let mut envoy = Envoy::spawn(EnvoyConfig::from_yaml(yaml));
    let exit = envoy.wait_exit(std::time::Duration::from_secs(20));
    assert!(exit.is_some_and(|c| c != 0), "Envoy accepted an invalid plugin configuration");
    assert!(envoy.log().contains("`cookie.sameSite`: `Sometimes` is not one of"), "{}", envoy.log());
}

fn admin(envoy: &Envoy) -> doctor::Report {
    let url = format!("http://{}", envoy.admin_addr());
    doctor::diagnose(Input::Admin(&url)).unwrap_or_else(|e| panic!("{url}: {e}"))
}

#[test]
fn doctor_reads_a_running_envoy_through_its_admin() {
    // The shipped configuration: what the file gives, the admin gives.
    let pods = Pod::start_many(2);
    let shipped = EnvoyConfig::shipped().endpoints(&addrs(&pods));
    let envoy = Envoy::start(shipped.clone(), &pods.iter().collect::<Vec<_>>());
    let report = admin(&envoy);
    println!("{}", text(&report));
    assert_eq!(report.summary(), shipped_findings(), "{}", text(&report));
    drop(envoy);

    // Two broken ones.
    for (edit, expect) in [
        (("              strict: false\n", "              strict: true\n"), (Error, "strict", R)),
        (("lb_policy: MAGLEV", "lb_policy: LEAST_REQUEST"), (Error, "lb-policy", C)),
    ] {
        let envoy = Envoy::start(shipped.clone().edit(edit.0, edit.1), &[]);
        let report = admin(&envoy);
        println!("{}", text(&report));
        let mut want = shipped_findings();
        want.extend(found(&[expect]));
        want.sort();
        assert_eq!(report.summary(), want, "{}", text(&report));
        assert_eq!(report.exit_code(), 1);
    }

    // The Istio gateway rendering: tether by ECDS, EDS endpoints, per-route cookie state.
    let out = scratch_dir("doctor-admin-istio");
    let status = Command::new("python3")
        .current_dir(repo())
        .args(["scripts/istio-render.py", "--plugin", "istio/wasmplugin-gateway.yaml", "--out"])
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let yaml = std::fs::read_to_string(out.join("envoy.yaml")).unwrap();
    let envoy = Envoy::start(EnvoyConfig::from_yaml(yaml).process_env("TETHER_KEYS", DEMO_KEYS), &[]);
    let mut report = admin(&envoy);
    for _ in 0..40 {
        if report.tether_filters > 0 && report.summary().is_empty() {
            break;
        }
        // ECDS arrives just after the listener: read again.
        std::thread::sleep(std::time::Duration::from_millis(250));
        report = admin(&envoy);
    }
    println!("{}", text(&report));
    assert_eq!(report.summary(), found(&[]), "{}", text(&report));
    assert!(text(&report).contains("tether (ECDS), hostCookie tether-owner"), "{}", text(&report));
}

/// The native module validates as the module does: `hostCookie` is refused (it has no
/// `stateful_session` to read it), and no session filter is asked for.
#[test]
fn native_configuration_is_checked_as_the_module_checks_it() {
    let native = std::fs::read_to_string(repo().join("envoy/native.yaml")).unwrap();
    let dir = scratch_dir("doctor-native");
    let cookie = native
        .replace("\"absoluteTimeout\": \"24h\",", "\"absoluteTimeout\": \"24h\", \"hostCookie\": \"owner\",");
    assert_ne!(cookie, native);
    let report = file(&write(&dir, "host-cookie", &cookie));
    assert_eq!(report.summary(), found(&[(Error, "config-invalid", L)]), "{}", text(&report));
    assert!(text(&report).contains("`hostCookie`"), "{}", text(&report));
    assert_ne!(report.exit_code(), 0);
}
