//! Running workflows (SPEC §1.2, §1.3, §2): ordering, `when`/`if`, skips, `fail_fast`,
//! `continue_on_error`, `for_each`, `finally`, timeouts, cancellation, retries, failure
//! routing, secrets, outputs, sub-workflows, and the `ckflow run` command line.
//!
//! Every test runs real workflows with the real `noop` and `shell` tools, and asserts what a
//! user can observe: the report, the events and their timestamps, files and processes.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use ckflow::engine::EventKind;
use common::{Case, alive_after, read_pid};
use serde_json::{Value, json};

const MS: u64 = 1000; // events count microseconds

// ---- ordering ----------------------------------------------------------------------------

#[test]
fn needs_order_the_steps_and_independent_steps_overlap() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: order
concurrency: 4
steps:
  - {id: a, tool: shell, with: {run: "sleep 0.2"}}
  - {id: b, tool: shell, with: {run: "sleep 0.2"}}
  - {id: c, tool: noop, needs: [a]}
  - {id: d, tool: noop, needs: [b, c]}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    assert!(
        o.started("c") >= o.finished("a"),
        "c starts after a finishes"
    );
    assert!(o.started("d") >= o.finished("b") && o.started("d") >= o.finished("c"));
    // a and b need nothing: both start before either finishes.
    assert!(o.started("b") < o.finished("a") && o.started("a") < o.finished("b"));
    assert_eq!(o.kinds().first().map(String::as_str), Some("run_started"));
    assert_eq!(o.kinds().last().map(String::as_str), Some("run_finished"));
    assert!(
        o.events
            .windows(2)
            .all(|w| w[0].elapsed_us <= w[1].elapsed_us)
    );
}

#[test]
fn max_parallel_bounds_the_steps_running_at_once() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: bounded
concurrency: 8
steps:
  - {id: a, tool: shell, with: {run: "sleep 0.2"}}
  - {id: b, tool: shell, with: {run: "sleep 0.2"}}
  - {id: c, tool: shell, with: {run: "sleep 0.2"}}
"#,
    )
    .max_parallel(1)
    .run();
    assert_eq!(o.status(), "succeeded");
    let mut spans: Vec<(u64, u64)> = ["a", "b", "c"]
        .iter()
        .map(|s| (o.started(s), o.finished(s)))
        .collect();
    spans.sort();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "one at a time: {spans:?}"
    );
}

// ---- when, if, skips -----------------------------------------------------------------------

#[test]
fn when_if_and_skip_propagation() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: when
inputs:
  enabled: {type: boolean, default: false}
steps:
  - {id: fails, tool: shell, with: {run: "exit 1"}}
  - {id: ok, tool: noop}
  - {id: on-success, tool: noop, needs: [fails]}
  - {id: on-failure, tool: noop, needs: [fails], when: failure, with: {why: "{{steps.fails.error.class}}"}}
  - {id: no-failure, tool: noop, needs: [ok], when: failure}
  - {id: always, tool: noop, needs: [fails, ok], when: always}
  - {id: switched-off, tool: noop, if: "{{inputs.enabled}}"}
  - {id: literal-false, tool: noop, if: false}
  - {id: only-skipped, tool: noop, needs: [switched-off, literal-false]}
  - {id: after-only-skipped, tool: noop, needs: [only-skipped]}
  - {id: mixed, tool: noop, needs: [switched-off, ok]}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    assert_eq!(o.step_status("on-success"), "skipped");
    assert_eq!(o.skipped_reason("on-success"), Some("needs_failed"));
    assert_eq!(o.step_status("on-failure"), "succeeded");
    assert_eq!(o.step("on-failure").outputs, json!({"why": "exit_code"}));
    assert_eq!(o.skipped_reason("no-failure"), Some("no_failure"));
    assert_eq!(o.step_status("always"), "succeeded");
    assert_eq!(o.skipped_reason("switched-off"), Some("if"));
    assert_eq!(o.skipped_reason("literal-false"), Some("if"));
    // Waiting only on skipped steps: skipped too, all the way down.
    assert_eq!(o.skipped_reason("only-skipped"), Some("needs_skipped"));
    assert_eq!(
        o.skipped_reason("after-only-skipped"),
        Some("needs_skipped")
    );
    // A skipped need next to a succeeded one is fine.
    assert_eq!(o.step_status("mixed"), "succeeded");
    assert!(
        o.starts("switched-off").is_empty(),
        "a skipped step never starts"
    );
    assert!(o.kinds().contains(&"step_skipped".to_owned()));
}

#[test]
fn if_true_runs_the_step() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: if-true
inputs:
  enabled: {type: boolean, default: false}
steps:
  - {id: a, tool: noop, if: "{{inputs.enabled}}"}
"#,
    )
    .input("enabled", "true")
    .run();
    assert_eq!(o.step_status("a"), "succeeded");
}

#[test]
fn skips_propagate_iteratively_through_a_long_chain() {
    let mut yaml = String::from(
        "apiVersion: ckflow/v1\nname: chain\nsteps:\n  - {id: s0, tool: shell, with: {run: 'exit 1'}}\n",
    );
    for i in 1..5000 {
        yaml.push_str(&format!(
            "  - {{id: s{i}, tool: noop, needs: [s{}]}}\n",
            i - 1
        ));
    }
    let o = Case::new(&yaml).run();
    assert_eq!(o.status(), "failed");
    assert_eq!(o.skipped_reason("s1"), Some("needs_failed"));
    assert_eq!(o.skipped_reason("s4999"), Some("needs_skipped"));
}

