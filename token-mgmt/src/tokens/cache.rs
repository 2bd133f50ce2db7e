//! The token cache: a pluggable trait and the in-memory default.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::ops::Deref;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use dashmap::DashMap;
use url::form_urlencoded;

use super::endpoint::RequestShape;
use super::token::ClientAccessToken;
use crate::BoxError;

/// A cache key: prefix + client name + client fingerprint + scope + resources + extra parameters,
/// each value form-url-encoded so that no two different requests share a key.
///
/// The fingerprint is a hash of the token endpoint address and the client id: two deployments that
/// share a remote cache and a client name, but not the identity provider or the client, never
/// exchange tokens. Extra parameters keep their order, exactly as they are sent, so the key and the
/// request always agree.
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

    /// The key of a token request. `fingerprint` identifies who asks where (see
    /// [`client_fingerprint`]); `resources` and `parameters` keep their order.
    pub fn for_request(
        prefix: &str,
        client: &str,
        fingerprint: &str,
        scope: Option<&str>,
        resources: &[String],
        parameters: &[(String, String)],
    ) -> Self {
        let mut text = String::with_capacity(prefix.len() + client.len() + fingerprint.len() + 32);
        text.push_str(prefix);
        let mut s = form_urlencoded::Serializer::for_suffix(text, prefix.len());
        s.append_pair("client", client);
        s.append_pair("id", fingerprint);
        if let Some(scope) = scope {
            s.append_pair("scope", scope);
        }
        for resource in resources {
            s.append_pair("resource", resource);
        }
        for (k, v) in parameters {
            // `p.` keeps extra parameters apart from the fields above, whatever their names.
            s.append_pair(&format!("p.{k}"), v);
        }
        Self::new(s.finish())
    }

    /// [`for_request`](Self::for_request) for a request of this shape.
    pub(crate) fn for_shape(
        prefix: &str,
        client: &str,
        fingerprint: &str,
        shape: &RequestShape,
    ) -> Self {
        Self::for_request(
            prefix,
            client,
            fingerprint,
            shape.scope.as_deref(),
            &shape.resources,
            &shape.parameters,
        )
    }

    /// The request a key made by [`for_request`](Self::for_request) with this `prefix` stands for:
    /// its inverse. `None` for a key it did not make. The renewal schedule keeps only the key and
    /// recovers the request from it when a token comes due (a copy of every scoped request's
    /// parameters for each scheduled token would cost more than the key it already shares).
    pub(crate) fn parse_request(&self, prefix: &str) -> Option<KeyRequest> {
        let mut pairs =
            form_urlencoded::parse(self.text.strip_prefix(prefix)?.as_bytes()).peekable();
        let mut field = |name: &str| {
            pairs
                .next_if(|(k, _)| k == name)
                .map(|(_, value)| value.into_owned())
        };
        let client = field("client")?;
        let fingerprint = field("id")?;
        let scope = field("scope");
        let resources = std::iter::from_fn(|| field("resource")).collect();
        let mut parameters = Vec::new();
        for (name, value) in pairs {
            // Anything but an extra parameter after the resources: not a key of `for_request`.
            let name = name.strip_prefix("p.")?;
            parameters.push((name.to_owned(), value.into_owned()));
        }
        Some(KeyRequest {
            client,
            fingerprint,
            shape: RequestShape {
                scope,
                resources,
                parameters,
            },
        })
    }

    /// The shared text, for a holder that keeps the key without its hash.
    pub(crate) fn shared_text(&self) -> &Arc<str> {
        &self.text
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

/// What a cache key says about its request (see [`CacheKey::parse_request`]).
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct KeyRequest {
    pub(crate) client: String,
    pub(crate) fingerprint: String,
    pub(crate) shape: RequestShape,
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

/// The fingerprint of a token client's identity for cache keys: the first 128 bits of
/// SHA-256(token endpoint address, client id), hex. Stable across processes and versions, so that a
/// fleet sharing a cache computes the same keys; the client id is not readable from it.
pub fn client_fingerprint(token_endpoint: &str, client_id: &str) -> String {
    use sha2::{Digest as _, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(token_endpoint.as_bytes());
    hasher.update([0]);
    hasher.update(client_id.as_bytes());
    let digest = hasher.finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
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
/// Contract: `get` returns what `set` stored under the key, or nothing (due and expired tokens may be
/// returned: the service checks their times itself). A token built outside the service (read back
/// from a remote store with [`ClientAccessToken::new`]) is anchored on the service clock when read.
/// Errors are logged by the service and treated as a miss, never as a failure of the token call.
///
/// The service keeps no copy of its own: a `delete` or `set` made directly on the cache is what the
/// next call sees.
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

    /// Called by the service just before it requests a token for `key` from the token endpoint
    /// (after finding no usable token in this cache). A cache shared by several processes can
    /// coordinate them here: take a lock for the key (returned as a guard, which the service drops
    /// once it has stored the new token), or wait until another process stored a token and return
    /// `None`; the service then reads the cache again before requesting. The default does nothing.
    ///
    /// An error is logged and the request proceeds (a cache outage never stops token requests).
    async fn lock_for_request(&self, key: &CacheKey) -> Result<Option<RequestLock>, BoxError> {
        let _ = key;
        Ok(None)
    }
}

/// A cache's lock on a key while this process requests its token (see
/// [`ClientAccessTokenCache::lock_for_request`]); released when dropped.
pub type RequestLock = Box<dyn Send + Sync>;

/// Default [`InMemoryClientAccessTokenCache`] capacity: 10,000 tokens.
pub const DEFAULT_MAX_CACHED_TOKENS: usize = 10_000;

/// The default cache: a concurrent in-memory map (sharded locks, never held across an await), with a
/// bounded number of entries.
///
/// Entries are replaced when a token is renewed and removed by `delete` (the service deletes the
/// tokens of keys nobody used for its idle window). When an insert would exceed the capacity, the
/// least recently used eighth of the entries is evicted first, so a flood of distinct per-request
/// scopes cannot grow memory without bound.
#[doc(alias = "DistributedClientCredentialsTokenCache")]
pub struct InMemoryClientAccessTokenCache {
    map: DashMap<CacheKey, ClientAccessToken, PrecomputedHashBuilder>,
    max_entries: usize,
}

impl InMemoryClientAccessTokenCache {
    /// An empty cache holding at most [`DEFAULT_MAX_CACHED_TOKENS`] tokens.
    pub fn new() -> Self {
        Self::with_max_entries(DEFAULT_MAX_CACHED_TOKENS)
    }

    /// An empty cache holding at most `max_entries` tokens (at least one).
    pub fn with_max_entries(max_entries: usize) -> Self {
        Self {
            map: DashMap::default(),
            max_entries: max_entries.max(1),
        }
    }

    /// How many tokens are stored.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The most tokens it holds.
    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// Removes every token and gives the memory back.
    pub fn clear(&self) {
        self.map.clear();
        self.map.shrink_to_fit();
    }

    /// Evicts the least recently used eighth of the entries (at least one).
    fn evict_least_recently_used(&self) {
        let mut by_use: Vec<(u64, CacheKey)> = self
            .map
            .iter()
            .map(|entry| (entry.value().last_used().as_nanos(), entry.key().clone()))
            .collect();
        let evict = (by_use.len() / 8).max(1).min(by_use.len());
        if evict == 0 {
            return;
        }
        by_use.select_nth_unstable_by_key(evict - 1, |(used, _)| *used);
        for (_, key) in &by_use[..evict] {
            self.map.remove(key);
        }
        self.map.shrink_to_fit();
    }
}

impl Default for InMemoryClientAccessTokenCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for InMemoryClientAccessTokenCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InMemoryClientAccessTokenCache")
            .field("entries", &self.map.len())
            .field("max_entries", &self.max_entries)
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
        if self.map.len() >= self.max_entries && !self.map.contains_key(key) {
            self.evict_least_recently_used();
        }
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

    fn key(scope: Option<&str>, resources: &[&str], parameters: &[(&str, &str)]) -> CacheKey {
        let resources: Vec<String> = resources.iter().map(|r| (*r).to_owned()).collect();
        let parameters: Vec<(String, String)> = parameters
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        CacheKey::for_request("p:", "c", "f", scope, &resources, &parameters)
    }

    #[test]
    fn keys_are_unambiguous() {
        assert_ne!(
            key(Some("a&resource=b"), &[], &[]),
            key(Some("a"), &["b"], &[])
        );
        assert_ne!(key(None, &[], &[]), key(Some(""), &[], &[]));
        assert_ne!(key(None, &[], &[("scope", "x")]), key(Some("x"), &[], &[]));
        let g = CacheKey::for_request("p:", "c&scope=x", "f", None, &[], &[]);
        assert_ne!(g, key(Some("x"), &[], &[]));
        assert!(key(None, &[], &[]).as_str().starts_with("p:client=c&id=f"));
    }

    /// Makes the key of this request with `prefix` and checks that it parses back into it.
    fn round_trip(prefix: &str, client: &str, fingerprint: &str, shape: RequestShape) {
        let key = CacheKey::for_shape(prefix, client, fingerprint, &shape);
        let expected = KeyRequest {
            client: client.to_owned(),
            fingerprint: fingerprint.to_owned(),
            shape,
        };
        assert_eq!(key.parse_request(prefix), Some(expected), "{key}");
    }

    fn shape(scope: Option<&str>, resources: &[&str], parameters: &[(&str, &str)]) -> RequestShape {
        RequestShape {
            scope: scope.map(str::to_owned),
            resources: resources.iter().map(|r| (*r).to_owned()).collect(),
            parameters: parameters
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    #[test]
    fn a_key_parses_back_into_its_request() {
        let awkward = ["a&b=c", "x+y z", "100%", "ünïcödé ✓", "", "p.scope", "=&="];
        round_trip("p:", "c", "f", shape(None, &[], &[]));
        round_trip("p:", "c", "f", shape(Some(""), &[], &[]));
        round_trip(
            "",
            "client=x&id=y",
            "f.dpop.t",
            shape(Some("a b+c"), &awkward, &[]),
        );
        round_trip(
            "tenant&client=evil:",
            "naïve & co",
            "0123",
            shape(
                Some("scope=resource&p.x=1"),
                &["https://api.example/a?b=c&d", "urn:x"],
                &[
                    ("scope", "not the scope"),
                    ("resource", "neither"),
                    ("p.q", "+&=%"),
                    ("", ""),
                    ("ünï", "côdé"),
                    ("scope", "twice, in order"),
                ],
            ),
        );
        round_trip("k", "", "", shape(None, &[""], &[("a", "")]));
    }

    #[test]
    fn a_key_not_made_for_a_request_does_not_parse() {
        let made = CacheKey::for_request("p:", "c", "f", Some("s"), &[], &[]);
        assert_eq!(made.parse_request("q:"), None, "another prefix");
        for text in [
            "p:",
            "p:id=f&client=c",
            "p:client=c",
            "p:client=c&id=f&scope=s&scope=t",
            "p:client=c&id=f&resource=r&scope=s",
            "p:client=c&id=f&p.x=1&resource=r",
            "p:client=c&id=f&other=1",
        ] {
            assert_eq!(CacheKey::new(text).parse_request("p:"), None, "{text}");
        }
    }

    #[test]
    fn parameter_order_is_part_of_the_key() {
        assert_ne!(
            key(None, &[], &[("a", "1"), ("b", "2")]),
            key(None, &[], &[("b", "2"), ("a", "1")])
        );
    }

    #[test]
    fn fingerprint_separates_endpoints_and_client_ids() {
        let a = client_fingerprint("https://a.example/token", "worker");
        assert_eq!(a.len(), 32);
        assert_eq!(a, client_fingerprint("https://a.example/token", "worker"));
        assert_ne!(a, client_fingerprint("https://b.example/token", "worker"));
        assert_ne!(a, client_fingerprint("https://a.example/token", "other"));
        assert!(!a.contains("worker"));
    }

    #[tokio::test]
    async fn capacity_evicts_least_recently_used() {
        let cache = InMemoryClientAccessTokenCache::with_max_entries(16);
        for i in 0..1000 {
            let token = ClientAccessToken::new(format!("t{i}"), None, None, None, None).unwrap();
            cache
                .set(&CacheKey::new(format!("k{i}")), token)
                .await
                .unwrap();
            assert!(cache.len() <= 16);
        }
        assert!(cache.get_cached(&CacheKey::new("k999")).is_some());
        cache.clear();
        assert!(cache.is_empty());
    }
}
