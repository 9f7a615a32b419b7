//! The control-plane renderers the tests run instead of a control plane. Each is the
//! project's own model of a translation, written from the control plane's source and
//! checked only against it: `scripts/istio-render.py` models istiod's (Istio 1.30.3),
//! `scripts/envoy-gateway-render.py` Envoy Gateway v1.9.0's. A test that runs their
//! output shows what Envoy does with the configuration the model produces, not what
//! istiod or Envoy Gateway produce.

pub mod istio {
    use crate::common::repo;
    use std::path::Path;
    use std::process::Command;

    /// Runs scripts/istio-render.py with the manifests of `istio_dir` and endpoints given as
    /// `ip:port[=ready|terminating|stopped]` (EndpointSlice conditions); `endpoints_only`
    /// rewrites eds.yaml alone, as istiod pushes EDS when a pod's conditions change.
    pub fn render_from(
        istio_dir: &str,
        plugin: &str,
        endpoints: &[String],
        out: &Path,
        endpoints_only: bool,
    ) -> (String, String) {
        render_with(istio_dir, plugin, endpoints, out, endpoints_only, false)
    }

    /// [`render_from`], with the pods enrolled in Istio ambient when `ambient` (`--ambient`:
    /// endpoints as internal addresses of `connect_originate`).
    pub fn render_with(
        istio_dir: &str,
        plugin: &str,
        endpoints: &[String],
        out: &Path,
        endpoints_only: bool,
        ambient: bool,
    ) -> (String, String) {
        let mut cmd = Command::new("python3");
        cmd.current_dir(repo()).arg("scripts/istio-render.py").args(["--plugin", plugin]);
        if ambient {
            cmd.arg("--ambient");
        }
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

    /// Runs scripts/istio-render.py on the native recipe (`envoy_filter`, an EnvoyFilter
    /// loading tether's dynamic module) with the manifests of `istio_dir` and the module's
    /// in-pod filename replaced by `module` (`--native-module`); `extra` arguments are passed
    /// on (`--session-filter`). Returns envoy.yaml; the renderer's refusal fails the test.
    pub fn render_native(
        istio_dir: &str,
        envoy_filter: &str,
        module: &Path,
        endpoints: &[String],
        out: &Path,
        endpoints_only: bool,
        extra: &[&str],
    ) -> String {
        let result = native_renderer(istio_dir, envoy_filter, module, endpoints, out, endpoints_only, extra);
        assert!(result.status.success(), "render failed: {}", String::from_utf8_lossy(&result.stderr));
        std::fs::read_to_string(out.join("envoy.yaml")).unwrap_or_default()
    }

    /// [`render_native`]'s command, its output unchecked (for refusals).
    pub fn native_renderer(
        istio_dir: &str,
        envoy_filter: &str,
        module: &Path,
        endpoints: &[String],
        out: &Path,
        endpoints_only: bool,
        extra: &[&str],
    ) -> std::process::Output {
        let mut cmd = Command::new("python3");
        cmd.current_dir(repo())
            .arg("scripts/istio-render.py")
            .args(["--plugin", envoy_filter, "--istio-dir", istio_dir, "--native-module"])
            .arg(module)
            .args(extra);
        for endpoint in endpoints {
            cmd.args(["--endpoint", endpoint]);
        }
        if endpoints_only {
            cmd.arg("--endpoints-only");
        }
        cmd.arg("--out").arg(out).output().expect("python3 scripts/istio-render.py")
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
}

pub mod envoy_gateway {
    use crate::common::{mint_sessions, repo, scratch_dir, visit_sessions, websocket, Envoy, Pod};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};

    pub fn renderer(args: &[&str]) -> Output {
        Command::new("python3")
            .current_dir(repo())
            .arg("scripts/envoy-gateway-render.py")
            .args(args)
            .output()
            .expect("python3 scripts/envoy-gateway-render.py")
    }

    pub fn path(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// What `make envoy-gateway IMAGE=…` does, into a scratch directory: the OCI image layout
    /// of the built module (scripts/oci.py, as `make image`), then the manifests with the
    /// EnvoyExtensionPolicy pinned to its digest. Returns the ready-manifests directory.
    pub fn pinned(tag: &str) -> PathBuf {
        let dir = scratch_dir(tag);
        let layout = dir.join("oci");
        let built = Command::new("python3")
            .current_dir(repo())
            .args(["scripts/oci.py", "build", "target/wasm32-wasip1/release/tether.wasm"])
            .arg(&layout)
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
        let printed = String::from_utf8_lossy(&built.stdout).into_owned();
        let digest = printed
            .lines()
            .find_map(|l| l.strip_prefix("image digest:"))
            .expect("oci.py prints the image digest")
            .trim()
            .trim_start_matches("sha256:")
            .to_string();
        let out = dir.join("manifests");
        let result = renderer(&[
            "--pin",
            "registry.example.com:5000/tether/tether:0.1.0",
            "--layout",
            path(&layout),
            "--out",
            path(&out),
        ]);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
        let eep = std::fs::read_to_string(out.join("envoyextensionpolicy.yaml")).unwrap();
        assert!(
            eep.contains(&format!("url: registry.example.com:5000/tether/tether@sha256:{digest}\n"))
                && eep.contains(&format!("sha256: {digest}\n")),
            "the image is pinned to the digest `make image` printed:\n{eep}"
        );
        assert!(!out.join("helm-values.yaml").exists(), "only Kubernetes manifests are written");
        out
    }

    /// Renders `manifests` with endpoints given as `ip:port[=ready|terminating|stopped]`;
    /// returns envoy.yaml (empty with `endpoints_only`).
    pub fn render(manifests: &Path, endpoints: &[String], out: &Path, endpoints_only: bool) -> String {
        render_with(manifests, endpoints, out, endpoints_only, &[])
    }

    /// [`render`] with more arguments for the renderer (`--native-module PATH`).
    pub fn render_with(
        manifests: &Path,
        endpoints: &[String],
        out: &Path,
        endpoints_only: bool,
        extra: &[&str],
    ) -> String {
        let mut args = vec!["--manifests", path(manifests), "--out", path(out)];
        args.extend(extra);
        for e in endpoints {
            args.extend(["--endpoint", e.as_str()]);
        }
        if endpoints_only {
            args.push("--endpoints-only");
        }
        let result = renderer(&args);
        assert!(result.status.success(), "render failed: {}", String::from_utf8_lossy(&result.stderr));
        if endpoints_only {
            return String::new();
        }
        std::fs::read_to_string(out.join("envoy.yaml")).unwrap()
    }

    /// A copy of the ready manifests.
    pub fn copy_of(manifests: &Path, tag: &str) -> PathBuf {
        let dir = scratch_dir(tag);
        for entry in std::fs::read_dir(manifests).unwrap() {
            let p = entry.unwrap().path();
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
        dir
    }

    /// A copy of the ready manifests with one text edit (which must occur exactly once).
    pub fn edited(manifests: &Path, file: &str, from: &str, to: &str, tag: &str) -> PathBuf {
        let dir = copy_of(manifests, tag);
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        assert_eq!(text.matches(from).count(), 1, "{file} must contain `{from}` once");
        std::fs::write(dir.join(file), text.replace(from, to)).unwrap();
        dir
    }

    pub const FILTER_ORDER: &str =
        "  filterOrder:\n  - name: envoy.filters.http.wasm\n    before: envoy.filters.http.stateful_session\n";

    // ---------------------------------------------------------------- draining

    /// How a test renders manifests: (manifests, endpoints, out, endpoints_only) -> envoy.yaml.
    pub type Renderer = dyn Fn(&Path, &[String], &Path, bool) -> String;

    /// (sessions of `drained` that stayed, sessions of other pods that moved).
    pub fn count(sessions: &[(String, String)], after: &[(String, bool)], drained: &str) -> (usize, usize) {
        let stayed = sessions
            .iter()
            .zip(after)
            .filter(|((_, pod), (now, repinned))| pod == drained && now == drained && !repinned)
            .count();
        let others_moved = sessions
            .iter()
            .zip(after)
            .filter(|((_, pod), (now, repinned))| pod != drained && (now != pod || *repinned))
            .count();
        (stayed, others_moved)
    }

    pub struct Drained {
        pub own: usize,
        pub stayed: usize,
        pub ws_stayed: usize,
        pub fresh_on_drained: usize,
        pub gone_moved: Option<usize>,
    }

    /// 300 sessions over 3 pods; pod a begins its graceful shutdown (EndpointSlice: serving,
    /// terminating, not ready), which Envoy Gateway sends as DRAINING; then (with `until_gone`)
    /// it exits and leaves the EndpointSlice. `render` renders the manifests (see [`render`]),
    /// `start` starts Envoy with the rendering; `cluster` is the route's cluster.
    pub fn drain(
        manifests: &Path,
        tag: &str,
        until_gone: bool,
        cluster: &str,
        render: &Renderer,
        start: &dyn Fn(String, &[Pod]) -> Envoy,
    ) -> Drained {
        let mut pods = Pod::start_many(3);
        let out = scratch_dir(tag);
        let mut states: Vec<String> = pods.iter().map(|p| p.addr.to_string()).collect();
        let envoy = start(render(manifests, &states, &out, false), &pods);
        let sessions = mint_sessions(&envoy, 300);
        let (drained, drained_addr) = (pods[0].name.clone(), pods[0].addr);
        let own: Vec<&(String, String)> = sessions.iter().filter(|(_, pod)| *pod == drained).collect();
        assert!(own.len() >= 50, "{} of 300 sessions on {drained}", own.len());

        states[0] = format!("{drained_addr}=terminating");
        render(manifests, &states, &out, true);
        envoy.wait_flags_in(cluster, drained_addr, "/eds_status_draining");
        envoy.settle();
        let after = visit_sessions(&envoy, &sessions);
        let (stayed, others_moved) = count(&sessions, &after, &drained);
        assert_eq!(others_moved, 0, "sessions of the other pods moved");
        let ws_stayed = own
            .iter()
            .filter(|(cookie, _)| {
                let (r, first_frame) = websocket(envoy.addr(), Some(cookie));
                assert_eq!(r.status, 101);
                first_frame == drained && r.set_cookie().is_none()
            })
            .count();
        let fresh_on_drained = mint_sessions(&envoy, 150).iter().filter(|(_, pod)| *pod == drained).count();
        let mut gone_moved = None;
        if until_gone {
            // The pod exits; Kubernetes removes it from the EndpointSlice.
            pods[0].kill();
            states.remove(0);
            render(manifests, &states, &out, true);
            envoy.wait_removed_in(cluster, drained_addr);
            envoy.settle();
            let gone = visit_sessions(&envoy, &sessions);
            let moved = sessions
                .iter()
                .zip(&gone)
                .filter(|((_, pod), (now, repinned))| *pod == drained && *now != drained && *repinned)
                .count();
            assert_eq!(count(&sessions, &gone, &drained).1, 0, "other sessions moved when the pod left");
            gone_moved = Some(moved);
        }
        Drained { own: own.len(), stayed, ws_stayed, fresh_on_drained, gone_moved }
    }
}
