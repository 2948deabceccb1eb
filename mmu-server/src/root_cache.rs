//! The root cache of one vCPU: the current root plus [`NUM_PREV_ROOTS`] previous ones,
//! most recently used first (KVM's `mmu->root` and `mmu->prev_roots`,
//! MMU_REFERENCE.md section 2).
//!
//! This module is only the bookkeeping: which slot holds which root, and how a lookup
//! rotates them. Whether a root is usable (valid page, same role, same pgd unless
//! direct, not obsolete) is decided by the caller, who knows the pages; freeing a root
//! (dropping its `root_count`, zapping it) is also the caller's.

use crate::pool::FrameId;

/// Previous roots kept per vCPU (`KVM_MMU_NUM_PREV_ROOTS`).
pub const NUM_PREV_ROOTS: usize = 3;

/// Bits naming root-cache slots (`KVM_MMU_ROOT_*`).
pub mod slots {
    pub const CURRENT: u8 = 1 << 0;
    pub const fn previous(i: usize) -> u8 {
        1 << (1 + i)
    }
    pub const ALL_PREVIOUS: u8 = 0b1110;
    pub const ALL: u8 = 0xF;
}

/// One cached root (`kvm_mmu_root_info`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootInfo {
    /// The root page, `None` when the slot is invalid (`INVALID_PAGE`).
    pub page: Option<FrameId>,
    /// The guest CR3 the root was built for (PCID bits included, NOFLUSH excluded);
    /// ignored for direct roots.
    pub pgd: u64,
    /// For a PAE root: the guest's four PDPTEs when it was loaded (SDM 4.4.1: the CPU
    /// holds them in registers from MOV CR3 on). A lookup of a PAE root whose PDPTEs
    /// changed in guest memory misses.
    pub pdptes: [u64; 4],
}

impl RootInfo {
    pub const INVALID: RootInfo = RootInfo {
        page: None,
        pgd: 0,
        pdptes: [0; 4],
    };

    #[inline]
    pub fn is_valid(&self) -> bool {
        self.page.is_some()
    }
}

/// The result of [`RootCache::fast_switch`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// A usable root is now current.
    Hit,
    /// No usable root: the current slot holds the root to free with
    /// [`slots::CURRENT`] (the least recently used one), or nothing.
    Miss,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootCache {
    pub current: RootInfo,
    pub prev: [RootInfo; NUM_PREV_ROOTS],
}

impl RootCache {
    pub const fn new() -> Self {
        RootCache {
            current: RootInfo::INVALID,
            prev: [RootInfo::INVALID; NUM_PREV_ROOTS],
        }
    }

    /// The slot named by one bit of [`slots`].
    pub fn slot_mut(&mut self, bit: usize) -> &mut RootInfo {
        match bit {
            0 => &mut self.current,
            i => &mut self.prev[(i - 1) % NUM_PREV_ROOTS],
        }
    }

    /// `fast_pgd_switch` minus its first step (freeing a current root that has no page,
    /// which cannot happen here: every root we load is a page).
    ///
    /// With a current root: keep it if usable, else swap it with `prev[0]`, `prev[1]`,
    /// `prev[2]` in turn, testing each. This rotates the cache so that the old current
    /// root ends up in `prev[0]` (MRU order); on a miss the LRU root is left current,
    /// for the caller to free.
    ///
    /// Without a current root: a usable previous root is swapped in and the ones after
    /// it move up; the last slot becomes invalid.
    pub fn fast_switch(&mut self, usable: impl Fn(&RootInfo) -> bool) -> Switch {
        if self.current.is_valid() {
            if usable(&self.current) {
                return Switch::Hit;
            }
            for i in 0..NUM_PREV_ROOTS {
                core::mem::swap(&mut self.current, &mut self.prev[i]);
                if self.current.is_valid() && usable(&self.current) {
                    return Switch::Hit;
                }
            }
            Switch::Miss
        } else {
            let Some(i) =
                (0..NUM_PREV_ROOTS).find(|&i| self.prev[i].is_valid() && usable(&self.prev[i]))
            else {
                return Switch::Miss;
            };
            core::mem::swap(&mut self.current, &mut self.prev[i]);
            for j in i..NUM_PREV_ROOTS - 1 {
                self.prev[j] = self.prev[j + 1];
            }
            self.prev[NUM_PREV_ROOTS - 1] = RootInfo::INVALID;
            Switch::Hit
        }
    }

