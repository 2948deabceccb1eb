//! The vmm-server: one per VM. It loads the guest (a multiboot kernel, exactly as
//! `qemu-system-x86_64 -kernel` does), emulates the guest's devices, runs the vCPU and
//! handles every VM exit, asking the mmu-server (through `ipc` messages only) for
//! everything that touches guest paging.
//!
//! `#![no_std]` and allocation-free: the runtime (host threads or an seL4 PD) hands it
//! guest RAM as a [`physmem::PhysMap`] and a transport to the mmu-server.
#![no_std]

pub mod devices;
pub mod guest_ram;
pub mod loader;
