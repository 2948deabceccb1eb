//! The guest-physical memory map of one VM: RAM, read-only memory and MMIO holes.

use ipc::SlotKind;

/// Most slots one VM has.
pub const MAX_SLOTS: usize = 16;

/// One guest-physical range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSlot {
    pub base_gfn: u64,
    pub npages: u64,
    /// Host-physical address of the first page (0 for MMIO holes).
    pub host_base: u64,
    pub kind: SlotKind,
}

impl MemSlot {
    #[inline]
    pub fn contains(&self, gfn: u64) -> bool {
        gfn.wrapping_sub(self.base_gfn) < self.npages
    }

    /// The host-physical address backing `gfn` (which must be in the slot).
    #[inline]
    pub fn hpa_of(&self, gfn: u64) -> u64 {
        self.host_base + ((gfn - self.base_gfn) << 12)
    }

    /// Whether the guest may write through a mapping of this slot.
    #[inline]
    pub fn writable(&self) -> bool {
        self.kind == SlotKind::Ram
    }

    /// Whether accesses are backed by memory (not an MMIO hole).
    #[inline]
    pub fn is_memory(&self) -> bool {
        self.kind != SlotKind::Mmio
    }

    /// Whether the `pages`-aligned range of `pages` gfns containing `gfn` lies in this
    /// slot and is backed by host memory with the same alignment: only then can one
    /// huge entry map it (SDM 29.3.2: a 2-MByte EPT page maps a 2-MByte-aligned
    /// host-physical range).
    pub fn can_map_huge(&self, gfn: u64, pages: u64) -> bool {
        let start = gfn & !(pages - 1);
        if start < self.base_gfn || start + pages > self.base_gfn + self.npages {
            return false;
        }
        self.hpa_of(start) & ((pages << 12) - 1) == 0
    }
}

/// Why a slot was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotError {
    Overlap,
    Full,
    OutOfRange,
    NotFound,
}

/// The slots of one VM, sorted by nothing (there are few).
#[derive(Clone, Debug, Default)]
pub struct MemSlots {
    slots: heapless::Vec<MemSlot, MAX_SLOTS>,
}

impl MemSlots {
    pub const fn new() -> Self {
        MemSlots {
            slots: heapless::Vec::new(),
        }
    }

    /// Adds a slot that overlaps no other. Guest-physical addresses must fit the guest
    /// MAXPHYADDR (`gfn_limit` is the first gfn beyond it).
    pub fn add(&mut self, slot: MemSlot, gfn_limit: u64) -> Result<(), SlotError> {
        let end = slot
            .base_gfn
            .checked_add(slot.npages)
            .ok_or(SlotError::OutOfRange)?;
        if slot.npages == 0 || end > gfn_limit {
            return Err(SlotError::OutOfRange);
        }
        if slot.npages > (u64::MAX >> 12) || slot.host_base.checked_add(slot.npages << 12).is_none()
        {
            return Err(SlotError::OutOfRange);
        }
        if self
            .slots
            .iter()
            .any(|s| slot.base_gfn < s.base_gfn + s.npages && s.base_gfn < end)
        {
            return Err(SlotError::Overlap);
        }
        self.slots.push(slot).map_err(|_| SlotError::Full)
    }

    /// Removes the slot starting at `base_gfn`.
    pub fn remove(&mut self, base_gfn: u64) -> Result<MemSlot, SlotError> {
        let i = self
            .slots
            .iter()
            .position(|s| s.base_gfn == base_gfn)
            .ok_or(SlotError::NotFound)?;
        Ok(self.slots.swap_remove(i))
    }

    /// The slot holding `gfn`.
    #[inline]
    pub fn find(&self, gfn: u64) -> Option<&MemSlot> {
        self.slots.iter().find(|s| s.contains(gfn))
    }

    pub fn iter(&self) -> impl Iterator<Item = &MemSlot> {
        self.slots.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ram(base_gfn: u64, npages: u64, host_base: u64) -> MemSlot {
        MemSlot {
            base_gfn,
            npages,
            host_base,
            kind: SlotKind::Ram,
        }
    }

    #[test]
    fn overlap_and_lookup() {
        let mut m = MemSlots::new();
        m.add(ram(0, 256, 0x100_0000), 1 << 28).unwrap();
        assert_eq!(
            m.add(ram(255, 2, 0x200_0000), 1 << 28),
            Err(SlotError::Overlap)
        );
        m.add(ram(256, 1, 0x300_0000), 1 << 28).unwrap();
        assert_eq!(m.find(255).unwrap().hpa_of(255), 0x100_0000 + 255 * 4096);
        assert_eq!(m.find(256).unwrap().host_base, 0x300_0000);
        assert!(m.find(257).is_none());
        assert_eq!(
            m.add(ram(1 << 28, 1, 0), 1 << 28),
            Err(SlotError::OutOfRange)
        );
        assert_eq!(m.remove(256).unwrap().npages, 1);
        assert_eq!(m.remove(256), Err(SlotError::NotFound));
    }

    #[test]
    fn huge_mappings_need_range_and_host_alignment() {
        // 4 MiB of guest RAM at gpa 0 backed at a 2-MiB-aligned hpa.
        let s = ram(0, 1024, 0x4000_0000);
        assert!(s.can_map_huge(5, 512));
        assert!(s.can_map_huge(700, 512));
        assert!(
            !s.can_map_huge(5, 512 * 512),
            "a 1G page does not fit a 4M slot"
        );
        // The same slot backed 4 KiB off alignment cannot use 2M pages anywhere.
        let t = ram(0, 1024, 0x4000_1000);
        assert!(!t.can_map_huge(5, 512));
        // A slot starting mid-2M cannot map the 2M range it starts in.
        let u = ram(256, 1024, 0x4010_0000);
        assert!(!u.can_map_huge(300, 512));
        assert!(u.can_map_huge(600, 512));
    }
}
