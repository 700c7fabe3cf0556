//! The state store from the outside: round trips, group commit, durability across a real
//! `kill -9`, eight processes sharing one state directory, listing 10,000 runs, resume and
//! cancel across processes, log caps, TTLs, retention, secrets and the format version.
//!
//! Tests that need other processes re-run this test binary as a helper: `helper_process`
//! does nothing unless `CKFLOW_STORE_HELPER` names a mode, and the helpers print the lines
//! the parent reads with a `@@ ` prefix (libtest prints its own chatter too).

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ckflow::store::{
    CancelOutcome, DetailSource, GcOptions, HistoryEntry, HistoryKind, LogStream, RunFilter,
    RunRecord, RunStatus, RunSummary, StepError, StepRecord, StepStatus, Store, StoreError,
    StoreOptions, redact,
};
use serde_json::{Value, json};

const HOUR: u64 = 3_600_000;
const T0: u64 = 1_776_944_712_000;

fn state() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join(".ckflow")).unwrap();
    (tmp, store)
}

fn state_with(options: StoreOptions) -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open_with(tmp.path().join(".ckflow"), options).unwrap();
    (tmp, store)
}

fn run_record(id: &str, started_at_ms: u64) -> RunRecord {
    let mut r = RunRecord::new(id, "containerize", started_at_ms);
    r.source = "apiVersion: ckflow/v1\nname: containerize\nsteps: []\n".to_owned();
    r.source_hash = ckflow::store::source_hash(&r.source);
    r
}

fn step(id: &str, status: StepStatus, at: u64) -> StepRecord {
    StepRecord {
        id: id.to_owned(),
        status,
        attempts: 1,
        started_at_ms: Some(at),
        finished_at_ms: status.is_finished().then_some(at + 5),
        duration_ms: status.is_finished().then_some(5),
        outputs: if status.is_finished() {
            json!({"step": id})
        } else {
            Value::Null
        },
        ..StepRecord::default()
    }
}

fn random_below(n: u64) -> u64 {
    let mut h = std::hash::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    h.finish() % n
}

// ---------------------------------------------------------------------------------------
// Helper processes

const HELPER: &str = "CKFLOW_STORE_HELPER";
const HELPER_DIR: &str = "CKFLOW_STORE_HELPER_DIR";
const HELPER_ARG: &str = "CKFLOW_STORE_HELPER_ARG";

/// Not a test of its own: the entry point of the helper processes the other tests start.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var(HELPER) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(HELPER_DIR).unwrap());
    let arg = std::env::var(HELPER_ARG).unwrap_or_default();
    match mode.as_str() {
        "commit_loop" => helper_commit_loop(&dir, &arg),
        "worker" => helper_worker(&dir, &arg),
        "hold" => helper_hold(&dir, &arg),
        other => panic!("unknown helper mode {other}"),
    }
}

/// Spawn this binary as a helper; its `@@ ` lines arrive on the returned channel.
fn spawn_helper(mode: &str, dir: &Path, arg: &str) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "helper_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(HELPER, mode)
        .env(HELPER_DIR, dir)
        .env(HELPER_ARG, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(msg) = line.strip_prefix("@@ ")
                && tx.send(msg.to_owned()).is_err()
            {
                break;
            }
        }
    });
    (child, rx)
}

fn expect_line(rx: &mpsc::Receiver<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line == want => return,
            Ok(_) => {}
            Err(e) => panic!("helper never said {want:?}: {e}"),
        }
    }
}

/// Record step finishes forever, printing each id only after the commit that made it
/// durable returned. Creates the run, or resumes it when it exists.
fn helper_commit_loop(dir: &Path, run_id: &str) {
    let store = Store::open(dir).unwrap();
    store
        .ensure_session(Some("crash"), BTreeMap::new(), None, T0)
        .unwrap();
    let (handle, mut next) = if store.run_dir(run_id).exists() {
        let (handle, _, steps) = store.resume_run(run_id).unwrap();
        let done = steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .filter_map(|s| s.id[1..].parse::<u64>().ok())
            .max();
        (handle, done.map_or(0, |d| d + 1))
    } else {
        let mut record = run_record(run_id, T0);
        record.session = Some("crash".to_owned());
        (store.create_run(record).unwrap(), 0)
    };
    println!("@@ READY");
    loop {
        // Three finishes, one commit (the dispatcher's pattern) …
        let batch: Vec<String> = (next..next + 3).map(|i| format!("s{i:06}")).collect();
        for id in &batch {
            handle
                .step_started(&step(id, StepStatus::Running, T0))
                .unwrap();
            handle.append_log(id, LogStream::Stdout, "working").unwrap();
        }
        for id in &batch {
            handle
                .record_step_finished(&step(id, StepStatus::Succeeded, T0))
                .unwrap();
        }
        handle.commit().unwrap();
        for id in &batch {
            println!("@@ COMMITTED {id}");
        }
        // … then one on its own, and a visit to the shared index now and then.
        let id = format!("s{:06}", next + 3);
        handle
            .step_finished(&step(&id, StepStatus::Succeeded, T0))
            .unwrap();
        println!("@@ COMMITTED {id}");
        if next % 8 == 0 {
            store
                .put_context("crash", "progress", json!(next), None, T0)
                .unwrap();
        }
        next += 4;
    }
}

