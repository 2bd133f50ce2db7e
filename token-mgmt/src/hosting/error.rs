use std::error::Error;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use crate::BoxError;
use crate::di::{BuildError, ResolveError};

/// An error shown with its causes (its [`source`](Error::source) chain), in words.
///
/// Every error in token-mgmt says *what* failed in its message and *why* in its `source()`, never
/// both; this shows the whole story:
/// - `{}`: one line, `message: cause: cause`, for logs;
/// - `{:#}`: the message, then a `Caused by:` section with one line per cause (the layout of
///   `anyhow`'s `{:?}`), for people. [`HostError`]'s `Debug` is this, so
///   `fn main() -> Result<(), HostError>` prints sentences.
///
/// ```
/// use token_mgmt::hosting::error_chain;
///
/// let error = std::io::Error::other("config.toml is unreadable");
/// assert_eq!(error_chain(&error).to_string(), "config.toml is unreadable");
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a> {
    error: &'a (dyn Error + 'static),
}

/// Shows `error` with its causes: see [`ErrorChain`].
pub fn error_chain<'a>(error: &'a (dyn Error + 'static)) -> ErrorChain<'a> {
    ErrorChain { error }
}

impl<'a> ErrorChain<'a> {
    fn causes(&self) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
        std::iter::successors(self.error.source(), |&cause| cause.source())
    }
}

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.error)?;
        if f.alternate() {
            let causes: Vec<_> = self.causes().collect();
            match causes.as_slice() {
                [] => {}
                [one] => write!(f, "\n\nCaused by:\n    {}", Indented(one, "    "))?,
                many => {
                    f.write_str("\n\nCaused by:")?;
                    for (i, cause) in many.iter().enumerate() {
                        write!(f, "\n    {i}: {}", Indented(cause, "       "))?;
                    }
                }
            }
        } else {
            for cause in self.causes() {
                write!(f, ": {cause}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:#}")
    }
}

/// A message whose continuation lines are indented to line up under the first.
struct Indented<'a>(&'a dyn fmt::Display, &'static str);

impl fmt::Display for Indented<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0.to_string();
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                write!(f, "\n{}", self.1)?;
            }
            f.write_str(line)?;
        }
        Ok(())
    }
}

/// The error a worker returns from [`execute`](super::BackgroundService::execute).
///
/// Like `anyhow::Error`: any error converts into it (`impl<E: Into<BoxError>> From<E>`), so `?` works on
/// every error type inside `execute`, and so do strings (`Err("gave up".into())`). That blanket
/// conversion is also why it cannot implement [`Error`] itself (it would convert into itself);
/// instead it dereferences to the error inside (`&*worker_error` is a `&dyn Error`, with its
/// `source()` chain), so it can be the `#[source]` of a `thiserror` error, as in
/// [`HostError::WorkerFailed`].
///
/// `{}` shows the error's own message, `{:#}` the message with its causes on one line, and `{:?}`
/// the message and a `Caused by:` section (see [`ErrorChain`]).
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
    pub fn inner(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl<E: Into<BoxError>> From<E> for WorkerError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl Deref for WorkerError {
    type Target = dyn Error + Send + Sync + 'static;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl AsRef<dyn Error + Send + Sync + 'static> for WorkerError {
    fn as_ref(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            write!(f, "{}", error_chain(&*self.0))
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", error_chain(&*self.0))
    }
}

/// The host could not be built, started or stopped cleanly.
///
/// Its message says what failed and [`source`](Error::source) says why. Its `Debug` is the message
/// followed by every cause, in words ([`ErrorChain`]'s `{:#}`), so returning it from `main` prints
/// sentences rather than a data structure.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The service configuration is invalid (every problem is listed).
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A hosted worker could not be constructed from the container.
    #[error("cannot construct worker `{worker}`")]
    Construct {
        /// The worker's type name.
        worker: &'static str,
        /// Why it could not be constructed.
        #[source]
        error: ResolveError,
    },
    /// A worker returned an error (and the failure policy stops the host).
    #[error("worker `{worker}` failed")]
    WorkerFailed {
        /// The worker's type name.
        worker: &'static str,
        /// The error it returned; `source()` is the error inside it.
        #[source]
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

impl fmt::Debug for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", error_chain(self))
    }
}
