//! Demo token service and protected API.
