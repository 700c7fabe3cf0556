//! Locking that outlives a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Lock `m`, taking it over even if a thread panicked while holding it: every value kept
/// behind these mutexes stays consistent between statements, and a panic in one run or
/// step must not take down the others (or the store's bookkeeping) with it.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
