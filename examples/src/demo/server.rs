//! [`DemoServer`]: the token service and protected API on one loopback listener, with test controls.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get, post};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

use super::api::{protected, redirect_to};
use super::config::DemoConfig;
use super::counters::DemoCounters;
use super::state::DemoState;
use super::token_endpoint::token;

/// The OpenID Connect discovery document of the demo issuer at `addr` (the parts a client
/// credentials client reads).
fn discovery_document(addr: SocketAddr) -> serde_json::Value {
    let issuer = format!("http://{addr}");
    serde_json::json!({
        "issuer": issuer,
        "token_endpoint": format!("{issuer}/connect/token"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    })
}

/// The embedded demo token service and protected API (see [the module docs](super)).
///
/// Dropping it stops the server; [`shutdown`](Self::shutdown) also waits for it.
pub struct DemoServer {
    addr: SocketAddr,
    state: Arc<DemoState>,
    task: ServerTask,
}

impl DemoServer {
    /// Binds `127.0.0.1:0` (an OS-assigned port) and starts serving on the current tokio runtime.
    pub async fn start(config: DemoConfig) -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(DemoState::new(config));
        let document = discovery_document(addr);
        let router = Router::new()
            .route(
                "/.well-known/openid-configuration",
                get(move || std::future::ready(axum::Json(document))),
            )
            .route("/connect/token", post(token))
            .route("/api/redirect-to", get(redirect_to))
            .route("/api", any(protected))
            .route("/api/", any(protected))
            .route("/api/{*path}", any(protected))
            .with_state(Arc::clone(&state));
        tracing::debug!(%addr, "demo token service listening");
        Ok(Self {
            addr,
            state,
            task: ServerTask::spawn(listener, router),
        })
    }

    /// The listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the issuer, whose discovery document
    /// (`/.well-known/openid-configuration`) names the token endpoint.
    pub fn issuer(&self) -> Url {
        self.url("")
    }

    /// `http://127.0.0.1:PORT/connect/token`.
    pub fn token_endpoint(&self) -> Url {
        self.url("connect/token")
    }

    /// `http://127.0.0.1:PORT/api/`: the base address of the protected API.
    pub fn api_base(&self) -> Url {
        self.url("api/")
    }

    /// `http://127.0.0.1:PORT/api/redirect-to?url=<target>`.
    pub fn redirect_url(&self, target: &Url) -> Url {
        let mut url = self.url("api/redirect-to");
        url.query_pairs_mut().append_pair("url", target.as_str());
        url
    }

    fn url(&self, path: &str) -> Url {
        Url::parse(&format!("http://{}/{path}", self.addr)).expect("a valid loopback URL")
    }

    /// A snapshot of the request counters.
    pub fn counters(&self) -> DemoCounters {
        self.state.counters.snapshot()
    }

    /// Sets every counter back to zero.
    pub fn reset_counters(&self) {
        self.state.counters.reset();
    }

    /// How many issued tokens are currently valid (not revoked, not expired).
    pub fn valid_tokens(&self) -> usize {
        self.state.valid_tokens()
    }

    /// Revokes every issued token (the API answers `401 invalid_token` to them from now on).
    /// Returns how many were revoked.
    pub fn revoke_all(&self) -> usize {
        self.state.revoke(None)
    }

    /// Revokes every token issued to `client_id`. Returns how many were revoked.
    pub fn revoke_client(&self, client_id: &str) -> usize {
        self.state.revoke(Some(client_id))
    }

    /// Makes every issued token expired now (for tests that cannot use a paused clock). Returns how
    /// many tokens were still valid.
    pub fn expire_all(&self) -> usize {
        self.state.expire_all()
    }

    /// Makes the token endpoint answer every request with `status` and `body` (sent as
    /// `application/json` when it starts with `{`), or behave normally again with `None`.
    pub fn set_token_endpoint_failure(&self, failure: Option<(StatusCode, String)>) {
        self.state.set_failure(failure);
    }

    /// Delays every token response by `delay` (a tokio sleep: a paused clock skips it).
    pub fn set_token_delay(&self, delay: Duration) {
        self.state.set_delay(delay);
    }

    /// Changes the lifetime of tokens issued to `client_id` from now on. Returns `false` when the
    /// client is unknown.
    pub fn set_token_lifetime(&self, client_id: &str, lifetime: Duration) -> bool {
        self.state.set_token_lifetime(client_id, lifetime)
    }

    /// Stops accepting connections, lets open requests finish, and waits for the server task.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

impl fmt::Debug for DemoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A spawned axum server with graceful shutdown; dropping it aborts the server.
pub(crate) struct ServerTask {
    stop: Option<oneshot::Sender<()>>,
    handle: Option<JoinHandle<()>>,
}

impl ServerTask {
    pub(crate) fn spawn(listener: TcpListener, router: Router) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let shutdown = async move {
                // Either an explicit stop or the sender being dropped.
                let _ = stopped.await;
            };
            if let Err(error) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                tracing::warn!(%error, "demo server stopped with an error");
            }
        });
        Self {
            stop: Some(stop),
            handle: Some(handle),
        }
    }

    pub(crate) async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(handle) = self.handle.take() {
            // A panic inside the server task is reported by tokio; nothing to add here.
            let _ = handle.await;
        }
    }
}

impl Drop for ServerTask {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.abort();
        }
    }
}
