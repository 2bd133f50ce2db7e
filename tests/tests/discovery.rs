//! Issuer discovery against a local issuer (axum on 127.0.0.1): both well-known paths, the issuer
//! check, caching (requests counted), an issuer that is down then up, the auth-method and DPoP
//! algorithm warnings, the mTLS alias, the assertion audience, eager discovery and the https rule
//! for discovered endpoints.
//!
//! The service runs on the test's runtime with a `ManualClock`, so cache lifetimes and back-offs
//! are driven by `advance`, never by sleeping.

use std::error::Error as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rcgen::{CertificateParams, KeyPair};
use serde_json::{Value, json};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAuthentication,
    ClientSecretJwt, DiscoveryError, DpopKey, HmacAlgorithm, ManualClock, RetryPolicy,
    TlsClientCertificate, TokenClientOptions, TokenError, TokenRequestParameters,
};
use token_mgmt_tests::logs::CapturedLogs;

const OPENID: &str = "/.well-known/openid-configuration";
const OAUTH: &str = "/.well-known/oauth-authorization-server";

/// What the issuer serves; changed by tests while it runs.
struct Issuer {
    /// The `issuer` the document claims (`None`: the server's own base URL + `path`).
    claimed_issuer: Mutex<Option<String>>,
    /// The issuer path (`""` or `/tenant`).
    path: String,
    base: Mutex<String>,
    /// Serve the document at the OpenID path (else only at the RFC 8414 path).
    openid: AtomicBool,
    /// Answer 503 to every discovery request.
    down: AtomicBool,
    auth_methods: Mutex<Option<Vec<String>>>,
    dpop_algorithms: Mutex<Option<Vec<String>>>,
    /// The form of the last token request.
    last_form: Mutex<String>,
    /// `token_endpoint` override (for the https rule).
    token_endpoint: Mutex<Option<String>>,
    discovery_requests: AtomicUsize,
    /// Signalled on every discovery request.
    discovered: tokio::sync::Notify,
    token_requests: AtomicUsize,
    mtls_token_requests: AtomicUsize,
}

impl Issuer {
    fn issuer(&self) -> String {
        self.claimed_issuer
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{}{}", self.base.lock().unwrap(), self.path))
    }

    fn document(&self) -> Value {
        let base = self.base.lock().unwrap().clone();
        let token_endpoint = self
            .token_endpoint
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| format!("{base}/token"));
        let mut document = json!({
            "issuer": self.issuer(),
            "token_endpoint": token_endpoint,
            "mtls_endpoint_aliases": { "token_endpoint": format!("{base}/mtls/token") },
        });
        if let Some(methods) = self.auth_methods.lock().unwrap().clone() {
            document["token_endpoint_auth_methods_supported"] = json!(methods);
        }
        if let Some(algorithms) = self.dpop_algorithms.lock().unwrap().clone() {
            document["dpop_signing_alg_values_supported"] = json!(algorithms);
        }
        document
    }
}

struct Server {
    state: Arc<Issuer>,
    base: String,
}

