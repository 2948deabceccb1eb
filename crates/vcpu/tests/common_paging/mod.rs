//! An independent reference for linear-address translation, written rule by rule from
//! the Intel SDM (Vol. 3A 4.3-4.8, Vol. 3C 28.2.1, 29.3) and the project's fixed
//! choices, for differential tests of `vcpu::paging`. It shares only the contract types
//! (`PagingContext`, `Access`, `Fault`) with the module under test; it is deliberately
//! slow and literal: per-mode walkers, the access-rights prose of SDM 4.6 as a decision
//! tree, a flat memory, and no caching.
//!
//! Project choices it follows (documented in `paging/walk.rs` and `paging/ept.rs`):
//! MAXPHYADDR = 40 (guest and host); A/D flags are written only when the whole access
//! succeeds; a guest #PF takes priority over the EPT check of A/D writes; guest A/D
//! writes are checked against EPT (write) before the final gpa is translated;
//! paging-structure accesses treated as writes report qualification bits 0 and 1;
//! execute-only EPT and 1G/2M EPT pages are supported; no mode-based execute control,
//! no advanced EPT-violation information.
#![allow(dead_code)]

use vcpu::paging::{Access, AccessKind, Fault, PagingContext};

pub const M: u32 = 40;

/// Flat host-physical memory: one range starting at `base`, as little-endian qwords.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefMem {
    pub base: u64,
    pub words: Vec<u64>,
}

impl RefMem {
    pub fn new(base: u64, words: Vec<u64>) -> Self {
        RefMem { base, words }
    }

    /// The qword index and bit shift of an aligned `len`-byte access, if in range.
    fn locate(&self, addr: u64, len: u64) -> Option<(usize, u64)> {
        if addr < self.base || !addr.is_multiple_of(len) {
            return None;
        }
        let off = addr - self.base;
        let index = (off / 8) as usize;
        if index >= self.words.len() {
            return None;
        }
        Some((index, (off % 8) * 8))
    }

    pub fn read(&self, addr: u64, len: u64) -> Option<u64> {
        let (i, shift) = self.locate(addr, len)?;
        let width_mask = if len == 8 {
            !0
        } else {
            (1u64 << (8 * len)) - 1
        };
        Some((self.words[i] >> shift) & width_mask)
    }

    pub fn write(&mut self, addr: u64, len: u64, value: u64) -> Option<()> {
        let (i, shift) = self.locate(addr, len)?;
        let width_mask = if len == 8 {
            !0
        } else {
            (1u64 << (8 * len)) - 1
        };
        self.words[i] = (self.words[i] & !(width_mask << shift)) | ((value & width_mask) << shift);
        Some(())
    }
}

fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 == 1
}

/// Bits hi..=lo of v.
fn bits(v: u64, hi: u32, lo: u32) -> u64 {
    (v >> lo) & ((1u64 << (hi - lo + 1)) - 1)
}

/// A mask of bits hi..=lo.
fn mask(hi: u32, lo: u32) -> u64 {
    (((1u128 << (hi + 1)) - 1) as u64) & !((1u64 << lo) - 1)
}

/// Bits (M-1):12 of an entry, as a physical address.
fn phys_4k(entry: u64) -> u64 {
    entry & mask(M - 1, 12)
}

/// What an EPT walk is for (SDM 28.2.1 Table 28-7 bits 0-2, 7, 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptPurpose {
    /// The gpa a linear access (or a gpa access) finally touches.
    Final(AccessKind),
    /// Reading a guest paging-structure entry (or a PDPTE load).
    TableRead,
    /// Writing A/D into a guest paging-structure entry.
    TableAdWrite,
}

/// One flag update the access will make if it succeeds: OR `value` into `len` bytes at
/// `addr`.
#[derive(Clone, Copy, Debug)]
struct FlagWrite {
    addr: u64,
    len: u64,
    value: u64,
}

struct EptResult {
    hpa: u64,
    rwx: u64,
}

