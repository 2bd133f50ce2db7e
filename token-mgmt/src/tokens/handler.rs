//! [`ClientAccessTokenHandler`]: the token-injecting `reqwest_middleware::Middleware` (documented on
//! the type).

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use http::{Extensions, HeaderMap, Method};
use reqwest::{Request, Response, StatusCode, Version};
use reqwest_middleware::{Middleware, Next};
use url::{Host, Origin, Url};

use super::dpop::{DPOP_HEADER, USE_DPOP_NONCE};
use super::error::TokenError;
use super::metrics::{self, names};
use super::options::{TokenRequestParameters, UnauthorizedRenewal};
use super::service::AccessTokenManagementService;
use super::token::ClientAccessToken;
use crate::http::retry::{copy_request, request_of};

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
///     .with( // ... the handler last
///         ClientAccessTokenHandler::new(service, "identityserver")
///             .with_allowed_origin(&"https://demo.identityserver.io/".parse()?),
///     )
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
///    (`Bearer <token>`, a sensitive header value). An `Authorization` header set by the caller is
///    replaced. A DPoP-bound token (see [`DpopKey`](super::DpopKey)) goes as `DPoP <token>` with a
///    new `DPoP` proof for the request's method and URL; the `DPoP-Nonce` of every response is
///    remembered for the next proofs to that origin, and a `401` asking for a nonce
///    (`error="use_dpop_nonce"`) that brings one is resent once with a new proof (this is not a
///    renewal, and happens at most once per request).
/// 2. If no token can be had, the request is **not** sent: the call fails with
///    [`reqwest_middleware::Error::Middleware`] wrapping the [`TokenError`], which can be had back with
///    `error.downcast_ref::<TokenError>()` (or
///    [`HttpError::middleware_error`](crate::http::HttpError::middleware_error) on an
///    [`HttpClient`](crate::http::HttpClient)).
/// 3. On a `401 Unauthorized` that a new token can fix (by default: its `WWW-Authenticate` names
///    `error="invalid_token"` or no error; see
///    [`UnauthorizedRenewal`](super::UnauthorizedRenewal)), when the request could be cloned before
///    it was sent (its body is not a stream), the token is renewed (a forced renewal, coalesced with
///    other requests that saw the same token rejected, at most one per key per
///    [`min_forced_renewal_interval`](super::AccessTokenManagementOptions::min_forced_renewal_interval);
///    if another request already renewed it, that token is used) and the request is sent **once**
///    more; whatever that second attempt answers, another 401 included, is returned. When no new
///    token can be had (the renewal failed, or one was made moments ago), the API's 401 is returned
///    and the token error logged. A request whose body is a stream cannot be replayed: its 401 is
///    returned as is (not as an error), and the rejected token is dropped from the cache so that the
///    next request gets a new one.
///
/// Tokens go only to the origins allowed with [`with_allowed_origin`](Self::with_allowed_origin)
/// (`add_client_access_token_client` allows the client's base address and its
/// [`allowed_origins`](crate::http::HttpClientOptions::allowed_origins)): a request to any other
/// origin is refused with a [`ForeignOriginError`] before a token is attached, so an absolute URL
/// taken from an API response (a "next page" link, say) cannot carry the token elsewhere. A handler
/// with no allowed origin refuses every request. Redirects are followed by reqwest below the
/// middleware chain; its default policy removes `Authorization` when a redirect leaves the request's
/// origin.
///
/// # Per-request options
///
/// Through the request's [`http::Extensions`]
/// ([`RequestBuilder::with_extension`](crate::http::RequestBuilder::with_extension), or
/// `reqwest_middleware::RequestBuilder::with_extension`):
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
    /// The only origins tokens are sent to (none: every request is refused).
    allowed_origins: Vec<Origin>,
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
            allowed_origins: Vec::new(),
        }
    }

    /// Allows tokens to go to `url`'s origin (scheme, host and port). A handler sends tokens only to
    /// the origins allowed this way: a request to any other origin fails with [`ForeignOriginError`]
    /// and is not sent; a handler with no allowed origin refuses every request.
    pub fn with_allowed_origin(mut self, url: &Url) -> Self {
        let origin = url.origin();
        if !self.allowed_origins.contains(&origin) {
            self.allowed_origins.push(origin);
        }
        self
    }

    /// The origins tokens may go to.
    pub fn allowed_origins(&self) -> &[Origin] {
        &self.allowed_origins
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
        let parameters = unforced(parameters);
        let current = self.token(&parameters).await?;
        if !current.same_token(rejected) {
            return Ok(current);
        }
        self.service
            .renew_rejected_token(&self.client_name, &parameters)
            .await
    }

    /// After a 401 that cannot be retried: drops `rejected` from the cache (unless it was already
    /// replaced), so that the next request gets a new token. Failures are logged, not returned: the
    /// caller gets the 401 either way.
    async fn forget(&self, rejected: &ClientAccessToken, parameters: &TokenRequestParameters) {
        let parameters = unforced(parameters);
        match self.token(&parameters).await {
            Ok(current) if current.same_token(rejected) => {
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

impl ClientAccessTokenHandler {
    /// Sends `req` authorized with `token` (with a DPoP proof when the token is DPoP-bound), and
    /// remembers the DPoP nonce the response carries. A DPoP `401` asking for a nonce
    /// (`use_dpop_nonce`, RFC 9449 section 9) that brings one is resent once with a new proof, if
    /// `nonce_retry` is still set and the body can be replayed.
    async fn send<F: Forward>(
        &self,
        next: &F,
        mut req: Request,
        extensions: &mut Extensions,
        token: &ClientAccessToken,
        nonce_retry: &mut bool,
    ) -> reqwest_middleware::Result<Response> {
        if !token.is_dpop() {
            req.headers_mut()
                .insert(AUTHORIZATION, token.authorization_header());
            return next.forward(req, extensions).await;
        }
        let url = req.url().clone();
        let retry = if *nonce_retry { req.try_clone() } else { None };
        self.authorize_dpop(&mut req, token)?;
        let response = next.forward(req, extensions).await?;
        let nonce = self.remember_nonce(&url, &response);
        if !nonce || response.status() != StatusCode::UNAUTHORIZED || !asks_for_nonce(&response) {
            return Ok(response);
        }
        let Some(mut retry) = retry else {
            return Ok(response);
        };
        *nonce_retry = false;
        tracing::debug!(client = %self.client_name, "the API asked for a DPoP nonce; resending once");
        drop(response);
        self.authorize_dpop(&mut retry, token)?;
        let response = next.forward(retry, extensions).await?;
        self.remember_nonce(&url, &response);
        Ok(response)
    }

    /// Sets `Authorization: DPoP <token>` and a new proof for this request.
    fn authorize_dpop(
        &self,
        req: &mut Request,
        token: &ClientAccessToken,
    ) -> reqwest_middleware::Result<()> {
        let proof = self
            .service
            .dpop_proof(&self.client_name, req.method(), req.url(), token)
            .map_err(reqwest_middleware::Error::middleware)?;
        let headers = req.headers_mut();
        if let Some(proof) = proof {
            headers.insert(DPOP_HEADER, proof);
        }
        headers.insert(AUTHORIZATION, token.authorization_header());
        Ok(())
    }

    fn remember_nonce(&self, url: &Url, response: &Response) -> bool {
        self.service
            .remember_dpop_nonce(&self.client_name, url, response.headers())
            .unwrap_or(false)
    }
}

/// Whether a `WWW-Authenticate` challenge says `error="use_dpop_nonce"`.
fn asks_for_nonce(response: &Response) -> bool {
    response
        .headers()
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|challenge| error_parameter(challenge).as_deref() == Some(USE_DPOP_NONCE))
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

impl ClientAccessTokenHandler {
    /// Refuses a request to an origin tokens may not go to.
    fn check_origin(&self, url: &Url) -> Result<(), ForeignOriginError> {
        if self.allows(url) {
            return Ok(());
        }
        let origin = url.origin();
        let allowed: Vec<String> = self
            .allowed_origins
            .iter()
            .map(Origin::ascii_serialization)
            .collect();
        Err(ForeignOriginError {
            client: self.client_name.to_string(),
            request_origin: origin.ascii_serialization(),
            allowed_origin: if allowed.is_empty() {
                "no origin (none configured)".to_owned()
            } else {
                allowed.join(", ")
            },
        })
    }

    /// Whether `url` has an allowed origin: `allowed_origins.contains(&url.origin())`, without
    /// building the origin (two allocations per request) for the http(s) URLs of every request.
    #[inline]
    pub(crate) fn allows(&self, url: &Url) -> bool {
        let scheme = url.scheme();
        if scheme != "https" && scheme != "http" {
            return self.allowed_origins.contains(&url.origin());
        }
        let (Some(host), Some(port)) = (url.host(), url.port_or_known_default()) else {
            return false;
        };
        self.allowed_origins.iter().any(|origin| match origin {
            Origin::Tuple(allowed_scheme, allowed_host, allowed_port) => {
                allowed_scheme == scheme
                    && *allowed_port == port
                    && match (allowed_host, &host) {
                        (Host::Domain(allowed), Host::Domain(domain)) => allowed == domain,
                        (Host::Ipv4(allowed), Host::Ipv4(address)) => allowed == address,
                        (Host::Ipv6(allowed), Host::Ipv6(address)) => allowed == address,
                        _ => false,
                    }
            }
            Origin::Opaque(_) => false,
        })
    }

    /// Whether this 401 is one a new token can fix, as the service's policy says.
    fn renewal_can_help(&self, response: &Response) -> bool {
        match self.service.renew_on_unauthorized() {
            UnauthorizedRenewal::Never => false,
            UnauthorizedRenewal::Always => true,
            _ => bearer_error(response.headers()).is_none_or(|error| error == "invalid_token"),
        }
    }
}

/// The `error` parameter of the `WWW-Authenticate` challenges (RFC 6750 section 3), if any names one.
fn bearer_error(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(WWW_AUTHENTICATE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find_map(error_parameter)
}

/// Finds `error=<token>` or `error="<quoted>"` among a challenge's auth-params.
fn error_parameter(challenge: &str) -> Option<String> {
    let bytes = challenge.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip a quoted string (with backslash escapes): a value, never a parameter name.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            c if c.is_ascii_alphabetic() => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || b"_-.".contains(&bytes[i]))
                {
                    i += 1;
                }
                let name = &challenge[start..i];
                let rest = challenge[i..].trim_start();
                if name.eq_ignore_ascii_case("error") && rest.starts_with('=') {
                    let value = rest[1..].trim_start();
                    return Some(match value.strip_prefix('"') {
                        Some(quoted) => quoted.split('"').next().unwrap_or_default().to_owned(),
                        None => value
                            .split(|c: char| c == ',' || c.is_whitespace())
                            .next()
                            .unwrap_or_default()
                            .to_owned(),
                    });
                }
            }
            _ => i += 1,
        }
    }
    None
}

