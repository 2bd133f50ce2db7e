use std::any::{TypeId, type_name};
use std::future::Future;
use std::pin::Pin;

use tokio_util::sync::CancellationToken;

use super::WorkerError;
use crate::di::{BuildProblem, Injectable, ResolveError, ServiceCollection, ServiceProvider};

/// A long-running worker hosted by the [`Host`](super::Host) (like .NET's `BackgroundService`).
///
/// Implement it with `async fn execute`. The host calls `execute` once at start; `stopping` is
/// cancelled when the host shuts down, and the worker should then return promptly (before the
/// shutdown timeout). Returning `Err` or panicking stops the host by default
/// ([`WorkerFailurePolicy`](super::WorkerFailurePolicy)).
pub trait BackgroundService: Send + Sync + 'static {
    /// The worker's body.
    #[doc(alias = "ExecuteAsync")]
    fn execute(
        &self,
        stopping: CancellationToken,
    ) -> impl Future<Output = Result<(), WorkerError>> + Send;
}

pub(crate) type WorkerFuture = Pin<Box<dyn Future<Output = Result<(), WorkerError>> + Send>>;

#[derive(Clone, Copy)]
pub(crate) struct HostedEntry {
    pub(crate) type_id: TypeId,
    pub(crate) name: &'static str,
    pub(crate) start: fn(&ServiceProvider, CancellationToken) -> Result<WorkerFuture, ResolveError>,
}

/// The hosted workers registered in a collection (an extension state).
#[derive(Clone, Default)]
pub(crate) struct HostedServices {
    pub(crate) entries: Vec<HostedEntry>,
}

fn start<W: Injectable + BackgroundService>(
    provider: &ServiceProvider,
    stopping: CancellationToken,
) -> Result<WorkerFuture, ResolveError> {
    let worker = W::inject(provider)?;
    Ok(Box::pin(async move { worker.execute(stopping).await }))
}

/// Registers hosted workers on a [`ServiceCollection`].
pub trait HostedServiceExt {
    /// Registers `W` as a hosted worker: constructed from the container when the host starts (its
    /// [`dependencies`](Injectable::dependencies) are checked by `build()`), then run until shutdown.
    /// Registering the same worker type twice is reported by `build()`.
    #[doc(alias = "AddHostedService")]
    fn add_hosted_service<W: Injectable + BackgroundService>(&mut self) -> &mut Self;
}

impl HostedServiceExt for ServiceCollection {
    fn add_hosted_service<W: Injectable + BackgroundService>(&mut self) -> &mut Self {
        let hosted = self.extension_mut::<HostedServices>();
        if hosted
            .entries
            .iter()
            .any(|e| e.type_id == TypeId::of::<W>())
        {
            self.record_problem(BuildProblem::Duplicate {
                service: type_name::<W>(),
                what: "hosted service",
            });
            return self;
        }
        hosted.entries.push(HostedEntry {
            type_id: TypeId::of::<W>(),
            name: type_name::<W>(),
            start: start::<W>,
        });
        self.declare_dependencies(type_name::<W>(), W::dependencies())
    }
}
