//! Loopback servers: an API that requires a valid Bearer token, and a client-credentials token
//! endpoint. Both listen on 127.0.0.1 with an OS-assigned port and run on the tokio runtime whose
//! [`Handle`] they are given (usually a [`ServerRuntime`], so servers and load do not share worker
//! threads).

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use base64::Engine;
use dashmap::{DashMap, DashSet};
use tokio::runtime::Handle;
use url::Url;

/// Path of the protected API resource, relative to [`ApiServer::base_url`].
pub const API_RESOURCE: &str = "data";

/// The JSON body the API answers with.
/// The DPoP proof header (RFC 9449).
const DPOP: &str = "dpop";
const API_BODY: &str = r#"{"id":42,"name":"widget","tags":["a","b","c"],"ok":true}"#;

/// A dedicated multi-threaded tokio runtime for the servers, so that server work is scheduled
/// apart from the load generator's runtime (as it would be in another process).
#[derive(Debug)]
pub struct ServerRuntime {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ServerRuntime {
    /// A runtime with `worker_threads` workers (at least 1).
    pub fn new(worker_threads: usize) -> io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(worker_threads.max(1))
            .thread_name("bench-server")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// The handle to start servers on.
    pub fn handle(&self) -> &Handle {
        self.runtime
            .as_ref()
            .expect("runtime present until drop")
            .handle()
    }
}

impl Drop for ServerRuntime {
    fn drop(&mut self) {
        // Safe to drop from anywhere, including inside another runtime.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The set of access tokens the API accepts. The token endpoint adds every token it issues (unless
/// told not to); baselines add a fixed token.
#[derive(Clone, Debug, Default)]
pub struct ValidTokens(Arc<DashSet<String>>);

impl ValidTokens {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Accept `token` from now on.
    pub fn insert(&self, token: impl Into<String>) {
        self.0.insert(token.into());
    }

    /// Whether `token` is accepted.
    pub fn contains(&self, token: &str) -> bool {
        self.0.contains(token)
    }

    /// Number of accepted tokens.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no token is accepted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn serve(handle: &Handle, router: Router) -> io::Result<SocketAddr> {
    let std_listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    std_listener.set_nonblocking(true)?;
    let addr = std_listener.local_addr()?;
    let listener = {
        let _entered = handle.enter();
        tokio::net::TcpListener::from_std(std_listener)?
    };
    let listener = listener.tap_io(|tcp| {
        // Best effort: a failure only costs latency, and every subject sees the same server.
        let _ = tcp.set_nodelay(true);
    });
    handle.spawn(async move {
        if let Err(error) = axum::serve(listener, router).await {
            eprintln!("bench server on {addr} stopped: {error}");
        }
    });
    Ok(addr)
}

// ---------------------------------------------------------------------------------------------
// API server
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
struct ApiState {
    valid: ValidTokens,
    served: AtomicU64,
    rejected: AtomicU64,
}

/// A loopback API: `GET /api/data` answers a small JSON body when the request carries
/// `Authorization: Bearer <token>` with a token from its [`ValidTokens`], 401 otherwise.
#[derive(Debug)]
pub struct ApiServer {
    addr: SocketAddr,
    state: Arc<ApiState>,
}

impl ApiServer {
    /// Starts the API on `handle`, accepting the tokens in `valid`.
    pub fn start(handle: &Handle, valid: ValidTokens) -> io::Result<Self> {
        let state = Arc::new(ApiState {
            valid,
            served: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/api/data", get(api_data))
            .with_state(Arc::clone(&state));
        let addr = serve(handle, router)?;
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:<port>/api/` (with the trailing slash, for relative resolution).
    pub fn base_url(&self) -> Url {
        Url::parse(&format!("http://{}/api/", self.addr)).expect("valid loopback url")
    }

    /// Absolute URL of the protected resource.
    pub fn data_url(&self) -> Url {
        self.base_url()
            .join(API_RESOURCE)
            .expect("valid relative path")
    }

    /// Requests answered with 200.
    pub fn served(&self) -> u64 {
        self.state.served.load(Ordering::Relaxed)
    }

    /// Requests answered with 401.
    pub fn rejected(&self) -> u64 {
        self.state.rejected.load(Ordering::Relaxed)
    }
}

async fn api_data(State(state): State<Arc<ApiState>>, headers: HeaderMap) -> Response {
    // A DPoP-bound token comes with its proof (present, not verified: the DPoP figures measure the
    // client's side).
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            value.strip_prefix("Bearer ").or_else(|| {
                value
                    .strip_prefix("DPoP ")
                    .filter(|_| headers.contains_key(DPOP))
            })
        });
    let authorized = token.is_some_and(|token| state.valid.contains(token));
    if !authorized {
        state.rejected.fetch_add(1, Ordering::Relaxed);
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"))],
        )
            .into_response();
    }
    state.served.fetch_add(1, Ordering::Relaxed);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        API_BODY,
    )
        .into_response()
}

// ---------------------------------------------------------------------------------------------
// Token endpoint
// ---------------------------------------------------------------------------------------------

/// How the loopback token endpoint behaves.
#[derive(Clone, Debug)]
pub struct TokenEndpointConfig {
    /// Time the endpoint waits before answering each token request (after authenticating it).
    pub delay: Duration,
    /// `expires_in` of issued tokens, in seconds.
    pub expires_in: u64,
    /// Secret every client must present (any client id is accepted).
    pub client_secret: String,
    /// Length of issued access tokens (at least 16; opaque reference tokens are ~64, JWTs ~800).
    pub token_len: usize,
    /// Add issued tokens to the API's [`ValidTokens`] and count requests per client id. Off for
    /// the memory scenario, so the server's own bookkeeping does not count as the client's cache
    /// (the total in [`TokenEndpoint::requests`] is always counted).
    pub record: bool,
}

impl Default for TokenEndpointConfig {
    fn default() -> Self {
        Self {
            delay: Duration::ZERO,
            expires_in: 3600,
            client_secret: crate::CLIENT_SECRET.to_owned(),
            token_len: 64,
            record: true,
        }
    }
}

#[derive(Debug)]
struct TokenState {
    /// Set once the listener is bound (the assertion audience is the endpoint's own URL).
    addr: std::sync::OnceLock<SocketAddr>,
    config: TokenEndpointConfig,
    valid: ValidTokens,
    issued: AtomicU64,
    requests: AtomicU64,
    per_client: DashMap<String, u64>,
}

/// A minimal OAuth 2.0 client-credentials token endpoint at `POST /connect/token`.
///
/// Authenticates the client with `client_secret_basic` (RFC 6749 2.3.1: id and secret
/// form-url-encoded, then base64), `client_secret_post`, or a JWT client assertion
/// (`client_secret_jwt` / `private_key_jwt`, RFC 7523: the client is the assertion's `sub`, which
/// must equal its `iss`, its `aud` must be this endpoint and its `exp` in the future; the signature
/// is not verified, so that the figures measure the client's cost, not the server's), requires
/// `grant_type=client_credentials`, waits [`TokenEndpointConfig::delay`] and answers a Bearer token.
/// Counts every request, and requests per client id.
#[derive(Debug)]
pub struct TokenEndpoint {
    addr: SocketAddr,
    state: Arc<TokenState>,
}

impl TokenEndpoint {
    /// Starts the endpoint on `handle`; issued tokens are added to `valid` (see
    /// [`TokenEndpointConfig::record`]).
    pub fn start(
        handle: &Handle,
        config: TokenEndpointConfig,
        valid: ValidTokens,
    ) -> io::Result<Self> {
        let state = Arc::new(TokenState {
            addr: std::sync::OnceLock::new(),
            config,
            valid,
            issued: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            per_client: DashMap::new(),
        });
        let router = Router::new()
            .route("/connect/token", post(token))
            .with_state(Arc::clone(&state));
        let addr = serve(handle, router)?;
        state.addr.set(addr).expect("set once, here");
        Ok(Self { addr, state })
    }

    /// `http://127.0.0.1:<port>/connect/token`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/connect/token", self.addr)).expect("valid loopback url")
    }

    /// Every request received (including rejected ones).
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Requests received from `client_id` (authenticated or not).
    pub fn requests_for(&self, client_id: &str) -> u64 {
        self.state
            .per_client
            .get(client_id)
            .map_or(0, |count| *count)
    }

    /// Tokens issued.
    pub fn issued(&self) -> u64 {
        self.state.issued.load(Ordering::Relaxed)
    }
}

impl TokenState {
    fn addr(&self) -> SocketAddr {
        *self.addr.get().expect("set when the endpoint started")
    }
}

fn oauth_error(status: StatusCode, error: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": error }))).into_response()
}

/// `client_assertion_type` of JWT client assertions (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// The client id of a compact-JWS client assertion whose claims hold (see [`TokenEndpoint`]); the
/// signature is not checked.
fn assertion_client(assertion: &str, audience: &str) -> Option<String> {
    let mut parts = assertion.split('.');
    let (_header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || signature.is_empty() {
        return None;
    }
    let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(claims)
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&claims).ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let sub = claims["sub"].as_str()?;
    (claims["iss"].as_str() == Some(sub)
        && claims["aud"].as_str() == Some(audience)
        && claims["exp"].as_u64()? > now)
        .then(|| sub.to_owned())
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    let unescape = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
    };
    Some((unescape(id)?, unescape(secret)?))
}

async fn token(State(state): State<Arc<TokenState>>, headers: HeaderMap, body: Bytes) -> Response {
    state.requests.fetch_add(1, Ordering::Relaxed);
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let field = |name: &str| {
        form.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };

    if let Some(assertion) = field("client_assertion") {
        let audience = format!("http://{}/connect/token", state.addr());
        let client_id = (field("client_assertion_type") == Some(JWT_BEARER))
            .then(|| assertion_client(assertion, &audience))
            .flatten();
        let Some(client_id) = client_id else {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        };
        if state.config.record {
            *state.per_client.entry(client_id).or_insert(0) += 1;
        }
    } else {
        let credentials = basic_credentials(&headers).or_else(|| {
            Some((
                field("client_id")?.to_owned(),
                field("client_secret").unwrap_or_default().to_owned(),
            ))
        });
        let Some((client_id, secret)) = credentials else {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        };
        if state.config.record {
            *state.per_client.entry(client_id.clone()).or_insert(0) += 1;
        }
        if secret != state.config.client_secret {
            return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
        }
    }
    if field("grant_type") != Some("client_credentials") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    if !state.config.delay.is_zero() {
        tokio::time::sleep(state.config.delay).await;
    }

    let serial = state.issued.fetch_add(1, Ordering::Relaxed);
    let mut access_token = format!("at{serial:014x}");
    let len = state.config.token_len.max(access_token.len());
    access_token.extend(std::iter::repeat_n('x', len - access_token.len()));
    if state.config.record {
        state.valid.insert(access_token.clone());
    }
    let mut body = serde_json::json!({
        "access_token": access_token,
        // A request with a DPoP proof gets a DPoP-bound token (RFC 9449 section 5).
        "token_type": if headers.contains_key(DPOP) { "DPoP" } else { "Bearer" },
        "expires_in": state.config.expires_in,
    });
    if let Some(scope) = field("scope") {
        body["scope"] = serde_json::Value::from(scope);
    }
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(body),
    )
        .into_response()
}

/// The servers one scenario needs: its own runtime, a token endpoint and an API that accepts the
/// tokens the endpoint issues plus [`Servers::FIXED_TOKEN`] (for the fixed-header baselines).
#[derive(Debug)]
pub struct Servers {
    /// Token endpoint (counts requests per client id).
    pub token: TokenEndpoint,
    /// Protected API.
    pub api: ApiServer,
    /// Tokens the API accepts.
    pub valid: ValidTokens,
    // Last: the servers' tasks live on it.
    runtime: ServerRuntime,
}

impl Servers {
    /// The token the fixed-`Authorization` baselines send.
    pub const FIXED_TOKEN: &'static str =
        "fixed-baseline-token-0123456789abcdef0123456789abcdef0123456789ab";

    /// Starts a server runtime with `server_threads` workers, a token endpoint configured by
    /// `config` and the API.
    pub fn start(server_threads: usize, config: TokenEndpointConfig) -> io::Result<Self> {
        let runtime = ServerRuntime::new(server_threads)?;
        let valid = ValidTokens::new();
        valid.insert(Self::FIXED_TOKEN);
        let token = TokenEndpoint::start(runtime.handle(), config, valid.clone())?;
        let api = ApiServer::start(runtime.handle(), valid.clone())?;
        Ok(Self {
            token,
            api,
            valid,
            runtime,
        })
    }

    /// The servers' runtime handle.
    pub fn handle(&self) -> &Handle {
        self.runtime.handle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_token_request_with_a_proof_gets_a_dpop_token_the_api_takes_only_with_a_proof() {
        let valid = ValidTokens::new();
        let handle = Handle::current();
        let endpoint =
            TokenEndpoint::start(&handle, TokenEndpointConfig::default(), valid.clone()).unwrap();
        let api = ApiServer::start(&handle, valid).unwrap();
        let client = reqwest::Client::new();
        let response = client
            .post(endpoint.url())
            .header(DPOP, "proof")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "d"),
                ("client_secret", crate::CLIENT_SECRET),
            ])
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["token_type"], "DPoP");
        let token = body["access_token"].as_str().unwrap().to_owned();

