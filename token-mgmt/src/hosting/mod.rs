//! hosting
