use std::any::{Any, TypeId, type_name};
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use super::provider::{Erased, Factory, Lifetime, Registration};
use super::{BuildError, BuildProblem, Dependency, FromProvider, ServiceProvider};
use crate::BoxError;

type BuildCheck = Box<dyn Fn(&ServiceCollection) -> Vec<BuildProblem> + Send + Sync>;

/// Typed builder-time state, keyed by type (like axum's `Extensions`).
pub(crate) type Extensions = HashMap<TypeId, Box<dyn Any + Send + Sync>>;

/// The registrations of an application: build it with [`ServiceCollection::build`] into a
/// [`ServiceProvider`].
///
/// Services are keyed by type. Registering the same type twice is reported by `build()` as a
/// [`BuildProblem::Duplicate`]; use [`contains`](Self::contains) to register only when absent.
pub struct ServiceCollection {
    services: HashMap<TypeId, Registration>,
    order: Vec<TypeId>,
    extensions: Extensions,
    checks: Vec<BuildCheck>,
    problems: Vec<BuildProblem>,
    requirements: Vec<(String, Vec<Dependency>)>,
}

impl Default for ServiceCollection {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ServiceCollection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceCollection")
            .field(
                "services",
                &self
                    .order
                    .iter()
                    .filter_map(|id| self.services.get(id).map(|r| r.type_name))
                    .collect::<Vec<_>>(),
            )
            .field("extensions", &self.extensions.len())
            .field("checks", &self.checks.len())
            .field("recorded_problems", &self.problems.len())
            .finish()
    }
}

impl ServiceCollection {
    /// An empty collection.
    pub fn new() -> Self {
        Self {
            services: HashMap::new(),
            order: Vec::new(),
            extensions: HashMap::new(),
            checks: Vec::new(),
            problems: Vec::new(),
            requirements: Vec::new(),
        }
    }

