//! Client authentication of rtcd and of the job service (reference rtcd.md §1.3;
//! calls-offloader has the same scheme): registered clients (id + key, the key
//! stored hashed in `store.data_source`), the admin secret key (constant-time
//! compare), bearer tokens from `/login` (one per client, expiring), and the shared
//! rate limit of 12 × CPUs per second, burst 1, waiting at most 10 s. On top of
//! upstream: after `MAX_FAILURES` wrong keys for one client id from one source
//! address, that pair is refused for `FAILURE_BACKOFF` without verifying anything,
//! so an unauthenticated flood neither keeps a core busy with argon2 nor uses up the
//! shared limit the real plugin needs (which logs in from its own address).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use parking_lot::Mutex;
use subtle::ConstantTimeEq;

/// Minimum key length for registration.
pub const MIN_KEY_LEN: usize = 32;
const RATE_WAIT: Duration = Duration::from_secs(10);
pub const MAX_FAILURES: u32 = 5;
pub const FAILURE_BACKOFF: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AuthError {
    #[error("authentication failed")]
    Failed,
    #[error("registration failed: key not long enough")]
    KeyTooShort,
    #[error("registration failed: error: empty key")]
    EmptyId,
    #[error("registration failed: already registered")]
    AlreadyRegistered,
    #[error("error: not found")]
    NotFound,
    #[error("request rate limit exceeded")]
    RateLimited,
    #[error("store: {0}")]
    Store(String),
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq)]
pub enum Identity {
    Admin,
    Client(String),
}

impl Identity {
    /// The client id; "" for the admin (as upstream).
    pub fn client_id(&self) -> &str {
        match self {
            Identity::Admin => "",
            Identity::Client(id) => id,
        }
    }
}

pub struct Auth {
    admin_key: Option<String>,
    store_file: PathBuf,
    clients: Mutex<HashMap<String, String>>,
    tokens: Mutex<HashMap<String, (String, Instant)>>,
    token_ttl: Duration,
    next_slot: tokio::sync::Mutex<Instant>,
    interval: Duration,
    /// Wrong keys per (client id, source address): count and time of the last.
    failures: Mutex<HashMap<(String, IpAddr), (u32, Instant)>>,
}

impl Auth {
    /// Opens (creating) the store directory (mode 0700; the file is 0600).
    pub fn open(
        data_source: &Path,
        admin_key: Option<String>,
        token_ttl: Duration,
    ) -> Result<Auth, AuthError> {
        let store = |e: std::io::Error| AuthError::Store(e.to_string());
        std::fs::create_dir_all(data_source).map_err(store)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(data_source, std::fs::Permissions::from_mode(0o700))
                .map_err(store)?;
        }
        let store_file = data_source.join("clients.json");
        let clients = match std::fs::read(&store_file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| AuthError::Store(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => return Err(store(e)),
        };
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        Ok(Auth {
            admin_key: admin_key.filter(|k| !k.is_empty()),
            store_file,
            clients: Mutex::new(clients),
            tokens: Mutex::new(HashMap::new()),
            token_ttl,
            next_slot: tokio::sync::Mutex::new(Instant::now()),
            interval: Duration::from_secs(1) / (12 * cpus),
            failures: Mutex::new(HashMap::new()),
        })
    }