/// One of several processes sharing a state directory: five runs of three steps each,
/// with session and context traffic in between.
fn helper_worker(dir: &Path, worker: &str) {
    let store = Store::open_with(
        dir,
        StoreOptions {
            keep_runs: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    for r in 0..5 {
        let now = ckflow::store::now_ms();
        store
            .ensure_session(Some("shared"), BTreeMap::new(), None, now)
            .unwrap();
        let mut record = run_record(&format!("w{worker}-r{r}"), now);
        record.session = Some("shared".to_owned());
        let handle = store.create_run(record).unwrap();
        for s in ["build", "scan", "push"] {
            handle
                .step_started(&step(s, StepStatus::Running, now))
                .unwrap();
            handle
                .append_log(s, LogStream::Stdout, &format!("{s} from worker {worker}"))
                .unwrap();
            handle
                .step_finished(&step(s, StepStatus::Succeeded, now))
                .unwrap();
        }
        store
            .put_context("shared", &format!("worker{worker}"), json!(r), None, now)
            .unwrap();
        store
            .record_history(
                "shared",
                &HistoryEntry {
                    at_ms: now,
                    kind: HistoryKind::Run,
                    run_id: Some(handle.id().to_owned()),
                    name: Some("containerize".to_owned()),
                    message: None,
                    data: Value::Null,
                },
            )
            .unwrap();
        let id = handle.id().to_owned();
        handle
            .finish(RunStatus::Succeeded, ckflow::store::now_ms())
            .unwrap();
        println!("@@ DONE {id}");
    }
}

/// Own a run with one finished and one running step, then wait to be killed (at most a
/// minute, so a failed test leaves nothing behind).
fn helper_hold(dir: &Path, run_id: &str) {
    let store = Store::open(dir).unwrap();
    let handle = store.create_run(run_record(run_id, T0)).unwrap();
    handle
        .step_finished(&step("analyze", StepStatus::Succeeded, T0))
        .unwrap();
    handle
        .step_started(&step("build", StepStatus::Running, T0 + 10))
        .unwrap();
    handle
        .append_log("build", LogStream::Stdout, "step 1/3")
        .unwrap();
    handle.commit().unwrap();
    println!("@@ READY");
    std::thread::sleep(Duration::from_secs(60));
}

// ---------------------------------------------------------------------------------------
// Round trips

#[test]
fn create_finish_list_and_get_round_trip() {
    let (_tmp, store) = state();
    assert_eq!(
        std::fs::read_to_string(store.dir().join("FORMAT")).unwrap(),
        "2\n"
    );
    let mut record = run_record("r1", T0);
    record.inputs = json!({"image": "web", "replicas": 2})
        .as_object()
        .unwrap()
        .clone();
    record.session = Some("default".to_owned());
    let handle = store.create_run(record.clone()).unwrap();

    // Listed as running while it runs.
    let listed = store.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, RunStatus::Running);
    assert_eq!(listed[0].pid, std::process::id());
    assert!(store.is_running("r1"));

    handle
        .step_started(&step("build", StepStatus::Running, T0))
        .unwrap();
    let mut failed = step("push", StepStatus::Failed, T0 + 10);
    failed.attempts = 3;
    failed.error = Some(StepError {
        class: "auth_failed".to_owned(),
        code: Some("AUTH_FAILED".to_owned()),
        message: "denied".to_owned(),
        details: None,
    });
    failed.routing = vec![json!({"rule": 0, "route": "check_credentials", "then": "fail"})];
    let mut recovery = step("push.recovery.1", StepStatus::Succeeded, T0 + 20);
    recovery.recovery_for = Some("push".to_owned());
    handle
        .step_finished(&step("build", StepStatus::Succeeded, T0))
        .unwrap();
    handle.step_finished(&failed).unwrap();
    handle.step_finished(&recovery).unwrap();
    let done = handle.finish(RunStatus::Failed, T0 + 100).unwrap();
    assert_eq!(done.status, RunStatus::Failed);
    assert_eq!(done.finished_at_ms, Some(T0 + 100));

    let listed = store.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(
        listed,
        vec![RunSummary {
            id: "r1".to_owned(),
            workflow: "containerize".to_owned(),
            status: RunStatus::Failed,
            session: Some("default".to_owned()),
            started_at_ms: T0,
            finished_at_ms: Some(T0 + 100),
            pid: std::process::id(),
        }]
    );
    assert!(!store.is_running("r1"));
    assert!(!store.run_dir("r1").join("owner").exists());

    let detail = store.get_run("r1").unwrap().unwrap();
    assert_eq!(detail.source, DetailSource::Database);
    assert_eq!(detail.status, RunStatus::Failed);
    assert_eq!(detail.run.source, record.source);
    assert_eq!(detail.run.source_hash, record.source_hash);
    assert_eq!(detail.run.inputs, record.inputs);
    let ids: Vec<&str> = detail.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["build", "push", "push.recovery.1"], "insertion order");
    assert_eq!(detail.steps[0].outputs, json!({"step": "build"}));
    assert_eq!(detail.steps[1], failed);
    assert_eq!(detail.steps[2].recovery_for.as_deref(), Some("push"));

    assert!(store.get_run("nope").unwrap().is_none());
    assert!(matches!(
        store.create_run(run_record("r1", T0)),
        Err(StoreError::RunExists(_))
    ));
    assert!(matches!(
        store.create_run(run_record("../x", T0)),
        Err(StoreError::InvalidId { .. })
    ));
}

