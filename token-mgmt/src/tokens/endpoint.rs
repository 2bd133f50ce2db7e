//! The token endpoint client: one client credentials request (RFC 6749 section 4.4).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::header::{ACCEPT, CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, StatusCode};
use serde_json::{Map, Value};
use url::{Url, form_urlencoded};

use super::auth::Authenticator;
use super::clock::Clock;
use super::discovery::{ClientTraits, Discovered, Discovery, DiscoveryOptions};
use super::dpop::{DPOP_HEADER, DpopError, DpopProver, USE_DPOP_NONCE};
use super::error::{MAX_ERROR_CODE_CHARS, MAX_ERROR_DESCRIPTION_CHARS, TokenError, cap_chars};
use super::options::{TokenClientOptions, display_endpoint};

/// The longest `expires_in` taken at face value (ten years); longer ones are clamped so instants
/// cannot overflow.
const MAX_EXPIRES_IN: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What the service knows about one token client, computed once at build.
pub(crate) struct ClientEndpoint {
    pub(crate) name: Arc<str>,
    /// The configured location: the token endpoint, or the authority of a discovered one.
    pub(crate) url: Url,
    /// The location as shown in errors and logs (no user info or query).
    pub(crate) endpoint: Arc<str>,
    /// How its requests authenticate (built once; signs a new assertion per request).
    pub(crate) auth: Authenticator,
    /// Its DPoP key (`None`: no DPoP), or why the key could not be had.
    pub(crate) dpop: Option<Result<Arc<DpopProver>, Arc<DpopError>>>,
    /// Set for a client configured with an authority: finds and caches its token endpoint.
    discovery: Option<Arc<Discovery>>,
}

impl ClientEndpoint {
    pub(crate) fn new(
        name: &str,
        options: TokenClientOptions,
        discovery: &DiscoveryOptions,
        clock: &Arc<dyn Clock>,
    ) -> Self {
        let url = options.location().clone();
        let dpop = options.dpop.as_ref().map(|key| match key.load() {
            Ok(key) => Ok(Arc::new(DpopProver::new(key))),
            Err(error) => Err(Arc::new(DpopError::Key(error))),
        });
        let discovery = options.discovered_from().map(|authority| {
            let traits = ClientTraits {
                method: options.authentication.method(),
                mtls: options.authentication.tls_client_certificate().is_some(),
                dpop_algorithm: match &dpop {
                    Some(Ok(prover)) => Some(prover.algorithm()),
                    _ => None,
                },
                allow_insecure_http: options.allow_insecure_http,
            };
            Arc::new(Discovery::new(
                name.into(),
                authority.clone(),
                traits,
                discovery.clone(),
                Arc::clone(clock),
            ))
        });
        Self {
            name: name.into(),
            endpoint: display_endpoint(&url).into(),
            url,
            auth: Authenticator::new(name, &options),
            dpop,
            discovery,
        }
    }

    /// The discovered token endpoint and issuer (`None`: the client has a configured `address`).
    async fn discover(
        &self,
        http: &reqwest::Client,
    ) -> Result<Option<Arc<Discovered>>, TokenError> {
        let Some(discovery) = &self.discovery else {
            return Ok(None);
        };
        discovery
            .discovered(http)
            .await
            .map(Some)
            .map_err(|source| TokenError::Discovery {
                client: self.name.to_string(),
                authority: self.endpoint.to_string(),
                source: Arc::new(source),
            })
    }

