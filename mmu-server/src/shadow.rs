//! Shadow faults: a #PF under shadow paging. We walk the guest's tables (setting A/D
//! like hardware), and either tell the vmm-server to inject a #PF or build the shadow
//! path and leaf (KVM's `FNAME(page_fault)` and `FNAME(fetch)`).
//!
//! Tables of the guest are shadowed one-to-one by indirect pages keyed by (gfn, role):
//! `role.access` is the AND of the rights above the table (a table reached by two
//! paths with different rights gets two shadows), and for 32-bit guests
//! `role.quadrant` says which part of a 4-byte-entry guest table a PAE-format shadow
//! covers (a guest PD by four shadow PDs, one per GiB; a guest PT by two, one per 2
//! MiB). A guest huge page is mapped through direct pages with 4K leaves. Every guest
//! table we shadow is write-protected (see [`crate::write_track`]).

use crate::guest_walk::{GuestWalk, WalkError};
use crate::mmu::Mmu;
use crate::nx::NxFault;
use crate::permission::pfec;
use crate::pool::FrameId;
use crate::role::{PageRole, ACC_ALL, ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK};
use crate::spte::{self, Format};
use crate::tdp::{huge_page_may_execute, Fault};
use crate::vm::{Vm, GFN_LIMIT};
use crate::write_track::WriteFaultKind;
use ipc::{vcpu_flags, Error, FaultOutcome, ShadowFault, SlotKind};

impl Vm {
    /// A #PF intercepted under shadow paging.
    pub fn shadow_fault(
        &mut self,
        mmu: &mut Mmu,
        req: &ShadowFault,
        fl: &mut u32,
    ) -> Result<Fault, Error> {
        if self.tdp {
            return Err(Error::InvalidState);
        }
        if !self.root_usable(mmu, &self.roots.current) {
            self.free_obsolete_roots(mmu);
            self.load_root(mmu, fl)?;
            return Ok(Fault::of(FaultOutcome::Retry));
        }
        let access = Vm::access_of(req.error_code as u64, req.flags);
        let ac = req.flags & vcpu_flags::EFLAGS_AC != 0;
        let write = access & pfec::W != 0;
        let user = access & pfec::U != 0;

        let walk = if self.cpu_role.paging_enabled() {
            match self.walk(mmu, req.gva, access, ac, req.pkru) {
                Ok(w) => Some(w),
                Err(WalkError::PageFault { error_code }) => return Ok(inject(error_code)),
                Err(WalkError::TableNotRam { .. }) => {
                    return Ok(inject(self.not_present_error(access)))
                }
                Err(WalkError::Retry) => return Ok(Fault::of(FaultOutcome::Retry)),
            }
        } else {
            None
        };
        // Outside IA-32e mode linear addresses are 32 bits (SDM 4.1).
        let linear = if self.cpu_role.long_mode() {
            req.gva
        } else {
            req.gva & 0xFFFF_FFFF
        };
        let gpa = walk.as_ref().map_or(linear, |w| w.gpa);
        let gfn = gpa >> 12;
        if gfn >= GFN_LIMIT {
            return Err(Error::BadAddress);
        }
        let slot = *self.slots.find(gfn).ok_or(Error::BadAddress)?;
        if slot.kind == SlotKind::Mmio || (write && !slot.writable()) {
            return Ok(Fault::mmio(gpa));
        }

        // The level to map at: up to the guest's own page size, as far as the memory
        // map allows (KVM's `req_level`, capped by the walker's level); a fetch under
        // the NX-huge-page mitigation maps 4K.
        let req_level = match walk.as_ref() {
            Some(w) if w.level > 1 => self.max_mapping_level(mmu, gfn, w.level),
            _ => 1,
        };
        let mitigation = self.nx_huge_pages_apply(mmu);
        let nx = NxFault {
            mitigation,
            disallowed: access & pfec::FETCH != 0 && mitigation,
            req_level,
        };
        let goal = if nx.disallowed { 1 } else { req_level };

        let root = self.roots.current.page.ok_or(Error::InvalidState)?;
        let w = walk;
        self.make_pages_available(
            mmu,
            |vm, mmu| vm.shadow_missing_tables(mmu, root, linear, gpa, w.as_ref(), goal),
            fl,
        )?;
        let (table, level) =
            self.shadow_path(mmu, root, linear, gpa, walk.as_ref(), goal, nx, fl)?;

        let (mut acc, dirty) = walk
            .as_ref()
            .map_or((ACC_ALL, true), |w| (w.pte_access, w.dirty));
        // mmu.rst "Emulating cr0.wp": the CPU runs with WP=1, so a supervisor write
        // the guest's WP=0 allows to a read-only page becomes a writable supervisor
        // mapping; it must then not be executable by the kernel if SMEP is on (the
        // page may be a user page). The role's cr0_wp keeps these apart from WP=1.
        // Protection keys need the same: with WP=0 a supervisor write ignores the
        // key's write-disable bit, with WP=1 it does not (SDM 4.6.2); as a supervisor
        // mapping the page has no key check at all.
        let key_blocks_write = self.cpu_role.pke()
            && acc & ACC_USER_MASK != 0
            && walk
                .as_ref()
                .is_some_and(|w| (req.pkru >> (2 * (w.pkey as u32 & 0xF) + 1)) & 1 != 0);
        let wp0_write = write
            && !user
            && !self.cpu_role.cr0_wp()
            && (acc & ACC_WRITE_MASK == 0 || key_blocks_write);
        if wp0_write {
            acc |= ACC_WRITE_MASK;
            acc &= !ACC_USER_MASK;
            if self.cpu_role.smep() {
                acc &= !ACC_EXEC_MASK;
            }
        }
        let tracked = self.gfn_tracked(mmu, gfn);
        // A clean guest page is mapped read-only, so that the first write faults and
        // the walk sets its dirty bit (SDM 4.8).
        let writable = acc & ACC_WRITE_MASK != 0 && dirty && slot.writable() && !tracked;
        if !writable {
            acc &= !ACC_WRITE_MASK;
        }
        if !huge_page_may_execute(mmu, self, level) {
            acc &= !ACC_EXEC_MASK;
        }
        let first = gfn & !(spte::level_pages(level) - 1);
        let mut leaf = Format::Ia32e
            .leaf(slot.hpa_of(first), level, acc)
            .ok_or(Error::InvalidState)?;
        // SDM 4.6.2: the protection key of a page is in its leaf, bits 62:59. The CPU
        // running on our tables then applies the guest's PKRU to the guest's keys.
        if let Some(w) = walk.as_ref().filter(|_| self.cpu_role.pke()) {
            leaf |= ((w.pkey & 0xF) as u64) << 59;
        }
        let index = spte::index(linear, level);
        let old = mmu.read_entry(table, index);
        if level > 1 && Format::Ia32e.is_present(old) && !Format::Ia32e.is_leaf(old, level) {
            // A table where the huge page now goes (a direct table made while the range
            // was write-tracked, say): the huge page replaces it. The vCPU may cache
            // translations made through it.
            mmu.clear_entry(table, index);
            *fl |= ipc::flush::GUEST;
        }
        self.install_leaf(mmu, table, index, level, leaf);

        if write && !writable {
            // The only reason left is write tracking: the page is a guest page table.
            let own_translation = walk.as_ref().is_some_and(|w| {
                (w.level.max(1)..=w.levels.min(5)).any(|l| w.table_gfns[(l - 1) as usize] == gfn)
            });
            let kind = WriteFaultKind::Indirect {
                own_translation,
                event_pending: req.flags & vcpu_flags::EVENT_PENDING != 0,
            };
            return self.write_protect_fault(mmu, req.rip, req.gva, gfn, kind, fl);
        }
        mmu.stats(self.index).page_faults_fixed += 1;
        Ok(Fault::of(FaultOutcome::Fixed))
    }

