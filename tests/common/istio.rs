//! The manifests in istio/ as istiod would send them: scripts/istio-render.py, the
//! project's model of istiod's translation (not istiod itself).

use super::repo;
use std::path::Path;
use std::process::Command;

/// Runs scripts/istio-render.py with the manifests of `istio_dir` and endpoints given as
/// `ip:port[=ready|terminating|stopped]` (EndpointSlice conditions); `endpoints_only`
/// rewrites eds.yaml alone, as istiod pushes EDS when a pod's conditions change. Returns
/// (envoy.yaml, ecds.yaml) contents.
pub fn render_from(
    istio_dir: &str,
    plugin: &str,
    endpoints: &[String],
    out: &Path,
    endpoints_only: bool,
) -> (String, String) {
    let mut cmd = Command::new("python3");
    cmd.current_dir(repo()).arg("scripts/istio-render.py").args(["--plugin", plugin]);
    cmd.args(["--istio-dir", istio_dir]);
    for endpoint in endpoints {
        cmd.args(["--endpoint", endpoint]);
    }
    if endpoints_only {
        cmd.arg("--endpoints-only");
    }
    let result = cmd.arg("--out").arg(out).output().expect("python3 scripts/istio-render.py");
    assert!(result.status.success(), "render failed: {}", String::from_utf8_lossy(&result.stderr));
    let read = |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_default();
    (read("envoy.yaml"), read("ecds.yaml"))
}

/// The rendered cluster's name (tokens are bound to it: no `scope` in pluginConfig).
pub fn cluster_name(out: &Path) -> String {
    std::fs::read_to_string(out.join("eds.yaml"))
        .unwrap()
        .lines()
        .find_map(|l| l.trim().strip_prefix("cluster_name: "))
        .expect("the rendered cluster")
        .trim_matches(['"', '\''])
        .to_string()
}
