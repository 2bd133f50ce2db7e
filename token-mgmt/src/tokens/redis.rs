//! A token cache shared by a fleet through Redis (feature `redis`).

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use async_trait::async_trait;
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::ConnectionManager;
use redis::aio::ConnectionManagerConfig;
use zeroize::Zeroizing;

use super::cache::{CacheKey, ClientAccessTokenCache, InMemoryClientAccessTokenCache, RequestLock};
use super::clock::{Clock, SystemClock};
use super::token::{ClientAccessToken, StoredClientAccessToken};
use crate::BoxError;

/// Default timeout of each Redis call: 250 ms.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// Default time-to-live of the fleet lock taken before a token request: 5 s.
pub const DEFAULT_REDIS_LOCK_TTL: Duration = Duration::from_secs(5);

/// How often an instance waiting for another instance's token request looks for its token.
const LOCK_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// After a failed Redis call, how long calls fail at once (without trying Redis), so that an outage
/// costs each token call no more than one timeout per pause.
const OUTAGE_PAUSE: Duration = Duration::from_secs(1);

/// Format byte of a value encrypted with AES-256-GCM.
const FORMAT_ENCRYPTED: u8 = 1;
/// Format byte of a plaintext value (only with [`RedisTokenCacheBuilder::plaintext`]).
const FORMAT_PLAINTEXT: u8 = 0;
const NONCE_LEN: usize = 12;

/// Releases the lock only if this instance still owns it (it may have expired and been taken).
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// What went wrong building a [`RedisTokenCache`] or talking to Redis.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisCacheError {
    /// Neither an encryption key nor the plaintext opt-in was given.
    #[error(
        "the Redis token cache needs an encryption key (`encryption_key`), or an explicit `plaintext()`"
    )]
    MissingEncryptionKey,
    /// Both an encryption key and [`plaintext`](RedisTokenCacheBuilder::plaintext) were given.
    #[error("the Redis token cache was given both an encryption key and `plaintext()`")]
    KeyAndPlaintext,
    /// A key id is empty or longer than 255 bytes.
    #[error("encryption key id {0:?} must be 1 to 255 bytes long")]
    InvalidKeyId(String),
    /// Two keys were given the same id.
    #[error("encryption key id {0:?} is given twice")]
    DuplicateKeyId(String),
    /// The Redis address could not be used.
    #[error("invalid Redis address")]
    InvalidUrl(#[source] redis::RedisError),
    /// The first connection to Redis failed.
    #[error("could not connect to Redis")]
    Connect(#[source] redis::RedisError),
    /// The first connection to Redis timed out.
    #[error("connecting to Redis timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// A Redis call failed.
    #[error("Redis {operation} failed")]
    Redis {
        /// The command.
        operation: &'static str,
        /// Why.
        #[source]
        source: redis::RedisError,
    },
    /// A Redis call took longer than the timeout.
    #[error("Redis {operation} timed out after {timeout:?}")]
    Timeout {
        /// The command.
        operation: &'static str,
        /// The timeout.
        timeout: Duration,
    },
    /// A recent call failed: Redis is not tried again until a short pause has passed.
    #[error("Redis {operation} not tried: Redis failed less than {pause:?} ago")]
    Unavailable {
        /// The command.
        operation: &'static str,
        /// How long calls are not tried after a failure.
        pause: Duration,
    },
    /// The system's random number generator failed.
    #[error("no random bytes for a nonce or lock owner")]
    Random,
}

/// An AES-256-GCM key with its id (the id is stored beside each value, so old keys still decrypt).
struct EncryptionKey {
    id: String,
    cipher: Aes256Gcm,
}

/// Keys: the first encrypts, all decrypt.
struct Keys {
    keys: Vec<EncryptionKey>,
}

/// Builds a [`RedisTokenCache`]: see [`RedisTokenCache::builder`].
pub struct RedisTokenCacheBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    lock_ttl: Duration,
    max_local_entries: usize,
    encryption: Option<(String, Zeroizing<[u8; 32]>)>,
    decryption: Vec<(String, Zeroizing<[u8; 32]>)>,
    plaintext: bool,
    clock: Arc<dyn Clock>,
}

