//! The entries of the tables we build (SPTEs), in the three formats the vCPU walks as
//! hardware:
//! - [`Format::Ept`]: TDP tables, Intel EPT (SDM Vol. 3C 29.3.2): R=bit 0, W=1, X=2,
//!   memory type 5:3 on leaves, bit 7 = page (2M/1G), A=8, D=9, address 51:12.
//! - [`Format::Ia32e`]: shadow tables, IA-32e paging entries (SDM Vol. 3A 4.5): P, R/W,
//!   U/S, A, D, PS, address, XD=63. PAE page directories and page tables have the same
//!   64-bit layout (SDM 4.4.2), so the tables under a PAE root use it too.
//! - [`Format::PaeRoot`]: the four PDPTEs of a PAE root (SDM 4.4.1, Table 4-8): only P,
//!   PWT, PCD and the address; bits 2:1, 8:5 and 63 are reserved and must stay 0.

use crate::role::{ACC_EXEC_MASK, ACC_USER_MASK, ACC_WRITE_MASK};

/// Entries per table.
pub const ENTRIES: usize = 512;
/// Address bits 51:12 of every format.
pub const ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// EPT entry bits (SDM Vol. 3C Tables 29-1 to 29-6).
pub mod ept {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXEC: u64 = 1 << 2;
    /// Memory type write-back (6) in bits 5:3 of a leaf.
    pub const MEMTYPE_WB: u64 = 6 << 3;
    /// The entry maps a 2-MByte or 1-GByte page.
    pub const PAGE: u64 = 1 << 7;
    pub const ACCESSED: u64 = 1 << 8;
    pub const DIRTY: u64 = 1 << 9;
}

/// IA-32e / PAE entry bits (SDM Vol. 3A Tables 4-14 to 4-20).
pub mod pte {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITABLE: u64 = 1 << 1;
    pub const USER: u64 = 1 << 2;
    pub const ACCESSED: u64 = 1 << 5;
    pub const DIRTY: u64 = 1 << 6;
    /// PS: the entry maps a 2-MByte or 1-GByte page.
    pub const PAGE_SIZE: u64 = 1 << 7;
    pub const NX: u64 = 1 << 63;
}

/// Bit 1 is "writable" in both leaf formats; removing it is how write protection works.
pub const WRITABLE: u64 = 1 << 1;

/// Which format a table's entries have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Ept,
    Ia32e,
    PaeRoot,
}

impl Format {
    /// Whether the entry maps or references anything. An EPT entry is present when any
    /// of R/W/X is set (SDM 29.3.2).
    #[inline]
    pub fn is_present(self, spte: u64) -> bool {
        match self {
            Format::Ept => spte & (ept::READ | ept::WRITE | ept::EXEC) != 0,
            Format::Ia32e | Format::PaeRoot => spte & pte::PRESENT != 0,
        }
    }

    /// Whether a present entry at `level` maps a page (rather than referencing a table).
    #[inline]
    pub fn is_leaf(self, spte: u64, level: u8) -> bool {
        match self {
            Format::PaeRoot => false,
            Format::Ept | Format::Ia32e => level == 1 || spte & pte::PAGE_SIZE != 0,
        }
    }

    /// The host-physical address an entry holds.
    #[inline]
    pub fn addr(self, spte: u64) -> u64 {
        spte & ADDR_MASK
    }

    /// An entry referencing the table at `child_hpa`. Non-leaf entries grant everything:
    /// the effective rights are encoded in the leaf, as KVM does (a shadow table can be
    /// reached through several paths, whose rights its role's `access` records).
    #[inline]
    pub fn nonleaf(self, child_hpa: u64) -> u64 {
        let addr = child_hpa & ADDR_MASK;
        match self {
            Format::Ept => addr | ept::READ | ept::WRITE | ept::EXEC,
            Format::Ia32e => addr | pte::PRESENT | pte::WRITABLE | pte::USER | pte::ACCESSED,
            Format::PaeRoot => addr | pte::PRESENT,
        }
    }

