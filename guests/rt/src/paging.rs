//! 4-level page tables (SDM vol. 3 4.5) over identity-mapped physical memory: every
//! table a guest builds lives in memory that is mapped at its physical address, so a
//! table's physical address is also a pointer to it.

/// Entry bits (SDM vol. 3 tables 4-15 to 4-20).
pub const PRESENT: u64 = 1 << 0;
pub const WRITABLE: u64 = 1 << 1;
pub const USER: u64 = 1 << 2;
pub const ACCESSED: u64 = 1 << 5;
pub const DIRTY: u64 = 1 << 6;
/// PS: the PDE (or PDPTE) maps a large page.
pub const HUGE: u64 = 1 << 7;
pub const GLOBAL: u64 = 1 << 8;
/// XD; valid only with EFER.NXE (see [`nx`]).
pub const NX: u64 = 1 << 63;
/// Physical address bits of an entry.
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

pub const PAGE_4K: u64 = 4096;
pub const PAGE_2M: u64 = 2 << 20;

/// [`NX`] if EFER.NXE is on, else 0 (bit 63 would be reserved and fault).
pub fn nx() -> u64 {
    if crate::cpu::nx_enabled() {
        NX
    } else {
        0
    }
}

/// Why a mapping operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagingError {
    /// The frame allocator is empty.
    OutOfFrames,
    /// An address is not aligned to the page size.
    Misaligned { addr: u64 },
    /// A large page already maps the range where a table is needed.
    HugePageInTheWay { va: u64 },
    /// Nothing maps this address.
    NotMapped { va: u64 },
}

/// Hands out zeroed 4 KiB frames from an identity-mapped range.
pub struct FrameAlloc {
    next: u64,
    end: u64,
}

impl FrameAlloc {
    /// Frames in `[start, end)`, both rounded inwards to 4 KiB.
    pub const fn new(start: u64, end: u64) -> FrameAlloc {
        FrameAlloc {
            next: (start + PAGE_4K - 1) & !(PAGE_4K - 1),
            end: end & !(PAGE_4K - 1),
        }
    }

    /// A zeroed frame.
    pub fn alloc(&mut self) -> Result<u64, PagingError> {
        if self.next >= self.end {
            return Err(PagingError::OutOfFrames);
        }
        let frame = self.next;
        self.next += PAGE_4K;
        // SAFETY: the range was given to this allocator and is identity-mapped.
        unsafe { core::ptr::write_bytes(frame as *mut u8, 0, PAGE_4K as usize) };
        Ok(frame)
    }

    /// Frames not yet handed out.
    pub fn remaining(&self) -> u64 {
        (self.end - self.next.min(self.end)) / PAGE_4K
    }
}

/// The index of `va` in the table at `level` (4 = PML4 ... 1 = PT).
pub fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// A page-table tree, named by its PML4's physical address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTables {
    root: u64,
}

fn table(phys: u64) -> *mut u64 {
    phys as usize as *mut u64
}

/// Reads entry `i` of the table at `phys`.
///
/// # Safety
/// `phys` must be an identity-mapped page table.
pub unsafe fn read_entry(phys: u64, i: usize) -> u64 {
    table(phys).add(i).read_volatile()
}

/// Writes entry `i` of the table at `phys`.
///
/// # Safety
/// `phys` must be an identity-mapped page table; the caller flushes what the change
/// requires.
pub unsafe fn write_entry(phys: u64, i: usize, value: u64) {
    table(phys).add(i).write_volatile(value)
}

impl PageTables {
    /// An empty tree.
    pub fn new(alloc: &mut FrameAlloc) -> Result<PageTables, PagingError> {
        Ok(PageTables {
            root: alloc.alloc()?,
        })
    }

    /// The PML4's physical address (the CR3 value without PCID bits).
    pub fn root(&self) -> u64 {
        self.root
    }

    /// Copies PML4 entry `i` from `other`, sharing everything below it.
    pub fn share_pml4_entry(&mut self, other: &PageTables, i: usize) {
        // SAFETY: both roots are page tables built by this module.
        unsafe { write_entry(self.root, i, read_entry(other.root, i)) }
    }

    /// The table at `level` (3 = PDPT, 2 = PD, 1 = PT) that translates `va`, creating
    /// missing tables. Non-leaf entries get P|W and, if `user`, U: the leaf decides.
    pub fn table_for(
        &mut self,
        alloc: &mut FrameAlloc,
        va: u64,
        level: u32,
        user: bool,
    ) -> Result<u64, PagingError> {
        let mut phys = self.root;
        let mut l = 4;
        while l > level {
            let i = index(va, l);
            // SAFETY: `phys` is a table of this tree.
            let e = unsafe { read_entry(phys, i) };
            let next = if e & PRESENT == 0 {
                let t = alloc.alloc()?;
                // SAFETY: as above.
                unsafe {
                    write_entry(
                        phys,
                        i,
                        t | PRESENT | WRITABLE | if user { USER } else { 0 },
                    )
                };
                t
            } else if e & HUGE != 0 && l <= 3 {
                return Err(PagingError::HugePageInTheWay { va });
            } else {
                if user && e & USER == 0 {
                    // SAFETY: as above; widening U on a non-leaf only lets leaves decide.
                    unsafe { write_entry(phys, i, e | USER) };
                }
                e & ADDR_MASK
            };
            phys = next;
            l -= 1;
        }
        Ok(phys)
    }

