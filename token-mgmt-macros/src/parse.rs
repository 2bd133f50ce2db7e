//! Reads `#[worker(...)]` and `#[inject(...)]` attributes without judging them.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Attribute, Expr, Meta};

/// One `key` or `key = value` entry of an attribute list.
pub(crate) struct RawKey {
    pub(crate) name: String,
    pub(crate) span: Span,
    pub(crate) value: Option<Expr>,
}

/// Collects the keys of every attribute named `attr_name`; syntax errors go to `errors`.
pub(crate) fn keys(
    attrs: &[Attribute],
    attr_name: &str,
    errors: &mut Vec<syn::Error>,
) -> Vec<RawKey> {
    let mut keys = Vec::new();
    for attr in attrs.iter().filter(|a| a.path().is_ident(attr_name)) {
        if !matches!(attr.meta, Meta::List(_)) {
            errors.push(syn::Error::new(
                attr.path().span(),
                format!("expected a list: `#[{attr_name}(...)]`"),
            ));
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            let name = meta
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect::<Vec<_>>()
                .join("::");
            let span = meta.path.span();
            let value = if meta.input.peek(syn::Token![=]) {
                Some(meta.value()?.parse::<Expr>()?)
            } else {
                None
            };
            keys.push(RawKey { name, span, value });
            Ok(())
        });
        if let Err(error) = result {
            errors.push(error);
        }
    }
    keys
}
