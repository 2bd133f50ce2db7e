//! `ClientAccessTokenHandler` against the embedded demo token service and protected API on loopback.
//!
//! Most tests run twice (`both_ways!`): with the handler on its own in a plain
//! `reqwest_middleware::ClientBuilder`, and as the only middleware of an `HttpClient`, which calls it
//! directly; `factory_*` tests plug it into `HttpClientFactory` below other middleware.
//!
//! Run with `cargo test -p token-mgmt-tests --test handler`.
//!
//! Time: the expiry test pauses the tokio clock only *between* network calls (a paused clock
//! auto-advances to the next timer while the runtime waits on sockets, which would fire request
//! timeouts). The demo server runs on the test's runtime, so its token expiry follows the same clock.
//! Nothing sleeps.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header::WWW_AUTHENTICATE;
use futures_util::stream;
use http::header::AUTHORIZATION;
use http::{Extensions, HeaderValue, StatusCode};
use reqwest::{Request, Response};
use reqwest_middleware::{ClientWithMiddleware, Middleware, Next};
use token_mgmt::http::{HttpClient, HttpClientFactory, HttpError};
use token_mgmt::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService, ClientAccessTokenHandler,
    ForeignOriginError, ManualClock, SkipAccessToken, TokenClientOptions, TokenError,
    TokenRequestParameters,
};
use token_mgmt_examples::demo::{ApiClaims, DemoClient, DemoConfig, DemoServer, RecordingServer};
use url::Url;

/// The token client name used by every test.
const CLIENT: &str = "demo";

/// A service with one token client `demo` for the demo client `client_id` (secret `secret`).
fn service_for(demo: &DemoServer, client_id: &str) -> AccessTokenManagementService {
    service_with(demo, client_id, |_| {})
}

fn service_with(
    demo: &DemoServer,
    client_id: &str,
    configure: impl FnOnce(&mut TokenClientOptions),
) -> AccessTokenManagementService {
    let mut client = TokenClientOptions {
        address: demo.token_endpoint(),
        client_id: client_id.into(),
        client_secret: "secret".into(),
        ..Default::default()
    };
    configure(&mut client);
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(CLIENT, client);
    // These tests are about the handler: a failure is not replayed to the next call, and every
    // 401 may force a renewal (the cool-down and the rate limit have tests of their own).
    options.failure_cooldown = Duration::ZERO;
    options.min_forced_renewal_interval = Duration::ZERO;
    AccessTokenManagementService::new(options).unwrap()
}

/// How a test's requests reach the handler.
#[derive(Clone, Copy, Debug)]
enum Via {
    /// The handler alone in a plain reqwest-middleware client (its `Middleware` impl).
    Chain,
    /// The handler as the only middleware of an `HttpClient`, which calls it directly (no boxed
    /// chain; the request goes out from the request's own future when the token is cached).
    Direct,
}

