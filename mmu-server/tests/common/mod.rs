//! Helpers shared by the mmu-server integration tests.
#![allow(dead_code)]

pub mod reference_walker;
