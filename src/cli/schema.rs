//! `ckflow schema`: print the workflow JSON Schema that editors and validators use.

/// Run it.
pub fn run() -> i32 {
    out!("{}", crate::workflow::schema::SCHEMA_TEXT);
    if !crate::workflow::schema::SCHEMA_TEXT.ends_with('\n') {
        outln!();
    }
    super::exit::OK
}