/// Runs a test twice, through both ways a request reaches the handler (`<name>::chain` and
/// `<name>::direct`): the two must behave the same.
macro_rules! both_ways {
    ($(#[$attr:meta])* async fn $name:ident($via:ident: Via) $body:block) => {
        mod $name {
            use super::*;

            async fn run($via: Via) $body

            $(#[$attr])*
            async fn chain() {
                run(Via::Chain).await
            }

            $(#[$attr])*
            async fn direct() {
                run(Via::Direct).await
            }
        }
    };
}

/// A client whose only middleware is `handler`, reached `via` one way or the other.
#[derive(Clone)]
enum TestClient {
    Chain(ClientWithMiddleware),
    Direct(HttpClient),
}

fn client_via(via: Via, handler: ClientAccessTokenHandler) -> TestClient {
    match via {
        Via::Chain => TestClient::Chain(
            reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
                .with(handler)
                .build(),
        ),
        Via::Direct => {
            let mut builder = HttpClientFactory::builder();
            builder.register("direct").set_token_handler(handler);
            TestClient::Direct(builder.build().create_client("direct").unwrap())
        }
    }
}

impl TestClient {
    fn get(&self, url: Url) -> TestRequest {
        match self {
            TestClient::Chain(client) => TestRequest::Chain(client.get(url)),
            TestClient::Direct(client) => TestRequest::Direct(client.get(url)),
        }
    }

    fn post(&self, url: Url) -> TestRequest {
        match self {
            TestClient::Chain(client) => TestRequest::Chain(client.post(url)),
            TestClient::Direct(client) => TestRequest::Direct(client.post(url)),
        }
    }
}

enum TestRequest {
    Chain(reqwest_middleware::RequestBuilder),
    Direct(token_mgmt::http::RequestBuilder),
}

impl TestRequest {
    fn header(self, name: http::HeaderName, value: &'static str) -> Self {
        match self {
            TestRequest::Chain(request) => TestRequest::Chain(request.header(name, value)),
            TestRequest::Direct(request) => TestRequest::Direct(request.header(name, value)),
        }
    }

    fn body(self, body: impl Into<reqwest::Body>) -> Self {
        match self {
            TestRequest::Chain(request) => TestRequest::Chain(request.body(body)),
            TestRequest::Direct(request) => TestRequest::Direct(request.body(body)),
        }
    }

    fn with_extension<T: Clone + Send + Sync + 'static>(self, extension: T) -> Self {
        match self {
            TestRequest::Chain(request) => TestRequest::Chain(request.with_extension(extension)),
            TestRequest::Direct(request) => TestRequest::Direct(request.with_extension(extension)),
        }
    }

    async fn send(self) -> reqwest_middleware::Result<Response> {
        match self {
            TestRequest::Chain(request) => request.send().await,
            TestRequest::Direct(request) => request.send().await,
        }
    }
}

fn api(demo: &DemoServer, path: &str) -> Url {
    demo.api_base().join(path).unwrap()
}

async fn claims(response: reqwest::Response) -> ApiClaims {
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.unwrap()
}

/// A server that answers every request `401` and records the `Authorization` header of each.
struct AlwaysUnauthorized {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Option<HeaderValue>>>>,
}

impl AlwaysUnauthorized {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .fallback(
                |State(seen): State<Arc<Mutex<Vec<Option<HeaderValue>>>>>,
                 headers: axum::http::HeaderMap| async move {
                    seen.lock()
                        .unwrap()
                        .push(headers.get(AUTHORIZATION).cloned());
                    (
                        StatusCode::UNAUTHORIZED,
                        [(WWW_AUTHENTICATE, "Bearer error=\"invalid_token\"")],
                    )
                },
            )
            .with_state(Arc::clone(&seen));
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Self { addr, seen }
    }

    fn url(&self) -> Url {
        Url::parse(&format!("http://{}/resource", self.addr)).unwrap()
    }

    fn seen(&self) -> Vec<Option<HeaderValue>> {
        self.seen.lock().unwrap().clone()
    }
}

/// An outer middleware that records whether `Authorization` was already set when it saw a request.
#[derive(Clone, Default)]
struct SeesAuthorization(Arc<Mutex<Vec<bool>>>);

#[async_trait::async_trait]
impl Middleware for SeesAuthorization {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.0
            .lock()
            .unwrap()
            .push(req.headers().contains_key(AUTHORIZATION));
        next.run(req, extensions).await
    }
}

// (a) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn standalone_calls_are_authorized_with_one_token_request(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );

    for _ in 0..10 {
        let claims = claims(client.get(api(&demo, "test")).send().await.unwrap()).await;
        assert_eq!(claims.client_id, "m2m");
        assert_eq!(claims.path, "/api/test");
    }
    let counters = demo.counters();
    assert_eq!(counters.api_requests, 10);
    assert_eq!(counters.api_authorized, 10);
    assert_eq!(counters.token_requests, 1);
}
}

