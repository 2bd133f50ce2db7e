use token_mgmt::Worker;

#[derive(Worker)]
#[worker(crate = "not a path", krate = "x")]
struct W {
    #[inject(client = api)]
    a: u32,
    #[inject(client)]
    b: u32,
    #[inject(client = "")]
    c: u32,
    #[inject(default = true)]
    d: u32,
    #[inject]
    e: u32,
}

fn main() {}
