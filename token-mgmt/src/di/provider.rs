use std::any::{Any, TypeId, type_name};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, ThreadId};

use super::ResolveError;
use super::collection::Extensions;
use super::dependency::Dependency;
use crate::BoxError;

pub(crate) type AnyArc = Arc<dyn Any + Send + Sync>;
pub(crate) type Factory = Arc<dyn Fn(&ServiceProvider) -> Result<AnyArc, BoxError> + Send + Sync>;

pub(crate) enum Lifetime {
    Value(AnyArc),
    Singleton(Factory),
    Transient(Factory),
}

pub(crate) struct Registration {
    pub(crate) type_name: &'static str,
    pub(crate) lifetime: Lifetime,
    pub(crate) dependencies: Vec<Dependency>,
}

enum Service {
    Singleton {
        type_name: &'static str,
        cell: OnceLock<AnyArc>,
        factory: Option<Factory>,
    },
    Transient {
        type_name: &'static str,
        factory: Factory,
    },
}

struct Inner {
    services: HashMap<TypeId, Service>,
    extensions: Extensions,
    gate: ConstructionGate,
}

/// The built container: resolves services by type. Cheap to clone (an `Arc` inside).
///
/// Obtained from [`ServiceCollection::build`](super::ServiceCollection::build). Singletons are created
/// at most once, on first resolution, even when many threads resolve them concurrently (first
/// constructions are serialised per provider; resolving an already-built singleton takes no lock).
///
/// A singleton that keeps a clone of the provider keeps the whole container alive: that is the
/// intended lifetime of an application's root container.
#[derive(Clone)]
pub struct ServiceProvider {
    inner: Arc<Inner>,
}

impl fmt::Debug for ServiceProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self
            .inner
            .services
            .values()
            .map(|s| match s {
                Service::Singleton { type_name, .. } | Service::Transient { type_name, .. } => {
                    *type_name
                }
            })
            .collect();
        names.sort_unstable();
        f.debug_struct("ServiceProvider")
            .field("services", &names)
            .finish()
    }
}

thread_local! {
    /// Services being constructed on this thread: (provider id, type), innermost last.
    static RESOLVING: RefCell<Vec<(usize, TypeId, &'static str)>> = const { RefCell::new(Vec::new()) };
}

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
                let service = match r.lifetime {
                    Lifetime::Value(value) => Service::Singleton {
                        type_name: r.type_name,
                        cell: OnceLock::from(value),
                        factory: None,
                    },
                    Lifetime::Singleton(factory) => Service::Singleton {
                        type_name: r.type_name,
                        cell: OnceLock::new(),
                        factory: Some(factory),
                    },
                    Lifetime::Transient(factory) => Service::Transient {
                        type_name: r.type_name,
                        factory,
                    },
                };
                (id, service)
            })
            .collect();
        Self {
            inner: Arc::new(Inner {
                services,
                extensions,
                gate: ConstructionGate::default(),
            }),
        }
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The service `T`, or `None` when it is not registered or its factory failed (the failure is
    /// logged; use [`get_required`](Self::get_required) to see it).
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        if !self.contains::<T>() {
            return None;
        }
        match self.get_required::<T>() {
            Ok(value) => Some(value),
            Err(error) => {
                tracing::warn!(service = type_name::<T>(), %error, "service resolution failed");
                None
            }
        }
    }

    /// Whether a service of type `T` is registered.
    pub fn contains<T: 'static>(&self) -> bool {
        self.inner.services.contains_key(&TypeId::of::<T>())
    }

    /// The service `T`, or an error naming the missing type and (inside a factory) who asked for it,
    /// or the factory's error.
    pub fn get_required<T: Send + Sync + 'static>(&self) -> Result<Arc<T>, ResolveError> {
        let any = self.resolve(TypeId::of::<T>(), type_name::<T>())?;
        any.downcast::<T>()
            .map_err(|_| ResolveError::NotRegistered {
                service: type_name::<T>(),
                required_by: None,
            })
    }

    /// State of type `S` that extension methods stored with
    /// [`ServiceCollection::extension_mut`](super::ServiceCollection::extension_mut).
    pub fn extension<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.inner
            .extensions
            .get(&TypeId::of::<S>())
            .and_then(|b| b.downcast_ref::<S>())
    }

    fn resolve(&self, id: TypeId, name: &'static str) -> Result<AnyArc, ResolveError> {
        let Some(service) = self.inner.services.get(&id) else {
            return Err(ResolveError::NotRegistered {
                service: name,
                required_by: current_requester(self.id()),
            });
        };
        match service {
            Service::Singleton {
                type_name,
                cell,
                factory,
            } => {
                if let Some(value) = cell.get() {
                    return Ok(value.clone());
                }
                let Some(factory) = factory else {
                    // Value registrations are always initialised; treat as missing defensively.
                    return Err(ResolveError::NotRegistered {
                        service: type_name,
                        required_by: None,
                    });
                };
                let _gate = self.inner.gate.enter();
                if let Some(value) = cell.get() {
                    return Ok(value.clone());
                }
                let value = self.construct(id, type_name, factory)?;
                // We hold the construction gate, so nobody else can have set the cell.
                let _ = cell.set(value.clone());
                Ok(cell.get().cloned().unwrap_or(value))
            }
            Service::Transient { type_name, factory } => self.construct(id, type_name, factory),
        }
    }

    fn construct(
        &self,
        id: TypeId,
        name: &'static str,
        factory: &Factory,
    ) -> Result<AnyArc, ResolveError> {
        let me = self.id();
        let cycle = RESOLVING.with(|stack| {
            let mut stack = stack.borrow_mut();
            let found = stack
                .iter()
                .position(|(p, t, _)| *p == me && *t == id)
                .map(|start| {
                    let mut path: Vec<&'static str> = stack[start..]
                        .iter()
                        .filter(|(p, _, _)| *p == me)
                        .map(|(_, _, n)| *n)
                        .collect();
                    path.push(name);
                    path
                });
            if found.is_none() {
                stack.push((me, id, name));
            }
            found
        });
        if let Some(path) = cycle {
            return Err(ResolveError::Cycle { path });
        }
        let _guard = ResolvingGuard;
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

/// Serialises singleton construction per provider, re-entrantly for the constructing thread (a
/// factory resolves its own dependencies). Holding one gate for all singletons means two threads
/// can never wait on each other's half-built singletons.
#[derive(Default)]
struct ConstructionGate {
    state: Mutex<GateState>,
    released: Condvar,
}

#[derive(Default)]
struct GateState {
    owner: Option<ThreadId>,
    depth: usize,
}

struct GateGuard<'a> {
    gate: &'a ConstructionGate,
}

impl ConstructionGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn enter(&self) -> GateGuard<'_> {
        let me = thread::current().id();
        let mut state = self.lock();
        loop {
            match state.owner {
                None => {
                    state.owner = Some(me);
                    state.depth = 1;
                    break;
                }
                Some(owner) if owner == me => {
                    state.depth += 1;
                    break;
                }
                Some(_) => {
                    state = self
                        .released
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
        }
        GateGuard { gate: self }
    }
}

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        let mut state = self.gate.lock();
        state.depth = state.depth.saturating_sub(1);
        if state.depth == 0 {
            state.owner = None;
            drop(state);
            self.gate.released.notify_one();
        }
    }
}
