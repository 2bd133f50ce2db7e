//! Runnable examples for token-mgmt, and the embedded demo token service they and the tests use.
//!
//! [`demo::DemoServer`] is a small OAuth 2.0 token service (client credentials grant) and a protected
//! API on one loopback listener; [`demo::RecordingServer`] records the requests it receives.
//! [`settings`] is how the worker example reads its configuration; [`shared_cache`] reads the Redis
//! token cache of `examples/fleet.rs` and `examples/worker.rs` from the environment.

pub mod demo;
pub mod settings;
pub mod shared_cache;
