//! Named HTTP clients, like .NET's `IHttpClientFactory`.
//!
//! Register each client once by name with its [`HttpClientOptions`] (base address, default headers,
//! timeout) and an ordered list of [`reqwest_middleware::Middleware`]s in an
//! [`HttpClientFactoryBuilder`], build an [`HttpClientFactory`], then ask it for clients:
//!
//! ```no_run
//! use token_mgmt::http::{HttpClientFactory, HttpClientOptions};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut builder = HttpClientFactory::builder();
//! builder.register("api").options_mut().base_address = Some("http://localhost:5000/api/".parse()?);
//! let factory = builder.build();
//!
//! let client = factory.create_client("api")?;          // cheap: built once per name
//! let body = client.get_string("test").await?;         // GET http://localhost:5000/api/test
//! # Ok(())
//! # }
//! ```
//!
//! # Middleware order
//!
//! Middleware run in the order they were added: the first added is the outermost (sees the request
//! first and the response last). One extra *innermost* slot
//! ([`HttpClientRegistration::set_innermost`]) always runs last, closest to the network, whatever
//! the order of the other calls: that is where a token handler belongs, so that outer middleware
//! (retries, for example) get a fresh token on each attempt.
//!
//! # Redirects
//!
//! Clients keep reqwest's default redirect policy: up to 10 redirects are followed, and when a
//! redirect leaves the origin (scheme, host or port changes) reqwest removes `Authorization`,
//! `Cookie`, `Proxy-Authorization` and `WWW-Authenticate` from the redirected request. Redirects are
//! followed *below* the middleware chain (inside `reqwest::Client::execute`), so a header that a
//! middleware set is also stripped before it can reach another origin.
//!
//! # Refused requests
//!
//! A request that an HTTP/2 server refused before processing it (`REFUSED_STREAM`, or a graceful
//! `GOAWAY`) is sent again, at most twice, as reqwest's default retry policy does. The clients do
//! it themselves, with reqwest's policy turned off: that policy copies every request before sending
//! it, and the copy the token handler keeps for a 401 serves instead. A request with a streaming
//! body is sent once. A `retry` policy set with [`HttpClientRegistration::configure_reqwest`]
//! replaces the turned-off one and runs beneath these resends.
//!
//! This module knows nothing of the service container. It knows one middleware by its type, the
//! token handler ([`HttpClientRegistration::set_token_handler`]): when that handler is a client's
//! only middleware, requests call it directly instead of through reqwest-middleware's boxed chain,
//! which saves a boxed future per middleware per request on the path every request takes.

mod client;
mod error;
mod factory;
mod options;
mod registration;
mod request;
mod resolve;
pub(crate) mod retry;

pub use client::HttpClient;
pub use error::{CreateClientError, HttpError, HttpOptionsError, InvalidUrlReason};
pub use factory::{HttpClientFactory, HttpClientFactoryBuilder};
pub use options::{DEFAULT_TIMEOUT, HttpClientOptions};
pub use registration::HttpClientRegistration;
pub use request::RequestBuilder;
