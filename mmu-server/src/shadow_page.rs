//! Shadow-page metadata: what each pool frame holds, and the (gfn, role) hash that finds
//! a table again (KVM's `mmu_page_hash`).
//!
//! Every table we build is a "shadow page" here, TDP tables included. Indirect pages
//! (a shadow of one guest page table) and the direct pages of shadow paging are hashed by
//! (VM, gfn, role), so a later fault, or a root load after a role change, finds the
//! same table with its entries intact. TDP roots are hashed by role (gfn 0); the tables
//! below a TDP root are not hashed, they belong to that root alone (as in KVM's TDP MMU).
//!
//! A table can be referenced from several parent entries (one guest table reached by
//! several paths); the parents are kept so that zapping a table unlinks it everywhere.
//! Up to [`MAX_PARENTS`] are recorded; beyond that the page is marked and a zap scans
//! the VM's tables instead (rare: it takes a guest table linked from five places).

use crate::pool::{FrameId, MAX_FRAMES};
use crate::role::PageRole;
use crate::spte::Format;

/// Parent entries recorded per page before falling back to a scan.
pub const MAX_PARENTS: usize = 4;
const BUCKETS: usize = 1024;
/// "No page" in the hash chains.
pub const NO_PAGE: FrameId = FrameId::MAX;

/// A parent link: (parent frame << 9) | entry index.
pub type ParentLink = u32;

#[inline]
pub const fn parent_link(parent: FrameId, index: usize) -> ParentLink {
    (parent as u32) << 9 | (index as u32 & 0x1FF)
}

#[inline]
pub const fn split_link(link: ParentLink) -> (FrameId, usize) {
    ((link >> 9) as FrameId, (link & 0x1FF) as usize)
}

/// Metadata of one frame.
#[derive(Clone, Copy, Debug)]
pub struct ShadowPage {
    pub in_use: bool,
    /// In the (gfn, role) hash.
    pub hashed: bool,
    /// The VM (index in the server's table) owning the page.
    pub vm: u8,
    /// The VM's `mmu_valid_gen` when the page was made.
    pub gen: u8,
    /// Emulated writes since the page was last used by a fault (KVM's
    /// `write_flooding_count`).
    pub flood: u8,
    pub format: Format,
    pub parent_count: u8,
    pub parent_overflow: bool,
    /// How many root-cache slots (current or previous) hold this page as their root.
    pub root_count: u16,
    pub hash_next: FrameId,
    pub role: PageRole,
    /// Indirect: the guest table's gfn. Direct: the first gfn mapped. TDP root: 0.
    pub gfn: u64,
    /// Tick of the last use, for LRU reclaim.
    pub last_used: u64,
    pub parents: [ParentLink; MAX_PARENTS],
    /// A one-word filter of the host pages this table maps writable (bit `hpa >> 12`
    /// mod 64; all bits for huge leaves). Write-protecting a page only scans tables
    /// whose filter has its bit: without a reverse map, this keeps `account_shadowed`
    /// from reading every leaf of the VM.
    pub writable_filter: u64,
    /// The page has been loaded as a root (its frame going back to the pool counts in
    /// `roots_freed`).
    pub was_root: bool,
    /// The table replaced a huge page for an instruction fetch under the NX-huge-page
    /// mitigation (KVM's `nx_huge_page_disallowed`): faults keep it ([`crate::nx`]).
    pub nx_disallowed: bool,
    /// On its VM's list of possible NX huge pages, between `nx_prev` and `nx_next`.
    pub nx_tracked: bool,
    pub nx_prev: Option<FrameId>,
    pub nx_next: Option<FrameId>,
    /// Recovered: unlinked and unhashed, its frame freed at the VM's next request.
    pub zombie: bool,
}

/// The [`ShadowPage::writable_filter`] bit of a host page.
#[inline]
pub const fn filter_bit(hpa: u64) -> u64 {
    1 << ((hpa >> 12) % 64)
}

impl ShadowPage {
    const EMPTY: ShadowPage = ShadowPage {
        in_use: false,
        hashed: false,
        vm: 0,
        gen: 0,
        flood: 0,
        format: Format::Ia32e,
        parent_count: 0,
        parent_overflow: false,
        root_count: 0,
        hash_next: NO_PAGE,
        role: PageRole(0),
        gfn: 0,
        last_used: 0,
        parents: [0; MAX_PARENTS],
        writable_filter: 0,
        was_root: false,
        nx_disallowed: false,
        nx_tracked: false,
        nx_prev: None,
        nx_next: None,
        zombie: false,
    };

