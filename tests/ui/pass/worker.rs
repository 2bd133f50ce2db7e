use std::sync::Arc;

use token_mgmt::prelude::*;

struct Settings;

#[derive(Clone)]
struct Handle(Arc<str>);
token_mgmt::inject_by_clone!(Handle);

#[derive(Worker)]
struct ApiWorker {
    settings: Arc<Settings>,
    handle: Handle,
    lifetime: ApplicationLifetime,
    #[inject(default)]
    runs: u64,
}

impl BackgroundService for ApiWorker {
    async fn execute(&self, stopping: CancellationToken) -> Result<(), WorkerError> {
        let _ = (&self.settings, &self.handle.0, &self.lifetime, self.runs);
        stopping.cancelled().await;
        Ok(())
    }
}

#[derive(Worker)]
struct Ticker;

impl BackgroundService for Ticker {
    async fn execute(&self, _stopping: CancellationToken) -> Result<(), WorkerError> {
        Err("nothing to do".into())
    }
}

fn main() -> Result<(), BuildError> {
    let _host = Host::builder()
        .configure_services(|_ctx, services| {
            services.add_singleton(Settings);
            services.add_singleton(Handle("h".into()));
            services.add_hosted_service::<ApiWorker>().add_hosted_service::<Ticker>();
            Ok(())
        })
        .build()?;
    Ok(())
}
