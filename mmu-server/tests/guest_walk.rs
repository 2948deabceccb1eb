//! The software guest page walker against hand-built tables and, by property test,
//! against the independent SDM reference walker in `tests/common`.

mod common;

use common::reference_walker::{reference_walk, RefAccess, RefKind, RefOutcome, RefRegs};
use mmu_server::guest_walk::{
    walk, walk_with_pdptes, GuestMemory, GuestWalk, WalkError, WalkRequest, GUEST_MAXPHYADDR,
    MAX_WALK_ATTEMPTS,
};
use mmu_server::permission::{pfec, Permissions};
use mmu_server::role::{cpu_role, PagingRegs, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK};
use proptest::prelude::*;
use std::cell::{Cell, RefCell};

// ----------------------------------------------------------------------------------
// Guest RAM and CPU state for the tests
// ----------------------------------------------------------------------------------

const PAGE: u64 = 4096;

/// Guest RAM from gpa 0, little-endian.
#[derive(Clone)]
struct Ram {
    bytes: RefCell<Vec<u8>>,
}

impl Ram {
    fn new(pages: u64) -> Ram {
        Ram {
            bytes: RefCell::new(vec![0; (pages * PAGE) as usize]),
        }
    }
    fn read(&self, gpa: u64, size: u8) -> Option<u64> {
        let bytes = self.bytes.borrow();
        let start = usize::try_from(gpa).ok()?;
        let slice = bytes.get(start..start.checked_add(size as usize)?)?;
        let mut value = 0u64;
        for (i, b) in slice.iter().enumerate() {
            value |= (*b as u64) << (8 * i);
        }
        Some(value)
    }
    fn write(&self, gpa: u64, size: u8, value: u64) {
        let mut bytes = self.bytes.borrow_mut();
        for i in 0..size as usize {
            bytes[gpa as usize + i] = (value >> (8 * i)) as u8;
        }
    }
    fn set_bits(&self, gpa: u64, size: u8, bits: u64) {
        let old = self.read(gpa, size).unwrap();
        self.write(gpa, size, old | bits);
    }
    fn image(&self) -> Vec<u8> {
        self.bytes.borrow().clone()
    }
}

impl GuestMemory for Ram {
    fn read_gpte(&self, gpa: u64, size: u8) -> Option<u64> {
        self.read(gpa, size)
    }
    fn cmpxchg_gpte(&self, gpa: u64, size: u8, old: u64, new: u64) -> Option<bool> {
        let current = self.read(gpa, size)?;
        if current != old {
            return Some(false);
        }
        self.write(gpa, size, new);
        Some(true)
    }
}

const P: u64 = 1;
const RW: u64 = 2;
const US: u64 = 4;
const A: u64 = 1 << 5;
const D: u64 = 1 << 6;
const PS: u64 = 1 << 7;
const XD: u64 = 1 << 63;

const CR0_PE: u64 = 1;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;
const CR4_LA57: u64 = 1 << 12;
const CR4_SMEP: u64 = 1 << 20;
const CR4_SMAP: u64 = 1 << 21;
const CR4_PKE: u64 = 1 << 22;
const EFER_LONG: u64 = (1 << 8) | (1 << 10);
const EFER_NX: u64 = 1 << 11;

#[derive(Clone, Copy, Debug)]
struct Cpu {
    cr0: u64,
    cr4: u64,
    efer: u64,
    cr3: u64,
    gbpages: bool,
}

impl Cpu {
    fn long4(cr3: u64) -> Cpu {
        Cpu {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr4: CR4_PAE,
            efer: EFER_LONG | EFER_NX,
            cr3,
            gbpages: true,
        }
    }
    fn pae(cr3: u64) -> Cpu {
        Cpu {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr4: CR4_PAE,
            efer: EFER_NX,
            cr3,
            gbpages: false,
        }
    }
    fn bits32(cr3: u64, pse: bool) -> Cpu {
        Cpu {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr4: if pse { CR4_PSE } else { 0 },
            efer: 0,
            cr3,
            gbpages: false,
        }
    }
    fn ref_regs(&self) -> RefRegs {
        RefRegs {
            cr0: self.cr0,
            cr3: self.cr3,
            cr4: self.cr4,
            efer: self.efer,
            maxphyaddr: GUEST_MAXPHYADDR,
            gbpages: self.gbpages,
        }
    }
}

fn read() -> RefAccess {
    RefAccess {
        kind: RefKind::Read,
        cpl: 0,
        implicit: false,
        ac: false,
        pkru: 0,
    }
}
fn write() -> RefAccess {
    RefAccess {
        kind: RefKind::Write,
        ..read()
    }
}
fn fetch() -> RefAccess {
    RefAccess {
        kind: RefKind::Fetch,
        ..read()
    }
}
fn user(access: RefAccess) -> RefAccess {
    RefAccess { cpl: 3, ..access }
}

/// The access as the module takes it: an error-code-shaped pfec.
fn request(cpu: &Cpu, gva: u64, access: &RefAccess) -> WalkRequest {
    let mut bits = match access.kind {
        RefKind::Read => 0,
        RefKind::Write => pfec::W,
        RefKind::Fetch => pfec::FETCH,
    };
    if access.cpl == 3 && !access.implicit {
        bits |= pfec::U;
    }
    if access.implicit {
        bits |= pfec::IMPLICIT;
    }
    WalkRequest {
        cr3: cpu.cr3,
        gva,
        pfec: bits,
        rflags_ac: access.ac,
        pkru: access.pkru,
        gbpages: cpu.gbpages,
    }
}

fn module_walk(
    mem: &impl GuestMemory,
    cpu: &Cpu,
    gva: u64,
    access: RefAccess,
) -> Result<GuestWalk, WalkError> {
    let regs = PagingRegs {
        cr0: cpu.cr0,
        cr4: cpu.cr4,
        efer: cpu.efer,
    };
    let role = cpu_role(&regs, false, false);
    let perms = Permissions::for_role(&role);
    walk(mem, &role, &perms, &request(cpu, gva, &access))
}

