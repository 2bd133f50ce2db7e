//! `#[derive(Worker)]` for token-mgmt.
//!
//! Laid out like `thiserror`'s derive: `parse` reads the attributes leniently, `validate` checks
//! them and collects every error with its span, `expand` generates the impl. When there are errors
//! the derive still emits a fallback impl, so one mistake does not cascade into "trait not
//! implemented" errors elsewhere.

use proc_macro::TokenStream;
use syn::{DeriveInput, parse_macro_input};

mod expand;
mod parse;
mod validate;

/// Derives `token_mgmt::di::Injectable`: constructs the struct from the `ServiceProvider`.
///
/// Each named field is resolved by its type through `token_mgmt::di::FromProvider` (`Arc<T>` for a
/// registered service `T`, `Option<Arc<T>>`, the `ServiceProvider`, or a cheap-clone handle such as
/// `HttpClientFactory`). Field attributes:
///
/// - `#[inject(default)]`: built with `Default::default()`;
/// - `#[inject(client = "name")]`: the named HTTP client, through `token_mgmt::di::NamedService`.
///
/// Type parameters need no bounds of their own: the impl requires what the fields need (`Arc<T>:
/// FromProvider`, `PhantomData<T>: Default`, ...) and that the struct is `Send + Sync + 'static`.
///
/// `#[worker(crate = "path")]` overrides the path of the `token_mgmt` crate (for re-exporting crates).
#[proc_macro_derive(Worker, attributes(inject, worker))]
pub fn derive_worker(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}
