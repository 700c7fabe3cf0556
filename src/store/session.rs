//! Sessions (SPEC §4): a workspace folder, labels, a history of runs, tool calls and errors,
//! and the shared context that later runs read as `{{context.KEY}}`. All of it lives in the
//! shared index, so every process of the project sees the same sessions.
//!
//! Time is passed in (`now_ms`), never read here, so TTLs are testable without waiting:
//! context entries expire `ttl` after they are written (default one hour), sessions after
//! `idle_ttl` without use (default 24 hours). Expired context is invisible at once; the
//! [`Store::sweep`] removes it for good, together with idle sessions and their workspaces.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Map, Value};

use super::error::{Result, StoreError};
use super::index::{Index, session_key};
use super::lock::live_owner;
use super::model::{ContextEntry, HistoryEntry, RunStatus, RunSummary, Session, SweepReport};
use super::{
    DEFAULT_CONTEXT_TTL, DEFAULT_SESSION_IDLE_TTL, HISTORY_CAP, Store, new_id, validate_id,
};

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

impl Store {
    /// A session's directory, `<state>/sessions/<id>` (its workspace is `workspace/` in it).
    fn session_dir(&self, id: &str) -> std::path::PathBuf {
        self.dir().join("sessions").join(id)
    }

    /// The session `id`, created if missing (a new id when `None`), with its workspace
    /// folder. An existing session is touched (its idle clock restarts), gets `labels` merged
    /// over its own and, if given, the new `idle_ttl`. A session that is idle past its TTL
    /// but not swept yet is swept now and created afresh: expired means gone.
    pub fn ensure_session(
        &self,
        id: Option<&str>,
        labels: BTreeMap<String, String>,
        idle_ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<Session> {
        let id = match id {
            Some(id) => id.to_owned(),
            None => new_id(now_ms),
        };
        validate_id("session", &id)?;
        let workspace = self.session_dir(&id).join("workspace");
        let (session, expired) =
            self.visit(|ix| ensure_in(ix, &id, labels, idle_ttl, now_ms, workspace))?;
        self.after_ensure(&session, expired)?;
        Ok(session)
    }

    /// The file-system side of [`ensure_in`]: a re-created session's old folder goes, its
    /// workspace exists.
    pub(crate) fn after_ensure(&self, session: &Session, expired: bool) -> Result<()> {
        if expired {
            remove_dir(&self.session_dir(&session.id));
        }
        std::fs::create_dir_all(&session.workspace)
            .map_err(StoreError::io("create", &session.workspace))
    }

    /// A session's workspace folder.
    pub(crate) fn session_workspace(&self, id: &str) -> std::path::PathBuf {
        self.session_dir(id).join("workspace")
    }

    /// Mark a session as used now (its idle clock restarts).
    pub fn touch_session(&self, id: &str, now_ms: u64) -> Result<Session> {
        validate_id("session", id)?;
        self.visit(|ix| {
            let sessions = ix.sessions.clone();
            let Some(mut s) = ix.get::<Session>(&sessions, id.as_bytes())? else {
                return Err(StoreError::SessionNotFound(id.to_owned()));
            };
            s.last_active_ms = s.last_active_ms.max(now_ms);
            ix.put(&sessions, id.as_bytes(), &s)?;
            Ok(s)
        })
    }

    /// A session, if it exists (expired but not yet swept ones included: check
    /// [`Session::is_expired`]).
    pub fn get_session(&self, id: &str) -> Result<Option<Session>> {
        validate_id("session", id)?;
        self.visit(|ix| ix.get(&ix.sessions, id.as_bytes()))
    }

    /// All sessions, by id.
    pub fn list_sessions(&self) -> Result<Vec<Session>> {
        self.visit(|ix| {
            Ok(ix
                .scan(&ix.sessions, b"")?
                .into_iter()
                .map(|(_, s)| s)
                .collect())
        })
    }

    /// Remove a session: its row, history, context and workspace. Whether it existed.
    pub fn remove_session(&self, id: &str) -> Result<bool> {
        validate_id("session", id)?;
        let existed = self.visit(|ix| remove_session_rows(ix, id))?;
        remove_dir(&self.session_dir(id));
        Ok(existed)
    }

    /// Add an entry to a session's history (pass redacted text). Only the newest
    /// [`HISTORY_CAP`] entries are kept.
    pub fn record_history(&self, session: &str, entry: &HistoryEntry) -> Result<()> {
        validate_id("session", session)?;
        self.visit(|ix| history_in(ix, session, entry))
    }

    /// Record something done in a session outside any run (a tool called directly over
    /// MCP): in one index visit, the session is touched (its idle clock restarts at
    /// `entry.at_ms`) and `entry` is added to its history (pass redacted text; the
    /// [`HISTORY_CAP`] applies). A session that does not exist, or that is idle past its TTL
    /// (a sweep would remove it, so it is not revived), is
    /// [`StoreError::SessionNotFound`].
    pub fn record_activity(&self, session: &str, entry: &HistoryEntry) -> Result<()> {
        validate_id("session", session)?;
        self.visit(|ix| {
            let sessions = ix.sessions.clone();
            let Some(mut s) = ix
                .get::<Session>(&sessions, session.as_bytes())?
                .filter(|s| !s.is_expired(entry.at_ms))
            else {
                return Err(StoreError::SessionNotFound(session.to_owned()));
            };
            s.last_active_ms = s.last_active_ms.max(entry.at_ms);
            ix.put(&sessions, session.as_bytes(), &s)?;
            history_in(ix, session, entry)
        })
    }

    /// A session's history, oldest first; with `limit`, only the newest that many.
    pub fn history(&self, session: &str, limit: Option<usize>) -> Result<Vec<HistoryEntry>> {
        validate_id("session", session)?;
        let mut entries: Vec<HistoryEntry> = self.visit(|ix| {
            Ok(ix
                .scan(&ix.history, &session_key(session, b""))?
                .into_iter()
                .map(|(_, e)| e)
                .collect())
        })?;
        if let Some(limit) = limit {
            let skip = entries.len().saturating_sub(limit);
            entries.drain(..skip);
        }
        Ok(entries)
    }

    /// Publish a shared-context entry (`share: true` outputs, the `share_context` tool):
    /// `{{context.KEY}}` in the session's later runs, until `ttl` (default
    /// [`DEFAULT_CONTEXT_TTL`]) has passed. Replaces an entry with the same key; touches the
    /// session.
    pub fn put_context(
        &self,
        session: &str,
        key: &str,
        value: Value,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Result<()> {
        validate_id("session", session)?;
        let entry = ContextEntry {
            key: key.to_owned(),
            value,
            set_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(millis(ttl.unwrap_or(DEFAULT_CONTEXT_TTL))),
        };
        self.visit(|ix| {
            let sessions = ix.sessions.clone();
            let Some(mut s) = ix.get::<Session>(&sessions, session.as_bytes())? else {
                return Err(StoreError::SessionNotFound(session.to_owned()));
            };
            s.last_active_ms = s.last_active_ms.max(now_ms);
            ix.put(&sessions, session.as_bytes(), &s)?;
            let context = ix.context.clone();
            ix.put(&context, &session_key(session, key.as_bytes()), &entry)
        })
    }

    /// A session's unexpired context entries at `now_ms`, as the map templates see under
    /// `context`. Empty for an unknown session.
    pub fn get_context(&self, session: &str, now_ms: u64) -> Result<Map<String, Value>> {
        Ok(self
            .context_entries(session, now_ms)?
            .into_iter()
            .map(|e| (e.key, e.value))
            .collect())
    }

    /// A session's unexpired context entries at `now_ms`, by key, with their times.
    pub fn context_entries(&self, session: &str, now_ms: u64) -> Result<Vec<ContextEntry>> {
        validate_id("session", session)?;
        self.visit(|ix| context_in(ix, session, now_ms))
    }

    /// Remove what has expired at `now_ms`: context entries past their TTL, and sessions idle
    /// past theirs (with their history, context and workspace folder), except sessions with
    /// a run that a live process is running. Run it at startup of long-lived processes and
    /// now and then (the CLI: before each run).
    pub fn sweep(&self, now_ms: u64) -> Result<SweepReport> {
        let report = self.visit(|ix| self.sweep_in(ix, now_ms))?;
        self.after_sweep(&report);
        Ok(report)
    }

    /// The file-system side of [`Store::sweep_in`]: removed sessions' folders go.
    pub(crate) fn after_sweep(&self, report: &SweepReport) {
        for id in &report.sessions_removed {
            remove_dir(&self.session_dir(id));
        }
    }

    /// [`Store::sweep`] within an index visit; the caller calls [`Store::after_sweep`] after
    /// it.
    pub(crate) fn sweep_in(&self, ix: &mut Index, now_ms: u64) -> Result<SweepReport> {
        let mut report = SweepReport::default();
        let context = ix.context.clone();
        let expired: Vec<sled::IVec> = ix
            .scan::<ContextEntry>(&context, b"")?
            .into_iter()
            .filter(|(_, e)| now_ms >= e.expires_at_ms)
            .map(|(k, _)| k)
            .collect();
        for k in expired {
            ix.remove(&context, &k)?;
            report.context_removed += 1;
        }
        let idle: Vec<String> = ix
            .scan::<Session>(&ix.sessions, b"")?
            .into_iter()
            .filter(|(_, s)| s.is_expired(now_ms))
            .map(|(_, s)| s.id)
            .collect();
        if idle.is_empty() {
            return Ok(report);
        }
        let busy = self.sessions_with_live_runs(ix)?;
        for id in idle {
            if busy.contains(&id) {
                continue;
            }
            report.context_removed += ix.context.scan_prefix(session_key(&id, b"")).count();
            remove_session_rows(ix, &id)?;
            report.sessions_removed.push(id);
        }
        Ok(report)
    }

    /// The sessions that have a run a live process owns.
    fn sessions_with_live_runs(&self, ix: &Index) -> Result<std::collections::HashSet<String>> {
        let mut busy = std::collections::HashSet::new();
        for (_, s) in ix.scan::<RunSummary>(&ix.runs, b"")? {
            if s.status == RunStatus::Running
                && let Some(session) = s.session
                && live_owner(&self.run_dir(&s.id).join("owner")).is_some()
            {
                busy.insert(session);
            }
        }
        Ok(busy)
    }
}

/// [`Store::ensure_session`] within an index visit: the session and whether an expired one
/// was replaced (the caller then calls [`Store::after_ensure`]).
pub(crate) fn ensure_in(
    ix: &mut Index,
    id: &str,
    labels: BTreeMap<String, String>,
    idle_ttl: Option<Duration>,
    now_ms: u64,
    workspace: std::path::PathBuf,
) -> Result<(Session, bool)> {
    let sessions = ix.sessions.clone();
    let existing: Option<Session> = ix.get(&sessions, id.as_bytes())?;
    let (mut session, expired) = match existing {
        Some(s) if !s.is_expired(now_ms) => (s, false),
        other => {
            let expired = other.is_some();
            if expired {
                remove_session_rows(ix, id)?;
            }
            let s = Session {
                id: id.to_owned(),
                labels: BTreeMap::new(),
                created_at_ms: now_ms,
                last_active_ms: now_ms,
                idle_ttl_ms: millis(DEFAULT_SESSION_IDLE_TTL),
                workspace,
            };
            (s, expired)
        }
    };
    session.labels.extend(labels);
    session.last_active_ms = session.last_active_ms.max(now_ms);
    if let Some(ttl) = idle_ttl {
        session.idle_ttl_ms = millis(ttl);
    }
    ix.put(&sessions, id.as_bytes(), &session)?;
    Ok((session, expired))
}

/// [`Store::record_history`] within an index visit.
pub(crate) fn history_in(ix: &mut Index, session: &str, entry: &HistoryEntry) -> Result<()> {
    if !ix
        .sessions
        .contains_key(session.as_bytes())
        .map_err(StoreError::db(&ix.path))?
    {
        return Err(StoreError::SessionNotFound(session.to_owned()));
    }
    let seq = ix.db.generate_id().map_err(StoreError::db(&ix.path))?;
    let mut rest = entry.at_ms.to_be_bytes().to_vec();
    rest.extend_from_slice(&seq.to_be_bytes());
    let history = ix.history.clone();
    ix.put(&history, &session_key(session, &rest), entry)?;
    // Drop the oldest beyond the cap.
    let prefix = session_key(session, b"");
    let old: Vec<sled::IVec> = history
        .scan_prefix(&prefix)
        .keys()
        .rev()
        .skip(HISTORY_CAP)
        .collect::<std::result::Result<_, _>>()
        .map_err(StoreError::db(&ix.path))?;
    for k in old {
        ix.remove(&history, &k)?;
    }
    Ok(())
}

/// [`Store::context_entries`] within an index visit.
pub(crate) fn context_in(ix: &mut Index, session: &str, now_ms: u64) -> Result<Vec<ContextEntry>> {
    Ok(ix
        .scan::<ContextEntry>(&ix.context, &session_key(session, b""))?
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| now_ms < e.expires_at_ms)
        .collect())
}

/// Remove a session's row, history and context from the index. Whether the row existed.
fn remove_session_rows(ix: &mut Index, id: &str) -> Result<bool> {
    let prefix = session_key(id, b"");
    for tree in [ix.history.clone(), ix.context.clone()] {
        let keys: Vec<sled::IVec> = tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<std::result::Result<_, _>>()
            .map_err(StoreError::db(&ix.path))?;
        for k in keys {
            ix.remove(&tree, &k)?;
        }
    }
    let sessions = ix.sessions.clone();
    ix.remove(&sessions, id.as_bytes())
}

/// Remove a directory tree, logging (not failing) when that does not work: the index no
/// longer points at it.
fn remove_dir(dir: &std::path::Path) {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "could not remove a session's folder")
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::store::HistoryKind;