    /// The page shadows a guest page table, so its gfn is write-tracked (KVM's
    /// `sp_has_gptes`). A PAE root is not: the PDPTEs are loaded at MOV CR3 (SDM 4.4.1),
    /// and a changed PDPT is caught when the root is looked up again.
    #[inline]
    pub fn has_gptes(&self) -> bool {
        !self.role.direct() && !self.role.passthrough() && self.format != Format::PaeRoot
    }
}

/// The metadata of every frame, plus the hash.
pub struct SpTable {
    pages: [ShadowPage; MAX_FRAMES],
    buckets: [FrameId; BUCKETS],
}

impl Default for SpTable {
    fn default() -> Self {
        Self::new()
    }
}

#[inline]
fn bucket(vm: u8, gfn: u64) -> usize {
    let h = gfn
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((vm as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F));
    (h >> 54) as usize % BUCKETS
}

impl SpTable {
    pub const fn new() -> Self {
        SpTable {
            pages: [ShadowPage::EMPTY; MAX_FRAMES],
            buckets: [NO_PAGE; BUCKETS],
        }
    }

    /// Initialises a table in place, element by element, so that the (large) table
    /// never sits on a stack.
    ///
    /// # Safety
    /// `p` must be valid for writes of a whole `SpTable`.
    pub unsafe fn init_at(p: *mut SpTable) {
        // SAFETY: the caller guarantees `p` is writable; each element is written once
        // through raw pointers, without reading the uninitialised memory.
        unsafe {
            let pages = core::ptr::addr_of_mut!((*p).pages).cast::<ShadowPage>();
            for i in 0..MAX_FRAMES {
                pages.add(i).write(ShadowPage::EMPTY);
            }
            let buckets = core::ptr::addr_of_mut!((*p).buckets).cast::<FrameId>();
            for i in 0..BUCKETS {
                buckets.add(i).write(NO_PAGE);
            }
        }
    }

    #[inline]
    pub fn get(&self, id: FrameId) -> &ShadowPage {
        &self.pages[id as usize % MAX_FRAMES]
    }

    #[inline]
    pub fn get_mut(&mut self, id: FrameId) -> &mut ShadowPage {
        &mut self.pages[id as usize % MAX_FRAMES]
    }

    /// Records a freshly allocated frame as a page.
    #[allow(clippy::too_many_arguments)]
    pub fn init(
        &mut self,
        id: FrameId,
        vm: u8,
        gen: u8,
        gfn: u64,
        role: PageRole,
        format: Format,
        tick: u64,
    ) {
        *self.get_mut(id) = ShadowPage {
            in_use: true,
            vm,
            gen,
            gfn,
            role,
            format,
            last_used: tick,
            ..ShadowPage::EMPTY
        };
    }

    /// Forgets a page (its frame goes back to the pool).
    pub fn release(&mut self, id: FrameId) {
        self.unhash(id);
        *self.get_mut(id) = ShadowPage::EMPTY;
    }

    pub fn hash(&mut self, id: FrameId) {
        let (vm, gfn) = {
            let sp = self.get(id);
            if sp.hashed {
                return;
            }
            (sp.vm, sp.gfn)
        };
        let b = bucket(vm, gfn);
        let head = self.buckets[b];
        let sp = self.get_mut(id);
        sp.hash_next = head;
        sp.hashed = true;
        self.buckets[b] = id;
    }

    pub fn unhash(&mut self, id: FrameId) {
        let (vm, gfn, next) = {
            let sp = self.get(id);
            if !sp.hashed {
                return;
            }
            (sp.vm, sp.gfn, sp.hash_next)
        };
        let b = bucket(vm, gfn);
        if self.buckets[b] == id {
            self.buckets[b] = next;
        } else {
            let mut cur = self.buckets[b];
            let mut steps = 0;
            while cur != NO_PAGE && steps < MAX_FRAMES {
                let n = self.get(cur).hash_next;
                if n == id {
                    self.get_mut(cur).hash_next = next;
                    break;
                }
                cur = n;
                steps += 1;
            }
        }
        let sp = self.get_mut(id);
        sp.hashed = false;
        sp.hash_next = NO_PAGE;
    }

