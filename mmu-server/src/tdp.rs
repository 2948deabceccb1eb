//! TDP faults: an EPT violation on `gpa` installs the mapping at the largest level the
//! memory map allows (MMU_REFERENCE.md section 1; SDM Vol. 3C 29.3.2 for the format).
//!
//! The level is limited by: the slot (the whole 2M/1G range must be in one slot, and
//! backed by host memory with the same alignment, as a huge EPT page maps an aligned
//! host range), write tracking (a huge page cannot be partly read-only), and the
//! NX-huge-page decision [`huge_page_may_execute`].

use crate::mmu::Mmu;
use crate::nx::NxFault;
use crate::pool::FrameId;
use crate::role::{ACC_ALL, ACC_EXEC_MASK, ACC_WRITE_MASK};
use crate::spte::{self, Format};
use crate::vm::{Vm, GFN_LIMIT};
use crate::write_track::WriteFaultKind;
use ipc::{Error, FaultOutcome, SlotKind, TdpFault};

/// EPT-violation exit qualification bits (SDM Vol. 3C 28.2.1, Table 28-7).
pub mod qual {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const FETCH: u64 = 1 << 2;
    /// The guest-linear address field is valid.
    pub const GLA_VALID: u64 = 1 << 7;
    /// The access was to the final translation (not to a guest paging structure).
    pub const GLA_TRANSLATED: u64 = 1 << 8;
}

/// The outcome of a fault before it becomes a reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    pub outcome: FaultOutcome,
    pub error_code: u32,
    pub gpa: u64,
}

impl Fault {
    pub const fn of(outcome: FaultOutcome) -> Fault {
        Fault {
            outcome,
            error_code: 0,
            gpa: 0,
        }
    }
    pub const fn mmio(gpa: u64) -> Fault {
        Fault {
            outcome: FaultOutcome::Mmio,
            error_code: 0,
            gpa,
        }
    }
}

/// May a huge mapping at `level` be executable? Not while the NX-huge-page mitigation
/// applies to the VM (MMU_REFERENCE.md section 5, [`crate::nx`]): then no huge SPTE is
/// executable (`make_spte` drops ACC_EXEC above 4K) and a fetch maps 4K.
pub fn huge_page_may_execute(mmu: &Mmu, vm: &Vm, level: u8) -> bool {
    level == 1 || !vm.nx_huge_pages_apply(mmu)
}

impl Vm {
    /// The largest level (1, 2 or 3, at most `limit`) at which the memory map lets
    /// `gfn` be mapped (KVM's `req_level`; a fetch under the NX-huge-page mitigation
    /// then still maps 4K, see [`NxFault`]).
    pub fn max_mapping_level(&self, mmu: &Mmu, gfn: u64, limit: u8) -> u8 {
        let Some(slot) = self.slots.find(gfn) else {
            return 1;
        };
        for level in [3u8, 2] {
            if level > limit {
                continue;
            }
            let pages = spte::level_pages(level);
            if !slot.can_map_huge(gfn, pages) {
                continue;
            }
            if self.range_tracked(mmu, gfn & !(pages - 1), pages) {
                continue;
            }
            return level;
        }
        1
    }

