//! The `add_*` registration methods on [`ServiceCollection`]: the one place that ties the token
//! service, the HTTP client factory and the container together.
//!
//! ```no_run
//! use token_mgmt::prelude::*;
//!
//! let mut services = ServiceCollection::new();
//! services.add_access_token_management(|options| {
//!     options.client.clients.add("identityserver", TokenClientOptions {
//!         address: "https://demo.identityserver.io/connect/token".parse()?,
//!         client_id: "m2m.short".into(),
//!         client_secret: "secret".into(),
//!         ..Default::default()
//!     });
//!     Ok(())
//! });
//! services.add_client_access_token_client("client", None, |client| {
//!     client.base_address = Some("https://demo.identityserver.io/api/".parse()?);
//!     Ok(())
//! });
//! let provider = services.build()?;
//! let client = provider.get_required::<HttpClientFactory>()?.create_client("client")?;
//! # Ok::<(), BoxError>(())
//! ```

use std::sync::Arc;

use reqwest_middleware::Middleware;

use crate::BoxError;
use crate::di::{
    BuildProblem, Dependency, NamedService, ResolveError, ServiceCollection, ServiceProvider,
};
use crate::http::{
    HttpClient, HttpClientFactory, HttpClientFactoryBuilder, HttpClientOptions, HttpOptionsError,
};
use crate::tokens::{
    AccessTokenManagementOptions, AccessTokenManagementService,
    AccessTokenManagementServiceBuilder, CertificateError, ClientAccessTokenCache,
    ClientAccessTokenHandler, Clock, TlsClientCertificate,
};
use crate::tokens::{display_endpoint, is_loopback};

crate::inject_by_clone!(HttpClientFactory, AccessTokenManagementService);

/// `#[inject(client = "name")]` on an [`HttpClient`] field: the factory's client of that name.
#[diagnostic::do_not_recommend]
impl NamedService for HttpClient {
    fn from_provider_named(provider: &ServiceProvider, name: &str) -> Result<Self, ResolveError> {
        let factory = provider.get_required::<HttpClientFactory>()?;
        factory
            .create_client(name)
            .map_err(|error| ResolveError::named::<HttpClient>(name, error))
    }

    fn dependencies_named(name: &str) -> Vec<Dependency> {
        vec![Dependency::required::<HttpClientFactory>().with_name(name)]
    }
}

/// Builder-time record of what the `add_*` methods registered, checked by `build()`.
#[derive(Default)]
struct Registrations {
    token_management: bool,
    http_clients: bool,
    /// HTTP client name → token client name (`None`: the only registered token client).
    token_clients: Vec<(String, Option<String>)>,
    /// HTTP clients that present their token client's certificate to the API.
    presenting_certificates: Vec<String>,
}

/// Registration of token management and named HTTP clients on a [`ServiceCollection`]: the Rust
/// spelling of .NET's `AddAccessTokenManagement`, `AddHttpClient` and `AddClientAccessTokenClient`.
///
/// Configuration closures run immediately and may return an error (`?` works inside them); a failed
/// closure, invalid token client options and a token client name that names no registered client
/// are all reported together by [`ServiceCollection::build`].
pub trait TokenManagementServiceCollectionExt {
    /// Registers the [`AccessTokenManagementService`] configured by `configure`. Calling it again
    /// configures the same options further. The returned builder replaces its parts: the token cache
    /// (in memory by default), the HTTP client of token requests, the clock and the runtime.
    #[doc(alias(
        "AddClientCredentialsTokenManagement",
        "AddAccessTokenManagement",
        "AddClientAccessTokenManagement"
    ))]
    fn add_access_token_management<F>(&mut self, configure: F) -> AccessTokenManagementBuilder<'_>
    where
        F: FnOnce(&mut AccessTokenManagementOptions) -> Result<(), BoxError>;

    /// Registers a named HTTP client, available from [`HttpClientFactory::create_client`] and as an
    /// `#[inject(client = "name")]` field. Registering a name again configures the same client.
    #[doc(alias = "AddHttpClient")]
    fn add_http_client<F>(&mut self, name: &str, configure: F) -> HttpClientBuilder<'_>
    where
        F: FnOnce(&mut HttpClientOptions) -> Result<(), BoxError>;

    /// Registers a named HTTP client whose requests carry an access token of the token client
    /// `token_client_name` (`None`: the only registered token client), through a
    /// [`ClientAccessTokenHandler`] placed innermost in the middleware chain, so middleware added
    /// with [`HttpClientBuilder::with`] (retries, say) wrap it and every attempt gets a valid token.
    #[doc(alias(
        "AddClientCredentialsHttpClient",
        "AddClientAccessTokenClient",
        "AddClientAccessTokenHttpClient",
        "AddClientCredentialsTokenHandler",
        "AddClientAccessTokenHandler"
    ))]
    fn add_client_access_token_client<F>(
        &mut self,
        name: &str,
        token_client_name: Option<&str>,
        configure: F,
    ) -> HttpClientBuilder<'_>
    where
        F: FnOnce(&mut HttpClientOptions) -> Result<(), BoxError>;
}

