//! The named HTTP client factory against a local axum server.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::routing::{any, get};
use http::{Extensions, HeaderValue, header::AUTHORIZATION};
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use serde_json::{Value, json};
use token_mgmt::http::{
    CreateClientError, HttpClientFactory, HttpClientFactoryBuilder, HttpClientOptions, HttpError,
    InvalidUrlReason,
};
use token_mgmt_examples::demo::{DemoConfig, DemoServer, RecordingServer};
use url::Url;

/// A local server: `/echo/...` answers the request as JSON, `/status/{code}` answers that status,
/// `/hang` never answers. It records the peer address of every request (one per connection).
struct TestServer {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl TestServer {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = Arc::new(Mutex::new(Vec::new()));
        let router = Router::new()
            .route("/echo", any(echo))
            .route("/echo/{*rest}", any(echo))
            .route("/status/{code}", get(status))
            .route("/hang", get(std::future::pending::<()>))
            .with_state(Arc::clone(&peers));
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        Self { addr, peers }
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}/{path}", self.addr)).unwrap()
    }

    fn requests(&self) -> usize {
        self.peers.lock().unwrap().len()
    }

    fn connections(&self) -> usize {
        self.peers
            .lock()
            .unwrap()
            .iter()
            .collect::<HashSet<_>>()
            .len()
    }
}

