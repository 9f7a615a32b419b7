//! Reading a configuration: an Envoy bootstrap file (YAML or JSON, with the files its
//! `path_config_source`s name), a saved `/config_dump`, or a live admin endpoint. All of
//! them become one [`Model`]: listeners, route configurations, clusters, ECDS filter
//! configurations and endpoint counts, as JSON values in Envoy's proto-JSON shape.

use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Default)]
pub struct Model {
    /// What was read, for the report's first line.
    pub source: String,
    pub listeners: Vec<Value>,
    pub routes: BTreeMap<String, Value>,
    pub clusters: BTreeMap<String, Value>,
    /// ECDS resources (`TypedExtensionConfig`) by name.
    pub ecds: BTreeMap<String, Value>,
    /// Endpoints per cluster (static `load_assignment` or EDS), where known.
    pub endpoints: BTreeMap<String, usize>,
    /// The endpoints behind an Envoy internal listener, per cluster (Istio ambient).
    pub internal_endpoints: BTreeMap<String, Vec<InternalEndpoint>>,
    /// Pieces referenced but not readable (a gRPC xDS source in a file, say).
    pub unread: Vec<String>,
}

/// An endpoint addressed as `envoy_internal_address` (Envoy names it
/// `envoy://<listener>/<endpoint id>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalEndpoint {
    pub listener: String,
    pub endpoint_id: String,
    /// Istio's `envoy.filters.listener.original_dst` metadata names a waypoint: the
    /// endpoint is the Service's waypoint, not its pod (`istio.io/ingress-use-waypoint`).
    pub waypoint: Option<String>,
}

/// The configuration could not be read at all (exit status 2).
#[derive(Debug)]
pub struct ReadError(pub String);

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// YAML (a superset of JSON, with anchors) into a JSON value.
pub fn parse_yaml(text: &str) -> Result<Value, String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    Ok(docs.first().map(yaml_to_json).unwrap_or(Value::Null))
}

fn yaml_to_json(y: &yaml_rust2::Yaml) -> Value {
    use yaml_rust2::Yaml;
    match y {
        Yaml::Real(r) => {
            r.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
        }
        Yaml::Integer(i) => Value::from(*i),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Boolean(b) => Value::Bool(*b),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(map) => {
            let mut out = Map::new();
            for (k, v) in map {
                let key = match k {
                    Yaml::String(s) | Yaml::Real(s) => s.clone(),
                    Yaml::Integer(i) => i.to_string(),
                    Yaml::Boolean(b) => b.to_string(),
                    _ => continue,
                };
                out.insert(key, yaml_to_json(v));
            }
            Value::Object(out)
        }
        Yaml::Null | Yaml::BadValue | Yaml::Alias(_) => Value::Null,
    }
}

/// The `@type` of a value, without its `type.googleapis.com/` prefix.
pub fn type_of(v: &Value) -> &str {
    let t = v.get("@type").and_then(Value::as_str).unwrap_or("");
    t.rsplit('/').next().unwrap_or(t)
}

pub fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    at(v, path).and_then(Value::as_str)
}

pub fn at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, k| v.get(k))
}

pub fn list<'a>(v: &'a Value, path: &[&str]) -> &'a [Value] {
    at(v, path).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// A number that proto-JSON may render as a string (64-bit) or a number.
