//! Cluster mutex on the host KV store (reference calls-plugin.md §6.3): a key
//! `mutex_<name>` written atomically only when absent, with an expiry refreshed while
//! held. An in-process mutex serialises lockers of the same node first, so that the KV
//! is only contended across nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, OwnedMutexGuard};

use super::host_api::HostApi;
use super::metrics::Metrics;
use calls_wire::proto::KvSetRequest;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("timed out waiting for lock {0}")]
    Timeout(String),
    #[error(transparent)]
    Host(#[from] super::host_api::HostError),
}

#[derive(Clone, Copy, Debug)]
pub struct LockConfig {
    pub ttl: Duration,
    pub refresh: Duration,
    pub poll: Duration,
    pub timeout: Duration,
}

#[derive(Clone)]
pub struct Mutexes {
    host: HostApi,
    metrics: Metrics,
    local: Arc<parking_lot::Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// Held lock; dropping it stops the refresher and deletes the KV key.
pub struct Guard {
    local: Option<OwnedMutexGuard<()>>,
    key: String,
    host: HostApi,
    refresher: tokio::task::JoinHandle<()>,
    metrics: Metrics,
    group: &'static str,
    since: Instant,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.refresher.abort();
        self.metrics
            .mutex_locked_time
            .with_label_values(&[self.group])
            .observe(self.since.elapsed().as_secs_f64());
        let host = self.host.clone();
        let key = std::mem::take(&mut self.key);
        let local = self.local.take();
        // Same-node waiters are let in only once the key is gone, so they do not spin on
        // it. Deleting may fail (host gone); the expiry frees the key then.
        tokio::spawn(async move {
            let _ = host.kv_delete(&key).await;
            drop(local);
        });
    }
}

const LOCKED: &[u8] = &[1];

impl Mutexes {
    pub fn new(host: HostApi, metrics: Metrics) -> Mutexes {
        Mutexes {
            host,
            metrics,
            local: Default::default(),
        }
    }

    pub async fn lock(
        &self,
        name: &str,
        group: &'static str,
        cfg: LockConfig,
    ) -> Result<Guard, LockError> {
        let start = Instant::now();
        let deadline = start + cfg.timeout;
        let local = self
            .local
            .lock()
            .entry(name.to_string())
            .or_default()
            .clone();
        let local = tokio::time::timeout_at(deadline.into(), local.lock_owned())
            .await
            .map_err(|_| LockError::Timeout(name.to_string()))?;
        let key = format!("mutex_{name}");
        let ttl = cfg.ttl.as_secs().max(1) as i64;
        let mut attempt: u32 = 0;
        loop {
            let written = self
                .host
                .kv_set(KvSetRequest {
                    key: key.clone(),
                    value: LOCKED.to_vec(),
                    atomic: true,
                    old_value: vec![],
                    old_value_is_nil: true,
                    expire_in_seconds: ttl,
                })
                .await?;
            if written {
                break;
            }
            attempt += 1;
            self.metrics
                .mutex_lock_retries
                .with_label_values(&[group])
                .inc();
            let poll = (cfg.poll * attempt).min(Duration::from_secs(1));
            let jitter = poll.mul_f64(rand::random::<f64>());
            if Instant::now() + poll + jitter > deadline {
                return Err(LockError::Timeout(name.to_string()));
            }
            tokio::time::sleep(poll + jitter).await;
        }
        self.metrics
            .mutex_grab_time
            .with_label_values(&[group])
            .observe(start.elapsed().as_secs_f64());
        let host = self.host.clone();
        let refresh_key = key.clone();
        let refresher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(cfg.refresh);
            tick.tick().await;
            loop {
                tick.tick().await;
                let r = host
                    .kv_set(KvSetRequest {
                        key: refresh_key.clone(),
                        value: LOCKED.to_vec(),
                        atomic: true,
                        old_value: LOCKED.to_vec(),
                        old_value_is_nil: false,
                        expire_in_seconds: ttl,
                    })
                    .await;
                if !matches!(r, Ok(true)) {
                    tracing::warn!(key = %refresh_key, "failed to refresh cluster mutex");
                }
            }
        });
        Ok(Guard {
            local: Some(local),
            key,
            host: self.host.clone(),
            refresher,
            metrics: self.metrics.clone(),
            group,
            since: Instant::now(),
        })
    }
}
