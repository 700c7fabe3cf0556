//! The terminal reporter of `ckflow run`: live progress on a terminal (a run bar and one
//! spinner line per running step, with retries and routing printed as they happen), plain
//! lines without colour elsewhere (`step build succeeded in 1.2s (2 attempts)`), and a
//! summary table at the end. It only reads [`Event`]s and the final [`RunReport`].
//!
//! A resumed run's steps kept from the earlier attempt say so: `step build succeeded (kept
//! from the earlier attempt)` as they are reported, `succeeded (kept)` in the table; a
//! `for_each` step that ran again says how many of its instances were kept.

use std::collections::HashMap;
use std::io::{self, Write};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{RunReport, StepStatus, human_duration};
use crate::engine::{Event, EventKind};

/// More steps than this and the summary table lists only the steps that did not succeed.
const FULL_TABLE: usize = 50;

/// Draws a run on stderr (or, for tests, on any writer, plain).
pub struct Terminal {
    live: Option<Live>,
    out: Box<dyn Write + Send>,
    color: bool,
    /// Resume: steps announced as kept, by id: `None` kept whole, `Some((n, total))` a
    /// `for_each` step with `n` of its `total` instances kept.
    kept: HashMap<String, Option<(u64, u64)>>,
}

struct Live {
    mp: MultiProgress,
    run: ProgressBar,
    /// Spinners of running steps and instances, by label (`build`, `build[2]`).
    running: HashMap<String, ProgressBar>,
    /// Bars of the parts a step reports progress on with a known size (the layers of a push
    /// or pull), by label and part id.
    parts: HashMap<(String, String), ProgressBar>,
}

