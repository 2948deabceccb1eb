//! kernexec's memory: the kernel's identity map with per-section permissions, the
//! per-process address spaces and the read-only kernel data (`.kro`).
//!
//! Physical memory: the image at 1 MiB (below 2 MiB), a frame pool from 4 MiB to
//! 32 MiB for page tables, user pages and the working set. Virtual memory: PML4 slot 0
//! identity-maps 0..32 MiB for the kernel (shared by every process), slot 1 holds the
//! process's user pages at [`USER_BASE`].

use crate::PROCESSES;
use rt::cpu::{self, Features, CR0_WP, CR3_NOFLUSH, CR4_PCIDE};
use rt::multiboot::BootInfo;
use rt::paging::{
    self, image, FrameAlloc, PageTables, PagingError, PAGE_2M, PAGE_4K, USER, WRITABLE,
};

/// Words of `.kro` data the system calls write.
pub const KDATA_WORDS: usize = 512;
/// Largest working set, in pages.
pub const WS_MAX_PAGES: u64 = 4096;

const POOL_START: u64 = 4 << 20;
const IDENTITY_END: u64 = 32 << 20;

/// User virtual addresses (PML4 slot 1): text, a data page, a stack page.
pub const USER_BASE: u64 = 0x80_0000_0000;
pub const USER_TEXT: u64 = USER_BASE;
pub const USER_DATA: u64 = USER_BASE + 0x10_0000;
pub const USER_STACK: u64 = USER_BASE + 0x20_0000;

/// Initial `.kro` contents: word k = k * 0x0101_0101_0101_0101.
const fn kdata_init() -> [u64; KDATA_WORDS] {
    let mut a = [0u64; KDATA_WORDS];
    let mut k = 0;
    while k < KDATA_WORDS {
        a[k] = (k as u64).wrapping_mul(0x0101_0101_0101_0101);
        k += 1;
    }
    a
}

/// Kernel data that only open/close-kernel pairs may change.
#[link_section = ".kro"]
static mut KDATA: [u64; KDATA_WORDS] = kdata_init();

/// The address of `.kro` word 0.
pub fn kdata_addr() -> u64 {
    core::ptr::addr_of!(KDATA) as u64
}

/// An address inside the kernel's text (this function's first byte).
pub fn text_probe_addr() -> u64 {
    text_probe_addr as *const () as u64
}

/// Why the address spaces could not be built.
#[derive(Clone, Copy, Debug)]
pub enum LayoutError {
    /// The loader reported less than 32 MiB of RAM (or nothing).
    NotEnoughMemory {
        ram_end: Option<u64>,
    },
    Paging(PagingError),
}

impl From<PagingError> for LayoutError {
    fn from(e: PagingError) -> LayoutError {
        LayoutError::Paging(e)
    }
}

/// One process's address space.
pub struct ProcessSpace {
    pub tables: PageTables,
    /// The frame behind [`USER_DATA`].
    pub data_frame: u64,
    pcid: u64,
    loaded_once: bool,
}

/// Every address space kernexec runs in.
pub struct AddressSpaces {
    pub kernel: PageTables,
    pub processes: [ProcessSpace; PROCESSES],
    /// The working set's first page (pages are consecutive).
    pub ws_base: u64,
    pub features: Features,
}

/// Kernel permissions for the 4 KiB page at physical (= virtual) `pa` below 2 MiB.
fn kernel_flags(pa: u64, nx: u64) -> u64 {
    if pa >= image::start() && pa < image::text_end() {
        0 // text: read-only, executable
    } else if pa >= image::user_text_start() && pa < image::kro_end() {
        nx // user text (kernel view), rodata, .kro: read-only
    } else {
        WRITABLE | nx // low memory, data, bss, free
    }
}

