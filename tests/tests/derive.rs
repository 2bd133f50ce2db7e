//! `#[derive(Worker)]`: construction from the provider.

use std::sync::Arc;

use token_mgmt::di::{
    Dependency, Injectable, NamedService, ResolveError, ServiceCollection, ServiceProvider,
};
use token_mgmt::prelude::*;

#[derive(Debug, PartialEq)]
struct Settings {
    interval_secs: u64,
}

#[derive(Clone, Debug, PartialEq)]
struct Handle(Arc<str>);
token_mgmt::inject_by_clone!(Handle);

#[derive(Debug, Default, PartialEq)]
struct Counters {
    runs: u32,
}

struct Unregistered;

#[derive(Worker)]
struct Full {
    settings: Arc<Settings>,
    handle: Handle,
    provider: ServiceProvider,
    maybe: Option<Arc<Unregistered>>,
    #[inject(default)]
    counters: Counters,
    #[inject(default)]
    label: String,
}

fn provider() -> ServiceProvider {
    let mut services = ServiceCollection::new();
    services.add_singleton(Settings { interval_secs: 5 });
    services.add_singleton(Handle("shared".into()));
    services.build().unwrap()
}

#[test]
fn fields_are_resolved_by_type_and_defaulted() {
    let provider = provider();
    let worker = Full::inject(&provider).unwrap();
    assert_eq!(worker.settings.interval_secs, 5);
    assert!(Arc::ptr_eq(
        &worker.settings,
        &provider.get::<Settings>().unwrap().unwrap()
    ));
    assert_eq!(worker.handle, Handle("shared".into()));
    assert!(worker.provider.contains::<Settings>());
    assert!(worker.maybe.is_none());
    assert_eq!(worker.counters, Counters::default());
    assert_eq!(worker.label, "");
}

#[test]
fn dependencies_list_the_injected_field_types_only() {
    let deps = Full::dependencies();
    assert_eq!(
        deps,
        [
            Dependency::required::<Settings>(),
            Dependency::required::<Handle>(),
            Dependency::optional::<Unregistered>(),
        ]
    );
}

#[test]
fn a_missing_field_service_names_the_field_the_type_and_the_worker() {
    let provider = ServiceCollection::new().build().unwrap();
    let Err(error) = Full::inject(&provider) else {
        panic!("the worker was built without its services");
    };
    match &error {
        ResolveError::Field {
            target,
            field,
            error,
        } => {
            assert!(target.ends_with("::Full"));
            assert_eq!(*field, "settings");
            assert!(
                matches!(**error, ResolveError::NotRegistered { service, required_by: Some(by) } if service.ends_with("::Settings") && by.ends_with("::Full"))
            );
        }
        other => panic!("expected a field error, got {other:?}"),
    }
    // What failed (the field), then why (the missing service) as the source, not repeated.
    let text = error.to_string();
    assert!(
        text.contains("`settings`") && text.contains("Full") && !text.contains("Settings"),
        "{text}"
    );
    let cause = std::error::Error::source(&error).unwrap().to_string();
    assert!(
        cause.contains("Settings") && cause.starts_with("no service"),
        "{cause}"
    );
}

/// Stands in for the HTTP client: resolved by name through the `NamedService` hook.
#[derive(Debug)]
struct NamedClient {
    name: String,
    prefix: Handle,
}

impl NamedService for NamedClient {
    fn from_provider_named(provider: &ServiceProvider, name: &str) -> Result<Self, ResolveError> {
        let prefix = token_mgmt::di::resolve_by_clone::<Handle>(provider)?;
        if name == "unknown" {
            return Err(ResolveError::named::<Self>(name, "no such client"));
        }
        Ok(Self {
            name: name.to_owned(),
            prefix,
        })
    }

    fn dependencies_named(name: &str) -> Vec<Dependency> {
        vec![Dependency::required::<Handle>().with_name(name)]
    }
}

#[derive(Worker)]
struct UsesClients {
    #[inject(client = "orders")]
    orders: NamedClient,
    #[inject(client = "unknown")]
    unknown: NamedClient,
}

#[derive(Worker)]
struct UsesOneClient {
    #[inject(client = "orders")]
    orders: NamedClient,
}

#[test]
fn named_clients_go_through_the_named_service_hook() {
    let provider = provider();
    let worker = UsesOneClient::inject(&provider).unwrap();
    assert_eq!(worker.orders.name, "orders");
    assert_eq!(worker.orders.prefix, Handle("shared".into()));
    assert_eq!(
        UsesOneClient::dependencies(),
        [Dependency::required::<Handle>().with_name("orders")]
    );

    let error = UsesClients::inject(&provider)
        .map(|w| (w.orders, w.unknown))
        .unwrap_err();
    assert!(
        matches!(&error, ResolveError::Field { field: "unknown", error, .. } if matches!(**error, ResolveError::Named { ref name, .. } if name == "unknown")),
        "{error:?}"
    );
    assert_eq!(UsesClients::dependencies().len(), 2);

    // Each level says what failed; the next `source()` says why; no message repeats its cause.
    let chain: Vec<String> =
        std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
            .map(ToString::to_string)
            .collect();
    assert_eq!(chain.len(), 3, "{chain:?}");
    assert!(
        chain[0].contains("`unknown`") && !chain[0].contains("named"),
        "{chain:?}"
    );
    assert!(chain[1].contains("named \"unknown\""), "{chain:?}");
    assert!(!chain[1].contains("no such client"), "{chain:?}");
    assert_eq!(chain[2], "no such client");
    assert_eq!(
        token_mgmt::hosting::error_chain(&error).to_string(),
        chain.join(": ")
    );
}