fn fault(code: u64) -> Result<GuestWalk, WalkError> {
    Err(WalkError::PageFault {
        error_code: code as u32,
    })
}

/// gva of 4-level indices (l4, l3, l2, l1) and offset.
fn gva4(l4: u64, l3: u64, l2: u64, l1: u64, offset: u64) -> u64 {
    (l4 << 39) | (l3 << 30) | (l2 << 21) | (l1 << 12) | offset
}

/// A 4-level hierarchy PML4 0x1000 -> PDPT 0x2000 -> PD 0x3000 -> PT 0x4000 for
/// gva4(1, 2, 3, 4, _), with `leaf` in the PT and `upper` flags on the directories.
fn four_level(ram: &Ram, upper: u64, leaf: u64) {
    ram.write(0x1000 + 8, 8, 0x2000 | upper);
    ram.write(0x2000 + 16, 8, 0x3000 | upper);
    ram.write(0x3000 + 24, 8, 0x4000 | upper);
    ram.write(0x4000 + 32, 8, leaf);
}

// ----------------------------------------------------------------------------------
// Hand-written cases
// ----------------------------------------------------------------------------------

#[test]
fn four_level_write_sets_accessed_everywhere_and_dirty_on_the_leaf() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW | US, 0xABCD_E000 | P | RW | US);
    let cpu = Cpu::long4(0x1000);
    let w = module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0x123), user(write())).unwrap();
    assert_eq!(w.gpa, 0xABCD_E123);
    assert_eq!(w.level, 1);
    assert_eq!(w.levels, 4);
    assert_eq!(w.pte_access, ACC_USER_MASK | ACC_WRITE_MASK | ACC_EXEC_MASK);
    assert!(w.dirty);
    assert_eq!(w.table_gfns[..4], [4, 3, 2, 1]);
    assert_eq!(w.gpte_gpas[..4], [0x4020, 0x3018, 0x2010, 0x1008]);
    // The entries as read, before the A/D update.
    assert_eq!(w.gptes[3], 0x2000 | P | RW | US);
    for gpa in [0x1008, 0x2010, 0x3018] {
        assert_eq!(
            ram.read(gpa, 8).unwrap() & (A | D),
            A,
            "directory at {gpa:#x}"
        );
    }
    assert_eq!(ram.read(0x4020, 8).unwrap() & (A | D), A | D);
}

#[test]
fn read_sets_accessed_but_not_dirty() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW, 0x5000 | P | RW);
    let cpu = Cpu::long4(0x1000);
    let w = module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 8), read()).unwrap();
    assert_eq!(w.gpa, 0x5008);
    assert!(!w.dirty, "a clean leaf stays clean on a read");
    assert_eq!(ram.read(0x4020, 8).unwrap(), 0x5000 | P | RW | A);
    // A leaf already dirty reports so.
    ram.write(0x4020, 8, 0x5000 | P | RW | A | D);
    assert!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 8), read())
            .unwrap()
            .dirty
    );
}

#[test]
fn pt_access_accumulates_down_the_levels() {
    let ram = Ram::new(8);
    ram.write(0x1008, 8, 0x2000 | P | RW | US);
    ram.write(0x2010, 8, 0x3000 | P | US | XD);
    ram.write(0x3018, 8, 0x4000 | P | RW | US);
    ram.write(0x4020, 8, 0x5000 | P | RW);
    let w = module_walk(&ram, &Cpu::long4(0x1000), gva4(1, 2, 3, 4, 0), read()).unwrap();
    assert_eq!(
        w.pt_access[3],
        ACC_USER_MASK | ACC_WRITE_MASK | ACC_EXEC_MASK
    );
    assert_eq!(w.pt_access[2], ACC_USER_MASK);
    assert_eq!(w.pt_access[1], ACC_USER_MASK);
    assert_eq!(w.pt_access[0], 0);
    assert_eq!(w.pte_access, 0);
}

#[test]
fn faulting_walks_write_nothing() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW, 0x5000 | P | RW);
    let before = ram.image();
    let cpu = Cpu::long4(0x1000);
    // User access to a supervisor page: a protection fault, P|U.
    let got = module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), user(read()));
    assert_eq!(got, fault(pfec::P | pfec::U));
    assert!(
        ram.image() == before,
        "no A/D bit may be set by a faulting walk"
    );
    // Not present at the leaf: error code carries only the access bits.
    ram.write(0x4020, 8, 0x5000 | RW);
    let before = ram.image();
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), write()),
        fault(pfec::W)
    );
    assert!(ram.image() == before);
}

#[test]
fn not_present_beats_an_upper_level_permission_problem() {
    // The walk ends at the first non-present entry; permissions are judged only on a
    // complete translation (SDM 4.7: P=0 for a non-present page).
    let ram = Ram::new(8);
    four_level(&ram, P, 0x5000);
    let got = module_walk(
        &ram,
        &Cpu::long4(0x1000),
        gva4(1, 2, 3, 4, 0),
        user(write()),
    );
    assert_eq!(got, fault(pfec::W | pfec::U));
}

