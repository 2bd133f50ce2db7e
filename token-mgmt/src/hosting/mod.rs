//! The generic host: runs hosted workers ([`BackgroundService`]) until Ctrl-C / SIGTERM, a stop
//! request or a worker failure, then cancels their stopping token and waits up to a shutdown
//! timeout.
//!
//! ```no_run
//! use token_mgmt::prelude::*;
//!
//! #[derive(Worker)]
//! struct Ticker {
//!     lifetime: ApplicationLifetime,
//! }
//!
//! impl BackgroundService for Ticker {
//!     async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
//!         tracing::info!("working");
//!         self.lifetime.stop_application(); // done: ask the host to stop
//!         stopping.cancelled().await;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), HostError> {
//!     Host::create_default_builder()
//!         .configure_services(|_ctx, services| {
//!             services.add_hosted_service::<Ticker>();
//!             Ok(())
//!         })
//!         .build()?
//!         .run()
//!         .await
//! }
//! ```

mod builder;
mod error;
mod host;
mod lifetime;
mod service;

pub use builder::{HostBuilder, HostBuilderContext, WorkerFailurePolicy};
pub use error::{ErrorChain, HostError, WorkerError, error_chain};
pub use host::{Host, RunningHost};
pub use lifetime::ApplicationLifetime;
pub use service::{BackgroundService, HostedServiceExt};
