//! Command line: options, the measured run, the watch mode and the report.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::http::{Connection, Error, Response, Url};
use crate::jar::Jar;
use crate::stats::{self, Outcome};

pub const USAGE: &str = "\
tether-probe: measures session affinity of a deployment from the outside.

usage: tether-probe [options] http://host[:port]/path

Runs N sessions of M requests each against the URL, each session with its own cookie jar
and keep-alive connection, reads the response header that names the pod, and prints
stickiness, the distribution of sessions over pods and its spread. With --watch it then
sends one request per session every --interval (e.g. during a rollout) and prints how
many sessions moved, from which pod to which.

options:
  -n, --sessions N         sessions (default 100)
  -m, --requests M         requests per session (default 10)
  -c, --concurrency C      sessions in flight at once (default 8)
      --pod-header NAME    response header naming the pod (default x-pod)
      --cookie NAME        the affinity cookie to report on (default: any cookie)
  -H, --header 'K: V'      extra request header (repeatable)
      --timeout SECS       per-request timeout (default 5)
      --watch SECS         after the run, watch the sessions for SECS
      --interval SECS      time between watch rounds (default 2)
      --allow-no-cookie    measure even if the service sets no cookie
      --min-stickiness P   exit 1 if fewer than P % of sessions stayed on one pod
      --progress           show progress on stderr (default: when stderr is a terminal)
      --no-progress        never show progress
  -h, --help               this text

Plain HTTP/1.1 only (no TLS, no HTTP/2). Durations: 30, 1.5, 500ms, 2s, 5m.
exit status: 0 measured; 1 below --min-stickiness; 2 bad arguments; 3 could not measure.";

#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    pub url: Url,
    pub sessions: usize,
    pub requests: usize,
    pub concurrency: usize,
    pub pod_header: String,
    pub cookie: Option<String>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub watch: Option<Duration>,
    pub interval: Duration,
    pub allow_no_cookie: bool,
    pub min_stickiness: Option<f64>,
    pub progress: Option<bool>,
}

/// What `parse_args` found: options to run, or a request for help.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Options>),
    Help,
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

fn parse_count(flag: &str, text: &str, min: usize, max: usize) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("{flag}: `{text}` is not a whole number from {min} to {max}")),
    }
}

pub fn parse_args(args: &[String]) -> Result<Parsed, String> {
    let mut url = None;
    let mut o = Options {
        url: Url { authority: String::new(), host: String::new(), port: 0, path: String::new() },
        sessions: 100,
        requests: 10,
        concurrency: 8,
        pod_header: "x-pod".into(),
        cookie: None,
        headers: Vec::new(),
        timeout: Duration::from_secs(5),
        watch: None,
        interval: Duration::from_secs(2),
        allow_no_cookie: false,
        min_stickiness: None,
        progress: None,
    };
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_str();
        // `--flag=value` or `--flag value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg, None),
        };
        let takes_value = matches!(
            flag,
            "-n" | "--sessions"
                | "-m"
                | "--requests"
                | "-c"
                | "--concurrency"
                | "--pod-header"
                | "--cookie"
                | "-H"
                | "--header"
                | "--timeout"
                | "--watch"
                | "--interval"
                | "--min-stickiness"
        );
        let value = if takes_value {
            match inline {
                Some(v) => v,
                None => {
                    i += 1;
                    args.get(i).cloned().ok_or_else(|| format!("{flag} needs a value"))?
                }
            }
        } else {
            String::new()
        };
        match flag {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-n" | "--sessions" => o.sessions = parse_count(flag, &value, 1, 1_000_000)?,
            "-m" | "--requests" => o.requests = parse_count(flag, &value, 1, 100_000)?,
            "-c" | "--concurrency" => o.concurrency = parse_count(flag, &value, 1, 512)?,
            "--pod-header" => {
                if value.is_empty() || value.bytes().any(|b| b <= b' ' || b == b':') {
                    return Err(format!("--pod-header: `{value}` is not a header name"));
                }
                o.pod_header = value.to_ascii_lowercase();
            }
            "--cookie" => {
                if value.is_empty() || value.bytes().any(|b| b <= b' ' || b"=;,".contains(&b)) {
                    return Err(format!("--cookie: `{value}` is not a cookie name"));
                }
                o.cookie = Some(value);
            }
            "-H" | "--header" => {
                let (k, v) = value
                    .split_once(':')
                    .ok_or_else(|| format!("--header: `{value}` is not `Name: value`"))?;
                let (k, v) = (k.trim(), v.trim());
                if k.is_empty() || k.bytes().any(|b| b <= b' ') || v.contains(['\r', '\n']) {
                    return Err(format!("--header: `{value}` is not `Name: value`"));
                }
                if k.eq_ignore_ascii_case("host") || k.eq_ignore_ascii_case("content-length") {
                    return Err(format!("--header: `{k}` is set by the probe"));
                }
                o.headers.push((k.to_string(), v.to_string()));
            }
            "--timeout" => {
                o.timeout = parse_duration(&value)?;
                if o.timeout < Duration::from_millis(10) {
                    return Err("--timeout: at least 10ms".into());
                }
            }
            "--watch" => o.watch = Some(parse_duration(&value)?),
            "--interval" => {
                o.interval = parse_duration(&value)?;
                if o.interval < Duration::from_millis(50) {
                    return Err("--interval: at least 50ms".into());
                }
            }
            "--allow-no-cookie" => o.allow_no_cookie = true,
            "--min-stickiness" => match value.trim_end_matches('%').parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => o.min_stickiness = Some(p),
                _ => return Err(format!("--min-stickiness: `{value}` is not a percentage from 0 to 100")),
            },
            "--progress" => o.progress = Some(true),
            "--no-progress" => o.progress = Some(false),
            _ if flag.starts_with('-') && flag.len() > 1 => return Err(format!("unknown option `{flag}`")),
            _ => {
                if url.is_some() {
                    return Err(format!("one URL only (got a second: `{arg}`)"));
                }
                url = Some(Url::parse(arg)?);
            }
        }
        i += 1;
    }
    o.url = url.ok_or("no URL given")?;
    if o.sessions.saturating_mul(o.requests) > 10_000_000 {
        return Err("--sessions × --requests: at most 10,000,000 requests".into());
    }
    Ok(Parsed::Run(Box::new(o)))
}