impl ClientAccessTokenHandler {
    /// What the handler does per request (see [the type docs](ClientAccessTokenHandler)), whatever
    /// sends the authorized request on: the rest of a middleware chain, or reqwest itself when an
    /// [`HttpClient`](crate::http::HttpClient) calls the handler directly.
    pub(crate) async fn handle_request<F: Forward>(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: &F,
    ) -> reqwest_middleware::Result<Response> {
        if extensions.get::<SkipAccessToken>().is_some() {
            return next.forward(req, extensions).await;
        }
        self.check_origin(req.url())
            .map_err(reqwest_middleware::Error::middleware)?;
        // A per-request override is cloned (rare); the default path borrows the handler's own.
        let overridden = extensions.get::<TokenRequestParameters>().cloned();
        let parameters = overridden.as_ref().unwrap_or(&self.parameters);

        let token = self
            .token(parameters)
            .await
            .map_err(reqwest_middleware::Error::middleware)?;
        // Taken before the token goes in; `None` for a streaming body, which cannot be replayed.
        let replay = copy_request(&req);
        let mut nonce_retry = true;
        let response = self
            .send(next, req, extensions, &token, &mut nonce_retry)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return Ok(response);
        }
        self.after_unauthorized(
            next,
            Rejected {
                response,
                token,
                replay,
            },
            parameters,
            extensions,
            &mut nonce_retry,
        )
        .await
    }

    /// The synchronous start of [`handle_request`](Self::handle_request) for the common case: a
    /// request with the handler's own parameters whose token is in the cache (fresh, or due and
    /// being renewed) and is a Bearer token. Checks the origin, sets `Authorization`, and returns the
    /// token and the copy of the request kept for a 401 replay; the caller sends `req` and hands a
    /// 401 to [`after_unauthorized`](Self::after_unauthorized). `Ok(None)` for anything else (no
    /// token at hand, DPoP, per-request parameters, [`SkipAccessToken`]): `req` is untouched and
    /// takes `handle_request`.
    ///
    /// `origin_allowed`: the caller knows the request's origin is one the handler allows.
    /// `shared_url`: a shared copy of the request's URL, if the caller has one, kept for the replay
    /// instead of a copy.
    pub(crate) fn authorize_now(
        &self,
        req: &mut Request,
        extensions: &Extensions,
        origin_allowed: bool,
        shared_url: Option<Arc<Url>>,
    ) -> reqwest_middleware::Result<Option<Authorized>> {
        if extensions.get::<SkipAccessToken>().is_some()
            || extensions.get::<TokenRequestParameters>().is_some()
        {
            return Ok(None);
        }
        if !origin_allowed {
            self.check_origin(req.url())
                .map_err(reqwest_middleware::Error::middleware)?;
        }
        let Some(token) = self
            .service
            .ready_token(&self.client_name, &self.parameters)
            .filter(|token| !token.is_dpop())
        else {
            return Ok(None);
        };
        let replay = Replay::of(req, shared_url);
        req.headers_mut()
            .insert(AUTHORIZATION, token.authorization_header());
        Ok(Some(Authorized { token, replay }))
    }

    /// What to do with a `401` to a request authorized with `rejected.token`: when a new token can
    /// fix it (see the type docs), renew and resend the replay copy once; otherwise return the 401.
    pub(crate) async fn after_unauthorized<F: Forward>(
        &self,
        next: &F,
        rejected: Rejected,
        parameters: &TokenRequestParameters,
        extensions: &mut Extensions,
        nonce_retry: &mut bool,
    ) -> reqwest_middleware::Result<Response> {
        let Rejected {
            response,
            token,
            replay,
        } = rejected;
        if !self.renewal_can_help(&response) {
            return Ok(response);
        }
        let Some(replay) = replay else {
            tracing::debug!(
                client = %self.client_name,
                "the access token was rejected (401) on a request whose body cannot be resent; \
                 returning the 401"
            );
            self.forget(&token, parameters).await;
            return Ok(response);
        };
        match self.renew(&token, parameters).await {
            Ok(renewed) if !renewed.same_token(&token) => {
                tracing::debug!(
                    client = %self.client_name,
                    "the access token was rejected (401); resending the request once with a new one"
                );
                metrics::count(names::UNAUTHORIZED_REPLAYS, &self.client_name);
                drop(response);
                self.send(next, replay, extensions, &renewed, nonce_retry)
                    .await
            }
            Ok(_same) => {
                tracing::debug!(
                    client = %self.client_name,
                    "the access token was rejected (401) and was renewed moments ago; returning the 401"
                );
                Ok(response)
            }
            Err(error) => {
                tracing::warn!(
                    client = %self.client_name,
                    %error,
                    "the access token was rejected (401) and could not be renewed; returning the 401"
                );
                Ok(response)
            }
        }
    }
}

