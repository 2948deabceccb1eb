//! The multiboot (v1) information structure (Multiboot spec 3.3): memory sizes and the
//! command line. QEMU passes "<kernel path> <-append text>" as the command line, so
//! options are looked up as `key=value` words and other words are ignored.

/// Info flag: `mem_lower`/`mem_upper` are valid.
const INFO_MEM: u32 = 1 << 0;
/// Info flag: `cmdline` is valid.
const INFO_CMDLINE: u32 = 1 << 2;
/// Longest command line kept.
pub const CMDLINE_MAX: usize = 256;

/// What a guest needs from the multiboot info, copied out of guest memory so the info
/// area may be reused afterwards.
#[derive(Clone, Copy)]
pub struct BootInfo {
    /// KiB of memory above 1 MiB, if the loader said.
    pub mem_upper_kib: Option<u32>,
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
