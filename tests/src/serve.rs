//! Serves on a thread and runtime of its own, so a test may pause or block its own runtime without
//! affecting the server.

use std::future::Future;
use std::net::{SocketAddr, TcpListener};

use axum::Router;
use tokio::sync::oneshot;

/// A listener on `127.0.0.1` on a port the OS assigns, non-blocking (for tokio), and its address.
pub fn loopback_listener() -> (TcpListener, SocketAddr) {
    let listener =
        TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind 127.0.0.1:0");
    listener
        .set_nonblocking(true)
        .expect("non-blocking listener");
    let addr = listener.local_addr().expect("local address");
    (listener, addr)
}

/// Serves `app` on `listener` from a thread named `name` until the returned sender is used or
/// dropped; stopping drops the server's runtime, which cancels handlers still running.
pub fn serve_on_thread(
    name: String,
    listener: TcpListener,
    app: Router,
) -> std::io::Result<oneshot::Sender<()>> {
    run_on_thread(name, listener, |listener| async move {
        let _ = axum::serve(listener, app).await;
    })
}

/// Runs `serve` with `listener` from a thread named `name` until the returned sender is used or
/// dropped; stopping drops the server's runtime, which cancels its tasks (and their connections).
pub fn run_on_thread<F, Fut>(
    name: String,
    listener: TcpListener,
    serve: F,
) -> std::io::Result<oneshot::Sender<()>>
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    listener.set_nonblocking(true)?;
    let (shutdown, stopped) = oneshot::channel::<()>();
    std::thread::Builder::new().name(name).spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            tokio::select! {
                () = serve(listener) => {}
                _ = stopped => {}
            }
        });
    })?;
    Ok(shutdown)
}
