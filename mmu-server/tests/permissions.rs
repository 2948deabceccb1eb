//! The permission bitmap and protection keys (MMU_REFERENCE.md section 3).

use mmu_server::permission::{pfec, PermissionBitmap, Permissions, PkruMask};
use mmu_server::role::{
    cpu_role, CpuRole, PagingRegs, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK,
};

const CR0_PE: u64 = 1;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const EFER_LONG: u64 = (1 << 8) | (1 << 10);
const EFER_NX: u64 = 1 << 11;

fn long_mode_role(wp: bool, nx: bool, smep: bool, smap: bool, pke: bool) -> CpuRole {
    let cr0 = CR0_PE | CR0_PG | if wp { CR0_WP } else { 0 };
    let mut cr4 = CR4_PAE;
    if smep {
        cr4 |= CR4_SMEP;
    }
    if smap {
        cr4 |= CR4_SMAP;
    }
    if pke {
        cr4 |= CR4_PKE;
    }
    let efer = EFER_LONG | if nx { EFER_NX } else { 0 };
    cpu_role(&PagingRegs { cr0, cr4, efer }, false, false)
}

fn hex(s: &str) -> [u8; 16] {
    let bytes: Vec<u8> = s
        .split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

/// One row of the section-3 test-vector table.
struct Vector {
    name: &'static str,
    wp: bool,
    nx: bool,
    smep: bool,
    smap: bool,
    bytes: &'static str,
}

#[rustfmt::skip]
const VECTORS: [Vector; 5] = [
    Vector { name: "WP1 NX1", wp: true, nx: true, smep: false, smap: false, bytes: "00 33 0f 3f 00 33 0f 3f 55 77 5f 7f 55 77 5f 7f" },
    Vector { name: "WP0 NX1", wp: false, nx: true, smep: false, smap: false, bytes: "00 00 0f 3f 00 00 0f 3f 55 55 5f 7f 55 55 5f 7f" },
    Vector { name: "WP1 NX1 SMEP SMAP", wp: true, nx: true, smep: true, smap: true, bytes: "f0 f3 0f 3f 00 33 0f 3f f5 f7 5f 7f f5 f7 5f 7f" },
    Vector { name: "WP0 NX1 SMEP SMAP", wp: false, nx: true, smep: true, smap: true, bytes: "f0 f0 0f 3f 00 00 0f 3f f5 f5 5f 7f f5 f5 5f 7f" },
    // "00 33 0f 3f" x4
    Vector { name: "WP1 NX0", wp: true, nx: false, smep: false, smap: false, bytes: "00 33 0f 3f 00 33 0f 3f 00 33 0f 3f 00 33 0f 3f" },
];

#[test]
fn section_3_test_vectors_byte_for_byte() {
    for v in &VECTORS {
        let expected = hex(v.bytes);
        let role = long_mode_role(v.wp, v.nx, v.smep, v.smap, false);
        assert_eq!(
            PermissionBitmap::for_role(&role).0,
            expected,
            "{} (from the role)",
            v.name
        );
        let direct = PermissionBitmap::legacy(v.wp, v.nx, v.smep, v.smap);
        assert_eq!(direct.0, expected, "{} (direct)", v.name);
    }
}

/// CR0.WP, EFER.NX, CR4.SMEP, CR4.SMAP.
#[derive(Clone, Copy, Debug)]
struct Controls {
    wp: bool,
    nx: bool,
    smep: bool,
    smap: bool,
}

impl Controls {
    fn all() -> impl Iterator<Item = Controls> {
        (0..16u8).map(|c| Controls {
            wp: c & 1 != 0,
            nx: c & 2 != 0,
            smep: c & 4 != 0,
            smap: c & 8 != 0,
        })
    }
}

/// An access: write, user, fetch, and whether SMAP is waived (EFLAGS.AC on an explicit
/// access).
#[derive(Clone, Copy, Debug)]
struct Kind {
    w: bool,
    u: bool,
    f: bool,
    exempt: bool,
}

/// The five rules of section 3, written as the table states them.
fn rule_fault(k: Kind, acc: u8, c: Controls) -> bool {
    let pw = acc & ACC_WRITE_MASK != 0;
    let pu = acc & ACC_USER_MASK != 0;
    let px = acc & ACC_EXEC_MASK != 0;
    (k.w && !pw && (k.u || c.wp))
        || (k.u && !pu)
        || (k.f && !px && c.nx)
        || (k.f && !k.u && pu && c.smep)
        || (!k.f && !k.u && pu && c.smap && !k.exempt)
}

#[test]
fn bitmap_equals_the_five_rules_exhaustively() {
    let mut checked = 0;
    for c in Controls::all() {
        let bitmap = PermissionBitmap::legacy(c.wp, c.nx, c.smep, c.smap);
        for index in 0..16usize {
            let kind = Kind {
                w: index & 1 != 0,
                u: index & 2 != 0,
                exempt: index & 4 != 0,
                f: index & 8 != 0,
            };
            for acc in 0..8u8 {
                let expected = rule_fault(kind, acc, c);
                assert_eq!(
                    bitmap.faults(index, acc),
                    expected,
                    "{c:?} index={index} acc={acc}"
                );
                assert_eq!((bitmap.0[index] >> acc) & 1 != 0, expected);
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16 * 16 * 8);
}

#[test]
fn permission_fault_equals_the_rules_for_every_access_and_flag() {
    // Through the public entry point: pfec W/U/F, EFLAGS.AC and IMPLICIT combine into the
    // "SMAP-exempt" index bit as not_smap = AC && !implicit. No protection keys here.
    for c in Controls::all() {
        let perms = Permissions::for_role(&long_mode_role(c.wp, c.nx, c.smep, c.smap, false));
        assert_eq!(perms.pkru_mask, PkruMask(0));
        for access in 0..8u64 {
            let (w, u, f) = (access & 1 != 0, access & 2 != 0, access & 4 != 0);
            let pfec = if w { pfec::W } else { 0 }
                | if u { pfec::U } else { 0 }
                | if f { pfec::FETCH } else { 0 };
            for ac in [false, true] {
                for implicit in [false, true] {
                    let access_pfec = pfec | if implicit { pfec::IMPLICIT } else { 0 };
                    let kind = Kind {
                        w,
                        u,
                        f,
                        exempt: ac && !implicit,
                    };
                    for acc in 0..8u8 {
                        let got = perms.permission_fault(acc, 0, access_pfec, ac, 0xFFFF_FFFF);
                        let want = if rule_fault(kind, acc, c) {
                            pfec::P as u32
                        } else {
                            0
                        };
                        assert_eq!(
                            got, want,
                            "{c:?} {kind:?} ac={ac} implicit={implicit} acc={acc}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn outcome_bits_in_pfec_do_not_change_the_answer() {
    // A caller passing back an error code (P, RSVD, PK, nested bits) must get the same
    // answer as for the bare access.
    let perms = Permissions::for_role(&long_mode_role(true, true, true, true, true));
    for acc in 0..8u8 {
        for access in [
            0,
            pfec::W,
            pfec::U,
            pfec::W | pfec::U,
            pfec::FETCH,
            pfec::FETCH | pfec::U,
        ] {
            let clean = perms.permission_fault(acc, 3, access, false, 0x0000_00C0);
            let noisy = perms.permission_fault(
                acc,
                3,
                access | pfec::P | pfec::RSVD | pfec::PK | pfec::GUEST_PAGE | pfec::GUEST_FINAL,
                false,
                0x0000_00C0,
            );
            assert_eq!(clean, noisy, "acc={acc} access={access:#x}");
        }
    }
}

#[test]
fn smap_with_eflags_ac_and_implicit_accesses() {
    let perms = Permissions::for_role(&long_mode_role(true, true, false, true, false));
    let user_page = ACC_USER_MASK | ACC_WRITE_MASK | ACC_EXEC_MASK;
    let p = pfec::P as u32;
    // Explicit supervisor read/write of a user page: AC decides.
    assert_eq!(perms.permission_fault(user_page, 0, 0, false, 0), p);
    assert_eq!(perms.permission_fault(user_page, 0, 0, true, 0), 0);
    assert_eq!(perms.permission_fault(user_page, 0, pfec::W, false, 0), p);
    assert_eq!(perms.permission_fault(user_page, 0, pfec::W, true, 0), 0);
    // Implicit supervisor accesses are always subject to SMAP.
    assert_eq!(
        perms.permission_fault(user_page, 0, pfec::IMPLICIT, true, 0),
        p
    );
    assert_eq!(
        perms.permission_fault(user_page, 0, pfec::W | pfec::IMPLICIT, true, 0),
        p
    );
    // SMAP is about data: a supervisor fetch of a user page is SMEP's business (off here).
    assert_eq!(
        perms.permission_fault(user_page, 0, pfec::FETCH, false, 0),
        0
    );
    // User accesses and supervisor pages are unaffected.
    assert_eq!(perms.permission_fault(user_page, 0, pfec::U, false, 0), 0);
    assert_eq!(perms.permission_fault(ACC_WRITE_MASK, 0, 0, false, 0), 0);
    // Without SMAP, AC does not matter.
    let no_smap = Permissions::for_role(&long_mode_role(true, true, false, false, false));
    assert_eq!(
        no_smap.permission_fault(user_page, 0, pfec::IMPLICIT, false, 0),
        0
    );
}

#[test]
fn smep_blocks_supervisor_fetch_of_user_pages_only() {
    let perms = Permissions::for_role(&long_mode_role(true, true, true, false, false));
    let p = pfec::P as u32;
    assert_eq!(
        perms.permission_fault(ACC_USER_MASK | ACC_EXEC_MASK, 0, pfec::FETCH, false, 0),
        p
    );
    assert_eq!(
        perms.permission_fault(ACC_USER_MASK | ACC_EXEC_MASK, 0, pfec::FETCH, true, 0),
        p
    );
    assert_eq!(
        perms.permission_fault(ACC_EXEC_MASK, 0, pfec::FETCH, false, 0),
        0
    );
    assert_eq!(
        perms.permission_fault(
            ACC_USER_MASK | ACC_EXEC_MASK,
            0,
            pfec::FETCH | pfec::U,
            false,
            0
        ),
        0
    );
    assert_eq!(perms.permission_fault(ACC_USER_MASK, 0, 0, false, 0), 0);
}

const fn pkru(key: u32, ad: bool, wd: bool) -> u32 {
    ((ad as u32) | (wd as u32) << 1) << (2 * key)
}

#[test]
fn protection_keys_access_disable() {
    let perms = Permissions::for_role(&long_mode_role(true, true, false, false, true));
    assert_ne!(perms.pkru_mask, PkruMask(0));
    let reg = pkru(1, true, false);
    let user_rw = ACC_USER_MASK | ACC_WRITE_MASK | ACC_EXEC_MASK;
    let pk = (pfec::P | pfec::PK) as u32;
    // AD stops reads and writes, user and supervisor, on user pages with that key.
    assert_eq!(perms.permission_fault(user_rw, 1, 0, false, reg), pk);
    assert_eq!(perms.permission_fault(user_rw, 1, pfec::U, false, reg), pk);
    assert_eq!(
        perms.permission_fault(user_rw, 1, pfec::W | pfec::U, false, reg),
        pk
    );
    assert_eq!(perms.permission_fault(user_rw, 1, pfec::W, false, reg), pk);
    // Other keys are unaffected.
    assert_eq!(perms.permission_fault(user_rw, 0, pfec::U, false, reg), 0);
    assert_eq!(
        perms.permission_fault(user_rw, 2, pfec::W | pfec::U, false, reg),
        0
    );
    // Fetches are never subject to protection keys.
    assert_eq!(
        perms.permission_fault(user_rw, 1, pfec::FETCH | pfec::U, false, reg),
        0
    );
    // Supervisor pages are never subject to protection keys.
    assert_eq!(
        perms.permission_fault(ACC_WRITE_MASK | ACC_EXEC_MASK, 1, 0, false, reg),
        0
    );
    assert_eq!(
        perms.permission_fault(ACC_WRITE_MASK | ACC_EXEC_MASK, 1, pfec::W, false, reg),
        0
    );
    // An ordinary violation and a key violation together report both.
    assert_eq!(
        perms.permission_fault(ACC_USER_MASK, 1, pfec::W | pfec::U, false, reg),
        pk
    );
    // Key 15 sits in PKRU bits 31:30.
    let reg15 = pkru(15, true, false);
    assert_eq!(perms.permission_fault(user_rw, 15, 0, false, reg15), pk);
    assert_eq!(perms.permission_fault(user_rw, 14, 0, false, reg15), 0);
}

#[test]
fn protection_keys_write_disable_and_cr0_wp() {
    let reg = pkru(2, false, true);
    let user_rw = ACC_USER_MASK | ACC_WRITE_MASK;
    let pk = (pfec::P | pfec::PK) as u32;
    for wp in [true, false] {
        let perms = Permissions::for_role(&long_mode_role(wp, true, false, false, true));
        // WD never stops reads.
        assert_eq!(perms.permission_fault(user_rw, 2, 0, false, reg), 0);
        assert_eq!(perms.permission_fault(user_rw, 2, pfec::U, false, reg), 0);
        // WD stops user writes whatever WP.
        assert_eq!(
            perms.permission_fault(user_rw, 2, pfec::W | pfec::U, false, reg),
            pk
        );
        // Supervisor writes: only with WP=1.
        let sup = perms.permission_fault(user_rw, 2, pfec::W, false, reg);
        assert_eq!(sup, if wp { pk } else { 0 }, "wp={wp}");
    }
}

#[test]
fn protection_keys_need_long_mode() {
    // CR4.PKE without EFER.LMA (PAE paging): keys do not exist (SDM Vol. 3A 4.6.2).
    let role = cpu_role(
        &PagingRegs {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr4: CR4_PAE | CR4_PKE,
            efer: EFER_NX,
        },
        false,
        false,
    );
    let perms = Permissions::for_role(&role);
    assert_eq!(perms.pkru_mask, PkruMask(0));
    let user_rw = ACC_USER_MASK | ACC_WRITE_MASK;
    assert_eq!(
        perms.permission_fault(user_rw, 1, pfec::U, false, pkru(1, true, true)),
        0
    );
    // And with long mode but PKE clear, neither.
    let perms = Permissions::for_role(&long_mode_role(true, true, false, false, false));
    assert_eq!(
        perms.permission_fault(user_rw, 1, pfec::U, false, pkru(1, true, true)),
        0
    );
}

#[test]
fn pkru_mask_matches_the_update_rule() {
    // For each index: AD-bit = !F && pU, WD-bit = AD-bit && W && (U || WP); the index's
    // RSVD slot means pU. Checked against the mask's bits at offset index*2.
    for wp in [false, true] {
        let mask = PkruMask::for_role(&long_mode_role(wp, true, false, false, true)).0;
        for index in 0..16u32 {
            let (w, u, pu, f) = (
                index & 1 != 0,
                index & 2 != 0,
                index & 4 != 0,
                index & 8 != 0,
            );
            let ad = !f && pu;
            let wd = ad && w && (u || wp);
            let bits = (mask >> (2 * index)) & 3;
            assert_eq!(bits, ad as u32 | (wd as u32) << 1, "wp={wp} index={index}");
        }
    }
}

#[test]
fn paging_off_checks_nothing() {
    let role = cpu_role(
        &PagingRegs {
            cr0: CR0_PE,
            cr4: CR4_SMEP | CR4_SMAP,
            efer: EFER_NX,
        },
        false,
        false,
    );
    let perms = Permissions::for_role(&role);
    for acc in 0..8u8 {
        for access in 0..8u64 {
            assert_eq!(perms.permission_fault(acc, 0, access << 1, false, 0), 0);
        }
    }
}

#[test]
fn ept_bitmap_checks_write_read_and_execute_only() {
    // In the EPT variant ACC_USER means readable and U in pfec means a read.
    let ept = PermissionBitmap::ept();
    for index in 0..16usize {
        let (w, r, f) = (index & 1 != 0, index & 2 != 0, index & 8 != 0);
        for acc in 0..8u8 {
            let expected = (w && acc & ACC_WRITE_MASK == 0)
                || (r && acc & ACC_USER_MASK == 0)
                || (f && acc & ACC_EXEC_MASK == 0);
            assert_eq!(ept.faults(index, acc), expected, "index={index} acc={acc}");
        }
    }
}
