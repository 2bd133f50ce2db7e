use std::sync::Arc;

use super::{Dependency, ResolveError, ServiceProvider};

/// A type the container can construct from a [`ServiceProvider`]: every hosted worker.
///
/// Usually derived with `#[derive(Worker)]`, which resolves each field through [`FromProvider`]
/// (or [`NamedService`] for `#[inject(client = "...")]`, or `Default` for `#[inject(default)]`)
/// and lists the fields' [`dependencies`](Injectable::dependencies) so `build()` can check them.
pub trait Injectable: Sized + Send + Sync + 'static {
    /// Constructs the value, resolving what it needs from `provider`.
    fn inject(provider: &ServiceProvider) -> Result<Self, ResolveError>;

    /// The services [`inject`](Injectable::inject) will resolve, for `build()`'s checks.
    fn dependencies() -> Vec<Dependency>;
}

/// Resolves one value (a worker field, a factory argument) from the [`ServiceProvider`] by its type,
/// like axum's `FromRef`.
///
/// Implemented for:
/// - `Arc<T>`: the registered service `T` (singleton or transient), including a trait object
///   `Arc<dyn Trait>` registered with
///   [`add_singleton_arc`](super::ServiceCollection::add_singleton_arc);
/// - `Option<Arc<T>>`: `T` when registered, `None` otherwise;
/// - [`ServiceProvider`] itself;
/// - cheap-clone handle types declared with [`inject_by_clone!`](crate::inject_by_clone)
///   (`HttpClientFactory`, `AccessTokenManagementService`, `ApplicationLifetime`, ...): registered as a
///   singleton of their own type and injected by value;
/// - tuples of the above, for factories with several dependencies
///   ([`ServiceCollection::add_singleton_with`](super::ServiceCollection::add_singleton_with)).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected from the service provider",
    label = "this type cannot be resolved from the container",
    note = "inject a registered service as `Arc<{Self}>`, a cheap-clone handle declared with `token_mgmt::inject_by_clone!`, or mark the field `#[inject(default)]`"
)]
pub trait FromProvider: Sized {
    /// Resolves the value.
    fn from_provider(provider: &ServiceProvider) -> Result<Self, ResolveError>;

    /// The services [`from_provider`](FromProvider::from_provider) resolves.
    fn dependencies() -> Vec<Dependency>;
}

/// A value resolved from the provider under a name: the hook behind `#[inject(client = "name")]`.
///
/// The `http` module implements it for `HttpClient` (resolving the `HttpClientFactory` and calling
/// `create_client(name)`); `di` knows nothing about HTTP.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be injected by name",
    label = "`#[inject(client = \"...\")]` needs a type that implements `NamedService`",
    note = "use the named HTTP client type (`HttpClient`) for `#[inject(client = \"...\")]`"
)]
pub trait NamedService: Sized {
    /// Resolves the value named `name`.
    fn from_provider_named(provider: &ServiceProvider, name: &str) -> Result<Self, ResolveError>;

    /// The services [`from_provider_named`](NamedService::from_provider_named) resolves for `name`
    /// (typically `Dependency::required::<Factory>().with_name(name)`).
    fn dependencies_named(name: &str) -> Vec<Dependency>;
}

/// Resolves the registered singleton `T` and clones it out of its `Arc`: the body of
/// [`inject_by_clone!`](crate::inject_by_clone), usable directly in a hand-written [`FromProvider`] impl.
pub fn resolve_by_clone<T: Clone + Send + Sync + 'static>(
    provider: &ServiceProvider,
) -> Result<T, ResolveError> {
    provider.get_required::<T>().map(|arc| T::clone(&arc))
}

/// Declares cheap-clone handle types (an `Arc` inside) as injected by value: the type is registered
/// as a singleton of its own type, and a field (or factory argument) of that type gets a clone.
///
/// ```
/// use token_mgmt::di::{FromProvider, ServiceCollection};
///
/// #[derive(Clone)]
/// pub struct Clock { offset: std::sync::Arc<i64> }
/// token_mgmt::inject_by_clone!(Clock);
///
/// let mut services = ServiceCollection::new();
/// services.add_singleton(Clock { offset: std::sync::Arc::new(3) });
/// let provider = services.build()?;
/// let clock = Clock::from_provider(&provider)?;
/// assert_eq!(*clock.offset, 3);
/// # Ok::<(), token_mgmt::BoxError>(())
/// ```
#[macro_export]
macro_rules! inject_by_clone {
    ($($ty:ty),+ $(,)?) => {$(
        #[diagnostic::do_not_recommend]
        impl $crate::di::FromProvider for $ty {
            fn from_provider(
                provider: &$crate::di::ServiceProvider,
            ) -> ::core::result::Result<Self, $crate::di::ResolveError> {
                $crate::di::resolve_by_clone::<Self>(provider)
            }

            fn dependencies() -> ::std::vec::Vec<$crate::di::Dependency> {
                ::std::vec![$crate::di::Dependency::required::<Self>()]
            }
        }
    )+};
}

#[diagnostic::do_not_recommend]
impl<T: ?Sized + Send + Sync + 'static> FromProvider for Arc<T> {
    fn from_provider(provider: &ServiceProvider) -> Result<Self, ResolveError> {
        provider.get_required::<T>()
    }

    fn dependencies() -> Vec<Dependency> {
        vec![Dependency::required::<T>()]
    }
}

#[diagnostic::do_not_recommend]
impl<T: ?Sized + Send + Sync + 'static> FromProvider for Option<Arc<T>> {
    fn from_provider(provider: &ServiceProvider) -> Result<Self, ResolveError> {
        provider.get::<T>()
    }

    fn dependencies() -> Vec<Dependency> {
        vec![Dependency::optional::<T>()]
    }
}

#[diagnostic::do_not_recommend]
impl FromProvider for ServiceProvider {
    fn from_provider(provider: &ServiceProvider) -> Result<Self, ResolveError> {
        Ok(provider.clone())
    }

    fn dependencies() -> Vec<Dependency> {
        Vec::new()
    }
}

#[diagnostic::do_not_recommend]
impl FromProvider for () {
    fn from_provider(_: &ServiceProvider) -> Result<Self, ResolveError> {
        Ok(())
    }

    fn dependencies() -> Vec<Dependency> {
        Vec::new()
    }
}

macro_rules! tuple_from_provider {
    ($($name:ident),+) => {
        #[diagnostic::do_not_recommend]
        impl<$($name: FromProvider),+> FromProvider for ($($name,)+) {
            fn from_provider(provider: &ServiceProvider) -> Result<Self, ResolveError> {
                Ok(($($name::from_provider(provider)?,)+))
            }

            fn dependencies() -> Vec<Dependency> {
                let mut deps = Vec::new();
                $(deps.extend($name::dependencies());)+
                deps
            }
        }
    };
}

tuple_from_provider!(A);
tuple_from_provider!(A, B);
tuple_from_provider!(A, B, C);
tuple_from_provider!(A, B, C, D);
tuple_from_provider!(A, B, C, D, E);
tuple_from_provider!(A, B, C, D, E, F);
tuple_from_provider!(A, B, C, D, E, F, G);
tuple_from_provider!(A, B, C, D, E, F, G, H);
