//! Architectural bit positions the paging module reads: control registers, EFER,
//! paging-structure entries (SDM Vol. 3A 4.3-4.5), EPT entries (Vol. 3C 29.3.2) and the
//! #PF error code (Vol. 3A 4.7).

/// MAXPHYADDR of the guest CPU model (QEMU TCG's default `phys-bits`): physical address
/// bits at and above it are reserved in paging-structure entries.
pub const MAXPHYADDR: u32 = 40;
/// MAXPHYADDR of the "hardware" for EPT entries (the host's width; same model).
pub const HOST_MAXPHYADDR: u32 = 40;

/// Physical-address bits (MAXPHYADDR-1):12 of a paging-structure entry.
pub const ADDR_MASK: u64 = ((1 << MAXPHYADDR) - 1) & !0xfff;
/// Physical-address bits (HOST_MAXPHYADDR-1):12 of an EPT entry or the EPTP.
pub const EPT_ADDR_MASK: u64 = ((1 << HOST_MAXPHYADDR) - 1) & !0xfff;

pub const CR0_WP: u64 = 1 << 16;
pub const CR0_PG: u64 = 1 << 31;

pub const CR4_PSE: u64 = 1 << 4;
pub const CR4_PAE: u64 = 1 << 5;
pub const CR4_PGE: u64 = 1 << 7;
pub const CR4_LA57: u64 = 1 << 12;
pub const CR4_PCIDE: u64 = 1 << 17;
pub const CR4_SMEP: u64 = 1 << 20;
pub const CR4_SMAP: u64 = 1 << 21;
pub const CR4_PKE: u64 = 1 << 22;

pub const EFER_LMA: u64 = 1 << 10;
pub const EFER_NXE: u64 = 1 << 11;

/// Bit 63 of a MOV CR3 source operand with CR4.PCIDE = 1: do not flush (SDM 4.10.4.1).
pub const CR3_NOFLUSH: u64 = 1 << 63;
/// CR3[11:0] is the PCID when CR4.PCIDE = 1.
pub const CR3_PCID_MASK: u64 = 0xfff;

// Paging-structure entry bits (all modes; 4-byte entries use the low 32).
pub const PTE_P: u64 = 1 << 0;
pub const PTE_RW: u64 = 1 << 1;
pub const PTE_US: u64 = 1 << 2;
pub const PTE_A: u64 = 1 << 5;
pub const PTE_D: u64 = 1 << 6;
pub const PTE_PS: u64 = 1 << 7;
pub const PTE_G: u64 = 1 << 8;
pub const PTE_XD: u64 = 1 << 63;
/// Protection key of a 4-level leaf, bits 62:59 (SDM 4.6.2).
pub const PTE_PKEY_SHIFT: u32 = 59;

// #PF error code (SDM 4.7).
pub const PFEC_P: u32 = 1 << 0;
pub const PFEC_W: u32 = 1 << 1;
pub const PFEC_U: u32 = 1 << 2;
pub const PFEC_RSVD: u32 = 1 << 3;
pub const PFEC_I: u32 = 1 << 4;
pub const PFEC_PK: u32 = 1 << 5;

// EPT entry bits (SDM 29.3.2).
pub const EPT_R: u64 = 1 << 0;
pub const EPT_W: u64 = 1 << 1;
pub const EPT_X: u64 = 1 << 2;
pub const EPT_RWX: u64 = EPT_R | EPT_W | EPT_X;
pub const EPT_MEMTYPE_SHIFT: u32 = 3;
pub const EPT_PS: u64 = 1 << 7;
pub const EPT_A: u64 = 1 << 8;
pub const EPT_D: u64 = 1 << 9;

// EPTP fields (SDM 24.6.11).
pub const EPTP_MEMTYPE_MASK: u64 = 0x7;
pub const EPTP_WALK_SHIFT: u32 = 3;
pub const EPTP_AD: u64 = 1 << 6;

// EPT-violation exit qualification (SDM 28.2.1, Table 28-7).
pub const EPTQ_READ: u64 = 1 << 0;
pub const EPTQ_WRITE: u64 = 1 << 1;
pub const EPTQ_FETCH: u64 = 1 << 2;
pub const EPTQ_RIGHTS_SHIFT: u32 = 3;
pub const EPTQ_LINEAR_VALID: u64 = 1 << 7;
pub const EPTQ_FINAL: u64 = 1 << 8;