impl TokenManagementServiceCollectionExt for ServiceCollection {
    fn add_access_token_management<F>(&mut self, configure: F) -> AccessTokenManagementBuilder<'_>
    where
        F: FnOnce(&mut AccessTokenManagementOptions) -> Result<(), BoxError>,
    {
        if let Err(error) = configure(self.extension_mut::<AccessTokenManagementOptions>()) {
            self.record_error("add_access_token_management", error);
        }
        if !std::mem::replace(
            &mut self.extension_mut::<Registrations>().token_management,
            true,
        ) {
            self.add_singleton_factory(|provider| {
                let options = provider
                    .extension::<AccessTokenManagementOptions>()
                    .cloned()
                    .unwrap_or_default();
                let mut builder = AccessTokenManagementService::builder(options);
                if let Some(parts) = provider.extension::<TokenServiceParts>() {
                    builder = parts.apply(builder);
                }
                Ok(builder.build()?)
            });
            self.add_build_check(check_token_options);
        }
        AccessTokenManagementBuilder { services: self }
    }

    fn add_http_client<F>(&mut self, name: &str, configure: F) -> HttpClientBuilder<'_>
    where
        F: FnOnce(&mut HttpClientOptions) -> Result<(), BoxError>,
    {
        let registration = self
            .extension_mut::<HttpClientFactoryBuilder>()
            .register(name);
        if let Err(error) = configure(registration.options_mut()) {
            self.record_error(format!("HTTP client `{name}`"), error);
        }
        if !std::mem::replace(
            &mut self.extension_mut::<Registrations>().http_clients,
            true,
        ) {
            self.add_singleton_factory(build_http_client_factory);
            self.add_build_check(check_http_clients);
        }
        HttpClientBuilder {
            services: self,
            name: name.to_owned(),
        }
    }

    fn add_client_access_token_client<F>(
        &mut self,
        name: &str,
        token_client_name: Option<&str>,
        configure: F,
    ) -> HttpClientBuilder<'_>
    where
        F: FnOnce(&mut HttpClientOptions) -> Result<(), BoxError>,
    {
        let token_clients = &mut self.extension_mut::<Registrations>().token_clients;
        token_clients.retain(|(http_client, _)| http_client != name);
        token_clients.push((name.to_owned(), token_client_name.map(str::to_owned)));
        self.add_http_client(name, configure)
    }
}

/// Parts of the token service replaced at registration.
#[derive(Default)]
struct TokenServiceParts {
    cache: Option<Arc<dyn ClientAccessTokenCache>>,
    http_client: Option<reqwest::Client>,
    clock: Option<Arc<dyn Clock>>,
    runtime: Option<tokio::runtime::Handle>,
}

