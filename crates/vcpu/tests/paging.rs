//! Differential tests of `vcpu::paging` against the independent reference walker in
//! `common_paging`: random page tables (32-bit, PAE, 4-level, 5-level, paging off; with
//! and without EPT, EPT A/D on and off), random CPU states and access sequences. After
//! every access the outcome (hpa, or the fault with its error code / exit
//! qualification) and the whole of host-physical memory (A/D updates) must agree.

mod common_paging;

use common_paging::world::{World, WorldMode};
use common_paging::RefMem;
use proptest::prelude::*;
use vcpu::paging::{Access, AccessKind, Fault, Mmu, PagingContext};

#[derive(Clone, Copy, Debug)]
struct CpuState {
    mode: WorldMode,
    ept: Option<bool>,
    wp: bool,
    smep: bool,
    smap: bool,
    pke: bool,
    nxe: bool,
    pge: bool,
    pcide: bool,
    pkru: u32,
}

fn mode_strategy() -> impl Strategy<Value = WorldMode> {
    prop_oneof![
        1 => Just(WorldMode::Off),
        2 => any::<bool>().prop_map(|pse| WorldMode::Bits32 { pse }),
        3 => Just(WorldMode::Pae),
        4 => Just(WorldMode::Level4),
        1 => Just(WorldMode::Level5),
    ]
}

prop_compose! {
    fn cpu_state()(
        mode in mode_strategy(),
        ept in prop_oneof![Just(None), Just(Some(false)), Just(Some(true))],
        wp: bool, smep: bool, smap: bool, pke: bool, nxe: bool, pge: bool, pcide: bool,
        pkru: u32,
    ) -> CpuState {
        // Paging off is only reachable in VMX non-root operation through EPT
        // (unrestricted guest); without EPT it is the identity, tested separately.
        let ept = if mode == WorldMode::Off && ept.is_none() { Some(false) } else { ept };
        CpuState { mode, ept, wp, smep, smap, pke, nxe, pge, pcide, pkru }
    }
}

fn context(s: &CpuState, w: &World) -> PagingContext {
    let mut cr0 = 1; // PE
    let mut cr4 = 0;
    let mut efer = 0;
    if s.wp {
        cr0 |= 1 << 16;
    }
    if s.mode != WorldMode::Off {
        cr0 |= 1 << 31;
    }
    match s.mode {
        WorldMode::Off => {}
        WorldMode::Bits32 { pse } => {
            if pse {
                cr4 |= 1 << 4;
            }
        }
        WorldMode::Pae => cr4 |= 1 << 5,
        WorldMode::Level4 | WorldMode::Level5 => {
            cr4 |= 1 << 5;
            efer |= (1 << 8) | (1 << 10);
            if s.mode == WorldMode::Level5 {
                cr4 |= 1 << 12;
            }
            if s.pke {
                cr4 |= 1 << 22;
            }
            if s.pcide {
                cr4 |= 1 << 17;
            }
        }
    }
    if s.smep {
        cr4 |= 1 << 20;
    }
    if s.smap {
        cr4 |= 1 << 21;
    }
    if s.pge {
        cr4 |= 1 << 7;
    }
    if s.nxe {
        efer |= 1 << 11;
    }
    PagingContext {
        cr0,
        cr3: w.cr3,
        cr4,
        efer,
        pdptes: [0; 4],
        cpl: 0,
        rflags_ac: false,
        pkru: s.pkru,
        eptp: w.eptp,
        vpid: 1,
    }
}

