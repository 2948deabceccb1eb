//! Linear-address translation as the CPU performs it in VMX non-root operation:
//! the guest's own page walk (SDM Vol. 3A ch. 4), then, with EPT enabled, the EPT walk
//! of every guest-physical address it touches (SDM Vol. 3C 29.3); or, without EPT, a
//! walk of the table CR3 points to in host-physical memory (shadow paging: the VMM
//! loaded the shadow root into the real CR3). Translations are cached in a TLB tagged
//! by VPID, PCID (and EPTP), invalidated only by the architectural operations.
//!
//! This file is the contract between the instruction engine (the rest of the crate)
//! and the paging module. The engine holds one [`Mmu`] per vCPU and calls
//! [`Mmu::translate`] for every access (split at page boundaries), the invalidation
//! methods for INVLPG/INVPCID/MOV CR0/CR3/CR4 and VM entry/exit, and
//! [`Mmu::load_pdptes`] whenever PAE paging needs the PDPTE registers (re)loaded.
//!
//! Changes to the contract since it was first written (for the engine):
//! - `Fault::PdpteReserved` (from `load_pdptes`): the caller raises #GP(0) (MOV CR) or
//!   fails the VM entry.
//! - The invalidation methods that the CPU can refuse return
//!   `Result<(), InvalidationError>`: INVPCID -> #GP(0), INVVPID/INVEPT -> VMfailValid.
//! - `Mmu::on_vm_entry_or_exit(vpid)` must be called on every VM entry and VM exit
//!   (it flushes VPID 0 when VPIDs are off, SDM 28.4.3.3).

mod ad;
pub mod bits;
pub mod ept;
mod mmu;
pub mod rights;
pub mod tlb;
pub mod walk;

pub use mmu::{InvalidationError, Mmu, TlbStats};
pub use walk::Mode;

/// The paging-relevant state of the vCPU at the moment of an access. All control
/// register values are the *real* ones (what the CPU runs with), not the read shadows
/// the guest sees.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PagingContext {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    /// The four PDPTEs loaded by the last CR3 load / VM entry in PAE mode (SDM 4.4.1).
    pub pdptes: [u64; 4],
    /// Current privilege level (0..=3).
    pub cpl: u8,
    /// EFLAGS.AC.
    pub rflags_ac: bool,
    pub pkru: u32,
    /// `Some(eptp)` when the "enable EPT" control is set: EPT root hpa in bits 51:12,
    /// memory type in 2:0, page-walk length - 1 in 5:3, A/D enable in bit 6
    /// (SDM 24.6.11). `None`: no EPT; guest-physical = host-physical.
    pub eptp: Option<u64>,
    /// The VPID of this vCPU (0 when VPIDs are not enabled).
    pub vpid: u16,
}

/// The kind of a memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccessKind {
    Read,
    Write,
    Fetch,
}

/// One memory access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    pub kind: AccessKind,
    /// A supervisor-mode access whatever the CPL, and *implicit* for SMAP: descriptor
    /// table reads, IDT/TSS accesses during event delivery (SDM 4.6).
    pub implicit_supervisor: bool,
}

/// Why a translation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A page fault to deliver to the guest (or to exit on, through the exception
    /// bitmap): the #PF error code and the faulting linear address (CR2).
    PageFault { error_code: u32, linear: u64 },
    /// An EPT violation: the guest-physical address, the guest-linear address when
    /// there is one, and the exit qualification of SDM 28.2.1 Table 28-7.
    EptViolation {
        gpa: u64,
        linear: Option<u64>,
        qualification: u64,
    },
    /// An EPT misconfiguration (reserved bits, W without R, bad memory type).
    EptMisconfig { gpa: u64 },
    /// A present PDPTE with reserved bits, found by [`Mmu::load_pdptes`] (SDM 4.4.1):
    /// #GP(0) for MOV to CR0/CR3/CR4, a failed VM entry otherwise.
    PdpteReserved { index: u8, pdpte: u64 },
    /// A table or final address that no host-physical region backs: the VMM built a
    /// broken table. Not architectural; the vCPU stops with a diagnostic.
    BadHpa { hpa: u64 },
}