    /// How many tables [`Vm::shadow_path`] may have to make: from the first level
    /// whose table is neither linked nor in the hash, every level below (the pool must
    /// have that many free frames before the path is built).
    fn shadow_missing_tables(
        &self,
        mmu: &Mmu,
        root: FrameId,
        linear: u64,
        gpa: u64,
        walk: Option<&GuestWalk>,
        goal: u8,
    ) -> usize {
        let vm = self.index;
        let mut table = root;
        let mut level = mmu.sps.get(root).role.level();
        while level > goal {
            let index = spte::index(linear, level);
            let (gfn, role) = child_key(mmu, table, level, index, gpa, walk);
            let fmt = mmu.sps.get(table).format;
            let e = mmu.read_entry(table, index);
            let linked = if fmt.is_present(e) && !fmt.is_leaf(e, level) {
                mmu.child_of(vm, e).filter(|&c| {
                    let sp = mmu.sps.get(c);
                    sp.gfn == gfn && sp.role == role
                })
            } else {
                None
            };
            match linked.or_else(|| mmu.sps.find(vm, mmu.gen(vm), gfn, role)) {
                Some(c) => table = c,
                None => return (level - goal) as usize,
            }
            level -= 1;
        }
        0
    }

    /// Makes (or finds) the shadow tables from the root down to the table at level
    /// `goal` that maps `linear`, and returns that table and its level. A huge leaf in
    /// the way is zapped (the lazy split of the NX-huge-page mitigation: the 4K pages
    /// fault in one by one); a table linked for a fetch under the mitigation is
    /// accounted as a possible NX huge page, and a later fault that meets such a table
    /// at its goal level maps inside it (`disallowed_hugepage_adjust`).
    #[allow(clippy::too_many_arguments)]
    fn shadow_path(
        &mut self,
        mmu: &mut Mmu,
        root: FrameId,
        linear: u64,
        gpa: u64,
        walk: Option<&GuestWalk>,
        goal: u8,
        nx: NxFault,
        fl: &mut u32,
    ) -> Result<(FrameId, u8), Error> {
        let vm = self.index;
        let mut table = root;
        let mut level = mmu.sps.get(root).role.level();
        let mut goal = goal;
        loop {
            if level <= goal {
                if nx.mitigation
                    && level > 1
                    && self.nx_table_at(mmu, table, spte::index(linear, level))
                {
                    goal = level - 1;
                } else {
                    break;
                }
            }
            let index = spte::index(linear, level);
            let (gfn, role) = child_key(mmu, table, level, index, gpa, walk);
            let fmt = mmu.sps.get(table).format;
            let e = mmu.read_entry(table, index);
            let mut child = None;
            if fmt.is_present(e) {
                if !fmt.is_leaf(e, level) {
                    child = mmu.child_of(vm, e).filter(|&c| {
                        let sp = mmu.sps.get(c);
                        sp.gfn == gfn && sp.role == role
                    });
                }
                if child.is_none() {
                    // The entry shadows something else than the guest now says (the
                    // meaning of the guest entry changed without a tracked write, e.g.
                    // CR4.PSE): replace it.
                    mmu.clear_entry(table, index);
                    *fl |= ipc::flush::GUEST;
                }
            }
            let c = match child {
                Some(c) => c,
                None => {
                    let c = match mmu.sps.find(vm, mmu.gen(vm), gfn, role) {
                        Some(c) => c,
                        None => {
                            let table_hpa = if role.direct() {
                                None
                            } else {
                                self.gfn_hpa(gfn)
                            };
                            mmu.new_page(vm, gfn, role, Format::Ia32e, true, table_hpa, fl)?
                        }
                    };
                    mmu.link(table, index, c);
                    // Only the direct part of the path is accounted (`FNAME(fetch)`):
                    // an indirect table shadows a guest table, never a huge page.
                    if role.direct() {
                        mmu.account_nx(c, level, nx);
                    }
                    c
                }
            };
            mmu.touch(c);
            table = c;
            level -= 1;
        }
        Ok((table, level))
    }
}

