//! The checks: every HTTP connection manager that runs tether, its routes and the clusters
//! they reach. Pure functions of a [`Model`]; each finding names its place and field.

use super::model::{at, list, number, str_at, type_of, Model};
use super::{Finding, Report, Severity};
use serde_json::Value;
use std::collections::BTreeSet;
use tether::address::Owner;
use tether::config::{Learn, Settings};
use tether::filter::{Filter, OwnerVia};

const HCM: &str = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager";
const WASM: &str = "envoy.extensions.filters.http.wasm.v3.Wasm";
const DYNAMIC_MODULE: &str = "envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter";
const SESSION_FILTER: &str = "envoy.extensions.filters.http.stateful_session.v3.StatefulSession";
const SESSION_PER_ROUTE: &str = "envoy.extensions.filters.http.stateful_session.v3.StatefulSessionPerRoute";
const HEADER_STATE: &str = "envoy.extensions.http.stateful_session.header.v3.HeaderBasedSessionState";
const COOKIE_STATE: &str = "envoy.extensions.http.stateful_session.cookie.v3.CookieBasedSessionState";

/// One HTTP connection manager and where it is.
pub struct ConnectionManager {
    pub place: String,
    pub config: Value,
}

/// The HTTP connection managers of a listener (every filter chain and the default one).
pub fn connection_managers(listener: &Value) -> Vec<ConnectionManager> {
    let name = str_at(listener, &["name"]).unwrap_or("(unnamed)");
    let mut chains: Vec<(String, &Value)> = list(listener, &["filter_chains"])
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("filter_chains[{i}]"), c))
        .collect();
    if let Some(c) = listener.get("default_filter_chain") {
        chains.push(("default_filter_chain".into(), c));
    }
    let single = chains.len() == 1;
    let mut out = Vec::new();
    for (chain, c) in chains {
        for f in list(c, &["filters"]) {
            let Some(tc) = f.get("typed_config") else { continue };
            if type_of(tc) == HCM {
                let place =
                    if single { format!("listener {name}") } else { format!("listener {name} {chain}") };
                out.push(ConnectionManager { place, config: tc.clone() });
            }
        }
    }
    out
}

/// tether's plugin, found in an HTTP filter.
struct Plugin {
    /// How it is delivered: `inline`, `ECDS`, `native`.
    delivery: &'static str,
    /// Wasm `PluginConfig` (None for the native filter).
    wasm: Option<Value>,
    /// The plugin configuration bytes.
    configuration: String,
    /// Where the configuration came from, for findings.
    field: &'static str,
}

fn looks_like_tether(pc: &Value) -> bool {
    let names = [
        str_at(pc, &["root_id"]),
        str_at(pc, &["name"]),
        str_at(pc, &["vm_config", "vm_id"]),
        str_at(pc, &["vm_config", "code", "local", "filename"]),
        str_at(pc, &["vm_config", "code", "remote", "http_uri", "uri"]),
    ];
    names.iter().flatten().any(|n| n.contains("tether"))
}

/// The configuration bytes inside an `Any` (`StringValue`, `BytesValue` or `Struct`).
fn any_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(any) => match any.get("value") {
            Some(Value::String(s)) if type_of(any).ends_with("BytesValue") => {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .unwrap_or_default()
            }
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => {
                let mut m = any.as_object().cloned().unwrap_or_default();
                m.remove("@type");
                Value::Object(m).to_string()
            }
        },
    }
}

/// Unwraps `TypedStruct` (older Istio) around a filter configuration.
fn unwrap_typed_struct(tc: &Value) -> Value {
    if type_of(tc).ends_with("TypedStruct") {
        if let Some(mut inner) = tc.get("value").cloned() {
            if let (Some(obj), Some(url)) = (inner.as_object_mut(), str_at(tc, &["type_url"])) {
                obj.insert("@type".into(), Value::String(url.to_string()));
            }
            return inner;
        }
    }
    tc.clone()
}

fn plugin_of(tc: &Value, delivery: &'static str) -> Option<Plugin> {
    let tc = unwrap_typed_struct(tc);
    match type_of(&tc) {
        WASM => {
            let pc = tc.get("config")?;
            looks_like_tether(pc).then(|| Plugin {
                delivery,
                wasm: Some(pc.clone()),
                configuration: any_text(pc.get("configuration")),
                field: "config.configuration",
            })
        }
        DYNAMIC_MODULE => {
            // The module by search-path name, by file, or by URL (`module.local.filename`,
            // `module.remote.http_uri.uri`), or the filter's name within it.
            let names = [
                &["dynamic_module_config", "name"][..],
                &["dynamic_module_config", "module", "local", "filename"],
                &["dynamic_module_config", "module", "remote", "http_uri", "uri"],
                &["filter_name"],
            ];
            let named = names.iter().any(|path| str_at(&tc, path).is_some_and(|n| n.contains("tether")));
            named.then(|| Plugin {
                delivery: "native",
                wasm: None,
                configuration: any_text(tc.get("filter_config")),
                field: "filter_config",
            })
        }
        _ => None,
    }
}

fn is_session_filter(f: &Value) -> bool {
    str_at(f, &["name"]) == Some("envoy.filters.http.stateful_session")
        || f.get("typed_config").is_some_and(|tc| type_of(tc) == SESSION_FILTER)
}