#[test]
fn large_pages_2m_and_1g() {
    let ram = Ram::new(8);
    let cpu = Cpu::long4(0x1000);
    ram.write(0x1008, 8, 0x2000 | P | RW);
    ram.write(0x2010, 8, 0x3000 | P | RW);
    // 2 MiB page at 0x1_2340_0000 (bit 12 = PAT is allowed).
    ram.write(0x3018, 8, 0x1_2340_0000 | (1 << 12) | P | RW | PS);
    let w = module_walk(&ram, &cpu, gva4(1, 2, 3, 0x1F, 0xABC), write()).unwrap();
    assert_eq!(w.level, 2);
    assert_eq!(w.gpa, 0x1_2340_0000 + (0x1F << 12) + 0xABC);
    assert_eq!(ram.read(0x3018, 8).unwrap() & (A | D), A | D);
    // Bits 20:13 of a 2 MiB PDE are reserved.
    ram.write(0x3018, 8, 0x1_2340_0000 | (1 << 13) | P | RW | PS);
    let got = module_walk(&ram, &cpu, gva4(1, 2, 3, 0, 0), write());
    assert_eq!(got, fault(pfec::P | pfec::RSVD | pfec::W));

    // 1 GiB page, with 1 GiB pages in CPUID.
    ram.write(0x2010, 8, (0x40_0000_0000 - 0x4000_0000) | P | RW | PS);
    let w = module_walk(&ram, &cpu, gva4(1, 2, 5, 6, 7), read()).unwrap();
    assert_eq!(w.level, 3);
    assert_eq!(w.gpa, 0x3F_C000_0000 + (5 << 21) + (6 << 12) + 7);
    // Without them, PS in a PDPTE is a reserved bit.
    let no_gb = Cpu {
        gbpages: false,
        ..cpu
    };
    let got = module_walk(&ram, &no_gb, gva4(1, 2, 5, 6, 7), user(fetch()));
    assert_eq!(got, fault(pfec::P | pfec::RSVD | pfec::U | pfec::FETCH));
    // Bits 29:13 of a 1 GiB PDPTE are reserved.
    ram.write(0x2010, 8, 0x4000_0000 | (1 << 29) | P | RW | PS);
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 0, 0, 0), read()),
        fault(pfec::P | pfec::RSVD)
    );
}

#[test]
fn reserved_bits_above_maxphyaddr_and_ps_in_pml4e() {
    let ram = Ram::new(8);
    let cpu = Cpu::long4(0x1000);
    four_level(&ram, P | RW, 0x5000 | P | RW | (1 << 40));
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), read()),
        fault(pfec::P | pfec::RSVD)
    );
    // Bit 39 is an address bit with MAXPHYADDR 40.
    four_level(&ram, P | RW, (1 << 39) | 0x5000 | P | RW);
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), read())
            .unwrap()
            .gpa,
        (1 << 39) | 0x5000
    );
    // Bits 58:52 are ignored in 4-level paging.
    four_level(&ram, P | RW | (0x7F << 52), 0x5000 | P | RW);
    assert!(module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), read()).is_ok());
    // PS is reserved in a PML4E.
    four_level(&ram, P | RW, 0x5000 | P | RW);
    ram.write(0x1008, 8, 0x2000 | P | RW | PS);
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), read()),
        fault(pfec::P | pfec::RSVD)
    );
}

#[test]
fn nx_is_reserved_without_efer_nx_and_faults_fetches_with_it() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW, 0x5000 | P | RW | XD);
    let nx = Cpu::long4(0x1000);
    let no_nx = Cpu {
        efer: EFER_LONG,
        ..nx
    };
    assert_eq!(
        module_walk(&ram, &nx, gva4(1, 2, 3, 4, 0), fetch()),
        fault(pfec::P | pfec::FETCH)
    );
    assert!(module_walk(&ram, &nx, gva4(1, 2, 3, 4, 0), read()).is_ok());
    // Without EFER.NX the XD bit is reserved; a fetch reports I/D only with SMEP.
    assert_eq!(
        module_walk(&ram, &no_nx, gva4(1, 2, 3, 4, 0), fetch()),
        fault(pfec::P | pfec::RSVD)
    );
    let smep = Cpu {
        cr4: CR4_PAE | CR4_SMEP,
        ..no_nx
    };
    assert_eq!(
        module_walk(&ram, &smep, gva4(1, 2, 3, 4, 0), fetch()),
        fault(pfec::P | pfec::RSVD | pfec::FETCH)
    );
}

#[test]
fn thirty_two_bit_paging_4k_and_pse_4m() {
    let ram = Ram::new(8);
    // PD at 0x1000; gva 0x0040_2123: PDE 1, PTE 2.
    ram.write(0x1004, 4, 0x2000 | P | RW | US);
    ram.write(0x2008, 4, 0x7000 | P | RW | US);
    let cpu = Cpu::bits32(0x1000, true);
    let w = module_walk(&ram, &cpu, 0x0040_2123, user(write())).unwrap();
    assert_eq!((w.gpa, w.level, w.levels), (0x7123, 1, 2));
    assert_eq!(ram.read(0x1004, 4).unwrap(), 0x2000 | P | RW | US | A);
    assert_eq!(ram.read(0x2008, 4).unwrap(), 0x7000 | P | RW | US | A | D);
    // Only bits 31:0 of the linear address count.
    assert_eq!(
        module_walk(&ram, &cpu, 0xFFFF_FFFF_0040_2123, read())
            .unwrap()
            .gpa,
        0x7123
    );

    // 4 MiB page: PA 31:22 from bits 31:22, PA 39:32 from bits 20:13.
    ram.write(0x1008, 4, 0x0840_0000 | (0x5A << 13) | P | RW | PS);
    let w = module_walk(&ram, &cpu, 0x0092_3456, write()).unwrap();
    assert_eq!((w.gpa, w.level), (0x5A_0852_3456, 2));
    assert_eq!(ram.read(0x1008, 4).unwrap() & (A | D), A | D);
    // Bit 21 is reserved.
    ram.write(0x1008, 4, 0x0840_0000 | (1 << 21) | P | RW | PS);
    assert_eq!(
        module_walk(&ram, &cpu, 0x0092_3456, read()),
        fault(pfec::P | pfec::RSVD)
    );
    // With CR4.PSE=0 the PS bit is ignored: the PDE references a page table.
    ram.write(0x1008, 4, 0x2000 | P | RW | PS);
    let no_pse = Cpu::bits32(0x1000, false);
    assert_eq!(
        module_walk(&ram, &no_pse, 0x0080_2123, read()).unwrap().gpa,
        0x7123
    );
}

