//! Test support: local servers, and the interop authorization server.

pub mod api_server;
pub mod dpop_api;
pub mod fault_server;
pub mod interop;
pub mod logs;
pub mod redis_server;
pub mod serve;
pub mod token_server;

use std::sync::Arc;

use token_mgmt::tokens::{AccessTokenManagementOptions, AccessTokenManagementService, ManualClock};

/// A service built from `options` whose time moves only when the returned clock is advanced.
pub fn manual_service(
    options: AccessTokenManagementOptions,
) -> (AccessTokenManagementService, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::new());
    let service = AccessTokenManagementService::builder(options)
        .clock(clock.clone())
        .build()
        .expect("valid options");
    (service, clock)
}

/// README.md's Rust blocks, compiled (and run, unless marked `no_run`) as this crate's doc tests, so
/// that the README cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