async fn echo(
    State(peers): State<Arc<Mutex<Vec<SocketAddr>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> axum::Json<Value> {
    peers.lock().unwrap().push(peer);
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    axum::Json(json!({
        "method": method.as_str(),
        "path": uri.path(),
        "query": uri.query(),
        "x-demo": header("x-demo"),
        "authorization": header("authorization"),
        "trace": header("x-trace"),
    }))
}

async fn status(
    State(peers): State<Arc<Mutex<Vec<SocketAddr>>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(code): Path<u16>,
) -> (StatusCode, &'static str) {
    peers.lock().unwrap().push(peer);
    (StatusCode::from_u16(code).unwrap(), "status body")
}

fn factory_with(name: &str, options: HttpClientOptions) -> HttpClientFactory {
    let mut builder = HttpClientFactory::builder();
    builder.register(name).set_options(options);
    builder.build()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[tokio::test]
async fn paths_resolve_against_the_base_address_like_dotnet() {
    let server = TestServer::start().await;
    let factory = factory_with(
        "api",
        HttpClientOptions::default().with_base_address(server.url("echo/api/")),
    );
    let client = factory.create_client("api").unwrap();
    assert_eq!(client.name(), "api");
    assert_eq!(client.base_address(), Some(&server.url("echo/api/")));

    let body = json(&client.get_string("test").await.unwrap());
    assert_eq!(body["path"], "/echo/api/test");
    let body = json(&client.get_string("v1/items?page=2").await.unwrap());
    assert_eq!(
        (body["path"].as_str(), body["query"].as_str()),
        (Some("/echo/api/v1/items"), Some("page=2"))
    );
    // A rooted path replaces the base path; an absolute URL is taken as it is.
    let body = json(&client.get_string("/echo/root").await.unwrap());
    assert_eq!(body["path"], "/echo/root");
    let body = json(
        &client
            .get_string(server.url("echo/abs").as_str())
            .await
            .unwrap(),
    );
    assert_eq!(body["path"], "/echo/abs");

    // Every method helper sends its method to the resolved URL.
    for (builder, method) in [
        (client.post("m"), "POST"),
        (client.put("m"), "PUT"),
        (client.patch("m"), "PATCH"),
        (client.delete("m"), "DELETE"),
        (client.request(Method::OPTIONS, "m"), "OPTIONS"),
    ] {
        let body: Value = builder.send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (body["method"].as_str(), body["path"].as_str()),
            (Some(method), Some("/echo/api/m"))
        );
    }
    assert_eq!(client.resolve("x").unwrap(), server.url("echo/api/x"));
}

#[tokio::test]
async fn an_invalid_url_error_never_shows_query_strings_or_user_info() {
    let plain = factory_with("plain", HttpClientOptions::default())
        .create_client("plain")
        .unwrap();
    let cases = [
        // (path given, path shown)
        ("items?api_key=S3CRET", "items?[redacted]"),
        (
            "ftp://user:S3CRET@example.com/x?api_key=S3CRET#S3CRET",
            "ftp://[redacted]@example.com/x?[redacted]",
        ),
        // Not a URL at all, but an `@` before the first `/` may hide a password.
        (
            "admin:S3CRET@api.example.com/x",
            "[redacted]@api.example.com/x",
        ),
        (
            "https://user:S3CRET@exa mple.com/?k=S3CRET",
            "https://[redacted]@exa mple.com/?[redacted]",
        ),
        ("//S3CRET@example.com/x", "//[redacted]@example.com/x"),
    ];
    for (given, shown) in cases {
        let resolved = plain.resolve(given).unwrap_err();
        let fetched = plain.get_string(given).await.unwrap_err();
        let sent = plain.get(given).send().await.unwrap_err();
        let reqwest_middleware::Error::Middleware(inner) = &sent else {
            panic!("expected a middleware error, got {sent:?}");
        };
        let from_send = inner.downcast_ref::<HttpError>().unwrap();
        for error in [&resolved, &fetched, from_send] {
            let HttpError::InvalidUrl { path, .. } = error else {
                panic!("expected an invalid URL error, got {error:?}");
            };
            assert_eq!(path, shown);
            let everything = format!(
                "{error} {error:?} {}",
                token_mgmt::hosting::error_chain(error)
            );
            assert!(everything.contains(shown), "{everything}");
            assert!(!everything.contains("S3CRET"), "{everything}");
        }
        let everything = format!("{sent} {sent:?}");
        assert!(!everything.contains("S3CRET"), "{everything}");
    }
}

#[tokio::test]
async fn a_relative_path_without_base_address_is_a_clear_error_and_sends_nothing() {
    let server = TestServer::start().await;
    let client = factory_with("plain", HttpClientOptions::default())
        .create_client("plain")
        .unwrap();

    let error = client.get_string("test").await.unwrap_err();
    assert!(matches!(
        &error,
        HttpError::InvalidUrl { client, path, reason: InvalidUrlReason::RelativeWithoutBaseAddress }
            if client == "plain" && path == "test"
    ));
    let message = error.to_string();
    assert!(
        message.contains("`plain`") && message.contains("`test`"),
        "{message}"
    );
    // What failed in the message, why in `source()`.
    assert!(!message.contains("no base address"), "{message}");
    let reason = std::error::Error::source(&error).unwrap().to_string();
    assert!(reason.contains("no base address"), "{reason}");

    // The builder methods surface the same error on send, as a middleware error.
    let error = client.get("test").send().await.unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &error else {
        panic!("expected a middleware error, got {error:?}");
    };
    let inner = inner.downcast_ref::<HttpError>().unwrap();
    assert!(matches!(
        inner,
        HttpError::InvalidUrl {
            reason: InvalidUrlReason::RelativeWithoutBaseAddress,
            ..
        }
    ));
    assert!(matches!(
        client.try_request(Method::GET, "test"),
        Err(HttpError::InvalidUrl { .. })
    ));
    assert!(matches!(
        client.get_string("ftp://example.com/x").await,
        Err(HttpError::InvalidUrl {
            reason: InvalidUrlReason::UnsupportedScheme(_),
            ..
        })
    ));
    assert_eq!(server.requests(), 0);

    // Absolute URLs still work without a base address.
    let body = json(
        &client
            .get_string(server.url("echo/ok").as_str())
            .await
            .unwrap(),
    );
    assert_eq!(body["path"], "/echo/ok");
}

#[tokio::test]
async fn default_headers_are_sent_and_credentials_are_not_shown() {
    let server = TestServer::start().await;
    let mut options = HttpClientOptions::default().with_base_address(server.url("echo/"));
    options
        .default_headers
        .insert("x-demo", HeaderValue::from_static("demo-value"));
    options.default_headers.insert(
        AUTHORIZATION,
        HeaderValue::from_static("Bearer static-secret"),
    );
    let factory = factory_with("headers", options);
    let client = factory.create_client("headers").unwrap();

    let body = json(&client.get_string("h").await.unwrap());
    assert_eq!(body["x-demo"], "demo-value");
    assert_eq!(body["authorization"], "Bearer static-secret");

    let debug = format!(
        "{:?} {:?} {client:?}",
        factory.registration("headers").unwrap(),
        factory
    );
    assert!(!debug.contains("static-secret"), "{debug}");
    assert!(debug.contains("authorization"), "{debug}");
}

#[tokio::test(start_paused = true)]
async fn the_timeout_applies() {
    let server = TestServer::start().await;
    let options = HttpClientOptions::default()
        .with_base_address(server.url(""))
        .with_timeout(Some(Duration::from_secs(2)));
    let client = factory_with("slow", options).create_client("slow").unwrap();
    let started = tokio::time::Instant::now();
    let error = client.get_string("hang").await.unwrap_err();
    assert!(error.is_timeout(), "{error:?}");
    assert!(matches!(error, HttpError::Request { .. }));
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[test]
fn the_default_timeout_is_100_seconds_and_can_be_disabled() {
    assert_eq!(
        HttpClientOptions::default().timeout,
        Some(Duration::from_secs(100))
    );
    assert_eq!(
        HttpClientOptions::default().with_timeout(None).timeout,
        None
    );
}

#[test]
fn an_unknown_name_lists_the_registered_names() {
    let mut builder = HttpClientFactoryBuilder::new();
    builder.register("zeta");
    builder.register("alpha");
    let factory = builder.build();
    let error = factory.create_client("beta").unwrap_err();
    match &error {
        CreateClientError::UnknownClient { name, registered } => {
            assert_eq!(name, "beta");
            assert_eq!(registered, &["alpha", "zeta"]);
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        error.to_string(),
        "no HTTP client named `beta` is registered; registered clients: `alpha`, `zeta`"
    );
    let empty = HttpClientFactory::default().create_client("x").unwrap_err();
    assert!(
        empty.to_string().ends_with("registered clients: (none)"),
        "{empty}"
    );
}

#[tokio::test]
async fn clients_of_one_name_share_one_built_client_and_connection_pool() {
    let server = TestServer::start().await;
    let mut builder = HttpClientFactory::builder();
    builder
        .register("one")
        .configure(|o| o.base_address = Some(server.url("echo/")));
    builder
        .register("two")
        .configure(|o| o.base_address = Some(server.url("echo/")));
    let factory = builder.build();

    let a = factory.create_client("one").unwrap();
    let b = factory.clone().create_client("one").unwrap();
    let c = a.clone();
    let other = factory.create_client("two").unwrap();
    assert!(a.shares_pool_with(&b) && a.shares_pool_with(&c));
    assert!(!a.shares_pool_with(&other));

    for client in [&a, &b, &c, &a] {
        client.get_string("x").await.unwrap();
    }
    assert_eq!(server.requests(), 4);
    assert_eq!(
        server.connections(),
        1,
        "one keep-alive connection for one name"
    );
    other.get_string("x").await.unwrap();
    assert_eq!(server.connections(), 2, "another name has its own pool");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_create_client_builds_once() {
    let server = TestServer::start().await;
    let builds = Arc::new(AtomicUsize::new(0));
    let mut builder = HttpClientFactory::builder();
    let counter = Arc::clone(&builds);
    builder
        .register("shared")
        .configure(|o| o.base_address = Some(server.url("echo/")))
        .configure_reqwest(move |b| {
            counter.fetch_add(1, Ordering::SeqCst);
            b
        });
    let factory = builder.build();

    let barrier = Arc::new(tokio::sync::Barrier::new(64));
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let factory = factory.clone();
            let barrier = Arc::clone(&barrier);
            tokio::spawn(async move {
                barrier.wait().await;
                factory.create_client("shared").unwrap()
            })
        })
        .collect();
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(task.await.unwrap());
    }
    assert_eq!(builds.load(Ordering::SeqCst), 1);
    assert!(clients.iter().all(|c| c.shares_pool_with(&clients[0])));
    for client in &clients[..8] {
        client.get_string("x").await.unwrap();
    }
    // One pool: a pool per handle would open one connection per client. (Not exactly one: on a
    // multi-thread runtime hyper returns a connection to the pool from a task of its own, which a
    // request sent right after can overtake, opening a second one.)
    assert!(
        server.connections() < 8,
        "{} connections for 8 requests",
        server.connections()
    );
}

/// Records `"<name> in"` / `"<name> out"` around the rest of the chain, and adds its name to
/// the `x-trace` header.
struct Recorder {
    name: &'static str,
    log: Arc<Mutex<Vec<String>>>,
}

#[async_trait::async_trait]
impl Middleware for Recorder {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        self.log.lock().unwrap().push(format!("{} in", self.name));
        let trace = match req.headers().get("x-trace") {
            Some(v) => format!("{},{}", v.to_str().unwrap(), self.name),
            None => self.name.to_owned(),
        };
        req.headers_mut()
            .insert("x-trace", HeaderValue::from_str(&trace).unwrap());
        let response = next.run(req, extensions).await;
        self.log.lock().unwrap().push(format!("{} out", self.name));
        response
    }
}

