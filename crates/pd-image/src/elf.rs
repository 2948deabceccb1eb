//! The part of ELF64 the root task needs to load a PD image: the header's entry point
//! and the PT_LOAD program headers (System V ABI, ELF-64 Object File Format 1.5).

/// A loadable segment: `filesz` bytes from `offset` in the file at `vaddr`, then zeros
/// up to `memsz`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    pub vaddr: u64,
    pub offset: u64,
    pub filesz: u64,
    pub memsz: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than its headers say.
    Truncated,
    /// Not a little-endian x86-64 ELF64 executable.
    NotX86_64Exec,
    /// A segment's file bytes are larger than its memory size.
    BadSegment,
}

impl core::fmt::Display for ElfError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ElfError::Truncated => "truncated",
            ElfError::NotX86_64Exec => "not an x86-64 ELF64 executable",
            ElfError::BadSegment => "a segment has more file bytes than memory bytes",
        })
    }
}

const PT_LOAD: u32 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

fn u16_at(b: &[u8], at: usize) -> Result<u16, ElfError> {
    let s = at
        .checked_add(2)
        .and_then(|end| b.get(at..end))
        .ok_or(ElfError::Truncated)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}
fn u32_at(b: &[u8], at: usize) -> Result<u32, ElfError> {
    let s = at
        .checked_add(4)
        .and_then(|end| b.get(at..end))
        .ok_or(ElfError::Truncated)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
fn u64_at(b: &[u8], at: usize) -> Result<u64, ElfError> {
    let s = at
        .checked_add(8)
        .and_then(|end| b.get(at..end))
        .ok_or(ElfError::Truncated)?;
    let mut w = [0; 8];
    w.copy_from_slice(s);
    Ok(u64::from_le_bytes(w))
}

/// A checked ELF image.
pub struct Elf<'a> {
    pub bytes: &'a [u8],
    pub entry: u64,
    phoff: usize,
    phentsize: usize,
    phnum: usize,
}

impl<'a> Elf<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Elf<'a>, ElfError> {
        let ident = bytes.get(..16).ok_or(ElfError::Truncated)?;
        // Magic, ELFCLASS64, ELFDATA2LSB.
        if ident[..4] != *b"\x7fELF" || ident[4] != 2 || ident[5] != 1 {
            return Err(ElfError::NotX86_64Exec);
        }
        if u16_at(bytes, 16)? != ET_EXEC || u16_at(bytes, 18)? != EM_X86_64 {
            return Err(ElfError::NotX86_64Exec);
        }
        let elf = Elf {
            bytes,
            entry: u64_at(bytes, 24)?,
            phoff: u64_at(bytes, 32)? as usize,
            phentsize: u16_at(bytes, 54)? as usize,
            phnum: u16_at(bytes, 56)? as usize,
        };
        if elf.phentsize < 56 {
            return Err(ElfError::Truncated);
        }
        for s in elf.segments() {
            let s = s?;
            let end = s.offset.checked_add(s.filesz).ok_or(ElfError::Truncated)?;
            if end > bytes.len() as u64 {
                return Err(ElfError::Truncated);
            }
            if s.filesz > s.memsz || s.vaddr.checked_add(s.memsz).is_none() {
                return Err(ElfError::BadSegment);
            }
        }
        Ok(elf)
    }

    /// The PT_LOAD segments.
    pub fn segments(&self) -> impl Iterator<Item = Result<Segment, ElfError>> + '_ {
        (0..self.phnum).filter_map(move |i| {
            let seg = (|| {
                let at = i
                    .checked_mul(self.phentsize)
                    .and_then(|o| o.checked_add(self.phoff))
                    .ok_or(ElfError::Truncated)?;
                if u32_at(self.bytes, at)? != PT_LOAD {
                    return Ok(None);
                }
                // at + 48 <= len was checked by reading at + 40 below; each
                // offset is small, so none of these additions overflow once `at` fits.
                Ok(Some(Segment {
                    offset: u64_at(self.bytes, at.saturating_add(8))?,
                    vaddr: u64_at(self.bytes, at.saturating_add(16))?,
                    filesz: u64_at(self.bytes, at.saturating_add(32))?,
                    memsz: u64_at(self.bytes, at.saturating_add(40))?,
                }))
            })();
            seg.transpose()
        })
    }
}
