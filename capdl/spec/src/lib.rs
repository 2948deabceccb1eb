//! The capvisor system spec as the root task reads it.
//!
//! The host-side `capdl` tool turns `system.toml` into a capDL spec. It prints the spec in
//! the capDL textual syntax for people and for the capDL tools, and it writes the same
//! spec in the compact binary format defined here ([`format`]) for the root task, which
//! is `no_std` and cannot parse text. [`SpecView::parse`] checks a blob once (magic,
//! version, sizes, every index and string reference), after which every accessor is
//! infallible and the root task can instantiate objects in table order.
//!
//! The other modules are the contract between the spec and the protection domains that
//! run under it: which badge means what ([`badge`]), which CSpace slot holds which
//! capability ([`slot`]), and where each region sits in a PD's address space ([`layout`]).
//! A PD links against these constants instead of re-deriving them.
#![no_std]
#![forbid(unsafe_code)]

pub mod badge;
pub mod boot;
pub mod format;
pub mod layout;
mod reader;
pub mod slot;
pub mod supervisor;

pub use format::*;
pub use reader::{FormatError, SpecView};