#[tokio::test]
async fn middleware_run_in_order_with_the_innermost_last() {
    let server = TestServer::start().await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorder = |name| Recorder {
        name,
        log: Arc::clone(&log),
    };
    let mut builder = HttpClientFactory::builder();
    let registration = builder.register("chain");
    registration.configure(|o| o.base_address = Some(server.url("echo/")));
    // The innermost slot is set first, the others after: it still runs last.
    assert!(
        registration
            .set_innermost(Arc::new(recorder("token")))
            .is_none()
    );
    registration
        .with(recorder("first"))
        .with(recorder("second"));
    assert_eq!(registration.middleware_len(), 3);
    let client = builder.build().create_client("chain").unwrap();

    let body = json(&client.get_string("x").await.unwrap());
    assert_eq!(body["trace"], "first,second,token");
    assert_eq!(
        *log.lock().unwrap(),
        [
            "first in",
            "second in",
            "token in",
            "token out",
            "second out",
            "first out"
        ]
    );
}

#[derive(Debug, thiserror::Error)]
#[error("no token for client `{0}`")]
struct FakeTokenError(&'static str);

struct Failing;

#[async_trait::async_trait]
impl Middleware for Failing {
    async fn handle(
        &self,
        _req: Request,
        _extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        Err(reqwest_middleware::Error::middleware(FakeTokenError(
            "identityserver",
        )))
    }
}

#[tokio::test]
async fn a_middleware_error_is_reachable_from_http_error() {
    let server = TestServer::start().await;
    let mut builder = HttpClientFactory::builder();
    builder
        .register("failing")
        .configure(|o| o.base_address = Some(server.url("echo/")))
        .set_innermost(Arc::new(Failing));
    let client = builder.build().create_client("failing").unwrap();

    let error = client.get_string("x").await.unwrap_err();
    let token_error = error.middleware_error::<FakeTokenError>().unwrap();
    assert_eq!(token_error.0, "identityserver");
    assert!(error.middleware_error::<std::io::Error>().is_none());
    assert_eq!(error.client_name(), "failing");
    let chain: Vec<String> =
        std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
    assert!(chain[0].contains("GET"), "{chain:?}");
    assert!(
        chain
            .iter()
            .any(|m| m == "no token for client `identityserver`"),
        "{chain:?}"
    );
    assert_eq!(server.requests(), 0, "nothing reached the network");
}

#[tokio::test]
async fn get_string_fails_on_non_success_status_with_status_and_url() {
    let server = TestServer::start().await;
    let mut options = HttpClientOptions::default().with_base_address(server.url("status/"));
    options
        .default_headers
        .insert(AUTHORIZATION, HeaderValue::from_static("Bearer hidden"));
    let client = factory_with("s", options).create_client("s").unwrap();

    for code in [404, 500] {
        let error = client
            .get_string(format!("{code}?api_key=k3y"))
            .await
            .unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::from_u16(code).unwrap()));
        let message = error.to_string();
        let port = server.addr.port();
        assert!(
            message.contains(&format!("http://127.0.0.1:{port}/status/{code}?[redacted]")),
            "{message}"
        );
        assert!(message.contains(&code.to_string()), "{message}");
        for hidden in ["k3y", "hidden", "status body"] {
            assert!(
                !format!("{message} {error:?}").contains(hidden),
                "{message}"
            );
        }
    }
    assert_eq!(client.get_string("200").await.unwrap(), "status body");
}

