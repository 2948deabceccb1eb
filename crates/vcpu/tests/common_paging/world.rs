//! Random page-table worlds for the paging tests: a pool of host-physical pages holding
//! guest paging structures (or shadow tables) and EPT tables, built by a small
//! allocator-style builder from a seed. The builder only *writes* tables; it never
//! translates. Both the model and the reference walker then read the same bytes.
#![allow(dead_code)]

use std::collections::HashMap;
use std::ptr::NonNull;

use super::RefMem;

/// Pool of page-table pages at hpa 0x20_0000 (2M aligned, so that a 2M EPT leaf maps a
/// 2M guest-physical region onto it and a 1G leaf with frame 0 covers it too).
pub const POOL_BASE: u64 = 0x20_0000;
pub const GUEST_PAGES: u64 = 32;
pub const EPT_PAGES: u64 = 32;
pub const POOL_PAGES: u64 = GUEST_PAGES + EPT_PAGES;

/// SplitMix64: a tiny deterministic generator driven by the proptest seed.
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// True with probability `pct`%.
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// The paging mode a world is built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorldMode {
    Off,
    Bits32 { pse: bool },
    Pae,
    Level4,
    Level5,
}

/// Host-physical memory backing both a `PhysMap` (for the model) and a copy for the
/// reference.
pub struct World {
    pub ram: Vec<u64>,
    pub rng: Rng,
    pub mode: WorldMode,
    pub nxe: bool,
    pub eptp: Option<u64>,
    pub cr3: u64,
    next_guest: u64,
    next_ept: u64,
    /// Guest table pages: gpa page -> hpa page.
    guest_tables: HashMap<u64, u64>,
    /// Guest-physical regions EPT maps: (base, size).
    ept_regions: Vec<(u64, u64)>,
    /// Entry hpa -> the gpa of the guest table it points to, for entries the builder
    /// wrote as non-leaf.
    guest_links: HashMap<u64, u64>,
    guest_leaves: Vec<u64>,
    ept_links: HashMap<u64, u64>,
}

impl World {
    pub fn new(seed: u64, mode: WorldMode, nxe: bool, ept: Option<bool>) -> World {
        let mut w = World {
            ram: vec![0; (POOL_PAGES * 512) as usize],
            rng: Rng(seed),
            mode,
            nxe,
            eptp: None,
            cr3: 0,
            next_guest: 0,
            next_ept: 0,
            guest_tables: HashMap::new(),
            ept_regions: Vec::new(),
            guest_links: HashMap::new(),
            guest_leaves: Vec::new(),
            ept_links: HashMap::new(),
        };
        if let Some(ad) = ept {
            let root = w.alloc_ept_page();
            // Memory type WB (6), walk length 4 (3 << 3) or sometimes 5, A/D in bit 6.
            let length = if w.rng.chance(20) { 4 << 3 } else { 3 << 3 };
            w.eptp = Some(root | 6 | length | if ad { 1 << 6 } else { 0 });
        }
        w
    }

    pub fn physmap(&mut self) -> physmem::PhysMap {
        let mut map = physmem::PhysMap::new();
        let base = NonNull::new(self.ram.as_mut_ptr().cast::<u8>()).unwrap();
        // SAFETY: the Vec outlives every use of the map in a test case and is only
        // accessed through the map (or after the model is done with it).
        unsafe {
            map.add_region(POOL_BASE, base, POOL_PAGES * 4096, true)
                .unwrap()
        };
        map
    }

    pub fn ref_mem(&self) -> RefMem {
        RefMem::new(POOL_BASE, self.ram.clone())
    }