#[tokio::test]
async fn factory_innermost_handler_authorizes_every_call_below_outer_middleware() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let handler = ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
        .with_allowed_origin(&demo.api_base());
    let outer = SeesAuthorization::default();

    let mut builder = HttpClientFactory::builder();
    let registration = builder.register("api");
    registration.options_mut().base_address = Some(demo.api_base());
    // Set first, added after: the innermost slot keeps the handler closest to the network anyway.
    registration.set_innermost(Arc::new(handler));
    registration.with(outer.clone());
    let factory = builder.build();
    let client = factory.create_client("api").unwrap();

    for _ in 0..5 {
        let body = client.get_string("test").await.unwrap();
        let claims: ApiClaims = serde_json::from_str(&body).unwrap();
        assert_eq!(claims.client_id, "m2m");
    }
    let counters = demo.counters();
    assert_eq!(counters.api_authorized, 5);
    assert_eq!(counters.token_requests, 1);
    // The outer middleware ran before the handler: it never saw the token.
    assert_eq!(*outer.0.lock().unwrap(), vec![false; 5]);
}

// (b) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn revoked_token_is_renewed_once_and_the_request_resent(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    claims(client.get(api(&demo, "test")).send().await.unwrap()).await;
    assert_eq!(demo.revoke_all(), 1);

    // A POST with a (clonable) body: it is replayed as sent.
    let response = client
        .post(api(&demo, "orders"))
        .body("{\"id\":1}")
        .send()
        .await
        .unwrap();
    let claims = claims(response).await;
    assert_eq!(claims.method, "POST");
    assert_eq!(claims.path, "/api/orders");

    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2, "one forced renewal");
    assert_eq!(counters.api_invalid_token, 1, "one rejected attempt");
    assert_eq!(counters.api_authorized, 2, "the first call and the resend");
    assert_eq!(counters.api_requests, 3);

    // The renewed token is cached: no further token request.
    claims_ok(&client, &demo).await;
    assert_eq!(demo.counters().token_requests, 2);
}
}

async fn claims_ok(client: &TestClient, demo: &DemoServer) -> ApiClaims {
    claims(client.get(api(demo, "test")).send().await.unwrap()).await
}

both_ways! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_401s_share_one_renewal(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    claims_ok(&client, &demo).await;
    demo.revoke_all();
    // Keeps the renewal in flight while the other rejected requests ask for it (the delay is the
    // server's; the test itself never sleeps).
    demo.set_token_delay(Duration::from_millis(200));

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        let url = api(&demo, "test");
        tasks.spawn(async move { client.get(url).send().await.unwrap().status() });
    }
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2, "one renewal for all of them");
    assert_eq!(counters.api_authorized, 21);
}
}

/// A server that holds the first request it receives until released, then answers it `401`; later
/// requests get `200`. Records the `Authorization` header of each.
#[derive(Clone, Default)]
struct Gate {
    seen: Arc<Mutex<Vec<Option<HeaderValue>>>>,
    arrived: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

impl Gate {
    async fn start(&self) -> Url {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let router = Router::new()
            .fallback(
                |State(gate): State<Gate>, headers: axum::http::HeaderMap| async move {
                    let first = {
                        let mut seen = gate.seen.lock().unwrap();
                        seen.push(headers.get(AUTHORIZATION).cloned());
                        seen.len() == 1
                    };
                    if first {
                        gate.arrived.notify_one();
                        gate.release.notified().await;
                        StatusCode::UNAUTHORIZED
                    } else {
                        StatusCode::OK
                    }
                },
            )
            .with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
        Url::parse(&format!("http://{addr}/gated")).unwrap()
    }
}

both_ways! {
    #[tokio::test]
    async fn a_401_after_another_request_renewed_the_token_reuses_that_renewal(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let gate = Gate::default();
    let gated = gate.start().await;
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base())
            .with_allowed_origin(&gated),
    );
    claims_ok(&client, &demo).await;
    demo.revoke_all();

