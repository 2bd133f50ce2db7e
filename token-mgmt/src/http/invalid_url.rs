//! How a request path that cannot be resolved surfaces from the builder-returning methods.
//!
//! `HttpClient::get(path)` returns a `reqwest_middleware::RequestBuilder`, which cannot carry an
//! error of ours. For a path that does not resolve, the builder is made on a client whose only
//! middleware is [`RejectInvalidUrl`]: `send()` then fails with
//! `reqwest_middleware::Error::Middleware` holding the [`HttpError::InvalidUrl`], and nothing is sent
//! (the middleware never calls `next`). The builder's URL is [`PLACEHOLDER_URL`], a host in the
//! reserved `.invalid` domain (RFC 6761), so a request taken out with `build()` cannot reach anyone.

use std::sync::LazyLock;

use http::Extensions;
use reqwest::{Request, Response};
use reqwest_middleware::{Middleware, Next};
use url::Url;

use super::error::{HttpError, InvalidUrlReason};

/// The URL of a request whose path could not be resolved.
pub(crate) static PLACEHOLDER_URL: LazyLock<Url> = LazyLock::new(|| {
    Url::parse("http://unresolved-request-url.invalid/").expect("a valid constant URL")
});

/// The resolution error, carried in the request builder's extensions.
#[derive(Clone)]
pub(crate) struct InvalidUrl {
    pub(crate) client: String,
    pub(crate) path: String,
    pub(crate) reason: InvalidUrlReason,
}

/// Fails every request with the [`InvalidUrl`] found in its extensions; never calls `next`.
pub(crate) struct RejectInvalidUrl;

#[async_trait::async_trait]
impl Middleware for RejectInvalidUrl {
    async fn handle(
        &self,
        _req: Request,
        extensions: &mut Extensions,
        _next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        // The extension is always there: this client is only used by `HttpClient::request`, which
        // inserts it. Should it be missing, the request is still refused.
        let InvalidUrl {
            client,
            path,
            reason,
        } = extensions.remove::<InvalidUrl>().unwrap_or(InvalidUrl {
            client: String::new(),
            path: PLACEHOLDER_URL.to_string(),
            reason: InvalidUrlReason::Parse(url::ParseError::EmptyHost),
        });
        Err(reqwest_middleware::Error::middleware(
            HttpError::invalid_url(client, &path, reason),
        ))
    }
}
