//! A token endpoint that fails on purpose, for resilience tests.
//!
//! Like [`token_server`](crate::token_server) it runs on its own thread and tokio runtime (real
//! clock) and listens on `127.0.0.1` with an OS-assigned port. It is built on hyper's connection
//! API rather than a router so that a response can be replaced by a dropped connection.
//!
//! Each request takes the next [`Fault`] from a script; once the script is empty it gets the default
//! fault ([`Fault::Issue`] unless changed). Issued tokens encode the request number, scope and
//! resources (`tok-<n>-<scope>-<resource,resource>`). Every request is counted and recorded with its
//! scope and, when the server was given the service's clock, the time it arrived on that clock.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use token_mgmt::tokens::{Clock, Stamp, TokenClientOptions};
use tokio::sync::{Notify, oneshot, watch};

/// The path the token endpoint is served on.
pub const TOKEN_PATH: &str = "/connect/token";

/// Largest request body read (token requests are small forms).
const MAX_REQUEST_BODY: usize = 64 * 1024;

/// How the server answers one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Issue a token (no fault).
    Issue,
    /// Answer `status`, with an OAuth error JSON body when `error` is set (an empty body otherwise)
    /// and a `Retry-After` header when `retry_after` is set.
    Status {
        /// HTTP status.
        status: u16,
        /// The OAuth `error` code of the body.
        error: Option<String>,
        /// The `Retry-After` header value, verbatim.
        retry_after: Option<String>,
    },
    /// Answer `status` with exactly this body (`Content-Type: application/json`).
    Body {
        /// HTTP status.
        status: u16,
        /// The body bytes.
        body: Vec<u8>,
    },
    /// Read the request, then drop the connection without answering (the socket lingers zero
    /// seconds, so the client sees a reset).
    Reset,
    /// Read the request and never answer.
    Hang,
    /// Wait this long (real time, on the server's clock), then issue a token.
    Delay(Duration),
}

impl Fault {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Fault::Status {
            status,
            error: None,
            retry_after: None,
        }
    }

    /// `status` with the OAuth error body `{"error": error, "error_description": ...}`.
    pub fn oauth(status: u16, error: &str) -> Self {
        Fault::Status {
            status,
            error: Some(error.to_owned()),
            retry_after: None,
        }
    }

    /// `status` with an empty body and `Retry-After: retry_after`.
    pub fn throttled(status: u16, retry_after: &str) -> Self {
        Fault::Status {
            status,
            error: None,
            retry_after: Some(retry_after.to_owned()),
        }
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenRequest {
    /// When it arrived, on the clock given to [`FaultServer::with_clock`].
    pub at: Option<Stamp>,
    /// Its `scope` form field (empty when absent).
    pub scope: String,
}

struct Script {
    next: VecDeque<Fault>,
    default: Fault,
    expires_in: Option<u64>,
    held: bool,
    seen: Vec<SeenRequest>,
}

struct Shared {
    script: Mutex<Script>,
    clock: Option<Arc<dyn Clock>>,
    count: watch::Sender<usize>,
    released: watch::Sender<u64>,
}

impl Shared {
    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running fault-injecting token endpoint; stops when dropped.
pub struct FaultServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FaultServer {
    /// Starts a server that does not timestamp requests.
    pub fn start() -> Self {
        Self::launch(None)
    }

    /// Starts a server that stamps every request with `clock` (the service's clock) on arrival.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self::launch(Some(clock))
    }

    fn launch(clock: Option<Arc<dyn Clock>>) -> Self {
        let listener = std::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind 127.0.0.1:0");
        listener.set_nonblocking(true).expect("non-blocking");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            script: Mutex::new(Script {
                next: VecDeque::new(),
                default: Fault::Issue,
                expires_in: Some(3600),
                held: false,
                seen: Vec::new(),
            }),
            clock,
            count: watch::Sender::new(0),
            released: watch::Sender::new(0),
        });
        let (shutdown, stopped) = oneshot::channel::<()>();
        let serving = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(format!("fault-server-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("fault server runtime");
                runtime.block_on(async move {
                    let listener =
                        tokio::net::TcpListener::from_std(listener).expect("tokio listener");
                    tokio::select! {
                        () = accept_loop(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
                // Dropping the runtime drops every connection, hanging or held.
            })
            .expect("spawn the fault server thread");
        Self {
            addr,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// The token endpoint URL.
    pub fn url(&self) -> String {
        format!("http://{}{TOKEN_PATH}", self.addr)
    }

    /// Options for a token client of this server (`client_id = "client"`, `client_secret = "secret"`).
    pub fn client_options(&self) -> TokenClientOptions {
        TokenClientOptions {
            address: self.url().parse().expect("server URL parses"),
            client_id: "client".into(),
            client_secret: "secret".into(),
            ..Default::default()
        }
    }

    /// Answers the next requests with `faults`, in order (after those already scripted).
    pub fn script(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.script().next.extend(faults);
    }

    /// Answers the next `n` requests with `fault`, the following ones as the default says: "N
    /// failures, then success" unless [`always`](Self::always) changed the default.
    pub fn fail_times(&self, n: usize, fault: Fault) {
        self.script(std::iter::repeat_n(fault, n));
    }

    /// Drops the rest of the script and answers every request with `fault`.
    pub fn always(&self, fault: Fault) {
        let mut script = self.shared.script();
        script.next.clear();
        script.default = fault;
    }

    /// The `expires_in` of issued tokens, in seconds (`None`: omitted).
    pub fn set_expires_in(&self, expires_in: Option<u64>) {
        self.shared.script().expires_in = expires_in;
    }

    /// Holds every request (counted and recorded on arrival) until [`release`](Self::release).
    pub fn hold(&self) {
        self.shared.script().held = true;
    }

    /// Lets held requests go on, and stops holding.
    pub fn release(&self) {
        self.shared.script().held = false;
        self.shared.released.send_modify(|g| *g += 1);
    }

    /// How many requests arrived so far.
    pub fn request_count(&self) -> usize {
        *self.shared.count.borrow()
    }

    /// Waits until at least `n` requests have arrived.
    pub async fn wait_for_requests(&self, n: usize) {
        let mut count = self.shared.count.subscribe();
        count
            .wait_for(|&c| c >= n)
            .await
            .expect("the server state lives as long as the server");
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.shared.script().seen.clone()
    }

    /// When each request arrived, on the server's clock (`with_clock`).
    pub fn request_times(&self) -> Vec<Stamp> {
        self.requests()
            .iter()
            .map(|r| r.at.expect("the server was started with a clock"))
            .collect()
    }
}

impl Drop for FaultServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // The server never closes a connection by itself except to reset it, so a zero linger
        // (an RST on close) loses no response.
        let _ = stream.set_zero_linger();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let reset = Arc::new(Notify::new());
            let service = {
                let reset = Arc::clone(&reset);
                service_fn(move |request| {
                    let shared = Arc::clone(&shared);
                    let reset = Arc::clone(&reset);
                    async move { Ok::<_, Infallible>(answer(&shared, &reset, request).await) }
                })
            };
            let connection = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                () = reset.notified() => {} // dropping the connection closes the socket
            }
        });
    }
}