// ---- fail_fast and continue_on_error ----------------------------------------------------------

#[test]
fn fail_fast_starts_nothing_new_and_lets_running_steps_finish() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: ff
fail_fast: true
concurrency: 2
steps:
  - {id: slow, tool: shell, with: {run: "sleep 0.5"}}
  - {id: boom, tool: shell, with: {run: "sleep 0.1; exit 2"}}
  - {id: queued, tool: noop}
  - {id: after-slow, tool: noop, needs: [slow]}
finally:
  - {id: cleanup, tool: noop}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    assert_eq!(o.step_status("boom"), "failed");
    assert_eq!(o.step_status("slow"), "succeeded", "running steps finish");
    assert_eq!(o.skipped_reason("queued"), Some("fail_fast"));
    assert_eq!(o.skipped_reason("after-slow"), Some("fail_fast"));
    assert_eq!(o.step_status("cleanup"), "succeeded", "finally still runs");
}

#[test]
fn continue_on_error_keeps_failed_but_counts_as_success() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: coe
fail_fast: true
steps:
  - {id: flaky, tool: shell, continue_on_error: true, with: {run: "echo nope >&2; exit 4"}}
  - {id: next, tool: noop, needs: [flaky]}
  - {id: on-failure, tool: noop, needs: [flaky], when: failure}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    let flaky = o.step("flaky");
    assert_eq!(flaky.status.as_str(), "failed");
    assert_eq!(flaky.error.as_ref().unwrap().class.as_str(), "exit_code");
    assert_eq!(o.step_status("next"), "succeeded");
    assert_eq!(o.skipped_reason("on-failure"), Some("no_failure"));
}

// ---- for_each ------------------------------------------------------------------------------

#[test]
fn for_each_over_a_list_keeps_item_order() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: fan
concurrency: 4
steps:
  - id: build
    tool: shell
    for_each: ["0.3", "0.1", "0.2"]
    with: {run: "sleep {{item}}; echo \"out=item{{index}}-{{item}}\" >> $CKFLOW_OUTPUT"}
    outputs: {out: "{{result.out}}"}
  - {id: use, tool: noop, needs: [build], with: {all: "{{json steps.build.outputs}}", n: "{{len steps.build.outputs}}"}}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(
        o.step("build").outputs,
        json!([{"out": "item0-0.3"}, {"out": "item1-0.1"}, {"out": "item2-0.2"}])
    );
    assert_eq!(o.step("use").outputs["n"], 3);
    // Instances run in parallel: all three started before the first finished.
    let instances: Vec<Option<usize>> = o
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepStarted { step, instance, .. } if step == "build" => Some(*instance),
            _ => None,
        })
        .collect();
    assert_eq!(instances.len(), 3);
    let starts = o.starts("build");
    assert!(
        starts.iter().max().unwrap() - starts.iter().min().unwrap() < 250 * MS,
        "{starts:?}"
    );
}

#[test]
fn for_each_over_a_template_and_a_failing_instance() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: fan-template
inputs:
  platforms: {type: array, default: [amd64, arm64, riscv]}
steps:
  - id: each
    tool: shell
    for_each: "{{json inputs.platforms}}"
    with: {run: "test {{item}} != arm64"}
  - {id: after, tool: noop, needs: [each]}
  - id: empty
    tool: noop
    for_each: []
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let each = o.step("each");
    assert_eq!(each.status.as_str(), "failed");
    let err = each.error.as_ref().unwrap();
    assert!(err.message.starts_with("instance 1:"), "{}", err.message);
    assert_eq!(o.starts("each").len(), 3, "every instance ran");
    assert_eq!(o.skipped_reason("after"), Some("needs_failed"));
    assert_eq!(o.step("empty").outputs, json!([]));
    assert_eq!(o.step_status("empty"), "succeeded");
}

// ---- finally -------------------------------------------------------------------------------

const FINALLY: &str = r#"
apiVersion: ckflow/v1
name: fin
inputs:
  fail: {type: boolean, default: false}
steps:
  - {id: main, tool: shell, with: {run: "{{#if inputs.fail}}exit 1{{else}}sleep 0.3{{/if}}"}}
  - {id: later, tool: noop, needs: [main]}
finally:
  - id: report
    tool: shell
    with: {run: "echo {{steps.main.status}} {{run.status}} > finally.txt"}
  - {id: on-failure, tool: noop, when: failure}
  - {id: after-report, tool: noop, needs: [report]}
"#;

#[test]
fn finally_runs_after_success() {
    let o = Case::new(FINALLY).run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(
        std::fs::read_to_string(o.path("finally.txt")).unwrap(),
        "succeeded succeeded\n"
    );
    assert!(
        o.started("report") >= o.finished("later"),
        "finally runs after the DAG"
    );
    assert_eq!(o.skipped_reason("on-failure"), Some("no_failure"));
    assert_eq!(o.step_status("after-report"), "succeeded");
}

#[test]
fn finally_runs_after_failure() {
    let o = Case::new(FINALLY).input("fail", true).run();
    assert_eq!(o.status(), "failed");
    assert_eq!(
        std::fs::read_to_string(o.path("finally.txt")).unwrap(),
        "failed failed\n"
    );
    assert_eq!(o.step_status("on-failure"), "succeeded");
}

