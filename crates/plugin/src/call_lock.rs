//! The call lock: one writer of a channel's call state at a time, across every node
//! of the cluster (upstream's `mutex_call`). Every change to a call loads its state
//! under this lock, writes it, and only then publishes.

use std::time::Duration;

use super::mutex::{Guard, LockConfig, LockError, Mutexes};

/// The per-call lock: TTL 4 s, refresh 1 s, poll 50 ms, acquire timeout 10 s.
const CALL_LOCK: LockConfig = LockConfig {
    ttl: Duration::from_secs(4),
    refresh: Duration::from_secs(1),
    poll: Duration::from_millis(50),
    timeout: Duration::from_secs(10),
};

pub struct CallLocks(Mutexes);

impl CallLocks {
    pub fn new(mutexes: Mutexes) -> CallLocks {
        CallLocks(mutexes)
    }

    /// The cluster mutexes the call locks are made of (for the plugin's other locks).
    pub fn mutexes(&self) -> &Mutexes {
        &self.0
    }

    /// Holds the lock of `channel_id`'s call until the guard drops.
    pub async fn lock(&self, channel_id: &str) -> Result<Guard, LockError> {
        self.0
            .lock(&format!("call_{channel_id}"), "mutex_call", CALL_LOCK)
            .await
    }
}
