//! Benchmark support for token-mgmt.
//!
//! Everything the scenarios share lives here: loopback servers ([`servers`]: an API that checks a
//! Bearer token and a client-credentials token endpoint with a configurable delay and request
//! counters), a load driver ([`load`]), the baselines ([`baseline`], [`cache`]), the peers
//! ([`peers`]: the `middle` crate and `oauth2` with a `tokio::sync::RwLock` cache), a counting
//! allocator ([`mem`]), generated signing keys ([`keys`]) and markdown reporting ([`report`]).
//!
//! Our side (token-mgmt itself) is in the `ours` module, compiled only with the `ours` cargo feature.
//! How to run each scenario and the figures: `BENCHMARKS.md` at the workspace root.

pub mod baseline;
pub mod cache;
pub mod keys;
pub mod load;
pub mod mem;
#[cfg(feature = "ours")]
pub mod ours;
pub mod peers;
pub mod report;
pub mod servers;
pub mod stampede;

/// A boxed error that can cross threads.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Client secret every benchmark client uses against the loopback token endpoint.
pub const CLIENT_SECRET: &str = "bench-secret";
