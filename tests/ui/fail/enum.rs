use token_mgmt::Worker;

#[derive(Worker)]
enum NotAStruct {
    A,
    B,
}

fn main() {}
