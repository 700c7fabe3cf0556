//! Planning: a checked [`Workflow`] and a [`ToolRegistry`] become a [`Plan`], the only thing
//! the engine ever sees.
//!
//! The plan is a petgraph DAG of the steps with resolved policies (timeouts, retries,
//! `continue_on_error`, the tool to call) and deterministic topological levels: a step's
//! level is one more than the deepest step it needs, and ties keep file order. `finally`
//! steps form a second, separate DAG that runs after the first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use serde_json::{Value, json};

use crate::tools::{Tool, ToolRegistry};
use crate::workflow::Workflow;
use crate::workflow::duration::parse_duration;
use crate::workflow::model::{Backoff, ErrorClass, Retry, Step};

/// A resolved retry policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included.
    pub max_attempts: u32,
    /// How delays grow.
    pub backoff: Backoff,
    /// The first delay.
    #[serde(with = "millis")]
    pub delay: Duration,
    /// The longest delay.
    #[serde(with = "opt_millis")]
    pub max_delay: Option<Duration>,
    /// Whether delays are randomised (±50 %).
    pub jitter: bool,
    /// The classes that are retried.
    pub on: Vec<ErrorClass>,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed,
            delay: Duration::from_secs(1),
            max_delay: None,
            jitter: false,
            on: default_retry_classes(),
        }
    }
}

/// Classes retried when `on` is not given: all but `cancelled` and `invalid_input` (a
/// cancelled step must stop; wrong arguments stay wrong).
pub fn default_retry_classes() -> Vec<ErrorClass> {
    ErrorClass::ALL
        .into_iter()
        .filter(|c| !matches!(c, ErrorClass::Cancelled | ErrorClass::InvalidInput))
        .collect()
}

impl RetryPolicy {
    fn from_model(r: &Retry) -> RetryPolicy {
        RetryPolicy {
            max_attempts: r.max_attempts.max(1),
            backoff: r.backoff,
            delay: r
                .delay
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or(Duration::from_secs(1)),
            max_delay: r.max_delay.as_deref().and_then(parse_duration),
            jitter: r.jitter,
            on: r.on.clone().unwrap_or_else(default_retry_classes),
        }
    }

    /// The delay before attempt `next` (2 for the first retry), without jitter.
    pub fn delay_before(&self, next: u32) -> Duration {
        let n = next.saturating_sub(2);
        let d = match self.backoff {
            Backoff::Fixed => self.delay,
            Backoff::Exponential => self.delay.saturating_mul(2u32.saturating_pow(n.min(30))),
        };
        match self.max_delay {
            Some(m) => d.min(m),
            None => d,
        }
    }

    /// Whether a failure of `class` is retried by this policy.
    pub fn retries(&self, class: ErrorClass) -> bool {
        class != ErrorClass::Cancelled && self.on.contains(&class)
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

mod opt_millis {
    pub fn serialize<S: serde::Serializer>(
        d: &Option<std::time::Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_u64(d.as_millis() as u64),
            None => s.serialize_none(),
        }
    }
}

/// One step, resolved.
#[derive(Clone)]
pub struct PlanStep {
    /// Position in its section (and node index in its graph).
    pub index: usize,
    /// The step as written.
    pub step: Step,
    /// Indices of the steps it needs (same section).
    pub needs: Vec<usize>,
    /// Indices of the steps that need it.
    pub dependents: Vec<usize>,
    /// Its level: 0 for steps that need nothing.
    pub level: usize,
    /// Its deadline, from the step or the workflow defaults.
    pub timeout: Option<Duration>,
    /// Its retry policy, from the step or the workflow defaults.
    pub retry: RetryPolicy,
    /// Whether its failure is tolerated.
    pub continue_on_error: bool,
    /// The tool it calls.
    pub tool: Arc<dyn Tool>,
}

impl std::fmt::Debug for PlanStep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanStep")
            .field("index", &self.index)
            .field("id", &self.step.id)
            .field("tool", &self.step.tool)
            .field("needs", &self.needs)
            .field("level", &self.level)
            .finish()
    }
}

impl PlanStep {
    /// The step's id.
    pub fn id(&self) -> &str {
        &self.step.id
    }
}