    /// The slots selected by `mask` that hold a root.
    pub fn valid_in(&self, mask: u8) -> u8 {
        let mut out = 0;
        if mask & slots::CURRENT != 0 && self.current.is_valid() {
            out |= slots::CURRENT;
        }
        for i in 0..NUM_PREV_ROOTS {
            if mask & slots::previous(i) != 0 && self.prev[i].is_valid() {
                out |= slots::previous(i);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root(page: FrameId, pgd: u64) -> RootInfo {
        RootInfo {
            page: Some(page),
            pgd,
            pdptes: [0; 4],
        }
    }

    fn pgds(c: &RootCache) -> [Option<u64>; 4] {
        let g = |r: &RootInfo| r.page.map(|_| r.pgd);
        [g(&c.current), g(&c.prev[0]), g(&c.prev[1]), g(&c.prev[2])]
    }

    /// The rotation of KVM's comment: C 0 1 2 -> (hit on 1) 1 C 0 2.
    #[test]
    fn hit_rotates_to_mru_order() {
        let mut c = RootCache {
            current: root(1, 0xC),
            prev: [root(2, 0xA), root(3, 0xB), root(4, 0xD)],
        };
        assert_eq!(c.fast_switch(|r| r.pgd == 0xB), Switch::Hit);
        assert_eq!(pgds(&c), [Some(0xB), Some(0xC), Some(0xA), Some(0xD)]);
        // Hit on the current root: nothing moves.
        assert_eq!(c.fast_switch(|r| r.pgd == 0xB), Switch::Hit);
        assert_eq!(pgds(&c), [Some(0xB), Some(0xC), Some(0xA), Some(0xD)]);
        // Hit on the last one.
        assert_eq!(c.fast_switch(|r| r.pgd == 0xD), Switch::Hit);
        assert_eq!(pgds(&c), [Some(0xD), Some(0xB), Some(0xC), Some(0xA)]);
    }

    /// A miss leaves the LRU root current (to be freed) and the rest in MRU order.
    #[test]
    fn miss_leaves_lru_current() {
        let mut c = RootCache {
            current: root(1, 0xC),
            prev: [root(2, 0xA), root(3, 0xB), root(4, 0xD)],
        };
        assert_eq!(c.fast_switch(|_| false), Switch::Miss);
        assert_eq!(pgds(&c), [Some(0xD), Some(0xC), Some(0xA), Some(0xB)]);
    }

    /// Without a current root, a hit bubbles the rest up and invalidates the last slot.
    #[test]
    fn without_current() {
        let mut c = RootCache {
            current: RootInfo::INVALID,
            prev: [root(2, 0xA), root(3, 0xB), root(4, 0xD)],
        };
        assert_eq!(c.fast_switch(|r| r.pgd == 0xA), Switch::Hit);
        assert_eq!(pgds(&c), [Some(0xA), Some(0xB), Some(0xD), None]);
        let mut c = RootCache {
            current: RootInfo::INVALID,
            prev: [root(2, 0xA), RootInfo::INVALID, root(4, 0xD)],
        };
        assert_eq!(c.fast_switch(|r| r.pgd == 0xD), Switch::Hit);
        assert_eq!(pgds(&c), [Some(0xD), Some(0xA), None, None]);
        // A miss rotates invalid slots like any other; the caller frees what is current.
        assert_eq!(c.fast_switch(|_| false), Switch::Miss);
        assert_eq!(pgds(&c), [None, Some(0xD), Some(0xA), None]);
    }
}