#[test]
fn list_filters_and_limits_newest_first() {
    let (_tmp, store) = state();
    for (i, wf) in ["a", "b", "a", "a"].iter().enumerate() {
        let mut r = run_record(&format!("r{i}"), T0 + i as u64);
        r.workflow = (*wf).to_owned();
        r.session = Some(if i % 2 == 0 { "even" } else { "odd" }.to_owned());
        let status = if i == 3 {
            RunStatus::Cancelled
        } else {
            RunStatus::Succeeded
        };
        store
            .create_run(r)
            .unwrap()
            .finish(status, T0 + 10)
            .unwrap();
    }
    let ids = |f: RunFilter| -> Vec<String> {
        store
            .list_runs(&f)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(ids(RunFilter::default()), ["r3", "r2", "r1", "r0"]);
    assert_eq!(
        ids(RunFilter {
            workflow: Some("a".into()),
            ..Default::default()
        }),
        ["r3", "r2", "r0"]
    );
    assert_eq!(
        ids(RunFilter {
            session: Some("odd".into()),
            ..Default::default()
        }),
        ["r3", "r1"]
    );
    assert_eq!(
        ids(RunFilter {
            status: Some(RunStatus::Cancelled),
            ..Default::default()
        }),
        ["r3"]
    );
    assert_eq!(
        ids(RunFilter {
            limit: Some(2),
            ..Default::default()
        }),
        ["r3", "r2"]
    );
}

// ---------------------------------------------------------------------------------------
// Durability

/// A run with many steps hands its database writes to a thread of its own; what reads the
/// database afterwards, finished or interrupted, sees every step, in order, with outputs.
#[test]
fn a_long_run_reads_back_whole_finished_or_interrupted() {
    let (_tmp, store) = state();
    for (id, finish) in [("long-done", true), ("long-cut", false)] {
        let handle = store.create_run(run_record(id, T0)).unwrap();
        for i in 0..300 {
            let s = format!("s{i:03}");
            handle
                .step_started(&step(&s, StepStatus::Running, T0))
                .unwrap();
            handle
                .record_step_finished(&step(&s, StepStatus::Succeeded, T0))
                .unwrap();
            if i % 50 == 49 {
                handle.commit().unwrap();
            }
        }
        if finish {
            handle.finish(RunStatus::Succeeded, T0 + 10).unwrap();
        } else {
            // Dropped as a crash would leave it: the last commit was at step 299.
            drop(handle);
        }
        let detail = store.get_run(id).unwrap().expect("the run exists");
        let expected = if finish {
            RunStatus::Succeeded
        } else {
            RunStatus::Interrupted
        };
        assert_eq!(detail.status, expected, "{id}");
        assert_eq!(detail.steps.len(), 300, "{id}");
        for (i, s) in detail.steps.iter().enumerate() {
            assert_eq!(s.id, format!("s{i:03}"), "{id}");
            assert_eq!(s.status, StepStatus::Succeeded, "{id}");
            assert_eq!(s.outputs, json!({"step": s.id}), "{id}");
        }
    }
}

/// A run's database is opened in the background while the run starts; a process that dies
/// before it opened leaves only the run's journal, and that is enough to read and resume it.
#[test]
fn a_run_with_only_its_journal_reads_back_and_resumes() {
    let (_tmp, store) = state();
    let handle = store.create_run(run_record("j", T0)).unwrap();
    for i in 0..3 {
        handle
            .step_finished(&step(&format!("s{i}"), StepStatus::Succeeded, T0))
            .unwrap();
    }
    let dir = store.dir().join("runs").join("j");
    drop(handle);
    // The journal is complete once the handle is gone; keep a copy, let a reader fold it
    // into the database, then take the database away and put the journal back.
    let journal = std::fs::read(dir.join("journal")).unwrap();
    assert!(!journal.is_empty());
    assert_eq!(store.get_run("j").unwrap().unwrap().steps.len(), 3);
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("journal"), &journal).unwrap();

    let detail = store.get_run("j").unwrap().expect("the run exists");
    assert_eq!(detail.status, RunStatus::Interrupted);
    assert_eq!(detail.source, DetailSource::Database);
    let ids: Vec<&str> = detail.steps.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["s0", "s1", "s2"]);
    assert_eq!(detail.steps[2].outputs, json!({"step": "s2"}));

    // Again with only the journal, this time resumed.
    std::fs::remove_dir_all(dir.join("db")).unwrap();
    std::fs::write(dir.join("journal"), &journal).unwrap();
    let (handle, before, steps) = store.resume_run("j").unwrap();
    assert_eq!(before.id, "j");
    assert_eq!(steps.len(), 3);
    handle.finish(RunStatus::Succeeded, T0 + 10).unwrap();
    assert_eq!(
        store.get_run("j").unwrap().unwrap().status,
        RunStatus::Succeeded
    );
    assert!(
        !dir.join("journal").exists(),
        "a clean end removes the journal"
    );
}

#[test]
fn group_commit_makes_a_batch_durable_with_one_flush() {
    let (_tmp, store) = state();
    let handle = store.create_run(run_record("g", T0)).unwrap();
    // Creating the run made its record durable with one commit of its own.
    assert_eq!(handle.stats().flushes, 1);
    for i in 0..20 {
        handle
            .record_step_finished(&step(&format!("s{i}"), StepStatus::Succeeded, T0))
            .unwrap();
    }
    handle.commit().unwrap();
    let stats = handle.stats();
    assert_eq!(stats.steps_finished, 20);
    assert_eq!(stats.flushes, 2, "{stats:?}");
    // Nothing new: no flush.
    handle.commit().unwrap();
    assert_eq!(handle.stats().flushes, 2);

    // Eight threads finishing steps at once share flushes.
    let handle = std::sync::Arc::new(handle);
    std::thread::scope(|scope| {
        for t in 0..8 {
            let handle = handle.clone();
            scope.spawn(move || {
                for i in 0..25 {
                    handle
                        .step_finished(&step(&format!("t{t}-{i}"), StepStatus::Succeeded, T0))
                        .unwrap();
                }
            });
        }
    });
    let stats = handle.stats();
    assert_eq!(stats.steps_finished, 220);
    assert!(stats.flushes < 2 + 200, "no flush was shared: {stats:?}");
    println!(
        "group commit: 200 concurrent finishes took {} flushes",
        stats.flushes - 2
    );

    // One finish at a time costs one flush each: the latency a lone step pays.
    let t = Instant::now();
    for i in 0..50 {
        handle
            .step_finished(&step(&format!("solo{i}"), StepStatus::Succeeded, T0))
            .unwrap();
    }
    println!(
        "step_finished alone: {:?} per durable finish",
        t.elapsed() / 50
    );

    // Dropped without finishing (as a crash would): everything committed is there.
    drop(handle);
    let (handle, before, steps) = store.resume_run("g").unwrap();
    assert_eq!(before.status, RunStatus::Running);
    assert_eq!(steps.len(), 270);
    assert!(steps.iter().all(|s| s.status == StepStatus::Succeeded));
    handle.finish(RunStatus::Succeeded, T0 + 1).unwrap();
}

