//! The EPT walk of one guest-physical address (SDM Vol. 3C 29.3): 4- or 5-level, R/W/X
//! at every level, 2M/1G leaves, misconfigurations (29.3.3.1), violations with the exit
//! qualification of 28.2.1 Table 28-7, and EPT accessed/dirty flags (29.3.5).
//!
//! Model choices (the capability MSR our CPU would report): execute-only translations
//! are supported, 1G and 2M EPT pages are supported, mode-based execute control is not
//! (bit 10 is ignored and qualification bit 6 is 0), advanced VM-exit information for
//! EPT violations is not reported (qualification bits 9-11 are 0), #VE is not supported
//! (bit 63 is ignored).

use super::ad::PendingAd;
use super::bits::*;
use super::{AccessKind, Fault};

/// What the EPT walk is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptAccess {
    /// The final guest-physical address of a linear access, or an access the engine
    /// makes to a guest-physical address.
    Data(AccessKind),
    /// A guest paging-structure access: a read, or a write when the CPU updates an A/D
    /// flag or when EPT A/D flags are enabled (SDM 29.3.3.2: every guest
    /// paging-structure access is then treated as a write).
    PagingStructure { write: bool },
}

/// A guest-physical address translated by EPT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptTranslation {
    pub hpa: u64,
    /// R/W/X (bits 0-2) ANDed over every EPT entry of the walk.
    pub rights: u8,
    /// The EPT leaf's dirty flag is set (or EPT A/D flags are off): a write needs no
    /// further update of the EPT.
    pub dirty: bool,
}

/// log2 of the page size mapped by an entry at `level` (1 = 4K).
#[inline]
fn level_shift(level: u32) -> u32 {
    12 + 9 * (level - 1)
}

/// Reserved bits of a present EPT entry (SDM 29.3.3.1), by level and leafness.
#[inline]
fn reserved_bits(level: u32, leaf: bool) -> u64 {
    let above_maxphyaddr = 0x000f_ffff_ffff_f000 & !EPT_ADDR_MASK;
    let by_level = match (level, leaf) {
        // PML5E/PML4E: bits 7:3 (no large pages at these levels).
        (4 | 5, _) => 0xf8,
        // 1G leaf: bits 29:12 of the address are reserved.
        (3, true) => 0x3fff_f000,
        // 2M leaf: bits 20:12.
        (2, true) => 0x1f_f000,
        // Non-leaf PDPTE/PDE: bits 6:3.
        (2 | 3, false) => 0x78,
        _ => 0,
    };
    above_maxphyaddr | by_level
}

/// Memory types 2, 3 and 7 are reserved in an EPT leaf (SDM 29.3.7).
#[inline]
fn bad_memtype(entry: u64) -> bool {
    matches!((entry >> EPT_MEMTYPE_SHIFT) & 7, 2 | 3 | 7)
}

/// Whether the EPTP itself is usable: walk length 4 or 5, memory type UC or WB
/// (SDM 26.2.1.1 checks these at VM entry). Returns the number of levels.
#[inline]
pub fn eptp_levels(eptp: u64) -> Option<u32> {
    let levels = ((eptp >> EPTP_WALK_SHIFT) & 7) as u32 + 1;
    let memtype = eptp & EPTP_MEMTYPE_MASK;
    if (levels == 4 || levels == 5) && (memtype == 0 || memtype == 6) {
        Some(levels)
    } else {
        None
    }
}

/// The EP4TA (EPT root address) that tags combined and guest-physical mappings.
#[inline]
pub fn ep4ta(eptp: u64) -> u64 {
    eptp & EPT_ADDR_MASK
}

/// The exit-qualification access bits (0-2) of an access.
#[inline]
pub fn access_bits(access: EptAccess) -> u64 {
    match access {
        EptAccess::Data(AccessKind::Read) => EPTQ_READ,
        EptAccess::Data(AccessKind::Write) => EPTQ_WRITE,
        EptAccess::Data(AccessKind::Fetch) => EPTQ_FETCH,
        EptAccess::PagingStructure { write: false } => EPTQ_READ,
        // SDM 28.2.1 Table 28-7 note: a guest paging-structure access treated as a
        // write sets both bits 0 and 1 (we report A/D updates the same way: they are
        // locked read-modify-writes).
        EptAccess::PagingStructure { write: true } => EPTQ_READ | EPTQ_WRITE,
    }
}

