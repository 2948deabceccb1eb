//! A PD's image as the root task loads it: the ELF64 program headers ([`elf`]) and,
//! for an image region of frames at fixed addresses, what each page must hold
//! ([`Image`]). Pure functions over bytes, so the loader's arithmetic (segment offsets,
//! pages straddling segments, .bss) is tested on the host; the root task only maps each
//! frame and hands its bytes to [`Image::fill_page`].
#![no_std]

pub mod elf;

pub use elf::{Elf, ElfError, Segment};

/// Page size of the image frames.
pub const PAGE_SIZE: u64 = 4096;
/// Most PT_LOAD segments an image may have.
pub const MAX_SEGMENTS: usize = 16;

/// Why an ELF does not fit its image region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    Elf(ElfError),
    /// A segment lies (partly) outside `[base, base + len)`.
    OutsideRegion {
        vaddr: u64,
        end: u64,
        region_end: u64,
    },
    /// More than [`MAX_SEGMENTS`] PT_LOAD segments.
    TooManySegments,
}

impl From<ElfError> for ImageError {
    fn from(e: ElfError) -> Self {
        ImageError::Elf(e)
    }
}

/// An ELF checked against the region it is loaded into.
pub struct Image<'a> {
    bytes: &'a [u8],
    entry: u64,
    segments: [Segment; MAX_SEGMENTS],
    count: usize,
}

impl<'a> Image<'a> {
    /// Parses `bytes` and checks that every non-empty PT_LOAD segment lies inside the
    /// region `[base, base + len)`.
    pub fn new(bytes: &'a [u8], base: u64, len: u64) -> Result<Image<'a>, ImageError> {
        let elf = Elf::parse(bytes)?;
        let region_end = base.saturating_add(len);
        let mut image = Image {
            bytes,
            entry: elf.entry,
            segments: [Segment::default(); MAX_SEGMENTS],
            count: 0,
        };
        for s in elf.segments() {
            let s = s?;
            if s.memsz == 0 {
                continue;
            }
            let end = s.vaddr + s.memsz; // no overflow: Elf::parse checked
            if s.vaddr < base || end > region_end {
                return Err(ImageError::OutsideRegion {
                    vaddr: s.vaddr,
                    end,
                    region_end,
                });
            }
            *image
                .segments
                .get_mut(image.count)
                .ok_or(ImageError::TooManySegments)? = s;
            image.count += 1;
        }
        Ok(image)
    }

    pub fn entry(&self) -> u64 {
        self.entry
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }

    /// Whether the page at `vaddr` holds any bytes from the file (else it is all
    /// zero: .bss or a gap).
    pub fn has_file_bytes(&self, vaddr: u64) -> bool {
        let end = vaddr + PAGE_SIZE;
        self.segments()
            .iter()
            .any(|s| s.filesz > 0 && s.vaddr < end && s.vaddr + s.filesz > vaddr)
    }

    /// Writes into `page` (the frame at `vaddr`, which the caller zeroed or got zeroed
    /// from the kernel) the file bytes that belong there.
    pub fn fill_page(&self, vaddr: u64, page: &mut [u8]) {
        let end = vaddr + (page.len() as u64);
        for s in self.segments() {
            let lo = s.vaddr.max(vaddr);
            let hi = (s.vaddr + s.filesz).min(end);
            if lo >= hi {
                continue;
            }
            // In range: Elf::parse checked offset + filesz <= file length.
            let src = (s.offset + (lo - s.vaddr)) as usize;
            let n = (hi - lo) as usize;
            let at = (lo - vaddr) as usize;
            page[at..at + n].copy_from_slice(&self.bytes[src..src + n]);
        }
    }
}

#[cfg(test)]
mod tests;
