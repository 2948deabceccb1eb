//! TDP (EPT) faults end to end: the mapping level, MMIO holes, read-only memory, the
//! CR0.WP toggle with and without RootReuse, and pool exhaustion.

mod support;

use ipc::*;
use proptest::prelude::*;
use support::*;

const VM: Badge = 1;

fn tdp_vm(m: &Machine, root_reuse: bool) {
    m.call(
        VM,
        &CreateVm {
            mmu_mode: MmuMode::Tdp as u32,
            root_reuse: root_reuse as u32,
            flags: 0,
            reserved: 0,
        },
    )
    .unwrap();
}

fn slot(
    m: &Machine,
    base_gfn: u64,
    npages: u64,
    host_base: u64,
    kind: SlotKind,
) -> Result<Empty, Error> {
    m.call(
        VM,
        &AddMemSlot {
            base_gfn,
            npages,
            host_base,
            kind: kind as u32,
            reserved: 0,
        },
    )
}

fn long_mode(m: &Machine) -> RootReply {
    m.long_mode(VM, 0x1000)
}

#[test]
fn faults_map_at_the_largest_level_the_memory_map_allows() {
    let m = Machine::new(1 << 30, 64);
    // Huge pages are executable only without the NX-huge-page mitigation (see
    // tests/nx_huge_pages.rs for the levels with it).
    m.nx_mode(NxMode::Off).unwrap();
    tdp_vm(&m, true);
    // 1 GiB of RAM at gpa 1 GiB, backed 1-GiB aligned: 1G pages.
    slot(&m, 0x40000, 0x40000, RAM_HPA, SlotKind::Ram).unwrap();
    // 4 MiB at gpa 4 GiB, backed 2-MiB aligned: 2M pages.
    slot(&m, 0x100000, 1024, RAM_HPA + (2 << 20), SlotKind::Ram).unwrap();
    // 4 MiB at gpa 8 GiB backed 4 KiB off alignment: 4K pages only.
    slot(&m, 0x200000, 1024, RAM_HPA + 0x1000, SlotKind::Ram).unwrap();
    // 1000 pages at gpa 12 GiB, aligned backing: 2M pages where the whole 2M range is
    // in the slot, 4K in the tail.
    slot(&m, 0x300000, 1000, RAM_HPA + (4 << 20), SlotKind::Ram).unwrap();
    let root = long_mode(&m);
    assert_eq!(root.root_level, 4);

    let cases = [
        (0x4123_4567u64, 3u8, RAM_HPA + 0x0123_4000),
        (0x1_0030_1000, 2, RAM_HPA + (2 << 20) + 0x30_1000),
        (0x2_0030_1000, 1, RAM_HPA + 0x1000 + 0x30_1000),
        (0x3_0000_5000, 2, RAM_HPA + (4 << 20) + 0x5000),
        (0x3_0030_0000, 1, RAM_HPA + (4 << 20) + 0x30_0000),
    ];
    for (gpa, level, hpa) in cases {
        let r = m.tdp_fault(VM, gpa, Q_WRITE);
        assert_eq!(outcome(&r), FaultOutcome::Fixed, "{gpa:#x}");
        assert_eq!(r.root_hpa, root.root_hpa);
        let leaf = m.ept_walk(root.root_hpa, gpa).expect("mapped");
        assert_eq!(
            (leaf.level, leaf.hpa, leaf.w, leaf.x),
            (level, hpa, true, true),
            "{gpa:#x}"
        );
    }
    let s = m.stats(VM);
    assert_eq!((s.pages_1g, s.pages_2m, s.page_faults_fixed), (1, 2, 5));
    // Another address in the same 1G page: already mapped, no new table or leaf.
    let before = m.stats(VM);
    let r = m.tdp_fault(VM, 0x7fff_f000, Q_READ);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    assert_eq!(m.stats(VM).sptes_created, before.sptes_created);
    assert_eq!(m.stats(VM).shadow_pages, before.shadow_pages);
}