    /// With eager discovery, fetches the discovery document now, on `runtime`; a failure is logged
    /// (the first token request tries again).
    pub(crate) fn prefetch(
        &self,
        runtime: &tokio::runtime::Handle,
        endpoint: &TokenEndpointClient,
    ) {
        let Some(discovery) = self.discovery.clone().filter(|d| d.eager()) else {
            return;
        };
        let (http, timeout) = (endpoint.http.clone(), endpoint.timeout);
        let (name, authority) = (Arc::clone(&self.name), Arc::clone(&self.endpoint));
        drop(runtime.spawn(async move {
            match tokio::time::timeout(timeout, discovery.discovered(&http)).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(
                    client = %name,
                    %authority,
                    error = &error as &dyn std::error::Error,
                    "eager discovery failed; the first token request will try again"
                ),
                Err(_elapsed) => tracing::warn!(
                    client = %name,
                    %authority,
                    ?timeout,
                    "eager discovery timed out; the first token request will try again"
                ),
            }
        }));
    }

    /// The DPoP prover, if the client uses DPoP.
    pub(crate) fn dpop(&self) -> Result<Option<&DpopProver>, TokenError> {
        match &self.dpop {
            None => Ok(None),
            Some(Ok(prover)) => Ok(Some(prover)),
            Some(Err(source)) => Err(self.dpop_error(Arc::clone(source))),
        }
    }

    /// The client fingerprint of cache keys, with the DPoP key's thumbprint mixed in: a token
    /// bound to one key is never served to a client holding another.
    pub(crate) fn with_dpop_thumbprint(&self, fingerprint: String) -> String {
        match &self.dpop {
            None => fingerprint,
            Some(Ok(prover)) => format!("{fingerprint}.dpop.{}", prover.thumbprint()),
            Some(Err(_)) => format!("{fingerprint}.dpop.unavailable"),
        }
    }

    /// A token arrived: a DPoP client that got a Bearer token says so (once).
    pub(crate) fn received(&self, token: &super::ClientAccessToken) {
        if let Some(Ok(prover)) = &self.dpop {
            if !token.is_dpop() {
                prover.bearer_issued(&self.name);
            }
        }
    }

    pub(crate) fn dpop_error(&self, source: Arc<DpopError>) -> TokenError {
        TokenError::DpopProof {
            client: self.name.to_string(),
            source,
        }
    }
}

/// The scope, resources and extra parameters of one request (already merged with the client's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestShape {
    pub(crate) scope: Option<String>,
    pub(crate) resources: Vec<String>,
    pub(crate) parameters: Vec<(String, String)>,
}

/// A successful token response.
pub(crate) struct TokenResponse {
    pub(crate) access_token: String,
    pub(crate) token_type: Option<String>,
    pub(crate) expires_in: Option<Duration>,
    pub(crate) scope: Option<String>,
    /// The HTTP status of the response.
    pub(crate) status: StatusCode,
}

/// Sends token requests.
#[derive(Clone)]
pub(crate) struct TokenEndpointClient {
    http: reqwest::Client,
    timeout: Duration,
    max_body: usize,
}

impl TokenEndpointClient {
    pub(crate) fn new(http: reqwest::Client, timeout: Duration, max_body: usize) -> Self {
        Self {
            http,
            timeout,
            max_body,
        }
    }

