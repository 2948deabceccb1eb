//! [`Mmu`]: what the instruction engine calls for every memory access and for every
//! instruction or VMX operation that invalidates cached translations.

use super::ad::{Commit, PendingAd};
use super::bits::*;
use super::ept::{self, EptAccess};
use super::rights;
use super::tlb::{Entry, MappingKind, Tag, Tlb};
use super::walk::{self, Translation};
use super::{Access, AccessKind, Fault, PagingContext};

/// How many times a walk is repeated when another agent changes an entry between the
/// walk's read and its A/D compare-and-exchange. After that the access is served
/// without setting A/D flags (only a writer racing every single walk gets there).
const MAX_AD_RETRIES: u32 = 16;

/// TLB counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TlbStats {
    /// Accesses served from the TLB.
    pub hits: u64,
    /// Accesses that found no usable entry (including writes to a cached page whose
    /// D flag was clear).
    pub misses: u64,
    /// Page walks performed (one per miss, more when an A/D update raced).
    pub walks: u64,
}

/// An invalidation instruction with operands the CPU refuses: INVPCID raises #GP(0),
/// INVVPID/INVEPT fail with VMfailValid ("invalid operand to INVEPT/INVVPID").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidationError {
    /// The type register holds an unsupported type.
    InvalidType,
    /// The descriptor is invalid: reserved bits, a non-canonical address, VPID 0
    /// where it is not allowed, a PCID other than 0 with CR4.PCIDE = 0.
    InvalidOperand,
}

/// The vCPU's translation hardware: page walker, EPT walker and TLB.
pub struct Mmu {
    tlb: Tlb,
    stats: TlbStats,
}

impl Default for Mmu {
    fn default() -> Self {
        Mmu::new()
    }
}

/// The PCID of the current context: CR3[11:0] with CR4.PCIDE = 1, else 0 (SDM 4.10.1).
#[inline]
fn current_pcid(ctx: &PagingContext) -> u16 {
    if ctx.cr4 & CR4_PCIDE != 0 {
        (ctx.cr3 & CR3_PCID_MASK) as u16
    } else {
        0
    }
}

/// Linear addresses are 32 bits wide outside IA-32e mode.
#[inline]
fn effective_linear(ctx: &PagingContext, linear: u64) -> u64 {
    if ctx.efer & EFER_LMA != 0 {
        linear
    } else {
        linear & 0xffff_ffff
    }
}

#[inline]
fn is_canonical(linear: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((linear << shift) as i64) >> shift) as u64 == linear
}

impl Mmu {
    /// An empty TLB. `const` so a PD can hold its vCPU in a static.
    pub const fn new() -> Mmu {
        Mmu {
            tlb: Tlb::new(),
            stats: TlbStats {
                hits: 0,
                misses: 0,
                walks: 0,
            },
        }
    }

    /// The tag an access in `ctx` looks the TLB up with, or `None` when the access is
    /// not translated at all (paging and EPT both off).
    #[inline]
    fn tag(ctx: &PagingContext) -> Option<Tag> {
        let paging = ctx.cr0 & CR0_PG != 0;
        match (paging, ctx.eptp) {
            (false, None) => None,
            (false, Some(eptp)) => Some(Tag {
                kind: MappingKind::GuestPhysical,
                vpid: 0,
                pcid: 0,
                ep4ta: ept::ep4ta(eptp),
            }),
            (true, None) => Some(Tag {
                kind: MappingKind::Linear,
                vpid: ctx.vpid,
                pcid: current_pcid(ctx),
                ep4ta: 0,
            }),
            (true, Some(eptp)) => Some(Tag {
                kind: MappingKind::Combined,
                vpid: ctx.vpid,
                pcid: current_pcid(ctx),
                ep4ta: ept::ep4ta(eptp),
            }),
        }
    }

