//! The permission bitmap and the protection-key mask: every paging permission rule of
//! SDM Vol. 3A 4.6 precomputed per cpu role, so that a permission check during a walk is
//! two table lookups (MMU_REFERENCE.md section 3).
//!
//! The bitmap has 16 bytes, one per access kind. The index is `pfec[4:1]`:
//! bit 0 = W, bit 1 = U, bit 2 = "SMAP does not apply" (the RSVD slot, which no access
//! carries, reused), bit 3 = F (fetch). Within a byte, bit `a` is set when an access of
//! that kind to a page whose effective ACC value is `a` faults.

use crate::role::{CpuRole, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK};

/// Page-fault error-code bits (SDM Vol. 3A 4.7, Figure 4-12), plus KVM's synthetic bits
/// above bit 31 that never reach the guest.
pub mod pfec {
    /// The fault was a protection violation (0: not present).
    pub const P: u64 = 1 << 0;
    /// The access was a write.
    pub const W: u64 = 1 << 1;
    /// The access was a user-mode access (CPL 3, not implicit).
    pub const U: u64 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u64 = 1 << 3;
    /// The access was an instruction fetch (reported only with NX or SMEP in effect).
    pub const FETCH: u64 = 1 << 4;
    /// Protection-key violation.
    pub const PK: u64 = 1 << 5;
    /// Shadow-stack access.
    pub const SS: u64 = 1 << 6;
    /// SGX access-control violation.
    pub const SGX: u64 = 1 << 15;
    /// Nested paging: the fault happened on the final guest-physical address.
    pub const GUEST_FINAL: u64 = 1 << 32;
    /// Nested paging: the fault happened while walking the guest's page tables.
    pub const GUEST_PAGE: u64 = 1 << 33;
    /// The access is implicit (descriptor tables, etc.): SMAP applies whatever EFLAGS.AC.
    pub const IMPLICIT: u64 = 1 << 48;
    /// The bits that describe an access (as opposed to a fault's outcome).
    pub const ACCESS_BITS: u64 = W | U | FETCH;
}

/// For each ACC value 0..7, whether it has X / W / U (`BYTE_MASK` in KVM's terms).
const HAS_X: u8 = 0xAA;
const HAS_W: u8 = 0xCC;
const HAS_U: u8 = 0xF0;

/// Index bit of the bitmap that means "SMAP does not apply" (pfec RSVD >> 1).
const IDX_SMAP_EXEMPT: usize = (pfec::RSVD >> 1) as usize;

/// `mmu->permissions`: 16 bytes, see the module comment.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PermissionBitmap(pub [u8; 16]);

impl PermissionBitmap {
    /// The bitmap for ordinary (non-EPT) guest paging, from the cpu role. With paging off
    /// there is nothing to check, and the bitmap is empty.
    pub fn for_role(role: &CpuRole) -> Self {
        if !role.paging_enabled() {
            return Self::default();
        }
        Self::legacy(role.cr0_wp(), role.efer_nx(), role.smep(), role.smap())
    }

    /// The bitmap for ordinary paging from the four controls that matter
    /// (SDM Vol. 3A 4.6.1).
    pub fn legacy(cr0_wp: bool, efer_nx: bool, smep: bool, smap: bool) -> Self {
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let access = (index as u64) << 1;
            let write = access & pfec::W != 0;
            let user = access & pfec::U != 0;
            let fetch = access & pfec::FETCH != 0;
            let smap_exempt = access & pfec::RSVD != 0;

            // Rule 1: writes need W at every level, except supervisor writes with WP=0.
            let write_faults = if write && (user || cr0_wp) { !HAS_W } else { 0 };
            // Rule 2: user accesses need U at every level.
            let user_faults = if user { !HAS_U } else { 0 };
            // Rule 3: fetches need X; without EFER.NX the XD bit is reserved, so every
            // present page is executable and no fetch faults here.
            let fetch_faults = if fetch && efer_nx { !HAS_X } else { 0 };
            // Supervisor accesses to user pages, the target of SMEP and SMAP.
            let kernel_on_user = if user { 0 } else { HAS_U };
            // Rule 4: SMEP forbids supervisor fetches from user pages.
            let smep_faults = if smep && fetch { kernel_on_user } else { 0 };
            // Rule 5: SMAP forbids supervisor data accesses to user pages, unless
            // EFLAGS.AC exempts an explicit access.
            let smap_faults = if smap && !fetch && !smap_exempt {
                kernel_on_user
            } else {
                0
            };
            *byte = write_faults | user_faults | fetch_faults | smep_faults | smap_faults;
        }
        Self(bytes)
    }

    /// The bitmap for a nested EPT MMU, where ACC_USER means "readable": only the
    /// write, read and fetch rules apply, no CR bits.
    pub fn ept() -> Self {
        let mut bytes = [0u8; 16];
        for (index, byte) in bytes.iter_mut().enumerate() {
            let access = (index as u64) << 1;
            let write_faults = if access & pfec::W != 0 { !HAS_W } else { 0 };
            let read_faults = if access & pfec::U != 0 { !HAS_U } else { 0 };
            let fetch_faults = if access & pfec::FETCH != 0 { !HAS_X } else { 0 };
            *byte = write_faults | read_faults | fetch_faults;
        }
        Self(bytes)
    }

    /// Whether an access of kind `index` to a page with effective access `pte_access`
    /// faults.
    #[inline]
    pub fn faults(&self, index: usize, pte_access: u8) -> bool {
        (self.0[index & 0xF] >> (pte_access & 7)) & 1 != 0
    }
}

