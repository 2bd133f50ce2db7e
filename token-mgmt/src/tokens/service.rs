//! `AccessTokenManagementService`: cached, single-flight client credentials tokens (documented on
//! the type).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use dashmap::DashMap;
use tokio::runtime::Handle;
use tokio::sync::Notify;
use tracing::Instrument as _;

use super::cache::{
    CacheKey, ClientAccessTokenCache, InMemoryClientAccessTokenCache, KeyRequest,
    PrecomputedHashBuilder, client_fingerprint,
};
use super::clock::{Clock, Stamp, SystemClock};
use super::discovery::DiscoveryOptions;
use super::endpoint::{ClientEndpoint, RequestShape, TokenEndpointClient, TokenResponse};
use super::error::{LastFailure, OptionsError, TokenError};
use super::metrics::{self, names};
use super::options::{
    AccessTokenManagementOptions, TokenClientOptions, TokenRequestParameters, UnauthorizedRenewal,
    is_reserved,
};
use super::refresh::RenewalScheduler;
use super::retry::{RetryPolicy, random_up_to};
use super::token::{
    ClientAccessToken, Deadlines, Freshness, InvalidToken, ReceivedTimes, due_window_margin,
};

/// Up to this many clients, a name is found by a linear scan (cheaper than hashing it).
const LINEAR_LOOKUP_MAX: usize = 8;

/// The in-flight map is swept of finished entries when it grows past this (or twice its live size).
const MIN_SWEEP_THRESHOLD: usize = 1024;

/// Gets client credentials tokens for the registered token clients, from the cache when it can and
/// from the token service when it must, with one request per cache key however many callers ask at
/// once. Cheap to clone (one `Arc`).
///
/// # A token's life
///
/// Every decision is made by comparing the token's deadlines with the service [`Clock`] (by default
/// `CLOCK_BOOTTIME`, which keeps counting across suspend), on the caller's path: nothing depends on a
/// background task having run.
///
/// | state | when | a caller gets | the service |
/// | --- | --- | --- | --- |
/// | fresh | before `refresh_at` | the cached token | nothing |
/// | due | `refresh_at` ≤ now < `expires_at` − margin | the cached token, at once | renews in the background (one flight per key) |
/// | renewal failing | due, last renewal failed | the cached token, at once | retries after the cool-down; warns once per failure streak |
/// | expired / missing | now ≥ `expires_at` − margin | waits for the flight (if its token expired on the way, after a stall or a suspend, one forced request more), or the last failure during the cool-down | one flight per key |
/// | renewed | the flight stored a token | the new token | schedules its renewal |
///
/// `refresh_at` is `expires_in − cache_lifetime_buffer` after the request was *sent* (the buffer is at
/// most half the lifetime); the margin is
/// [`expiry_safety_margin`](AccessTokenManagementOptions::expiry_safety_margin). A token without
/// `expires_in` stays fresh until it is deleted or replaced by a forced renewal.
///
/// # Flights
///
/// Callers of one cache key share one *flight*: a task on the service's runtime that requests the
/// token (with the [`RetryPolicy`](super::RetryPolicy)), stores it, leaves the in-flight map and only
/// then publishes its result. A caller that arrives after the result was published never receives
/// it: it reads the cache or starts a new flight. A caller that gives up (drop, cancel) does not affect
/// the flight. A non-forced flight first re-reads the cache, so a caller that missed a token stored a
/// moment ago does not cause a second request.
///
/// A forced renewal never joins a non-forced flight (that one may hand back the rejected token); it
/// joins a forced one or starts its own. Every flight has an increasing id and a token is written only
/// by a flight newer than the one that wrote the cached token, so a slow older flight never overwrites
/// a newer token. Forced renewals of one key are at most one per
/// [`min_forced_renewal_interval`](AccessTokenManagementOptions::min_forced_renewal_interval).
///
/// Errors are never cached. After a failed flight, callers that have no valid token get that failure,
/// without a request, during [`failure_cooldown`](AccessTokenManagementOptions::failure_cooldown).
///
/// # Runtime
///
/// Flights and the background renewal run on one runtime: by default a small one the process shares
/// (one thread, started on first use), so a caller on any runtime, in `block_on`, or on a runtime that
/// then sits idle never waits for a task nobody drives, and pooled token endpoint connections are
/// always driven by the runtime that opened them.
/// [`AccessTokenManagementServiceBuilder::runtime`] binds the service to a runtime of yours instead.
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

pub(crate) struct Inner {
    /// The token clients; replaced whole when a client is added, replaced or removed at run time.
    clients: ArcSwap<ClientTable>,
    cache: Arc<dyn ClientAccessTokenCache>,
    /// `cache` itself when it is the default in-memory cache: read without dynamic dispatch, so
    /// that a hit inlines the lookup.
    memory: Option<Arc<InMemoryClientAccessTokenCache>>,
    endpoint: TokenEndpointClient,
    pub(crate) clock: Arc<dyn Clock>,
    /// `clock` is the default [`SystemClock`]: read directly, so that a hit inlines the read.
    system_clock: bool,
    runtime: Handle,
    pub(crate) policy: Policy,
    key_prefix: String,
    discovery: DiscoveryOptions,
    keys: DashMap<CacheKey, KeyState, PrecomputedHashBuilder>,
    sweep_threshold: AtomicUsize,
    /// Serialises run-time client changes.
    client_changes: std::sync::Mutex<()>,
    next_flight_id: AtomicU64,
    renewals: RenewalScheduler,
}

pub(crate) struct Policy {
    buffer: Duration,
    safety_margin: Duration,
    retry: RetryPolicy,
    cooldown: Duration,
    pub(crate) background_refresh: bool,
    pub(crate) idle_timeout: Option<Duration>,
    min_forced_interval: Duration,
    pub(crate) max_keys: usize,
    renew_on_unauthorized: UnauthorizedRenewal,
}

/// The registered clients, in registration order, with an index by name.
#[derive(Default)]
struct ClientTable {
    clients: Vec<Arc<ClientState>>,
    /// Client names are configuration, not attacker input: a fast (still seeded) hash suits them.
    index: HashMap<Box<str>, Arc<ClientState>, foldhash::fast::RandomState>,
}

impl ClientTable {
    fn new(clients: Vec<Arc<ClientState>>) -> Self {
        let index = clients
            .iter()
            .map(|c| (Box::from(&*c.endpoint.name), Arc::clone(c)))
            .collect();
        Self { clients, index }
    }

