//! [`HttpClientFactoryBuilder`] and [`HttpClientFactory`]: named clients, built once each.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use reqwest_middleware::ClientWithMiddleware;

use super::client::{HttpClient, Pipeline};
use super::error::CreateClientError;
use super::registration::HttpClientRegistration;
use super::retry::ResendRefused;

/// Collects the named client registrations; [`build`](Self::build) freezes them into a factory.
///
/// `Default + Send + Sync`, so a service collection can hold it as builder-time state.
#[derive(Debug, Default, Clone)]
pub struct HttpClientFactoryBuilder {
    registrations: BTreeMap<String, HttpClientRegistration>,
}

impl HttpClientFactoryBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The registration of `name`, created with default options if it does not exist yet.
    ///
    /// Registering a name again returns the existing registration, so configurations accumulate
    /// (like repeated `AddHttpClient` calls in .NET).
    pub fn register(&mut self, name: impl Into<String>) -> &mut HttpClientRegistration {
        let name = name.into();
        self.registrations
            .entry(name.clone())
            .or_insert_with(|| HttpClientRegistration::new(name))
    }

    /// The registration of `name`, if any.
    pub fn registration(&self, name: &str) -> Option<&HttpClientRegistration> {
        self.registrations.get(name)
    }

    /// The registration of `name` to change it, if any.
    pub fn registration_mut(&mut self, name: &str) -> Option<&mut HttpClientRegistration> {
        self.registrations.get_mut(name)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.registrations.contains_key(name)
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.registrations.keys().map(String::as_str)
    }

    /// Freezes the registrations. Nothing is built yet: each client is built on its first
    /// `create_client`.
    pub fn build(self) -> HttpClientFactory {
        let clients = self
            .registrations
            .into_iter()
            .map(|(name, registration)| {
                (
                    name,
                    Slot {
                        registration,
                        built: OnceLock::new(),
                        building: Mutex::new(()),
                    },
                )
            })
            .collect();
        HttpClientFactory {
            inner: Arc::new(Inner { clients }),
        }
    }
}

/// Makes named [`HttpClient`]s (the counterpart of .NET's `IHttpClientFactory`).
///
/// Cloning is cheap (one `Arc`). Each name's `reqwest::Client` and middleware chain is built once, on
/// the first [`create_client`](Self::create_client) of that name, even when many threads ask at the
/// same time; every later call returns a handle on the same client, so all of them share one
/// connection pool.
#[derive(Clone)]
#[doc(alias = "IHttpClientFactory")]
pub struct HttpClientFactory {
    inner: Arc<Inner>,
}

struct Inner {
    clients: BTreeMap<String, Slot>,
}

struct Slot {
    registration: HttpClientRegistration,
    built: OnceLock<HttpClient>,
    /// Held while building, so a name is built once; a failed build is not cached and is retried.
    building: Mutex<()>,
}

impl HttpClientFactory {
    /// A builder to register named clients.
    pub fn builder() -> HttpClientFactoryBuilder {
        HttpClientFactoryBuilder::new()
    }

    /// The client registered as `name`.
    ///
    /// # Errors
    ///
    /// [`CreateClientError::UnknownClient`] (listing the registered names) when no client has that
    /// name; [`CreateClientError::Build`] when reqwest cannot build the client.
    #[doc(alias = "CreateClient")]
    pub fn create_client(&self, name: &str) -> Result<HttpClient, CreateClientError> {
        let slot =
            self.inner
                .clients
                .get(name)
                .ok_or_else(|| CreateClientError::UnknownClient {
                    name: name.to_owned(),
                    registered: self.names().map(str::to_owned).collect(),
                })?;
        if let Some(client) = slot.built.get() {
            return Ok(client.clone());
        }
        // A poisoned lock only means another build panicked; the OnceLock is still consistent.
        let _guard = slot
            .building
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = slot.built.get() {
            return Ok(client.clone());
        }
        let client = build_client(&slot.registration)?;
        Ok(slot.built.get_or_init(|| client).clone())
    }

    /// The registered names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.inner.clients.keys().map(String::as_str)
    }

    /// Whether `name` is registered.
    pub fn contains(&self, name: &str) -> bool {
        self.inner.clients.contains_key(name)
    }

    /// The registration of `name` (options and middleware), if any.
    pub fn registration(&self, name: &str) -> Option<&HttpClientRegistration> {
        self.inner.clients.get(name).map(|slot| &slot.registration)
    }
}

fn build_client(registration: &HttpClientRegistration) -> Result<HttpClient, CreateClientError> {
    let name = registration.name();
    let reqwest_client =
        registration
            .reqwest_builder()
            .build()
            .map_err(|source| CreateClientError::Build {
                name: name.to_owned(),
                source,
            })?;
    let mut chain = registration.chain();
    let pipeline = match registration.sole_token_handler() {
        Some(handler) => Pipeline::TokenHandler {
            handler: Arc::clone(handler),
            base_allowed: registration
                .options()
                .base_address
                .as_ref()
                .is_some_and(|base| handler.allows(base)),
        },
        None if chain.is_empty() => Pipeline::Direct,
        None => Pipeline::Chain,
    };
    // Last, so that a request sent through the chain is resent as reqwest's own policy would.
    chain.push(Arc::new(ResendRefused(name.to_owned())));
    let client = ClientWithMiddleware::new(reqwest_client.clone(), chain);
    tracing::debug!(client = name, "built HTTP client");
    Ok(HttpClient::new(
        name.to_owned(),
        registration.options().base_address.clone(),
        reqwest_client,
        client,
        pipeline,
    ))
}

impl Default for HttpClientFactory {
    /// A factory with no registered client.
    fn default() -> Self {
        HttpClientFactoryBuilder::new().build()
    }
}

impl fmt::Debug for HttpClientFactory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpClientFactory")
            .field("clients", &self.names().collect::<Vec<_>>())
            .finish()
    }
}