/// `mmu->pkru_mask`: for each access kind (2 bits at bit offset pfec, with the RSVD slot
/// meaning "the page is a user page"), which PKRU bits apply: bit 0 = AD, bit 1 = WD.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PkruMask(pub u32);

impl PkruMask {
    /// `update_pkru_bitmask`. Protection keys exist only with CR4.PKE in long mode
    /// (SDM Vol. 3A 4.6.2); otherwise the mask is 0 and PKRU is never consulted.
    pub fn for_role(role: &CpuRole) -> Self {
        if !role.paging_enabled() || !role.pke() {
            return Self(0);
        }
        let wp = role.cr0_wp();
        let mut mask = 0u32;
        for index in 0..16u32 {
            let access = (index as u64) << 1;
            let fetch = access & pfec::FETCH != 0;
            let user = access & pfec::U != 0;
            let write = access & pfec::W != 0;
            let user_page = access & pfec::RSVD != 0;
            // Keys govern data accesses to user pages only; AD stops reads and writes.
            let ad = !fetch && user_page;
            // WD stops writes by user code, and by supervisor code only with WP=1.
            let wd = ad && write && (user || wp);
            let bits = ad as u32 | (wd as u32) << 1;
            mask |= bits << access;
        }
        Self(mask)
    }
}

/// The permission state of one cpu role.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Permissions {
    pub bitmap: PermissionBitmap,
    pub pkru_mask: PkruMask,
}

impl Permissions {
    pub fn for_role(role: &CpuRole) -> Permissions {
        Permissions {
            bitmap: PermissionBitmap::for_role(role),
            pkru_mask: PkruMask::for_role(role),
        }
    }

    /// `permission_fault`: does an access described by `pfec` (W|U|FETCH, plus
    /// [`pfec::IMPLICIT`]) to a page with effective access `pte_access` and protection
    /// key `pte_pkey` fault? Returns 0, or [`pfec::P`] plus [`pfec::PK`] when PKRU denies
    /// it; the caller adds W, U and I/D to make the error code.
    ///
    /// The caller must have built `self` from a role with the live CR0.WP (the
    /// "refresh passthrough bits" step of KVM happens before, where the role is made).
    pub fn permission_fault(
        &self,
        pte_access: u8,
        pte_pkey: u8,
        pfec: u64,
        rflags_ac: bool,
        pkru: u32,
    ) -> u32 {
        // Only the access bits index the tables: outcome bits (P, RSVD, PK) and the
        // synthetic high bits must not move the index.
        let access = pfec & pfec::ACCESS_BITS;
        // EFLAGS.AC exempts explicit supervisor accesses from SMAP (SDM Vol. 3A 4.6.1).
        let smap_exempt = rflags_ac && pfec & pfec::IMPLICIT == 0;
        let index = (access >> 1) as usize | if smap_exempt { IDX_SMAP_EXEMPT } else { 0 };
        let mut fault = self.bitmap.faults(index, pte_access);
        let mut error = pfec::P as u32;

        if self.pkru_mask.0 != 0 {
            let key_bits = (pkru >> (2 * (pte_pkey as u32 & 0xF))) & 3;
            let user_page = pte_access & ACC_USER_MASK != 0;
            let offset = access as u32 | if user_page { pfec::RSVD as u32 } else { 0 };
            let denied = key_bits & (self.pkru_mask.0 >> offset);
            if denied != 0 {
                fault = true;
                error |= pfec::PK as u32;
            }
        }
        if fault {
            error
        } else {
            0
        }
    }
}

/// ACC bits of one 64-bit-format guest entry (R/W, U/S, XD).
#[inline]
pub fn gpte_access(gpte: u64, nx_in_effect: bool) -> u8 {
    let mut access = ACC_EXEC_MASK;
    if gpte & 2 != 0 {
        access |= ACC_WRITE_MASK;
    }
    if gpte & 4 != 0 {
        access |= ACC_USER_MASK;
    }
    if nx_in_effect && gpte >> 63 != 0 {
        access &= !ACC_EXEC_MASK;
    }
    access
}
