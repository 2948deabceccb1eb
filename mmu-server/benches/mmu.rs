//! What the mmu-server's hot requests cost, through `ipc::InProcess` (encode, decode,
//! handle, reply: the server's side of an exit, without a channel):
//!
//! - `wp_toggle_pair/{tdp,shadow}/reuse_{on,off}`: a guest CR0.WP clear and set (two
//!   `CrWrite CR0`, what a KERNEXEC guest does around every write to read-only kernel
//!   data) with a warm working set of [`WS_PAGES`] pages, refaulted whenever the toggle
//!   lost it. RootReuse off is the legacy policy that unloads the roots on every role
//!   change, so it pays those refaults: the cost MMU_REFERENCE section 7's first seed
//!   removed under TDP. Under shadow paging WP is in the root role either way: reuse
//!   keeps both roots' entries, off rebuilds them.
//! - `shadow_fault/4k_write`: a guest write fault on a new 4K page (guest walk, A/D
//!   set, path built, leaf installed).
//! - `tdp_fault/{4k,2m}`: an EPT violation on a new page, 4K (the slot's host memory is
//!   not 2M aligned) or 2M.
//! - `cr3_switch/shadow_cache_hit`: MOV CR3 between two warm address spaces, each
//!   switch found in the root cache (`fast_pgd_switch`).
//! - `nx/tdp_split`, `nx/recovery_tick`, `shadow_fault/2m_huge`: the NX-huge-page
//!   paths (a fetch splitting a 2M leaf into 512 pieces; a recovery tick zapping every
//!   split; a shadow fault mapping a guest 2M page with a 2M leaf).
//!
//! `cargo bench -p mmu-server --bench mmu` (`make bench` passes shorter criterion
//! times). Figures: docs/BENCHMARKS.md.

#[path = "../tests/support/mod.rs"]
mod support;

use criterion::measurement::Measurement;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use ipc::*;
use std::time::{Duration, Instant};
use support::*;

const VM: Badge = 9;
/// Pages the guest touches between two toggles (kernexec's default `ws` is 16; 64 is the
/// measurement the seeds' reproductions use).
const WS_PAGES: u64 = 64;
/// Maps `pages` 4K pages `gva.. -> gpa..` (present, writable, accessed, dirty) in the
/// guest's 4-level tables at `cr3`, new tables from `next_table`.
fn map_pages(m: &Machine, cr3: u64, gva: u64, gpa: u64, pages: u64, next_table: &mut u64) {
    for p in 0..pages {
        m.map4(
            cr3,
            gva + p * 0x1000,
            gpa + p * 0x1000,
            P | RW | A | D,
            next_table,
        );
    }
}

fn mode_name(mode: MmuMode) -> &'static str {
    match mode {
        MmuMode::Tdp => "tdp",
        MmuMode::Shadow => "shadow",
    }
}

/// A long-mode VM whose guest maps `WS_PAGES` pages at gva 0x40_0000 -> gpa 0x20_0000,
/// all faulted in.
struct WpToggle {
    m: Box<Machine>,
    mode: MmuMode,
    cr0: u64,
}

impl WpToggle {
    fn new(mode: MmuMode, reuse: bool) -> WpToggle {
        let m = Machine::new(8 << 20, 256);
        m.vm(VM, mode, reuse);
        map_pages(&m, 0x1000, 0x40_0000, 0x20_0000, WS_PAGES, &mut 0x10000);
        m.long_mode(VM, 0x1000);
        let t = WpToggle {
            m,
            mode,
            cr0: PE | PG | WP,
        };
        t.touch();
        t
    }

    /// The guest touches its working set (each access that misses is a fault).
    fn touch(&self) {
        for p in 0..WS_PAGES {
            match self.mode {
                MmuMode::Tdp => self.m.tdp_fault(VM, 0x20_0000 + p * 0x1000, Q_READ),
                MmuMode::Shadow => self.m.shadow_fault(VM, 0x40_0000 + p * 0x1000, 0, 0),
            };
        }
    }

    /// One CR0.WP write; refaults the working set if the new root lost it.
    fn toggle(&mut self) {
        self.cr0 ^= WP;
        let r = self.m.cr(VM, CrRegister::Cr0, self.cr0);
        let lost = match self.mode {
            MmuMode::Tdp => self.m.ept_walk(r.root_hpa, 0x20_0000).is_none(),
            MmuMode::Shadow => self
                .m
                .shadow_walk(r.root_hpa, r.root_level, 0x40_0000)
                .is_none(),
        };
        if lost {
            self.touch();
        }
    }
}