    /// Translates one access that does not cross a page boundary (the engine splits
    /// accesses) to the host-physical address of its first byte.
    ///
    /// A TLB hit still enforces the access rights, from the cached combined rights and
    /// the current CR0.WP/CR4/EFLAGS.AC/PKRU/CPL; a write to a page cached with D = 0
    /// walks again to set D. A fault invalidates the cached translation of the address
    /// (SDM 4.10.4.1 for #PF, Vol. 3C 28.4.3.1 for EPT violations), so retrying the
    /// instruction after the handler fixed the tables sees memory.
    #[inline]
    pub fn translate(
        &mut self,
        mem: &physmem::PhysMap,
        ctx: &PagingContext,
        linear: u64,
        access: Access,
    ) -> Result<u64, Fault> {
        let linear = effective_linear(ctx, linear);
        let Some(tag) = Self::tag(ctx) else {
            return Ok(linear);
        };
        let vpn = linear >> 12;
        if let Some(slot) = self.tlb.lookup(&tag, vpn) {
            let e = *self.tlb.entry(slot);
            if access.kind != AccessKind::Write || e.dirty {
                if tag.kind != MappingKind::GuestPhysical {
                    if let Some(code) = rights::check(ctx, e.rights, access) {
                        self.tlb.invalidate_slot(slot);
                        return Err(Fault::PageFault {
                            error_code: code,
                            linear,
                        });
                    }
                }
                let ept_access = EptAccess::Data(access.kind);
                if ctx.eptp.is_some() && !ept::rights_allow(e.ept_rights, ept_access) {
                    self.tlb.invalidate_slot(slot);
                    return Err(Fault::EptViolation {
                        gpa: e.gpa_frame | (linear & 0xfff),
                        linear: Some(linear),
                        qualification: ept::violation_qualification(
                            ept_access,
                            e.ept_rights,
                            Some(linear),
                        ),
                    });
                }
                self.stats.hits += 1;
                return Ok(e.hpa_frame | (linear & 0xfff));
            }
        }
        self.stats.misses += 1;
        self.walk_and_fill(mem, ctx, tag, linear, access)
    }

    #[cold]
    fn walk_and_fill(
        &mut self,
        mem: &physmem::PhysMap,
        ctx: &PagingContext,
        tag: Tag,
        linear: u64,
        access: Access,
    ) -> Result<u64, Fault> {
        let mut pending = PendingAd::new();
        let mut last: Option<Translation> = None;
        for _ in 0..MAX_AD_RETRIES {
            pending.clear();
            self.stats.walks += 1;
            let t = match walk::translate(mem, ctx, linear, access, &mut pending) {
                Ok(t) => t,
                Err(fault) => {
                    self.invalidate_after_fault(ctx, &tag, linear, &fault);
                    return Err(fault);
                }
            };
            match pending.commit(mem) {
                Commit::Done => {
                    self.fill(&tag, linear, &t);
                    return Ok(t.hpa);
                }
                Commit::Raced => last = Some(t),
                Commit::BadHpa(hpa) => return Err(Fault::BadHpa { hpa }),
            }
        }
        // Served without caching and without A/D updates (see MAX_AD_RETRIES).
        match last {
            Some(t) => Ok(t.hpa),
            None => Err(Fault::BadHpa { hpa: 0 }),
        }
    }

    #[inline]
    fn fill(&mut self, tag: &Tag, linear: u64, t: &Translation) {
        self.tlb.insert(Entry {
            kind: tag.kind,
            vpid: tag.vpid,
            pcid: tag.pcid,
            ep4ta: tag.ep4ta,
            vpn: linear >> 12,
            hpa_frame: t.hpa & !0xfff,
            gpa_frame: t.gpa & !0xfff,
            rights: t.rights,
            global: t.global,
            dirty: t.dirty,
            ept_rights: t.ept_rights,
            page_shift: t.page_shift,
        });
    }

