//! cpu roles and root roles against hand-computed role words (MMU_REFERENCE.md section 1).
//!
//! The expected words are written out in hex from the bit layout, not built with the
//! module's own setters, so a misplaced field shows up here.

use mmu_server::role::{
    cpu_role, shadow_root_role, tdp_root_role, CpuRole, ExtendedRole, PageRole, PagingRegs,
    ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK,
};

// Register bits, spelled out from the SDM (Vol. 3A 2.5, 2.2.1) independently of the
// module's constants.
const CR0_PE: u64 = 1;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NX: u64 = 1 << 11;

const LONG: u64 = EFER_LME | EFER_LMA;

struct Case {
    name: &'static str,
    cr0: u64,
    cr4: u64,
    efer: u64,
    base: u32,
    ext: u32,
    shadow: u32,
}

// Field values used below: access=7 -> 0x700, direct 0x80, has_4_byte_gpte 0x10,
// efer_nx 0x1000, cr0_wp 0x2000, smep_andnot_wp 0x4000, smap_andnot_wp 0x8000.
// ext: valid 1, cr4_pse 4, cr4_pke 8, cr4_smap 0x10, cr4_smep 0x20, cr4_la57 0x40,
// efer_lma 0x80.
#[rustfmt::skip]
const CASES: &[Case] = &[
    Case { name: "paging off", cr0: CR0_PE, cr4: 0, efer: 0, base: 0x0780, ext: 0x01, shadow: 0x1783 },
    Case { name: "paging off ignores CR4/EFER", cr0: CR0_PE | CR0_WP, cr4: CR4_PAE | CR4_SMEP, efer: EFER_NX, base: 0x0780, ext: 0x01, shadow: 0x1783 },
    Case { name: "2-level WP", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: 0, efer: 0, base: 0x2712, ext: 0x01, shadow: 0x3713 },
    Case { name: "2-level no WP", cr0: CR0_PE | CR0_PG, cr4: 0, efer: 0, base: 0x0712, ext: 0x01, shadow: 0x1713 },
    Case { name: "2-level PSE", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PSE, efer: 0, base: 0x2712, ext: 0x05, shadow: 0x3713 },
    Case { name: "2-level NX set", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: 0, efer: EFER_NX, base: 0x3712, ext: 0x01, shadow: 0x3713 },
    Case { name: "PAE NX", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: EFER_NX, base: 0x3703, ext: 0x01, shadow: 0x3703 },
    Case { name: "PAE no NX", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: 0, base: 0x2703, ext: 0x01, shadow: 0x3703 },
    Case { name: "PAE PKE without LMA", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_PKE, efer: EFER_NX, base: 0x3703, ext: 0x01, shadow: 0x3703 },
    Case { name: "PAE LA57 without LMA", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_LA57, efer: EFER_NX, base: 0x3703, ext: 0x01, shadow: 0x3703 },
    Case { name: "4-level", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: LONG | EFER_NX, base: 0x3704, ext: 0x81, shadow: 0x3704 },
    Case { name: "4-level no NX", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE, efer: LONG, base: 0x2704, ext: 0x81, shadow: 0x3704 },
    Case { name: "4-level WP off", cr0: CR0_PE | CR0_PG, cr4: CR4_PAE, efer: LONG | EFER_NX, base: 0x1704, ext: 0x81, shadow: 0x1704 },
    Case { name: "4-level PKE", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_PKE, efer: LONG | EFER_NX, base: 0x3704, ext: 0x89, shadow: 0x3704 },
    Case { name: "5-level", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_LA57, efer: LONG | EFER_NX, base: 0x3705, ext: 0xC1, shadow: 0x3705 },
    Case { name: "SMEP SMAP WP", cr0: CR0_PE | CR0_PG | CR0_WP, cr4: CR4_PAE | CR4_SMEP | CR4_SMAP, efer: LONG | EFER_NX, base: 0x3704, ext: 0xB1, shadow: 0x3704 },
    Case { name: "SMEP SMAP no WP", cr0: CR0_PE | CR0_PG, cr4: CR4_PAE | CR4_SMEP | CR4_SMAP, efer: LONG | EFER_NX, base: 0xD704, ext: 0xB1, shadow: 0xD704 },
    Case { name: "SMEP only no WP", cr0: CR0_PE | CR0_PG, cr4: CR4_PAE | CR4_SMEP, efer: LONG | EFER_NX, base: 0x5704, ext: 0xA1, shadow: 0x5704 },
    Case { name: "SMAP only no WP 2-level", cr0: CR0_PE | CR0_PG, cr4: CR4_SMAP, efer: 0, base: 0x8712, ext: 0x11, shadow: 0x9713 },
];

