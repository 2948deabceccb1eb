//! Host tests: ELF images built byte by byte.
extern crate std;
use super::*;
use std::vec;
use std::vec::Vec;

/// (vaddr, file bytes, memsz) per PT_LOAD; plus a PT_NOTE to be skipped.
fn build_elf(entry: u64, segs: &[(u64, &[u8], u64)]) -> Vec<u8> {
    let phoff = 64u64;
    let phnum = segs.len() + 1;
    let data_start = phoff + 56 * phnum as u64;
    let mut out = vec![0u8; data_start as usize];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little endian
    out[6] = 1;
    out[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    out[24..32].copy_from_slice(&entry.to_le_bytes());
    out[32..40].copy_from_slice(&phoff.to_le_bytes());
    out[54..56].copy_from_slice(&56u16.to_le_bytes());
    out[56..58].copy_from_slice(&(phnum as u16).to_le_bytes());
    let mut data = Vec::new();
    let phdr =
        |i: usize, ty: u32, off: u64, vaddr: u64, filesz: u64, memsz: u64, out: &mut Vec<u8>| {
            let at = (phoff + 56 * i as u64) as usize;
            out[at..at + 4].copy_from_slice(&ty.to_le_bytes());
            out[at + 8..at + 16].copy_from_slice(&off.to_le_bytes());
            out[at + 16..at + 24].copy_from_slice(&vaddr.to_le_bytes());
            out[at + 32..at + 40].copy_from_slice(&filesz.to_le_bytes());
            out[at + 40..at + 48].copy_from_slice(&memsz.to_le_bytes());
        };
    for (i, (vaddr, bytes, memsz)) in segs.iter().enumerate() {
        let off = data_start + data.len() as u64;
        phdr(i, 1, off, *vaddr, bytes.len() as u64, *memsz, &mut out);
        data.extend_from_slice(bytes);
    }
    phdr(segs.len(), 4, 0, 0, 0, 0x40, &mut out); // PT_NOTE with a memory size
    out.extend_from_slice(&data);
    out
}

const BASE: u64 = 0x40_0000;

#[test]
fn parses_entry_and_load_segments_only() {
    let elf = build_elf(
        0x40_0123,
        &[(BASE, b"text", 4), (BASE + 0x1000, b"data", 0x20)],
    );
    let img = Image::new(&elf, BASE, 0x10000).unwrap();
    assert_eq!(img.entry(), 0x40_0123);
    assert_eq!(img.segments().len(), 2, "the PT_NOTE is not loaded");
    assert_eq!(img.segments()[1].memsz, 0x20);
}

#[test]
fn pages_get_their_file_bytes_and_bss_stays_zero() {
    // A segment straddling a page boundary, then .bss after 3 data bytes.
    let text: Vec<u8> = (0..0x1800u32).map(|i| (i % 251) as u8).collect();
    let elf = build_elf(
        BASE,
        &[
            (BASE + 0x100, &text, text.len() as u64),
            (BASE + 0x3ffd, b"abc", 0x2000),
        ],
    );
    let img = Image::new(&elf, BASE, 0x8000).unwrap();
    let mut memory = vec![0u8; 0x8000];
    for (i, page) in memory.chunks_mut(PAGE_SIZE as usize).enumerate() {
        img.fill_page(BASE + i as u64 * PAGE_SIZE, page);
    }
    assert!(memory[..0x100].iter().all(|b| *b == 0));
    assert_eq!(&memory[0x100..0x1900], &text[..]);
    assert!(memory[0x1900..0x3ffd].iter().all(|b| *b == 0));
    assert_eq!(&memory[0x3ffd..0x4000], b"abc");
    assert!(memory[0x4000..].iter().all(|b| *b == 0), ".bss is zero");
    assert!(img.has_file_bytes(BASE) && img.has_file_bytes(BASE + 0x1000));
    assert!(!img.has_file_bytes(BASE + 0x2000));
    assert!(img.has_file_bytes(BASE + 0x3000));
    assert!(!img.has_file_bytes(BASE + 0x4000), "only .bss there");
}

#[test]
fn segments_outside_the_region_are_refused() {
    let elf = build_elf(BASE, &[(BASE, b"x", 0x3000)]);
    assert_eq!(
        Image::new(&elf, BASE, 0x2000).err(),
        Some(ImageError::OutsideRegion {
            vaddr: BASE,
            end: BASE + 0x3000,
            region_end: BASE + 0x2000
        })
    );
    let elf = build_elf(BASE, &[(BASE - 0x1000, b"x", 1)]);
    assert!(matches!(
        Image::new(&elf, BASE, 0x2000),
        Err(ImageError::OutsideRegion { .. })
    ));
}

#[test]
fn malformed_elves_are_refused() {
    let good = build_elf(BASE, &[(BASE, b"text", 4)]);
    let mut bad = good.clone();
    bad[0] = 0;
    assert_eq!(
        Image::new(&bad, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::NotX86_64Exec))
    );
    let mut bad = good.clone();
    bad[4] = 1; // ELFCLASS32
    assert_eq!(
        Image::new(&bad, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::NotX86_64Exec))
    );
    let mut bad = good.clone();
    bad[18] = 3; // EM_386
    assert_eq!(
        Image::new(&bad, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::NotX86_64Exec))
    );
    // Program headers cut off.
    assert_eq!(
        Image::new(&good[..80], BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
    // File bytes past the end of the file.
    assert_eq!(
        Image::new(&good[..good.len() - 1], BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
    // filesz > memsz.
    let elf = build_elf(BASE, &[(BASE, b"text", 2)]);
    assert_eq!(
        Image::new(&elf, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::BadSegment))
    );
    // Empty input.
    assert_eq!(
        Image::new(&[], BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
}

#[test]
fn arbitrary_bytes_never_panic() {
    // A cheap fuzz: every prefix and every single-byte corruption of a valid image.
    let good = build_elf(BASE, &[(BASE, b"text", 4), (BASE + 0x1000, b"data", 0x30)]);
    for n in 0..good.len() {
        let _ = Image::new(&good[..n], BASE, 0x10000);
    }
    for i in 0..good.len() {
        for v in [0u8, 0x7f, 0xff] {
            let mut b = good.clone();
            b[i] = v;
            if let Ok(img) = Image::new(&b, BASE, 0x10000) {
                let mut page = [0u8; 4096];
                for p in 0..16 {
                    img.fill_page(BASE + p * PAGE_SIZE, &mut page);
                }
            }
        }
    }
}

#[test]
fn huge_header_offsets_are_truncation_not_overflow() {
    let mut elf = build_elf(BASE, &[(BASE, b"text", 4)]);
    elf[32..40].copy_from_slice(&(u64::MAX - 10).to_le_bytes()); // e_phoff
    assert_eq!(
        Image::new(&elf, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
    let mut elf = build_elf(BASE, &[(BASE, b"text", 4)]);
    elf[54..56].copy_from_slice(&u16::MAX.to_le_bytes()); // e_phentsize
    assert_eq!(
        Image::new(&elf, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
    // A segment's offset near the top of the address space.
    let mut elf = build_elf(BASE, &[(BASE, b"text", 4)]);
    elf[64 + 8..64 + 16].copy_from_slice(&(u64::MAX - 1).to_le_bytes());
    assert_eq!(
        Image::new(&elf, BASE, 0x1000).err(),
        Some(ImageError::Elf(ElfError::Truncated))
    );
}
