//! [`RequestBuilder`]: a request of an [`HttpClient`], built like reqwest's and sent through the
//! client's middleware.

use std::fmt;
use std::time::Duration;

use http::Extensions;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Body, Request, Response, StatusCode, Version};
use serde::Serialize;

use super::client::{HttpClient, Pipeline};
use super::error::{HttpError, InvalidUrlReason};

/// A request being built by an [`HttpClient`] ([`get`](HttpClient::get), [`post`](HttpClient::post),
/// [`request`](HttpClient::request), ...).
///
/// The same methods as `reqwest::RequestBuilder` (and `reqwest_middleware::RequestBuilder`, whose
/// `with_extension` it has too); [`send`](Self::send) runs the client's middleware, then sends.
///
/// A request whose path did not resolve to a URL is never sent: `send()` fails with
/// `reqwest_middleware::Error::Middleware` holding the [`HttpError::InvalidUrl`] (see
/// [`HttpClient`'s docs](HttpClient#a-path-that-does-not-resolve)).
#[must_use = "a RequestBuilder does nothing until it is sent"]
pub struct RequestBuilder {
    client: HttpClient,
    request: Result<reqwest::RequestBuilder, Box<InvalidUrl>>,
    extensions: Extensions,
}

/// A path that did not resolve, kept until `send()` (or `build()`) reports it.
#[derive(Clone)]
pub(crate) struct InvalidUrl {
    pub(crate) path: String,
    pub(crate) reason: InvalidUrlReason,
}

impl RequestBuilder {
    pub(crate) fn new(
        client: HttpClient,
        request: Result<reqwest::RequestBuilder, InvalidUrl>,
    ) -> Self {
        Self {
            client,
            request: request.map_err(Box::new),
            extensions: Extensions::new(),
        }
    }

    fn map(mut self, f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder) -> Self {
        self.request = self.request.map(f);
        self
    }

    /// Adds a header.
    pub fn header<K, V>(self, key: K, value: V) -> Self
    where
        HeaderName: TryFrom<K>,
        <HeaderName as TryFrom<K>>::Error: Into<http::Error>,
        HeaderValue: TryFrom<V>,
        <HeaderValue as TryFrom<V>>::Error: Into<http::Error>,
    {
        self.map(|request| request.header(key, value))
    }

    /// Adds headers, merged into the ones already set.
    pub fn headers(self, headers: HeaderMap) -> Self {
        self.map(|request| request.headers(headers))
    }

    /// Sets HTTP basic authentication. On an access token client the token handler replaces
    /// `Authorization`.
    pub fn basic_auth<U: fmt::Display, P: fmt::Display>(
        self,
        username: U,
        password: Option<P>,
    ) -> Self {
        self.map(|request| request.basic_auth(username, password))
    }

    /// Sets bearer authentication. On an access token client the token handler replaces
    /// `Authorization`.
    pub fn bearer_auth<T: fmt::Display>(self, token: T) -> Self {
        self.map(|request| request.bearer_auth(token))
    }

    /// Sets the body.
    pub fn body<T: Into<Body>>(self, body: T) -> Self {
        self.map(|request| request.body(body))
    }

    /// Sets a timeout for this request only, instead of the client's.
    pub fn timeout(self, timeout: Duration) -> Self {
        self.map(|request| request.timeout(timeout))
    }

    /// Appends query parameters (serialized with `serde_urlencoded`).
    pub fn query<T: Serialize + ?Sized>(self, query: &T) -> Self {
        self.map(|request| request.query(query))
    }

    /// Sets the HTTP version.
    pub fn version(self, version: Version) -> Self {
        self.map(|request| request.version(version))
    }

    /// Sets a form body (`application/x-www-form-urlencoded`).
    pub fn form<T: Serialize + ?Sized>(self, form: &T) -> Self {
        self.map(|request| request.form(form))
    }

    /// Sets a JSON body (`application/json`).
    pub fn json<T: Serialize + ?Sized>(self, json: &T) -> Self {
        self.map(|request| request.json(json))
    }

