//! The control registers the vCPU really runs with ("hardware" state: GUEST_CR0/CR3/
//! CR4/EFER of the VMCS) versus what the guest sees (the read shadows).
//!
//! Under TDP they are equal: the CPU walks the guest's own tables, and EPT (whose root
//! is in the EPTP, not in CR3) translates guest-physical addresses.
//!
//! Under shadow paging the CPU walks the mmu-server's shadow tables, so:
//! - CR3 holds the shadow root (plus the guest's PCID when CR4.PCIDE is on, so the
//!   TLB is tagged the way the guest expects, as KVM loads `root | active PCID`);
//! - paging is always on (CR0.PG = 1), even while the guest has it off: the root is
//!   then a direct identity map of guest-physical memory (SDM 27.2: without
//!   "unrestricted guest" VT-x requires PE and PG anyway);
//! - CR0.WP = 1: the MMU emulates a guest WP = 0 in the SPTEs it builds
//!   (MMU_REFERENCE.md section 1, "Emulating cr0.wp");
//! - CR4.PAE = 1 (shadow roots are PAE or 4-level); EFER.LME/LMA follow the root's
//!   level, not the guest; EFER.NXE = 1 because the MMU uses NX in SPTEs;
//! - SMEP/SMAP/PKE are cleared while the guest has paging off (the identity map is
//!   user-accessible and must stay usable at CPL 0, as KVM does).

use crate::cr::{cr0, cr4, efer, GuestCrs};

/// EPTP memory type write-back (SDM 24.6.11).
const EPTP_WB: u64 = 6;
/// EPTP "enable accessed and dirty flags".
const EPTP_AD: u64 = 1 << 6;

/// GUEST_CR0/CR3/CR4/EFER.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HwCrs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// Under TDP the vCPU runs with the guest's own registers.
pub fn tdp(guest: &GuestCrs) -> HwCrs {
    HwCrs {
        cr0: guest.cr0,
        cr3: guest.cr3,
        cr4: guest.cr4,
        efer: guest.efer,
    }
}

/// The EPT pointer of a TDP root: walk length - 1 in bits 5:3 (SDM 24.6.11).
pub fn eptp(root_hpa: u64, root_level: u32, accessed_dirty: bool) -> u64 {
    let ad = if accessed_dirty { EPTP_AD } else { 0 };
    (root_hpa & !0xfff) | ((root_level.saturating_sub(1) as u64 & 7) << 3) | EPTP_WB | ad
}

/// Under shadow paging: the registers that make the vCPU walk `root_hpa` (a PAE
/// page-directory-pointer table for `root_level` 3, a PML4 for 4).
pub fn shadow(guest: &GuestCrs, root_hpa: u64, root_level: u32) -> HwCrs {
    let long = root_level >= 4;
    let guest_paging = guest.paging();
    let mut hw_cr4 = guest.cr4 | cr4::PAE;
    if !guest_paging {
        hw_cr4 &= !(cr4::SMEP | cr4::SMAP | cr4::PKE);
    }
    if !long {
        // PCIDE requires IA-32e mode; a 32-bit guest cannot have it on.
        hw_cr4 &= !cr4::PCIDE;
    }
    let pcid = if hw_cr4 & cr4::PCIDE != 0 {
        guest.cr3 & 0xfff
    } else {
        0
    };
    let mut hw_efer = (guest.efer & efer::SCE) | efer::NXE;
    if long {
        hw_efer |= efer::LME | efer::LMA;
    }
    HwCrs {
        cr0: guest.cr0 | cr0::PE | cr0::PG | cr0::WP,
        cr3: (root_hpa & !0xfff) | pcid,
        cr4: hw_cr4,
        efer: hw_efer,
    }
}
