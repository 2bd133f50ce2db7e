use std::sync::Arc;

use token_mgmt::Worker;

#[derive(Worker)]
struct W {
    #[inject(defualt)]
    a: Arc<String>,
    #[inject(named = "x")]
    b: Arc<String>,
}

fn main() {}
