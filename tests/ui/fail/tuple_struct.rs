use std::sync::Arc;

use token_mgmt::Worker;

#[derive(Worker)]
struct Positional(Arc<String>);

fn main() {}
