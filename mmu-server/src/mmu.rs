//! The state every VM shares: the host-physical map, the frame pool, the shadow-page
//! metadata and hash, and the per-VM counters the pages keep up to date. The
//! operations here are the ones on pages regardless of why they happen: make one, link
//! it, zap it, write-protect a gfn, reclaim when the pool runs dry.

use crate::nx::NxPolicy;
use crate::pool::{FrameId, FramePool};
use crate::role::PageRole;
use crate::shadow_page::{filter_bit, parent_link, split_link, SpTable};
use crate::spte::{self, Format, ENTRIES, WRITABLE};
use ipc::{flush, Error, Stats};
use physmem::PhysMap;

/// PAE roots must end below this host-physical address (CR3 is 32 bits wide outside
/// IA-32e mode).
pub const PAE_ROOT_LIMIT: u64 = 1 << 32;

/// Most VMs one server holds.
pub const MAX_VMS: usize = 8;

/// Per-VM counters that pages update.
#[derive(Clone, Copy, Debug, Default)]
pub struct VmCounters {
    pub stats: Stats,
    /// KVM's `mmu_valid_gen`: 0 or 1, flipped by a fast zap; pages of the other
    /// generation are obsolete.
    pub gen: u8,
    /// KVM's `indirect_shadow_pages`: pages with guest PTEs (write-tracked gfns).
    pub indirect_pages: u32,
    /// Oldest and newest page of the list of possible NX huge pages ([`crate::nx`]).
    pub nx_head: Option<FrameId>,
    pub nx_tail: Option<FrameId>,
    /// Flushes that work outside the VM's requests (recovery, a mode change) owes its
    /// vCPU; the next reply with a `flush` field carries them.
    pub pending_flush: u32,
    /// Recovery left zombie pages to free at the VM's next request.
    pub zombies: bool,
}

pub struct Mmu {
    pub phys: PhysMap,
    pub pool: FramePool,
    pub sps: SpTable,
    pub vms: [VmCounters; MAX_VMS],
    /// Advances with every request; pages remember when they were last used.
    pub tick: u64,
    /// The system-wide NX-huge-page setting.
    pub nx: NxPolicy,
}

impl Mmu {
    #[inline]
    pub fn stats(&mut self, vm: u8) -> &mut Stats {
        &mut self.vms[vm as usize % MAX_VMS].stats
    }

    #[inline]
    pub fn gen(&self, vm: u8) -> u8 {
        self.vms[vm as usize % MAX_VMS].gen
    }

    #[inline]
    pub fn hpa(&self, id: FrameId) -> u64 {
        self.pool.hpa(id)
    }

    #[inline]
    pub fn read_entry(&self, id: FrameId, index: usize) -> u64 {
        self.phys
            .read_u64(self.pool.hpa(id) + 8 * (index % ENTRIES) as u64)
            .unwrap_or(0)
    }

    #[inline]
    pub fn write_entry(&self, id: FrameId, index: usize, value: u64) {
        // The pool was checked writable at start-up.
        let _ = self
            .phys
            .write_u64(self.pool.hpa(id) + 8 * (index % ENTRIES) as u64, value);
    }

    /// The page a non-leaf entry references, if it is a live page of `vm`.
    pub fn child_of(&self, vm: u8, entry: u64) -> Option<FrameId> {
        let id = self.pool.frame_of(entry & spte::ADDR_MASK)?;
        let sp = self.sps.get(id);
        (sp.in_use && sp.vm == vm).then_some(id)
    }

    /// Marks a page used now (LRU), and resets its write-flooding count: a page that
    /// faults are still using is not one the guest is recycling (KVM's
    /// `clear_sp_write_flooding_count`).
    pub fn touch(&mut self, id: FrameId) {
        let tick = self.tick;
        let sp = self.sps.get_mut(id);
        sp.last_used = tick;
        sp.flood = 0;
    }