/// One DAG (the main steps, or `finally`) with its levels.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    /// The steps in file order.
    pub steps: Vec<PlanStep>,
    /// Step indices by level; ties in file order.
    pub levels: Vec<Vec<usize>>,
    /// The graph: node weights are step indices; edges go from a step to its dependents.
    pub graph: DiGraph<usize, ()>,
}

/// A planned workflow: what the engine runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The checked workflow it came from.
    pub workflow: Arc<Workflow>,
    /// The main DAG.
    pub main: Dag,
    /// The `finally` DAG.
    pub finally: Dag,
    /// Most steps at once (`concurrency`, default the CPU count).
    pub concurrency: usize,
    /// The run's deadline.
    pub timeout: Option<Duration>,
}

impl Plan {
    /// Plan a checked workflow with the registry it was checked against.
    ///
    /// ```
    /// use std::sync::Arc;
    /// let text = "apiVersion: ckflow/v1\nname: p\nsteps:\n  - {id: b, tool: noop, needs: [a]}\n  - {id: a, tool: noop}\n";
    /// let registry = ckflow::ToolRegistry::builtin();
    /// let wf = ckflow::Workflow::from_str_with("p.yaml", text, &registry).unwrap();
    /// let plan = ckflow::Plan::new(Arc::new(wf), &registry);
    /// let levels: Vec<Vec<&str>> = plan.main.levels.iter()
    ///     .map(|l| l.iter().map(|&i| plan.main.steps[i].id()).collect()).collect();
    /// assert_eq!(levels, vec![vec!["a"], vec!["b"]]);
    /// ```
    pub fn new(workflow: Arc<Workflow>, registry: &ToolRegistry) -> Plan {
        let doc = &workflow.doc;
        let defaults = doc.defaults.clone().unwrap_or_default();
        let main = build_dag(&doc.steps, &defaults, registry);
        let finally = build_dag(&doc.finally, &defaults, registry);
        let concurrency = doc
            .concurrency
            .map(|c| c.max(1) as usize)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            });
        let timeout = doc.timeout.as_deref().and_then(parse_duration);
        Plan {
            workflow,
            main,
            finally,
            concurrency,
            timeout,
        }
    }

    /// The number of steps in both DAGs.
    pub fn len(&self) -> usize {
        self.main.steps.len() + self.finally.steps.len()
    }

    /// Whether the plan has no steps (never true for a checked workflow).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The plan as JSON (`ckflow graph --format json`).
    pub fn to_json(&self) -> Value {
        let dag = |d: &Dag| {
            json!({
                "levels": d.levels.iter().map(|l| l.iter().map(|&i| d.steps[i].id()).collect::<Vec<_>>()).collect::<Vec<_>>(),
                "steps": d.steps.iter().map(|s| json!({
                    "id": s.id(),
                    "tool": s.step.tool,
                    "level": s.level,
                    "needs": s.needs.iter().map(|&n| d.steps[n].id()).collect::<Vec<_>>(),
                    "when": s.step.when,
                })).collect::<Vec<_>>(),
                "edges": d.steps.iter().flat_map(|s| s.needs.iter().map(move |&n| (n, s.index)))
                    .map(|(from, to)| json!([d.steps[from].id(), d.steps[to].id()])).collect::<Vec<_>>(),
            })
        };
        json!({
            "workflow": self.workflow.doc.name,
            "steps": dag(&self.main),
            "finally": dag(&self.finally),
        })
    }

    /// The plan in Graphviz dot.
    pub fn to_dot(&self) -> String {
        let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", self.workflow.doc.name);
        for s in &self.main.steps {
            out.push_str(&format!(
                "  \"{}\" [label=\"{}\\n({})\"];\n",
                s.id(),
                s.id(),
                s.step.tool
            ));
        }
        for s in &self.main.steps {
            for &n in &s.needs {
                out.push_str(&format!(
                    "  \"{}\" -> \"{}\";\n",
                    self.main.steps[n].id(),
                    s.id()
                ));
            }
        }
        if !self.finally.steps.is_empty() {
            out.push_str(
                "  subgraph cluster_finally {\n    label=\"finally\";\n    style=dashed;\n",
            );
            for s in &self.finally.steps {
                out.push_str(&format!(
                    "    \"{}\" [label=\"{}\\n({})\"];\n",
                    s.id(),
                    s.id(),
                    s.step.tool
                ));
            }
            for s in &self.finally.steps {
                for &n in &s.needs {
                    out.push_str(&format!(
                        "    \"{}\" -> \"{}\";\n",
                        self.finally.steps[n].id(),
                        s.id()
                    ));
                }
            }
            out.push_str("  }\n");
        }
        out.push_str("}\n");
        out
    }

    /// The plan as a Mermaid flowchart.
    pub fn to_mermaid(&self) -> String {
        let mut out = String::from("flowchart LR\n");
        let node =
            |s: &PlanStep| format!("{}[\"{} ({})\"]", mermaid_id(s.id()), s.id(), s.step.tool);
        for s in &self.main.steps {
            out.push_str(&format!("  {}\n", node(s)));
        }
        for s in &self.main.steps {
            for &n in &s.needs {
                out.push_str(&format!(
                    "  {} --> {}\n",
                    mermaid_id(self.main.steps[n].id()),
                    mermaid_id(s.id())
                ));
            }
        }
        if !self.finally.steps.is_empty() {
            out.push_str("  subgraph finally\n");
            for s in &self.finally.steps {
                out.push_str(&format!("    {}\n", node(s)));
            }
            for s in &self.finally.steps {
                for &n in &s.needs {
                    out.push_str(&format!(
                        "    {} --> {}\n",
                        mermaid_id(self.finally.steps[n].id()),
                        mermaid_id(s.id())
                    ));
                }
            }
            out.push_str("  end\n");
        }
        out
    }
}