#[test]
fn thirty_two_bit_fetch_reports_id_only_with_smep() {
    // SDM 4.7: I/D needs SMEP, or PAE-format entries with NXE; 32-bit paging has no XD.
    let ram = Ram::new(8);
    let nxe = Cpu {
        efer: EFER_NX,
        ..Cpu::bits32(0x1000, false)
    };
    assert_eq!(module_walk(&ram, &nxe, 0x1000, fetch()), fault(0));
    let smep = Cpu {
        cr4: CR4_SMEP,
        ..nxe
    };
    assert_eq!(
        module_walk(&ram, &smep, 0x1000, fetch()),
        fault(pfec::FETCH)
    );
    // And everything present is executable, whatever EFER.NX.
    ram.write(0x1000, 4, 0x2000 | P | RW);
    ram.write(0x2004, 4, 0x3000 | P | RW);
    let w = module_walk(&ram, &nxe, 0x1000, fetch()).unwrap();
    assert_eq!(w.pte_access, ACC_WRITE_MASK | ACC_EXEC_MASK);
}

#[test]
fn pae_pdptes() {
    let ram = Ram::new(8);
    // PDPT at 0x1fe0 (32-byte aligned), PDPTE 2 -> PD at 0x3000 -> 2 MiB page.
    let cpu = Cpu::pae(0x1FE0);
    ram.write(0x1FE0 + 16, 8, 0x3000 | P);
    ram.write(0x3000 + 8 * 5, 8, 0x0060_0000 | P | RW | US | PS);
    let gva = (2 << 30) | (5 << 21) | 0x1234;
    let w = module_walk(&ram, &cpu, gva, user(write())).unwrap();
    assert_eq!((w.gpa, w.level, w.levels), (0x0060_1234, 2, 3));
    assert_eq!(w.gpte_gpas[2], 0x1FF0);
    assert_eq!(w.table_gfns[2], 1);
    // PDPTEs have no A bit: untouched.
    assert_eq!(ram.read(0x1FF0, 8).unwrap(), 0x3000 | P);
    assert_eq!(ram.read(0x3028, 8).unwrap() & (A | D), A | D);
    // Not present PDPTE.
    assert_eq!(module_walk(&ram, &cpu, 3 << 30, read()), fault(0));
    // R/W is reserved in a PDPTE, as are bits 8:5 and 63:M.
    for bad in [RW, US, A, 1 << 8, 1 << 40, XD] {
        ram.write(0x1FF0, 8, 0x3000 | P | bad);
        assert_eq!(
            module_walk(&ram, &cpu, gva, read()),
            fault(pfec::P | pfec::RSVD),
            "{bad:#x}"
        );
    }
    // In PAE paging, bits 62:M of a PDE are reserved (not ignored as in 4-level).
    ram.write(0x1FF0, 8, 0x3000 | P);
    ram.write(0x3028, 8, 0x0060_0000 | P | RW | PS | (1 << 55));
    assert_eq!(
        module_walk(&ram, &cpu, gva, read()),
        fault(pfec::P | pfec::RSVD)
    );
}

#[test]
fn pae_walk_with_loaded_pdptes_ignores_the_pdpt_in_memory() {
    let ram = Ram::new(8);
    let cpu = Cpu::pae(0x1FE0);
    // Memory says PDPTE 0 -> 0x3000; the registers, loaded earlier, say 0x4000.
    ram.write(0x1FE0, 8, 0x3000 | P);
    ram.write(0x3000, 8, 0x5000 | P | RW);
    ram.write(0x4000, 8, 0x6000 | P | RW);
    ram.write(0x5000, 8, 0x7000 | P | RW);
    ram.write(0x6000, 8, 0x8000 | P | RW);
    let regs = PagingRegs {
        cr0: cpu.cr0,
        cr4: cpu.cr4,
        efer: cpu.efer,
    };
    let role = cpu_role(&regs, false, false);
    let perms = Permissions::for_role(&role);
    let req = request(&cpu, 0x10, &read());
    assert_eq!(walk(&ram, &role, &perms, &req).unwrap().gpa, 0x7010);
    let loaded = [0x4000 | P, 0, 0, 0];
    let w = walk_with_pdptes(&ram, &role, &perms, &req, &loaded).unwrap();
    assert_eq!(w.gpa, 0x8010);
    assert_eq!((w.gptes[2], w.gpte_gpas[2]), (0x4000 | P, 0x1FE0));
    // A not-present loaded PDPTE faults even though memory has a present one.
    let req = request(&cpu, 1 << 30, &write());
    ram.write(0x1FE8, 8, 0x3000 | P);
    assert_eq!(
        walk_with_pdptes(&ram, &role, &perms, &req, &loaded),
        fault(pfec::W)
    );
    // Outside PAE paging the loaded PDPTEs mean nothing.
    four_level(&ram, P | RW, 0x5000 | P | RW);
    let long = Cpu::long4(0x1000);
    let regs = PagingRegs {
        cr0: long.cr0,
        cr4: long.cr4,
        efer: long.efer,
    };
    let role = cpu_role(&regs, false, false);
    let perms = Permissions::for_role(&role);
    let req = request(&long, gva4(1, 2, 3, 4, 0), &read());
    assert_eq!(
        walk_with_pdptes(&ram, &role, &perms, &req, &[0; 4])
            .unwrap()
            .gpa,
        0x5000
    );
}

#[test]
fn five_level_walk() {
    let ram = Ram::new(8);
    let cpu = Cpu {
        cr4: CR4_PAE | CR4_LA57,
        ..Cpu::long4(0x6000)
    };
    ram.write(0x6000 + 8 * 3, 8, 0x1000 | P | RW);
    four_level(&ram, P | RW, 0x9000 | P | RW);
    let gva = (3 << 48) | gva4(1, 2, 3, 4, 0x10);
    let w = module_walk(&ram, &cpu, gva, write()).unwrap();
    assert_eq!((w.gpa, w.levels), (0x9010, 5));
    assert_eq!(ram.read(0x6018, 8).unwrap() & A, A);
}

