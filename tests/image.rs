//! `make image`'s OCI image through a real registry with the standard tool: Debian's
//! docker-registry on loopback (scripts/registry.sh), pushed by scripts/push.sh (`make
//! push`, skopeo), pulled back by tag and by digest with skopeo, and the module extracted
//! as istio-agent does is byte-identical to the built .wasm. The image is reproducible, a
//! wrong digest is refused, and `make istio`'s manifests pin exactly the pushed digest. The
//! native image (`make native-image`, an index of two platforms) goes the same way.

mod common;

use common::*;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn oci(args: &[&str]) -> Output {
    Command::new("python3").current_dir(repo()).arg("scripts/oci.py").args(args).output().expect("python3")
}

fn ok(out: Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The value after `label` on its line of `oci.py build`'s output.
fn field(text: &str, label: &str) -> String {
    let line = text
        .lines()
        .map(str::trim_start)
        .find(|l| l.starts_with(label))
        .unwrap_or_else(|| panic!("no `{label}` in {text}"));
    line[label.len()..].split_whitespace().next().unwrap().to_string()
}

struct Registry {
    child: Child,
    addr: String,
}

impl Registry {
    fn start(data: &Path) -> Registry {
        let port = free_port();
        let child = Command::new(repo().join("scripts/registry.sh"))
            .arg("run")
            .arg(port.to_string())
            .arg(data)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(data.with_extension("log")).unwrap())
            .spawn()
            .expect("scripts/registry.sh");
        let addr = format!("127.0.0.1:{port}");
        let socket = addr.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60); // includes a first install
        let mut registry = Registry { child, addr };
        loop {
            if let Ok(r) = http_to(socket, "GET", "/v2/", &[]) {
                if r.status == 200 {
                    return registry;
                }
            }
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("registry exited ({status}): see {}", data.with_extension("log").display());
            }
            assert!(Instant::now() < deadline, "registry not ready after 60s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn image_round_trips_through_a_registry_byte_identical() {
    let wasm = repo().join("target/wasm32-wasip1/release/tether.wasm");
    assert!(wasm.exists(), "run `make build` first");
    let module = std::fs::read(&wasm).unwrap();
    let dir = scratch_dir("image");
    let layout = dir.join("layout");
    let built = ok(oci(&["build", wasm.to_str().unwrap(), layout.to_str().unwrap()]));
    let digest = field(&built, "image digest:");
    assert!(digest.starts_with("sha256:") && digest.len() == 71, "{digest}");
    assert_eq!(field(&built, "sha256:").len(), 64);
    assert_eq!(
        format!("sha256:{}", field(&built, "sha256:")),
        digest,
        "WasmPlugin.sha256 is the manifest digest"
    );

    // Reproducible: the same module gives the same digest.
    let again = ok(oci(&["build", wasm.to_str().unwrap(), dir.join("layout2").to_str().unwrap()]));
    assert_eq!(field(&again, "image digest:"), digest);

    // The manifest is the compat variant Istio reads: one OCI tar+gzip layer.
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(layout.join("blobs/sha256").join(&digest["sha256:".len()..])).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);

    let registry = Registry::start(&dir.join("registry"));
    let tagged = format!("{}/tether/tether:0.1.0", registry.addr);
    let pushed = push(&tagged, &layout);
    assert_eq!(field(&pushed, "image digest:"), digest, "the registry holds the built image unchanged");
    let pinned = format!("{}/tether/tether@{digest}", registry.addr);
    assert_eq!(field(&pushed, "pinned:"), pinned);

    for (i, reference) in [tagged.clone(), pinned.clone()].iter().enumerate() {
        let pulled = dir.join(format!("pulled-{i}"));
        ok(skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            &format!("docker://{reference}"),
            &oci_dir(&pulled),
        ]));
        let out = dir.join(format!("pulled-{i}.wasm"));
        let extracted = ok(oci(&["extract", pulled.to_str().unwrap(), out.to_str().unwrap()]));
        assert!(extracted.contains(&digest), "{extracted}");
        assert!(
            std::fs::read(&out).unwrap() == module,
            "{reference}: the pulled module differs from the built one"
        );
        println!("{reference}: {}", extracted.trim());
    }

    // A digest the registry does not have is an error, not an empty module.
    let missing = format!("docker://{}/tether/tether@sha256:{}", registry.addr, "0".repeat(64));
    let refused = skopeo(&["copy", "--src-tls-verify=false", &missing, &oci_dir(&dir.join("none"))]);
    assert!(!refused.status.success(), "{refused:?}");
    assert!(!dir.join("none/index.json").exists());

    // `make istio`: the manifests pin the url and sha256 to the pushed digest; the base in
    // istio/ carries neither (Istio's admission refuses a WasmPlugin without a url).
    let manifests = dir.join("istio");
    ok(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/istio-manifests.py", "--image", &tagged, "--digest", &digest, "--out"])
        .arg(&manifests)
        .output()
        .unwrap());
    for plugin in ["wasmplugin-gateway.yaml", "wasmplugin-sidecar.yaml"] {
        let base = std::fs::read_to_string(repo().join("istio").join(plugin)).unwrap();
        assert!(!base.lines().any(|l| l.starts_with("  url:") || l.starts_with("  sha256:")), "{plugin}");
        let text = std::fs::read_to_string(manifests.join(plugin)).unwrap();
        assert!(text.contains(&format!("\n  url: oci://{pinned}\n")), "{plugin}:\n{text}");
        assert!(text.contains(&format!("\n  sha256: {}\n", &digest["sha256:".len()..])), "{plugin}");
    }
    let kustomization = std::fs::read_to_string(manifests.join("kustomization.yaml")).unwrap();
    for file in ["wasmplugin-gateway.yaml", "service.yaml", "destinationrule.yaml", "gateway.yaml"] {
        assert!(kustomization.contains(&format!("- {file}\n")), "{kustomization}");
    }
    assert!(!manifests.join("istiod-values.yaml").exists(), "Helm values are not a resource to apply");

    // The Gateway API variant: its own directory and kustomization (it needs the Gateway API
    // CRDs and deploys a second gateway), with the resources it shares with the classic set.
    let api = manifests.join("gateway-api");
    let text = std::fs::read_to_string(api.join("wasmplugin-gateway-api.yaml")).unwrap();
    assert!(text.contains(&format!("\n  url: oci://{pinned}\n")), "wasmplugin-gateway-api.yaml:\n{text}");
    assert!(text.contains(&format!("\n  sha256: {}\n", &digest["sha256:".len()..])));
    let base = std::fs::read_to_string(repo().join("istio/wasmplugin-gateway-api.yaml")).unwrap();
    assert!(!base.lines().any(|l| l.starts_with("  url:") || l.starts_with("  sha256:")));
    let kustomization = std::fs::read_to_string(api.join("kustomization.yaml")).unwrap();
    for file in ["wasmplugin-gateway-api.yaml", "gateway-api.yaml", "service.yaml", "destinationrule.yaml"] {
        assert!(kustomization.contains(&format!("- {file}\n")), "{kustomization}");
        assert!(api.join(file).exists(), "{file}");
    }
    for file in ["gateway-api.yaml", "wasmplugin-gateway-api.yaml"] {
        assert!(!manifests.join(file).exists(), "{file} is not in the classic set");
    }

    // The waypoint recipe: pinned, with its own kustomization; the extras copied as they are.
    let waypoint = manifests.join("waypoint");
    let text = std::fs::read_to_string(waypoint.join("wasmplugin-waypoint.yaml")).unwrap();
    assert!(text.contains(&format!("\n  url: oci://{pinned}\n")), "wasmplugin-waypoint.yaml:\n{text}");
    let kustomization = std::fs::read_to_string(waypoint.join("kustomization.yaml")).unwrap();
    for file in ["wasmplugin-waypoint.yaml", "waypoint.yaml", "envoyfilter-waypoint-session.yaml"] {
        assert!(kustomization.contains(&format!("- {file}\n")), "{kustomization}");
    }
    let extra = "envoyfilter-subset-draining.yaml";
    assert_eq!(
        std::fs::read_to_string(manifests.join("extras").join(extra)).unwrap(),
        std::fs::read_to_string(repo().join("istio/extras").join(extra)).unwrap()
    );
}

