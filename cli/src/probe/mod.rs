//! `tether probe`: measures session affinity of a deployment from the outside — stickiness,
//! the spread of sessions over pods, and sessions moved during a rollout — over HTTP/1.1,
//! HTTPS and HTTP/2. Each session keeps its own cookie store (`cookie_store`); requests go
//! through one shared `reqwest` blocking client (connection pool, rustls, ALPN h2).

pub mod stats;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cookie_store::CookieStore;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::blocking::Client;
use stats::Outcome;
use url::Url;

/// `tether probe` options.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Durations: 30, 1.5, 500ms, 2s, 5m.\n\
exit status: 0 measured; 1 below --min-stickiness; 2 bad arguments; 3 could not measure.")]
pub struct Options {
    /// The URL to measure: http:// or https://
    #[arg(value_parser = parse_url)]
    pub url: Url,
    /// Sessions
    #[arg(short = 'n', long, default_value = "100", value_parser = count(1, 1_000_000))]
    pub sessions: usize,
    /// Requests per session
    #[arg(short = 'm', long, default_value = "10", value_parser = count(1, 100_000))]
    pub requests: usize,
    /// Sessions in flight at once
    #[arg(short = 'c', long, default_value = "8", value_parser = count(1, 512))]
    pub concurrency: usize,
    /// Response header naming the pod that served
    #[arg(long, default_value = "x-pod", value_parser = parse_pod_header)]
    pub pod_header: String,
    /// The affinity cookie to report on (default: any cookie)
    #[arg(long, value_parser = parse_cookie_name)]
    pub cookie: Option<String>,
    /// Extra request header 'Name: value' (repeatable)
    #[arg(short = 'H', long = "header", value_parser = parse_header)]
    pub headers: Vec<(String, String)>,
    /// Per-request timeout
    #[arg(long, default_value = "5", value_parser = parse_timeout)]
    pub timeout: Duration,
    /// After the run, send one request per session every --interval for this long
    #[arg(long, value_parser = parse_duration)]
    pub watch: Option<Duration>,
    /// Time between watch rounds
    #[arg(long, default_value = "2", value_parser = parse_interval)]
    pub interval: Duration,
    /// Measure even if the service sets no cookie
    #[arg(long)]
    pub allow_no_cookie: bool,
    /// Exit 1 if fewer than this % of sessions stayed on one pod
    #[arg(long, value_parser = parse_percent)]
    pub min_stickiness: Option<f64>,
    /// Trust this CA certificate (PEM) for https:// besides the built-in roots
    #[arg(long, value_name = "PEM")]
    pub cacert: Option<std::path::PathBuf>,
    /// Do not verify the server's certificate (https://)
    #[arg(long, short = 'k')]
    pub insecure: bool,
    /// HTTP/1.1 only
    #[arg(long, conflicts_with = "http2")]
    pub http1: bool,
    /// HTTP/2 only (for http:// URLs: h2c with prior knowledge)
    #[arg(long)]
    pub http2: bool,
    /// Show progress on stderr (default: when stderr is a terminal)
    #[arg(long, overrides_with = "no_progress")]
    pub progress: bool,
    /// Never show progress
    #[arg(long)]
    pub no_progress: bool,
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    match url.scheme() {
        "http" | "https" if url.host().is_some() => Ok(url),
        "http" | "https" => Err(format!("`{text}` has no host")),
        other => Err(format!("`{other}://` is not supported (http:// or https://)")),
    }
}

fn count(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> + Clone {
    move |text| match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("`{text}` is not a whole number from {min} to {max}")),
    }
}

fn parse_pod_header(value: &str) -> Result<String, String> {
    if value.is_empty() || value.bytes().any(|b| b <= b' ' || b == b':') {
        return Err(format!("`{value}` is not a header name"));
    }
    Ok(value.to_ascii_lowercase())
}

fn parse_cookie_name(value: &str) -> Result<String, String> {
    if value.is_empty() || value.bytes().any(|b| b <= b' ' || b"=;,".contains(&b)) {
        return Err(format!("`{value}` is not a cookie name"));
    }
    Ok(value.to_string())
}

fn parse_header(value: &str) -> Result<(String, String), String> {
    let (k, v) = value.split_once(':').ok_or_else(|| format!("`{value}` is not `Name: value`"))?;
    let (k, v) = (k.trim(), v.trim());
    if k.is_empty() || k.bytes().any(|b| b <= b' ') || v.contains(['\r', '\n']) {
        return Err(format!("`{value}` is not `Name: value`"));
    }
    if ["host", "content-length", "cookie"].iter().any(|h| k.eq_ignore_ascii_case(h)) {
        return Err(format!("`{k}` is set by the probe"));
    }
    Ok((k.to_string(), v.to_string()))
}

pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let value: f64 =
        number.parse().map_err(|_| format!("`{text}` is not a duration (e.g. 30, 1.5, 500ms, 5m)"))?;
    let secs = value * scale;
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("duration `{text}` out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_timeout(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d < Duration::from_millis(10) {
            Err("at least 10ms".into())
        } else {
            Ok(d)
        }
    })
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    parse_duration(text).and_then(|d| {
        if d < Duration::from_millis(50) {
            Err("at least 50ms".into())
        } else {
            Ok(d)
        }
    })
}

fn parse_percent(value: &str) -> Result<f64, String> {
    match value.trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{value}` is not a percentage from 0 to 100")),
    }
}

/// Runs the probe; returns the exit status.
pub fn run(o: Options, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    if o.sessions.saturating_mul(o.requests) > 10_000_000 {
        let _ = writeln!(err, "tether probe: --sessions × --requests: at most 10,000,000 requests");
        return 2;
    }
    match Probe::new(o).and_then(|p| p.measure(out, err)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "tether probe: error: {e}");
            3
        }
    }
}

/// What one request gave back.
struct Response {
    status: u16,
    version: reqwest::Version,
    headers: reqwest::header::HeaderMap,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn set_cookies(&self) -> impl Iterator<Item = &str> {
        self.headers.get_all(reqwest::header::SET_COOKIE).iter().filter_map(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct Session {
    jar: CookieStore,
    outcomes: Vec<Outcome>,
    /// Responses after the first that set the affinity cookie again (re-pins).
    cookie_resets: usize,
    /// The pod of the last answered request.
    current: Option<String>,
}

struct Probe {
    o: Options,
    client: Client,
    /// The URL cookies are stored under: the probe's URL with https, so that `Secure`
    /// cookies are sent through a plain-HTTP port-forward too (every request goes to the
    /// one URL; Domain, Path and expiry are honoured).
    cookie_url: Url,
    started: Instant,
}

impl Probe {
    fn new(o: Options) -> Result<Probe, String> {
        let mut builder = Client::builder()
            .timeout(o.timeout)
            .connect_timeout(o.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(o.concurrency)
            .tcp_nodelay(true)
            .danger_accept_invalid_certs(o.insecure);
        if let Some(path) = &o.cacert {
            let pem = std::fs::read(path).map_err(|e| format!("--cacert {}: {e}", path.display()))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| format!("--cacert {}: not PEM certificates: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!("--cacert {}: no certificate in it", path.display()));
            }
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if o.http1 {
            builder = builder.http1_only();
        }
        if o.http2 {
            builder = builder.http2_prior_knowledge();
        }
        let client =
            builder.build().map_err(|e| format!("HTTP client: {}", crate::doctor::model::chain(&e)))?;
        let mut cookie_url = o.url.clone();
        let _ = cookie_url.set_scheme("https");
        Ok(Probe { o, client, cookie_url, started: Instant::now() })
    }

    fn send(&self, jar: &CookieStore) -> Result<Response, String> {
        let mut request = self.client.get(self.o.url.clone());
        for (k, v) in &self.o.headers {
            request = request.header(k, v);
        }
        let cookies: Vec<String> =
            jar.get_request_values(&self.cookie_url).map(|(n, v)| format!("{n}={v}")).collect();
        if !cookies.is_empty() {
            request = request.header(reqwest::header::COOKIE, cookies.join("; "));
        }
        let response = request.send().map_err(|e| crate::doctor::model::chain(&e))?;
        let (status, version, headers) =
            (response.status().as_u16(), response.version(), response.headers().clone());
        // Read the body so the connection goes back to the pool.
        response.bytes().map_err(|e| crate::doctor::model::chain(&e))?;
        Ok(Response { status, version, headers })
    }

    fn outcome(&self, r: &Result<Response, String>) -> Outcome {
        match r {
            Err(e) => Outcome::Transport(e.clone()),
            Ok(r) if r.status >= 500 => Outcome::Status(r.status),
            Ok(r) => match r.header(&self.o.pod_header) {
                Some(pod) if !pod.is_empty() => Outcome::Served(pod.to_string()),
                _ => Outcome::NoHeader(r.status),
            },
        }
    }

    /// Stores the response's cookies; returns whether it set the affinity cookie.
    fn store_cookies(&self, jar: &mut CookieStore, r: &Response) -> bool {
        let mut set = false;
        for value in r.set_cookies() {
            if jar.parse(value, &self.cookie_url).is_ok() {
                let name = value.split(['=', ';']).next().unwrap_or("").trim();
                set |= self.o.cookie.as_deref().is_none_or(|c| c == name);
            }
        }
        set
    }

    fn holds_cookie(&self, jar: &CookieStore) -> bool {
        match &self.o.cookie {
            Some(c) => jar.iter_unexpired().any(|k| k.name() == c),
            None => jar.iter_unexpired().next().is_some(),
        }
    }

    /// One request before the run, so that a wrong URL, header or cookie gives a clear
    /// error at once rather than a long run of failures. Returns the HTTP version used.
    fn preflight(&self) -> Result<reqwest::Version, String> {
        let url = &self.o.url;
        let mut jar = CookieStore::default();
        let r = self.send(&jar).map_err(|e| {
            format!("cannot reach {url}: {e}. Is the URL right, and is the service listening there?")
        })?;
        let names: BTreeSet<&str> = r.headers.keys().map(|k| k.as_str()).collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        if r.status >= 500 {
            return Err(format!(
                "{url} answered {} to a first request: the service is failing, nothing to measure",
                r.status
            ));
        }
        if r.header(&self.o.pod_header).is_none_or(str::is_empty) {
            return Err(format!(
                "the response ({}) has no `{}` header naming the pod that served it; headers received: {names}. \
                 Make the pods send one (e.g. the pod name from the Downward API) or name it with --pod-header",
                r.status, self.o.pod_header
            ));
        }
        let set = self.store_cookies(&mut jar, &r);
        if !set && !self.o.allow_no_cookie {
            let which = match &self.o.cookie {
                Some(c) => {
                    let names: Vec<String> = jar.iter_unexpired().map(|k| k.name().to_string()).collect();
                    format!("no `{c}` cookie (cookies set: {names:?})")
                }
                None => "no cookie".to_string(),
            };
            return Err(format!(
                "the first response from {url} set {which}: the service does not pin sessions with a cookie \
                 (is tether, or another cookie affinity, in the path of this URL?). \
                 Use --allow-no-cookie to measure anyway"
            ));
        }
        Ok(r.version)
    }

    fn show_progress(&self) -> bool {
        if self.o.no_progress {
            false
        } else {
            self.o.progress || std::io::stderr().is_terminal()
        }
    }

    /// Calls `work(i)` for every `i < n` on `concurrency` threads, showing progress.
    fn parallel(&self, n: usize, label: &str, work: impl Fn(usize) + Sync) {
        let next = AtomicUsize::new(0);
        let bar = if self.show_progress() {
            let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{msg}: {pos}/{len} ({percent}%) {elapsed_precise} {wide_bar}")
            {
                bar.set_style(style);
            }
            bar.set_message(label.to_string());
            bar
        } else {
            ProgressBar::hidden()
        };
        let workers = self.o.concurrency.min(n).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(i);
                    bar.inc(1);
                });
            }
        });
        bar.finish();
    }

    fn measure(&self, out: &mut dyn Write, _err: &mut dyn Write) -> Result<i32, String> {
        let o = &self.o;
        let version = self.preflight()?;
        let w = |out: &mut dyn Write, text: String| {
            let _ = writeln!(out, "{text}");
        };
        w(
            out,
            format!(
                "tether probe: {} sessions × {} requests, concurrency {}, {} over {version:?} (pod header `{}`)",
                o.sessions, o.requests, o.concurrency, o.url, o.pod_header
            ),
        );
        let sessions: Vec<Mutex<Session>> = (0..o.sessions).map(|_| Mutex::new(Session::default())).collect();
        let run_started = Instant::now();
        self.parallel(o.sessions, "sessions", |i| {
            let mut s = lock(&sessions[i]);
            for n in 0..o.requests {
                let r = self.send(&s.jar);
                let outcome = self.outcome(&r);
                if let Ok(r) = &r {
                    if self.store_cookies(&mut s.jar, r) && n > 0 {
                        s.cookie_resets += 1;
                    }
                }
                if let Some(pod) = outcome.pod() {
                    s.current = Some(pod.to_string());
                }
                s.outcomes.push(outcome);
            }
        });
        let elapsed = run_started.elapsed();
        let outcomes: Vec<Vec<Outcome>> = sessions.iter().map(|s| lock(s).outcomes.clone()).collect();
        let summary = stats::summarize(&outcomes);
        let with_cookie = sessions.iter().filter(|s| self.holds_cookie(&lock(s).jar)).count();
        let resets: usize = sessions.iter().map(|s| lock(s).cookie_resets).sum();
        w(
            out,
            format!(
                "requests:    {} sent in {:.1}s, {} answered by a pod, {} failed ({} 5xx, {} no response), {} without the header",
                summary.requests,
                elapsed.as_secs_f64(),
                summary.served,
                summary.failed(),
                summary.failed_status,
                summary.failed_transport,
                summary.no_header
            ),
        );
        if let Some(example) = outcomes.iter().flatten().find_map(|o| match o {
            Outcome::Transport(e) => Some(e.clone()),
            _ => None,
        }) {
            w(out, format!("             first transport error: {example}"));
        }
        w(
            out,
            format!(
                "cookies:     {with_cookie} of {} sessions hold {}; {resets} later responses set it again (re-pins)",
                o.sessions,
                o.cookie.as_ref().map(|c| format!("a `{c}` cookie")).unwrap_or_else(|| "a cookie".into())
            ),
        );
        w(
            out,
            format!(
                "stickiness:  {:.2}% of sessions stayed on one pod ({} of {}); {:.2}% of answered requests reached their session's first pod",
                summary.stickiness(),
                summary.sticky_sessions,
                summary.sessions_served,
                summary.request_stickiness()
            ),
        );
        w(
            out,
            format!(
                "pods:        {} (sessions by the pod of their first answer)",
                summary.distribution.len()
            ),
        );
        write_distribution(out, &summary.distribution);
        if let Some(s) = stats::spread(&summary.distribution) {
            w(
                out,
                format!(
                    "spread:      max/mean {:.2}, min/mean {:.2}, cv {:.3} (mean {:.1} sessions per pod)",
                    s.max_over_mean, s.min_over_mean, s.cv, s.mean
                ),
            );
        }
        if let Some(watch) = o.watch {
            self.watch(watch, &sessions, out);
        }
        if let Some(min) = o.min_stickiness {
            if summary.stickiness() < min {
                w(
                    out,
                    format!("FAIL: stickiness {:.2}% is below --min-stickiness {min}%", summary.stickiness()),
                );
                return Ok(1);
            }
        }
        Ok(0)
    }

    fn watch(&self, duration: Duration, sessions: &[Mutex<Session>], out: &mut dyn Write) {
        let o = &self.o;
        let _ = writeln!(
            out,
            "watch:       one request per session every {:.1}s for {:.0}s",
            o.interval.as_secs_f64(),
            duration.as_secs_f64()
        );
        let initial: Vec<Option<String>> = sessions.iter().map(|s| lock(s).current.clone()).collect();
        let mut total_moves: BTreeMap<(String, String), usize> = BTreeMap::new();
        let mut moved_sessions = BTreeSet::new();
        let mut failed_total = 0;
        let watch_started = Instant::now();
        let max_rounds = (duration.as_secs_f64() / o.interval.as_secs_f64()).ceil() as usize + 1;
        for round in 1..=max_rounds {
            let round_start = Instant::now();
            let before: Vec<Option<String>> = sessions.iter().map(|s| lock(s).current.clone()).collect();
            let failed = AtomicUsize::new(0);
            self.parallel(sessions.len(), "watch round", |i| {
                let mut s = lock(&sessions[i]);
                let r = self.send(&s.jar);
                let outcome = self.outcome(&r);
                if let Ok(r) = &r {
                    if self.store_cookies(&mut s.jar, r) {
                        s.cookie_resets += 1;
                    }
                }
                if outcome.failed() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(pod) = outcome.pod() {
                    s.current = Some(pod.to_string());
                }
            });
            let now: Vec<Option<String>> = sessions.iter().map(|s| lock(s).current.clone()).collect();
            let moves = stats::moves(&before, &now);
            for (i, (b, a)) in before.iter().zip(&now).enumerate() {
                if b.is_some() && a.is_some() && a != b {
                    moved_sessions.insert(i);
                }
            }
            let moved: usize = moves.values().sum();
            for (k, v) in &moves {
                *total_moves.entry(k.clone()).or_default() += v;
            }
            let failed = failed.load(Ordering::Relaxed);
            failed_total += failed;
            let _ = writeln!(
                out,
                "  +{:>6.1}s  round {round}: {moved} moved{}, {failed} failed | {}",
                self.started.elapsed().as_secs_f64(),
                if moves.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", stats::describe_moves(&moves))
                },
                describe_distribution(&stats::distribution(&now))
            );
            if watch_started.elapsed() + o.interval > duration {
                break;
            }
            std::thread::sleep(o.interval.saturating_sub(round_start.elapsed()));
        }
        let now: Vec<Option<String>> = sessions.iter().map(|s| lock(s).current.clone()).collect();
        let away = stats::moves(&initial, &now);
        let moves: usize = total_moves.values().sum();
        let _ = writeln!(
            out,
            "moved:       {} of {} sessions moved at least once ({moves} moves{}); {failed_total} requests failed",
            moved_sessions.len(),
            sessions.len(),
            if total_moves.is_empty() { String::new() } else { format!(": {}", stats::describe_moves(&total_moves)) }
        );
        let _ = writeln!(
            out,
            "now:         {} sessions away from their first pod{} | {}",
            away.values().sum::<usize>(),
            if away.is_empty() { String::new() } else { format!(" ({})", stats::describe_moves(&away)) },
            describe_distribution(&stats::distribution(&now))
        );
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe_distribution(counts: &BTreeMap<String, usize>) -> String {
    counts.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
}

fn write_distribution(out: &mut dyn Write, counts: &BTreeMap<String, usize>) {
    let total: usize = counts.values().sum();
    let max = counts.values().copied().max().unwrap_or(0).max(1);
    let width = counts.keys().map(|k| k.chars().count()).max().unwrap_or(0);
    for (pod, n) in counts {
        let bar = "#".repeat((n * 40).div_ceil(max));
        let _ = writeln!(out, "  {pod:<width$}  {n:>7}  {:>5.1}%  {bar}", stats::percent(*n, total));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        o: Options,
    }

    fn options(list: &[&str]) -> Result<Options, String> {
        T::try_parse_from(std::iter::once("probe").chain(list.iter().copied()))
            .map(|t| t.o)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        for bad in ["", "x", "-1", "25h", "NaN", "1d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn arguments() {
        let o = options(&["http://127.0.0.1:10000/"]).unwrap();
        assert_eq!((o.sessions, o.requests, o.concurrency, o.pod_header.as_str()), (100, 10, 8, "x-pod"));
        let o = options(&[
            "-n",
            "1000",
            "--requests=3",
            "-c",
            "16",
            "--pod-header",
            "X-Served-By",
            "--cookie",
            "tether",
            "-H",
            "x-tenant: a",
            "--watch",
            "1m",
            "--interval=500ms",
            "--min-stickiness",
            "99.5%",
            "--no-progress",
            "--http2",
            "--insecure",
            "https://[::1]:8443/app",
        ])
        .unwrap();
        assert_eq!((o.sessions, o.requests, o.concurrency), (1000, 3, 16));
        assert_eq!((o.pod_header.as_str(), o.cookie.as_deref()), ("x-served-by", Some("tether")));
        assert_eq!(o.headers, [("x-tenant".to_string(), "a".to_string())]);
        assert_eq!((o.watch, o.interval), (Some(Duration::from_secs(60)), Duration::from_millis(500)));
        assert_eq!((o.min_stickiness, o.no_progress, o.http2, o.insecure), (Some(99.5), true, true, true));
        assert_eq!(o.url.host_str(), Some("[::1]"));
        for (bad, why) in [
            (&[][..], "<URL>"),
            (&["http://a/", "http://b/"][..], "unexpected argument"),
            (&["-n", "0", "http://a/"][..], "`0` is not a whole number"),
            (&["--frobnicate", "http://a/"][..], "unexpected argument"),
            (&["-H", "novalue", "http://a/"][..], "is not `Name: value`"),
            (&["-H", "host: x", "http://a/"][..], "set by the probe"),
            (&["--interval", "1ms", "http://a/"][..], "at least 50ms"),
            (&["--min-stickiness", "101", "http://a/"][..], "percentage"),
            (&["--pod-header", "a b", "http://a/"][..], "not a header name"),
            (&["ftp://a/"][..], "not supported"),
            (&["--http1", "--http2", "http://a/"][..], "cannot be used with"),
        ] {
            let e = options(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