impl fmt::Debug for RedisTokenCacheBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The address may carry a password; keys are secrets.
        f.debug_struct("RedisTokenCacheBuilder")
            .field("prefix", &self.prefix)
            .field("timeout", &self.timeout)
            .field("lock_ttl", &self.lock_ttl)
            .field("encryption_key_id", &self.encryption.as_ref().map(|k| &k.0))
            .field("plaintext", &self.plaintext)
            .finish_non_exhaustive()
    }
}

impl RedisTokenCacheBuilder {
    /// A namespace put before every Redis key (default: none).
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The key that encrypts new values (and decrypts values written with it). `id` is stored
    /// beside each value, so that a rotated key can still be read ([`decryption_key`](Self::decryption_key)).
    pub fn encryption_key(mut self, id: impl Into<String>, key: [u8; 32]) -> Self {
        self.encryption = Some((id.into(), Zeroizing::new(key)));
        self
    }

    /// An older key, used only to decrypt values written before a rotation.
    pub fn decryption_key(mut self, id: impl Into<String>, key: [u8; 32]) -> Self {
        self.decryption.push((id.into(), Zeroizing::new(key)));
        self
    }

    /// Stores tokens unencrypted: an explicit opt-in, for a Redis that nobody else can read.
    pub fn plaintext(mut self) -> Self {
        self.plaintext = true;
        self
    }

    /// The timeout of each Redis call (default [`DEFAULT_REDIS_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long the fleet lock of a token request lives at most (default [`DEFAULT_REDIS_LOCK_TTL`]);
    /// other instances wait for the token that long before requesting one themselves.
    pub fn lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// Reads the wall-clock time from `clock` (default [`SystemClock`]): whether a stored token is
    /// still fresh, and how long Redis keeps it. Give it the clock of the service that uses the
    /// cache (a [`ManualClock`](super::ManualClock) in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The capacity of the in-process level (default
    /// [`DEFAULT_MAX_CACHED_TOKENS`](super::DEFAULT_MAX_CACHED_TOKENS)).
    pub fn max_local_entries(mut self, max: usize) -> Self {
        self.max_local_entries = max;
        self
    }

    /// Checks the keys and connects to Redis (within the timeout), so that a wrong address or
    /// password shows at start-up. Later outages are survived: see [`RedisTokenCache`].
    pub async fn build(self) -> Result<RedisTokenCache, RedisCacheError> {
        let keys = self.keys()?;
        let client = redis::Client::open(self.url.as_str()).map_err(RedisCacheError::InvalidUrl)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1);
        let connection = tokio::time::timeout(
            self.timeout,
            ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| RedisCacheError::ConnectTimeout(self.timeout))?
        .map_err(RedisCacheError::Connect)?;
        let (closed, closed_rx) = tokio::sync::watch::channel(());
        let mut instance = [0u8; 16];
        getrandom::fill(&mut instance).map_err(|_| RedisCacheError::Random)?;
        Ok(RedisTokenCache {
            inner: Arc::new(Inner {
                local: InMemoryClientAccessTokenCache::with_max_entries(self.max_local_entries),
                channel: format!("{}invalidate", self.prefix),
                prefix: self.prefix,
                client,
                connection,
                timeout: self.timeout,
                lock_ttl: self.lock_ttl,
                keys,
                failing: AtomicBool::new(false),
                retry_at: std::sync::Mutex::new(None),
                instance: hex(&instance),
                subscriber: OnceLock::new(),
                stored_elsewhere: tokio::sync::Notify::new(),
                clock: self.clock,
                _closed: closed,
                closed_rx,
            }),
        })
    }

    fn keys(&self) -> Result<Option<Keys>, RedisCacheError> {
        if self.plaintext && (self.encryption.is_some() || !self.decryption.is_empty()) {
            return Err(RedisCacheError::KeyAndPlaintext);
        }
        let Some((id, key)) = &self.encryption else {
            return if self.plaintext {
                Ok(None)
            } else {
                Err(RedisCacheError::MissingEncryptionKey)
            };
        };
        let mut keys: Vec<EncryptionKey> = Vec::with_capacity(1 + self.decryption.len());
        for (id, key) in
            std::iter::once((id, key)).chain(self.decryption.iter().map(|(i, k)| (i, k)))
        {
            if id.is_empty() || id.len() > usize::from(u8::MAX) {
                return Err(RedisCacheError::InvalidKeyId(id.clone()));
            }
            if keys.iter().any(|k| k.id == *id) {
                return Err(RedisCacheError::DuplicateKeyId(id.clone()));
            }
            keys.push(EncryptionKey {
                id: id.clone(),
                cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(**key)),
            });
        }
        Ok(Some(Keys { keys }))
    }
}