impl Server {
    async fn start(path: &str) -> Self {
        let state = Arc::new(Issuer {
            claimed_issuer: Mutex::new(None),
            path: path.to_owned(),
            base: Mutex::new(String::new()),
            openid: AtomicBool::new(true),
            down: AtomicBool::new(false),
            auth_methods: Mutex::new(None),
            dpop_algorithms: Mutex::new(None),
            last_form: Mutex::new(String::new()),
            token_endpoint: Mutex::new(None),
            discovery_requests: AtomicUsize::new(0),
            discovered: tokio::sync::Notify::new(),
            token_requests: AtomicUsize::new(0),
            mtls_token_requests: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route(&format!("{}{OPENID}", path), get(openid))
            .route(&format!("{OAUTH}{}", path), get(oauth))
            .route("/token", post(token))
            .route("/mtls/token", post(mtls_token))
            .with_state(Arc::clone(&state));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        *state.base.lock().unwrap() = base.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { state, base }
    }

    fn authority(&self) -> String {
        format!("{}{}", self.base, self.state.path)
    }

    fn discovery_requests(&self) -> usize {
        self.state.discovery_requests.load(Ordering::SeqCst)
    }

    fn token_requests(&self) -> usize {
        self.state.token_requests.load(Ordering::SeqCst)
    }
}

fn discovery_response(state: &Issuer, served: bool) -> Response {
    state.discovery_requests.fetch_add(1, Ordering::SeqCst);
    state.discovered.notify_one();
    if state.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    if !served {
        return StatusCode::NOT_FOUND.into_response();
    }
    axum::Json(state.document()).into_response()
}

async fn openid(State(state): State<Arc<Issuer>>) -> Response {
    discovery_response(&state, state.openid.load(Ordering::SeqCst))
}

async fn oauth(State(state): State<Arc<Issuer>>) -> Response {
    discovery_response(&state, true)
}

async fn token(State(state): State<Arc<Issuer>>, form: String) -> Response {
    state.token_requests.fetch_add(1, Ordering::SeqCst);
    *state.last_form.lock().unwrap() = form;
    axum::Json(json!({ "access_token": "at", "token_type": "Bearer", "expires_in": 3600 }))
        .into_response()
}

async fn mtls_token(State(state): State<Arc<Issuer>>) -> Response {
    state.mtls_token_requests.fetch_add(1, Ordering::SeqCst);
    axum::Json(json!({ "access_token": "mtls-at", "token_type": "Bearer", "expires_in": 3600 }))
        .into_response()
}

fn client(authority: &str) -> TokenClientOptions {
    TokenClientOptions {
        authority: Some(authority.parse().unwrap()),
        client_id: "worker".into(),
        client_secret: "secret".into(),
        ..Default::default()
    }
}

fn service_with(
    client: TokenClientOptions,
    configure: impl FnOnce(&mut AccessTokenManagementOptions),
) -> (AccessTokenManagementService, Arc<ManualClock>) {
    let mut options = AccessTokenManagementOptions {
        retry: RetryPolicy::none(),
        ..Default::default()
    };
    options.client.clients.add("api", client);
    configure(&mut options);
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .runtime(tokio::runtime::Handle::current())
        .build()
        .expect("valid options");
    (service, clock)
}

async fn fresh(service: &AccessTokenManagementService) -> Result<String, TokenError> {
    service
        .get_client_access_token("api", &TokenRequestParameters::force_renewal())
        .await
        .map(|token| token.access_token().to_owned())
}

fn discovery_error(error: &TokenError) -> &DiscoveryError {
    match error {
        TokenError::Discovery { source, .. } => source,
        // Transient failures come wrapped once the retry policy gives up.
        TokenError::Unavailable { source, .. } => discovery_error(source),
        other => panic!("expected a discovery error, got {other}"),
    }
}

#[tokio::test]
async fn the_openid_configuration_gives_the_token_endpoint() {
    let server = Server::start("").await;
    let (service, _) = service_with(client(&server.authority()), |_| {});
    assert_eq!(fresh(&service).await.unwrap(), "at");
    assert_eq!(server.discovery_requests(), 1);
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test]
async fn rfc8414_is_the_fallback_with_the_path_inserted_after_the_host() {
    let server = Server::start("/tenant").await;
    server.state.openid.store(false, Ordering::SeqCst);
    let (service, _) = service_with(client(&server.authority()), |_| {});
    assert_eq!(fresh(&service).await.unwrap(), "at");
    // The OpenID path (404), then `/.well-known/oauth-authorization-server/tenant`.
    assert_eq!(server.discovery_requests(), 2);
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test]
async fn a_document_of_another_issuer_is_refused() {
    let server = Server::start("").await;
    *server.state.claimed_issuer.lock().unwrap() = Some("https://evil.example.com".into());
    let (service, _) = service_with(client(&server.authority()), |_| {});
    let error = fresh(&service).await.unwrap_err();
    match discovery_error(&error) {
        DiscoveryError::IssuerMismatch {
            expected, found, ..
        } => {
            assert_eq!(expected.trim_end_matches('/'), server.authority());
            assert_eq!(found, "https://evil.example.com");
        }
        other => panic!("expected an issuer mismatch, got {other}"),
    }
    assert!(!error.is_transient());
    assert!(error.to_string().contains("client `api`"), "{error}");
    assert_eq!(server.token_requests(), 0);
}

#[tokio::test]
async fn the_document_is_cached_for_its_lifetime() {
    let server = Server::start("").await;
    let (service, clock) = service_with(client(&server.authority()), |options| {
        options.discovery.cache_lifetime = Duration::from_secs(600);
    });
    for _ in 0..3 {
        fresh(&service).await.unwrap();
    }
    assert_eq!(server.discovery_requests(), 1);
    assert_eq!(server.token_requests(), 3);

    clock.advance(Duration::from_secs(599));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 1);
    clock.advance(Duration::from_secs(2));
    fresh(&service).await.unwrap();
    assert_eq!(
        server.discovery_requests(),
        2,
        "re-fetched after the lifetime"
    );
}

#[tokio::test]
async fn an_issuer_down_then_up() {
    let server = Server::start("").await;
    server.state.down.store(true, Ordering::SeqCst);
    let (service, clock) = service_with(client(&server.authority()), |_| {});
    let error = fresh(&service).await.unwrap_err();
    assert!(
        matches!(discovery_error(&error), DiscoveryError::Status { status, .. } if status.as_u16() == 503)
    );
    assert!(
        discovery_error(&error).is_transient(),
        "a 503 is worth retrying"
    );
    assert!(matches!(error, TokenError::Unavailable { attempts: 1, .. }));
    assert!(error.source().is_some());

    server.state.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(2)); // past the token service's failure cool-down
    assert_eq!(fresh(&service).await.unwrap(), "at");
    assert_eq!(server.token_requests(), 1);
}