/// What tether's configuration says about the names Envoy must agree on.
struct Names {
    host_header: String,
    host_cookie: Option<String>,
    key_header: String,
    /// Learn mode's header (MCP's `mcp-session-id`): its GET event streams last long.
    learn_header: Option<String>,
    /// Learn mode (either carrier): only the app's own server knows a session id.
    learn: bool,
    /// Who honours the owner: `stateful_session` (wasm) or the override host tether sets
    /// itself (native).
    via: OwnerVia,
}

impl Names {
    fn new(s: &Settings, via: OwnerVia) -> Names {
        Names {
            host_header: s.host_header.clone(),
            host_cookie: s.host_cookie.clone(),
            key_header: s.key_header.clone(),
            learn_header: s.learn.as_ref().and_then(Learn::header).map(str::to_string),
            learn: s.learn.is_some(),
            via,
        }
    }
}

struct Ctx<'a> {
    model: &'a Model,
    report: Report,
    clusters_done: BTreeSet<String>,
}

impl Ctx<'_> {
    fn find(
        &mut self,
        sev: Severity,
        code: &'static str,
        place: &str,
        field: &str,
        what: String,
        fix: String,
    ) {
        self.report.findings.push(Finding {
            severity: sev,
            code,
            place: place.to_string(),
            field: field.to_string(),
            message: what,
            fix,
        });
    }

    fn pass(&mut self) {
        self.report.passed += 1;
    }

    /// `ok` when `failed` is None, else the finding.
    fn check(&mut self, failed: Option<(Severity, &'static str, &str, &str, String, String)>) {
        match failed {
            None => self.pass(),
            Some((s, c, p, f, w, x)) => self.find(s, c, p, f, w, x),
        }
    }
}

pub fn run(model: &Model) -> Report {
    let mut ctx = Ctx {
        model,
        report: Report { source: model.source.clone(), ..Report::default() },
        clusters_done: BTreeSet::new(),
    };
    for note in &model.unread {
        ctx.report.notes.push(format!("not read: {note}"));
    }
    for listener in &model.listeners {
        for hcm in connection_managers(listener) {
            check_hcm(&mut ctx, &hcm);
        }
    }
    if ctx.report.tether_filters == 0 {
        ctx.find(
            Severity::Error,
            "no-tether",
            "(configuration)",
            "http_filters",
            "no HTTP connection manager runs tether: no session affinity at all".into(),
            "add tether (envoy.filters.http.wasm with root_id tether) before envoy.filters.http.stateful_session; see envoy/envoy.yaml".into(),
        );
    }
    ctx.report
}

fn check_hcm(ctx: &mut Ctx, hcm: &ConnectionManager) {
    let filters = list(&hcm.config, &["http_filters"]);
    let mut has_tether = false;
    for (i, f) in filters.iter().enumerate() {
        let fname = str_at(f, &["name"]).unwrap_or("(unnamed)");
        let place = format!("{} http_filters[{i}] {fname}", hcm.place);
        let plugin = if let Some(tc) = f.get("typed_config") {
            plugin_of(tc, "inline")
        } else if f.get("config_discovery").is_some() {
            match ctx.model.ecds.get(fname).and_then(|tec| tec.get("typed_config")) {
                Some(tc) => plugin_of(tc, "ECDS"),
                None => {
                    if fname.contains("tether") {
                        has_tether = true;
                        ctx.report.tether_filters += 1;
                        ctx.find(
                            Severity::Warning,
                            "ecds-unread",
                            &place,
                            "config_discovery",
                            format!("the filter's configuration `{fname}` (ECDS) was not found, so tether's settings, routes and clusters here were not checked"),
                            "read the live proxy (`tether doctor --admin`), where Envoy shows what ECDS delivered, or check that the ECDS source is reachable".into(),
                        );
                    }
                    None
                }
            }
        } else {
            None
        };
        if let Some(plugin) = plugin {
            ctx.report.tether_filters += 1;
            has_tether = true;
            check_tether(ctx, hcm, i, &place, &plugin);
        }
    }
    if !has_tether {
        check_session_state_without_tether(ctx, hcm, filters);
    }
}

/// A connection manager with a session state (cookie or header) and no tether honours an
/// owner any client can write: Istio's `istio.io/persistent-session` label puts one on every
/// route to the Service, in every sidecar and gateway, not only where tether runs.
fn check_session_state_without_tether(ctx: &mut Ctx, hcm: &ConnectionManager, filters: &[Value]) {
    let Some(index) =
        filters.iter().position(|f| str_at(f, &["name"]) == Some("envoy.filters.http.stateful_session"))
    else {
        return;
    };
    if session_state_configured(ctx, hcm, filters, index) {
        ctx.find(Severity::Error, "session-state-without-tether",
            &format!("{} http_filters[{index}] envoy.filters.http.stateful_session", hcm.place), "http_filters",
            "a session state honours the owner cookie or header here, with no tether before it: any client can send a hand-made owner and pick its pod, a draining one included (Istio: the persistent-session label reaches every sidecar and gateway that routes to the Service)".into(),
            "run tether in this proxy too (Istio: a WasmPlugin whose selector or targetRefs covers it; docs/istio.md, \"The label is mesh-wide\")".into());
    }
}

