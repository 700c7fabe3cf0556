//! Scheduler overhead per step: the engine running `noop` steps, whose tool does nothing, so
//! what is measured is the dispatcher (readiness, semaphore, task spawn, completion, events).
//!
//! Criterion times whole runs of N steps (a chain, and the layered DAG of
//! `../shared/bench/gen_dag.py`); `benches/p95.py` turns its samples into per-step
//! percentiles. Run: `cargo bench --bench scheduler && python3 benches/p95.py`.

use std::sync::Arc;

use ckflow::{Engine, Plan, RunOptions, ToolRegistry, Workflow};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn layered(n: usize, width: usize) -> String {
    // The same shape as gen_dag.py's `layered`: each step needs up to 2 of the layer before
    // (deterministic picks instead of random ones).
    let mut s = String::from("apiVersion: ckflow/v1\nname: bench\nsteps:\n");
    for i in 0..n {
        s.push_str(&format!("  - id: s{i}\n    tool: noop\n"));
        if i >= width {
            let layer = i / width;
            let base = (layer - 1) * width;
            let a = base + (i * 7) % width;
            let b = base + (i * 13 + 3) % width;
            if a == b {
                s.push_str(&format!("    needs: [s{a}]\n"));
            } else {
                s.push_str(&format!("    needs: [s{a}, s{b}]\n"));
            }
        }
    }
    s
}

fn chain(n: usize) -> String {
    let mut s =
        String::from("apiVersion: ckflow/v1\nname: bench\nsteps:\n  - {id: s0, tool: noop}\n");
    for i in 1..n {
        s.push_str(&format!(
            "  - {{id: s{i}, tool: noop, needs: [s{}]}}\n",
            i - 1
        ));
    }
    s
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let registry = Arc::new(ToolRegistry::builtin());
    let engine = Engine::new(registry.clone());
    let mut group = c.benchmark_group("scheduler");
    for (shape, n, text) in [
        ("layered", 1000usize, layered(1000, 50)),
        ("chain", 1000, chain(1000)),
    ] {
        let wf = Workflow::from_str_with("bench.yaml", &text, &registry).unwrap();
        let plan = Arc::new(Plan::new(Arc::new(wf), &registry));
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new(shape, n), &plan, |b, plan| {
            b.to_async(&rt).iter(|| {
                let plan = plan.clone();
                let engine = engine.clone();
                async move {
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                    let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
                    let report = engine.run(plan, RunOptions::default(), tx).await;
                    assert_eq!(report.steps.len(), n);
                    drain.await.unwrap();
                }
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(60).measurement_time(std::time::Duration::from_secs(6));
    targets = bench
}
criterion_main!(benches);
