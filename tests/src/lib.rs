//! Test support: local servers.
