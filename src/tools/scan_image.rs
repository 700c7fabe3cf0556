//! `scan_image`: known vulnerabilities in a container image, from Trivy (SPEC §5).
//!
//! With `image`, the tool runs `trivy image --format json --quiet --scanners vuln --timeout T
//! [--severity …] [--ignore-unfixed] IMAGE` (Trivy ≥ 0.37) found on the step's `PATH` (its
//! `env`, else ckflow's own), in its own process group, with the step's environment (so
//! `TRIVY_USERNAME`, `TRIVY_DB_REPOSITORY`, … reach it). With `report_file`, it reads a
//! report Trivy wrote earlier (`trivy image -f json -o FILE`, for CI systems that run Trivy
//! as a separate job); the legacy top-level array of Trivy < 0.20 is read too.
//!
//! Either way the report becomes `counts` by severity, `total`, `fixable` (findings with a
//! `FixedVersion`) and the worst `findings`: by severity, then CVSS score (the score of the
//! vendor Trivy took the severity from, else NVD's, else the highest given), then id. A
//! vulnerability is counted once per (id, package, installed version): Trivy lists the same
//! one again when a package is installed in two places (two `site-packages`, two jars), but it
//! is one thing to fix; the first place listed is its `target`, and the worst severity and any
//! fixed version among the copies are kept. `UNKNOWN` and severities Trivy does not define
//! count as `unknown`, which no `fail_on` threshold includes. `ignore_unfixed` and `severity`
//! are applied to the report as well, so a report file gives the same result as a scan.
//!
//! `fail_on` (default `none`) turns findings at or above a severity into a `tool_error` /
//! `CRITICAL_VULNS_FOUND` failure whose `details` are the whole result; the default rule
//! for that code fails the run. A missing Trivy is `not_found` / `SCANNER_NOT_FOUND`; Trivy
//! failing is `SCAN_FAILED` (or `IMAGE_NOT_FOUND`, `SCAN_TIMEOUT` when its message says so).
//! Cancelling, or Trivy outliving its own `--timeout` by a grace period, kills its process
//! group.

// `ToolError` is the error type the `Tool` trait fixes; boxing it here would only move
// the allocation around.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::capture::Capture;
use super::docker::reference::{Reference, is_image_id};
use super::process::Group;
use super::{Progress, ProgressFn, Tool, ToolContext, ToolError, ToolFuture};
use crate::workflow::duration::{format_duration, parse_duration};
use crate::workflow::model::{ErrorClass, Rule, Then};

/// The scanner's executable name, looked up on `PATH`.
pub const TRIVY: &str = "trivy";
/// Trivy's own default `--timeout`, and ours.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How many findings the result lists unless `max_findings` says otherwise.
const DEFAULT_MAX_FINDINGS: usize = 20;
/// The most findings `max_findings` may ask for.
const MAX_MAX_FINDINGS: u64 = 10_000;
/// The largest report read from Trivy's stdout or a file.
const MAX_REPORT_BYTES: usize = 512 << 20;
/// How long `trivy --version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a cancelled Trivy gets between SIGTERM and SIGKILL.
/// The longest title kept when a finding's title falls back to its description.
const TITLE_MAX: usize = 120;
/// Where to get Trivy, for the `SCANNER_NOT_FOUND` message.
const INSTALL_HINT: &str = "install it (https://trivy.dev/latest/getting-started/installation/ \
     — e.g. `apt install trivy` from Aqua's apt repository, or `brew install trivy`), put it \
     on the step's PATH (`env: {PATH: …}`), or run Trivy yourself \
     (`trivy image -f json -o report.json IMAGE`) and pass `report_file`";

/// The `scan_image` tool.
pub struct ScanImage;

impl Tool for ScanImage {
    fn name(&self) -> &str {
        "scan_image"
    }

    fn description(&self) -> &str {
        "Scans a container image for known vulnerabilities with Trivy (or reads a Trivy JSON \
         report) and returns counts by severity, how many are fixable and the worst findings; \
         `fail_on` makes findings at or above a severity fail the step."
    }

    fn input_schema(&self) -> Value {
        json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "description": "What to scan: exactly one of `image` (runs Trivy) and \
                            `report_file` (reads a report Trivy wrote), and how to judge it.",
            "additionalProperties": false,
            "properties": {
                "image": {
                    "type": "string",
                    "minLength": 1,
                    "description": "The image to scan (`app:1.2`, `ghcr.io/org/app@sha256:…`, \
                                    an image id); Trivy looks in the local Docker engine \
                                    first, then the registry. Give this or `report_file`."
                },
                "report_file": {
                    "type": "string",
                    "minLength": 1,
                    "description": "A Trivy JSON report (`trivy image -f json -o FILE`) to read \
                                    instead of running Trivy, relative to the project folder."
                },
                "fail_on": {
                    "type": "string",
                    "enum": ["critical", "high", "medium", "low", "none"],
                    "default": "none",
                    "description": "Fail (`CRITICAL_VULNS_FOUND`) when a finding at this \
                                    severity or above exists; `none` only reports. `unknown` \
                                    findings never count. Default `none`."
                },
                "ignore_unfixed": {
                    "type": "boolean",
                    "default": false,
                    "description": "Leave out vulnerabilities without a fixed version \
                                    (Trivy's `--ignore-unfixed`). Default false."
                },
                "severity": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": true,
                    "items": {
                        "type": "string",
                        "enum": ["critical", "high", "medium", "low", "unknown"]
                    },
                    "description": "Only these severities are reported, counted and judged \
                                    (Trivy's `--severity`); default all."
                },
                "max_findings": {
                    "type": "integer",
                    "minimum": 0,
                    "maximum": MAX_MAX_FINDINGS,
                    "default": DEFAULT_MAX_FINDINGS,
                    "description": "How many of the worst findings the result lists (the \
                                    counts always cover all of them). Default 20."
                },
                "timeout": {
                    "type": "string",
                    "pattern": "^([0-9]+(ms|s|m|h))+$",
                    "default": "5m",
                    "description": "Trivy's `--timeout` (`90s`, `10m`, `1h`); a Trivy still \
                                    running a grace period later is killed. Ignored with \
                                    `report_file`. Default `5m`."
                }
            },
            "oneOf": [
                {"required": ["image"]},
                {"required": ["report_file"]}
            ]
        })
    }

    fn output_schema(&self) -> Value {
        let count = |what: &str| json!({"type": "integer", "description": format!("Findings of severity {what}.")});
        json!({
            "type": "object",
            "description": "What the scan found.",
            "required": ["image", "scanner", "counts", "total", "fixable", "fail_on", "findings"],
            "properties": {
                "image": {
                    "type": ["string", "null"],
                    "description": "The image scanned: `image` as given, or the report's \
                                    `ArtifactName`."
                },
                "scanner": {
                    "type": "object",
                    "description": "The scanner that produced the report.",
                    "required": ["name", "version"],
                    "properties": {
                        "name": {"type": "string", "const": "trivy", "description": "Always `trivy`."},
                        "version": {
                            "type": ["string", "null"],
                            "description": "Trivy's version, when the report or \
                                            `trivy --version` tells it."
                        }
                    }
                },
                "counts": {
                    "type": "object",
                    "description": "Findings by severity (each vulnerability once per \
                                    package and installed version).",
                    "required": ["critical", "high", "medium", "low", "unknown"],
                    "properties": {
                        "critical": count("CRITICAL"),
                        "high": count("HIGH"),
                        "medium": count("MEDIUM"),
                        "low": count("LOW"),
                        "unknown": count("UNKNOWN, or one Trivy does not define")
                    }
                },
                "total": {"type": "integer", "description": "All findings."},
                "fixable": {
                    "type": "integer",
                    "description": "Findings with a fixed version to upgrade to."
                },
                "fail_on": {
                    "type": "string",
                    "enum": ["critical", "high", "medium", "low", "none"],
                    "description": "The threshold the findings were judged against."
                },
                "findings": {
                    "type": "array",
                    "description": "The worst `max_findings` findings: by severity, then CVSS \
                                    score, then id.",
                    "items": {
                        "type": "object",
                        "required": ["id", "package", "installed", "fixed", "severity", "score",
                                     "title", "target", "url"],
                        "properties": {
                            "id": {
                                "type": "string",
                                "description": "The vulnerability id (`CVE-…`, `GHSA-…`, \
                                                `TEMP-…`)."
                            },
                            "package": {"type": "string", "description": "The affected package."},
                            "installed": {
                                "type": "string",
                                "description": "The installed version."
                            },
                            "fixed": {
                                "type": ["string", "null"],
                                "description": "The version(s) that fix it; null when there is \
                                                no fix."
                            },
                            "severity": {
                                "type": "string",
                                "enum": ["critical", "high", "medium", "low", "unknown"],
                                "description": "Trivy's severity."
                            },
                            "score": {
                                "type": ["number", "null"],
                                "description": "The CVSS score (v3, else v4, else v2), when \
                                                known."
                            },
                            "title": {
                                "type": ["string", "null"],
                                "description": "A one-line summary (the start of the \
                                                description when there is no title)."
                            },
                            "target": {
                                "type": "string",
                                "description": "Where Trivy found the package (the OS, a \
                                                lock file, `Python`, …)."
                            },
                            "url": {
                                "type": ["string", "null"],
                                "description": "Trivy's primary link for it."
                            }
                        }
                    }
                }
            }
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "CRITICAL_VULNS_FOUND",
                "Findings at or above `fail_on` exist (class `tool_error`); the message has \
                 the counts, `details` the whole result (`counts`, `fixable`, `findings`, …). \
                 The default rule fails the run.",
            ),
            (
                "SCANNER_NOT_FOUND",
                "`trivy` is not on the step's PATH (class `not_found`); install it or pass \
                 `report_file`.",
            ),
            (
                "IMAGE_NOT_FOUND",
                "Trivy found the image neither in the local engine nor in the registry \
                 (class `not_found`).",
            ),
            (
                "SCAN_FAILED",
                "Trivy exited non-zero or could not be started (class `tool_error`); the \
                 message ends with Trivy's error (from its last `FATAL` line), `details` hold \
                 `exit_code` and the end of `stderr`.",
            ),
            (
                "SCAN_TIMEOUT",
                "Trivy hit its `--timeout`, or outlived it and was killed (class `timeout`).",
            ),
            (
                "SCAN_REPORT_INVALID",
                "The report (file or Trivy's output) is not Trivy JSON (class `tool_error`); \
                 the message names it and the position of the error.",
            ),
            (
                "REPORT_NOT_FOUND",
                "`report_file` does not exist or cannot be read (class `not_found`).",
            ),
        ]
    }

    fn default_rules(&self) -> Vec<Rule> {
        vec![Rule::on_tool_error(
            "scan_image",
            "CRITICAL_VULNS_FOUND",
            None,
            Then::Fail,
            1,
        )]
    }

    fn host_exec(&self) -> bool {
        // Runs the `trivy` found on the step's PATH, with the step's environment.
        true
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(scan(args, ctx))
    }
}

