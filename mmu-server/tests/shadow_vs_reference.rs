//! The shadow MMU's decision equals the independent reference walker's
//! (`common/reference_walker.rs`, written from the SDM rules, sharing no code with the
//! server), for random guest page tables, CPU state and accesses:
//! - the reference faults: the server says "inject #PF" with the same error code and
//!   wrote nothing into the guest's tables;
//! - the reference translates: the server installed SPTEs that map the same host frame
//!   with exactly the rights the shadow rules derive from the guest's (writable only
//!   once the guest entry is dirty and the page is no shadowed guest table; the CR0.WP=0
//!   supervisor-write rule), and set the same accessed/dirty bits in guest memory.
//!
//! The reference walker is the roles engineer's; this test only drives it.

mod common;
mod support;

use common::reference_walker::{reference_walk, RefAccess, RefKind, RefOutcome, RefRegs};
use ipc::*;
use proptest::prelude::*;
use support::*;

const VM: Badge = 5;
/// Guest RAM: 4 MiB at gpa 0.
const RAM_PAGES: u64 = 1024;
/// Pages the generator puts tables in (and may point leaves at).
const TABLE_PAGES: std::ops::Range<u64> = 1..9;
/// Pages the generator points 4K leaves at.
const DATA_PAGES: std::ops::Range<u64> = 16..32;
/// Pages snapshotted to compare accessed/dirty updates.
const TRACKED_AREA: u64 = 32;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Bits32,
    Pae,
    Long,
}

#[derive(Clone, Debug)]
struct Case {
    mode: Mode,
    wp: bool,
    nx: bool,
    smep: bool,
    smap: bool,
    pse: bool,
    pke: bool,
    gva: u64,
    kind: RefKind,
    cpl: u8,
    implicit: bool,
    ac: bool,
    pkru: u32,
    /// Per level from the top: (entry flags, target page choice, large, reserved bit).
    levels: Vec<(u64, u64, bool, bool)>,
    cr3_page: u64,
    pdpt_slot: u64,
}

fn kind() -> impl Strategy<Value = RefKind> {
    prop_oneof![
        Just(RefKind::Read),
        Just(RefKind::Write),
        Just(RefKind::Fetch)
    ]
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Bits32), Just(Mode::Pae), Just(Mode::Long)]
}

