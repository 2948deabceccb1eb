//! Shadow paging end to end: root switching on CR0.WP, the root cache on CR3 loads
//! (MRU, PCID, NOFLUSH, obsolete roots), write-protect faults (retry, emulate, the
//! anti-loop rule), emulated writes, and the 32-bit and PAE guest formats.

mod support;

use ipc::*;
use support::*;

const VM: Badge = 7;
const LONG_CR4: u64 = CR4_PAE;
const LONG_EFER: u64 = EFER_LME | EFER_LMA | EFER_NX;

fn long_guest(m: &Machine, root_reuse: bool) -> (RootReply, u64) {
    m.vm(VM, MmuMode::Shadow, root_reuse);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | US | A | D, &mut next);
    (m.regs(VM, PE | PG | WP, 0x1000, LONG_CR4, LONG_EFER), next)
}

/// Beyond KVM: a CR0.WP toggle under shadow paging switches between the cached roots
/// of the two roles; toggling back finds the old root with its entries intact.
#[test]
fn wp_toggle_switches_between_two_cached_roots() {
    let m = Machine::new(8 << 20, 64);
    let (r_wp, _) = long_guest(&m, true);
    assert_eq!(r_wp.root_level, 4);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0123, EC_W, 0)),
        FaultOutcome::Fixed
    );
    let leaf = m.shadow_walk(r_wp.root_hpa, 4, 0x40_0000).unwrap();
    assert_eq!(
        (leaf.hpa, leaf.w, leaf.u),
        (RAM_HPA + 0x20_0000, true, true)
    );

    let r_nowp = m.cr(VM, CrRegister::Cr0, PE | PG);
    assert_ne!(r_nowp.root_hpa, r_wp.root_hpa, "another role, another root");
    assert_eq!(r_nowp.flush & flush::CURRENT, flush::CURRENT);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, 0, 0)),
        FaultOutcome::Fixed
    );
    let faults = m.stats(VM).page_faults_fixed;

    for _ in 0..100 {
        let r = m.cr(VM, CrRegister::Cr0, PE | PG | WP);
        assert_eq!(r.root_hpa, r_wp.root_hpa);
        assert!(
            m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_some(),
            "entries intact"
        );
        let r = m.cr(VM, CrRegister::Cr0, PE | PG);
        assert_eq!(r.root_hpa, r_nowp.root_hpa);
        assert!(
            m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_some(),
            "entries intact"
        );
    }
    let s = m.stats(VM);
    assert_eq!(s.roots_allocated, 2);
    assert_eq!(s.root_cache_hits, 200);
    assert_eq!(s.page_faults_fixed, faults, "nothing refaulted");
}

/// The legacy policy: every toggle unloads every root and rebuilds.
#[test]
fn wp_toggle_without_reuse_rebuilds() {
    let m = Machine::new(8 << 20, 64);
    let (_, _) = long_guest(&m, false);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, 0, 0)),
        FaultOutcome::Fixed
    );
    let mut cr0 = PE | PG | WP;
    for _ in 0..10 {
        cr0 ^= WP;
        let r = m.cr(VM, CrRegister::Cr0, cr0);
        assert!(
            m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_none(),
            "rebuilt empty"
        );
        assert_eq!(
            outcome(&m.shadow_fault(VM, 0x40_0000, 0, 0)),
            FaultOutcome::Fixed
        );
    }
    let s = m.stats(VM);
    assert_eq!(s.roots_allocated, 11);
    assert_eq!(s.roots_freed, 10);
    assert_eq!(s.page_faults_fixed, 11);
}

