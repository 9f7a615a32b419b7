// tether's ABI declarations (src/hosts/native/abi.rs) take the declared ABI version from
// the build; the empty module declares the one of the Envoy it is built for, as tether does.
fn main() {
    println!("cargo:rerun-if-env-changed=ENVOY_VERSION");
    let version = std::env::var("ENVOY_VERSION").unwrap_or_default();
    let abi = if version.starts_with("1.39.") { "v0.1.0" } else { "v0.2.0" };
    println!("cargo:rustc-env=TETHER_ENVOY_ABI={abi}");
}
