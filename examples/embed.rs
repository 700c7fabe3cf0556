//! Embedding ckflow as a library: register your own [`Tool`] next to the built-ins, check a
//! workflow that calls it, run it, follow the events, and read the report.
//!
//! ```text
//! cargo run --example embed            # exit code: 0 ok, 1 failed
//! cargo run --example embed -- ""      # an empty name: the tool fails, a rule routes it
//! ```

use std::sync::Arc;

use ckflow::engine::{EventKind, RunOptions};
use ckflow::tools::{Progress, ToolFuture};
use ckflow::workflow::model::ErrorClass;
use ckflow::{Engine, Event, Plan, Tool, ToolContext, ToolError, ToolRegistry, Workflow};
use indexmap::IndexMap;
use serde_json::{Value, json};

/// A tool of our own: greets someone, in capitals when asked.
struct Greet;

impl Tool for Greet {
    fn name(&self) -> &str {
        "greet"
    }

    fn description(&self) -> &str {
        "Greets someone by name."
    }

    fn input_schema(&self) -> Value {
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "description": "Who to greet."},
                "shout": {"type": "boolean", "description": "Greet in capitals."}
            }
        })
    }

    fn output_schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {"greeting": {"type": "string", "description": "The greeting."}}
        })
    }

    fn error_codes(&self) -> Vec<(&'static str, &'static str)> {
        vec![("EMPTY_NAME", "The name was empty (class `invalid_input`).")]
    }

    fn call(&self, args: Value, ctx: ToolContext) -> ToolFuture {
        Box::pin(async move {
            let name = args["name"].as_str().unwrap_or_default().to_owned();
            if name.is_empty() {
                return Err(ToolError::new(ErrorClass::InvalidInput, "nobody to greet")
                    .with_code("EMPTY_NAME"));
            }
            // Honour cancellation: a real tool would select! on this while it works.
            if ctx.cancel.is_cancelled() {
                return Err(ToolError::cancelled());
            }
            let mut greeting = format!("hello, {name}");
            if args["shout"].as_bool() == Some(true) {
                greeting = greeting.to_uppercase();
            }
            (ctx.progress)(Progress::Output {
                stream: "stdout",
                line: greeting.clone(),
            });
            Ok(json!({"greeting": greeting}))
        })
    }
}

const WORKFLOW: &str = r#"
apiVersion: ckflow/v1
name: embedded
inputs:
  who: {type: string, default: world}
steps:
  - id: hello
    tool: greet
    with: {name: "{{inputs.who}}"}
  - id: crowd
    tool: greet
    needs: [hello]
    for_each: [ada, grace, linus]
    with: {name: "{{item}}", shout: true}
  - id: summary
    tool: noop
    needs: [hello, crowd]
    with:
      first: "{{default steps.hello.outputs.greeting \"(nobody)\"}}"
      count: "{{len steps.crowd.outputs}}"
on_failure:
  - match: {tool: greet, error: EMPTY_NAME}
    route: {tool: noop, with: {note: "{{failed.step}} had no name"}}
    then: continue
"#;

fn main() {
    let mut registry = ToolRegistry::builtin();
    registry.register(Greet);
    let registry = Arc::new(registry);

    // Check the workflow against the registry that holds our tool.
    let workflow = match Workflow::from_str_with("embedded.yaml", WORKFLOW, &registry) {
        Ok(w) => w,
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{}:{}: {}", d.line, d.column, d.message);
            }
            std::process::exit(2);
        }
    };
    let mut given = IndexMap::new();
    if let Some(who) = std::env::args().nth(1) {
        given.insert("who".to_owned(), Value::String(who));
    }
    let inputs = match workflow.resolve_inputs(&given) {
        Ok(i) => i,
        Err(diags) => {
            for d in &diags.0 {
                eprintln!("{}", d.message);
            }
            std::process::exit(2);
        }
    };
    let plan = Arc::new(Plan::new(Arc::new(workflow), &registry));

    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let report = runtime.block_on(async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Event>();
        // Follow the run as it happens.
        let printer = tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                match event.kind {
                    EventKind::StepOutput {
                        step,
                        instance,
                        line,
                        ..
                    } => match instance {
                        Some(i) => println!("[{step}[{i}]] {line}"),
                        None => println!("[{step}] {line}"),
                    },
                    EventKind::StepRouted { step, rule, .. } => {
                        println!("{step}: routed by {rule}")
                    }
                    EventKind::StepFinished { step, status, .. } => println!("{step}: {status}"),
                    _ => {}
                }
            }
        });
        let report = Engine::new(registry)
            .run(plan, RunOptions::with_inputs(inputs), tx)
            .await;
        let _ = printer.await;
        report
    });
    println!(
        "{}",
        serde_json::to_string_pretty(&report).expect("the report is JSON")
    );
    std::process::exit(report.exit_code());
}
