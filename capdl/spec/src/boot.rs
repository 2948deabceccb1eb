//! The boot-parameter frame: what the root task tells each protection domain at start.
//!
//! The spec gives every PD one read-only frame at [`layout::BOOT_PARAMS_VADDR`]
//! (`crate::layout`). The root task fills it with a [`BootParams`] record before the
//! PD's first instruction: who the PD is, the system-wide NX-huge-page settings, and the
//! host-physical addresses of the regions the spec made physically contiguous (the
//! page-table pool, each VM's guest RAM), which a PD needs to build its hpa -> local
//! address map and which only the root task can learn (`X86_Page_GetAddress`).
//!
//! Like the spec itself, the record is fixed-layout little-endian bytes (zerocopy,
//! `Unaligned`), so the writer and the reader agree without sharing Rust types' layout.
//!
//! [`layout::BOOT_PARAMS_VADDR`]: crate::layout::BOOT_PARAMS_VADDR

use crate::format::{NxMode, PdKind, TimerKind};
use crate::layout::MAX_VMS;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First bytes of a filled boot-parameter frame.
pub const BOOT_MAGIC: [u8; 8] = *b"CVBOOT\0\0";
/// Version of [`BootParams`] this crate reads and writes (2: the TSC frequency, the
/// VM's name and its guest image's name).
pub const BOOT_VERSION: u32 = 2;
/// `BootParams::irq` of a PD without an IRQ.
pub const NO_IRQ: u8 = 0xff;
/// Longest VM command line carried (the spec allows 255 bytes).
pub const CMDLINE_MAX: usize = 255;
/// Longest VM name or guest image name carried (the spec allows 32 bytes for a VM
/// name and 128 for an image name).
pub const NAME_MAX: usize = 128;

/// One contiguous region: where it starts in host-physical memory and how long it is.
#[derive(
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
)]
#[repr(C)]
pub struct Region {
    pub hpa: U64,
    pub bytes: U64,
}

/// One VM as a PD sees it.
#[derive(
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
)]
#[repr(C)]
pub struct BootVm {
    /// The VM id (the low bits of its mmu-server badge).
    pub id: U16,
    /// 0 TDP, 1 shadow (as `VmRecord::mmu`).
    pub mmu: u8,
    /// Bits of `format::vm_flags`.
    pub flags: u8,
    pub reserved0: [u8; 4],
    /// Its guest RAM.
    pub ram: Region,
}

/// The record at the start of the boot-parameter frame.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub struct BootParams {
    pub magic: [u8; 8],
    pub version: U32,
    /// This PD's index in the spec's PD table (its fault and console badge is index + 1).
    pub pd_index: U32,
    /// A [`PdKind`].
    pub pd_kind: u8,
    /// An [`NxMode`].
    pub nx_mode: u8,
    /// A [`TimerKind`].
    pub timer_kind: u8,
    /// A driver's ISA IRQ ([`NO_IRQ`] if it has none).
    pub irq: u8,
    /// For a vmm-server, its VM's index in `vms`; else `u32::MAX`.
    pub vm_index: U32,
    pub nx_recovery_ratio: U32,
    /// The TSC frequency in MHz the kernel measured at boot (0: unknown); a PD that
    /// must wait for a while without a timer of its own counts TSC ticks.
    pub tsc_mhz: U32,
    pub nx_recovery_period_ms: U64,
    /// The page-table pool (zero bytes if the PD does not map it).
    pub pool: Region,
    pub vm_count: U32,
    /// A driver's I/O ports, first and last (inclusive); 0, 0 if it has none.
    pub ports_first: U16,
    pub ports_last: U16,
    pub reserved2: [u8; 4],
    /// Length of `cmdline` in bytes.
    pub cmdline_len: U32,
    pub vms: [BootVm; MAX_VMS],
    /// The multiboot command line of this PD's VM (vmm-servers), UTF-8.
    pub cmdline: [u8; CMDLINE_MAX + 1],
    /// Length of `vm_name` in bytes.
    pub vm_name_len: U32,
    /// Length of `image` in bytes.
    pub image_len: U32,
    /// The name of this PD's VM (vmm-servers), as in the spec.
    pub vm_name: [u8; NAME_MAX],
    /// The name of this PD's VM's guest image (`image` in the spec), UTF-8.
    pub image: [u8; NAME_MAX],
}

/// Why a boot-parameter frame cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootParamsError {
    /// The frame is smaller than the record.
    Truncated,
    /// Not filled by the root task (wrong magic).
    BadMagic,
    UnsupportedVersion(u32),
    /// An enum field or a length is out of range.
    BadField(&'static str),
}

