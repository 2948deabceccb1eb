//! A small hand-built 4-level world for the TLB tests: guest tables in a pool of
//! host-physical pages, optionally behind an EPT that maps the pool 1:1 and data pages
//! wherever a test asks. Tests change entries behind the TLB's back and check which
//! operation makes the change visible.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ptr::NonNull;

use vcpu::paging::{Access, AccessKind, PagingContext};

pub const POOL: u64 = 0x10_0000;
pub const POOL_PAGES: u64 = 96;

pub const P: u64 = 1;
pub const RW: u64 = 2;
pub const US: u64 = 4;
pub const A: u64 = 1 << 5;
pub const D: u64 = 1 << 6;
pub const PS: u64 = 1 << 7;
pub const G: u64 = 1 << 8;

pub const CR0_PE: u64 = 1;
pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const EFER_LME_LMA_NXE: u64 = (1 << 8) | (1 << 10) | (1 << 11);

pub const READ: Access = Access {
    kind: AccessKind::Read,
    implicit_supervisor: false,
};
pub const WRITE: Access = Access {
    kind: AccessKind::Write,
    implicit_supervisor: false,
};
pub const FETCH: Access = Access {
    kind: AccessKind::Fetch,
    implicit_supervisor: false,
};

pub struct Fixture {
    pub ram: Box<[u64]>,
    pub map: physmem::PhysMap,
    next_page: u64,
    /// (table hpa, index) -> next table hpa, for the guest tables.
    links: HashMap<(u64, u64), u64>,
    /// EPT root hpa, when EPT is on.
    pub ept_root: Option<u64>,
    ept_links: HashMap<(u64, u64), u64>,
}

impl Fixture {
    pub fn new(with_ept: bool) -> Fixture {
        let mut ram = vec![0u64; (POOL_PAGES * 512) as usize].into_boxed_slice();
        let mut map = physmem::PhysMap::new();
        let base = NonNull::new(ram.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the boxed slice never moves and lives as long as the fixture (the
        // map is dropped with it).
        unsafe { map.add_region(POOL, base, POOL_PAGES * 4096, true).unwrap() };
        let mut f = Fixture {
            ram,
            map,
            next_page: 0,
            links: HashMap::new(),
            ept_root: None,
            ept_links: HashMap::new(),
        };
        if with_ept {
            f.ept_root = Some(f.alloc());
            // Every pool page at gpa = hpa, RWX, WB: guest tables are reachable.
            for i in 0..POOL_PAGES {
                let a = POOL + i * 4096;
                f.ept_map(a, a, 7);
            }
        }
        f
    }

    pub fn alloc(&mut self) -> u64 {
        let a = POOL + self.next_page * 4096;
        self.next_page += 1;
        assert!(self.next_page <= POOL_PAGES, "fixture pool exhausted");
        a
    }

    pub fn r64(&self, hpa: u64) -> u64 {
        self.map.read_u64(hpa).unwrap()
    }
    pub fn w64(&self, hpa: u64, v: u64) {
        self.map.write_u64(hpa, v).unwrap()
    }

    /// A new, empty guest root (CR3 value without PCID bits).
    pub fn new_root(&mut self) -> u64 {
        self.alloc()
    }

    /// The hpa of the entry for `linear` at `level` (1 = PTE) under `root`, creating
    /// the tables above it (all P|RW|US|A so that only the leaf decides).
    pub fn entry_hpa(&mut self, root: u64, linear: u64, level: u32) -> u64 {
        let mut table = root;
        for l in (level + 1..=4).rev() {
            let idx = (linear >> (12 + 9 * (l - 1))) & 511;
            table = match self.links.get(&(table, idx)) {
                Some(&t) => t,
                None => {
                    let t = self.alloc();
                    self.w64(table + idx * 8, t | P | RW | US | A);
                    self.links.insert((table, idx), t);
                    t
                }
            };
        }
        table + ((linear >> (12 + 9 * (level - 1))) & 511) * 8
    }

    /// Maps the 4K page at `linear` to guest-physical `frame` with `flags`.
    pub fn map4k(&mut self, root: u64, linear: u64, frame: u64, flags: u64) -> u64 {
        let e = self.entry_hpa(root, linear, 1);
        self.w64(e, frame | flags);
        e
    }

    /// Maps the 2M page at `linear` to `frame` (2M aligned) with `flags`.
    pub fn map2m(&mut self, root: u64, linear: u64, frame: u64, flags: u64) -> u64 {
        let e = self.entry_hpa(root, linear, 2);
        self.w64(e, frame | flags | PS);
        e
    }

    /// EPT: maps the 4K guest-physical page `gpa` to `hpa` with R/W/X `rights`
    /// (memory type WB). Returns the leaf's hpa.
    pub fn ept_map(&mut self, gpa: u64, hpa: u64, rights: u64) -> u64 {
        let mut table = self.ept_root.expect("EPT fixture");
        for l in (2..=4).rev() {
            let idx = (gpa >> (12 + 9 * (l - 1))) & 511;
            table = match self.ept_links.get(&(table, idx)) {
                Some(&t) => t,
                None => {
                    let t = self.alloc();
                    self.w64(table + idx * 8, t | 7);
                    self.ept_links.insert((table, idx), t);
                    t
                }
            };
        }
        let leaf = table + ((gpa >> 12) & 511) * 8;
        self.w64(leaf, hpa | rights | (6 << 3));
        leaf
    }

    pub fn eptp(&self) -> Option<u64> {
        self.ept_root.map(|r| r | 6 | (3 << 3))
    }

    /// A 4-level, CPL-0 context with WP and NXE, VPID 1.
    pub fn ctx(&self, root: u64) -> PagingContext {
        PagingContext {
            cr0: CR0_PE | CR0_PG | CR0_WP,
            cr3: root,
            cr4: CR4_PAE,
            efer: EFER_LME_LMA_NXE,
            pdptes: [0; 4],
            cpl: 0,
            rflags_ac: false,
            pkru: 0,
            eptp: self.eptp(),
            vpid: 1,
        }
    }
}
