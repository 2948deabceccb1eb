//! One VM's MMU: its memory map, its paging registers and roles, its root cache, and
//! the control-register transitions of MMU_REFERENCE.md section 2. Faults are in
//! [`crate::tdp`] and [`crate::shadow`], write tracking in [`crate::write_track`].
//!
//! Where KVM raises requests that run at the next VM entry (free obsolete roots, load
//! the pgd, flush, reload), we do the same work before replying: every reply that can
//! change the root names the root to run on and the flushes to perform first, so the
//! vmm-server never runs on a root we have let go of.

use crate::cr::{self, CrEffect, CR4_PCIDE};
use crate::guest_walk::{self, GuestMemory, GuestWalk, WalkError, WalkRequest, GUEST_MAXPHYADDR};
use crate::memslot::{MemSlot, MemSlots, SlotError};
use crate::mmu::Mmu;
use crate::permission::{pfec, Permissions};
use crate::pool::FrameId;
use crate::role::{self, cr0, efer, CpuRole, PageRole, PagingRegs};
use crate::root_cache::{slots, RootCache, RootInfo, Switch, NUM_PREV_ROOTS};
use crate::spte::Format;
use ipc::{flush, vcpu_flags, Badge, CreateVm, Error, InvpcidKind, MmuMode, RootReply, SlotKind};
use physmem::PhysMap;

/// The guest CPU model has 1-GByte pages (CPUID.80000001H:EDX.Page1GB), as the
/// software vCPU does.
pub const GUEST_1G_PAGES: bool = true;
/// EPT page-walk length (SDM 24.6.11): 4 levels; 5-level EPT is only needed for a guest
/// MAXPHYADDR above 48, and ours is [`GUEST_MAXPHYADDR`].
pub const TDP_LEVEL: u8 = 4;
/// CR3 bit 63 with CR4.PCIDE=1: do not flush the PCID's TLB entries (SDM 4.10.4.1).
pub const CR3_NOFLUSH: u64 = 1 << 63;
/// CR3 bits 11:0 with CR4.PCIDE=1: the PCID.
pub const CR3_PCID_MASK: u64 = 0xFFF;
/// First gfn beyond the guest's physical address space.
pub const GFN_LIMIT: u64 = 1 << (GUEST_MAXPHYADDR - 12);

/// Guest memory as the walker reads it: gpa -> slot -> hpa -> our mapping.
pub struct GuestMem<'a> {
    pub slots: &'a MemSlots,
    pub phys: &'a PhysMap,
}

impl GuestMem<'_> {
    fn hpa(&self, gpa: u64, size: u8) -> Option<(u64, SlotKind)> {
        let slot = self.slots.find(gpa >> 12)?;
        if !slot.is_memory() || !gpa.is_multiple_of(size as u64) {
            return None;
        }
        Some((slot.hpa_of(gpa >> 12) | (gpa & 0xFFF), slot.kind))
    }
}

impl GuestMemory for GuestMem<'_> {
    fn read_gpte(&self, gpa: u64, size: u8) -> Option<u64> {
        let (hpa, _) = self.hpa(gpa, size)?;
        match size {
            4 => self.phys.read_u32(hpa).map(u64::from),
            8 => self.phys.read_u64(hpa),
            _ => None,
        }
    }

    fn cmpxchg_gpte(&self, gpa: u64, size: u8, old: u64, new: u64) -> Option<bool> {
        let (hpa, kind) = self.hpa(gpa, size)?;
        if kind == SlotKind::ReadOnly {
            // Accessed/dirty updates to ROM are dropped, as writes to ROM are.
            return Some(true);
        }
        match size {
            4 => Some(self.phys.cmpxchg_u32(hpa, old as u32, new as u32)?.is_ok()),
            8 => Some(self.phys.cmpxchg_u64(hpa, old, new)?.is_ok()),
            _ => None,
        }
    }
}

