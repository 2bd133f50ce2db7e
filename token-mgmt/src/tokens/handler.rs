//! [`ClientAccessTokenHandler`]: the token-injecting `reqwest_middleware::Middleware` (documented on
//! the type).

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use http::Extensions;
use http::header::AUTHORIZATION;
use reqwest::{Request, Response, StatusCode};
use reqwest_middleware::{Middleware, Next};
use url::{Origin, Url};

use super::error::TokenError;
use super::options::TokenRequestParameters;
use super::service::AccessTokenManagementService;
use super::token::ClientAccessToken;

/// Request extension: the [`ClientAccessTokenHandler`] sends this request without a token (and does
/// not ask for one).
///
/// ```no_run
/// # use token_mgmt::tokens::SkipAccessToken;
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// let response = client
///    .get("https://api.example.com/public")
///    .with_extension(SkipAccessToken)
///    .send()
///    .await?;
/// # let _ = response; Ok(()) }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct SkipAccessToken;

/// A [`reqwest_middleware::Middleware`] that authorizes each request with a client credentials token
/// of one token client.
///
/// Cheap to clone. `Debug` shows the token client name only.
///
/// # Usage on its own
///
/// The handler works with any [`reqwest_middleware::ClientBuilder`]; the HTTP client factory is not
/// needed:
///
/// ```no_run
/// use token_mgmt::tokens::{
///     AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessTokenHandler,
///     TokenClientOptions,
/// };
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut options = AccessTokenManagementOptions::default();
/// options.client.clients.add("identityserver", TokenClientOptions {
///     address: "https://demo.identityserver.io/connect/token".parse()?,
///     client_id: "m2m.short".into(),
///     client_secret: "secret".into(),
///     ..Default::default()
/// });
/// let service = AccessTokenManagementService::new(options)?;
///
/// let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
///     // .with(retry_middleware)  // outer middleware first ...
///     .with(ClientAccessTokenHandler::new(service, "identityserver")) // ... the handler last
///     .build();
/// let body = client.get("https://demo.identityserver.io/api/test").send().await?.text().await?;
/// # let _ = body; Ok(()) }
/// ```
///
/// # Place it innermost
///
/// Add the handler **last** (closest to the network): middleware added after it would see the
/// request without its token, and middleware added before it (a retry middleware, for example) then
/// run the handler again on every attempt, so each attempt carries the currently valid token. With
/// [`HttpClientFactory`](crate::http::HttpClientFactory), register it with
/// [`set_innermost`](crate::http::HttpClientRegistration::set_innermost), which keeps it last whatever
/// the order of the other registrations.
///
/// # What it does per request
///
/// 1. Gets the token from [`AccessTokenManagementService`] (from the cache, or one shared token
///    request on a miss) and sets `Authorization` to [`ClientAccessToken::authorization_header`]
///    (`Bearer <token>` / `DPoP <token>`, a sensitive header value). An `Authorization` header set by
///    the caller is replaced.
/// 2. If no token can be had, the request is **not** sent: the call fails with
///    [`reqwest_middleware::Error::Middleware`] wrapping the [`TokenError`], which can be had back with
///    `error.downcast_ref::<TokenError>()` (or
///    [`HttpError::middleware_error`](crate::http::HttpError::middleware_error) on an
///    [`HttpClient`](crate::http::HttpClient)).
/// 3. On a `401 Unauthorized`, when the request could be cloned before it was sent (its body is not a
///    stream), the token is renewed (a forced renewal, coalesced with other requests that saw the same
///    token rejected; if another request already renewed it, that token is used) and the request is
///    sent **once** more; whatever that second attempt answers, another 401 included, is returned. A
///    request whose body is a stream cannot be replayed: its 401 is returned as is (not as an error),
///    and the rejected token is dropped from the cache so that the next request gets a new one.
///
/// Redirects are followed by reqwest below the middleware chain; reqwest's default policy removes
/// `Authorization` when a redirect leaves the request's origin, so the token never reaches another
/// origin through a redirect. With [`with_allowed_origin`](Self::with_allowed_origin) (set by
/// `add_client_access_token_client` from the client's base address), a request to any other origin
/// is refused with a [`ForeignOriginError`] before a token is attached: an absolute URL taken from an
/// API response (a "next page" link, say) cannot carry the token elsewhere.
///
/// # Per-request options
///
/// Through the request's [`http::Extensions`]
/// ([`reqwest_middleware::RequestBuilder::with_extension`]):
/// - [`SkipAccessToken`]: send this request without a token (and without asking for one);
/// - [`TokenRequestParameters`]: use these parameters instead of the handler's for this request: force
///   a renewal, ask for another scope or resource.
///
/// ```no_run
/// # use token_mgmt::tokens::{SkipAccessToken, TokenRequestParameters};
/// # async fn run(client: reqwest_middleware::ClientWithMiddleware) -> reqwest_middleware::Result<()> {
/// client.get("https://api.example.com/health").with_extension(SkipAccessToken).send().await?;
/// client
///     .get("https://api.example.com/orders")
///     .with_extension(TokenRequestParameters {
///         scope: Some("orders.read".into()),
///         ..Default::default()
///     })
///     .send()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[doc(alias = "ClientCredentialsTokenHandler")]
pub struct ClientAccessTokenHandler {
    service: AccessTokenManagementService,
    client_name: Arc<str>,
    /// The parameters of every request without a per-request override (`force_renewal` is false).
    parameters: TokenRequestParameters,
    /// `parameters` with `force_renewal`: used on a 401, kept ready so that path allocates nothing.
    forced: TokenRequestParameters,
    /// The only origin tokens are sent to, when set.
    allowed_origin: Option<Origin>,
}