#[tokio::test]
async fn a_failed_refetch_keeps_the_last_endpoint_and_backs_off() {
    let server = Server::start("").await;
    let (service, clock) = service_with(client(&server.authority()), |options| {
        options.discovery.cache_lifetime = Duration::from_secs(60);
    });
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 1);

    server.state.down.store(true, Ordering::SeqCst);
    clock.advance(Duration::from_secs(61));
    assert_eq!(fresh(&service).await.unwrap(), "at", "the stale endpoint");
    assert_eq!(server.discovery_requests(), 2);
    // Within the back-off (5 s): no new fetch.
    clock.advance(Duration::from_secs(4));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 2);
    // After it: fetched again; the second failure doubles the back-off to 10 s.
    clock.advance(Duration::from_secs(2));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 3);
    clock.advance(Duration::from_secs(9));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 3);

    server.state.down.store(false, Ordering::SeqCst);
    clock.advance(Duration::from_secs(2));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 4);
    // Fresh again: cached for a full lifetime.
    clock.advance(Duration::from_secs(30));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 4);
    assert_eq!(server.token_requests(), 7);
}

#[tokio::test]
async fn an_unsupported_auth_method_is_warned_once() {
    let (logs, _guard) = CapturedLogs::capture(tracing::Level::WARN);

    let server = Server::start("").await;
    *server.state.auth_methods.lock().unwrap() =
        Some(vec!["private_key_jwt".into(), "client_secret_post".into()]);
    let (service, clock) = service_with(client(&server.authority()), |options| {
        options.discovery.cache_lifetime = Duration::from_secs(60);
    });
    fresh(&service).await.unwrap();
    let text = logs.text();
    assert!(
        text.contains("WARN")
            && text.contains("token_endpoint_auth_methods_supported")
            && text.contains("client_secret_basic")
            && text.contains("private_key_jwt client_secret_post"),
        "{text}"
    );
    assert_eq!(
        text.matches("token_endpoint_auth_methods_supported")
            .count(),
        1
    );

    // A re-fetch does not warn again.
    clock.advance(Duration::from_secs(61));
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 2);
    assert_eq!(
        logs.text()
            .matches("token_endpoint_auth_methods_supported")
            .count(),
        1
    );

    // A supported method: no warning.
    let (quiet, _guard) = CapturedLogs::capture(tracing::Level::WARN);
    let mut post = client(&server.authority());
    post.authentication = ClientAuthentication::ClientSecretPost;
    let (service, _) = service_with(post, |_| {});
    fresh(&service).await.unwrap();
    assert_eq!(quiet.text(), "");
}

