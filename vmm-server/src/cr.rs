//! Validation of guest writes to CR0, CR3, CR4 and IA32_EFER, with the #GP(0)
//! conditions of SDM Vol. 2B "MOV - Move to/from Control Registers", Vol. 3A 2.5 and
//! 9.8.5 (IA-32e mode activation), and Vol. 4 (IA32_EFER), restricted to the CPU model
//! of [`crate::cpu_model`]. The vmm-server validates; only a legal value reaches the
//! vCPU and the mmu-server.

/// CR0 bits (SDM 2.5): the vCPU's, and the set this CPU model defines.
pub mod cr0 {
    pub use vcpu::cr0::*;
    /// Every defined bit; the other low bits are reserved and read as written-off.
    pub const DEFINED: u64 = PE | MP | EM | TS | ET | NE | WP | AM | NW | CD | PG;
}

/// CR4 and IA32_EFER bits (SDM 2.5, Vol. 4), as the vCPU defines them.
pub use vcpu::{cr4, efer};

/// CR3 with CR4.PCIDE = 1: bit 63 asks not to flush the PCID's translations.
pub const CR3_NOFLUSH: u64 = 1 << 63;

/// The paging control registers as the guest sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GuestCrs {
    pub cr0: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
}

impl GuestCrs {
    pub fn long_mode_active(&self) -> bool {
        self.efer & efer::LMA != 0
    }
    pub fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }
    /// PAE paging without long mode: the PDPTEs are loaded with CR3 (SDM 4.4.1).
    pub fn pae_legacy_paging(&self) -> bool {
        self.paging() && self.cr4 & cr4::PAE != 0 && !self.long_mode_active()
    }
}

/// Why a write is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrFault {
    /// Architecturally illegal: inject #GP(0), the register keeps its value.
    GeneralProtection(&'static str),
    /// Legal on hardware but outside what capvisor models (stop the VM with a
    /// diagnostic instead of running on wrongly).
    Unsupported(&'static str),
}

/// The result of a legal CR0 write: the new CR0, and EFER when IA-32e mode was
/// activated or deactivated by it (SDM 9.8.5: LMA follows PG while LME is set).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cr0Write {
    pub cr0: u64,
    pub efer: u64,
}

fn gp(why: &'static str) -> CrFault {
    CrFault::GeneralProtection(why)
}

/// MOV to CR0 (also the result of LMSW / CLTS). `cs_long` is CS.L.
pub fn write_cr0(cur: &GuestCrs, value: u64, cs_long: bool) -> Result<Cr0Write, CrFault> {
    if value >> 32 != 0 {
        return Err(gp("CR0 bits 63:32 set"));
    }
    // ET is hardwired to 1 since the i486; reserved low bits are ignored.
    let new = (value | cr0::ET) & cr0::DEFINED;
    if new & cr0::NW != 0 && new & cr0::CD == 0 {
        return Err(gp("CR0.NW set with CR0.CD clear"));
    }
    if new & cr0::PG != 0 && new & cr0::PE == 0 {
        return Err(gp("CR0.PG set with CR0.PE clear"));
    }
    if new & cr0::PE == 0 {
        return Err(CrFault::Unsupported(
            "clearing CR0.PE (real mode is not modelled)",
        ));
    }
    let mut efer = cur.efer;
    let pg_on = new & cr0::PG != 0 && cur.cr0 & cr0::PG == 0;
    let pg_off = new & cr0::PG == 0 && cur.cr0 & cr0::PG != 0;
    if pg_on && cur.efer & efer::LME != 0 {
        if cur.cr4 & cr4::PAE == 0 {
            return Err(gp("enabling paging with EFER.LME set and CR4.PAE clear"));
        }
        if cs_long {
            return Err(gp("enabling paging with CS.L set"));
        }
        efer |= efer::LMA;
    }
    if pg_off && cur.long_mode_active() {
        if cs_long {
            return Err(gp("clearing CR0.PG in 64-bit mode"));
        }
        efer &= !efer::LMA;
    }
    if pg_on && cur.cr4 & cr4::PCIDE != 0 && efer & efer::LMA == 0 {
        return Err(gp("enabling paging outside IA-32e mode with CR4.PCIDE set"));
    }
    Ok(Cr0Write { cr0: new, efer })
}

/// MOV to CR4.
pub fn write_cr4(cur: &GuestCrs, value: u64, allowed: u64) -> Result<u64, CrFault> {
    if value & !allowed != 0 {
        return Err(gp("CR4 reserved or unsupported bit set"));
    }
    let lma = cur.long_mode_active();
    if lma && value & cr4::PAE == 0 {
        return Err(gp("clearing CR4.PAE in IA-32e mode"));
    }
    if (value ^ cur.cr4) & cr4::LA57 != 0 && lma {
        return Err(gp("changing CR4.LA57 in IA-32e mode"));
    }
    if value & cr4::PCIDE != 0 && cur.cr4 & cr4::PCIDE == 0 && (!lma || cur.cr3 & 0xfff != 0) {
        return Err(gp(
            "setting CR4.PCIDE outside IA-32e mode or with CR3[11:0] != 0",
        ));
    }
    Ok(value)
}

/// MOV to CR3: the value the guest's CR3 takes (bit 63 cleared), and whether it asked
/// for NOFLUSH.
pub fn write_cr3(cur: &GuestCrs, value: u64, maxphyaddr: u32) -> Result<(u64, bool), CrFault> {
    let pcide = cur.cr4 & cr4::PCIDE != 0;
    let noflush = pcide && value & CR3_NOFLUSH != 0;
    let v = if pcide { value & !CR3_NOFLUSH } else { value };
    if cur.long_mode_active() {
        // Bits at and above MAXPHYADDR are reserved (SDM 4.5.2).
        if v >> maxphyaddr != 0 {
            return Err(gp("CR3 sets bits above MAXPHYADDR"));
        }
        Ok((v, noflush))
    } else {
        // Outside IA-32e mode only the low 32 bits exist.
        Ok((v & 0xffff_ffff, false))
    }
}

/// WRMSR to IA32_EFER (SDM Vol. 4, Table 2-2). LMA is read-only: the written value's
/// LMA is ignored and the current one kept.
pub fn write_efer(cur: &GuestCrs, value: u64) -> Result<u64, CrFault> {
    let writable = efer::SCE | efer::LME | efer::NXE;
    if value & !(writable | efer::LMA) != 0 {
        return Err(gp("EFER reserved bit set"));
    }
    if cur.paging() && (value ^ cur.efer) & efer::LME != 0 {
        return Err(gp("changing EFER.LME with paging enabled"));
    }
    Ok((value & writable) | (cur.efer & efer::LMA))
}

/// LMSW: loads CR0[3:0] from the source, except that it cannot clear PE (SDM Vol. 2A
/// LMSW).
pub fn lmsw_value(cur_cr0: u64, source: u16) -> u64 {
    let src = source as u64 & 0xf;
    (cur_cr0 & !0xe) | src | (cur_cr0 & cr0::PE)
}
