//! Our side: token-mgmt measured with the same servers, driver and baselines as everything else.
//! Every call into token-mgmt is in this file (compiled with the default `ours` feature).
//!
//! Functions the `load` binary and the `cache_hit` bench call:
//! - [`token_service`], [`warm`], [`cache_hit`]: the warm-cache `get_client_access_token` path.
//! - [`request_subjects`]: per-request throughput through `HttpClientFactory::create_client`.
//! - [`stampede`]: 10,000 concurrent callers on a cold key.
//! - [`scale_build`], [`scale_memory`]: 10,000 registered clients, 100,000 cached tokens.
//! - [`rollover_service`], [`paced_caller`], [`concurrent_callers`]: short-lived tokens rolling
//!   over, with background refresh on or off.
//! - [`assertion_signers`], [`client_auth_subjects`]: client assertions and token requests per
//!   client authentication method.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use secrecy::SecretString;
use token_mgmt::http::{DEFAULT_TIMEOUT, HttpClient, HttpClientFactory};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, AssertionContext,
    ClientAccessToken, ClientAssertionProvider, ClientAuthentication, ClientSecretJwt, DpopKey,
    HmacAlgorithm, PrivateKey, PrivateKeyJwt, PrivateKeySigner, RetryPolicy, SigningAlgorithm,
    TokenClientOptions, TokenRequestParameters,
};
use url::Url;

use crate::keys::{BenchKey, HMAC_SECRET};

use crate::load::{RequestFn, request_fn};
use crate::mem::CountingAllocator;
use crate::peers::SCOPE;
use crate::servers::{API_RESOURCE, Servers, TokenEndpoint};
use crate::stampede::{StampedeReport, run_callers, time_one};
use crate::{BoxError, CLIENT_SECRET};

/// Token client options for `client_id` (the client is registered under the same name).
#[allow(
    clippy::field_reassign_with_default,
    reason = "works whether or not the struct is #[non_exhaustive]"
)]
fn client_options(token_url: &Url, client_id: &str) -> TokenClientOptions {
    // Field by field after `default()`, which also works if the struct becomes `#[non_exhaustive]`.
    let mut options = TokenClientOptions::default();
    options.address = token_url.clone();
    options.client_id = client_id.to_owned();
    options.client_secret = CLIENT_SECRET.into();
    options.scope = Some(SCOPE.to_owned());
    options
}

/// The options with one token client per name (name = client id).
fn options_for(token_url: &Url, names: &[String]) -> AccessTokenManagementOptions {
    let mut options = AccessTokenManagementOptions::default();
    for name in names {
        options
            .client
            .clients
            .add(name.clone(), client_options(token_url, name));
    }
    options
}

/// A token service with one client per name, default cache and token endpoint client.
pub fn token_service(
    token_url: &Url,
    names: &[String],
) -> Result<AccessTokenManagementService, BoxError> {
    Ok(AccessTokenManagementService::new(options_for(
        token_url, names,
    ))?)
}

/// A token service with one client per name, keeping its tokens in `cache` (the Redis cache).
pub fn token_service_with_cache(
    token_url: &Url,
    names: &[String],
    cache: Arc<dyn token_mgmt::tokens::ClientAccessTokenCache>,
) -> Result<AccessTokenManagementService, BoxError> {
    Ok(
        AccessTokenManagementService::builder(options_for(token_url, names))
            .cache(cache)
            .build()?,
    )
}

/// Fetches every client's token once (so the cache is warm), 64 at a time.
pub async fn warm(
    service: &AccessTokenManagementService,
    names: &[String],
) -> Result<(), BoxError> {
    let parameters = TokenRequestParameters::default();
    for chunk in names.chunks(64) {
        let fetches = chunk
            .iter()
            .map(|name| service.get_client_access_token(name, &parameters));
        for result in futures_util::future::join_all(fetches).await {
            result?;
        }
    }
    Ok(())
}

/// The measured cache hit: `get_client_access_token` on a warm cache, polled to completion
/// without a runtime (see [`crate::cache::poll_ready`]). Panics if the token cannot be had.
#[inline]
pub fn cache_hit(
    service: &AccessTokenManagementService,
    name: &str,
    parameters: &TokenRequestParameters,
) -> ClientAccessToken {
    crate::cache::poll_ready(service.get_client_access_token(name, parameters))
        .expect("warm cache hit")
}

