//! An HTTP/2 API server (cleartext, prior knowledge) that refuses the streams a test tells it to
//! refuse with `REFUSED_STREAM` (RFC 9113 section 8.7: "not processed", safe to send again) and
//! answers the others `200 ok`. Built on the `h2` crate, the HTTP/2 implementation hyper and
//! reqwest use, on a thread and runtime of its own.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::oneshot;
use url::Url;

/// One stream the server received.
#[derive(Clone, Debug)]
pub struct Stream {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// The body (empty for a refused stream: it is not read).
    pub body: Vec<u8>,
    /// Whether the server refused it.
    pub refused: bool,
}

#[derive(Default)]
struct Shared {
    refuse_next: AtomicUsize,
    streams: Mutex<Vec<Stream>>,
}

/// The running server; stops when dropped.
pub struct H2Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: oneshot::Sender<()>,
}

impl H2Server {
    /// Starts on `127.0.0.1` on a port the OS assigns.
    pub fn start() -> Self {
        let (listener, addr) = crate::serve::loopback_listener();
        let shared = Arc::new(Shared::default());
        let state = Arc::clone(&shared);
        let shutdown = crate::serve::run_on_thread(
            format!("h2-server-{}", addr.port()),
            listener,
            |listener| accept(listener, state),
        )
        .expect("h2 server thread");
        Self {
            addr,
            shared,
            _shutdown: shutdown,
        }
    }

    /// `http://127.0.0.1:PORT/`.
    pub fn url(&self) -> Url {
        Url::parse(&format!("http://{}/", self.addr)).expect("a valid loopback URL")
    }

    /// Refuses the next `count` streams, then answers again.
    pub fn refuse_next(&self, count: usize) {
        self.shared.refuse_next.store(count, Ordering::SeqCst);
    }

    /// Every stream received so far, in order.
    pub fn streams(&self) -> Vec<Stream> {
        self.shared.streams.lock().unwrap().clone()
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            return;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let Ok(mut connection) = h2::server::handshake(socket).await else {
                return;
            };
            while let Some(Ok((request, respond))) = connection.accept().await {
                tokio::spawn(answer(request, respond, Arc::clone(&shared)));
            }
        });
    }
}

async fn answer(
    request: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    shared: Arc<Shared>,
) {
    let (parts, mut body) = request.into_parts();
    let refused = shared
        .refuse_next
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok();
    let mut data = Vec::new();
    if !refused {
        while let Some(Ok(chunk)) = body.data().await {
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
    }
    shared.streams.lock().unwrap().push(Stream {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(String::new, ToString::to_string),
        authorization: parts
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        body: data,
        refused,
    });
    if refused {
        respond.send_reset(h2::Reason::REFUSED_STREAM);
        return;
    }
    let response = http::Response::builder()
        .status(200)
        .body(())
        .expect("a valid response");
    if let Ok(mut send) = respond.send_response(response, false) {
        let _ = send.send_data(Bytes::from_static(b"ok"), true);
    }
}
