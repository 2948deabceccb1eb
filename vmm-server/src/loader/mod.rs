//! A multiboot (v1) loader that behaves exactly like `qemu-system-x86_64 -kernel`.
//!
//! 1. Find the header (magic 0x1BADB002, checksum) in the first 8192 bytes ([`header`]).
//! 2. The load addresses come from the header when flag 16 (the "a.out kludge") is set,
//!    otherwise from the ELF32 program headers at their physical addresses ([`elf`]);
//!    ELF64 is refused, like QEMU does.
//! 3. Zero the whole image range (bss included), copy the text and data, and append the
//!    command line and the boot-loader name after the page-aligned image, as QEMU does.
//! 4. Write the memory map and the information structure ([`info`]).
//! 5. The vCPU starts in 32-bit protected mode with flat 4 GiB segments, paging off,
//!    EAX = 0x2BADB002 and EBX = the information structure (spec 3.2), with the exact
//!    register values QEMU's multiboot option ROM leaves ([`BootState`]).
//!
//! Everything the image claims is checked against guest RAM before a byte is written;
//! a malformed or oversized image is a [`LoadError`] naming what is wrong.

pub mod elf;
mod error;
pub mod header;
pub mod info;

pub use error::LoadError;

use crate::guest_ram::GuestRam;
use elf::Elf32;
use header::{MultibootHeader, FLAG_ADDRESSES};
use info::{InfoPointers, INFO_ADDR, INFO_SIZE, MMAP_ADDR};

/// EAX at entry (spec 3.2).
pub const BOOT_MAGIC: u32 = 0x2BAD_B002;

const PAGE: u64 = 4096;

fn page_align(v: u64) -> u64 {
    v.div_ceil(PAGE) * PAGE
}

/// What the guest's command line is made of.
#[derive(Clone, Copy, Debug)]
pub struct BootArgs<'a> {
    /// The kernel path as the user gave it (QEMU puts it first on the command line).
    pub kernel_name: &'a str,
    /// The `-append` / `--append` string.
    pub append: &'a str,
}

/// The vCPU state at the kernel's entry point: 32-bit protected mode (CR0.PE, paging
/// off), flat code and data segments with base 0 and limit 4 GiB, interrupts off. The
/// values not fixed by the spec (selectors, ESP, EFLAGS) are those QEMU's option ROM
/// leaves, so guests see the same registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootState {
    pub eip: u32,
    pub eax: u32,
    pub ebx: u32,
    pub esp: u32,
    pub eflags: u32,
    pub cr0: u32,
    /// Code selector (32-bit, execute/read, DPL 0).
    pub cs: u16,
    /// Selector of DS, ES, FS, GS and SS (read/write, DPL 0).
    pub data_selector: u16,
}

/// Where things were put.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadedKernel {
    pub boot: BootState,
    /// The first byte of the image.
    pub load_start: u64,
    /// One past the page-aligned image plus command line and boot-loader name.
    pub load_end: u64,
    /// One past the last byte of the kernel proper (bss included).
    pub kernel_end: u64,
    pub info: InfoPointers,
}

/// The kernel part of the image: where it goes, how big it is in memory, its entry.
#[derive(Clone, Copy, Debug)]
enum Layout<'a> {
    Elf(Elf32<'a>),
    /// a.out kludge: `bytes` go to `load_addr`, then zeroes up to `kernel_size`.
    Flat {
        bytes: &'a [u8],
    },
}

#[derive(Clone, Copy, Debug)]
struct Plan<'a> {
    layout: Layout<'a>,
    load_addr: u64,
    kernel_size: u64,
    entry: u32,
}

fn plan_aout<'a>(image: &'a [u8], h: &MultibootHeader) -> Result<Plan<'a>, LoadError> {
    if h.header_addr < h.load_addr {
        return Err(LoadError::HeaderAddrBelowLoadAddr {
            header_addr: h.header_addr,
            load_addr: h.load_addr,
        });
    }
    let before_header = h.header_addr - h.load_addr;
    if before_header > h.offset {
        return Err(LoadError::HeaderAddrBeforeFileStart {
            header_addr: h.header_addr,
            load_addr: h.load_addr,
            header_offset: h.offset,
        });
    }
    // The file offset of the byte that goes to load_addr.
    let text_offset = (h.offset - before_header) as u64;
    let available = image.len() as u64 - text_offset.min(image.len() as u64);
    let load_size = if h.load_end_addr != 0 {
        if h.load_end_addr < h.load_addr {
            return Err(LoadError::LoadEndBelowLoadAddr {
                load_end_addr: h.load_end_addr,
                load_addr: h.load_addr,
            });
        }
        (h.load_end_addr - h.load_addr) as u64
    } else {
        available
    };
    if load_size > available {
        return Err(LoadError::ImageTruncated {
            needed: load_size,
            available,
        });
    }
    let load_end = h.load_addr as u64 + load_size;
    let kernel_size = if h.bss_end_addr != 0 {
        if (h.bss_end_addr as u64) < load_end {
            return Err(LoadError::BssEndBelowLoadEnd {
                bss_end_addr: h.bss_end_addr,
                load_end,
            });
        }
        h.bss_end_addr as u64 - h.load_addr as u64
    } else {
        load_size
    };
    let start = text_offset as usize;
    let bytes = image
        .get(start..start + load_size as usize)
        .ok_or(LoadError::ImageTruncated {
            needed: load_size,
            available,
        })?;
    Ok(Plan {
        layout: Layout::Flat { bytes },
        load_addr: h.load_addr as u64,
        kernel_size,
        entry: h.entry_addr,
    })
}