/// Runs the probe with `args` (without the program name); returns the exit status.
pub fn run(args: &[String], out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let options = match parse_args(args) {
        Ok(Parsed::Run(o)) => o,
        Ok(Parsed::Help) => {
            let _ = writeln!(out, "{USAGE}");
            return 0;
        }
        Err(e) => {
            let _ = writeln!(err, "tether-probe: {e}\n(see tether-probe --help)");
            return 2;
        }
    };
    match Probe::new(*options).and_then(|p| p.measure(out, err)) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "tether-probe: error: {e}");
            3
        }
    }
}

#[derive(Default)]
struct Session {
    jar: Jar,
    outcomes: Vec<Outcome>,
    /// Responses after the first that set the affinity cookie again (re-pins).
    cookie_resets: usize,
    /// The pod of the last answered request.
    current: Option<String>,
}

struct Probe {
    o: Options,
    addr: SocketAddr,
    started: Instant,
}

impl Probe {
    fn new(o: Options) -> Result<Probe, String> {
        let addr = o.url.resolve().map_err(|e| format!("{e} (from the URL `{}`)", url_text(&o.url)))?;
        Ok(Probe { o, addr, started: Instant::now() })
    }

    fn connection(&self) -> Connection {
        Connection::new(self.addr, &self.o.url.authority, self.o.timeout)
    }

    fn send(&self, conn: &mut Connection, jar: &Jar) -> Result<Response, Error> {
        let cookie = jar.header();
        let mut headers: Vec<(&str, &str)> =
            self.o.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        if let Some(c) = cookie.as_deref() {
            headers.push(("cookie", c));
        }
        conn.request("GET", &self.o.url.path, &headers)
    }

    fn outcome(&self, r: &Result<Response, Error>) -> Outcome {
        match r {
            Err(e) => Outcome::Transport(e.to_string()),
            Ok(r) if r.status >= 500 => Outcome::Status(r.status),
            Ok(r) => match r.header(&self.o.pod_header) {
                Some(pod) if !pod.is_empty() => Outcome::Served(pod.to_string()),
                _ => Outcome::NoHeader(r.status),
            },
        }
    }

    /// Stores the response's cookies; returns whether it set the affinity cookie.
    fn store_cookies(&self, jar: &mut Jar, r: &Response) -> bool {
        let mut set = false;
        for value in r.all("set-cookie") {
            if let Some(name) = jar.store(value) {
                set |= self.o.cookie.as_deref().map_or(true, |c| c == name);
            }
        }
        set
    }

    /// One request before the run, so that a wrong URL, header or cookie gives a clear
    /// error at once rather than a long run of failures.
    fn preflight(&self) -> Result<(), String> {
        let url = url_text(&self.o.url);
        let mut jar = Jar::default();
        let r = self.send(&mut self.connection(), &jar).map_err(|e| {
            format!("cannot reach {url}: {e}. Is the URL right, and is the service listening there?")
        })?;
        let names: BTreeSet<&str> = r.headers.iter().map(|(k, _)| k.as_str()).collect();
        let names = names.into_iter().collect::<Vec<_>>().join(", ");
        if r.status >= 500 {
            return Err(format!(
                "{url} answered {} to a first request: the service is failing, nothing to measure",
                r.status
            ));
        }
        if r.header(&self.o.pod_header).map_or(true, str::is_empty) {
            return Err(format!(
                "the response ({}) has no `{}` header naming the pod that served it; headers received: {names}. \
                 Make the pods send one (e.g. the pod name from the Downward API) or name it with --pod-header",
                r.status, self.o.pod_header
            ));
        }
        let set = self.store_cookies(&mut jar, &r);
        if !set && !self.o.allow_no_cookie {
            let which = match &self.o.cookie {
                Some(c) => format!("no `{c}` cookie (cookies set: {:?})", jar.names()),
                None => "no cookie".to_string(),
            };
            return Err(format!(
                "the first response from {url} set {which}: the service does not pin sessions with a cookie \
                 (is tether, or another cookie affinity, in the path of this URL?). \
                 Use --allow-no-cookie to measure anyway"
            ));
        }
        Ok(())
    }

