//! The vmm-server: one per VM. It loads the guest (a multiboot kernel, exactly as
//! `qemu-system-x86_64 -kernel` does), emulates the guest's devices, runs the vCPU and
//! handles every VM exit, asking the mmu-server (through `ipc` messages only) for
//! everything that touches guest paging.
//!
//! `#![no_std]` and allocation-free: the runtime (host threads or an seL4 PD) hands it
//! guest RAM as a [`physmem::PhysMap`] and a transport to the mmu-server.
#![no_std]

pub mod config;
pub mod cpu_model;
pub mod cr;
pub mod devices;
pub mod emulate;
mod exits;
pub mod guest_ram;
pub mod hw;
pub mod loader;
pub mod mmu_client;
pub mod outcome;
pub mod stats;
pub mod vm;

pub use config::{Cr0WpPolicy, VmConfig};
pub use iced_x86;
pub use outcome::{Failure, StopReason, VmOutcome};
pub use vm::{Capabilities, Vm, VmError, VmHost};
