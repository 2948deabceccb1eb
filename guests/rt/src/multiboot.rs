//! The multiboot (v1) information structure (Multiboot spec 3.3): memory sizes and the
//! command line. QEMU passes "<kernel path> <-append text>" as the command line, so
//! options are looked up as `key=value` words and other words are ignored.

/// Info flag: `mem_lower`/`mem_upper` are valid.
const INFO_MEM: u32 = 1 << 0;
/// Info flag: `cmdline` is valid.
const INFO_CMDLINE: u32 = 1 << 2;
/// Info flag: `mmap_length`/`mmap_addr` are valid.
const INFO_MMAP: u32 = 1 << 6;
/// Memory map entry type of usable RAM.
const MMAP_RAM: u32 = 1;
const MIB: u64 = 1 << 20;
/// Longest command line kept.
pub const CMDLINE_MAX: usize = 256;

/// What a guest needs from the multiboot info, copied out of guest memory so the info
/// area may be reused afterwards.
#[derive(Clone, Copy)]
pub struct BootInfo {
    /// KiB of memory above 1 MiB, if the loader said.
    pub mem_upper_kib: Option<u32>,
    /// End of the RAM range that contains 1 MiB, from the memory map, if there is one.
    pub mmap_ram_end: Option<u64>,
    cmdline: [u8; CMDLINE_MAX],
    cmdline_len: usize,
}

/// A malformed command-line option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError {
    /// The value after `key=` is not a decimal number.
    NotANumber,
    /// The number is outside what the guest accepts.
    OutOfRange,
}

impl BootInfo {
    /// Reads the info structure the loader passed in EBX.
    pub fn read() -> BootInfo {
        let addr = crate::boot::multiboot_info_addr() as usize as *const u32;
        let mut info = BootInfo {
            mem_upper_kib: None,
            mmap_ram_end: None,
            cmdline: [0; CMDLINE_MAX],
            cmdline_len: 0,
        };
        if addr.is_null() {
            return info;
        }
        // SAFETY: the loader placed the structure at EBX inside the identity-mapped first
        // GiB; fields are read only when their flag says they are valid.
        unsafe {
            let flags = addr.read_volatile();
            if flags & INFO_MEM != 0 {
                info.mem_upper_kib = Some(addr.add(2).read_volatile());
            }
            if flags & INFO_MMAP != 0 {
                let len = addr.add(11).read_volatile() as usize;
                let base = addr.add(12).read_volatile() as usize;
                info.mmap_ram_end = ram_end_from_mmap(base, len);
            }
            if flags & INFO_CMDLINE != 0 {
                let mut p = addr.add(4).read_volatile() as usize as *const u8;
                while info.cmdline_len < CMDLINE_MAX {
                    let b = p.read_volatile();
                    if b == 0 {
                        break;
                    }
                    info.cmdline[info.cmdline_len] = b;
                    info.cmdline_len += 1;
                    p = p.add(1);
                }
            }
        }
        info
    }

    /// Where the RAM that starts below 1 MiB and continues above it ends: from the
    /// memory map when there is one, else from `mem_upper`.
    pub fn ram_end(&self) -> Option<u64> {
        self.mmap_ram_end
            .or(self.mem_upper_kib.map(|kib| MIB + u64::from(kib) * 1024))
    }

    /// The command line (possibly truncated to [`CMDLINE_MAX`] bytes).
    pub fn cmdline(&self) -> &[u8] {
        &self.cmdline[..self.cmdline_len]
    }

    /// The value of the last `key=value` word, if any.
    pub fn option(&self, key: &str) -> Option<&[u8]> {
        self.cmdline().split(|&b| b == b' ').rev().find_map(|w| {
            let k = key.as_bytes();
            (w.len() > k.len() && w.starts_with(k) && w[k.len()] == b'=').then(|| &w[k.len() + 1..])
        })
    }

    /// `key=N` as a decimal number in `min..=max`, or `default` when absent.
    pub fn option_u64(
        &self,
        key: &str,
        default: u64,
        min: u64,
        max: u64,
    ) -> Result<u64, OptionError> {
        let Some(text) = self.option(key) else {
            return Ok(default);
        };
        let value = parse_decimal(text).ok_or(OptionError::NotANumber)?;
        if value < min || value > max {
            return Err(OptionError::OutOfRange);
        }
        Ok(value)
    }
}

/// Parses a non-empty decimal number that fits in u64.
pub fn parse_decimal(text: &[u8]) -> Option<u64> {
    if text.is_empty() {
        return None;
    }
    text.iter().try_fold(0u64, |acc, &b| {
        let digit = b.checked_sub(b'0').filter(|d| *d < 10)?;
        acc.checked_mul(10)?.checked_add(u64::from(digit))
    })
}

/// Walks the memory map (Multiboot spec 3.3: each entry is `size: u32` followed by
/// `size` bytes of base u64, length u64, type u32) for the RAM range containing 1 MiB.
///
/// # Safety
/// `[base, base + len)` must be the loader's readable memory map.
unsafe fn ram_end_from_mmap(base: usize, len: usize) -> Option<u64> {
    let mut off = 0;
    // Bounded: at most 128 entries, so a corrupt size cannot loop forever.
    for _ in 0..128 {
        if off + 24 > len {
            break;
        }
        let entry = (base + off) as *const u8;
        let size = (entry as *const u32).read_unaligned() as usize;
        let start = (entry.add(4) as *const u64).read_unaligned();
        let length = (entry.add(12) as *const u64).read_unaligned();
        let kind = (entry.add(20) as *const u32).read_unaligned();
        if kind == MMAP_RAM && start <= MIB && MIB < start.saturating_add(length) {
            return Some(start + length);
        }
        off += size + 4;
    }
    None
}
