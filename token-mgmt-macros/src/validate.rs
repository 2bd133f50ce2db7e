//! Checks the input and the attributes; collects every error with its span.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Expr, ExprLit, Fields, GenericParam, Ident, Lit, LitStr, Path, Type};

use crate::parse::{self, RawKey};

/// A validated worker.
pub(crate) struct Worker<'a> {
    pub(crate) fields: Option<Vec<Field<'a>>>,
}

/// How one field is built.
pub(crate) enum Inject {
    ByType,
    Default,
    Client(LitStr),
}

pub(crate) struct Field<'a> {
    pub(crate) ident: &'a Ident,
    pub(crate) ty: &'a Type,
    pub(crate) inject: Inject,
}

/// The crate path from `#[worker(crate = "...")]`, or `::token_mgmt`. Errors go to `errors`.
pub(crate) fn crate_path(input: &DeriveInput, errors: &mut Vec<syn::Error>) -> Path {
    let mut path = None;
    for key in parse::keys(&input.attrs, "worker", errors) {
        match key.name.as_str() {
            "crate" => {
                if path.is_some() {
                    errors.push(syn::Error::new(key.span, "duplicate `crate` key"));
                    continue;
                }
                if let Some(lit) = string_value(&key, errors) {
                    match lit.parse::<Path>() {
                        Ok(p) => path = Some(p),
                        Err(_) => errors.push(syn::Error::new(
                            lit.span(),
                            format!("`{}` is not a path", lit.value()),
                        )),
                    }
                }
            }
            other => errors.push(syn::Error::new(
                key.span,
                format!("unknown `worker` key `{other}`; expected `crate = \"...\"`"),
            )),
        }
    }
    path.unwrap_or_else(|| syn::parse_quote!(::token_mgmt))
}

/// Validates the shape and the field attributes.
pub(crate) fn worker<'a>(input: &'a DeriveInput, errors: &mut Vec<syn::Error>) -> Worker<'a> {
    for param in &input.generics.params {
        if let GenericParam::Lifetime(lt) = param {
            errors.push(syn::Error::new(
                lt.span(),
                "`#[derive(Worker)]` does not support lifetime parameters: workers live for the whole application (`'static`)",
            ));
        }
    }

    let fields = match &input.data {
        Data::Enum(data) => {
            errors.push(syn::Error::new(
                data.enum_token.span,
                "`#[derive(Worker)]` supports only structs with named fields, not enums",
            ));
            None
        }
        Data::Union(data) => {
            errors.push(syn::Error::new(
                data.union_token.span,
                "`#[derive(Worker)]` supports only structs with named fields, not unions",
            ));
            None
        }
        Data::Struct(data) => match &data.fields {
            Fields::Named(named) => Some(
                named
                    .named
                    .iter()
                    .filter_map(|f| {
                        let ident = f.ident.as_ref()?;
                        let inject = field_inject(&f.attrs, errors);
                        Some(Field {
                            ident,
                            ty: &f.ty,
                            inject,
                        })
                    })
                    .collect(),
            ),
            Fields::Unit => Some(Vec::new()),
            Fields::Unnamed(unnamed) => {
                errors.push(syn::Error::new(
                    unnamed.span(),
                    "`#[derive(Worker)]` does not support tuple structs: name the fields, they are injected by type",
                ));
                None
            }
        },
    };
    Worker { fields }
}

fn field_inject(attrs: &[syn::Attribute], errors: &mut Vec<syn::Error>) -> Inject {
    let mut default: Option<Span> = None;
    let mut client: Option<(Span, LitStr)> = None;
    for key in parse::keys(attrs, "inject", errors) {
        match key.name.as_str() {
            "default" => {
                if let Some(value) = &key.value {
                    errors.push(syn::Error::new(value.span(), "`default` takes no value"));
                }
                if default.is_some() {
                    errors.push(syn::Error::new(key.span, "duplicate `default` key"));
                } else {
                    default = Some(key.span);
                }
            }
            "client" => {
                if client.is_some() {
                    errors.push(syn::Error::new(key.span, "duplicate `client` key"));
                    continue;
                }
                if let Some(lit) = string_value(&key, errors) {
                    if lit.value().is_empty() {
                        errors.push(syn::Error::new(
                            lit.span(),
                            "the client name must not be empty",
                        ));
                    }
                    client = Some((key.span, lit));
                }
            }
            other => errors.push(syn::Error::new(
                key.span,
                format!("unknown `inject` key `{other}`; expected `default` or `client = \"...\"`"),
            )),
        }
    }
    match (default, client) {
        (Some(_), Some((span, _))) => {
            errors.push(syn::Error::new(
                span,
                "`client` and `default` cannot be combined: a field is either injected or defaulted",
            ));
            Inject::Default
        }
        (Some(_), None) => Inject::Default,
        (None, Some((_, lit))) => Inject::Client(lit),
        (None, None) => Inject::ByType,
    }
}

fn string_value(key: &RawKey, errors: &mut Vec<syn::Error>) -> Option<LitStr> {
    match &key.value {
        Some(Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        })) => Some(lit.clone()),
        Some(other) => {
            errors.push(syn::Error::new(
                other.span(),
                format!("`{}` expects a string literal", key.name),
            ));
            None
        }
        None => {
            errors.push(syn::Error::new(
                key.span,
                format!("`{}` expects a value: `{} = \"...\"`", key.name, key.name),
            ));
            None
        }
    }
}
