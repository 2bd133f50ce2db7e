//! The embedded demo: a token service, a protected API, and a request-recording server.
//!
//! ```no_run
//! use token_mgmt_examples::demo::{DemoConfig, DemoServer};
//!
//! # async fn run() -> std::io::Result<()> {
//! let demo = DemoServer::start(DemoConfig::default()).await?;
//! println!("token endpoint: {}", demo.token_endpoint()); // http://127.0.0.1:PORT/connect/token
//! println!("API:            {}", demo.api_base());       // http://127.0.0.1:PORT/api/
//! demo.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! # Discovery: `GET /.well-known/openid-configuration`
//!
//! The issuer is `http://127.0.0.1:PORT` ([`DemoServer::issuer`]); its document names the token
//! endpoint and the two authentication methods, so a client configured with the issuer as its
//! `authority` finds the token endpoint.
//!
//! # Token service: `POST /connect/token`
//!
//! Client credentials grant (RFC 6749 4.4) for the [`DemoClient`]s of the [`DemoConfig`] (by default
//! `m2m` with 3600 s tokens and `m2m.short` with 75 s tokens, both with secret `secret` and scope
//! `api`). The client authenticates with `client_secret_basic` (RFC 6749 2.3.1: id and secret
//! form-url-encoded, then base64) or `client_secret_post`. `scope` must be a subset of the client's
//! allowed scopes (all of them when omitted); `resource` (RFC 8707) may be repeated and is recorded.
//! Errors are RFC 6749 5.2 JSON bodies: `invalid_request`, `invalid_client` (401),
//! `unsupported_grant_type`, `invalid_scope`.
//!
//! Tokens are opaque random strings (32 bytes from the operating system's CSPRNG) looked up in a
//! server-side table; expiry uses `tokio::time::Instant`, so tests with a paused clock can
//! `tokio::time::advance` past a token's lifetime.
//!
//! # Protected API: any method on `/api/...`
//!
//! Accepts only `Authorization: Bearer <token>` with a token this server issued, not revoked and not
//! expired, and answers the token's claims as JSON ([`ApiClaims`]; never the token itself). Anything
//! else gets `401` with `WWW-Authenticate: Bearer error="invalid_token"` (or plain `Bearer` when no
//! credentials were sent, RFC 6750 3.1). `GET /api/redirect-to?url=...` answers `302` to `url`
//! without checking a token (for redirect tests).

mod api;
mod config;
mod counters;
mod recording;
mod secret;
mod server;
mod state;
mod token_endpoint;

pub use api::ApiClaims;
pub use config::{DemoClient, DemoConfig};
pub use counters::{ClientCounters, DemoCounters};
pub use recording::{RecordedRequest, RecordingServer};
pub use server::DemoServer;