#[test]
fn finally_runs_after_cancel() {
    let o = Case::new(FINALLY)
        .cancel_after(Duration::from_millis(100))
        .run();
    assert_eq!(o.status(), "cancelled");
    assert_eq!(o.step_status("main"), "cancelled");
    assert_eq!(o.step_status("later"), "cancelled");
    assert_eq!(
        std::fs::read_to_string(o.path("finally.txt")).unwrap(),
        "cancelled cancelled\n"
    );
}

#[test]
fn a_second_cancel_stops_finally() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: fin2
steps:
  - {id: main, tool: shell, with: {run: "sleep 5"}}
finally:
  - {id: slow-cleanup, tool: shell, with: {run: "sleep 5"}}
  - {id: after, tool: noop, needs: [slow-cleanup]}
"#,
    )
    .cancel_after(Duration::from_millis(100))
    .cancel_finally_after(Duration::from_millis(400))
    .run();
    assert_eq!(o.status(), "cancelled");
    assert_eq!(o.step_status("slow-cleanup"), "cancelled");
    assert_eq!(o.step_status("after"), "cancelled");
    assert!(o.report.duration_ms < 3000, "{}", o.report.duration_ms);
}

// ---- timeouts and cancellation -----------------------------------------------------------------

#[test]
fn a_step_timeout_kills_the_whole_process_group() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: step-timeout
steps:
  - id: hang
    tool: shell
    timeout: 500ms
    with: {run: "sleep 30 & echo $! > pidfile; wait"}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let hang = o.step("hang");
    let err = hang.error.as_ref().unwrap();
    assert_eq!(err.class.as_str(), "timeout");
    assert!(
        hang.duration_ms >= 500 && hang.duration_ms < 4000,
        "{}",
        hang.duration_ms
    );
    let pid = read_pid(&o.path("pidfile"));
    assert!(
        !alive_after(pid, Duration::from_secs(3)),
        "the background sleep {pid} is gone"
    );
}

#[test]
fn a_timed_out_step_is_retried_when_timeout_is_in_on() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: timeout-retry
steps:
  - id: slow-then-fast
    tool: shell
    timeout: 300ms
    retry: {max_attempts: 2, delay: 10ms, on: [timeout]}
    with: {run: "if [ -f seen ]; then exit 0; fi; touch seen; sleep 5"}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(o.step("slow-then-fast").attempts, 2);
}

#[test]
fn cancel_leaves_no_child_alive() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: cancel
concurrency: 1
steps:
  - {id: hang, tool: shell, with: {run: "sleep 30 & echo $! > pidfile; wait"}}
  - {id: never, tool: noop}
"#,
    )
    .cancel_after(Duration::from_millis(400))
    .run();
    assert_eq!(o.status(), "cancelled");
    assert_eq!(o.step_status("hang"), "cancelled");
    assert_eq!(o.step_status("never"), "cancelled");
    assert_eq!(o.step("never").attempts, 0);
    let pid = read_pid(&o.path("pidfile"));
    assert!(
        !alive_after(pid, Duration::from_secs(3)),
        "the background sleep {pid} is gone"
    );
    assert!(o.report.duration_ms < 5000);
}

#[test]
fn the_run_timeout_cancels_everything_fails_the_run_and_finally_runs() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: run-timeout
timeout: 400ms
concurrency: 1
steps:
  - {id: long, tool: shell, with: {run: "sleep 30"}}
  - {id: queued, tool: noop}
finally:
  - {id: cleanup, tool: shell, with: {run: "touch cleaned"}}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let long = o.step("long");
    assert_eq!(long.status.as_str(), "failed");
    assert_eq!(long.error.as_ref().unwrap().class.as_str(), "timeout");
    assert_eq!(o.step_status("queued"), "cancelled");
    assert_eq!(o.step_status("cleanup"), "succeeded");
    assert!(o.path("cleaned").exists());
    assert!(o.report.duration_ms < 5000, "{}", o.report.duration_ms);
}

// ---- retries ---------------------------------------------------------------------------------

fn gaps_ms(starts: &[u64]) -> Vec<u64> {
    starts.windows(2).map(|w| (w[1] - w[0]) / MS).collect()
}

#[test]
fn fixed_backoff_waits_the_delay_between_attempts() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: fixed
steps:
  - id: flaky
    tool: shell
    retry: {max_attempts: 3, backoff: fixed, delay: 200ms}
    with: {run: "exit 1"}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    assert_eq!(o.step("flaky").attempts, 3);
    let gaps = gaps_ms(&o.starts("flaky"));
    assert_eq!(gaps.len(), 2);
    assert!(gaps.iter().all(|&g| (200..600).contains(&g)), "{gaps:?}");
    let retrying: Vec<(u32, u64)> = o
        .events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepRetrying {
                attempt, delay_ms, ..
            } => Some((*attempt, *delay_ms)),
            _ => None,
        })
        .collect();
    assert_eq!(retrying, vec![(1, 200), (2, 200)]);
}

#[test]
fn exponential_backoff_doubles_and_max_delay_caps() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: expo
steps:
  - id: flaky
    tool: shell
    retry: {max_attempts: 4, backoff: exponential, delay: 100ms, max_delay: 300ms}
    with: {run: "exit 1"}
"#,
    )
    .run();
    assert_eq!(o.step("flaky").attempts, 4);
    let gaps = gaps_ms(&o.starts("flaky"));
    assert!((100..350).contains(&gaps[0]), "{gaps:?}");
    assert!((200..450).contains(&gaps[1]), "{gaps:?}");
    assert!((300..550).contains(&gaps[2]), "capped at 300ms: {gaps:?}");
    assert!(gaps[1] >= gaps[0] + 50, "{gaps:?}");
}

