mod facade {
    pub use token_mgmt as inner;
}

#[derive(facade::inner::Worker)]
#[worker(crate = "facade::inner")]
struct Reexported {
    _provider: facade::inner::di::ServiceProvider,
}

fn main() {
    let _ = <Reexported as facade::inner::di::Injectable>::dependencies();
}