#[test]
fn mmio_holes_read_only_memory_and_unmapped_addresses() {
    let m = Machine::new(8 << 20, 32);
    tdp_vm(&m, true);
    slot(&m, 0, 512, RAM_HPA, SlotKind::Ram).unwrap();
    slot(&m, 0xfee00, 1, 0, SlotKind::Mmio).unwrap();
    slot(&m, 0x800, 16, RAM_HPA + (4 << 20), SlotKind::ReadOnly).unwrap();
    let root = long_mode(&m);

    let r = m.tdp_fault(VM, 0xfee0_0030, Q_WRITE);
    assert_eq!(outcome(&r), FaultOutcome::Mmio);
    assert_eq!(r.gpa, 0xfee0_0030);
    assert!(
        m.ept_walk(root.root_hpa, 0xfee0_0030).is_none(),
        "MMIO is never mapped"
    );

    let r = m.tdp_fault(VM, 0x80_2000, Q_FETCH);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    let leaf = m.ept_walk(root.root_hpa, 0x80_2000).unwrap();
    assert_eq!((leaf.w, leaf.x, leaf.level), (false, true, 1));
    // A write to ROM is a device access.
    let r = m.tdp_fault(VM, 0x80_2008, Q_WRITE);
    assert_eq!(outcome(&r), FaultOutcome::Mmio);

    // No slot at all.
    assert_eq!(
        m.call(
            VM,
            &TdpFault {
                gpa: 0x4000_0000,
                gla: 0,
                qualification: Q_READ,
                rip: 0
            }
        ),
        Err(Error::BadAddress)
    );
    // Slots may not overlap, nor name the frame pool or unbacked memory.
    assert_eq!(
        slot(&m, 0x100, 1, RAM_HPA, SlotKind::Ram),
        Err(Error::InvalidArgument)
    );
    assert_eq!(
        slot(&m, 0x9000, 1, POOL_HPA, SlotKind::Ram),
        Err(Error::PermissionDenied)
    );
    assert_eq!(
        slot(&m, 0x9000, 1, 0x7000_0000, SlotKind::Ram),
        Err(Error::BadAddress)
    );
}

fn toggle_wp(m: &Machine, cr0: &mut u64) -> RootReply {
    *cr0 ^= WP;
    m.cr(VM, CrRegister::Cr0, *cr0)
}

/// Seed 1: with RootReuse on, a CR0.WP toggle under TDP keeps the root and every
/// mapping; with it off, every toggle unloads and rebuilds.
#[test]
fn wp_toggle_1000_times_reuse_on_keeps_everything() {
    let m = Machine::new(8 << 20, 64);
    tdp_vm(&m, true);
    slot(&m, 0, 1024, RAM_HPA + 0x1000, SlotKind::Ram).unwrap();
    let root = long_mode(&m);
    for i in 0..8u64 {
        assert_eq!(
            outcome(&m.tdp_fault(VM, i * 0x3000, Q_WRITE)),
            FaultOutcome::Fixed
        );
    }
    let before = m.stats(VM);
    assert_eq!(before.roots_allocated, 1);
    let mut cr0 = PE | PG | WP;
    for _ in 0..1000 {
        let r = toggle_wp(&m, &mut cr0);
        assert_eq!(r.root_hpa, root.root_hpa);
        assert_eq!(r.flush, 0, "no flush for a WP-only toggle under TDP");
    }
    for i in 0..8u64 {
        assert!(
            m.ept_walk(root.root_hpa, i * 0x3000).is_some(),
            "mapping kept"
        );
    }
    let after = m.stats(VM);
    assert_eq!(
        after.roots_allocated, 1,
        "no root allocated after the first"
    );
    assert_eq!(after.roots_freed, 0);
    assert_eq!(
        after.page_faults_fixed, before.page_faults_fixed,
        "nothing refaulted"
    );
    assert_eq!(after.sptes_created, before.sptes_created);
    // The software walker sees the new WP: the cpu role follows the register.
    let vm_wp = m.server.borrow().vm(VM).unwrap().cpu_role.cr0_wp();
    assert_eq!(vm_wp, cr0 & WP != 0);
}