#[test]
fn jitter_keeps_delays_within_half() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: jitter
steps:
  - id: flaky
    tool: shell
    retry: {max_attempts: 4, delay: 200ms, jitter: true}
    with: {run: "exit 1"}
"#,
    )
    .run();
    for e in o.events_of("flaky") {
        if let EventKind::StepRetrying { delay_ms, .. } = e.kind {
            assert!((100..=300).contains(&delay_ms), "{delay_ms}");
        }
    }
}

#[test]
fn classes_not_in_on_are_not_retried() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: on
steps:
  - id: fails
    tool: shell
    retry: {max_attempts: 5, delay: 10ms, on: [transient, timeout]}
    with: {run: "exit 1"}
  - id: retried
    tool: shell
    retry: {max_attempts: 2, delay: 10ms, on: [exit_code]}
    with: {run: "exit 1"}
"#,
    )
    .run();
    assert_eq!(o.step("fails").attempts, 1);
    assert_eq!(o.step("retried").attempts, 2);
}

#[test]
fn a_retry_that_succeeds_makes_the_step_succeed() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: eventually
steps:
  - id: third-time-lucky
    tool: shell
    retry: {max_attempts: 5, delay: 10ms}
    with: {run: "echo x >> tries; test $(wc -l < tries) -ge 3"}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(o.step("third-time-lucky").attempts, 3);
}

// ---- failure routing ---------------------------------------------------------------------------

#[test]
fn routing_runs_a_recovery_step_then_retries_with_its_result() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-retry
steps:
  - id: build
    tool: shell
    with: {run: "test -f fixed || exit 3; echo recovered by {{default recovery.stdout \"nothing\"}}"}
on_failure:
  - match: {step: build, error: [exit_3]}
    route: {tool: shell, with: {run: "touch fixed; echo {{failed.step}}:{{failed.error.class}}:{{failed.attempts}}"}}
    then: retry
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    let build = o.step("build");
    assert_eq!(build.status.as_str(), "succeeded");
    assert_eq!(build.attempts, 2);
    assert_eq!(build.outputs["stdout"], "recovered by build:exit_code:1\n");
    assert_eq!(build.routing.len(), 1);
    let r = &build.routing[0];
    assert_eq!(r.rule, "on_failure[0]");
    assert_eq!(serde_json::to_value(r.source).unwrap(), "workflow");
    assert_eq!(r.tool.as_deref(), Some("shell"));
    assert_eq!(r.status.as_str(), "succeeded");
    assert_eq!(r.result.as_ref().unwrap()["stdout"], "build:exit_code:1\n");
    assert_eq!(serde_json::to_value(r.then).unwrap(), "retry");
    let kinds = o.kinds();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert!(
        pos("step_routed") < pos("recovery_started")
            && pos("recovery_started") < pos("recovery_finished")
    );
}

#[test]
fn routing_continue_counts_as_success_and_keeps_failed() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-continue
steps:
  - {id: scan, tool: shell, with: {run: "exit 5"}}
  - {id: deploy, tool: noop, needs: [scan]}
on_failure:
  - match: {tool: shell, error: EXIT_5}
    then: continue
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(o.step_status("scan"), "failed");
    assert_eq!(o.step("scan").routing[0].tool, None);
    assert_eq!(o.step_status("deploy"), "succeeded");
}

#[test]
fn routing_fail_fails_for_good_after_the_recovery_step() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-fail
steps:
  - {id: push, tool: shell, with: {run: "exit 7"}}
on_failure:
  - match: {error: transient}
    then: continue
  - match: {}
    route: {tool: shell, with: {run: "echo checked > checked.txt"}}
    then: fail
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let push = o.step("push");
    assert_eq!(push.attempts, 1);
    assert_eq!(push.routing.len(), 1);
    assert_eq!(push.routing[0].rule, "on_failure[1]");
    assert!(o.path("checked.txt").exists(), "the recovery step ran");
}

#[test]
fn max_stops_a_routing_loop_after_max_plus_one_attempts() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-loop
steps:
  - {id: hopeless, tool: shell, with: {run: "exit 1"}}
on_failure:
  - match: {step: hopeless}
    route: {tool: noop, with: {tried: "{{failed.attempts}}"}}
    then: retry
    max: 2
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let s = o.step("hopeless");
    assert_eq!(s.attempts, 3);
    assert_eq!(s.routing.len(), 2);
    let tried: Vec<&Value> = s
        .routing
        .iter()
        .map(|r| &r.result.as_ref().unwrap()["tried"])
        .collect();
    assert_eq!(tried, vec![&json!(1), &json!(2)]);
}

#[test]
fn a_failing_recovery_step_fails_the_step_with_both_errors() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-broken
steps:
  - {id: build, tool: shell, with: {run: "exit 3"}}
on_failure:
  - match: {}
    route: {tool: shell, with: {run: "exit 9"}}
    then: retry
    max: 5
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let s = o.step("build");
    assert_eq!(s.attempts, 1, "no retry after a failed recovery");
    assert_eq!(s.error.as_ref().unwrap().code.as_deref(), Some("EXIT_3"));
    assert_eq!(s.routing[0].status.as_str(), "failed");
    assert_eq!(
        s.routing[0].error.as_ref().unwrap().code.as_deref(),
        Some("EXIT_9")
    );
}

