//! Test support: local servers, and the interop authorization server.

pub mod fault_server;
pub mod interop;
pub mod token_server;