// ---------------------------------------------------------------------------------------
// Arguments

/// Where the report comes from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// Run Trivy on this image.
    Image(String),
    /// Read this report.
    ReportFile(PathBuf),
}

/// Checked arguments.
#[derive(Debug, Clone, PartialEq)]
struct Args {
    source: Source,
    fail_on: Option<Severity>,
    filter: Filter,
    max_findings: usize,
    timeout: Duration,
}

const ARG_NAMES: [&str; 7] = [
    "image",
    "report_file",
    "fail_on",
    "ignore_unfixed",
    "severity",
    "max_findings",
    "timeout",
];

fn parse_args(args: &Value, ctx: &ToolContext) -> Result<Args, ToolError> {
    let obj = args
        .as_object()
        .ok_or_else(|| ToolError::invalid("the arguments of `scan_image` must be an object"))?;
    if let Some(other) = obj.keys().find(|k| !ARG_NAMES.contains(&k.as_str())) {
        return Err(ToolError::invalid(format!(
            "unknown argument `{other}` (expected one of {})",
            ARG_NAMES.map(|n| format!("`{n}`")).join(", ")
        )));
    }
    let string = |k: &str| -> Result<Option<&str>, ToolError> {
        match obj.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ToolError::invalid(format!("`{k}` must be a string"))),
        }
    };
    let source = match (string("image")?, string("report_file")?) {
        (Some(_), Some(_)) => {
            return Err(ToolError::invalid(
                "give either `image` or `report_file`, not both",
            ));
        }
        (None, None) => {
            return Err(ToolError::invalid(
                "one of `image` (to run Trivy) or `report_file` (a Trivy JSON report) is required",
            ));
        }
        (Some(image), None) => {
            if !is_image_id(image) {
                Reference::parse(image).map_err(|m| ToolError::invalid(format!("`image`: {m}")))?;
            }
            Source::Image(image.to_owned())
        }
        (None, Some("")) => return Err(ToolError::invalid("`report_file` is empty")),
        (None, Some(p)) => Source::ReportFile(ctx.path("report_file", p)?),
    };
    let fail_on = match string("fail_on")? {
        None | Some("none") => None,
        Some(s) => match Severity::from_name(s) {
            Some(sev) if sev != Severity::Unknown => Some(sev),
            _ => {
                return Err(ToolError::invalid(format!(
                    "`fail_on` is `{s}`; expected `critical`, `high`, `medium`, `low` or `none`"
                )));
            }
        },
    };
    let ignore_unfixed = match obj.get("ignore_unfixed") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ToolError::invalid("`ignore_unfixed` must be true or false")),
    };
    let severities = match obj.get("severity") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::new();
            for item in items {
                let sev = item.as_str().and_then(Severity::from_name).ok_or_else(|| {
                    ToolError::invalid(format!(
                        "`severity` holds {item}; expected `critical`, `high`, `medium`, `low` \
                         or `unknown`"
                    ))
                })?;
                if !out.contains(&sev) {
                    out.push(sev);
                }
            }
            // Most severe first, as Trivy lists them.
            out.sort_by(|a, b| b.cmp(a));
            Some(out)
        }
        Some(_) => {
            return Err(ToolError::invalid(
                "`severity` must be a non-empty list such as [critical, high]",
            ));
        }
    };
    let max_findings = match obj.get("max_findings") {
        None | Some(Value::Null) => DEFAULT_MAX_FINDINGS,
        Some(v) => match v.as_u64() {
            Some(n) if n <= MAX_MAX_FINDINGS => n as usize,
            _ => {
                return Err(ToolError::invalid(format!(
                    "`max_findings` is {v}; expected an integer from 0 to {MAX_MAX_FINDINGS}"
                )));
            }
        },
    };
    let timeout = match string("timeout")? {
        None => DEFAULT_TIMEOUT,
        Some(s) => match parse_duration(s) {
            Some(d) if !d.is_zero() => d,
            _ => {
                return Err(ToolError::invalid(format!(
                    "`timeout` is `{s}`; expected a positive duration such as `90s`, `10m` or \
                     `1h30m`"
                )));
            }
        },
    };
    Ok(Args {
        source,
        fail_on,
        filter: Filter {
            ignore_unfixed,
            severities,
        },
        max_findings,
        timeout,
    })
}

// ---------------------------------------------------------------------------------------
// The call