/// A service registered as a trait object.
trait Greeter: Send + Sync {
    fn greet(&self) -> String;
}

struct Polite {
    settings: Arc<Settings>,
}

impl Greeter for Polite {
    fn greet(&self) -> String {
        format!("hello every {} s", self.settings.interval_secs)
    }
}

#[derive(Worker)]
struct Greets {
    greeter: Arc<dyn Greeter>,
    maybe: Option<Arc<dyn Greeter>>,
}

#[test]
fn a_trait_object_service_is_registered_and_injected() {
    let mut services = ServiceCollection::new();
    services.add_singleton(Settings { interval_secs: 7 });
    services.add_singleton_arc_with::<dyn Greeter, _, _>(|settings: Arc<Settings>| {
        Ok(Arc::new(Polite { settings }))
    });
    let provider = services.build().unwrap();
    let worker = Greets::inject(&provider).unwrap();
    assert_eq!(worker.greeter.greet(), "hello every 7 s");
    let maybe = worker.maybe.expect("registered, so injected");
    assert!(Arc::ptr_eq(&worker.greeter, &maybe), "one singleton");
    assert_eq!(
        Greets::dependencies(),
        [
            Dependency::required::<dyn Greeter>(),
            Dependency::optional::<dyn Greeter>(),
        ]
    );

    // An existing `Arc` of a trait object can be registered too.
    let mut services = ServiceCollection::new();
    let settings = Arc::new(Settings { interval_secs: 9 });
    services.add_singleton_arc::<dyn Greeter>(Arc::new(Polite { settings }));
    let provider = services.build().unwrap();
    assert_eq!(
        Greets::inject(&provider).unwrap().greeter.greet(),
        "hello every 9 s"
    );

    // And when it is missing, build() says so by its trait object type.
    let mut services = ServiceCollection::new();
    services.declare_dependencies("Greets", Greets::dependencies());
    let error = services.build().unwrap_err();
    assert!(error.to_string().contains("dyn"), "{error}");
    assert!(error.to_string().contains("Greeter"), "{error}");
}

#[derive(Worker)]
struct Empty {}

#[derive(Worker)]
struct Unit;

#[test]
fn structs_without_fields_need_nothing() {
    let provider = ServiceCollection::new().build().unwrap();
    assert!(Empty::inject(&provider).is_ok());
    assert!(Unit::inject(&provider).is_ok());
    assert!(Empty::dependencies().is_empty() && Unit::dependencies().is_empty());
}

#[derive(Worker)]
struct Generic<T: Send + Sync + 'static> {
    value: Arc<T>,
}

#[test]
fn type_parameters_are_carried_over() {
    let provider = provider();
    let worker = Generic::<Settings>::inject(&provider).unwrap();
    assert_eq!(worker.value.interval_secs, 5);
    assert_eq!(
        Generic::<Settings>::dependencies(),
        [Dependency::required::<Settings>()]
    );
}

/// No bounds on the parameters: the derive infers `Arc<S>: FromProvider`, `Vec<D>: Default` and
/// `Unbounded<S, D>: Send + Sync + 'static` for the impl.
#[derive(Worker)]
struct Unbounded<S, D> {
    service: Arc<S>,
    maybe: Option<Arc<S>>,
    #[inject(default)]
    defaults: Vec<D>,
}

#[test]
fn bounds_of_type_parameters_are_inferred_from_the_fields() {
    let provider = provider();
    let worker = Unbounded::<Settings, u8>::inject(&provider).unwrap();
    assert_eq!(worker.service.interval_secs, 5);
    assert!(worker.maybe.is_some() && worker.defaults.is_empty());
    assert_eq!(
        Unbounded::<Settings, u8>::dependencies(),
        [
            Dependency::required::<Settings>(),
            Dependency::optional::<Settings>(),
        ]
    );
}

#[derive(Worker)]
struct RawNames {
    r#type: Arc<Unregistered>,
}

#[test]
fn raw_field_names_are_reported_without_the_prefix() {
    let mut services = ServiceCollection::new();
    services.add_singleton(Unregistered);
    let worker = RawNames::inject(&services.build().unwrap()).unwrap();
    let _: &Unregistered = &worker.r#type;

    let provider = ServiceCollection::new().build().unwrap();
    let Err(error) = RawNames::inject(&provider) else {
        panic!("built without its service");
    };
    assert!(
        matches!(&error, ResolveError::Field { field: "type", .. }),
        "{error:?}"
    );
}

/// The field names and types come from the macro's caller, the derive from the macro's body: the
/// generated (mixed-site) locals must still resolve between the two hygiene contexts.
macro_rules! worker_with {
    ($name:ident { $($field:ident: $ty:ty),* }) => {
        #[derive(Worker)]
        struct $name {
            $($field: $ty,)*
        }
    };
}

worker_with!(FromMacro {
    settings: Arc<Settings>,
    handle: Handle
});

#[test]
fn a_worker_declared_by_a_macro_rules_gets_its_fields() {
    let worker = FromMacro::inject(&provider()).unwrap();
    assert_eq!(worker.settings.interval_secs, 5);
    assert_eq!(worker.handle, Handle("shared".into()));
    assert_eq!(FromMacro::dependencies().len(), 2);
}

mod reexport {
    //! A crate re-exporting token-mgmt under another path.
    pub use token_mgmt as tm;
}

#[derive(Worker)]
#[worker(crate = "reexport::tm")]
struct ThroughReexport {
    settings: Arc<Settings>,
}

#[test]
fn the_crate_path_can_be_overridden() {
    let worker = ThroughReexport::inject(&provider()).unwrap();
    assert_eq!(worker.settings.interval_secs, 5);
}
