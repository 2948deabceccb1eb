//! Host-physical memory of the host runtime: guest RAM and the mmu-server's frame pool
//! are allocated once, at start-up, and described by one [`PhysMap`] layout that both
//! server threads use (the same hpa means the same byte in both, as on seL4 where the
//! root task maps the same frames into both PDs).

use physmem::PhysMap;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

/// Where guest RAM lives in host-physical space: 1 GiB aligned, so the mmu-server may
/// map it with 2 MiB and 1 GiB pages (its backing alignment allows them).
pub const GUEST_RAM_HPA: u64 = 0x1_0000_0000;
/// Where the page-table frame pool lives: below 4 GiB, because a PAE shadow root (the
/// page-directory-pointer table of a 32-bit guest under shadow paging) is loaded into a
/// CR3 that holds only 32 address bits outside IA-32e mode (SDM 4.4.1).
pub const FRAME_POOL_HPA: u64 = 0x4000_0000;
/// The pool may not reach guest RAM.
pub const MAX_POOL: u64 = GUEST_RAM_HPA - FRAME_POOL_HPA;

/// Local alignment of each allocation (a huge page, so the OS can back it with one).
const ALIGN: usize = 2 << 20;

/// One zeroed, 2 MiB aligned allocation.
struct Allocation {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Allocation {
    fn new(len: u64) -> Result<Allocation, MemoryError> {
        let size = usize::try_from(len).map_err(|_| MemoryError::TooLarge { len })?;
        let layout =
            Layout::from_size_align(size, ALIGN).map_err(|_| MemoryError::TooLarge { len })?;
        if size == 0 {
            return Err(MemoryError::TooLarge { len });
        }
        // SAFETY: the layout has a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) })
            .ok_or(MemoryError::OutOfHostMemory { len })?;
        Ok(Allocation { ptr, layout })
    }
}

impl Drop for Allocation {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryError {
    TooLarge { len: u64 },
    OutOfHostMemory { len: u64 },
    Map(physmem::MapError),
}

impl std::fmt::Display for MemoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MemoryError::TooLarge { len } => write!(f, "cannot allocate {len:#x} bytes"),
            MemoryError::OutOfHostMemory { len } => {
                write!(f, "host out of memory allocating {len:#x} bytes")
            }
            MemoryError::Map(e) => write!(f, "physical map: {e:?}"),
        }
    }
}

/// Guest RAM plus the frame pool, alive for as long as the servers run. The
/// [`PhysMap`]s it hands out must not outlive it.
pub struct HostMemory {
    ram: Allocation,
    ram_size: u64,
    pool: Allocation,
    pool_size: u64,
}

// SAFETY: the allocations are only reached through PhysMap, which uses atomics and
// volatile copies (its contract).
unsafe impl Send for HostMemory {}
unsafe impl Sync for HostMemory {}

impl HostMemory {
    pub fn new(ram_size: u64, pool_size: u64) -> Result<HostMemory, MemoryError> {
        if pool_size > MAX_POOL {
            return Err(MemoryError::TooLarge { len: pool_size });
        }
        Ok(HostMemory {
            ram: Allocation::new(ram_size)?,
            ram_size,
            pool: Allocation::new(pool_size)?,
            pool_size,
        })
    }

    pub fn ram_size(&self) -> u64 {
        self.ram_size
    }

    /// The hpa range of the frame pool.
    pub fn pool_range(&self) -> core::ops::Range<u64> {
        FRAME_POOL_HPA..FRAME_POOL_HPA + self.pool_size
    }

    /// The layout both servers use: guest RAM and the pool, both writable (the
    /// software vCPU sets accessed/dirty bits in EPT and shadow entries, as hardware
    /// does).
    pub fn phys_map(&self) -> Result<PhysMap, MemoryError> {
        let mut map = PhysMap::new();
        // SAFETY: both allocations live as long as `self`, and the callers keep `self`
        // alive while any map is in use (HostMemory outlives the server threads).
        unsafe {
            map.add_region(GUEST_RAM_HPA, self.ram.ptr, self.ram_size, true)
                .map_err(MemoryError::Map)?;
            map.add_region(FRAME_POOL_HPA, self.pool.ptr, self.pool_size, true)
                .map_err(MemoryError::Map)?;
        }
        Ok(map)
    }
}
