//! MMU roles: what a page table means, as a comparable word.
//!
//! Two roles exist per vCPU (MMU_REFERENCE.md section 1):
//! - the **cpu role** ([`CpuRole`]) is the guest's paging mode. The software walker
//!   ([`crate::guest_walk`]) and the permission bitmap ([`crate::permission`]) are built
//!   from it.
//! - the **root role** ([`PageRole`]) keys the tables *we* build. Two shadow pages are
//!   interchangeable if and only if their role words are equal, so every guest register
//!   bit that changes how a table must be built is in it, and nothing else is.
//!
//! The bit layout is KVM's `kvm_mmu_page_role` / `kvm_mmu_extended_role`, so roles can be
//! compared with KVM traces.

use x86::controlregs::{Cr0, Cr4};

/// Effective access bits ("ACC"), as stored in [`PageRole::access`] and used as the bit
/// index of the permission bitmap.
pub const ACC_EXEC_MASK: u8 = 1;
pub const ACC_WRITE_MASK: u8 = 2;
pub const ACC_USER_MASK: u8 = 4;
pub const ACC_ALL: u8 = ACC_EXEC_MASK | ACC_WRITE_MASK | ACC_USER_MASK;

/// IA32_EFER bits that feed the roles (SDM Vol. 3A 2.2.1, Table 2-1 / 4.1.1). The `x86`
/// crate names the MSR but not its bits.
pub mod efer {
    /// Long-mode enable.
    pub const LME: u64 = 1 << 8;
    /// Long-mode active (set by the CPU when LME=1 and CR0.PG=1).
    pub const LMA: u64 = 1 << 10;
    /// Execute-disable enable.
    pub const NX: u64 = 1 << 11;
}

/// CR0 bits that feed the roles.
pub mod cr0 {
    use super::Cr0;
    pub const PG: u64 = Cr0::CR0_ENABLE_PAGING.bits() as u64;
    pub const WP: u64 = Cr0::CR0_WRITE_PROTECT.bits() as u64;
}

/// CR4 bits that feed the roles.
pub mod cr4 {
    use super::Cr4;
    pub const PSE: u64 = Cr4::CR4_ENABLE_PSE.bits() as u64;
    pub const PAE: u64 = Cr4::CR4_ENABLE_PAE.bits() as u64;
    pub const LA57: u64 = Cr4::CR4_ENABLE_LA57.bits() as u64;
    pub const SMEP: u64 = Cr4::CR4_ENABLE_SMEP.bits() as u64;
    pub const SMAP: u64 = Cr4::CR4_ENABLE_SMAP.bits() as u64;
    pub const PKE: u64 = Cr4::CR4_ENABLE_PROTECTION_KEY.bits() as u64;
    /// Every CR4 bit that is part of a role: a change of any of them resets the MMU
    /// context (MMU_REFERENCE.md section 2, `kvm_post_set_cr4`).
    pub const ROLE_BITS: u64 = PSE | PAE | LA57 | SMEP | SMAP | PKE;
}

#[inline]
const fn field(word: u32, shift: u32, width: u32) -> u32 {
    (word >> shift) & ((1 << width) - 1)
}

#[inline]
const fn with_field(word: u32, shift: u32, width: u32, value: u32) -> u32 {
    let mask = ((1u32 << width) - 1) << shift;
    (word & !mask) | ((value << shift) & mask)
}

macro_rules! role_bool {
    ($get:ident, $with:ident, $bit:expr, $doc:literal) => {
        #[doc = $doc]
        #[inline]
        pub const fn $get(self) -> bool {
            field(self.0, $bit, 1) != 0
        }
        #[doc = $doc]
        #[inline]
        #[must_use]
        pub const fn $with(self, on: bool) -> Self {
            Self(with_field(self.0, $bit, 1, on as u32))
        }
    };
}

/// `kvm_mmu_page_role`: the meaning of one of our page tables (and, inside [`CpuRole`],
/// of the guest's paging mode).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PageRole(pub u32);