pub fn number(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

impl Model {
    /// An Envoy bootstrap (YAML/JSON) or a saved `/config_dump` (JSON).
    pub fn from_file(path: &Path) -> Result<Model, ReadError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ReadError(format!("cannot read {}: {e}", path.display())))?;
        let root = parse_yaml(&text)
            .map_err(|e| ReadError(format!("{} is not valid YAML or JSON: {e}", path.display())))?;
        if !root.is_object() {
            return Err(ReadError(format!(
                "{} is not an Envoy configuration (not a mapping)",
                path.display()
            )));
        }
        let mut model = Model { source: path.display().to_string(), ..Model::default() };
        if root.get("configs").is_some() {
            model.add_config_dump(&root);
        } else {
            let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
            model.add_bootstrap(&root, &base);
        }
        model.check_not_empty()?;
        Ok(model)
    }

    /// A running Envoy's admin endpoint (`http://127.0.0.1:15000` through a port-forward
    /// for an istio-proxy): `/config_dump?include_eds`.
    pub fn from_admin(base: &str) -> Result<Model, ReadError> {
        let base = base.trim_end_matches('/');
        let base = if base.contains("://") { base.to_string() } else { format!("http://{base}") };
        let url = format!("{base}/config_dump?include_eds");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()
            .map_err(|e| ReadError(format!("HTTP client: {e}")))?;
        let response =
            client.get(&url).send().map_err(|e| ReadError(format!("cannot read {url}: {}", chain(&e))))?;
        let status = response.status();
        let body = response.text().map_err(|e| ReadError(format!("cannot read {url}: {}", chain(&e))))?;
        if !status.is_success() {
            return Err(ReadError(format!("{url} answered {status}: {}", body.trim())));
        }
        let root: Value = serde_json::from_str(&body)
            .map_err(|e| ReadError(format!("{url} did not return a config dump: {e}")))?;
        let mut model = Model { source: format!("{base} (admin /config_dump)"), ..Model::default() };
        model.add_config_dump(&root);
        model.check_not_empty()?;
        Ok(model)
    }

    fn check_not_empty(&self) -> Result<(), ReadError> {
        if self.listeners.is_empty() && self.clusters.is_empty() {
            return Err(ReadError(format!("{}: no listeners and no clusters found", self.source)));
        }
        Ok(())
    }

    fn add_config_dump(&mut self, root: &Value) {
        for config in list(root, &["configs"]) {
            match type_of(config) {
                "envoy.admin.v3.ListenersConfigDump" => {
                    for l in list(config, &["static_listeners"]) {
                        self.listeners.extend(l.get("listener").cloned());
                    }
                    for l in list(config, &["dynamic_listeners"]) {
                        self.listeners.extend(at(l, &["active_state", "listener"]).cloned());
                    }
                }
                "envoy.admin.v3.ClustersConfigDump" => {
                    for key in ["static_clusters", "dynamic_active_clusters"] {
                        for c in list(config, &[key]) {
                            if let Some(c) = c.get("cluster") {
                                self.add_cluster(c, Path::new(""));
                            }
                        }
                    }
                }
                "envoy.admin.v3.RoutesConfigDump" => {
                    for (key, field) in
                        [("static_route_configs", "route_config"), ("dynamic_route_configs", "route_config")]
                    {
                        for r in list(config, &[key]) {
                            if let Some(rc) = r.get(field) {
                                self.add_route_config(rc);
                            }
                        }
                    }
                }
                "envoy.admin.v3.EcdsConfigDump" => {
                    for f in list(config, &["ecds_filters"]) {
                        if let Some(tec) = f.get("ecds_filter") {
                            self.add_ecds(tec);
                        }
                    }
                }
                "envoy.admin.v3.EndpointsConfigDump" => {
                    for key in ["static_endpoint_configs", "dynamic_endpoint_configs"] {
                        for e in list(config, &[key]) {
                            if let Some(cla) = e.get("endpoint_config") {
                                self.add_assignment(cla);
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn add_bootstrap(&mut self, root: &Value, base: &Path) {
        for l in list(root, &["static_resources", "listeners"]) {
            self.listeners.push(l.clone());
        }
        for c in list(root, &["static_resources", "clusters"]) {
            self.add_cluster(c, base);
        }
        for (key, what) in [("lds_config", "listeners"), ("cds_config", "clusters")] {
            if let Some(source) = at(root, &["dynamic_resources", key]) {
                for r in self.read_source(source, base, what) {
                    match type_of(&r) {
                        "envoy.config.listener.v3.Listener" => self.listeners.push(r),
                        "envoy.config.cluster.v3.Cluster" => self.add_cluster(&r, base),
                        _ => {}
                    }
                }
            }
        }
        // RDS and ECDS sources named by the listeners' HTTP connection managers.
        let mut sources = Vec::new();
        for l in &self.listeners {
            for hcm in super::checks::connection_managers(l) {
                if let Some(source) = at(&hcm.config, &["rds", "config_source"]) {
                    sources.push((source.clone(), "routes"));
                }
                for f in list(&hcm.config, &["http_filters"]) {
                    if let Some(source) = at(f, &["config_discovery", "config_source"]) {
                        sources.push((source.clone(), "filter configuration"));
                    }
                }
            }
        }
        for (source, what) in sources {
            for r in self.read_source(&source, base, what) {
                match type_of(&r) {
                    "envoy.config.route.v3.RouteConfiguration" => self.add_route_config(&r),
                    "envoy.config.core.v3.TypedExtensionConfig" => self.add_ecds(&r),
                    _ => {}
                }
            }
        }
    }

    /// The resources of a file-based xDS source (`path_config_source` or the older `path`).
    fn read_source(&mut self, source: &Value, base: &Path, what: &str) -> Vec<Value> {
        let Some(path) =
            str_at(source, &["path_config_source", "path"]).or_else(|| str_at(source, &["path"]))
        else {
            self.unread.push(format!("{what} from a non-file xDS source (read a live Envoy with --admin)"));
            return Vec::new();
        };
        let mut candidates = vec![PathBuf::from(path)];
        if Path::new(path).is_relative() {
            candidates.push(base.join(path));
        }
        for candidate in candidates {
            if let Ok(text) = std::fs::read_to_string(&candidate) {
                return match parse_yaml(&text) {
                    Ok(v) => list(&v, &["resources"]).to_vec(),
                    Err(e) => {
                        self.unread.push(format!("{what} from {path}: {e}"));
                        Vec::new()
                    }
                };
            }
        }
        self.unread.push(format!("{what} from {path}: file not found"));
        Vec::new()
    }

    fn add_cluster(&mut self, c: &Value, base: &Path) {
        let Some(name) = str_at(c, &["name"]) else { return };
        if let Some(cla) = c.get("load_assignment") {
            self.add_assignment(cla);
        } else if let Some(source) = at(c, &["eds_cluster_config", "eds_config"]) {
            if !base.as_os_str().is_empty() || str_at(source, &["path_config_source", "path"]).is_some() {
                for r in self.read_source(&source.clone(), base, "endpoints") {
                    self.add_assignment(&r);
                }
            }
        }
        self.clusters.insert(name.to_string(), c.clone());
    }

    fn add_assignment(&mut self, cla: &Value) {
        if let Some(name) = str_at(cla, &["cluster_name"]) {
            let lb_endpoints: Vec<&Value> =
                list(cla, &["endpoints"]).iter().flat_map(|e| list(e, &["lb_endpoints"])).collect();
            self.endpoints.insert(name.to_string(), lb_endpoints.len());
            let internal: Vec<InternalEndpoint> = lb_endpoints
                .iter()
                .filter_map(|e| {
                    let address = at(e, &["endpoint", "address", "envoy_internal_address"])?;
                    let metadata =
                        at(e, &["metadata", "filter_metadata", "envoy.filters.listener.original_dst"]);
                    Some(InternalEndpoint {
                        listener: str_at(address, &["server_listener_name"]).unwrap_or("").to_string(),
                        endpoint_id: str_at(address, &["endpoint_id"]).unwrap_or("").to_string(),
                        waypoint: metadata.and_then(|m| str_at(m, &["waypoint"])).map(str::to_string),
                    })
                })
                .collect();
            if !internal.is_empty() {
                self.internal_endpoints.insert(name.to_string(), internal);
            }
        }
    }

    fn add_route_config(&mut self, rc: &Value) {
        if let Some(name) = str_at(rc, &["name"]) {
            self.routes.insert(name.to_string(), rc.clone());
        }
    }

    fn add_ecds(&mut self, tec: &Value) {
        if let Some(name) = str_at(tec, &["name"]) {
            self.ecds.insert(name.to_string(), tec.clone());
        }
    }
}

/// An error and its causes on one line (reqwest's top-level message alone hides the reason).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s = s.to_string();
        if !text.contains(&s) {
            text.push_str(": ");
            text.push_str(&s);
        }
        source = s_source(source);
    }
    text
}

fn s_source<'a>(
    e: Option<&'a (dyn std::error::Error + 'static)>,
) -> Option<&'a (dyn std::error::Error + 'static)> {
    e.and_then(|e| e.source())
}
