//! Errors of the HTTP client factory and of [`HttpClient`](super::HttpClient) calls.

use std::fmt;

use http::{Method, StatusCode};

/// Why a request path could not be turned into a URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidUrlReason {
    /// The path is relative and the client has no base address.
    #[error("it is a relative path and the client has no base address")]
    RelativeWithoutBaseAddress,
    /// The URL uses a scheme other than `http`/`https`.
    #[error("scheme `{0}` is not supported (only http and https)")]
    UnsupportedScheme(String),
    /// The path (or the joined URL) is not a valid URL.
    #[error("it is not a valid URL")]
    Parse(#[source] url::ParseError),
}

/// An HTTP client's options break a rule checked when the container is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpOptionsError {
    /// An access token client's base address or allowed origin is plain `http://` to a host that
    /// is not loopback, and the client does not set
    /// [`allow_insecure_http`](super::HttpClientOptions::allow_insecure_http): its access tokens
    /// would travel in clear text.
    #[error(
        "HTTP client `{client}` would send access tokens over plain http to a non-loopback host \
         ({address}); use https, or set allow_insecure_http = true if you really mean it"
    )]
    InsecureAddress {
        /// The HTTP client's name.
        client: String,
        /// The base address or allowed origin (without user info, query or fragment).
        address: String,
    },
}

/// `create_client` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CreateClientError {
    /// No client of that name is registered.
    #[error(
        "no HTTP client named `{name}` is registered; registered clients: {}",
        NameList(registered)
    )]
    UnknownClient {
        /// The requested name.
        name: String,
        /// Every registered name, sorted.
        registered: Vec<String>,
    },
    /// Building the underlying `reqwest::Client` failed (e.g. the TLS backend could not start).
    #[error("building HTTP client `{name}` failed")]
    Build {
        /// The client's name.
        name: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
}

struct NameList<'a>(&'a [String]);

impl fmt::Display for NameList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(none)");
        }
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "`{name}`")?;
        }
        Ok(())
    }
}

/// A call on an [`HttpClient`](super::HttpClient) failed.
///
/// The message says what failed (the client, the method and the URL); [`source`](std::error::Error::source)
/// says why (the middleware's or reqwest's error, the URL's problem) and is not repeated in the
/// message: show the whole chain with [`error_chain`](crate::hosting::error_chain).
///
/// URLs and paths in these errors are shown without user info and with the query replaced by
/// `[redacted]`; request and response headers are never included.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The request path could not be turned into a URL; `source()` is the [`InvalidUrlReason`].
    #[error("HTTP client `{client}`: cannot make a request URL from `{path}`")]
    InvalidUrl {
        /// The client's name.
        client: String,
        /// The path that was given, redacted like URLs: user info removed, the query replaced by
        /// `[redacted]`, the fragment removed.
        path: String,
        /// Why it was refused.
        #[source]
        reason: InvalidUrlReason,
    },
    /// Sending the request failed: a middleware error (for example a token error), a connection
    /// error, a timeout. The middleware's own error is reachable with
    /// [`middleware_error`](HttpError::middleware_error).
    #[error("HTTP client `{client}`: {method} {url} failed")]
    Request {
        /// The client's name.
        client: String,
        /// The request method.
        method: Method,
        /// The request URL (redacted).
        url: String,
        /// The error from the middleware chain or reqwest.
        #[source]
        source: reqwest_middleware::Error,
    },
    /// The response status is not a success (2xx).
    #[error("HTTP client `{client}`: {method} {url} returned {status}")]
    Status {
        /// The client's name.
        client: String,
        /// The request method.
        method: Method,
        /// The request URL (redacted).
        url: String,
        /// The response status.
        status: StatusCode,
    },
    /// Reading the response body failed.
    #[error("HTTP client `{client}`: reading the response body of {method} {url} failed")]
    Body {
        /// The client's name.
        client: String,
        /// The request method.
        method: Method,
        /// The request URL (redacted).
        url: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
}

impl HttpError {
    /// [`HttpError::InvalidUrl`], with `path` redacted.
    pub(crate) fn invalid_url(client: String, path: &str, reason: InvalidUrlReason) -> Self {
        HttpError::InvalidUrl {
            client,
            path: redacted_path(path),
            reason,
        }
    }

    /// The response status, for [`HttpError::Status`].
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            HttpError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The name of the client the call was made on.
    pub fn client_name(&self) -> &str {
        match self {
            HttpError::InvalidUrl { client, .. }
            | HttpError::Request { client, .. }
            | HttpError::Status { client, .. }
            | HttpError::Body { client, .. } => client,
        }
    }

    /// The error a middleware returned, if this is a middleware failure whose error is an `E`
    /// (for example the token handler's `TokenError`).
    pub fn middleware_error<E>(&self) -> Option<&E>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        match self {
            HttpError::Request {
                source: reqwest_middleware::Error::Middleware(error),
                ..
            } => error.downcast_ref::<E>(),
            _ => None,
        }
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        match self {
            HttpError::Request { source, .. } => source.is_timeout(),
            HttpError::Body { source, .. } => source.is_timeout(),
            _ => false,
        }
    }
}

/// A path (relative, or an absolute URL that may not parse) that is safe to show: user info
/// replaced by `[redacted]`, the query too (either may carry credentials, e.g. `?api_key=`), the
/// fragment removed. Works on the text, so it also covers what `url` refuses to parse.
fn redacted_path(path: &str) -> String {
    let path = path.split_once('#').map_or(path, |(before, _)| before);
    let (path, query) = match path.split_once('?') {
        Some((before, _)) => (before, "?[redacted]"),
        None => (path, ""),
    };
    format!("{}{query}", without_user_info(path))
}

/// `path` with anything before an `@` in its authority (after `scheme://` or `//`), or in its
/// first segment when it has none, replaced by `[redacted]`: an `@` there is user info, or a
/// mistyped URL that may hold a password.
fn without_user_info(path: &str) -> String {
    let authority_start = path
        .find("//")
        .filter(|&i| i == 0 || is_scheme(&path[..i]))
        .map_or(0, |i| i + 2);
    let rest = &path[authority_start..];
    let authority_end = rest.find(['/', '\\']).unwrap_or(rest.len());
    match rest[..authority_end].rfind('@') {
        Some(at) => format!("{}[redacted]{}", &path[..authority_start], &rest[at..]),
        None => path.to_owned(),
    }
}

/// Whether `prefix` is `scheme:` (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`).
fn is_scheme(prefix: &str) -> bool {
    prefix.strip_suffix(':').is_some_and(|scheme| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    })
}
