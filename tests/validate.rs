//! The workflow language from the outside: `ckflow validate`, `plan`, `graph` and `schema` on
//! fixture files, with insta snapshots of the rendered diagnostics and of `--json`; a
//! property test of planning; and inputs that must never make ckflow panic.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use ckflow::workflow::Code;
use ckflow::{Plan, ToolRegistry, Workflow};
use proptest::prelude::*;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn ckflow(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ckflow"))
        .args(args)
        .current_dir(cwd)
        .env("NO_COLOR", "1")
        .env_remove("CKFLOW_STATE_DIR")
        .output()
        .expect("ckflow runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Each invalid fixture holds one problem (fixtures named `*two-*` hold two of a kind): the
/// rendered report and the JSON are snapshotted, the exit code is 2, and together the
/// fixtures cover every diagnostic code but the two that need another command line
/// (`E000` unreadable file, `E051` input values), which have their own tests below.
#[test]
fn invalid_fixtures_snapshot_every_code() {
    let dir = fixtures().join("invalid");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert!(
        files.len() >= 30,
        "at least 30 invalid fixtures, found {}",
        files.len()
    );
    let mut covered = BTreeSet::new();
    for f in &files {
        let stem = f.rsplit_once('.').map(|(s, _)| s).unwrap_or(f);
        let human = ckflow(&dir, &["validate", f]);
        assert_eq!(human.status.code(), Some(2), "{f}: exit code");
        assert!(human.stdout.is_empty(), "{f}: nothing on stdout");
        let json = ckflow(&dir, &["validate", "--json", f]);
        assert_eq!(json.status.code(), Some(2), "{f}: exit code with --json");
        let diags: Value =
            serde_json::from_slice(&json.stdout).unwrap_or_else(|e| panic!("{f}: {e}"));
        let list = diags.as_array().unwrap();
        let expected = if stem.contains("two-") { 2 } else { 1 };
        assert_eq!(list.len(), expected, "{f}: {diags:#}");
        for d in list {
            for key in ["code", "message", "file", "line", "column", "path"] {
                assert!(d.get(key).is_some(), "{f}: diagnostic lacks {key}");
            }
            assert_eq!(d["file"], Value::String(f.clone()));
            assert!(d["line"].as_u64().unwrap() >= 1, "{f}: a line");
            assert!(d["column"].as_u64().unwrap() >= 1, "{f}: a column");
            covered.insert(d["code"].as_str().unwrap().to_owned());
        }
        insta::with_settings!({snapshot_path => "snapshots/invalid", prepend_module_to_snapshot => false}, {
            insta::assert_snapshot!(format!("{stem}.human"), text(&human.stderr));
            insta::assert_json_snapshot!(format!("{stem}.json"), diags);
        });
    }
    let missing: Vec<&str> = Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !covered.contains(*c) && !["E000", "E051"].contains(c))
        .collect();
    assert!(missing.is_empty(), "codes without a fixture: {missing:?}");
}

#[test]
fn unreadable_file_is_e000_and_exit_2() {
    let dir = fixtures();
    let out = ckflow(&dir, &["validate", "--json", "no-such-file.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d[0]["code"], "E000");
    let human = ckflow(&dir, &["validate", "no-such-file.yaml"]);
    insta::assert_snapshot!("unreadable_file", text(&human.stderr));
}

#[test]
fn input_values_are_checked_against_their_types() {
    let wf = Workflow::from_str(
        "inputs.yaml",
        "apiVersion: ckflow/v1\nname: i\ninputs:\n  replicas: {type: integer, required: true}\n  mode: {type: string, enum: [a, b], default: a}\n  token: {type: string, secret: true}\nsteps:\n  - {id: a, tool: noop}\n",
    )
    .unwrap();
    let mut given = indexmap::IndexMap::new();
    given.insert("replicas".to_owned(), Value::String("3".into()));
    let ok = wf.resolve_inputs(&given).unwrap();
    assert_eq!(
        ok["replicas"],
        Value::from(3),
        "text from -i becomes the declared type"
    );
    assert_eq!(ok["mode"], Value::from("a"), "defaults fill in");

    let mut bad = indexmap::IndexMap::new();
    bad.insert("replicas".to_owned(), Value::String("three".into()));
    bad.insert("mode".to_owned(), Value::String("c".into()));
    bad.insert("token".to_owned(), Value::from(12345));
    bad.insert("replica".to_owned(), Value::from(1));
    let d = wf.resolve_inputs(&bad).unwrap_err().0;
    assert!(d.iter().all(|d| d.code == Code::InputValue));
    let msgs: Vec<String> = d.iter().map(|d| d.message.clone()).collect();
    assert_eq!(d.len(), 4, "{msgs:#?}");
    assert!(msgs.iter().any(|m| m.contains("`replica` is not an input")));
    assert!(
        d.iter()
            .any(|d| d.help.as_deref() == Some("did you mean `replicas`?"))
    );
    assert!(
        msgs.iter()
            .any(|m| m.contains("must be one of \"a\", \"b\""))
    );
    assert!(
        msgs.iter().all(|m| !m.contains("12345")),
        "a secret's value never appears in a diagnostic"
    );
    let missing = wf.resolve_inputs(&indexmap::IndexMap::new()).unwrap_err().0;
    assert_eq!(missing.len(), 1);
    assert_eq!((missing[0].line, missing[0].column), (4, 3));
    insta::assert_snapshot!(
        "input_values",
        d.iter()
            .chain(missing.iter())
            .map(|d| d.short())
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn valid_files_plan_and_graph() {
    let dir = fixtures().join("valid");
    let out = ckflow(&dir, &["validate", "pipeline.yaml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan = ckflow(&dir, &["plan", "pipeline.yaml"]);
    assert_eq!(plan.status.code(), Some(0));
    insta::assert_snapshot!("plan_pipeline", text(&plan.stdout));
    for format in ["dot", "mermaid", "json"] {
        let g = ckflow(&dir, &["graph", "pipeline.yaml", "--format", format]);
        assert_eq!(g.status.code(), Some(0));
        insta::assert_snapshot!(format!("graph_pipeline_{format}"), text(&g.stdout));
    }
    let json: Value = serde_json::from_slice(
        &ckflow(&dir, &["graph", "pipeline.yaml", "--format", "json"]).stdout,
    )
    .unwrap();
    let levels = json["steps"]["levels"].as_array().unwrap();
    assert_eq!(
        levels[0],
        serde_json::json!(["checkout", "lint"]),
        "ties keep file order"
    );
    let bad = ckflow(&fixtures().join("invalid"), &["plan", "18-cycle.yaml"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad.stderr).contains("a -> c -> b -> a"));
}

#[test]
fn schema_command_prints_the_published_schema() {
    let out = ckflow(&fixtures(), &["schema"]);
    assert_eq!(out.status.code(), Some(0));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas/workflow.schema.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(printed, file);
    assert_eq!(
        printed["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
}

/// Every file shipped as an example or a workflow is valid.
#[test]
fn shipped_workflows_validate() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for sub in ["workflows", "examples", "tests/fixtures/valid"] {
        let Ok(rd) = std::fs::read_dir(root.join(sub)) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("yaml" | "yml" | "json")
            ) && let Err(d) = Workflow::from_path(&p)
            {
                panic!("{}:\n{d}", p.display());
            }
        }
    }
}

fn dag_yaml(needs: &[Vec<usize>]) -> String {
    let mut s = String::from("apiVersion: ckflow/v1\nname: prop\nsteps:\n");
    for (i, n) in needs.iter().enumerate() {
        let list: Vec<String> = n.iter().map(|j| format!("s{j}")).collect();
        s.push_str(&format!(
            "  - {{id: s{i}, tool: noop, needs: [{}]}}\n",
            list.join(", ")
        ));
    }
    s
}

fn random_dag() -> impl Strategy<Value = Vec<Vec<usize>>> {
    (2usize..40).prop_flat_map(|n| {
        proptest::collection::vec(
            proptest::collection::vec(any::<prop::sample::Index>(), 0..4),
            n,
        )
        .prop_map(move |raw| {
            raw.into_iter()
                .enumerate()
                .map(|(i, picks)| {
                    if i == 0 {
                        return Vec::new();
                    }
                    let mut v: Vec<usize> = picks.iter().map(|p| p.index(i)).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                })
                .collect()
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Random DAGs (steps shuffled in the file) always plan to a valid topological order.
    #[test]
    fn random_dags_plan_in_topological_order(needs in random_dag(), seed in any::<u64>()) {
        // Shuffle the file order so that the plan, not the file, provides the order.
        let n = needs.len();
        let mut order: Vec<usize> = (0..n).collect();
        let mut x = seed | 1;
        for i in (1..n).rev() {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            order.swap(i, (x % (i as u64 + 1)) as usize);
        }
        let mut s = String::from("apiVersion: ckflow/v1\nname: prop\nsteps:\n");
        for &i in &order {
            let list: Vec<String> = needs[i].iter().map(|j| format!("s{j}")).collect();
            s.push_str(&format!("  - {{id: s{i}, tool: noop, needs: [{}]}}\n", list.join(", ")));
        }
        let registry = ToolRegistry::builtin();
        let wf = Workflow::from_str_with("p.yaml", &s, &registry).unwrap();
        let plan = Plan::new(Arc::new(wf), &registry);
        let mut position = std::collections::HashMap::new();
        let mut seen = 0;
        for (lvl, level) in plan.main.levels.iter().enumerate() {
            let mut prev = None;
            for &i in level {
                prop_assert!(prev.is_none_or(|p| p < i), "ties keep file order");
                prev = Some(i);
                position.insert(plan.main.steps[i].id().to_owned(), lvl);
                seen += 1;
            }
        }
        prop_assert_eq!(seen, n, "every step is planned once");
        for s in &plan.main.steps {
            for need in &s.step.needs {
                prop_assert!(position[need] < position[s.id()], "{} before {}", need, s.id());
            }
        }
    }

    /// A random DAG with one added back edge reports a cycle, and the cycle is real: each
    /// step in it needs the next one.
    #[test]
    fn back_edges_report_real_cycles(needs in random_dag(), pick in any::<prop::sample::Index>()) {
        let mut needs = needs;
        // Pick a step with needs, walk down its needs to an ancestor, then make the ancestor
        // need the step: a back edge.
        let with_needs: Vec<usize> = (0..needs.len()).filter(|&i| !needs[i].is_empty()).collect();
        prop_assume!(!with_needs.is_empty());
        let top = with_needs[pick.index(with_needs.len())];
        let mut bottom = top;
        while let Some(&n) = needs[bottom].first() { bottom = n; }
        needs[bottom].push(top);
        let text = dag_yaml(&needs);
        let d = Workflow::from_str("p.yaml", &text).unwrap_err().0;
        let cycles: Vec<&ckflow::Diagnostic> = d.iter().filter(|d| d.code == Code::Cycle).collect();
        prop_assert!(!cycles.is_empty(), "{:?}", d);
        for c in cycles {
            let list = c.message.rsplit(": ").next().unwrap();
            let ids: Vec<usize> = list.split(" -> ").map(|s| s[1..].parse().unwrap()).collect();
            prop_assert_eq!(ids.first(), ids.last(), "a cycle closes");
            for w in ids.windows(2) {
                prop_assert!(needs[w[0]].contains(&w[1]), "s{} needs s{} in {}", w[0], w[1], list);
            }
        }
    }
}

fn in_small_stack<F: FnOnce() + Send + 'static>(f: F) {
    // 2 MiB, like a tokio worker: deep inputs must not need a bigger stack.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(f)
        .unwrap()
        .join()
        .expect("no panic, no overflow");
}

/// Truncated, binary, deeply nested and huge inputs give diagnostics, never a panic or a
/// stack overflow.
#[test]
fn hostile_inputs_get_diagnostics() {
    in_small_stack(|| {
        let good = std::fs::read_to_string(fixtures().join("valid/pipeline.yaml")).unwrap();
        // Every prefix on a char boundary: either valid (a prefix may be a whole document)
        // or diagnostics, never a panic.
        for cut in (0..good.len()).filter(|&i| good.is_char_boundary(i)) {
            let _ = Workflow::from_str("t.yaml", &good[..cut]);
        }
        // Binary noise.
        let mut x: u64 = 0x9e3779b97f4a7c15;
        for len in [1usize, 7, 100, 4096, 65536] {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let loaded = ckflow::workflow::load::load_bytes("bin.yaml", &bytes);
            assert!(loaded.is_err(), "random bytes are not a workflow");
        }
        // 10,000 levels, in flow and block style, and inside a valid workflow.
        for deep in [
            "[".repeat(10_000) + &"]".repeat(10_000),
            "{a: ".repeat(10_000) + &"}".repeat(10_000),
            (0..10_000)
                .map(|i| format!("{}- \n", " ".repeat(i * 2)))
                .collect::<String>(),
            (0..10_000)
                .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
                .collect::<String>(),
            format!(
                "apiVersion: ckflow/v1\nname: d\nsteps:\n  - id: a\n    tool: noop\n    with: {{x: {}{}}}\n",
                "[".repeat(10_000),
                "]".repeat(10_000)
            ),
        ] {
            let d = Workflow::from_str("deep.yaml", &deep).unwrap_err().0;
            assert!(
                d.iter()
                    .any(|d| d.code == Code::TooLarge || d.code == Code::Syntax),
                "{:?}",
                d[0]
            );
        }
    });
    // Huge: 50 MB, from a file (the size check comes before anything is parsed).
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    let mut s = String::from("apiVersion: ckflow/v1\nname: big\nsteps:\n");
    let step = "  - {id: sNNNNNNNN, tool: noop, with: {pad: \"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n";
    let mut i = 0u64;
    while s.len() < 50_000_000 {
        s.push_str(&step.replace("NNNNNNNN", &format!("{i:08}")));
        i += 1;
    }
    std::fs::write(&big, &s).unwrap();
    let out = ckflow(dir.path(), &["validate", "--json", "big.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    let d: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(d[0]["code"], "E002");
    // And through the library, from text.
    let d = Workflow::from_str("big.yaml", &s).unwrap_err().0;
    assert_eq!(d[0].code, Code::TooLarge);
}

/// `ckflow plan x | head -1` and friends: a reader that goes away early is not a crash.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let wf = Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/containerize.yaml");
    let wf = wf.to_str().expect("utf-8");
    for args in [
        vec!["plan", wf],
        vec!["graph", wf, "--format", "json"],
        vec!["schema"],
        vec!["tools", "--markdown"],
        vec!["workflows", "show", "containerize"],
    ] {
        // Both ends of a pipe; the read end is closed before ckflow writes.
        let mut fds = [0; 2];
        // SAFETY: pipe(2) fills the two descriptors; each is owned by a File below.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        // SAFETY: fresh descriptors from pipe(2), owned once each.
        let (read, write) = unsafe {
            use std::os::fd::FromRawFd;
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(fds[1]),
            )
        };
        drop(read);
        let out = Command::new(env!("CARGO_BIN_EXE_ckflow"))
            .args(&args)
            .stdout(write)
            .output()
            .expect("ckflow runs");
        let stderr = text(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_ne!(out.status.code(), Some(101), "{args:?}: {stderr}");
    }
}