#[test]
fn committed_steps_survive_kill_9_at_random_moments() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".ckflow");
    let mut committed: HashSet<String> = HashSet::new();
    let rounds = 12;
    for round in 0..rounds {
        let (mut child, rx) = spawn_helper("commit_loop", &dir, "crashy");
        if round == 0 {
            // The first round lets creation finish (a run killed while being created was
            // never reported to anyone and cannot be resumed).
            expect_line(&rx, "READY");
        }
        std::thread::sleep(Duration::from_millis(30 + random_below(400)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The pipe closes with the process; take everything it said.
        let mut said = 0;
        for line in rx.iter() {
            if let Some(id) = line.strip_prefix("COMMITTED ") {
                committed.insert(id.to_owned());
                said += 1;
            }
        }

        // The store opens cleanly and has every step the child reported committed.
        let store = Store::open(&dir).unwrap();
        let detail = store.get_run("crashy").unwrap().expect("the run exists");
        assert_eq!(detail.status, RunStatus::Interrupted, "round {round}");
        assert_eq!(detail.source, DetailSource::Database);
        let succeeded: HashSet<&str> = detail
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .map(|s| s.id.as_str())
            .collect();
        let lost: Vec<&String> = committed
            .iter()
            .filter(|id| !succeeded.contains(id.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: committed steps lost: {lost:?}"
        );
        let listed = store.list_runs(&RunFilter::default()).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].status, RunStatus::Interrupted);
        store.get_context("crash", T0).unwrap();
        println!(
            "round {round}: {said} new commits, {} in all",
            committed.len()
        );
    }
    assert!(
        committed.len() >= 4,
        "the helper barely ran: {}",
        committed.len()
    );

    // And the run can be finished after all that.
    let store = Store::open(&dir).unwrap();
    let (handle, _, steps) = store.resume_run("crashy").unwrap();
    assert!(steps.len() >= committed.len());
    handle.finish(RunStatus::Succeeded, T0 + 1).unwrap();
    assert_eq!(
        store.get_run("crashy").unwrap().unwrap().status,
        RunStatus::Succeeded
    );
}

// ---------------------------------------------------------------------------------------
// Several processes

#[test]
fn eight_processes_share_one_state_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".ckflow");
    let store = Store::open_with(
        &dir,
        StoreOptions {
            keep_runs: None,
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let mut children: Vec<(Child, mpsc::Receiver<String>)> = (0..8)
        .map(|w| spawn_helper("worker", &dir, &w.to_string()))
        .collect();

    let mut lists = 0;
    let mut seen_running = false;
    let mut slowest_list = Duration::ZERO;
    loop {
        let t = Instant::now();
        let runs = store
            .list_runs(&RunFilter::default())
            .expect("list works while others write");
        slowest_list = slowest_list.max(t.elapsed());
        lists += 1;
        seen_running |= runs.iter().any(|r| r.status == RunStatus::Running);
        if let Some(r) = runs.first() {
            // Reading one run works too, running or not.
            store.get_run(&r.id).expect("get works while others write");
        }
        let mut all_done = true;
        for (child, _) in &mut children {
            if child.try_wait().unwrap().is_none() {
                all_done = false;
            }
        }
        if all_done {
            break;
        }
        if started.elapsed() > Duration::from_secs(120) {
            for (child, _) in &mut children {
                let _ = child.kill();
            }
            panic!("the workers did not finish within 2 minutes");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for (child, rx) in &mut children {
        assert!(child.wait().unwrap().success(), "a worker failed");
        assert_eq!(rx.iter().filter(|l| l.starts_with("DONE ")).count(), 5);
    }
    let runs = store.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(runs.len(), 40);
    assert!(
        runs.iter().all(|r| r.status == RunStatus::Succeeded),
        "{runs:?}"
    );
    for r in &runs {
        let d = store.get_run(&r.id).unwrap().unwrap();
        assert_eq!(d.steps.len(), 3);
        assert!(
            store
                .read_log(&r.id, "scan")
                .unwrap()
                .starts_with("[stdout] scan from worker")
        );
    }
    let context = store
        .get_context("shared", ckflow::store::now_ms())
        .unwrap();
    assert_eq!(context.len(), 8);
    assert_eq!(store.history("shared", None).unwrap().len(), 40);
    println!(
        "8 processes x 5 runs in {:?}; {lists} lists meanwhile (saw running: {seen_running}), slowest {:?}",
        started.elapsed(),
        slowest_list
    );
}

#[test]
fn a_held_index_lock_is_a_clear_error_not_a_hang() {
    let (_tmp, store) = state();
    store.list_runs(&RunFilter::default()).unwrap();
    let blocker = std::fs::File::open(store.dir().join("index.lock")).unwrap();
    blocker.lock().unwrap();
    let impatient = Store::open_with(
        store.dir(),
        StoreOptions {
            lock_timeout: Duration::from_millis(300),
            ..StoreOptions::default()
        },
    )
    .unwrap();
    let t = Instant::now();
    let err = impatient.list_runs(&RunFilter::default()).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(err, StoreError::Locked { .. }));
    assert!(err.is_critical());
    let msg = err.to_string();
    assert!(
        msg.contains("index.lock") && msg.contains("gave up after 0.3 s"),
        "{msg}"
    );
    blocker.unlock().unwrap();
    impatient.list_runs(&RunFilter::default()).unwrap();
}

#[test]
fn listing_10000_runs_is_fast() {
    let (_tmp, store) = state_with(StoreOptions {
        keep_runs: None,
        ..StoreOptions::default()
    });
    let summaries: Vec<RunSummary> = (0..10_000u64)
        .map(|i| RunSummary {
            id: ckflow::store::new_id(T0 + i * 1000),
            workflow: ["containerize", "ci", "release"][(i % 3) as usize].to_owned(),
            status: if i % 10 == 0 {
                RunStatus::Failed
            } else {
                RunStatus::Succeeded
            },
            session: Some("default".to_owned()),
            started_at_ms: T0 + i * 1000,
            finished_at_ms: Some(T0 + i * 1000 + 700),
            pid: 4242,
        })
        .collect();
    store.import_summaries(&summaries).unwrap();

    let mut times = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        runs = store.list_runs(&RunFilter::default()).unwrap();
        times.push(t.elapsed());
    }
    assert_eq!(runs.len(), 10_000);
    assert_eq!(runs[0].started_at_ms, T0 + 9_999 * 1000, "newest first");
    let t = Instant::now();
    let failed = store
        .list_runs(&RunFilter {
            status: Some(RunStatus::Failed),
            limit: Some(20),
            ..Default::default()
        })
        .unwrap();
    let filtered = t.elapsed();
    assert_eq!(failed.len(), 20);
    let best = times.iter().min().unwrap();
    println!(
        "list_runs over 10,000 runs: first {:?}, best {:?}, filtered+limit {:?}",
        times[0], best, filtered
    );
    assert!(times[0] < Duration::from_secs(1), "{times:?}");
}

/// The same measurement on an index grown the real way (10,000 create/finish cycles, each
/// an index visit). Slow to set up: `cargo test --release --test store -- --ignored`.
#[test]
#[ignore]
fn listing_10000_real_runs_is_fast() {
    let (_tmp, store) = state_with(StoreOptions {
        keep_runs: None,
        ..StoreOptions::default()
    });
    let setup = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let store = store.clone();
            scope.spawn(move || {
                for i in 0..2_500u64 {
                    let n = t * 2_500 + i;
                    let h = store
                        .create_run(run_record(&format!("run-{n:05}"), T0 + n))
                        .unwrap();
                    h.step_finished(&step("only", StepStatus::Succeeded, T0 + n))
                        .unwrap();
                    h.finish(RunStatus::Succeeded, T0 + n + 1).unwrap();
                }
            });
        }
    });
    println!("created 10,000 runs in {:?}", setup.elapsed());
    let mut times = Vec::new();
    for _ in 0..5 {
        let t = Instant::now();
        assert_eq!(
            store.list_runs(&RunFilter::default()).unwrap().len(),
            10_000
        );
        times.push(t.elapsed());
    }
    println!("list_runs over 10,000 real runs: {times:?}");
    assert!(times[0] < Duration::from_secs(1));
}

