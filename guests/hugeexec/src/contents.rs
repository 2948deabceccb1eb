//! What the loader places in the three huge pages: the first and the last 4 KiB of
//! each (ELF sections at fixed addresses in `link.ld`), so that nothing in the guest
//! writes them and the pages are first touched by the measured steps.
//!
//! The linker puts the six sections in one segment, so the loader also writes the
//! zeros between head and tail: the whole of each huge page has defined contents.
//!
//! Head (first 4 KiB): a function at 0x000 (`mov eax, tag; ret`), one at 0x010
//! (`lea rax, [rdi + delta]; ret`), RET (0xC3) up to 0x800, then a byte pattern.
//! Tail (last 4 KiB): the byte pattern up to 0x800, RET up to 0xFF0, then a function
//! at 0xFF0 (`mov eax, tail tag; ret`).

pub const PAGE_4K: usize = 4096;
/// Start of the pattern in a head, end of it in a tail.
pub const PATTERN_SPLIT: usize = 0x800;
pub const HEAD_TAG_FN: usize = 0x000;
pub const HEAD_ADD_FN: usize = 0x010;
/// A plain RET inside the head's RET fill.
pub const HEAD_RET: usize = 0x400;
pub const TAIL_TAG_FN: usize = 0xFF0;

const RET: u8 = 0xC3;

/// The value the head's first function returns for huge page `hp` (1..=3).
pub const fn head_tag(hp: u8) -> u32 {
    0x4850_0000 | (hp as u32) << 8 | 0x11
}

/// The value the tail's function returns.
pub const fn tail_tag(hp: u8) -> u32 {
    0x4850_0000 | (hp as u32) << 8 | 0x22
}

/// What the head's second function adds to its argument.
pub const fn add_delta(hp: u8) -> u32 {
    0x0100_0000 * hp as u32 + 0x1234
}

/// The pattern byte at offset `off` of the 2 MiB page `hp`.
pub const fn pattern(hp: u8, off: usize) -> u8 {
    ((off.wrapping_mul(31) >> 3) as u8) ^ hp.wrapping_mul(0x55) ^ (off as u8)
}

const fn put_u32(page: &mut [u8; PAGE_4K], at: usize, v: u32) {
    page[at] = v as u8;
    page[at + 1] = (v >> 8) as u8;
    page[at + 2] = (v >> 16) as u8;
    page[at + 3] = (v >> 24) as u8;
}

pub const fn head(hp: u8) -> [u8; PAGE_4K] {
    let mut page = [RET; PAGE_4K];
    // mov eax, imm32 ; ret
    page[HEAD_TAG_FN] = 0xB8;
    put_u32(&mut page, HEAD_TAG_FN + 1, head_tag(hp));
    page[HEAD_TAG_FN + 5] = RET;
    // lea rax, [rdi + disp32] ; ret
    page[HEAD_ADD_FN] = 0x48;
    page[HEAD_ADD_FN + 1] = 0x8D;
    page[HEAD_ADD_FN + 2] = 0x87;
    put_u32(&mut page, HEAD_ADD_FN + 3, add_delta(hp));
    page[HEAD_ADD_FN + 7] = RET;
    let mut off = PATTERN_SPLIT;
    while off < PAGE_4K {
        page[off] = pattern(hp, off);
        off += 1;
    }
    page
}

/// `base` is the tail's offset inside the 2 MiB page (for the pattern).
pub const fn tail(hp: u8, base: usize) -> [u8; PAGE_4K] {
    let mut page = [RET; PAGE_4K];
    let mut off = 0;
    while off < PATTERN_SPLIT {
        page[off] = pattern(hp, base + off);
        off += 1;
    }
    page[TAIL_TAG_FN] = 0xB8;
    put_u32(&mut page, TAIL_TAG_FN + 1, tail_tag(hp));
    page[TAIL_TAG_FN + 5] = RET;
    page
}

/// Offset of the tail inside its 2 MiB page.
pub const TAIL_BASE: usize = (2 << 20) - PAGE_4K;

#[link_section = ".hp1_head"]
#[used]
static HP1_HEAD: [u8; PAGE_4K] = head(1);
#[link_section = ".hp1_tail"]
#[used]
static HP1_TAIL: [u8; PAGE_4K] = tail(1, TAIL_BASE);
#[link_section = ".hp2_head"]
#[used]
static HP2_HEAD: [u8; PAGE_4K] = head(2);
#[link_section = ".hp2_tail"]
#[used]
static HP2_TAIL: [u8; PAGE_4K] = tail(2, TAIL_BASE);
#[link_section = ".hp3_head"]
#[used]
static HP3_HEAD: [u8; PAGE_4K] = head(3);
#[link_section = ".hp3_tail"]
#[used]
static HP3_TAIL: [u8; PAGE_4K] = tail(3, TAIL_BASE);
