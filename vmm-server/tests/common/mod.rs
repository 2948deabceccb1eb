//! Test doubles and image builders shared by the vmm-server tests.
#![allow(dead_code)]

use vmm_server::guest_ram::{GuestRam, OutsideRam};

/// Guest RAM in a plain vector, pre-filled with a pattern so that "zeroed" is visible.
pub struct VecRam(pub Vec<u8>);

impl VecRam {
    pub fn new(size: usize) -> VecRam {
        VecRam(vec![0xAA; size])
    }
    pub fn u32_at(&self, gpa: u64) -> u32 {
        let g = gpa as usize;
        u32::from_le_bytes(self.0[g..g + 4].try_into().unwrap())
    }
    pub fn u64_at(&self, gpa: u64) -> u64 {
        let g = gpa as usize;
        u64::from_le_bytes(self.0[g..g + 8].try_into().unwrap())
    }
    pub fn cstr_at(&self, gpa: u64) -> String {
        let g = gpa as usize;
        let end = self.0[g..].iter().position(|&b| b == 0).unwrap();
        String::from_utf8(self.0[g..g + end].to_vec()).unwrap()
    }
}

impl GuestRam for VecRam {
    fn size(&self) -> u64 {
        self.0.len() as u64
    }
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OutsideRam> {
        let g = gpa as usize;
        let dst = self.0.get_mut(g..g + bytes.len()).ok_or(OutsideRam {
            gpa,
            len: bytes.len() as u64,
        })?;
        dst.copy_from_slice(bytes);
        Ok(())
    }
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let g = gpa as usize;
        let src = self.0.get(g..g + buf.len()).ok_or(OutsideRam {
            gpa,
            len: buf.len() as u64,
        })?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

/// A multiboot header: magic, flags, checksum, then the a.out-kludge fields.
pub fn mb_header(flags: u32, addrs: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&0x1BADB002u32.to_le_bytes());
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&(0u32.wrapping_sub(0x1BADB002u32.wrapping_add(flags))).to_le_bytes());
    if let Some(a) = addrs {
        for v in a {
            h.extend_from_slice(&v.to_le_bytes());
        }
    }
    h
}

/// One program header for [`elf32`].
#[derive(Clone, Copy)]
pub struct Ph {
    pub kind: u32,
    pub vaddr: u32,
    pub paddr: u32,
    pub memsz: u32,
    pub flags: u32,
}

/// Builds an ELF32 i386 executable: the header, the program headers, then for each
/// segment its `data` (p_filesz = data.len()). The multiboot header is placed at the
/// start of the first segment's data by the caller.
pub fn elf32(entry: u32, segs: &[(Ph, Vec<u8>)]) -> Vec<u8> {
    let phoff = 52u32;
    let mut data_off = phoff + 32 * segs.len() as u32;
    let mut out = vec![0u8; 52];
    out[0..4].copy_from_slice(b"\x7fELF");
    out[4] = 1; // ELFCLASS32
    out[5] = 1; // little endian
    out[6] = 1; // EV_CURRENT
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&3u16.to_le_bytes()); // EM_386
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[24..28].copy_from_slice(&entry.to_le_bytes());
    out[28..32].copy_from_slice(&phoff.to_le_bytes());
    out[40..42].copy_from_slice(&52u16.to_le_bytes());
    out[42..44].copy_from_slice(&32u16.to_le_bytes());
    out[44..46].copy_from_slice(&(segs.len() as u16).to_le_bytes());
    let mut bodies = Vec::new();
    for (ph, data) in segs {
        for v in [
            ph.kind,
            data_off,
            ph.vaddr,
            ph.paddr,
            data.len() as u32,
            ph.memsz,
            ph.flags,
            0x1000,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        data_off += data.len() as u32;
        bodies.extend_from_slice(data);
    }
    out.extend_from_slice(&bodies);
    out
}