/// SDM 29.3.2/29.3.3: walk the EPT for `gpa`.
fn ept_walk(
    mem: &RefMem,
    eptp: u64,
    gpa: u64,
    purpose: EptPurpose,
    linear: Option<u64>,
    flags: &mut Vec<FlagWrite>,
) -> Result<EptResult, Fault> {
    let ad_enabled = bit(eptp, 6);
    // With EPT A/D enabled every guest paging-structure access counts as a write
    // (SDM 29.3.5 / 28.2.3.2); an A/D update is a write anyway.
    let is_write = match purpose {
        EptPurpose::Final(k) => k == AccessKind::Write,
        EptPurpose::TableRead => ad_enabled,
        EptPurpose::TableAdWrite => true,
    };
    let is_fetch = purpose == EptPurpose::Final(AccessKind::Fetch);
    let walk_length = bits(eptp, 5, 3) + 1;
    if !(walk_length == 4 || walk_length == 5) || !(bits(eptp, 2, 0) == 0 || bits(eptp, 2, 0) == 6)
    {
        return Err(Fault::EptMisconfig { gpa });
    }
    let violation = |rwx: u64| {
        let mut q = 0u64;
        match purpose {
            EptPurpose::Final(AccessKind::Read) => q |= 1,
            EptPurpose::Final(AccessKind::Write) => q |= 2,
            EptPurpose::Final(AccessKind::Fetch) => q |= 4,
            EptPurpose::TableRead if !ad_enabled => q |= 1,
            // Treated as a write: "sets both bit 0 and bit 1".
            EptPurpose::TableRead | EptPurpose::TableAdWrite => q |= 3,
        }
        q |= rwx << 3;
        if linear.is_some() {
            q |= 1 << 7;
            if matches!(purpose, EptPurpose::Final(_)) {
                q |= 1 << 8;
            }
        }
        Fault::EptViolation {
            gpa,
            linear,
            qualification: q,
        }
    };
    let mut table = phys_4k(eptp);
    let mut r = true;
    let mut w = true;
    let mut x = true;
    let mut level = walk_length as u32;
    let mut local_flags = Vec::new();
    loop {
        // Index bits: level 5 = 56:48, 4 = 47:39, 3 = 38:30, 2 = 29:21, 1 = 20:12.
        let lo = 12 + 9 * (level - 1);
        let entry_addr = table + bits(gpa, lo + 8, lo) * 8;
        let entry = mem
            .read(entry_addr, 8)
            .ok_or(Fault::BadHpa { hpa: entry_addr })?;
        r &= bit(entry, 0);
        w &= bit(entry, 1);
        x &= bit(entry, 2);
        let rwx_now = u64::from(r) | u64::from(w) << 1 | u64::from(x) << 2;
        // Present: any of bits 2:0.
        if bits(entry, 2, 0) == 0 {
            return Err(violation(rwx_now));
        }
        // Misconfigured: W=1 with R=0; reserved bits; reserved memory type in a leaf.
        let maps_page = level == 1 || ((level == 3 || level == 2) && bit(entry, 7));
        let mut reserved = mask(51, M);
        if level >= 4 {
            reserved |= mask(7, 3);
        } else if level == 3 && maps_page {
            reserved |= mask(29, 12);
        } else if level == 2 && maps_page {
            reserved |= mask(20, 12);
        } else if level >= 2 {
            reserved |= mask(6, 3);
        }
        let memtype = bits(entry, 5, 3);
        if (bit(entry, 1) && !bit(entry, 0))
            || entry & reserved != 0
            || (maps_page && (memtype == 2 || memtype == 3 || memtype == 7))
        {
            return Err(Fault::EptMisconfig { gpa });
        }
        if ad_enabled {
            let mut set = 1 << 8;
            if maps_page && is_write {
                set |= 1 << 9;
            }
            local_flags.push(FlagWrite {
                addr: entry_addr,
                len: 8,
                value: set,
            });
        }
        if maps_page {
            let allowed = if is_fetch {
                x
            } else if is_write {
                w
            } else {
                r
            };
            if !allowed {
                return Err(violation(rwx_now));
            }
            let page_bits = lo;
            let hpa = (entry & mask(M - 1, page_bits)) | (gpa & ((1u64 << page_bits) - 1));
            flags.extend(local_flags);
            return Ok(EptResult { hpa, rwx: rwx_now });
        }
        table = phys_4k(entry);
        level -= 1;
    }
}

/// A guest-physical table access: through EPT when it is on.
fn table_hpa(
    mem: &RefMem,
    ctx: &PagingContext,
    gpa: u64,
    purpose: EptPurpose,
    linear: Option<u64>,
    flags: &mut Vec<FlagWrite>,
) -> Result<u64, Fault> {
    match ctx.eptp {
        None => Ok(gpa),
        Some(eptp) => ept_walk(mem, eptp, gpa, purpose, linear, flags).map(|r| r.hpa),
    }
}

/// One paging-structure entry the guest walk used.
#[derive(Clone, Copy, Debug)]
struct Used {
    gpa: u64,
    hpa: u64,
    len: u64,
    value: u64,
}