#[test]
fn cpu_roles_match_hand_computed_words() {
    for c in CASES {
        let regs = PagingRegs {
            cr0: c.cr0,
            cr4: c.cr4,
            efer: c.efer,
        };
        let role = cpu_role(&regs, false, false);
        assert_eq!(role.base.0, c.base, "{}: base {:#x}", c.name, role.base.0);
        assert_eq!(role.ext.0, c.ext, "{}: ext {:#x}", c.name, role.ext.0);
        assert_eq!(
            role.as_u64(),
            (c.ext as u64) << 32 | c.base as u64,
            "{}",
            c.name
        );
        assert_eq!(role.paging_enabled(), c.cr0 & CR0_PG != 0, "{}", c.name);
    }
}

#[test]
fn shadow_root_roles_are_pae_or_wider_with_nx() {
    for c in CASES {
        let regs = PagingRegs {
            cr0: c.cr0,
            cr4: c.cr4,
            efer: c.efer,
        };
        let root = shadow_root_role(&cpu_role(&regs, false, false));
        assert_eq!(root.0, c.shadow, "{}: shadow root {:#x}", c.name, root.0);
        assert!(root.level() >= 3, "{}", c.name);
        assert!(root.efer_nx(), "{}", c.name);
        assert_eq!(
            root.direct(),
            c.cr0 & CR0_PG == 0,
            "{}: direct iff paging off",
            c.name
        );
    }
}

#[test]
fn tdp_root_role_carries_no_guest_register_bits() {
    // level 4, access 7, direct, efer_nx, cr0_wp: 0x3784; ad_disabled adds 0x10000.
    for c in CASES {
        let regs = PagingRegs {
            cr0: c.cr0,
            cr4: c.cr4,
            efer: c.efer,
        };
        let cpu = cpu_role(&regs, false, false);
        assert_eq!(tdp_root_role(&cpu, true, 4).0, 0x3784, "{}", c.name);
        assert_eq!(tdp_root_role(&cpu, false, 4).0, 0x1_3784, "{}", c.name);
        assert_eq!(tdp_root_role(&cpu, true, 5).0, 0x3785, "{}", c.name);
    }
}

#[test]
fn smm_and_guest_mode_reach_cpu_and_root_roles() {
    let regs = PagingRegs {
        cr0: CR0_PE | CR0_PG | CR0_WP,
        cr4: CR4_PAE,
        efer: LONG | EFER_NX,
    };
    let cpu = cpu_role(&regs, true, true);
    assert_eq!(cpu.base.0, 0x0102_3704);
    assert_eq!(cpu.base.smm(), 1);
    assert!(cpu.base.guest_mode());
    assert_eq!(tdp_root_role(&cpu, true, 4).0, 0x0102_3784);
    assert_eq!(shadow_root_role(&cpu).0, 0x0102_3704);
    // SMM is its own address space: the roots must differ from the non-SMM ones.
    let normal = cpu_role(&regs, false, false);
    assert_ne!(
        tdp_root_role(&cpu, true, 4),
        tdp_root_role(&normal, true, 4)
    );
    // Paging off keeps smm and guest_mode too.
    let off = cpu_role(
        &PagingRegs {
            cr0: CR0_PE,
            cr4: 0,
            efer: 0,
        },
        true,
        false,
    );
    assert_eq!(off.base.0, 0x0100_0780);
}