    /// Makes a page from a free frame (the caller has made frames available). A page
    /// with guest PTEs write-protects its gfn everywhere in the VM (`account_shadowed`):
    /// from now on a guest write to that table must fault, so that the shadow stays in
    /// sync. `table_hpa` is the host page backing that gfn. A write-protected entry may
    /// still be cached writable in the vCPU's TLB, under any PCID whose root is cached,
    /// so `flush_bits` gets GUEST then (KVM flushes remote TLBs here).
    #[allow(clippy::too_many_arguments)]
    pub fn new_page(
        &mut self,
        vm: u8,
        gfn: u64,
        role: PageRole,
        format: Format,
        hashed: bool,
        table_hpa: Option<u64>,
        flush_bits: &mut u32,
    ) -> Result<FrameId, Error> {
        let id = if format == Format::PaeRoot {
            // Outside IA-32e mode CR3 holds a 32-bit address (SDM 4.4.1): a PAE root
            // must lie below 4 GiB (KVM allocates its pae_root with GFP_DMA32).
            self.pool.alloc_below(&self.phys, PAE_ROOT_LIMIT)
        } else {
            self.pool.alloc(&self.phys)
        }
        .ok_or(Error::OutOfMemory)?;
        let gen = self.gen(vm);
        self.sps.init(id, vm, gen, gfn, role, format, self.tick);
        if hashed {
            self.sps.hash(id);
        }
        self.stats(vm).shadow_pages += 1;
        if self.sps.get(id).has_gptes() {
            self.vms[vm as usize % MAX_VMS].indirect_pages += 1;
            if let Some(hpa) = table_hpa {
                if self.write_protect_hpa(vm, hpa) {
                    *flush_bits |= flush::GUEST;
                }
            }
        }
        Ok(id)
    }

    /// Removes every writable mapping of the host page `hpa` from `vm`'s tables: 4K
    /// leaves lose W, huge leaves covering it are zapped (they cannot be partly
    /// read-only; a fault maps the rest again at 4K). Comparing host addresses also
    /// catches a guest table reachable through two aliasing slots. Returns whether
    /// anything changed.
    pub fn write_protect_hpa(&mut self, vm: u8, hpa: u64) -> bool {
        let hpa = hpa & spte::ADDR_MASK;
        let mut changed = false;
        let n = self.pool.total_frames();
        for id in 0..n as FrameId {
            let sp = *self.sps.get(id);
            if !sp.in_use
                || sp.vm != vm
                || sp.format == Format::PaeRoot
                || sp.writable_filter & filter_bit(hpa) == 0
            {
                continue;
            }
            let level = sp.role.level();
            for i in 0..ENTRIES {
                let e = self.read_entry(id, i);
                if !sp.format.is_present(e) || !sp.format.is_leaf(e, level) || e & WRITABLE == 0 {
                    continue;
                }
                if hpa.wrapping_sub(sp.format.addr(e)) >= spte::level_size(level) {
                    continue;
                }
                if level > 1 {
                    self.clear_entry(id, i);
                } else {
                    // D goes with W: our shadow leaves are only dirty when writable.
                    let dirty = if sp.format == Format::Ia32e {
                        spte::pte::DIRTY
                    } else {
                        0
                    };
                    self.write_entry(id, i, e & !(WRITABLE | dirty));
                }
                changed = true;
            }
        }
        changed
    }

    /// Links `child` below entry `index` of `parent`.
    pub fn link(&mut self, parent: FrameId, index: usize, child: FrameId) {
        let fmt = self.sps.get(parent).format;
        let e = fmt.nonleaf(self.pool.hpa(child));
        self.write_entry(parent, index, e);
        self.sps.add_parent(child, parent_link(parent, index));
    }

    /// Clears one entry (`mmu_page_zap_pte`). A leaf's huge-page count goes down; a
    /// child table loses this parent, and a child that is not hashed (a TDP table, which
    /// belongs to this one path) is zapped with everything below it. Returns whether
    /// the entry was present.
    pub fn clear_entry(&mut self, id: FrameId, index: usize) -> bool {
        let sp = *self.sps.get(id);
        let e = self.read_entry(id, index);
        if !sp.format.is_present(e) {
            return false;
        }
        self.write_entry(id, index, 0);
        let level = sp.role.level();
        if sp.format.is_leaf(e, level) {
            self.count_leaf(sp.vm, level, -1);
        } else if let Some(child) = self.child_of(sp.vm, e) {
            self.sps.remove_parent(child, parent_link(id, index));
            let c = self.sps.get(child);
            if !c.hashed && c.root_count == 0 {
                self.zap_page(child);
            }
        }
        true
    }