/// Sets `Authorization` in a middleware, as the token handler does.
struct SetsAuthorization;

#[async_trait::async_trait]
impl Middleware for SetsAuthorization {
    async fn handle(
        &self,
        mut req: Request,
        extensions: &mut Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let mut value = HeaderValue::from_static("Bearer from-middleware");
        value.set_sensitive(true);
        req.headers_mut().insert(AUTHORIZATION, value);
        next.run(req, extensions).await
    }
}

#[tokio::test]
async fn a_cross_origin_redirect_does_not_carry_authorization() {
    let demo = DemoServer::start(DemoConfig::default()).await.unwrap();
    let other = RecordingServer::start().await.unwrap();
    let mut builder = HttpClientFactory::builder();
    builder
        .register("redirecting")
        .configure(|o| o.base_address = Some(demo.api_base()))
        .set_innermost(Arc::new(SetsAuthorization));
    builder.register("default-header").configure(|o| {
        o.base_address = Some(demo.api_base());
        o.default_headers
            .insert(AUTHORIZATION, HeaderValue::from_static("Bearer default"));
    });
    let factory = builder.build();

    let target = other.url().join("landed").unwrap();
    let redirect = demo.redirect_url(&target);
    for name in ["redirecting", "default-header"] {
        let client = factory.create_client(name).unwrap();
        let body = client.get_string(redirect.as_str()).await.unwrap();
        assert_eq!(body, "recorded");
    }
    let requests = other.requests();
    assert_eq!(requests.len(), 2);
    for request in &requests {
        assert_eq!(request.uri.path(), "/landed");
        assert!(request.headers.get(AUTHORIZATION).is_none(), "{request:?}");
    }
    assert_eq!(demo.counters().redirects, 2);
}