    #[inline(always)]
    fn get(&self, name: &str) -> Option<&Arc<ClientState>> {
        if self.clients.len() <= LINEAR_LOOKUP_MAX {
            self.clients.iter().find(|c| &*c.endpoint.name == name)
        } else {
            self.index.get(name)
        }
    }

    fn unknown(&self, name: &str) -> TokenError {
        TokenError::UnknownClient {
            name: name.to_owned(),
            known: self
                .clients
                .iter()
                .map(|c| c.endpoint.name.to_string())
                .collect(),
        }
    }
}

/// `repr(C)` with what a hit reads first: the key and the counter share the state's first cache line
/// (with the `Arc` counts), whatever the size of the rest.
#[repr(C)]
pub(crate) struct ClientState {
    default_key: CacheKey,
    hits: ::metrics::Counter,
    pub(crate) endpoint: ClientEndpoint,
    fingerprint: String,
    default_shape: RequestShape,
}

/// What [`Inner::change_clients`] does.
enum ClientChange {
    Add,
    Replace,
    Remove,
}

/// What every client's state is built with.
struct ClientContext<'a> {
    key_prefix: &'a str,
    discovery: &'a DiscoveryOptions,
    clock: &'a Arc<dyn Clock>,
    runtime: &'a Handle,
    endpoint: &'a TokenEndpointClient,
}

impl ClientState {
    fn new(name: &str, options: TokenClientOptions, context: &ClientContext<'_>) -> Self {
        // A discovered client is identified by its authority: the endpoint is not known yet.
        let identity = client_fingerprint(options.location().as_str(), &options.client_id);
        let default_shape = RequestShape {
            scope: options.scope.clone(),
            resources: options.resources.clone(),
            parameters: options.parameters.clone(),
        };
        let endpoint = ClientEndpoint::new(name, options, context.discovery, context.clock);
        endpoint.prefetch(context.runtime, context.endpoint);
        let key_prefix = context.key_prefix;
        // A DPoP client's tokens are bound to its key: the key's thumbprint is part of every key.
        let fingerprint = endpoint.with_dpop_thumbprint(identity);
        let default_key = CacheKey::for_shape(key_prefix, name, &fingerprint, &default_shape);
        Self {
            endpoint,
            fingerprint,
            default_shape,
            default_key,
            hits: metrics::cache_hits(name),
        }
    }
}

/// One token request: which client, under which key, with which shape (`None`: the client's
/// default).
#[derive(Clone)]
pub(crate) struct Request {
    pub(crate) client: Arc<ClientState>,
    pub(crate) key: CacheKey,
    shape: Option<Arc<RequestShape>>,
}

impl Request {
    fn shape(&self) -> &RequestShape {
        self.shape.as_deref().unwrap_or(&self.client.default_shape)
    }

    /// Whether this is its client's default request (no per-call parameters).
    pub(crate) fn is_default(&self) -> bool {
        self.shape.is_none()
    }
}

/// What the service remembers about a key besides its token: the running flight, the last failure
/// and when it was last force-renewed.
#[derive(Default)]
struct KeyState {
    flight: Option<Flight>,
    /// Flights of this key still running (a forced flight may run beside an older one).
    running: u32,
    failure: Option<Failure>,
    failure_streak: u32,
    last_forced: Option<Stamp>,
    /// The id of the flight whose token was last written; held while writing.
    written: Arc<tokio::sync::Mutex<u64>>,
}

struct Failure {
    until: Stamp,
    error: TokenError,
}

/// `None`: the flight ended without a result (its task panicked, or its runtime shut down).
type FlightResult = Option<Result<ClientAccessToken, TokenError>>;

struct Flight {
    id: u64,
    forced: bool,
    outcome: Arc<FlightOutcome>,
}

/// A flight's result, published once to every caller that joined the flight.
///
/// Callers are woken one after the other, each by the one before: the flight (on the token
/// runtime) wakes the first, and each woken caller wakes the next from its own worker thread, where
/// the wake-up lands in the local run queue and the next caller runs on the same core with the
/// shared state still in its cache. Waking all of them at once from the token runtime made every
/// wake-up a remote one and had the worker threads contend for the same reference counts.
#[derive(Default)]
struct FlightOutcome {
    result: OnceLock<FlightResult>,
    woken: Notify,
}

impl FlightOutcome {
    /// Waits for the result. Cancel-safe: a caller dropped after it was woken, before it woke the
    /// next one, hands its wake-up on (`Notified` does so when dropped).
    async fn wait(&self) -> FlightResult {
        let mut woken = std::pin::pin!(self.woken.notified());
        loop {
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            // Registered before the result is read again, so that a result published in between
            // still wakes this caller.
            woken.as_mut().enable();
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            woken.as_mut().await;
            self.woken.notify_one();
            woken.set(self.woken.notified());
        }
    }

    /// Wakes every caller still waiting (the chain's fallback, see [`WAKE_ALL_AFTER`]).
    fn wake_all(&self) {
        self.woken.notify_waiters();
    }
}

/// How long after publishing a flight wakes every caller still waiting. The chain of wake-ups
/// stops at a caller that was woken but is never polled again (kept in a `select!` that moved on, a
/// task stuck on blocking work): the callers behind it then get the result this much later, not
/// never. A healthy chain has woken 10,000 callers well before (BENCHMARKS.md section 3).
const WAKE_ALL_AFTER: Duration = Duration::from_millis(10);

/// The flight's side of its [`FlightOutcome`]: publishes the result, or `None` if the flight is
/// dropped unfinished, and wakes the callers.
struct Publisher(Arc<FlightOutcome>);