async fn scan(args: Value, ctx: ToolContext) -> Result<Value, ToolError> {
    let args = parse_args(&args, &ctx)?;
    if ctx.cancel.is_cancelled() {
        return Err(ToolError::cancelled());
    }
    let (image, report) = match &args.source {
        Source::ReportFile(path) => {
            let bytes = read_report_file(path, &ctx).await?;
            let report = parse_report(&bytes, &format!("`{}`", path.display()))?;
            (report.artifact_name.clone(), report)
        }
        Source::Image(image) => {
            let trivy = find_trivy(&ctx).ok_or_else(|| {
                ToolError::new(
                    ErrorClass::NotFound,
                    format!("Trivy is not installed: `{TRIVY}` is not on PATH; {INSTALL_HINT}"),
                )
                .with_code("SCANNER_NOT_FOUND")
            })?;
            let mut report = run_trivy(&trivy, image, &args, &ctx).await?;
            if report.trivy_version.is_none() {
                report.trivy_version = trivy_version(&trivy, &ctx).await?;
            }
            (Some(image.clone()), report)
        }
    };
    let summary = summarize(&report.findings, &args.filter);
    let result = summary.to_json(image.as_deref(), report.trivy_version.as_deref(), &args);
    if let Some(threshold) = args.fail_on {
        let over = summary.at_or_above(threshold);
        if over > 0 {
            let what = image.as_deref().unwrap_or("the image");
            let c = &summary.counts;
            return Err(ToolError::new(
                ErrorClass::ToolError,
                format!(
                    "{what} has {over} {} at or above `{}` (critical {}, high {}, medium {}, \
                     low {}, unknown {}; {} fixable)",
                    if over == 1 {
                        "vulnerability"
                    } else {
                        "vulnerabilities"
                    },
                    threshold.as_str(),
                    c.critical,
                    c.high,
                    c.medium,
                    c.low,
                    c.unknown,
                    summary.fixable
                ),
            )
            .with_code("CRITICAL_VULNS_FOUND")
            .with_details(result));
        }
    }
    Ok(result)
}

/// Read `path`, at most [`MAX_REPORT_BYTES`].
async fn read_report_file(path: &Path, ctx: &ToolContext) -> Result<Vec<u8>, ToolError> {
    let not_found = |e: std::io::Error| {
        ToolError::new(
            ErrorClass::NotFound,
            format!("cannot read the Trivy report `{}`: {e}", path.display()),
        )
        .with_code("REPORT_NOT_FOUND")
    };
    let file = tokio::fs::File::open(path).await.map_err(not_found)?;
    let mut bytes = Vec::new();
    let mut limited = file.take(MAX_REPORT_BYTES as u64 + 1);
    let read = limited.read_to_end(&mut bytes);
    tokio::select! {
        biased;
        () = ctx.cancel.cancelled() => return Err(ToolError::cancelled()),
        r = read => { r.map_err(not_found)?; }
    }
    if bytes.len() > MAX_REPORT_BYTES {
        return Err(ToolError::new(
            ErrorClass::ToolError,
            format!(
                "the Trivy report `{}` is larger than {} MiB",
                path.display(),
                MAX_REPORT_BYTES >> 20
            ),
        )
        .with_code("SCAN_REPORT_INVALID"));
    }
    Ok(bytes)
}

// ---------------------------------------------------------------------------------------
// Severities and findings

/// A Trivy severity. Ordered from least to most severe, so `max` is the worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// `UNKNOWN`, or a severity Trivy does not define.
    Unknown,
    /// `LOW`.
    Low,
    /// `MEDIUM`.
    Medium,
    /// `HIGH`.
    High,
    /// `CRITICAL`.
    Critical,
}

impl Severity {
    /// A severity by name, in any case; `None` for a name that is none of the five.
    pub fn from_name(s: &str) -> Option<Severity> {
        Some(match s.to_ascii_lowercase().as_str() {
            "critical" => Severity::Critical,
            "high" => Severity::High,
            "medium" => Severity::Medium,
            "low" => Severity::Low,
            "unknown" => Severity::Unknown,
            _ => return None,
        })
    }

    /// A severity from a report: anything not recognised is `Unknown`.
    pub fn from_report(s: Option<&str>) -> Severity {
        s.and_then(Severity::from_name).unwrap_or(Severity::Unknown)
    }

    /// The lowercase name used in results (`critical`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Unknown => "unknown",
        }
    }

    /// Trivy's name (`CRITICAL`), as `--severity` takes it.
    pub fn trivy_name(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Unknown => "UNKNOWN",
        }
    }
}

/// One vulnerability of one installed package, as the result lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// The vulnerability id (`CVE-2024-6345`).
    pub id: String,
    /// The affected package.
    pub package: String,
    /// The installed version.
    pub installed: String,
    /// The version(s) that fix it, if any.
    pub fixed: Option<String>,
    /// Trivy's severity.
    pub severity: Severity,
    /// The CVSS score, if the report gives one.
    pub score: Option<f64>,
    /// A one-line summary.
    pub title: Option<String>,
    /// The report target the package was found in.
    pub target: String,
    /// Trivy's primary link.
    pub url: Option<String>,
}

/// Findings by severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// `CRITICAL` findings.
    pub critical: usize,
    /// `HIGH` findings.
    pub high: usize,
    /// `MEDIUM` findings.
    pub medium: usize,
    /// `LOW` findings.
    pub low: usize,
    /// `UNKNOWN` (or unrecognised) findings.
    pub unknown: usize,
}

impl Counts {
    fn add(&mut self, s: Severity) {
        match s {
            Severity::Critical => self.critical += 1,
            Severity::High => self.high += 1,
            Severity::Medium => self.medium += 1,
            Severity::Low => self.low += 1,
            Severity::Unknown => self.unknown += 1,
        }
    }
}

/// Which findings count.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Leave out findings without a fixed version.
    pub ignore_unfixed: bool,
    /// Only these severities (all when `None`).
    pub severities: Option<Vec<Severity>>,
}

impl Filter {
    fn keeps(&self, f: &Finding) -> bool {
        (!self.ignore_unfixed || f.fixed.is_some())
            && self
                .severities
                .as_ref()
                .is_none_or(|s| s.contains(&f.severity))
    }
}

/// A report's findings, counted and sorted.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// Findings by severity.
    pub counts: Counts,
    /// All findings.
    pub total: usize,
    /// Findings with a fixed version.
    pub fixable: usize,
    /// Every finding, worst first.
    pub findings: Vec<Finding>,
}

impl Summary {
    /// How many findings are at or above `threshold` (`unknown` ones never are, unless the
    /// threshold itself is `Unknown`).
    pub fn at_or_above(&self, threshold: Severity) -> usize {
        self.findings
            .iter()
            .filter(|f| f.severity >= threshold)
            .count()
    }

    fn to_json(&self, image: Option<&str>, version: Option<&str>, args: &Args) -> Value {
        let shown = &self.findings[..self.findings.len().min(args.max_findings)];
        json!({
            "image": image,
            "scanner": {"name": TRIVY, "version": version},
            "counts": self.counts,
            "total": self.total,
            "fixable": self.fixable,
            "fail_on": args.fail_on.map_or("none", Severity::as_str),
            "findings": shown,
        })
    }
}