async fn answer(shared: &Shared, reset: &Notify, request: Request<Incoming>) -> Response<Body> {
    let body = axum::body::to_bytes(Body::new(request.into_body()), MAX_REQUEST_BODY)
        .await
        .unwrap_or_default();
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let resources: Vec<&str> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    let at = shared.clock.as_ref().map(|clock| clock.now());
    let mut released = shared.released.subscribe();
    let (fault, expires_in, number) = {
        let mut script = shared.script();
        let fault = script
            .next
            .pop_front()
            .unwrap_or_else(|| script.default.clone());
        let number = script.seen.len() + 1;
        script.seen.push(SeenRequest {
            at,
            scope: scope.clone(),
        });
        (fault, script.expires_in, number)
    };
    shared.count.send_modify(|c| *c += 1);
    while shared.script().held {
        if released.changed().await.is_err() {
            break;
        }
    }
    let issue = || {
        let mut token = json!({
            "access_token": format!("tok-{number}-{scope}-{}", resources.join(",")),
            "token_type": "Bearer",
        });
        if let Some(expires_in) = expires_in {
            token["expires_in"] = json!(expires_in);
        }
        respond(200, token.to_string().into_bytes(), None)
    };
    match fault {
        Fault::Issue => issue(),
        Fault::Delay(delay) => {
            tokio::time::sleep(delay).await;
            issue()
        }
        Fault::Status {
            status,
            error,
            retry_after,
        } => {
            let body = error.map_or_else(Vec::new, |error| {
                json!({"error": error, "error_description": "injected by the fault server"})
                    .to_string()
                    .into_bytes()
            });
            respond(status, body, retry_after)
        }
        Fault::Body { status, body } => respond(status, body, None),
        Fault::Reset => {
            reset.notify_one();
            std::future::pending().await
        }
        Fault::Hang => std::future::pending().await,
    }
}

fn respond(status: u16, body: Vec<u8>, retry_after: Option<String>) -> Response<Body> {
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(value) = retry_after {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_str(&value).expect("a valid header value"),
        );
    }
    response
}