impl BootParams {
    /// An empty record for `pd_index` of `kind`, no VMs, no pool.
    pub fn new(pd_index: u32, kind: PdKind) -> BootParams {
        BootParams {
            magic: BOOT_MAGIC,
            version: U32::new(BOOT_VERSION),
            pd_index: U32::new(pd_index),
            pd_kind: kind as u8,
            nx_mode: NxMode::Auto as u8,
            timer_kind: TimerKind::Pit as u8,
            irq: NO_IRQ,
            vm_index: U32::new(u32::MAX),
            nx_recovery_ratio: U32::new(0),
            tsc_mhz: U32::new(0),
            nx_recovery_period_ms: U64::new(0),
            pool: Region::default(),
            vm_count: U32::new(0),
            ports_first: U16::new(0),
            ports_last: U16::new(0),
            reserved2: [0; 4],
            cmdline_len: U32::new(0),
            vms: [BootVm::default(); MAX_VMS],
            cmdline: [0; CMDLINE_MAX + 1],
            vm_name_len: U32::new(0),
            image_len: U32::new(0),
            vm_name: [0; NAME_MAX],
            image: [0; NAME_MAX],
        }
    }

    /// Reads and checks the record at the start of `bytes`.
    pub fn read(bytes: &[u8]) -> Result<&BootParams, BootParamsError> {
        let (p, _) = BootParams::ref_from_prefix(bytes).map_err(|_| BootParamsError::Truncated)?;
        if p.magic != BOOT_MAGIC {
            return Err(BootParamsError::BadMagic);
        }
        if p.version.get() != BOOT_VERSION {
            return Err(BootParamsError::UnsupportedVersion(p.version.get()));
        }
        if PdKind::from_u8(p.pd_kind).is_none() {
            return Err(BootParamsError::BadField("pd_kind"));
        }
        if NxMode::from_u8(p.nx_mode).is_none() {
            return Err(BootParamsError::BadField("nx_mode"));
        }
        if TimerKind::from_u8(p.timer_kind).is_none() {
            return Err(BootParamsError::BadField("timer_kind"));
        }
        if p.vm_count.get() as usize > MAX_VMS {
            return Err(BootParamsError::BadField("vm_count"));
        }
        if p.cmdline_len.get() as usize > CMDLINE_MAX
            || core::str::from_utf8(&p.cmdline[..p.cmdline_len.get() as usize]).is_err()
        {
            return Err(BootParamsError::BadField("cmdline"));
        }
        for (field, bytes, len) in [
            ("vm_name", &p.vm_name, p.vm_name_len.get()),
            ("image", &p.image, p.image_len.get()),
        ] {
            if len as usize > NAME_MAX || core::str::from_utf8(&bytes[..len as usize]).is_err() {
                return Err(BootParamsError::BadField(field));
            }
        }
        Ok(p)
    }

    /// Sets the command line, cut at [`CMDLINE_MAX`] bytes (on a character boundary).
    pub fn set_cmdline(&mut self, cmdline: &str) {
        let mut n = cmdline.len().min(CMDLINE_MAX);
        while !cmdline.is_char_boundary(n) {
            n -= 1;
        }
        self.cmdline = [0; CMDLINE_MAX + 1];
        self.cmdline[..n].copy_from_slice(&cmdline.as_bytes()[..n]);
        self.cmdline_len = U32::new(n as u32);
    }

    /// Sets the VM's name and its guest image's name (each cut at [`NAME_MAX`] bytes).
    pub fn set_names(&mut self, vm_name: &str, image: &str) {
        let (n, bytes) = cut(vm_name, NAME_MAX);
        self.vm_name = [0; NAME_MAX];
        self.vm_name[..n].copy_from_slice(bytes);
        self.vm_name_len = U32::new(n as u32);
        let (n, bytes) = cut(image, NAME_MAX);
        self.image = [0; NAME_MAX];
        self.image[..n].copy_from_slice(bytes);
        self.image_len = U32::new(n as u32);
    }

    /// This PD's VM's name (vmm-servers; empty otherwise).
    pub fn vm_name(&self) -> &str {
        let n = (self.vm_name_len.get() as usize).min(NAME_MAX);
        core::str::from_utf8(&self.vm_name[..n]).unwrap_or("")
    }

    /// The name of this PD's VM's guest image (vmm-servers; empty otherwise).
    pub fn image(&self) -> &str {
        let n = (self.image_len.get() as usize).min(NAME_MAX);
        core::str::from_utf8(&self.image[..n]).unwrap_or("")
    }