    /// SDM 4.10.4.1: a #PF invalidates the TLB entries for the faulting address of the
    /// current PCID. SDM 28.4.3.1: an EPT violation invalidates the guest-physical
    /// mappings of the gpa and the combined mappings of the linear address.
    fn invalidate_after_fault(&mut self, ctx: &PagingContext, tag: &Tag, linear: u64, f: &Fault) {
        match *f {
            Fault::PageFault { .. } => {
                let (vpid, pcid) = (tag.vpid, tag.pcid);
                self.tlb.invalidate_address(linear, |e| {
                    e.is_linear_or_combined() && e.vpid == vpid && (e.pcid == pcid || e.global)
                });
            }
            Fault::EptViolation { gpa, .. } => {
                let ep4ta = ctx.eptp.map(ept::ep4ta).unwrap_or(0);
                self.tlb.invalidate_address(gpa, |e| {
                    e.kind == MappingKind::GuestPhysical && e.ep4ta == ep4ta
                });
                let t = *tag;
                self.tlb.invalidate_address(linear, |e| {
                    e.kind == t.kind
                        && e.ep4ta == t.ep4ta
                        && e.vpid == t.vpid
                        && (e.pcid == t.pcid || e.global)
                });
            }
            _ => {}
        }
    }

    /// Translates a guest-physical address the CPU itself accesses (or the VMM wants
    /// resolved as the CPU would, e.g. to load a guest image): through EPT when it is
    /// on, else unchanged. Sets EPT A/D flags; uses no TLB entry.
    pub fn translate_gpa(
        &mut self,
        mem: &physmem::PhysMap,
        ctx: &PagingContext,
        gpa: u64,
        access: Access,
    ) -> Result<u64, Fault> {
        let Some(eptp) = ctx.eptp else {
            return Ok(gpa);
        };
        let mut pending = PendingAd::new();
        let mut hpa = 0;
        for _ in 0..MAX_AD_RETRIES {
            pending.clear();
            hpa = ept::walk(
                mem,
                eptp,
                gpa,
                EptAccess::Data(access.kind),
                None,
                &mut pending,
            )?
            .hpa;
            match pending.commit(mem) {
                Commit::Done => return Ok(hpa),
                Commit::Raced => {}
                Commit::BadHpa(hpa) => return Err(Fault::BadHpa { hpa }),
            }
        }
        Ok(hpa)
    }

    /// Reads the four PDPTEs for PAE paging from CR3[31:5] as MOV to CR3/CR0/CR4 and VM
    /// entry do (SDM 4.4.1), through EPT when it is on (an EPT violation then has no
    /// guest-linear address, Table 28-7 bit 7). `Err(Fault::PdpteReserved)` if a present
    /// PDPTE has reserved bits: the caller raises #GP(0) or fails the VM entry.
    pub fn load_pdptes(
        &mut self,
        mem: &physmem::PhysMap,
        ctx: &PagingContext,
    ) -> Result<[u64; 4], Fault> {
        const RESERVED: u64 = 0x1e6 | (!0u64 << MAXPHYADDR); // bits 2:1, 8:5, 63:M
        let base = ctx.cr3 & 0xffff_ffe0;
        let mut pending = PendingAd::new();
        let mut pdptes = [0u64; 4];
        for _ in 0..MAX_AD_RETRIES {
            pending.clear();
            for (i, pdpte) in pdptes.iter_mut().enumerate() {
                let gpa = base + 8 * i as u64;
                let hpa = match ctx.eptp {
                    None => gpa,
                    Some(eptp) => {
                        let access = EptAccess::PagingStructure {
                            write: eptp & EPTP_AD != 0,
                        };
                        ept::walk(mem, eptp, gpa, access, None, &mut pending)?.hpa
                    }
                };
                *pdpte = mem.read_u64(hpa).ok_or(Fault::BadHpa { hpa })?;
                if *pdpte & PTE_P != 0 && *pdpte & RESERVED != 0 {
                    return Err(Fault::PdpteReserved {
                        index: i as u8,
                        pdpte: *pdpte,
                    });
                }
            }
            match pending.commit(mem) {
                Commit::Done => return Ok(pdptes),
                Commit::Raced => {}
                Commit::BadHpa(hpa) => return Err(Fault::BadHpa { hpa }),
            }
        }
        Ok(pdptes)
    }

