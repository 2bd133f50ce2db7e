use std::any::{Any, TypeId, type_name};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::ResolveError;
use super::collection::Extensions;
use super::dependency::Dependency;
use crate::BoxError;

/// A resolved service: always an `Arc<T>` of the registered type `T`, boxed so that `T` may be
/// unsized (`Arc<dyn Trait>`).
pub(crate) type Erased = Box<dyn Any + Send + Sync>;
pub(crate) type Factory = Box<dyn Fn(&ServiceProvider) -> Result<Erased, BoxError> + Send + Sync>;

pub(crate) enum Lifetime {
    Value(Erased),
    Singleton(Factory),
    Transient(Factory),
}

pub(crate) struct Registration {
    pub(crate) type_name: &'static str,
    pub(crate) lifetime: Lifetime,
    pub(crate) dependencies: Vec<Dependency>,
}

enum Service {
    Value {
        type_name: &'static str,
        value: Erased,
    },
    Singleton {
        type_name: &'static str,
        cell: OnceLock<Erased>,
        /// Held while this singleton's factory runs, so it runs at most once at a time; other
        /// singletons (and threads resolving them) are not affected.
        constructing: Mutex<()>,
        factory: Factory,
    },
    Transient {
        type_name: &'static str,
        factory: Factory,
    },
}

impl Service {
    fn type_name(&self) -> &'static str {
        match self {
            Service::Value { type_name, .. }
            | Service::Singleton { type_name, .. }
            | Service::Transient { type_name, .. } => type_name,
        }
    }
}

struct Inner {
    services: HashMap<TypeId, Service>,
    extensions: Extensions,
}

/// The built container: resolves services by type. Cheap to clone (an `Arc` inside).
///
/// Obtained from [`ServiceCollection::build`](super::ServiceCollection::build).
///
/// # Singletons
///
/// A singleton's factory runs at most once, on first resolution, however many threads resolve it
/// at the same time; a failed factory is not cached, the next resolution calls it again. Each
/// singleton has its own once-cell and lock: a thread waits only while *that* singleton is being
/// built by another thread, and resolving an already-built singleton takes no lock. So a factory
/// may resolve its dependencies on other threads (spawn and join, rayon, a blocking call into a
/// spawned task).
///
/// A factory that resolves *itself*, directly or through other factories, is a cycle. `build()`
/// rejects cycles between declared dependencies ([`add_singleton_with`], `#[derive(Worker)]`).
/// For undeclared ones (a factory calling [`get_required`](Self::get_required)), a cycle on one
/// thread is detected when it happens and returned as [`ResolveError::Cycle`]; a cycle that goes
/// through another thread the factory waits for cannot be seen and blocks both threads, so declare
/// the dependencies of factories that resolve on other threads.
///
/// A singleton that keeps a clone of the provider keeps the whole container alive: that is the
/// intended lifetime of an application's root container.
///
/// [`add_singleton_with`]: super::ServiceCollection::add_singleton_with
#[derive(Clone)]
pub struct ServiceProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServiceProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.inner.services.values().map(Service::type_name).collect();
        names.sort_unstable();
        f.debug_struct("ServiceProvider")
            .field("services", &names)
            .finish()
    }
}