/// What a request [`ClientAccessTokenHandler::authorize_now`] authorized keeps to resend after a 401.
pub(crate) enum Replay {
    /// A copy of the request.
    Copy(Request),
    /// A request without body or timeout whose URL has a shared copy: the URL is copied only if the
    /// request is resent (a URL copy is an allocation per request).
    Parts {
        method: Method,
        url: Arc<Url>,
        headers: HeaderMap,
        version: Version,
    },
}

impl Replay {
    /// What to keep of `req`; `None` if its body is a stream. `shared_url` is used when it is
    /// `req`'s URL.
    pub(crate) fn of(req: &Request, shared_url: Option<Arc<Url>>) -> Option<Self> {
        match shared_url {
            Some(url)
                if req.body().is_none()
                    && req.timeout().is_none()
                    && url.as_str() == req.url().as_str() =>
            {
                Some(Replay::Parts {
                    method: req.method().clone(),
                    url,
                    // Most requests carry no headers of their own yet (reqwest adds its defaults
                    // when it sends): an empty map is made, not copied.
                    headers: if req.headers().is_empty() {
                        HeaderMap::new()
                    } else {
                        req.headers().clone()
                    },
                    version: req.version(),
                })
            }
            _ => copy_request(req).map(Replay::Copy),
        }
    }

