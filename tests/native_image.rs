//! `make native-image`'s OCI image (target/oci-native): one image per platform, linux/amd64
//! and linux/arm64, each holding /libtether.so and its entrypoint /install. Each platform's
//! module needs nothing but glibc, at most GLIBC_2.36 (Envoy's distroless images hold glibc
//! alone), the entrypoint is static and copies the module, the layout is what the builds
//! give byte for byte, and each module runs in a real Envoy of its platform: amd64 in the
//! pinned 1.39.3 and 1.40.0, arm64 in the pinned arm64 Envoy 1.39.3 under qemu-user.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const LAYOUT: &str = "target/oci-native";
const PLATFORMS: [(&str, &str, &str); 2] = [
    ("amd64", "x86_64-unknown-linux-gnu", "Advanced Micro Devices X86-64"),
    ("arm64", "aarch64-unknown-linux-gnu", "AArch64"),
];
/// The oldest glibc of the Envoy images (distroless on Debian 12).
const GLIBC_FLOOR: (u32, u32) = (2, 36);

fn run(cmd: &mut Command) -> String {
    let out: Output = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{cmd:?}: {text}{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// `arch`'s image, unpacked (every digest checked by oci.py).
fn unpack(arch: &str) -> PathBuf {
    assert!(repo().join(LAYOUT).join("index.json").exists(), "run `make native-image` (or `make test`)");
    let dir = scratch_dir(&format!("native-image-{arch}"));
    run(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/oci.py", "extract-native", LAYOUT, arch])
        .arg(&dir));
    dir
}

fn readelf(args: &[&str], file: &Path) -> String {
    run(Command::new("readelf").args(args).arg(file))
}

/// The newest `GLIBC_x.y` version a file's dynamic symbols name.
fn newest_glibc(file: &Path) -> (u32, u32) {
    readelf(&["--dyn-syms", "-W"], file)
        .split("GLIBC_")
        .skip(1)
        .filter_map(|rest| {
            let version: String = rest.chars().take_while(|c| c.is_ascii_digit() || *c == '.').collect();
            let mut parts = version.split('.').map(|n| n.parse::<u32>().ok());
            Some((parts.next()??, parts.next().flatten().unwrap_or(0)))
        })
        .max()
        .expect("the module names glibc symbols")
}

#[test]
fn each_platform_holds_a_module_needing_only_glibc_and_a_static_entrypoint() {
    for (arch, _, machine) in PLATFORMS {
        let dir = unpack(arch);
        let (module, install) = (dir.join("libtether.so"), dir.join("install"));
        for file in [&module, &install] {
            assert!(readelf(&["-h"], file).contains(machine), "{} is not {machine}", file.display());
        }
        let needed: Vec<String> = readelf(&["-d"], &module)
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1).map(|n| n.trim_end_matches(']').to_string()))
            .collect();
        assert!(
            needed.iter().all(|n| n == "libc.so.6" || n.starts_with("ld-linux")),
            "{arch}: the module needs {needed:?}: Envoy's distroless image has glibc alone (no libgcc_s)"
        );
        let newest = newest_glibc(&module);
        assert!(newest <= GLIBC_FLOOR, "{arch}: needs GLIBC_{}.{}", newest.0, newest.1);
        assert!(!readelf(&["-d"], &install).contains("(NEEDED)"), "{arch}: /install is not static");
        println!("linux/{arch}: NEEDED {needed:?}, newest GLIBC_{}.{}, /install static", newest.0, newest.1);
    }
}