    // B is sent with the old token and held by the gate ...
    let held = tokio::spawn({
        let client = client.clone();
        async move { client.get(gated).send().await.unwrap().status() }
    });
    gate.arrived.notified().await;
    // ... while A is rejected, renews the token and succeeds.
    claims_ok(&client, &demo).await;
    assert_eq!(demo.counters().token_requests, 2);
    // B's 401 then arrives: it is resent with A's renewed token, not with yet another one.
    gate.release.notify_one();
    assert_eq!(held.await.unwrap(), StatusCode::OK);
    assert_eq!(demo.counters().token_requests, 2);
    let seen = gate.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1], "resent with the renewed token");
}
}

// (c) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn a_second_401_is_returned_without_a_loop(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let server = AlwaysUnauthorized::start().await;
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&server.url()),
    );

    let response = client.get(server.url()).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let seen = server.seen();
    assert_eq!(seen.len(), 2, "the request and one resend");
    let first = seen[0].as_ref().expect("first attempt authorized");
    let second = seen[1].as_ref().expect("resend authorized");
    assert!(first.to_str().unwrap().starts_with("Bearer "));
    assert_ne!(first, second, "the resend carries the renewed token");
    assert_eq!(demo.counters().token_requests, 2);
}
}

// (d) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn a_streaming_body_gets_its_401_back_without_a_resend(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    claims_ok(&client, &demo).await;
    demo.revoke_all();
    demo.reset_counters();

    let chunks = stream::iter(vec![Ok::<_, std::io::Error>("streamed body")]);
    let response = client
        .post(api(&demo, "upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .expect("a 401 response, not an error");
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let counters = demo.counters();
    assert_eq!(counters.api_requests, 1, "not resent");
    assert_eq!(counters.api_invalid_token, 1);
    assert_eq!(
        counters.token_requests, 0,
        "no renewal for a request that cannot be resent"
    );

    // The rejected token was dropped from the cache: the next request gets a new one directly.
    claims_ok(&client, &demo).await;
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 1);
    assert_eq!(counters.api_invalid_token, 1, "no second rejected attempt");
    assert_eq!(counters.api_authorized, 1);
}
}

// (e) ---------------------------------------------------------------------------------------------

const FAILURE_BODY: &str = r#"{"error":"invalid_client","error_description":"client disabled"}"#;

fn assert_endpoint_error(error: &TokenError) {
    assert_eq!(error.status(), Some(StatusCode::BAD_REQUEST));
    assert_eq!(error.client(), CLIENT);
    match error {
        TokenError::Endpoint { error, .. } => assert_eq!(error.as_deref(), Some("invalid_client")),
        other => panic!("expected an endpoint error, got {other:?}"),
    }
}

both_ways! {
    #[tokio::test]
    async fn token_endpoint_failure_fails_the_call_without_sending_it(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    demo.set_token_endpoint_failure(Some((StatusCode::BAD_REQUEST, FAILURE_BODY.to_owned())));
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );

    let error = client.get(api(&demo, "test")).send().await.unwrap_err();
    assert!(error.is_middleware());
    let reqwest_middleware::Error::Middleware(source) = &error else {
        panic!("expected a middleware error: {error:?}");
    };
    assert_endpoint_error(source.downcast_ref::<TokenError>().expect("a TokenError"));

    let counters = demo.counters();
    assert_eq!(counters.api_requests, 0, "the request was never sent");
    assert_eq!(counters.token_requests, 1);

    // Errors are not cached: once the endpoint recovers, the same client works.
    demo.set_token_endpoint_failure(None);
    claims_ok(&client, &demo).await;
}
}

#[tokio::test]
async fn factory_token_error_is_reachable_from_the_http_error() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    demo.set_token_endpoint_failure(Some((StatusCode::BAD_REQUEST, FAILURE_BODY.to_owned())));
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register("api");
    registration.options_mut().base_address = Some(demo.api_base());
    registration.set_innermost(Arc::new(
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    ));
    let client = builder.build().create_client("api").unwrap();

    let error: HttpError = client.get_string("test").await.unwrap_err();
    assert_endpoint_error(
        error
            .middleware_error::<TokenError>()
            .expect("a TokenError"),
    );
    assert_eq!(demo.counters().api_requests, 0);
}