impl TokenServiceParts {
    fn apply(
        &self,
        mut builder: AccessTokenManagementServiceBuilder,
    ) -> AccessTokenManagementServiceBuilder {
        if let Some(cache) = &self.cache {
            builder = builder.cache(Arc::clone(cache));
        }
        if let Some(client) = &self.http_client {
            builder = builder.http_client(client.clone());
        }
        if let Some(clock) = &self.clock {
            builder = builder.clock(Arc::clone(clock));
        }
        if let Some(runtime) = &self.runtime {
            builder = builder.runtime(runtime.clone());
        }
        builder
    }
}

/// The builder [`add_access_token_management`](TokenManagementServiceCollectionExt::add_access_token_management)
/// returns, to replace parts of the token service.
pub struct AccessTokenManagementBuilder<'a> {
    services: &'a mut ServiceCollection,
}

impl AccessTokenManagementBuilder<'_> {
    /// Keeps tokens in `cache` instead of the in-memory cache (.NET: "the cache implementation can be
    /// replaced").
    pub fn cache(self, cache: Arc<dyn ClientAccessTokenCache>) -> Self {
        self.services.extension_mut::<TokenServiceParts>().cache = Some(cache);
        self
    }

    /// Sends token requests with `client` (a custom CA, a proxy, a client certificate). It should not
    /// follow redirects.
    pub fn token_http_client(self, client: reqwest::Client) -> Self {
        self.services
            .extension_mut::<TokenServiceParts>()
            .http_client = Some(client);
        self
    }

    /// Reads the time from `clock` (tests: a [`ManualClock`](crate::tokens::ManualClock)).
    pub fn clock(self, clock: Arc<dyn Clock>) -> Self {
        self.services.extension_mut::<TokenServiceParts>().clock = Some(clock);
        self
    }

    /// Runs token requests on `runtime` (see [`AccessTokenManagementServiceBuilder::runtime`]).
    pub fn runtime(self, runtime: tokio::runtime::Handle) -> Self {
        self.services.extension_mut::<TokenServiceParts>().runtime = Some(runtime);
        self
    }
}

/// The builder [`add_http_client`](TokenManagementServiceCollectionExt::add_http_client) returns,
/// to add middleware to the named client (.NET's `IHttpClientBuilder`).
pub struct HttpClientBuilder<'a> {
    services: &'a mut ServiceCollection,
    name: String,
}

impl HttpClientBuilder<'_> {
    /// The client's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a middleware to the client: middleware run in the order they are added, all of them
    /// outside the token handler of an access token client.
    pub fn with<M: Middleware>(self, middleware: M) -> Self {
        self.with_arc(Arc::new(middleware))
    }

    /// Adds a shared middleware (see [`with`](Self::with)).
    pub fn with_arc(self, middleware: Arc<dyn Middleware>) -> Self {
        self.services
            .extension_mut::<HttpClientFactoryBuilder>()
            .register(self.name.as_str())
            .with_arc(middleware);
        self
    }

    /// Customises the underlying `reqwest::ClientBuilder` (TLS roots, proxies, HTTP/2 settings).
    pub fn configure_reqwest<F>(self, configure: F) -> Self
    where
        F: Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    {
        self.services
            .extension_mut::<HttpClientFactoryBuilder>()
            .register(self.name.as_str())
            .configure_reqwest(configure);
        self
    }

    /// Presents the token client's mTLS certificate (its
    /// [`TlsClientAuth`](crate::tokens::ClientAuthentication::TlsClientAuth) or
    /// [`SelfSignedTlsClientAuth`](crate::tokens::ClientAuthentication::SelfSignedTlsClientAuth)
    /// authentication) to the API as well: an API that accepts only certificate-bound access tokens
    /// (RFC 8705 section 3) checks that the token's `cnf.x5t#S256` is the certificate of the
    /// connection. Only for an access token client; `build()` reports a token client that has no
    /// certificate, or a certificate that does not load. The API's own server certificate is
    /// trusted as any other client's (add a private CA with
    /// [`configure_reqwest`](Self::configure_reqwest)).
    pub fn present_token_client_certificate(self) -> Self {
        let presenting = &mut self
            .services
            .extension_mut::<Registrations>()
            .presenting_certificates;
        if !presenting.contains(&self.name) {
            presenting.push(self.name.clone());
        }
        self
    }
}