    /// A leaf mapping `hpa` at `level` with the ACC rights `access`. `None` for the PAE
    /// root format, which cannot map pages.
    pub fn leaf(self, hpa: u64, level: u8, access: u8) -> Option<u64> {
        let addr = hpa & ADDR_MASK;
        let w = access & ACC_WRITE_MASK != 0;
        match self {
            Format::Ept => {
                // EPT has no user/supervisor distinction: every mapping is readable.
                let mut e = addr | ept::READ | ept::MEMTYPE_WB;
                if w {
                    e |= ept::WRITE;
                }
                if access & ACC_EXEC_MASK != 0 {
                    e |= ept::EXEC;
                }
                if level > 1 {
                    e |= ept::PAGE;
                }
                Some(e)
            }
            Format::Ia32e => {
                // A is preset (we only build entries that are about to be used); D is
                // preset on writable entries because writability is only granted once the
                // guest's own entry is dirty (SDM 4.8 has the CPU set them otherwise).
                let mut e = addr | pte::PRESENT | pte::ACCESSED;
                if w {
                    e |= pte::WRITABLE | pte::DIRTY;
                }
                if access & ACC_USER_MASK != 0 {
                    e |= pte::USER;
                }
                if access & ACC_EXEC_MASK == 0 {
                    e |= pte::NX;
                }
                if level > 1 {
                    e |= pte::PAGE_SIZE;
                }
                Some(e)
            }
            Format::PaeRoot => None,
        }
    }

    /// The ACC rights a leaf grants.
    pub fn leaf_access(self, spte: u64) -> u8 {
        match self {
            Format::Ept => {
                let mut a = ACC_USER_MASK;
                if spte & ept::WRITE != 0 {
                    a |= ACC_WRITE_MASK;
                }
                if spte & ept::EXEC != 0 {
                    a |= ACC_EXEC_MASK;
                }
                a
            }
            Format::Ia32e => {
                let mut a = 0;
                if spte & pte::WRITABLE != 0 {
                    a |= ACC_WRITE_MASK;
                }
                if spte & pte::USER != 0 {
                    a |= ACC_USER_MASK;
                }
                if spte & pte::NX == 0 {
                    a |= ACC_EXEC_MASK;
                }
                a
            }
            Format::PaeRoot => 0,
        }
    }
}

/// Bytes mapped by one entry at `level` (1 = 4 KiB, 2 = 2 MiB, 3 = 1 GiB, ...).
#[inline]
pub const fn level_size(level: u8) -> u64 {
    1u64 << (12 + 9 * (level as u32 - 1))
}

/// Pages (gfns) mapped by one entry at `level`.
#[inline]
pub const fn level_pages(level: u8) -> u64 {
    1u64 << (9 * (level as u32 - 1))
}

/// Index of the entry for `addr` in a table at `level` (nine address bits per level).
#[inline]
pub const fn index(addr: u64, level: u8) -> usize {
    ((addr >> (12 + 9 * (level as u32 - 1))) & 0x1FF) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::role::ACC_ALL;

    #[test]
    fn formats_round_trip_rights() {
        for f in [Format::Ept, Format::Ia32e] {
            for access in 0..=ACC_ALL {
                let e = f.leaf(0x1234_5000, 1, access).unwrap();
                assert!(f.is_present(e));
                assert!(f.is_leaf(e, 1));
                assert_eq!(f.addr(e), 0x1234_5000);
                let want = if f == Format::Ept {
                    access | ACC_USER_MASK
                } else {
                    access
                };
                assert_eq!(f.leaf_access(e), want, "{f:?} {access}");
            }
            let big = f.leaf(0x4000_0000, 3, ACC_ALL).unwrap();
            assert!(f.is_leaf(big, 3));
            assert!(!f.is_leaf(f.nonleaf(0x5000), 2));
        }
        // PDPTEs of a PAE root: P and the address only (SDM Table 4-8).
        assert_eq!(Format::PaeRoot.nonleaf(0x7000), 0x7001);
        assert_eq!(Format::PaeRoot.leaf(0x7000, 1, ACC_ALL), None);
        assert_eq!(Format::Ept.leaf(0x1000, 1, ACC_ALL).unwrap() & 0x38, 0x30);
    }

    #[test]
    fn geometry() {
        assert_eq!(level_size(1), 4096);
        assert_eq!(level_size(2), 2 << 20);
        assert_eq!(level_size(3), 1 << 30);
        assert_eq!(level_pages(3), 512 * 512);
        assert_eq!(index(0x7FFF_FFFF_F000, 4), 0xFF);
        assert_eq!(index(0xC000_0000, 3), 3);
    }
}