// ---------------------------------------------------------------------------------------
// Resume, live view, cancel

#[test]
fn resume_is_refused_while_the_owner_lives_and_works_after_it_died() {
    let (_tmp, store) = state();
    let (mut child, rx) = spawn_helper("hold", store.dir(), "held");
    expect_line(&rx, "READY");
    let pid = child.id();

    match store.resume_run("held") {
        Err(e @ StoreError::RunStillRunning { .. }) => {
            assert_eq!(
                e.to_string(),
                format!("run held is still running in process {pid}")
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(store.is_running("held"));

    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!store.is_running("held"));
    let listed = store.list_runs(&RunFilter::default()).unwrap();
    assert_eq!(listed[0].status, RunStatus::Interrupted);
    let detail = store.get_run("held").unwrap().unwrap();
    assert_eq!(detail.status, RunStatus::Interrupted);
    assert_eq!(detail.steps[1].status, StepStatus::Interrupted);

    let (handle, before, steps) = store.resume_run("held").unwrap();
    assert_eq!(before.pid, pid);
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].status, StepStatus::Succeeded);
    assert_eq!(
        steps[0].outputs,
        json!({"step": "analyze"}),
        "outputs stay for templates"
    );
    assert_eq!(steps[1].status, StepStatus::Interrupted);
    assert_eq!(handle.record().resumes, 1);
    assert_eq!(
        store.list_runs(&RunFilter::default()).unwrap()[0].status,
        RunStatus::Running
    );
    // Resuming it again from here is refused too: this process owns it now.
    assert!(matches!(
        store.resume_run("held"),
        Err(StoreError::RunStillRunning { .. })
    ));
    handle
        .step_finished(&step("build", StepStatus::Succeeded, T0 + 50))
        .unwrap();
    handle.finish(RunStatus::Succeeded, T0 + 60).unwrap();
    let detail = store.get_run("held").unwrap().unwrap();
    assert_eq!(detail.status, RunStatus::Succeeded);
    assert_eq!(detail.steps[1].status, StepStatus::Succeeded);
    assert_eq!(detail.steps[1].attempts, 1);
}

#[test]
fn another_process_sees_a_running_run_through_its_live_snapshot_and_cancels_it() {
    let (_tmp, store) = state();
    let (mut child, rx) = spawn_helper("hold", store.dir(), "live");
    expect_line(&rx, "READY");
    let pid = child.id();

    let detail = store.get_run("live").unwrap().unwrap();
    assert_eq!(detail.source, DetailSource::LiveSnapshot);
    assert_eq!(detail.status, RunStatus::Running);
    assert_eq!(detail.owner_pid, Some(pid));
    assert_eq!(detail.run.workflow, "containerize");
    let steps: Vec<(&str, StepStatus)> = detail
        .steps
        .iter()
        .map(|s| (s.id.as_str(), s.status))
        .collect();
    assert_eq!(
        steps,
        [
            ("analyze", StepStatus::Succeeded),
            ("build", StepStatus::Running)
        ]
    );
    assert_eq!(
        store.read_log("live", "build").unwrap(),
        "[stdout] step 1/3\n"
    );

    let outcome = store.request_cancel("live").unwrap();
    assert_eq!(outcome, CancelOutcome::Signalled { pid });
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGTERM));
    assert!(store.run_dir("live").join("cancel").exists());
    assert_eq!(
        store.request_cancel("live").unwrap(),
        CancelOutcome::NotRunning {
            status: RunStatus::Interrupted
        }
    );
}

#[test]
fn an_owner_that_is_not_signalled_sees_the_cancel_marker() {
    let (_tmp, store) = state_with(StoreOptions {
        cancel_by_signal: false,
        ..StoreOptions::default()
    });
    let handle = store.create_run(run_record("mcp", T0)).unwrap();
    assert!(!handle.cancel_requested());
    let outcome = store.request_cancel("mcp").unwrap();
    assert_eq!(
        outcome,
        CancelOutcome::Requested {
            pid: Some(std::process::id())
        }
    );
    assert!(handle.cancel_requested());
    handle.finish(RunStatus::Cancelled, T0 + 1).unwrap();
    assert!(matches!(
        store.request_cancel("nope"),
        Err(StoreError::RunNotFound(_))
    ));
}

