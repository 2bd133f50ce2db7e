//! `AccessTokenManagementService`: cached, single-flight client credentials tokens.
//!
//! # How a call is served
//!
//! 1. The client is looked up by name (a linear scan of a few names, a hash map beyond that).
//! 2. For the client's default request (no per-call scope, resources or parameters), its cache key was
//!    computed when the service was built, with its hash; the cache's synchronous [`get_cached`] is
//!    tried and the token's freshness checked. A hit returns a clone of the cached token (one `Arc`
//!    increment): no allocation, no string hashing, no boxed future, no lock held past the map read.
//!    Freshness costs one relaxed atomic load: when the service receives a token it *arms* it with the
//!    service's refresh scheduler, which marks it stale at its refresh time, and a token that is not
//!    armed (e.g. rebuilt by a remote cache) is compared with one read of the tokio clock instead. A
//!    clock read costs about as much as the whole map lookup, hence the scheduler.
//! 3. On a miss, callers of the same cache key share one *flight*: the first inserts it into a
//!    concurrent map of in-flight requests and spawns a task that requests the token, stores it in the
//!    cache, publishes the result on a `watch` channel, and only then leaves the map. The others
//!    subscribe. Because the request runs in its own task, a caller that is dropped or cancelled does
//!    not affect the others. Different keys use different map entries and never wait on each other.
//! 4. Before requesting, a (non-forced) flight reads the cache again: a caller that missed the cache
//!    just before another flight stored its token and left the map finds that token instead of
//!    requesting a second one.
//!
//! Forced renewals have their own in-flight map: they never join a normal flight (which may have
//! started before the caller saw its token rejected), are coalesced with each other, skip the cache
//! read and replace the cached token.
//!
//! # Refresh scheduler
//!
//! Each service has one refresh scheduler: a single tokio task, spawned on the runtime of the first
//! call that receives a token, holding every armed token's "mark stale" guard in a heap ordered by
//! refresh time, with one tokio sleep set to the earliest (tokio's clock: a paused test clock drives
//! it, and after `advance` a `yield_now` lets it run). Arming a token sends its guard over a channel:
//! 24 bytes per pending token, where a task per token cost hundreds. A token without a refresh time
//! is never armed; one already past it is marked stale at once; outside a runtime tokens stay
//! unarmed and are checked against the clock. If the scheduler's runtime shuts down, the guards it
//! held are dropped and mark their tokens stale (conservative), and the next token received spawns
//! a new scheduler on the current runtime. When the service is dropped the task ends, marking what
//! it still held stale.
//!
//! # Cache lifetime
//!
//! A token is served from the cache until `received_at + expires_in - buffer`, where `buffer` is
//! [`cache_lifetime_buffer`](AccessTokenManagementOptions::cache_lifetime_buffer) (60 s by default)
//! but never more than half the token's lifetime: `expires_in = 120` is cached for 60 s, and
//! `expires_in = 30` (shorter than the buffer) for 15 s rather than not at all. A token without
//! `expires_in` is kept until it is deleted ([`AccessTokenManagementService::delete_client_access_token`])
//! or replaced by a forced renewal, which is what the HTTP handler does on a 401.
//!
//! Errors are never cached: every waiter of a failed flight gets the error, and the next call makes a
//! new request. A failing cache backend is logged and treated as a miss.
//!
//! [`get_cached`]: ClientAccessTokenCache::get_cached

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use dashmap::mapref::entry::Entry;
use tokio::sync::watch;
use tracing::Instrument as _;

use super::cache::{
    CacheKey, ClientAccessTokenCache, InMemoryClientAccessTokenCache, PrecomputedHashBuilder,
};
use super::endpoint::{ClientEndpoint, RequestShape, TokenEndpointClient, TokenResponse};
use super::error::{OptionsError, TokenError};
use super::options::{AccessTokenManagementOptions, TokenRequestParameters, is_reserved};
use super::refresh::RefreshScheduler;
use super::token::{ClientAccessToken, TokenSlot};

/// Up to this many clients, a name is found by a linear scan (cheaper than hashing it).
const LINEAR_LOOKUP_MAX: usize = 8;

