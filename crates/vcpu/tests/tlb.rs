//! TLB staleness: a translation cached by the model stays visible after the tables
//! change until the operation that architecturally invalidates it (SDM Vol. 3A
//! 4.10.4.1, Vol. 3C 28.4.3), and is gone after it. Every test first shows the stale
//! value (so a TLB that never caches would fail), then the flush that must not remove
//! it (where there is one), then the flush that must.

mod common_paging;

use common_paging::fixture::*;
use vcpu::paging::{Fault, InvalidationError, Mmu, PagingContext};

const L: u64 = 0x4000_1000;
const F1: u64 = 0x8000_0000;
const F2: u64 = 0x8000_5000;

/// A world with one root mapping L -> F1 (flags), and the PTE's hpa.
fn world(ept: bool, flags: u64) -> (Fixture, u64, u64) {
    let mut f = Fixture::new(ept);
    let root = f.new_root();
    let pte = f.map4k(root, L, F1, flags);
    if ept {
        f.ept_map(F1, F1, 7);
        f.ept_map(F2, F2, 7);
    }
    (f, root, pte)
}

fn read(mmu: &mut Mmu, f: &Fixture, ctx: &PagingContext, linear: u64) -> Result<u64, Fault> {
    mmu.translate(&f.map, ctx, linear, READ)
}

/// Fills the TLB with L -> F1, then retargets the PTE to F2 behind its back.
fn fill_then_retarget(mmu: &mut Mmu, f: &Fixture, ctx: &PagingContext, pte: u64) {
    assert_eq!(read(mmu, f, ctx, L + 0x10), Ok(F1 + 0x10));
    let old = f.r64(pte);
    f.w64(pte, (old & !0x000f_ffff_ffff_f000) | F2);
    assert_eq!(
        read(mmu, f, ctx, L + 0x10),
        Ok(F1 + 0x10),
        "stale before flush"
    );
}

#[test]
fn mov_cr3_flushes_non_global_entries() {
    let (f, root, pte) = world(false, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &ctx, pte);
    mmu.on_cr3_write(&ctx, root);
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F2));
}

#[test]
fn global_pages_survive_mov_cr3_until_pge_toggles() {
    let (f, root, pte) = world(false, P | RW | G);
    let mut ctx = f.ctx(root);
    ctx.cr4 |= CR4_PGE;
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &ctx, pte);
    mmu.on_cr3_write(&ctx, root);
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Ok(F1),
        "global survives MOV CR3"
    );
    let mut after = ctx;
    after.cr4 &= !CR4_PGE;
    mmu.on_cr0_cr4_write(&ctx, &after);
    assert_eq!(
        read(&mut mmu, &f, &after, L),
        Ok(F2),
        "PGE toggle flushes globals"
    );
}

#[test]
fn g_bit_without_pge_is_not_global() {
    let (f, root, pte) = world(false, P | RW | G);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &ctx, pte);
    mmu.on_cr3_write(&ctx, root);
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F2));
}

#[test]
fn mov_cr3_noflush_keeps_the_pcid_and_a_plain_load_flushes_it() {
    let (f, root, pte) = world(false, P | RW);
    let mut ctx = f.ctx(root | 5);
    ctx.cr4 |= CR4_PCIDE;
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &ctx, pte);
    mmu.on_cr3_write(&ctx, root | 5 | (1 << 63));
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1), "NOFLUSH keeps PCID 5");
    // A plain load of another PCID flushes that PCID, not this one.
    mmu.on_cr3_write(&ctx, root | 6);
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Ok(F1),
        "PCID 6 flush leaves PCID 5"
    );
    mmu.on_cr3_write(&ctx, root | 5);
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F2));
}

