//! With `rustls-ring` as the only TLS feature, creating a client of the HTTP client factory must
//! install ring as the process's rustls provider rather than panic (see
//! `rustls_ring_token_service.rs` for the token service).
#![cfg(all(feature = "rustls-ring", not(feature = "rustls")))]

use rustls::crypto::CryptoProvider;
use token_mgmt::http::HttpClientFactory;

#[test]
fn creating_a_factory_client_installs_ring() {
    assert!(CryptoProvider::get_default().is_none());
    let mut builder = HttpClientFactory::builder();
    builder.register("api");
    builder
        .build()
        .create_client("api")
        .expect("the client builds");
    assert!(CryptoProvider::get_default().is_some());
}
