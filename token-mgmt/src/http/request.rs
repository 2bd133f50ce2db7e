//! [`RequestBuilder`]: a request of an [`HttpClient`], built like reqwest's and sent through the
//! client's middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Extensions;
use http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use pin_project_lite::pin_project;
use reqwest::{Body, Request, Response, StatusCode, Version};
use serde::Serialize;
use url::Url;

use super::client::{HttpClient, Pipeline};
use super::error::{HttpError, InvalidUrlReason};
use super::retry;
use crate::tokens::{Authorized, ClientAccessToken, Replay};

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
    provenance: Provenance,
}

/// Where the request URL came from, when it came from the client's base address.
#[derive(Clone, Default)]
pub(crate) struct Provenance {
    /// The URL is a plain path appended to the base address: it has the base address's origin.
    pub(crate) base: bool,
    /// The resolved paths' shared copy of the URL (as resolved: `query` may have changed the
    /// request's since).
    pub(crate) shared_url: Option<Arc<Url>>,
}

/// A path that did not resolve, kept until `send()` (or `build()`) reports it.
#[derive(Clone)]
pub(crate) struct InvalidUrl {
    pub(crate) path: String,
    pub(crate) reason: InvalidUrlReason,
}

impl RequestBuilder {
    /// A request to a resolved URL.
    #[inline]
    pub(crate) fn new(
        client: HttpClient,
        request: reqwest::RequestBuilder,
        provenance: Provenance,
    ) -> Self {
        Self {
            client,
            request: Ok(request),
            extensions: Extensions::new(),
            provenance,
        }
    }

    /// A request whose path did not resolve: `send()` and `build()` report it.
    pub(crate) fn invalid(client: HttpClient, invalid: InvalidUrl) -> Self {
        Self {
            client,
            request: Err(Box::new(invalid)),
            extensions: Extensions::new(),
            provenance: Provenance::default(),
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
        build(&self.client, self.request)
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
            provenance: self.provenance.clone(),
        })
    }

    /// Runs the client's middleware on the request, then sends it.
    ///
    /// Nothing happens until the future is polled (the token is read then, not when `send` is
    /// called).
    ///
    /// # Errors
    ///
    /// As `reqwest_middleware::RequestBuilder::send`: `Error::Reqwest` for what reqwest reports
    /// (connection, timeout, redirect loop), `Error::Middleware` for what a middleware refuses (a
    /// [`TokenError`](crate::tokens::TokenError) when no token can be had, a
    /// [`ForeignOriginError`](crate::tokens::ForeignOriginError), an [`HttpError::InvalidUrl`]).
    #[inline]
    pub fn send(self) -> impl Future<Output = reqwest_middleware::Result<Response>> + Send {
        SendRequest {
            state: State::Start { builder: self },
            execute: |client: &reqwest::Client, request| client.execute(request),
        }
    }
}

type BoxedResponse =
    Pin<Box<dyn Future<Output = reqwest_middleware::Result<Response>> + Send + 'static>>;

pin_project! {
    /// The future of [`RequestBuilder::send`], written out rather than `async` so that it stays
    /// small (reqwest's own future is a pointer) and the common case, a token at hand, takes no
    /// allocation of its own: on the path of every request, an `async fn` holding the builder, the
    /// request, the replay copy and the response was 1.3 KB, copied several times per request.
    /// `P` is reqwest's (unnameable) future, made by `execute`.
    struct SendRequest<P, E> {
        #[pin]
        state: State<P>,
        execute: E,
    }
}

pin_project! {
    #[project = StateProjection]
    #[project_replace = StateReplace]
    enum State<P> {
        Start { builder: RequestBuilder },
        /// reqwest is sending. `token` is set when the token handler authorized the request
        /// itself (a 401 needs it); `replay` is what to send again after a 401 or a refusal
        /// (`None` for a streaming body); `resent` counts the refusals sent again.
        Sending {
            #[pin]
            pending: P,
            client: HttpClient,
            token: Option<ClientAccessToken>,
            replay: Option<Replay>,
            extensions: Extensions,
            resent: u8,
        },
        /// Any other case: the middleware chain, the token handler waiting for a token, a 401.
        Boxed { future: BoxedResponse },
        Done,
    }
}