    fn register<T: ?Sized + 'static>(
        &mut self,
        lifetime: Lifetime,
        dependencies: Vec<Dependency>,
    ) -> &mut Self {
        let id = TypeId::of::<T>();
        if self.services.contains_key(&id) {
            self.problems.push(BuildProblem::Duplicate {
                service: type_name::<T>(),
                what: "service",
            });
            return self;
        }
        self.services.insert(
            id,
            Registration {
                type_name: type_name::<T>(),
                lifetime,
                dependencies,
            },
        );
        self.order.push(id);
        self
    }

    /// Registers `value` as the singleton of type `T`; resolved as `Arc<T>`.
    pub fn add_singleton<T: Send + Sync + 'static>(&mut self, value: T) -> &mut Self {
        self.add_singleton_arc(Arc::new(value))
    }

    /// Registers a shared value as the singleton of type `T`, which may be unsized: a trait object
    /// (`Arc<dyn Trait>`), resolved and injected as `Arc<dyn Trait>`.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use token_mgmt::di::ServiceCollection;
    /// trait Clock: Send + Sync { fn now(&self) -> u64; }
    /// struct Fixed;
    /// impl Clock for Fixed { fn now(&self) -> u64 { 42 } }
    ///
    /// let mut services = ServiceCollection::new();
    /// services.add_singleton_arc::<dyn Clock>(Arc::new(Fixed));
    /// let provider = services.build()?;
    /// assert_eq!(provider.get_required::<dyn Clock>()?.now(), 42);
    /// # Ok::<(), token_mgmt::BoxError>(())
    /// ```
    pub fn add_singleton_arc<T: ?Sized + Send + Sync + 'static>(
        &mut self,
        value: Arc<T>,
    ) -> &mut Self {
        let value: Erased = Box::new(value);
        self.register::<T>(Lifetime::Value(value), Vec::new())
    }

    /// Registers a factory for the singleton `T`, called once, on first resolution (even when many
    /// threads resolve it at the same time). An error is returned to that caller and the next
    /// resolution (or one that was waiting for it) tries again.
    ///
    /// The factory's dependencies are not known to `build()`, which can then neither report them
    /// missing nor reject a cycle through them (see [`ServiceProvider`]'s notes on cycles); prefer
    /// [`add_singleton_with`](Self::add_singleton_with), which declares them.
    pub fn add_singleton_factory<T, F>(&mut self, f: F) -> &mut Self
    where
        T: Send + Sync + 'static,
        F: Fn(&ServiceProvider) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        self.register::<T>(
            Lifetime::Singleton(erase(move |p| f(p).map(Arc::new))),
            Vec::new(),
        )
    }

    /// Registers a factory for the singleton `T` that takes its dependencies as an argument
    /// resolved through [`FromProvider`]: `Arc<U>`, a cheap-clone handle, the `ServiceProvider`, or
    /// a tuple of those. `build()` checks that they are registered and not cyclic.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use token_mgmt::di::ServiceCollection;
    /// # struct A; struct B; struct C { a: Arc<A>, b: Arc<B> }
    /// let mut services = ServiceCollection::new();
    /// services.add_singleton(A).add_singleton(B);
    /// services.add_singleton_with(|(a, b): (Arc<A>, Arc<B>)| Ok(C { a, b }));
    /// assert!(services.build().is_ok());
    /// ```
    pub fn add_singleton_with<T, D, F>(&mut self, f: F) -> &mut Self
    where
        T: Send + Sync + 'static,
        D: FromProvider + 'static,
        F: Fn(D) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        self.add_singleton_arc_with(move |deps: D| f(deps).map(Arc::new))
    }

    /// Like [`add_singleton_with`](Self::add_singleton_with), for a factory that returns an
    /// `Arc<T>`, so `T` may be unsized (`Arc<dyn Trait>`).
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use token_mgmt::di::ServiceCollection;
    /// trait Greeter: Send + Sync { fn greet(&self) -> String; }
    /// struct Polite { name: Arc<String> }
    /// impl Greeter for Polite { fn greet(&self) -> String { format!("Hello, {}", self.name) } }
    ///
    /// let mut services = ServiceCollection::new();
    /// services.add_singleton(String::from("Ada"));
    /// services.add_singleton_arc_with::<dyn Greeter, _, _>(|name: Arc<String>| Ok(Arc::new(Polite { name })));
    /// let provider = services.build()?;
    /// assert_eq!(provider.get_required::<dyn Greeter>()?.greet(), "Hello, Ada");
    /// # Ok::<(), token_mgmt::BoxError>(())
    /// ```
    pub fn add_singleton_arc_with<T, D, F>(&mut self, f: F) -> &mut Self
    where
        T: ?Sized + Send + Sync + 'static,
        D: FromProvider + 'static,
        F: Fn(D) -> Result<Arc<T>, BoxError> + Send + Sync + 'static,
    {
        let deps = D::dependencies();
        self.register::<T>(Lifetime::Singleton(erase(with_deps(f))), deps)
    }

    /// Registers a factory for `T` that runs on every resolution (a transient service); each
    /// `get::<T>()` returns a new `Arc<T>`.
    pub fn add_transient<T, F>(&mut self, f: F) -> &mut Self
    where
        T: Send + Sync + 'static,
        F: Fn(&ServiceProvider) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        self.register::<T>(
            Lifetime::Transient(erase(move |p| f(p).map(Arc::new))),
            Vec::new(),
        )
    }

    /// Like [`add_transient`](Self::add_transient), with dependencies declared as in
    /// [`add_singleton_with`](Self::add_singleton_with).
    pub fn add_transient_with<T, D, F>(&mut self, f: F) -> &mut Self
    where
        T: Send + Sync + 'static,
        D: FromProvider + 'static,
        F: Fn(D) -> Result<T, BoxError> + Send + Sync + 'static,
    {
        let deps = D::dependencies();
        self.register::<T>(
            Lifetime::Transient(erase(with_deps(move |deps: D| f(deps).map(Arc::new)))),
            deps,
        )
    }

    /// Whether a service of type `T` is registered.
    pub fn contains<T: ?Sized + 'static>(&self) -> bool {
        self.services.contains_key(&TypeId::of::<T>())
    }

    /// Builder-time state of type `S`, created with `S::default()` on first use. Extension methods
    /// (`add_access_token_management`, `add_hosted_service`, ...) keep their registrations here; the
    /// state moves into the provider at build, readable with [`ServiceProvider::extension`].
    pub fn extension_mut<S: Default + Send + Sync + 'static>(&mut self) -> &mut S {
        let slot = self
            .extensions
            .entry(TypeId::of::<S>())
            .or_insert_with(|| Box::new(S::default()));
        slot.downcast_mut::<S>()
            .expect("extensions are keyed by their own TypeId")
    }

    /// Builder-time state of type `S`, if some was created with [`extension_mut`](Self::extension_mut).
    pub fn extension<S: Send + Sync + 'static>(&self) -> Option<&S> {
        self.extensions
            .get(&TypeId::of::<S>())
            .and_then(|b| b.downcast_ref::<S>())
    }

    /// Adds a check that [`build`](Self::build) runs over the finished collection; every problem it
    /// returns is listed in the [`BuildError`], alongside all others.
    pub fn add_build_check<F>(&mut self, f: F) -> &mut Self
    where
        F: Fn(&ServiceCollection) -> Vec<BuildProblem> + Send + Sync + 'static,
    {
        self.checks.push(Box::new(f));
        self
    }

    /// Records that a configuration step failed (for example a `?` inside a user's configuration
    /// closure); [`build`](Self::build) reports it as [`BuildProblem::Configuration`].
    pub fn record_error(&mut self, context: impl Into<String>, error: BoxError) {
        self.problems.push(BuildProblem::Configuration {
            context: context.into(),
            source: error,
        });
    }

    /// Records any problem for [`build`](Self::build) to report.
    pub fn record_problem(&mut self, problem: BuildProblem) {
        self.problems.push(problem);
    }

    /// Declares that `required_by` (for example a hosted worker, which is not itself a service) will
    /// resolve `dependencies`; `build()` reports the required ones that are not registered.
    pub fn declare_dependencies(
        &mut self,
        required_by: impl Into<String>,
        dependencies: Vec<Dependency>,
    ) -> &mut Self {
        self.requirements.push((required_by.into(), dependencies));
        self
    }

    /// Every declared dependency, with the name of what needs it: the dependencies of registered
    /// factories and those given to [`declare_dependencies`](Self::declare_dependencies). Build
    /// checks use it to validate named dependencies (such as named HTTP clients).
    pub fn declared_dependencies(&self) -> impl Iterator<Item = (&str, &Dependency)> + '_ {
        let services = self
            .order
            .iter()
            .filter_map(|id| self.services.get(id))
            .flat_map(|r| r.dependencies.iter().map(move |d| (r.type_name, d)));
        let declared = self
            .requirements
            .iter()
            .flat_map(|(by, deps)| deps.iter().map(move |d| (by.as_str(), d)));
        services.chain(declared)
    }

    /// Checks every registration and builds the provider, or reports every problem at once:
    /// errors recorded during configuration, duplicates, missing dependencies, cycles between
    /// factories, and the problems of each build check.
    pub fn build(mut self) -> Result<ServiceProvider, BuildError> {
        let mut problems = std::mem::take(&mut self.problems);

        let mut seen = HashSet::new();
        for (required_by, dep) in self.declared_dependencies() {
            if dep.is_optional() || self.services.contains_key(&dep.type_id()) {
                continue;
            }
            if seen.insert((
                required_by.to_owned(),
                dep.type_id(),
                dep.name().map(str::to_owned),
            )) {
                problems.push(BuildProblem::MissingDependency {
                    service: dep.type_name(),
                    required_by: required_by.to_owned(),
                    name: dep.name().map(str::to_owned),
                });
            }
        }

        for path in self.find_cycles() {
            problems.push(BuildProblem::Cycle { path });
        }

        let checks = std::mem::take(&mut self.checks);
        for check in &checks {
            problems.extend(check(&self));
        }

        if !problems.is_empty() {
            return Err(BuildError::new(problems));
        }
        Ok(ServiceProvider::new(self.services, self.extensions))
    }

    fn find_cycles(&self) -> Vec<Vec<&'static str>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Visiting,
            Done,
        }

        fn visit(
            id: TypeId,
            services: &HashMap<TypeId, Registration>,
            marks: &mut HashMap<TypeId, Mark>,
            stack: &mut Vec<TypeId>,
            cycles: &mut Vec<Vec<&'static str>>,
        ) {
            let Some(registration) = services.get(&id) else {
                return;
            };
            marks.insert(id, Mark::Visiting);
            stack.push(id);
            for dep in &registration.dependencies {
                let next = dep.type_id();
                match marks.get(&next) {
                    Some(Mark::Done) => {}
                    Some(Mark::Visiting) => {
                        if let Some(start) = stack.iter().position(|s| *s == next) {
                            let mut path: Vec<&'static str> = stack[start..]
                                .iter()
                                .filter_map(|s| services.get(s).map(|r| r.type_name))
                                .collect();
                            path.push(dep.type_name());
                            cycles.push(path);
                        }
                    }
                    None => visit(next, services, marks, stack, cycles),
                }
            }
            stack.pop();
            marks.insert(id, Mark::Done);
        }

        let mut marks = HashMap::new();
        let mut stack = Vec::new();
        let mut cycles = Vec::new();
        for id in &self.order {
            if !marks.contains_key(id) {
                visit(*id, &self.services, &mut marks, &mut stack, &mut cycles);
            }
        }
        cycles
    }
}

/// Type-erases a factory of `Arc<T>`.
fn erase<T, F>(f: F) -> Factory
where
    T: ?Sized + Send + Sync + 'static,
    F: Fn(&ServiceProvider) -> Result<Arc<T>, BoxError> + Send + Sync + 'static,
{
    Box::new(move |provider: &ServiceProvider| f(provider).map(|value| Box::new(value) as Erased))
}

/// A factory taking its declared dependencies `D` as a factory taking the provider.
fn with_deps<T, D, F>(
    f: F,
) -> impl Fn(&ServiceProvider) -> Result<T, BoxError> + Send + Sync + 'static
where
    D: FromProvider + 'static,
    F: Fn(D) -> Result<T, BoxError> + Send + Sync + 'static,
{
    move |provider: &ServiceProvider| f(D::from_provider(provider)?)
}