#[tokio::test]
async fn the_request_builder_works_like_reqwests() {
    let server = TestServer::start().await;
    let factory = factory_with(
        "api",
        HttpClientOptions::default().with_base_address(server.url("echo/api/")),
    );
    let client = factory.create_client("api").unwrap();

    // Nothing is sent until the future is polled, and the future owns everything it needs.
    drop(client.get("never").send());
    let sent = tokio::spawn(
        client
            .post("items")
            .query(&[("page", "2")])
            .header("x-trace", "t-1")
            .json(&json!({"id": 7}))
            .send(),
    );
    let body: Value = sent.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(
        (
            body["method"].as_str(),
            body["path"].as_str(),
            body["query"].as_str()
        ),
        (Some("POST"), Some("/echo/api/items"), Some("page=2"))
    );
    assert_eq!(body["trace"], "t-1");
    assert_eq!(server.requests(), 1, "the dropped future sent nothing");

    // A copy sends the same request.
    let original = client
        .put("copied")
        .header("x-trace", "t-2")
        .body("payload");
    let copy = original.try_clone().expect("a buffered body can be copied");
    for builder in [original, copy] {
        let body: Value = builder.send().await.unwrap().json().await.unwrap();
        assert_eq!(
            (
                body["method"].as_str(),
                body["path"].as_str(),
                body["trace"].as_str()
            ),
            (Some("PUT"), Some("/echo/api/copied"), Some("t-2"))
        );
    }

    // `build` gives the request without sending it, or the path's error.
    let request = client.get("built").build().unwrap();
    assert_eq!(request.url(), &server.url("echo/api/built"));
    let plain = factory_with("plain", HttpClientOptions::default())
        .create_client("plain")
        .unwrap();
    let error = plain.get("relative").build().unwrap_err();
    let reqwest_middleware::Error::Middleware(inner) = &error else {
        panic!("expected a middleware error, got {error:?}");
    };
    assert!(matches!(
        inner.downcast_ref::<HttpError>(),
        Some(HttpError::InvalidUrl { .. })
    ));
    assert_eq!(server.requests(), 3);
    // Debug shows the client, not the URL's query or the headers.
    let debug = format!("{:?}", client.get("x?api_key=s3cret").bearer_auth("t0ken"));
    assert!(debug.contains("api") && !debug.contains("s3cret") && !debug.contains("t0ken"));
}