#[test]
fn retries_come_before_routing() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: retry-then-route
steps:
  - id: s
    tool: shell
    retry: {max_attempts: 2, delay: 10ms}
    with: {run: "exit 1"}
on_failure:
  - match: {}
    then: fail
"#,
    )
    .run();
    let kinds = o.kinds();
    let retry = kinds.iter().position(|k| k == "step_retrying").unwrap();
    let routed = kinds.iter().position(|k| k == "step_routed").unwrap();
    assert!(retry < routed);
    assert_eq!(o.step("s").attempts, 2);
}

/// A tool with a bug: it panics. Nothing real does this on purpose, hence the stand-in.
struct Panics;

impl ckflow::Tool for Panics {
    fn name(&self) -> &str {
        "panics"
    }
    fn description(&self) -> &str {
        "Panics."
    }
    fn input_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn output_schema(&self) -> Value {
        json!({"type": "object"})
    }
    fn call(&self, _args: Value, _ctx: ckflow::ToolContext) -> ckflow::tools::ToolFuture {
        Box::pin(async { panic!("a bug in a tool") })
    }
}

#[test]
fn a_panicking_tool_fails_its_step_not_the_run_loop() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: panics
steps:
  - {id: bug, tool: panics}
  - {id: independent, tool: noop}
  - {id: after, tool: noop, needs: [bug], when: always}
"#,
    )
    .tool(Panics)
    .run();
    assert_eq!(o.status(), "failed");
    let err = o.step("bug").error.clone().unwrap();
    assert_eq!(err.class.as_str(), "tool_error");
    assert!(err.message.contains("panicked"), "{}", err.message);
    assert_eq!(o.step_status("independent"), "succeeded");
    assert_eq!(o.step_status("after"), "succeeded");
}

#[test]
fn routing_retries_only_the_failed_for_each_instance() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: route-instance
steps:
  - id: each
    tool: shell
    for_each: [a, b, c]
    with: {run: "test {{item}} != b || test -f fixed-b || exit 1; echo {{item}}"}
on_failure:
  - match: {step: each}
    route: {tool: shell, with: {run: "touch fixed-{{failed.item}}"}}
    then: retry
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded", "{:#?}", o.report);
    let each = o.step("each");
    assert_eq!(each.attempts, 2, "the most attempts any instance made");
    assert_eq!(each.routing.len(), 1);
    assert_eq!(each.routing[0].instance, Some(1));
    let stdout: Vec<&Value> = each
        .outputs
        .as_array()
        .unwrap()
        .iter()
        .map(|o| &o["stdout"])
        .collect();
    assert_eq!(stdout, vec!["a\n", "b\n", "c\n"]);
    assert_eq!(o.starts("each").len(), 4);
}

// ---- templates, outputs, secrets ---------------------------------------------------------------

#[test]
fn outputs_come_from_ckflow_output_and_the_outputs_map() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: outputs
inputs:
  image: {type: string, default: app}
  replicas: {type: integer, default: 2}
env: {GREETING: "hi {{inputs.image}}"}
steps:
  - id: build
    tool: shell
    env: {TAG: "v{{inputs.replicas}}"}
    with: {run: "echo \"image=$GREETING:$TAG\" >> $CKFLOW_OUTPUT; echo digest=sha >> $CKFLOW_OUTPUT"}
    outputs:
      image: "{{result.image}}"
      both: "{{result.image}}@{{result.digest}}"
      run: "{{run.id}}"
  - id: use
    tool: noop
    needs: [build]
    with: {ref: "{{steps.build.outputs.image}}", n: "{{inputs.replicas}}", status: "{{steps.build.status}}"}
"#,
    )
    .run();
    assert_eq!(o.status(), "succeeded");
    let build = &o.step("build").outputs;
    assert_eq!(build["image"], "hi app:v2");
    assert_eq!(build["both"], "hi app:v2@sha");
    assert_eq!(build["run"], o.report.run_id.as_str());
    assert_eq!(
        o.step("use").outputs,
        json!({"ref": "hi app:v2", "n": 2, "status": "succeeded"})
    );
}

#[test]
fn a_template_that_fails_at_run_time_is_invalid_input_naming_it() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: bad-template
steps:
  - {id: a, tool: noop, with: {x: 1}}
  - {id: b, tool: noop, needs: [a], with: {deep: {y: "{{steps.a.outputs.nope}}"}}}
"#,
    )
    .run();
    assert_eq!(o.status(), "failed");
    let err = o.step("b").error.clone().unwrap();
    assert_eq!(err.class.as_str(), "invalid_input");
    assert!(
        err.message.contains("with.deep.y") && err.message.contains("steps.a.outputs.nope"),
        "{}",
        err.message
    );
}

#[test]
fn secrets_never_show_in_events_or_the_report() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: secrets
inputs:
  token: {type: string, secret: true}
steps:
  - {id: echo, tool: shell, with: {run: "echo token is {{inputs.token}}; echo t={{inputs.token}} >> $CKFLOW_OUTPUT"}}
  - {id: fail, tool: shell, with: {run: "echo {{inputs.token}} >&2; exit 1"}}
  - {id: pass, tool: noop, with: {t: "{{inputs.token}}"}}
"#,
    )
    .input("token", "s3cr3t-value")
    .run();
    let report = serde_json::to_string(&o.report).unwrap();
    let events = o.events_json();
    for text in [&report, &events] {
        assert!(!text.contains("s3cr3t-value"), "leaked: {text}");
        assert!(text.contains("***"));
    }
    assert_eq!(o.output_lines("echo"), vec!["token is ***"]);
    assert_eq!(o.step("pass").outputs["t"], "***");
    assert_eq!(o.step("echo").outputs["t"], "***");
}