/// An `HttpClientFactory` with one client `name`: base address `api_base`, token handler for
/// token client `name` as its innermost middleware.
fn factory_with_token_handler(
    service: &AccessTokenManagementService,
    name: &str,
    api_base: &Url,
) -> HttpClientFactory {
    factory_with_timeout(service, name, api_base, Some(DEFAULT_TIMEOUT))
}

/// [`factory_with_token_handler`] with another overall request timeout (`None`: none, as plain
/// reqwest and the peers).
fn factory_with_timeout(
    service: &AccessTokenManagementService,
    name: &str,
    api_base: &Url,
    timeout: Option<Duration>,
) -> HttpClientFactory {
    // Tokens go only to the API's origin (a handler without an allowed origin refuses every request).
    let handler = token_mgmt::tokens::ClientAccessTokenHandler::new(service.clone(), name)
        .with_allowed_origin(api_base);
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register(name);
    registration.options_mut().base_address = Some(api_base.clone());
    registration.options_mut().timeout = timeout;
    registration.set_token_handler(handler);
    builder.build()
}

async fn send(client: &HttpClient) -> Result<(), BoxError> {
    client
        .get(API_RESOURCE)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    Ok(())
}

/// Our per-request subjects for `client_id`, cold (the first requests fetch the token):
/// `create_client` on every request (the pattern the issue measures), and one client reused.
/// The name of the subject of [`request_subjects`] whose client has no request timeout (every other
/// one has the default 100 s).
pub const WITHOUT_TIMEOUT: &str = "token-mgmt without default timeout (client reused)";

pub async fn request_subjects(
    servers: &Servers,
    client_id: &str,
) -> Result<Vec<(String, RequestFn)>, BoxError> {
    let names = [client_id.to_owned()];
    let service = token_service(&servers.token.url(), &names)?;
    let factory = factory_with_token_handler(&service, client_id, &servers.api.base_url());

    let per_request = {
        let factory = factory.clone();
        let name: Arc<str> = Arc::from(client_id);
        request_fn(move || {
            let client = factory.create_client(&name);
            async move { send(&client?).await }
        })
    };
    let reused = {
        let client = factory.create_client(client_id)?;
        request_fn(move || {
            let client = client.clone();
            async move { send(&client).await }
        })
    };
    // The default 100 s request timeout (a tokio timer per request in reqwest) off, as in plain
    // reqwest and the peers: the same work as theirs.
    let without_timeout = {
        let factory = factory_with_timeout(&service, client_id, &servers.api.base_url(), None);
        let client = factory.create_client(client_id)?;
        request_fn(move || {
            let client = client.clone();
            async move { send(&client).await }
        })
    };
    // The same named client without the token handler, the warm token as a fixed default header:
    // separates the cost of the HTTP client layer (path resolution, reqwest-middleware) from the
    // token handler's.
    let without_handler = {
        let token = service
            .get_client_access_token(client_id, &TokenRequestParameters::default())
            .await?;
        let mut builder = HttpClientFactory::builder();
        let options = builder.register(client_id).options_mut();
        options.base_address = Some(servers.api.base_url());
        options
            .default_headers
            .insert(http::header::AUTHORIZATION, token.authorization_header());
        let client = builder.build().create_client(client_id)?;
        request_fn(move || {
            let client = client.clone();
            async move { send(&client).await }
        })
    };
    Ok(vec![
        (
            "token-mgmt (create_client per request)".to_owned(),
            per_request,
        ),
        ("token-mgmt (client reused)".to_owned(), reused),
        (WITHOUT_TIMEOUT.to_owned(), without_timeout),
        (
            "token-mgmt HttpClient, fixed header, no token handler".to_owned(),
            without_handler,
        ),
    ])
}