/// Five address spaces through a current root and three previous ones.
#[test]
fn cr3_loads_use_the_root_cache_in_mru_order() {
    for reuse in [true, false] {
        let m = Machine::new(8 << 20, 128);
        m.vm(VM, MmuMode::Shadow, reuse);
        let mut next = 0x10000;
        let cr3s: Vec<u64> = (1..=5).map(|k| k * 0x1000).collect();
        for (i, &cr3) in cr3s.iter().enumerate() {
            m.map4(
                cr3,
                0x40_0000,
                0x20_0000 + i as u64 * 0x1000,
                P | RW | US | A | D,
                &mut next,
            );
        }
        let mut roots = std::collections::HashMap::new();
        let r = m.regs(VM, PE | PG | WP, cr3s[0], LONG_CR4, LONG_EFER);
        roots.insert(cr3s[0], r.root_hpa);
        for &cr3 in &cr3s[1..4] {
            let r = m.cr(VM, CrRegister::Cr3, cr3);
            assert_eq!(r.flush, flush::CURRENT);
            roots.insert(cr3, r.root_hpa);
        }
        let s = m.stats(VM);
        assert_eq!(
            (s.root_cache_hits, s.root_cache_misses, s.roots_allocated),
            (0, 3, 4)
        );
        // A is the LRU of the four: still cached, a hit.
        let r = m.cr(VM, CrRegister::Cr3, cr3s[0]);
        assert_eq!(r.root_hpa, roots[&cr3s[0]]);
        assert_eq!(m.stats(VM).root_cache_hits, 1);
        // E evicts the LRU root, B.
        m.cr(VM, CrRegister::Cr3, cr3s[4]);
        let cache = m.server.borrow().vm(VM).unwrap().roots;
        assert_eq!(cache.current.pgd, cr3s[4]);
        let prev: Vec<u64> = cache.prev.iter().map(|r| r.pgd).collect();
        assert_eq!(prev, vec![cr3s[0], cr3s[3], cr3s[2]], "MRU order");
        // B again: a cache miss. With RootReuse its root is still found by (gfn, role);
        // without, it was freed and is rebuilt.
        let before = m.stats(VM);
        m.cr(VM, CrRegister::Cr3, cr3s[1]);
        let after = m.stats(VM);
        assert_eq!(after.root_cache_misses, before.root_cache_misses + 1);
        let rebuilt = after.roots_allocated - before.roots_allocated;
        assert_eq!(rebuilt, if reuse { 0 } else { 1 }, "reuse={reuse}");
    }
}

#[test]
fn pcid_noflush_and_invpcid() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | A | D, &mut next);
    m.map4(0x2000, 0x40_0000, 0x21_0000, P | RW | A | D, &mut next);
    let cr4 = LONG_CR4 | CR4_PCIDE;
    m.regs(VM, PE | PG | WP, 0x1000 | 1, cr4, LONG_EFER);
    const NOFLUSH: u64 = 1 << 63;
    // First visit of PCID 2: a miss, which loads a root and flushes.
    let r = m.cr(VM, CrRegister::Cr3, 0x2000 | 2 | NOFLUSH);
    assert_eq!(r.flush, flush::CURRENT);
    // Back to PCID 1 with NOFLUSH: a cache hit, nothing to flush.
    let r = m.cr(VM, CrRegister::Cr3, 0x1000 | 1 | NOFLUSH);
    assert_eq!(r.flush, 0);
    assert_eq!(m.stats(VM).root_cache_hits, 1);
    // Without NOFLUSH the current PCID is flushed.
    let r = m.cr(VM, CrRegister::Cr3, 0x2000 | 2);
    assert_eq!(r.flush, flush::CURRENT);
    // INVPCID single-context of PCID 1 frees its cached root, so a NOFLUSH load of it
    // cannot skip the flush.
    let r = m
        .call(
            VM,
            &Invpcid {
                gva: 0,
                pcid: 1,
                kind: InvpcidKind::SingleContext as u32,
            },
        )
        .unwrap();
    assert_eq!(r.flush, 0, "PCID 1 is not the active one");
    assert!(m
        .server
        .borrow()
        .vm(VM)
        .unwrap()
        .roots
        .prev
        .iter()
        .all(|r| r.page.is_none()));
    let r = m.cr(VM, CrRegister::Cr3, 0x1000 | 1 | NOFLUSH);
    assert_eq!(r.flush, flush::CURRENT);
    // INVPCID type 0 flushes one address; types 2 and 3 the whole guest.
    let r = m
        .call(
            VM,
            &Invpcid {
                gva: 0x40_0000,
                pcid: 1,
                kind: 0,
            },
        )
        .unwrap();
    assert_eq!(r.flush, flush::ADDRESS);
    for kind in [2, 3] {
        let r = m
            .call(
                VM,
                &Invpcid {
                    gva: 0,
                    pcid: 0,
                    kind,
                },
            )
            .unwrap();
        assert_eq!(r.flush, flush::GUEST);
    }
    let r = m.call(VM, &Invlpg { gva: 0x40_0000 }).unwrap();
    assert_eq!(r.flush, flush::ADDRESS);
    // NOFLUSH without PCIDs is illegal.
    m.cr(VM, CrRegister::Cr4, LONG_CR4);
    assert_eq!(
        m.call(
            VM,
            &CrWrite {
                value: 0x1000 | NOFLUSH,
                reg: 3,
                reserved: 0
            }
        ),
        Err(Error::InvalidArgument)
    );
}

