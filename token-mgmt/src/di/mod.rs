//! di