    /// INVLPG (SDM 4.10.4.1): the TLB entries of the page containing `linear` for the
    /// current PCID, and global entries for it whatever their PCID; linear and combined
    /// mappings of the current VPID, for all EP4TAs (SDM 28.4.3.1).
    pub fn invlpg(&mut self, ctx: &PagingContext, linear: u64) {
        let linear = effective_linear(ctx, linear);
        let (vpid, pcid) = (ctx.vpid, current_pcid(ctx));
        self.tlb.invalidate_address(linear, |e| {
            e.is_linear_or_combined() && e.vpid == vpid && (e.pcid == pcid || e.global)
        });
    }

    /// INVPCID (SDM Vol. 2 INVPCID, 4.10.4.1) for the current VPID. `kind` is the type
    /// register: 0 individual address (not global), 1 single context (not global),
    /// 2 all contexts including global, 3 all contexts except global. `Err` means the
    /// CPU raises #GP(0).
    pub fn invpcid(
        &mut self,
        ctx: &PagingContext,
        kind: u32,
        pcid: u16,
        linear: u64,
    ) -> Result<(), InvalidationError> {
        if kind > 3 {
            return Err(InvalidationError::InvalidType);
        }
        let pcide = ctx.cr4 & CR4_PCIDE != 0;
        let la_bits = if ctx.cr4 & CR4_LA57 != 0 { 57 } else { 48 };
        if pcid > 0xfff
            || (kind <= 1 && !pcide && pcid != 0)
            || (kind == 0 && !is_canonical(linear, la_bits))
        {
            return Err(InvalidationError::InvalidOperand);
        }
        let vpid = ctx.vpid;
        let mine = move |e: &Entry| e.is_linear_or_combined() && e.vpid == vpid;
        match kind {
            0 => self
                .tlb
                .invalidate_address(linear, |e| mine(e) && e.pcid == pcid && !e.global),
            1 => self
                .tlb
                .invalidate_where(|e| mine(e) && e.pcid == pcid && !e.global),
            2 => self.tlb.invalidate_where(mine),
            _ => self.tlb.invalidate_where(|e| mine(e) && !e.global),
        }
        Ok(())
    }

    /// MOV to CR3 (SDM 4.10.4.1), called with the context *before* the write: with
    /// CR4.PCIDE = 0, the non-global entries of PCID 0; with CR4.PCIDE = 1, the
    /// non-global entries of the new PCID unless bit 63 (NOFLUSH) is set. The caller
    /// loads the new CR3 (without bit 63) and, in PAE mode, the PDPTEs.
    pub fn on_cr3_write(&mut self, ctx_before: &PagingContext, new_cr3: u64) {
        let pcide = ctx_before.cr4 & CR4_PCIDE != 0;
        if pcide && new_cr3 & CR3_NOFLUSH != 0 {
            return;
        }
        let pcid = if pcide {
            (new_cr3 & CR3_PCID_MASK) as u16
        } else {
            0
        };
        let vpid = ctx_before.vpid;
        self.tlb.invalidate_where(|e| {
            e.is_linear_or_combined() && e.vpid == vpid && e.pcid == pcid && !e.global
        });
    }

