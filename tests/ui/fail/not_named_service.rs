use std::sync::Arc;

use token_mgmt::Worker;

#[derive(Worker)]
struct W {
    #[inject(client = "api")]
    client: Arc<String>,
}

fn main() {}