    /// A copy to send, keeping this one (`None` only if the body could no longer be copied).
    pub(crate) fn to_request(&self) -> Option<Request> {
        match self {
            Replay::Copy(request) => copy_request(request),
            Replay::Parts {
                method,
                url,
                headers,
                version,
            } => Some(request_of(
                method.clone(),
                Url::clone(url),
                headers.clone(),
                *version,
            )),
        }
    }

    fn into_request(self) -> Request {
        match self {
            Replay::Copy(request) => request,
            Replay::Parts {
                method,
                url,
                headers,
                version,
            } => request_of(method, Url::clone(&url), headers, version),
        }
    }
}

/// A request [`ClientAccessTokenHandler::authorize_now`] authorized.
pub(crate) struct Authorized {
    /// The token in its `Authorization` header.
    pub(crate) token: ClientAccessToken,
    /// Taken before the token went in, to resend after a 401; `None` for a streaming body.
    pub(crate) replay: Option<Replay>,
}

impl Authorized {
    /// The request got `response`, a 401.
    pub(crate) fn rejected(self, response: Response) -> Rejected {
        Rejected {
            response,
            token: self.token,
            replay: self.replay.map(Replay::into_request),
        }
    }
}

/// A `401` to a request authorized with `token`.
pub(crate) struct Rejected {
    response: Response,
    token: ClientAccessToken,
    replay: Option<Request>,
}