/// A request of a [`ClientAccessTokenHandler`] restricted to one origin went to another: it was not
/// sent. Reached by downcast from [`reqwest_middleware::Error::Middleware`].
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "request to {request_origin} refused: token client `{client}` sends its tokens only to {allowed_origin}"
)]
#[non_exhaustive]
pub struct ForeignOriginError {
    /// The token client.
    pub client: String,
    /// The origin the request went to.
    pub request_origin: String,
    /// The origin the handler sends tokens to.
    pub allowed_origin: String,
}

impl ClientAccessTokenHandler {
    /// A handler that uses the tokens of the token client `token_client_name` of `service`, with the
    /// client's configured scope and resources.
    ///
    /// The name is not checked here: a name the service does not know makes every request fail with
    /// [`TokenError::UnknownClient`] (the service container checks names when it is built).
    pub fn new(
        service: AccessTokenManagementService,
        token_client_name: impl Into<String>,
    ) -> Self {
        Self {
            service,
            client_name: Arc::from(token_client_name.into()),
            parameters: TokenRequestParameters::default(),
            forced: TokenRequestParameters::force_renewal(),
            allowed_origin: None,
        }
    }

    /// Sends tokens only to `url`'s origin (scheme, host and port): a request to another origin fails
    /// with [`ForeignOriginError`] and is not sent. Without it, the handler authorizes every request
    /// of the client it is on.
    pub fn with_allowed_origin(mut self, url: &Url) -> Self {
        self.allowed_origin = Some(url.origin());
        self
    }

    /// Uses `parameters` (another scope, resources or extra fields) for every request that does not
    /// carry its own [`TokenRequestParameters`] extension. `parameters.force_renewal` is ignored: a
    /// handler that renewed on every request would defeat the cache (force a renewal per request with
    /// the extension instead).
    ///
    /// The client's defaults are served by the service without building a cache key per request;
    /// other parameters cost one cache key computation per request.
    pub fn with_parameters(mut self, parameters: TokenRequestParameters) -> Self {
        self.parameters = TokenRequestParameters {
            force_renewal: false,
            ..parameters
        };
        self.forced = TokenRequestParameters {
            force_renewal: true,
            ..self.parameters.clone()
        };
        self
    }

    /// The token client whose tokens this handler sends.
    pub fn client_name(&self) -> &str {
        &self.client_name
    }

    /// The parameters used for requests without a per-request override.
    pub fn parameters(&self) -> &TokenRequestParameters {
        &self.parameters
    }

    /// The token management service in use.
    pub fn service(&self) -> &AccessTokenManagementService {
        &self.service
    }

