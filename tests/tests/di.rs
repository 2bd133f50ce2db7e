//! The service container: registrations, build checks, resolution.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use token_mgmt::BoxError;
use token_mgmt::di::{
    BuildProblem, Dependency, FromProvider, ResolveError, ServiceCollection, ServiceProvider,
};

#[derive(Debug)]
struct A;
#[derive(Debug)]
struct B;
#[derive(Debug)]
struct C;
#[allow(dead_code)]
struct NeedsAB {
    a: Arc<A>,
    b: Arc<B>,
}

fn missing(problems: &[BuildProblem]) -> Vec<(&'static str, String)> {
    problems
        .iter()
        .filter_map(|p| match p {
            BuildProblem::MissingDependency {
                service,
                required_by,
                ..
            } => Some((*service, required_by.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn singleton_value_and_factory_resolve() {
    let mut services = ServiceCollection::new();
    services.add_singleton(A).add_singleton(B);
    services.add_singleton_with(|(a, b): (Arc<A>, Arc<B>)| Ok(NeedsAB { a, b }));
    let provider = services.build().unwrap();
    let first = provider.get_required::<NeedsAB>().unwrap();
    let second = provider.get_required::<NeedsAB>().unwrap();
    assert!(Arc::ptr_eq(&first, &second), "a singleton is one instance");
    assert!(Arc::ptr_eq(
        &first.a,
        &provider.get::<A>().unwrap().unwrap()
    ));
}

#[test]
fn transient_is_built_on_every_resolution() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut services = ServiceCollection::new();
    let counter = calls.clone();
    services.add_transient(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
        Ok(C)
    });
    let provider = services.build().unwrap();
    let one = provider.get_required::<C>().unwrap();
    let two = provider.get_required::<C>().unwrap();
    assert!(!Arc::ptr_eq(&one, &two));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[test]
fn missing_service_error_names_the_type_and_the_requester() {
    let mut services = ServiceCollection::new();
    // Undeclared dependency: build() cannot see it, resolution reports it.
    services.add_singleton_factory(|p: &ServiceProvider| {
        p.get_required::<A>()?;
        Ok(C)
    });
    let provider = services.build().unwrap();
    assert!(provider.get::<A>().unwrap().is_none());
    let error = provider.get_required::<A>().unwrap_err();
    assert!(
        matches!(error, ResolveError::NotRegistered { service, required_by: None } if service.ends_with("::A"))
    );

    let error = provider.get_required::<C>().unwrap_err();
    let ResolveError::Factory { service, source } = &error else {
        panic!("expected a factory error, got {error:?}");
    };
    assert!(service.ends_with("::C"));
    let inner = source
        .downcast_ref::<ResolveError>()
        .expect("the cause is a ResolveError");
    assert!(
        matches!(inner, ResolveError::NotRegistered { service, required_by: Some(by) } if service.ends_with("::A") && by.ends_with("::C")),
        "{inner:?}"
    );
    // The message says what failed, `source()` why: the cause is not repeated.
    let text = error.to_string();
    assert!(text.contains("di::C") && !text.contains("di::A"), "{text}");
    let cause = std::error::Error::source(&error)
        .expect("the cause")
        .to_string();
    assert!(
        cause.contains("di::A") && cause.contains("di::C"),
        "{cause}"
    );
}

#[test]
fn build_reports_two_missing_dependencies_in_one_error() {
    let mut services = ServiceCollection::new();
    services.add_singleton_with(|(a, b): (Arc<A>, Arc<B>)| Ok(NeedsAB { a, b }));
    let error = services.build().unwrap_err();
    let missing = missing(error.problems());
    assert_eq!(missing.len(), 2, "{error}");
    assert!(
        missing
            .iter()
            .any(|(s, by)| s.ends_with("::A") && by.ends_with("::NeedsAB"))
    );
    assert!(
        missing
            .iter()
            .any(|(s, by)| s.ends_with("::B") && by.ends_with("::NeedsAB"))
    );
    let text = error.to_string();
    assert!(
        text.contains("2 problems") && text.contains("di::A") && text.contains("di::B"),
        "{text}"
    );
}

#[test]
fn optional_dependencies_are_not_required() {
    let mut services = ServiceCollection::new();
    services.add_singleton_with(|a: Option<Arc<A>>| Ok(if a.is_some() { 1u8 } else { 0u8 }));
    let provider = services.build().unwrap();
    assert_eq!(*provider.get_required::<u8>().unwrap(), 0);
}

#[test]
fn dependency_cycle_is_reported() {
    let mut services = ServiceCollection::new();
    services.add_singleton_with(|_: Arc<B>| Ok(A));
    services.add_singleton_with(|_: Arc<C>| Ok(B));
    services.add_singleton_with(|_: Arc<A>| Ok(C));
    let error = services.build().unwrap_err();
    let cycles: Vec<_> = error
        .problems()
        .iter()
        .filter_map(|p| match p {
            BuildProblem::Cycle { path } => Some(path.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(cycles.len(), 1, "{error}");
    let path = &cycles[0];
    assert_eq!(path.len(), 4, "{path:?}");
    assert_eq!(path.first(), path.last());
    for name in ["::A", "::B", "::C"] {
        assert!(path.iter().any(|p| p.ends_with(name)), "{path:?}");
    }
    assert!(error.to_string().contains("dependency cycle"), "{error}");
}

#[test]
fn self_dependency_is_a_cycle() {
    let mut services = ServiceCollection::new();
    services.add_transient_with(|_: Arc<A>| Ok(A));
    let error = services.build().unwrap_err();
    assert!(matches!(error.problems(), [BuildProblem::Cycle { path }] if path.len() == 2));
}

#[test]
fn undeclared_cycle_is_an_error_not_a_deadlock() {
    let mut services = ServiceCollection::new();
    services.add_singleton_factory(|p: &ServiceProvider| {
        p.get_required::<B>()?;
        Ok(A)
    });
    services.add_singleton_factory(|p: &ServiceProvider| {
        p.get_required::<A>()?;
        Ok(B)
    });
    let provider = services.build().unwrap();
    let error = provider.get_required::<A>().unwrap_err();
    let ResolveError::Cycle { path } = &error else {
        panic!("expected a cycle, got {error:?}");
    };
    assert_eq!(path.len(), 3, "{path:?}");
    // Nothing was cached and nothing is stuck: a second attempt reports the same.
    assert!(matches!(
        provider.get_required::<B>(),
        Err(ResolveError::Cycle { .. })
    ));
}

#[test]
fn duplicate_registration_is_reported() {
    let mut services = ServiceCollection::new();
    services.add_singleton(A);
    services.add_singleton_factory(|_| Ok(A));
    let error = services.build().unwrap_err();
    assert!(
        matches!(error.problems(), [BuildProblem::Duplicate { service, .. }] if service.ends_with("::A")),
        "{error}"
    );
}

#[test]
fn recorded_errors_checks_and_missing_dependencies_are_reported_together() {
    let mut services = ServiceCollection::new();
    let parse: Result<u16, _> = "not a port".parse::<u16>();
    if let Err(error) = parse {
        services.record_error("client `api`", error.into());
    }
    services.add_build_check(|s: &ServiceCollection| {
        if s.contains::<B>() {
            Vec::new()
        } else {
            vec![BuildProblem::custom("B must be registered")]
        }
    });
    services.add_singleton_with(|_: Arc<A>| Ok(C));
    let error = services.build().unwrap_err();
    let problems = error.problems();
    assert_eq!(problems.len(), 3, "{error}");
    assert!(problems.iter().any(
        |p| matches!(p, BuildProblem::Configuration { context, .. } if context == "client `api`")
    ));
    assert!(problems.iter().any(
        |p| matches!(p, BuildProblem::Custom { message } if message == "B must be registered")
    ));
    assert_eq!(missing(problems).len(), 1);
}

#[test]
fn declared_dependencies_are_checked_and_listed() {
    let mut services = ServiceCollection::new();
    services.declare_dependencies(
        "my::Worker",
        vec![
            Dependency::required::<A>().with_name("primary"),
            Dependency::optional::<B>(),
        ],
    );
    let listed: Vec<_> = services
        .declared_dependencies()
        .map(|(by, d)| (by.to_owned(), d.name().map(str::to_owned)))
        .collect();
    assert_eq!(
        listed,
        [
            ("my::Worker".to_owned(), Some("primary".to_owned())),
            ("my::Worker".to_owned(), None)
        ]
    );
    let error = services.build().unwrap_err();
    assert!(
        matches!(error.problems(), [BuildProblem::MissingDependency { required_by, name: Some(name), .. }] if required_by == "my::Worker" && name == "primary"),
        "{error}"
    );
}

#[derive(Default)]
struct Registry {
    names: Vec<String>,
}

#[test]
fn extension_state_moves_into_the_provider() {
    let mut services = ServiceCollection::new();
    assert!(services.extension::<Registry>().is_none());
    services
        .extension_mut::<Registry>()
        .names
        .push("one".into());
    services
        .extension_mut::<Registry>()
        .names
        .push("two".into());
    assert_eq!(services.extension::<Registry>().unwrap().names.len(), 2);
    let provider = services.build().unwrap();
    assert_eq!(
        provider.extension::<Registry>().unwrap().names,
        ["one", "two"]
    );
    assert!(provider.extension::<String>().is_none());
}

#[derive(Clone)]
struct Handle {
    shared: Arc<AtomicUsize>,
}
token_mgmt::inject_by_clone!(Handle);

#[test]
fn inject_by_clone_hands_out_clones_of_the_singleton() {
    let mut services = ServiceCollection::new();
    services.add_singleton(Handle {
        shared: Arc::new(AtomicUsize::new(7)),
    });
    services.add_singleton_with(|(h, p): (Handle, ServiceProvider)| {
        assert!(p.contains::<Handle>());
        Ok(h.shared.load(Ordering::SeqCst))
    });
    let provider = services.build().unwrap();
    let handle = Handle::from_provider(&provider).unwrap();
    handle.shared.store(9, Ordering::SeqCst);
    assert_eq!(
        Handle::from_provider(&provider)
            .unwrap()
            .shared
            .load(Ordering::SeqCst),
        9
    );
    assert_eq!(*provider.get_required::<usize>().unwrap(), 9);
    assert_eq!(
        <Handle as FromProvider>::dependencies(),
        [Dependency::required::<Handle>()]
    );

    let empty = ServiceCollection::new().build().unwrap();
    assert!(matches!(
        Handle::from_provider(&empty),
        Err(ResolveError::NotRegistered { .. })
    ));
}

#[test]
fn a_failed_singleton_factory_is_retried() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let mut services = ServiceCollection::new();
    services.add_singleton_factory(move |_| -> Result<A, BoxError> {
        if counter.fetch_add(1, Ordering::SeqCst) == 0 {
            Err("first attempt fails".into())
        } else {
            Ok(A)
        }
    });
    let provider = services.build().unwrap();
    let error = provider.get_required::<A>().unwrap_err();
    assert!(
        !error.to_string().contains("first attempt fails"),
        "{error}"
    );
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "first attempt fails"
    );
    assert!(provider.get_required::<A>().is_ok());
    assert!(provider.get_required::<A>().is_ok());
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn singleton_factory_runs_once_under_100_concurrent_resolutions() {
    const TASKS: usize = 100;
    let calls = Arc::new(AtomicUsize::new(0));
    let arrived = Arc::new(AtomicUsize::new(0));
    let mut services = ServiceCollection::new();
    {
        let calls = calls.clone();
        let arrived = arrived.clone();
        services.add_singleton_factory(move |_| {
            calls.fetch_add(1, Ordering::SeqCst);
            // Hold the factory open until every task is resolving, so they all race this first
            // construction (bounded, in case resolutions are not concurrent at all).
            let deadline = Instant::now() + Duration::from_secs(5);
            while arrived.load(Ordering::SeqCst) < TASKS && Instant::now() < deadline {
                std::thread::yield_now();
            }
            Ok(C)
        });
    }
    let provider = services.build().unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for _ in 0..TASKS {
        let provider = provider.clone();
        let barrier = barrier.clone();
        let arrived = arrived.clone();
        // Blocking-pool threads: all 100 resolutions really run at the same time.
        tasks.push(tokio::task::spawn_blocking(move || {
            barrier.wait();
            arrived.fetch_add(1, Ordering::SeqCst);
            provider
                .get_required::<C>()
                .map(|c| Arc::as_ptr(&c) as usize)
        }));
    }
    let mut pointers = Vec::new();
    for task in tasks {
        pointers.push(task.await.unwrap().unwrap());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "the factory ran more than once"
    );
    pointers.dedup();
    assert_eq!(pointers.len(), 1, "every task got the same instance");
}

/// How long a resolution may take before the test calls it a deadlock (they take microseconds).
const DEADLOCK: Duration = Duration::from_secs(20);

/// Runs `f` on its own thread and returns its result, failing the test if it does not finish: a
/// deadlocked resolution fails the test instead of hanging it.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(DEADLOCK) {
        Ok(value) => value,
        Err(RecvTimeoutError::Timeout) => panic!("deadlock: not finished after {DEADLOCK:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("the resolving thread panicked"),
    }
}

struct NeedsA(Arc<A>);

#[test]
fn get_reports_a_factory_failure_instead_of_none() {
    let mut services = ServiceCollection::new();
    services.add_singleton_factory::<A, _>(|_| Err("no A today".into()));
    services.add_singleton(B);
    let provider = services.build().unwrap();
    let error = provider.get::<A>().unwrap_err();
    assert!(
        matches!(&error, ResolveError::Factory { service, .. } if service.ends_with("::A")),
        "{error:?}"
    );
    assert_eq!(
        std::error::Error::source(&error).unwrap().to_string(),
        "no A today"
    );
    assert!(provider.get::<B>().unwrap().is_some());
    assert!(provider.get::<C>().unwrap().is_none());
    // The same for an optional dependency: a failure is not mistaken for "not registered".
    assert!(matches!(
        <Option<Arc<A>>>::from_provider(&provider),
        Err(ResolveError::Factory { .. })
    ));
}

#[test]
fn a_singleton_factory_can_resolve_its_dependency_on_another_thread() {
    let mut services = ServiceCollection::new();
    // A is built on the spawned thread while NeedsA's factory runs on the caller's.
    services.add_singleton_factory(|_| Ok(A));
    services.add_singleton_factory(|p: &ServiceProvider| {
        let p = p.clone();
        let a = std::thread::spawn(move || p.get_required::<A>())
            .join()
            .expect("the spawned thread does not panic")?;
        Ok(NeedsA(a))
    });
    let provider = services.build().unwrap();
    let resolver = provider.clone();
    let needs = within_deadline(move || resolver.get_required::<NeedsA>()).unwrap();
    assert!(Arc::ptr_eq(
        &needs.0,
        &provider.get_required::<A>().unwrap()
    ));
}

#[test]
fn a_singleton_factory_can_block_on_a_spawned_task_that_resolves_its_dependency() {
    let mut services = ServiceCollection::new();
    services.add_singleton_factory(|_| Ok(A));
    services.add_singleton_factory(|p: &ServiceProvider| {
        let p = p.clone();
        // A blocking call into a task that runs on a tokio worker thread.
        let runtime = tokio::runtime::Handle::current();
        let a = runtime.block_on(tokio::spawn(async move { p.get_required::<A>() }))??;
        Ok(NeedsA(a))
    });
    let provider = services.build().unwrap();
    let resolver = provider.clone();
    let needs = within_deadline(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap();
        runtime
            .block_on(async move {
                tokio::task::spawn_blocking(move || resolver.get_required::<NeedsA>()).await
            })
            .unwrap()
    })
    .unwrap();
    assert!(Arc::ptr_eq(
        &needs.0,
        &provider.get_required::<A>().unwrap()
    ));
}

/// A service registered as a trait object, depending on the others.
trait Describe: Send + Sync {
    fn describe(&self) -> usize;
}

struct Described(#[allow(dead_code)] Arc<NeedsAB>);

impl Describe for Described {
    fn describe(&self) -> usize {
        42
    }
}

#[test]
fn each_singleton_is_built_once_when_100_threads_resolve_a_graph_of_them() {
    const THREADS: usize = 100;
    let calls: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let arrived = Arc::new(AtomicUsize::new(0));
    // Each factory waits until every thread is resolving, so they all race the first constructions
    // (bounded, in case resolutions are not concurrent at all).
    let count = move |calls: &Arc<[AtomicUsize; 4]>, arrived: &Arc<AtomicUsize>, i: usize| {
        calls[i].fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(5);
        while arrived.load(Ordering::SeqCst) < THREADS && Instant::now() < deadline {
            std::thread::yield_now();
        }
    };
    let mut services = ServiceCollection::new();
    let (c, r) = (calls.clone(), arrived.clone());
    services.add_singleton_factory(move |_| {
        count(&c, &r, 0);
        Ok(A)
    });
    let (c, r) = (calls.clone(), arrived.clone());
    services.add_singleton_with(move |_: Arc<A>| {
        count(&c, &r, 1);
        Ok(B)
    });
    let (c, r) = (calls.clone(), arrived.clone());
    services.add_singleton_with(move |(a, b): (Arc<A>, Arc<B>)| {
        count(&c, &r, 2);
        Ok(NeedsAB { a, b })
    });
    let (c, r) = (calls.clone(), arrived.clone());
    services.add_singleton_arc_with::<dyn Describe, _, _>(move |all: Arc<NeedsAB>| {
        count(&c, &r, 3);
        Ok(Arc::new(Described(all)))
    });
    let provider = services.build().unwrap();

    let pointers = within_deadline(move || {
        let barrier = Arc::new(Barrier::new(THREADS));
        let threads: Vec<_> = (0..THREADS)
            .map(|i| {
                let (provider, barrier, arrived) =
                    (provider.clone(), barrier.clone(), arrived.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    arrived.fetch_add(1, Ordering::SeqCst);
                    // Every thread resolves one of the four, so all are built concurrently.
                    let pointer = match i % 4 {
                        0 => Arc::as_ptr(&provider.get_required::<A>().unwrap()) as usize,
                        1 => Arc::as_ptr(&provider.get_required::<B>().unwrap()) as usize,
                        2 => Arc::as_ptr(&provider.get_required::<NeedsAB>().unwrap()) as usize,
                        _ => {
                            let described = provider.get_required::<dyn Describe>().unwrap();
                            assert_eq!(described.describe(), 42);
                            Arc::as_ptr(&described).cast::<()>() as usize
                        }
                    };
                    (i % 4, pointer)
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .collect::<Vec<_>>()
    });
    for (i, calls) in calls.iter().enumerate() {
        assert_eq!(calls.load(Ordering::SeqCst), 1, "factory {i} ran once");
    }
    for kind in 0..4 {
        let mut same: Vec<usize> = pointers
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, p)| *p)
            .collect();
        same.dedup();
        assert_eq!(
            same.len(),
            1,
            "service {kind}: one instance for every thread"
        );
    }
}

#[test]
fn an_undeclared_cycle_across_two_threads_is_an_error_not_a_deadlock() {
    // A and B resolve each other, undeclared, each first resolved on its own thread: both factories
    // are running before either asks for the other.
    let rendezvous = Arc::new(Barrier::new(2));
    let mut services = ServiceCollection::new();
    let (barrier, first) = (rendezvous.clone(), AtomicBool::new(true));
    services.add_singleton_factory(move |p: &ServiceProvider| {
        if first.swap(false, Ordering::SeqCst) {
            barrier.wait();
        }
        p.get_required::<B>()?;
        Ok(A)
    });
    let (barrier, first) = (rendezvous.clone(), AtomicBool::new(true));
    services.add_singleton_factory(move |p: &ServiceProvider| {
        if first.swap(false, Ordering::SeqCst) {
            barrier.wait();
        }
        p.get_required::<A>()?;
        Ok(B)
    });
    let provider = services.build().unwrap();
    let results = within_deadline(move || {
        let p = provider.clone();
        let a = std::thread::spawn(move || p.get_required::<A>().map(drop));
        let p = provider.clone();
        let b = std::thread::spawn(move || p.get_required::<B>().map(drop));
        [a.join().unwrap(), b.join().unwrap()]
    });
    for result in results {
        let Err(ResolveError::Cycle { path }) = &result else {
            panic!("expected a cycle, got {result:?}");
        };
        assert_eq!(path.len(), 3, "{path:?}");
        assert_eq!(path.first(), path.last(), "{path:?}");
        assert!(path.iter().any(|p| p.ends_with("::A")), "{path:?}");
        assert!(path.iter().any(|p| p.ends_with("::B")), "{path:?}");
    }
}

#[test]
fn a_cycle_through_a_trait_object_service_is_reported_by_build() {
    let mut services = ServiceCollection::new();
    services.add_singleton_arc_with::<dyn Describe, _, _>(|all: Arc<NeedsAB>| {
        Ok(Arc::new(Described(all)))
    });
    services
        .add_singleton_with(|(_, a, b): (Arc<dyn Describe>, Arc<A>, Arc<B>)| Ok(NeedsAB { a, b }));
    services.add_singleton(A).add_singleton(B);
    let error = services.build().unwrap_err();
    let [BuildProblem::Cycle { path }] = error.problems() else {
        panic!("expected one cycle: {error}");
    };
    assert_eq!(path.len(), 3, "{path:?}");
    assert!(
        path.iter()
            .any(|p| p.contains("dyn") && p.ends_with("Describe")),
        "{path:?}"
    );
    assert!(path.iter().any(|p| p.ends_with("::NeedsAB")), "{path:?}");
}

#[test]
fn errors_say_what_failed_and_their_source_says_why() {
    use std::error::Error;

    let named = ResolveError::named::<C>("orders", "no such client");
    assert_eq!(named.to_string(), "cannot create `di::C` named \"orders\"");
    assert_eq!(named.source().unwrap().to_string(), "no such client");

    let factory = ResolveError::factory::<C>("disk full");
    assert!(!factory.to_string().contains("disk full"), "{factory}");
    assert_eq!(factory.source().unwrap().to_string(), "disk full");

    let mut services = ServiceCollection::new();
    services.record_error("client `api`", "port 70000 is out of range".into());
    let error = services.build().unwrap_err();
    let [problem @ BuildProblem::Configuration { .. }] = error.problems() else {
        panic!("expected a configuration problem: {error}");
    };
    assert_eq!(problem.to_string(), "configuration failed in client `api`");
    assert_eq!(
        problem.source().unwrap().to_string(),
        "port 70000 is out of range"
    );
    // The build error lists every problem with its causes: it has no single source to defer to.
    assert_eq!(
        error.to_string(),
        "invalid service configuration: configuration failed in client `api`: port 70000 is out of range"
    );
    assert!(error.source().is_none());
}