#[test]
fn pcids_are_isolated_and_globals_are_shared() {
    let mut f = Fixture::new(false);
    let root_a = f.new_root();
    let root_b = f.new_root();
    let pte_a = f.map4k(root_a, L, F1, P | RW);
    f.map4k(root_b, L, F2, P | RW);
    f.map4k(root_a, L + 0x1000, F1 + 0x1000, P | RW | G);
    let mut a = f.ctx(root_a | 1);
    a.cr4 |= CR4_PCIDE | CR4_PGE;
    let mut b = a;
    b.cr3 = root_b | 2;
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &a, L), Ok(F1));
    assert_eq!(read(&mut mmu, &f, &a, L + 0x1000), Ok(F1 + 0x1000));
    // PCID 2 (another address space) sees its own mapping, not PCID 1's cached one.
    assert_eq!(read(&mut mmu, &f, &b, L), Ok(F2));
    // ...but a global translation cached under PCID 1 is used under PCID 2 although
    // root B does not map it at all (SDM 4.10.2.4).
    assert_eq!(read(&mut mmu, &f, &b, L + 0x1000), Ok(F1 + 0x1000));
    // Back to PCID 1 with NOFLUSH after changing its PTE: PCID 1's entry is still there.
    f.w64(pte_a, (F2 + 0x3000) | P | RW);
    assert_eq!(
        read(&mut mmu, &f, &a, L),
        Ok(F1),
        "PCID 1 kept across the switch"
    );
}

#[test]
fn invlpg_flushes_the_page_including_globals_and_nothing_else() {
    let (mut f, root, pte) = world(false, P | RW | G);
    let other = f.map4k(root, L + 0x1000, F1 + 0x1000, P | RW);
    let mut ctx = f.ctx(root);
    ctx.cr4 |= CR4_PGE;
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L + 0x1000), Ok(F1 + 0x1000));
    fill_then_retarget(&mut mmu, &f, &ctx, pte);
    f.w64(other, (F2 + 0x1000) | P | RW);
    mmu.invlpg(&ctx, L + 0xfff);
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Ok(F2),
        "INVLPG removes the global page"
    );
    assert_eq!(
        read(&mut mmu, &f, &ctx, L + 0x1000),
        Ok(F1 + 0x1000),
        "INVLPG leaves other pages"
    );
}

#[test]
fn invlpg_anywhere_in_a_large_page_flushes_every_fragment() {
    let mut f = Fixture::new(false);
    let root = f.new_root();
    let base = 0x4020_0000;
    let pde = f.map2m(root, base, 0x8020_0000, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, base + 0x5000), Ok(0x8020_5000));
    assert_eq!(read(&mut mmu, &f, &ctx, base + 0x1f_f000), Ok(0x803f_f000));
    f.w64(pde, 0x8040_0000 | P | RW | PS);
    assert_eq!(
        read(&mut mmu, &f, &ctx, base + 0x5000),
        Ok(0x8020_5000),
        "stale"
    );
    mmu.invlpg(&ctx, base + 0x10_0000);
    assert_eq!(read(&mut mmu, &f, &ctx, base + 0x5000), Ok(0x8040_5000));
    assert_eq!(read(&mut mmu, &f, &ctx, base + 0x1f_f000), Ok(0x805f_f000));
}

/// Two PCIDs, each with a non-global page at L and a global page at L+4K cached;
/// then every PTE retargeted. Returns (mmu, ctx pcid 1, ctx pcid 2, fixture).
fn invpcid_world() -> (Mmu, PagingContext, PagingContext, Fixture) {
    let mut f = Fixture::new(false);
    let root = f.new_root();
    let pte = f.map4k(root, L, F1, P | RW);
    let pte_g = f.map4k(root, L + 0x1000, F1 + 0x1000, P | RW | G);
    let pte_m = f.map4k(root, L + 0x2000, F1 + 0x2000, P | RW);
    let mut c1 = f.ctx(root | 1);
    c1.cr4 |= CR4_PCIDE | CR4_PGE;
    let mut c2 = c1;
    c2.cr3 = root | 2;
    let mut mmu = Mmu::new();
    for c in [&c1, &c2] {
        for off in [0, 0x1000, 0x2000] {
            assert_eq!(read(&mut mmu, &f, c, L + off), Ok(F1 + off));
        }
    }
    for (e, off) in [(pte, 0), (pte_g, 0x1000), (pte_m, 0x2000)] {
        let flags = f.r64(e) & 0xfff;
        f.w64(e, (F2 + off) | flags);
    }
    (mmu, c1, c2, f)
}

fn fresh(mmu: &mut Mmu, f: &Fixture, c: &PagingContext, off: u64) -> bool {
    match read(mmu, f, c, L + off) {
        Ok(hpa) if hpa == F2 + off => true,
        Ok(hpa) if hpa == F1 + off => false,
        other => panic!("unexpected {other:x?}"),
    }
}