#[async_trait::async_trait]
impl Middleware for ClientAccessTokenHandler {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.handle_request(req, extensions, &next).await
    }
}

/// Where the handler sends a request once it is authorized.
///
/// Generic rather than `dyn`, so that an `HttpClient` whose only middleware is the handler calls it
/// without reqwest-middleware's boxed chain: the whole request is one future, with no allocation of
/// its own.
pub(crate) trait Forward: Sync {
    /// Sends `req` on.
    fn forward<'a>(
        &'a self,
        req: Request,
        extensions: &'a mut Extensions,
    ) -> impl Future<Output = reqwest_middleware::Result<Response>> + Send + 'a;
}

/// The rest of a middleware chain.
impl Forward for Next<'_> {
    fn forward<'a>(
        &'a self,
        req: Request,
        extensions: &'a mut Extensions,
    ) -> impl Future<Output = reqwest_middleware::Result<Response>> + Send + 'a {
        self.clone().run(req, extensions)
    }
}

impl fmt::Debug for ClientAccessTokenHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientAccessTokenHandler")
            .field("client_name", &self.client_name)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::error_parameter;
    use crate::tokens::{AccessTokenManagementOptions, AccessTokenManagementService};
    use url::Url;

    #[test]
    fn the_origin_check_agrees_with_url_origin() {
        let urls = [
            "https://api.example/",
            "https://API.example:443/v1?x=1",
            "https://api.example:8443/",
            "http://api.example/",
            "http://api.example:443/",
            "https://user:pw@api.example/path",
            "https://api.example.evil/",
            "https://127.0.0.1/",
            "https://127.0.0.1:8080/",
            "https://[::1]:8080/",
            "https://[0:0:0:0:0:0:0:1]:8080/a",
            "wss://api.example/",
            "blob:https://api.example/uuid",
            "file:///etc/passwd",
            "data:text/plain,x",
        ];
        let service = AccessTokenManagementService::new(AccessTokenManagementOptions::default())
            .expect("no clients is valid");
        for allowed in &urls[..11] {
            let allowed = Url::parse(allowed).unwrap();
            let handler = super::ClientAccessTokenHandler::new(service.clone(), "client")
                .with_allowed_origin(&allowed);
            for url in urls {
                let url = Url::parse(url).unwrap();
                assert_eq!(
                    handler.allows(&url),
                    handler.allowed_origins.contains(&url.origin()),
                    "allowed {allowed}, request to {url}"
                );
            }
        }
    }

    #[test]
    fn the_replay_copy_is_the_request() {
        let client = reqwest::Client::new();
        let requests = [
            client.get("https://api.example/a?x=1"),
            client
                .delete("https://api.example/b")
                .header("x-trace", "1")
                .header("x-trace", "2")
                .version(reqwest::Version::HTTP_2),
            client
                .post("https://api.example/c")
                .body("payload")
                .timeout(std::time::Duration::from_secs(3)),
            client
                .get("https://api.example/d")
                .timeout(std::time::Duration::from_secs(5)),
        ];
        for request in requests {
            let request = request.build().unwrap();
            let shared = std::sync::Arc::new(request.url().clone());
            let other = std::sync::Arc::new(Url::parse("https://api.example/other").unwrap());
            for copy in [
                crate::http::retry::copy_request(&request).expect("no stream body"),
                super::Replay::of(&request, Some(std::sync::Arc::clone(&shared)))
                    .expect("no stream body")
                    .to_request()
                    .expect("no stream body"),
                super::Replay::of(&request, Some(shared))
                    .expect("no stream body")
                    .into_request(),
                super::Replay::of(&request, Some(other))
                    .expect("no stream body")
                    .into_request(),
            ] {
                assert_eq!(copy.method(), request.method());
                assert_eq!(copy.url(), request.url());
                assert_eq!(copy.headers(), request.headers());
                assert_eq!(copy.version(), request.version());
                assert_eq!(copy.timeout(), request.timeout());
                assert_eq!(
                    copy.body().and_then(reqwest::Body::as_bytes),
                    request.body().and_then(reqwest::Body::as_bytes)
                );
            }
        }
    }

    #[test]
    fn finds_the_error_parameter_of_a_challenge() {
        let error = |c: &str| error_parameter(c);
        assert_eq!(
            error(r#"Bearer realm="api", error="invalid_token", error_description="expired""#),
            Some("invalid_token".into())
        );
        assert_eq!(
            error(r#"Bearer error_description="a, error=x", error=insufficient_scope"#),
            Some("insufficient_scope".into())
        );
        assert_eq!(error(r#"Bearer realm="error=\"x\"""#), None);
        assert_eq!(error("Bearer"), None);
        assert_eq!(
            error(r#"Bearer ERROR = "invalid_token""#),
            Some("invalid_token".into())
        );
    }
}