/// The MMU state of one VM (one vCPU).
pub struct Vm {
    /// Index in the server's table (the `vm` of its pages).
    pub index: u8,
    pub badge: Badge,
    pub tdp: bool,
    pub root_reuse: bool,
    pub ept_ad: bool,
    pub vcpu_created: bool,
    /// The VM invoked `NxHugePageControl` to turn the NX-huge-page mitigation off
    /// (KVM's `disable_nx_huge_pages`).
    pub nx_disabled: bool,
    pub slots: MemSlots,
    pub regs: PagingRegs,
    /// The guest's CR3 (PCID bits included, NOFLUSH never).
    pub cr3: u64,
    pub cpu_role: CpuRole,
    pub root_role: PageRole,
    pub perms: Permissions,
    pub roots: RootCache,
    /// KVM's `last_retry_eip`/`last_retry_addr`: the (rip, address) of the last
    /// unprotect-and-retry, to stop a retry loop (MMU_REFERENCE.md section 6).
    pub last_retry: Option<(u64, u64)>,
}

impl Vm {
    pub fn new(index: u8, badge: Badge, req: &CreateVm) -> Result<Vm, Error> {
        let mode = MmuMode::try_from(req.mmu_mode)?;
        let mut vm = Vm {
            index,
            badge,
            tdp: mode == MmuMode::Tdp,
            root_reuse: req.root_reuse != 0,
            ept_ad: req.flags & ipc::vm_flags::EPT_AD != 0,
            vcpu_created: false,
            nx_disabled: false,
            slots: MemSlots::new(),
            regs: PagingRegs::default(),
            cr3: 0,
            cpu_role: CpuRole::default(),
            root_role: PageRole::default(),
            perms: Permissions::default(),
            roots: RootCache::new(),
            last_retry: None,
        };
        vm.compute_roles();
        Ok(vm)
    }

    /// Whether the NX-huge-page mitigation applies to this VM
    /// (`is_nx_huge_page_enabled`: the system mode is on and the VM did not disable it).
    pub fn nx_huge_pages_apply(&self, mmu: &Mmu) -> bool {
        mmu.nx.enabled() && !self.nx_disabled
    }

    /// `kvm_init_mmu`: both roles and the permission bitmap from the registers.
    pub fn compute_roles(&mut self) {
        self.cpu_role = role::cpu_role(&self.regs, false, false);
        self.root_role = if self.tdp {
            role::tdp_root_role(&self.cpu_role, self.ept_ad, TDP_LEVEL)
        } else {
            role::shadow_root_role(&self.cpu_role)
        };
        self.perms = Permissions::for_role(&self.cpu_role);
    }

    pub fn guest_mem<'a>(&'a self, mmu: &'a Mmu) -> GuestMem<'a> {
        GuestMem {
            slots: &self.slots,
            phys: &mmu.phys,
        }
    }

    /// The host page backing `gfn`, if it is memory.
    pub fn gfn_hpa(&self, gfn: u64) -> Option<u64> {
        let slot = self.slots.find(gfn)?;
        slot.is_memory().then(|| slot.hpa_of(gfn))
    }

    /// PAE paging (SDM 4.4): CR3 points to four PDPTEs.
    pub fn pae_paging(&self) -> bool {
        self.cpu_role.level() == 3 && !self.cpu_role.long_mode()
    }

    /// The PDPTEs the CPU loads from CR3 under PAE paging (SDM 4.4.1).
    fn read_pdptes(&self, mmu: &Mmu) -> [u64; 4] {
        let mut out = [0; 4];
        if self.pae_paging() {
            let mem = self.guest_mem(mmu);
            let base = self.cr3 & 0xFFFF_FFE0;
            for (i, p) in out.iter_mut().enumerate() {
                *p = mem.read_gpte(base + 8 * i as u64, 8).unwrap_or(0);
            }
        }
        out
    }

    pub fn active_pcid(&self) -> u64 {
        if self.regs.cr4 & CR4_PCIDE != 0 {
            self.cr3 & CR3_PCID_MASK
        } else {
            0
        }
    }

    /// A root page that went invalid, belongs to the other generation, or is gone.
    pub fn root_obsolete(&self, mmu: &Mmu, r: &RootInfo) -> bool {
        match r.page {
            None => false,
            Some(id) => {
                let sp = mmu.sps.get(id);
                !sp.in_use
                    || sp.vm != self.index
                    || sp.role.invalid()
                    || sp.gen != mmu.gen(self.index)
            }
        }
    }

