//! Timings for the report (`cargo test --release -p mmu-server --test measure --
//! --ignored --nocapture`): the cost of a CR0.WP toggle with and without RootReuse, for
//! TDP and shadow paging, including the refaults of a working set that the legacy
//! policy forces; and the cost of a shadow fault. Ignored by default: they measure,
//! they do not check.

mod support;

use ipc::*;
use std::time::Instant;
use support::*;

const VM: Badge = 9;
const PAGES: u64 = 64;
const TOGGLES: u32 = 2000;

fn toggles(mode: MmuMode, reuse: bool) -> (f64, Stats) {
    let m = Machine::new(8 << 20, 256);
    m.vm(VM, mode, reuse);
    let mut next = 0x10000;
    for p in 0..PAGES {
        m.map4(
            0x1000,
            0x40_0000 + p * 0x1000,
            0x20_0000 + p * 0x1000,
            P | RW | A | D,
            &mut next,
        );
    }
    m.regs(
        VM,
        PE | PG | WP,
        0x1000,
        CR4_PAE,
        EFER_LME | EFER_LMA | EFER_NX,
    );
    let touch = |m: &Machine| {
        for p in 0..PAGES {
            match mode {
                MmuMode::Tdp => {
                    m.tdp_fault(VM, 0x20_0000 + p * 0x1000, Q_READ);
                }
                MmuMode::Shadow => {
                    m.shadow_fault(VM, 0x40_0000 + p * 0x1000, 0, 0);
                }
            }
        }
    };
    touch(&m);
    let mut cr0 = PE | PG | WP;
    let start = Instant::now();
    for _ in 0..TOGGLES {
        cr0 ^= WP;
        let r = m.cr(VM, CrRegister::Cr0, cr0);
        // The working set is refaulted only where the toggle lost it.
        let root_level = r.root_level;
        let lost = match mode {
            MmuMode::Tdp => m.ept_walk(r.root_hpa, 0x20_0000).is_none(),
            MmuMode::Shadow => m.shadow_walk(r.root_hpa, root_level, 0x40_0000).is_none(),
        };
        if lost {
            touch(&m);
        }
    }
    let per = start.elapsed().as_secs_f64() * 1e6 / TOGGLES as f64;
    (per, m.stats(VM))
}

#[test]
#[ignore]
fn wp_toggle_cost() {
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        for reuse in [true, false] {
            let (us, s) = toggles(mode, reuse);
            println!(
                "{mode:?} RootReuse={} : {us:.2} us per toggle (incl. refaulting {PAGES} pages when lost); \
                 roots_allocated={} page_faults_fixed={} tlb_flushes={}",
                if reuse { "on " } else { "off" },
                s.roots_allocated,
                s.page_faults_fixed,
                s.tlb_flushes
            );
        }
    }
}

#[test]
#[ignore]
fn shadow_fault_cost() {
    let m = Machine::new(16 << 20, 1024);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    let n = 2048u64;
    for p in 0..n {
        m.map4(
            0x1000,
            0x4000_0000 + p * 0x1000,
            0x40_0000 + p * 0x1000,
            P | RW | A | D,
            &mut next,
        );
    }
    m.regs(
        VM,
        PE | PG | WP,
        0x1000,
        CR4_PAE,
        EFER_LME | EFER_LMA | EFER_NX,
    );
    let start = Instant::now();
    for p in 0..n {
        m.shadow_fault(VM, 0x4000_0000 + p * 0x1000, EC_W, 0);
    }
    let us = start.elapsed().as_secs_f64() * 1e6 / n as f64;
    println!(
        "shadow fault (walk + install, write): {us:.2} us each over {n} pages; {:?}",
        m.stats(VM)
    );
}

/// The NX-huge-page paths: a TDP eager split (a fetch into a 2M page: 512 pieces), a
/// recovery tick over all the splits, and a shadow fault on a guest 2M page (which
/// checks that no shadowed guest table lies in the range before mapping it huge).
#[test]
#[ignore]
fn nx_split_and_recovery_cost() {
    const RANGES: u64 = 48;
    let m = Machine::new(RANGES * (2 << 20) + (4 << 20), 256);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    for r in 0..RANGES {
        m.tdp_fault(VM, (4 << 20) + r * (2 << 20), Q_READ);
    }
    let t = Instant::now();
    for r in 0..RANGES {
        m.tdp_fault(VM, (4 << 20) + r * (2 << 20), Q_FETCH);
    }
    let split = t.elapsed().as_secs_f64() * 1e6 / RANGES as f64;
    let s = m.stats(VM);
    assert_eq!(s.nx_lpage_splits, RANGES);
    m.call(
        badge::SYSTEM_CONTROL,
        &SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 0,
        },
    )
    .unwrap();
    let t = Instant::now();
    let n = m
        .call(badge::SYSTEM_CONTROL, &NxRecoveryTick {})
        .unwrap()
        .recovered;
    let tick = t.elapsed().as_secs_f64() * 1e6;
    let t = Instant::now();
    m.stats(VM); // frees the recovered tables
    let free = t.elapsed().as_secs_f64() * 1e6;
    println!(
        "TDP eager split: {split:.2} us per fetch; recovery tick over {n} splits: {tick:.1} us, \
         then {free:.1} us to free them at the next request"
    );

    // Shadow: a long-mode guest mapping RANGES 2M pages, one 4K-mapped table page
    // shadowed (so the huge-page check has indirect pages to scan).
    let m = Machine::new(RANGES * (2 << 20) + (4 << 20), 256);
    m.vm(VM, MmuMode::Shadow, true);
    let (pml4, pdpt, pd) = (0x1000u64, 0x2000u64, 0x3000u64);
    m.write64(pml4, pdpt | P | RW | A);
    m.write64(pdpt, pd | P | RW | A);
    for r in 0..RANGES {
        let gpa = (4 << 20) + r * (2 << 20);
        m.write64(pd + 8 * (gpa >> 21), gpa | P | RW | A | D | PS);
    }
    m.regs(
        VM,
        PE | PG | WP,
        pml4,
        CR4_PAE,
        EFER_LME | EFER_LMA | EFER_NX,
    );
    let t = Instant::now();
    for r in 0..RANGES {
        m.shadow_fault(VM, (4 << 20) + r * (2 << 20), 0, 0);
    }
    let fault = t.elapsed().as_secs_f64() * 1e6 / RANGES as f64;
    assert_eq!(m.stats(VM).pages_2m, RANGES);
    println!("shadow fault mapping a guest 2M page huge: {fault:.2} us each");
}
