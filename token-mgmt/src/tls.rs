//! The one place where the crate starts a `reqwest::ClientBuilder`, so that the TLS feature's set-up
//! runs before any client is built.

/// `reqwest::Client::builder()`, after installing ring as the process's default rustls crypto
/// provider when the `rustls-ring` feature is the rustls choice.
pub(crate) fn client_builder() -> reqwest::ClientBuilder {
    // reqwest's `rustls-no-provider` panics when a client is built without a process-wide provider.
    // With `rustls` (aws-lc-rs) also on, reqwest falls back to aws-lc-rs itself. An already
    // installed provider (the application's choice) wins: `install_default` then fails, harmlessly.
    #[cfg(all(feature = "rustls-ring", not(feature = "rustls")))]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    /// Under every TLS feature set (CI builds the core with each), building a client must not fail
    /// or panic: with `rustls-ring` alone that needs the provider installed above.
    #[test]
    fn client_builds_with_the_enabled_tls_backend() {
        super::client_builder()
            .build()
            .expect("a client builds with the enabled TLS backend");
    }
}