    /// An EPT violation.
    pub fn tdp_fault(
        &mut self,
        mmu: &mut Mmu,
        req: &TdpFault,
        fl: &mut u32,
    ) -> Result<Fault, Error> {
        if !self.tdp {
            return Err(Error::InvalidState);
        }
        // `is_page_fault_stale`: a fault on a root that went obsolete is retried on the
        // fresh root (named in the reply).
        if !self.root_usable(mmu, &self.roots.current) {
            self.free_obsolete_roots(mmu);
            self.load_root(mmu, fl)?;
            return Ok(Fault::of(FaultOutcome::Retry));
        }
        let q = req.qualification;
        let write = q & qual::WRITE != 0;
        let fetch = q & qual::FETCH != 0;
        let gfn = req.gpa >> 12;
        if gfn >= GFN_LIMIT {
            return Err(Error::BadAddress);
        }
        let slot = *self.slots.find(gfn).ok_or(Error::BadAddress)?;
        if slot.kind == SlotKind::Mmio || (write && !slot.writable()) {
            // An MMIO hole, or a write to ROM: the device model handles it.
            return Ok(Fault::mmio(req.gpa));
        }
        let req_level = self.max_mapping_level(mmu, gfn, 3);
        let mitigation = self.nx_huge_pages_apply(mmu);
        let nx = NxFault {
            mitigation,
            // `huge_page_disallowed`: no huge page this fault maps may execute.
            disallowed: fetch && mitigation,
            req_level,
        };
        let mut goal = if nx.disallowed { 1 } else { req_level };
        let root = self.roots.current.page.ok_or(Error::InvalidState)?;
        let root_level = mmu.sps.get(root).role.level();
        let gpa = req.gpa;
        self.make_pages_available(
            mmu,
            |vm, mmu| vm.tdp_missing_tables(mmu, root, gpa, goal),
            fl,
        )?;

        // Walk down to the goal level, making tables on the way.
        let mut table = root;
        let mut level = root_level;
        loop {
            while level > goal {
                table = self.tdp_child(mmu, table, level, gfn, nx, fl)?;
                level -= 1;
            }
            // `disallowed_hugepage_adjust`: a table that replaced a huge page for a
            // fetch stays; this fault maps inside it rather than flapping it back.
            if mitigation && goal > 1 && self.nx_table_at(mmu, table, spte::index(gpa, goal)) {
                goal -= 1;
                continue;
            }
            break;
        }
        let index = spte::index(req.gpa, goal);
        let old = mmu.read_entry(table, index);
        if Format::Ept.is_present(old) && !Format::Ept.is_leaf(old, goal) {
            // A table where a huge page may now go (write tracking ended, say): the
            // huge page replaces the table and everything below it. The freed tables
            // may sit in the vCPU's paging-structure caches.
            mmu.clear_entry(table, index);
            *fl |= ipc::flush::GUEST;
        }
        let pages = spte::level_pages(goal);
        let first = gfn & !(pages - 1);
        let mut access = ACC_ALL;
        let tracked = self.gfn_tracked(mmu, gfn);
        if !slot.writable() || tracked {
            access &= !ACC_WRITE_MASK;
        }
        if !huge_page_may_execute(mmu, self, goal) {
            access &= !ACC_EXEC_MASK;
        }
        let new = Format::Ept
            .leaf(slot.hpa_of(first), goal, access)
            .ok_or(Error::InvalidState)?;
        self.install_leaf(mmu, table, index, goal, new);
        if write && tracked {
            let kind = WriteFaultKind::Direct {
                guest_page_walk: q & qual::GLA_VALID != 0 && q & qual::GLA_TRANSLATED == 0,
            };
            return self.write_protect_fault(mmu, req.rip, req.gpa, gfn, kind, fl);
        }
        mmu.stats(self.index).page_faults_fixed += 1;
        Ok(Fault::of(FaultOutcome::Fixed))
    }

    /// How many tables a fault at `gpa` mapping at level `goal` must make (the pool
    /// must have that many free frames before the walk starts).
    fn tdp_missing_tables(&self, mmu: &Mmu, root: FrameId, gpa: u64, goal: u8) -> usize {
        let mut table = root;
        let mut level = mmu.sps.get(root).role.level();
        while level > goal {
            let e = mmu.read_entry(table, spte::index(gpa, level));
            match mmu.child_of(self.index, e) {
                Some(c) if Format::Ept.is_present(e) && !Format::Ept.is_leaf(e, level) => table = c,
                _ => return (level - goal) as usize,
            }
            level -= 1;
        }
        0
    }

    /// Whether entry `index` of `table` references a table marked `nx_disallowed`.
    pub fn nx_table_at(&self, mmu: &Mmu, table: FrameId, index: usize) -> bool {
        let fmt = mmu.sps.get(table).format;
        let level = mmu.sps.get(table).role.level();
        let e = mmu.read_entry(table, index);
        fmt.is_present(e)
            && !fmt.is_leaf(e, level)
            && mmu
                .child_of(self.index, e)
                .is_some_and(|c| mmu.sps.get(c).nx_disallowed)
    }