    /// Keeps `pages_2m`/`pages_1g` equal to the huge leaves that exist.
    pub fn count_leaf(&mut self, vm: u8, level: u8, delta: i64) {
        let s = self.stats(vm);
        let field = match level {
            2 => &mut s.pages_2m,
            3 => &mut s.pages_1g,
            _ => return,
        };
        *field = field.saturating_add_signed(delta);
    }

    /// Zaps a page (`kvm_mmu_prepare_zap_page` + commit): unlinks it from every parent,
    /// clears its entries, takes it out of the hash. A page still used as a root
    /// (`root_count > 0`) is marked invalid and kept until its last root-cache slot
    /// lets go of it (the vCPU may still be running on it: an empty root only faults);
    /// any other page's frame goes back to the pool. Returns whether the frame was
    /// freed.
    pub fn zap_page(&mut self, id: FrameId) -> bool {
        let sp = *self.sps.get(id);
        if !sp.in_use {
            return false;
        }
        self.untrack_nx(id);
        if !sp.role.invalid() {
            self.unlink_parents(id);
            for i in 0..ENTRIES {
                self.clear_entry(id, i);
            }
            self.sps.unhash(id);
            if sp.has_gptes() {
                let c = &mut self.vms[sp.vm as usize % MAX_VMS].indirect_pages;
                *c = c.saturating_sub(1);
            }
            let p = self.sps.get_mut(id);
            p.role = p.role.with_invalid(true);
            p.parent_count = 0;
            p.parent_overflow = false;
        }
        if self.sps.get(id).root_count > 0 {
            return false;
        }
        let s = self.stats(sp.vm);
        s.shadow_pages = s.shadow_pages.saturating_sub(1);
        if sp.was_root {
            s.roots_freed += 1;
        }
        self.sps.release(id);
        self.pool.free(id);
        true
    }

    /// Clears every parent entry that references `id`.
    pub(crate) fn unlink_parents(&mut self, id: FrameId) {
        let sp = *self.sps.get(id);
        let hpa = self.pool.hpa(id);
        for &link in &sp.parents[..sp.parent_count as usize] {
            let (parent, index) = split_link(link);
            let psp = *self.sps.get(parent);
            let e = self.read_entry(parent, index);
            if psp.in_use && psp.format.is_present(e) && psp.format.addr(e) == hpa {
                self.write_entry(parent, index, 0);
            }
        }
        if sp.parent_overflow {
            // More parents than recorded: find them all. A table frame's address appears
            // in no leaf, since guest memory never overlaps the pool.
            let n = self.pool.total_frames();
            for p in 0..n as FrameId {
                let psp = *self.sps.get(p);
                if !psp.in_use || psp.vm != sp.vm || psp.role.level() <= 1 {
                    continue;
                }
                for i in 0..ENTRIES {
                    let e = self.read_entry(p, i);
                    if psp.format.is_present(e)
                        && !psp.format.is_leaf(e, psp.role.level())
                        && psp.format.addr(e) == hpa
                    {
                        self.write_entry(p, i, 0);
                    }
                }
            }
        }
    }

    /// Zaps every page of `vm` with guest PTEs for `gfn` (unprotect). Returns how many.
    pub fn zap_gfn(&mut self, vm: u8, gfn: u64) -> usize {
        let mut n = 0;
        while let Some(id) = self.sps.find_by(vm, gfn, |sp| sp.has_gptes()) {
            self.zap_page(id);
            n += 1;
        }
        n
    }

    /// Zaps every page of `vm` (DestroyVm, fast zap).
    pub fn zap_all(&mut self, vm: u8) {
        let n = self.pool.total_frames();
        for id in 0..n as FrameId {
            let sp = self.sps.get(id);
            if sp.in_use && sp.vm == vm {
                self.zap_page(id);
            }
        }
    }

    /// The least recently used page of `vm` that no root-cache slot holds.
    pub fn lru_unrooted(&self, vm: u8) -> Option<FrameId> {
        let n = self.pool.total_frames();
        (0..n as FrameId)
            .filter(|&id| {
                let sp = self.sps.get(id);
                sp.in_use && sp.vm == vm && sp.root_count == 0
            })
            .min_by_key(|&id| self.sps.get(id).last_used)
    }
}