/// Count and sort `findings` (as [`parse_report`] lists them): filtered, each
/// (id, package, installed version) once, worst first.
pub fn summarize(findings: &[Finding], filter: &Filter) -> Summary {
    let mut unique: Vec<Finding> = Vec::new();
    let mut seen: HashMap<(&str, &str, &str), usize> = HashMap::new();
    for f in findings.iter().filter(|f| filter.keeps(f)) {
        let key = (f.id.as_str(), f.package.as_str(), f.installed.as_str());
        match seen.get(&key) {
            Some(&i) => {
                if let Some(first) = unique.get_mut(i) {
                    merge(first, f);
                }
            }
            None => {
                seen.insert(key, unique.len());
                unique.push(f.clone());
            }
        }
    }
    unique.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then_with(|| {
                let score = |f: &Finding| f.score.unwrap_or(-1.0);
                score(b).total_cmp(&score(a))
            })
            .then_with(|| a.id.cmp(&b.id))
            .then_with(|| a.package.cmp(&b.package))
            .then_with(|| a.installed.cmp(&b.installed))
            .then_with(|| a.target.cmp(&b.target))
    });
    let mut counts = Counts::default();
    for f in &unique {
        counts.add(f.severity);
    }
    Summary {
        counts,
        total: unique.len(),
        fixable: unique.iter().filter(|f| f.fixed.is_some()).count(),
        findings: unique,
    }
}

/// Fold a second listing of the same vulnerability into the first: the worse severity and
/// score, and whatever the first lacks.
fn merge(first: &mut Finding, other: &Finding) {
    first.severity = first.severity.max(other.severity);
    first.score = match (first.score, other.score) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    if first.fixed.is_none() {
        first.fixed.clone_from(&other.fixed);
    }
    if first.title.is_none() {
        first.title.clone_from(&other.title);
    }
    if first.url.is_none() {
        first.url.clone_from(&other.url);
    }
}

// ---------------------------------------------------------------------------------------
// The report

/// What ckflow reads from a Trivy JSON report.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Report {
    /// `ArtifactName`: the image as Trivy was given it.
    pub artifact_name: Option<String>,
    /// `Trivy.Version`, written by recent Trivy versions.
    pub trivy_version: Option<String>,
    /// Every vulnerability of every target, in report order (duplicates included).
    pub findings: Vec<Finding>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawReport {
    #[serde(default)]
    artifact_name: Option<String>,
    #[serde(default)]
    trivy: Option<RawTrivy>,
    #[serde(default)]
    results: Option<Vec<RawResult>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawTrivy {
    #[serde(default)]
    version: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawResult {
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    vulnerabilities: Option<Vec<RawVulnerability>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RawVulnerability {
    #[serde(default, rename = "VulnerabilityID")]
    vulnerability_id: Option<String>,
    #[serde(default)]
    pkg_name: Option<String>,
    #[serde(default)]
    installed_version: Option<String>,
    #[serde(default)]
    fixed_version: Option<String>,
    #[serde(default)]
    severity: Option<String>,
    #[serde(default)]
    severity_source: Option<String>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "PrimaryURL")]
    primary_url: Option<String>,
    #[serde(default, rename = "CVSS")]
    cvss: Option<IndexMap<String, RawCvss>>,
}

#[derive(Deserialize)]
struct RawCvss {
    #[serde(default, rename = "V2Score")]
    v2: Option<f64>,
    #[serde(default, rename = "V3Score")]
    v3: Option<f64>,
    #[serde(default, rename = "V40Score")]
    v40: Option<f64>,
}

/// Parse a Trivy JSON report (`SchemaVersion` 2, or the bare array of results older Trivy
/// wrote). `source` names it in errors (`` `report.json` ``, `Trivy's output`).
pub fn parse_report(bytes: &[u8], source: &str) -> Result<Report, ToolError> {
    let invalid = |message: String, pos: Option<(usize, usize)>| {
        let mut e = ToolError::new(ErrorClass::ToolError, message).with_code("SCAN_REPORT_INVALID");
        if let Some((line, column)) = pos {
            e = e.with_details(json!({"line": line, "column": column}));
        }
        e
    };
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    let parsed = match first {
        None => {
            return Err(invalid(
                format!("{source} is empty, not a Trivy JSON report"),
                None,
            ));
        }
        Some(b'[') => serde_json::from_slice::<Vec<RawResult>>(bytes).map(|results| RawReport {
            artifact_name: None,
            trivy: None,
            results: Some(results),
        }),
        Some(_) => serde_json::from_slice::<RawReport>(bytes),
    };
    let raw = parsed.map_err(|e| {
        invalid(
            format!("{source} is not a valid Trivy JSON report: {e}"),
            Some((e.line(), e.column())),
        )
    })?;
    let mut findings = Vec::new();
    for result in raw.results.unwrap_or_default() {
        let target = result.target.unwrap_or_default();
        for v in result.vulnerabilities.unwrap_or_default() {
            findings.push(finding(v, &target));
        }
    }
    Ok(Report {
        artifact_name: raw.artifact_name.filter(|s| !s.is_empty()),
        trivy_version: raw.trivy.and_then(|t| t.version).filter(|s| !s.is_empty()),
        findings,
    })
}

fn finding(v: RawVulnerability, target: &str) -> Finding {
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    let score = score(v.cvss.as_ref(), v.severity_source.as_deref());
    let title = non_empty(v.title)
        .or_else(|| non_empty(v.description).map(|d| one_line(&d, TITLE_MAX)))
        .map(|t| one_line(&t, usize::MAX));
    Finding {
        id: v.vulnerability_id.unwrap_or_default(),
        package: v.pkg_name.unwrap_or_default(),
        installed: v.installed_version.unwrap_or_default(),
        fixed: non_empty(v.fixed_version),
        severity: Severity::from_report(v.severity.as_deref()),
        score,
        title,
        target: target.to_owned(),
        url: non_empty(v.primary_url),
    }
}

/// The CVSS score to sort by: the v3 score of the vendor the severity came from, else
/// NVD's, else the highest v3 given; without v3, the highest v4.0, then v2.
fn score(cvss: Option<&IndexMap<String, RawCvss>>, source: Option<&str>) -> Option<f64> {
    let cvss = cvss?;
    let of = |vendor: &str| cvss.get(vendor).and_then(|c| c.v3);
    let highest = |pick: fn(&RawCvss) -> Option<f64>| {
        cvss.values()
            .filter_map(pick)
            .filter(|s| s.is_finite())
            .reduce(f64::max)
    };
    source
        .and_then(of)
        .or_else(|| of("nvd"))
        .or_else(|| highest(|c| c.v3))
        .or_else(|| highest(|c| c.v40))
        .or_else(|| highest(|c| c.v2))
}

/// `s` on one line (whitespace runs become one space), at most `max` characters with `…`.
fn one_line(s: &str, max: usize) -> String {
    let flat = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", flat[..i].trim_end()),
        None => flat,
    }
}

// ---------------------------------------------------------------------------------------
// Running Trivy

