use std::sync::Arc;

use token_mgmt::Worker;

// Only the attribute error: the fallback impl must not add errors about `T` not being `Send`.
#[derive(Worker)]
struct W<T> {
    #[inject(clinet = "api")]
    service: Arc<T>,
}

fn main() {}