thread_local! {
    /// Services being constructed on this thread: (provider id, type), innermost last. Finds
    /// cycles on one thread before they would wait on their own lock, and names who asked for a
    /// missing service.
    static RESOLVING: RefCell<Vec<(usize, TypeId, &'static str)>> = const { RefCell::new(Vec::new()) };
}

/// Pops this thread's innermost [`RESOLVING`] entry when a construction ends (or unwinds).
struct ResolvingGuard;

impl Drop for ResolvingGuard {
    fn drop(&mut self) {
        RESOLVING.with(|stack| {
            stack.borrow_mut().pop();
        });
    }
}

impl ServiceProvider {
    pub(crate) fn new(
        registrations: HashMap<TypeId, Registration>,
        extensions: Extensions,
    ) -> Self {
        let services = registrations
            .into_iter()
            .map(|(id, r)| {
                let type_name = r.type_name;
                let service = match r.lifetime {
                    Lifetime::Value(value) => Service::Value { type_name, value },
                    Lifetime::Singleton(factory) => Service::Singleton {
                        type_name,
                        cell: OnceLock::new(),
                        constructing: Mutex::new(()),
                        factory,
                    },
                    Lifetime::Transient(factory) => Service::Transient { type_name, factory },
                };
                (id, service)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                services,
                extensions,
            }),
        }
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The service `T`: `Ok(None)` when it is not registered, an error when its factory failed.
    pub fn get<T: ?Sized + Send + Sync + 'static>(
        &self,
    ) -> Result<Option<Arc<T>>, ResolveError> {
        if !self.contains::<T>() {
            return Ok(None);
        }
        self.get_required::<T>().map(Some)
    }

    /// Whether a service of type `T` is registered.
    pub fn contains<T: ?Sized + 'static>(&self) -> bool {
        self.inner.services.contains_key(&TypeId::of::<T>())
    }

    /// The service `T`, or an error naming the missing type and (inside a factory) who asked for it,
    /// or the factory's error.
    pub fn get_required<T: ?Sized + Send + Sync + 'static>(&self) -> Result<Arc<T>, ResolveError> {
        let id = TypeId::of::<T>();
        let Some(service) = self.inner.services.get(&id) else {
            return Err(ResolveError::NotRegistered {
                service: type_name::<T>(),
                required_by: current_requester(self.id()),
            });
        };
        match service {
            Service::Value { value, .. } => Ok(downcast::<T>(value)),
            Service::Singleton {
                type_name,
                cell,
                constructing,
                factory,
            } => {
                if let Some(value) = cell.get() {
                    return Ok(downcast::<T>(value));
                }
                // Checked before taking the lock: on this thread, waiting for it would never end.
                let _resolving = self.enter(id, type_name)?;
                let _constructing = constructing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if let Some(value) = cell.get() {
                    return Ok(downcast::<T>(value));
                }
                let value = self.call(type_name, factory)?;
                // The lock is held, so no other thread has set the cell since the check above.
                Ok(downcast::<T>(cell.get_or_init(|| value)))
            }
            Service::Transient { type_name, factory } => {
                let _resolving = self.enter(id, type_name)?;
                Ok(downcast::<T>(&self.call(type_name, factory)?))
            }
        }
    }

    /// State of type `S` that extension methods stored with
    /// [`ServiceCollection::extension_mut`](super::ServiceCollection::extension_mut).
    pub fn extension<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.inner
            .extensions
            .get(&TypeId::of::<S>())
            .and_then(|b| b.downcast_ref::<S>())
    }

    /// Marks `id` as being constructed on this thread, or reports the cycle if it already is.
    fn enter(&self, id: TypeId, name: &'static str) -> Result<ResolvingGuard, ResolveError> {
        let me = self.id();
        RESOLVING.with(|stack| {
            let mut stack = stack.borrow_mut();
            if let Some(start) = stack.iter().position(|(p, t, _)| *p == me && *t == id) {
                let mut path: Vec<&'static str> = stack[start..]
                    .iter()
                    .filter(|(p, _, _)| *p == me)
                    .map(|(_, _, n)| *n)
                    .collect();
                path.push(name);
                return Err(ResolveError::Cycle { path });
            }
            stack.push((me, id, name));
            Ok(ResolvingGuard)
        })
    }

    fn call(&self, name: &'static str, factory: &Factory) -> Result<Erased, ResolveError> {
        factory(self).map_err(|source| match source.downcast::<ResolveError>() {
            // Keep cycle errors recognisable through nested factories.
            Ok(inner) if matches!(*inner, ResolveError::Cycle { .. }) => *inner,
            Ok(inner) => ResolveError::Factory {
                service: name,
                source: inner,
            },
            Err(source) => ResolveError::Factory {
                service: name,
                source,
            },
        })
    }
}

/// The `Arc<T>` inside a resolved service.
fn downcast<T: ?Sized + Send + Sync + 'static>(value: &Erased) -> Arc<T> {
    value
        .downcast_ref::<Arc<T>>()
        .expect("services are stored as `Arc<T>` under `TypeId::of::<T>()`")
        .clone()
}

fn current_requester(provider: usize) -> Option<&'static str> {
    RESOLVING.with(|stack| {
        stack
            .borrow()
            .iter()
            .rev()
            .find(|(p, _, _)| *p == provider)
            .map(|(_, _, n)| *n)
    })
}
