//! Learn mode through a control plane's manifests: the plugin configuration that
//! docs/configuration.md shows for each, spliced into a copy of the manifests, and one
//! header-learned session through the rendered Envoy with the demo pods' session app
//! (`demo/pod.py`'s `/webapp` in its MCP-like header mode).

use super::{http_to, now, pod_by_name, Envoy, Pod, DEMO_LIMITS};
use std::net::SocketAddr;
use tether::token::{self, Limits, SessionToken};

/// The header the documented configuration learns.
pub const HEADER: &str = "mcp-session-id";

/// The YAML block docs/configuration.md shows under `# <manifest> (...)`, up to the next
/// blank line.
pub fn documented_config(manifest: &str) -> String {
    let page = std::fs::read_to_string(super::repo().join("docs/configuration.md")).unwrap();
    let mark = format!("# {manifest} (");
    let start = page.find(&mark).unwrap_or_else(|| panic!("docs/configuration.md shows no `{mark}`"));
    let block = &page[start..];
    let block = &block[block.find('\n').unwrap() + 1..];
    let end = [block.find("\n\n"), block.find("\n```")].into_iter().flatten().min().unwrap();
    block[..end + 1].to_string()
}

/// `text` with the block that starts at the line `key_line` (its indentation and every
/// more indented line after it) replaced by `block`, re-indented to that line's.
pub fn replace_block(text: &str, key_line: &str, block: &str) -> String {
    assert_eq!(text.matches(key_line).count(), 1, "`{key_line}` must occur once");
    let start = text.find(key_line).unwrap();
    let indent = key_line.len() - key_line.trim_start().len();
    let mut end = start + key_line.len();
    for line in text[end..].split_inclusive('\n') {
        let inner = line.len() - line.trim_start().len();
        if !line.trim().is_empty() && inner <= indent {
            break;
        }
        end += line.len();
    }
    let pad = " ".repeat(indent);
    let block: String = block.lines().map(|l| format!("{pad}{l}\n")).collect();
    format!("{}{block}{}", &text[..start], &text[end..])
}

/// The claims of an envelope sealed with the demo key for `scope` (panics if it does not verify).
pub fn open_envelope(envelope: &str, scope: &str) -> SessionToken {
    let limits = Limits { envelopes: true, ..DEMO_LIMITS };
    token::open(envelope.as_bytes(), &super::demo_keyring(), scope, now(), limits)
        .unwrap_or_else(|e| panic!("envelope {envelope} does not verify in scope {scope}: {e:?}"))
        .token
}

/// One request to the session app in header mode: (pod, the app's state, the header sent
/// back). `extra` headers go along.
fn visit(
    envoy: &Envoy,
    session: Option<&str>,
    extra: &[(&str, &str)],
) -> (String, serde_json::Value, Option<String>) {
    let mut headers = vec![("x-demo-session-header", HEADER), ("accept", "application/json")];
    headers.extend(session.map(|s| (HEADER, s)));
    headers.extend(extra);
    let r = http_to(envoy.addr(), "GET", "/webapp/", &headers).unwrap();
    assert_eq!(r.status, 200, "{}", r.body_text());
    let state: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    (r.pod().to_string(), state, r.header(HEADER).map(str::to_string))
}

/// A session the app issues in `mcp-session-id`, through `envoy` in learn mode: the
/// client gets an envelope naming the app's id and the pod that issued it (in `scope`), 20
/// requests with it reach that pod, which sees its own id each time (a client-sent owner
/// header aimed elsewhere changes nothing); the pod killed, the next request reaches
/// another, whose new id is wrapped naming it, and the session stays there.
/// `owner(addr)` is the owner as the cluster names the pod.
pub fn header_session(
    envoy: &Envoy,
    pods: &mut [Pod],
    scope: &str,
    owner: impl Fn(SocketAddr) -> tether::address::Owner,
) {
    let (pod, state, envelope) = visit(envoy, None, &[]);
    let id = state["session"].as_str().unwrap().to_string();
    let envelope = envelope.expect("the app's id came back wrapped");
    assert_ne!(envelope, id, "the client got the app's raw id");
    let sealed = open_envelope(&envelope, scope);
    assert_eq!(sealed.app_id.as_deref(), Some(id.as_bytes()));
    assert_eq!(sealed.owner, owner(pod_by_name(pods, &pod).addr));
    let other = pods.iter().find(|p| p.name != pod).unwrap();
    let aimed = tether::address::override_host_value(&owner(other.addr));
    for i in 0..20 {
        let (at, state, sent) = visit(envoy, Some(&envelope), &[("x-tether-host", &aimed)]);
        assert_eq!(
            (at.as_str(), &state["presented"][0], &state["visits"]),
            (pod.as_str(), &id.clone().into(), &(i + 2).into()),
            "request {i}"
        );
        assert_eq!(sent.as_deref(), Some(envelope.as_str()), "request {i}: the same envelope comes back");
    }
    pods.iter_mut().find(|p| p.name == pod).unwrap().kill();
    let (moved_to, state, renewed) = visit(envoy, Some(&envelope), &[]);
    assert_ne!(moved_to, pod);
    assert_eq!(
        (&state["new"], &state["presented"][0]),
        (&true.into(), &id.clone().into()),
        "the app there got its raw id"
    );
    let renewed = renewed.expect("the new id came back wrapped");
    let new_id = state["session"].as_str().unwrap().to_string();
    assert_eq!(open_envelope(&renewed, scope).app_id.as_deref(), Some(new_id.as_bytes()));
    for i in 0..5 {
        let (at, state, _) = visit(envoy, Some(&renewed), &[]);
        assert_eq!(
            (at.as_str(), &state["session"], &state["visits"]),
            (moved_to.as_str(), &new_id.clone().into(), &(i + 2).into())
        );
    }
    println!("learn mode: {pod} issued {id}, 20 requests stuck; killed, {moved_to} issued {new_id}, 5 stuck");
}