    /// Adds a request extension the middleware can read, such as
    /// [`SkipAccessToken`](crate::tokens::SkipAccessToken) or
    /// [`TokenRequestParameters`](crate::tokens::TokenRequestParameters).
    pub fn with_extension<T: Clone + Send + Sync + 'static>(mut self, extension: T) -> Self {
        self.extensions.insert(extension);
        self
    }

    /// The request extensions, to change them.
    pub fn extensions(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Builds the request without sending it (the extensions stay with the builder).
    ///
    /// # Errors
    ///
    /// `reqwest_middleware::Error::Middleware` holding [`HttpError::InvalidUrl`] when the path did
    /// not resolve; `reqwest_middleware::Error::Reqwest` when reqwest cannot build it (an invalid
    /// header, a body that cannot be serialized).
    pub fn build(self) -> reqwest_middleware::Result<Request> {
        match self.request {
            Ok(request) => request.build().map_err(reqwest_middleware::Error::Reqwest),
            Err(invalid) => Err(invalid_url(&self.client, *invalid)),
        }
    }

    /// A copy of this builder, or `None` if its body is a stream (which cannot be copied).
    pub fn try_clone(&self) -> Option<Self> {
        let request = match &self.request {
            Ok(request) => Ok(request.try_clone()?),
            Err(invalid) => Err(invalid.clone()),
        };
        Some(Self {
            client: self.client.clone(),
            request,
            extensions: self.extensions.clone(),
        })
    }

    /// Runs the client's middleware on the request, then sends it.
    ///
    /// # Errors
    ///
    /// As `reqwest_middleware::RequestBuilder::send`: `Error::Reqwest` for what reqwest reports
    /// (connection, timeout, redirect loop), `Error::Middleware` for what a middleware refuses (a
    /// [`TokenError`](crate::tokens::TokenError) when no token can be had, a
    /// [`ForeignOriginError`](crate::tokens::ForeignOriginError), an [`HttpError::InvalidUrl`]).
    pub async fn send(self) -> reqwest_middleware::Result<Response> {
        let Self {
            client,
            request,
            mut extensions,
        } = self;
        let mut request = match request {
            Ok(request) => request
                .build()
                .map_err(reqwest_middleware::Error::Reqwest)?,
            Err(invalid) => return Err(invalid_url(&client, *invalid)),
        };
        let (pipeline, reqwest, chain) = client.pipeline();
        match pipeline {
            Pipeline::Direct => reqwest
                .execute(request)
                .await
                .map_err(reqwest_middleware::Error::Reqwest),
            // Most requests: the token is at hand, the request goes out from this future (no
            // boxed future per middleware); the rest of the handler runs only on a 401.
            Pipeline::TokenHandler(handler) => {
                let Some(authorized) = handler.authorize_now(&mut request, &extensions)? else {
                    return Box::pin(handler.handle_request(request, &mut extensions, reqwest))
                        .await;
                };
                let response = reqwest
                    .execute(request)
                    .await
                    .map_err(reqwest_middleware::Error::Reqwest)?;
                if response.status() != StatusCode::UNAUTHORIZED {
                    return Ok(response);
                }
                Box::pin(handler.after_unauthorized(
                    reqwest,
                    authorized.rejected(response),
                    handler.parameters(),
                    &mut extensions,
                    &mut true,
                ))
                .await
            }
            Pipeline::Chain => {
                chain
                    .execute_with_extensions(request, &mut extensions)
                    .await
            }
        }
    }
}

fn invalid_url(client: &HttpClient, invalid: InvalidUrl) -> reqwest_middleware::Error {
    reqwest_middleware::Error::middleware(HttpError::invalid_url(
        client.name().to_owned(),
        &invalid.path,
        invalid.reason,
    ))
}

impl fmt::Debug for RequestBuilder {
    /// The client's name only: the URL's query and the headers may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("client", &self.client.name())
            .finish_non_exhaustive()
    }
}
