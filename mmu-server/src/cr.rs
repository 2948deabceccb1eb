//! What a control-register write does to the MMU (MMU_REFERENCE.md section 2,
//! `kvm_post_set_cr0`, `kvm_post_set_cr4`, `kvm_set_efer`), as a pure decision that
//! [`crate::vm::Vm`] carries out. Keeping the decision apart makes every row of the
//! transition table testable on its own.
//!
//! The `RootReuse` policy changes two things:
//! - `off` is KVM before the CR0.WP series (and what KVM still does for shadow paging):
//!   every change of a role bit resets the MMU context, i.e. unloads every root.
//! - `on`: a CR0.WP-only toggle under TDP only recomputes the cpu role and permission
//!   bitmap (the EPT tables map gpa -> hpa whatever WP is), and other role changes
//!   switch to the root of the new role without unloading the others (roots stay
//!   findable by role). Roots are still unloaded where a TLB flush is architecturally
//!   required and a cached root could otherwise be reused without one: CR0.PG 1->0
//!   (SDM Vol. 3A 4.10.4.1: clearing PG flushes everything) and, with shadow paging,
//!   CR4.PCIDE 1->0.

use crate::role::{cr0, cr4, efer};
use ipc::flush;

/// CR4.PGE (SDM Vol. 3A 2.5): global pages; toggling it flushes all TLB entries.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCIDE (SDM Vol. 3A 2.5): not a role bit, but it changes what a CR3 load flushes.
pub const CR4_PCIDE: u64 = 1 << 17;
/// EFER bits whose change resets the MMU context (`KVM_MMU_EFER_ROLE_BITS`).
pub const EFER_ROLE_BITS: u64 = efer::LME | efer::NX;

/// What one register write requires.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrEffect {
    /// Recompute the roles and permission bitmap only (`kvm_init_mmu`).
    pub init_mmu: bool,
    /// `kvm_mmu_reset_context`: with RootReuse off, unload every root and reload; with
    /// it on, switch to the root of the new role.
    pub reset_context: bool,
    /// Unload every root first (`kvm_mmu_unload`).
    pub unload: bool,
    /// Bits of [`flush`] the write itself requires (a reload adds CURRENT by itself).
    pub flush: u32,
}

/// `kvm_post_set_cr0`.
pub fn post_set_cr0(old: u64, new: u64, tdp: bool, root_reuse: bool) -> CrEffect {
    let mut e = CrEffect::default();
    let changed = old ^ new;
    if changed == cr0::WP {
        // Without paging there are no permissions to emulate.
        if new & cr0::PG == 0 {
            return e;
        }
        // Under TDP the tables do not depend on WP: only the software walker's
        // permission bitmap does (seed 1; KVM since 6.4).
        if tdp && root_reuse {
            e.init_mmu = true;
            return e;
        }
    }
    if changed & cr0::PG != 0 && new & cr0::PG == 0 {
        // SDM 4.10.4.1: clearing CR0.PG invalidates every TLB entry, globals included.
        e.flush |= flush::GUEST;
        if root_reuse {
            e.unload = true;
        }
    }
    if changed & (cr0::PG | cr0::WP) != 0 {
        e.reset_context = true;
    }
    e
}

/// `kvm_post_set_cr4`.
pub fn post_set_cr4(old: u64, new: u64, tdp: bool, root_reuse: bool) -> CrEffect {
    let mut e = CrEffect::default();
    let changed = old ^ new;
    if changed & cr4::ROLE_BITS != 0 {
        // SMEP, SMAP and PKE included, even under TDP: the software walker needs them.
        if tdp && root_reuse {
            e.init_mmu = true;
        } else {
            e.reset_context = true;
        }
    }
    let pcide_on = old & CR4_PCIDE == 0 && new & CR4_PCIDE != 0;
    let pcide_off = old & CR4_PCIDE != 0 && new & CR4_PCIDE == 0;
    // With PCIDs, a MOV CR3 with NOFLUSH may pick up a cached root without a flush:
    // roots cached while PCIDs were off must not be found that way.
    if !tdp && pcide_on {
        e.unload = true;
    }
    if changed & CR4_PGE != 0 || pcide_off {
        // SDM 4.10.4.1: toggling PGE, or clearing PCIDE, flushes every PCID.
        e.flush |= flush::GUEST;
        if pcide_off && !tdp && root_reuse {
            e.unload = true;
        }
    } else if changed & cr4::PAE != 0 || (old & cr4::SMEP == 0 && new & cr4::SMEP != 0) {
        // SDM 4.10.4.1: changing PAE, or setting SMEP, flushes the current PCID.
        e.flush |= flush::CURRENT;
    }
    e
}