    /// MOV to CR0 / CR4 (SDM 4.10.4.1): everything of the current VPID (global entries
    /// and all PCIDs included) when CR0.PG goes 1 -> 0, CR4.PGE changes, or CR4.PCIDE
    /// goes 1 -> 0; the entries usable with the current PCID when CR4.PAE changes or
    /// CR4.SMEP goes 0 -> 1. Nothing else: CR0.WP, CR4.SMAP/PKE/PSE changes take effect
    /// on the next access through the rights check, as on hardware.
    pub fn on_cr0_cr4_write(&mut self, before: &PagingContext, after: &PagingContext) {
        let vpid = after.vpid;
        let fell = |reg_b: u64, reg_a: u64, bit: u64| reg_b & bit != 0 && reg_a & bit == 0;
        let changed = |reg_b: u64, reg_a: u64, bit: u64| (reg_b ^ reg_a) & bit != 0;
        if fell(before.cr0, after.cr0, CR0_PG)
            || changed(before.cr4, after.cr4, CR4_PGE)
            || fell(before.cr4, after.cr4, CR4_PCIDE)
        {
            self.tlb
                .invalidate_where(|e| e.is_linear_or_combined() && e.vpid == vpid);
        } else if changed(before.cr4, after.cr4, CR4_PAE) || fell(after.cr4, before.cr4, CR4_SMEP) {
            let pcid = current_pcid(after);
            self.tlb.invalidate_where(|e| {
                e.is_linear_or_combined() && e.vpid == vpid && (e.pcid == pcid || e.global)
            });
        }
    }

    /// INVVPID from the VMM (SDM Vol. 3C 30.3 INVVPID, 28.4.3.1): linear and combined
    /// mappings (all EP4TAs). Types: 0 individual address, 1 single context, 2 all
    /// contexts (every VPID but 0), 3 single context retaining globals. `Err` is the
    /// VMfailValid of an invalid type or operand (VPID 0 for types 0, 1 and 3; a
    /// non-canonical address for type 0).
    pub fn invvpid(&mut self, kind: u32, vpid: u16, linear: u64) -> Result<(), InvalidationError> {
        if kind > 3 {
            return Err(InvalidationError::InvalidType);
        }
        if (kind != 2 && vpid == 0) || (kind == 0 && !is_canonical(linear, 48)) {
            return Err(InvalidationError::InvalidOperand);
        }
        let mine = move |e: &Entry| e.is_linear_or_combined() && e.vpid == vpid;
        match kind {
            0 => self.tlb.invalidate_address(linear, mine),
            1 => self.tlb.invalidate_where(mine),
            2 => self
                .tlb
                .invalidate_where(|e| e.is_linear_or_combined() && e.vpid != 0),
            _ => self.tlb.invalidate_where(|e| mine(e) && !e.global),
        }
        Ok(())
    }

    /// INVEPT from the VMM (SDM Vol. 3C 30.3 INVEPT, 28.4.3.1): guest-physical and
    /// combined mappings (all VPIDs and PCIDs). Types: 1 single context (the EP4TA of
    /// `eptp`), 2 all contexts. `Err` is VMfailValid.
    pub fn invept(&mut self, kind: u32, eptp: u64) -> Result<(), InvalidationError> {
        let ept_mapping =
            |e: &Entry| matches!(e.kind, MappingKind::Combined | MappingKind::GuestPhysical);
        match kind {
            1 => {
                if ept::eptp_levels(eptp).is_none() || eptp & !(EPT_ADDR_MASK | 0x7f) != 0 {
                    return Err(InvalidationError::InvalidOperand);
                }
                let root = ept::ep4ta(eptp);
                self.tlb
                    .invalidate_where(|e| ept_mapping(e) && e.ep4ta == root);
            }
            2 => self.tlb.invalidate_where(ept_mapping),
            _ => return Err(InvalidationError::InvalidType),
        }
        Ok(())
    }

    /// VM entry or VM exit (SDM Vol. 3C 28.4.3.3): with "enable VPID" = 0 (the vCPU
    /// runs with VPID 0), both invalidate the linear and combined mappings of VPID 0.
    /// With a VPID, nothing is invalidated.
    pub fn on_vm_entry_or_exit(&mut self, vpid: u16) {
        if vpid == 0 {
            self.tlb
                .invalidate_where(|e| e.is_linear_or_combined() && e.vpid == 0);
        }
    }

    /// Invalidates everything (a vCPU reset / INIT).
    pub fn flush_all(&mut self) {
        self.tlb.clear();
    }

    pub fn stats(&self) -> TlbStats {
        self.stats
    }

    /// Number of valid TLB entries (diagnostics and tests).
    pub fn tlb_occupancy(&self) -> usize {
        self.tlb.occupancy()
    }
}