#[test]
fn invpcid_individual_address() {
    let (mut mmu, c1, c2, f) = invpcid_world();
    assert_eq!(mmu.invpcid(&c1, 0, 1, L), Ok(()));
    assert!(fresh(&mut mmu, &f, &c1, 0), "the address in PCID 1");
    assert!(!fresh(&mut mmu, &f, &c1, 0x2000), "another address");
    assert!(!fresh(&mut mmu, &f, &c2, 0), "another PCID");
    assert_eq!(mmu.invpcid(&c1, 0, 1, L + 0x1000), Ok(()));
    assert!(
        !fresh(&mut mmu, &f, &c1, 0x1000),
        "global translations are kept"
    );
}

#[test]
fn invpcid_single_context() {
    let (mut mmu, c1, c2, f) = invpcid_world();
    assert_eq!(mmu.invpcid(&c1, 1, 2, 0), Ok(()));
    assert!(fresh(&mut mmu, &f, &c2, 0));
    assert!(fresh(&mut mmu, &f, &c2, 0x2000));
    assert!(!fresh(&mut mmu, &f, &c1, 0), "PCID 1 untouched");
    assert!(!fresh(&mut mmu, &f, &c2, 0x1000), "global kept");
}

#[test]
fn invpcid_all_contexts_including_globals() {
    let (mut mmu, c1, c2, f) = invpcid_world();
    assert_eq!(mmu.invpcid(&c1, 2, 0, 0), Ok(()));
    for c in [&c1, &c2] {
        for off in [0, 0x1000, 0x2000] {
            assert!(fresh(&mut mmu, &f, c, off));
        }
    }
}

#[test]
fn invpcid_all_contexts_except_globals() {
    let (mut mmu, c1, c2, f) = invpcid_world();
    assert_eq!(mmu.invpcid(&c1, 3, 0, 0), Ok(()));
    assert!(fresh(&mut mmu, &f, &c1, 0));
    assert!(fresh(&mut mmu, &f, &c2, 0x2000));
    assert!(!fresh(&mut mmu, &f, &c1, 0x1000), "global kept");
}

#[test]
fn invpcid_rejects_bad_operands() {
    let (mut mmu, c1, _, _) = invpcid_world();
    assert_eq!(
        mmu.invpcid(&c1, 4, 0, 0),
        Err(InvalidationError::InvalidType)
    );
    assert_eq!(
        mmu.invpcid(&c1, 0, 1, 0x0000_8000_0000_0000),
        Err(InvalidationError::InvalidOperand)
    );
    assert_eq!(
        mmu.invpcid(&c1, 1, 0x1000, 0),
        Err(InvalidationError::InvalidOperand)
    );
    let mut no_pcid = c1;
    no_pcid.cr4 &= !CR4_PCIDE;
    assert_eq!(
        mmu.invpcid(&no_pcid, 1, 3, 0),
        Err(InvalidationError::InvalidOperand)
    );
    assert_eq!(mmu.invpcid(&no_pcid, 3, 0, 0), Ok(()));
}