/// The exit qualification of an EPT violation (SDM 28.2.1 Table 28-7).
#[inline]
pub fn violation_qualification(access: EptAccess, rights: u8, linear: Option<u64>) -> u64 {
    let mut q = access_bits(access) | (u64::from(rights & 7) << EPTQ_RIGHTS_SHIFT);
    if linear.is_some() {
        q |= EPTQ_LINEAR_VALID;
        if matches!(access, EptAccess::Data(_)) {
            q |= EPTQ_FINAL;
        }
    }
    q
}

/// Whether EPT `rights` allow `access`.
#[inline]
pub fn rights_allow(rights: u8, access: EptAccess) -> bool {
    let need = match access {
        EptAccess::Data(AccessKind::Read) | EptAccess::PagingStructure { write: false } => EPT_R,
        EptAccess::Data(AccessKind::Write) | EptAccess::PagingStructure { write: true } => EPT_W,
        EptAccess::Data(AccessKind::Fetch) => EPT_X,
    };
    u64::from(rights) & need != 0
}

/// Translates `gpa` through the EPT rooted at `eptp`. EPT A/D updates (when EPTP bit 6
/// is set) are added to `pending`, to be written only if the whole access succeeds.
/// `linear` is the guest-linear address the access belongs to, if any (qualification
/// bit 7).
pub fn walk(
    mem: &physmem::PhysMap,
    eptp: u64,
    gpa: u64,
    access: EptAccess,
    linear: Option<u64>,
    pending: &mut PendingAd,
) -> Result<EptTranslation, Fault> {
    let levels = eptp_levels(eptp).ok_or(Fault::EptMisconfig { gpa })?;
    let violation = |rights: u8| Fault::EptViolation {
        gpa,
        linear,
        qualification: violation_qualification(access, rights, linear),
    };
    // A guest-physical address wider than the walk covers is mapped by nothing.
    if gpa >> level_shift(levels + 1) != 0 {
        return Err(violation(0));
    }
    let ad = eptp & EPTP_AD != 0;
    let write = matches!(
        access,
        EptAccess::Data(AccessKind::Write) | EptAccess::PagingStructure { write: true }
    );
    let mut table = eptp & EPT_ADDR_MASK;
    let mut rights = EPT_RWX as u8;
    let mut level = levels;
    loop {
        let shift = level_shift(level);
        let entry_hpa = table + ((gpa >> shift) & 0x1ff) * 8;
        let entry = mem
            .read_u64(entry_hpa)
            .ok_or(Fault::BadHpa { hpa: entry_hpa })?;
        rights &= (entry & EPT_RWX) as u8;
        if entry & EPT_RWX == 0 {
            return Err(violation(0));
        }
        let leaf = level == 1 || ((level == 2 || level == 3) && entry & EPT_PS != 0);
        // SDM 29.3.3.1: write without read, reserved bits, a reserved memory type.
        if entry & (EPT_R | EPT_W) == EPT_W
            || entry & reserved_bits(level, leaf) != 0
            || (leaf && bad_memtype(entry))
        {
            return Err(Fault::EptMisconfig { gpa });
        }
        if leaf {
            if ad {
                let dirty = if write { EPT_D } else { 0 };
                pending.set_bits(entry_hpa, entry, EPT_A | dirty, true);
            }
            if !rights_allow(rights, access) {
                return Err(violation(rights));
            }
            let size_mask = (1u64 << shift) - 1;
            return Ok(EptTranslation {
                hpa: (entry & EPT_ADDR_MASK & !size_mask) | (gpa & size_mask),
                rights,
                dirty: !ad || write || entry & EPT_D != 0,
            });
        }
        if ad {
            pending.set_bits(entry_hpa, entry, EPT_A, true);
        }
        table = entry & EPT_ADDR_MASK;
        level -= 1;
    }
}