    pub fn w64(&mut self, hpa: u64, v: u64) {
        self.ram[((hpa - POOL_BASE) / 8) as usize] = v;
    }
    pub fn r64(&self, hpa: u64) -> u64 {
        self.ram[((hpa - POOL_BASE) / 8) as usize]
    }
    pub fn w32(&mut self, hpa: u64, v: u32) {
        let q = &mut self.ram[((hpa - POOL_BASE) / 8) as usize];
        let shift = (hpa % 8) * 8;
        *q = (*q & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
    }

    fn alloc_ept_page(&mut self) -> u64 {
        let i = self.next_ept.min(EPT_PAGES - 1);
        self.next_ept += 1;
        POOL_BASE + (GUEST_PAGES + i) * 4096
    }

    /// A fresh guest table page (or, sometimes, one already in use: aliasing).
    fn alloc_guest_page(&mut self) -> u64 {
        if self.next_guest > 0 && (self.rng.chance(5) || self.next_guest >= GUEST_PAGES) {
            let i = self.rng.below(self.next_guest.min(GUEST_PAGES));
            return POOL_BASE + i * 4096;
        }
        let i = self.next_guest;
        self.next_guest += 1;
        POOL_BASE + i * 4096
    }

    fn overlaps(&self, base: u64, size: u64) -> bool {
        self.ept_regions
            .iter()
            .any(|&(b, s)| base < b + s && b < base + size)
    }

    /// Random EPT rights: mostly RWX, sometimes anything (0 = not present; W without R
    /// = misconfigured).
    fn ept_rights(&mut self) -> u64 {
        if self.rng.chance(88) {
            7
        } else {
            self.rng.below(8)
        }
    }

    /// Occasionally a reserved bit of an EPT entry at `level`.
    fn ept_noise(&mut self, level: u32, leaf: bool) -> u64 {
        if !self.rng.chance(3) {
            return 0;
        }
        let candidates: &[u32] = match (level, leaf) {
            (4 | 5, _) => &[3, 4, 5, 6, 7, 45, 51],
            (3, true) => &[13, 20, 29, 40],
            (2, true) => &[12, 16, 20, 44],
            (_, false) => &[3, 5, 6, 41],
            _ => &[40, 47],
        };
        1 << candidates[self.rng.below(candidates.len() as u64) as usize]
    }

    /// Maps the guest-physical region [gpa, gpa + 4K << 9*(level-1)) to hpa in EPT.
    fn ept_map(&mut self, gpa: u64, hpa: u64, level: u32) {
        let Some(eptp) = self.eptp else { return };
        let size = 4096u64 << (9 * (level - 1));
        if self.overlaps(gpa, size) {
            return;
        }
        self.ept_regions.push((gpa, size));
        let mut table = eptp & !0xfff;
        let ept_levels = ((eptp >> 3) & 7) as u32 + 1;
        for l in (level + 1..=ept_levels).rev() {
            let idx = (gpa >> (12 + 9 * (l - 1))) & 511;
            let entry_hpa = table + idx * 8;
            if let Some(&next) = self.ept_links.get(&entry_hpa) {
                table = next;
                continue;
            }
            let next = self.alloc_ept_page();
            let a = if self.rng.chance(50) { 1 << 8 } else { 0 };
            let e = next | self.ept_rights() | a | self.ept_noise(l, false);
            self.w64(entry_hpa, e);
            self.ept_links.insert(entry_hpa, next);
            table = next;
        }
        let idx = (gpa >> (12 + 9 * (level - 1))) & 511;
        let memtype = if self.rng.chance(95) {
            6
        } else {
            self.rng.below(8)
        };
        let ad = self.rng.below(4) << 8;
        let ps = if level > 1 { 1 << 7 } else { 0 };
        let e = hpa | self.ept_rights() | (memtype << 3) | ad | ps | self.ept_noise(level, true);
        self.w64(table + idx * 8, e);
    }

    /// Gives a guest table page a guest-physical address (EPT on) or uses its hpa.
    fn place_guest_table(&mut self, hpa: u64, below_4g: bool) -> u64 {
        if self.eptp.is_none() {
            return hpa;
        }
        if let Some((&gpa, _)) = self.guest_tables.iter().find(|(_, &h)| h == hpa) {
            return gpa;
        }
        let limit_bits = if below_4g { 32 } else { 39 };
        let gpa = match self.rng.below(10) {
            0..=6 => {
                let gpa = (self.rng.below(1 << (limit_bits - 12))) << 12;
                self.ept_map(gpa, hpa, 1);
                gpa
            }
            7 | 8 => {
                let region = self.rng.below(1 << (limit_bits - 21)) << 21;
                self.ept_map(region, POOL_BASE, 2);
                region | (hpa - POOL_BASE)
            }
            _ => {
                let region = self.rng.below(1 << (limit_bits - 30)) << 30;
                self.ept_map(region, 0, 3);
                region | hpa
            }
        };
        self.guest_tables.insert(gpa, hpa);
        gpa
    }

    fn guest_hpa(&self, gpa: u64) -> u64 {
        if self.eptp.is_none() {
            gpa
        } else {
            self.guest_tables[&(gpa & !0xfff)] | (gpa & 0xfff)
        }
    }

    /// Random flags of a guest entry: mostly present, rights and A/D random, rarely a
    /// reserved bit.
    fn guest_flags(&mut self, wide: bool, leaf: bool) -> u64 {
        let mut f = 0;
        if self.rng.chance(94) {
            f |= 1;
        }
        if self.rng.chance(80) {
            f |= 2;
        }
        if self.rng.chance(70) {
            f |= 4;
        }
        if self.rng.chance(50) {
            f |= 1 << 5;
        }
        if leaf && self.rng.chance(50) {
            f |= 1 << 6;
        }
        if leaf && self.rng.chance(40) {
            f |= 1 << 8;
        }
        if wide && self.rng.chance(if self.nxe { 25 } else { 4 }) {
            f |= 1 << 63;
        }
        if wide && leaf && self.rng.chance(50) {
            f |= self.rng.below(16) << 59;
        }
        f
    }

    /// Occasionally a reserved bit (by paging mode and level).
    fn guest_noise(&mut self, level: u32, large: bool) -> u64 {
        if !self.rng.chance(3) {
            return 0;
        }
        let candidates: &[u32] = match (self.mode, level, large) {
            (WorldMode::Bits32 { .. }, 2, true) => &[21],
            (WorldMode::Bits32 { .. }, _, _) => &[],
            (WorldMode::Pae, 2, true) => &[13, 17, 20, 40, 55, 62],
            (WorldMode::Pae, _, _) => &[40, 52, 62],
            (_, 4 | 5, _) => &[7, 40, 51],
            (_, 3, true) => &[13, 22, 29, 41],
            (_, 2, true) => &[13, 20, 45],
            _ => &[40, 50],
        };
        if candidates.is_empty() {
            return 0;
        }
        1 << candidates[self.rng.below(candidates.len() as u64) as usize]
    }

    /// Creates the guest root (CR3, PAE PDPT) for the world's mode.
    pub fn build_root(&mut self) {
        match self.mode {
            WorldMode::Off => {}
            WorldMode::Pae => {
                let hpa = self.alloc_guest_page();
                let gpa = self.place_guest_table(hpa, true);
                let off = self.rng.below(128) * 32;
                self.cr3 = gpa | off;
                // PDPTEs: mostly present tables, sometimes absent or with reserved bits.
                for i in 0..4 {
                    let entry_hpa = self.guest_hpa(self.cr3 & !0x1f) + i * 8;
                    if self.rng.chance(8) {
                        let junk = self.rng.next() & !1;
                        self.w64(entry_hpa, junk);
                        continue;
                    }
                    let t = self.alloc_guest_page();
                    let tg = self.place_guest_table(t, false);
                    let noise = if self.rng.chance(2) {
                        [1u64 << 1, 1 << 2, 1 << 5, 1 << 8, 1 << 40, 1 << 63]
                            [self.rng.below(6) as usize]
                    } else {
                        0
                    };
                    let cache_bits = self.rng.below(4) << 3; // PWT, PCD
                    self.w64(entry_hpa, tg | 1 | noise | cache_bits);
                    self.guest_links.insert(entry_hpa, tg);
                }
            }
            _ => {
                let hpa = self.alloc_guest_page();
                let gpa = self.place_guest_table(hpa, true);
                let low = self.rng.below(4096) & 0xfff;
                self.cr3 = gpa | low;
            }
        }
    }

    /// Maps `linear` (random leaf size and rights) in the guest tables, reusing the
    /// tables already on its path, and maps the final frame in EPT.
    pub fn map_linear(&mut self, linear: u64) {
        let (levels, entry_bytes, index_bits): (u32, u64, u32) = match self.mode {
            WorldMode::Off => {
                let gpa = linear & !0xfff;
                let level = 1 + self.rng.below(3) as u32;
                let size_mask = (4096u64 << (9 * (level - 1))) - 1;
                let hpa = self.rng.below(1 << 28) << 12 & !size_mask;
                self.ept_map(gpa & !size_mask, hpa, level);
                return;
            }
            WorldMode::Bits32 { .. } => (2, 4, 10),
            WorldMode::Pae => (2, 8, 9),
            WorldMode::Level4 => (4, 8, 9),
            WorldMode::Level5 => (5, 8, 9),
        };
        let wide = entry_bytes == 8;
        let mut table_gpa = match self.mode {
            WorldMode::Pae => {
                let pdpte_hpa = self.guest_hpa(self.cr3 & !0x1f) + ((linear >> 30) & 3) * 8;
                match self.guest_links.get(&pdpte_hpa) {
                    Some(&t) => t,
                    None => return,
                }
            }
            _ => self.cr3 & !0xfff,
        };
        for level in (1..=levels).rev() {
            let shift = 12 + index_bits * (level - 1);
            let idx = (linear >> shift) & ((1 << index_bits) - 1);
            let entry_hpa = self.guest_hpa(table_gpa) + idx * entry_bytes;
            if let Some(&next) = self.guest_links.get(&entry_hpa) {
                table_gpa = next;
                continue;
            }
            if self.guest_leaves.contains(&entry_hpa) {
                return;
            }
            let can_be_large = match self.mode {
                WorldMode::Bits32 { pse } => level == 2 && pse,
                WorldMode::Pae => level == 2,
                _ => level == 2 || level == 3,
            };
            let leaf = level == 1 || (can_be_large && self.rng.chance(30));
            if leaf {
                let page_bits = if entry_bytes == 4 { 22 } else { shift };
                let page_bits = if level == 1 { 12 } else { page_bits };
                let limit: u64 = if entry_bytes == 4 { 32 } else { 40 };
                let mut frame =
                    (self.rng.below(1 << (limit - 12)) << 12) & !((1u64 << page_bits) - 1);
                if let WorldMode::Bits32 { .. } = self.mode {
                    if level == 2 && self.rng.chance(30) {
                        // PSE-36: physical bits 39:32 in PDE bits 20:13.
                        frame |= self.rng.below(256) << 13;
                    }
                }
                let mut e =
                    frame | self.guest_flags(wide, true) | self.guest_noise(level, level > 1);
                if level > 1 {
                    e |= 1 << 7;
                }
                if entry_bytes == 4 {
                    self.w32(entry_hpa, e as u32);
                } else {
                    self.w64(entry_hpa, e);
                }
                self.guest_leaves.push(entry_hpa);
                // EPT mapping of the final frame: level <= the guest page's.
                let gpa_frame = if entry_bytes == 4 && level == 2 {
                    ((e & 0xffc0_0000) | (((e >> 13) & 0xff) << 32)) & 0xff_ffff_ffff
                } else {
                    e & 0xff_ffff_f000 & !((1u64 << page_bits) - 1)
                };
                let gpa = gpa_frame | (linear & ((1u64 << page_bits) - 1) & !0xfff);
                let ept_level = 1 + self.rng.below(3) as u32;
                let size_mask = (4096u64 << (9 * (ept_level - 1))) - 1;
                let hpa = (self.rng.below(1 << 28) << 12) & !size_mask;
                self.ept_map(gpa & !size_mask, hpa, ept_level);
                return;
            }
            let t = self.alloc_guest_page();
            let tg = self.place_guest_table(t, entry_bytes == 4);
            let mut e = tg | self.guest_flags(wide, false) | self.guest_noise(level, false);
            if entry_bytes == 4 {
                e &= 0xffff_ffff & !(1 << 7);
                // PS in a PDE that the builder meant as a table: a 4M page with PSE,
                // ignored without.
                if self.rng.chance(8) {
                    e |= 1 << 7;
                }
                self.w32(entry_hpa, e as u32);
            } else {
                e &= !(1 << 7);
                if self.rng.chance(3) {
                    e |= 1 << 7;
                }
                self.w64(entry_hpa, e);
            }
            self.guest_links.insert(entry_hpa, tg);
            table_gpa = tg;
        }
    }
}