// ---- sub-workflows ---------------------------------------------------------------------------

const CHILD: &str = r#"
apiVersion: ckflow/v1
name: child
inputs:
  who: {type: string, required: true}
  fail: {type: boolean, default: false}
steps:
  - {id: greet, tool: shell, with: {run: "echo hello {{inputs.who}}; {{#if inputs.fail}}exit 1{{/if}}"}}
"#;

#[test]
fn a_sub_workflow_runs_in_process_and_returns_its_outputs() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: parent
steps:
  - {id: sub, tool: workflow, with: {name: child, inputs: {who: ckflow}}}
  - {id: use, tool: noop, needs: [sub], with: {said: "{{steps.sub.outputs.outputs.greet.stdout}}"}}
  - {id: by-file, tool: workflow, with: {file: workflows/child.yaml, inputs: {who: file}}}
"#,
    )
    .file("workflows/child.yaml", CHILD)
    .run();
    assert_eq!(o.status(), "succeeded", "{:#?}", o.report);
    let sub = &o.step("sub").outputs;
    assert_eq!(sub["status"], "succeeded");
    assert!(
        sub["run_id"]
            .as_str()
            .unwrap()
            .starts_with(&o.report.run_id)
    );
    assert_eq!(o.step("use").outputs["said"], "hello ckflow\n");
    assert_eq!(o.output_lines("sub"), vec!["greet | hello ckflow"]);
    assert_eq!(
        o.step("by-file").outputs["outputs"]["greet"]["stdout"],
        "hello file\n"
    );
}

#[test]
fn a_failing_sub_workflow_is_a_tool_error_with_its_report() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: parent
steps:
  - {id: sub, tool: workflow, with: {name: child, inputs: {who: x, fail: true}}}
  - {id: missing-input, tool: workflow, with: {name: child}}
"#,
    )
    .file("workflows/child.yaml", CHILD)
    .run();
    assert_eq!(o.status(), "failed");
    let err = o.step("sub").error.clone().unwrap();
    assert_eq!(err.class.as_str(), "tool_error");
    assert_eq!(err.code.as_deref(), Some("SUBWORKFLOW_FAILED"));
    assert_eq!(err.details.unwrap()["steps"]["greet"]["status"], "failed");
    let err = o.step("missing-input").error.clone().unwrap();
    assert_eq!(err.class.as_str(), "invalid_input");
}

#[test]
fn a_workflow_calling_itself_stops_at_the_depth_limit() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: parent
steps:
  - {id: sub, tool: workflow, with: {name: loop}}
"#,
    )
    .file(
        "workflows/loop.yaml",
        "apiVersion: ckflow/v1\nname: loop\nsteps:\n  - {id: again, tool: workflow, with: {name: loop}}\n",
    )
    .run();
    assert_eq!(o.status(), "failed");
    let text = serde_json::to_string(&o.step("sub").error).unwrap();
    assert!(text.contains("DEPTH_EXCEEDED"), "{text}");
}

#[test]
fn cancelling_the_parent_cancels_the_sub_workflow() {
    let o = Case::new(
        r#"
apiVersion: ckflow/v1
name: parent
steps:
  - {id: sub, tool: workflow, with: {name: slow}}
"#,
    )
    .file(
        "workflows/slow.yaml",
        "apiVersion: ckflow/v1\nname: slow\nsteps:\n  - {id: hang, tool: shell, with: {run: 'sleep 30 & echo $! > pidfile; wait'}}\nfinally:\n  - {id: mark, tool: shell, with: {run: 'touch sub-finally'}}\n",
    )
    .cancel_after(Duration::from_millis(500))
    .run();
    assert_eq!(o.status(), "cancelled");
    assert_eq!(o.step_status("sub"), "cancelled");
    assert!(
        o.path("sub-finally").exists(),
        "the sub-workflow's finally ran"
    );
    let pid = read_pid(&o.path("pidfile"));
    assert!(!alive_after(pid, Duration::from_secs(3)));
}

// ---- scale -----------------------------------------------------------------------------------

#[test]
fn thousands_of_noop_steps_run_quickly() {
    let mut yaml = String::from("apiVersion: ckflow/v1\nname: wide\nsteps:\n");
    for i in 0..3000 {
        if i < 50 {
            yaml.push_str(&format!("  - {{id: s{i}, tool: noop}}\n"));
        } else {
            yaml.push_str(&format!(
                "  - {{id: s{i}, tool: noop, needs: [s{}, s{}]}}\n",
                i - 50,
                i - 49
            ));
        }
    }
    let started = std::time::Instant::now();
    let o = Case::new(&yaml).run();
    assert_eq!(o.status(), "succeeded");
    assert_eq!(o.report.steps.len(), 3000);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

// ---- the command line --------------------------------------------------------------------------

/// A fresh project folder (its own `.ckflow/`, so that no folder above it is taken for the
/// project).
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join(".ckflow")).unwrap();
    dir
}

fn ckflow(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ckflow"))
        .args(args)
        .current_dir(dir)
        .env("CKFLOW_STATE_DIR", dir.join(".state"))
        .env_remove("NO_COLOR")
        .output()
        .expect("ckflow runs")
}