/// Whether the session filter at `index` has a session state, on the filter or per route.
fn session_state_configured(ctx: &mut Ctx, hcm: &ConnectionManager, filters: &[Value], index: usize) -> bool {
    let filter = filters.get(index).cloned().unwrap_or(Value::Null);
    let on_filter = at(&filter, &["typed_config", "session_state"]).is_some();
    let routes = route_config(ctx, hcm);
    let per_route = routes
        .map(|rc| rc.to_string())
        .is_some_and(|rc| rc.contains("StatefulSessionPerRoute") && rc.contains("session_state"));
    on_filter || per_route
}

/// Keys for `config::load` when they come from the proxy's own environment, which a
/// configuration does not show: a valid placeholder with the configured signing key id.
fn placeholder_keys(raw: &str) -> String {
    let id = serde_json::from_str::<Value>(raw)
        .ok()
        .and_then(|v| v.get("signingKeyId").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_else(|| "doctor".into());
    format!("{id}=ZG9jdG9yLXBsYWNlaG9sZGVyLWtleS0zMi1ieXRlcyE=")
}

fn check_tether(ctx: &mut Ctx, hcm: &ConnectionManager, index: usize, place: &str, plugin: &Plugin) {
    let filters = list(&hcm.config, &["http_filters"]);
    let env = plugin.wasm.as_ref().map(|pc| pc.get("vm_config").and_then(|v| v.get("environment_variables")));
    let key_values = env.flatten().and_then(|e| e.get("key_values")).cloned().unwrap_or(Value::Null);
    let host_env: Vec<String> = env
        .flatten()
        .map(|e| list(e, &["host_env_keys"]).iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
    let raw = plugin.configuration.clone();
    let placeholder = placeholder_keys(&raw);
    let lookup = |var: &str| -> Option<String> {
        if let Some(v) = key_values.get(var).and_then(Value::as_str) {
            return Some(v.to_string());
        }
        (plugin.wasm.is_none() || host_env.iter().any(|h| h == var)).then(|| placeholder.clone())
    };
    // The same validation the filter runs (the native module also refuses hostCookie).
    let via = if plugin.wasm.is_some() { OwnerVia::SessionFilter } else { OwnerVia::OverrideHost };
    let settings = match Filter::load(raw.as_bytes(), &lookup, via) {
        Ok(f) => {
            ctx.pass();
            f.settings
        }
        Err(e) => {
            ctx.find(
                Severity::Error,
                "config-invalid",
                place,
                plugin.field,
                format!(
                    "tether refuses this configuration (`{}`: {}); Envoy will not load the filter",
                    e.field, e.reason
                ),
                "correct the field; README \"Configuration\" lists every field".into(),
            );
            return;
        }
    };
    ctx.report.notes.push(format!(
        "{place}: tether ({}){}, {}, keyHeader {}",
        plugin.delivery,
        match &settings.learn {
            Some(Learn::Header(h)) => format!(", learns the app's session id from header {h}"),
            Some(Learn::Cookie(c)) => format!(", learns the app's session id from cookie {c}"),
            None => String::new(),
        },
        match (&settings.host_cookie, via) {
            (_, OwnerVia::OverrideHost) => "owner by Envoy's upstream override host".to_string(),
            (Some(c), _) => format!("hostCookie {c}"),
            (None, _) => format!("hostHeader {}", settings.host_header),
        },
        settings.key_header
    ));

    // Keys.
    ctx.check(settings.inline_keys.then(|| {
        (Severity::Warning, "keys-inline", place, "configuration.keys",
         "the signing keys are written in the plugin configuration: whoever reads the configuration can mint tokens for any pod".to_string(),
         match via {
             OwnerVia::OverrideHost => "use keysFromEnv with the keys in Envoy's own environment".to_string(),
             OwnerVia::SessionFilter => "use keysFromEnv with the keys in the proxy's environment (host_env_keys, or Istio vmConfig.env from a Secret)".to_string(),
         })
    }));
    let from_env = serde_json::from_str::<Value>(&raw)
        .ok()
        .and_then(|v| v.get("keysFromEnv").and_then(Value::as_str).map(str::to_string));
    if let Some(var) = from_env {
        let field = format!("config.vm_config.environment_variables.key_values.{var}");
        ctx.check(key_values.get(&var).is_some().then(|| {
            (Severity::Warning, "keys-in-config", place, field.as_str(),
             "the signing keys are part of Envoy's configuration (served by the admin /config_dump, printed at debug level)".to_string(),
             format!("put them in Envoy's own environment and list `host_env_keys: [{var}]` (Istio: vmConfig.env valueFrom HOST, from a Secret)"))
        }));
    }

    // Failure policy.
    if let Some(pc) = &plugin.wasm {
        let policy = match str_at(pc, &["failure_policy"]) {
            Some(p) if p != "UNSPECIFIED" => p.to_string(),
            _ if pc.get("fail_open").and_then(Value::as_bool) == Some(true) => {
                "FAIL_OPEN (fail_open: true)".into()
            }
            _ => "FAIL_CLOSED (the default)".into(),
        };
        let finding = if policy.starts_with("FAIL_OPEN") {
            Some((Severity::Error, "failure-policy", place, "config.failure_policy",
                  format!("{policy}: if the VM dies, requests pass without tether and clients choose their pod with a forged `{}`", settings.host_cookie.as_deref().unwrap_or(&settings.host_header)),
                  "failure_policy: FAIL_RELOAD (Istio: failStrategy FAIL_RELOAD)".to_string()))
        } else if policy.starts_with("FAIL_CLOSED") {
            Some((
                Severity::Warning,
                "failure-policy",
                place,
                "config.failure_policy",
                format!("{policy}: if the VM dies, every request on that worker fails until Envoy restarts"),
                "failure_policy: FAIL_RELOAD (a new VM in about a second)".to_string(),
            ))
        } else {
            None
        };
        ctx.check(finding);
    }

    // Filter order. The native module sets the override host itself: no session filter
    // needs to follow it (one that does finds no owner header: tether removes it). One with a
    // session state *before* it reads the client's owner cookie or header before tether can
    // remove it, and steers every request tether does not steer itself (Istio's
    // persistent-session flag with an EnvoyFilter inserting the module before the router).
    if via == OwnerVia::OverrideHost {
        if let Some(j) = filters.iter().position(is_session_filter).filter(|j| *j < index) {
            if session_state_configured(ctx, hcm, filters, j) {
                ctx.find(Severity::Error, "session-filter-before-native", place, "http_filters",
                    format!("envoy.filters.http.stateful_session (http_filters[{j}]) runs before the native module with a session state: it honours an owner cookie or header the client sends before tether can remove it, so a client picks the pod of every new session"),
                    "remove the session filter or its session state (Istio: leave PILOT_ENABLE_PERSISTENT_SESSION_FILTER off; docs/istio.md, \"Native build\"), or put tether before it".into());
            }
        }
    }
    let session = match via {
        OwnerVia::SessionFilter => filters.iter().enumerate().find(|(_, f)| is_session_filter(f)),
        OwnerVia::OverrideHost => None,
    };
    let names = Names::new(&settings, via);
    match session {
        Some((j, _)) if j < index => {
            ctx.find(Severity::Error, "filter-order", place, "http_filters",
                format!("envoy.filters.http.stateful_session (http_filters[{j}]) runs before tether, so it never sees the owner tether sets: no request is steered by its cookie"),
                "put tether before envoy.filters.http.stateful_session (and both before the router)".into());
            return;
        }
        Some(_) => ctx.pass(),
        None => {}
    }
    let session_filter = session.map(|(_, f)| f.clone());

    // Routes.
    let routes = route_config(ctx, hcm);
    let Some(rc) = routes else { return };
    let rc_name = str_at(&rc, &["name"]).unwrap_or("(inline)").to_string();
    for vh in list(&rc, &["virtual_hosts"]) {
        let vh_name = str_at(vh, &["name"]).unwrap_or("(unnamed)");
        for (k, route) in list(vh, &["routes"]).iter().enumerate() {
            let Some(action) = route.get("route") else { continue };
            let rname = str_at(route, &["name"]).map_or_else(|| format!("routes[{k}]"), str::to_string);
            let rplace = format!("route {rc_name}/{vh_name}/{rname}");
            let clusters = route_clusters(action);
            let override_host =
                clusters.iter().any(|c| ctx.model.clusters.get(c).is_some_and(is_override_host));
            match &session_filter {
                Some(sf) => check_session_state(ctx, &rplace, sf, route, vh, &rc, &names),
                None if override_host || via == OwnerVia::OverrideHost => {}
                None => ctx.find(Severity::Error, "no-session-filter", place, "http_filters",
                    "no envoy.filters.http.stateful_session after tether: nothing reads the owner tether sets, so sessions are only hashed and move whenever the endpoint set changes".into(),
                    "add envoy.filters.http.stateful_session (header session state, strict: false) between tether and the router".into()),
            }
            check_route(ctx, &rplace, action, route, vh, &rc, &names);
            for c in clusters {
                check_cluster(ctx, &c, &names);
            }
        }
    }
}

fn route_config(ctx: &mut Ctx, hcm: &ConnectionManager) -> Option<Value> {
    if let Some(rc) = hcm.config.get("route_config") {
        return Some(rc.clone());
    }
    if let Some(name) = str_at(&hcm.config, &["rds", "route_config_name"]) {
        if let Some(rc) = ctx.model.routes.get(name) {
            return Some(rc.clone());
        }
        ctx.find(
            Severity::Warning,
            "routes-unread",
            &hcm.place,
            "rds.route_config_name",
            format!("route configuration `{name}` was not found: its routes and clusters were not checked"),
            "read the live proxy (`tether doctor --admin`)".into(),
        );
        return None;
    }
    ctx.find(
        Severity::Warning,
        "routes-unread",
        &hcm.place,
        "scoped_routes",
        "scoped routes are not read by the doctor: routes and clusters were not checked".into(),
        String::new(),
    );
    None
}

fn route_clusters(action: &Value) -> Vec<String> {
    let mut out: Vec<String> = str_at(action, &["cluster"]).map(str::to_string).into_iter().collect();
    for c in list(action, &["weighted_clusters", "clusters"]) {
        out.extend(str_at(c, &["name"]).map(str::to_string));
    }
    out
}

/// The typed_per_filter_config entry for `name`, most specific first.
fn per_route<'a>(name: &str, levels: [&'a Value; 3]) -> Option<(&'a Value, &'static str)> {
    let labels = ["route", "virtual host", "route configuration"];
    levels
        .iter()
        .zip(labels)
        .find_map(|(v, label)| at(v, &["typed_per_filter_config", name]).map(|c| (c, label)))
}