#[test]
fn wp_toggle_1000_times_reuse_off_rebuilds_each_time() {
    let m = Machine::new(8 << 20, 64);
    tdp_vm(&m, false);
    slot(&m, 0, 1024, RAM_HPA + 0x1000, SlotKind::Ram).unwrap();
    long_mode(&m);
    let before = m.stats(VM);
    let mut cr0 = PE | PG | WP;
    for i in 0..1000u64 {
        let r = toggle_wp(&m, &mut cr0);
        assert_eq!(r.flush & flush::CURRENT, flush::CURRENT, "a reload flushes");
        let gpa = (i % 8) * 0x3000;
        assert!(
            m.ept_walk(r.root_hpa, gpa).is_none(),
            "the root was rebuilt empty"
        );
        assert_eq!(outcome(&m.tdp_fault(VM, gpa, Q_READ)), FaultOutcome::Fixed);
    }
    let after = m.stats(VM);
    assert_eq!(after.roots_allocated - before.roots_allocated, 1000);
    assert_eq!(after.roots_freed - before.roots_freed, 1000);
    assert_eq!(after.page_faults_fixed - before.page_faults_fixed, 1000);
    // Nothing leaks: one root, its three tables (PDPT, PD, PT) only.
    assert_eq!(after.shadow_pages, 4);
}

/// Issue item 10: an empty pool reclaims least recently used tables first, and only
/// then fails, with a clear error and intact state.
#[test]
fn pool_exhaustion_reclaims_then_fails_cleanly() {
    // Root + PDPT + PD + PT: exactly one 4K path.
    let m = Machine::new(8 << 20, 4);
    tdp_vm(&m, true);
    slot(&m, 0, 16, RAM_HPA + 0x1000, SlotKind::Ram).unwrap();
    slot(&m, 0x40000, 16, RAM_HPA + 0x11000, SlotKind::Ram).unwrap();
    let root = long_mode(&m);
    assert_eq!(
        outcome(&m.tdp_fault(VM, 0x3000, Q_READ)),
        FaultOutcome::Fixed
    );
    assert_eq!(m.server.borrow().free_frames(), 0);
    // A full pool is no reason to reclaim when the path exists.
    let r = m.tdp_fault(VM, 0x4000, Q_READ);
    assert_eq!((outcome(&r), r.flush), (FaultOutcome::Fixed, 0));
    assert!(m.ept_walk(root.root_hpa, 0x3000).is_some());
    // The next 1-GiB region needs three new tables: the old path is reclaimed.
    let r = m.tdp_fault(VM, 0x4000_2000, Q_READ);
    assert_eq!(outcome(&r), FaultOutcome::Fixed);
    assert_eq!(r.flush, flush::GUEST, "reclaimed tables may be cached");
    assert_eq!(r.root_hpa, root.root_hpa);
    assert!(m.ept_walk(root.root_hpa, 0x3000).is_none());
    assert!(m.ept_walk(root.root_hpa, 0x4000_2000).is_some());
    assert_eq!(m.stats(VM).shadow_pages, 4);

    // Three frames cannot hold a root and a path: OutOfMemory, and nothing broke.
    let m = Machine::new(8 << 20, 3);
    tdp_vm(&m, true);
    slot(&m, 0, 16, RAM_HPA + 0x1000, SlotKind::Ram).unwrap();
    let root = long_mode(&m);
    let before = m.stats(VM);
    assert_eq!(
        m.call(
            VM,
            &TdpFault {
                gpa: 0x3000,
                gla: 0,
                qualification: Q_READ,
                rip: 0
            }
        ),
        Err(Error::OutOfMemory)
    );
    let after = m.stats(VM);
    assert_eq!(after.page_faults_fixed, before.page_faults_fixed);
    assert_eq!(after.roots_allocated, 1);
    // The root survives and the server still answers.
    let again = m.cr(VM, CrRegister::Cr3, 0x2000);
    assert_eq!(again.root_hpa, root.root_hpa, "direct roots ignore the pgd");
}

/// One slot of the property test: gfn range and host placement.
#[derive(Clone, Debug)]
struct SlotPlan {
    gap: u64,
    npages: u64,
    /// 0: 1-GiB aligned host backing, 1: 2-MiB aligned, 2: 4 KiB off.
    align: u8,
}

const BACKING: u64 = (1 << 30) + (64 << 20);

