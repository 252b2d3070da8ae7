//! What stands between an unauthenticated client and the host's password hashing:
//! each argon2 run takes ~20 ms of a core and 19 MiB at once, so a login flood could
//! keep the cores busy and the memory growing (256 wrong logins from 64 connections
//! took the host from 51 to 248 MB). As Mattermost: logins are rate-limited per
//! source address (its `/login` limiter: 5/s, burst 10), and a user with
//! `MAX_LOGIN_ATTEMPTS` failures in a row is locked out (here for `LOCKOUT`, as
//! the host has no password reset); the failures are counted in the users table, so
//! that every node of a cluster counts the same ones. Hashing itself runs on the
//! blocking pool, at most one per core at a time; a login that cannot get a turn in
//! `HASH_WAIT` is refused as busy.

use std::net::IpAddr;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::store::{HostStore, StoreError};

use calls_service::rate::Buckets;

/// Mattermost's `ServiceSettings.MaximumLoginAttempts` default.
pub const MAX_LOGIN_ATTEMPTS: u32 = 10;
pub const LOCKOUT: Duration = Duration::from_secs(5 * 60);
const HASH_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum LoginRefused {
    #[error("limit exceeded")]
    RateLimited,
    #[error("too many failed login attempts")]
    LockedOut,
    #[error("the server is busy, try again")]
    Busy,
}

/// A login attempt not let through: refused, or the count could not be kept.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    #[error(transparent)]
    Refused(#[from] LoginRefused),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Logins {
    per_address: Option<Buckets<IpAddr>>,
    hashing: Semaphore,
}

impl Logins {
    /// `per_sec` logins a second per source address, burst twice that; 0 = no limit
    /// (a load test logs in hundreds of users from one address).
    pub fn new(per_sec: f64) -> Logins {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Logins {
            per_address: (per_sec > 0.0).then(|| Buckets::new(per_sec, 2.0 * per_sec)),
            hashing: Semaphore::new(cores),
        }
    }

    /// Before anything is looked up or hashed for a login from `addr`.
    pub fn admit(&self, addr: IpAddr) -> Result<(), LoginRefused> {
        match &self.per_address {
            Some(b) if !b.allow(&addr) => Err(LoginRefused::RateLimited),
            _ => Ok(()),
        }
    }

    /// Before the password of `user_id` is checked: the attempt counts as a failure
    /// until `succeeded` says otherwise, so that concurrent guesses (each waiting for
    /// its hash) cannot all pass the check.
    pub async fn attempt(&self, store: &HostStore, user_id: &str) -> Result<(), LoginError> {
        let max = MAX_LOGIN_ATTEMPTS as i32;
        if store
            .login_attempt(user_id, max, LOCKOUT.as_millis() as i64)
            .await?
        {
            Ok(())
        } else {
            Err(LoginError::Refused(LoginRefused::LockedOut))
        }
    }

    /// The password was right: the count starts again.
    pub async fn succeeded(&self, store: &HostStore, user_id: &str) -> Result<(), LoginError> {
        Ok(store.login_succeeded(user_id).await?)
    }

    /// Runs an argon2 job (verify or hash) with a core of its own.
    pub async fn hash<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, LoginRefused> {
        let _turn = tokio::time::timeout(HASH_WAIT, self.hashing.acquire())
            .await
            .map_err(|_| LoginRefused::Busy)?
            .map_err(|_| LoginRefused::Busy)?;
        tokio::task::spawn_blocking(job)
            .await
            .map_err(|_| LoginRefused::Busy)
    }
}

/// Large blocks (argon2's 19 MiB) are mapped and unmapped on their own instead of
/// being carved from the heap, which glibc keeps after a burst: memory goes back to
/// the system as soon as each hash is done. Without this, glibc's threshold follows
/// the sizes freed and a login burst left the host 170 MB bigger for good.
#[allow(unsafe_code)]
pub fn return_large_blocks_to_the_system() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called once at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_gets_its_burst_then_its_rate() {
        let l = Logins::new(5.0);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let allowed = (0..30).filter(|_| l.admit(a).is_ok()).count();
        assert!((10..=11).contains(&allowed), "{allowed}");
        assert!(l.admit("192.0.2.2".parse().unwrap()).is_ok());
        assert!(Logins::new(0.0).admit(a).is_ok());
    }
}
