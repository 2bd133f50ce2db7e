//! With `rustls-ring` as the only TLS feature, reqwest has no crypto provider of its own: building the
//! token service (its token endpoint client) must install ring rather than panic. One process per
//! path, since the provider is process-wide (the HTTP client factory: `rustls_ring_http_client.rs`).
#![cfg(all(feature = "rustls-ring", not(feature = "rustls")))]

use rustls::crypto::CryptoProvider;
use token_mgmt::tokens::{AccessTokenManagementOptions, AccessTokenManagementService};

#[test]
fn building_the_token_service_installs_ring() {
    assert!(CryptoProvider::get_default().is_none());
    AccessTokenManagementService::new(AccessTokenManagementOptions::default())
        .expect("the token service builds");
    assert!(CryptoProvider::get_default().is_some());
}
