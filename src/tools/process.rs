//! A child process's whole process group, for tools that run host processes (`shell`,
//! `scan_image`): the child is spawned as a group leader (`process_group(0)`), and the
//! group is killed when the tool is cancelled, times out, or is dropped mid-call, so no
//! grandchild outlives the step.

use std::time::Duration;

use tokio::process::Child;

/// How long a group gets between SIGTERM and SIGKILL.
pub(crate) const TERM_GRACE: Duration = Duration::from_secs(2);

/// A running child's process group; SIGKILLed when dropped unless [`Group::disarm`] or
/// [`Group::terminate`] has dealt with it.
pub(crate) struct Group {
    pgid: libc::pid_t,
}

impl Group {
    /// The group `child` leads (it must have been spawned with `process_group(0)`).
    pub(crate) fn of(child: &Child) -> Group {
        Group {
            pgid: child.id().map_or(0, |id| id as libc::pid_t),
        }
    }

    /// Send `sig` to the whole group.
    pub(crate) fn kill(&self, sig: libc::c_int) {
        if self.pgid > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions; a negative pid addresses
            // the process group, which our child leads (`process_group(0)`).
            unsafe {
                libc::kill(-self.pgid, sig);
            }
        }
    }

    /// SIGKILL what is left of the group (children the leader left behind) and forget it.
    pub(crate) fn kill_rest(&mut self) {
        self.kill(libc::SIGKILL);
        self.pgid = 0;
    }

    /// SIGTERM the group, give the leader [`TERM_GRACE`] to exit, then SIGKILL the group
    /// and reap the leader.
    pub(crate) async fn terminate(&mut self, child: &mut Child) {
        self.kill(libc::SIGTERM);
        let _ = tokio::time::timeout(TERM_GRACE, child.wait()).await;
        self.kill_rest();
        let _ = child.wait().await;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill(libc::SIGKILL);
    }
}