// ---------------------------------------------------------------------------------------
// Logs

#[test]
fn step_logs_are_capped_with_a_truncation_mark_and_can_be_followed() {
    let (_tmp, store) = state_with(StoreOptions {
        log_cap_bytes: 100,
        ..StoreOptions::default()
    });
    let handle = store.create_run(run_record("logs", T0)).unwrap();
    let mut follower = store.follow_log("logs", "build").unwrap();
    assert!(follower.poll().unwrap().is_empty());
    // 20 lines of "[stdout] line NN\n" (17 bytes): 5 fit in 100 bytes.
    for i in 0..20 {
        handle
            .append_log("build", LogStream::Stdout, &format!("line {i:02}"))
            .unwrap();
        if i == 1 {
            assert_eq!(
                follower.poll().unwrap(),
                ["[stdout] line 00", "[stdout] line 01"]
            );
        }
    }
    handle
        .append_log("build", LogStream::Stderr, "late error")
        .unwrap();
    // Still writing: no mark yet.
    assert!(
        !store
            .read_log("logs", "build")
            .unwrap()
            .contains("truncated")
    );
    handle
        .step_finished(&step("build", StepStatus::Succeeded, T0))
        .unwrap();
    let log = store.read_log("logs", "build").unwrap();
    let dropped = 15 * 17 + "[stderr] late error\n".len();
    let expected = format!(
        "[stdout] line 00\n[stdout] line 01\n[stdout] line 02\n[stdout] line 03\n[stdout] line 04\n\
         …[log truncated: {dropped} bytes dropped]\n"
    );
    assert_eq!(log, expected);
    assert_eq!(
        follower.poll().unwrap(),
        [
            "[stdout] line 02",
            "[stdout] line 03",
            "[stdout] line 04",
            &format!("…[log truncated: {dropped} bytes dropped]")
        ]
    );
    handle
        .append_log("odd/step[1]", LogStream::Ckflow, "attempt 1")
        .unwrap();
    handle.finish(RunStatus::Succeeded, T0 + 1).unwrap();
    assert_eq!(store.log_steps("logs").unwrap(), ["build", "odd/step[1]"]);
    assert_eq!(
        store.read_log("logs", "odd/step[1]").unwrap(),
        "[ckflow] attempt 1\n"
    );
    assert_eq!(store.read_log("logs", "quiet").unwrap(), "");
}

// ---------------------------------------------------------------------------------------
// Sessions and context

#[test]
fn context_entries_expire_after_their_ttl() {
    let (_tmp, store) = state();
    store
        .ensure_session(Some("s1"), BTreeMap::new(), None, T0)
        .unwrap();
    store
        .put_context("s1", "image", json!("web:1.2"), None, T0)
        .unwrap();
    store
        .put_context(
            "s1",
            "short",
            json!({"n": 1}),
            Some(Duration::from_secs(10)),
            T0,
        )
        .unwrap();
    let at = |ms: u64| store.get_context("s1", ms).unwrap();
    assert_eq!(
        Value::Object(at(T0 + 5_000)),
        json!({"image": "web:1.2", "short": {"n": 1}})
    );
    assert_eq!(Value::Object(at(T0 + 10_000)), json!({"image": "web:1.2"}));
    assert_eq!(
        Value::Object(at(T0 + HOUR - 1)),
        json!({"image": "web:1.2"})
    );
    assert_eq!(
        Value::Object(at(T0 + HOUR)),
        json!({}),
        "the default TTL is one hour"
    );

    // The sweep removes them for good; the session itself is still fresh.
    let report = store.sweep(T0 + 11_000).unwrap();
    assert_eq!(report.context_removed, 1);
    assert!(report.sessions_removed.is_empty());
    let entries = store.context_entries("s1", T0).unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].expires_at_ms, T0 + HOUR);
    // Overwriting restarts the clock.
    store
        .put_context("s1", "image", json!("web:1.3"), None, T0 + HOUR - 10)
        .unwrap();
    assert_eq!(
        Value::Object(at(T0 + HOUR + 10)),
        json!({"image": "web:1.3"})
    );
    assert!(matches!(
        store.put_context("nope", "k", json!(1), None, T0),
        Err(StoreError::SessionNotFound(_))
    ));
}

#[test]
fn idle_sessions_are_swept_with_their_workspace() {
    let (_tmp, store) = state();
    let labels = BTreeMap::from([("team".to_owned(), "web".to_owned())]);
    let s = store.ensure_session(None, labels, None, T0).unwrap();
    assert!(s.workspace.is_dir());
    assert!(s.workspace.starts_with(store.dir()));
    std::fs::write(s.workspace.join("Dockerfile"), "FROM scratch\n").unwrap();
    store
        .put_context(
            &s.id,
            "k",
            json!(1),
            Some(Duration::from_secs(48 * 3600)),
            T0,
        )
        .unwrap();
    store
        .record_history(
            &s.id,
            &HistoryEntry {
                at_ms: T0,
                kind: HistoryKind::ToolCall,
                run_id: None,
                name: Some("build_image".to_owned()),
                message: None,
                data: json!({"tag": "web"}),
            },
        )
        .unwrap();

    // Used again an hour later: idle from then on.
    let again = store
        .ensure_session(
            Some(&s.id),
            BTreeMap::from([("env".to_owned(), "ci".to_owned())]),
            None,
            T0 + HOUR,
        )
        .unwrap();
    assert_eq!(again.created_at_ms, T0);
    assert_eq!(again.labels.len(), 2);
    assert_eq!(
        store.sweep(T0 + HOUR + 24 * HOUR).unwrap().sessions_removed,
        Vec::<String>::new()
    );
    assert_eq!(store.list_sessions().unwrap().len(), 1);

    // A session with a run still running is kept however idle it is.
    let busy = store
        .ensure_session(
            Some("busy"),
            BTreeMap::new(),
            Some(Duration::from_secs(60)),
            T0,
        )
        .unwrap();
    let mut record = run_record("busy-run", T0);
    record.session = Some("busy".to_owned());
    let handle = store.create_run(record).unwrap();

    let report = store.sweep(T0 + HOUR + 24 * HOUR + 1).unwrap();
    assert_eq!(report.sessions_removed, std::slice::from_ref(&s.id));
    assert_eq!(report.context_removed, 1);
    assert!(!s.workspace.exists(), "the workspace goes with the session");
    assert!(store.get_session(&s.id).unwrap().is_none());
    assert!(store.history(&s.id, None).unwrap().is_empty());
    assert!(store.get_context(&s.id, T0).unwrap().is_empty());
    assert!(busy.workspace.is_dir());

    handle.finish(RunStatus::Succeeded, T0 + 2 * HOUR).unwrap();
    let report = store.sweep(T0 + 30 * HOUR).unwrap();
    assert_eq!(report.sessions_removed, ["busy"]);
    assert!(!busy.workspace.exists());
}