/// Removing a slot zaps everything (fast zap): roots of the old generation are never
/// used again, current or cached.
#[test]
fn obsolete_roots_are_never_reused() {
    let m = Machine::new(8 << 20, 64);
    let (first, _) = long_guest(&m, true);
    m.call(
        VM,
        &AddMemSlot {
            base_gfn: 0x10000,
            npages: 1,
            host_base: 0,
            kind: 2,
            reserved: 0,
        },
    )
    .unwrap();
    let mut next = 0x30000;
    m.map4(0x2000, 0x40_0000, 0x20_1000, P | RW | A | D, &mut next);
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    let second = m.cr(VM, CrRegister::Cr3, 0x2000);
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    let before = m.stats(VM);

    let r = m.call(VM, &RemoveMemSlot { base_gfn: 0x10000 }).unwrap();
    assert_eq!(
        r.flush,
        flush::CURRENT | flush::GUEST,
        "zapped tables, a new root"
    );
    assert!(
        m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_none(),
        "a fresh root"
    );
    let after = m.stats(VM);
    assert_eq!(after.roots_allocated, before.roots_allocated + 1);
    assert_eq!(
        after.roots_freed,
        before.roots_freed + 2,
        "current and cached roots freed"
    );
    let cache = m.server.borrow().vm(VM).unwrap().roots;
    assert!(cache.prev.iter().all(|r| r.page.is_none()));
    // The old address space is a miss and a rebuild, not a hit on the stale root.
    let r = m.cr(VM, CrRegister::Cr3, 0x1000);
    assert!(m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_none());
    let s = m.stats(VM);
    assert_eq!(s.root_cache_hits, after.root_cache_hits);
    assert_eq!(s.roots_allocated, after.roots_allocated + 1);
    let _ = (first, second);
    assert_eq!(
        m.call(VM, &RemoveMemSlot { base_gfn: 0x10000 }),
        Err(Error::BadAddress)
    );
}

