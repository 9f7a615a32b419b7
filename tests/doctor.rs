//! `tether doctor` against the shipped configurations, the renderings of istio/ and
//! envoy-gateway/, and tables of broken variants of envoy/envoy.yaml and envoy/native.yaml.
//! Every variant is first loaded into the real Envoy (`--mode validate`), so each is a
//! configuration Envoy accepts, then the doctor must report exactly the shipped file's
//! findings plus the one expected (severity, code, place). A few are also read from a
//! running Envoy's admin `/config_dump` (with EDS and ECDS).

mod common;

use common::renderers::istio::{render_from, render_with};
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

/// The shipped file's findings and `extra`.
fn shipped_plus(extra: &[(Severity, &'static str, &str)]) -> Found {
    let mut v = shipped_findings();
    v.extend(found(extra));
    v.sort();
    v
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
    /// Every finding the doctor must report, the file's own included.
    expect: Found,
}

/// `base` with `from` (which must occur exactly once) replaced by `to`.
fn edit(base: &str, from: &str, to: &str) -> String {
    EnvoyConfig::from_yaml(base.to_string()).edit(from, to).yaml
}

/// The variants that break a route or a cluster. envoy/envoy.yaml and envoy/native.yaml lay
/// out their route and cluster alike, so each file gets all of them: `own` is what the doctor
/// says about the unbroken file, every variant adds its one finding to it (or none).
fn route_and_cluster_variants(base: &str, own: &Found) -> Vec<Variant> {
    let plus = |extra: &[(Severity, &'static str, &str)]| {
        let mut v = own.clone();
        v.extend(found(extra));
        v.sort();
        v
    };
    let ring_hash = MAGLEV_POLICY
        .replace("maglev.v3.Maglev", "ring_hash.v3.RingHash")
        .replace("policies.maglev", "policies.ring_hash");
    let v = |name, yaml, expect| Variant { name, yaml, expect };
    vec![
        v("round-robin", edit(base, "lb_policy: MAGLEV", "lb_policy: ROUND_ROBIN"), plus(&[(Error, "lb-policy", C)])),
        v("maglev-extension", edit(base, "lb_policy: MAGLEV", MAGLEV_POLICY), plus(&[])),
        v("ring-hash-extension", edit(base, "lb_policy: MAGLEV", &ring_hash), plus(&[])),
        v(
            "no-draining",
            edit(base, "[UNKNOWN, HEALTHY, DEGRADED, DRAINING]", "[UNKNOWN, HEALTHY, DEGRADED]"),
            plus(&[(Warning, "draining", C)]),
        ),
        v(
            "default-override-host-status",
            cut(base, "    common_lb_config:\n", "    health_checks:\n"),
            plus(&[(Warning, "draining", C)]),
        ),
        v(
            "owner-only-when-healthy",
            edit(base, "[UNKNOWN, HEALTHY, DEGRADED, DRAINING]", "[HEALTHY, DRAINING]"),
            plus(&[(Error, "override-host-status", C)]),
        ),
        v(
            "no-outlier-detection",
            cut(base, "    outlier_detection:\n", "    circuit_breakers:\n"),
            plus(&[(Warning, "outlier-detection", C)]),
        ),
        v(
            "no-dead-pod-detection",
            cut(base, "    health_checks:\n", "    circuit_breakers:\n"),
            plus(&[(Error, "dead-pod", C)]),
        ),
        v(
            "no-previous-hosts",
            cut(base, RETRY_PREDICATE, "                    host_selection_retry_max_attempts"),
            plus(&[(Error, "previous-hosts", R)]),
        ),
        v(
            "retries-without-reset",
            edit(base, "retry_on: connect-failure,reset,gateway-error", "retry_on: connect-failure,gateway-error"),
            plus(&[(Error, "retry-on", R)]),
        ),
        v(
            "no-retries",
            cut(base, "                  retry_policy:\n", "          http_filters:\n"),
            plus(&[(Error, "no-retries", R)]),
        ),
        v(
            "default-retry-breaker",
            cut(base, "    circuit_breakers:\n", "    load_assignment:\n"),
            plus(&[(Warning, "retry-breaker", C)]),
        ),
        v(
            "hash-other-header",
            edit(base, "header: { header_name: x-tether-key }", "header: { header_name: x-user }"),
            plus(&[(Error, "hash-policy", R)]),
        ),
        v(
            "key-header-removed",
            edit(
                base,
                "              - match: { prefix: \"/\" }\n",
                "              - match: { prefix: \"/\" }\n                request_headers_to_remove: [x-tether-key]\n",
            ),
            plus(&[(Error, "key-header-removed", R)]),
        ),
    ]
}

/// Broken variants of envoy/envoy.yaml: the route and cluster ones, then those of the wasm
/// filter, the session filter and the keys.
fn variants() -> Vec<Variant> {
    let shipped = || EnvoyConfig::shipped();
    let y = |c: EnvoyConfig| c.yaml;
    let base = shipped().yaml;
    let plus = shipped_plus;
    let mut all = route_and_cluster_variants(&base, &shipped_findings());
    all.extend([
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
    ]);
    all
}

/// What the doctor says about the shipped envoy/native.yaml: only that its demo key is
/// inline (the module logs a warning saying so too; docs/native.md).
fn native_findings() -> Found {
    found(&[(Warning, "keys-inline", L)])
}

/// Broken variants of envoy/native.yaml (tether as a dynamic module, no session filter):
/// the route and cluster ones, and the production form of its keys. The wasm-only ones do
/// not apply: it has no session filter, no `strict` and no `failure_policy`, and its
/// `hostCookie` is refused by the module itself
/// (`native_configuration_is_checked_as_the_module_checks_it`).
fn native_variants() -> Vec<Variant> {
    let base = std::fs::read_to_string(repo().join("envoy/native.yaml")).unwrap();
    let mut all = route_and_cluster_variants(&base, &native_findings());
    all.push(Variant {
        name: "keys-from-env",
        // What common's harness runs: the inline key moved to Envoy's environment.
        yaml: EnvoyConfig::shipped_native().yaml,
        expect: found(&[]),
    });
    all
}

#[test]
fn shipped_configurations_give_exactly_their_findings() {
    for (name, expect) in [
        ("envoy/envoy.yaml", shipped_findings()),
        ("envoy/canary.yaml", shipped_findings()),
        // Learn mode in front of MCP servers: retries only what no server saw, no route timeout.
        ("envoy/mcp.yaml", shipped_findings()),
        // The native build: no session filter needed; its demo key is inline.
        ("envoy/native.yaml", native_findings()),
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
}

/// The three renderings of istio/ by scripts/istio-render.py (the project's model of
/// istiod's translation, not istiod): the classic gateway and the sidecar give nothing;
/// the Gateway API one gives the two errors docs/istio.md explains, which an HTTPRoute
/// cannot avoid (its `retry` has no `reset` and never gets `previous_hosts`).
#[test]
fn istio_renderings_give_exactly_their_findings() {
    let api_route = "route http.80/media/demo.media.0";
    for (plugin, expect) in [
        ("gateway", found(&[])),
        ("sidecar", found(&[])),
        ("gateway-api", found(&[(Error, "retry-on", api_route), (Error, "previous-hosts", api_route)])),
    ] {
        let out = scratch_dir(&format!("doctor-istio-{plugin}"));
        render_from("istio", &format!("istio/wasmplugin-{plugin}.yaml"), &[], &out, false);
        let report = file(&out.join("envoy.yaml"));
        println!("{}", text(&report));
        assert_eq!(report.summary(), expect, "istio {plugin}:\n{}", text(&report));
        assert_eq!(report.exit_code(), i32::from(!expect.is_empty()), "istio {plugin}");
        assert_eq!(report.tether_filters, 1);
        assert!(text(&report).contains("tether (ECDS), hostCookie tether-owner"), "{}", text(&report));
    }
}

/// Istio ambient: a gateway whose cluster keys pods by internal address is clean; the same
/// with the Service's waypoint as endpoints (`istio.io/ingress-use-waypoint`), with an
/// endpoint id tether cannot read, without tether in the proxy, or with the native module
/// is each reported.
#[test]
fn internal_address_clusters_are_understood() {
    let cluster = "cluster outbound|80||media.demo.svc.cluster.local";
    let out = scratch_dir("doctor-ambient");
    render_with("istio", "istio/wasmplugin-gateway.yaml", &[], &out, false, true);
    let eds = std::fs::read_to_string(out.join("eds.yaml")).unwrap();
    let report = file(&out.join("envoy.yaml"));
    assert_eq!(report.summary(), found(&[]), "ambient gateway:\n{}", text(&report));
    let local = "            local: 127.0.0.1:8081\n";
    for (name, eds_text, expect) in [
        (
            "waypoint",
            eds.replacen(local, &format!("{local}            waypoint: 10.0.0.9:15008\n"), 1),
            found(&[(Error, "ingress-use-waypoint", cluster)]),
        ),
        (
            "endpoint id",
            eds.replacen("endpoint_id: 127.0.0.1:8082", "endpoint_id: media-pod-2", 1),
            found(&[(Error, "internal-endpoint", cluster)]),
        ),
    ] {
        assert_ne!(eds_text, eds, "{name}: the edit applied");
        std::fs::write(out.join("eds.yaml"), &eds_text).unwrap();
        let report = file(&out.join("envoy.yaml"));
        assert_eq!(report.summary(), expect, "{name}:\n{}", text(&report));
    }

    // A proxy that routes with the label's session state but runs no tether.
    let plain = scratch_dir("doctor-no-tether");
    let (envoy_yaml, _) = render_from("istio", "istio/wasmplugin-gateway.yaml", &[], &plain, false);
    let without = cut(
        &envoy_yaml,
        "- name: extensions.istio.io/trafficextension/",
        "- name: envoy.filters.http.grpc_stats",
    );
    let report = file(&write(&plain, "no-tether", &without));
    let session = "listener 0.0.0.0_80 http_filters[3] envoy.filters.http.stateful_session";
    assert_eq!(
        report.summary(),
        found(&[(Error, "no-tether", "(configuration)"), (Error, "session-state-without-tether", session)]),
        "{}",
        text(&report)
    );

    // The native module in front of internal addresses.
    let native = std::fs::read_to_string(repo().join("envoy/native.yaml")).unwrap();
    let mut internal = native.clone();
    for port in [8081, 8082, 8083] {
        internal = internal.replace(
            &format!("{{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}"),
            &format!("{{ envoy_internal_address: {{ server_listener_name: connect_originate, endpoint_id: \"127.0.0.1:{port}\" }} }}"),
        );
    }
    assert_ne!(internal, native);
    let dir = scratch_dir("doctor-native-internal");
    let report = file(&write(&dir, "native-internal", &internal));
    let mut expect = native_findings();
    expect.extend(found(&[(Error, "internal-address-native", C)]));
    expect.sort();
    assert_eq!(report.summary(), expect, "{}", text(&report));
}

/// The Envoy Gateway manifests, pinned as `make envoy-gateway` does and rendered by
/// scripts/envoy-gateway-render.py (the project's model of Envoy Gateway v1.9.0's
/// translation, not Envoy Gateway): as shipped only the failure policy Envoy Gateway
/// cannot set (docs/envoy-gateway.md "No FAIL_RELOAD"); without `filterOrder` the session
/// filter runs first; without the EnvoyPatchPolicy DRAINING is missing.
#[test]
fn envoy_gateway_renderings_give_exactly_their_findings() {
    use common::renderers::envoy_gateway::{copy_of, edited, pinned, render, FILTER_ORDER};
    let wasm = "envoy.filters.http.wasm/envoyextensionpolicy/demo/tether/wasm/0";
    let first = format!("listener demo/tether/http http_filters[0] {wasm}");
    let second = format!("listener demo/tether/http http_filters[1] {wasm}");
    let cluster = "cluster httproute/demo/media/rule/0";
    let shipped = pinned("doctor-eg");
    let default_order = edited(&shipped, "envoyproxy.yaml", FILTER_ORDER, "", "doctor-eg-order");
    let no_patch = copy_of(&shipped, "doctor-eg-nopatch");
    std::fs::remove_file(no_patch.join("envoypatchpolicy.yaml")).unwrap();
    for (name, manifests, expect) in [
        ("shipped", &shipped, found(&[(Warning, "failure-policy", &first)])),
        (
            "default order",
            &default_order,
            found(&[(Error, "filter-order", &second), (Warning, "failure-policy", &second)]),
        ),
        (
            "no patch",
            &no_patch,
            found(&[(Warning, "failure-policy", &first), (Warning, "draining", cluster)]),
        ),
    ] {
        let out = scratch_dir("doctor-eg-out");
        render(manifests, &["127.0.0.1:8081".to_string()], &out, false);
        let report = file(&out.join("envoy.yaml"));
        println!("{}", text(&report));
        assert_eq!(report.summary(), expect, "Envoy Gateway {name}:\n{}", text(&report));
        assert_eq!(report.tether_filters, 1, "{name}");
        assert!(text(&report).contains("tether (inline), hostHeader x-tether-host"), "{}", text(&report));
    }
}

/// Loads each variant into the real Envoy (`--mode validate`), then runs the doctor on it;
/// collects every variant whose findings or exit status differ from the expected ones.
fn check_variants(tag: &str, variants: Vec<Variant>, validate: bool) {
    let dir = scratch_dir(tag);
    let mut failures = Vec::new();
    for v in variants {
        let path = write(&dir, v.name, &v.yaml);
        if validate {
            let (valid, log) = envoy_validates(&path);
            assert!(valid, "{}: Envoy refuses the variant itself:\n{log}", v.name);
        }
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
fn each_broken_variant_yields_exactly_its_finding() {
    check_variants("doctor-variants", variants(), true);
}

/// The same for envoy/native.yaml. Envoy validates the variants only where it runs the
/// native module (1.39 and 1.40; docs/native.md): `make test-matrix` runs this file on older
/// releases too, where the doctor's part still runs.
#[test]
fn each_broken_native_variant_yields_exactly_its_finding() {
    let validate = envoy_loads_native();
    if !validate {
        println!("Envoy {} does not load the native module: variants not validated", envoy_release());
    }
    check_variants("doctor-native-variants", native_variants(), validate);
}

/// Learn mode (envoy/mcp.yaml): a route timeout that ends MCP's event streams, and retries
/// of requests a server may have received, which no other server can answer.
#[test]
fn each_broken_learn_mode_variant_yields_exactly_its_finding() {
    let base = std::fs::read_to_string(repo().join("envoy/mcp.yaml")).unwrap();
    let plus = shipped_plus;
    let retry_on = "retry_on: connect-failure,refused-stream,reset-before-request";
    let variants = vec![
        Variant {
            name: "learn-default-timeout",
            yaml: edit(&base, "                  timeout: 0s\n", ""),
            expect: plus(&[(Warning, "learn-stream-timeout", R)]),
        },
        Variant {
            name: "learn-timeout-15s",
            yaml: edit(&base, "timeout: 0s", "timeout: 15s"),
            expect: plus(&[(Warning, "learn-stream-timeout", R)]),
        },
        Variant {
            name: "learn-retry-reset",
            yaml: edit(&base, retry_on, "retry_on: connect-failure,reset,gateway-error"),
            expect: plus(&[(Warning, "learn-retry-reset", R)]),
        },
        Variant {
            name: "learn-no-connect-retry",
            yaml: edit(&base, retry_on, "retry_on: refused-stream"),
            expect: plus(&[(Error, "retry-on", R)]),
        },
    ];
    check_variants("doctor-learn-variants", variants, true);
}

/// The pages that count the variants give the numbers of the tables above.
#[test]
fn the_docs_count_the_variants_this_file_checks() {
    let mut counted = 0;
    for page in ["docs/testing.md", "docs/operations.md"] {
        let text = std::fs::read_to_string(repo().join(page)).unwrap().replace('\n', " ");
        for (config, want) in
            [("envoy/envoy.yaml", variants().len()), ("envoy/native.yaml", native_variants().len())]
        {
            let phrase = format!("variants of `{config}`");
            for (at, _) in text.match_indices(&phrase) {
                // "23 variants of" or "23 broken variants of".
                let mut words: Vec<&str> = text[..at].split_whitespace().rev().take(2).collect();
                let number = words.iter().find_map(|w| w.parse::<usize>().ok());
                words.reverse();
                assert_eq!(number, Some(want), "{page}: \"{} {phrase}\"", words.join(" "));
                counted += 1;
            }
        }
    }
    assert!(counted >= 4, "the pages name the variant counts {counted} times, expected at least 4");
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
    let (yaml, _) = render_from("istio", "istio/wasmplugin-gateway.yaml", &[], &out, false);
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
/// `stateful_session` to read it), and no session filter is asked for. Where the two builds
/// differ in what a missing setting causes, the finding says what the native one does.
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

    // Without outlier detection the override host still sends each first attempt to a dead
    // owner (retries leave it: Envoy applies the override to the first attempt only).
    let variant = native_variants().into_iter().find(|v| v.name == "no-outlier-detection").unwrap();
    let report = file(&write(&dir, variant.name, &variant.yaml));
    let said = text(&report);
    assert!(said.contains("the override host sends the first attempt of every request"), "{said}");
    assert!(!said.contains("stateful_session"), "{said}");
}
