use token_mgmt::Worker;

#[derive(Worker)]
struct W {
    #[inject(default, client = "api")]
    a: u32,
}

fn main() {}
