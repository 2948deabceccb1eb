//! The mmu-server: owns every page-table frame of every VM and decides everything that
//! touches guest paging. `#![no_std]`, no allocation after start-up.
#![no_std]

pub mod guest_walk;
pub mod permission;
pub mod role;

pub mod cr;
pub mod memslot;
pub mod mmu;
pub mod nx;
pub mod pool;
pub mod root_cache;
pub mod server;
pub mod shadow;
pub mod shadow_page;
pub mod spte;
pub mod tdp;
pub mod vm;
pub mod write_track;

pub use server::{MmuServer, ServerConfig};