impl Publisher {
    /// Publishes the result and wakes the first caller. The flight then calls
    /// [`FlightOutcome::wake_all`] [`WAKE_ALL_AFTER`] later.
    fn publish(self, result: Result<ClientAccessToken, TokenError>) -> Arc<FlightOutcome> {
        let outcome = Arc::clone(&self.0);
        let _ = outcome.result.set(Some(result));
        outcome
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        if self.0.result.set(None).is_ok() {
            // The flight ended unfinished (its task panicked, its runtime shut down): no chain.
            self.0.wake_all();
        } else {
            self.0.woken.notify_one();
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The caller has no valid token and waits.
    Wait,
    /// A new token, not the cached one (`force_renewal`).
    Forced,
    /// The caller's token was rejected by an API: a new one, at most one per key per
    /// `min_forced_renewal_interval`.
    Rejected,
    /// The caller has a valid token; renew it without anyone waiting.
    Background,
}

enum Started {
    Wait(Arc<FlightOutcome>),
    Failed(TokenError),
    /// Forced renewals are rate-limited: use the current token.
    RateLimited,
    /// Background: a flight is already running or the key is cooling down after a failure.
    Nothing {
        failing: bool,
    },
}

/// Builds an [`AccessTokenManagementService`] with a custom cache, HTTP client, clock or runtime.
pub struct AccessTokenManagementServiceBuilder {
    options: AccessTokenManagementOptions,
    cache: Option<Arc<dyn ClientAccessTokenCache>>,
    http_client: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
    runtime: Option<Handle>,
}

impl AccessTokenManagementServiceBuilder {
    /// Uses `cache` instead of the in-memory cache.
    pub fn cache(mut self, cache: Arc<dyn ClientAccessTokenCache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// Uses `client` for token requests instead of a default one (for a custom CA, a proxy, a client
    /// certificate). The default client follows no redirects; a custom one should not either
    /// (credentials must not be sent elsewhere).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Uses `clock` instead of [`SystemClock`] (tests use a [`ManualClock`](super::ManualClock)).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Runs token requests and background renewals on `runtime` instead of the process's shared
    /// token runtime. The runtime must be driven for as long as the service is used (a
    /// multi-threaded runtime, or callers that only ever call from inside it).
    pub fn runtime(mut self, runtime: Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Validates the options and builds the service.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] when a token client is invalid (every problem is listed), or when the default
    /// HTTP client or the shared token runtime cannot be set up.
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
        let runtime = match self.runtime {
            Some(runtime) => runtime,
            None => shared_runtime().map_err(|e| OptionsError::Runtime {
                source: Arc::new(e),
            })?,
        };
        let system_clock = self.clock.is_none();
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let endpoint = TokenEndpointClient::new(
            http,
            options.request_timeout,
            options.max_response_body_size,
        );
        let context = ClientContext {
            key_prefix: &options.cache_key_prefix,
            discovery: &options.discovery,
            clock: &clock,
            runtime: &runtime,
            endpoint: &endpoint,
        };
        let clients: Vec<Arc<ClientState>> = options
            .client
            .clients
            .entries()
            .iter()
            .map(|(name, client_options)| {
                Arc::new(ClientState::new(name, client_options.clone(), &context))
            })
            .collect();
        let (cache, memory): (Arc<dyn ClientAccessTokenCache>, _) = match self.cache {
            Some(cache) => (cache, None),
            None => {
                let memory = Arc::new(InMemoryClientAccessTokenCache::with_max_entries(
                    options.max_cached_tokens,
                ));
                (memory.clone(), Some(memory))
            }
        };
        Ok(AccessTokenManagementService {
            inner: Arc::new(Inner {
                clients: ArcSwap::from_pointee(ClientTable::new(clients)),
                cache,
                memory,
                endpoint,
                clock,
                system_clock,
                runtime,
                policy: Policy {
                    buffer: options.cache_lifetime_buffer,
                    safety_margin: options.expiry_safety_margin,
                    retry: options.retry,
                    cooldown: options.failure_cooldown,
                    background_refresh: options.background_refresh,
                    idle_timeout: options.idle_timeout,
                    min_forced_interval: options.min_forced_renewal_interval,
                    max_keys: options.max_cached_tokens,
                    renew_on_unauthorized: options.renew_on_unauthorized,
                },
                key_prefix: options.cache_key_prefix,
                discovery: options.discovery,
                keys: DashMap::default(),
                sweep_threshold: AtomicUsize::new(MIN_SWEEP_THRESHOLD),
                client_changes: std::sync::Mutex::new(()),
                next_flight_id: AtomicU64::new(1),
                renewals: RenewalScheduler::default(),
            }),
        })
    }
}

/// The process's shared token runtime: one thread, started on first use, driven for the life of the
/// process.
fn shared_runtime() -> std::io::Result<Handle> {
    static RUNTIME: OnceLock<Handle> = OnceLock::new();
    if let Some(handle) = RUNTIME.get() {
        return Ok(handle.clone());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("token-mgmt")
        .build()?;
    let handle = runtime.handle().clone();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("token-mgmt".to_owned())
        .spawn(move || {
            let _ = ready.send(());
            runtime.block_on(std::future::pending::<()>());
        })?;
    let _ = started.recv();
    // Two racing first callers may both start one; the loser's thread idles harmlessly.
    Ok(RUNTIME.get_or_init(|| handle).clone())
}

impl AccessTokenManagementService {
    /// Builds the service with the in-memory cache and a default HTTP client.
    ///
    /// # Errors
    ///
    /// See [`AccessTokenManagementServiceBuilder::build`].
    pub fn new(options: AccessTokenManagementOptions) -> Result<Self, OptionsError> {
        Self::builder(options).build()
    }

    /// A builder, to plug in another cache, HTTP client, clock or runtime.
    pub fn builder(options: AccessTokenManagementOptions) -> AccessTokenManagementServiceBuilder {
        AccessTokenManagementServiceBuilder {
            options,
            cache: None,
            http_client: None,
            clock: None,
            runtime: None,
        }
    }

    /// The registered token client names, in registration order.
    pub fn client_names(&self) -> Vec<String> {
        let table = self.inner.clients.load();
        table
            .clients
            .iter()
            .map(|c| c.endpoint.name.to_string())
            .collect()
    }

    /// The only registered client's name, when exactly one is registered (then a token client name
    /// may be omitted wherever one is asked for).
    pub fn default_client_name(&self) -> Option<String> {
        match self.inner.clients.load().clients.as_slice() {
            [only] => Some(only.endpoint.name.to_string()),
            _ => None,
        }
    }

    /// Registers a token client while the service runs (a tenant that just signed up, say), with
    /// the same validation as at build.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] for invalid options or a name already registered.
    pub fn add_client(&self, name: &str, options: TokenClientOptions) -> Result<(), OptionsError> {
        self.inner
            .change_clients(name, Some(options), ClientChange::Add)
    }

    /// Replaces the options of a registered token client (a rotated secret, another scope). Cached
    /// tokens are kept when the request is unchanged (same endpoint, client id, scope, resources and
    /// parameters: a new secret or key alone keeps valid tokens); otherwise the client's tokens are
    /// never served again. Calls already in progress finish with the options they started with.
    ///
    /// # Errors
    ///
    /// [`OptionsError`] for invalid options or a name that is not registered.
    pub fn replace_client(
        &self,
        name: &str,
        options: TokenClientOptions,
    ) -> Result<(), OptionsError> {
        self.inner
            .change_clients(name, Some(options), ClientChange::Replace)
    }

    /// Removes a token client: later calls for it (and HTTP clients bound to it) fail with
    /// [`TokenError::UnknownClient`] naming it, and its tokens are never served again.
    ///
    /// # Errors
    ///
    /// [`OptionsError::UnknownClient`] for a name that is not registered.
    pub fn remove_client(&self, name: &str) -> Result<(), OptionsError> {
        self.inner.change_clients(name, None, ClientChange::Remove)
    }

    /// The token client `name`'s state (its endpoint, DPoP prover, ...).
    pub(crate) fn client_state(&self, name: &str) -> Result<Arc<ClientState>, TokenError> {
        self.inner.client(name)
    }

    /// The token cache in use.
    pub fn cache(&self) -> &Arc<dyn ClientAccessTokenCache> {
        &self.inner.cache
    }

    /// The clock that decides freshness.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Which 401 responses make an HTTP handler renew the token.
    pub fn renew_on_unauthorized(&self) -> UnauthorizedRenewal {
        self.inner.policy.renew_on_unauthorized
    }

    /// The cache key of `client_name`'s token for these parameters (`force_renewal` is ignored).
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`] or [`TokenError::ReservedParameter`].
    pub fn cache_key(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<CacheKey, TokenError> {
        Ok(self.inner.request(client_name, parameters)?.key)
    }

    /// Returns a valid access token for the token client `client_name`: from the cache when it holds
    /// one that has not expired (one that is due for renewal is still returned at once, and renewed
    /// in the background), otherwise from the token endpoint (one request per cache key, shared by
    /// all concurrent callers). Works from any runtime, or none.
    ///
    /// # Errors
    ///
    /// [`TokenError::UnknownClient`] for an unregistered name, [`TokenError::ReservedParameter`] for a
    /// per-call parameter the request sets itself, and otherwise the failure of the token request
    /// (never cached; during the failure cool-down callers without a valid token get the same
    /// failure without a new request).
    #[doc(alias("GetAccessTokenAsync", "GetClientAccessTokenAsync"))]
    #[inline]
    pub fn get_client_access_token<'a>(
        &'a self,
        client_name: &'a str,
        parameters: &'a TokenRequestParameters,
    ) -> impl Future<Output = Result<ClientAccessToken, TokenError>> + Send + 'a {
        GetToken {
            service: self,
            client_name,
            parameters,
            miss: None,
        }
    }

    /// The miss path's future, built out of line and boxed: the hit's future stays small.
    #[inline(never)]
    fn miss<'a>(
        &'a self,
        client_name: &'a str,
        parameters: &'a TokenRequestParameters,
    ) -> Miss<'a> {
        Box::pin(self.inner.get_uncached(client_name, parameters))
    }

    /// The token [`get_client_access_token`](Self::get_client_access_token) would return without
    /// waiting: the cached one if it is fresh, or due (its renewal then starts in the background).
    /// `None` when that call would wait or fail: a miss, an expired token, parameters other than the
    /// client's defaults, an unknown client.
    pub(crate) fn ready_token(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Option<ClientAccessToken> {
        self.inner.hit(client_name, parameters)
    }

    /// A token to replace `client_name`'s token that an API rejected (a 401): a forced renewal,
    /// coalesced with other callers' and rate-limited per key to one per
    /// [`min_forced_renewal_interval`](AccessTokenManagementOptions::min_forced_renewal_interval);
    /// within the interval, the current token (which the caller can compare with the one rejected).
    ///
    /// # Errors
    ///
    /// As [`get_client_access_token`](Self::get_client_access_token).
    pub async fn renew_rejected_token(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        let request = self.inner.request(client_name, parameters)?;
        Box::pin(self.inner.acquire(request, Mode::Rejected)).await
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
        let request = self.inner.request(client_name, parameters)?;
        self.inner
            .cache
            .delete(&request.key)
            .await
            .map_err(|e| TokenError::cache(&request.client.endpoint.name, e))
    }
}

type Miss<'a> = Pin<Box<dyn Future<Output = Result<ClientAccessToken, TokenError>> + Send + 'a>>;

/// [`AccessTokenManagementService::get_client_access_token`]'s future. A plain future rather than an
/// `async fn`'s state machine, with an inlinable `poll`: the hit (tried on the first poll, so that
/// freshness is decided when the caller awaits, not when it made the future) is compiled into the
/// caller, and only a miss builds the boxed future of the miss path. As an `async fn`, whether the
/// compiler inlined the hit into callers changed with unrelated edits (and the hit's cost by half).
struct GetToken<'a> {
    service: &'a AccessTokenManagementService,
    client_name: &'a str,
    parameters: &'a TokenRequestParameters,
    miss: Option<Miss<'a>>,
}

impl Future for GetToken<'_> {
    type Output = Result<ClientAccessToken, TokenError>;

    #[inline(always)]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.miss.is_none() {
            if let Some(token) = this.service.inner.hit(this.client_name, this.parameters) {
                return Poll::Ready(Ok(token));
            }
        }
        let (service, client_name, parameters) = (this.service, this.client_name, this.parameters);
        this.miss
            .get_or_insert_with(|| service.miss(client_name, parameters))
            .as_mut()
            .poll(cx)
    }
}

impl fmt::Debug for AccessTokenManagementService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessTokenManagementService")
            .field("clients", &self.client_names())
            .field("cache_lifetime_buffer", &self.inner.policy.buffer)
            .field("cache_key_prefix", &self.inner.key_prefix)
            .finish_non_exhaustive()
    }
}

fn forced(parameters: &TokenRequestParameters) -> Mode {
    if parameters.force_renewal {
        Mode::Forced
    } else {
        Mode::Wait
    }
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
    /// The hit: a fresh or due token of the client's default request, straight from the cache,
    /// without a future, an allocation or a lock held. `None` for anything else (an unknown
    /// client, per-call parameters, a forced renewal, an expired or missing token), which
    /// [`get_uncached`](Self::get_uncached) handles.
    #[inline]
    fn hit(
        self: &Arc<Self>,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Option<ClientAccessToken> {
        if parameters.force_renewal || !parameters.is_client_default() {
            return None;
        }
        let table = self.clients.load();
        let client = table.get(client_name)?;
        let token = self.get_cached(&client.default_key)?;
        let now = self.now();
        match token.freshness_at(now) {
            Freshness::Fresh => {
                token.touch(now);
                client.hits.increment(1);
                Some(token)
            }
            Freshness::Due => Some(self.serve_due(&self.default_request(client), token, now)),
            Freshness::Expired => None,
        }
    }

    /// Everything but a hit: resolves the client (failing for an unknown one), then reads the
    /// cache (which may be remote) and joins or starts the key's flight.
    async fn get_uncached(
        self: &Arc<Self>,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        let request = self.request(client_name, parameters)?;
        self.acquire(request, forced(parameters)).await
    }

    /// The cache's synchronous read; statically dispatched (inlined) for the default cache.
    #[inline(always)]
    fn get_cached(&self, key: &CacheKey) -> Option<ClientAccessToken> {
        match &self.memory {
            Some(memory) => memory.get_cached(key),
            None => self.cache.get_cached(key),
        }
    }

    /// The service clock; read directly (inlined) when it is the default [`SystemClock`].
    #[inline(always)]
    pub(crate) fn now(&self) -> Stamp {
        if self.system_clock {
            SystemClock.now()
        } else {
            self.injected_now()
        }
    }

    /// An injected clock's `now`, out of line: the branch to it stays off the hit's code.
    #[cold]
    #[inline(never)]
    fn injected_now(&self) -> Stamp {
        self.clock.now()
    }

    fn client(&self, name: &str) -> Result<Arc<ClientState>, TokenError> {
        let table = self.clients.load();
        table.get(name).cloned().ok_or_else(|| table.unknown(name))
    }

    /// Adds, replaces or removes a client: a new table is swapped in (under a lock, so concurrent
    /// changes do not lose each other), and tokens of a request that no longer exists are dropped.
    fn change_clients(
        &self,
        name: &str,
        options: Option<TokenClientOptions>,
        change: ClientChange,
    ) -> Result<(), OptionsError> {
        if let Some(options) = &options {
            let mut problems = options.problems(name);
            match problems.len() {
                0 => {}
                1 => return Err(problems.remove(0)),
                _ => return Err(OptionsError::Multiple(problems)),
            }
        }
        let _serialised = self
            .client_changes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let table = self.clients.load_full();
        let existing = table.get(name).cloned();
        match (&change, &existing) {
            (ClientChange::Add, Some(_)) => {
                return Err(OptionsError::DuplicateClient {
                    client: name.to_owned(),
                });
            }
            (ClientChange::Replace | ClientChange::Remove, None) => {
                return Err(OptionsError::UnknownClient {
                    client: name.to_owned(),
                });
            }
            _ => {}
        }
        let context = ClientContext {
            key_prefix: &self.key_prefix,
            discovery: &self.discovery,
            clock: &self.clock,
            runtime: &self.runtime,
            endpoint: &self.endpoint,
        };
        let replacement =
            options.map(|options| Arc::new(ClientState::new(name, options, &context)));
        let mut clients: Vec<Arc<ClientState>> = table
            .clients
            .iter()
            .filter(|c| &*c.endpoint.name != name)
            .cloned()
            .collect();
        match (&existing, &replacement) {
            (Some(old), Some(new)) => {
                let at = table
                    .clients
                    .iter()
                    .position(|c| Arc::ptr_eq(c, old))
                    .unwrap_or(clients.len());
                clients.insert(at, Arc::clone(new));
            }
            (None, Some(new)) => clients.push(Arc::clone(new)),
            _ => {}
        }
        self.clients.store(Arc::new(ClientTable::new(clients)));
        // The old client's tokens are unreachable from the new table, so never served again to a
        // call that starts now; calls already in progress may still finish with them. The renewal
        // task drops them at their refresh time instead of renewing them.
        Ok(())
    }

    fn default_request(&self, client: &Arc<ClientState>) -> Request {
        Request {
            client: Arc::clone(client),
            key: client.default_key.clone(),
            shape: None,
        }
    }

    fn request_for(
        &self,
        client: &Arc<ClientState>,
        parameters: &TokenRequestParameters,
    ) -> Result<Request, TokenError> {
        if parameters.is_client_default() {
            return Ok(self.default_request(client));
        }
        let shape = client.shape_for(parameters)?;
        Ok(Request {
            client: Arc::clone(client),
            key: CacheKey::for_shape(
                &self.key_prefix,
                &client.endpoint.name,
                &client.fingerprint,
                &shape,
            ),
            shape: Some(Arc::new(shape)),
        })
    }

    fn request(
        &self,
        client_name: &str,
        parameters: &TokenRequestParameters,
    ) -> Result<Request, TokenError> {
        let client = self.client(client_name)?;
        self.request_for(&client, parameters)
    }

    /// A due token is served at once; its renewal starts in the background.
    fn serve_due(
        self: &Arc<Self>,
        request: &Request,
        token: ClientAccessToken,
        now: Stamp,
    ) -> ClientAccessToken {
        token.touch(now);
        request.client.hits.increment(1);
        // In the renewal window nearly every call finds the renewal already running: a shared read
        // answers those without the shard's write lock that `start` takes (which every caller of
        // the key would otherwise queue on).
        let running = self
            .keys
            .get(&request.key)
            .filter(|state| state.flight.is_some())
            .map(|state| state.failure_streak > 0);
        let failing = match running {
            Some(failing) => failing,
            None => matches!(
                self.start(request, Mode::Background),
                Started::Nothing { failing: true }
            ),
        };
        if failing {
            metrics::count(names::STALE_TOKENS_SERVED, &request.client.endpoint.name);
        }
        token
    }

    /// The miss path: the cache (which may be remote), then the flight for the key.
    async fn acquire(
        self: &Arc<Self>,
        request: Request,
        mode: Mode,
    ) -> Result<ClientAccessToken, TokenError> {
        if mode == Mode::Wait {
            // A token that is expired when the clock is read may have been replaced since it was
            // read: this thread was descheduled in between, or the machine slept, while the
            // renewal stored its successor. The cache is read once more before waiting for a flight.
            for _ in 0..2 {
                let Some(token) = self.read_cache(&request).await else {
                    break;
                };
                let now = self.now();
                match token.freshness_at(now) {
                    Freshness::Fresh => {
                        token.touch(now);
                        request.client.hits.increment(1);
                        return Ok(token);
                    }
                    Freshness::Due => return Ok(self.serve_due(&request, token, now)),
                    Freshness::Expired => {}
                }
            }
            metrics::count(names::CACHE_MISSES, &request.client.endpoint.name);
        }
        let outcome = match self.start(&request, mode) {
            Started::Wait(outcome) => outcome,
            Started::Failed(error) => return Err(error),
            Started::RateLimited => return Box::pin(self.acquire(request, Mode::Wait)).await,
            Started::Nothing { .. } => unreachable!("only background starts do nothing"),
        };
        let outcome = outcome.wait().await;
        match outcome {
            // The flight's request was sent long before it returned (a stall, a suspend) and its
            // token expired on the way: request one for this caller instead (once: a forced
            // flight's token is returned as it comes).
            Some(Ok(token))
                if mode == Mode::Wait && token.freshness_at(self.now()) == Freshness::Expired =>
            {
                Box::pin(self.acquire(request, Mode::Forced)).await
            }
            outcome => outcome.unwrap_or_else(|| Err(aborted(&request.client))),
        }
    }

    /// Reads the cache (the synchronous path first); a backend error is logged and treated as a miss.
    /// A token without deadlines (rebuilt by a remote cache) is anchored on the clock.
    async fn read_cache(&self, request: &Request) -> Option<ClientAccessToken> {
        self.read_cache_key(&request.key, &request.client.endpoint.name)
            .await
    }

    /// [`read_cache`](Self::read_cache) by key; `client` names the key's client in the log.
    async fn read_cache_key(&self, key: &CacheKey, client: &str) -> Option<ClientAccessToken> {
        let token = match self.get_cached(key) {
            Some(token) => token,
            // The in-memory cache answers `get` as it answered `get_cached`.
            None if self.memory.is_some() => return None,
            None => match self.cache.get(key).await {
                Ok(token) => token?,
                Err(error) => {
                    tracing::warn!(
                        client,
                        error = %error,
                        "token cache read failed; treating it as a miss"
                    );
                    return None;
                }
            },
        };
        Some(token.anchored(self.clock.as_ref(), self.policy.safety_margin))
    }

    /// Joins or starts the flight for the request's key, as `mode` allows. No lock is held once this
    /// returns, and none is held while spawning.
    fn start(self: &Arc<Self>, request: &Request, mode: Mode) -> Started {
        let now = self.now();
        let mut entry = self.keys.entry(request.key.clone()).or_default();
        let state = entry.value_mut();
        let cooling = state.failure.as_ref().filter(|f| now < f.until);
        match mode {
            Mode::Wait => {
                if let Some(flight) = &state.flight {
                    return Started::Wait(Arc::clone(&flight.outcome));
                }
                if let Some(failure) = cooling {
                    return Started::Failed(failure.error.clone());
                }
            }
            Mode::Background => {
                if state.flight.is_some() || cooling.is_some() {
                    return Started::Nothing {
                        failing: state.failure_streak > 0,
                    };
                }
            }
            Mode::Forced | Mode::Rejected => {
                if let Some(flight) = state.flight.as_ref().filter(|f| f.forced) {
                    return Started::Wait(Arc::clone(&flight.outcome));
                }
                if mode == Mode::Rejected {
                    let recent = state
                        .last_forced
                        .is_some_and(|at| now < at.saturating_add(self.policy.min_forced_interval));
                    if recent {
                        return Started::RateLimited;
                    }
                    state.last_forced = Some(now);
                }
            }
        }
        let forced = matches!(mode, Mode::Forced | Mode::Rejected);
        let id = self.next_flight_id.fetch_add(1, Ordering::Relaxed);
        let outcome = Arc::new(FlightOutcome::default());
        let publisher = Publisher(Arc::clone(&outcome));
        state.flight = Some(Flight {
            id,
            forced,
            outcome: Arc::clone(&outcome),
        });
        state.running += 1;
        let written = Arc::clone(&state.written);
        drop(entry);
        if mode == Mode::Background {
            metrics::count(names::BACKGROUND_RENEWALS, &request.client.endpoint.name);
        }
        let guard = FlightGuard {
            inner: Arc::clone(self),
            key: request.key.clone(),
            id,
            finished: false,
        };
        let span = tracing::info_span!(
            parent: None,
            "token_request",
            client = %request.client.endpoint.name,
            endpoint = %request.client.endpoint.endpoint,
            forced,
        );
        let request = request.clone();
        let flight = async move {
            let mut guard = guard;
            let result = guard.inner.fly(&request, id, forced, &written).await;
            guard.inner.finish(&request, id, result.as_ref().err());
            guard.finished = true;
            // The flight has left the map: only callers that joined it get this result.
            publisher.publish(result)
        };
        let flight = flight.instrument(span);
        // The fallback waits outside the flight: its span, its guard and its client are done with.
        // It waits in a task of its own, so that the flight's task, sized for the whole request,
        // is freed as soon as the flight ends (a burst of flights would otherwise hold each one's
        // memory for the fallback's wait).
        let runtime = self.runtime.clone();
        drop(self.runtime.spawn(async move {
            let outcome = flight.await;
            drop(runtime.spawn(async move {
                tokio::time::sleep(WAKE_ALL_AFTER).await;
                outcome.wake_all();
            }));
        }));
        Started::Wait(outcome)
    }

    /// The body of a flight: re-check the cache (non-forced), request, store if newest.
    async fn fly(
        self: &Arc<Self>,
        request: &Request,
        id: u64,
        forced: bool,
        written: &tokio::sync::Mutex<u64>,
    ) -> Result<ClientAccessToken, TokenError> {
        let previous = self.read_cache(request).await;
        if !forced {
            if let Some(token) = previous.as_ref() {
                if token.freshness_at(self.now()) == Freshness::Fresh {
                    return Ok(token.clone());
                }
            }
        }
        let lock = match self.cache.lock_for_request(&request.key).await {
            Ok(lock) => lock,
            Err(error) => {
                tracing::warn!(
                    client = %request.client.endpoint.name,
                    error = %error,
                    "token cache lock failed; requesting without it"
                );
                None
            }
        };
        if !forced && lock.is_none() {
            // Another process may have stored a token while this one waited.
            if let Some(token) = self.read_cache(request).await {
                if token.freshness_at(self.now()) == Freshness::Fresh {
                    return Ok(token);
                }
            }
        }
        let token = self.request_with_retries(request).await?;
        if let Some(previous) = previous.as_ref().filter(|_| !forced) {
            // A background renewal keeps the key's last use: an unused key still ages out.
            token.inherit_last_use(previous);
        }
        let mut last_written = written.lock().await;
        if id > *last_written {
            *last_written = id;
            if let Err(error) = self.cache.set(&request.key, token.clone()).await {
                tracing::warn!(
                    client = %request.client.endpoint.name,
                    error = %error,
                    "token cache write failed; the token is returned but not cached"
                );
            }
            if self.policy.background_refresh {
                self.renewals.schedule(self, request, &token);
            }
        }
        drop(lock);
        Ok(token)
    }

    /// Requests a token, retrying transient failures as the policy says.
    async fn request_with_retries(
        &self,
        request: &Request,
    ) -> Result<ClientAccessToken, TokenError> {
        let client = &request.client;
        let name = &*client.endpoint.name;
        let first = self.now();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let sent = self.now();
            let sent_wall = self.clock.system_time();
            let outcome = self
                .endpoint
                .request_token(&client.endpoint, request.shape())
                .instrument(tracing::debug_span!("attempt", attempt))
                .await;
            let took = self.now().saturating_duration_since(sent);
            metrics::token_request(name, outcome.is_ok(), took);
            let error = match outcome {
                Ok(response) => return self.make_token(client, response, sent, sent_wall),
                Err(error) => error,
            };
            if !error.is_transient() {
                return Err(error);
            }
            let elapsed = self.now().saturating_duration_since(first);
            match self
                .policy
                .retry
                .delay_after(attempt, elapsed, error.retry_after())
            {
                Some(delay) => {
                    metrics::count(names::TOKEN_REQUEST_RETRIES, name);
                    tracing::debug!(client = name, %error, ?delay, "retrying the token request");
                    self.clock.sleep(delay).await;
                }
                None => {
                    return Err(TokenError::Unavailable {
                        client: name.to_owned(),
                        endpoint: client.endpoint.endpoint.to_string(),
                        attempts: attempt,
                        source: LastFailure::new(error),
                    });
                }
            }
        }
    }

    /// Builds the token, its times counted from when the request was sent.
    fn make_token(
        &self,
        client: &ClientState,
        response: TokenResponse,
        sent: Stamp,
        sent_wall: std::time::SystemTime,
    ) -> Result<ClientAccessToken, TokenError> {
        let times = match response.expires_in {
            Some(lifetime) => {
                let buffer = effective_buffer(lifetime, self.policy.buffer);
                let renew_after = lifetime.saturating_sub(buffer);
                let refresh = sent.saturating_add(renew_after);
                let expiry = sent
                    .saturating_add(lifetime)
                    .saturating_sub(due_window_margin(buffer, self.policy.safety_margin))
                    .max(refresh);
                ReceivedTimes {
                    expires_at: Some(sent_wall + lifetime),
                    refresh_at: Some(sent_wall + renew_after),
                    deadlines: Deadlines { refresh, expiry },
                    received: sent,
                }
            }
            None => ReceivedTimes {
                expires_at: None,
                refresh_at: None,
                deadlines: Deadlines {
                    refresh: Stamp::NEVER,
                    expiry: Stamp::NEVER,
                },
                received: sent,
            },
        };
        ClientAccessToken::received(
            response.access_token,
            response.token_type.as_deref(),
            times,
            response.scope,
            client.endpoint.dpop.is_some(),
        )
        .inspect(|token| client.endpoint.received(token))
        .map_err(|error| match error {
            InvalidToken::UnsupportedType(token_type) => TokenError::UnsupportedTokenType {
                client: client.endpoint.name.to_string(),
                endpoint: client.endpoint.endpoint.to_string(),
                token_type,
            },
            _ => TokenError::InvalidResponse {
                client: client.endpoint.name.to_string(),
                endpoint: client.endpoint.endpoint.to_string(),
                status: response.status,
                reason: error.to_string(),
            },
        })
    }

    /// A flight ended: it leaves the map (if it is still the key's flight), and its failure is
    /// remembered for the cool-down.
    fn finish(&self, request: &Request, id: u64, error: Option<&TokenError>) {
        let now = self.now();
        let name = &*request.client.endpoint.name;
        if let Some(mut entry) = self.keys.get_mut(&request.key) {
            let state = entry.value_mut();
            state.running = state.running.saturating_sub(1);
            if state.flight.as_ref().is_some_and(|f| f.id == id) {
                state.flight = None;
            }
            match error {
                None => {
                    if state.failure_streak > 0 {
                        tracing::info!(
                            client = name,
                            failures = state.failure_streak,
                            "token requests succeed again"
                        );
                    }
                    state.failure = None;
                    state.failure_streak = 0;
                }
                Some(error) => {
                    state.failure_streak += 1;
                    if state.failure_streak == 1 {
                        tracing::warn!(client = name, %error, "token request failed");
                    } else {
                        tracing::debug!(
                            client = name,
                            %error,
                            failures = state.failure_streak,
                            "token request failed again"
                        );
                    }
                    let cooldown = self.policy.cooldown + random_up_to(self.policy.cooldown / 4);
                    state.failure = Some(Failure {
                        until: now.saturating_add(cooldown),
                        error: error.clone(),
                    });
                }
            }
        }
        self.keys
            .remove_if(&request.key, |_, state| self.is_idle(state, now));
        self.sweep_if_large(now);
    }

    /// Whether a key's state can go: nothing running, no cool-down or rate limit in force.
    fn is_idle(&self, state: &KeyState, now: Stamp) -> bool {
        state.running == 0
            && state.failure.as_ref().is_none_or(|f| now >= f.until)
            && state
                .last_forced
                .is_none_or(|at| now >= at.saturating_add(self.policy.min_forced_interval))
    }

    /// Keeps the in-flight map bounded under a flood of distinct keys (amortised O(1)).
    fn sweep_if_large(&self, now: Stamp) {
        if self.keys.len() <= self.sweep_threshold.load(Ordering::Relaxed) {
            return;
        }
        self.keys.retain(|_, state| !self.is_idle(state, now));
        self.keys.shrink_to_fit();
        let live = self.keys.len();
        self.sweep_threshold
            .store(MIN_SWEEP_THRESHOLD.max(live * 2), Ordering::Relaxed);
    }

    /// The request a key of this service stands for (see [`CacheKey::parse_request`]).
    pub(crate) fn parse_key(&self, key: &CacheKey) -> Option<KeyRequest> {
        key.parse_request(&self.key_prefix)
    }

    /// The request to renew the token cached under `key` with, for the client now registered under
    /// the key's client name: the same request (on the replacement, if only its secret or key
    /// changed), `None` if the client was removed or its request changed. `default_request`: the
    /// token was of the client's default request, which follows the client's options (renewed only
    /// while they make the same key); a per-call request keeps its own parameters.
    pub(crate) fn current_request(
        &self,
        key: &CacheKey,
        parsed: KeyRequest,
        default_request: bool,
    ) -> Option<Request> {
        let table = self.clients.load();
        let current = table.get(&parsed.client)?;
        if current.fingerprint != parsed.fingerprint {
            return None; // another endpoint, client id or DPoP key
        }
        if default_request {
            return (current.default_key == *key).then(|| self.default_request(current));
        }
        Some(Request {
            client: Arc::clone(current),
            key: key.clone(),
            shape: Some(Arc::new(parsed.shape)),
        })
    }

    /// Starts a background renewal of `request` (used by the renewal scheduler).
    pub(crate) fn renew_in_background(self: &Arc<Self>, request: &Request) {
        self.start(request, Mode::Background);
    }

    /// The token currently cached under `key` (of the client `client`), anchored.
    pub(crate) async fn cached(&self, key: &CacheKey, client: &str) -> Option<ClientAccessToken> {
        self.read_cache_key(key, client).await
    }

    /// Drops the token under `key` (of the client `client`), because nobody used it for the idle
    /// window or its client no longer makes this request.
    pub(crate) async fn evict_idle(&self, key: &CacheKey, client: &str) {
        metrics::count(names::IDLE_EVICTIONS, client);
        if let Err(error) = self.cache.delete(key).await {
            tracing::debug!(client, %error, "could not drop an idle token");
        }
    }

    pub(crate) fn runtime(&self) -> &Handle {
        &self.runtime
    }
}

fn aborted(client: &ClientState) -> TokenError {
    TokenError::Aborted {
        client: client.endpoint.name.to_string(),
        endpoint: client.endpoint.endpoint.to_string(),
    }
}

/// The buffer actually used for a token of this lifetime: the configured one, but never more than
/// half the lifetime (so short-lived tokens are still cached for half their life).
pub(crate) fn effective_buffer(lifetime: Duration, configured: Duration) -> Duration {
    configured.min(lifetime / 2)
}

/// Removes a flight from the map if its task ends without finishing (it panicked, or its runtime
/// shut down): its [`Publisher`], dropped with it, gives waiters [`TokenError::Aborted`].
struct FlightGuard {
    inner: Arc<Inner>,
    key: CacheKey,
    id: u64,
    finished: bool,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if let Some(mut entry) = self.inner.keys.get_mut(&self.key) {
            let state = entry.value_mut();
            state.running = state.running.saturating_sub(1);
            if state.flight.as_ref().is_some_and(|f| f.id == self.id) {
                state.flight = None;
            }
        }
    }
}

/// A weak handle on the service, for its background tasks.
pub(crate) type WeakInner = Weak<Inner>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Wake, Waker};

    /// A waker that counts its wake-ups.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    type Waiting<'a> = Pin<Box<dyn Future<Output = FlightResult> + 'a>>;

    /// Three callers waiting on `outcome`, each polled once (so registered), with their wakers.
    fn three_waiters(outcome: &FlightOutcome) -> Vec<(Waiting<'_>, Arc<Counting>)> {
        (0..3)
            .map(|_| {
                let mut waiting: Waiting<'_> = Box::pin(outcome.wait());
                let counting = Arc::new(Counting::default());
                let waker = Waker::from(Arc::clone(&counting));
                assert!(
                    waiting
                        .as_mut()
                        .poll(&mut Context::from_waker(&waker))
                        .is_pending()
                );
                (waiting, counting)
            })
            .collect()
    }

    fn poll(waiting: &mut Waiting<'_>, counting: &Arc<Counting>) -> Poll<FlightResult> {
        let waker = Waker::from(Arc::clone(counting));
        waiting.as_mut().poll(&mut Context::from_waker(&waker))
    }

    fn woken(counting: &Counting) -> usize {
        counting.0.load(Ordering::SeqCst)
    }

    fn token() -> ClientAccessToken {
        ClientAccessToken::new("t", None, None, None, None).unwrap()
    }

    #[test]
    fn each_woken_caller_wakes_the_next() {
        let outcome = Arc::new(FlightOutcome::default());
        let mut waiters = three_waiters(&outcome);
        Publisher(Arc::clone(&outcome)).publish(Ok(token()));
        // The flight wakes only the first caller.
        assert_eq!(
            waiters.iter().map(|(_, c)| woken(c)).collect::<Vec<_>>(),
            [1, 0, 0]
        );
        for i in 0..3 {
            let (waiting, counting) = &mut waiters[i];
            let Poll::Ready(Some(Ok(got))) = poll(waiting, counting) else {
                panic!("caller {i} woken without the token");
            };
            assert_eq!(got.access_token(), "t");
            // Getting the result woke the next caller.
            if let Some((_, next)) = waiters.get(i + 1) {
                assert_eq!(woken(next), 1, "caller {} not woken", i + 1);
            }
        }
        // A caller arriving after the result gets it at once.
        let mut late: Waiting<'_> = Box::pin(outcome.wait());
        assert!(matches!(
            poll(&mut late, &Arc::default()),
            Poll::Ready(Some(Ok(_)))
        ));
    }

    #[test]
    fn a_caller_dropped_after_its_wake_up_hands_it_on() {
        let outcome = Arc::new(FlightOutcome::default());
        let mut waiters = three_waiters(&outcome);
        Publisher(Arc::clone(&outcome)).publish(Ok(token()));
        // The first caller gives up before it runs: the second is woken instead.
        drop(waiters.remove(0));
        let (waiting, counting) = &mut waiters[0];
        assert_eq!(woken(counting), 1);
        assert!(matches!(poll(waiting, counting), Poll::Ready(Some(Ok(_)))));
        let (waiting, counting) = &mut waiters[1];
        assert_eq!(woken(counting), 1);
        assert!(matches!(poll(waiting, counting), Poll::Ready(Some(Ok(_)))));
    }

    #[test]
    fn the_callers_behind_one_that_is_never_polled_are_woken_by_the_fallback() {
        let outcome = Arc::new(FlightOutcome::default());
        let mut waiters = three_waiters(&outcome);
        Publisher(Arc::clone(&outcome)).publish(Ok(token()));
        // The first caller is woken but never runs: the chain stops there.
        assert_eq!(woken(&waiters[1].1), 0);
        outcome.wake_all();
        for (waiting, counting) in &mut waiters[1..] {
            assert_eq!(woken(counting), 1);
            assert!(matches!(poll(waiting, counting), Poll::Ready(Some(Ok(_)))));
        }
    }

    #[test]
    fn a_flight_dropped_unfinished_wakes_its_callers_with_no_result() {
        let outcome = Arc::new(FlightOutcome::default());
        let mut waiters = three_waiters(&outcome);
        drop(Publisher(Arc::clone(&outcome)));
        for (waiting, counting) in &mut waiters {
            assert_eq!(woken(counting), 1);
            assert!(matches!(poll(waiting, counting), Poll::Ready(None)));
        }
    }

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