/// `trivy` on the step's PATH (`ctx.env`), else on ckflow's.
fn find_trivy(ctx: &ToolContext) -> Option<PathBuf> {
    let path = match ctx.env.get("PATH") {
        Some(p) => std::ffi::OsString::from(p),
        None => std::env::var_os("PATH")?,
    };
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(TRIVY))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Trivy's command line for `image`.
fn trivy_args(image: &str, args: &Args) -> Vec<String> {
    let mut v: Vec<String> = [
        "image",
        "--format",
        "json",
        "--quiet",
        "--scanners",
        "vuln",
        "--timeout",
    ]
    .map(String::from)
    .to_vec();
    v.push(format_duration(args.timeout));
    if let Some(sevs) = &args.filter.severities {
        v.push("--severity".into());
        v.push(
            sevs.iter()
                .map(|s| s.trivy_name())
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    if args.filter.ignore_unfixed {
        v.push("--ignore-unfixed".into());
    }
    v.push(image.to_owned());
    v
}

/// A command for `trivy` with the step's environment, in its own process group.
fn command(trivy: &Path, ctx: &ToolContext) -> Command {
    let mut cmd = Command::new(trivy);
    cmd.envs(&ctx.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if ctx.project_dir.is_dir() {
        cmd.current_dir(&ctx.project_dir);
    }
    cmd
}

/// How a Trivy process ended.
enum Ended {
    /// It exited: its status, stdout (`None` when over [`MAX_REPORT_BYTES`]) and stderr.
    Exited(std::io::Result<ExitStatus>, Option<Vec<u8>>, Capture),
    /// `ctx.cancel` fired.
    Cancelled,
    /// It outlived the deadline.
    TimedOut,
}

/// Run `trivy` with `argv`, killing its process group on cancel, at `deadline` or if the
/// call is dropped.
async fn run_process(
    trivy: &Path,
    argv: &[String],
    ctx: &ToolContext,
    deadline: Duration,
    progress: Option<&ProgressFn>,
) -> Result<Ended, ToolError> {
    let mut child = command(trivy, ctx).args(argv).spawn().map_err(|e| {
        ToolError::new(
            ErrorClass::ToolError,
            format!("cannot start `{}`: {e}", trivy.display()),
        )
        .with_code("SCAN_FAILED")
    })?;
    let mut group = Group::of(&child);
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(
            ToolError::new(ErrorClass::ToolError, "Trivy's pipes are missing")
                .with_code("SCAN_FAILED"),
        );
    };
    let ended = {
        let work = async {
            let (out, err, status) = tokio::join!(
                read_capped(stdout),
                read_stderr(stderr, progress),
                child.wait()
            );
            Ended::Exited(status, out, err)
        };
        tokio::select! {
            biased;
            () = ctx.cancel.cancelled() => Ended::Cancelled,
            () = tokio::time::sleep(deadline) => Ended::TimedOut,
            ended = work => ended,
        }
    };
    match ended {
        Ended::Exited(..) => {
            // Whatever Trivy left running in its group goes with it.
            group.kill_rest();
        }
        Ended::Cancelled | Ended::TimedOut => group.terminate(&mut child).await,
    }
    Ok(ended)
}

/// Scan `image` and parse the report.
async fn run_trivy(
    trivy: &Path,
    image: &str,
    args: &Args,
    ctx: &ToolContext,
) -> Result<Report, ToolError> {
    let argv = trivy_args(image, args);
    // Trivy stops itself at `--timeout`; this is the backstop for one that does not.
    let deadline = args.timeout + args.timeout.min(Duration::from_secs(30));
    let (status, stdout, stderr) =
        match run_process(trivy, &argv, ctx, deadline, Some(&ctx.progress)).await? {
            Ended::Exited(status, stdout, stderr) => (status, stdout, stderr),
            Ended::Cancelled => return Err(ToolError::cancelled()),
            Ended::TimedOut => {
                return Err(ToolError::new(
                    ErrorClass::Timeout,
                    format!(
                        "Trivy was still scanning {image} {} after its `--timeout {}` ran out, \
                         and was killed",
                        format_duration(deadline - args.timeout),
                        format_duration(args.timeout)
                    ),
                )
                .with_code("SCAN_TIMEOUT"));
            }
        };
    let status = status.map_err(|e| {
        ToolError::new(ErrorClass::ToolError, format!("waiting for Trivy: {e}"))
            .with_code("SCAN_FAILED")
    })?;
    if !status.success() {
        return Err(trivy_failed(image, status, &stderr, args, &ctx.secrets));
    }
    let stdout = stdout.ok_or_else(|| {
        ToolError::new(
            ErrorClass::ToolError,
            format!(
                "Trivy's report on {image} is larger than {} MiB",
                MAX_REPORT_BYTES >> 20
            ),
        )
        .with_code("SCAN_REPORT_INVALID")
    })?;
    parse_report(&stdout, &format!("Trivy's output for {image}"))
}

/// The failure for a Trivy that exited non-zero.
fn trivy_failed(
    image: &str,
    status: ExitStatus,
    stderr: &Capture,
    args: &Args,
    secrets: &[String],
) -> ToolError {
    use std::os::unix::process::ExitStatusExt;
    let mut tail = stderr.tail();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        tail = tail.replace(s.as_str(), "***");
    }
    let last = error_summary(&tail);
    let exit = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        (None, None) => "failure".to_owned(),
    };
    let lower = tail.to_ascii_lowercase();
    let (class, code, head) = if [
        "unable to find the specified image",
        "no such image",
        "manifest unknown",
        "name unknown",
    ]
    .iter()
    .any(|p| lower.contains(p))
    {
        (
            ErrorClass::NotFound,
            "IMAGE_NOT_FOUND",
            format!("Trivy cannot find the image {image} locally or in its registry"),
        )
    } else if lower.contains("context deadline exceeded") {
        (
            ErrorClass::Timeout,
            "SCAN_TIMEOUT",
            format!(
                "Trivy timed out scanning {image} (`--timeout {}`; raise `timeout`)",
                format_duration(args.timeout)
            ),
        )
    } else {
        (
            ErrorClass::ToolError,
            "SCAN_FAILED",
            format!("Trivy failed to scan {image} ({exit})"),
        )
    };
    let message = match last {
        Some(l) => format!("{head}: {l}"),
        None => head,
    };
    ToolError::new(class, message)
        .with_code(code)
        .with_details(json!({"exit_code": status.code(), "stderr": tail}))
}

/// Trivy's error, from its last `FATAL`/`ERROR` log line to the end (its errors span lines:
/// `4 errors occurred:` and a line per cause), on one line without the timestamp, at most
/// 500 characters; else the last line.
fn error_summary(stderr: &str) -> Option<String> {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("FATAL") || l.contains("ERROR"))
        .or_else(|| lines.len().checked_sub(1))?;
    let text = lines.get(start..)?.join(" ");
    let text = match text.split_once(char::is_whitespace) {
        Some((first, rest))
            if first.len() >= 10
                && first
                    .get(..4)
                    .is_some_and(|y| y.bytes().all(|b| b.is_ascii_digit()))
                && first.get(4..5) == Some("-") =>
        {
            rest
        }
        _ => text.as_str(),
    };
    Some(one_line(text, 500))
}

/// `trivy --version`'s `Version: X`, or `None` if it does not say.
async fn trivy_version(trivy: &Path, ctx: &ToolContext) -> Result<Option<String>, ToolError> {
    let argv = ["--version".to_owned()];
    match run_process(trivy, &argv, ctx, VERSION_TIMEOUT, None).await {
        Ok(Ended::Exited(Ok(status), Some(out), _)) if status.success() => {
            Ok(parse_version(&String::from_utf8_lossy(&out)))
        }
        Ok(Ended::Cancelled) => Err(ToolError::cancelled()),
        // The scan worked; an unknown version is no reason to fail it.
        _ => Ok(None),
    }
}

/// The version from `trivy --version` output (`Version: 0.58.1`, not the indented DB
/// versions below it).
fn parse_version(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// All of `r`, or `None` once past [`MAX_REPORT_BYTES`] (the rest is drained so Trivy is
/// not blocked writing).
async fn read_capped(mut r: impl AsyncRead + Unpin) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut over = false;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if over {
                    continue;
                }
                if out.len() + n > MAX_REPORT_BYTES {
                    over = true;
                    out = Vec::new();
                } else {
                    out.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
            }
        }
    }
    (!over).then_some(out)
}

