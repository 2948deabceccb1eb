//! The host runtime of capvisor: the same servers and the same `ipc` bytes as on seL4,
//! each protection domain on its own OS thread, joined by a shared-memory call/reply
//! channel. This is the embedded default of `capvisor run`, and what the end-to-end
//! tests, benchmarks and fuzzers use.

pub mod channel;
pub mod cli;
pub mod memory;
pub mod options;
pub mod report;
pub mod runtime;

/// The crates a runtime user needs, re-exported so tests depend on this crate only.
pub use ipc;
pub use vmm_server;