#[test]
fn cr0_and_cr4_writes_flush_exactly_per_sdm_4_10_4_1() {
    // (change, must flush)
    type Case = (&'static str, fn(&mut PagingContext), bool);
    let cases: [Case; 11] = [
        ("CR4.PSE 0->1", |c| c.cr4 |= 1 << 4, false),
        ("CR4.PKE 0->1", |c| c.cr4 |= 1 << 22, false),
        ("CR0.WP 1->0", |c| c.cr0 &= !CR0_WP, false),
        ("CR4.SMAP 0->1", |c| c.cr4 |= CR4_SMAP, false),
        ("CR4.SMEP 0->1", |c| c.cr4 |= CR4_SMEP, true),
        ("CR4.PGE 0->1", |c| c.cr4 |= CR4_PGE, true),
        ("CR4.PCIDE 0->1", |c| c.cr4 |= CR4_PCIDE, false),
        ("CR4.PAE 1->0", |c| c.cr4 &= !CR4_PAE, true),
        ("CR0.PG 1->0", |c| c.cr0 &= !CR0_PG, true),
        ("EFER.NXE (not a CR write)", |c| c.efer &= !(1 << 11), false),
        ("CR0.CD 0->1", |c| c.cr0 |= 1 << 30, false),
    ];
    for (what, change, flushes) in cases {
        let (f, root, pte) = world(false, P | RW);
        let before = f.ctx(root);
        let mut mmu = Mmu::new();
        fill_then_retarget(&mut mmu, &f, &before, pte);
        let mut after = before;
        change(&mut after);
        mmu.on_cr0_cr4_write(&before, &after);
        // Look up with the original context so the only difference is the flush.
        let got = read(&mut mmu, &f, &before, L);
        let want = if flushes { F2 } else { F1 };
        assert_eq!(got, Ok(want), "{what}");
    }
}

#[test]
fn smep_off_and_pcide_off_rules() {
    // SMEP 1 -> 0 does not flush; PCIDE 1 -> 0 flushes every PCID (and globals).
    let (f, root, pte) = world(false, P | RW | G);
    let mut before = f.ctx(root | 3);
    before.cr4 |= CR4_SMEP | CR4_PCIDE | CR4_PGE;
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &before, pte);
    let mut after = before;
    after.cr4 &= !CR4_SMEP;
    mmu.on_cr0_cr4_write(&before, &after);
    assert_eq!(read(&mut mmu, &f, &before, L), Ok(F1), "SMEP 1->0");
    let mut after = before;
    after.cr4 &= !CR4_PCIDE;
    after.cr3 = root;
    mmu.on_cr0_cr4_write(&before, &after);
    assert_eq!(read(&mut mmu, &f, &before, L), Ok(F2), "PCIDE 1->0");
}

#[test]
fn vpids_are_isolated_and_invvpid_flushes_per_type() {
    let (f, root, pte) = world(false, P | RW | G);
    let mut v1 = f.ctx(root);
    v1.cr4 |= CR4_PGE;
    let mut v2 = v1;
    v2.vpid = 2;
    let mut mmu = Mmu::new();
    fill_then_retarget(&mut mmu, &f, &v1, pte);
    // VPID 2 never cached L: it walks and sees the new table.
    assert_eq!(read(&mut mmu, &f, &v2, L), Ok(F2));
    // Now both are cached, with different frames.
    f.w64(pte, (F1 + 0x7000) | P | RW | G);
    assert_eq!(read(&mut mmu, &f, &v1, L), Ok(F1));
    assert_eq!(read(&mut mmu, &f, &v2, L), Ok(F2));
    // Single context retaining globals: the global page stays.
    assert_eq!(mmu.invvpid(3, 1, 0), Ok(()));
    assert_eq!(read(&mut mmu, &f, &v1, L), Ok(F1));
    // Individual address of VPID 1 (globals included).
    assert_eq!(mmu.invvpid(0, 1, L), Ok(()));
    assert_eq!(read(&mut mmu, &f, &v1, L), Ok(F1 + 0x7000));
    assert_eq!(read(&mut mmu, &f, &v2, L), Ok(F2), "VPID 2 untouched");
    // Single context of VPID 2.
    assert_eq!(mmu.invvpid(1, 2, 0), Ok(()));
    assert_eq!(read(&mut mmu, &f, &v2, L), Ok(F1 + 0x7000));
    // All contexts: every VPID but 0.
    let mut v0 = v1;
    v0.vpid = 0;
    assert_eq!(read(&mut mmu, &f, &v0, L), Ok(F1 + 0x7000));
    f.w64(pte, F2 | P | RW | G);
    assert_eq!(mmu.invvpid(2, 0, 0), Ok(()));
    assert_eq!(read(&mut mmu, &f, &v1, L), Ok(F2));
    assert_eq!(read(&mut mmu, &f, &v0, L), Ok(F1 + 0x7000), "VPID 0 kept");
    // VM entry/exit with VPIDs off flushes VPID 0 only.
    mmu.on_vm_entry_or_exit(1);
    assert_eq!(read(&mut mmu, &f, &v0, L), Ok(F1 + 0x7000));
    mmu.on_vm_entry_or_exit(0);
    assert_eq!(read(&mut mmu, &f, &v0, L), Ok(F2));
    // Operand checks.
    assert_eq!(mmu.invvpid(1, 0, 0), Err(InvalidationError::InvalidOperand));
    assert_eq!(
        mmu.invvpid(0, 1, 1 << 50),
        Err(InvalidationError::InvalidOperand)
    );
    assert_eq!(mmu.invvpid(7, 1, 0), Err(InvalidationError::InvalidType));
}

