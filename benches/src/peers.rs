//! The peers a Rust user would pick instead, doing the same authorized loopback calls:
//!
//! - [`middle_client`]: the `middle` crate (0.5): a `BasicClientCredentialAuthorizer` (fetches
//!   the token eagerly at build, refreshes it in a background task) wrapped in
//!   `middle::HttpClient`, which sends through `reqwest` 0.12.
//! - [`OAuth2RwLockPeer`]: the `oauth2` crate (5) for the token request, with the straightforward
//!   cache a user writes: `tokio::sync::RwLock<Option<(header, expiry)>>`, read-checked, then
//!   write-locked and re-checked before fetching (so concurrent misses wait for one request
//!   instead of each sending their own). API calls go through `reqwest` 0.13 like ours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{HeaderValue, header::AUTHORIZATION};
use oauth2::basic::BasicClient;
use oauth2::{ClientId, ClientSecret, EndpointNotSet, EndpointSet, Scope, TokenResponse, TokenUrl};
use tokio::sync::RwLock;
use url::Url;

use crate::load::{RequestFn, request_fn};
use crate::{BoxError, CLIENT_SECRET};

/// Scope every benchmark client asks for.
pub const SCOPE: &str = "api";

/// Refresh margin of the `oauth2` peer's cache (the same 60 s default as ours).
const EXPIRY_BUFFER: Duration = Duration::from_secs(60);

/// A `middle` client for `client_id` (built cold: `build` fetches the first token) whose requests
/// `GET url` and read the body.
pub async fn middle_client(
    token_url: &Url,
    client_id: &str,
    url: &Url,
    timeout: Option<Duration>,
) -> Result<RequestFn, BoxError> {
    let authorizer = middle::BasicClientCredentialAuthorizerBuilder::new(
        client_id,
        CLIENT_SECRET,
        token_url.clone(),
    )
    .add_scope(SCOPE)
    .build()
    .await?;
    let mut http = reqwest012::Client::builder();
    if let Some(timeout) = timeout {
        http = http.timeout(timeout);
    }
    let client = middle::HttpClient::new(authorizer).set_client(http.build()?);
    let url = url.clone();
    Ok(request_fn(move || {
        let request = client.get(url.clone());
        async move {
            request?.send().await?.error_for_status()?.bytes().await?;
            Ok(())
        }
    }))
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

#[derive(Debug)]
struct Cached {
    authorization: HeaderValue,
    expires_at: Instant,
}

#[derive(Debug)]
struct Inner {
    oauth: TokenClient,
    token_http: reqwest012::Client,
    cache: RwLock<Option<Cached>>,
}

/// `oauth2` + a `tokio::sync::RwLock` token cache, lazily filled on first use.
#[derive(Clone, Debug)]
pub struct OAuth2RwLockPeer {
    inner: Arc<Inner>,
}

impl OAuth2RwLockPeer {
    /// A cold peer for `client_id` (`client_secret_basic`, as `oauth2` does by default).
    pub fn new(token_url: &Url, client_id: &str) -> Result<Self, BoxError> {
        let oauth = BasicClient::new(ClientId::new(client_id.to_owned()))
            .set_client_secret(ClientSecret::new(CLIENT_SECRET.to_owned()))
            .set_token_uri(TokenUrl::from_url(token_url.clone()));
        // As the oauth2 docs advise: no redirects for token requests.
        let token_http = reqwest012::Client::builder()
            .redirect(reqwest012::redirect::Policy::none())
            .build()?;
        Ok(Self {
            inner: Arc::new(Inner {
                oauth,
                token_http,
                cache: RwLock::new(None),
            }),
        })
    }

    /// The current `Authorization` value, fetching a token on a miss.
    pub async fn authorization(&self) -> Result<HeaderValue, BoxError> {
        {
            let cached = self.inner.cache.read().await;
            if let Some(hit) = cached.as_ref().filter(|c| c.expires_at > Instant::now()) {
                return Ok(hit.authorization.clone());
            }
        }
        let mut cached = self.inner.cache.write().await;
        if let Some(hit) = cached.as_ref().filter(|c| c.expires_at > Instant::now()) {
            return Ok(hit.authorization.clone());
        }
        let response = self
            .inner
            .oauth
            .exchange_client_credentials()
            .add_scope(Scope::new(SCOPE.to_owned()))
            .request_async(&self.inner.token_http)
            .await?;
        let received = Instant::now();
        let lifetime = response.expires_in().unwrap_or(Duration::from_secs(3600));
        let mut authorization =
            HeaderValue::try_from(format!("Bearer {}", response.access_token().secret()))?;
        authorization.set_sensitive(true);
        *cached = Some(Cached {
            authorization: authorization.clone(),
            expires_at: received + lifetime.saturating_sub(EXPIRY_BUFFER),
        });
        Ok(authorization)
    }

    /// Requests that `GET url` with a `reqwest` 0.13 client (with `timeout`, if any) and this
    /// peer's token.
    pub fn request_fn(&self, url: &Url, timeout: Option<Duration>) -> Result<RequestFn, BoxError> {
        let peer = self.clone();
        let mut builder = reqwest::Client::builder();
        if let Some(timeout) = timeout {
            builder = builder.timeout(timeout);
        }
        let client = builder.build()?;
        let url = url.clone();
        Ok(request_fn(move || {
            let peer = peer.clone();
            let request = client.get(url.clone());
            async move {
                let authorization = peer.authorization().await?;
                request
                    .header(AUTHORIZATION, authorization)
                    .send()
                    .await?
                    .error_for_status()?
                    .bytes()
                    .await?;
                Ok(())
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{Limit, run_load};
    use crate::servers::{Servers, TokenEndpointConfig};

    #[test]
    fn peers_make_authorized_calls_with_one_token_request_each() {
        let servers = Servers::start(1, TokenEndpointConfig::default()).unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let url = servers.api.data_url();
        runtime.block_on(async {
            let middle = middle_client(&servers.token.url(), "middle", &url, None)
                .await
                .unwrap();
            let report = run_load(16, Limit::Requests(64), middle).await;
            assert_eq!(
                (report.requests, report.errors),
                (64, 0),
                "{:?}",
                report.first_error
            );

            let oauth2 = OAuth2RwLockPeer::new(&servers.token.url(), "oauth2")
                .unwrap()
                .request_fn(&url, Some(Duration::from_secs(100)))
                .unwrap();
            let report = run_load(16, Limit::Requests(64), oauth2).await;
            assert_eq!(
                (report.requests, report.errors),
                (64, 0),
                "{:?}",
                report.first_error
            );
        });
        assert_eq!(servers.token.requests_for("middle"), 1);
        assert_eq!(
            servers.token.requests_for("oauth2"),
            1,
            "cold start at concurrency 16 coalesces"
        );
        assert_eq!((servers.api.served(), servers.api.rejected()), (128, 0));
    }
}
