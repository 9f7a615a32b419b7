// Records the git commit in the module so its start-up log line says what is running.
use std::process::Command;

fn main() {
    let sha = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TETHER_GIT_SHA={sha}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    if std::env::var_os("CARGO_FEATURE_NATIVE").is_some() {
        native_abi();
    }
    println!("cargo:rerun-if-changed=.git/refs/heads");
}

/// The native build declares the dynamic-module ABI of the Envoy it is built for
/// (`ENVOY_VERSION`, as in `make build-native ENVOY_VERSION=1.39.3`; default 1.40): Envoy
/// compares it at load and only warns on a mismatch. The callbacks tether calls are the
/// same in both ABIs (docs/native.md), so the string is all that differs.
fn native_abi() {
    println!("cargo:rerun-if-env-changed=ENVOY_VERSION");
    let version = std::env::var("ENVOY_VERSION").unwrap_or_else(|_| "1.40.0".into());
    let minor = version.split('.').take(2).collect::<Vec<_>>().join(".");
    let abi = match minor.as_str() {
        "1.39" => "v0.1.0",
        "1.40" => "v0.2.0",
        _ => {
            println!(
                "cargo:warning=ENVOY_VERSION={version}: the native build is for Envoy 1.39 or 1.40 (docs/native.md)"
            );
            std::process::exit(1);
        }
    };
    println!("cargo:rustc-env=TETHER_ENVOY_ABI={abi}");
    println!("cargo:rustc-env=TETHER_ENVOY_RELEASE={minor}");
}
