//! `#[derive(Worker)]` for token-mgmt.
use proc_macro::TokenStream;

/// Derives construction of a worker from the service provider.
#[proc_macro_derive(Worker, attributes(inject, worker))]
pub fn derive_worker(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
