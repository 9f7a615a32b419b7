//! Pure figures over what the probe saw: stickiness, distribution, spread, moves.

use std::collections::BTreeMap;

/// What one request gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A response naming the pod that served it.
    Served(String),
    /// A response below 500 without the pod header.
    NoHeader(u16),
    /// A 5xx response.
    Status(u16),
    /// No response: connection refused, reset, timeout, bad HTTP.
    Transport(String),
}

impl Outcome {
    pub fn pod(&self) -> Option<&str> {
        match self {
            Outcome::Served(p) => Some(p),
            _ => None,
        }
    }

    pub fn failed(&self) -> bool {
        matches!(self, Outcome::Status(_) | Outcome::Transport(_))
    }
}

/// The figures of one run of N sessions × M requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub sessions: usize,
    pub requests: usize,
    pub served: usize,
    pub no_header: usize,
    pub failed_status: usize,
    pub failed_transport: usize,
    /// Sessions with at least one served request.
    pub sessions_served: usize,
    /// Sessions whose served requests all came from one pod.
    pub sticky_sessions: usize,
    /// Served requests that reached their session's first pod.
    pub requests_on_first_pod: usize,
    /// Sessions counted on their first pod.
    pub distribution: BTreeMap<String, usize>,
}

impl Summary {
    pub fn failed(&self) -> usize {
        self.failed_status + self.failed_transport
    }

    /// Percentage of sessions (with at least one answer) that stayed on one pod.
    pub fn stickiness(&self) -> f64 {
        percent(self.sticky_sessions, self.sessions_served)
    }

    pub fn request_stickiness(&self) -> f64 {
        percent(self.requests_on_first_pod, self.served)
    }
}

pub fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// Summarises the outcomes of each session's requests, in the order sent.
pub fn summarize(sessions: &[Vec<Outcome>]) -> Summary {
    let mut s = Summary {
        sessions: sessions.len(),
        requests: 0,
        served: 0,
        no_header: 0,
        failed_status: 0,
        failed_transport: 0,
        sessions_served: 0,
        sticky_sessions: 0,
        requests_on_first_pod: 0,
        distribution: BTreeMap::new(),
    };
    for outcomes in sessions {
        s.requests += outcomes.len();
        for o in outcomes {
            match o {
                Outcome::Served(_) => s.served += 1,
                Outcome::NoHeader(_) => s.no_header += 1,
                Outcome::Status(_) => s.failed_status += 1,
                Outcome::Transport(_) => s.failed_transport += 1,
            }
        }
        let pods: Vec<&str> = outcomes.iter().filter_map(Outcome::pod).collect();
        if let Some(first) = pods.first() {
            s.sessions_served += 1;
            let on_first = pods.iter().filter(|p| *p == first).count();
            s.requests_on_first_pod += on_first;
            if on_first == pods.len() {
                s.sticky_sessions += 1;
            }
            *s.distribution.entry(first.to_string()).or_default() += 1;
        }
    }
    s
}

/// How evenly sessions are spread over the pods that have any.
#[derive(Debug, Clone, PartialEq)]
pub struct Spread {
    pub pods: usize,
    pub mean: f64,
    pub min: usize,
    pub max: usize,
    /// max / mean: 1.0 is perfectly even.
    pub max_over_mean: f64,
    pub min_over_mean: f64,
    /// Coefficient of variation (standard deviation / mean).
    pub cv: f64,
}

pub fn spread(counts: &BTreeMap<String, usize>) -> Option<Spread> {
    let values: Vec<usize> = counts.values().copied().filter(|&n| n > 0).collect();
    let total: usize = values.iter().sum();
    if values.is_empty() || total == 0 {
        return None;
    }
    let mean = total as f64 / values.len() as f64;
    let min = *values.iter().min()?;
    let max = *values.iter().max()?;
    let variance = values.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / values.len() as f64;
    Some(Spread {
        pods: values.len(),
        mean,
        min,
        max,
        max_over_mean: max as f64 / mean,
        min_over_mean: min as f64 / mean,
        cv: variance.sqrt() / mean,
    })
}

/// Sessions that changed pod between two observations (`None`: not answered), as counts
/// per (from, to). A session not answered in either observation is not counted.
pub fn moves(before: &[Option<String>], after: &[Option<String>]) -> BTreeMap<(String, String), usize> {
    let mut moved = BTreeMap::new();
    for (b, a) in before.iter().zip(after) {
        if let (Some(b), Some(a)) = (b, a) {
            if a != b {
                *moved.entry((b.clone(), a.clone())).or_default() += 1;
            }
        }
    }
    moved
}

/// Counts per pod of the sessions currently known on a pod.
pub fn distribution(current: &[Option<String>]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for pod in current.iter().flatten() {
        *counts.entry(pod.clone()).or_default() += 1;
    }
    counts
}

/// `a→b 3, a→c 2`, largest first.
pub fn describe_moves(moves: &BTreeMap<(String, String), usize>) -> String {
    let mut list: Vec<(&(String, String), &usize)> = moves.iter().collect();
    list.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    list.iter().map(|((from, to), n)| format!("{from}→{to} {n}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(p: &str) -> Outcome {
        Outcome::Served(p.to_string())
    }

    #[test]
    fn stickiness_and_distribution() {
        let sessions = vec![
            vec![served("a"), served("a"), served("a")],
            vec![served("b"), served("c"), served("b")],
            vec![Outcome::Transport("refused".into()), served("c"), Outcome::Status(503)],
            vec![Outcome::NoHeader(404), Outcome::NoHeader(404)],
            vec![served("a"), served("a")],
        ];
        let s = summarize(&sessions);
        assert_eq!((s.sessions, s.requests, s.served), (5, 13, 9));
        assert_eq!((s.no_header, s.failed_status, s.failed_transport, s.failed()), (2, 1, 1, 2));
        assert_eq!((s.sessions_served, s.sticky_sessions, s.requests_on_first_pod), (4, 3, 8));
        assert_eq!(s.stickiness(), 75.0);
        assert!((s.request_stickiness() - 800.0 / 9.0).abs() < 1e-9);
        let d: Vec<(&str, usize)> = s.distribution.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(d, [("a", 2), ("b", 1), ("c", 1)]);
        assert_eq!(summarize(&[]).stickiness(), 0.0);
    }

    #[test]
    fn spread_figures() {
        let counts: BTreeMap<String, usize> =
            [("a", 30), ("b", 20), ("c", 10), ("gone", 0)].iter().map(|(k, v)| (k.to_string(), *v)).collect();
        let s = spread(&counts).unwrap();
        assert_eq!((s.pods, s.min, s.max, s.mean), (3, 10, 30, 20.0));
        assert_eq!((s.max_over_mean, s.min_over_mean), (1.5, 0.5));
        assert!((s.cv - (200.0f64 / 3.0).sqrt() / 20.0).abs() < 1e-12);
        assert_eq!(spread(&BTreeMap::new()), None);
    }

    #[test]
    fn moves_between_observations() {
        let p = |s: &str| Some(s.to_string());
        let before = [p("a"), p("a"), p("b"), None, p("c"), p("a")];
        let after = [p("b"), p("c"), p("b"), p("a"), None, p("b")];
        let m = moves(&before, &after);
        assert_eq!(m.len(), 2);
        assert_eq!(m[&("a".to_string(), "b".to_string())], 2);
        assert_eq!(m[&("a".to_string(), "c".to_string())], 1);
        assert_eq!(describe_moves(&m), "a→b 2, a→c 1");
        let d = distribution(&after);
        assert_eq!((d["a"], d["b"], d["c"]), (1, 3, 1));
    }
}
