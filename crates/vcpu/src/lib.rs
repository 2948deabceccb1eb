//! A software model of an Intel x86-64 CPU in VMX non-root operation.
//!
//! [`Vcpu::run`] interprets guest code (iced-x86 decoding behind a decode cache) in
//! 32-bit protected mode and IA-32e mode until a VM exit ([`VmExit`]), translating
//! every access through [`paging::Mmu`] (guest paging, EPT, TLB). The VMM configures
//! the VMCS-like [`VmControls`], handles exits and updates the guest state through the
//! accessors of [`Vcpu`].
#![no_std]

extern crate alloc;

pub mod controls;
mod decode;
mod event;
mod exec;
pub mod exit;
mod flags;
mod memory;
pub mod msr;
pub mod paging;
pub mod regs;
mod segment;
mod vcpu;

pub use controls::{EventInjection, VmControls};
pub use exit::{ExitReason, UnimplementedInsn, VmExit};
pub use msr::MsrError;
pub use regs::{DescriptorTable, Gpr, SegReg, Segment};
pub use vcpu::{
    cr0, cr4, efer, interruptibility, vector, CrWriteError, Exception, GuestAccessError, MsrState,
    Stats, Vcpu,
};
