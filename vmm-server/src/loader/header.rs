//! Finding the multiboot header (multiboot spec 0.6.96, section 3.1), the way QEMU's
//! `-kernel` loader does: the first match of the magic at a 4-byte aligned offset below
//! 8192 - 48 whose checksum makes magic + flags + checksum == 0 (mod 2^32).

/// The header magic.
pub const MAGIC: u32 = 0x1BAD_B002;
/// Bytes searched for the header.
pub const SEARCH_BYTES: usize = 8192;
/// Flag 2: the kernel wants a video mode (QEMU only warns; so do we).
pub const FLAG_VIDEO_MODE: u32 = 1 << 2;
/// Flag 16: the header carries the load addresses (the "a.out kludge").
pub const FLAG_ADDRESSES: u32 = 1 << 16;

/// The header fields the loader uses. The address fields are only meaningful with
/// [`FLAG_ADDRESSES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MultibootHeader {
    /// File offset of the magic.
    pub offset: u32,
    pub flags: u32,
    pub header_addr: u32,
    pub load_addr: u32,
    pub load_end_addr: u32,
    pub bss_end_addr: u32,
    pub entry_addr: u32,
}

/// Reads a little-endian u32 at `off`, or 0 past the end of `bytes` (QEMU reads the
/// header from a zeroed 8 KiB buffer, so a short file reads as zeroes).
pub(crate) fn le32(bytes: &[u8], off: usize) -> u32 {
    let mut v = [0u8; 4];
    for (i, b) in v.iter_mut().enumerate() {
        *b = off
            .checked_add(i)
            .and_then(|o| bytes.get(o))
            .copied()
            .unwrap_or(0);
    }
    u32::from_le_bytes(v)
}

/// The first valid multiboot header of `image`, if any.
pub fn find(image: &[u8]) -> Option<MultibootHeader> {
    let window = image.len().min(SEARCH_BYTES);
    (0..SEARCH_BYTES - 48)
        .step_by(4)
        .take_while(|&off| off + 12 <= window)
        .find(|&off| {
            let magic = le32(image, off);
            let flags = le32(image, off + 4);
            let checksum = le32(image, off + 8);
            magic == MAGIC && magic.wrapping_add(flags).wrapping_add(checksum) == 0
        })
        .map(|off| MultibootHeader {
            offset: off as u32,
            flags: le32(image, off + 4),
            header_addr: le32(image, off + 12),
            load_addr: le32(image, off + 16),
            load_end_addr: le32(image, off + 20),
            bss_end_addr: le32(image, off + 24),
            entry_addr: le32(image, off + 28),
        })
}