fn check_session_state(
    ctx: &mut Ctx,
    place: &str,
    sf: &Value,
    route: &Value,
    vh: &Value,
    rc: &Value,
    names: &Names,
) {
    let fname = str_at(sf, &["name"]).unwrap_or("envoy.filters.http.stateful_session");
    let (session, field) = match per_route(fname, [route, vh, rc]) {
        Some((cfg, level)) => {
            // envoy.config.route.v3.FilterConfig wraps the per-route config optionally.
            let cfg = if type_of(cfg).ends_with("route.v3.FilterConfig") {
                cfg.get("config").cloned().unwrap_or(Value::Null)
            } else {
                cfg.clone()
            };
            let field = format!("typed_per_filter_config[{fname}] ({level})");
            if type_of(&cfg) == SESSION_PER_ROUTE
                && cfg.get("disabled").and_then(Value::as_bool) == Some(true)
            {
                ctx.find(Severity::Error, "session-disabled", place, &field,
                    "stateful_session is disabled on this route: sessions are only hashed and move whenever the endpoint set changes".into(),
                    "remove `disabled: true` for routes tether serves".into());
                return;
            }
            (cfg.get("stateful_session").cloned().unwrap_or(Value::Null), field)
        }
        None => (sf.get("typed_config").cloned().unwrap_or(Value::Null), format!("http_filters {fname}")),
    };
    let Some(state) = session.get("session_state") else {
        ctx.find(Severity::Error, "no-session-state", place, &field,
            "stateful_session has no session_state for this route, so it reads nothing: sessions are only hashed".into(),
            match &names.host_cookie {
                Some(c) => format!("session_state envoy.http.stateful_session.cookie with cookie name `{c}` (Istio: Service label istio.io/persistent-session: {c})"),
                None => format!("session_state envoy.http.stateful_session.header with name `{}`", names.host_header),
            });
        return;
    };
    ctx.pass();
    let tc = state.get("typed_config").cloned().unwrap_or(Value::Null);
    let reads = match type_of(&tc) {
        HEADER_STATE => format!("header `{}`", str_at(&tc, &["name"]).unwrap_or("")),
        COOKIE_STATE => format!("cookie `{}`", str_at(&tc, &["cookie", "name"]).unwrap_or("")),
        other => format!("session state {other}"),
    };
    let (writes, ok, fix) = match &names.host_cookie {
        Some(c) => (
            format!("cookie `{c}` (hostCookie)"),
            type_of(&tc) == COOKIE_STATE && str_at(&tc, &["cookie", "name"]) == Some(c.as_str()),
            format!("session_state envoy.http.stateful_session.cookie with cookie name `{c}` (Istio: Service label istio.io/persistent-session: {c})"),
        ),
        None => (
            format!("header `{}` (hostHeader)", names.host_header),
            type_of(&tc) == HEADER_STATE
                && str_at(&tc, &["name"]).is_some_and(|n| n.eq_ignore_ascii_case(&names.host_header)),
            if type_of(&tc) == COOKIE_STATE {
                format!("set `hostCookie: {}` in tether's configuration, or use the header session state with name `{}`", str_at(&tc, &["cookie", "name"]).unwrap_or(""), names.host_header)
            } else {
                format!("envoy.http.stateful_session.header with name: {}", names.host_header)
            },
        ),
    };
    let sfield = format!("{field} session_state");
    ctx.check((!ok).then(|| {
        (Severity::Error, "session-mismatch", place, sfield.as_str(),
         format!("stateful_session reads {reads} but tether writes the owner into {writes}: no request is steered by its cookie, sessions are only hashed"),
         fix)
    }));
    if ok && type_of(&tc) == COOKIE_STATE {
        let path = str_at(&tc, &["cookie", "path"]).unwrap_or("/");
        ctx.check((path != "/").then(|| {
            (Severity::Warning, "session-cookie-path", place, "session_state cookie.path",
             format!("the cookie session state only applies under `{path}`: other paths of this route are not steered"),
             "use path `/` (Istio: the label without a path)".to_string())
        }));
    }
    let strict = session.get("strict").and_then(Value::as_bool) == Some(true);
    ctx.check(strict.then(|| {
        (Severity::Error, "strict", place, "strict",
         "strict: true fails every request of a session whose owner is gone or unhealthy (503) instead of moving it".to_string(),
         "strict: false (tether re-pins the session where the cluster sends it)".to_string())
    }));
}