/// `make native-image`'s image index through the same registry (`make push-native`): every
/// platform pushed and pulled back by digest, each module byte-identical to its build, and
/// `make envoy-gateway-native` pins the init container to that digest.
#[test]
fn native_image_round_trips_through_a_registry_every_platform() {
    let layout = repo().join("target/oci-native");
    assert!(layout.join("index.json").exists(), "run `make native-image` (or `make test`)");
    let digest = ok(oci(&["digest", layout.to_str().unwrap()])).trim().to_string();
    let dir = scratch_dir("native-image");
    let registry = Registry::start(&dir.join("registry"));
    let tagged = format!("{}/tether/tether-native:0.1.0", registry.addr);
    let pushed = push(&tagged, &layout);
    assert_eq!(field(&pushed, "image digest:"), digest, "the registry holds the built index unchanged");
    let pinned = format!("{}/tether/tether-native@{digest}", registry.addr);
    let pulled = dir.join("pulled");
    ok(skopeo(&[
        "copy",
        "--quiet",
        "--all",
        "--src-tls-verify=false",
        &format!("docker://{pinned}"),
        &oci_dir(&pulled),
    ]));
    for (arch, gnu) in [("amd64", "x86_64-unknown-linux-gnu"), ("arm64", "aarch64-unknown-linux-gnu")] {
        let out = dir.join(format!("pulled-{arch}"));
        ok(oci(&["extract-native", pulled.to_str().unwrap(), arch, out.to_str().unwrap()]));
        let built = repo().join(format!("target/native-image/build/{gnu}/native/libtether.so"));
        assert!(
            std::fs::read(out.join("libtether.so")).unwrap() == std::fs::read(&built).unwrap(),
            "{arch}: the pulled module differs from its build"
        );
    }
    let manifests = dir.join("envoy-gateway-native");
    ok(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/envoy-gateway-render.py", "--pin", &tagged, "--layout"])
        .arg(&layout)
        .args(["--manifests", "envoy-gateway/native", "--out"])
        .arg(&manifests)
        .output()
        .unwrap());
    let proxy = std::fs::read_to_string(manifests.join("envoyproxy.yaml")).unwrap();
    assert!(proxy.contains(&format!("image: {pinned}\n")), "{proxy}");
    assert!(!proxy.contains("registry.example.com"), "{proxy}");
    // `make istio-native`: the gateway chart's values pin the same image.
    let istio = dir.join("istio-native");
    ok(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/istio-manifests.py", "--native-image", &tagged, "--digest", &digest, "--out"])
        .arg(&istio)
        .output()
        .unwrap());
    let values = std::fs::read_to_string(istio.join("gateway-values.yaml")).unwrap();
    assert!(values.contains(&format!("image: {pinned}\n")), "{values}");
    assert!(!values.contains("registry.example.com"), "{values}");
}

/// `scripts/push.sh` (`make push`, `make push-native`) to the loopback registry; its output.
fn push(tagged: &str, layout: &Path) -> String {
    ok(Command::new(repo().join("scripts/push.sh"))
        .current_dir(repo())
        .env("TLS_VERIFY", "false")
        .arg(tagged)
        .arg(layout)
        .output()
        .unwrap())
}

fn skopeo(args: &[&str]) -> Output {
    Command::new("skopeo").args(args).output().expect("skopeo (make tools installs it)")
}

fn oci_dir(dir: &Path) -> String {
    format!("oci:{}", dir.display())
}