// (f) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn a_redirect_to_another_origin_does_not_carry_the_token(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let other = RecordingServer::start().await.unwrap();
    // The other server is allowed too, so only the redirect rule keeps the token from it.
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base())
            .with_allowed_origin(&other.url()),
    );

    // Control: a direct request to the other server does carry the token (its origin is
    // allowed)...
    client
        .get(other.url().join("direct").unwrap())
        .send()
        .await
        .unwrap();
    // ... but a redirect there from the API's origin does not.
    let target = other.url().join("landing").unwrap();
    let response = client.get(demo.redirect_url(&target)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.text().await.unwrap(), "recorded");

    let requests = other.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].uri.path(), "/direct");
    assert!(requests[0].headers.contains_key(AUTHORIZATION));
    assert_eq!(requests[1].uri.path(), "/landing");
    assert!(
        !requests[1].headers.contains_key(AUTHORIZATION),
        "the token must not follow a cross-origin redirect"
    );
    assert_eq!(demo.counters().redirects, 1);
}
}

both_ways! {
    #[tokio::test]
    async fn a_same_origin_redirect_keeps_the_token(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    let response = client
        .get(demo.redirect_url(&api(&demo, "after-redirect")))
        .send()
        .await
        .unwrap();
    let claims = claims(response).await;
    assert_eq!(claims.path, "/api/after-redirect");
    let counters = demo.counters();
    assert_eq!(counters.redirects, 1);
    assert_eq!(counters.api_authorized, 1);
}
}

// (g) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_hundred_concurrent_requests_on_a_cold_cache_make_one_token_request(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );

    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..200 {
        let client = client.clone();
        let url = api(&demo, "test");
        tasks.spawn(async move { client.get(url).send().await.unwrap().status() });
    }
    let mut ok = 0;
    while let Some(status) = tasks.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
        ok += 1;
    }
    assert_eq!(ok, 200);
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 1);
    assert_eq!(counters.api_authorized, 200);
}
}

// (h) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn skip_access_token_sends_no_authorization_and_asks_for_no_token(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let other = RecordingServer::start().await.unwrap();
    let service = service_for(&demo, "m2m");
    let client = client_via(via,
        ClientAccessTokenHandler::new(service.clone(), CLIENT)
            .with_allowed_origin(&demo.api_base())
            .with_allowed_origin(&other.url()),
    );

    client
        .get(other.url())
        .header(AUTHORIZATION, "Bearer caller-set")
        .with_extension(SkipAccessToken)
        .send()
        .await
        .unwrap();
    assert_eq!(demo.counters().token_requests, 0);
    let response = client
        .get(api(&demo, "test"))
        .with_extension(SkipAccessToken)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "not resent");

    client.get(other.url()).send().await.unwrap();
    let requests = other.requests();
    assert_eq!(
        requests[0].headers.get(AUTHORIZATION).unwrap(),
        "Bearer caller-set",
        "a skipped request is left as the caller built it"
    );
    let token = service
        .get_client_access_token(CLIENT, &TokenRequestParameters::default())
        .await
        .unwrap();
    assert_eq!(
        requests[1].headers.get(AUTHORIZATION),
        Some(&token.authorization_header()),
        "the handler replaces a caller's Authorization with the managed token"
    );
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 1);
    assert_eq!(counters.api_unauthenticated, 1);
}
}

both_ways! {
    #[tokio::test]
    async fn per_request_force_renewal_requests_a_new_token(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let other = RecordingServer::start().await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&other.url()),
    );

    client.get(other.url()).send().await.unwrap();
    client
        .get(other.url())
        .with_extension(TokenRequestParameters::force_renewal())
        .send()
        .await
        .unwrap();
    client.get(other.url()).send().await.unwrap();
    assert_eq!(demo.counters().token_requests, 2);

    let headers: Vec<_> = other
        .requests()
        .into_iter()
        .map(|r| r.headers.get(AUTHORIZATION).unwrap().clone())
        .collect();
    assert_ne!(headers[0], headers[1], "a forced renewal sends a new token");
    assert_eq!(headers[1], headers[2], "which then replaces the cached one");
}
}

