//! The entrypoint of tether's native image (`make native-image`, `/install`): copies the
//! `libtether.so` beside it (the image's `/libtether.so`) into the directory named by its
//! one argument, readable by everyone, so that an init container can put the module where
//! Envoy's container mounts it (envoy-gateway/native/envoyproxy.yaml). The image has
//! nothing else, no shell and no `cp`, so the copy is this static binary.
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir] = args.as_slice() else {
        eprintln!("usage: install DIRECTORY (copies the libtether.so beside this program into it)");
        return ExitCode::from(2);
    };
    let from = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("libtether.so")))
        .unwrap_or_else(|| PathBuf::from("/libtether.so"));
    let to = Path::new(dir).join("libtether.so");
    let copied = std::fs::copy(&from, &to)
        .and_then(|_| std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o444)));
    match copied {
        Ok(()) => {
            println!("installed {} as {}", from.display(), to.display());
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("cannot copy {} to {}: {error}", from.display(), to.display());
            ExitCode::FAILURE
        }
    }
}
