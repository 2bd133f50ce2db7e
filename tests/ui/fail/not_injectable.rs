use token_mgmt::Worker;

#[derive(Worker)]
struct W {
    name: String,
}

fn main() {}