#[test]
fn wp0_lets_supervisor_write_read_only_pages() {
    let ram = Ram::new(8);
    four_level(&ram, P | US, 0x5000 | P | US);
    let wp0 = Cpu {
        cr0: CR0_PE | CR0_PG,
        ..Cpu::long4(0x1000)
    };
    let w = module_walk(&ram, &wp0, gva4(1, 2, 3, 4, 0), write()).unwrap();
    assert_eq!(
        w.pte_access & ACC_WRITE_MASK,
        0,
        "the page itself stays read-only"
    );
    assert_eq!(ram.read(0x4020, 8).unwrap() & D, D);
    // Not for user writes.
    assert_eq!(
        module_walk(&ram, &wp0, gva4(1, 2, 3, 4, 0), user(write())),
        fault(pfec::P | pfec::W | pfec::U)
    );
    // With SMAP the same supervisor write to a user page faults unless AC.
    let smap = Cpu {
        cr4: CR4_PAE | CR4_SMAP,
        ..wp0
    };
    assert_eq!(
        module_walk(&ram, &smap, gva4(1, 2, 3, 4, 0), write()),
        fault(pfec::P | pfec::W)
    );
    let ac = RefAccess {
        ac: true,
        ..write()
    };
    assert!(module_walk(&ram, &smap, gva4(1, 2, 3, 4, 0), ac).is_ok());
}

#[test]
fn protection_key_of_the_leaf() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW | US, 0x5000 | P | RW | US | (9 << 59));
    let cpu = Cpu {
        cr4: CR4_PAE | CR4_PKE,
        ..Cpu::long4(0x1000)
    };
    let access = RefAccess {
        pkru: 1 << 18,
        ..user(read())
    };
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), access),
        fault(pfec::P | pfec::U | pfec::PK)
    );
    let other_key = RefAccess {
        pkru: 1 << 16,
        ..access
    };
    assert_eq!(
        module_walk(&ram, &cpu, gva4(1, 2, 3, 4, 0), other_key)
            .unwrap()
            .pkey,
        9
    );
}

#[test]
fn paging_off_is_identity() {
    let ram = Ram::new(1);
    let cpu = Cpu {
        cr0: CR0_PE,
        cr4: 0,
        efer: 0,
        cr3: 0,
        gbpages: false,
    };
    let w = module_walk(&ram, &cpu, 0x1234_5678, user(write())).unwrap();
    assert_eq!((w.gpa, w.level, w.levels), (0x1234_5678, 0, 0));
}

#[test]
fn table_outside_ram() {
    let ram = Ram::new(8);
    ram.write(0x1008, 8, 0x80_0000 | P | RW);
    let got = module_walk(&ram, &Cpu::long4(0x1000), gva4(1, 2, 0, 0, 0), read());
    assert_eq!(got, Err(WalkError::TableNotRam { gpa: 0x80_0010 }));
    let got = module_walk(&ram, &Cpu::long4(0x10_0000), 0, read());
    assert_eq!(got, Err(WalkError::TableNotRam { gpa: 0x10_0000 }));
}

#[test]
fn self_referencing_entry_used_at_every_level() {
    // PML4[0] points at the PML4 itself, so gva 0 uses that one entry at all four
    // levels (and maps the PML4 page). The first pass sets its A bit at level 4, which
    // makes the level-3 compare-and-exchange fail; the redone walk then only needs D.
    let ram = Ram::new(8);
    ram.write(0x1000, 8, 0x1000 | P | RW);
    let cpu = Cpu::long4(0x1000);
    let before = ram.clone();
    let w = module_walk(&ram, &cpu, 0x18, write()).unwrap();
    assert_eq!(w.gpa, 0x1018);
    assert_eq!(ram.read(0x1000, 8).unwrap(), 0x1000 | P | RW | A | D);
    compare_with_reference(&before, &cpu, 0x18, write(), Ok(w), &ram);
}

/// Guest memory where another agent changes the PTE between the walk's read and its
/// A/D update, once.
struct RacingRam {
    ram: Ram,
    raced: Cell<bool>,
    pte_gpa: u64,
    new_pte: u64,
}

impl GuestMemory for RacingRam {
    fn read_gpte(&self, gpa: u64, size: u8) -> Option<u64> {
        self.ram.read_gpte(gpa, size)
    }
    fn cmpxchg_gpte(&self, gpa: u64, size: u8, old: u64, new: u64) -> Option<bool> {
        if !self.raced.replace(true) {
            self.ram.write(self.pte_gpa, 8, self.new_pte);
        }
        self.ram.cmpxchg_gpte(gpa, size, old, new)
    }
}

#[test]
fn a_lost_race_redoes_the_walk() {
    let ram = Ram::new(8);
    // The directories already have A set, so the first compare-and-exchange is the PTE's.
    four_level(&ram, P | RW | A, 0x5000 | P | RW);
    let racing = RacingRam {
        ram,
        raced: Cell::new(false),
        pte_gpa: 0x4020,
        new_pte: 0x6000,
    };
    let cpu = Cpu::long4(0x1000);
    // Another vCPU unmapped the page: the redone walk sees it not present.
    let got = module_walk(&racing, &cpu, gva4(1, 2, 3, 4, 0), write());
    assert_eq!(got, fault(pfec::W));
    assert_eq!(racing.ram.read(0x4020, 8).unwrap(), 0x6000);

    // Another vCPU remapped it: the redone walk translates to the new page.
    let ram = Ram::new(8);
    four_level(&ram, P | RW | A, 0x5000 | P | RW);
    let racing = RacingRam {
        ram,
        raced: Cell::new(false),
        pte_gpa: 0x4020,
        new_pte: 0x7000 | P | RW,
    };
    let w = module_walk(&racing, &cpu, gva4(1, 2, 3, 4, 0), write()).unwrap();
    assert_eq!(w.gpa, 0x7000);
    assert_eq!(racing.ram.read(0x4020, 8).unwrap(), 0x7000 | P | RW | A | D);
}