fn check_route(
    ctx: &mut Ctx,
    place: &str,
    action: &Value,
    route: &Value,
    vh: &Value,
    rc: &Value,
    names: &Names,
) {
    // Fallback hash on the key header.
    let hashes: Vec<&str> =
        list(action, &["hash_policy"]).iter().filter_map(|h| str_at(h, &["header", "header_name"])).collect();
    let hashed = hashes.iter().any(|h| h.eq_ignore_ascii_case(&names.key_header));
    ctx.check((!hashed).then(|| {
        let what = if list(action, &["hash_policy"]).is_empty() {
            "no hash_policy".to_string()
        } else {
            format!("hash_policy does not hash `{}` (it hashes {})", names.key_header, if hashes.is_empty() { "no header".into() } else { hashes.iter().map(|h| format!("`{h}`")).collect::<Vec<_>>().join(", ") })
        };
        (Severity::Error, "hash-policy", place, "route.hash_policy",
         format!("{what}: when a session's owner is gone each Envoy picks a different new pod, and tether's key header (the session id) is ignored"),
         format!("hash_policy: [{{ header: {{ header_name: {} }} }}]", names.key_header))
    }));
    let removed = [route, vh, rc].iter().any(|v| {
        list(v, &["request_headers_to_remove"])
            .iter()
            .any(|h| h.as_str().is_some_and(|h| h.eq_ignore_ascii_case(&names.key_header)))
    });
    ctx.check(removed.then(|| {
        (
            Severity::Error,
            "key-header-removed",
            place,
            "request_headers_to_remove",
            format!(
                "`{}` is removed before the hash is computed: the fallback owner is random",
                names.key_header
            ),
            format!("do not list `{}` in request_headers_to_remove", names.key_header),
        )
    }));

    // Learn mode's streams (MCP's GET event stream) outlive Envoy's default route timeout.
    if names.learn_header.is_some() {
        let timeout = str_at(action, &["timeout"]);
        let seconds = timeout.and_then(|t| t.strip_suffix('s')).and_then(|t| t.parse::<f64>().ok());
        ctx.check((seconds != Some(0.0)).then(|| {
            (Severity::Warning, "learn-stream-timeout", place, "route.timeout",
             format!("route timeout {} ends every response stream after that long: an MCP client's GET event stream, and any tool call that streams longer, is cut and must reconnect", timeout.unwrap_or("15s (Envoy's default)")),
             "timeout: 0s on the route, with an idle_timeout to end streams that go quiet (envoy/mcp.yaml)".to_string())
        }));
    }

    // Retries.
    let policy = action.get("retry_policy").or_else(|| vh.get("retry_policy"));
    let num = policy.map(|p| number(p.get("num_retries")).unwrap_or(1.0));
    match (policy, num) {
        (Some(p), Some(n)) if n >= 1.0 => {
            ctx.pass();
            let on: Vec<&str> = str_at(p, &["retry_on"]).unwrap_or("").split(',').map(str::trim).collect();
            let connect = on.iter().any(|r| matches!(*r, "connect-failure" | "5xx" | "gateway-error"));
            let reset = on.iter().any(|r| matches!(*r, "reset" | "5xx"));
            // In learn mode a request the owner may have received is better failed than
            // retried: no other server knows its session id (below).
            let missing: Vec<&str> = [(!connect).then_some("connect-failure"), (!reset && !names.learn).then_some("reset")].into_iter().flatten().collect();
            ctx.check((!missing.is_empty()).then(|| {
                (Severity::Error, "retry-on", place, "retry_policy.retry_on",
                 format!("retry_on `{}` does not retry {}: requests {} a pod that dies fail", on.join(","), missing.join(" or "), if names.learn { "sent to" } else { "in flight to" }),
                 if names.learn { "retry_on: connect-failure,refused-stream,reset-before-request" } else { "retry_on: connect-failure,reset,gateway-error" }.to_string())
            }));
            ctx.check((names.learn && reset).then(|| {
                (Severity::Warning, "learn-retry-reset", place, "retry_policy.retry_on",
                 format!("retry_on `{}` retries a request reset after a server received it on another server, which does not know the app's session id: the session ends there (MCP: 404) though its owner may be alive, e.g. when the owner closed a kept-alive connection as the request arrived", on.join(",")),
                 "retry_on: connect-failure,refused-stream,reset-before-request (only what no server saw; envoy/mcp.yaml)".to_string())
            }));
            let previous = list(p, &["retry_host_predicate"]).iter().any(|h| {
                str_at(h, &["name"]) == Some("envoy.retry_host_predicates.previous_hosts")
                    || h.get("typed_config").is_some_and(|tc| type_of(tc).ends_with("PreviousHostsPredicate"))
            });
            ctx.check((!previous).then(|| {
                (Severity::Error, "previous-hosts", place, "retry_policy.retry_host_predicate",
                 "retries may go back to the host that just failed (the consistent hash picks it again): the retries of a dead owner's requests fail too".to_string(),
                 "retry_host_predicate: envoy.retry_host_predicates.previous_hosts (Istio: VirtualService retries.retryIgnorePreviousHosts: true)".to_string())
            }));
        }
        _ => ctx.find(Severity::Error, "no-retries", place, "route.retry_policy",
            "no retries: requests in flight to, or sent to, a pod that just died fail (503) before Envoy notices".into(),
            "retry_policy: { retry_on: connect-failure,reset,gateway-error, num_retries: 3, retry_host_predicate: [previous_hosts] }".into()),
    }
}

