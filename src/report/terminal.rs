//! The terminal reporter of `ckflow run`: live progress on a terminal (a run bar and one
//! spinner line per running step, with retries and routing printed as they happen), plain
//! lines without colour elsewhere (`step build succeeded in 1.2s (2 attempts)`), and a
//! summary table at the end. It only reads [`Event`]s and the final [`RunReport`].

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
        }
    }

    /// A plain reporter writing to `out` (no live progress, no colour).
    pub fn plain(out: Box<dyn Write + Send>) -> Terminal {
        Terminal {
            live: None,
            out,
            color: false,
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

    /// Take one event into account.
    pub fn event(&mut self, e: &Event) {
        match &e.kind {
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
                self.line(format!("step {step} {skipped} ({})", reason.explain()));
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
                if *attempts > 0 {
                    text.push_str(&format!(" in {}", human_duration(*duration_ms)));
                }
                if *attempts > 1 {
                    text.push_str(&format!(" ({attempts} attempts)"));
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
            out.push_str(&format!(
                "\n{:w$}  {:9}  {:>8}  {:>8}\n",
                "STEP", "STATUS", "ATTEMPTS", "DURATION"
            ));
            for (id, s) in &shown {
                let status = format!("{:9}", s.status.as_str());
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
        let status = match report.status {
            super::RunStatus::Succeeded => self.paint("succeeded", StepStatus::Succeeded),
            super::RunStatus::Failed => self.paint("failed", StepStatus::Failed),
            super::RunStatus::Cancelled => self.paint("cancelled", StepStatus::Cancelled),
        };
        out.push_str(&format!(
            "run {} {status} in {} ({})\n",
            report.run_id,
            human_duration(report.duration_ms),
            counts.join(", ")
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
}