/// The outcome of the guest's walk up to the leaf (before access rights).
struct GuestLeaf {
    gpa: u64,
    /// U/S = 1 in every entry.
    user_address: bool,
    /// R/W = 1 in every entry.
    all_writable: bool,
    /// XD = 1 in some entry (only considered when NX applies).
    some_xd: bool,
    pkey: u64,
    used: Vec<Used>,
}

enum WalkStop {
    NotPresent,
    Reserved,
    Other(Fault),
}

/// SDM 4.3: 32-bit paging.
fn walk_32bit(
    mem: &RefMem,
    ctx: &PagingContext,
    la: u64,
    flags: &mut Vec<FlagWrite>,
) -> Result<GuestLeaf, WalkStop> {
    let pse = bit(ctx.cr4, 4);
    let pde_gpa = (ctx.cr3 & mask(31, 12)) | (bits(la, 31, 22) << 2);
    let pde_hpa = table_hpa(mem, ctx, pde_gpa, EptPurpose::TableRead, Some(la), flags)
        .map_err(WalkStop::Other)?;
    let pde = mem
        .read(pde_hpa, 4)
        .ok_or(WalkStop::Other(Fault::BadHpa { hpa: pde_hpa }))?;
    if !bit(pde, 0) {
        return Err(WalkStop::NotPresent);
    }
    let pde_used = Used {
        gpa: pde_gpa,
        hpa: pde_hpa,
        len: 4,
        value: pde,
    };
    if pse && bit(pde, 7) {
        // 4-MByte page (Table 4-4): bits 39:32 from PDE 20:13 (M = 40), bit 21 reserved.
        if bit(pde, 21) {
            return Err(WalkStop::Reserved);
        }
        let gpa = (bits(pde, 31, 22) << 22) | (bits(pde, 20, 13) << 32) | bits(la, 21, 0);
        return Ok(GuestLeaf {
            gpa,
            user_address: bit(pde, 2),
            all_writable: bit(pde, 1),
            some_xd: false,
            pkey: 0,
            used: vec![pde_used],
        });
    }
    let pte_gpa = (pde & mask(31, 12)) | (bits(la, 21, 12) << 2);
    let pte_hpa = table_hpa(mem, ctx, pte_gpa, EptPurpose::TableRead, Some(la), flags)
        .map_err(WalkStop::Other)?;
    let pte = mem
        .read(pte_hpa, 4)
        .ok_or(WalkStop::Other(Fault::BadHpa { hpa: pte_hpa }))?;
    if !bit(pte, 0) {
        return Err(WalkStop::NotPresent);
    }
    Ok(GuestLeaf {
        gpa: (pte & mask(31, 12)) | bits(la, 11, 0),
        user_address: bit(pde, 2) && bit(pte, 2),
        all_writable: bit(pde, 1) && bit(pte, 1),
        some_xd: false,
        pkey: 0,
        used: vec![
            pde_used,
            Used {
                gpa: pte_gpa,
                hpa: pte_hpa,
                len: 4,
                value: pte,
            },
        ],
    })
}

/// SDM 4.4 and 4.5: PAE, 4-level and 5-level paging share 8-byte entries. `top` is the
/// number of levels walked from memory (2 for PAE after the PDPTE register, 4 or 5).
fn walk_wide(
    mem: &RefMem,
    ctx: &PagingContext,
    la: u64,
    first_table: u64,
    top: u32,
    pae: bool,
    flags: &mut Vec<FlagWrite>,
) -> Result<GuestLeaf, WalkStop> {
    let nxe = bit(ctx.efer, 11);
    let mut table = first_table;
    let mut leaf = GuestLeaf {
        gpa: 0,
        user_address: true,
        all_writable: true,
        some_xd: false,
        pkey: 0,
        used: Vec::new(),
    };
    for level in (1..=top).rev() {
        let lo = 12 + 9 * (level - 1);
        let gpa = table | (bits(la, lo + 8, lo) << 3);
        let hpa = table_hpa(mem, ctx, gpa, EptPurpose::TableRead, Some(la), flags)
            .map_err(WalkStop::Other)?;
        let e = mem
            .read(hpa, 8)
            .ok_or(WalkStop::Other(Fault::BadHpa { hpa }))?;
        if !bit(e, 0) {
            return Err(WalkStop::NotPresent);
        }
        let ps = bit(e, 7);
        let page = level == 1 || (ps && (level == 2 || (level == 3 && !pae)));
        // Reserved bits: PAE entries bits 62:M (Table 4-8..4-11); 4-level entries
        // bits 51:M (Table 4-14..4-20); XD when NXE = 0; PS in a PML4E/PML5E; the
        // address bits below the page size of a large page (except PAT, bit 12).
        let mut reserved = if pae { mask(62, M) } else { mask(51, M) };
        if !nxe {
            reserved |= 1 << 63;
        }
        if !pae && level >= 4 {
            reserved |= 1 << 7;
        }
        if page && level == 2 {
            reserved |= mask(20, 13);
        }
        if page && level == 3 {
            reserved |= mask(29, 13);
        }
        if e & reserved != 0 {
            return Err(WalkStop::Reserved);
        }
        leaf.user_address &= bit(e, 2);
        leaf.all_writable &= bit(e, 1);
        leaf.some_xd |= nxe && bit(e, 63);
        leaf.used.push(Used {
            gpa,
            hpa,
            len: 8,
            value: e,
        });
        if page {
            leaf.gpa = (e & mask(M - 1, lo)) | (la & ((1u64 << lo) - 1));
            if !pae {
                leaf.pkey = bits(e, 62, 59);
            }
            return Ok(leaf);
        }
        table = phys_4k(e);
    }
    unreachable!("level 1 always maps a page")
}

