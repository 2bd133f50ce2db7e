use std::any::{TypeId, type_name};
use std::fmt;

/// A service that something (a worker, a factory) needs from the container.
///
/// Dependencies are declared, not discovered: [`Injectable::dependencies`](super::Injectable::dependencies),
/// [`FromProvider::dependencies`](super::FromProvider::dependencies) and the `add_*_with` registration
/// methods list them so [`ServiceCollection::build`](super::ServiceCollection::build) can report a missing
/// registration or a cycle before anything runs.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Dependency {
    type_id: TypeId,
    type_name: &'static str,
    optional: bool,
    name: Option<String>,
}

impl Dependency {
    /// A service of type `T` that must be registered.
    pub fn required<T: ?Sized + 'static>() -> Self {
        Self {
            type_id: TypeId::of::<T>(),
            type_name: type_name::<T>(),
            optional: false,
            name: None,
        }
    }

    /// A service of type `T` that is used when registered and skipped otherwise.
    pub fn optional<T: ?Sized + 'static>() -> Self {
        Self {
            optional: true,
            ..Self::required::<T>()
        }
    }

    /// Attaches a name (for example the name of an HTTP client resolved through `T`).
    ///
    /// `build()` only checks that `T` is registered; a module that owns named entries checks the
    /// names with a build check over [`ServiceCollection::declared_dependencies`](super::ServiceCollection::declared_dependencies).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The `TypeId` of the service.
    pub fn type_id(&self) -> TypeId {
        self.type_id
    }

    /// The type name of the service, as given by [`std::any::type_name`].
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// Whether a missing registration is acceptable.
    pub fn is_optional(&self) -> bool {
        self.optional
    }

    /// The name attached with [`with_name`](Self::with_name), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Dependency");
        d.field("type_name", &self.type_name)
            .field("optional", &self.optional);
        if let Some(name) = &self.name {
            d.field("name", name);
        }
        d.finish()
    }
}
