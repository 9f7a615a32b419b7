//! `tether`, the operator command: `doctor` (reads an Envoy's configuration and names what
//! loses affinity), `probe` (measures affinity from outside, over HTTP/1.1, HTTPS, HTTP/2),
//! `keygen` and `token inspect` (the filter's own key and token code). Native only: the
//! wasm filter (the root `tether` crate) depends on none of this.

pub mod doctor;
pub mod keys;
pub mod probe;

use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;

#[derive(Parser, Debug)]
#[command(
    name = "tether",
    version,
    about = "tether's operator command: check an Envoy's configuration, measure affinity, make keys, inspect tokens"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Read an Envoy's configuration and name every setting that loses affinity or fails
    /// requests (exit 0: no error; 1: errors; 2: cannot read the configuration)
    Doctor {
        /// A running Envoy's admin address (e.g. http://127.0.0.1:9901; for an istio-proxy,
        /// `kubectl port-forward POD 15000` then http://127.0.0.1:15000)
        #[arg(long, required_unless_present = "config", conflicts_with = "config")]
        admin: Option<String>,
        /// An Envoy configuration file (YAML or JSON), or a saved /config_dump
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// Print the findings as JSON
        #[arg(long)]
        json: bool,
    },
    /// Measure session affinity from outside: stickiness, spread over pods, sessions moved
    Probe(probe::Options),
    /// Print a new key entry `ID=<base64 of 32 random bytes>` for `keys` / `keysFromEnv`
    Keygen {
        /// The key id (1-32 characters of A-Z a-z 0-9 _ -)
        #[arg(default_value = "k1")]
        id: String,
    },
    /// Tokens
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Verify a token with the filter's own code and print its claims, or why it is refused
    /// (exit 0: valid; 1: refused; 2: bad arguments)
    Inspect {
        /// The keys, as in `keys` / the keysFromEnv variable: id=base64secret[,...]
        #[arg(long, env = "TETHER_KEYS", hide_env_values = true)]
        keys: String,
        /// The scope tokens are bound to: the upstream cluster name, or the configured `scope`
        #[arg(long)]
        scope: String,
        /// The configured absoluteTimeout
        #[arg(long, default_value = "24h")]
        absolute_timeout: String,
        /// The configured idleTimeout, if any
        #[arg(long)]
        idle_timeout: Option<String>,
        /// Unix time to verify at (default: now)
        #[arg(long)]
        now: Option<u64>,
        /// The token: a cookie value, `name=value`, or a Set-Cookie line
        token: String,
    },
}

/// Parses `args` (with the program name first) and runs the command; returns the exit status.
pub fn run<I, T>(args: I, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            let _ = if code == 0 { write!(out, "{text}") } else { write!(err, "{text}") };
            return code;
        }
    };
    match cli.command {
        Command::Doctor { admin, config, json } => {
            let input = match (&admin, &config) {
                (Some(url), _) => doctor::Input::Admin(url),
                (None, Some(path)) => doctor::Input::File(path),
                (None, None) => return 2,
            };
            doctor::run(input, json, out, err)
        }
        Command::Probe(options) => probe::run(options, out, err),
        Command::Keygen { id } => match keys::keygen(&id) {
            Ok(entry) => {
                let _ = writeln!(out, "{entry}");
                0
            }
            Err(e) => {
                let _ = writeln!(err, "tether keygen: {e}");
                2
            }
        },
        Command::Token(TokenCommand::Inspect { keys, scope, absolute_timeout, idle_timeout, now, token }) => {
            let now = now.unwrap_or_else(|| {
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
            });
            let o = keys::Inspect {
                keys: &keys,
                scope: &scope,
                absolute_timeout: &absolute_timeout,
                idle_timeout: idle_timeout.as_deref(),
                now,
            };
            keys::inspect(&o, &token, out, err)
        }
    }
}