    /// `is_root_usable`: a valid, current-generation page of the current root role,
    /// for the current pgd unless direct; for a PAE root, loaded from the same PDPTEs.
    pub fn root_usable(&self, mmu: &Mmu, r: &RootInfo) -> bool {
        let Some(id) = r.page else {
            return false;
        };
        if self.root_obsolete(mmu, r) {
            return false;
        }
        let sp = mmu.sps.get(id);
        if sp.role != self.root_role {
            return false;
        }
        if sp.role.direct() {
            return true;
        }
        r.pgd == self.cr3 && (sp.format != Format::PaeRoot || r.pdptes == self.read_pdptes(mmu))
    }

    /// Drops one root-cache reference to a root page. A root nobody holds any more is
    /// zapped if it is obsolete, if it cannot be found again (a PAE root is not hashed),
    /// or if RootReuse is off (the legacy behaviour: an unloaded root is rebuilt).
    /// Otherwise it stays in the hash, found again by role.
    fn put_root(&mut self, mmu: &mut Mmu, id: FrameId) {
        let sp = mmu.sps.get_mut(id);
        sp.root_count = sp.root_count.saturating_sub(1);
        if sp.root_count > 0 {
            return;
        }
        let sp = *mmu.sps.get(id);
        let obsolete = sp.role.invalid() || sp.gen != mmu.gen(self.index);
        if obsolete || !sp.hashed || !self.root_reuse {
            mmu.zap_page(id);
        }
    }

    /// `kvm_mmu_free_roots(mask)`.
    pub fn free_roots(&mut self, mmu: &mut Mmu, mask: u8) {
        let valid = self.roots.valid_in(mask);
        for bit in 0..=NUM_PREV_ROOTS {
            if valid & (1 << bit) == 0 {
                continue;
            }
            let slot = self.roots.slot_mut(bit);
            let info = core::mem::replace(slot, RootInfo::INVALID);
            if let Some(id) = info.page {
                self.put_root(mmu, id);
            }
        }
    }

    /// `REQ_MMU_FREE_OBSOLETE_ROOTS`.
    pub fn free_obsolete_roots(&mut self, mmu: &mut Mmu) {
        let mut mask = 0;
        if self.root_obsolete(mmu, &self.roots.current) {
            mask |= slots::CURRENT;
        }
        for i in 0..NUM_PREV_ROOTS {
            if self.root_obsolete(mmu, &self.roots.prev[i]) {
                mask |= slots::previous(i);
            }
        }
        self.free_roots(mmu, mask);
    }

    /// Makes enough frames free for what `need` counts (recounted after every zap: a
    /// zapped table may be one the caller's path needed): zap the least recently used
    /// pages of this VM that no root holds (KVM's `make_mmu_pages_available`), then let
    /// go of previous roots, least recently used first. Zapped tables may be cached by
    /// the vCPU, through any cached root: flush the whole guest (KVM's remote flush
    /// after a zap).
    pub fn make_pages_available(
        &mut self,
        mmu: &mut Mmu,
        need: impl Fn(&Vm, &Mmu) -> usize,
        fl: &mut u32,
    ) -> Result<(), Error> {
        while mmu.pool.free_frames() < need(self, mmu) {
            if let Some(id) = mmu.lru_unrooted(self.index) {
                // The page may be reachable from any cached root, under any PCID.
                mmu.zap_page(id);
                *fl |= flush::GUEST;
                continue;
            }
            let Some(i) = (0..NUM_PREV_ROOTS)
                .rev()
                .find(|&i| self.roots.prev[i].is_valid())
            else {
                return Err(Error::OutOfMemory);
            };
            let info = core::mem::replace(&mut self.roots.prev[i], RootInfo::INVALID);
            if let Some(id) = info.page {
                self.put_root(mmu, id);
                if mmu.sps.get(id).in_use && mmu.sps.get(id).root_count == 0 {
                    mmu.zap_page(id);
                }
            }
        }
        Ok(())
    }