/// SDM 4.6.1 (access rights) as written, one branch per case of the prose even where
/// two cases give the same answer, then 4.6.2 (protection keys). Returns whether
/// the access is refused by rights, and whether by its protection key.
#[allow(clippy::if_same_then_else, clippy::needless_bool)]
fn refused(
    ctx: &PagingContext,
    leaf: &GuestLeaf,
    access: Access,
    nx_applies: bool,
) -> (bool, bool) {
    let supervisor_access = ctx.cpl < 3 || access.implicit_supervisor;
    let implicit = access.implicit_supervisor;
    let wp = bit(ctx.cr0, 16);
    let smep = bit(ctx.cr4, 20);
    let smap = bit(ctx.cr4, 21);
    let ac = ctx.rflags_ac;
    let user_address = leaf.user_address;
    let by_rights = match access.kind {
        AccessKind::Read => {
            if supervisor_access {
                if !user_address {
                    false
                } else if !smap {
                    false
                } else {
                    // SMAP: only explicit accesses with EFLAGS.AC = 1.
                    implicit || !ac
                }
            } else {
                !user_address
            }
        }
        AccessKind::Write => {
            if supervisor_access {
                let wp_rule = wp && !leaf.all_writable;
                if !user_address {
                    wp_rule
                } else if !smap {
                    wp_rule
                } else if !implicit && ac {
                    wp_rule
                } else {
                    true
                }
            } else {
                !user_address || !leaf.all_writable
            }
        }
        AccessKind::Fetch => {
            let xd_rule = nx_applies && leaf.some_xd;
            if supervisor_access {
                if !user_address {
                    xd_rule
                } else if smep {
                    true
                } else {
                    xd_rule
                }
            } else {
                !user_address || xd_rule
            }
        }
    };
    // 4.6.2: IA-32e paging, CR4.PKE, data accesses to user-mode addresses.
    let pk_applies =
        bit(ctx.efer, 10) && bit(ctx.cr4, 22) && user_address && access.kind != AccessKind::Fetch;
    let mut by_key = false;
    if pk_applies {
        let ad = bit(u64::from(ctx.pkru), (2 * leaf.pkey) as u32);
        let wd = bit(u64::from(ctx.pkru), (2 * leaf.pkey + 1) as u32);
        if ad {
            by_key = true;
        }
        if access.kind == AccessKind::Write && wd && (!supervisor_access || wp) {
            by_key = true;
        }
    }
    (by_rights, by_key)
}

/// SDM 4.7: the #PF error code.
fn error_code(ctx: &PagingContext, access: Access, present: bool, rsvd: bool, pk: bool) -> u32 {
    let mut ec = 0;
    if present {
        ec |= 1;
    }
    if access.kind == AccessKind::Write {
        ec |= 2;
    }
    if ctx.cpl == 3 && !access.implicit_supervisor {
        ec |= 4;
    }
    if rsvd {
        ec |= 8;
    }
    // I/D: an instruction fetch, when SMEP is on or (CR4.PAE and EFER.NXE).
    if access.kind == AccessKind::Fetch
        && (bit(ctx.cr4, 20) || (bit(ctx.cr4, 5) && bit(ctx.efer, 11)))
    {
        ec |= 16;
    }
    if pk {
        ec |= 32;
    }
    ec
}

fn apply(mem: &mut RefMem, flags: &[FlagWrite]) {
    for f in flags {
        let old = mem
            .read(f.addr, f.len)
            .expect("flag target was read by the walk");
        mem.write(f.addr, f.len, old | f.value).expect("writable");
    }
}