impl AddressSpaces {
    pub fn build(info: &BootInfo, ws_pages: u64) -> Result<AddressSpaces, LayoutError> {
        if info.ram_end().is_none_or(|end| end < IDENTITY_END) {
            return Err(LayoutError::NotEnoughMemory {
                ram_end: info.ram_end(),
            });
        }
        let nx = paging::nx();
        let mut alloc = FrameAlloc::new(POOL_START, IDENTITY_END);

        let mut kernel = PageTables::new(&mut alloc)?;
        let mut pa = 0;
        while pa < PAGE_2M {
            kernel.map_4k(&mut alloc, pa, pa, kernel_flags(pa, nx))?;
            pa += PAGE_4K;
        }
        while pa < IDENTITY_END {
            kernel.map_2m(&mut alloc, pa, pa, WRITABLE | nx)?;
            pa += PAGE_2M;
        }

        let user_text_len = image::user_text_end() - image::user_text_start();
        let mut make_process = |i: usize| -> Result<ProcessSpace, LayoutError> {
            let mut tables = PageTables::new(&mut alloc)?;
            tables.share_pml4_entry(&kernel, 0);
            tables.map_range_4k(
                &mut alloc,
                USER_TEXT,
                image::user_text_start(),
                user_text_len,
                USER,
            )?;
            let data_frame = alloc.alloc()?;
            tables.map_4k(&mut alloc, USER_DATA, data_frame, USER | WRITABLE | nx)?;
            let stack_frame = alloc.alloc()?;
            tables.map_4k(&mut alloc, USER_STACK, stack_frame, USER | WRITABLE | nx)?;
            Ok(ProcessSpace {
                tables,
                data_frame,
                pcid: i as u64 + 1,
                loaded_once: false,
            })
        };
        let processes = [make_process(0)?, make_process(1)?, make_process(2)?];

        let ws_base = alloc.alloc()?;
        for _ in 1..ws_pages {
            alloc.alloc()?;
        }
        Ok(AddressSpaces {
            kernel,
            processes,
            ws_base,
            features: cpu::features(),
        })
    }

    /// Loads the kernel's tables, sets CR0.WP and, if the CPU has them, CR4.PCIDE.
    pub fn enter_kernel(&self) {
        // SAFETY: the kernel tables identity-map everything running now; PCIDE is set
        // only with PCID support, in long mode, while CR3's PCID is 0 (SDM vol. 3 4.10.1).
        unsafe {
            cpu::write_cr3(self.kernel.root());
            cpu::write_cr0(cpu::read_cr0() | CR0_WP);
            if self.features.pcid {
                cpu::write_cr4(cpu::read_cr4() | CR4_PCIDE);
            }
        }
    }

    /// Switches to process `pid`'s address space. With PCIDs, the first load of a PCID
    /// flushes it; later loads keep its translations (NOFLUSH), as nothing in a process's
    /// tables changes after they are built.
    pub fn switch_to(&mut self, pid: usize) {
        let pcid = self.features.pcid;
        let p = &mut self.processes[pid];
        let cr3 = if pcid {
            let noflush = if p.loaded_once { CR3_NOFLUSH } else { 0 };
            p.loaded_once = true;
            p.tables.root() | p.pcid | noflush
        } else {
            p.tables.root()
        };
        // SAFETY: every process maps the kernel identically in PML4 slot 0.
        unsafe { cpu::write_cr3(cr3) };
    }
}

/// Clears CR0.WP: the kernel may write read-only pages until [`close_kernel`].
/// One CR0 write.
#[inline(always)]
pub fn open_kernel() {
    // SAFETY: only WP changes; the asm is a compiler barrier for the writes that follow.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr0",
            "and {t}, {mask}",
            "mov cr0, {t}",
            t = out(reg) _,
            mask = in(reg) !CR0_WP,
            options(nostack, preserves_flags)
        )
    }
}

/// Sets CR0.WP again. One CR0 write.
#[inline(always)]
pub fn close_kernel() {
    // SAFETY: as for `open_kernel`.
    unsafe {
        core::arch::asm!(
            "mov {t}, cr0",
            "or {t}, {bit}",
            "mov cr0, {t}",
            t = out(reg) _,
            bit = in(reg) CR0_WP,
            options(nostack, preserves_flags)
        )
    }
}

/// Reads `.kro` word `slot`.
pub fn kdata_read(slot: usize) -> u64 {
    // SAFETY: in bounds (callers index modulo KDATA_WORDS); reads are always allowed.
    unsafe { core::ptr::addr_of!(KDATA[slot % KDATA_WORDS]).read_volatile() }
}

/// Writes `.kro` word `slot`: must be inside an open/close-kernel pair.
pub fn kdata_write(slot: usize, value: u64) {
    // SAFETY: in bounds; the page is read-only, so with CR0.WP = 1 this faults (a bug
    // in the caller, reported as an unexpected exception).
    unsafe { core::ptr::addr_of_mut!(KDATA[slot % KDATA_WORDS]).write_volatile(value) }
}
