//! Generates `impl Injectable`, or a fallback impl plus the errors.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{DeriveInput, Path};

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
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    let fields = worker.fields.as_deref().unwrap_or_default();

    let inits = fields.iter().map(|field| {
        let name = field.ident;
        let name_str = name.to_string();
        let ty = field.ty;
        let wrap = quote! {
            .map_err(|error| #krate::di::ResolveError::field::<Self>(#name_str, error))?
        };
        match &field.inject {
            Inject::ByType => {
                let resolve = quote_spanned! {ty.span()=>
                    <#ty as #krate::di::FromProvider>::from_provider(provider)
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
                    <#ty as #krate::di::NamedService>::from_provider_named(provider, #client)
                };
                quote! { #name: #resolve #wrap }
            }
        }
    });

    let deps = fields.iter().filter_map(|field| {
        let ty = field.ty;
        match &field.inject {
            Inject::ByType => Some(quote_spanned! {ty.span()=>
                dependencies.extend(<#ty as #krate::di::FromProvider>::dependencies());
            }),
            Inject::Default => None,
            Inject::Client(client) => Some(quote_spanned! {ty.span()=>
                dependencies.extend(<#ty as #krate::di::NamedService>::dependencies_named(#client));
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
                provider: &#krate::di::ServiceProvider,
            ) -> ::core::result::Result<Self, #krate::di::ResolveError> {
                let _ = provider;
                ::core::result::Result::Ok(#construct)
            }

            fn dependencies() -> ::std::vec::Vec<#krate::di::Dependency> {
                #[allow(unused_mut)]
                let mut dependencies = ::std::vec::Vec::new();
                #(#deps)*
                dependencies
            }
        }
    }
}

/// An impl that type-checks whatever the input, so the only errors are the derive's own.
fn fallback(input: &DeriveInput, krate: &Path) -> TokenStream {
    if input.generics.lifetimes().next().is_some() {
        // Injectable is 'static: an impl would only add a second, confusing error.
        return TokenStream::new();
    }
    let ident = &input.ident;
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
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