/// Linear addresses of a world: some sharing upper-level tables, one far away.
fn targets(w: &mut World, s: &CpuState) -> Vec<u64> {
    let wide = matches!(s.mode, WorldMode::Level4 | WorldMode::Level5);
    let bits = match s.mode {
        WorldMode::Level5 => 56,
        WorldMode::Level4 => 47,
        _ => 32,
    };
    let a = w.rng.below(1 << bits) & !0xfff;
    let b = a ^ (w.rng.below(8) << 12);
    let c = a ^ (w.rng.below(1 << 9) << 21);
    let d = w.rng.below(1 << bits) & !0xfff;
    let canon = |x: u64| {
        if wide {
            let shift = 64 - (bits + 1);
            (((x << shift) as i64) >> shift) as u64
        } else {
            x
        }
    };
    vec![canon(a), canon(b), canon(c), canon(d)]
}

#[derive(Default, Debug)]
struct Outcomes {
    ok: u32,
    not_present: u32,
    reserved: u32,
    protection: u32,
    pk: u32,
    ept_violation_table: u32,
    ept_violation_final: u32,
    ept_misconfig: u32,
    pdpte_reserved: u32,
    bad_hpa: u32,
}

impl Outcomes {
    fn count(&mut self, r: &Result<u64, Fault>) {
        match r {
            Ok(_) => self.ok += 1,
            Err(Fault::PageFault { error_code, .. }) => {
                if error_code & 1 == 0 {
                    self.not_present += 1
                } else if error_code & 8 != 0 {
                    self.reserved += 1
                } else {
                    self.protection += 1;
                    if error_code & 32 != 0 {
                        self.pk += 1
                    }
                }
            }
            Err(Fault::EptViolation { qualification, .. }) => {
                if qualification & (1 << 8) != 0 {
                    self.ept_violation_final += 1
                } else {
                    self.ept_violation_table += 1
                }
            }
            Err(Fault::EptMisconfig { .. }) => self.ept_misconfig += 1,
            Err(Fault::PdpteReserved { .. }) => self.pdpte_reserved += 1,
            Err(Fault::BadHpa { .. }) => self.bad_hpa += 1,
        }
    }
}