both_ways! {
    #[tokio::test]
    async fn per_request_and_per_handler_scopes(via: Via) {
    let config = DemoConfig::empty()
        .with_client(DemoClient::new("multi", "secret").with_scopes(["api", "other"]));
    let demo = DemoServer::start(config).await.unwrap();
    let service = service_with(&demo, "multi", |c| c.scope = Some("api".into()));
    let client = client_via(via,
        ClientAccessTokenHandler::new(service.clone(), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );

    assert_eq!(claims_ok(&client, &demo).await.scope, "api");
    let other_scope = TokenRequestParameters {
        scope: Some("other".into()),
        ..Default::default()
    };
    let response = client
        .get(api(&demo, "test"))
        .with_extension(other_scope.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(claims(response).await.scope, "other");
    assert_eq!(demo.counters().token_requests, 2, "one token per scope");

    // A handler with fixed parameters: the cached `other` token is reused.
    let fixed = ClientAccessTokenHandler::new(service, CLIENT)
        .with_allowed_origin(&demo.api_base())
        .with_parameters(other_scope);
    assert_eq!(fixed.parameters().scope.as_deref(), Some("other"));
    let fixed = client_via(via, fixed);
    assert_eq!(claims_ok(&fixed, &demo).await.scope, "other");
    assert_eq!(claims_ok(&client, &demo).await.scope, "api");
    assert_eq!(demo.counters().token_requests, 2);
}
}

both_ways! {
    #[tokio::test]
    async fn per_request_parameters_are_renewed_on_401(via: Via) {
    let config = DemoConfig::empty()
        .with_client(DemoClient::new("multi", "secret").with_scopes(["api", "other"]));
    let demo = DemoServer::start(config).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(
            service_with(&demo, "multi", |c| c.scope = Some("api".into())),
            CLIENT,
        )
        .with_allowed_origin(&demo.api_base()),
    );
    let other_scope = TokenRequestParameters {
        scope: Some("other".into()),
        ..Default::default()
    };
    let call = || {
        client
            .get(api(&demo, "test"))
            .with_extension(other_scope.clone())
            .send()
    };
    claims(call().await.unwrap()).await;
    demo.revoke_all();
    assert_eq!(claims(call().await.unwrap()).await.scope, "other");
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2);
    assert_eq!(counters.api_invalid_token, 1);
}
}

// (i) ---------------------------------------------------------------------------------------------

both_ways! {
    #[tokio::test]
    async fn an_expired_token_is_replaced_before_it_is_sent(via: Via) {
    // `m2m.short` tokens live 75 s; the service renews them after 37.5 s (half the lifetime, as it
    // is shorter than twice the 60 s buffer) and never serves them past 70 s (the 5 s margin).
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut options = AccessTokenManagementOptions::default();
    options.client.clients.add(
        CLIENT,
        TokenClientOptions {
            address: demo.token_endpoint(),
            client_id: "m2m.short".into(),
            client_secret: "secret".into(),
            ..Default::default()
        },
    );
    options.background_refresh = false;
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .build()
        .unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service, CLIENT).with_allowed_origin(&demo.api_base()),
    );

    claims_ok(&client, &demo).await;
    clock.advance(Duration::from_secs(30));
    claims_ok(&client, &demo).await;
    assert_eq!(demo.counters().token_requests, 1, "still cached at 30 s");

    // The demo server's own clock has not moved: expire its token by hand, as 80 s would have.
    demo.expire_all();
    clock.advance(Duration::from_secs(50));
    let claims = claims_ok(&client, &demo).await;
    assert!(claims.expires_in > 70, "a new token: {claims:?}");
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2, "renewed once expired");
    assert_eq!(
        counters.api_invalid_token, 0,
        "the expired token was never sent"
    );
    assert_eq!(counters.api_authorized, 3);
}
}