impl PageRole {
    /// Paging level of the table (1 = 4K page table ... 5 = PML5); 0 with paging off.
    #[inline]
    pub const fn level(self) -> u8 {
        field(self.0, 0, 4) as u8
    }
    #[inline]
    #[must_use]
    pub const fn with_level(self, level: u8) -> Self {
        Self(with_field(self.0, 0, 4, level as u32))
    }
    role_bool!(
        has_4_byte_gpte,
        with_has_4_byte_gpte,
        4,
        "The guest's entries are 4 bytes (32-bit paging)."
    );
    /// Which part of a 4-byte-entry guest table a PAE shadow table shadows (0-3).
    #[inline]
    pub const fn quadrant(self) -> u8 {
        field(self.0, 5, 2) as u8
    }
    #[inline]
    #[must_use]
    pub const fn with_quadrant(self, quadrant: u8) -> Self {
        Self(with_field(self.0, 5, 2, quadrant as u32))
    }
    role_bool!(
        direct,
        with_direct,
        7,
        "Maps a linear gfn range; no guest table behind it."
    );
    /// ACC bits ([`ACC_EXEC_MASK`] etc.) granted by the guest entries above this table.
    #[inline]
    pub const fn access(self) -> u8 {
        field(self.0, 8, 3) as u8
    }
    #[inline]
    #[must_use]
    pub const fn with_access(self, access: u8) -> Self {
        Self(with_field(self.0, 8, 3, access as u32))
    }
    role_bool!(
        invalid,
        with_invalid,
        11,
        "The table was zapped and must not be reused."
    );
    role_bool!(
        efer_nx,
        with_efer_nx,
        12,
        "EFER.NX (the XD bit is meaningful)."
    );
    role_bool!(cr0_wp, with_cr0_wp, 13, "CR0.WP.");
    role_bool!(
        smep_andnot_wp,
        with_smep_andnot_wp,
        14,
        "CR4.SMEP && !CR0.WP."
    );
    role_bool!(
        smap_andnot_wp,
        with_smap_andnot_wp,
        15,
        "CR4.SMAP && !CR0.WP."
    );
    role_bool!(
        ad_disabled,
        with_ad_disabled,
        16,
        "The tables have no accessed/dirty bits."
    );
    role_bool!(
        guest_mode,
        with_guest_mode,
        17,
        "The vCPU runs a nested (L2) guest."
    );
    role_bool!(
        passthrough,
        with_passthrough,
        18,
        "A level that only passes through to the next."
    );
    /// Address space: non-zero while the vCPU is in SMM.
    #[inline]
    pub const fn smm(self) -> u8 {
        field(self.0, 24, 8) as u8
    }
    #[inline]
    #[must_use]
    pub const fn with_smm(self, smm: u8) -> Self {
        Self(with_field(self.0, 24, 8, smm as u32))
    }
}

/// `kvm_mmu_extended_role`: guest register bits that only the cpu role needs.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct ExtendedRole(pub u32);

impl ExtendedRole {
    role_bool!(valid, with_valid, 0, "The role has been computed.");
    role_bool!(
        execonly,
        with_execonly,
        1,
        "EPT execute-only pages (nested EPT only)."
    );
    role_bool!(cr4_pse, with_cr4_pse, 2, "CR4.PSE.");
    role_bool!(
        cr4_pke,
        with_cr4_pke,
        3,
        "CR4.PKE && EFER.LMA (protection keys in effect)."
    );
    role_bool!(cr4_smap, with_cr4_smap, 4, "CR4.SMAP.");
    role_bool!(cr4_smep, with_cr4_smep, 5, "CR4.SMEP.");
    role_bool!(
        cr4_la57,
        with_cr4_la57,
        6,
        "CR4.LA57 && EFER.LMA (5-level paging)."
    );
    role_bool!(efer_lma, with_efer_lma, 7, "EFER.LMA.");
}

/// `kvm_cpu_role`: the guest's paging mode.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct CpuRole {
    pub base: PageRole,
    pub ext: ExtendedRole,
}

impl CpuRole {
    /// The role as one word (base in the low half, as KVM's union lays it out).
    #[inline]
    pub const fn as_u64(&self) -> u64 {
        self.base.0 as u64 | (self.ext.0 as u64) << 32
    }
    /// Paging on (CR0.PG=1) means a non-zero level.
    #[inline]
    pub const fn paging_enabled(&self) -> bool {
        self.base.level() > 0
    }
    /// Guest paging levels: 0 (off), 2 (32-bit), 3 (PAE), 4 or 5.
    #[inline]
    pub const fn level(&self) -> u8 {
        self.base.level()
    }
    #[inline]
    pub const fn cr0_wp(&self) -> bool {
        self.base.cr0_wp()
    }
    #[inline]
    pub const fn efer_nx(&self) -> bool {
        self.base.efer_nx()
    }
    #[inline]
    pub const fn smep(&self) -> bool {
        self.ext.cr4_smep()
    }
    #[inline]
    pub const fn smap(&self) -> bool {
        self.ext.cr4_smap()
    }
    #[inline]
    pub const fn pse(&self) -> bool {
        self.ext.cr4_pse()
    }
    /// Protection keys are in effect (CR4.PKE && EFER.LMA).
    #[inline]
    pub const fn pke(&self) -> bool {
        self.ext.cr4_pke()
    }
    #[inline]
    pub const fn long_mode(&self) -> bool {
        self.ext.efer_lma()
    }
    /// 32-bit paging: 4-byte guest entries.
    #[inline]
    pub const fn has_4_byte_gpte(&self) -> bool {
        self.base.has_4_byte_gpte()
    }