/// The level a correct MMU must pick for `gfn` in `slot`: the largest whose aligned
/// range lies in the slot and whose host backing has the same alignment.
fn expected_level(base_gfn: u64, npages: u64, host: u64, gfn: u64) -> u8 {
    for (level, pages) in [(3u8, 1u64 << 18), (2, 1 << 9)] {
        let start = gfn & !(pages - 1);
        let inside = start >= base_gfn && start + pages <= base_gfn + npages;
        if inside && (host + ((start - base_gfn) << 12)).is_multiple_of(pages << 12) {
            return level;
        }
    }
    1
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// TDP faults map the faulting page to the right host frame, at exactly the largest
    /// level the slots allow, whatever the slot layout and fault order. With the
    /// NX-huge-page mitigation on, a fetch maps 4K (and executable), no huge leaf is
    /// executable, and a later data fault in a range a fetch split maps inside the
    /// split table (one level down per split table met) instead of mapping huge again.
    #[test]
    fn tdp_levels_follow_the_memory_map(
        plans in proptest::collection::vec(
            (0u64..600, 1u64..300_000, 0u8..3).prop_map(|(gap, npages, align)| SlotPlan { gap, npages, align }),
            1..4,
        ),
        faults in proptest::collection::vec((0usize..3, any::<u64>(), 0u64..3), 1..24),
        nx_on in any::<bool>(),
    ) {
        let m = Machine::new(BACKING, 256);
        m.nx_mode(if nx_on { NxMode::On } else { NxMode::Off }).unwrap();
        tdp_vm(&m, true);
        // Ranges (gfn >> 18 for 1G, gfn >> 9 for 2M) a fetch has split.
        let mut split_1g = std::collections::HashSet::new();
        let mut split_2m = std::collections::HashSet::new();
        let mut slots = Vec::new();
        let mut next_gfn = 0;
        for p in &plans {
            let base_gfn = next_gfn + p.gap * 512 + p.gap % 7;
            let npages = p.npages.min(BACKING / 4096 - 16);
            let host_off = match p.align {
                0 => 0,
                1 => 2 << 20,
                _ => 0x5000,
            };
            let host_off = if host_off + npages * 4096 > BACKING { 0 } else { host_off };
            slot(&m, base_gfn, npages, RAM_HPA + host_off, SlotKind::Ram).unwrap();
            slots.push((base_gfn, npages, RAM_HPA + host_off));
            next_gfn = base_gfn + npages;
        }
        let root = long_mode(&m);
        for (which, pick, q) in faults {
            let (base, n, host) = slots[which % slots.len()];
            let gfn = base + pick % n;
            let r = m.tdp_fault(VM, gfn << 12 | 0x123, 1 << q);
            prop_assert_eq!(outcome(&r), FaultOutcome::Fixed);
            let leaf = m.ept_walk(root.root_hpa, gfn << 12).expect("mapped");
            prop_assert_eq!(leaf.hpa, host + ((gfn - base) << 12), "host frame of gfn {:#x}", gfn);
            let by_map = expected_level(base, n, host, gfn);
            let fetch = q == 2;
            let want_level = if !nx_on {
                by_map
            } else if fetch {
                if by_map == 3 {
                    split_1g.insert(gfn >> 18);
                }
                if by_map >= 2 {
                    split_2m.insert(gfn >> 9);
                }
                1
            } else if by_map >= 2 && split_2m.contains(&(gfn >> 9)) {
                1
            } else if by_map == 3 && split_1g.contains(&(gfn >> 18)) {
                2
            } else {
                by_map
            };
            prop_assert_eq!(leaf.level, want_level, "level for gfn {:#x}", gfn);
            prop_assert!(leaf.w);
            prop_assert_eq!(leaf.x, !nx_on || leaf.level == 1, "execute right at level {}", leaf.level);
            // The vCPU's EPT walker (EPTP: WB, 4 levels) agrees.
            let ctx = vcpu::paging::PagingContext {
                eptp: Some(root.root_hpa | (3 << 3) | 6),
                ..Default::default()
            };
            let kind = [vcpu::paging::AccessKind::Read, vcpu::paging::AccessKind::Write, vcpu::paging::AccessKind::Fetch][q as usize];
            let hw = vcpu::paging::Mmu::new().translate_gpa(
                m.phys(),
                &ctx,
                gfn << 12 | 0x123,
                vcpu::paging::Access { kind, implicit_supervisor: false },
            );
            prop_assert_eq!(hw, Ok(host + ((gfn - base) << 12) + 0x123));
            let s = m.stats(VM);
            prop_assert_eq!(s.nx_lpage_splits as usize, split_1g.len() + split_2m.len(), "splits");
        }
    }
}