    /// Waits for the shared rate limit (burst 1); fails if that would take over 10 s.
    pub async fn rate_limit(&self) -> Result<(), AuthError> {
        let slot = {
            let mut next = self.next_slot.lock().await;
            let now = Instant::now();
            let slot = (*next).max(now);
            if slot.duration_since(now) > RATE_WAIT {
                return Err(AuthError::RateLimited);
            }
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
        Ok(())
    }

    fn is_admin_key(&self, key: &str) -> bool {
        self.admin_key
            .as_deref()
            .is_some_and(|a| bool::from(a.as_bytes().ct_eq(key.as_bytes())))
    }

    /// Verifies `key` against `hash` for `client_id` from `from`, unless that pair
    /// failed too often lately (then refused without hashing).
    async fn verify_from(
        &self,
        client_id: &str,
        from: IpAddr,
        hash: &str,
        key: &str,
    ) -> Result<(), AuthError> {
        let pair = (client_id.to_string(), from);
        {
            // The attempt counts as a failure until it succeeds: reserved before the
            // wait, so that concurrent attempts cannot all pass the check.
            let mut failures = self.failures.lock();
            let e = failures.entry(pair.clone()).or_insert((0, Instant::now()));
            if e.1.elapsed() >= FAILURE_BACKOFF {
                e.0 = 0;
            }
            if e.0 >= MAX_FAILURES {
                return Err(AuthError::RateLimited);
            }
            e.0 += 1;
            e.1 = Instant::now();
            if failures.len() > super::rate::MAX_KEYS {
                failures.retain(|_, (_, last)| last.elapsed() < FAILURE_BACKOFF);
            }
        }
        self.rate_limit().await?;
        if verify(hash, key) {
            self.failures.lock().remove(&pair);
            Ok(())
        } else {
            Err(AuthError::Failed)
        }
    }

    /// Basic credentials: the admin key (any user name), or a registered client.
    pub async fn basic(
        &self,
        client_id: &str,
        key: &str,
        from: IpAddr,
    ) -> Result<Identity, AuthError> {
        if self.is_admin_key(key) {
            return Ok(Identity::Admin);
        }
        if client_id.is_empty() {
            return Err(AuthError::Failed);
        }
        // Unknown ids fail before the rate limit, as upstream.
        let hash = self.clients.lock().get(client_id).cloned();
        let Some(hash) = hash else {
            return Err(AuthError::Failed);
        };
        self.verify_from(client_id, from, &hash, key).await?;
        Ok(Identity::Client(client_id.to_string()))
    }

    pub fn bearer(&self, token: &str) -> Result<Identity, AuthError> {
        let mut tokens = self.tokens.lock();
        match tokens.get(token) {
            Some((id, exp)) if *exp > Instant::now() => Ok(Identity::Client(id.clone())),
            Some(_) => {
                tokens.remove(token);
                Err(AuthError::Failed)
            }
            None => Err(AuthError::Failed),
        }
    }

    /// `/login`: a new 32-char token, replacing the client's previous one.
    pub async fn login(
        &self,
        client_id: &str,
        key: &str,
        from: IpAddr,
    ) -> Result<String, AuthError> {
        let hash = self.clients.lock().get(client_id).cloned();
        let Some(hash) = hash else {
            return Err(AuthError::NotFound);
        };
        self.verify_from(client_id, from, &hash, key).await?;
        let token = calls_wire::ids::random_token();
        let mut tokens = self.tokens.lock();
        tokens.retain(|_, (id, _)| id != client_id);
        tokens.insert(
            token.clone(),
            (client_id.to_string(), Instant::now() + self.token_ttl),
        );
        Ok(token)
    }

    pub fn is_registered(&self, client_id: &str) -> bool {
        self.clients.lock().contains_key(client_id)
    }

    pub async fn register(&self, client_id: &str, key: &str) -> Result<(), AuthError> {
        if client_id.is_empty() {
            return Err(AuthError::EmptyId);
        }
        if key.len() < MIN_KEY_LEN {
            return Err(AuthError::KeyTooShort);
        }
        self.rate_limit().await?;
        let hash = hash(key)?;
        let mut clients = self.clients.lock();
        if clients.contains_key(client_id) {
            return Err(AuthError::AlreadyRegistered);
        }
        clients.insert(client_id.to_string(), hash);
        self.save(&clients)
    }

    pub fn unregister(&self, client_id: &str) -> Result<(), AuthError> {
        let mut clients = self.clients.lock();
        if clients.remove(client_id).is_none() {
            return Err(AuthError::NotFound);
        }
        self.tokens.lock().retain(|_, (id, _)| id != client_id);
        self.save(&clients)
    }

    /// Written to a temporary file, synced, then renamed: a crash never leaves half a store.
    fn save(&self, clients: &HashMap<String, String>) -> Result<(), AuthError> {
        use std::io::Write;
        let store = |e: std::io::Error| AuthError::Store(e.to_string());
        let tmp = self.store_file.with_extension("tmp");
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(store)?;
        let body = serde_json::to_vec(clients).map_err(|e| AuthError::Store(e.to_string()))?;
        f.write_all(&body).map_err(store)?;
        f.sync_all().map_err(store)?;
        std::fs::rename(&tmp, &self.store_file).map_err(store)
    }
}

fn hash(key: &str) -> Result<String, AuthError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| AuthError::Store(e.to_string()))?;
    Argon2::default()
        .hash_password(key.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Store(e.to_string()))
}

