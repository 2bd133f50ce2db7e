//! A local OAuth token endpoint for tests.
//!
//! The server runs on its own thread with its own tokio runtime (real clock), listening on
//! `127.0.0.1` with an OS-assigned port. Keeping it off the test's runtime means a test may pause its
//! own clock (to check cache expiry) without pausing or racing the server.
//!
//! It counts requests, records the last request's headers and form, issues tokens that encode the
//! request number, scope and resources (`tok-<n>-<scope>-<resource,resource>`), and can be told to
//! fail with a given status and body, send a body of a given size, stream a body that never ends,
//! hang, delay, or hold requests until released.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};
use token_mgmt::tokens::TokenClientOptions;
use tokio::sync::{oneshot, watch};

/// The path the token endpoint is served on.
pub const TOKEN_PATH: &str = "/connect/token";

/// What the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// Issue a token (the default).
    Issue,
    /// Answer with this status, content type and body.
    Respond {
        /// HTTP status.
        status: u16,
        /// `Content-Type` header.
        content_type: String,
        /// The body.
        body: String,
    },
    /// Answer 200 with a JSON-ish body of exactly this many bytes (with `Content-Length`).
    Oversized(usize),
    /// Answer 200 with a chunked body that never ends.
    Endless,
    /// Never answer.
    Hang,
}

/// Which requests are held until [`TokenServer::release`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Hold {
    None,
    All,
    Scope(String),
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// The request headers.
    pub headers: HeaderMap,
    /// The decoded form fields, in order.
    pub form: Vec<(String, String)>,
}

impl RecordedRequest {
    /// The first value of form field `name`.
    pub fn form_value(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of form field `name`.
    pub fn form_values(&self, name: &str) -> Vec<&str> {
        self.form
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Header `name` as a string.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Config {
    mode: Mode,
    delay: Option<Duration>,
    expires_in: Option<Value>,
    token_type: String,
    hold: Hold,
    last: Option<RecordedRequest>,
}

struct Shared {
    config: Mutex<Config>,
    count: watch::Sender<usize>,
    released: watch::Sender<u64>,
}

impl Shared {
    fn config(&self) -> MutexGuard<'_, Config> {
        self.config.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running test token endpoint; stops when dropped.
pub struct TokenServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl TokenServer {
    /// Starts a server on `127.0.0.1` with an OS-assigned port.
    pub fn start() -> Self {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0")
    }

    /// Starts a server on `addr`.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            config: Mutex::new(Config {
                mode: Mode::Issue,
                delay: None,
                expires_in: Some(json!(3600)),
                token_type: "Bearer".to_owned(),
                hold: Hold::None,
                last: None,
            }),
            count: watch::Sender::new(0),
            released: watch::Sender::new(0),
        });
        let app = Router::new()
            .route(TOKEN_PATH, post(token))
            .with_state(shared.clone());
        let shutdown =
            crate::serve::serve_on_thread(format!("token-server-{}", addr.port()), listener, app)?;
        Ok(Self {
            addr,
            shared,
            shutdown: Some(shutdown),
        })
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// How many token requests arrived so far.
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

    /// The last request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared.config().last.clone()
    }

    /// Sets what the server answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.shared.config().mode = mode;
    }

    /// Answers with `status`, `content_type` and `body` from now on.
    pub fn respond(&self, status: u16, content_type: &str, body: &str) {
        self.set_mode(Mode::Respond {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        });
    }

    /// Waits this long (server clock, real time) before answering.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.shared.config().delay = delay;
    }

    /// The `expires_in` of issued tokens (`None`: omitted). A JSON value, so a numeric string can be
    /// sent too.
    pub fn set_expires_in(&self, expires_in: Option<Value>) {
        self.shared.config().expires_in = expires_in;
    }

    /// The `token_type` of issued tokens.
    pub fn set_token_type(&self, token_type: &str) {
        self.shared.config().token_type = token_type.to_owned();
    }

    /// Holds every request until [`release`](Self::release) (they are counted on arrival).
    pub fn hold_all(&self) {
        self.shared.config().hold = Hold::All;
    }

    /// Holds requests for `scope` until [`release`](Self::release).
    pub fn hold_scope(&self, scope: &str) {
        self.shared.config().hold = Hold::Scope(scope.to_owned());
    }

    /// Lets held requests go, and stops holding.
    pub fn release(&self) {
        self.shared.config().hold = Hold::None;
        self.shared
            .released
            .send_modify(|generation| *generation += 1);
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn token(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
    let scope = form
        .iter()
        .find(|(k, _)| k == "scope")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let resources: Vec<String> = form
        .iter()
        .filter(|(k, _)| k == "resource")
        .map(|(_, v)| v.clone())
        .collect();
    let mut released = shared.released.subscribe();
    let (mode, delay, expires_in, token_type) = {
        let mut config = shared.config();
        config.last = Some(RecordedRequest { headers, form });
        (
            config.mode.clone(),
            config.delay,
            config.expires_in.clone(),
            config.token_type.clone(),
        )
    };
    let mut n = 0;
    shared.count.send_modify(|count| {
        *count += 1;
        n = *count;
    });
    loop {
        let held = match &shared.config().hold {
            Hold::None => false,
            Hold::All => true,
            Hold::Scope(held) => *held == scope,
        };
        if !held {
            break;
        }
        if released.changed().await.is_err() {
            break;
        }
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    match mode {
        Mode::Issue => {
            let mut response = json!({
                "access_token": format!("tok-{n}-{scope}-{}", resources.join(",")),
                "token_type": token_type,
            });
            if let Some(expires_in) = expires_in {
                response["expires_in"] = expires_in;
            }
            if !scope.is_empty() {
                response["scope"] = json!(scope);
            }
            (
                [(header::CONTENT_TYPE, "application/json")],
                response.to_string(),
            )
                .into_response()
        }
        Mode::Respond {
            status,
            content_type,
            body,
        } => (
            StatusCode::from_u16(status).expect("valid status"),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response(),
        Mode::Oversized(len) => {
            let mut body = String::with_capacity(len);
            body.push_str("{\"access_token\":\"");
            while body.len() < len.saturating_sub(2) {
                body.push('x');
            }
            body.push_str("\"}");
            body.truncate(len);
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Mode::Endless => {
            let chunk = Bytes::from(vec![b' '; 16 * 1024]);
            let stream =
                futures_util::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(stream),
            )
                .into_response()
        }
        Mode::Hang => std::future::pending().await,
    }
}
