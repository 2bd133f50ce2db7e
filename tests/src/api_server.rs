//! A local protected API for tests of the token handler's `401` policy.
//!
//! Like the token server it runs on its own thread with its own tokio runtime, on `127.0.0.1` with an
//! OS-assigned port, so it answers whatever runtime (or `block_on`) the test calls it from. It answers
//! every request with the status and `WWW-Authenticate` challenge it was told to, and records the
//! `Authorization` header of each request.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use url::Url;

struct Shared {
    /// The status to answer with, and the `WWW-Authenticate` value to send (if any).
    answer: Mutex<(u16, Option<String>)>,
    /// The `Authorization` header of every request, oldest first.
    seen: Mutex<Vec<Option<String>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running test API; stops when dropped.
pub struct ApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: Option<oneshot::Sender<()>>,
}

impl ApiServer {
    /// Starts an API on `127.0.0.1` (OS-assigned port) that answers `200 ok` until told otherwise.
    pub fn start() -> Self {
        let (listener, addr) = crate::serve::loopback_listener();
        let shared = Arc::new(Shared {
            answer: Mutex::new((200, None)),
            seen: Mutex::new(Vec::new()),
        });
        let app = Router::new().fallback(answer).with_state(shared.clone());
        let shutdown =
            crate::serve::serve_on_thread(format!("api-server-{}", addr.port()), listener, app)
                .expect("API server thread");
        Self {
            addr,
            shared,
            shutdown: Some(shutdown),
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a valid loopback URL")
    }

    /// Answers every request with `status` and, when given, this `WWW-Authenticate` value.
    pub fn answer(&self, status: u16, www_authenticate: Option<&str>) {
        *lock(&self.shared.answer) = (status, www_authenticate.map(str::to_owned));
    }

    /// The `Authorization` header of every request received, oldest first.
    pub fn authorizations(&self) -> Vec<Option<String>> {
        lock(&self.shared.seen).clone()
    }

    /// How many requests arrived.
    pub fn request_count(&self) -> usize {
        lock(&self.shared.seen).len()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }
}

async fn answer(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    let authorization = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    lock(&shared.seen).push(authorization);
    let (status, challenge) = lock(&shared.answer).clone();
    let status = StatusCode::from_u16(status).expect("valid status");
    match challenge {
        Some(challenge) => (status, [(WWW_AUTHENTICATE, challenge)], "api").into_response(),
        None => (status, "api").into_response(),
    }
}