impl Terminal {
    /// A reporter on stderr: live when `live` (stderr is a terminal), coloured when `color`.
    pub fn stderr(live: bool, color: bool) -> Terminal {
        let live = live.then(|| {
            let mp = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
            let run = mp.add(ProgressBar::new(0));
            run.set_style(
                ProgressStyle::with_template(
                    "{elapsed_precise:.dim} [{bar:30}] {pos}/{len} steps {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            run.enable_steady_tick(Duration::from_millis(200));
            Live {
                mp,
                run,
                running: HashMap::new(),
                parts: HashMap::new(),
            }
        });
        Terminal {
            live,
            out: Box::new(io::BufWriter::new(io::stderr())),
            color,
            kept: HashMap::new(),
        }
    }

    /// A plain reporter writing to `out` (no live progress, no colour).
    pub fn plain(out: Box<dyn Write + Send>) -> Terminal {
        Terminal {
            live: None,
            out,
            color: false,
            kept: HashMap::new(),
        }
    }

    fn paint(&self, text: &str, status: StepStatus) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = match status {
            StepStatus::Succeeded => "32",
            StepStatus::Failed => "31",
            StepStatus::Skipped | StepStatus::Pending => "2",
            StepStatus::Cancelled | StepStatus::Running => "33",
        };
        format!("\x1b[{code}m{text}\x1b[0m")
    }

    fn line(&mut self, text: String) {
        match &self.live {
            Some(live) => live.mp.suspend(|| eprintln!("{text}")),
            None => {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }

    /// A resume's word on a step: kept whole, some instances kept, or the items changed.
    fn resume_note(&mut self, kind: &EventKind) {
        match kind {
            EventKind::StepKept {
                step,
                kept_instances: None,
                ..
            } => {
                self.kept.insert(step.to_owned(), None);
            }
            EventKind::StepKept {
                step,
                kept_instances: Some(n),
                instances,
            } => {
                let total = instances.unwrap_or(*n);
                self.kept.insert(step.to_owned(), Some((*n, total)));
                self.line(format!(
                    "step {step}: {n} of {total} instances kept from the earlier attempt"
                ));
            }
            EventKind::ItemsChanged { step, .. } => {
                self.line(format!(
                    "step {step}: its items changed since the earlier attempt; all instances run again"
                ));
            }
            _ => {}
        }
    }

    /// Take one event into account.
    pub fn event(&mut self, e: &Event) {
        match &e.kind {
            EventKind::StepKept { .. } | EventKind::ItemsChanged { .. } => {
                self.resume_note(&e.kind);
            }
            EventKind::RunStarted { workflow, steps } => {
                if let Some(live) = &self.live {
                    live.run.set_length(*steps as u64);
                    live.run.set_message(format!("{workflow} ({})", e.run_id));
                } else {
                    self.line(format!("run {} of {workflow}: {steps} steps", e.run_id));
                }
            }
            EventKind::StepStarted {
                step,
                instance,
                attempt,
            } => {
                if let Some(live) = &mut self.live {
                    let label = label(step, *instance);
                    let msg = if *attempt > 1 {
                        format!("{label} (attempt {attempt})")
                    } else {
                        label.clone()
                    };
                    let bar = live.running.entry(label).or_insert_with(|| {
                        let b = live.mp.insert_before(&live.run, ProgressBar::new_spinner());
                        b.set_style(
                            ProgressStyle::with_template("  {spinner} {msg} {elapsed:.dim}")
                                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                        );
                        b.enable_steady_tick(Duration::from_millis(120));
                        b
                    });
                    bar.set_message(msg);
                }
            }
            EventKind::StepOutput {
                step,
                instance,
                line,
                ..
            } => {
                self.line(format!("  {} | {line}", label(step, *instance)));
            }
            EventKind::StepProgress {
                step,
                instance,
                id,
                status,
                current,
                total,
            } => {
                if let Some(live) = &mut self.live {
                    let who = label(step, *instance);
                    if let (Some(c), Some(t)) = (current, total) {
                        // A part with a known size gets its own bar under the step.
                        let key = (who.clone(), id.clone());
                        let mp = &live.mp;
                        let bar = live.parts.entry(key).or_insert_with(|| {
                            let b = mp.add(ProgressBar::new(*t));
                            b.set_style(
                                ProgressStyle::with_template(
                                    "    {msg:30} [{bar:24}] {bytes}/{total_bytes}",
                                )
                                .unwrap_or_else(|_| ProgressStyle::default_bar())
                                .progress_chars("=> "),
                            );
                            b
                        });
                        bar.set_length(*t);
                        bar.set_position(*c);
                        bar.set_message(format!("{id} {status}"));
                    } else if let Some(bar) = live.running.get(&who) {
                        let amount = current.map(|c| format!(" {c}")).unwrap_or_default();
                        bar.set_message(format!("{who}: {id} {status}{amount}"));
                    }
                }
            }
            EventKind::StepRetrying {
                step,
                instance,
                attempt,
                delay_ms,
                error,
            } => {
                self.line(format!(
                    "step {} attempt {attempt} failed ({error}); retrying in {}",
                    label(step, *instance),
                    human_duration(*delay_ms)
                ));
            }
            EventKind::StepRouted {
                step,
                instance,
                rule,
                tool,
                then,
                ..
            } => {
                let then = serde_json::to_value(then)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let via = tool
                    .as_ref()
                    .map(|t| format!(" runs {t}, then"))
                    .unwrap_or_else(|| ":".into());
                self.line(format!(
                    "step {} failed; rule {rule}{via} {then}",
                    label(step, *instance)
                ));
            }
            EventKind::RecoveryStarted { .. } => {}
            EventKind::RecoveryFinished {
                step,
                instance,
                tool,
                status,
                duration_ms,
                error,
                ..
            } => {
                let tail = error.as_ref().map(|e| format!(": {e}")).unwrap_or_default();
                let status_text = self.paint(status.as_str(), *status);
                self.line(format!(
                    "recovery {tool} for {} {status_text} in {}{tail}",
                    label(step, *instance),
                    human_duration(*duration_ms)
                ));
            }
            EventKind::StepSkipped { step, reason } => {
                self.step_done(step);
                let skipped = self.paint("skipped", StepStatus::Skipped);
                let kept = match self.kept.remove(step) {
                    Some(None) => "; kept from the earlier attempt",
                    _ => "",
                };
                self.line(format!(
                    "step {step} {skipped} ({}{kept})",
                    reason.explain()
                ));
            }
            EventKind::StepFinished {
                step,
                status,
                attempts,
                duration_ms,
                error,
                tolerated,
                ..
            } => {
                self.step_done(step);
                let mut text = format!("step {step} {}", self.paint(status.as_str(), *status));
                let kept = self.kept.remove(step);
                if let Some(None) = kept {
                    text.push_str(" (kept from the earlier attempt)");
                    self.line(text);
                    return;
                }
                if *attempts > 0 {
                    text.push_str(&format!(" in {}", human_duration(*duration_ms)));
                }
                if *attempts > 1 {
                    text.push_str(&format!(" ({attempts} attempts)"));
                }
                if let Some(Some((n, total))) = kept {
                    text.push_str(&format!(" ({n} of {total} instances kept)"));
                }
                if let Some(e) = error {
                    text.push_str(&format!(": {e}"));
                }
                if *tolerated {
                    text.push_str(" (tolerated)");
                }
                self.line(text);
            }
            EventKind::RunFinished { .. } => {}
        }
    }

    fn step_done(&mut self, step: &str) {
        if let Some(live) = &mut self.live {
            live.run.inc(1);
            let prefix = format!("{step}[");
            live.running.retain(|label, bar| {
                let mine = label == step || label.starts_with(&prefix);
                if mine {
                    bar.finish_and_clear();
                    live.mp.remove(bar);
                }
                !mine
            });
            live.parts.retain(|(label, _), bar| {
                let mine = label == step || label.starts_with(&prefix);
                if mine {
                    bar.finish_and_clear();
                    live.mp.remove(bar);
                }
                !mine
            });
        }
    }

    /// Flush buffered lines (call when the event stream goes quiet).
    pub fn flush(&mut self) {
        let _ = self.out.flush();
    }

    /// Clear the live display and print the summary table and the run's outcome.
    pub fn finish(&mut self, report: &RunReport) {
        if let Some(live) = self.live.take() {
            for bar in live.running.values() {
                bar.finish_and_clear();
            }
            live.run.finish_and_clear();
            let _ = live.mp.clear();
        }
        let text = self.summary(report);
        let _ = self.out.write_all(text.as_bytes());
        self.flush();
    }

    /// The summary table and outcome line.
    pub fn summary(&self, report: &RunReport) -> String {
        let shown: Vec<(&String, &super::StepReport)> = if report.steps.len() <= FULL_TABLE {
            report.steps.iter().collect()
        } else {
            report
                .steps
                .iter()
                .filter(|(_, s)| s.status != StepStatus::Succeeded)
                .take(FULL_TABLE)
                .collect()
        };
        let mut out = String::new();
        if !shown.is_empty() {
            let w = shown
                .iter()
                .map(|(id, _)| id.len())
                .max()
                .unwrap_or(4)
                .max(4);
            let statuses: Vec<String> = shown
                .iter()
                .map(|(id, s)| status_text(s.status, report.kept(id)))
                .collect();
            let sw = statuses.iter().map(String::len).max().unwrap_or(9).max(9);
            out.push_str(&format!(
                "\n{:w$}  {:sw$}  {:>8}  {:>8}\n",
                "STEP", "STATUS", "ATTEMPTS", "DURATION"
            ));
            for ((id, s), status) in shown.iter().zip(statuses) {
                let status = format!("{status:sw$}");
                out.push_str(&format!(
                    "{id:w$}  {}  {:>8}  {:>8}\n",
                    self.paint(&status, s.status),
                    s.attempts,
                    human_duration(s.duration_ms)
                ));
            }
        }
        let hidden = report.steps.len() - shown.len();
        if hidden > 0 {
            out.push_str(&format!("… and {hidden} more steps\n"));
        }
        let mut counts: Vec<(StepStatus, usize)> = Vec::new();
        for s in report.steps.values() {
            match counts.iter_mut().find(|(st, _)| *st == s.status) {
                Some(c) => c.1 += 1,
                None => counts.push((s.status, 1)),
            }
        }
        counts.sort_by_key(|(s, _)| *s as u8);
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let mut counts = counts.join(", ");
        let kept_steps = report.kept.values().filter(|k| k.step).count();
        let kept_instances: usize = report.kept.values().map(|k| k.instances).sum();
        if kept_steps > 0 || kept_instances > 0 {
            let mut kept = Vec::new();
            if kept_steps > 0 {
                kept.push(format!(
                    "{kept_steps} step{} kept",
                    if kept_steps == 1 { "" } else { "s" }
                ));
            }
            if kept_instances > 0 {
                kept.push(format!(
                    "{kept_instances} instance{} kept",
                    if kept_instances == 1 { "" } else { "s" }
                ));
            }
            counts.push_str(&format!("; {}", kept.join(", ")));
        }
        let status = match report.status {
            super::RunStatus::Succeeded => self.paint("succeeded", StepStatus::Succeeded),
            super::RunStatus::Failed => self.paint("failed", StepStatus::Failed),
            super::RunStatus::Cancelled => self.paint("cancelled", StepStatus::Cancelled),
        };
        out.push_str(&format!(
            "run {} {status} in {} ({})\n",
            report.run_id,
            human_duration(report.duration_ms),
            counts
        ));
        for (id, s) in &report.steps {
            if let (StepStatus::Failed, Some(e)) = (s.status, &s.error) {
                let what = if s.tolerated {
                    "note: tolerated failure of"
                } else {
                    "error:"
                };
                out.push_str(&format!("{what} step {id}: {e}\n"));
            }
        }
        out
    }
}

/// A step's status as the summary table shows it: `succeeded`, `succeeded (kept)` for a
/// step a resume kept, `succeeded (3 instances kept)` for a `for_each` step that ran again.
fn status_text(status: StepStatus, kept: super::Kept) -> String {
    if kept.step {
        format!("{status} (kept)")
    } else if kept.instances > 0 {
        let s = if kept.instances == 1 { "" } else { "s" };
        format!("{status} ({} instance{s} kept)", kept.instances)
    } else {
        status.as_str().to_owned()
    }
}

fn label(step: &str, instance: Option<usize>) -> String {
    match instance {
        Some(i) => format!("{step}[{i}]"),
        None => step.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{RunStatus, StepReport};
    use crate::tools::ToolError;
    use crate::workflow::model::ErrorClass;
    use indexmap::IndexMap;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn ev(kind: EventKind) -> Event {
        Event {
            at: 0,
            elapsed_us: 0,
            run_id: "r-1".into(),
            kind,
        }
    }

    #[test]
    fn plain_lines_and_summary() {
        let buf = Buf::default();
        let mut t = Terminal::plain(Box::new(buf.clone()));
        t.event(&ev(EventKind::StepFinished {
            step: "build".into(),
            status: StepStatus::Succeeded,
            attempts: 2,
            duration_ms: 1200,
            outputs: serde_json::Value::Null,
            error: None,
            tolerated: false,
        }));
        let mut steps = IndexMap::new();
        steps.insert(
            "build".to_owned(),
            StepReport {
                status: StepStatus::Succeeded,
                attempts: 2,
                duration_ms: 1200,
                outputs: serde_json::Value::Null,
                error: None,
                tolerated: false,
                routing: vec![],
                skipped_reason: None,
            },
        );
        steps.insert(
            "test".to_owned(),
            StepReport {
                status: StepStatus::Failed,
                attempts: 1,
                duration_ms: 5,
                outputs: serde_json::Value::Null,
                error: Some(ToolError::new(ErrorClass::ExitCode, "exit 1")),
                tolerated: false,
                routing: vec![],
                skipped_reason: None,
            },
        );
        t.finish(&RunReport {
            run_id: "r-1".into(),
            workflow: "w".into(),
            status: RunStatus::Failed,
            duration_ms: 1300,
            steps,
            error: None,
            kept: IndexMap::new(),
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.starts_with("step build succeeded in 1.2s (2 attempts)\n"),
            "{text}"
        );
        assert!(
            text.contains("build  succeeded         2      1.2s"),
            "{text}"
        );
        assert!(
            text.contains("run r-1 failed in 1.3s (1 succeeded, 1 failed)"),
            "{text}"
        );
        assert!(
            text.contains("error: step test: exit_code: exit 1"),
            "{text}"
        );
        assert!(!text.contains('\x1b'));
    }

    fn step_report(status: StepStatus, attempts: u32, duration_ms: u64) -> StepReport {
        StepReport {
            status,
            attempts,
            duration_ms,
            outputs: serde_json::Value::Null,
            error: None,
            tolerated: false,
            routing: vec![],
            skipped_reason: None,
        }
    }

    fn resume_note(step: &str, status: &str, current: Option<u64>, total: Option<u64>) -> Event {
        ev(match status {
            "kept" => EventKind::StepKept {
                step: step.into(),
                kept_instances: current,
                instances: total,
            },
            _ => EventKind::ItemsChanged {
                step: step.into(),
                instances: total.unwrap_or(0),
            },
        })
    }

    fn finished(step: &str, attempts: u32, duration_ms: u64) -> Event {
        ev(EventKind::StepFinished {
            step: step.into(),
            status: StepStatus::Succeeded,
            attempts,
            duration_ms,
            outputs: serde_json::Value::Null,
            error: None,
            tolerated: false,
        })
    }

    #[test]
    fn a_resumed_run_marks_what_it_kept() {
        use crate::report::{Kept, SkipReason};
        let buf = Buf::default();
        let mut t = Terminal::plain(Box::new(buf.clone()));
        t.event(&ev(EventKind::RunStarted {
            workflow: "fan".into(),
            steps: 5,
        }));
        t.event(&resume_note("prep", "kept", None, None));
        t.event(&finished("prep", 1, 12));
        t.event(&resume_note("docs", "kept", None, None));
        t.event(&ev(EventKind::StepSkipped {
            step: "docs".into(),
            reason: SkipReason::If,
        }));
        t.event(&resume_note("build", "kept", Some(3), Some(6)));
        t.event(&finished("build", 2, 1500));
        t.event(&resume_note("lint", "items_changed", None, Some(2)));
        t.event(&finished("lint", 1, 40));
        t.event(&finished("after", 1, 3));
        let mut steps = IndexMap::new();
        steps.insert("prep".to_owned(), step_report(StepStatus::Succeeded, 1, 12));
        steps.insert("docs".to_owned(), step_report(StepStatus::Skipped, 0, 0));
        steps.insert(
            "build".to_owned(),
            step_report(StepStatus::Succeeded, 2, 1500),
        );
        steps.insert("lint".to_owned(), step_report(StepStatus::Succeeded, 1, 40));
        steps.insert("after".to_owned(), step_report(StepStatus::Succeeded, 1, 3));
        let whole = Kept {
            step: true,
            instances: 0,
        };
        let mut kept = IndexMap::new();
        kept.insert("prep".to_owned(), whole);
        kept.insert("docs".to_owned(), whole);
        kept.insert(
            "build".to_owned(),
            Kept {
                step: false,
                instances: 3,
            },
        );
        t.finish(&RunReport {
            run_id: "r-20261123-113000-ab12cd".into(),
            workflow: "fan".into(),
            status: RunStatus::Succeeded,
            duration_ms: 1600,
            steps,
            error: None,
            kept,
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        insta::with_settings!({filters => vec![
            (r"r-\d{8}-\d{6}-[0-9a-f]{6}", "[run-id]"),
            (r"\b\d+(\.\d+)?(ms|s)\b", "[dur]"),
        ]}, {
            insta::assert_snapshot!("resumed_run", text);
        });
    }
}