#[test]
fn invept_flushes_combined_mappings_of_its_eptp_only() {
    let (mut f, root, _pte) = world(true, P | RW);
    let ctx = f.ctx(root);
    let eptp = ctx.eptp.unwrap();
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    // The mmu-server moves the guest page: new EPT leaf for gpa F1.
    f.ept_map(F1, 0x9000_0000, 7);
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Ok(F1),
        "stale combined mapping"
    );
    // Guest-side flushes apply (they do invalidate combined mappings of the VPID)...
    // but a flush of another EPTP must not.
    assert_eq!(mmu.invept(1, eptp + 0x1000), Ok(()));
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1), "other EP4TA");
    assert_eq!(mmu.invept(1, eptp), Ok(()));
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(0x9000_0000));
    f.ept_map(F1, 0xa000_0000, 7);
    assert_eq!(mmu.invept(2, 0), Ok(()));
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(0xa000_0000));
    assert_eq!(mmu.invept(3, eptp), Err(InvalidationError::InvalidType));
    assert_eq!(
        mmu.invept(1, eptp | (1 << 10)),
        Err(InvalidationError::InvalidOperand)
    );
}

#[test]
fn invvpid_also_flushes_combined_mappings() {
    let (mut f, root, _) = world(true, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    f.ept_map(F1, 0x9000_0000, 7);
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    assert_eq!(mmu.invvpid(1, ctx.vpid, 0), Ok(()));
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(0x9000_0000));
}

#[test]
fn combined_mappings_are_tagged_by_eptp() {
    let (mut f, root, _) = world(true, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    // A second EPT hierarchy mapping the same guest differently.
    let first_root = f.ept_root.unwrap();
    let second_root = f.alloc();
    f.ept_root = Some(second_root);
    for i in 0..POOL_PAGES {
        let a = POOL + i * 4096;
        f.ept_map(a, a, 7);
    }
    f.ept_map(F1, 0xb000_0000, 7);
    let mut other = ctx;
    other.eptp = f.eptp();
    assert_eq!(read(&mut mmu, &f, &other, L), Ok(0xb000_0000));
    f.ept_root = Some(first_root);
    f.ept_map(F1, 0xc000_0000, 7);
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Ok(F1),
        "first EPTP's entry still cached"
    );
}

#[test]
fn guest_physical_mappings_survive_invvpid_but_not_invept() {
    let (mut f, _, _) = world(true, P | RW);
    let mut ctx = f.ctx(0);
    ctx.cr0 &= !CR0_PG; // unrestricted guest, paging off: linear = gpa
    ctx.efer = 0;
    ctx.cr4 = 0;
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, F1 + 8), Ok(F1 + 8));
    f.ept_map(F1, 0x9000_0000, 7);
    assert_eq!(mmu.invvpid(1, ctx.vpid, 0), Ok(()));
    mmu.invlpg(&ctx, F1);
    assert_eq!(
        read(&mut mmu, &f, &ctx, F1 + 8),
        Ok(F1 + 8),
        "stale gpa mapping"
    );
    assert_eq!(mmu.invept(1, ctx.eptp.unwrap()), Ok(()));
    assert_eq!(read(&mut mmu, &f, &ctx, F1 + 8), Ok(0x9000_0008));
}

#[test]
fn hits_enforce_current_rights_without_a_flush() {
    let (f, root, _) = world(false, P | A | D); // supervisor, read-only
    let mut ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    let walks = mmu.stats().walks;
    // WP=1: supervisor write to a read-only page faults (from the cached rights).
    ctx.cr0 |= CR0_WP;
    assert_eq!(
        mmu.translate(&f.map, &ctx, L, WRITE),
        Err(Fault::PageFault {
            error_code: 0b11,
            linear: L
        })
    );
    // User read of a supervisor page: P | U.
    let mut user = ctx;
    user.cpl = 3;
    assert_eq!(
        read(&mut mmu, &f, &user, L),
        Err(Fault::PageFault {
            error_code: 0b101,
            linear: L
        })
    );
    // WP=0: the same supervisor write now succeeds, no flush needed.
    ctx.cr0 &= !CR0_WP;
    assert_eq!(mmu.translate(&f.map, &ctx, L, WRITE), Ok(F1));
    // NX: the page has XD = 0 and NXE on; a fetch is allowed.
    assert_eq!(mmu.translate(&f.map, &ctx, L, FETCH), Ok(F1));
    assert!(mmu.stats().walks > walks);
}

