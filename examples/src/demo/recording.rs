//! [`RecordingServer`]: a loopback server that records the requests it receives.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::header::{AUTHORIZATION, COOKIE, PROXY_AUTHORIZATION};
use axum::http::{HeaderMap, Method, Uri};
use tokio::net::TcpListener;
use url::Url;

use super::server::ServerTask;

/// A request the [`RecordingServer`] received.
#[derive(Clone)]
#[non_exhaustive]
pub struct RecordedRequest {
    /// The method.
    pub method: Method,
    /// The path and query.
    pub uri: Uri,
    /// The headers (credential-bearing values are marked sensitive, so `Debug` hides them).
    pub headers: HeaderMap,
}

impl fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers)
            .finish()
    }
}

type Recorded = Arc<Mutex<Vec<RecordedRequest>>>;

/// A server on `127.0.0.1` (OS-assigned port) that answers `200 recorded` to any request and keeps
/// each request's method, URI and headers: the "other origin" of redirect tests.
pub struct RecordingServer {
    addr: SocketAddr,
    recorded: Recorded,
    task: ServerTask,
}

impl RecordingServer {
    /// Binds `127.0.0.1:0` and starts serving on the current tokio runtime.
    pub async fn start() -> io::Result<Self> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let recorded = Recorded::default();
        let router = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&recorded));
        Ok(Self {
            addr,
            recorded,
            task: ServerTask::spawn(listener, router),
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a valid loopback URL")
    }

    /// The requests received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.recorded
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(self) {
        self.task.shutdown().await;
    }
}

impl fmt::Debug for RecordingServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordingServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

async fn record(
    State(recorded): State<Recorded>,
    method: Method,
    uri: Uri,
    mut headers: HeaderMap,
) -> &'static str {
    for name in [AUTHORIZATION, PROXY_AUTHORIZATION, COOKIE] {
        if let axum::http::header::Entry::Occupied(mut entry) = headers.entry(name) {
            entry.iter_mut().for_each(|v| v.set_sensitive(true));
        }
    }
    recorded
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(RecordedRequest {
            method,
            uri,
            headers,
        });
    "recorded"
}