    /// The role with CR0.WP replaced by its live value (MMU_REFERENCE.md section 4:
    /// when CR0.WP is guest-owned under TDP, the role may hold a stale WP; the software
    /// walker must use the live one). Updates the WP-derived bits too, exactly as
    /// [`cpu_role`] would have computed them. With paging off WP means nothing and the
    /// role is returned unchanged.
    #[must_use]
    pub const fn with_live_cr0_wp(self, wp: bool) -> CpuRole {
        if !self.paging_enabled() {
            return self;
        }
        let base = self
            .base
            .with_cr0_wp(wp)
            .with_smep_andnot_wp(self.ext.cr4_smep() && !wp)
            .with_smap_andnot_wp(self.ext.cr4_smap() && !wp);
        CpuRole {
            base,
            ext: self.ext,
        }
    }
}

/// The guest registers that determine the roles.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct PagingRegs {
    pub cr0: u64,
    pub cr4: u64,
    pub efer: u64,
}

/// `kvm_calc_cpu_role`: the guest's paging mode from its registers.
///
/// Long mode is taken from EFER.LMA (which the CPU sets when LME=1 and PG=1, SDM Vol. 3A
/// "Initializing IA-32e Mode"), as KVM does, not recomputed from LME.
pub fn cpu_role(regs: &PagingRegs, smm: bool, guest_mode: bool) -> CpuRole {
    let mut base = PageRole::default()
        .with_access(ACC_ALL)
        .with_smm(smm as u8)
        .with_guest_mode(guest_mode);
    let mut ext = ExtendedRole::default().with_valid(true);

    if regs.cr0 & cr0::PG == 0 {
        // Paging off: guest-linear is guest-physical, no guest tables to walk.
        base = base.with_direct(true);
        return CpuRole { base, ext };
    }

    let wp = regs.cr0 & cr0::WP != 0;
    let pae = regs.cr4 & cr4::PAE != 0;
    let la57 = regs.cr4 & cr4::LA57 != 0;
    let smep = regs.cr4 & cr4::SMEP != 0;
    let smap = regs.cr4 & cr4::SMAP != 0;
    let lma = regs.efer & efer::LMA != 0;

    let level = match (lma, la57, pae) {
        (true, true, _) => 5,
        (true, false, _) => 4,
        (false, _, true) => 3,
        (false, _, false) => 2,
    };
    base = base
        .with_level(level)
        .with_efer_nx(regs.efer & efer::NX != 0)
        .with_cr0_wp(wp)
        .with_smep_andnot_wp(smep && !wp)
        .with_smap_andnot_wp(smap && !wp)
        .with_has_4_byte_gpte(!pae);
    ext = ext
        .with_cr4_smep(smep)
        .with_cr4_smap(smap)
        .with_cr4_pse(regs.cr4 & cr4::PSE != 0)
        .with_cr4_pke(lma && regs.cr4 & cr4::PKE != 0)
        .with_cr4_la57(lma && la57)
        .with_efer_lma(lma);
    CpuRole { base, ext }
}

/// The root role of a TDP (EPT) MMU. No guest CR or EFER bit is in it: EPT maps gpa to
/// hpa whatever the guest's paging mode, so a CR0.WP toggle keeps the same roots
/// (MMU_REFERENCE.md section 1, "Why CR0.WP is a page-role bit only for indirect MMUs").
///
/// `tdp_level` is 4, or 5 only when the guest MAXPHYADDR exceeds 48 and 5-level EPT
/// exists; the caller decides.
pub fn tdp_root_role(cpu: &CpuRole, ad_supported: bool, tdp_level: u8) -> PageRole {
    PageRole::default()
        .with_level(tdp_level)
        .with_access(ACC_ALL)
        .with_cr0_wp(true)
        .with_efer_nx(true)
        .with_direct(true)
        .with_smm(cpu.base.smm())
        .with_guest_mode(cpu.base.guest_mode())
        .with_ad_disabled(!ad_supported)
}

/// The root role of a shadow MMU: the guest's own mode, at least PAE wide (we always
/// build PAE or wider tables), with NX forced on because we use NX ourselves (for
/// CR0.WP=0 emulation under SMEP and for NX huge pages). With paging off the cpu role is
/// direct, and so is this one: the tables map gpa = gva.
pub fn shadow_root_role(cpu: &CpuRole) -> PageRole {
    let base = cpu.base;
    base.with_level(base.level().max(3)).with_efer_nx(true)
}