/// Gets client credentials tokens for the registered token clients, from the cache when it can and
/// from the token service when it must, with one request per cache key however many callers ask at
/// once. Cheap to clone (one `Arc`).
#[derive(Clone)]
#[doc(alias(
    "ClientCredentialsTokenManagementService",
    "IClientCredentialsTokenManagementService",
    "IClientAccessTokenManagementService",
    "IAccessTokenManagementService"
))]
pub struct AccessTokenManagementService {
    inner: Arc<Inner>,
}

struct Inner {
    clients: Vec<Arc<ClientState>>,
    /// Client names are configuration, not attacker input: a fast (still seeded) hash suits them.
    index: HashMap<Box<str>, Arc<ClientState>, foldhash::fast::RandomState>,
    cache: Arc<dyn ClientAccessTokenCache>,
    endpoint: TokenEndpointClient,
    buffer: Duration,
    key_prefix: String,
    in_flight: DashMap<CacheKey, Flight, PrecomputedHashBuilder>,
    in_flight_forced: DashMap<CacheKey, Flight, PrecomputedHashBuilder>,
    next_flight_id: AtomicU64,
    /// Marks the tokens this service receives stale at their refresh time (see the module docs).
    refresh: RefreshScheduler,
}

struct ClientState {
    endpoint: ClientEndpoint,
    default_shape: RequestShape,
    default_key: CacheKey,
    /// The last token the service obtained for `default_key` (a first-level cache in front of the
    /// pluggable one): a hit on the default request reads only this.
    default_token: TokenSlot,
}

type FlightResult = Option<Result<ClientAccessToken, TokenError>>;

struct Flight {
    id: u64,
    result: watch::Receiver<FlightResult>,
}

/// Builds an [`AccessTokenManagementService`] with a custom cache or HTTP client.
pub struct AccessTokenManagementServiceBuilder {
    options: AccessTokenManagementOptions,
    cache: Option<Arc<dyn ClientAccessTokenCache>>,
    http_client: Option<reqwest::Client>,
}

impl AccessTokenManagementServiceBuilder {
    /// Uses `cache` instead of the in-memory cache.
    pub fn cache(mut self, cache: Arc<dyn ClientAccessTokenCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Uses `client` for token requests instead of a default one. The default client follows no
    /// redirects; a custom one should not either (credentials must not be sent elsewhere).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Validates the options and builds the service.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] when a token client is invalid (every problem is listed), or when the default
    /// HTTP client cannot be built.
    pub fn build(self) -> Result<AccessTokenManagementService, OptionsError> {
        let options = self.options;
        options.validate()?;
        let http = match self.http_client {
            Some(client) => client,
            None => TokenEndpointClient::default_http_client().map_err(|e| {
                OptionsError::HttpClient {
                    source: Arc::new(e),
                }
            })?,
        };
        let clients: Vec<Arc<ClientState>> = options
            .client
            .clients
            .entries()
            .iter()
            .map(|(name, client_options)| {
                let default_shape = RequestShape {
                    scope: client_options.scope.clone(),
                    resources: client_options.resources.clone(),
                    parameters: client_options.parameters.clone(),
                };
                let default_key = key_for(&options.cache_key_prefix, name, &default_shape);
                Arc::new(ClientState {
                    endpoint: ClientEndpoint::new(name, client_options.clone()),
                    default_shape,
                    default_key,
                    default_token: TokenSlot::default(),
                })
            })
            .collect();
        let index = clients
            .iter()
            .map(|c| (Box::from(&*c.endpoint.name), Arc::clone(c)))
            .collect();
        let cache = self
            .cache
            .unwrap_or_else(|| Arc::new(InMemoryClientAccessTokenCache::new()));
        Ok(AccessTokenManagementService {
            inner: Arc::new(Inner {
                clients,
                index,
                cache,
                endpoint: TokenEndpointClient::new(
                    http,
                    options.request_timeout,
                    options.max_response_body_size,
                ),
                buffer: options.cache_lifetime_buffer,
                key_prefix: options.cache_key_prefix,
                in_flight: DashMap::default(),
                in_flight_forced: DashMap::default(),
                next_flight_id: AtomicU64::new(0),
                refresh: RefreshScheduler::default(),
            }),
        })
    }
}

impl AccessTokenManagementService {
    /// A service with the in-memory cache and a default HTTP client. Fails when the options are
    /// invalid (see [`AccessTokenManagementOptions::validate`]).
    ///
    /// # Errors
    ///
    /// See [`AccessTokenManagementServiceBuilder::build`].
    pub fn new(options: AccessTokenManagementOptions) -> Result<Self, OptionsError> {
        Self::builder(options).build()
    }