/// The first load-balancing policy Envoy would use: (name, its typed config).
fn lb_extension(c: &Value) -> Option<(String, Value)> {
    let first = list(c, &["load_balancing_policy", "policies"]).first()?;
    let tec = first.get("typed_extension_config")?;
    let tc = tec.get("typed_config").cloned().unwrap_or(Value::Null);
    let name = match type_of(&tc) {
        "" => str_at(tec, &["name"]).unwrap_or("").to_string(),
        t => t.to_string(),
    };
    Some((name, tc))
}

fn is_override_host(c: &Value) -> bool {
    lb_extension(c).is_some_and(|(n, _)| n.contains("override_host"))
}

fn consistent(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.contains("maglev") || n.contains("ring_hash")
}

/// Endpoints behind an Envoy internal listener (Istio ambient: `envoy://connect_originate/
/// <pod ip:port>`): the session filter can steer to them when tether can read the pod in
/// them; the native module cannot (Envoy's override host takes IP addresses only).
fn check_internal_endpoints(ctx: &mut Ctx, name: &str, place: &str, names: &Names) {
    let Some(internal) = ctx.model.internal_endpoints.get(name).cloned() else {
        return;
    };
    let field = "endpoint.address.envoy_internal_address";
    if names.via == OwnerVia::OverrideHost {
        ctx.find(Severity::Error, "internal-address-native", place, field,
            format!("{} endpoints are internal addresses (envoy://{}/...): the native module cannot steer to them (Envoy's dynamic-module override host takes IP addresses only), so their sessions are never pinned (counter tether.unusable_host)", internal.len(), internal[0].listener),
            "run the wasm build with the stateful_session filter in front of these endpoints (envoy/envoy.yaml; Istio ambient: istio/)".into());
        return;
    }
    let unusable: Vec<String> = internal
        .iter()
        .map(|e| format!("envoy://{}/{}", e.listener, e.endpoint_id))
        .filter(|host| Owner::parse(host.as_bytes()).is_none())
        .collect();
    ctx.check((!unusable.is_empty()).then(|| {
        (Severity::Error, "internal-endpoint", place, field,
         format!("tether cannot pin {} of its internal-address endpoints ({}): the endpoint id must be the pod's ip:port and the listener name at most 63 visible characters", unusable.len(), unusable[0]),
         "endpoint_id: \"<pod ip>:<port>\" (as istiod writes it for ambient pods)".to_string())
    }));
    let listeners: BTreeSet<&str> = ctx
        .model
        .listeners
        .iter()
        .filter(|l| l.get("internal_listener").is_some())
        .filter_map(|l| str_at(l, &["name"]))
        .collect();
    let missing: BTreeSet<&str> =
        internal.iter().map(|e| e.listener.as_str()).filter(|l| !listeners.contains(l)).collect();
    if !missing.is_empty() && !ctx.model.listeners.is_empty() {
        let missing = missing.into_iter().collect::<Vec<_>>().join(", ");
        ctx.find(Severity::Error, "internal-listener", place, field,
            format!("its endpoints go through the internal listener(s) {missing}, which this configuration does not have: every request to them fails"),
            "an internal listener of that name (Istio adds connect_originate to every proxy that sends HBONE)".into());
    }
    if let Some(e) = internal.iter().find(|e| e.waypoint.is_some()) {
        ctx.find(Severity::Error, "ingress-use-waypoint", place, "endpoint.metadata envoy.filters.listener.original_dst.waypoint",
            format!("its endpoints are the Service's waypoint ({}), not its pods (Istio's istio.io/ingress-use-waypoint): tether pins sessions to a waypoint pod, and the waypoint balances them over the app's pods without affinity", e.waypoint.as_deref().unwrap_or("")),
            "remove istio.io/ingress-use-waypoint from the Service (or its namespace) so the gateway reaches the pods themselves; docs/istio.md, Ambient".into());
    }
}