    /// Calls `work(i)` for every `i < n` on `concurrency` threads, showing progress.
    fn parallel(&self, n: usize, err: &mut dyn Write, label: &str, work: impl Fn(usize) + Sync) {
        let next = AtomicUsize::new(0);
        let done = AtomicUsize::new(0);
        let progress = self.o.progress.unwrap_or_else(|| std::io::stderr().is_terminal());
        let workers = self.o.concurrency.min(n).max(1);
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    work(i);
                    done.fetch_add(1, Ordering::Relaxed);
                });
            }
            let start = Instant::now();
            let mut shown = false;
            while done.load(Ordering::Relaxed) < n {
                std::thread::sleep(Duration::from_millis(100));
                if progress && start.elapsed() >= Duration::from_millis(300) {
                    let d = done.load(Ordering::Relaxed);
                    let _ = write!(
                        err,
                        "\r{label}: {d}/{n} ({:.0}%) {:.1}s   ",
                        stats::percent(d, n),
                        start.elapsed().as_secs_f64()
                    );
                    let _ = err.flush();
                    shown = true;
                }
            }
            if shown {
                let _ = writeln!(err, "\r{label}: {n}/{n} (100%) {:.1}s   ", start.elapsed().as_secs_f64());
            }
        });
    }

    fn measure(&self, out: &mut dyn Write, err: &mut dyn Write) -> Result<i32, String> {
        let o = &self.o;
        self.preflight()?;
        let w = |out: &mut dyn Write, text: String| {
            let _ = writeln!(out, "{text}");
        };
        w(
            out,
            format!(
                "tether-probe: {} sessions × {} requests, concurrency {}, {} (pod header `{}`)",
                o.sessions,
                o.requests,
                o.concurrency,
                url_text(&o.url),
                o.pod_header
            ),
        );
        let sessions: Vec<Mutex<Session>> = (0..o.sessions).map(|_| Mutex::new(Session::default())).collect();
        let run_started = Instant::now();
        self.parallel(o.sessions, err, "sessions", |i| {
            let mut s = lock(&sessions[i]);
            let mut conn = self.connection();
            for n in 0..o.requests {
                let r = self.send(&mut conn, &s.jar);
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
        let with_cookie = sessions
            .iter()
            .filter(|s| {
                let s = lock(s);
                match &o.cookie {
                    Some(c) => s.jar.get(c).is_some(),
                    None => !s.jar.is_empty(),
                }
            })
            .count();
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
            self.watch(watch, &sessions, out, err);
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

    fn watch(
        &self,
        duration: Duration,
        sessions: &[Mutex<Session>],
        out: &mut dyn Write,
        err: &mut dyn Write,
    ) {
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
            self.parallel(sessions.len(), err, "watch round", |i| {
                let mut s = lock(&sessions[i]);
                let mut conn = self.connection();
                let r = self.send(&mut conn, &s.jar);
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

fn url_text(u: &Url) -> String {
    format!("http://{}{}", u.authority, u.path)
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

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn options(list: &[&str]) -> Options {
        match parse_args(&args(list)) {
            Ok(Parsed::Run(o)) => *o,
            other => panic!("{list:?}: {other:?}"),
        }
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
        let o = options(&["http://127.0.0.1:10000/"]);
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
            "http://[::1]:8080/app",
        ]);
        assert_eq!((o.sessions, o.requests, o.concurrency), (1000, 3, 16));
        assert_eq!((o.pod_header.as_str(), o.cookie.as_deref()), ("x-served-by", Some("tether")));
        assert_eq!(o.headers, [("x-tenant".to_string(), "a".to_string())]);
        assert_eq!((o.watch, o.interval), (Some(Duration::from_secs(60)), Duration::from_millis(500)));
        assert_eq!((o.min_stickiness, o.progress), (Some(99.5), Some(false)));
        assert_eq!(o.url.host, "::1");
        assert!(matches!(parse_args(&args(&["--help"])), Ok(Parsed::Help)));
        for (bad, why) in [
            (&[][..], "no URL"),
            (&["http://a/", "http://b/"][..], "one URL only"),
            (&["-n", "0", "http://a/"][..], "-n: `0` is not a whole number"),
            (&["-n"][..], "needs a value"),
            (&["--frobnicate", "http://a/"][..], "unknown option"),
            (&["-H", "novalue", "http://a/"][..], "--header"),
            (&["-H", "host: x", "http://a/"][..], "set by the probe"),
            (&["--interval", "1ms", "http://a/"][..], "--interval"),
            (&["--min-stickiness", "101", "http://a/"][..], "--min-stickiness"),
            (&["--pod-header", "a b", "http://a/"][..], "--pod-header"),
            (&["https://a/"][..], "https is not supported"),
            (&["-n", "1000000", "-m", "100", "http://a/"][..], "at most"),
        ] {
            let e = parse_args(&args(bad)).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }
}
