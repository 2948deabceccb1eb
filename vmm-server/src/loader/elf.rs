//! The ELF32 subset a multiboot loader needs: the header checks QEMU's ELF loader makes
//! and the PT_LOAD program headers, loaded at their *physical* addresses (`p_paddr`).

use super::header::le32;
use super::LoadError;

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_386: u16 = 3;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
const PHDR_SIZE: usize = 32;

/// Whether `image` starts with the ELF magic.
pub fn is_elf(image: &[u8]) -> bool {
    image.get(..4) == Some(b"\x7fELF")
}

/// One PT_LOAD program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub index: u16,
    pub offset: u32,
    pub vaddr: u32,
    pub paddr: u32,
    pub filesz: u32,
    pub memsz: u32,
    pub flags: u32,
}

impl Segment {
    /// The file bytes of the segment (checked in [`Elf32::parse`]).
    pub fn file_bytes<'a>(&self, image: &'a [u8]) -> &'a [u8] {
        let start = self.offset as usize;
        image
            .get(start..start + self.filesz as usize)
            .unwrap_or(&[])
    }
}

/// A checked ELF32 image.
#[derive(Clone, Copy, Debug)]
pub struct Elf32<'a> {
    image: &'a [u8],
    e_entry: u32,
    phoff: usize,
    phnum: u16,
}

fn le16(bytes: &[u8], off: usize) -> u16 {
    (le32(bytes, off) & 0xffff) as u16
}

impl<'a> Elf32<'a> {
    pub fn parse(image: &'a [u8]) -> Result<Elf32<'a>, LoadError> {
        if !is_elf(image) {
            return Err(LoadError::NotElf);
        }
        match image.get(EI_CLASS) {
            Some(&ELFCLASS32) => {}
            Some(&ELFCLASS64) => return Err(LoadError::Elf64),
            _ => {
                return Err(LoadError::BadElfHeader {
                    what: "unknown EI_CLASS",
                })
            }
        }
        if image.get(EI_DATA) != Some(&ELFDATA2LSB) {
            return Err(LoadError::BadElfHeader {
                what: "not little-endian",
            });
        }
        if image.len() < 52 {
            return Err(LoadError::BadElfHeader {
                what: "shorter than an ELF32 header",
            });
        }
        let e_machine = le16(image, 18);
        if e_machine != EM_386 {
            return Err(LoadError::WrongMachine { e_machine });
        }
        let phoff = le32(image, 28) as usize;
        let phentsize = le16(image, 42) as usize;
        let phnum = le16(image, 44);
        let table_end = (phnum as usize)
            .checked_mul(PHDR_SIZE)
            .and_then(|n| n.checked_add(phoff));
        if phnum > 0 && (phentsize != PHDR_SIZE || table_end.is_none_or(|e| e > image.len())) {
            return Err(LoadError::BadProgramHeaders);
        }
        let elf = Elf32 {
            image,
            e_entry: le32(image, 24),
            phoff,
            phnum,
        };
        for seg in elf.load_segments() {
            let end = (seg.offset as u64) + (seg.filesz as u64);
            if end > image.len() as u64 {
                return Err(LoadError::SegmentOutsideFile {
                    index: seg.index,
                    offset: seg.offset,
                    filesz: seg.filesz,
                });
            }
            if seg.filesz > seg.memsz {
                return Err(LoadError::SegmentFileSizeAboveMemSize { index: seg.index });
            }
            if (seg.paddr as u64) + (seg.memsz as u64) > 1 << 32 {
                return Err(LoadError::SegmentWraps { index: seg.index });
            }
        }
        Ok(elf)
    }

    /// Every PT_LOAD segment with a non-zero memory size, in table order.
    pub fn load_segments(&self) -> impl Iterator<Item = Segment> + '_ {
        (0..self.phnum).filter_map(move |i| {
            let at = self.phoff + i as usize * PHDR_SIZE;
            let p = |field: usize| le32(self.image, at + field);
            (p(0) == PT_LOAD && p(20) != 0).then(|| Segment {
                index: i,
                offset: p(4),
                vaddr: p(8),
                paddr: p(12),
                filesz: p(16),
                memsz: p(20),
                flags: p(24),
            })
        })
    }

    /// The lowest and one-past-the-highest physical address of the loaded segments.
    pub fn extent(&self) -> Result<(u64, u64), LoadError> {
        let mut extent: Option<(u64, u64)> = None;
        for seg in self.load_segments() {
            let (lo, hi) = (seg.paddr as u64, seg.paddr as u64 + seg.memsz as u64);
            extent = Some(match extent {
                None => (lo, hi),
                Some((l, h)) => (l.min(lo), h.max(hi)),
            });
        }
        extent.ok_or(LoadError::NoLoadableSegment)
    }

    /// The physical entry point. `e_entry` is a virtual address; when an executable
    /// segment is linked at a virtual address different from its physical one and
    /// contains the entry, the entry is translated to physical (as QEMU's ELF loader
    /// does for `-kernel`).
    pub fn entry(&self) -> u32 {
        for seg in self.load_segments() {
            let inside = self.e_entry >= seg.vaddr
                && (self.e_entry as u64) < seg.vaddr as u64 + seg.filesz as u64;
            if seg.vaddr != seg.paddr && inside && seg.flags & PF_X != 0 {
                return self.e_entry - seg.vaddr + seg.paddr;
            }
        }
        self.e_entry
    }
}