    /// Builds the default HTTP client for token requests: no redirects (a redirect must not carry
    /// the client credentials elsewhere).
    pub(crate) fn default_http_client() -> Result<reqwest::Client, reqwest::Error> {
        crate::tls::client_builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("token-mgmt/", env!("CARGO_PKG_VERSION")))
            .build()
    }

    /// Requests a token. Applies the request timeout to the whole exchange (connect, send, body).
    pub(crate) async fn request_token(
        &self,
        client: &ClientEndpoint,
        shape: &RequestShape,
    ) -> Result<TokenResponse, TokenError> {
        tracing::debug!(
            client = %client.name,
            endpoint = %client.endpoint,
            scope = shape.scope.as_deref().unwrap_or(""),
            resources = shape.resources.len(),
            "requesting client credentials token"
        );
        let result = match tokio::time::timeout(self.timeout, self.exchange(client, shape)).await {
            Ok(result) => result,
            Err(_elapsed) => Err(TokenError::Timeout {
                client: client.name.to_string(),
                endpoint: client.endpoint.to_string(),
                timeout: self.timeout,
            }),
        };
        match &result {
            Ok(response) => tracing::info!(
                client = %client.name,
                endpoint = %client.endpoint,
                expires_in_secs = response.expires_in.map(|d| d.as_secs()),
                scope = response.scope.as_deref(),
                "received client credentials token"
            ),
            // The service warns once per failure streak; each attempt is logged at debug.
            Err(error) => tracing::debug!(
                client = %client.name,
                endpoint = %client.endpoint,
                %error,
                "client credentials token request failed"
            ),
        }
        result
    }

    /// One exchange; with DPoP, a `use_dpop_nonce` answer that brings a nonce is resent once with
    /// it (RFC 9449 section 8).
    async fn exchange(
        &self,
        client: &ClientEndpoint,
        shape: &RequestShape,
    ) -> Result<TokenResponse, TokenError> {
        let mut nonce = false;
        let result = self.exchange_once(client, shape, &mut nonce).await;
        if !nonce || !is_use_dpop_nonce(&result) {
            return result;
        }
        tracing::debug!(client = %client.name, "the token endpoint asked for a DPoP nonce; resending");
        let result = self.exchange_once(client, shape, &mut nonce).await;
        if is_use_dpop_nonce(&result) {
            return Err(TokenError::DpopNonceRejected {
                client: client.name.to_string(),
                endpoint: client.endpoint.to_string(),
            });
        }
        result
    }

    /// Sends one token request; `nonce` says whether the response brought a DPoP nonce.
    async fn exchange_once(
        &self,
        client: &ClientEndpoint,
        shape: &RequestShape,
        nonce: &mut bool,
    ) -> Result<TokenResponse, TokenError> {
        let dpop = client.dpop()?;
        let discovered = client.discover(&self.http).await?;
        // A discovered client's assertions are for its issuer, as the issuer writes itself.
        let (url, audience) = match &discovered {
            Some(discovered) => (&discovered.token_endpoint, discovered.issuer.as_str()),
            None => (&client.url, &*client.endpoint),
        };
        let request = client
            .auth
            .http_client(&self.http)
            .post(url.clone())
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/x-www-form-urlencoded"),
            );
        let mut request = client
            .auth
            .apply(request, form_body(shape), audience)
            .await?;
        if let Some(prover) = dpop {
            let proof = prover
                .proof("POST", url, None)
                .map_err(|e| client.dpop_error(Arc::new(e)))?;
            request = request.header(DPOP_HEADER, proof);
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| transport(client, "sending the request failed", e))?;
        *nonce = dpop.is_some_and(|prover| prover.remember_nonce(url, response.headers()));
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|value| parse_retry_after(value, SystemTime::now()));
        let body = self.read_body(client, &mut response).await?;
        drop(response);
        parse_response(client, status, &body, retry_after)
    }

    /// Reads the body chunk by chunk, stopping as soon as it exceeds the limit.
    async fn read_body(
        &self,
        client: &ClientEndpoint,
        response: &mut reqwest::Response,
    ) -> Result<Vec<u8>, TokenError> {
        let too_large = || TokenError::BodyTooLarge {
            client: client.name.to_string(),
            endpoint: client.endpoint.to_string(),
            limit: self.max_body,
        };
        let announced = response.content_length();
        if announced.is_some_and(|len| len > self.max_body as u64) {
            return Err(too_large());
        }
        let capacity = announced.map_or(1024, |len| usize::try_from(len).unwrap_or(self.max_body));
        let mut body = Vec::with_capacity(capacity);
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| transport(client, "reading the response failed", e))?
        {
            if body.len() + chunk.len() > self.max_body {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

fn is_use_dpop_nonce(result: &Result<TokenResponse, TokenError>) -> bool {
    matches!(result, Err(error) if error.oauth_error() == Some(USE_DPOP_NONCE))
}

fn transport(client: &ClientEndpoint, context: &'static str, error: reqwest::Error) -> TokenError {
    let kind = if error.is_connect() {
        "connection failed"
    } else if error.is_timeout() {
        "the HTTP client timed out"
    } else {
        context
    };
    TokenError::Transport {
        client: client.name.to_string(),
        endpoint: client.endpoint.to_string(),
        kind,
        source: Arc::new(error.without_url()),
    }
}

/// The grant's form fields; the client's credentials are added by [`Authenticator::apply`].
fn form_body(shape: &RequestShape) -> String {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(128));
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = shape.scope.as_deref().filter(|s| !s.trim().is_empty()) {
        form.append_pair("scope", scope);
    }
    for resource in &shape.resources {
        form.append_pair("resource", resource);
    }
    for (name, value) in &shape.parameters {
        form.append_pair(name, value);
    }
    form.finish()
}

fn parse_response(
    client: &ClientEndpoint,
    status: StatusCode,
    body: &[u8],
    retry_after: Option<Duration>,
) -> Result<TokenResponse, TokenError> {
    let invalid = |reason: &str| TokenError::InvalidResponse {
        client: client.name.to_string(),
        endpoint: client.endpoint.to_string(),
        status,
        reason: reason.to_owned(),
    };
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if !status.is_success() {
        let object = json.as_ref().and_then(Value::as_object);
        let field = |name: &str, max: usize| {
            object
                .and_then(|o| o.get(name))
                .and_then(Value::as_str)
                .map(|s| cap_chars(s, max))
        };
        return Err(TokenError::Endpoint {
            client: client.name.to_string(),
            endpoint: client.endpoint.to_string(),
            status,
            error: field("error", MAX_ERROR_CODE_CHARS),
            error_description: field("error_description", MAX_ERROR_DESCRIPTION_CHARS),
            retry_after,
        });
    }
    let Some(json) = json else {
        return Err(invalid("the body is not JSON"));
    };
    let Value::Object(mut object) = json else {
        return Err(invalid("the body is not a JSON object"));
    };
    let access_token = match object.remove("access_token") {
        Some(Value::String(token)) if !token.is_empty() => token,
        None | Some(Value::Null | Value::String(_)) => {
            return Err(TokenError::MissingAccessToken {
                client: client.name.to_string(),
                endpoint: client.endpoint.to_string(),
            });
        }
        Some(_) => return Err(invalid("access_token is not a string")),
    };
    let token_type = optional_string(&mut object, "token_type")
        .map_err(|()| invalid("token_type is not a string"))?;
    let scope = optional_string(&mut object, "scope").unwrap_or(None);
    let expires_in = match object.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            parse_expires_in(value)
                .ok_or_else(|| invalid("expires_in is not a non-negative number"))?,
        ),
    };
    Ok(TokenResponse {
        access_token,
        token_type,
        expires_in,
        scope,
        status,
    })
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 section 10.2.3); a date in the past is
/// no delay.
fn parse_retry_after(value: &HeaderValue, now: SystemTime) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(text).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn optional_string(object: &mut Map<String, Value>, name: &str) -> Result<Option<String>, ()> {
    match object.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(()),
    }
}

/// `expires_in` as a JSON number or a numeric string (some servers send `"3600"`).
fn parse_expires_in(value: &Value) -> Option<Duration> {
    let seconds = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return None;
    }
    Some(Duration::from_secs_f64(
        seconds.min(MAX_EXPIRES_IN.as_secs_f64()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_accepts_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let header = |s: &str| HeaderValue::from_str(s).unwrap();
        assert_eq!(
            parse_retry_after(&header("30"), now),
            Some(Duration::from_secs(30))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&header(&later), now),
            Some(Duration::from_secs(120))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(5));
        assert_eq!(
            parse_retry_after(&header(&earlier), now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&header("soon"), now), None);
    }

    #[test]
    fn expires_in_accepts_numbers_and_numeric_strings() {
        assert_eq!(
            parse_expires_in(&Value::from(3600)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(
            parse_expires_in(&Value::from("120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_expires_in(&Value::from(-1)), None);
        assert_eq!(parse_expires_in(&Value::from("soon")), None);
        assert_eq!(
            parse_expires_in(&Value::from(u64::MAX)),
            Some(MAX_EXPIRES_IN)
        );
    }
}