    /// The table below entry `gfn` of `table` at `level`, made if absent. A huge leaf in
    /// the way is split eagerly for a fetch under the NX-huge-page mitigation (KVM's
    /// TDP MMU, `tdp_mmu_split_huge_page`), otherwise zapped: the rest of its range
    /// faults in again at the smaller size. A table linked for such a fetch is
    /// accounted as a possible NX huge page.
    fn tdp_child(
        &mut self,
        mmu: &mut Mmu,
        table: FrameId,
        level: u8,
        gfn: u64,
        nx: NxFault,
        fl: &mut u32,
    ) -> Result<FrameId, Error> {
        let index = spte::index(gfn << 12, level);
        let e = mmu.read_entry(table, index);
        let mut huge = None;
        if Format::Ept.is_present(e) {
            if !Format::Ept.is_leaf(e, level) {
                if let Some(child) = mmu.child_of(self.index, e) {
                    mmu.touch(child);
                    return Ok(child);
                }
            }
            if nx.disallowed && Format::Ept.is_leaf(e, level) {
                huge = Some(e);
            } else {
                mmu.clear_entry(table, index);
                *fl |= ipc::flush::GUEST;
            }
        }
        let role = mmu.sps.get(table).role.with_level(level - 1);
        let first = gfn & !(spte::level_pages(level) - 1);
        let child = mmu.new_page(self.index, first, role, Format::Ept, false, None, fl)?;
        if let Some(old) = huge {
            self.tdp_split_huge(mmu, child, level, old);
            mmu.count_leaf(self.index, level, -1);
        }
        // `link` overwrites the huge leaf, if any, with the table: the translations
        // stay the same (more rights, no fewer), so no flush is needed.
        mmu.link(table, index, child);
        mmu.account_nx(child, level, nx);
        Ok(child)
    }

    /// Fills `child` with the pieces of the huge EPT leaf `old` (which mapped at
    /// `level`): same host range, same rights and A/D bits, and execute given back
    /// where the child may execute (`make_huge_page_split_spte`: the child's role
    /// access has X, and its pieces are 4K or the mitigation is off for them).
    fn tdp_split_huge(&self, mmu: &mut Mmu, child: FrameId, level: u8, old: u64) {
        let child_level = level - 1;
        let size = spte::level_size(child_level);
        let base = Format::Ept.addr(old) & !(spte::level_size(level) - 1);
        let role = mmu.sps.get(child).role;
        let mut access = Format::Ept.leaf_access(old);
        if role.access() & ACC_EXEC_MASK != 0 && huge_page_may_execute(mmu, self, child_level) {
            access |= ACC_EXEC_MASK;
        }
        let ad = old & (spte::ept::ACCESSED | spte::ept::DIRTY);
        for i in 0..spte::ENTRIES {
            if let Some(e) = Format::Ept.leaf(base + i as u64 * size, child_level, access) {
                mmu.write_entry(child, i, e | ad);
            }
        }
        if access & ACC_WRITE_MASK != 0 {
            mmu.sps.get_mut(child).writable_filter = u64::MAX;
        }
        mmu.count_leaf(self.index, child_level, spte::ENTRIES as i64);
    }

    /// Writes a leaf and keeps the counters.
    pub fn install_leaf(
        &mut self,
        mmu: &mut Mmu,
        table: FrameId,
        index: usize,
        level: u8,
        new: u64,
    ) {
        let fmt = mmu.sps.get(table).format;
        let old = mmu.read_entry(table, index);
        if old == new {
            return;
        }
        let was_leaf = fmt.is_present(old) && fmt.is_leaf(old, level);
        mmu.write_entry(table, index, new);
        if new & spte::WRITABLE != 0 {
            let bits = if level > 1 {
                u64::MAX
            } else {
                crate::shadow_page::filter_bit(fmt.addr(new))
            };
            mmu.sps.get_mut(table).writable_filter |= bits;
        }
        if !was_leaf {
            mmu.count_leaf(self.index, level, 1);
        }
        mmu.stats(self.index).sptes_created += 1;
    }
}