/// The layout is exactly what the builds give: written again from them, the digest is the same.
#[test]
fn the_image_is_what_the_builds_give_byte_for_byte() {
    let built = |arch: &str, gnu: &str| {
        let musl = gnu.replace("-gnu", "-musl");
        let module = repo().join(format!("target/native-image/build/{gnu}/native/libtether.so"));
        let install = repo().join(format!("target/native-image/build/{musl}/release/install"));
        format!("{arch}={},{}", module.display(), install.display())
    };
    let digest = |layout: &Path| {
        run(Command::new("python3").current_dir(repo()).args(["scripts/oci.py", "digest"]).arg(layout))
    };
    let again = scratch_dir("native-layout");
    let platforms: Vec<String> = PLATFORMS.iter().map(|(arch, gnu, _)| built(arch, gnu)).collect();
    run(Command::new("python3")
        .current_dir(repo())
        .args(["scripts/oci.py", "native"])
        .arg(&again)
        .arg("1.39.3")
        .args(&platforms));
    assert_eq!(digest(&again), digest(&repo().join(LAYOUT)), "the layout is not what the builds give");
    // Each module in the image is its build, and the entrypoint copies it where it is told.
    for (arch, gnu, _) in PLATFORMS {
        let dir = unpack(arch);
        let module = std::fs::read(dir.join("libtether.so")).unwrap();
        assert_eq!(
            module,
            std::fs::read(repo().join(format!("target/native-image/build/{gnu}/native/libtether.so")))
                .unwrap()
        );
        let to = scratch_dir(&format!("native-install-{arch}"));
        let mut install =
            if arch == "arm64" { Command::new("qemu-aarch64") } else { Command::new(dir.join("install")) };
        if arch == "arm64" {
            install.arg(dir.join("install"));
        }
        run(install.arg(&to));
        assert_eq!(
            std::fs::read(to.join("libtether.so")).unwrap(),
            module,
            "{arch}: /install copied something else"
        );
    }
}

/// A session through Envoy with `module`: minted, then five hits on the same pod; the log
/// names the build and the ABI check Envoy made.
fn sticks(envoy_bin: PathBuf, module: &Path, abi_line: &str) {
    let pods = Pod::start_many(3);
    let config =
        EnvoyConfig::shipped_native().endpoints(&addrs(&pods)).native_module(module).envoy_binary(envoy_bin);
    let envoy = Envoy::start(config, &pods.iter().collect::<Vec<_>>());
    let first = envoy.get_with_cookie(None);
    assert_eq!(first.status, 200);
    let cookie = first.cookie_value().expect("a new session sets the cookie");
    for _ in 0..5 {
        let r = envoy.get_with_cookie(Some(&cookie));
        assert_eq!((r.status, r.pod(), r.set_cookie()), (200, first.pod(), None));
    }
    let log = envoy.log();
    assert!(log.contains("native for Envoy 1.39) configured"), "{log}");
    assert!(log.contains(abi_line), "{abi_line}\n{log}");
}

#[test]
fn the_amd64_module_runs_in_envoy_1_39_and_1_40() {
    let module = unpack("amd64").join("libtether.so");
    sticks(pinned_envoy("1.39.3"), &module, "Dynamic module ABI version v0.1.0 matched");
    sticks(pinned_envoy("1.40.0"), &module, "Dynamic module ABI version v0.1.0 is deprecated");
}

/// The arm64 Envoy (pinned wheel) runs under qemu-user through the arm64 dynamic loader of
/// Debian's cross C library (installed with the cross compiler by `make native-image`).
#[test]
fn the_arm64_module_runs_in_arm64_envoy_1_39_under_qemu() {
    let out = Command::new(repo().join("scripts/envoy.sh"))
        .env("ENVOY_VERSION", "1.39.3")
        .env("ENVOY_ARCH", "aarch64")
        .output()
        .expect("scripts/envoy.sh");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let envoy = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let sysroot = "/usr/aarch64-linux-gnu";
    let wrapper = scratch_dir("envoy-arm64").join("envoy");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec qemu-aarch64 {sysroot}/lib/ld-linux-aarch64.so.1 --library-path {sysroot}/lib {envoy} \"$@\"\n"),
    )
    .unwrap();
    run(Command::new("chmod").arg("+x").arg(&wrapper));
    let version = run(Command::new(&wrapper).arg("--version"));
    assert!(version.contains("/1.39.3/"), "{version}");
    sticks(wrapper, &unpack("arm64").join("libtether.so"), "Dynamic module ABI version v0.1.0 matched");
}