/// `kvm_set_efer`: LME and NX are role bits (LMA follows CR0.PG, see the vm).
pub fn post_set_efer(old: u64, new: u64, tdp: bool, root_reuse: bool) -> CrEffect {
    let mut e = CrEffect::default();
    if (old ^ new) & EFER_ROLE_BITS != 0 {
        if tdp && root_reuse {
            e.init_mmu = true;
        } else {
            e.reset_context = true;
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: u64 = cr0::PG;
    const WP: u64 = cr0::WP;
    const PE: u64 = 1;

    #[test]
    fn wp_only_with_paging_off_does_nothing() {
        for tdp in [false, true] {
            for reuse in [false, true] {
                assert_eq!(post_set_cr0(PE, PE | WP, tdp, reuse), CrEffect::default());
            }
        }
    }

    #[test]
    fn wp_only_under_tdp() {
        let on = post_set_cr0(PE | PG, PE | PG | WP, true, true);
        assert_eq!(
            on,
            CrEffect {
                init_mmu: true,
                ..Default::default()
            }
        );
        let off = post_set_cr0(PE | PG, PE | PG | WP, true, false);
        assert_eq!(
            off,
            CrEffect {
                reset_context: true,
                ..Default::default()
            }
        );
    }

    #[test]
    fn wp_only_under_shadow_resets_in_both_policies() {
        for reuse in [false, true] {
            let e = post_set_cr0(PE | PG | WP, PE | PG, false, reuse);
            assert_eq!(
                e,
                CrEffect {
                    reset_context: true,
                    ..Default::default()
                }
            );
        }
    }

    #[test]
    fn pg_clear_flushes_guest() {
        let off = post_set_cr0(PE | PG, PE, true, false);
        assert_eq!(
            off,
            CrEffect {
                reset_context: true,
                flush: flush::GUEST,
                ..Default::default()
            }
        );
        let on = post_set_cr0(PE | PG, PE, false, true);
        assert_eq!(
            on,
            CrEffect {
                reset_context: true,
                unload: true,
                flush: flush::GUEST,
                ..Default::default()
            }
        );
        // PG 0->1: a reset, no flush.
        let set = post_set_cr0(PE, PE | PG, false, false);
        assert_eq!(
            set,
            CrEffect {
                reset_context: true,
                ..Default::default()
            }
        );
        // WP together with another bit is not "WP only".
        let ts = post_set_cr0(PE | PG, PE | PG | WP | 8, true, true);
        assert!(ts.reset_context);
    }

    #[test]
    fn cr4_rows() {
        // A role bit (SMEP) under TDP: legacy resets, reuse only re-inits.
        let smep = cr4::SMEP;
        assert_eq!(
            post_set_cr4(0, smep, true, false),
            CrEffect {
                reset_context: true,
                flush: flush::CURRENT,
                ..Default::default()
            }
        );
        assert_eq!(
            post_set_cr4(0, smep, true, true),
            CrEffect {
                init_mmu: true,
                flush: flush::CURRENT,
                ..Default::default()
            }
        );
        // SMEP 1->0 needs no flush.
        assert_eq!(post_set_cr4(smep, 0, false, false).flush, 0);
        // PAE toggle: reset + flush current.
        let pae = post_set_cr4(0, cr4::PAE, false, false);
        assert_eq!(
            pae,
            CrEffect {
                reset_context: true,
                flush: flush::CURRENT,
                ..Default::default()
            }
        );
        // PGE toggle: flush guest, no reset.
        assert_eq!(
            post_set_cr4(0, CR4_PGE, false, true),
            CrEffect {
                flush: flush::GUEST,
                ..Default::default()
            }
        );
        // PCIDE 0->1 under shadow: unload; under TDP nothing.
        assert_eq!(
            post_set_cr4(0, CR4_PCIDE, false, true),
            CrEffect {
                unload: true,
                ..Default::default()
            }
        );
        assert_eq!(post_set_cr4(0, CR4_PCIDE, true, true), CrEffect::default());
        // PCIDE 1->0: flush guest; with reuse under shadow also unload.
        assert_eq!(
            post_set_cr4(CR4_PCIDE, 0, false, false),
            CrEffect {
                flush: flush::GUEST,
                ..Default::default()
            }
        );
        assert_eq!(
            post_set_cr4(CR4_PCIDE, 0, false, true),
            CrEffect {
                unload: true,
                flush: flush::GUEST,
                ..Default::default()
            }
        );
        // A non-role, non-flush bit (OSFXSR) does nothing.
        assert_eq!(post_set_cr4(0, 1 << 9, false, false), CrEffect::default());
    }

    #[test]
    fn efer_rows() {
        assert!(post_set_efer(0, efer::NX, false, true).reset_context);
        assert!(post_set_efer(0, efer::NX, true, true).init_mmu);
        assert!(post_set_efer(0, efer::LME, true, false).reset_context);
        assert_eq!(
            post_set_efer(0, 1, true, false),
            CrEffect::default(),
            "SCE is no role bit"
        );
    }
}