    pub fn pd_kind(&self) -> PdKind {
        PdKind::from_u8(self.pd_kind).unwrap_or(PdKind::MmuServer)
    }
    pub fn nx_mode(&self) -> NxMode {
        NxMode::from_u8(self.nx_mode).unwrap_or(NxMode::Auto)
    }
    pub fn timer_kind(&self) -> TimerKind {
        TimerKind::from_u8(self.timer_kind).unwrap_or(TimerKind::Pit)
    }
    /// The VMs (every one for the mmu-server, its own for a vmm-server).
    pub fn vms(&self) -> &[BootVm] {
        &self.vms[..(self.vm_count.get() as usize).min(MAX_VMS)]
    }
    /// This PD's VM, for a vmm-server.
    pub fn own_vm(&self) -> Option<&BootVm> {
        self.vms().get(self.vm_index.get() as usize)
    }
    /// A driver's IRQ.
    pub fn irq(&self) -> Option<u8> {
        (self.irq != NO_IRQ).then_some(self.irq)
    }
    pub fn cmdline(&self) -> &str {
        let n = (self.cmdline_len.get() as usize).min(CMDLINE_MAX);
        core::str::from_utf8(&self.cmdline[..n]).unwrap_or("")
    }
}

/// `s` cut at `max` bytes on a character boundary: the length and the bytes.
fn cut(s: &str, max: usize) -> (usize, &[u8]) {
    let mut n = s.len().min(max);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    (n, &s.as_bytes()[..n])
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::IntoBytes;

    #[test]
    fn the_record_fits_in_one_frame() {
        assert!(core::mem::size_of::<BootParams>() <= crate::layout::PAGE_SIZE as usize);
    }

    #[test]
    fn round_trip() {
        let mut p = BootParams::new(3, PdKind::VmmServer);
        p.vm_index = U32::new(0);
        p.vm_count = U32::new(1);
        p.vms[0].id = U16::new(7);
        p.vms[0].ram = Region {
            hpa: U64::new(0x4000_0000),
            bytes: U64::new(4 << 20),
        };
        p.set_cmdline("fault now");
        p.set_names("demo", "kernexec");
        p.tsc_mhz = U32::new(2000);
        let mut frame = [0u8; 4096];
        frame[..core::mem::size_of::<BootParams>()].copy_from_slice(p.as_bytes());
        let q = BootParams::read(&frame).unwrap();
        assert_eq!(q.pd_kind(), PdKind::VmmServer);
        assert_eq!(q.irq(), None);
        assert_eq!(q.own_vm().unwrap().id.get(), 7);
        assert_eq!(q.own_vm().unwrap().ram.hpa.get(), 0x4000_0000);
        assert_eq!(q.cmdline(), "fault now");
        assert_eq!((q.vm_name(), q.image()), ("demo", "kernexec"));
        assert_eq!(q.tsc_mhz.get(), 2000);
    }

    #[test]
    fn a_name_that_is_not_utf8_is_refused() {
        let mut p = BootParams::new(0, PdKind::VmmServer);
        p.image = [0xff; NAME_MAX];
        p.image_len = U32::new(2);
        assert_eq!(
            BootParams::read(p.as_bytes()).err(),
            Some(BootParamsError::BadField("image"))
        );
        p.image_len = U32::new(NAME_MAX as u32 + 1);
        assert_eq!(
            BootParams::read(p.as_bytes()).err(),
            Some(BootParamsError::BadField("image"))
        );
    }

    #[test]
    fn an_unfilled_or_damaged_frame_is_refused() {
        let frame = [0u8; 4096];
        assert_eq!(
            BootParams::read(&frame).err(),
            Some(BootParamsError::BadMagic)
        );
        assert_eq!(
            BootParams::read(&frame[..8]).err(),
            Some(BootParamsError::Truncated)
        );
        let mut p = BootParams::new(0, PdKind::UartDriver);
        p.vm_count = U32::new(MAX_VMS as u32 + 1);
        assert_eq!(
            BootParams::read(p.as_bytes()).err(),
            Some(BootParamsError::BadField("vm_count"))
        );
        let mut p = BootParams::new(0, PdKind::UartDriver);
        p.pd_kind = 99;
        assert_eq!(
            BootParams::read(p.as_bytes()).err(),
            Some(BootParamsError::BadField("pd_kind"))
        );
    }

    #[test]
    fn a_long_command_line_is_cut_on_a_character_boundary() {
        let mut p = BootParams::new(0, PdKind::VmmServer);
        let long = "é".repeat(200); // 400 bytes
        p.set_cmdline(&long);
        assert!(p.cmdline().len() <= CMDLINE_MAX);
        assert!(BootParams::read(p.as_bytes()).is_ok());
    }
}