/// Authorized requests through a reused access-token client of a token client with a Bearer token,
/// and of token clients whose tokens are DPoP-bound (a new proof per API request), per algorithm.
pub async fn dpop_subjects(servers: &Servers) -> Result<Vec<(String, RequestFn)>, BoxError> {
    let keys = [
        ("token-mgmt Bearer (client reused)", None),
        (
            "token-mgmt DPoP ES256 (client reused)",
            Some(DpopKey::generate_with(SigningAlgorithm::Es256)),
        ),
        (
            "token-mgmt DPoP EdDSA (client reused)",
            Some(DpopKey::generate_with(SigningAlgorithm::EdDsa)),
        ),
    ];
    let mut subjects = Vec::new();
    for (index, (name, key)) in keys.into_iter().enumerate() {
        let client_id = format!("dpop-{index}");
        let mut options = options_for(&servers.token.url(), std::slice::from_ref(&client_id));
        if let Some(client) = options.client.clients.get_mut(&client_id) {
            client.dpop = key;
        }
        let service = AccessTokenManagementService::new(options)?;
        let factory = factory_with_token_handler(&service, &client_id, &servers.api.base_url());
        let client = factory.create_client(&client_id)?;
        let token = service
            .get_client_access_token(&client_id, &TokenRequestParameters::default())
            .await?;
        if token.is_dpop() != name.contains("DPoP") {
            return Err(
                format!("{name}: the token endpoint did not bind the token as asked").into(),
            );
        }
        subjects.push((
            name.to_owned(),
            request_fn(move || {
                let client = client.clone();
                async move { send(&client).await }
            }),
        ));
    }
    Ok(subjects)
}

/// One stampede round on a fresh (cold) service for `client_id`.
#[derive(Clone, Debug)]
pub struct StampedeFigures {
    /// One caller alone on a cold key (its own fresh service).
    pub single: Duration,
    /// `callers` callers released together on a cold key.
    pub stampede: StampedeReport,
    /// Token requests the stampede made (must be 1).
    pub token_requests: u64,
}

/// Stampede round `round`: one cold call alone, then `callers` concurrent cold calls.
pub async fn stampede(
    endpoint: &TokenEndpoint,
    callers: usize,
    round: usize,
) -> Result<StampedeFigures, BoxError> {
    let single_id = format!("ours-single-{round}");
    let single_service = token_service(&endpoint.url(), std::slice::from_ref(&single_id))?;
    let parameters = TokenRequestParameters::default();
    let single = time_one(async {
        single_service
            .get_client_access_token(&single_id, &parameters)
            .await
            .map_err(BoxError::from)
    })
    .await?;

    let id = format!("ours-stampede-{round}");
    let service = token_service(&endpoint.url(), std::slice::from_ref(&id))?;
    let name: Arc<str> = Arc::from(id.as_str());
    let report = run_callers(callers, || {
        let service = service.clone();
        let name = Arc::clone(&name);
        async move {
            service
                .get_client_access_token(&name, &TokenRequestParameters::default())
                .await
                .map_err(BoxError::from)
        }
    })
    .await;
    Ok(StampedeFigures {
        single,
        stampede: report,
        token_requests: endpoint.requests_for(&id),
    })
}

/// Building the token service for `names.len()` clients: time and retained bytes (options
/// included, as they live in the service).
pub fn scale_build(token_url: &Url, names: &[String]) -> Result<(Duration, i64), BoxError> {
    let start = Instant::now();
    let (service, bytes) = crate::mem::retained_by(|| token_service(token_url, names));
    let elapsed = start.elapsed();
    // The service is dropped here, after the measurement.
    service?;
    Ok((elapsed, bytes))
}

/// Bytes retained by `names.len() * scopes` cached tokens: a service with `names` clients is built
/// first, then every (client, scope) pair is fetched once; the figure is the live-byte delta of
/// the fetches (the service's own build is not in it).
#[allow(
    clippy::field_reassign_with_default,
    reason = "works whether or not the struct is #[non_exhaustive]"
)]
pub async fn scale_memory(
    token_url: &Url,
    names: &[String],
    scopes: usize,
) -> Result<(u64, i64), BoxError> {
    assert!(
        CountingAllocator::is_active(),
        "scale needs the counting allocator (run the `load` binary)"
    );
    // Room for every token: the default capacity (10,000) would evict most of them and the figure
    // would measure a tenth of the tokens.
    let mut options = options_for(token_url, names);
    options.max_cached_tokens = names.len() * scopes;
    let service = AccessTokenManagementService::new(options)?;
    // The list of what to fetch is the bench's input, not the service's memory: made before the
    // reading.
    let pairs: Vec<(&String, String)> = names
        .iter()
        .flat_map(|name| (0..scopes).map(move |j| (name, crate::baseline::scope_name(j))))
        .collect();
    let before = CountingAllocator::live_bytes();
    let mut fetched = 0u64;
    for chunk in pairs.chunks(64) {
        let fetches = chunk.iter().map(|(name, scope)| {
            let service = service.clone();
            async move {
                let mut parameters = TokenRequestParameters::default();
                parameters.scope = Some(scope.clone());
                service.get_client_access_token(name, &parameters).await
            }
        });
        for result in futures_util::future::join_all(fetches).await {
            result?;
            fetched += 1;
        }
    }
    let bytes = CountingAllocator::live_bytes() - before;
    Ok((fetched, bytes))
}

