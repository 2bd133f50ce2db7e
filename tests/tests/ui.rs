//! trybuild suites for `#[derive(Worker)]`: the pass cases compile, the fail cases' messages are pinned.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
