//! Without the `logging` feature, `Host::create_default_builder` leaves logging to the application:
//! no global subscriber is installed. (CI runs it with `--no-default-features --features
//! hosting,rustls`; with `logging` on, the tests crate's `logging` tests cover the other side.)
#![cfg(all(feature = "hosting", not(feature = "logging")))]

#[test]
fn the_default_builder_installs_no_subscriber_without_the_logging_feature() {
    let _builder = token_mgmt::hosting::Host::create_default_builder();
    assert!(!tracing::dispatcher::has_been_set());
}