impl<P, E> Future for SendRequest<P, E>
where
    P: Future<Output = reqwest::Result<Response>>,
    E: Fn(&reqwest::Client, Request) -> P,
{
    type Output = reqwest_middleware::Result<Response>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProjection::Start { .. } => {
                    let StateReplace::Start { builder } =
                        this.state.as_mut().project_replace(State::Done)
                    else {
                        unreachable!("the state was Start")
                    };
                    if let Err(error) = start(builder, this.execute, this.state.as_mut()) {
                        return Poll::Ready(Err(error));
                    }
                }
                StateProjection::Sending {
                    mut pending,
                    client,
                    token,
                    replay,
                    resent,
                    ..
                } => {
                    let response = ready!(pending.as_mut().poll(cx));
                    let resend = match &response {
                        Err(error) if *resent < retry::MAX_RESENDS && retry::is_refused(error) => {
                            replay.as_ref().and_then(Replay::to_request)
                        }
                        _ => None,
                    };
                    if let Some(mut request) = resend {
                        if let Some(token) = token {
                            request
                                .headers_mut()
                                .insert(AUTHORIZATION, token.authorization_header());
                        }
                        *resent += 1;
                        retry::log_resend(client.name(), *resent);
                        pending.set((this.execute)(client.pipeline().1, request));
                        continue;
                    }
                    // Every response but a 401 to a request the handler authorized is returned as
                    // it is: the state is dropped in place rather than moved out.
                    let unauthorized = matches!(&response, Ok(response)
                        if response.status() == StatusCode::UNAUTHORIZED && token.is_some());
                    if !unauthorized {
                        this.state.set(State::Done);
                        return Poll::Ready(response.map_err(reqwest_middleware::Error::Reqwest));
                    }
                    let StateReplace::Sending {
                        client,
                        token,
                        replay,
                        extensions,
                        ..
                    } = this.state.as_mut().project_replace(State::Done)
                    else {
                        unreachable!("the state was Sending")
                    };
                    let response = response.map_err(reqwest_middleware::Error::Reqwest)?;
                    match (token, client.token_handler()) {
                        (Some(token), Some(handler)) => {
                            let authorized = Authorized { token, replay };
                            let handler = Arc::clone(handler);
                            let future = Box::pin(async move {
                                let mut extensions = extensions;
                                handler
                                    .after_unauthorized(
                                        &client,
                                        authorized.rejected(response),
                                        handler.parameters(),
                                        &mut extensions,
                                        &mut true,
                                    )
                                    .await
                            });
                            this.state.set(State::Boxed { future });
                        }
                        _ => return Poll::Ready(Ok(response)),
                    }
                }
                StateProjection::Boxed { future } => {
                    let response = ready!(future.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(response);
                }
                StateProjection::Done => panic!("`RequestBuilder::send` polled after it completed"),
            }
        }
    }
}

/// The first step of sending: build the request, then let reqwest send it (with the token when the
/// handler has one at hand), or box whatever has to wait. The next state is written in place.
#[inline]
fn start<P>(
    builder: RequestBuilder,
    execute: &impl Fn(&reqwest::Client, Request) -> P,
    mut state: Pin<&mut State<P>>,
) -> reqwest_middleware::Result<()> {
    let RequestBuilder {
        client,
        request,
        mut extensions,
        provenance,
    } = builder;
    let mut request = build(&client, request)?;
    let (pipeline, reqwest, _) = client.pipeline();
    let (token, replay) = match pipeline {
        Pipeline::Direct => (None, Replay::of(&request, provenance.shared_url)),
        Pipeline::TokenHandler {
            handler,
            base_allowed,
        } => {
            match handler.authorize_now(
                &mut request,
                &extensions,
                provenance.base && *base_allowed,
                provenance.shared_url,
            )? {
                Some(Authorized { token, replay }) => (Some(token), replay),
                None => {
                    let handler = Arc::clone(handler);
                    let future = Box::pin(async move {
                        handler
                            .handle_request(request, &mut extensions, &client)
                            .await
                    });
                    state.set(State::Boxed { future });
                    return Ok(());
                }
            }
        }
        Pipeline::Chain => {
            let future = Box::pin(async move {
                let chain = client.pipeline().2;
                chain
                    .execute_with_extensions(request, &mut extensions)
                    .await
            });
            state.set(State::Boxed { future });
            return Ok(());
        }
    };
    let pending = execute(reqwest, request);
    state.set(State::Sending {
        pending,
        client,
        token,
        replay,
        extensions,
        resent: 0,
    });
    Ok(())
}

/// The request, or why there is none: the path did not resolve, or reqwest could not build it.
#[inline]
fn build(
    client: &HttpClient,
    request: Result<reqwest::RequestBuilder, Box<InvalidUrl>>,
) -> reqwest_middleware::Result<Request> {
    match request {
        Ok(request) => request.build().map_err(reqwest_middleware::Error::Reqwest),
        Err(invalid) => Err(reqwest_middleware::Error::middleware(
            HttpError::invalid_url(client.name().to_owned(), &invalid.path, invalid.reason),
        )),
    }
}

impl fmt::Debug for RequestBuilder {
    /// The client's name only: the URL's query and the headers may carry credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequestBuilder")
            .field("client", &self.client.name())
            .finish_non_exhaustive()
    }
}
