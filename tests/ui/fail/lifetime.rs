use token_mgmt::Worker;

#[derive(Worker)]
struct W<'a> {
    #[inject(default)]
    name: &'a str,
}

fn main() {}
