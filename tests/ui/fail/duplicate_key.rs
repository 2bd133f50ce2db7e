use token_mgmt::Worker;

#[derive(Worker)]
struct W {
    #[inject(default, default)]
    a: u32,
    #[inject(client = "a")]
    #[inject(client = "b")]
    b: u32,
}

fn main() {}