/// The singleton factory of the [`HttpClientFactory`]: the registered clients, with a token handler
/// innermost in every access token client.
fn build_http_client_factory(provider: &ServiceProvider) -> Result<HttpClientFactory, BoxError> {
    let mut builder = provider
        .extension::<HttpClientFactoryBuilder>()
        .cloned()
        .unwrap_or_default();
    let registrations = provider.extension::<Registrations>();
    let token_clients = registrations
        .map(|registrations| registrations.token_clients.as_slice())
        .unwrap_or_default();
    let presenting = registrations
        .map(|registrations| registrations.presenting_certificates.as_slice())
        .unwrap_or_default();
    if !token_clients.is_empty() {
        let service = provider.get_required::<AccessTokenManagementService>()?;
        for (http_client, token_client) in token_clients {
            let token_client = match token_client {
                Some(name) => name.clone(),
                None => service.default_client_name().ok_or_else(|| {
                    format!("HTTP client `{http_client}` names no token client and there is not exactly one")
                })?,
            };
            let registration = builder.register(http_client.as_str());
            if presenting.contains(http_client) {
                let certificate = provider
                    .extension::<AccessTokenManagementOptions>()
                    .and_then(|options| options.client.clients.get(&token_client))
                    .and_then(|client| client.authentication.tls_client_certificate())
                    .ok_or_else(|| no_certificate(http_client, &token_client))?;
                let present = present_certificate(certificate)
                    .map_err(|source| certificate_problem(http_client, &token_client, source))?;
                registration.configure_reqwest(present);
            }
            let mut handler = ClientAccessTokenHandler::new(
                AccessTokenManagementService::clone(&service),
                token_client,
            );
            let options = registration.options();
            for origin in options.base_address.iter().chain(&options.allowed_origins) {
                handler = handler.with_allowed_origin(origin);
            }
            registration.set_token_handler(handler);
        }
    }
    Ok(builder.build())
}

