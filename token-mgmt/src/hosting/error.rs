use std::fmt;
use std::time::Duration;

use crate::BoxError;
use crate::di::{BuildError, ResolveError};

/// The error a worker returns from [`execute`](super::BackgroundService::execute).
///
/// Like `anyhow::Error`: any error converts into it (`impl<E: Into<BoxError>> From<E>`), so `?` works on
/// every error type inside `execute`, and so do strings (`Err("gave up".into())`).
pub struct WorkerError(BoxError);

impl WorkerError {
    /// A worker error with a plain message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self(message.to_string().into())
    }

    /// The underlying error.
    pub fn into_inner(self) -> BoxError {
        self.0
    }

    /// The underlying error, borrowed.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: Into<BoxError>> From<E> for WorkerError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

/// The host could not be built, started or stopped cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The service configuration is invalid (every problem is listed).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A hosted worker could not be constructed from the container.
    #[error("cannot construct worker `{worker}`: {error}")]
    Construct {
        /// The worker's type name.
        worker: &'static str,
        /// Why it could not be constructed.
        error: ResolveError,
    },
    /// A worker returned an error (and the failure policy stops the host).
    #[error("worker `{worker}` failed: {error}")]
    WorkerFailed {
        /// The worker's type name.
        worker: &'static str,
        /// The error it returned.
        error: WorkerError,
    },
    /// A worker panicked (and the failure policy stops the host).
    #[error("worker `{worker}` panicked: {message}")]
    WorkerPanicked {
        /// The worker's type name.
        worker: &'static str,
        /// The panic message, when it was a string.
        message: String,
    },
    /// Workers were still running when the shutdown timeout expired; they were aborted.
    #[error("shutdown timed out after {timeout:?}; workers still running: {}", workers.join(", "))]
    ShutdownTimeout {
        /// The configured shutdown timeout.
        timeout: Duration,
        /// Type names of the workers that did not stop in time.
        workers: Vec<&'static str>,
    },
    /// The host was started outside a tokio runtime.
    #[error("the host must be started from within a tokio runtime")]
    NoRuntime,
}