/// Trivy's stderr: captured (for the error message), and each line sent as progress.
async fn read_stderr(mut r: impl AsyncRead + Unpin, progress: Option<&ProgressFn>) -> Capture {
    let mut capture = Capture::default();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 << 10];
    let emit = |line: &[u8]| {
        if let Some(p) = progress {
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches('\r');
            if !text.is_empty() {
                p(Progress::Output {
                    stream: "stderr",
                    line: one_line(text, 4096),
                });
            }
        }
    };
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let chunk = buf.get(..n).unwrap_or_default();
                capture.push(chunk);
                for part in chunk.split_inclusive(|b| *b == b'\n') {
                    if let Some(body) = part.strip_suffix(b"\n") {
                        line.extend_from_slice(body);
                        emit(&line);
                        line.clear();
                    } else if line.len() < 64 << 10 {
                        line.extend_from_slice(part);
                    }
                }
            }
        }
    }
    emit(&line);
    capture
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::tools::ToolRegistry;

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/trivy")
    }

    fn ctx(dir: &Path) -> ToolContext {
        ToolContext::detached(Arc::new(ToolRegistry::empty()), dir.to_path_buf())
    }

    fn fixture(name: &str) -> Report {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        parse_report(&bytes, name).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn all(name: &str) -> Summary {
        summarize(&fixture(name).findings, &Filter::default())
    }

    /// `(id, package, severity, score)` of each finding, in order.
    fn order(s: &Summary) -> Vec<(String, String, &'static str, Option<f64>)> {
        s.findings
            .iter()
            .map(|f| {
                (
                    f.id.clone(),
                    f.package.clone(),
                    f.severity.as_str(),
                    f.score,
                )
            })
            .collect()
    }

    fn row(
        id: &str,
        pkg: &str,
        sev: &'static str,
        score: Option<f64>,
    ) -> (String, String, &'static str, Option<f64>) {
        (id.to_owned(), pkg.to_owned(), sev, score)
    }

    fn counts(c: usize, h: usize, m: usize, l: usize, u: usize) -> Counts {
        Counts {
            critical: c,
            high: h,
            medium: m,
            low: l,
            unknown: u,
        }
    }

    #[test]
    fn clean_report_has_no_findings() {
        let r = fixture("clean.json");
        assert_eq!(r.artifact_name.as_deref(), Some("alpine:3.20.3"));
        assert_eq!(r.trivy_version, None);
        let s = summarize(&r.findings, &Filter::default());
        assert_eq!((s.counts, s.total, s.fixable), (Counts::default(), 0, 0));
    }

    #[test]
    fn report_without_results_has_no_findings() {
        let r = fixture("no-results.json");
        assert_eq!(r.artifact_name.as_deref(), Some("busybox:1.36.1"));
        assert!(r.findings.is_empty());
    }

    #[test]
    fn alpine_report_counts_sorts_and_knows_fixable() {
        let s = all("alpine.json");
        assert_eq!(s.counts, counts(3, 3, 2, 1, 0));
        assert_eq!((s.total, s.fixable), (9, 7));
        assert_eq!(
            order(&s),
            vec![
                row("CVE-2019-14697", "musl", "critical", Some(9.8)),
                row("CVE-2019-14697", "musl-utils", "critical", Some(9.8)),
                row("CVE-2021-36159", "apk-tools", "critical", Some(9.1)),
                row("CVE-2022-28391", "busybox", "high", Some(8.8)),
                row("CVE-2021-23840", "libcrypto1.1", "high", Some(7.5)),
                row("CVE-2021-23840", "libssl1.1", "high", Some(7.5)),
                row("CVE-2020-28928", "musl", "medium", Some(5.5)),
                row("CVE-2019-1549", "libcrypto1.1", "medium", Some(5.3)),
                // Only a Red Hat score, which is also its severity source.
                row("CVE-2021-42374", "busybox", "low", Some(5.3)),
            ]
        );
        let busybox = &s.findings[3];
        assert_eq!(busybox.fixed, None);
        assert_eq!(busybox.installed, "1.29.3-r10");
        assert_eq!(
            busybox.target,
            "registry.example.com/shop/api:1.4.2 (alpine 3.9.4)"
        );
        assert_eq!(
            busybox.url.as_deref(),
            Some("https://avd.aquasec.com/nvd/cve-2022-28391")
        );
        assert_eq!(s.findings[0].fixed.as_deref(), Some("1.1.20-r5"));
    }

    #[test]
    fn debian_report_with_language_packages_counts_duplicates_once() {
        let r = fixture("debian.json");
        assert_eq!(r.trivy_version.as_deref(), Some("0.65.0"));
        // CVE-2024-6345 is listed twice for setuptools 65.5.1 (two site-packages).
        assert_eq!(r.findings.len(), 14);
        let s = summarize(&r.findings, &Filter::default());
        assert_eq!(s.counts, counts(1, 5, 3, 3, 1));
        assert_eq!((s.total, s.fixable), (13, 6));
        assert_eq!(
            order(&s),
            vec![
                row("CVE-2023-45853", "zlib1g", "critical", Some(9.8)),
                row("CVE-2025-47273", "setuptools", "high", Some(7.7)),
                // Severity from Red Hat: its score, not NVD's.
                row("CVE-2024-33599", "libc6", "high", Some(7.6)),
                // Severity from GHSA (7.5), although NVD says 8.8.
                row("CVE-2024-6345", "setuptools", "high", Some(7.5)),
                row("CVE-2024-2961", "libc-bin", "high", Some(7.3)),
                row("CVE-2024-2961", "libc6", "high", Some(7.3)),
                row("CVE-2023-50495", "libncursesw6", "medium", Some(6.5)),
                row("CVE-2023-4641", "login", "medium", Some(5.5)),
                row("CVE-2023-5752", "pip", "medium", Some(5.5)),
                // Severity from Debian, which gives no score: NVD's.
                row("CVE-2022-0563", "bsdutils", "low", Some(5.5)),
                row("CVE-2011-3374", "apt", "low", Some(3.7)),
                row("TEMP-0841856-B18BAF", "bash", "low", None),
                row("CVE-2025-0395", "libc6", "unknown", None),
            ]
        );
        let setuptools = &s.findings[3];
        assert_eq!(setuptools.target, "Python");
        assert_eq!(setuptools.fixed.as_deref(), Some("70.0.0"));
        // No title: the description stands in.
        assert_eq!(
            s.findings[11].title.as_deref(),
            Some("[Privilege escalation possible to other user than root]")
        );
        let apt = s.findings[10].title.as_deref().unwrap();
        assert!(apt.starts_with("It was found that apt-key"), "{apt}");
        assert!(
            apt.chars().count() <= TITLE_MAX + 1 && apt.ends_with('…'),
            "{apt}"
        );
    }

    #[test]
    fn legacy_array_report_is_read() {
        let r = fixture("legacy-v1.json");
        assert_eq!(r.artifact_name, None);
        let s = summarize(&r.findings, &Filter::default());
        assert_eq!(s.counts, counts(1, 2, 0, 0, 0));
        assert_eq!(s.findings[0].id, "CVE-2019-3822");
        assert_eq!(s.findings[0].score, None);
        // Equal severity, no scores: by id.
        assert_eq!(s.findings[1].id, "CVE-2018-16487");
        assert_eq!(s.findings[1].target, "node-app/package-lock.json");
        assert_eq!(s.findings[1].fixed.as_deref(), Some(">=4.17.11"));
    }

    #[test]
    fn truncated_report_names_the_file_and_position() {
        let bytes = std::fs::read(fixtures().join("truncated.json")).unwrap();
        let e = parse_report(&bytes, "`truncated.json`").unwrap_err();
        assert_eq!(e.class, ErrorClass::ToolError);
        assert_eq!(e.code.as_deref(), Some("SCAN_REPORT_INVALID"));
        assert!(
            e.message
                .starts_with("`truncated.json` is not a valid Trivy JSON report: ")
        );
        assert!(e.message.contains("line 189 column"), "{}", e.message);
        assert_eq!(e.details.as_ref().unwrap()["line"], 189);
    }

    #[test]
    fn odd_reports() {
        let e = parse_report(b"  \n", "x").unwrap_err();
        assert_eq!(e.code.as_deref(), Some("SCAN_REPORT_INVALID"));
        assert!(e.message.contains("empty"), "{}", e.message);
        // Wrong types are errors, with the position.
        let e = parse_report(br#"{"Results": {"Target": 1}}"#, "x").unwrap_err();
        assert!(e.message.contains("line 1 column"), "{}", e.message);
        // Nulls and missing fields are not; odd severities are `unknown`.
        let r = parse_report(br#"{"SchemaVersion": 2, "Results": null}"#, "x").unwrap();
        assert!(r.findings.is_empty());
        let r = parse_report(
            br#"{"Results": [{"Target": "t", "Vulnerabilities": [
                {"VulnerabilityID": "X-1", "Severity": "NEGLIGIBLE", "FixedVersion": ""},
                {"VulnerabilityID": "X-2", "Severity": "high", "CVSS": {"nvd": {"V2Score": 4.3}}},
                {"VulnerabilityID": "X-3", "Severity": null, "CVSS": {"x": {"V40Score": 8.1}}},
                {}
            ]}, {"Vulnerabilities": null}]}"#,
            "x",
        )
        .unwrap();
        let s = summarize(&r.findings, &Filter::default());
        assert_eq!(s.counts, counts(0, 1, 0, 0, 3));
        assert_eq!(s.fixable, 0, "an empty FixedVersion is no fix");
        assert_eq!(s.findings[0].score, Some(4.3));
        assert_eq!(s.findings[1].id, "X-3");
        assert_eq!(s.findings[1].score, Some(8.1));
        assert_eq!(s.at_or_above(Severity::Low), 1);
    }

    #[test]
    fn filters_apply_to_reports() {
        let r = fixture("debian.json");
        let fixed_only = Filter {
            ignore_unfixed: true,
            severities: None,
        };
        let s = summarize(&r.findings, &fixed_only);
        assert_eq!((s.total, s.fixable), (6, 6));
        assert_eq!(s.counts, counts(0, 5, 1, 0, 0));
        let high_up = Filter {
            ignore_unfixed: false,
            severities: Some(vec![Severity::Critical, Severity::High]),
        };
        let s = summarize(&r.findings, &high_up);
        assert_eq!(s.counts, counts(1, 5, 0, 0, 0));
    }

    #[test]
    fn duplicates_merge_to_the_worst() {
        let base = Finding {
            id: "CVE-1".into(),
            package: "p".into(),
            installed: "1".into(),
            fixed: None,
            severity: Severity::Medium,
            score: Some(5.0),
            title: None,
            target: "a".into(),
            url: None,
        };
        let other = Finding {
            fixed: Some("2".into()),
            severity: Severity::High,
            score: Some(7.0),
            title: Some("t".into()),
            target: "b".into(),
            ..base.clone()
        };
        let different_version = Finding {
            installed: "1.1".into(),
            ..base.clone()
        };
        let s = summarize(
            &[base.clone(), other, different_version],
            &Filter::default(),
        );
        assert_eq!(s.total, 2);
        let merged = &s.findings[0];
        assert_eq!(merged.severity, Severity::High);
        assert_eq!(merged.score, Some(7.0));
        assert_eq!(merged.fixed.as_deref(), Some("2"));
        assert_eq!(merged.title.as_deref(), Some("t"));
        assert_eq!(merged.target, "a", "the first place listed");
        assert_eq!(s.fixable, 1);
    }

    #[test]
    fn thresholds_include_the_level_and_above_but_never_unknown() {
        let s = all("debian.json");
        assert_eq!(s.at_or_above(Severity::Critical), 1);
        assert_eq!(s.at_or_above(Severity::High), 6);
        assert_eq!(s.at_or_above(Severity::Medium), 9);
        assert_eq!(s.at_or_above(Severity::Low), 12);
        let clean = all("clean.json");
        assert_eq!(clean.at_or_above(Severity::Low), 0);
    }

    #[test]
    fn severity_names() {
        for s in [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Unknown,
        ] {
            assert_eq!(Severity::from_name(s.as_str()), Some(s));
            assert_eq!(Severity::from_name(s.trivy_name()), Some(s));
        }
        assert_eq!(Severity::from_name("none"), None);
        assert_eq!(Severity::from_report(Some("NEGLIGIBLE")), Severity::Unknown);
        assert_eq!(Severity::from_report(None), Severity::Unknown);
        assert!(Severity::Critical > Severity::High && Severity::Low > Severity::Unknown);
    }

    #[test]
    fn arguments_are_checked() {
        let dir = Path::new("/project");
        let c = ctx(dir);
        let a = parse_args(&json!({"image": "app:1"}), &c).unwrap();
        assert_eq!(
            a,
            Args {
                source: Source::Image("app:1".into()),
                fail_on: None,
                filter: Filter::default(),
                max_findings: 20,
                timeout: Duration::from_secs(300),
            }
        );
        let a = parse_args(
            &json!({"report_file": "out/trivy.json", "fail_on": "high", "ignore_unfixed": true,
                    "severity": ["low", "critical", "low"], "max_findings": 0, "timeout": "90s"}),
            &c,
        )
        .unwrap();
        assert_eq!(a.source, Source::ReportFile(dir.join("out/trivy.json")));
        assert_eq!(a.fail_on, Some(Severity::High));
        assert_eq!(
            a.filter.severities,
            Some(vec![Severity::Critical, Severity::Low])
        );
        assert_eq!((a.max_findings, a.timeout), (0, Duration::from_secs(90)));
        // An image id is not a reference, but Trivy takes it.
        assert!(
            parse_args(
                &json!({"image": "sha256:".to_owned() + &"a".repeat(64)}),
                &c
            )
            .is_ok()
        );

        for (bad, needle) in [
            (json!([]), "must be an object"),
            (json!({}), "one of `image`"),
            (json!({"image": "a", "report_file": "b"}), "not both"),
            (
                json!({"image": "a", "fial_on": "high"}),
                "unknown argument `fial_on`",
            ),
            (json!({"image": 3}), "`image` must be a string"),
            (json!({"image": "-v"}), "`image`:"),
            (json!({"image": "Has Space"}), "`image`:"),
            (json!({"report_file": ""}), "empty"),
            (
                json!({"image": "a", "fail_on": "unknown"}),
                "`fail_on` is `unknown`",
            ),
            (
                json!({"image": "a", "fail_on": "severe"}),
                "`fail_on` is `severe`",
            ),
            (
                json!({"image": "a", "ignore_unfixed": "yes"}),
                "true or false",
            ),
            (json!({"image": "a", "severity": []}), "non-empty list"),
            (
                json!({"image": "a", "severity": ["bad"]}),
                "`severity` holds \"bad\"",
            ),
            (
                json!({"image": "a", "max_findings": -1}),
                "`max_findings` is -1",
            ),
            (
                json!({"image": "a", "max_findings": 1.5}),
                "`max_findings` is 1.5",
            ),
            (json!({"image": "a", "max_findings": 10001}), "0 to 10000"),
            (json!({"image": "a", "timeout": "0s"}), "positive duration"),
            (
                json!({"image": "a", "timeout": "5 minutes"}),
                "positive duration",
            ),
        ] {
            let e = parse_args(&bad, &c).unwrap_err();
            assert_eq!(e.class, ErrorClass::InvalidInput, "{bad}");
            assert!(e.message.contains(needle), "{bad}: {}", e.message);
        }
    }

    #[test]
    fn schema_agrees_with_the_argument_check() {
        let schema = ScanImage.input_schema();
        let v = jsonschema::draft202012::new(&schema).unwrap();
        let props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        assert_eq!(props, ARG_NAMES.iter().collect::<Vec<_>>());
        for p in schema["properties"].as_object().unwrap().values() {
            assert!(p["description"].is_string(), "{p}");
        }
        let c = ctx(Path::new("/p"));
        for good in [
            json!({"image": "app:1", "fail_on": "critical", "severity": ["high"], "timeout": "1h30m"}),
            json!({"report_file": "r.json", "max_findings": 0, "ignore_unfixed": true}),
        ] {
            assert!(v.is_valid(&good), "{good}");
            assert!(parse_args(&good, &c).is_ok(), "{good}");
        }
        for bad in [
            json!({}),
            json!({"image": "a", "report_file": "b"}),
            json!({"image": "a", "fail_on": "unknown"}),
            json!({"image": "a", "severity": []}),
            json!({"image": "a", "max_findings": -1}),
            json!({"image": "a", "timeout": "5 minutes"}),
            json!({"image": "a", "other": 1}),
        ] {
            assert!(!v.is_valid(&bad), "{bad}");
            assert!(parse_args(&bad, &c).is_err(), "{bad}");
        }
    }

    #[test]
    fn trivy_command_line() {
        let c = ctx(Path::new("/p"));
        let a = parse_args(&json!({"image": "app:1"}), &c).unwrap();
        assert_eq!(
            trivy_args("app:1", &a).join(" "),
            "image --format json --quiet --scanners vuln --timeout 5m app:1"
        );
        let a = parse_args(
            &json!({"image": "app:1", "severity": ["high", "critical"], "ignore_unfixed": true,
                    "timeout": "90s"}),
            &c,
        )
        .unwrap();
        assert_eq!(
            trivy_args("app:1", &a).join(" "),
            "image --format json --quiet --scanners vuln --timeout 1m30s --severity CRITICAL,HIGH \
             --ignore-unfixed app:1"
        );
    }

    #[test]
    fn version_line() {
        let out = "Version: 0.58.1\nVulnerability DB:\n  Version: 2\n  UpdatedAt: 2024-12-10\n";
        assert_eq!(parse_version(out).as_deref(), Some("0.58.1"));
        assert_eq!(parse_version("  Version: 2\n"), None);
        assert_eq!(parse_version(""), None);
    }

    #[test]
    fn trivy_failures_are_classified() {
        use std::os::unix::process::ExitStatusExt;
        let a = parse_args(&json!({"image": "app:1"}), &ctx(Path::new("/p"))).unwrap();
        let fail = |stderr: &str| {
            let mut c = Capture::default();
            c.push(stderr.as_bytes());
            trivy_failed(
                "app:1",
                ExitStatus::from_raw(1 << 8),
                &c,
                &a,
                &["s3cret".into()],
            )
        };
        let e = fail(
            "2024-12-10T10:00:00Z\tFATAL\tFatal error\trun error: image scan error: unable to \
             find the specified image \"app:1\" in [\"docker\" \"remote\"]: 2 errors occurred\n",
        );
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("IMAGE_NOT_FOUND"));
        let e = fail("FATAL\tscan error: context deadline exceeded\n");
        assert_eq!(e.class, ErrorClass::Timeout);
        assert_eq!(e.code.as_deref(), Some("SCAN_TIMEOUT"));
        assert!(e.message.contains("raise `timeout`"), "{}", e.message);
        let e = fail("INFO\tstarting\nFATAL\tDB error: password s3cret rejected\n\n");
        assert_eq!(e.class, ErrorClass::ToolError);
        assert_eq!(e.code.as_deref(), Some("SCAN_FAILED"));
        assert_eq!(
            e.message,
            "Trivy failed to scan app:1 (exit code 1): FATAL DB error: password *** rejected"
        );
        assert_eq!(e.details.as_ref().unwrap()["exit_code"], 1);
        let e = fail("");
        assert_eq!(e.message, "Trivy failed to scan app:1 (exit code 1)");
        let e = fail("no log level here\n");
        assert!(
            e.message.ends_with("(exit code 1): no log level here"),
            "{}",
            e.message
        );
    }

    #[test]
    fn trivy_errors_are_summarised_from_the_fatal_line() {
        let stderr = "2024-12-10T09:40:01Z\tINFO\tNeed to update DB\n\
                      2024-12-10T09:40:02Z\tFATAL\tFatal error\trun error: 2 errors occurred:\n\
                      \t* docker error: No such image: app:1\n\
                      \t* remote error: MANIFEST_UNKNOWN\n";
        assert_eq!(
            error_summary(stderr).as_deref(),
            Some(
                "FATAL Fatal error run error: 2 errors occurred: * docker error: No such image: \
                 app:1 * remote error: MANIFEST_UNKNOWN"
            )
        );
        assert_eq!(error_summary("\n \n"), None);
        let long = format!("FATAL {}", "x".repeat(1000));
        assert_eq!(error_summary(&long).unwrap().chars().count(), 501);
    }

    #[test]
    fn one_line_shortens_on_characters() {
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line("ééééé", 3), "ééé…");
        assert_eq!(one_line("ab cd", 3), "ab…");
    }

    #[test]
    fn default_rule_fails_the_run_on_the_code() {
        let rules = ScanImage.default_rules();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].matcher.tool, vec!["scan_image"]);
        assert_eq!(rules[0].matcher.error, vec!["CRITICAL_VULNS_FOUND"]);
        assert_eq!(rules[0].route, None);
        assert_eq!(rules[0].then, Then::Fail);
        let codes: Vec<&str> = ScanImage.error_codes().iter().map(|c| c.0).collect();
        assert!(codes.contains(&"CRITICAL_VULNS_FOUND") && codes.contains(&"SCANNER_NOT_FOUND"));
        assert!(ScanImage.host_exec() && !ScanImage.destructive());
    }

    #[tokio::test]
    async fn missing_report_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = ScanImage
            .call(json!({"report_file": "nope.json"}), ctx(dir.path()))
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::NotFound);
        assert_eq!(e.code.as_deref(), Some("REPORT_NOT_FOUND"));
        assert!(e.message.contains("nope.json"), "{}", e.message);
    }

    #[tokio::test]
    async fn fail_on_uses_the_threshold() {
        let c = ctx(&fixtures());
        let call = |fail_on: &str| {
            ScanImage.call(
                json!({"report_file": "alpine.json", "fail_on": fail_on, "max_findings": 2}),
                c.clone(),
            )
        };
        let e = call("critical").await.unwrap_err();
        assert_eq!(e.class, ErrorClass::ToolError);
        assert_eq!(e.code.as_deref(), Some("CRITICAL_VULNS_FOUND"));
        assert_eq!(
            e.message,
            "registry.example.com/shop/api:1.4.2 has 3 vulnerabilities at or above `critical` \
             (critical 3, high 3, medium 2, low 1, unknown 0; 7 fixable)"
        );
        let d = e.details.unwrap();
        assert_eq!(d["total"], 9);
        assert_eq!(d["fail_on"], "critical");
        assert_eq!(d["findings"].as_array().unwrap().len(), 2);
        let e = call("low").await.unwrap_err();
        assert!(
            e.message.contains(" 9 vulnerabilities at or above `low`"),
            "{}",
            e.message
        );
        let ok = call("none").await.unwrap();
        assert_eq!(ok["counts"]["critical"], 3);
        let clean = ScanImage
            .call(
                json!({"report_file": "clean.json", "fail_on": "low"}),
                c.clone(),
            )
            .await
            .unwrap();
        assert_eq!(clean["total"], 0);
        // Only what is counted is judged.
        let fixed_high = ScanImage
            .call(
                json!({"report_file": "debian.json", "fail_on": "critical",
                       "ignore_unfixed": true}),
                c.clone(),
            )
            .await
            .unwrap();
        assert_eq!(fixed_high["counts"]["critical"], 0);
    }

    #[tokio::test]
    async fn cancelled_before_start() {
        let c = ctx(&fixtures());
        c.cancel.cancel();
        let e = ScanImage
            .call(json!({"report_file": "alpine.json"}), c)
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Cancelled);
    }
}
