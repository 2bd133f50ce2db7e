use tokio_util::sync::CancellationToken;

/// Lets workers and embedders observe and control the application's lifetime (like .NET's
/// `IHostApplicationLifetime`). Cheap to clone; injected by value into workers.
///
/// Registered by the [`HostBuilder`](super::HostBuilder).
#[derive(Clone, Debug, Default)]
#[doc(alias = "IHostApplicationLifetime")]
pub struct ApplicationLifetime {
    stop_requested: CancellationToken,
    stopping: CancellationToken,
    stopped: CancellationToken,
}

crate::inject_by_clone!(ApplicationLifetime);

impl ApplicationLifetime {
    /// A fresh lifetime (the host builder creates one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Requests a graceful shutdown: the host cancels every worker's stopping token and waits for
    /// them, as on Ctrl-C.
    #[doc(alias = "StopApplication")]
    pub fn stop_application(&self) {
        self.stop_requested.cancel();
    }

    /// Whether a shutdown was requested.
    pub fn is_stop_requested(&self) -> bool {
        self.stop_requested.is_cancelled()
    }

    /// Cancelled when the host begins shutting down.
    pub fn application_stopping(&self) -> CancellationToken {
        self.stopping.child_token()
    }

    /// Cancelled when the host has finished shutting down.
    pub fn application_stopped(&self) -> CancellationToken {
        self.stopped.child_token()
    }

    pub(crate) fn stop_requested_token(&self) -> &CancellationToken {
        &self.stop_requested
    }

    pub(crate) fn stopping_token(&self) -> &CancellationToken {
        &self.stopping
    }

    pub(crate) fn stopped_token(&self) -> &CancellationToken {
        &self.stopped
    }
}
