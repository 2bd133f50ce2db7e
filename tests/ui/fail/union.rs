use token_mgmt::Worker;

#[derive(Worker)]
union NotAStruct {
    a: u32,
    b: f32,
}

fn main() {}