/// Guest memory whose entries always change before the update lands.
struct AlwaysChanging {
    ram: Ram,
    attempts: Cell<usize>,
}

impl GuestMemory for AlwaysChanging {
    fn read_gpte(&self, gpa: u64, size: u8) -> Option<u64> {
        self.ram.read_gpte(gpa, size)
    }
    fn cmpxchg_gpte(&self, _gpa: u64, _size: u8, _old: u64, _new: u64) -> Option<bool> {
        self.attempts.set(self.attempts.get() + 1);
        Some(false)
    }
}

#[test]
fn endless_races_give_retry_not_a_hang() {
    let ram = Ram::new(8);
    four_level(&ram, P | RW, 0x5000 | P | RW);
    let mem = AlwaysChanging {
        ram,
        attempts: Cell::new(0),
    };
    let got = module_walk(&mem, &Cpu::long4(0x1000), gva4(1, 2, 3, 4, 0), write());
    assert_eq!(got, Err(WalkError::Retry));
    assert_eq!(mem.attempts.get(), MAX_WALK_ATTEMPTS);
}

// ----------------------------------------------------------------------------------
// Property test against the reference walker
// ----------------------------------------------------------------------------------

/// Compare one module walk with the reference walk on the memory `before` it; `after`
/// is the module's memory after its walk. Applies the reference's A/D writes to
/// `before` and checks both memories are equal.
fn compare_with_reference(
    before: &Ram,
    cpu: &Cpu,
    gva: u64,
    access: RefAccess,
    got: Result<GuestWalk, WalkError>,
    after: &Ram,
) {
    let expected = reference_walk(
        &|gpa, size| before.read(gpa, size),
        cpu.ref_regs(),
        gva,
        access,
    );
    let ctx = || {
        format!(
            "cpu={cpu:x?} gva={gva:#x} access={access:?}\nmodule={got:x?}\nreference={expected:x?}"
        )
    };
    match (&got, &expected) {
        (Err(WalkError::PageFault { error_code }), RefOutcome::Fault { error_code: want }) => {
            assert_eq!(error_code, want, "error code\n{}", ctx());
        }
        (Err(WalkError::TableNotRam { gpa }), RefOutcome::NotRam { gpa: want }) => {
            assert_eq!(gpa, want, "{}", ctx());
        }
        (Ok(w), RefOutcome::Ok(t)) => {
            assert_eq!(w.gpa, t.gpa, "gpa\n{}", ctx());
            assert_eq!(w.level, t.level, "level\n{}", ctx());
            assert_eq!(
                w.pte_access & ACC_WRITE_MASK != 0,
                t.writable,
                "W\n{}",
                ctx()
            );
            assert_eq!(w.pte_access & ACC_USER_MASK != 0, t.user, "U\n{}", ctx());
            assert_eq!(
                w.pte_access & ACC_EXEC_MASK != 0,
                t.executable,
                "X\n{}",
                ctx()
            );
            assert_eq!(w.pkey, t.pkey, "pkey\n{}", ctx());
            // The entries recorded for the shadow MMU are the ones the SDM walk used.
            if t.level > 0 {
                let top =
                    if t.entry_size == 8 && cpu.cr4 & CR4_PAE != 0 && cpu.efer & (1 << 10) == 0 {
                        2
                    } else {
                        w.levels
                    };
                let recorded: Vec<u64> = (w.level..=top)
                    .rev()
                    .map(|l| w.gpte_gpas[l as usize - 1])
                    .collect();
                assert_eq!(recorded, t.accessed_set, "entries used\n{}", ctx());
            }
            t.apply_accessed_dirty(|gpa, size, bits| before.set_bits(gpa, size, bits));
            if t.level > 0 {
                let leaf = *t.accessed_set.last().unwrap();
                let dirty_now = before.read(leaf, t.entry_size).unwrap() & D != 0;
                assert_eq!(w.dirty, dirty_now, "dirty\n{}", ctx());
            }
        }
        _ => panic!("outcomes differ\n{}", ctx()),
    }
    assert!(
        before.image() == after.image(),
        "A/D bits written differ\n{}",
        ctx()
    );
}

/// splitmix64: a small deterministic generator for table contents, so that one proptest
/// seed describes a whole memory image.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Bits32,
    Bits32Pse,
    Pae,
    Long4,
    Long5,
}

/// Pages 0..TABLE_PAGES hold tables; the PAE PDPT lives alone in page PDPT_PAGE so that
/// no A/D write lands in it (hardware holds PDPTEs in registers, SDM 4.4.1); page
/// NOT_RAM_PAGE is outside guest RAM.
const TABLE_PAGES: u64 = 15;
const PDPT_PAGE: u64 = 15;
const RAM_PAGES: u64 = 16;
const NOT_RAM_PAGE: u64 = 0x40;

fn random_page(rng: &mut Rng) -> u64 {
    if rng.chance(4) {
        NOT_RAM_PAGE
    } else {
        rng.below(TABLE_PAGES)
    }
}

/// A random 8-byte entry: random flags, a table page, sometimes a large-page-shaped
/// address, sometimes one stray bit anywhere (reserved, ignored, key, XD ...).
fn random_entry64(rng: &mut Rng, long: bool) -> u64 {
    let mut e = random_page(rng) << 12;
    for (bit, percent) in [
        (P, 88),
        (RW, 70),
        (US, 70),
        (A, 50),
        (D, 40),
        (PS, 20),
        (XD, 20),
        (8, 10),
        (16, 10),
        (1 << 8, 20),
    ] {
        if rng.chance(percent) {
            e |= bit;
        }
    }
    if e & PS != 0 && rng.chance(75) {
        // Make it a well-formed large page most of the time: clear bits 29:13, keep
        // bit 12 (PAT), add high address bits.
        e &= !0x3FFF_E000;
        e |= rng.below(1 << 10) << 30;
    }
    if long && rng.chance(30) {
        e |= rng.below(16) << 59;
    }
    if rng.chance(10) {
        e |= 1 << rng.below(64);
    }
    e
}

