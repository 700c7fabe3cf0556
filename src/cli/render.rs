//! Rendering diagnostics for people: a source snippet with a caret (miette), or JSON.

use miette::{
    GraphicalReportHandler, GraphicalTheme, LabeledSpan, MietteDiagnostic, NamedSource, Severity,
};

use crate::workflow::Diagnostic;

/// At most this many diagnostics are drawn with snippets; the rest are summed up (all of
/// them are in `--json`).
pub const MAX_RENDERED: usize = 50;

/// Render diagnostics with source snippets. `color` picks the themed or plain output;
/// tests and pipes get plain Unicode so snapshots stay stable.
pub fn diagnostics(diags: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_context_lines(1);
    let mut out = String::new();
    for d in diags.iter().take(MAX_RENDERED) {
        let mut md = MietteDiagnostic::new(d.message.clone())
            .with_code(format!("{}/{}", d.code, d.code.slug()))
            .with_severity(Severity::Error);
        if let Some(h) = &d.help {
            md = md.with_help(h.clone());
        }
        let rendered = match &d.source {
            Some(src) if d.line > 0 && d.offset <= src.text.len() => {
                let end = (d.offset + d.len.max(1)).min(src.text.len());
                let label = if d.path.is_empty() {
                    "here".to_owned()
                } else {
                    d.path.clone()
                };
                let len = end.saturating_sub(d.offset);
                md = md.with_label(LabeledSpan::at(d.offset..d.offset + len, label));
                let report = miette::Report::new(md)
                    .with_source_code(NamedSource::new(&src.name, src.text.clone()));
                let mut s = String::new();
                let _ = handler.render_report(&mut s, report.as_ref());
                s
            }
            _ => {
                let report = miette::Report::new(md);
                let mut s = String::new();
                let _ = handler.render_report(&mut s, report.as_ref());
                format!("{}:\n{s}", d.file)
            }
        };
        out.push_str(&rendered);
        if !rendered.ends_with('\n') {
            out.push('\n');
        }
    }
    if diags.len() > MAX_RENDERED {
        out.push_str(&format!(
            "… and {} more problem{} not shown here (`--json` lists them all)\n",
            diags.len() - MAX_RENDERED,
            if diags.len() - MAX_RENDERED == 1 {
                ""
            } else {
                "s"
            }
        ));
    }
    out
}

/// Diagnostics as the JSON array of `--json` (and MCP).
pub fn diagnostics_json(diags: &[Diagnostic]) -> serde_json::Value {
    serde_json::to_value(diags).unwrap_or_default()
}