fn wp_toggle(c: &mut Criterion) {
    let mut g = c.benchmark_group("wp_toggle_pair");
    for mode in [MmuMode::Tdp, MmuMode::Shadow] {
        for reuse in [true, false] {
            let mut t = WpToggle::new(mode, reuse);
            // Warm both roles (under shadow paging reuse keeps a root per WP value).
            t.toggle();
            t.toggle();
            let name = format!(
                "{}/reuse_{}",
                mode_name(mode),
                if reuse { "on" } else { "off" }
            );
            g.bench_function(name, |b| {
                b.iter(|| {
                    t.toggle();
                    t.toggle();
                })
            });
        }
    }
    g.finish();
}

/// One fault benchmark: `per_round` fresh faults at a time, `fault(i)` for i in
/// 0..per_round, after a `zap_all` of the VM's RAM slot (`npages` from `host_base`,
/// untimed) that makes every page fault again. Afterwards checks that what was measured
/// is what the name says: every fault fixed by mapping a new page
/// (`page_faults_fixed` grew by one per fault), huge (`pages_2m`) or not.
struct FreshFaults<'a> {
    m: &'a Machine,
    per_round: u64,
    npages: u64,
    host_base: u64,
    pages_2m: bool,
}

impl FreshFaults<'_> {
    fn bench<M: Measurement<Value = Duration>>(
        &self,
        g: &mut BenchmarkGroup<'_, M>,
        name: &str,
        mut fault: impl FnMut(u64),
    ) {
        let before = self.m.stats(VM);
        let mut faults = 0;
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                faults += iters;
                let mut total = Duration::ZERO;
                let mut done = 0;
                while done < iters {
                    let n = self.per_round.min(iters - done);
                    zap_all(self.m, self.npages, self.host_base);
                    let start = Instant::now();
                    for i in 0..n {
                        fault(i);
                    }
                    total += start.elapsed();
                    done += n;
                }
                total
            })
        });
        let s = self.m.stats(VM);
        assert_eq!(
            s.page_faults_fixed - before.page_faults_fixed,
            faults,
            "{name}: not every fault mapped a page"
        );
        assert_eq!(s.pages_2m > 0, self.pages_2m, "{name}: page size");
    }
}

/// Removes and re-adds the RAM slot: a fast zap of every table, so every page faults
/// again (on a new root).
fn zap_all(m: &Machine, npages: u64, host_base: u64) {
    m.call(VM, &RemoveMemSlot { base_gfn: 0 }).unwrap();
    add_ram_slot(m, npages, host_base);
}

/// Adds the VM's only RAM slot: `npages` at gpa 0 backed from `host_base`.
fn add_ram_slot(m: &Machine, npages: u64, host_base: u64) {
    m.call(
        VM,
        &AddMemSlot {
            base_gfn: 0,
            npages,
            host_base,
            kind: SlotKind::Ram as u32,
            reserved: 0,
        },
    )
    .unwrap();
}

fn shadow_fault(c: &mut Criterion) {
    const PAGES: u64 = 2048;
    let ram = 16u64 << 20;
    let m = Machine::new(ram, 1024);
    m.vm(VM, MmuMode::Shadow, true);
    map_pages(&m, 0x1000, 0x4000_0000, 0x40_0000, PAGES, &mut 0x10000);
    m.long_mode(VM, 0x1000);
    let mut g = c.benchmark_group("shadow_fault");
    FreshFaults {
        m: &m,
        per_round: PAGES,
        npages: ram >> 12,
        host_base: RAM_HPA,
        pages_2m: false,
    }
    .bench(&mut g, "4k_write", |i| {
        m.shadow_fault(VM, 0x4000_0000 + i * 0x1000, EC_W, 0);
    });

    // A guest mapping 2M pages: each fault maps a 2M shadow leaf.
    const RANGES: u64 = 48;
    let ram = RANGES * (2 << 20) + (4 << 20);
    let m = Machine::new(ram, 256);
    m.vm(VM, MmuMode::Shadow, true);
    let (pml4, pdpt, pd) = (0x1000u64, 0x2000u64, 0x3000u64);
    m.write64(pml4, pdpt | P | RW | A);
    m.write64(pdpt, pd | P | RW | A);
    for r in 0..RANGES {
        let gpa = (4 << 20) + r * (2 << 20);
        m.write64(pd + 8 * (gpa >> 21), gpa | P | RW | A | D | PS);
    }
    m.long_mode(VM, pml4);
    FreshFaults {
        m: &m,
        per_round: RANGES,
        npages: ram >> 12,
        host_base: RAM_HPA,
        pages_2m: true,
    }
    .bench(&mut g, "2m_huge", |r| {
        m.shadow_fault(VM, (4 << 20) + r * (2 << 20), 0, 0);
    });
    g.finish();
}