fn random_entry32(rng: &mut Rng) -> u64 {
    let mut e = random_page(rng) << 12;
    for (bit, percent) in [
        (P, 88),
        (RW, 70),
        (US, 70),
        (A, 50),
        (D, 40),
        (PS, 25),
        (8, 10),
        (16, 10),
    ] {
        if rng.chance(percent) {
            e |= bit;
        }
    }
    if e & PS != 0 {
        // 4 MiB pages: PA 39:32 in bits 20:13, PA 31:22 in bits 31:22.
        e |= rng.below(256) << 13;
        e |= rng.below(1024) << 22;
        // Bit 21, the one reserved bit of a 4 MiB PDE with MAXPHYADDR 40.
        if rng.chance(8) {
            e |= 1 << 21;
        }
    }
    if rng.chance(10) {
        e |= 1 << rng.below(32);
    }
    e & 0xFFFF_FFFF
}

fn build(mode: Mode, seed: u64, cr3_slot: u64) -> (Ram, u64) {
    let mut rng = Rng(seed);
    let ram = Ram::new(RAM_PAGES);
    let size: u8 = if matches!(mode, Mode::Bits32 | Mode::Bits32Pse) {
        4
    } else {
        8
    };
    let long = matches!(mode, Mode::Long4 | Mode::Long5);
    for gpa in (0..TABLE_PAGES * PAGE).step_by(size as usize) {
        let e = if size == 4 {
            random_entry32(&mut rng)
        } else {
            random_entry64(&mut rng, long)
        };
        ram.write(gpa, size, e);
    }
    let cr3 = if mode == Mode::Pae {
        let pdpt = PDPT_PAGE * PAGE + 32 * (cr3_slot % 128);
        for i in 0..4 {
            let mut e = random_page(&mut rng) << 12;
            if rng.chance(90) {
                e |= P;
            }
            if rng.chance(15) {
                e |= 1 << rng.below(64);
            }
            ram.write(pdpt + 8 * i, 8, e);
        }
        // CR3 bits 4:0 and 63:32 are ignored by PAE paging.
        pdpt | (rng.below(32) & 0x18)
    } else {
        // Bits 11:0 are PCID or PWT/PCD, never address bits (SDM 4.3, 4.5.2).
        ((cr3_slot % TABLE_PAGES) * PAGE) | rng.below(PAGE)
    };
    (ram, cr3)
}

/// A linear address whose per-level indices are mostly small, so that accesses share
/// entries and tables.
fn random_gva(mode: Mode, seed: u64) -> u64 {
    let mut rng = Rng(seed);
    let mut index = |bits: u32| {
        if rng.chance(80) {
            rng.below(4)
        } else {
            rng.below(1 << bits)
        }
    };
    match mode {
        Mode::Bits32 | Mode::Bits32Pse => (index(10) << 22) | (index(10) << 12) | (seed >> 52),
        Mode::Pae => (index(2) << 30) | (index(9) << 21) | (index(9) << 12) | (seed >> 52),
        Mode::Long4 | Mode::Long5 => {
            let mut gva = 0;
            let levels = if mode == Mode::Long5 { 5 } else { 4 };
            for level in (1..=levels).rev() {
                gva |= index(9) << (12 + 9 * (level - 1));
            }
            gva |= seed >> 52;
            // Canonical: sign-extend from the top linear-address bit.
            let width = 12 + 9 * levels;
            ((gva << (64 - width)) as i64 >> (64 - width)) as u64
        }
    }
}

#[derive(Clone, Debug)]
struct Scenario {
    mode: Mode,
    seed: u64,
    cr3_slot: u64,
    wp: bool,
    nx: bool,
    smep: bool,
    smap: bool,
    pke: bool,
    gbpages: bool,
    accesses: Vec<(u64, u8, bool, bool, bool, u32)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let mode = prop_oneof![
        Just(Mode::Bits32),
        Just(Mode::Bits32Pse),
        Just(Mode::Pae),
        Just(Mode::Long4),
        Just(Mode::Long5),
    ];
    let access = (
        any::<u64>(),
        0u8..3,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        any::<u32>(),
    );
    (
        mode,
        any::<u64>(),
        any::<u64>(),
        prop::array::uniform6(any::<bool>()),
        prop::collection::vec(access, 1..10),
    )
        .prop_map(
            |(mode, seed, cr3_slot, [wp, nx, smep, smap, pke, gbpages], accesses)| Scenario {
                mode,
                seed,
                cr3_slot,
                wp,
                nx,
                smep,
                smap,
                pke,
                gbpages,
                accesses,
            },
        )
}