/// Flags biased towards present entries with rights, so that most walks get through.
fn level() -> impl Strategy<Value = (u64, u64, bool, bool)> {
    (
        (
            0u8..20,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u8..4,
            0u8..16,
        ),
        0u64..64,
        0u8..4,
        0u8..40,
    )
        .prop_map(|((p, rw, us, a, d, xd, pkey), target, large, rsvd)| {
            let mut f = 0;
            if p != 0 {
                f |= P;
            }
            if rw || p > 12 {
                f |= RW;
            }
            if us || p > 12 {
                f |= US;
            }
            if a {
                f |= A;
            }
            if d {
                f |= D;
            }
            if xd == 0 {
                f |= XD;
            }
            f |= (pkey as u64) << 59;
            (f, target, large == 0, rsvd == 0)
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            mode(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        (
            any::<u64>(),
            kind(),
            prop_oneof![Just(0u8), Just(3u8)],
            any::<bool>(),
            any::<bool>(),
            any::<u32>(),
        ),
        proptest::collection::vec(level(), 4),
        (TABLE_PAGES, 0u64..4),
    )
        .prop_map(
            |(
                (mode, wp, nx, smep, smap, pse, pke),
                (gva, kind, cpl, implicit, ac, pkru),
                levels,
                (cr3_page, pdpt_slot),
            )| {
                // Few distinct indices, so that paths share tables.
                let gva = match mode {
                    Mode::Long => {
                        let g = gva & 0x7F_C060_3FFF;
                        // Canonical: sign-extend bit 47.
                        if g & (1 << 47) != 0 {
                            g | 0xFFFF_0000_0000_0000
                        } else {
                            g
                        }
                    }
                    _ => gva & 0xC060_3FFF,
                };
                Case {
                    mode,
                    wp,
                    nx,
                    smep,
                    smap,
                    pse,
                    pke,
                    gva,
                    kind,
                    cpl,
                    implicit,
                    ac,
                    pkru: pkru & if pke { u32::MAX } else { 0 },
                    levels,
                    cr3_page,
                    pdpt_slot,
                }
            },
        )
}

struct Built {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    efer: u64,
}

/// Writes the case's tables into guest memory.
fn build(m: &Machine, c: &Case) -> Built {
    let (cr4_mode, efer_mode, top, size) = match c.mode {
        Mode::Bits32 => (0, 0, 2u8, 4u64),
        Mode::Pae => (CR4_PAE, 0, 3, 8),
        Mode::Long => (CR4_PAE, EFER_LME | EFER_LMA, 4, 8),
    };
    let mut cr4 = cr4_mode;
    if c.smep {
        cr4 |= CR4_SMEP;
    }
    if c.smap {
        cr4 |= CR4_SMAP;
    }
    if c.pse {
        cr4 |= CR4_PSE;
    }
    if c.pke {
        cr4 |= CR4_PKE;
    }
    let efer = efer_mode | if c.nx { EFER_NX } else { 0 };
    let cr0 = PE | PG | if c.wp { WP } else { 0 };
    let cr3 = match c.mode {
        Mode::Pae => c.cr3_page * 4096 + 32 * c.pdpt_slot,
        _ => c.cr3_page * 4096,
    };
    let mut table = cr3;
    for (i, level) in (1..=top).rev().enumerate() {
        let (mut flags, target, large, rsvd) = c.levels[i];
        // Keep reserved-bit faults occasional: protection keys only in long mode, XD
        // without EFER.NX only now and then (both are reserved bits otherwise).
        if !matches!(c.mode, Mode::Long) {
            flags &= !(0xF << 59);
        }
        if !c.nx && target % 8 != 0 {
            flags &= !XD;
        }
        let index = match (c.mode, level) {
            (Mode::Bits32, l) => (c.gva >> (12 + 10 * (l as u32 - 1))) & 0x3FF,
            (Mode::Pae, 3) => (c.gva >> 30) & 3,
            (_, l) => (c.gva >> (12 + 9 * (l as u32 - 1))) & 0x1FF,
        };
        let entry_gpa = table + size * index;
        let leaf_possible =
            level == 1 || (level <= 3 && large && !(matches!(c.mode, Mode::Pae) && level == 3));
        let mut e;
        if matches!(c.mode, Mode::Pae) && level == 3 {
            // A PDPTE: P and the address; reserved bits only when asked.
            let page = TABLE_PAGES.start + target % (TABLE_PAGES.end - TABLE_PAGES.start);
            e = (page * 4096) | (flags & P);
            if rsvd {
                e |= RW;
            }
        } else if leaf_possible && level > 1 {
            // A huge page: at gpa 0 or 2 MiB (4 MiB pages and 1 GiB pages at 0).
            let base = if level == 2 && !matches!(c.mode, Mode::Bits32) {
                (target % 2) << 21
            } else {
                0
            };
            e = base | flags | PS;
            if rsvd {
                e |= 1 << 13; // reserved in 2M/1G PDEs, PA bit 32 in a 4M PDE
            }
        } else if level == 1 {
            let page = if target < 4 {
                TABLE_PAGES.start + target // sometimes a table: write tracking
            } else if target == 63 {
                RAM_PAGES + 5 // beyond RAM: a bad address
            } else {
                DATA_PAGES.start + target % (DATA_PAGES.end - DATA_PAGES.start)
            };
            e = (page * 4096) | flags;
            if rsvd && size == 8 {
                e |= 1 << 45;
            }
        } else {
            let page = if target == 63 {
                RAM_PAGES + 9 // a table outside RAM
            } else {
                TABLE_PAGES.start + target % (TABLE_PAGES.end - TABLE_PAGES.start)
            };
            e = (page * 4096) | (flags & !PS);
            if rsvd && size == 8 {
                e |= 1 << 45;
            }
        }
        if size == 4 {
            e &= 0xFFFF_FFFF;
            m.write32(entry_gpa, e as u32);
        } else {
            m.write64(entry_gpa, e);
        }
        if !(matches!(c.mode, Mode::Pae) && level == 3) && e & PS != 0 && level > 1 {
            break;
        }
        table = if size == 4 {
            e & 0xFFFF_F000
        } else {
            e & 0xF_FFFF_F000
        };
        if table >= RAM_PAGES * 4096 {
            break;
        }
    }
    Built {
        cr0,
        cr3,
        cr4,
        efer,
    }
}

/// What the reference walker says case `c` does on the guest tables `b` built in `m`
/// (it reads guest memory as it is now, so call it before the server touches A/D).
fn reference(m: &Machine, b: &Built, c: &Case) -> RefOutcome {
    let regs = RefRegs {
        cr0: b.cr0,
        cr3: b.cr3,
        cr4: b.cr4,
        efer: b.efer,
        maxphyaddr: 40,
        gbpages: true,
    };
    let access = RefAccess {
        kind: c.kind,
        cpl: c.cpl,
        implicit: c.implicit,
        ac: c.ac,
        pkru: c.pkru,
    };
    let read = |gpa: u64, size: u8| -> Option<u64> {
        if gpa + size as u64 > RAM_PAGES * 4096 {
            return None;
        }
        Some(if size == 4 {
            m.read32(gpa) as u64
        } else {
            m.read64(gpa)
        })
    };
    reference_walk(&read, regs, c.gva, access)
}

fn snapshot(m: &Machine) -> Vec<u64> {
    (0..TRACKED_AREA * 512).map(|i| m.read64(i * 8)).collect()
}

fn check(c: Case) -> Result<(), TestCaseError> {
    let m = Machine::new(RAM_PAGES * 4096, 32);
    m.vm(VM, MmuMode::Shadow, true);
    let b = build(&m, &c);
    let before = snapshot(&m);
    let reference = reference(&m, &b, &c);

    let root = m.regs(VM, b.cr0, b.cr3, b.cr4, b.efer);
    let user = c.cpl == 3 && !c.implicit;
    let write = c.kind == RefKind::Write;
    let mut ec = 0;
    if write {
        ec |= EC_W;
    }
    if user {
        ec |= EC_U;
    }
    if c.kind == RefKind::Fetch {
        ec |= EC_F;
    }
    let mut flags = 0;
    if c.ac {
        flags |= vcpu_flags::EFLAGS_AC;
    }
    if c.implicit {
        flags |= vcpu_flags::IMPLICIT;
    }
    let got = m.call(
        VM,
        &ShadowFault {
            gva: c.gva,
            rip: 0x1000,
            error_code: ec,
            flags,
            pkru: c.pkru,
            reserved: 0,
        },
    );

    if std::env::var("REF_DIST").is_ok() {
        let tag = match &reference {
            RefOutcome::Fault { error_code } => format!("fault {error_code:#x}"),
            RefOutcome::NotRam { .. } => "notram".into(),
            RefOutcome::Ok(t) => format!("ok level {} {:?} {:?}", t.level, c.mode, c.kind),
        };
        eprintln!("DIST {tag}");
    }
    match reference {
        RefOutcome::Fault { error_code } => {
            let r = got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(outcome(&r), FaultOutcome::InjectPageFault);
            prop_assert_eq!(r.error_code, error_code);
            prop_assert_eq!(snapshot(&m), before, "a fault sets no accessed/dirty bit");
        }
        RefOutcome::NotRam { .. } => {
            let r = got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(outcome(&r), FaultOutcome::InjectPageFault);
            prop_assert_eq!(r.error_code & EC_P, 0);
        }
        RefOutcome::Ok(t) => {
            // Guest memory: exactly the reference's accessed/dirty updates.
            let mut expected = before.clone();
            t.apply_accessed_dirty(|gpa, size, bits| {
                let i = (gpa / 8) as usize;
                let shift = if size == 4 { (gpa % 8) * 8 } else { 0 };
                expected[i] |= bits << shift;
            });
            prop_assert_eq!(snapshot(&m), expected, "accessed/dirty bits");
            if t.gpa >= RAM_PAGES * 4096 {
                prop_assert_eq!(got, Err(Error::BadAddress));
                return Ok(());
            }
            let r = got.map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            // The guest tables of the walk are shadowed now, hence write-protected.
            let tables: Vec<u64> = t.accessed_set.iter().map(|g| g >> 12).collect();
            let data_gfn = t.gpa >> 12;
            let tracked = tables.contains(&data_gfn);
            let leaf_gpa = *t.accessed_set.last().unwrap();
            let leaf_entry = if t.entry_size == 4 {
                m.read32(leaf_gpa) as u64
            } else {
                m.read64(leaf_gpa)
            };
            let dirty = leaf_entry & D != 0;
            // CR0.WP=0: a supervisor write to a read-only page maps it writable for the
            // supervisor only, and not executable with SMEP (mmu.rst).
            // With protection keys, the same for a page whose key forbids writes: WP=0
            // lets the supervisor write anyway, WP=1 would not.
            let lma_pke = matches!(c.mode, Mode::Long) && c.pke;
            let key_wd = lma_pke && t.user && (c.pkru >> (2 * t.pkey as u32 + 1)) & 1 != 0;
            let wp0_write = write && !c.wp && !user && (!t.writable || key_wd);
            let want_w = (t.writable || wp0_write) && dirty && !tracked;
            let want_u = t.user && !wp0_write;
            // The NX-huge-page mitigation is on (the server's default mode, auto): a huge
            // shadow leaf is never executable, and a fetch maps 4K.
            let huge_leaf = m
                .shadow_walk(r.root_hpa, r.root_level, c.gva)
                .is_some_and(|l| l.level > 1);
            if c.kind == RefKind::Fetch {
                prop_assert!(!huge_leaf, "a fetch is never served by a huge leaf");
            }
            let want_x = t.executable && !(wp0_write && c.smep) && !huge_leaf;
            if write && tracked {
                // Writing a table of its own translation: emulate.
                prop_assert_eq!(outcome(&r), FaultOutcome::Emulate);
            } else {
                prop_assert_eq!(outcome(&r), FaultOutcome::Fixed);
            }
            prop_assert_eq!(r.root_hpa, root.root_hpa);
            let leaf = m.shadow_walk(r.root_hpa, r.root_level, c.gva);
            let leaf = leaf.ok_or_else(|| TestCaseError::fail("no shadow mapping"))?;
            prop_assert_eq!(leaf.hpa, RAM_HPA + (t.gpa & !0xFFF), "host frame");
            prop_assert_eq!(leaf.pkey, t.pkey, "protection key");
            // The vCPU, walking our tables as the hardware (CR0.WP=1, EFER.NX=1, the
            // guest's SMEP/SMAP/PKE/PKRU, CPL and EFLAGS.AC), now performs the access
            // when the fault was fixed, and still faults on a protected write.
            let hw = hardware_access(&m, &r, &c, b.cr4);
            if outcome(&r) == FaultOutcome::Fixed {
                prop_assert_eq!(
                    hw,
                    Ok(RAM_HPA + (t.gpa & !0xFFF) + (c.gva & 0xFFF)),
                    "hardware access"
                );
            } else {
                let faulted = matches!(hw, Err(vcpu::paging::Fault::PageFault { error_code, .. }) if error_code & EC_W != 0);
                prop_assert!(faulted, "a protected write faults on hardware: {:?}", hw);
            }
            prop_assert_eq!(
                (leaf.w, leaf.u, leaf.x),
                (want_w, want_u, want_x),
                "rights of {:?}",
                t
            );
        }
    }
    Ok(())
}

/// The access of case `c`, performed by the software vCPU's page walker on the root of
/// reply `r`, as the CPU runs under shadow paging.
fn hardware_access(
    m: &Machine,
    r: &FaultReply,
    c: &Case,
    guest_cr4: u64,
) -> Result<u64, vcpu::paging::Fault> {
    use vcpu::paging::{Access, AccessKind, Mmu, PagingContext};
    let long = r.root_level == 4;
    let mut ctx = PagingContext {
        cr0: PE | PG | WP,
        cr3: r.root_hpa,
        cr4: CR4_PAE | (guest_cr4 & (CR4_SMEP | CR4_SMAP | CR4_PKE)),
        efer: EFER_NX | if long { EFER_LME | EFER_LMA } else { 0 },
        pdptes: [0; 4],
        cpl: c.cpl,
        rflags_ac: c.ac,
        pkru: c.pkru,
        eptp: None,
        vpid: 1,
    };
    let mut mmu = Mmu::new();
    if !long {
        ctx.pdptes = mmu.load_pdptes(m.phys(), &ctx)?;
    }
    let kind = match c.kind {
        RefKind::Read => AccessKind::Read,
        RefKind::Write => AccessKind::Write,
        RefKind::Fetch => AccessKind::Fetch,
    };
    mmu.translate(
        m.phys(),
        &ctx,
        c.gva,
        Access {
            kind,
            implicit_supervisor: c.implicit,
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1500))]

    #[test]
    fn shadow_decision_equals_reference_walker(c in case()) {
        check(c)?;
    }
}

/// The emulator's translation (`GvaToGpa`) under TDP equals the reference too, with
/// CR0.WP taken from the live value the request carries (MMU_REFERENCE.md section 4:
/// WP is guest-owned under EPT, so the server's copy is stale here on purpose).
fn check_gva_to_gpa(c: Case) -> Result<(), TestCaseError> {
    let m = Machine::new(RAM_PAGES * 4096, 16);
    m.vm(VM, MmuMode::Tdp, true);
    let b = build(&m, &c);
    let reference = reference(&m, &b, &c);
    // The server believes the opposite WP.
    m.regs(VM, b.cr0 ^ WP, b.cr3, b.cr4, b.efer);
    let mut acc = 0;
    if c.kind == RefKind::Write {
        acc |= EC_W;
    }
    if c.cpl == 3 && !c.implicit {
        acc |= EC_U;
    }
    if c.kind == RefKind::Fetch {
        acc |= EC_F;
    }
    let mut flags = vcpu_flags::LIVE_CR0_WP_VALID;
    if c.wp {
        flags |= vcpu_flags::LIVE_CR0_WP;
    }
    if c.ac {
        flags |= vcpu_flags::EFLAGS_AC;
    }
    if c.implicit {
        flags |= vcpu_flags::IMPLICIT;
    }
    let t = m
        .call(
            VM,
            &GvaToGpa {
                gva: c.gva,
                access: acc,
                flags,
                pkru: c.pkru,
                reserved: 0,
            },
        )
        .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
    match reference {
        RefOutcome::Fault { error_code } => {
            prop_assert_eq!((t.faulted, t.error_code), (1, error_code))
        }
        RefOutcome::NotRam { .. } => prop_assert_eq!((t.faulted, t.error_code & EC_P), (1, 0)),
        RefOutcome::Ok(r) => prop_assert_eq!((t.faulted, t.gpa), (0, r.gpa)),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn emulator_translation_equals_reference_walker_with_live_wp(c in case()) {
        check_gva_to_gpa(c)?;
    }
}
