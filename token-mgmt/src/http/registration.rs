//! [`HttpClientRegistration`]: one named client's options and middleware, before the factory is built.

use std::fmt;
use std::sync::Arc;

use reqwest_middleware::Middleware;

use super::options::HttpClientOptions;
use crate::tokens::ClientAccessTokenHandler;

type ConfigureBuilder = dyn Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync;

/// The registration of one named client in an
/// [`HttpClientFactoryBuilder`](super::HttpClientFactoryBuilder).
///
/// The middleware chain of the built client is, from outermost to innermost: every middleware
/// added with [`with`](Self::with) / [`with_arc`](Self::with_arc) in the order they were added, then
/// the [innermost](Self::set_innermost) middleware if one is set, then the network.
#[derive(Clone)]
pub struct HttpClientRegistration {
    name: String,
    options: HttpClientOptions,
    middleware: Vec<Arc<dyn Middleware>>,
    innermost: Option<Arc<dyn Middleware>>,
    /// The innermost middleware when it is a token handler set with `set_token_handler`.
    token_handler: Option<Arc<ClientAccessTokenHandler>>,
    configure_builder: Vec<Arc<ConfigureBuilder>>,
}

impl HttpClientRegistration {
    pub(crate) fn new(name: String) -> Self {
        Self {
            name,
            options: HttpClientOptions::default(),
            middleware: Vec::new(),
            innermost: None,
            token_handler: None,
            configure_builder: Vec::new(),
        }
    }

    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The client's options.
    pub fn options(&self) -> &HttpClientOptions {
        &self.options
    }

    /// The client's options, to change them.
    pub fn options_mut(&mut self) -> &mut HttpClientOptions {
        &mut self.options
    }

    /// Replaces the client's options.
    pub fn set_options(&mut self, options: HttpClientOptions) -> &mut Self {
        self.options = options;
        self
    }

    /// Runs `configure` on the client's options (like .NET's `configureClient` callback).
    pub fn configure(&mut self, configure: impl FnOnce(&mut HttpClientOptions)) -> &mut Self {
        configure(&mut self.options);
        self
    }

    /// Appends a middleware: it runs inside every middleware added before it, and outside every
    /// middleware added after it and the innermost one.
    pub fn with<M: Middleware>(&mut self, middleware: M) -> &mut Self {
        self.with_arc(Arc::new(middleware))
    }

    /// Appends a shared middleware (see [`with`](Self::with)).
    pub fn with_arc(&mut self, middleware: Arc<dyn Middleware>) -> &mut Self {
        self.middleware.push(middleware);
        self
    }

    /// Sets the innermost middleware: it always runs last, just before the request goes to the
    /// network, whatever order `with` and `set_innermost` are called in. Meant for a handler that must
    /// see every attempt of the request (a token handler, below any retry middleware). Returns the
    /// middleware it replaces, if any.
    pub fn set_innermost(
        &mut self,
        middleware: Arc<dyn Middleware>,
    ) -> Option<Arc<dyn Middleware>> {
        self.token_handler = None;
        self.innermost.replace(middleware)
    }

    /// Sets a token handler as the innermost middleware (see [`set_innermost`](Self::set_innermost)).
    /// Same chain as `set_innermost(Arc::new(handler))`, but when the handler is the client's only
    /// middleware, requests call it directly rather than through reqwest-middleware's boxed chain.
    /// Returns the innermost middleware it replaces, if any.
    pub fn set_token_handler(
        &mut self,
        handler: ClientAccessTokenHandler,
    ) -> Option<Arc<dyn Middleware>> {
        let handler = Arc::new(handler);
        let replaced = self.set_innermost(Arc::clone(&handler) as Arc<dyn Middleware>);
        self.token_handler = Some(handler);
        replaced
    }

    /// The token handler that can be called directly: set with
    /// [`set_token_handler`](Self::set_token_handler) and the only middleware.
    pub(crate) fn sole_token_handler(&self) -> Option<&Arc<ClientAccessTokenHandler>> {
        self.token_handler
            .as_ref()
            .filter(|_| self.middleware.is_empty())
    }

    /// The innermost middleware, if one is set.
    pub fn innermost(&self) -> Option<&Arc<dyn Middleware>> {
        self.innermost.as_ref()
    }

    /// How many middleware the built chain has (including the innermost one).
    pub fn middleware_len(&self) -> usize {
        self.middleware.len() + usize::from(self.innermost.is_some())
    }

    /// Adds a customisation of the underlying `reqwest::ClientBuilder` (TLS roots, proxies, HTTP/2
    /// settings, ...). It runs after the options are applied, so it can override them. Customisations
    /// run in the order they were added. The builder comes with reqwest's retry policy turned off:
    /// the client resends refused requests itself (see [the module docs](super#refused-requests)).
    pub fn configure_reqwest<F>(&mut self, configure: F) -> &mut Self
    where
        F: Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    {
        self.configure_builder.push(Arc::new(configure));
        self
    }

    /// The middleware chain, outermost first.
    pub(crate) fn chain(&self) -> Vec<Arc<dyn Middleware>> {
        self.middleware
            .iter()
            .chain(self.innermost.iter())
            .cloned()
            .collect()
    }

    /// A `reqwest::ClientBuilder` with the options and customisations applied.
    pub(crate) fn reqwest_builder(&self) -> reqwest::ClientBuilder {
        let mut builder = super::retry::without_reqwest_retries(
            crate::tls::client_builder().default_headers(self.options.sanitized_default_headers()),
        );
        if let Some(timeout) = self.options.timeout {
            builder = builder.timeout(timeout);
        }
        if let Some(connect_timeout) = self.options.connect_timeout {
            builder = builder.connect_timeout(connect_timeout);
        }
        self.configure_builder
            .iter()
            .fold(builder, |builder, configure| configure(builder))
    }
}

impl fmt::Debug for HttpClientRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientRegistration")
            .field("name", &self.name)
            .field("options", &self.options)
            .field("middleware", &self.middleware.len())
            .field("innermost", &self.innermost.is_some())
            .field("configure_reqwest", &self.configure_builder.len())
            .finish()
    }
}