/// Section 6: a write to a shadowed guest page table. Retry if unprotecting zapped a
/// shadow page, emulate otherwise; the same (rip, address) after a retry emulates.
#[test]
fn write_protect_retry_emulate_and_anti_loop() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000; // PDPT 0x10000, PD 0x11000, PT 0x12000, PT2 0x13000
    let code = 0x40_0000;
    m.map4(0x1000, code, 0x20_0000, P | RW | A | D, &mut next);
    let pt_of_code = 0x12000;
    // A writable alias of the table that maps the code, in another 2M region.
    let alias = 0x80_0000;
    m.map4(0x1000, alias, pt_of_code, P | RW | A | D, &mut next);
    let root = m.regs(VM, PE | PG | WP, 0x1000, LONG_CR4, LONG_EFER);
    let rip = code + 0x10;

    assert_eq!(
        outcome(&m.shadow_fault(VM, rip, EC_F, rip)),
        FaultOutcome::Fixed
    );
    // Write through the alias: the gfn is tracked; unprotect zaps its shadow: retry.
    let r = m.shadow_fault(VM, alias + 8, EC_W, rip);
    assert_eq!(outcome(&r), FaultOutcome::Retry);
    assert_eq!(
        r.flush,
        flush::GUEST,
        "zapped tables may be cached under any PCID"
    );
    assert!(
        m.shadow_walk(root.root_hpa, 4, rip).is_none(),
        "the code's table was unprotected"
    );
    let s = m.stats(VM);
    assert_eq!(
        (s.write_protect_faults, s.unprotect_retries, s.emulations),
        (1, 1, 0)
    );
    // The retried write now maps writable.
    assert_eq!(
        outcome(&m.shadow_fault(VM, alias + 8, EC_W, rip)),
        FaultOutcome::Fixed
    );
    assert!(m.shadow_walk(root.root_hpa, 4, alias).unwrap().w);

    // The guest fetches its code again: the table is shadowed (and protected) again,
    // the alias loses W.
    let r = m.shadow_fault(VM, rip, EC_F | EC_P, rip);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    assert_eq!(
        r.flush,
        flush::GUEST,
        "a writable entry was protected: cached under any PCID"
    );
    assert!(!m.shadow_walk(root.root_hpa, 4, alias).unwrap().w);
    // Same rip, same address as the last retry: emulate, do not loop.
    let r = m.shadow_fault(VM, alias + 8, EC_W | EC_P, rip);
    assert_eq!(outcome(&r), FaultOutcome::Emulate);
    assert!(
        m.shadow_walk(root.root_hpa, 4, rip).is_some(),
        "nothing unprotected"
    );
    let s = m.stats(VM);
    assert_eq!(
        (s.write_protect_faults, s.unprotect_retries, s.emulations),
        (2, 1, 1)
    );
    // Another rip clears the anti-loop state: retry again.
    let r = m.shadow_fault(VM, alias + 8, EC_W | EC_P, rip + 4);
    assert_eq!(outcome(&r), FaultOutcome::Retry);

    // A write to a table that translates the written address itself: unprotecting
    // would unmap the address, so emulate (KVM's WRITE_PF_TO_SP), unless an event is
    // being delivered.
    let own = 0x80_1000; // mapped by PT2 (0x13000)
    m.map4(0x1000, own, 0x13000, P | RW | A | D, &mut next);
    let r = m.shadow_fault(VM, own, EC_W, 0x99);
    assert_eq!(outcome(&r), FaultOutcome::Emulate);
    let s = m.stats(VM);
    assert_eq!(s.unprotect_retries, 2);
    let r = m
        .call(
            VM,
            &ShadowFault {
                gva: own,
                rip: 0x9a,
                error_code: EC_W | EC_P,
                flags: vcpu_flags::EVENT_PENDING,
                pkru: 0,
                reserved: 0,
            },
        )
        .unwrap();
    assert_eq!(outcome(&r), FaultOutcome::Retry);
}

/// `kvm_mmu_track_write`: an aligned write zaps the one entry; a misaligned write, or
/// the third write in a row to a directory, zaps the shadow page.
#[test]
fn emulated_writes_zap_entries_or_pages() {
    let m = Machine::new(8 << 20, 64);
    let (root, mut next) = long_guest(&m, true); // PDPT 0x10000, PD 0x11000, PT 0x12000
    m.map4(0x1000, 0x40_1000, 0x20_1000, P | RW | A | D, &mut next);
    let r = root.root_hpa;
    for gva in [0x40_0000, 0x40_1000] {
        assert_eq!(outcome(&m.shadow_fault(VM, gva, 0, 0)), FaultOutcome::Fixed);
    }
    let emulate = |gpa: u64, len: u32, data: u64| {
        m.call(
            VM,
            &EmulatedWrite {
                gpa,
                data,
                len,
                reserved: 0,
            },
        )
        .unwrap()
    };
    // Aligned write of PTE 1 (the vmm-server already wrote guest memory).
    m.write64(0x12008, 0x20_2000 | P | RW | A | D);
    let reply = emulate(0x12008, 8, 0x20_2000 | P | RW | A | D);
    assert_eq!(
        reply.flush,
        flush::GUEST,
        "a zapped entry may be cached under any PCID"
    );
    assert_eq!(reply.root_hpa, r);
    assert!(
        m.shadow_walk(r, 4, 0x40_1000).is_none(),
        "the written entry was zapped"
    );
    assert!(
        m.shadow_walk(r, 4, 0x40_0000).is_some(),
        "its neighbour kept"
    );
    // Refault picks up the new guest entry.
    m.shadow_fault(VM, 0x40_1000, 0, 0);
    assert_eq!(
        m.shadow_walk(r, 4, 0x40_1000).unwrap().hpa,
        RAM_HPA + 0x20_2000
    );
    // A single aligned byte (clear_bit) is not misaligned.
    emulate(0x12000, 1, 0x67);
    assert!(m.shadow_walk(r, 4, 0x40_1000).is_some());
    // Misaligned: the whole shadow of that table goes.
    let pages = m.stats(VM).shadow_pages;
    emulate(0x12004, 8, 0);
    assert!(m.shadow_walk(r, 4, 0x40_1000).is_none());
    assert_eq!(m.stats(VM).shadow_pages, pages - 1);

    // Flooding: three writes to the page directory with no fault in between.
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    let pages = m.stats(VM).shadow_pages;
    for _ in 0..2 {
        emulate(0x11000 + 8 * 100, 8, 0);
        assert!(m.shadow_walk(r, 4, 0x40_0000).is_some());
    }
    emulate(0x11000 + 8 * 100, 8, 0);
    assert!(
        m.shadow_walk(r, 4, 0x40_0000).is_none(),
        "flooded directory zapped"
    );
    assert!(m.stats(VM).shadow_pages < pages);
    // A fault in between resets the count.
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    for _ in 0..2 {
        emulate(0x11000 + 8 * 100, 8, 0);
    }
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    emulate(0x11000 + 8 * 100, 8, 0);
    assert!(m.shadow_walk(r, 4, 0x40_0000).is_some());
}