    /// The hashed pages of `vm` for `gfn`, first matching `pred`.
    pub fn find_by(&self, vm: u8, gfn: u64, pred: impl Fn(&ShadowPage) -> bool) -> Option<FrameId> {
        let mut cur = self.buckets[bucket(vm, gfn)];
        let mut steps = 0;
        while cur != NO_PAGE && steps < MAX_FRAMES {
            let sp = self.get(cur);
            if sp.in_use && sp.hashed && sp.vm == vm && sp.gfn == gfn && pred(sp) {
                return Some(cur);
            }
            cur = sp.hash_next;
            steps += 1;
        }
        None
    }

    /// `kvm_mmu_find_shadow_page`: the page of `vm` for (gfn, role) of generation `gen`.
    pub fn find(&self, vm: u8, gen: u8, gfn: u64, role: PageRole) -> Option<FrameId> {
        self.find_by(vm, gfn, |sp| sp.role == role && sp.gen == gen)
    }

    /// Whether some page of `vm` shadows the guest table at `gfn`: then `gfn` is
    /// write-tracked and must never be mapped writable.
    pub fn is_tracked(&self, vm: u8, gfn: u64) -> bool {
        self.find_by(vm, gfn, |sp| sp.has_gptes()).is_some()
    }

    pub fn add_parent(&mut self, child: FrameId, link: ParentLink) {
        let sp = self.get_mut(child);
        let n = sp.parent_count as usize;
        if sp.parents[..n].contains(&link) {
            return;
        }
        if n < MAX_PARENTS {
            sp.parents[n] = link;
            sp.parent_count += 1;
        } else {
            sp.parent_overflow = true;
        }
    }

    pub fn remove_parent(&mut self, child: FrameId, link: ParentLink) {
        let sp = self.get_mut(child);
        let n = sp.parent_count as usize;
        if let Some(i) = sp.parents[..n].iter().position(|&l| l == link) {
            sp.parents[i] = sp.parents[n - 1];
            sp.parent_count -= 1;
        }
    }

    /// Every page in use, as ids.
    pub fn ids_in_use(&self) -> impl Iterator<Item = FrameId> + '_ {
        self.pages
            .iter()
            .enumerate()
            .filter(|(_, sp)| sp.in_use)
            .map(|(i, _)| i as FrameId)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_finds_by_gfn_and_role_and_forgets() {
        let mut t = SpTable::new();
        let r1 = PageRole(0).with_level(1);
        let r2 = r1.with_cr0_wp(true);
        // Many pages in the same buckets (same gfn), different roles and VMs.
        for id in 0..40u16 {
            let role = if id % 2 == 0 { r1 } else { r2 };
            t.init(
                id,
                (id / 2 % 3) as u8,
                0,
                77 + (id as u64 / 6),
                role,
                Format::Ia32e,
                0,
            );
            t.hash(id);
        }
        let found = t.find(1, 0, 77, r2).unwrap();
        let sp = t.get(found);
        assert_eq!((sp.vm, sp.gfn, sp.role), (1, 77, r2));
        assert!(t.find(1, 1, 77, r2).is_none(), "another generation");
        assert!(t.is_tracked(0, 78));
        // Unhash every page of VM 1 for gfn 77, in any chain position.
        while let Some(id) = t.find_by(1, 77, |_| true) {
            t.release(id);
        }
        assert!(t.find_by(1, 77, |_| true).is_none());
        assert!(t.find(0, 0, 77, r1).is_some(), "other VMs untouched");
        // Direct pages are not write-tracked.
        t.init(100, 2, 0, 500, r1.with_direct(true), Format::Ia32e, 0);
        t.hash(100);
        assert!(!t.is_tracked(2, 500));
    }

    #[test]
    fn parents_overflow_is_remembered() {
        let mut t = SpTable::new();
        t.init(9, 0, 0, 1, PageRole(1), Format::Ia32e, 0);
        for i in 0..6 {
            t.add_parent(9, parent_link(1, i));
        }
        t.add_parent(9, parent_link(1, 0));
        assert_eq!(t.get(9).parent_count as usize, MAX_PARENTS);
        assert!(t.get(9).parent_overflow);
        t.remove_parent(9, parent_link(1, 2));
        assert_eq!(t.get(9).parent_count, 3);
        assert_eq!(split_link(parent_link(4000, 511)), (4000, 511));
    }
}