#[test]
fn an_expired_session_is_fresh_when_used_again_and_history_is_kept_in_order() {
    let (_tmp, store) = state();
    store
        .ensure_session(
            Some("cli"),
            BTreeMap::new(),
            Some(Duration::from_secs(60)),
            T0,
        )
        .unwrap();
    store
        .put_context("cli", "k", json!(1), Some(Duration::from_secs(3600)), T0)
        .unwrap();
    for i in 0..3 {
        let entry = HistoryEntry {
            at_ms: T0 + i,
            kind: if i == 2 {
                HistoryKind::Error
            } else {
                HistoryKind::Run
            },
            run_id: Some(format!("r{i}")),
            name: None,
            message: (i == 2).then(|| "boom".to_owned()),
            data: Value::Null,
        };
        store.record_history("cli", &entry).unwrap();
    }
    let history = store.history("cli", Some(2)).unwrap();
    assert_eq!(
        history
            .iter()
            .map(|h| h.run_id.clone().unwrap())
            .collect::<Vec<_>>(),
        ["r1", "r2"]
    );
    // Two minutes later, past its 60 s idle TTL: expired means gone, even before a sweep.
    let s = store
        .ensure_session(Some("cli"), BTreeMap::new(), None, T0 + 120_000)
        .unwrap();
    assert_eq!(s.created_at_ms, T0 + 120_000);
    assert!(store.history("cli", None).unwrap().is_empty());
    assert!(store.get_context("cli", T0 + 120_000).unwrap().is_empty());
    assert!(store.remove_session("cli").unwrap());
    assert!(!s.workspace.exists());
    assert!(!store.remove_session("cli").unwrap());
}

// ---------------------------------------------------------------------------------------
// Retention

#[test]
fn gc_removes_runs_by_age_and_by_cap_but_never_a_running_one() {
    let (_tmp, store) = state_with(StoreOptions {
        keep_runs: None,
        ..StoreOptions::default()
    });
    let day = 24 * HOUR;
    let now = T0 + 22 * day;
    // r0..r5 started 5 days apart from T0; r0..r2 ended more than 7 days before `now`.
    for i in 0..6u64 {
        let h = store
            .create_run(run_record(&format!("r{i}"), T0 + i * 5 * day))
            .unwrap();
        h.finish(RunStatus::Succeeded, T0 + i * 5 * day + 1000)
            .unwrap();
    }
    // An old run still running is kept.
    let running = store.create_run(run_record("old-running", T0)).unwrap();

    let report = store
        .gc(
            &GcOptions {
                older_than: Some(Duration::from_secs(7 * 24 * 3600)),
                keep: None,
            },
            now,
        )
        .unwrap();
    let mut removed = report.runs_removed.clone();
    removed.sort();
    assert_eq!(removed, ["r0", "r1", "r2"]);
    for id in ["r0", "r1", "r2"] {
        assert!(!store.run_dir(id).exists());
        assert!(store.get_run(id).unwrap().is_none());
    }
    let ids: Vec<String> = store
        .list_runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r5", "r4", "r3", "old-running"]);

    // Cap: keep 2 (the running one counts but stays).
    let report = store
        .gc(
            &GcOptions {
                older_than: None,
                keep: Some(2),
            },
            now,
        )
        .unwrap();
    assert_eq!(report.runs_removed, ["r3"]);
    let ids: Vec<String> = store
        .list_runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r5", "r4", "old-running"]);
    running.finish(RunStatus::Cancelled, now).unwrap();
    let report = store
        .gc(
            &GcOptions {
                older_than: None,
                keep: Some(2),
            },
            now,
        )
        .unwrap();
    assert_eq!(report.runs_removed, ["old-running"]);

    // A run directory with no index row (a crash mid-creation), old enough, goes too.
    let orphan = store.run_dir("orphan");
    std::fs::create_dir_all(orphan.join("db")).unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&orphan)
        .unwrap()
        .set_modified(long_ago)
        .unwrap();
    let fresh = store.run_dir("being-created");
    std::fs::create_dir_all(&fresh).unwrap();
    let report = store.gc(&GcOptions::default(), now).unwrap();
    assert_eq!(report.orphans_removed, 1);
    assert!(!orphan.exists());
    assert!(
        fresh.exists(),
        "a directory younger than a minute may be a run being created"
    );
}

#[test]
fn finishing_a_run_enforces_the_default_cap() {
    assert_eq!(StoreOptions::default().keep_runs, Some(1000));
    let (_tmp, store) = state_with(StoreOptions {
        keep_runs: Some(3),
        ..StoreOptions::default()
    });
    for i in 0..5u64 {
        let h = store
            .create_run(run_record(&format!("r{i}"), T0 + i))
            .unwrap();
        h.finish(RunStatus::Succeeded, T0 + i + 1).unwrap();
    }
    let ids: Vec<String> = store
        .list_runs(&RunFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["r4", "r3", "r2"]);
    assert!(!store.run_dir("r0").exists() && !store.run_dir("r1").exists());
}

// ---------------------------------------------------------------------------------------
// Secrets and format