fn run_scenario(s: &Scenario) {
    let (ram, cr3) = build(s.mode, s.seed, s.cr3_slot);
    let mut cpu = Cpu {
        cr0: CR0_PE | CR0_PG,
        cr4: 0,
        efer: 0,
        cr3,
        gbpages: s.gbpages,
    };
    match s.mode {
        Mode::Bits32 => {}
        Mode::Bits32Pse => cpu.cr4 |= CR4_PSE,
        Mode::Pae => cpu.cr4 |= CR4_PAE,
        Mode::Long4 => {
            cpu.cr4 |= CR4_PAE;
            cpu.efer |= EFER_LONG;
        }
        Mode::Long5 => {
            cpu.cr4 |= CR4_PAE | CR4_LA57;
            cpu.efer |= EFER_LONG;
        }
    }
    for (on, bit) in [(s.wp, CR0_WP)] {
        if on {
            cpu.cr0 |= bit;
        }
    }
    for (on, bit) in [(s.smep, CR4_SMEP), (s.smap, CR4_SMAP), (s.pke, CR4_PKE)] {
        if on {
            cpu.cr4 |= bit;
        }
    }
    if s.nx {
        cpu.efer |= EFER_NX;
    }
    let reference = ram.clone();
    for &(gva_seed, kind, cpl3, implicit, ac, pkru) in &s.accesses {
        let kind = [RefKind::Read, RefKind::Write, RefKind::Fetch][kind as usize];
        let access = RefAccess {
            kind,
            cpl: if cpl3 { 3 } else { 0 },
            // Instruction fetches are never implicit supervisor accesses.
            implicit: implicit && kind != RefKind::Fetch,
            ac,
            pkru,
        };
        let gva = random_gva(s.mode, gva_seed);
        let got = if s.mode == Mode::Pae && gva_seed & 1 == 1 {
            // PDPTEs loaded from the (unchanging) PDPT must translate the same.
            let pdpt = cpu.cr3 & 0xFFFF_FFE0;
            let loaded: [u64; 4] =
                core::array::from_fn(|i| ram.read(pdpt + 8 * i as u64, 8).unwrap());
            let regs = PagingRegs {
                cr0: cpu.cr0,
                cr4: cpu.cr4,
                efer: cpu.efer,
            };
            let role = cpu_role(&regs, false, false);
            let perms = Permissions::for_role(&role);
            walk_with_pdptes(&ram, &role, &perms, &request(&cpu, gva, &access), &loaded)
        } else {
            module_walk(&ram, &cpu, gva, access)
        };
        compare_with_reference(&reference, &cpu, gva, access, got, &ram);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn walker_matches_the_sdm_reference(s in scenario()) {
        run_scenario(&s);
    }
}

#[test]
fn property_generator_reaches_every_outcome() {
    // Guard against a generator that only ever produces faults: over a fixed set of
    // seeds, every mode must produce translations, not-present faults, reserved-bit
    // faults and protection faults.
    for mode in [
        Mode::Bits32,
        Mode::Bits32Pse,
        Mode::Pae,
        Mode::Long4,
        Mode::Long5,
    ] {
        let (mut ok, mut not_present, mut reserved, mut protection, mut large) = (0, 0, 0, 0, 0);
        for seed in 0..64u64 {
            let (ram, cr3) = build(mode, seed, seed);
            let cpu = match mode {
                Mode::Bits32 => Cpu::bits32(cr3, false),
                Mode::Bits32Pse => Cpu::bits32(cr3, true),
                Mode::Pae => Cpu::pae(cr3),
                Mode::Long4 => Cpu::long4(cr3),
                Mode::Long5 => Cpu {
                    cr4: CR4_PAE | CR4_LA57,
                    ..Cpu::long4(cr3)
                },
            };
            for g in 0..16 {
                let gva = random_gva(mode, seed * 16 + g);
                // Alternate the most and the least restricted access.
                let access = if g % 2 == 0 { user(write()) } else { read() };
                let r = reference_walk(
                    &|gpa, size| ram.read(gpa, size),
                    cpu.ref_regs(),
                    gva,
                    access,
                );
                match r {
                    RefOutcome::Ok(t) => {
                        ok += 1;
                        if t.level > 1 {
                            large += 1;
                        }
                    }
                    RefOutcome::Fault { error_code } if error_code & 1 == 0 => not_present += 1,
                    RefOutcome::Fault { error_code } if error_code & 8 != 0 => reserved += 1,
                    RefOutcome::Fault { .. } => protection += 1,
                    RefOutcome::NotRam { .. } => {}
                }
            }
        }
        assert!(
            ok > 10 && not_present > 5 && protection > 10,
            "{mode:?}: ok={ok} np={not_present} rsvd={reserved} prot={protection}"
        );
        // 32-bit paging without PSE has no reserved bits and no large pages.
        if mode != Mode::Bits32 {
            assert!(reserved > 2, "{mode:?}: rsvd={reserved}");
            assert!(large > 2, "{mode:?}: large={large}");
        }
    }
}

/// Guest RAM filled with arbitrary bytes.
fn noise_ram(seed: u64) -> Ram {
    let mut rng = Rng(seed);
    let ram = Ram::new(4);
    for gpa in (0..4 * PAGE).step_by(8) {
        // Keep many entries pointing back into the 4 pages so walks go deep.
        let e = rng.next();
        let e = if rng.chance(50) {
            e & !(0xFFFF_FFFF_FFFF_F000 & !0x3000)
        } else {
            e
        };
        ram.write(gpa, 8, e);
    }
    ram
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// No register value, role word, table content or request makes the walker panic
    /// (tests run with overflow checks on), and the walk's arrays stay in range.
    #[test]
    fn walker_is_total(
        cr0 in any::<u64>(),
        cr4 in any::<u64>(),
        efer in any::<u64>(),
        raw_role in any::<(u32, u32)>(),
        seed in any::<u64>(),
        cr3 in any::<u64>(),
        gva in any::<u64>(),
        access in any::<u64>(),
        ac in any::<bool>(),
        pkru in any::<u32>(),
        gbpages in any::<bool>(),
    ) {
        use mmu_server::role::{CpuRole, ExtendedRole, PageRole};
        let ram = noise_ram(seed);
        let req = WalkRequest { cr3: cr3 & 0x3FFF, gva, pfec: access, rflags_ac: ac, pkru, gbpages };
        let from_regs = cpu_role(&PagingRegs { cr0, cr4, efer }, false, false);
        let raw = CpuRole { base: PageRole(raw_role.0), ext: ExtendedRole(raw_role.1) };
        for role in [from_regs, raw] {
            let perms = Permissions::for_role(&role);
            if let Ok(w) = walk(&ram, &role, &perms, &req) {
                prop_assert!(w.levels <= 5 && w.level <= w.levels);
                prop_assert!(w.pte_access <= 7);
            }
            let far = WalkRequest { cr3, ..req };
            let _ = walk(&ram, &role, &perms, &far);
        }
    }
}