/// A token service for the rollover scenario: one client `name`, background refresh `on` or off,
/// the given expiry safety margin (the default 5 s leaves a 2 s token no window in which it is due
/// but still served), no retries.
#[allow(
    clippy::field_reassign_with_default,
    reason = "works whether or not the struct is #[non_exhaustive]"
)]
pub fn rollover_service(
    token_url: &Url,
    name: &str,
    background_refresh: bool,
    expiry_safety_margin: Duration,
) -> Result<AccessTokenManagementService, BoxError> {
    let mut options = options_for(token_url, &[name.to_owned()]);
    options.background_refresh = background_refresh;
    options.expiry_safety_margin = expiry_safety_margin;
    options.retry = RetryPolicy::none();
    Ok(AccessTokenManagementService::new(options)?)
}

/// What callers saw during a rollover run.
#[derive(Debug, Clone)]
pub struct CallerReport {
    /// Latency of every call, sorted.
    pub latencies: Vec<Duration>,
    /// Distinct tokens the callers were served (the rollovers, plus the first token).
    pub distinct_tokens: usize,
}

/// One caller on its own thread, no runtime of its own beyond a current-thread `block_on`:
/// `get_client_access_token` for `run` (real time), sleeping `pause` between calls. Every call's
/// latency is recorded. The first (cold) call is made before the clock starts.
pub fn paced_caller(
    service: &AccessTokenManagementService,
    name: &str,
    run: Duration,
    pause: Duration,
) -> Result<CallerReport, BoxError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let parameters = TokenRequestParameters::default();
    runtime.block_on(async {
        let mut last = service.get_client_access_token(name, &parameters).await?;
        let mut distinct = 1;
        let mut latencies =
            Vec::with_capacity((run.as_micros() / pause.as_micros().max(1)) as usize);
        let end = Instant::now() + run;
        while Instant::now() < end {
            let start = Instant::now();
            let token = service.get_client_access_token(name, &parameters).await?;
            latencies.push(start.elapsed());
            if !token.ptr_eq(&last) {
                distinct += 1;
                last = token;
            }
            std::thread::sleep(pause);
        }
        latencies.sort_unstable();
        Ok(CallerReport {
            latencies,
            distinct_tokens: distinct,
        })
    })
}