    /// `kvm_mmu_reload` / `kvm_mmu_load`: make sure a usable current root is loaded,
    /// finding it by role in the hash (TDP roots by role alone, shadow roots by the
    /// gfn CR3 points to) or allocating it. A newly loaded root needs a flush of the
    /// current context (`kvm_mmu_load` ends with `flush_tlb_current`).
    pub fn load_root(&mut self, mmu: &mut Mmu, fl: &mut u32) -> Result<(), Error> {
        if self.roots.current.is_valid() {
            if self.root_usable(mmu, &self.roots.current) {
                return Ok(());
            }
            self.free_roots(mmu, slots::CURRENT);
        }
        let vm = self.index;
        let role = self.root_role;
        // 32-bit guests (2-level, PAE) and paging off under shadow paging run on a PAE
        // root: four PDPTEs (SDM 4.4.1).
        let pae_root = !self.tdp && role.level() == 3;
        let (gfn, hashed) = if self.tdp || role.direct() {
            (0, true)
        } else if pae_root {
            ((self.cr3 & 0xFFFF_F000) >> 12, false)
        } else {
            ((self.cr3 & guest_walk_addr_mask()) >> 12, true)
        };
        let found = if hashed {
            mmu.sps.find(vm, mmu.gen(vm), gfn, role)
        } else {
            None
        };
        let id = match found {
            Some(id) => id,
            None => {
                if pae_root {
                    // Reclaim until a frame below 4 GiB is free (or nothing is left).
                    self.make_pages_available(
                        mmu,
                        |_, mmu| {
                            if mmu.pool.has_free_below(crate::mmu::PAE_ROOT_LIMIT) {
                                1
                            } else {
                                mmu.pool.free_frames() + 1
                            }
                        },
                        fl,
                    )?;
                } else {
                    self.make_pages_available(mmu, |_, _| 1, fl)?;
                }
                let format = if self.tdp {
                    Format::Ept
                } else if pae_root {
                    Format::PaeRoot
                } else {
                    Format::Ia32e
                };
                let table_hpa = self.gfn_hpa(gfn);
                let id = mmu.new_page(vm, gfn, role, format, hashed, table_hpa, fl)?;
                mmu.stats(vm).roots_allocated += 1;
                id
            }
        };
        let sp = mmu.sps.get_mut(id);
        sp.root_count += 1;
        sp.was_root = true;
        mmu.touch(id);
        self.roots.current = RootInfo {
            page: Some(id),
            pgd: self.cr3,
            pdptes: self.read_pdptes(mmu),
        };
        *fl |= flush::CURRENT;
        Ok(())
    }

    /// `fast_pgd_switch` for the current (pgd, role), then reload on a miss.
    pub fn switch_root(&mut self, mmu: &mut Mmu, fl: &mut u32) -> Result<Switch, Error> {
        let mut rc = self.roots;
        let sw = rc.fast_switch(|r| self.root_usable(mmu, r));
        self.roots = rc;
        match sw {
            Switch::Hit => {
                mmu.stats(self.index).root_cache_hits += 1;
                // `kvm_mmu_new_pgd` resets write flooding on a reused root: the guest
                // is using that table for translation again.
                if let Some(id) = self.roots.current.page {
                    mmu.touch(id);
                }
            }
            Switch::Miss => {
                mmu.stats(self.index).root_cache_misses += 1;
                self.free_roots(mmu, slots::CURRENT);
            }
        }
        self.load_root(mmu, fl)?;
        Ok(sw)
    }