#[tokio::test]
async fn mtls_clients_use_the_mtls_alias() {
    let server = Server::start("").await;
    let key = KeyPair::generate().unwrap();
    let certificate = CertificateParams::new(vec!["worker".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let mut mtls = client(&server.authority());
    mtls.client_secret = "".into();
    mtls.authentication = ClientAuthentication::SelfSignedTlsClientAuth(
        TlsClientCertificate::from_pem(certificate.pem(), key.serialize_pem()),
    );
    let (service, _) = service_with(mtls, |_| {});
    assert_eq!(fresh(&service).await.unwrap(), "mtls-at");
    assert_eq!(server.state.mtls_token_requests.load(Ordering::SeqCst), 1);
    assert_eq!(server.token_requests(), 0);

    // A secret client of the same issuer uses the plain endpoint.
    let (service, _) = service_with(client(&server.authority()), |_| {});
    assert_eq!(fresh(&service).await.unwrap(), "at");
}

#[tokio::test]
async fn eager_discovery_fetches_when_the_service_is_built() {
    let server = Server::start("").await;
    let (service, _) = service_with(client(&server.authority()), |options| {
        options.discovery.eager = true;
    });
    // No token is asked for: the request can only come from the build.
    tokio::time::timeout(Duration::from_secs(10), server.state.discovered.notified())
        .await
        .expect("discovery at build");
    assert_eq!(server.discovery_requests(), 1, "fetched before any token");
    assert_eq!(server.token_requests(), 0);
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 1, "the first token used it");
}

#[tokio::test]
async fn a_discovered_plain_http_endpoint_needs_the_opt_in() {
    let server = Server::start("").await;
    *server.state.token_endpoint.lock().unwrap() = Some("http://idp.example.com/token".into());
    let (service, _) = service_with(client(&server.authority()), |_| {});
    let error = fresh(&service).await.unwrap_err();
    assert!(
        matches!(
            discovery_error(&error),
            DiscoveryError::InsecureTokenEndpoint { token_endpoint } if token_endpoint == "http://idp.example.com/token"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn no_document_at_either_path_is_named() {
    let server = Server::start("/tenant").await;
    server.state.openid.store(false, Ordering::SeqCst);
    let other = format!("{}/other", server.base);
    let (service, _) = service_with(client(&other), |_| {});
    let error = fresh(&service).await.unwrap_err();
    match discovery_error(&error) {
        DiscoveryError::NotFound { tried } => {
            assert_eq!(
                tried,
                &[
                    format!("{}/other{OPENID}", server.base),
                    format!("{}{OAUTH}/other", server.base)
                ]
            );
        }
        other => panic!("expected not found, got {other}"),
    }
}

#[tokio::test]
async fn a_dpop_algorithm_the_issuer_does_not_list_is_warned() {
    let (logs, _guard) = CapturedLogs::capture(tracing::Level::WARN);

    let server = Server::start("").await;
    *server.state.dpop_algorithms.lock().unwrap() = Some(vec!["ES384".into(), "EdDSA".into()]);
    let mut dpop = client(&server.authority());
    dpop.dpop = Some(DpopKey::generate()); // ES256
    let (service, _) = service_with(dpop, |_| {});
    fresh(&service).await.unwrap();
    let text = logs.text();
    assert!(
        text.contains("dpop_signing_alg_values_supported")
            && text.contains("ES256")
            && text.contains("ES384 EdDSA")
            && text.contains("client=api"),
        "{text}"
    );
    assert!(
        !text.contains("token_endpoint_auth_methods_supported"),
        "{text}"
    );
}

#[tokio::test]
async fn assertions_of_a_discovered_client_are_for_the_issuer_as_it_writes_itself() {
    let server = Server::start("/tenant").await;
    let mut signed = client(&server.authority());
    signed.client_secret = "a-client-secret-of-at-least-32-bytes".into();
    signed.authentication =
        ClientAuthentication::ClientSecretJwt(ClientSecretJwt::new(HmacAlgorithm::Hs256));
    let (service, _) = service_with(signed, |_| {});
    fresh(&service).await.unwrap();
    let form = server.state.last_form.lock().unwrap().clone();
    let assertion = url::form_urlencoded::parse(form.as_bytes())
        .find(|(name, _)| name == "client_assertion")
        .map(|(_, value)| value.into_owned())
        .expect("a client assertion");
    let payload = assertion.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    assert_eq!(claims["aud"], json!(server.state.issuer()), "{claims}");
    assert_eq!(claims["aud"], json!(format!("{}/tenant", server.base)));
}

#[tokio::test]
async fn a_client_added_at_run_time_discovers_too() {
    let server = Server::start("").await;
    let plain = TokenClientOptions {
        address: format!("{}/token", server.base).parse().unwrap(),
        client_id: "worker".into(),
        client_secret: "secret".into(),
        ..Default::default()
    };
    let (service, _) = service_with(plain, |_| {});
    fresh(&service).await.unwrap();
    assert_eq!(server.discovery_requests(), 0, "a configured address");
    service
        .add_client("tenant", client(&server.authority()))
        .unwrap();
    let token = service
        .get_client_access_token("tenant", &TokenRequestParameters::default())
        .await
        .unwrap();
    assert_eq!(token.access_token(), "at");
    assert_eq!(server.discovery_requests(), 1);
}