/// A zapped root (the guest rewrote its top-level table misaligned) is replaced in the
/// same reply.
#[test]
fn emulated_write_to_the_root_table_replaces_the_root() {
    let m = Machine::new(8 << 20, 64);
    let (root, _) = long_guest(&m, true);
    m.shadow_fault(VM, 0x40_0000, 0, 0);
    let before = m.stats(VM).roots_allocated;
    let r = m
        .call(
            VM,
            &EmulatedWrite {
                gpa: 0x1002,
                data: 0,
                len: 2,
                reserved: 0,
            },
        )
        .unwrap();
    assert_eq!(r.root_level, 4);
    assert_eq!(r.flush, flush::CURRENT | flush::GUEST);
    assert_eq!(m.stats(VM).roots_allocated, before + 1);
    assert!(m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_none());
    let _ = root;
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, 0, 0)),
        FaultOutcome::Fixed
    );
    assert!(m.shadow_walk(r.root_hpa, 4, 0x40_0000).is_some());
}

/// 32-bit paging under a PAE root: a guest PD is shadowed by four PAE PDs (one per
/// GiB), a guest PT by two PAE PTs (one per 2 MiB), 4-MiB pages by direct tables.
#[test]
fn two_level_guest_uses_quadrants() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let pd = 0x1000u64;
    let pt = 0x2000u64;
    let hi = 0xC060_3000u64; // PDE 769 (quadrant 3), PTE 515 (upper half)
    let lo = 0xC040_5000u64; // PDE 769, PTE 5 (lower half)
    m.write32(pd + 4 * 769, (pt | P | RW | US | A) as u32);
    m.write32(pt + 4 * 515, (0x30_0000 | P | RW | US | A | D) as u32);
    m.write32(pt + 4 * 5, (0x31_0000 | P | US | A) as u32);
    // A 4-MiB page at PDE 770.
    m.write32(pd + 4 * 770, (0x40_0000 | P | RW | US | PS | A | D) as u32);
    let root = m.regs(VM, PE | PG | WP, pd, CR4_PSE, 0);
    assert_eq!(root.root_level, 3, "a PAE root");
    for gva in [hi, lo, 0xC0A0_1000] {
        assert_eq!(
            outcome(&m.shadow_fault(VM, gva, EC_U, 0)),
            FaultOutcome::Fixed,
            "{gva:#x}"
        );
    }
    let leaf = m.shadow_walk(root.root_hpa, 3, hi).unwrap();
    assert_eq!(
        (leaf.hpa, leaf.w, leaf.u, leaf.x),
        (RAM_HPA + 0x30_0000, true, true, true)
    );
    let leaf = m.shadow_walk(root.root_hpa, 3, lo).unwrap();
    assert_eq!((leaf.hpa, leaf.w), (RAM_HPA + 0x31_0000, false));
    let leaf = m.shadow_walk(root.root_hpa, 3, 0xC0A0_1000).unwrap();
    assert_eq!(leaf.hpa, RAM_HPA + 0x60_1000);
    // A user write to the read-only page: the guest's own #PF.
    let r = m.shadow_fault(VM, lo, EC_U | EC_W | EC_P, 0);
    assert_eq!(outcome(&r), FaultOutcome::InjectPageFault);
    assert_eq!(r.error_code, EC_U | EC_W | EC_P);
    // Rewriting the 4-byte PTE 515 zaps exactly its shadow entry.
    m.write32(pt + 4 * 515, 0);
    m.call(
        VM,
        &EmulatedWrite {
            gpa: pt + 4 * 515,
            data: 0,
            len: 4,
            reserved: 0,
        },
    )
    .unwrap();
    assert!(m.shadow_walk(root.root_hpa, 3, hi).is_none());
    assert!(m.shadow_walk(root.root_hpa, 3, lo).is_some());
    let r = m.shadow_fault(VM, hi, EC_U, 0);
    assert_eq!(outcome(&r), FaultOutcome::InjectPageFault);
    assert_eq!(r.error_code, EC_U);
    // Rewriting PDE 770 (4-byte) zaps both 2-MiB shadow PDEs of the 4-MiB page.
    m.shadow_fault(VM, 0xC080_0000, 0, 0);
    m.call(
        VM,
        &EmulatedWrite {
            gpa: pd + 4 * 770,
            data: 0,
            len: 4,
            reserved: 0,
        },
    )
    .unwrap();
    assert!(m.shadow_walk(root.root_hpa, 3, 0xC0A0_1000).is_none());
    assert!(m.shadow_walk(root.root_hpa, 3, 0xC080_0000).is_none());
}

