//! [`HttpClient`]: a cheap handle on one named, built client.

use std::fmt;
use std::sync::Arc;

use http::Method;
use reqwest_middleware::ClientWithMiddleware;
use url::Url;

use super::error::HttpError;
use super::request::{InvalidUrl, Provenance, RequestBuilder};
use super::resolve::{Resolved, Resolver, redacted};
use crate::tokens::ClientAccessTokenHandler;

/// A named HTTP client made by [`HttpClientFactory::create_client`](super::HttpClientFactory::create_client).
///
/// Cloning is cheap (one `Arc`), and every client of one name made by one factory shares the same
/// `reqwest::Client`, hence the same connection pool, and the same middleware chain.
///
/// # Paths
///
/// Request methods take a path that is resolved against the client's base address
/// ([`HttpClientOptions::base_address`](super::HttpClientOptions::base_address)), like .NET:
/// `https://h/api/` + `test` is `https://h/api/test`. An absolute `http`/`https` URL is used as it is.
///
/// # A path that does not resolve
///
/// [`get`](Self::get), [`post`](Self::post), ... and [`request`](Self::request) return a
/// [`RequestBuilder`], like reqwest. When the path does not resolve (relative with no base address,
/// not a URL, another scheme), nothing is sent and `send()` fails with
/// `reqwest_middleware::Error::Middleware` holding an [`HttpError::InvalidUrl`] (downcast it, or
/// use [`try_request`](Self::try_request) to get the error before sending). [`get_string`](Self::get_string)
/// returns the `HttpError::InvalidUrl` directly.
#[derive(Clone)]
pub struct HttpClient {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    resolver: Resolver,
    /// The client without middleware: requests are built on it.
    reqwest: reqwest::Client,
    client: ClientWithMiddleware,
    pipeline: Pipeline,
}

/// How a request goes through the middleware. The whole chain (`Inner::client`) works in every
/// case; the first two skip reqwest-middleware's boxed chain (a boxed future per middleware and per
/// request) when there is nothing or only the token handler to run.
pub(crate) enum Pipeline {
    /// No middleware: straight to reqwest.
    Direct,
    /// The token handler is the only middleware: called directly, then reqwest. `base_allowed`:
    /// the handler sends tokens to the base address's origin, which a plain path appended to it
    /// keeps (so that request's origin needs no check of its own).
    TokenHandler {
        handler: Arc<ClientAccessTokenHandler>,
        base_allowed: bool,
    },
    /// Any other chain.
    Chain,
}

impl HttpClient {
    pub(crate) fn new(
        name: String,
        base_address: Option<Url>,
        reqwest: reqwest::Client,
        client: ClientWithMiddleware,
        pipeline: Pipeline,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                name,
                resolver: Resolver::new(base_address),
                reqwest,
                client,
                pipeline,
            }),
        }
    }

    /// How requests go through the middleware, the client without middleware, and the whole chain.
    pub(crate) fn pipeline(&self) -> (&Pipeline, &reqwest::Client, &ClientWithMiddleware) {
        (
            &self.inner.pipeline,
            &self.inner.reqwest,
            &self.inner.client,
        )
    }

    /// The token handler, when it is the only middleware.
    pub(crate) fn token_handler(&self) -> Option<&Arc<ClientAccessTokenHandler>> {
        match &self.inner.pipeline {
            Pipeline::TokenHandler { handler, .. } => Some(handler),
            _ => None,
        }
    }

    /// The client's registered name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The base address relative paths are resolved against.
    pub fn base_address(&self) -> Option<&Url> {
        self.inner.resolver.base()
    }

    /// The full URL a path resolves to.
    pub fn resolve(&self, path: impl AsRef<str>) -> Result<Url, HttpError> {
        self.resolved(path.as_ref()).map(|resolved| resolved.url)
    }

    fn resolved(&self, path: &str) -> Result<Resolved, HttpError> {
        self.inner
            .resolver
            .resolve(path)
            .map_err(|reason| HttpError::invalid_url(self.inner.name.clone(), path, reason))
    }

    /// Whether both handles share one built client (one connection pool, one middleware chain).
    pub fn shares_pool_with(&self, other: &HttpClient) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// The underlying client with its middleware chain, for anything this type does not wrap.
    pub fn inner(&self) -> &ClientWithMiddleware {
        &self.inner.client
    }

    /// Starts a request with any method. See [the type docs](HttpClient#a-path-that-does-not-resolve)
    /// for a path that does not resolve.
    pub fn request(&self, method: Method, path: impl AsRef<str>) -> RequestBuilder {
        let path = path.as_ref();
        match self.inner.resolver.resolve(path) {
            Ok(resolved) => self.request_resolved(method, resolved),
            Err(reason) => RequestBuilder::invalid(
                self.clone(),
                InvalidUrl {
                    path: path.to_owned(),
                    reason,
                },
            ),
        }
    }

    /// Starts a request, failing now if the path does not resolve.
    pub fn try_request(
        &self,
        method: Method,
        path: impl AsRef<str>,
    ) -> Result<RequestBuilder, HttpError> {
        let resolved = self.resolved(path.as_ref())?;
        Ok(self.request_resolved(method, resolved))
    }

    #[inline]
    fn request_resolved(&self, method: Method, resolved: Resolved) -> RequestBuilder {
        RequestBuilder::new(
            self.clone(),
            self.inner.reqwest.request(method, resolved.url),
            Provenance {
                base: resolved.base_origin,
                shared_url: resolved.shared,
            },
        )
    }

    /// Starts a `GET` request.
    pub fn get(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::GET, path)
    }

    /// Starts a `POST` request.
    pub fn post(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::POST, path)
    }

    /// Starts a `PUT` request.
    pub fn put(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::PUT, path)
    }

    /// Starts a `PATCH` request.
    pub fn patch(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::PATCH, path)
    }

    /// Starts a `DELETE` request.
    pub fn delete(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::DELETE, path)
    }

    /// Starts a `HEAD` request.
    pub fn head(&self, path: impl AsRef<str>) -> RequestBuilder {
        self.request(Method::HEAD, path)
    }

    /// `GET`s `path` and returns the body as text, like .NET's `GetStringAsync`.
    ///
    /// A non-success status (anything but 2xx) is an [`HttpError::Status`] with the status and the
    /// (redacted) URL; the body of such a response is not read.
    #[doc(alias = "GetStringAsync")]
    pub async fn get_string(&self, path: impl AsRef<str>) -> Result<String, HttpError> {
        let resolved = self.resolved(path.as_ref())?;
        let shown = redacted(&resolved.url);
        let method = Method::GET;
        let response = self
            .request_resolved(method.clone(), resolved)
            .send()
            .await
            .map_err(|source| HttpError::Request {
                client: self.inner.name.clone(),
                method: method.clone(),
                url: shown.clone(),
                source: source.without_url(),
            })?;
        let status = response.status();
        if !status.is_success() {
            return Err(HttpError::Status {
                client: self.inner.name.clone(),
                method,
                url: shown,
                status,
            });
        }
        response.text().await.map_err(|source| HttpError::Body {
            client: self.inner.name.clone(),
            method,
            url: shown,
            source: source.without_url(),
        })
    }
}

impl fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClient")
            .field("name", &self.inner.name)
            .field("base_address", &self.base_address().map(redacted))
            .finish_non_exhaustive()
    }
}