/// A [`ClientAccessTokenCache`] shared by a fleet of processes through Redis.
///
/// - **Two levels.** An in-process [`InMemoryClientAccessTokenCache`] answers
///   [`get_cached`](ClientAccessTokenCache::get_cached) without a network call; `get` falls back to
///   Redis and fills it; `set` writes both (`SET key value PX <ms until the token expires>`), `delete`
///   removes from both. Redis keys are the builder's prefix followed by the [`CacheKey`].
/// - **Encryption at rest.** Values are AES-256-GCM ciphertexts of the token, with the Redis key as
///   associated data (a value copied under another key does not decrypt) and a random nonce; a value
///   that does not decrypt is a miss, logged without its content. Without a key, `build` fails unless
///   [`plaintext`](RedisTokenCacheBuilder::plaintext) was asked for.
/// - **One token request for the fleet.** [`lock_for_request`](ClientAccessTokenCache::lock_for_request)
///   takes `<prefix>lock:<key>` (`SET NX PX <lock ttl>`); an instance that does not get it waits for
///   the holder's token (woken by the holder's invalidation message, polling every 50 ms in case it
///   is lost; for the lock's ttl at most) instead of requesting its own.
/// - **Invalidation.** `set` publishes the key on `<prefix>invalidate`; every other instance drops its
///   in-process copy (a background task, started on first use, listens on its own connection).
/// - **Outages.** Every Redis call times out after 250 ms (see
///   [`timeout`](RedisTokenCacheBuilder::timeout)); its error reaches the service, which treats it as a
///   miss and requests tokens itself. After a failure, calls fail at once for a second before Redis
///   is tried again, so an outage does not slow every token call by several timeouts. The first error of an outage is logged at `warn` (and recovery
///   at `info`); each one counts in [`metric_names::CACHE_ERRORS`](super::metric_names::CACHE_ERRORS).
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use token_mgmt::tokens::{AccessTokenManagementService, RedisTokenCache};
/// # let options = token_mgmt::tokens::AccessTokenManagementOptions::default();
/// let key: [u8; 32] = [7; 32]; // from your secret store
/// let cache = RedisTokenCache::builder("redis://127.0.0.1:6379")
///     .key_prefix("app:")
///     .encryption_key("2026-01", key)
///     .build()
///     .await?;
/// let service = AccessTokenManagementService::builder(options)
///     .cache(Arc::new(cache))
///     .build()?;
/// # let _ = service; Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisTokenCache {
    inner: Arc<Inner>,
}

struct Inner {
    local: InMemoryClientAccessTokenCache,
    prefix: String,
    channel: String,
    client: redis::Client,
    connection: ConnectionManager,
    timeout: Duration,
    lock_ttl: Duration,
    keys: Option<Keys>,
    /// Whether the last Redis call failed: errors are logged once per outage.
    failing: AtomicBool,
    /// After a failed call, calls fail at once until then instead of each waiting for the timeout.
    retry_at: std::sync::Mutex<Option<tokio::time::Instant>>,
    /// Tells this instance's invalidation messages from the others'.
    instance: String,
    subscriber: OnceLock<()>,
    /// Woken when another instance stored a token: ends the lock waits early.
    stored_elsewhere: tokio::sync::Notify,
    clock: Arc<dyn Clock>,
    /// Dropped with the cache: stops the invalidation task.
    _closed: tokio::sync::watch::Sender<()>,
    closed_rx: tokio::sync::watch::Receiver<()>,
}

impl fmt::Debug for RedisTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTokenCache")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("lock_ttl", &self.inner.lock_ttl)
            .field("encrypted", &self.inner.keys.is_some())
            .field("local", &self.inner.local)
            .finish_non_exhaustive()
    }
}

impl RedisTokenCache {
    /// A builder for a cache on the Redis at `url` (`redis://[:password@]host:port[/db]`).
    pub fn builder(url: impl Into<String>) -> RedisTokenCacheBuilder {
        RedisTokenCacheBuilder {
            url: url.into(),
            prefix: String::new(),
            timeout: DEFAULT_REDIS_TIMEOUT,
            lock_ttl: DEFAULT_REDIS_LOCK_TTL,
            max_local_entries: super::DEFAULT_MAX_CACHED_TOKENS,
            encryption: None,
            decryption: Vec::new(),
            plaintext: false,
            clock: Arc::new(SystemClock),
        }
    }