// Debug -------------------------------------------------------------------------------------------

#[tokio::test]
async fn debug_shows_the_client_name_only() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let service = service_for(&demo, "m2m");
    let handler = ClientAccessTokenHandler::new(service.clone(), CLIENT)
        .with_allowed_origin(&demo.api_base());
    let token = service
        .get_client_access_token(CLIENT, &TokenRequestParameters::default())
        .await
        .unwrap();
    let debug = format!("{handler:?}");
    assert!(debug.contains("ClientAccessTokenHandler"), "{debug}");
    assert!(debug.contains(CLIENT), "{debug}");
    assert!(!debug.contains(token.access_token()), "{debug}");
    assert!(!debug.contains("secret"), "{debug}");
    assert_eq!(handler.client_name(), CLIENT);
}

both_ways! {
    #[tokio::test]
    async fn an_unknown_token_client_fails_every_request_without_sending_it(via: Via) {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let client = client_via(via,
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), "nobody")
            .with_allowed_origin(&demo.api_base()),
    );
    let error = client.get(api(&demo, "test")).send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(source) = &error else {
        panic!("expected a middleware error: {error:?}");
    };
    assert!(matches!(
        source.downcast_ref::<TokenError>(),
        Some(TokenError::UnknownClient { name, .. }) if name == "nobody"
    ));
    assert_eq!(demo.counters().api_requests, 0);
}
}

#[tokio::test]
async fn a_plain_path_under_a_base_address_the_handler_does_not_allow_is_refused() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let service = service_for(&demo, "m2m");
    // The token is cached (through a client allowed on the API's origin), so only the origin check
    // stands between the request and the API.
    let allowed = client_via(
        Via::Direct,
        ClientAccessTokenHandler::new(service.clone(), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    claims_ok(&allowed, &demo).await;

    let elsewhere = Url::parse("https://elsewhere.example/").unwrap();
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register("api");
    registration.options_mut().base_address = Some(demo.api_base());
    registration.set_token_handler(
        ClientAccessTokenHandler::new(service, CLIENT).with_allowed_origin(&elsewhere),
    );
    let client = builder.build().create_client("api").unwrap();

    let error = client.get("test").send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(source) = &error else {
        panic!("expected a middleware error: {error:?}");
    };
    let refusal = source
        .downcast_ref::<ForeignOriginError>()
        .unwrap_or_else(|| panic!("expected a ForeignOriginError: {error:?}"));
    assert_eq!(refusal.allowed_origin, "https://elsewhere.example");
    let counters = demo.counters();
    assert_eq!(
        counters.api_requests, 1,
        "only the allowed client's request"
    );
    assert_eq!(counters.token_requests, 1);
}

#[tokio::test]
async fn a_plain_path_under_the_base_address_is_resent_after_a_401_as_it_was_sent() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register("api");
    registration.options_mut().base_address = Some(demo.api_base());
    registration.set_token_handler(
        ClientAccessTokenHandler::new(service_for(&demo, "m2m"), CLIENT)
            .with_allowed_origin(&demo.api_base()),
    );
    let client = builder.build().create_client("api").unwrap();
    claims(client.get("test").send().await.unwrap()).await;
    assert_eq!(demo.revoke_all(), 1);

    // The replay keeps the resolved path's shared URL rather than a copy of the request: the
    // resend has the same method and URL.
    let response = client
        .delete("test")
        .header("x-request-id", "42")
        .send()
        .await
        .unwrap();
    let claims = claims(response).await;
    assert_eq!(claims.method, "DELETE");
    assert_eq!(claims.path, "/api/test");
    let counters = demo.counters();
    assert_eq!(counters.token_requests, 2, "one forced renewal");
    assert_eq!(counters.api_invalid_token, 1, "one rejected attempt");
    assert_eq!(counters.api_authorized, 2, "the first call and the resend");
}
