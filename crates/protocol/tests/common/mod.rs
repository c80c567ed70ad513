//! Fixtures shared by this crate's integration tests and benchmarks.
pub mod relay6;