    /// The Redis key of a cache key.
    pub fn redis_key(&self, key: &CacheKey) -> String {
        format!("{}{}", self.inner.prefix, key.as_str())
    }

    /// The in-process level.
    pub fn local(&self) -> &InMemoryClientAccessTokenCache {
        &self.inner.local
    }
}

impl Inner {
    /// Whether a call failed less than [`OUTAGE_PAUSE`] ago.
    fn resting(&self) -> bool {
        let now = tokio::time::Instant::now();
        self.retry_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| now < at)
    }

    /// Runs one Redis call within the timeout, recording its outcome.
    async fn call<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, RedisCacheError> {
        if self.resting() {
            metrics::counter!(super::metrics::names::CACHE_ERRORS, "operation" => operation)
                .increment(1);
            return Err(RedisCacheError::Unavailable {
                operation,
                pause: OUTAGE_PAUSE,
            });
        }
        let outcome = match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(source)) => Err(RedisCacheError::Redis { operation, source }),
            Err(_) => Err(RedisCacheError::Timeout {
                operation,
                timeout: self.timeout,
            }),
        };
        match &outcome {
            Ok(_) => {
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("Redis token cache reachable again");
                }
            }
            Err(error) => {
                metrics::counter!(super::metrics::names::CACHE_ERRORS, "operation" => operation)
                    .increment(1);
                *self.retry_at.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(tokio::time::Instant::now() + OUTAGE_PAUSE);
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %error,
                        source = %std::error::Error::source(error).map(ToString::to_string).unwrap_or_default(),
                        "Redis token cache unavailable; tokens are requested without it until it is back"
                    );
                }
            }
        }
        outcome
    }

    fn seal(&self, redis_key: &str, token: &ClientAccessToken) -> Result<Vec<u8>, RedisCacheError> {
        let json = Zeroizing::new(
            serde_json::to_vec(&token.to_stored()).expect("a stored token always serializes"),
        );
        let Some(keys) = &self.keys else {
            let mut value = Vec::with_capacity(1 + json.len());
            value.push(FORMAT_PLAINTEXT);
            value.extend_from_slice(&json);
            return Ok(value);
        };
        let key = &keys.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| RedisCacheError::Random)?;
        let sealed = key
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &json,
                    aad: redis_key.as_bytes(),
                },
            )
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        let mut value = Vec::with_capacity(2 + key.id.len() + NONCE_LEN + sealed.len());
        value.push(FORMAT_ENCRYPTED);
        value.push(u8::try_from(key.id.len()).expect("key ids are checked at build"));
        value.extend_from_slice(key.id.as_bytes());
        value.extend_from_slice(&nonce);
        value.extend_from_slice(&sealed);
        Ok(value)
    }

    /// The token in a stored value, or why not (never the value itself).
    fn open(&self, redis_key: &str, value: &[u8]) -> Result<ClientAccessToken, &'static str> {
        let json = match (value.split_first(), &self.keys) {
            (Some((&FORMAT_PLAINTEXT, json)), None) => Zeroizing::new(json.to_vec()),
            (Some((&FORMAT_ENCRYPTED, rest)), Some(keys)) => {
                let (&id_len, rest) = rest.split_first().ok_or("truncated value")?;
                let id_len = usize::from(id_len);
                if rest.len() < id_len + NONCE_LEN {
                    return Err("truncated value");
                }
                let (id, rest) = rest.split_at(id_len);
                let (nonce, sealed) = rest.split_at(NONCE_LEN);
                let key = keys
                    .keys
                    .iter()
                    .find(|k| k.id.as_bytes() == id)
                    .ok_or("encrypted with an unknown key")?;
                let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| "truncated value")?;
                Zeroizing::new(
                    key.cipher
                        .decrypt(
                            &Nonce::from(nonce),
                            Payload {
                                msg: sealed,
                                aad: redis_key.as_bytes(),
                            },
                        )
                        .map_err(
                            |_| "does not decrypt (wrong key, altered, or moved from another key)",
                        )?,
                )
            }
            (Some((&FORMAT_PLAINTEXT, _)), Some(_)) => return Err("unencrypted, but a key is set"),
            (Some((&FORMAT_ENCRYPTED, _)), None) => {
                return Err("encrypted, but the cache has no key");
            }
            _ => return Err("unknown format"),
        };
        let stored: StoredClientAccessToken =
            serde_json::from_slice(&json).map_err(|_| "not a stored token")?;
        ClientAccessToken::try_from(stored).map_err(|_| "not a valid token")
    }

    /// Reads and opens the value under `redis_key`; a value that does not open is a miss.
    async fn read(&self, redis_key: &str) -> Result<Option<ClientAccessToken>, RedisCacheError> {
        let mut connection = self.connection.clone();
        let value: Option<Vec<u8>> = self.call("GET", connection.get(redis_key)).await?;
        let Some(value) = value else {
            return Ok(None);
        };
        match self.open(redis_key, &value) {
            Ok(token) => Ok(Some(token)),
            Err(why) => {
                tracing::warn!(key = %redis_key, reason = why, "ignoring an unreadable cached token");
                Ok(None)
            }
        }
    }

    /// The token under `redis_key`, if it is not due for renewal yet.
    async fn read_fresh(
        &self,
        redis_key: &str,
    ) -> Result<Option<ClientAccessToken>, RedisCacheError> {
        let Some(token) = self.read(redis_key).await? else {
            return Ok(None);
        };
        let due = token.refresh_at().or(token.expires_at());
        let now = self.clock.system_time();
        Ok(due.is_none_or(|at| at > now).then_some(token))
    }

    /// Drops the in-process copy of keys that other instances set.
    async fn listen(
        cache: Weak<Inner>,
        client: redis::Client,
        channel: String,
        instance: String,
        mut closed: tokio::sync::watch::Receiver<()>,
    ) {
        loop {
            let subscribed = async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            let pubsub = tokio::select! {
                _ = closed.changed() => return,
                pubsub = subscribed => pubsub,
            };
            if let Ok(pubsub) = pubsub {
                let mut messages = pubsub.into_on_message();
                loop {
                    let message = tokio::select! {
                        _ = closed.changed() => return,
                        message = messages.next() => message,
                    };
                    let Some(message) = message else { break };
                    let Some(cache) = cache.upgrade() else { return };
                    let payload = message.get_payload_bytes();
                    // `<instance> <key>`: this instance's own messages are skipped.
                    if let Some((from, key)) = std::str::from_utf8(payload)
                        .ok()
                        .and_then(|p| p.split_once(' '))
                    {
                        if from != instance {
                            let _ = cache.local.delete(&CacheKey::new(key)).await;
                            cache.stored_elsewhere.notify_waiters();
                        }
                    }
                }
            }
            // Redis is gone: try again a little later (the other calls report the outage).
            tokio::select! {
                _ = closed.changed() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    fn start_listening(self: &Arc<Self>) {
        self.subscriber.get_or_init(|| {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(Self::listen(
                    Arc::downgrade(self),
                    self.client.clone(),
                    self.channel.clone(),
                    self.instance.clone(),
                    self.closed_rx.clone(),
                ));
            }
        });
    }
}

/// The fleet lock of one key, released (if still owned) when dropped.
struct RedisLock {
    inner: Arc<Inner>,
    key: String,
    owner: String,
}

impl Drop for RedisLock {
    fn drop(&mut self) {
        // Outside a runtime, or while Redis fails (the release would only wait for its timeout),
        // the lock is left to expire on its own.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self.inner.resting() {
            return;
        }
        let inner = Arc::clone(&self.inner);
        let key = std::mem::take(&mut self.key);
        let owner = std::mem::take(&mut self.owner);
        runtime.spawn(async move {
            let script = redis::Script::new(RELEASE_SCRIPT);
            let mut invocation = script.key(&key);
            invocation.arg(&owner);
            let mut connection = inner.connection.clone();
            let _ = inner
                .call("EVALSHA", invocation.invoke_async::<i64>(&mut connection))
                .await;
        });
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis_until(at: SystemTime, now: SystemTime) -> Option<u64> {
    let left = at.duration_since(now).ok()?;
    Some(u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1))
}

#[async_trait]
impl ClientAccessTokenCache for RedisTokenCache {
    #[inline]
    fn get_cached(&self, key: &CacheKey) -> Option<ClientAccessToken> {
        self.inner.local.get_cached(key)
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        if let Some(token) = self.inner.local.get_cached(key) {
            return Ok(Some(token));
        }
        self.inner.start_listening();
        let Some(token) = self.inner.read(&self.redis_key(key)).await? else {
            return Ok(None);
        };
        self.inner.local.set(key, token.clone()).await?;
        Ok(Some(token))
    }

    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        let inner = &self.inner;
        inner.start_listening();
        let redis_key = self.redis_key(key);
        let value = inner.seal(&redis_key, &token)?;
        let expires_at = token.expires_at();
        inner.local.set(key, token).await?;
        let mut connection = inner.connection.clone();
        match expires_at {
            None => {
                inner
                    .call("SET", connection.set::<_, _, ()>(&redis_key, value))
                    .await?
            }
            Some(at) => match millis_until(at, inner.clock.system_time()) {
                Some(ms) => {
                    let options =
                        redis::SetOptions::default().with_expiration(redis::SetExpiry::PX(ms));
                    inner
                        .call(
                            "SET",
                            connection.set_options::<_, _, ()>(&redis_key, value, options),
                        )
                        .await?;
                }
                // Already expired: nothing worth sharing.
                None => {
                    inner
                        .call("DEL", connection.del::<_, ()>(&redis_key))
                        .await?
                }
            },
        }
        let message = format!("{} {}", inner.instance, key.as_str());
        inner
            .call(
                "PUBLISH",
                connection.publish::<_, _, ()>(&inner.channel, message),
            )
            .await?;
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        let inner = &self.inner;
        inner.local.delete(key).await?;
        let mut connection = inner.connection.clone();
        inner
            .call("DEL", connection.del::<_, ()>(self.redis_key(key)))
            .await?;
        Ok(())
    }

    async fn lock_for_request(&self, key: &CacheKey) -> Result<Option<RequestLock>, BoxError> {
        let inner = &self.inner;
        inner.start_listening();
        let redis_key = self.redis_key(key);
        let lock_key = format!("{}lock:{}", inner.prefix, key.as_str());
        let mut owner = [0u8; 16];
        getrandom::fill(&mut owner).map_err(|_| RedisCacheError::Random)?;
        let lock = RedisLock {
            inner: Arc::clone(inner),
            key: lock_key,
            owner: hex(&owner),
        };
        let ttl_ms = u64::try_from(inner.lock_ttl.as_millis().max(1)).unwrap_or(u64::MAX);
        let options = redis::SetOptions::default()
            .conditional_set(redis::ExistenceCheck::NX)
            .with_expiration(redis::SetExpiry::PX(ttl_ms));
        let try_lock = |lock: &RedisLock| {
            let mut connection = inner.connection.clone();
            let options = options.clone();
            let (key, owner) = (lock.key.clone(), lock.owner.clone());
            async move {
                let set: Option<String> = inner
                    .call("SET NX", connection.set_options(key, owner, options))
                    .await?;
                Ok::<_, RedisCacheError>(set.is_some())
            }
        };
        if try_lock(&lock).await? {
            return Ok(Some(Box::new(lock)));
        }
        // Another instance is requesting: wait for its token (one not yet due: the token there now
        // may be the due one it is renewing).
        let deadline = tokio::time::Instant::now() + inner.lock_ttl;
        loop {
            // Registered before the read, so that a token stored between the read and the wait
            // still wakes this waiter.
            let stored = inner.stored_elsewhere.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            if let Some(token) = inner.read_fresh(&redis_key).await? {
                inner.local.set(key, token).await?;
                return Ok(None);
            }
            if tokio::time::Instant::now() >= deadline {
                break;
            }
            // The holder's `set` publishes its key: read again as soon as another instance stored
            // a token, or after the poll interval (a lost message, no subscription yet).
            tokio::select! {
                () = stored => {}
                () = tokio::time::sleep(LOCK_POLL_INTERVAL) => {}
            }
            // The holder gave up (its request failed): take over, unless its token came meanwhile.
            if try_lock(&lock).await? {
                if let Some(token) = inner.read_fresh(&redis_key).await? {
                    inner.local.set(key, token).await?;
                    return Ok(None);
                }
                return Ok(Some(Box::new(lock)));
            }
        }
        Ok(None)
    }
}