fn check_cluster(ctx: &mut Ctx, name: &str, names: &Names) {
    if !ctx.clusters_done.insert(name.to_string()) {
        return;
    }
    let place = format!("cluster {name}");
    let Some(c) = ctx.model.clusters.get(name).cloned() else {
        ctx.find(
            Severity::Warning,
            "cluster-unread",
            &place,
            "",
            "the cluster was not found: not checked".into(),
            String::new(),
        );
        return;
    };

    // Consistent hash (lb_policy, or a load_balancing_policy extension as Envoy Gateway sets).
    let (policy, field, override_host) = match lb_extension(&c) {
        Some((n, tc)) if n.contains("override_host") => {
            let fallback = list(&tc, &["fallback_policy", "policies"])
                .first()
                .and_then(|p| p.get("typed_extension_config"))
                .map(|t| match type_of(t.get("typed_config").unwrap_or(&Value::Null)) {
                    "" => str_at(t, &["name"]).unwrap_or("").to_string(),
                    t => t.to_string(),
                })
                .unwrap_or_else(|| "(none)".into());
            (fallback, "load_balancing_policy override_host fallback_policy", true)
        }
        Some((n, _)) => (n, "load_balancing_policy", false),
        None => (str_at(&c, &["lb_policy"]).unwrap_or("ROUND_ROBIN").to_string(), "lb_policy", false),
    };
    ctx.check((!consistent(&policy)).then(|| {
        (Severity::Error, "lb-policy", place.as_str(), field,
         format!("{policy} is not a consistent hash: when a session's owner is gone, each Envoy (and each retry) picks a different new pod"),
         "lb_policy: MAGLEV (or RING_HASH), or a load_balancing_policy with envoy.load_balancing_policies.maglev".to_string())
    }));
    if override_host {
        ctx.find(Severity::Warning, "override-host", &place, "load_balancing_policy",
            "override_host picks the pinned pod even after health checks or outlier detection marked it down: every request of a dead owner's sessions fails there first and needs a retry".into(),
            "use envoy.filters.http.stateful_session with the header session state instead (envoy/envoy.yaml)".into());
    } else {
        // Health states in which stateful_session still honours the owner.
        let statuses: Option<Vec<String>> = at(&c, &["common_lb_config", "override_host_status", "statuses"])
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect());
        let given = statuses.is_some();
        let statuses =
            statuses.unwrap_or_else(|| vec!["UNKNOWN".into(), "HEALTHY".into(), "DEGRADED".into()]);
        let missing: Vec<&str> =
            ["UNKNOWN", "HEALTHY"].into_iter().filter(|s| !statuses.iter().any(|x| x == s)).collect();
        let field = "common_lb_config.override_host_status";
        ctx.check((!missing.is_empty()).then(|| {
            (Severity::Error, "override-host-status", place.as_str(), field,
             format!("an owner whose health is {} is never honoured: its sessions are hashed and move whenever the endpoint set changes", missing.join(" or ")),
             "statuses: [UNKNOWN, HEALTHY, DEGRADED, DRAINING]".to_string())
        }));
        let no_draining = !statuses.iter().any(|s| s == "DRAINING");
        let listed = if given { "listed" } else { "in the default (UNKNOWN, HEALTHY, DEGRADED)" };
        // istiod builds an Istio waypoint's clusters without it and EnvoyFilter cannot MERGE
        // them (pilot/pkg/networking/core/cluster.go, Istio 1.30): no configuration fixes it.
        let finding = if name.starts_with("inbound-vip|") {
            (Severity::Warning, "waypoint-draining",
             format!("an Istio waypoint's cluster: DRAINING is not {listed}, and istiod gives waypoint clusters no override_host_status that an EnvoyFilter could extend, so a draining pod's sessions all move as soon as it starts draining"),
             "none within Istio 1.30 (it needs an Istio change); run tether at the ingress gateway for Services whose pods drain with live sessions (docs/istio.md, Ambient)".to_string())
        } else {
            (Severity::Warning, "draining",
             format!("DRAINING is not {listed}: a draining pod's sessions all move as soon as it starts draining, while it still holds their state"),
             "statuses: [UNKNOWN, HEALTHY, DEGRADED, DRAINING] (Istio: the persistent-session label sets this; for DestinationRule subsets, istio/extras/envoyfilter-subset-draining.yaml)".to_string())
        };
        ctx.check(no_draining.then_some((finding.0, finding.1, place.as_str(), field, finding.2, finding.3)));
    }

    // A dead owner is noticed: active health checks, or local-origin outlier detection.
    let health = !list(&c, &["health_checks"]).is_empty();
    let fast_outlier = c.get("outlier_detection").is_some_and(|od| {
        let split = od.get("split_external_local_origin_errors").and_then(Value::as_bool) == Some(true);
        if split {
            number(od.get("enforcing_consecutive_local_origin_failure")).unwrap_or(100.0) > 0.0
        } else {
            number(od.get("enforcing_consecutive_5xx")).unwrap_or(100.0) > 0.0
        }
    });
    let finding = match (health, fast_outlier) {
        (false, false) => Some((Severity::Error, "dead-pod",
            "neither active health_checks nor outlier_detection that ejects on connection failures: a dead owner stays chosen, every request of its sessions fails (or waits for a retry) until the endpoint is removed".to_string(),
            "outlier_detection: { split_external_local_origin_errors: true, consecutive_local_origin_failure: 2 } and active health_checks".to_string())),
        (true, false) => Some((Severity::Warning, "outlier-detection",
            match names.via {
                OwnerVia::SessionFilter => "no outlier detection on connection failures: stateful_session keeps choosing a dead owner, even on retries, until the next failed health check",
                // Envoy applies the override host to the first attempt only (docs/native.md).
                OwnerVia::OverrideHost => "no outlier detection on connection failures: the override host sends the first attempt of every request of a dead owner's sessions to it until the next failed health check, each then needing a retry",
            }.to_string(),
            "outlier_detection: { split_external_local_origin_errors: true, consecutive_local_origin_failure: 2, enforcing_consecutive_local_origin_failure: 100 }".to_string())),
        _ => None,
    };
    ctx.check(finding.map(|(s, code, w, x)| {
        (
            s,
            code,
            place.as_str(),
            if health { "outlier_detection" } else { "health_checks, outlier_detection" },
            w,
            x,
        )
    }));

    check_internal_endpoints(ctx, name, &place, names);

    // Retries in flight.
    let thresholds = list(&c, &["circuit_breakers", "thresholds"]);
    let default = thresholds.iter().find(|t| str_at(t, &["priority"]).is_none_or(|p| p == "DEFAULT"));
    let budget = default.is_some_and(|t| t.get("retry_budget").is_some());
    let max = default.and_then(|t| number(t.get("max_retries"))).unwrap_or(3.0);
    ctx.check((!budget && max <= 3.0).then(|| {
        (Severity::Warning, "retry-breaker", place.as_str(), "circuit_breakers.thresholds.max_retries",
         format!("at most {max} retries in flight{}: when a pod dies under load, the retries that would save its requests overflow and become 503s", if default.and_then(|t| t.get("max_retries")).is_none() { " (the default)" } else { "" }),
         "circuit_breakers: { thresholds: [{ max_retries: 1000 }] } (Istio: DestinationRule connectionPool.http.maxRetries)".to_string())
    }));
}