    /// Maps the 4 KiB page at `va` to `pa` with `flags` (PRESENT is added).
    pub fn map_4k(
        &mut self,
        alloc: &mut FrameAlloc,
        va: u64,
        pa: u64,
        flags: u64,
    ) -> Result<(), PagingError> {
        check_aligned(va, PAGE_4K)?;
        check_aligned(pa, PAGE_4K)?;
        let pt = self.table_for(alloc, va, 1, flags & USER != 0)?;
        // SAFETY: `pt` is a table of this tree.
        unsafe { write_entry(pt, index(va, 1), pa | flags | PRESENT) };
        Ok(())
    }

    /// Maps the 2 MiB page at `va` to `pa` with a PS entry and `flags`.
    pub fn map_2m(
        &mut self,
        alloc: &mut FrameAlloc,
        va: u64,
        pa: u64,
        flags: u64,
    ) -> Result<(), PagingError> {
        check_aligned(va, PAGE_2M)?;
        check_aligned(pa, PAGE_2M)?;
        let pd = self.table_for(alloc, va, 2, flags & USER != 0)?;
        // SAFETY: `pd` is a table of this tree.
        unsafe { write_entry(pd, index(va, 2), pa | flags | PRESENT | HUGE) };
        Ok(())
    }

    /// Maps `[va, va + len)` to `[pa, ...)` with 4 KiB pages.
    pub fn map_range_4k(
        &mut self,
        alloc: &mut FrameAlloc,
        va: u64,
        pa: u64,
        len: u64,
        flags: u64,
    ) -> Result<(), PagingError> {
        let mut off = 0;
        while off < len {
            self.map_4k(alloc, va + off, pa + off, flags)?;
            off += PAGE_4K;
        }
        Ok(())
    }

    /// The physical address of the leaf entry that maps `va` and the leaf's level
    /// (1 = 4 KiB PTE, 2 = 2 MiB PDE), walking only present entries.
    pub fn leaf(&self, va: u64) -> Result<(u64, u32), PagingError> {
        let mut phys = self.root;
        let mut level = 4;
        loop {
            let i = index(va, level);
            let slot = phys + 8 * i as u64;
            // SAFETY: `phys` is a table of this tree.
            let e = unsafe { read_entry(phys, i) };
            if level == 1 || (e & PRESENT != 0 && e & HUGE != 0 && level <= 3) {
                return Ok((slot, level));
            }
            if e & PRESENT == 0 {
                return Err(PagingError::NotMapped { va });
            }
            phys = e & ADDR_MASK;
            level -= 1;
        }
    }

    /// The current value of the leaf entry for `va`.
    pub fn leaf_entry(&self, va: u64) -> Result<u64, PagingError> {
        let (slot, _) = self.leaf(va)?;
        // SAFETY: `slot` is an entry of this tree.
        Ok(unsafe { (slot as usize as *const u64).read_volatile() })
    }

    /// Replaces the leaf entry for `va` and invalidates `va` (INVLPG).
    pub fn set_leaf_entry(&mut self, va: u64, value: u64) -> Result<(), PagingError> {
        let (slot, _) = self.leaf(va)?;
        // SAFETY: `slot` is an entry of this tree.
        unsafe { (slot as usize as *mut u64).write_volatile(value) };
        crate::cpu::invlpg(va);
        Ok(())
    }
}

fn check_aligned(addr: u64, size: u64) -> Result<(), PagingError> {
    if addr & (size - 1) != 0 {
        Err(PagingError::Misaligned { addr })
    } else {
        Ok(())
    }
}

/// Addresses of the linker-script symbols that delimit the image's sections.
pub mod image {
    // Only the symbols' addresses are ever taken.
    extern "C" {
        static __image_start: u8;
        static __text_end: u8;
        static __user_text_start: u8;
        static __user_text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __kro_start: u8;
        static __kro_end: u8;
        static __data_start: u8;
        static __image_end: u8;
    }
    macro_rules! sym {
        ($name:ident, $sym:ident) => {
            pub fn $name() -> u64 {
                core::ptr::addr_of!($sym) as u64
            }
        };
    }
    sym!(start, __image_start);
    sym!(text_end, __text_end);
    sym!(user_text_start, __user_text_start);
    sym!(user_text_end, __user_text_end);
    sym!(rodata_start, __rodata_start);
    sym!(rodata_end, __rodata_end);
    sym!(kro_start, __kro_start);
    sym!(kro_end, __kro_end);
    sym!(data_start, __data_start);
    sym!(end, __image_end);
}
