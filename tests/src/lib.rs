//! Test support: local servers, and the interop authorization server.

pub mod dpop_api;
pub mod interop;
pub mod token_server;