    /// `kvm_mmu_reset_context`. Legacy: unload every root, recompute the roles, reload.
    /// RootReuse: recompute the roles and switch to the root of the new role through
    /// the root cache, keeping the others; a shadow root switch flushes the current
    /// context, because the vCPU's TLB holds translations made through the old root's
    /// entries, which encoded the old role's permissions (CR0.WP=0 tricks, SMEP).
    pub fn reset_context(&mut self, mmu: &mut Mmu, fl: &mut u32) -> Result<(), Error> {
        if !self.root_reuse {
            self.free_roots(mmu, slots::ALL);
            self.compute_roles();
            return self.load_root(mmu, fl);
        }
        let before = self.roots.current.page;
        self.compute_roles();
        if self.root_usable(mmu, &self.roots.current) {
            return Ok(());
        }
        self.switch_root(mmu, fl)?;
        if self.roots.current.page != before {
            *fl |= flush::CURRENT;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        mmu: &mut Mmu,
        eff: CrEffect,
        old_role: CpuRole,
        fl: &mut u32,
    ) -> Result<(), Error> {
        if eff.unload {
            self.free_roots(mmu, slots::ALL);
        }
        if eff.reset_context {
            self.reset_context(mmu, fl)?;
        } else if eff.init_mmu {
            self.compute_roles();
        }
        *fl |= eff.flush;
        // Beyond KVM: CR4.PSE changes what a 32-bit PDE with PS=1 means (SDM 4.3) but is
        // no part of the page role, so tables built under the old meaning would be found
        // again by role. Zap them (rare: the guest changes PSE with paging on).
        if !self.tdp
            && self.cpu_role.has_4_byte_gpte()
            && old_role.paging_enabled()
            && old_role.has_4_byte_gpte()
            && old_role.pse() != self.cpu_role.pse()
        {
            self.zap_all_fast(mmu, fl)?;
        }
        self.load_root(mmu, fl)
    }

    /// `kvm_mmu_zap_all_fast`: a new generation makes every root obsolete; every page
    /// of the VM is zapped, obsolete roots freed, and a fresh root loaded.
    pub fn zap_all_fast(&mut self, mmu: &mut Mmu, fl: &mut u32) -> Result<(), Error> {
        let c = &mut mmu.vms[self.index as usize % crate::mmu::MAX_VMS];
        c.gen ^= 1;
        mmu.zap_all(self.index);
        self.free_obsolete_roots(mmu);
        *fl |= flush::GUEST;
        self.load_root(mmu, fl)
    }

    /// A write to CR0 (`kvm_set_cr0` + `kvm_post_set_cr0`).
    pub fn set_cr0(&mut self, mmu: &mut Mmu, value: u64, fl: &mut u32) -> Result<(), Error> {
        let old = self.regs.cr0;
        let old_role = self.cpu_role;
        self.regs.cr0 = value;
        // SDM Vol. 3A 10.8.5: setting PG with EFER.LME activates IA-32e mode (LMA);
        // clearing PG deactivates it.
        if value & cr0::PG != 0 && old & cr0::PG == 0 && self.regs.efer & efer::LME != 0 {
            self.regs.efer |= efer::LMA;
        }
        if value & cr0::PG == 0 {
            self.regs.efer &= !efer::LMA;
        }
        let eff = cr::post_set_cr0(old, value, self.tdp, self.root_reuse);
        self.apply(mmu, eff, old_role, fl)
    }

    /// A write to CR4 (`kvm_post_set_cr4`).
    pub fn set_cr4(&mut self, mmu: &mut Mmu, value: u64, fl: &mut u32) -> Result<(), Error> {
        let old = self.regs.cr4;
        let old_role = self.cpu_role;
        self.regs.cr4 = value;
        let eff = cr::post_set_cr4(old, value, self.tdp, self.root_reuse);
        self.apply(mmu, eff, old_role, fl)
    }

    /// A write to EFER: LMA is not writable (it follows CR0.PG), as in `kvm_set_efer`.
    pub fn set_efer(&mut self, mmu: &mut Mmu, value: u64, fl: &mut u32) -> Result<(), Error> {
        let old = self.regs.efer;
        let old_role = self.cpu_role;
        self.regs.efer = (value & !efer::LMA) | (old & efer::LMA);
        let eff = cr::post_set_efer(old, self.regs.efer, self.tdp, self.root_reuse);
        self.apply(mmu, eff, old_role, fl)
    }

    /// A write to CR3 (`kvm_set_cr3`).
    pub fn set_cr3(&mut self, mmu: &mut Mmu, value: u64, fl: &mut u32) -> Result<(), Error> {
        let pcide = self.regs.cr4 & CR4_PCIDE != 0;
        let mut cr3 = value;
        let mut noflush = false;
        let mut pcid = 0;
        if pcide {
            noflush = cr3 & CR3_NOFLUSH != 0;
            cr3 &= !CR3_NOFLUSH;
            pcid = cr3 & CR3_PCID_MASK;
        } else if cr3 & CR3_NOFLUSH != 0 {
            return Err(Error::InvalidArgument);
        }
        // SDM 4.5.2: CR3 bits above MAXPHYADDR are reserved in IA-32e mode.
        if self.cpu_role.long_mode() && cr3 >> GUEST_MAXPHYADDR != 0 {
            return Err(Error::InvalidArgument);
        }
        let pae = self.pae_paging();
        if cr3 != self.cr3 {
            self.cr3 = cr3;
            self.switch_root(mmu, fl)?;
        } else if pae {
            // PAE: the PDPTEs are reloaded even for the same CR3 (SDM 4.4.1); a root
            // built from other PDPTEs is not usable and is replaced by `load_root`.
            self.load_root(mmu, fl)?;
        }
        if !noflush {
            self.invalidate_pcid(mmu, pcid, fl);
        }
        self.load_root(mmu, fl)
    }

    /// `kvm_invalidate_pcid`.
    fn invalidate_pcid(&mut self, mmu: &mut Mmu, pcid: u64, fl: &mut u32) {
        if self.tdp {
            // Our tables are not in the scope of the invalidation, the guest's TLB
            // entries are.
            *fl |= flush::GUEST;
            return;
        }
        if self.active_pcid() == pcid {
            // KVM also syncs the root here; ours are never out of sync (no unsync
            // pages: every shadowed guest table is write-protected).
            *fl |= flush::CURRENT;
        }
        // With PCIDs off a CR3 load always flushes, so cached roots are safe to keep.
        if self.regs.cr4 & CR4_PCIDE == 0 {
            return;
        }
        // A later NOFLUSH load of this PCID must not pick up a root whose TLB entries
        // were just invalidated: free the cached roots of that PCID.
        let mut mask = 0;
        for i in 0..NUM_PREV_ROOTS {
            let r = &self.roots.prev[i];
            if r.is_valid() && r.pgd & CR3_PCID_MASK == pcid {
                mask |= slots::previous(i);
            }
        }
        self.free_roots(mmu, mask);
    }

    /// Sets every paging register at once (vCPU reset, register restore): a full
    /// context reset in both policies, and the guest's whole TLB goes.
    pub fn set_guest_regs(
        &mut self,
        mmu: &mut Mmu,
        cr0: u64,
        cr3: u64,
        cr4: u64,
        efer_v: u64,
        fl: &mut u32,
    ) -> Result<(), Error> {
        let old_role = self.cpu_role;
        self.free_roots(mmu, slots::ALL);
        self.regs = PagingRegs {
            cr0,
            cr4,
            efer: efer_v,
        };
        self.cr3 = cr3 & !CR3_NOFLUSH;
        self.last_retry = None;
        *fl |= flush::CURRENT | flush::GUEST;
        self.compute_roles();
        // No further effect beyond the reset; `apply` still catches a PSE change and
        // loads the root.
        self.apply(mmu, CrEffect::default(), old_role, fl)
    }

    /// INVLPG. Our shadow entries are never out of sync with the guest's (every
    /// shadowed guest table is write-protected), so only the vCPU's TLB entry goes.
    pub fn invlpg(&mut self, mmu: &mut Mmu, fl: &mut u32) -> Result<(), Error> {
        *fl |= flush::ADDRESS;
        self.load_root(mmu, fl)
    }

    /// INVPCID (`kvm_handle_invpcid`). Type 0 flushes the address in the request's
    /// PCID; type 1 is `kvm_invalidate_pcid`; types 2 and 3 flush the whole guest.
    pub fn invpcid(
        &mut self,
        mmu: &mut Mmu,
        kind: InvpcidKind,
        pcid: u64,
        fl: &mut u32,
    ) -> Result<(), Error> {
        match kind {
            InvpcidKind::IndividualAddress => *fl |= flush::ADDRESS,
            InvpcidKind::SingleContext => self.invalidate_pcid(mmu, pcid, fl),
            InvpcidKind::AllIncludingGlobal | InvpcidKind::AllExceptGlobal => *fl |= flush::GUEST,
        }
        self.load_root(mmu, fl)
    }

    /// The root to run on.
    pub fn root_reply(&self, mmu: &Mmu, fl: u32) -> RootReply {
        match self.roots.current.page {
            Some(id) => RootReply {
                root_hpa: mmu.hpa(id),
                flush: fl,
                root_level: mmu.sps.get(id).role.level() as u32,
            },
            None => RootReply {
                root_hpa: 0,
                flush: fl,
                root_level: 0,
            },
        }
    }

    /// Section 4: with TDP, CR0.WP is guest-owned, so the register the MMU knows may be
    /// stale; a request that carries the live value refreshes the cpu role first (KVM
    /// re-reads WP before every emulated permission check).
    pub fn refresh_live_wp(&mut self, flags: u32) {
        if !self.tdp || flags & vcpu_flags::LIVE_CR0_WP_VALID == 0 {
            return;
        }
        let live = flags & vcpu_flags::LIVE_CR0_WP != 0;
        if live != (self.regs.cr0 & cr0::WP != 0) {
            self.regs.cr0 ^= cr0::WP;
            self.compute_roles();
        }
    }

    /// The guest walk of `gva` for the access `pfec` (W/U/FETCH/IMPLICIT).
    pub fn walk(
        &self,
        mmu: &Mmu,
        gva: u64,
        access: u64,
        ac: bool,
        pkru: u32,
    ) -> Result<GuestWalk, WalkError> {
        let req = WalkRequest {
            cr3: self.cr3,
            gva,
            pfec: access,
            rflags_ac: ac,
            pkru,
            gbpages: GUEST_1G_PAGES,
        };
        guest_walk::walk(&self.guest_mem(mmu), &self.cpu_role, &self.perms, &req)
    }

    /// The #PF a walk that met a table outside guest RAM injects: not present, with
    /// the access bits (KVM injects a not-present fault there too).
    pub fn not_present_error(&self, access: u64) -> u32 {
        let mut ec = access & (pfec::W | pfec::U);
        if access & pfec::FETCH != 0
            && (self.cpu_role.smep()
                || (self.cpu_role.efer_nx() && !self.cpu_role.has_4_byte_gpte()))
        {
            ec |= pfec::FETCH;
        }
        ec as u32
    }

    /// The access bits of a request's flags.
    pub fn access_of(error_code: u64, flags: u32) -> u64 {
        let mut a = error_code & (pfec::W | pfec::U | pfec::FETCH);
        if flags & vcpu_flags::IMPLICIT != 0 {
            a |= pfec::IMPLICIT;
        }
        a
    }

    pub fn add_slot(&mut self, slot: MemSlot) -> Result<(), Error> {
        self.slots.add(slot, GFN_LIMIT).map_err(|e| match e {
            SlotError::Full => Error::OutOfMemory,
            SlotError::OutOfRange => Error::BadAddress,
            SlotError::Overlap | SlotError::NotFound => Error::InvalidArgument,
        })
    }

    /// Removes a slot: everything mapped through it must go, and every root with it
    /// (KVM zaps all fast on memslot deletion, MMU_REFERENCE.md section 2).
    pub fn remove_slot(&mut self, mmu: &mut Mmu, base_gfn: u64, fl: &mut u32) -> Result<(), Error> {
        self.slots.remove(base_gfn).map_err(|_| Error::BadAddress)?;
        self.zap_all_fast(mmu, fl)
    }

    /// Frees everything the VM holds.
    pub fn destroy(&mut self, mmu: &mut Mmu) {
        self.free_roots(mmu, slots::ALL);
        mmu.zap_all(self.index);
    }
}

/// Address bits of a 64-bit-format guest entry or CR3 (MAXPHYADDR-1):12.
pub const fn guest_walk_addr_mask() -> u64 {
    ((1u64 << GUEST_MAXPHYADDR) - 1) & !0xFFF
}

impl Vm {
    /// `GvaToGpa`: the software walk for the instruction emulator.
    pub fn gva_to_gpa(
        &mut self,
        mmu: &Mmu,
        req: &ipc::GvaToGpa,
    ) -> Result<ipc::Translation, Error> {
        self.refresh_live_wp(req.flags);
        let access = Vm::access_of(req.access as u64, req.flags);
        let ac = req.flags & vcpu_flags::EFLAGS_AC != 0;
        let fault = |error_code| ipc::Translation {
            faulted: 1,
            error_code,
            gpa: 0,
        };
        match self.walk(mmu, req.gva, access, ac, req.pkru) {
            Ok(w) => Ok(ipc::Translation {
                faulted: 0,
                error_code: 0,
                gpa: w.gpa,
            }),
            Err(WalkError::PageFault { error_code }) => Ok(fault(error_code)),
            Err(WalkError::TableNotRam { .. }) => Ok(fault(self.not_present_error(access))),
            // The tables kept changing under the walk: the vmm-server resumes the guest.
            Err(WalkError::Retry) => Err(Error::InvalidState),
        }
    }
}