#[test]
fn cli_run_json_prints_only_the_report_and_exits_by_status() {
    let dir = project();
    let d = dir.path();
    std::fs::create_dir_all(d.join("workflows")).unwrap();
    std::fs::write(
        d.join("workflows/hello.yaml"),
        "apiVersion: ckflow/v1\nname: hello\ninputs:\n  n: {type: integer, default: 1}\nsteps:\n  - {id: a, tool: noop, with: {n: '{{inputs.n}}'}}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("fails.yaml"),
        "apiVersion: ckflow/v1\nname: f\nsteps:\n  - {id: a, tool: shell, with: {run: 'exit 3'}}\n",
    )
    .unwrap();
    std::fs::write(d.join("inputs.yaml"), "n: 5\n").unwrap();

    let out = ckflow(d, &["run", "hello", "--json", "-i", "n=3"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["steps"]["a"]["outputs"]["n"], 3);
    for key in ["run_id", "workflow", "status", "duration_ms", "steps"] {
        assert!(report.get(key).is_some(), "{key}");
    }

    let out = ckflow(
        d,
        &["run", "hello", "--json", "--inputs-file", "inputs.yaml"],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["steps"]["a"]["outputs"]["n"], 5);

    let out = ckflow(d, &["run", "fails.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("step a failed"), "{stderr}");
    assert!(
        stderr.contains("STEP") && stderr.contains("ATTEMPTS"),
        "the summary table: {stderr}"
    );

    let out = ckflow(d, &["run", "hello", "-i", "n=notanumber"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ckflow(d, &["run", "hello", "-i", "nosuch=1"]);
    assert_eq!(out.status.code(), Some(2));
    let out = ckflow(d, &["run", "nosuchworkflow"]);
    assert_eq!(out.status.code(), Some(2));

    let out = ckflow(d, &["run", "hello", "--dry-run"]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("level 0:") && text.contains("n = 1"),
        "{text}"
    );
}

#[test]
fn cli_events_writes_json_lines() {
    let dir = project();
    let d = dir.path();
    std::fs::write(d.join("w.yaml"), "apiVersion: ckflow/v1\nname: w\nsteps:\n  - {id: a, tool: shell, with: {run: 'echo hi'}}\n").unwrap();
    let out = ckflow(d, &["run", "w.yaml", "--events", "events.jsonl"]);
    assert_eq!(out.status.code(), Some(0));
    let text = std::fs::read_to_string(d.join("events.jsonl")).unwrap();
    let kinds: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "run_started",
            "step_started",
            "step_output",
            "step_finished",
            "run_finished"
        ]
    );
    let out = ckflow(d, &["run", "w.yaml", "--events", "-", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.lines().next().unwrap().contains("\"run_started\""),
        "{stdout}"
    );
}

#[test]
fn cli_ctrl_c_cancels_runs_finally_and_exits_130() {
    let dir = project();
    let d = dir.path();
    std::fs::write(
        d.join("w.yaml"),
        "apiVersion: ckflow/v1\nname: w\nsteps:\n  - {id: long, tool: shell, with: {run: 'sleep 30 & echo $! > pidfile; wait'}}\nfinally:\n  - {id: mark, tool: shell, with: {run: 'echo done > finally.txt'}}\n",
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ckflow"))
        .args(["run", "w.yaml"])
        .current_dir(d)
        .env("CKFLOW_STATE_DIR", d.join(".state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = read_pid(&d.join("pidfile"));
    // SAFETY: sending SIGINT to the child we spawned.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(d.join("finally.txt")).unwrap(),
        "done\n"
    );
    assert!(
        !alive_after(pid, Duration::from_secs(3)),
        "the long step's process {pid} is gone"
    );
    assert!(stderr.contains("cancelled"), "{stderr}");
}

#[test]
fn every_example_runs_green() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut examples: Vec<_> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    examples.sort();
    assert!(examples.len() >= 5, "{examples:?}");
    for ex in examples {
        let work = project();
        let out = ckflow(work.path(), &["run", ex.to_str().unwrap()]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}",
            ex.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---- recording and resume (the hooks `ckflow::runner` uses) -------------------------------

/// A recorder whose commits take a while, noting every start it sees (as the engine
/// produces it) of a step one of whose needs is not committed yet.
struct SlowRecorder {
    committed: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    early_starts: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    needs: std::collections::HashMap<String, Vec<String>>,
}

impl ckflow::engine::Recorder for SlowRecorder {
    fn event(&self, e: &ckflow::Event) {
        let committed = self.committed.lock().unwrap();
        if let EventKind::StepStarted { step, .. } = &e.kind {
            for need in self.needs.get(step).into_iter().flatten() {
                if !committed.contains(need) {
                    self.early_starts
                        .lock()
                        .unwrap()
                        .push(format!("{step} started before {need} was committed"));
                }
            }
        }
    }

    fn commit(&self, steps: Vec<ckflow::engine::FinishedStep>) -> ckflow::engine::CommitFuture {
        let committed = std::sync::Arc::clone(&self.committed);
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            committed
                .lock()
                .unwrap()
                .extend(steps.into_iter().map(|s| s.id));
            Ok(())
        })
    }
}

fn run_with(
    yaml: &str,
    configure: impl FnOnce(&mut ckflow::RunOptions),
) -> (ckflow::RunReport, Vec<ckflow::Event>) {
    use std::sync::Arc;
    let registry = Arc::new(ckflow::ToolRegistry::builtin());
    let wf = ckflow::Workflow::from_str_with("t.yaml", yaml, &registry).unwrap();
    let inputs = wf.resolve_inputs(&Default::default()).unwrap();
    let plan = Arc::new(ckflow::Plan::new(Arc::new(wf), &registry));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = ckflow::RunOptions {
        inputs,
        project_dir: dir.path().to_path_buf(),
        workspace: dir.path().to_path_buf(),
        ..ckflow::RunOptions::default()
    };
    configure(&mut opts);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = rt.block_on(ckflow::Engine::new(registry).run(plan, opts, tx));
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    (report, events)
}

#[test]
fn a_recorded_step_is_reported_only_once_committed_and_releases_its_dependents_at_once() {
    use std::sync::{Arc, Mutex};
    let committed: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let early_starts: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let needs: std::collections::HashMap<String, Vec<String>> =
        [("c", vec!["a", "b"]), ("d", vec!["c"])]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
            .collect();
    let recorder = SlowRecorder {
        committed: Arc::clone(&committed),
        early_starts: Arc::clone(&early_starts),
        needs: needs.clone(),
    };
    let yaml = r#"
apiVersion: ckflow/v1
name: rec
steps:
  - {id: a, tool: shell, with: {run: "echo a"}}
  - {id: b, tool: noop}
  - {id: c, tool: noop, needs: [a, b], if: "{{eq steps.a.outputs.stdout 'x'}}"}
  - {id: d, tool: noop, needs: [c], when: always}
finally:
  - {id: f, tool: noop}
"#;
    let registry = Arc::new(ckflow::ToolRegistry::builtin());
    let wf = ckflow::Workflow::from_str_with("t.yaml", yaml, &registry).unwrap();
    let plan = Arc::new(ckflow::Plan::new(Arc::new(wf), &registry));
    let dir = tempfile::tempdir().unwrap();
    let opts = ckflow::RunOptions {
        project_dir: dir.path().to_path_buf(),
        workspace: dir.path().to_path_buf(),
        recorder: Some(Arc::new(recorder)),
        ..ckflow::RunOptions::default()
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<ckflow::Event>();
    // The caller's view, checked as each event arrives: a step is reported only once its
    // commit resolved, and never starts (in the stream) before its needs are reported.
    let watcher = {
        let committed = Arc::clone(&committed);
        rt.spawn(async move {
            let mut violations = Vec::new();
            let mut reported: Vec<String> = Vec::new();
            let mut events = Vec::new();
            while let Some(e) = rx.recv().await {
                match &e.kind {
                    EventKind::StepFinished { step, .. } | EventKind::StepSkipped { step, .. } => {
                        if !committed.lock().unwrap().contains(step) {
                            violations.push(format!("{step} reported before its commit"));
                        }
                        reported.push(step.clone());
                    }
                    EventKind::StepStarted { step, .. } => {
                        for need in needs.get(step).into_iter().flatten() {
                            if !reported.contains(need) {
                                violations.push(format!("{step} shown started before {need}"));
                            }
                        }
                    }
                    _ => {}
                }
                events.push(e);
            }
            (violations, events)
        })
    };
    let report = rt.block_on(ckflow::Engine::new(registry).run(plan, opts, tx));
    let (violations, events) = rt.block_on(watcher).unwrap();
    assert_eq!(report.status.as_str(), "succeeded");
    assert_eq!(violations, [] as [String; 0]);
    // d started while c's commit (30 ms) was still pending: dependents do not wait.
    assert_eq!(
        early_starts.lock().unwrap().as_slice(),
        ["d started before c was committed"]
    );
    // The run ends only once every finish is durable.
    let mut all = committed.lock().unwrap().clone();
    all.sort();
    assert_eq!(all, ["a", "b", "c", "d", "f"]);
    let finished = events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::StepFinished { .. }))
        .count();
    assert_eq!(finished, 4, "c is skipped, the rest finish");
}

#[test]
fn a_resumed_run_keeps_the_finished_steps_and_feeds_their_outputs_to_templates() {
    use ckflow::engine::{PriorStep, ResumeState, StepReport, StepStatus};
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran.txt");
    let prior = |status, outputs| PriorStep {
        report: StepReport {
            status,
            attempts: 1,
            duration_ms: 7,
            outputs,
            error: None,
            tolerated: false,
            routing: vec![],
            skipped_reason: None,
        },
    };
    let mut resume = ResumeState::new();
    resume.prior(
        "a",
        prior(StepStatus::Succeeded, json!({"stdout": "from before\n"})),
    );
    resume.prior("b", prior(StepStatus::Failed, Value::Null));
    // c succeeded before, but it needs b, which runs again: so does c.
    resume.prior("c", prior(StepStatus::Succeeded, json!({})));
    let yaml = format!(
        r#"
apiVersion: ckflow/v1
name: res
steps:
  - {{id: a, tool: shell, with: {{run: "echo a >> {m}"}}}}
  - {{id: b, tool: shell, needs: [a], with: {{run: "echo b >> {m}; echo '{{{{steps.a.outputs.stdout}}}}'"}}}}
  - {{id: c, tool: shell, needs: [b], with: {{run: "echo c >> {m}"}}}}
"#,
        m = marker.display()
    );
    let (report, events) = run_with(&yaml, |o| o.resume = Some(resume));
    assert_eq!(report.status.as_str(), "succeeded");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "b\nc\n");
    assert_eq!(report.steps["a"].duration_ms, 7, "a is the earlier record");
    assert_eq!(report.steps["b"].outputs["stdout"], "from before\n\n");
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::StepStarted { step, .. } => Some(step.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(started, ["b", "c"]);
}