fn verify(hash: &str, key: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(key.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// Wrong keys for one client from one address: after `MAX_FAILURES`, refused
    /// without verifying, even the right key; another address is not affected.
    #[tokio::test]
    async fn repeated_wrong_keys_from_an_address_are_refused_without_verifying() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(dir.path(), None, Duration::from_secs(60)).unwrap();
        let key = "k".repeat(32);
        auth.register("c1", &key).await.unwrap();
        let attacker: IpAddr = "192.0.2.9".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert_eq!(
                auth.basic("c1", "wrong", attacker).await,
                Err(AuthError::Failed)
            );
        }
        for _ in 0..100 {
            assert_eq!(
                auth.basic("c1", "wrong", attacker).await,
                Err(AuthError::RateLimited)
            );
        }
        assert_eq!(
            auth.login("c1", &key, attacker).await,
            Err(AuthError::RateLimited)
        );
        // The client itself, from its own address, is still served.
        assert_eq!(
            auth.basic("c1", &key, HERE).await,
            Ok(Identity::Client("c1".into()))
        );
    }

    #[tokio::test]
    async fn register_login_basic_bearer_unregister() {
        let dir = tempfile::tempdir().unwrap();
        let auth = Auth::open(
            dir.path(),
            Some("admin-secret".into()),
            Duration::from_secs(60),
        )
        .unwrap();
        let key = "k".repeat(32);
        assert_eq!(auth.register("", &key).await, Err(AuthError::EmptyId));
        assert_eq!(
            auth.register("c1", "short").await,
            Err(AuthError::KeyTooShort)
        );
        auth.register("c1", &key).await.unwrap();
        assert_eq!(
            auth.register("c1", &key).await,
            Err(AuthError::AlreadyRegistered)
        );
        assert_eq!(
            auth.basic("c1", &key, HERE).await,
            Ok(Identity::Client("c1".into()))
        );
        assert_eq!(
            auth.basic("c1", "wrong", HERE).await,
            Err(AuthError::Failed)
        );
        assert_eq!(
            auth.basic("nobody", &key, HERE).await,
            Err(AuthError::Failed)
        );
        assert_eq!(
            auth.basic("anyone", "admin-secret", HERE).await,
            Ok(Identity::Admin)
        );
        let t = auth.login("c1", &key, HERE).await.unwrap();
        assert_eq!(t.len(), 32);
        assert_eq!(auth.bearer(&t), Ok(Identity::Client("c1".into())));
        let t2 = auth.login("c1", &key, HERE).await.unwrap();
        assert_eq!(auth.bearer(&t), Err(AuthError::Failed), "old token evicted");
        // The store survives a restart, hashed.
        let text = std::fs::read_to_string(dir.path().join("clients.json")).unwrap();
        assert!(!text.contains(&key));
        let again = Auth::open(dir.path(), None, Duration::from_secs(60)).unwrap();
        assert!(again.basic("c1", &key, HERE).await.is_ok());
        assert_eq!(
            again.basic("x", "admin-secret", HERE).await,
            Err(AuthError::Failed),
            "admin off"
        );
        auth.unregister("c1").unwrap();
        assert_eq!(auth.bearer(&t2), Err(AuthError::Failed));
        assert_eq!(auth.unregister("c1"), Err(AuthError::NotFound));
    }
}
