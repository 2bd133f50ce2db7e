//! The logging set-up of `Host::create_default_builder` (feature `logging`): `RUST_LOG`, colour only
//! on a terminal, and an application's own subscriber left in place. Each case runs the
//! `logging_probe` binary, since a global subscriber can be set once per process.

use std::process::Command;

const ESC: &str = "\x1b[";

/// Runs the probe with stdout piped, with `RUST_LOG` / `NO_COLOR` set or removed.
fn probe(mode: &str, rust_log: Option<&str>) -> String {
    let mut command = Command::new(env!("CARGO_BIN_EXE_logging_probe"));
    command.arg(mode).env_remove("NO_COLOR");
    match rust_log {
        Some(value) => command.env("RUST_LOG", value),
        None => command.env_remove("RUST_LOG"),
    };
    let output = command.output().expect("the probe runs");
    assert!(output.status.success(), "probe failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8 log")
}

/// Runs the probe on a pseudo-terminal (util-linux `script`), so that its stdout is a terminal.
fn probe_on_terminal(no_color: bool) -> String {
    let mut command = Command::new("script");
    command
        .args(["--quiet", "--return", "--command"])
        .arg(format!("{} default", env!("CARGO_BIN_EXE_logging_probe")))
        .arg("/dev/null")
        .env_remove("RUST_LOG");
    if no_color {
        command.env("NO_COLOR", "1");
    } else {
        command.env_remove("NO_COLOR");
    }
    let output = command.output().expect("`script` (util-linux) runs");
    assert!(output.status.success(), "probe failed: {output:?}");
    String::from_utf8(output.stdout).expect("utf-8 log")
}

#[test]
fn default_level_is_info_and_piped_output_has_no_colour() {
    let log = probe("default", None);
    assert!(log.contains("probe warn"), "{log}");
    assert!(log.contains("probe info"), "{log}");
    assert!(!log.contains("probe debug"), "{log}");
    assert!(!log.contains(ESC), "escape codes in piped output: {log:?}");
}

#[test]
fn rust_log_sets_the_level() {
    let log = probe("default", Some("debug"));
    assert!(log.contains("probe debug"), "{log}");

    let log = probe("default", Some("warn"));
    assert!(log.contains("probe warn"), "{log}");
    assert!(!log.contains("probe info"), "{log}");
}

#[test]
fn a_malformed_rust_log_directive_is_skipped_not_fatal() {
    let log = probe("default", Some("debug,=[=bad"));
    assert!(log.contains("probe debug"), "{log}");
}

#[test]
fn terminal_output_is_coloured_unless_no_color() {
    let log = probe_on_terminal(false);
    assert!(log.contains("probe info"), "{log:?}");
    assert!(log.contains(ESC), "no colour on a terminal: {log:?}");

    let log = probe_on_terminal(true);
    assert!(log.contains("probe info"), "{log:?}");
    assert!(!log.contains(ESC), "colour despite NO_COLOR: {log:?}");
}

#[test]
fn an_application_subscriber_is_kept() {
    let log = probe("preset", Some("warn"));
    // The application's subscriber (DEBUG, `preset:` prefix) still gets every event; the default
    // one (here `warn`) would have dropped `info` and `debug`.
    assert!(log.contains("preset: probe debug"), "{log}");
    assert!(log.contains("preset: probe info"), "{log}");
}
