//! Runnable examples for token-mgmt, and the embedded demo token service they and the tests use.
//!
//! [`demo::DemoServer`] is a small OAuth 2.0 token service (client credentials grant) and a protected
//! API on one loopback listener; [`demo::RecordingServer`] records the requests it receives.
//! [`settings`] is how the worker example reads its configuration.

pub mod demo;
pub mod settings;
