//! The boot info of seL4 5.0.0 (libsel4 `bootinfo_types.h`): what the kernel tells the
//! root task about its CSpace and the memory it was given. The C struct is packed, so
//! this one is too; fields are read by value.

use crate::{CPtr, Word, MAX_NUM_BOOTINFO_UNTYPED_CAPS};

/// A range of slots in the root CNode: `start..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed)]
pub struct SlotRegion {
    /// First slot of the region.
    pub start: CPtr,
    /// First slot after the region.
    pub end: CPtr,
}

impl SlotRegion {
    /// Number of slots.
    pub fn len(&self) -> usize {
        let (start, end) = (self.start, self.end);
        end.saturating_sub(start) as usize
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The slots as a range.
    pub fn range(&self) -> core::ops::Range<CPtr> {
        let (start, end) = (self.start, self.end);
        start..end
    }
}

/// What one untyped capability of the boot info covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, packed)]
pub struct UntypedDesc {
    /// Physical address of the region.
    pub paddr: Word,
    pub padding1: u8,
    pub padding2: u8,
    /// The region is 2^size_bits bytes.
    pub size_bits: u8,
    /// 1: device memory (MMIO; only frames may be made of it, and the kernel does not
    /// zero it).
    pub is_device: u8,
}

/// `seL4_BootInfo`.
#[derive(Clone, Copy)]
#[repr(C, packed)]
pub struct BootInfo {
    /// Length of the additional boot info after the first 4 KiB.
    pub extra_len: Word,
    /// This node's id (0 on a uniprocessor).
    pub node_id: Word,
    /// Number of nodes (1 on a uniprocessor).
    pub num_nodes: Word,
    /// IOMMU page-table levels (0 without an IOMMU).
    pub num_iopt_levels: Word,
    /// The root task's IPC buffer (its GS base).
    pub ipc_buffer: Word,
    /// Null-cap slots of the root CNode, free for the root task.
    pub empty: SlotRegion,
    pub shared_frames: SlotRegion,
    /// Frames holding the root task's ELF image.
    pub user_image_frames: SlotRegion,
    /// Paging structures of the root task's address space.
    pub user_image_paging: SlotRegion,
    pub io_space_caps: SlotRegion,
    pub extra_bi_pages: SlotRegion,
    /// The root CNode has 2^this slots.
    pub init_thread_cnode_size_bits: u8,
    pub init_thread_domain: Word,
    /// TSC frequency in MHz on x86.
    pub arch_info: Word,
    /// Slots holding the untyped capabilities, described by `untyped_list`.
    pub untyped: SlotRegion,
    pub untyped_list: [UntypedDesc; MAX_NUM_BOOTINFO_UNTYPED_CAPS],
}

impl BootInfo {
    /// The descriptions of the untyped caps, one per slot of `untyped`.
    pub fn untypeds(&self) -> &[UntypedDesc] {
        let n = self.untyped.len().min(MAX_NUM_BOOTINFO_UNTYPED_CAPS);
        // untyped_list has alignment 1 (packed), so a reference to it is sound.
        &self.untyped_list[..n]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};

    #[test]
    fn layout_matches_the_packed_c_struct() {
        assert_eq!(size_of::<SlotRegion>(), 16);
        assert_eq!(size_of::<UntypedDesc>(), 12);
        // 5 words, 6 slot regions, a byte, 2 words, a region, then the list.
        assert_eq!(offset_of!(BootInfo, empty), 40);
        assert_eq!(
            offset_of!(BootInfo, init_thread_cnode_size_bits),
            40 + 6 * 16
        );
        assert_eq!(offset_of!(BootInfo, init_thread_domain), 137);
        assert_eq!(offset_of!(BootInfo, untyped), 153);
        assert_eq!(offset_of!(BootInfo, untyped_list), 169);
        assert_eq!(
            size_of::<BootInfo>(),
            169 + 12 * MAX_NUM_BOOTINFO_UNTYPED_CAPS
        );
        assert!(
            size_of::<BootInfo>() <= 4096,
            "the boot info fits its frame"
        );
    }

    #[test]
    fn untypeds_follow_the_slot_region() {
        // SAFETY: BootInfo is plain integers; all-zero is a valid value.
        let mut bi: BootInfo = unsafe { core::mem::zeroed() };
        bi.untyped = SlotRegion {
            start: 100,
            end: 103,
        };
        bi.untyped_list[2] = UntypedDesc {
            paddr: 0x1000,
            padding1: 0,
            padding2: 0,
            size_bits: 12,
            is_device: 1,
        };
        assert_eq!(bi.untypeds().len(), 3);
        assert_eq!(bi.untypeds()[2].size_bits, 12);
        bi.untyped = SlotRegion { start: 5, end: 4 };
        assert!(
            bi.untypeds().is_empty(),
            "a reversed region is empty, not huge"
        );
    }
}
