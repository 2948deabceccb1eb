//! The mmu-server: owns every page-table frame of every VM and decides everything that
//! touches guest paging. `#![no_std]`, no allocation after start-up.
#![no_std]

pub mod guest_walk;
pub mod permission;
pub mod role;