fn mermaid_id(id: &str) -> String {
    // Mermaid ids may not contain `-`; keep them unique by mapping it to `__`.
    format!("s_{}", id.replace('-', "__"))
}

fn build_dag(
    steps: &[Step],
    defaults: &crate::workflow::model::Defaults,
    registry: &ToolRegistry,
) -> Dag {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut graph: DiGraph<usize, ()> = DiGraph::with_capacity(steps.len(), steps.len() * 2);
    let nodes: Vec<NodeIndex> = (0..steps.len()).map(|i| graph.add_node(i)).collect();
    let mut planned: Vec<PlanStep> = Vec::with_capacity(steps.len());
    let default_retry = defaults
        .retry
        .as_ref()
        .map(RetryPolicy::from_model)
        .unwrap_or_default();
    let default_timeout = defaults.timeout.as_deref().and_then(parse_duration);
    for (i, s) in steps.iter().enumerate() {
        let mut needs: Vec<usize> = s
            .needs
            .iter()
            .filter_map(|n| index.get(n.as_str()).copied())
            .collect();
        needs.sort_unstable();
        needs.dedup();
        for &n in &needs {
            graph.add_edge(nodes[n], nodes[i], ());
        }
        let tool = registry
            .tool(&s.tool)
            .expect("a checked workflow names only registered tools");
        planned.push(PlanStep {
            index: i,
            step: s.clone(),
            needs,
            dependents: Vec::new(),
            level: 0,
            timeout: s
                .timeout
                .as_deref()
                .and_then(parse_duration)
                .or(default_timeout),
            retry: s
                .retry
                .as_ref()
                .map(RetryPolicy::from_model)
                .unwrap_or_else(|| default_retry.clone()),
            continue_on_error: s
                .continue_on_error
                .or(defaults.continue_on_error)
                .unwrap_or(false),
            tool,
        });
    }
    for i in 0..planned.len() {
        for n in planned[i].needs.clone() {
            planned[n].dependents.push(i);
        }
    }
    // Levels by Kahn's algorithm; a checked workflow has no cycle, so every step gets one.
    let mut indegree: Vec<usize> = planned.iter().map(|p| p.needs.len()).collect();
    let mut frontier: Vec<usize> = (0..planned.len()).filter(|&i| indegree[i] == 0).collect();
    let mut levels: Vec<Vec<usize>> = Vec::new();
    while !frontier.is_empty() {
        frontier.sort_unstable();
        let mut next = Vec::new();
        for &i in &frontier {
            planned[i].level = levels.len();
            for d in planned[i].dependents.clone() {
                indegree[d] -= 1;
                if indegree[d] == 0 {
                    next.push(d);
                }
            }
        }
        levels.push(std::mem::take(&mut frontier));
        frontier = next;
    }
    Dag {
        steps: planned,
        levels,
        graph,
    }
}
