//! DPoP (RFC 9449): sender-constrained access tokens.
//!
//! A token client with [`TokenClientOptions::dpop`](super::TokenClientOptions::dpop) set holds a
//! private key that never leaves the process (not in the token cache, logs or `Debug`). Every token
//! request carries a `DPoP` proof signed with it; when the server answers `token_type: DPoP`, every
//! API request the [`ClientAccessTokenHandler`](super::ClientAccessTokenHandler) sends carries
//! `Authorization: DPoP <token>` and a fresh proof bound to the request's method, URL and token.
//! Server nonces (RFC 9449 sections 8 and 9) are remembered per origin from every response that
//! carries `DPoP-Nonce`, so the steady state costs no extra round trip.

mod key;
mod nonce;
mod proof;
mod service;

pub use key::DpopKey;
pub use proof::DpopError;
pub(crate) use proof::DpopProver;

/// The request header that carries a proof.
pub const DPOP_HEADER: &str = "dpop";
/// The response header that carries a server nonce.
pub const DPOP_NONCE_HEADER: &str = "dpop-nonce";
/// The OAuth error a server answers when a proof lacks its current nonce.
pub const USE_DPOP_NONCE: &str = "use_dpop_nonce";