#[test]
fn secrets_never_reach_the_disk() {
    let secret = "hunter2-Sup3rS3cret-token";
    let visible = "visible-marker-7f3a";
    let (_tmp, store) = state();
    let inputs = json!({
        "token": secret,
        "registry": format!("https://bot:{secret}@registry.example.com"),
        "note": visible,
    });
    let redacted = redact(inputs.as_object().unwrap(), &["token"]);
    let mut record = run_record("secret-run", T0);
    record.inputs = redacted.clone();
    record.secret_inputs = vec!["token".to_owned()];
    record.session = Some("sec".to_owned());
    store
        .ensure_session(Some("sec"), BTreeMap::new(), None, T0)
        .unwrap();
    let handle = store.create_run(record).unwrap();
    let mut s = step("push", StepStatus::Succeeded, T0);
    s.outputs = Value::Object(redacted.clone());
    handle
        .append_log(
            "push",
            LogStream::Stdout,
            &format!("login with {}", redacted["token"]),
        )
        .unwrap();
    handle.step_finished(&s).unwrap();
    store
        .put_context("sec", "registry", redacted["registry"].clone(), None, T0)
        .unwrap();
    handle.finish(RunStatus::Succeeded, T0 + 1).unwrap();
    // Resuming rewrites the record; still nothing.
    let (handle, before, _) = store.resume_run("secret-run").unwrap();
    assert_eq!(before.inputs["token"], "***");
    assert_eq!(before.secret_inputs, ["token"]);
    handle.finish(RunStatus::Succeeded, T0 + 2).unwrap();

    let mut scanned = 0;
    let mut found_visible = false;
    let mut stack = vec![store.dir().to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            scanned += 1;
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "the secret is in {}",
                path.display()
            );
            found_visible |= bytes
                .windows(visible.len())
                .any(|w| w == visible.as_bytes());
        }
    }
    assert!(scanned > 5, "{scanned} files");
    assert!(found_visible, "the scan does see stored values in clear");
}

#[test]
fn a_newer_format_is_refused_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".ckflow");
    Store::open(&dir).unwrap();
    std::fs::write(dir.join("FORMAT"), "3\n").unwrap();
    let err = Store::open(&dir).unwrap_err();
    assert!(matches!(
        err,
        StoreError::NewerFormat {
            found: 3,
            supported: 2,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(
        msg.contains("format version 3") && msg.contains("versions up to 2"),
        "{msg}"
    );
    std::fs::write(dir.join("FORMAT"), "banana\n").unwrap();
    let msg = Store::open(&dir).unwrap_err().to_string();
    assert!(
        msg.contains("format version number") && msg.contains("banana"),
        "{msg}"
    );
    // Version 1 (no journals) migrates to 2.
    std::fs::write(dir.join("FORMAT"), "1\n").unwrap();
    Store::open(&dir).unwrap();
    assert_eq!(std::fs::read_to_string(dir.join("FORMAT")).unwrap(), "2\n");
    assert_eq!(Store::default_dir(Path::new("/p")), Path::new("/p/.ckflow"));
}

// ---------------------------------------------------------------------------------------
// A long-lived process that keeps the index open (the MCP server)

fn holding(dir: &Path) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            hold_index: true,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// Another process's store (its own lock file handle, so the lock is contended as between
/// processes), which gives up after `timeout`.
fn other(dir: &Path, timeout: Duration) -> Store {
    Store::open_with(
        dir,
        StoreOptions {
            lock_timeout: timeout,
            ..StoreOptions::default()
        },
    )
    .unwrap()
}

/// A state directory with a server holding its index, and a session `session` in it.
fn held_with_session(session: &str) -> (tempfile::TempDir, PathBuf, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(".ckflow");
    let server = holding(&dir);
    server
        .ensure_session(Some(session), BTreeMap::new(), None, T0)
        .unwrap();
    (tmp, dir, server)
}

#[test]
fn a_held_index_is_handed_over_at_once_to_a_process_that_asks_for_it() {
    let (_tmp, dir, server) = held_with_session("busy");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        // The server visits every 2 ms, so the index is never idle long enough to be let go.
        let busy = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                server.put_context("busy", "n", json!(n), None, T0).unwrap();
                n += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
            n
        });
        // Stop the server's loop however this scope ends (a failed assertion included).
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        std::thread::sleep(Duration::from_millis(50));
        // A CLI process meanwhile: each visit gets the lock at once, though the server could
        // hold it for 10 s in a row.
        let cli = other(&dir, Duration::from_secs(5));
        for i in 0..5 {
            let t = Instant::now();
            let ctx = cli.get_context("busy", T0).unwrap();
            let waited = t.elapsed();
            assert!(ctx.contains_key("n"));
            // (Without the hand-over it would wait out its 5 s lock timeout and fail: the
            // server holds the index up to 10 s in a row.)
            assert!(
                waited < Duration::from_millis(600),
                "visit {i} waited {waited:?} for a held index"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(_stop);
        let visits = busy.join().unwrap();
        assert!(visits > 10, "the server barely ran: {visits}");
    });
    // What the server wrote is durable and visible to everyone.
    let last = server.get_context("busy", T0).unwrap()["n"].clone();
    assert_eq!(
        other(&dir, Duration::from_secs(5))
            .get_context("busy", T0)
            .unwrap()["n"],
        last
    );
}

#[test]
fn an_idle_held_index_is_let_go() {
    let (_tmp, dir, server) = held_with_session("s");
    server.put_context("s", "k", json!(1), None, T0).unwrap();
    // Nobody asks for it with a marker here (the lock is probed without one): it is let go
    // after 20 ms idle, well before the 10 s the server could hold it for in a row.
    let t = Instant::now();
    let lock = std::fs::File::open(dir.join("index.lock")).unwrap();
    while lock.try_lock().is_err() {
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "the idle server still holds the index lock"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    lock.unlock().unwrap();
    let cli = other(&dir, Duration::from_millis(50));
    assert_eq!(cli.get_context("s", T0).unwrap()["k"], json!(1));
    // And the server opens it again when it needs it.
    server.put_context("s", "k", json!(2), None, T0).unwrap();
    drop(server);
    assert_eq!(cli.get_context("s", T0).unwrap()["k"], json!(2));
}