/// Builds a world from `seed` and runs a sequence of accesses through one `Mmu` (so TLB
/// hits are compared too) and through the reference. Returns a mismatch description.
fn run_case(s: &CpuState, seed: u64, out: &mut Outcomes) -> Result<(), String> {
    let mut w = World::new(seed, s.mode, s.nxe, s.ept);
    w.build_root();
    let lins = targets(&mut w, s);
    for &l in &lins {
        w.map_linear(l);
    }
    let mut ctx = context(s, &w);
    let mut reference: RefMem = w.ref_mem();
    let map = w.physmap();
    let mut mmu = Mmu::new();

    if s.mode == WorldMode::Pae {
        let got = mmu.load_pdptes(&map, &ctx);
        let want = common_paging::load_pdptes(&mut reference, &ctx);
        if got != want {
            return Err(format!("load_pdptes: model {got:x?} reference {want:x?}"));
        }
        if w.ram != reference.words {
            return Err("memory differs after load_pdptes".into());
        }
        match got {
            Ok(p) => ctx.pdptes = p,
            Err(f) => {
                out.count(&Err(f));
                return Ok(());
            }
        }
    }

    for step in 0..8 {
        let mut linear = lins[w.rng.below(lins.len() as u64) as usize] | w.rng.below(4096);
        if w.rng.chance(5) {
            linear = w.rng.next();
        }
        let kind =
            [AccessKind::Read, AccessKind::Write, AccessKind::Fetch][w.rng.below(3) as usize];
        let access = Access {
            kind,
            implicit_supervisor: kind != AccessKind::Fetch && w.rng.chance(10),
        };
        ctx.cpl = if w.rng.chance(50) { 3 } else { 0 };
        ctx.rflags_ac = w.rng.chance(50);
        let got = mmu.translate(&map, &ctx, linear, access);
        let want = common_paging::translate(&mut reference, &ctx, linear, access);
        out.count(&got);
        if got != want {
            return Err(format!(
                "step {step}: linear {linear:#x} {access:?} cpl {} ac {}\n  model     {got:x?}\n  reference {want:x?}\n  ctx {ctx:x?}",
                ctx.cpl, ctx.rflags_ac
            ));
        }
        if w.ram != reference.words {
            let i = w
                .ram
                .iter()
                .zip(&reference.words)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let hpa = common_paging::world::POOL_BASE + 8 * i as u64;
            return Err(format!(
                "step {step}: memory differs at hpa {hpa:#x}: model {:#x} reference {:#x} (linear {linear:#x} {access:?}, result {got:x?})",
                w.r64(hpa),
                reference.read(hpa, 8).unwrap()
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn model_matches_reference_walker(s in cpu_state(), seed: u64) {
        let mut out = Outcomes::default();
        if let Err(e) = run_case(&s, seed, &mut out) {
            prop_assert!(false, "{:?}\n{}", s, e);
        }
    }
}

/// The generator is only worth something if it reaches every outcome: run a fixed set
/// of seeds and require each kind of result to occur.
#[test]
fn generator_reaches_every_outcome() {
    let mut out = Outcomes::default();
    let mut rng = common_paging::world::Rng(0x5eed);
    let modes = [
        WorldMode::Off,
        WorldMode::Bits32 { pse: true },
        WorldMode::Bits32 { pse: false },
        WorldMode::Pae,
        WorldMode::Level4,
        WorldMode::Level5,
    ];
    for i in 0..1200u64 {
        let r = rng.next();
        let mode = modes[(i % modes.len() as u64) as usize];
        let ept = match (r >> 8) % 3 {
            0 if mode != WorldMode::Off => None,
            1 => Some(false),
            _ => Some(true),
        };
        let s = CpuState {
            mode,
            ept,
            wp: r & 1 != 0,
            smep: r & 2 != 0,
            smap: r & 4 != 0,
            pke: r & 8 != 0,
            nxe: r & 16 != 0,
            pge: r & 32 != 0,
            pcide: r & 64 != 0,
            pkru: (r >> 32) as u32,
        };
        run_case(&s, rng.next(), &mut out).unwrap_or_else(|e| panic!("{s:?}\n{e}"));
    }
    println!("{out:?}");
    assert!(out.ok > 1000, "{out:?}");
    assert!(out.not_present > 50, "{out:?}");
    assert!(out.reserved > 50, "{out:?}");
    assert!(out.protection > 200, "{out:?}");
    assert!(out.pk > 10, "{out:?}");
    assert!(out.ept_violation_table > 10, "{out:?}");
    assert!(out.ept_violation_final > 50, "{out:?}");
    assert!(out.ept_misconfig > 10, "{out:?}");
    assert!(out.pdpte_reserved > 0, "{out:?}");
}

/// Paging off without EPT: linear = physical, 32 bits outside IA-32e mode.
#[test]
fn paging_off_without_ept_is_identity() {
    let mut mmu = Mmu::new();
    let map = physmem::PhysMap::new();
    let ctx = PagingContext::default();
    let read = Access {
        kind: AccessKind::Read,
        implicit_supervisor: false,
    };
    assert_eq!(
        mmu.translate(&map, &ctx, 0x1234_5678, read),
        Ok(0x1234_5678)
    );
    assert_eq!(mmu.translate(&map, &ctx, 0x1_0000_0010, read), Ok(0x10));
    assert_eq!(mmu.stats().walks, 0);
}

/// The access-rights rules against KVM's permission-bitmap test vectors (shared
/// MMU_REFERENCE.md section 3): index = W | U<<1 | SMAP-exempt<<2 | F<<3, bit = the
/// combined rights X | W<<1 | U<<2; a set bit means a fault.
#[test]
fn access_rights_match_the_permission_bitmap_vectors() {
    use vcpu::paging::rights::{self, Rights};
    // (name, WP, NX, SMEP, SMAP, bytes)
    type Vector = (&'static str, bool, bool, bool, bool, [u8; 16]);
    let vectors: [Vector; 5] = [
        (
            "WP1 NX1",
            true,
            true,
            false,
            false,
            [
                0x00, 0x33, 0x0f, 0x3f, 0x00, 0x33, 0x0f, 0x3f, 0x55, 0x77, 0x5f, 0x7f, 0x55, 0x77,
                0x5f, 0x7f,
            ],
        ),
        (
            "WP0 NX1",
            false,
            true,
            false,
            false,
            [
                0x00, 0x00, 0x0f, 0x3f, 0x00, 0x00, 0x0f, 0x3f, 0x55, 0x55, 0x5f, 0x7f, 0x55, 0x55,
                0x5f, 0x7f,
            ],
        ),
        (
            "WP1 NX1 SMEP SMAP",
            true,
            true,
            true,
            true,
            [
                0xf0, 0xf3, 0x0f, 0x3f, 0x00, 0x33, 0x0f, 0x3f, 0xf5, 0xf7, 0x5f, 0x7f, 0xf5, 0xf7,
                0x5f, 0x7f,
            ],
        ),
        (
            "WP0 NX1 SMEP SMAP",
            false,
            true,
            true,
            true,
            [
                0xf0, 0xf0, 0x0f, 0x3f, 0x00, 0x00, 0x0f, 0x3f, 0xf5, 0xf5, 0x5f, 0x7f, 0xf5, 0xf5,
                0x5f, 0x7f,
            ],
        ),
        (
            "WP1 NX0",
            true,
            false,
            false,
            false,
            [
                0x00, 0x33, 0x0f, 0x3f, 0x00, 0x33, 0x0f, 0x3f, 0x00, 0x33, 0x0f, 0x3f, 0x00, 0x33,
                0x0f, 0x3f,
            ],
        ),
    ];
    let mut checked = 0;
    for (name, wp, nx, smep, smap, bytes) in vectors {
        for (index, byte) in bytes.iter().enumerate() {
            let (w, u, exempt, f) = (
                index & 1 != 0,
                index & 2 != 0,
                index & 4 != 0,
                index & 8 != 0,
            );
            if w && f {
                continue; // not an access that exists
            }
            let ctx = PagingContext {
                cr0: (1 << 31) | ((1 << 16) * u64::from(wp)) | 1,
                cr4: (1 << 5) | ((1 << 20) * u64::from(smep)) | ((1 << 21) * u64::from(smap)),
                efer: (1 << 10) | (1 << 8) | ((1 << 11) * u64::from(nx)),
                cpl: if u { 3 } else { 0 },
                rflags_ac: exempt,
                ..PagingContext::default()
            };
            let kind = if f {
                AccessKind::Fetch
            } else if w {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            let access = Access {
                kind,
                implicit_supervisor: false,
            };
            for pte_access in 0..8u8 {
                let r = Rights {
                    user: pte_access & 4 != 0,
                    writable: pte_access & 2 != 0,
                    execute_disable: nx && pte_access & 1 == 0,
                    pkey: 0,
                };
                let want = (byte >> pte_access) & 1 == 1;
                let got = rights::check(&ctx, r, access).is_some();
                assert_eq!(got, want, "{name} index {index} access {pte_access:03b}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 12 * 8);
}

/// `translate_gpa`: the EPT walk alone, with EPT A/D updates and no guest-linear
/// address in a violation (Table 28-7 bit 7 clear).
#[test]
fn translate_gpa_walks_ept_only() {
    use common_paging::fixture::Fixture;
    let mut f = Fixture::new(true);
    let leaf = f.ept_map(0x7000_0000, 0x9000_0000, 0b101); // R and X, not W
    let mut ctx = PagingContext {
        eptp: f.eptp().map(|e| e | (1 << 6)), // EPT A/D on
        ..PagingContext::default()
    };
    let mut mmu = Mmu::new();
    let read = Access {
        kind: AccessKind::Read,
        implicit_supervisor: false,
    };
    let write = Access {
        kind: AccessKind::Write,
        implicit_supervisor: false,
    };
    assert_eq!(
        mmu.translate_gpa(&f.map, &ctx, 0x7000_0123, read),
        Ok(0x9000_0123)
    );
    assert_eq!(
        f.r64(leaf) & (3 << 8),
        1 << 8,
        "A set, D clear after a read"
    );
    assert_eq!(
        mmu.translate_gpa(&f.map, &ctx, 0x7000_0123, write),
        Err(Fault::EptViolation {
            gpa: 0x7000_0123,
            linear: None,
            qualification: 0b010 | (0b101 << 3),
        })
    );
    // Not mapped at all: rights 0.
    assert_eq!(
        mmu.translate_gpa(&f.map, &ctx, 0x7100_0000, read),
        Err(Fault::EptViolation {
            gpa: 0x7100_0000,
            linear: None,
            qualification: 0b001,
        })
    );
    ctx.eptp = None;
    assert_eq!(mmu.translate_gpa(&f.map, &ctx, 0x1234, write), Ok(0x1234));
}

/// A/D updates are atomic (SDM 4.8): while another thread keeps flipping a software
/// bit in the same entries, every write walk still sets A and D, and no flip is lost.
#[test]
fn accessed_dirty_updates_never_lose_a_concurrent_write() {
    use common_paging::fixture::*;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::time::{Duration, Instant};
    const BASE: u64 = 0x4000_0000;
    const PAGES: u64 = 32;
    const SOFT: u64 = 1 << 9; // ignored by the CPU, free for software
    let mut f = Fixture::new(false);
    let root = f.new_root();
    let ptes: Vec<u64> = (0..PAGES)
        .map(|i| f.map4k(root, BASE + i * 4096, 0x8000_0000 + i * 4096, P | RW))
        .collect();
    let ctx = f.ctx(root);
    let stop = AtomicBool::new(false);
    let total_flips = AtomicU64::new(0);
    let map = &f.map;
    let flips = std::thread::scope(|s| {
        let flipper = s.spawn(|| {
            let mut flips = vec![0u32; PAGES as usize];
            while !stop.load(Ordering::Relaxed) {
                for (i, &pte) in ptes.iter().enumerate() {
                    loop {
                        let old = map.read_u64(pte).unwrap();
                        if map.cmpxchg_u64(pte, old, old ^ SOFT).unwrap().is_ok() {
                            flips[i] += 1;
                            total_flips.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                }
            }
            flips
        });
        let mut mmu = Mmu::new();
        // Run while the other thread is actually flipping (it may start late on a
        // loaded machine), bounded in time.
        let start = Instant::now();
        let mut rounds = 0;
        while rounds < 3000
            || (total_flips.load(Ordering::Relaxed) < 1_000_000
                && start.elapsed() < Duration::from_secs(3))
        {
            rounds += 1;
            mmu.flush_all();
            for (i, &pte) in ptes.iter().enumerate() {
                // Clean the entry (atomically too), then write through it.
                loop {
                    let old = map.read_u64(pte).unwrap();
                    if map.cmpxchg_u64(pte, old, old & !(A | D)).unwrap().is_ok() {
                        break;
                    }
                }
                let linear = BASE + i as u64 * 4096;
                assert_eq!(
                    mmu.translate(map, &ctx, linear, WRITE),
                    Ok(0x8000_0000 + i as u64 * 4096)
                );
                assert_eq!(map.read_u64(pte).unwrap() & (A | D), A | D);
            }
        }
        stop.store(true, Ordering::Relaxed);
        flipper.join().unwrap()
    });
    for (i, &pte) in ptes.iter().enumerate() {
        let odd = flips[i] % 2 == 1;
        assert_eq!(map.read_u64(pte).unwrap() & SOFT != 0, odd, "entry {i}");
    }
}
