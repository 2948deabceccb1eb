//! VSpace layout: where each region sits in a PD's address space.
//!
//! ```text
//!  IMAGE_VADDR        0x0000_0000_0040_0000  ELF image frames (RW; the root task loads PT_LOAD segments)
//!  BOOT_PARAMS_VADDR  0x0000_0000_2000_0000  one frame the root task fills (R in the PD)
//!  IPC_BUFFER_VADDR   0x0000_0000_2000_2000  the TCB's IPC buffer (RW)
//!  STACK_TOP          0x0000_0000_3000_0000  stack below it (RW), an unmapped guard page below the stack
//!  DEVICE_VADDR       0x0000_0000_4000_0000  device frames (the HPET registers, uncached)
//!  POOL_VADDR         0x0000_0001_0000_0000  mmu-server page-table pool (RW in the mmu-server, R in vmm-servers)
//!  GUEST_RAM_VADDR    0x0000_0100_0000_0000  guest RAM: in a vmm-server its VM's RAM; in the
//!                                            mmu-server VM i's RAM at GUEST_RAM_VADDR + i * GUEST_RAM_WINDOW
//! ```
//! The pool and the guest RAM are retyped in order from one untyped each, so each is
//! one contiguous host-physical range: the hpa the root task writes into the boot
//! parameters plus the offset from the region's vaddr.

/// Smallest page (a `frame (4k)`).
pub const PAGE_SIZE: u64 = 1 << 12;
/// Large page (a `frame (2M)`, mapped in a page directory).
pub const LARGE_PAGE_SIZE: u64 = 1 << 21;

pub const IMAGE_VADDR: u64 = 0x0040_0000;
/// Largest ELF image region.
pub const IMAGE_MAX: u64 = 0x1000_0000;
pub const BOOT_PARAMS_VADDR: u64 = 0x2000_0000;
pub const IPC_BUFFER_VADDR: u64 = 0x2000_2000;
pub const STACK_TOP: u64 = 0x3000_0000;
/// Largest stack (it must stay above the IPC buffer with a guard page between).
pub const STACK_MAX: u64 = 0x0800_0000;
pub const DEVICE_VADDR: u64 = 0x4000_0000;
pub const POOL_VADDR: u64 = 0x1_0000_0000;
/// Largest page-table pool.
pub const POOL_MAX: u64 = 64 << 30;
pub const GUEST_RAM_VADDR: u64 = 0x100_0000_0000;
/// Size of each VM's guest-RAM window in the mmu-server, and so the largest guest RAM.
pub const GUEST_RAM_WINDOW: u64 = 64 << 30;
/// Most VMs one system holds: the mmu-server describes the pool and every VM's RAM
/// in one `physmem::PhysMap`, which holds 16 regions.
pub const MAX_VMS: usize = 15;

/// Where the mmu-server sees the RAM of the VM at `vm_index` (its position in the
/// spec's VM table, not its id).
pub const fn mmu_guest_ram_vaddr(vm_index: usize) -> u64 {
    GUEST_RAM_VADDR + vm_index as u64 * GUEST_RAM_WINDOW
}
