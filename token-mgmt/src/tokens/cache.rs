//! The token cache: a pluggable trait and the in-memory default.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use dashmap::DashMap;
use url::form_urlencoded;

use super::token::ClientAccessToken;
use crate::BoxError;

/// A cache key: prefix + client name + scope + resources + extra parameters, each value
/// form-url-encoded so that no two different requests share a key.
///
/// The key carries its hash, computed once when the key is made: the service precomputes the key of
/// every client's default request when it is built, so a cache hit neither allocates nor hashes a
/// string. Cloning is one [`Arc`] increment. Remote caches use [`CacheKey::as_str`].
#[derive(Clone)]
pub struct CacheKey {
    text: Arc<str>,
    hash: u64,
}

fn hash_state() -> &'static RandomState {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new)
}

impl CacheKey {
    /// Makes a key from its text.
    pub fn new(text: impl Into<Arc<str>>) -> Self {
        let text = text.into();
        let hash = hash_state().hash_one(&*text);
        Self { text, hash }
    }

    /// The key of a token request. `parameters` are sorted for the key (their order does not change
    /// the token); `resources` keep their order.
    pub fn for_request(
        prefix: &str,
        client: &str,
        scope: Option<&str>,
        resources: &[String],
        parameters: &[(String, String)],
    ) -> Self {
        let mut text = String::with_capacity(prefix.len() + client.len() + 32);
        text.push_str(prefix);
        let mut s = form_urlencoded::Serializer::for_suffix(text, prefix.len());
        s.append_pair("client", client);
        if let Some(scope) = scope {
            s.append_pair("scope", scope);
        }
        for resource in resources {
            s.append_pair("resource", resource);
        }
        let mut sorted: Vec<&(String, String)> = parameters.iter().collect();
        sorted.sort();
        for (k, v) in sorted {
            // `p.` keeps extra parameters apart from the fields above, whatever their names.
            s.append_pair(&format!("p.{k}"), v);
        }
        Self::new(s.finish())
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The precomputed hash.
    pub fn precomputed_hash(&self) -> u64 {
        self.hash
    }
}

impl Deref for CacheKey {
    type Target = str;
    fn deref(&self) -> &str {
        &self.text
    }
}

impl AsRef<str> for CacheKey {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

impl PartialEq for CacheKey {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.text, f)
    }
}

impl fmt::Display for CacheKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// A hasher for maps keyed by [`CacheKey`]: passes the precomputed hash through.
#[derive(Default, Clone, Copy)]
pub struct PrecomputedHasher(u64);

impl Hasher for PrecomputedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `CacheKey` (one `write_u64`) is meant to be hashed with this; stay correct otherwise.
        for &b in bytes {
            self.0 = self.0.rotate_left(5) ^ u64::from(b);
            self.0 = self.0.wrapping_mul(0x100_0000_01b3);
        }
    }
}

/// `BuildHasher` for maps keyed by [`CacheKey`].
pub type PrecomputedHashBuilder = BuildHasherDefault<PrecomputedHasher>;

/// Where tokens are kept between requests. Replace it to share tokens between processes.
///
/// Contract: `get` returns what `set` stored under the key (expired tokens may be returned: the
/// service checks [`ClientAccessToken::refresh_at`] itself). Errors are logged by the service and
/// treated as a miss, never as a failure of the token call.
///
/// The trait is dyn-compatible (used as `Arc<dyn ClientAccessTokenCache>`).
#[async_trait]
#[doc(alias("IClientCredentialsTokenCache", "IClientAccessTokenCache"))]
pub trait ClientAccessTokenCache: Send + Sync + 'static {
    /// Synchronous fast path, tried before [`get`](Self::get). A cache that can answer without
    /// waiting (in memory) returns the token here, which spares the caller a boxed future; a remote
    /// cache keeps the default (`None`), and the service then calls `get`.
    #[inline]
    fn get_cached(&self, key: &CacheKey) -> Option<ClientAccessToken> {
        let _ = key;
        None
    }

    /// Reads the token stored under `key`.
    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError>;

    /// Stores `token` under `key`, replacing what was there.
    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError>;

    /// Removes the token stored under `key`.
    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError>;
}

/// The default cache: a concurrent in-memory map (sharded locks, never held across an await).
///
/// Entries are replaced when a token is renewed and removed by `delete`; a key that is never asked
/// for again keeps its last token until then (one entry per distinct request shape).
///
/// The cache arms nothing itself: tokens the service stores are armed by the service's refresh
/// scheduler (a cache hit checks one atomic flag, see [`ClientAccessToken::is_fresh`]); a token
/// stored directly with [`set`](ClientAccessTokenCache::set) stays unarmed and its freshness is
/// decided by reading the tokio clock, which is just as correct.
#[derive(Default)]
#[doc(alias = "DistributedClientCredentialsTokenCache")]
pub struct InMemoryClientAccessTokenCache {
    map: DashMap<CacheKey, ClientAccessToken, PrecomputedHashBuilder>,
}

impl InMemoryClientAccessTokenCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many tokens are stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Removes every token.
    pub fn clear(&self) {
        self.map.clear();
    }
}

impl fmt::Debug for InMemoryClientAccessTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryClientAccessTokenCache")
            .field("entries", &self.map.len())
            .finish()
    }
}

#[async_trait]
impl ClientAccessTokenCache for InMemoryClientAccessTokenCache {
    #[inline]
    fn get_cached(&self, key: &CacheKey) -> Option<ClientAccessToken> {
        self.map.get(key).map(|entry| entry.value().clone())
    }

    async fn get(&self, key: &CacheKey) -> Result<Option<ClientAccessToken>, BoxError> {
        Ok(self.get_cached(key))
    }

    async fn set(&self, key: &CacheKey, token: ClientAccessToken) -> Result<(), BoxError> {
        self.map.insert(key.clone(), token);
        Ok(())
    }

    async fn delete(&self, key: &CacheKey) -> Result<(), BoxError> {
        self.map.remove(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unambiguous() {
        let a = CacheKey::for_request("p:", "c", Some("a&resource=b"), &[], &[]);
        let b = CacheKey::for_request("p:", "c", Some("a"), &["b".to_owned()], &[]);
        assert_ne!(a, b);
        let c = CacheKey::for_request("p:", "c", None, &[], &[]);
        let d = CacheKey::for_request("p:", "c", Some(""), &[], &[]);
        assert_ne!(c, d);
        let e = CacheKey::for_request("p:", "c", None, &[], &[("scope".into(), "x".into())]);
        let f = CacheKey::for_request("p:", "c", Some("x"), &[], &[]);
        assert_ne!(e, f);
        let g = CacheKey::for_request("p:", "c&scope=x", None, &[], &[]);
        assert_ne!(g, f);
        let p1 = [
            ("a".to_owned(), "1".to_owned()),
            ("b".to_owned(), "2".to_owned()),
        ];
        let p2 = [
            ("b".to_owned(), "2".to_owned()),
            ("a".to_owned(), "1".to_owned()),
        ];
        assert_eq!(
            CacheKey::for_request("p:", "c", None, &[], &p1),
            CacheKey::for_request("p:", "c", None, &[], &p2)
        );
        assert!(a.as_str().starts_with("p:client=c"));
    }
}