/// PAE paging: the root holds the PDPTEs loaded at MOV CR3; a reload of the same CR3
/// after the guest changed a PDPTE builds a new root.
#[test]
fn pae_guest_reloads_pdptes_on_cr3_write() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let gva = 0xC020_1000u64; // PDPTE 3, PDE 1, PTE 1
    m.write64(0x1000 + 8 * 3, 0x2000 | P);
    m.write64(0x2000 + 8, 0x3000 | P | RW | US | A);
    m.write64(0x3000 + 8, 0x50_0000 | P | RW | A | D);
    m.write64(0x4000 + 8, 0x5000 | P | RW | A);
    m.write64(0x5000 + 8, 0x51_0000 | P | A | D | XD);
    let root = m.regs(VM, PE | PG | WP, 0x1000, CR4_PAE, EFER_NX);
    assert_eq!(root.root_level, 3);
    assert_eq!(outcome(&m.shadow_fault(VM, gva, 0, 0)), FaultOutcome::Fixed);
    let leaf = m.shadow_walk(root.root_hpa, 3, gva).unwrap();
    assert_eq!(
        (leaf.hpa, leaf.w, leaf.u, leaf.x),
        (RAM_HPA + 0x50_0000, true, false, true)
    );
    // Same CR3, same PDPTEs: the root stays.
    let r = m.cr(VM, CrRegister::Cr3, 0x1000);
    assert_eq!(r.root_hpa, root.root_hpa);
    // A changed PDPTE takes effect at the next CR3 load, through a new root.
    m.write64(0x1000 + 8 * 3, 0x4000 | P);
    let r = m.cr(VM, CrRegister::Cr3, 0x1000);
    assert!(m.shadow_walk(r.root_hpa, 3, gva).is_none());
    assert_eq!(outcome(&m.shadow_fault(VM, gva, 0, 0)), FaultOutcome::Fixed);
    let leaf = m.shadow_walk(r.root_hpa, 3, gva).unwrap();
    assert_eq!(
        (leaf.hpa, leaf.w, leaf.x),
        (RAM_HPA + 0x51_0000, false, false)
    );
}

/// CR0.WP=0: a supervisor write to a read-only user page maps it writable for the
/// supervisor only (and not executable with SMEP).
#[test]
fn wp0_supervisor_write_to_read_only_user_page() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | US | A | D, &mut next);
    let r = m.regs(VM, PE | PG, 0x1000, LONG_CR4 | CR4_SMEP, LONG_EFER);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, EC_W, 0)),
        FaultOutcome::Fixed
    );
    let leaf = m.shadow_walk(r.root_hpa, 4, 0x40_0000).unwrap();
    assert_eq!((leaf.w, leaf.u, leaf.x), (true, false, false));
    // A user read then makes it a user, read-only mapping again.
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, EC_U | EC_P, 0)),
        FaultOutcome::Fixed
    );
    let leaf = m.shadow_walk(r.root_hpa, 4, 0x40_0000).unwrap();
    assert_eq!((leaf.w, leaf.u, leaf.x), (false, true, true));
}

