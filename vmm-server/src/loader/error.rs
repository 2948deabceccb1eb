//! Why a guest image was refused. Every variant names what is wrong, in the words of the
//! multiboot specification (v0.6.96) or the ELF format, so the user can fix the image.

use core::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadError {
    /// No `0x1BADB002` magic with a valid checksum at a 4-byte aligned offset in the
    /// first 8192 bytes (multiboot spec 3.1.1).
    NoMultibootHeader { image_len: usize },
    /// Flag 16 (the a.out kludge) is clear, so the load addresses must come from an ELF
    /// image, but the file is not one.
    NotElf,
    /// The image is ELF64 (QEMU refuses those: convert with `objcopy -O elf32-i386`).
    Elf64,
    /// The ELF header is not a little-endian ELF32 executable for i386.
    BadElfHeader { what: &'static str },
    /// `e_machine` is not EM_386 (3).
    WrongMachine { e_machine: u16 },
    /// The program header table is not inside the file or has a bad entry size.
    BadProgramHeaders,
    /// A PT_LOAD segment's file bytes are not inside the file.
    SegmentOutsideFile {
        index: u16,
        offset: u32,
        filesz: u32,
    },
    /// A PT_LOAD segment has `p_filesz > p_memsz`.
    SegmentFileSizeAboveMemSize { index: u16 },
    /// A PT_LOAD segment wraps around the 32-bit physical address space.
    SegmentWraps { index: u16 },
    /// The ELF image has no loadable (PT_LOAD, p_memsz > 0) segment.
    NoLoadableSegment,
    /// a.out kludge: `header_addr` is below `load_addr`.
    HeaderAddrBelowLoadAddr { header_addr: u32, load_addr: u32 },
    /// a.out kludge: `header_addr - load_addr` is larger than the header's file offset,
    /// so the text would start before the file.
    HeaderAddrBeforeFileStart {
        header_addr: u32,
        load_addr: u32,
        header_offset: u32,
    },
    /// a.out kludge: `load_end_addr` is below `load_addr`.
    LoadEndBelowLoadAddr { load_end_addr: u32, load_addr: u32 },
    /// a.out kludge: `bss_end_addr` is below the end of the loaded text and data.
    BssEndBelowLoadEnd { bss_end_addr: u32, load_end: u64 },
    /// a.out kludge: the file holds fewer bytes than `load_end_addr - load_addr` asks for.
    ImageTruncated { needed: u64, available: u64 },
    /// The kernel (with its command line and boot-loader name after it) does not lie
    /// inside guest RAM `[0, ram_size)`.
    OutsideRam { start: u64, end: u64, ram_size: u64 },
    /// The kernel overlaps the memory map and multiboot information the loader places
    /// at 0x9000..0x9558 (where QEMU puts them).
    OverlapsBootInfo { start: u64, end: u64 },
    /// Guest RAM is too small for the memory map QEMU presents (at least 2 MiB), or
    /// too large for a 32-bit multiboot memory description below the PCI hole.
    UnsupportedRamSize { ram_size: u64 },
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use LoadError::*;
        match *self {
            NoMultibootHeader { image_len } => write!(
                f,
                "not a multiboot kernel: no header (magic 0x1BADB002 with a valid checksum) \
                 in the first 8192 bytes of the {image_len}-byte image"
            ),
            NotElf => write!(
                f,
                "multiboot header without load addresses (flag 16 clear) and the image is not ELF"
            ),
            Elf64 => write!(
                f,
                "ELF64 image: a multiboot kernel must be ELF32 (QEMU refuses ELF64; convert it \
                 with `objcopy -O elf32-i386`)"
            ),
            BadElfHeader { what } => write!(f, "bad ELF header: {what}"),
            WrongMachine { e_machine } => {
                write!(f, "ELF e_machine is {e_machine}, expected EM_386 (3)")
            }
            BadProgramHeaders => write!(f, "ELF program header table outside the file or malformed"),
            SegmentOutsideFile {
                index,
                offset,
                filesz,
            } => write!(
                f,
                "ELF segment {index}: file bytes {offset:#x}+{filesz:#x} are outside the file"
            ),
            SegmentFileSizeAboveMemSize { index } => {
                write!(f, "ELF segment {index}: p_filesz is larger than p_memsz")
            }
            SegmentWraps { index } => {
                write!(f, "ELF segment {index}: wraps around the 32-bit address space")
            }
            NoLoadableSegment => write!(f, "ELF image has no loadable segment"),
            HeaderAddrBelowLoadAddr {
                header_addr,
                load_addr,
            } => write!(
                f,
                "multiboot header: header_addr {header_addr:#x} is below load_addr {load_addr:#x}"
            ),
            HeaderAddrBeforeFileStart {
                header_addr,
                load_addr,
                header_offset,
            } => write!(
                f,
                "multiboot header: header_addr {header_addr:#x} - load_addr {load_addr:#x} is \
                 larger than the header's file offset {header_offset:#x}"
            ),
            LoadEndBelowLoadAddr {
                load_end_addr,
                load_addr,
            } => write!(
                f,
                "multiboot header: load_end_addr {load_end_addr:#x} is below load_addr {load_addr:#x}"
            ),
            BssEndBelowLoadEnd {
                bss_end_addr,
                load_end,
            } => write!(
                f,
                "multiboot header: bss_end_addr {bss_end_addr:#x} is below the end of the loaded \
                 image {load_end:#x}"
            ),
            ImageTruncated { needed, available } => write!(
                f,
                "image truncated: the multiboot header asks for {needed:#x} bytes of text and \
                 data, the file has {available:#x}"
            ),
            OutsideRam {
                start,
                end,
                ram_size,
            } => write!(
                f,
                "kernel image {start:#x}..{end:#x} does not fit in guest RAM (0..{ram_size:#x}): \
                 the image is too large or linked at the wrong address"
            ),
            OverlapsBootInfo { start, end } => write!(
                f,
                "kernel image {start:#x}..{end:#x} overlaps the multiboot information at \
                 0x9000..0x9558"
            ),
            UnsupportedRamSize { ram_size } => write!(
                f,
                "guest RAM size {ram_size:#x} is not supported (2 MiB to 3 GiB, a multiple of 4 KiB)"
            ),
        }
    }
}