/// Every invalid token client option, each naming its client.
fn check_token_options(services: &ServiceCollection) -> Vec<BuildProblem> {
    services
        .extension::<AccessTokenManagementOptions>()
        .map(|options| {
            options
                .client
                .clients
                .problems()
                .into_iter()
                .map(|problem| BuildProblem::Configuration {
                    context: "add_access_token_management".to_owned(),
                    source: Box::new(problem),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Access token clients whose token client does not exist, and `#[inject(client = "...")]` fields
/// naming an HTTP client that was never registered.
fn check_http_clients(services: &ServiceCollection) -> Vec<BuildProblem> {
    let mut problems = Vec::new();
    let token_clients = services
        .extension::<Registrations>()
        .map(|registrations| registrations.token_clients.as_slice())
        .unwrap_or_default();
    let options = services.extension::<AccessTokenManagementOptions>();
    let registered: Vec<&str> = options
        .map(|options| options.client.clients.names().collect())
        .unwrap_or_default();
    for (http_client, token_client) in token_clients {
        let message = match token_client {
            _ if options.is_none() => Some(format!(
                "HTTP client `{http_client}` uses access tokens, but add_access_token_management was never called"
            )),
            Some(name) if !registered.contains(&name.as_str()) => Some(format!(
                "HTTP client `{http_client}` uses token client `{name}`, which is not registered (registered: {})",
                list(&registered)
            )),
            None if registered.len() != 1 => Some(format!(
                "HTTP client `{http_client}` names no token client, which needs exactly one registered token client (registered: {})",
                list(&registered)
            )),
            _ => None,
        };
        problems.extend(message.map(BuildProblem::custom));
    }

    let presenting = services
        .extension::<Registrations>()
        .map(|registrations| registrations.presenting_certificates.as_slice())
        .unwrap_or_default();
    for http_client in presenting {
        let Some((_, token_client)) = token_clients.iter().find(|(name, _)| name == http_client)
        else {
            problems.push(BuildProblem::custom(format!(
                "HTTP client `{http_client}` presents its token client's certificate, but it is not an access token client \
                 (register it with add_client_access_token_client)"
            )));
            continue;
        };
        let token_client = match (token_client, registered.as_slice()) {
            (Some(name), _) => name.as_str(),
            (None, [only]) => only,
            // Reported above: no token client to take a certificate from.
            (None, _) => continue,
        };
        let Some(client) = options.and_then(|options| options.client.clients.get(token_client))
        else {
            continue;
        };
        let problem = match client.authentication.tls_client_certificate() {
            None => Some(no_certificate(http_client, token_client)),
            Some(certificate) => present_certificate(certificate)
                .err()
                .map(|source| certificate_problem(http_client, token_client, source)),
        };
        problems.extend(problem.map(BuildProblem::custom));
    }

    let http_clients = services.extension::<HttpClientFactoryBuilder>();
    for (http_client, _) in token_clients {
        let options = http_clients
            .and_then(|clients| clients.registration(http_client))
            .map(|registration| registration.options());
        problems.extend(options.and_then(|options| insecure_address(http_client, options)));
        let has_origin = options.is_some_and(|options| {
            options.base_address.is_some() || !options.allowed_origins.is_empty()
        });
        if !has_origin {
            problems.push(BuildProblem::custom(format!(
                "HTTP client `{http_client}` sends access tokens but has no base address and no allowed_origins: \
                 set one, so that its tokens go only to the API they are meant for"
            )));
        }
    }
    for (required_by, dependency) in services.declared_dependencies() {
        let Some(name) = dependency.name() else {
            continue;
        };
        if dependency.type_id() != std::any::TypeId::of::<HttpClientFactory>() {
            continue;
        }
        if !http_clients.is_some_and(|clients| clients.contains(name)) {
            let names: Vec<&str> = http_clients
                .map(|clients| clients.names().collect())
                .unwrap_or_default();
            problems.push(BuildProblem::custom(format!(
                "{required_by} injects HTTP client `{name}`, which is not registered (registered: {})",
                list(&names)
            )));
        }
    }
    problems
}

/// The `reqwest::ClientBuilder` customisation that presents `certificate`.
#[cfg(feature = "rustls")]
fn present_certificate(
    certificate: &TlsClientCertificate,
) -> Result<
    impl Fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder + Send + Sync + 'static,
    CertificateError,
> {
    let identity = certificate.identity()?;
    Ok(move |builder: reqwest::ClientBuilder| builder.identity(identity.clone()))
}

#[cfg(not(feature = "rustls"))]
fn present_certificate(
    _: &TlsClientCertificate,
) -> Result<fn(reqwest::ClientBuilder) -> reqwest::ClientBuilder, CertificateError> {
    Err(CertificateError::TlsUnavailable)
}

fn no_certificate(http_client: &str, token_client: &str) -> String {
    format!(
        "HTTP client `{http_client}` presents the certificate of token client `{token_client}`, \
         whose authentication is not tls_client_auth or self_signed_tls_client_auth"
    )
}

fn certificate_problem(http_client: &str, token_client: &str, error: CertificateError) -> String {
    format!(
        "HTTP client `{http_client}` cannot present the certificate of token client `{token_client}`: {}",
        crate::hosting::error_chain(&error)
    )
}

/// The https rule of an access token client: its base address and allowed origins are `https://`,
/// or `http://` to a loopback host, unless it sets `allow_insecure_http`.
fn insecure_address(name: &str, options: &HttpClientOptions) -> Option<BuildProblem> {
    if options.allow_insecure_http {
        return None;
    }
    let insecure = options
        .base_address
        .iter()
        .chain(&options.allowed_origins)
        .find(|url| url.scheme() == "http" && !url.host().is_some_and(|h| is_loopback(&h)))?;
    Some(BuildProblem::Configuration {
        context: "add_client_access_token_client".to_owned(),
        source: Box::new(HttpOptionsError::InsecureAddress {
            client: name.to_owned(),
            address: display_endpoint(insecure),
        }),
    })
}

fn list(names: &[&str]) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}