fn tdp_fault(c: &mut Criterion) {
    let mut g = c.benchmark_group("tdp_fault");
    // 4K: the slot's host memory starts one page past a 2M boundary, so no range can be
    // mapped huge (the host page would not be aligned like the guest's).
    const PAGES: u64 = 2048;
    let m = Machine::new((PAGES + 1) * 4096, 256);
    m.call(
        VM,
        &CreateVm {
            mmu_mode: MmuMode::Tdp as u32,
            root_reuse: 1,
            flags: 0,
            reserved: 0,
        },
    )
    .unwrap();
    let host_base = RAM_HPA + 0x1000;
    add_ram_slot(&m, PAGES, host_base);
    m.regs(VM, PE, 0, 0, 0);
    FreshFaults {
        m: &m,
        per_round: PAGES,
        npages: PAGES,
        host_base,
        pages_2m: false,
    }
    .bench(&mut g, "4k", |i| {
        m.tdp_fault(VM, i * 0x1000, Q_WRITE);
    });

    // 2M: one slot of 32 aligned 2M ranges.
    const RANGES: u64 = 32;
    let ram = RANGES << 21;
    let m = Machine::new(ram, 256);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    FreshFaults {
        m: &m,
        per_round: RANGES,
        npages: ram >> 12,
        host_base: RAM_HPA,
        pages_2m: true,
    }
    .bench(&mut g, "2m", |r| {
        m.tdp_fault(VM, r << 21, Q_WRITE);
    });
    g.finish();
}

fn cr3_switch(c: &mut Criterion) {
    // Two processes, each with its own 4-level tables and 16 warm pages.
    let m = Machine::new(8 << 20, 256);
    m.vm(VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    let spaces = [0x1000u64, 0x2000];
    for (n, &cr3) in spaces.iter().enumerate() {
        map_pages(
            &m,
            cr3,
            0x40_0000,
            0x20_0000 + n as u64 * 0x1_0000,
            16,
            &mut next,
        );
    }
    m.long_mode(VM, spaces[0]);
    for &cr3 in spaces.iter().chain(&spaces) {
        m.cr(VM, CrRegister::Cr3, cr3);
        for p in 0..16u64 {
            m.shadow_fault(VM, 0x40_0000 + p * 0x1000, 0, 0);
        }
    }
    let misses = m.stats(VM).root_cache_misses;
    c.bench_function("cr3_switch/shadow_cache_hit", |b| {
        b.iter(|| {
            m.cr(VM, CrRegister::Cr3, spaces[1]);
            m.cr(VM, CrRegister::Cr3, spaces[0]);
        })
    });
    // What was measured must have been hits.
    assert_eq!(m.stats(VM).root_cache_misses, misses, "a CR3 switch missed");
}

fn nx(c: &mut Criterion) {
    const RANGES: u64 = 48;
    let ram = RANGES * (2 << 20) + (4 << 20);
    let m = Machine::new(ram, 256);
    m.vm(VM, MmuMode::Tdp, true);
    m.regs(VM, PE, 0, 0, 0);
    let range = |r: u64| (4 << 20) + r * (2 << 20);
    let map_huge = |m: &Machine| {
        for r in 0..RANGES {
            m.tdp_fault(VM, range(r), Q_READ);
        }
    };
    let mut g = c.benchmark_group("nx");
    // A fetch into a 2M leaf splits it (the leaves are mapped huge again, untimed).
    g.bench_function("tdp_split", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let n = RANGES.min(iters - done);
                zap_all(&m, ram >> 12, RAM_HPA);
                map_huge(&m);
                let start = Instant::now();
                for r in 0..n {
                    m.tdp_fault(VM, range(r), Q_FETCH);
                }
                total += start.elapsed();
                assert_eq!(
                    m.stats(VM).nx_lpage_splits,
                    n,
                    "every fetch split a 2M leaf"
                );
                done += n;
            }
            total
        })
    });
    m.call(
        badge::SYSTEM_CONTROL,
        &SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 0,
        },
    )
    .unwrap();
    // One tick recovering all RANGES splits, then the VM's next request freeing them.
    g.bench_function("recovery_tick_48_splits", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                zap_all(&m, ram >> 12, RAM_HPA);
                map_huge(&m);
                for r in 0..RANGES {
                    m.tdp_fault(VM, range(r), Q_FETCH);
                }
                let start = Instant::now();
                m.call(badge::SYSTEM_CONTROL, &NxRecoveryTick {}).unwrap();
                m.stats(VM);
                total += start.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, wp_toggle, shadow_fault, tdp_fault, cr3_switch, nx);
criterion_main!(benches);