        let with_proof = client
            .get(api.data_url())
            .header(header::AUTHORIZATION, format!("DPoP {token}"))
            .header(DPOP, "proof")
            .send()
            .await
            .unwrap();
        assert_eq!(with_proof.status(), StatusCode::OK);
        let without_proof = client
            .get(api.data_url())
            .header(header::AUTHORIZATION, format!("DPoP {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(without_proof.status(), StatusCode::UNAUTHORIZED);
        assert_eq!((api.served(), api.rejected()), (1, 1));
    }

    #[tokio::test]
    async fn token_endpoint_issues_tokens_the_api_accepts_and_counts_requests() {
        let valid = ValidTokens::new();
        let handle = Handle::current();
        let endpoint =
            TokenEndpoint::start(&handle, TokenEndpointConfig::default(), valid.clone()).unwrap();
        let api = ApiServer::start(&handle, valid).unwrap();
        let client = reqwest::Client::new();

        // client_secret_basic with a form-url-encoded id (RFC 6749 2.3.1).
        let basic = base64::engine::general_purpose::STANDARD
            .encode(format!("a%2Bb:{}", crate::CLIENT_SECRET));
        let response = client
            .post(endpoint.url())
            .header(header::AUTHORIZATION, format!("Basic {basic}"))
            .form(&[("grant_type", "client_credentials"), ("scope", "api")])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body: serde_json::Value = response.json().await.unwrap();
        let token = body["access_token"].as_str().unwrap().to_owned();
        assert_eq!(token.len(), 64);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["scope"], "api");
        assert_eq!(endpoint.requests_for("a+b"), 1);

        // client_secret_post with a wrong secret is counted and rejected.
        let response = client
            .post(endpoint.url())
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "c"),
                ("client_secret", "nope"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(endpoint.requests_for("c"), 1);
        assert_eq!(endpoint.requests(), 2);
        assert_eq!(endpoint.issued(), 1);

        let ok = client
            .get(api.data_url())
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.text().await.unwrap(), API_BODY);
        let denied = client
            .get(api.data_url())
            .bearer_auth("forged")
            .send()
            .await
            .unwrap();
        assert_eq!(denied.status(), StatusCode::UNAUTHORIZED);
        let missing = client.get(api.data_url()).send().await.unwrap();
        assert_eq!(missing.status(), StatusCode::UNAUTHORIZED);
        assert_eq!((api.served(), api.rejected()), (1, 2));
    }

    #[tokio::test]
    async fn token_endpoint_accepts_assertions_for_itself_only() {
        let handle = Handle::current();
        let endpoint =
            TokenEndpoint::start(&handle, TokenEndpointConfig::default(), ValidTokens::new())
                .unwrap();
        let b64 = |v: serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let exp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 60;
        let assertion = |aud: &str| {
            let claims = serde_json::json!({"iss": "jwt", "sub": "jwt", "aud": aud, "exp": exp});
            format!(
                "{}.{}.c2ln",
                b64(serde_json::json!({"alg": "ES256"})),
                b64(claims)
            )
        };
        let client = reqwest::Client::new();
        let send = |assertion: String| {
            client.post(endpoint.url()).form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", JWT_BEARER),
                ("client_assertion", assertion.as_str()),
            ])
        };
        let ok = send(assertion(endpoint.url().as_str()))
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        let wrong_audience = send(assertion("http://elsewhere/token"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong_audience.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(endpoint.requests_for("jwt"), 1);
        assert_eq!(endpoint.issued(), 1);
    }
}
