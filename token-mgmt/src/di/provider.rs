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
    constructions: Constructions,
}

/// The built container: resolves services by type. Cheap to clone (an `Arc` inside).
///
/// Obtained from [`ServiceCollection::build`](super::ServiceCollection::build).
///
/// # Singletons
///
/// A singleton's factory runs at most once, on first resolution, however many threads resolve it
/// at the same time; a failed factory is not cached, the next resolution calls it again. Resolving
/// a built singleton takes no lock (a once-cell per registration). No lock is held while a factory
/// runs: a thread waits only while *the singleton it asked for* is being built by another thread.
/// So a factory may resolve its dependencies on other threads (spawn and join, rayon, a blocking
/// call into a spawned task), and a slow factory delays only the callers that need its service.
/// Resolution is synchronous, so that wait blocks the calling thread: in async code, resolve what
/// a worker needs when it is constructed (as `#[derive(Worker)]` does), not on every request.
///
/// A factory that resolves *itself*, directly or through other factories, is a cycle. `build()`
/// rejects cycles between declared dependencies ([`add_singleton_with`], `#[derive(Worker)]`).
/// Undeclared ones (a factory calling [`get_required`](Self::get_required)) are found when they
/// happen and returned as [`ResolveError::Cycle`] instead of waiting forever: on one thread, and
/// across threads that resolve each other's singletons. A cycle that passes through a thread the
/// factory waits for by other means (joining a thread that resolves the singleton being built) is
/// invisible to the container and blocks both threads: declare the dependencies of factories that
/// resolve on other threads, so `build()` rejects such cycles.
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
        let mut names: Vec<&str> = self
            .inner
            .services
            .values()
            .map(Service::type_name)
            .collect();
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
                constructions: Constructions::default(),
            }),
        }
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The service `T`: `Ok(None)` when it is not registered, an error when its factory failed.
    pub fn get<T: ?Sized + Send + Sync + 'static>(&self) -> Result<Option<Arc<T>>, ResolveError> {
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
                factory,
            } => {
                if let Some(value) = cell.get() {
                    return Ok(downcast::<T>(value));
                }
                // Checked first: on this thread, waiting for its own construction would never end.
                let _resolving = self.enter(id, type_name)?;
                let Some(_claim) =
                    self.inner
                        .constructions
                        .claim(self.id(), id, type_name, cell)?
                else {
                    // Another thread built it while this one waited.
                    return Ok(downcast::<T>(
                        cell.get().expect("set before its claim ends"),
                    ));
                };
                let value = self.call(type_name, factory)?;
                // Set before the claim is released (when `_claim` drops), so waiters find it.
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

/// Which singletons are being built, by which thread, and which threads wait for which: the
/// bookkeeping that builds each singleton at most once and finds a cycle between factories
/// resolving each other on different threads (which would otherwise wait for each other forever).
///
/// Its lock is only held to read and update these maps, never while a factory runs; a thread waits
/// only for the singleton it asked for.
#[derive(Default)]
struct Constructions {
    state: Mutex<ConstructionState>,
    /// Notified whenever a construction ends (built or failed).
    ended: Condvar,
}

#[derive(Default)]
struct ConstructionState {
    /// Singletons whose factory is running, with the thread running it and the type's name.
    building: HashMap<TypeId, (ThreadId, &'static str)>,
    /// Threads waiting for a singleton that another thread is building.
    waiting: HashMap<ThreadId, TypeId>,
}

/// The right to run a singleton's factory; released (and waiters woken) on drop.
struct Claim<'a> {
    constructions: &'a Constructions,
    id: TypeId,
}

impl Constructions {
    fn lock(&self) -> MutexGuard<'_, ConstructionState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Claims the construction of singleton `id`, waiting while another thread builds it: `None`
    /// once it is built, or the cycle if that thread is (through others) waiting for this one.
    fn claim(
        &self,
        provider: usize,
        id: TypeId,
        name: &'static str,
        cell: &OnceLock<Erased>,
    ) -> Result<Option<Claim<'_>>, ResolveError> {
        let me = thread::current().id();
        let mut state = self.lock();
        loop {
            // Checked under the lock, and the cell is set before a claim ends: no missed wake-up.
            if cell.get().is_some() {
                return Ok(None);
            }
            let Some(&(owner, _)) = state.building.get(&id) else {
                state.building.insert(id, (me, name));
                return Ok(Some(Claim {
                    constructions: self,
                    id,
                }));
            };
            if let Some(path) = state.cycle(provider, me, owner) {
                return Err(ResolveError::Cycle { path });
            }
            state.waiting.insert(me, id);
            state = self
                .ended
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            state.waiting.remove(&me);
        }
    }
}

impl ConstructionState {
    /// Whether thread `me`, about to wait for a singleton being built by `owner`, would wait for
    /// itself: `owner` waits for a singleton whose builder waits ... for one that `me` is building.
    /// Returns the cycle in dependency order, first type repeated at the end.
    fn cycle(&self, provider: usize, me: ThreadId, owner: ThreadId) -> Option<Vec<&'static str>> {
        let mut chain = Vec::new();
        let mut thread = owner;
        // Each wait was checked when it began, so the chain ends; the bound is only a safeguard.
        for _ in 0..=self.waiting.len() {
            let next = *self.waiting.get(&thread)?;
            let (builder, name) = *self.building.get(&next)?;
            chain.push(name);
            if builder == me {
                // `me` is building `next` and, further in, wants the singleton `owner` builds: its
                // resolution stack from `next` on (ending with that singleton) closes the cycle.
                return Some(RESOLVING.with(|stack| {
                    let stack = stack.borrow();
                    let mine: Vec<_> = stack.iter().filter(|(p, _, _)| *p == provider).collect();
                    let from = mine.iter().position(|(_, t, _)| *t == next).unwrap_or(0);
                    mine[from..]
                        .iter()
                        .map(|(_, _, n)| *n)
                        .chain(chain.iter().copied())
                        .collect()
                }));
            }
            thread = builder;
        }
        None
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.constructions.lock().building.remove(&self.id);
        self.constructions.ended.notify_all();
    }
}