/// The reference translation of one access. On success, applies its A/D writes to
/// `mem` and returns the hpa.
pub fn translate(
    mem: &mut RefMem,
    ctx: &PagingContext,
    linear: u64,
    access: Access,
) -> Result<u64, Fault> {
    let lma = bit(ctx.efer, 10);
    let la = if lma { linear } else { linear & 0xffff_ffff };
    let mut flags = Vec::new();
    if !bit(ctx.cr0, 31) {
        // Paging off: the linear address is the guest-physical address (unrestricted
        // guest with EPT), or the physical address.
        let hpa = match ctx.eptp {
            None => la,
            Some(eptp) => {
                ept_walk(
                    mem,
                    eptp,
                    la,
                    EptPurpose::Final(access.kind),
                    Some(la),
                    &mut flags,
                )?
                .hpa
            }
        };
        apply(mem, &flags);
        return Ok(hpa);
    }
    let pae = bit(ctx.cr4, 5);
    let walked = if lma {
        let top = if bit(ctx.cr4, 12) { 5 } else { 4 };
        walk_wide(mem, ctx, la, phys_4k(ctx.cr3), top, false, &mut flags)
    } else if pae {
        let pdpte = ctx.pdptes[bits(la, 31, 30) as usize];
        if !bit(pdpte, 0) {
            Err(WalkStop::NotPresent)
        } else {
            walk_wide(mem, ctx, la, phys_4k(pdpte), 2, true, &mut flags)
        }
    } else {
        walk_32bit(mem, ctx, la, &mut flags)
    };
    let leaf = match walked {
        Ok(leaf) => leaf,
        Err(WalkStop::NotPresent) => {
            return Err(Fault::PageFault {
                error_code: error_code(ctx, access, false, false, false),
                linear: la,
            })
        }
        Err(WalkStop::Reserved) => {
            return Err(Fault::PageFault {
                error_code: error_code(ctx, access, true, true, false),
                linear: la,
            })
        }
        Err(WalkStop::Other(f)) => return Err(f),
    };
    let nx_applies = (pae || lma) && bit(ctx.efer, 11);
    let (by_rights, by_key) = refused(ctx, &leaf, access, nx_applies);
    if by_rights || by_key {
        return Err(Fault::PageFault {
            error_code: error_code(ctx, access, true, false, by_key),
            linear: la,
        });
    }
    // SDM 4.8: accessed flag in every entry used, dirty flag in the leaf for a write;
    // each such write is a write to guest memory, checked against EPT.
    let n = leaf.used.len();
    for (i, u) in leaf.used.iter().enumerate() {
        let mut set = 1u64 << 5;
        if i == n - 1 && access.kind == AccessKind::Write {
            set |= 1 << 6;
        }
        if u.value & set == set {
            continue;
        }
        if let Some(eptp) = ctx.eptp {
            if !bit(eptp, 6) {
                ept_walk(
                    mem,
                    eptp,
                    u.gpa,
                    EptPurpose::TableAdWrite,
                    Some(la),
                    &mut flags,
                )?;
            }
        }
        flags.push(FlagWrite {
            addr: u.hpa,
            len: u.len,
            value: set,
        });
    }
    let hpa = match ctx.eptp {
        None => leaf.gpa,
        Some(eptp) => {
            ept_walk(
                mem,
                eptp,
                leaf.gpa,
                EptPurpose::Final(access.kind),
                Some(la),
                &mut flags,
            )?
            .hpa
        }
    };
    apply(mem, &flags);
    Ok(hpa)
}

/// SDM 4.4.1: load the PDPTE registers from CR3[31:5] (through EPT; an EPT violation
/// has no guest-linear address). `Err(PdpteReserved)` for a present PDPTE with bits
/// 2:1, 8:5 or 63:M set.
pub fn load_pdptes(mem: &mut RefMem, ctx: &PagingContext) -> Result<[u64; 4], Fault> {
    let mut flags = Vec::new();
    let mut out = [0u64; 4];
    for i in 0..4u64 {
        let gpa = (ctx.cr3 & mask(31, 5)) + 8 * i;
        let hpa = table_hpa(mem, ctx, gpa, EptPurpose::TableRead, None, &mut flags)?;
        let e = mem.read(hpa, 8).ok_or(Fault::BadHpa { hpa })?;
        if bit(e, 0) && e & (mask(2, 1) | mask(8, 5) | mask(63, M)) != 0 {
            return Err(Fault::PdpteReserved {
                index: i as u8,
                pdpte: e,
            });
        }
        out[i as usize] = e;
    }
    apply(mem, &flags);
    Ok(out)
}

pub mod fixture;
pub mod world;