    async fn token(
        &self,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        self.service
            .get_client_access_token(&self.client_name, parameters)
            .await
    }

    /// The token to resend with after `rejected` got a 401: the one another request already renewed
    /// it to, if any, otherwise a forced (coalesced) renewal.
    async fn renew(
        &self,
        rejected: &ClientAccessToken,
        parameters: &TokenRequestParameters,
    ) -> Result<ClientAccessToken, TokenError> {
        let current = self.token(&unforced(parameters)).await?;
        if !same_token(&current, rejected) {
            return Ok(current);
        }
        let forced = if std::ptr::eq(parameters, &self.parameters) {
            Cow::Borrowed(&self.forced)
        } else {
            Cow::Owned(TokenRequestParameters {
                force_renewal: true,
                ..parameters.clone()
            })
        };
        self.token(&forced).await
    }

    /// After a 401 that cannot be retried: drops `rejected` from the cache (unless it was already
    /// replaced), so that the next request gets a new token. Failures are logged, not returned: the
    /// caller gets the 401 either way.
    async fn forget(&self, rejected: &ClientAccessToken, parameters: &TokenRequestParameters) {
        let parameters = unforced(parameters);
        match self.token(&parameters).await {
            Ok(current) if same_token(&current, rejected) => {
                if let Err(error) = self
                    .service
                    .delete_client_access_token(&self.client_name, &parameters)
                    .await
                {
                    tracing::warn!(
                        client = %self.client_name,
                        %error,
                        "could not remove a rejected access token from the cache"
                    );
                }
            }
            Ok(_renewed_meanwhile) => {}
            Err(error) => tracing::debug!(
                client = %self.client_name,
                %error,
                "no new access token after a 401 on a request that cannot be resent"
            ),
        }
    }
}

/// `parameters` without `force_renewal` (borrowed when it is not set, as it usually is not).
fn unforced(parameters: &TokenRequestParameters) -> Cow<'_, TokenRequestParameters> {
    if parameters.force_renewal {
        Cow::Owned(TokenRequestParameters {
            force_renewal: false,
            ..parameters.clone()
        })
    } else {
        Cow::Borrowed(parameters)
    }
}

/// Whether two handles are the same token (same allocation, or the same value, e.g. read back from a
/// remote cache).
fn same_token(a: &ClientAccessToken, b: &ClientAccessToken) -> bool {
    a.ptr_eq(b) || a.authorization_header() == b.authorization_header()
}

#[async_trait::async_trait]
impl Middleware for ClientAccessTokenHandler {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        if extensions.get::<SkipAccessToken>().is_some() {
            return next.run(req, extensions).await;
        }
        if let Some(allowed) = &self.allowed_origin {
            let origin = req.url().origin();
            if origin != *allowed {
                return Err(reqwest_middleware::Error::middleware(ForeignOriginError {
                    client: self.client_name.to_string(),
                    request_origin: origin.ascii_serialization(),
                    allowed_origin: allowed.ascii_serialization(),
                }));
            }
        }
        // A per-request override is cloned (rare); the default path borrows the handler's own.
        let overridden = extensions.get::<TokenRequestParameters>().cloned();
        let parameters = overridden.as_ref().unwrap_or(&self.parameters);

        let token = self
            .token(parameters)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        // Taken before the token goes in; `None` for a streaming body, which cannot be replayed.
        let replay = req.try_clone();
        req.headers_mut()
            .insert(AUTHORIZATION, token.authorization_header());
        let response = next.clone().run(req, extensions).await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }

        let Some(mut replay) = replay else {
            tracing::debug!(
                client = %self.client_name,
                "the access token was rejected (401) on a request whose body cannot be resent; \
                 returning the 401"
            );
            self.forget(&token, parameters).await;
            return Ok(response);
        };
        tracing::debug!(
            client = %self.client_name,
            "the access token was rejected (401); renewing it and resending the request once"
        );
        // Frees the connection before the renewal and the resend.
        drop(response);
        let renewed = self
            .renew(&token, parameters)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        replay
            .headers_mut()
            .insert(AUTHORIZATION, renewed.authorization_header());
        next.run(replay, extensions).await
    }
}

impl fmt::Debug for ClientAccessTokenHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccessTokenHandler")
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}