    /// A builder, to plug in another cache or HTTP client.
    pub fn builder(options: AccessTokenManagementOptions) -> AccessTokenManagementServiceBuilder {
        AccessTokenManagementServiceBuilder {
            options,
            cache: None,
            http_client: None,
        }
    }

    /// The registered token client names, in registration order.
    pub fn client_names(&self) -> impl Iterator<Item = &str> {
        self.inner.clients.iter().map(|c| &*c.endpoint.name)
    }

    /// The only registered client's name, when exactly one is registered (then a token client name
    /// may be omitted wherever one is asked for).
    pub fn default_client_name(&self) -> Option<&str> {
        match self.inner.clients.as_slice() {
            [only] => Some(&only.endpoint.name),
            _ => None,
        }
    }

    /// The token cache in use.
    pub fn cache(&self) -> &Arc<dyn ClientAccessTokenCache> {
        &self.inner.cache
    }

    /// Returns a valid access token for the token client `client_name`: from the cache when it holds
    /// one that is not due for renewal, otherwise from the token endpoint (one request per cache key,
    /// shared by all concurrent callers).
    ///
    /// Must be called within a tokio runtime (a token request runs in a task of its own, so that a
    /// caller that gives up does not fail the others waiting on it).
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`] for an unregistered name, [`TokenError::ReservedParameter`] for a
    /// per-call parameter the request sets itself, and otherwise the failure of the token request
    /// (never cached: the next call tries again).
    #[doc(alias("GetAccessTokenAsync", "GetClientAccessTokenAsync"))]
    pub async fn get_client_access_token(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        let client = self.inner.client(client_name)?;
        if parameters.is_client_default() {
            let mut seen_stale = false;
            if !parameters.force_renewal {
                if let Some(token) = client.default_token.load() {
                    if token.is_fresh() {
                        return Ok(token);
                    }
                    seen_stale = true;
                } else if let Some(token) = self.inner.cache.get_cached(&client.default_key) {
                    if token.is_fresh() {
                        client.default_token.store(&token);
                        return Ok(token);
                    }
                    seen_stale = true;
                }
            }
            // Miss: boxed so that the hit path's future stays small.
            return Box::pin(Inner::acquire(
                Arc::clone(&self.inner),
                Arc::clone(client),
                client.default_key.clone(),
                None,
                parameters.force_renewal,
                seen_stale,
            ))
            .await;
        }
        Box::pin(self.get_with_parameters(client, parameters)).await
    }

    async fn get_with_parameters(
        &self,
        client: &Arc<ClientState>,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        let shape = client.shape_for(parameters)?;
        let key = key_for(&self.inner.key_prefix, &client.endpoint.name, &shape);
        let mut seen_stale = false;
        if !parameters.force_renewal {
            if let Some(token) = self.inner.cache.get_cached(&key) {
                if token.is_fresh() {
                    return Ok(token);
                }
                seen_stale = true;
            }
        }
        Inner::acquire(
            Arc::clone(&self.inner),
            Arc::clone(client),
            key,
            Some(shape),
            parameters.force_renewal,
            seen_stale,
        )
        .await
    }

    /// Removes the cached token of `client_name` for these parameters (`force_renewal` is ignored),
    /// so that the next call requests a new one.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`], [`TokenError::ReservedParameter`], or [`TokenError::Cache`] when
    /// the cache backend fails.
    #[doc(alias("DeleteAccessTokenAsync", "DeleteClientAccessTokenAsync"))]
    pub async fn delete_client_access_token(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<(), TokenError> {
        let client = self.inner.client(client_name)?;
        let key = if parameters.is_client_default() {
            client.default_token.clear();
            client.default_key.clone()
        } else {
            let shape = client.shape_for(parameters)?;
            key_for(&self.inner.key_prefix, &client.endpoint.name, &shape)
        };
        self.inner
            .cache
            .delete(&key)
            .await
            .map_err(|e| TokenError::cache(&client.endpoint.name, e))
    }
}

impl fmt::Debug for AccessTokenManagementService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenManagementService")
            .field("clients", &self.client_names().collect::<Vec<_>>())
            .field("cache_lifetime_buffer", &self.inner.buffer)
            .field("cache_key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

fn key_for(prefix: &str, client: &str, shape: &RequestShape) -> CacheKey {
    CacheKey::for_request(
        prefix,
        client,
        shape.scope.as_deref(),
        &shape.resources,
        &shape.parameters,
    )
}

impl ClientState {
    /// The request for these per-call parameters: their scope / resources replace the client's, their
    /// extra parameters are added to the client's (overriding a parameter of the same name).
    fn shape_for(&self, parameters: &TokenRequestParameters) -> Result<RequestShape, TokenError> {
        if let Some((name, _)) = parameters.parameters.iter().find(|(k, _)| is_reserved(k)) {
            return Err(TokenError::ReservedParameter {
                client: self.endpoint.name.to_string(),
                parameter: name.clone(),
            });
        }
        let defaults = &self.default_shape;
        let mut merged: Vec<(String, String)> = defaults
            .parameters
            .iter()
            .filter(|(k, _)| !parameters.parameters.iter().any(|(p, _)| p == k))
            .cloned()
            .collect();
        merged.extend(parameters.parameters.iter().cloned());
        Ok(RequestShape {
            scope: parameters.scope.clone().or_else(|| defaults.scope.clone()),
            resources: if parameters.resources.is_empty() {
                defaults.resources.clone()
            } else {
                parameters.resources.clone()
            },
            parameters: merged,
        })
    }
}

impl Inner {
    #[inline]
    fn client(&self, name: &str) -> Result<&Arc<ClientState>, TokenError> {
        let found = if self.clients.len() <= LINEAR_LOOKUP_MAX {
            self.clients.iter().find(|c| &*c.endpoint.name == name)
        } else {
            self.index.get(name)
        };
        found.ok_or_else(|| TokenError::UnknownClient {
            name: name.to_owned(),
            known: self
                .clients
                .iter()
                .map(|c| c.endpoint.name.to_string())
                .collect(),
        })
    }

    /// The miss path: optional async cache read, then join or start the flight for `key`.
    async fn acquire(
        self: Arc<Self>,
        client: Arc<ClientState>,
        key: CacheKey,
        shape: Option<RequestShape>,
        force: bool,
        seen_stale: bool,
    ) -> Result<ClientAccessToken, TokenError> {
        // `get_cached` answered `None`: the cache may be remote, ask it properly.
        if !force && !seen_stale {
            if let Some(token) = self.read_cache(&client, &key).await {
                if shape.is_none() {
                    client.default_token.store(&token);
                }
                return Ok(token);
            }
        }
        let mut result = self.join_or_start(client.clone(), key, shape, force);
        let outcome = match result.wait_for(Option::is_some).await {
            Ok(done) => (*done).clone(),
            Err(_closed) => None,
        };
        outcome.unwrap_or_else(|| {
            Err(TokenError::Aborted {
                client: client.endpoint.name.to_string(),
                endpoint: client.endpoint.endpoint.to_string(),
            })
        })
    }

    /// Reads the cache asynchronously; a backend error is logged and treated as a miss.
    async fn read_cache(&self, client: &ClientState, key: &CacheKey) -> Option<ClientAccessToken> {
        match self.cache.get(key).await {
            Ok(Some(token)) if token.is_fresh() => Some(token),
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(
                    client = %client.endpoint.name,
                    error = %error,
                    "token cache read failed; treating it as a miss"
                );
                None
            }
        }
    }

    /// Subscribes to the flight for `key`, starting it if there is none. No lock is held once this
    /// returns, and none is held while spawning.
    fn join_or_start(
        self: &Arc<Self>,
        client: Arc<ClientState>,
        key: CacheKey,
        shape: Option<RequestShape>,
        force: bool,
    ) -> watch::Receiver<FlightResult> {
        let map = if force {
            &self.in_flight_forced
        } else {
            &self.in_flight
        };
        let (sender, receiver, id) = match map.entry(key.clone()) {
            Entry::Occupied(flight) => return flight.get().result.clone(),
            Entry::Vacant(vacant) => {
                let (sender, receiver) = watch::channel(None);
                let id = self.next_flight_id.fetch_add(1, Ordering::Relaxed);
                vacant.insert(Flight {
                    id,
                    result: receiver.clone(),
                });
                (sender, receiver, id)
            }
        };
        let guard = FlightGuard {
            inner: Arc::clone(self),
            key,
            force,
            id,
            sender,
        };
        let flight = async move {
            let result = guard.inner.fly(&client, &guard.key, shape, force).await;
            guard.sender.send_replace(Some(result));
            // `guard` drops here: the flight leaves the map after its result is published (and
            // also if this task panics or is dropped with the runtime).
        };
        // Logs of the request carry the span of the caller that started it.
        tokio::spawn(flight.instrument(tracing::Span::current()));
        receiver
    }

    /// The body of a flight: re-check the cache (non-forced), request, cache the token.
    async fn fly(
        &self,
        client: &ClientState,
        key: &CacheKey,
        shape: Option<RequestShape>,
        force: bool,
    ) -> Result<ClientAccessToken, TokenError> {
        let default_request = shape.is_none();
        let token = self.fetch_or_reuse(client, key, shape, force).await?;
        if default_request {
            client.default_token.store(&token);
        }
        Ok(token)
    }

    /// A fresh token from the cache (non-forced), else a new one from the token endpoint, cached.
    async fn fetch_or_reuse(
        &self,
        client: &ClientState,
        key: &CacheKey,
        shape: Option<RequestShape>,
        force: bool,
    ) -> Result<ClientAccessToken, TokenError> {
        if !force {
            match self.cache.get_cached(key) {
                Some(token) if token.is_fresh() => return Ok(token),
                Some(_stale) => {}
                None => {
                    if let Some(token) = self.read_cache(client, key).await {
                        return Ok(token);
                    }
                }
            }
        }
        let shape = shape.as_ref().unwrap_or(&client.default_shape);
        let response = self.endpoint.request_token(&client.endpoint, shape).await?;
        let token = self.make_token(client, response)?;
        self.refresh.arm(&token);
        if let Err(error) = self.cache.set(key, token.clone()).await {
            tracing::warn!(
                client = %client.endpoint.name,
                error = %error,
                "token cache write failed; the token is returned but not cached"
            );
        }
        Ok(token)
    }

    fn make_token(
        &self,
        client: &ClientState,
        response: TokenResponse,
    ) -> Result<ClientAccessToken, TokenError> {
        let received_at = response.received_at;
        let expires_at = response.expires_in.map(|lifetime| received_at + lifetime);
        let refresh_at = response.expires_in.map(|lifetime| {
            received_at + lifetime.saturating_sub(effective_buffer(lifetime, self.buffer))
        });
        ClientAccessToken::new(
            response.access_token,
            response.token_type.as_deref(),
            expires_at,
            refresh_at,
            response.scope,
        )
        .map_err(|_| TokenError::InvalidResponse {
            client: client.endpoint.name.to_string(),
            endpoint: client.endpoint.endpoint.to_string(),
            status: response.status,
            reason:
                "the access_token or token_type contains characters not allowed in an HTTP header"
                    .to_owned(),
        })
    }
}

/// The buffer actually used for a token of this lifetime: the configured one, but never more than
/// half the lifetime (so short-lived tokens are still cached for half their life).
pub(crate) fn effective_buffer(lifetime: Duration, configured: Duration) -> Duration {
    configured.min(lifetime / 2)
}

/// Owns a flight's sender; removes the flight from the in-flight map when dropped.
struct FlightGuard {
    inner: Arc<Inner>,
    key: CacheKey,
    force: bool,
    id: u64,
    sender: watch::Sender<FlightResult>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let map = if self.force {
            &self.inner.in_flight_forced
        } else {
            &self.inner.in_flight
        };
        map.remove_if(&self.key, |_, flight| flight.id == self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_at_most_half_the_lifetime() {
        let buffer = Duration::from_secs(60);
        assert_eq!(effective_buffer(Duration::from_secs(3600), buffer), buffer);
        assert_eq!(
            effective_buffer(Duration::from_secs(120), buffer),
            Duration::from_secs(60)
        );
        assert_eq!(
            effective_buffer(Duration::from_secs(30), buffer),
            Duration::from_secs(15)
        );
        assert_eq!(effective_buffer(Duration::ZERO, buffer), Duration::ZERO);
    }
}
