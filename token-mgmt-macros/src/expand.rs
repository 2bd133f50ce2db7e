//! Generates `impl Injectable`, or a fallback impl plus the errors.

use std::collections::HashSet;

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{DeriveInput, Generics, Path, WherePredicate, parse_quote};

use crate::validate::{self, Inject, Worker};

pub(crate) fn derive(input: &DeriveInput) -> TokenStream {
    let mut errors = Vec::new();
    let krate = validate::crate_path(input, &mut errors);
    let worker = validate::worker(input, &mut errors);
    if let Some(mut first) = errors.first().cloned() {
        for error in errors.into_iter().skip(1) {
            first.combine(error);
        }
        let compile_errors = first.to_compile_error();
        let fallback = fallback(input, &krate);
        return quote! { #compile_errors #fallback };
    }
    expand(input, &krate, &worker)
}

fn expand(input: &DeriveInput, krate: &Path, worker: &Worker<'_>) -> TokenStream {
    let ident = &input.ident;
    let fields = worker.fields.as_deref().unwrap_or_default();
    let generics = with_inferred_bounds(input, krate, worker);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();

    // Mixed-site: the generated locals cannot clash with, or be captured by, identifiers that come
    // from the input (a field type passed through a `macro_rules!` carries that macro's hygiene).
    let provider = Ident::new("provider", Span::mixed_site());
    let dependencies = Ident::new("dependencies", Span::mixed_site());
    let error = Ident::new("error", Span::mixed_site());

    let inits = fields.iter().map(|field| {
        let name = field.ident;
        // `r#type` is reported as `type`.
        let name_str = name.unraw().to_string();
        let ty = field.ty;
        let wrap = quote! {
            .map_err(|#error| #krate::di::ResolveError::field::<Self>(#name_str, #error))?
        };
        match &field.inject {
            Inject::ByType => {
                let resolve = quote_spanned! {ty.span()=>
                    <#ty as #krate::di::FromProvider>::from_provider(#provider)
                };
                quote! { #name: #resolve #wrap }
            }
            Inject::Default => {
                let build =
                    quote_spanned! {ty.span()=> <#ty as ::core::default::Default>::default() };
                quote! { #name: #build }
            }
            Inject::Client(client) => {
                let resolve = quote_spanned! {ty.span()=>
                    <#ty as #krate::di::NamedService>::from_provider_named(#provider, #client)
                };
                quote! { #name: #resolve #wrap }
            }
        }
    });

    let deps = fields.iter().filter_map(|field| {
        let ty = field.ty;
        match &field.inject {
            Inject::ByType => Some(quote_spanned! {ty.span()=>
                #dependencies.extend(<#ty as #krate::di::FromProvider>::dependencies());
            }),
            Inject::Default => None,
            Inject::Client(client) => Some(quote_spanned! {ty.span()=>
                #dependencies.extend(<#ty as #krate::di::NamedService>::dependencies_named(#client));
            }),
        }
    });

    let construct = match &input.data {
        syn::Data::Struct(data) if matches!(data.fields, syn::Fields::Unit) => quote! { Self },
        _ => quote! { Self { #(#inits,)* } },
    };

    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::di::Injectable for #ident #ty_generics #where_clause {
            fn inject(
                #provider: &#krate::di::ServiceProvider,
            ) -> ::core::result::Result<Self, #krate::di::ResolveError> {
                let _ = #provider;
                ::core::result::Result::Ok(#construct)
            }

            fn dependencies() -> ::std::vec::Vec<#krate::di::Dependency> {
                #[allow(unused_mut)]
                let mut #dependencies = ::std::vec::Vec::new();
                #(#deps)*
                #dependencies
            }
        }
    }
}

/// The input's generics plus what the impl needs of them, so that type parameters need no bounds
/// of their own: each field type that mentions a type or const parameter must implement the trait
/// its field is built through, and the struct must be `Send + Sync + 'static` (`Injectable`'s
/// supertraits). Fields of concrete types get no bound, so their errors stay on the field.
fn with_inferred_bounds(input: &DeriveInput, krate: &Path, worker: &Worker<'_>) -> Generics {
    let mut generics = input.generics.clone();
    let params = generic_params(&generics);
    if params.is_empty() {
        return generics;
    }
    let mut predicates: Vec<WherePredicate> = vec![self_bound(input)];
    for field in worker.fields.as_deref().unwrap_or_default() {
        let ty = field.ty;
        if !mentions(ty.to_token_stream(), &params) {
            continue;
        }
        let bound = match &field.inject {
            Inject::ByType => quote_spanned! {ty.span()=> #ty: #krate::di::FromProvider },
            Inject::Default => quote_spanned! {ty.span()=> #ty: ::core::default::Default },
            Inject::Client(_) => quote_spanned! {ty.span()=> #ty: #krate::di::NamedService },
        };
        predicates.push(parse_quote!(#bound));
    }
    generics.make_where_clause().predicates.extend(predicates);
    generics
}

/// `Name<..>: Send + Sync + 'static`.
fn self_bound(input: &DeriveInput) -> WherePredicate {
    let ident = &input.ident;
    let (_, ty_generics, _) = input.generics.split_for_impl();
    parse_quote!(#ident #ty_generics: ::core::marker::Send + ::core::marker::Sync + 'static)
}

/// The names of the type and const parameters.
fn generic_params(generics: &Generics) -> HashSet<Ident> {
    generics
        .type_params()
        .map(|p| p.ident.clone())
        .chain(generics.const_params().map(|p| p.ident.clone()))
        .collect()
}

/// Whether the tokens (of a type) use one of `params`.
fn mentions(tokens: TokenStream, params: &HashSet<Ident>) -> bool {
    tokens.into_iter().any(|token| match token {
        TokenTree::Ident(ident) => params.contains(&ident),
        TokenTree::Group(group) => mentions(group.stream(), params),
        TokenTree::Punct(_) | TokenTree::Literal(_) => false,
    })
}

/// An impl that type-checks whatever the input, so the only errors are the derive's own.
fn fallback(input: &DeriveInput, krate: &Path) -> TokenStream {
    if input.generics.lifetimes().next().is_some() {
        // Injectable is 'static: an impl would only add a second, confusing error.
        return TokenStream::new();
    }
    let ident = &input.ident;
    let mut generics = input.generics.clone();
    if !generic_params(&generics).is_empty() {
        // Otherwise the supertraits would fail for the parameters: one more unrelated error.
        let bound = self_bound(input);
        generics.make_where_clause().predicates.push(bound);
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics #krate::di::Injectable for #ident #ty_generics #where_clause {
            fn inject(
                _: &#krate::di::ServiceProvider,
            ) -> ::core::result::Result<Self, #krate::di::ResolveError> {
                ::core::unreachable!()
            }

            fn dependencies() -> ::std::vec::Vec<#krate::di::Dependency> {
                ::core::unreachable!()
            }
        }
    }
}
