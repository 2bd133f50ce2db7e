//! Test support: local servers.

pub mod token_server;