/// `callers` tasks on the current runtime, each calling `get_client_access_token` for `run` with a
/// `pause` (tokio sleep) between calls. Returns the latencies and the distinct tokens served; after
/// the run, `settle` is waited and one more call is made, so a renewal that finished after the last
/// call is counted as a served token too (then every token request the endpoint counted must match a
/// distinct token).
pub async fn concurrent_callers(
    service: &AccessTokenManagementService,
    name: &str,
    callers: usize,
    run: Duration,
    pause: Duration,
    settle: Duration,
) -> Result<CallerReport, BoxError> {
    let seen: Arc<Mutex<HashSet<String>>> = Arc::default();
    let end = Instant::now() + run;
    let name: Arc<str> = Arc::from(name);
    let tasks: Vec<_> = (0..callers)
        .map(|_| {
            let service = service.clone();
            let seen = Arc::clone(&seen);
            let name = Arc::clone(&name);
            tokio::spawn(async move {
                let parameters = TokenRequestParameters::default();
                let mut latencies = Vec::new();
                let mut last: Option<ClientAccessToken> = None;
                while Instant::now() < end {
                    let start = Instant::now();
                    let token = service.get_client_access_token(&name, &parameters).await?;
                    latencies.push(start.elapsed());
                    if !last.as_ref().is_some_and(|l| l.ptr_eq(&token)) {
                        seen.lock()
                            .expect("not poisoned")
                            .insert(token.access_token().to_owned());
                        last = Some(token);
                    }
                    tokio::time::sleep(pause).await;
                }
                Ok::<_, BoxError>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    tokio::time::sleep(settle).await;
    let last = service
        .get_client_access_token(&name, &TokenRequestParameters::default())
        .await?;
    let mut seen = seen.lock().expect("not poisoned");
    seen.insert(last.access_token().to_owned());
    latencies.sort_unstable();
    Ok(CallerReport {
        latencies,
        distinct_tokens: seen.len(),
    })
}

/// The HS256 assertion `client_secret_jwt` sends, built as token-mgmt's own (private) HMAC signer
/// builds it, from the public claims / signing-input / compact API: that signer is only reachable
/// through a token request.
struct Hs256Assertion {
    key: aws_lc_rs::hmac::Key,
}

#[async_trait::async_trait]
impl ClientAssertionProvider for Hs256Assertion {
    async fn client_assertion(
        &self,
        context: &AssertionContext<'_>,
    ) -> Result<SecretString, BoxError> {
        let claims = context.claims();
        let input = claims.signing_input("HS256", None);
        let tag = aws_lc_rs::hmac::sign(&self.key, input.as_bytes());
        Ok(claims.compact(input, tag.as_ref()))
    }
}

/// A named assertion signer (the JWS algorithm name, the provider).
pub type NamedSigner = (&'static str, Arc<dyn ClientAssertionProvider>);

/// One assertion signer per algorithm (label, provider): `PrivateKeySigner` for the key algorithms
/// (`keys` from [`crate::keys::generate`]), and HS256 as above.
pub fn assertion_signers(keys: &[BenchKey]) -> Result<Vec<NamedSigner>, BoxError> {
    let mut signers: Vec<NamedSigner> = Vec::new();
    for key in keys {
        let private = PrivateKey::from_pem(key.pem.clone()).with_algorithm(key.algorithm);
        signers.push((key.label, Arc::new(PrivateKeySigner::new(&private)?)));
    }
    signers.push((
        "HS256",
        Arc::new(Hs256Assertion {
            key: aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, HMAC_SECRET.as_bytes()),
        }),
    ));
    Ok(signers)
}

/// Builds and signs one assertion with `signer` (polled to completion without a runtime).
#[inline]
pub fn sign_one(
    signer: &dyn ClientAssertionProvider,
    context: &AssertionContext<'_>,
) -> SecretString {
    crate::cache::poll_ready(signer.client_assertion(context)).expect("the signer signs")
}

/// Forced-renewal subjects, one per client authentication method (label, request, client id):
/// `client_secret_basic` first (the baseline), then `client_secret_jwt` (HS256) and
/// `private_key_jwt` with each of `keys`. Every request is a new token request.
#[allow(
    clippy::field_reassign_with_default,
    reason = "works whether or not the struct is #[non_exhaustive]"
)]
pub fn client_auth_subjects(
    token_url: &Url,
    keys: &[BenchKey],
) -> Result<Vec<(String, RequestFn, String)>, BoxError> {
    let mut clients: Vec<(String, String, TokenClientOptions)> = Vec::new();
    clients.push((
        "client_secret_basic (baseline)".to_owned(),
        "auth-basic".to_owned(),
        client_options(token_url, "auth-basic"),
    ));
    let mut hs = client_options(token_url, "auth-hs256");
    hs.client_secret = HMAC_SECRET.into();
    hs.authentication =
        ClientAuthentication::ClientSecretJwt(ClientSecretJwt::new(HmacAlgorithm::Hs256));
    clients.push((
        "client_secret_jwt HS256".to_owned(),
        "auth-hs256".to_owned(),
        hs,
    ));
    for key in keys {
        let id = format!("auth-{}", key.label.to_ascii_lowercase());
        let mut options = client_options(token_url, &id);
        options.client_secret = Default::default();
        options.authentication = ClientAuthentication::PrivateKeyJwt(PrivateKeyJwt::new(
            PrivateKey::from_pem(key.pem.clone()).with_algorithm(key.algorithm),
        ));
        clients.push((format!("private_key_jwt {}", key.label), id, options));
    }
    let mut options = AccessTokenManagementOptions::default();
    options.retry = RetryPolicy::none();
    for (_, id, client) in &clients {
        options.client.clients.add(id.clone(), client.clone());
    }
    let service = AccessTokenManagementService::new(options)?;
    Ok(clients
        .into_iter()
        .map(|(label, id, _)| {
            let service = service.clone();
            let name: Arc<str> = Arc::from(id.as_str());
            let request = request_fn(move || {
                let service = service.clone();
                let name = Arc::clone(&name);
                async move {
                    service
                        .get_client_access_token(&name, &TokenRequestParameters::force_renewal())
                        .await?;
                    Ok(())
                }
            });
            (label, request, id)
        })
        .collect())
}
