//! Our side: token-mgmt measured with the same servers, driver and baselines as everything else.
//! Every call into token-mgmt is in this file (compiled with the default `ours` feature).
//!
//! Functions the `load` binary and the `cache_hit` bench call:
//! - [`token_service`], [`warm`], [`cache_hit`]: the warm-cache `get_client_access_token` path.
//! - [`request_subjects`]: per-request throughput through `HttpClientFactory::create_client`.
//! - [`stampede`]: 10,000 concurrent callers on a cold key.
//! - [`scale_build`], [`scale_memory`]: 10,000 registered clients, 100,000 cached tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use token_mgmt::http::{HttpClient, HttpClientFactory};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessToken,
    TokenClientOptions, TokenRequestParameters,
};
use url::Url;

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
    let handler = token_mgmt::tokens::ClientAccessTokenHandler::new(service.clone(), name);
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register(name);
    registration.options_mut().base_address = Some(api_base.clone());
    registration.set_innermost(Arc::new(handler));
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
        (
            "token-mgmt HttpClient, fixed header, no token handler".to_owned(),
            without_handler,
        ),
    ])
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
    let service = token_service(token_url, names)?;
    let before = CountingAllocator::live_bytes();
    let mut fetched = 0u64;
    let pairs: Vec<(&String, String)> = names
        .iter()
        .flat_map(|name| (0..scopes).map(move |j| (name, crate::baseline::scope_name(j))))
        .collect();
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
