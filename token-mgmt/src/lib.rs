//! token-mgmt: OAuth 2.0 client-credentials token management for worker applications.

pub mod di;
pub mod hosting;
pub mod http;
pub mod tokens;

pub use token_mgmt_macros::Worker;

/// A boxed error that can cross threads: what fallible user callbacks and pluggable backends return.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
