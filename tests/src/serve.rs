//! Serves an axum router on a thread and runtime of its own, so a test may pause or block its own
//! runtime without affecting the server.

use std::net::TcpListener;

use axum::Router;
use tokio::sync::oneshot;

/// Serves `app` on `listener` from a thread named `name` until the returned sender is used or
/// dropped; stopping drops the server's runtime, which cancels handlers still running.
pub fn serve_on_thread(
    name: String,
    listener: TcpListener,
    app: Router,
) -> std::io::Result<oneshot::Sender<()>> {
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
                _ = axum::serve(listener, app) => {}
                _ = stopped => {}
            }
        });
    })?;
    Ok(shutdown)
}