/// Paging off: an identity map through a direct PAE root; MMIO holes are reported.
#[test]
fn paging_off_is_an_identity_map() {
    let m = Machine::new(8 << 20, 64);
    m.vm(VM, MmuMode::Shadow, true);
    m.call(
        VM,
        &AddMemSlot {
            base_gfn: 0xfee00,
            npages: 1,
            host_base: 0,
            kind: 2,
            reserved: 0,
        },
    )
    .unwrap();
    let r = m.regs(VM, PE, 0, 0, 0);
    assert_eq!(r.root_level, 3);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x12_3456, EC_W, 0)),
        FaultOutcome::Fixed
    );
    let leaf = m.shadow_walk(r.root_hpa, 3, 0x12_3456).unwrap();
    assert_eq!(
        (leaf.hpa, leaf.w, leaf.u, leaf.x),
        (RAM_HPA + 0x12_3000, true, true, true)
    );
    let f = m.shadow_fault(VM, 0xfee0_0300, EC_W, 0);
    assert_eq!((outcome(&f), f.gpa), (FaultOutcome::Mmio, 0xfee0_0300));
    // Paging on and off again finds the direct root again by role.
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | A | D, &mut next);
    m.cr(VM, CrRegister::Cr4, CR4_PAE);
    m.cr(VM, CrRegister::Efer, EFER_LME);
    m.cr(VM, CrRegister::Cr3, 0x1000);
    let on = m.cr(VM, CrRegister::Cr0, PE | PG);
    assert_eq!(on.root_level, 4, "LMA follows PG with LME");
    let off = m.cr(VM, CrRegister::Cr0, PE);
    assert_eq!(off.flush & flush::GUEST, flush::GUEST);
    assert_eq!(off.root_hpa, r.root_hpa);
    assert!(m.shadow_walk(off.root_hpa, 3, 0x12_3456).is_some());
}

/// Pool exhaustion under shadow paging: the least recently used tables go (they are
/// found again by (gfn, role) or rebuilt), a used path is never reclaimed for nothing.
#[test]
fn shadow_pool_exhaustion_reclaims_lru_tables() {
    let m = Machine::new(8 << 20, 4);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | A | D, &mut next);
    m.map4(0x1000, 0x40_1000, 0x20_1000, P | RW | A | D, &mut next);
    m.map4(0x1000, 0x80_0000_0000, 0x20_2000, P | RW | A | D, &mut next);
    let root = m.regs(VM, PE | PG | WP, 0x1000, LONG_CR4, LONG_EFER);
    assert_eq!(
        outcome(&m.shadow_fault(VM, 0x40_0000, 0, 0)),
        FaultOutcome::Fixed
    );
    assert_eq!(m.server.borrow().free_frames(), 0);
    let r = m.shadow_fault(VM, 0x40_1000, 0, 0);
    assert_eq!((outcome(&r), r.flush), (FaultOutcome::Fixed, 0));
    // Another PML4 entry: three new tables, the old ones are reclaimed.
    let r = m.shadow_fault(VM, 0x80_0000_0000, 0, 0);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    assert_eq!(r.flush, flush::GUEST);
    assert!(m.shadow_walk(root.root_hpa, 4, 0x40_0000).is_none());
    let leaf = m.shadow_walk(root.root_hpa, 4, 0x80_0000_0000).unwrap();
    assert_eq!(leaf.hpa, RAM_HPA + 0x20_2000);
    assert_eq!(m.stats(VM).shadow_pages, 4);
    // Three frames cannot hold a root and a path: a clear error, nothing broken.
    let m = Machine::new(8 << 20, 3);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | A | D, &mut next);
    m.regs(VM, PE | PG | WP, 0x1000, LONG_CR4, LONG_EFER);
    assert_eq!(
        m.call(
            VM,
            &ShadowFault {
                gva: 0x40_0000,
                rip: 0,
                error_code: 0,
                flags: 0,
                pkru: 0,
                reserved: 0
            }
        ),
        Err(Error::OutOfMemory)
    );
    assert_eq!(m.stats(VM).page_faults_fixed, 0);
}
