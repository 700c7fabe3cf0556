//! The store's one error type. IO, database, corruption and lock-timeout errors are
//! *critical* (STYLE 4: the engine aborts the run on them); the rest describe a request that
//! cannot be served (an unknown run, a run still owned by another process) and are shown to
//! the user as they are.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done ("create", "read", "write", "remove", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The embedded database (sled) failed.
    #[error("the state database {path} failed: {source}")]
    Db {
        /// The database directory.
        path: PathBuf,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// Stored data does not decode or breaks an invariant.
    #[error("the state store is corrupt at {path}: {detail}")]
    Corrupt {
        /// The file or database that holds the bad data.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
    /// Another process held a database for longer than the lock timeout.
    #[error(
        "{what} {path} is locked by another process; gave up after {:.1} s \
         (another ckflow command is holding it: try again, or look for a stuck ckflow process)",
        waited.as_secs_f64()
    )]
    Locked {
        /// What is locked ("the state index", "the run database").
        what: &'static str,
        /// The lock file or database directory.
        path: PathBuf,
        /// How long we tried.
        waited: Duration,
    },
    /// The state directory was written by a newer ckflow.
    #[error(
        "the state directory {path} has format version {found}, but this ckflow supports \
         versions up to {supported}: upgrade ckflow, or point --state-dir elsewhere"
    )]
    NewerFormat {
        /// The state directory.
        path: PathBuf,
        /// The version in its `FORMAT` file.
        found: u32,
        /// The newest version this build reads.
        supported: u32,
    },
    /// No run has this id.
    #[error("no run with id {0:?}")]
    RunNotFound(String),
    /// A run with this id already exists.
    #[error("a run with id {0:?} already exists")]
    RunExists(String),
    /// The run is owned by a live process.
    #[error("run {id} is still running in process {}", pid.map_or_else(|| "(unknown pid)".to_owned(), |p| p.to_string()))]
    RunStillRunning {
        /// The run.
        id: String,
        /// The owner's pid, when it could be read.
        pid: Option<u32>,
    },
    /// No session has this id.
    #[error("no session with id {0:?}")]
    SessionNotFound(String),
    /// An id that cannot name a file (run, session, step ids become file names).
    #[error(
        "invalid {kind} id {id:?}: use 1 to 128 characters from A-Z a-z 0-9 _ - . (not starting with '.')"
    )]
    InvalidId {
        /// "run" or "session".
        kind: &'static str,
        /// The offending id.
        id: String,
    },
}

impl StoreError {
    /// Whether the store itself is broken (IO, database, corruption, a lock that never came
    /// free). The engine aborts on these; the others answer a request that cannot be served.
    pub fn is_critical(&self) -> bool {
        matches!(
            self,
            StoreError::Io { .. }
                | StoreError::Db { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Locked { .. }
                | StoreError::NewerFormat { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }

    pub(crate) fn db(path: impl Into<PathBuf>) -> impl FnOnce(sled::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Db { path, source }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl std::fmt::Display) -> StoreError {
        StoreError::Corrupt {
            path: path.into(),
            detail: detail.to_string(),
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
