//! Runs `Host::create_default_builder` in a process of its own, then logs one event per level, for
//! `tests/logging.rs` to read on stdout (a global subscriber can be set only once per process).
//!
//! `logging_probe default`: nothing set up before. `logging_probe preset`: the application installs
//! its own subscriber first (DEBUG and above, every line prefixed with `preset:`).

use token_mgmt::hosting::Host;

fn main() {
    match std::env::args().nth(1).as_deref() {
        Some("default") => {}
        Some("preset") => tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .without_time()
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(
                |writer, _field, value| write!(writer, "preset: {value:?}"),
            ))
            .init(),
        other => panic!("usage: logging_probe default|preset (got {other:?})"),
    }
    let _builder = Host::create_default_builder();
    tracing::warn!("probe warn");
    tracing::info!("probe info");
    tracing::debug!("probe debug");
}