#[test]
fn cr0_wp_toggle_keeps_tdp_root_but_changes_shadow_root() {
    // The point of the project's first seed (MMU_REFERENCE.md section 7.1).
    for (cr4, efer) in [
        (CR4_PAE, LONG | EFER_NX),
        (CR4_PAE | CR4_SMEP | CR4_SMAP, LONG | EFER_NX),
        (CR4_PAE, EFER_NX),
        (CR4_PSE, 0),
        (CR4_PAE | CR4_LA57 | CR4_PKE, LONG | EFER_NX),
    ] {
        let wp1 = cpu_role(
            &PagingRegs {
                cr0: CR0_PE | CR0_PG | CR0_WP,
                cr4,
                efer,
            },
            false,
            false,
        );
        let wp0 = cpu_role(
            &PagingRegs {
                cr0: CR0_PE | CR0_PG,
                cr4,
                efer,
            },
            false,
            false,
        );
        assert_ne!(wp0, wp1, "the cpu role sees WP");
        assert_eq!(tdp_root_role(&wp0, true, 4), tdp_root_role(&wp1, true, 4));
        assert_ne!(shadow_root_role(&wp0), shadow_root_role(&wp1));
        assert!(shadow_root_role(&wp1).cr0_wp());
        assert!(!shadow_root_role(&wp0).cr0_wp());
    }
}

#[test]
fn smep_smap_andnot_wp_only_without_wp() {
    let cr4 = CR4_PAE | CR4_SMEP | CR4_SMAP;
    let on = cpu_role(
        &PagingRegs {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr4,
            efer: LONG,
        },
        false,
        false,
    );
    let off = cpu_role(
        &PagingRegs {
            cr0: CR0_PE | CR0_PG,
            cr4,
            efer: LONG,
        },
        false,
        false,
    );
    assert!(!on.base.smep_andnot_wp() && !on.base.smap_andnot_wp());
    assert!(off.base.smep_andnot_wp() && off.base.smap_andnot_wp());
    assert!(on.smep() && on.smap() && off.smep() && off.smap());
}

#[test]
fn accessors_round_trip_every_field() {
    let mut role = PageRole::default();
    role = role
        .with_level(5)
        .with_has_4_byte_gpte(true)
        .with_quadrant(3)
        .with_direct(true)
        .with_access(ACC_WRITE_MASK | ACC_USER_MASK)
        .with_invalid(true)
        .with_efer_nx(true)
        .with_cr0_wp(true)
        .with_smep_andnot_wp(true)
        .with_smap_andnot_wp(true)
        .with_ad_disabled(true)
        .with_guest_mode(true)
        .with_passthrough(true)
        .with_smm(0xA5);
    assert_eq!(role.0, 0xA507_FEF5);
    assert_eq!(role.level(), 5);
    assert_eq!(role.quadrant(), 3);
    assert_eq!(role.access(), 6);
    assert_eq!(role.smm(), 0xA5);
    // Clearing a field touches only that field.
    assert_eq!(role.with_quadrant(0).0, 0xA507_FE95);
    assert_eq!(role.with_access(ACC_EXEC_MASK).0, 0xA507_F9F5);
    assert_eq!(role.with_level(0).0, 0xA507_FEF0);
    assert_eq!(role.with_passthrough(false).0, 0xA503_FEF5);
    // Out-of-range values are truncated to the field, never spill into neighbours.
    assert_eq!(PageRole::default().with_level(0x1F).0, 0xF);
    assert_eq!(PageRole::default().with_access(0xFF).0, 0x700);
    assert_eq!(ACC_ALL, 7);

    let ext = ExtendedRole::default()
        .with_valid(true)
        .with_execonly(true)
        .with_cr4_pse(true)
        .with_cr4_pke(true)
        .with_cr4_smap(true)
        .with_cr4_smep(true)
        .with_cr4_la57(true)
        .with_efer_lma(true);
    assert_eq!(ext.0, 0xFF);
    assert_eq!(ext.with_cr4_pke(false).0, 0xF7);
    let cpu = CpuRole { base: role, ext };
    assert_eq!(cpu.as_u64(), 0xFF_A507_FEF5);
}

#[test]
fn live_cr0_wp_patch_equals_recomputing_the_role() {
    for c in CASES {
        for wp in [false, true] {
            let stale = cpu_role(
                &PagingRegs {
                    cr0: c.cr0,
                    cr4: c.cr4,
                    efer: c.efer,
                },
                false,
                false,
            );
            let cr0 = if wp { c.cr0 | CR0_WP } else { c.cr0 & !CR0_WP };
            let fresh = cpu_role(
                &PagingRegs {
                    cr0,
                    cr4: c.cr4,
                    efer: c.efer,
                },
                false,
                false,
            );
            assert_eq!(stale.with_live_cr0_wp(wp), fresh, "{} wp={wp}", c.name);
        }
    }
}