    const HOUR_MS: u64 = 3_600_000;

    fn tool_call(at_ms: u64, status: &str) -> HistoryEntry {
        HistoryEntry {
            at_ms,
            kind: HistoryKind::ToolCall,
            run_id: None,
            name: Some("validate_dockerfile".to_owned()),
            message: None,
            data: json!({"status": status, "duration_ms": 3, "arguments": ["content"]}),
        }
    }

    #[test]
    fn activity_touches_the_session_and_adds_history() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t0 = 1_776_944_712_000;
        store
            .ensure_session(Some("s1"), BTreeMap::new(), None, t0)
            .unwrap();
        store
            .record_activity("s1", &tool_call(t0 + HOUR_MS, "succeeded"))
            .unwrap();
        store
            .record_activity("s1", &tool_call(t0 + 2 * HOUR_MS, "failed"))
            .unwrap();

        let s = store.get_session("s1").unwrap().unwrap();
        assert_eq!(
            s.last_active_ms,
            t0 + 2 * HOUR_MS,
            "the idle clock restarts"
        );
        let h = store.history("s1", None).unwrap();
        assert_eq!(h.len(), 2);
        assert!(h.iter().all(|e| e.kind == HistoryKind::ToolCall));
        assert_eq!(h[0].data["status"], "succeeded");
        assert_eq!(h[1].data["status"], "failed");
        // The entry reads back as written (`tool_call` on the wire).
        assert_eq!(serde_json::to_value(&h[1]).unwrap()["kind"], "tool_call");
        assert_eq!(h[1], tool_call(t0 + 2 * HOUR_MS, "failed"));
        // An earlier timestamp never moves the clock back.
        store
            .record_activity("s1", &tool_call(t0, "succeeded"))
            .unwrap();
        let s = store.get_session("s1").unwrap().unwrap();
        assert_eq!(s.last_active_ms, t0 + 2 * HOUR_MS);
    }

    #[test]
    fn activity_needs_a_live_session() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let t0 = 1_776_944_712_000;
        assert!(matches!(
            store.record_activity("nope", &tool_call(t0, "succeeded")),
            Err(StoreError::SessionNotFound(id)) if id == "nope"
        ));
        assert!(store.get_session("nope").unwrap().is_none(), "not created");
        assert!(matches!(
            store.record_activity("../x", &tool_call(t0, "succeeded")),
            Err(StoreError::InvalidId { .. })
        ));
        // Idle past its TTL: gone, even before a sweep; not revived.
        store
            .ensure_session(
                Some("old"),
                BTreeMap::new(),
                Some(Duration::from_secs(60)),
                t0,
            )
            .unwrap();
        assert!(matches!(
            store.record_activity("old", &tool_call(t0 + HOUR_MS, "succeeded")),
            Err(StoreError::SessionNotFound(_))
        ));
        assert!(store.history("old", None).unwrap().is_empty());
        assert_eq!(
            store.get_session("old").unwrap().unwrap().last_active_ms,
            t0
        );
    }
}