#[test]
fn write_hit_on_a_clean_entry_walks_to_set_dirty() {
    let (f, root, pte) = world(false, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    assert_eq!(f.r64(pte) & (A | D), A, "a read sets A only");
    let before = mmu.stats();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    assert_eq!(mmu.stats().hits, before.hits + 1);
    assert_eq!(mmu.translate(&f.map, &ctx, L, WRITE), Ok(F1));
    assert_eq!(f.r64(pte) & D, D, "the write set D");
    assert_eq!(
        mmu.stats().walks,
        before.walks + 1,
        "one walk for the write"
    );
    // Once dirty, writes hit.
    assert_eq!(mmu.translate(&f.map, &ctx, L, WRITE), Ok(F1));
    assert_eq!(mmu.stats().walks, before.walks + 1);
}

#[test]
fn a_page_fault_invalidates_the_stale_entry() {
    // SDM 4.10.4.1: a #PF invalidates the faulting page's entries, so a retry after
    // the OS made the page writable (without INVLPG: an upgrade) sees memory.
    let (f, root, pte) = world(false, P | A | D);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    f.w64(pte, F1 | P | RW | A | D);
    assert!(matches!(
        mmu.translate(&f.map, &ctx, L, WRITE),
        Err(Fault::PageFault {
            error_code: 0b11,
            ..
        })
    ));
    assert_eq!(mmu.translate(&f.map, &ctx, L, WRITE), Ok(F1));
}

#[test]
fn an_ept_violation_invalidates_the_stale_combined_entry() {
    let (mut f, root, _) = world(true, P | RW | A | D);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    let leaf = f.ept_map(F1, F1, 1); // read-only in EPT
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    f.w64(leaf, F1 | 7 | (6 << 3)); // the VMM makes it writable, no INVEPT
    match mmu.translate(&f.map, &ctx, L, WRITE) {
        Err(Fault::EptViolation {
            gpa,
            linear,
            qualification,
        }) => {
            assert_eq!((gpa, linear), (F1, Some(L)));
            // write access, readable only, linear valid, final translation.
            assert_eq!(qualification, 0b10 | (0b001 << 3) | (1 << 7) | (1 << 8));
        }
        other => panic!("{other:x?}"),
    }
    assert_eq!(mmu.translate(&f.map, &ctx, L, WRITE), Ok(F1));
}

#[test]
fn stats_count_hits_misses_and_walks() {
    let (f, root, _) = world(false, P | RW | A | D);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    for _ in 0..5 {
        assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    }
    let s = mmu.stats();
    assert_eq!((s.hits, s.misses, s.walks), (4, 1, 1));
    assert_eq!(mmu.tlb_occupancy(), 1);
    mmu.flush_all();
    assert_eq!(mmu.tlb_occupancy(), 0);
}

#[test]
fn a_fault_on_the_dirty_rewalk_drops_the_clean_entry() {
    // A write to a page cached with D = 0 walks memory; if the page is gone by then,
    // the #PF also removes the cached translation (SDM 4.10.4.1), so reads fault too.
    let (f, root, pte) = world(false, P | RW);
    let ctx = f.ctx(root);
    let mut mmu = Mmu::new();
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1));
    f.w64(pte, 0);
    assert_eq!(read(&mut mmu, &f, &ctx, L), Ok(F1), "stale read");
    assert_eq!(
        mmu.translate(&f.map, &ctx, L, WRITE),
        Err(Fault::PageFault {
            error_code: 0b10,
            linear: L
        })
    );
    assert_eq!(
        read(&mut mmu, &f, &ctx, L),
        Err(Fault::PageFault {
            error_code: 0,
            linear: L
        })
    );
}