fn inject(error_code: u32) -> Fault {
    Fault {
        outcome: FaultOutcome::InjectPageFault,
        error_code,
        gpa: 0,
    }
}

/// The (gfn, role) of the table below entry `index` of `table` at `level`
/// (`kvm_mmu_child_role` plus the gfn `FNAME(fetch)` picks).
fn child_key(
    mmu: &Mmu,
    table: FrameId,
    level: u8,
    index: usize,
    gpa: u64,
    walk: Option<&GuestWalk>,
) -> (u64, PageRole) {
    let parent = mmu.sps.get(table);
    let child_level = level - 1;
    let base = parent
        .role
        .with_level(child_level)
        .with_passthrough(false)
        .with_invalid(false)
        .with_quadrant(0);
    let four_byte = base.has_4_byte_gpte();
    let direct = parent.role.direct() || walk.is_none_or(|w| w.level >= level);
    if direct {
        // Paging off, or below a guest huge page: the child maps a linear gfn range.
        let access = walk.map_or(ACC_ALL, |w| w.pte_access);
        let gfn = (gpa >> 12) & !(spte::level_pages(level) - 1);
        let quadrant = if four_byte && child_level == 1 {
            (index & 1) as u8
        } else {
            0
        };
        return (
            gfn,
            base.with_direct(true)
                .with_access(access)
                .with_quadrant(quadrant),
        );
    }
    let w = match walk {
        Some(w) => w,
        None => return (0, base),
    };
    // The rights of the guest entries down to and including the one at `level`; a PAE
    // root above a 32-bit guest's page directory has no guest entry.
    let access = if level > w.levels {
        ACC_ALL
    } else {
        w.pt_access[(level - 1) as usize]
    };
    let gfn = w.table_gfns[(child_level - 1) as usize];
    let quadrant = if !four_byte {
        0
    } else if parent.format == Format::PaeRoot {
        // One shadow PD per GiB of the guest's single PD (gva bits 31:30).
        index as u8 & 3
    } else if child_level == 1 {
        // One shadow PT per 2 MiB half of a guest PT (gva bit 21).
        (index & 1) as u8
    } else {
        0
    };
    (
        gfn,
        base.with_direct(false)
            .with_access(access)
            .with_quadrant(quadrant),
    )
}
