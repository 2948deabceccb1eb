//! The boot information a multiboot kernel finds at entry, laid out where and how QEMU
//! (7.2, `pc` machine, SeaBIOS) lays it out for `-kernel`, so that a guest sees the same
//! bytes under capvisor as under QEMU:
//!
//! - the memory map (multiboot spec 3.3, `mmap_*`: entries of `size = 20, base_addr,
//!   length, type`) at 0x9000, as the BIOS E820 table presents it: usable RAM below the
//!   640K hole up to the extended BIOS data area (0x9fc00), the EBDA and the BIOS area
//!   0xf0000-0xfffff reserved, usable RAM from 1 MiB up to 128 KiB below the top of RAM
//!   (the firmware keeps those for its ACPI tables), the BIOS flash below 4 GiB, and the
//!   HyperTransport range at 1012 GiB that QEMU reserves;
//! - the multiboot information structure (spec 3.3) at 0x9500;
//! - the command line (`"<kernel path> <append>"`: QEMU prefixes the kernel's file name)
//!   and the boot-loader name `"qemu"` right after the page-aligned kernel image.

/// Where the memory map goes.
pub const MMAP_ADDR: u32 = 0x9000;
/// Where the multiboot information structure goes (EBX at entry).
pub const INFO_ADDR: u32 = 0x9500;
/// Size of the information structure QEMU writes.
pub const INFO_SIZE: u32 = 88;
/// The boot-loader name QEMU reports.
pub const BOOT_LOADER_NAME: &str = "qemu";

/// `flags` of the information structure: mem_*, boot_device, cmdline, mods_*, mmap_*,
/// boot_loader_name (spec 3.3 bits 0, 1, 2, 3, 6, 9).
pub const INFO_FLAGS: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9);
/// `boot_device`: QEMU reports "no BIOS drive, no partition".
pub const BOOT_DEVICE: u32 = 0x8000_ffff;

/// Memory-map entry types (spec 3.3).
pub const MEMORY_AVAILABLE: u32 = 1;
pub const MEMORY_RESERVED: u32 = 2;

/// Smallest and largest RAM sizes whose map we can present like QEMU: RAM must reach
/// above 1 MiB plus the firmware's 128 KiB, and stay below the PCI hole.
pub const MIN_RAM: u64 = 2 << 20;
pub const MAX_RAM: u64 = 3 << 30;

const EBDA_START: u64 = 0x9_fc00;
const FIRMWARE_TOP_RESERVED: u64 = 0x2_0000;

/// One memory-map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    pub base: u64,
    pub len: u64,
    pub kind: u32,
}

/// The memory map presented for `ram_size` bytes of RAM, in QEMU's order.
pub fn memory_map(ram_size: u64) -> [MemoryRegion; 7] {
    let region = |base, len, kind| MemoryRegion { base, len, kind };
    let top_usable = ram_size - FIRMWARE_TOP_RESERVED;
    [
        region(0, EBDA_START, MEMORY_AVAILABLE),
        region(EBDA_START, 0xa_0000 - EBDA_START, MEMORY_RESERVED),
        region(0xf_0000, 0x1_0000, MEMORY_RESERVED),
        region(0x10_0000, top_usable - 0x10_0000, MEMORY_AVAILABLE),
        region(top_usable, FIRMWARE_TOP_RESERVED, MEMORY_RESERVED),
        region(0xfffc_0000, 0x4_0000, MEMORY_RESERVED),
        region(0xfd_0000_0000, 0x3_0000_0000, MEMORY_RESERVED),
    ]
}

/// `mem_lower` and `mem_upper` in KiB, as the firmware derives them from the map:
/// conventional memory up to the EBDA, and contiguous usable memory above 1 MiB.
pub fn mem_lower_upper(ram_size: u64) -> (u32, u32) {
    let lower = (EBDA_START / 1024) as u32;
    let upper = ((ram_size - FIRMWARE_TOP_RESERVED - 0x10_0000) / 1024) as u32;
    (lower, upper)
}

/// The 24-byte wire form of the memory map.
pub fn encode_memory_map(ram_size: u64, out: &mut [u8; 7 * 24]) {
    for (i, r) in memory_map(ram_size).iter().enumerate() {
        let e = &mut out[i * 24..(i + 1) * 24];
        e[0..4].copy_from_slice(&20u32.to_le_bytes());
        e[4..12].copy_from_slice(&r.base.to_le_bytes());
        e[12..20].copy_from_slice(&r.len.to_le_bytes());
        e[20..24].copy_from_slice(&r.kind.to_le_bytes());
    }
}

/// The addresses the information structure points to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InfoPointers {
    pub cmdline: u32,
    pub mods_addr: u32,
    pub boot_loader_name: u32,
}

/// The 88-byte information structure (spec 3.3 offsets).
pub fn encode_info(ram_size: u64, ptrs: InfoPointers, out: &mut [u8; INFO_SIZE as usize]) {
    out.fill(0);
    let (lower, upper) = mem_lower_upper(ram_size);
    let mut put = |off: usize, v: u32| out[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0, INFO_FLAGS);
    put(4, lower);
    put(8, upper);
    put(12, BOOT_DEVICE);
    put(16, ptrs.cmdline);
    put(20, 0); // mods_count
    put(24, ptrs.mods_addr);
    put(44, 7 * 24); // mmap_length
    put(48, MMAP_ADDR);
    put(64, ptrs.boot_loader_name);
}
