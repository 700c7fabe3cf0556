//! ckflow: a declarative workflow engine.
//!
//! A workflow file is loaded with positions ([`workflow::load`]), checked against the JSON
//! Schema and the semantic rules ([`Workflow::from_path`], [`Workflow::from_str`]), planned
//! into a DAG ([`Plan`]) and run by the [`engine`], which calls tools from a
//! [`ToolRegistry`] and emits [`engine::Event`]s that reporters consume.

pub mod cli;
pub mod engine;
mod hash;
pub mod mcp;
pub mod plan;
pub mod report;
pub mod runner;
pub mod store;
mod sync;
pub mod template;
pub mod tools;
pub mod workflow;

pub use engine::{Engine, Event, RunOptions};
pub use plan::Plan;
pub use report::RunReport;
pub use tools::{Tool, ToolContext, ToolError, ToolRegistry};
pub use workflow::{Diagnostic, Diagnostics, Workflow};
