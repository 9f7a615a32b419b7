//! `tether doctor`: reads an Envoy's configuration (a file, a saved `/config_dump`, or a
//! live admin endpoint), finds every HTTP connection manager that runs tether, and names
//! each setting that loses affinity or fails requests, with its place and the fix.
//! Exit status: 0 no error (warnings allowed), 1 an error, 2 the configuration could not
//! be read.

pub mod checks;
pub mod model;

use std::io::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One thing found: what, where (listener/route/cluster and field), what it causes, the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    /// A stable name for the check (`strict`, `lb-policy`, ...).
    pub code: &'static str,
    /// `listener ingress http_filters[0] tether`, `route local/app/routes[0]`, `cluster pods`.
    pub place: String,
    pub field: String,
    /// What is wrong and what it causes.
    pub message: String,
    pub fix: String,
}

#[derive(Debug, Default)]
pub struct Report {
    pub source: String,
    pub findings: Vec<Finding>,
    /// Checks that found nothing.
    pub passed: usize,
    /// HTTP filters recognised as tether.
    pub tether_filters: usize,
    /// What was checked, and what could not be read.
    pub notes: Vec<String>,
}

impl Report {
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Error).count()
    }

    pub fn warnings(&self) -> usize {
        self.findings.iter().filter(|f| f.severity == Severity::Warning).count()
    }

    pub fn exit_code(&self) -> i32 {
        i32::from(self.errors() > 0)
    }

    /// `(severity, code, place)` of every finding, for tests.
    pub fn summary(&self) -> Vec<(Severity, &'static str, String)> {
        let mut all: Vec<_> = self.findings.iter().map(|f| (f.severity, f.code, f.place.clone())).collect();
        all.sort();
        all
    }

    pub fn render(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "tether doctor: {}", self.source)?;
        for note in &self.notes {
            writeln!(out, "  {note}")?;
        }
        let mut findings = self.findings.clone();
        findings.sort_by_key(|f| f.severity);
        for f in &findings {
            let field = if f.field.is_empty() { String::new() } else { format!(" ({})", f.field) };
            writeln!(
                out,
                "{:<7} {:<20} {}{field}: {}. Fix: {}",
                f.severity.as_str(),
                f.code,
                f.place,
                f.message,
                f.fix
            )?;
        }
        writeln!(
            out,
            "{} checks passed, {} warning{}, {} error{}",
            self.passed,
            self.warnings(),
            if self.warnings() == 1 { "" } else { "s" },
            self.errors(),
            if self.errors() == 1 { "" } else { "s" }
        )
    }

    pub fn render_json(&self) -> String {
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "severity": f.severity.as_str(), "code": f.code, "place": f.place,
                    "field": f.field, "message": f.message, "fix": f.fix,
                })
            })
            .collect();
        serde_json::json!({
            "source": self.source, "findings": findings, "passed": self.passed,
            "errors": self.errors(), "warnings": self.warnings(), "notes": self.notes,
        })
        .to_string()
    }
}

/// Where the configuration comes from.
pub enum Input<'a> {
    File(&'a std::path::Path),
    Admin(&'a str),
}

pub fn diagnose(input: Input) -> Result<Report, model::ReadError> {
    let model = match input {
        Input::File(path) => model::Model::from_file(path)?,
        Input::Admin(url) => model::Model::from_admin(url)?,
    };
    Ok(checks::run(&model))
}

/// The command: prints the report (text or JSON); returns the exit status.
pub fn run(input: Input, json: bool, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    match diagnose(input) {
        Ok(report) => {
            let written = if json { writeln!(out, "{}", report.render_json()) } else { report.render(out) };
            if written.is_err() {
                return 2;
            }
            report.exit_code()
        }
        Err(e) => {
            let _ = writeln!(err, "tether doctor: cannot read the configuration: {e}");
            2
        }
    }
}