fn plan_elf(image: &[u8]) -> Result<Plan<'_>, LoadError> {
    let elf = Elf32::parse(image)?;
    let (low, high) = elf.extent()?;
    Ok(Plan {
        layout: Layout::Elf(elf),
        load_addr: low,
        kernel_size: high - low,
        entry: elf.entry(),
    })
}

/// Loads `image` into `ram` and returns the entry state. Nothing is written unless the
/// whole image is valid and fits.
pub fn load(
    image: &[u8],
    args: BootArgs<'_>,
    ram: &mut impl GuestRam,
) -> Result<LoadedKernel, LoadError> {
    let ram_size = ram.size();
    if !(info::MIN_RAM..=info::MAX_RAM).contains(&ram_size) || !ram_size.is_multiple_of(PAGE) {
        return Err(LoadError::UnsupportedRamSize { ram_size });
    }
    let header = header::find(image).ok_or(LoadError::NoMultibootHeader {
        image_len: image.len(),
    })?;
    let plan = if header.flags & FLAG_ADDRESSES != 0 {
        plan_aout(image, &header)?
    } else {
        plan_elf(image)?
    };

    // After the page-aligned kernel: the command line "<name> <append>\0", then the
    // boot-loader name; the whole buffer is page aligned (QEMU's mb_buf).
    let cmdline_len = args.kernel_name.len() as u64 + 1 + args.append.len() as u64 + 1;
    let strings_at = plan.load_addr + page_align(plan.kernel_size);
    let name_at = strings_at + cmdline_len;
    let load_end = page_align(name_at + info::BOOT_LOADER_NAME.len() as u64 + 1);
    if load_end > ram_size {
        return Err(LoadError::OutsideRam {
            start: plan.load_addr,
            end: load_end,
            ram_size,
        });
    }
    let info_end = (INFO_ADDR + INFO_SIZE) as u64;
    if plan.load_addr < info_end && (MMAP_ADDR as u64) < load_end {
        return Err(LoadError::OverlapsBootInfo {
            start: plan.load_addr,
            end: load_end,
        });
    }

    // Every address below was checked against ram_size above, so a write error here is
    // a runtime that handed us a RAM object smaller than it claims.
    let oversized = LoadError::OutsideRam {
        start: plan.load_addr,
        end: load_end,
        ram_size,
    };
    ram.zero(plan.load_addr, load_end - plan.load_addr)
        .map_err(|_| oversized)?;
    match plan.layout {
        Layout::Flat { bytes } => ram.write(plan.load_addr, bytes).map_err(|_| oversized)?,
        Layout::Elf(elf) => {
            for seg in elf.load_segments() {
                ram.write(seg.paddr as u64, seg.file_bytes(image))
                    .map_err(|_| oversized)?;
            }
        }
    }
    let mut at = strings_at;
    for part in [
        args.kernel_name.as_bytes(),
        b" ",
        args.append.as_bytes(),
        b"\0",
    ] {
        ram.write(at, part).map_err(|_| oversized)?;
        at += part.len() as u64;
    }
    ram.write(name_at, info::BOOT_LOADER_NAME.as_bytes())
        .map_err(|_| oversized)?;
    ram.write(name_at + info::BOOT_LOADER_NAME.len() as u64, b"\0")
        .map_err(|_| oversized)?;

    let ptrs = InfoPointers {
        cmdline: strings_at as u32,
        mods_addr: strings_at as u32,
        boot_loader_name: name_at as u32,
    };
    let mut mmap = [0u8; 7 * 24];
    info::encode_memory_map(ram_size, &mut mmap);
    ram.write(MMAP_ADDR as u64, &mmap).map_err(|_| oversized)?;
    let mut mbi = [0u8; INFO_SIZE as usize];
    info::encode_info(ram_size, ptrs, &mut mbi);
    ram.write(INFO_ADDR as u64, &mbi).map_err(|_| oversized)?;

    Ok(LoadedKernel {
        boot: BootState {
            eip: plan.entry,
            eax: BOOT_MAGIC,
            ebx: INFO_ADDR,
            esp: 0x6f08,
            // Reserved bit 1 and the PF flag the option ROM's last compare leaves.
            eflags: 0x6,
            // PE | ET.
            cr0: 0x11,
            cs: 0x08,
            data_selector: 0x10,
        },
        load_start: plan.load_addr,
        load_end,
        kernel_end: plan.load_addr + plan.kernel_size,
        info: ptrs,
    })
}
