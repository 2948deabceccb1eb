//! Model-specific registers the vCPU implements itself when RDMSR/WRMSR do not exit
//! (and that the VMM reaches through [`Vcpu::read_msr`] / [`Vcpu::write_msr`] after an
//! exit). SDM Vol. 4 for the numbers.

use crate::regs::{is_canonical, SegReg};
use crate::vcpu::{cr0, cr4, efer, Vcpu};

pub const IA32_TIME_STAMP_COUNTER: u32 = 0x10;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_EFER: u32 = 0xc000_0080;
pub const IA32_STAR: u32 = 0xc000_0081;
pub const IA32_LSTAR: u32 = 0xc000_0082;
pub const IA32_CSTAR: u32 = 0xc000_0083;
pub const IA32_FMASK: u32 = 0xc000_0084;
pub const IA32_FS_BASE: u32 = 0xc000_0100;
pub const IA32_GS_BASE: u32 = 0xc000_0101;
pub const IA32_KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const IA32_TSC_AUX: u32 = 0xc000_0103;

/// Why an MSR access raises #GP(0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MsrError {
    /// The MSR is not implemented.
    Unknown,
    /// The value sets reserved bits, is non-canonical, or the change is illegal now
    /// (e.g. EFER.LME with paging on).
    InvalidValue,
}

impl Vcpu {
    /// RDMSR semantics (without the exit check).
    pub fn read_msr(&self, msr: u32) -> Result<u64, MsrError> {
        let m = &self.msr;
        Ok(match msr {
            IA32_TIME_STAMP_COUNTER => self.tsc(),
            IA32_APIC_BASE => m.apic_base,
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            IA32_PAT => m.pat,
            IA32_EFER => self.efer,
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.sfmask,
            IA32_FS_BASE => self.seg[SegReg::Fs as usize].base,
            IA32_GS_BASE => self.seg[SegReg::Gs as usize].base,
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            IA32_TSC_AUX => m.tsc_aux,
            _ => return Err(MsrError::Unknown),
        })
    }

    /// WRMSR semantics (without the exit check): what the guest's WRMSR does when it
    /// does not exit, and what a VMM calls to complete a WRMSR exit.
    pub fn write_msr(&mut self, msr: u32, value: u64) -> Result<(), MsrError> {
        let la57 = self.cr4 & cr4::LA57 != 0;
        let canonical = |v: u64| {
            if is_canonical(v, la57) {
                Ok(v)
            } else {
                Err(MsrError::InvalidValue)
            }
        };
        match msr {
            IA32_TIME_STAMP_COUNTER => {
                self.controls.tsc_offset = value.wrapping_sub(self.stats.instructions);
            }
            IA32_APIC_BASE => {
                // Read-only in this model: only a write of the current value succeeds.
                if value != self.msr.apic_base {
                    return Err(MsrError::InvalidValue);
                }
            }
            IA32_SYSENTER_CS => self.msr.sysenter_cs = value & 0xffff_ffff,
            IA32_SYSENTER_ESP => self.msr.sysenter_esp = canonical(value)?,
            IA32_SYSENTER_EIP => self.msr.sysenter_eip = canonical(value)?,
            IA32_PAT => {
                // Each entry must be a valid memory type: 0, 1, 4, 5, 6, 7 (SDM 13.12.2).
                if (0..8).any(|i| matches!((value >> (8 * i)) & 0xff, 2 | 3 | 8..=0xff)) {
                    return Err(MsrError::InvalidValue);
                }
                self.msr.pat = value;
                self.paging_changed();
            }
            IA32_EFER => self.write_efer(value)?,
            IA32_STAR => self.msr.star = value,
            IA32_LSTAR => self.msr.lstar = canonical(value)?,
            IA32_CSTAR => self.msr.cstar = canonical(value)?,
            IA32_FMASK => self.msr.sfmask = value & 0xffff_ffff,
            IA32_FS_BASE => self.seg[SegReg::Fs as usize].base = canonical(value)?,
            IA32_GS_BASE => self.seg[SegReg::Gs as usize].base = canonical(value)?,
            IA32_KERNEL_GS_BASE => self.msr.kernel_gs_base = canonical(value)?,
            IA32_TSC_AUX => {
                if value >> 32 != 0 {
                    return Err(MsrError::InvalidValue);
                }
                self.msr.tsc_aux = value;
            }
            _ => return Err(MsrError::Unknown),
        }
        Ok(())
    }

    /// EFER: SCE, LME, NXE writable; LMA is read-only (set by CR0.PG with LME);
    /// LME cannot change while paging is on (SDM 9.8.5).
    fn write_efer(&mut self, value: u64) -> Result<(), MsrError> {
        let writable = efer::SCE | efer::LME | efer::NXE;
        if value & !(writable | efer::LMA) != 0 {
            return Err(MsrError::InvalidValue);
        }
        if self.cr0 & cr0::PG != 0 && (value ^ self.efer) & efer::LME != 0 {
            return Err(MsrError::InvalidValue);
        }
        self.efer = (self.efer & efer::LMA) | (value & writable);
        self.paging_changed();
        Ok(())
    }

    /// The guest TSC: retired instructions plus the TSC offset.
    pub(crate) fn tsc(&self) -> u64 {
        self.stats
            .instructions
            .wrapping_add(self.controls.tsc_offset)
    }
}
