//! The guest CPU model: what CPUID reports, and which MSRs exist. One consistent model
//! for every VM, chosen so that it promises nothing the software vCPU does not run:
//!
//! - vendor "GenuineIntel", family 6; brand "capvisor software vCPU";
//! - MAXPHYADDR 40 (QEMU TCG's default phys-bits), 48-bit linear addresses;
//! - integer ISA only: no x87/MMX/SSE/AVX/XSAVE is advertised (guests are soft-float);
//! - paging: PSE, PAE, PGE, PAT, NX, 1 GiB pages, PCID and INVPCID, SMEP; no SMAP, no
//!   protection keys, no 5-level paging (the vCPU walks them, but the guests here do
//!   not need them, and a smaller model keeps CR4 validation simple);
//! - system: TSC, MSR, CX8, CMOV, SYSCALL/SYSRET, long mode, RDTSCP, LAHF/SAHF in 64-bit
//!   mode; no VMX (nested virtualization is not offered), no APIC (no interrupt sources).
//!
//! CR4 bits may only be set for features this model reports (as KVM checks guest CPUID).

/// CPUID.01H:EDX.
pub mod edx1 {
    pub const PSE: u32 = 1 << 3;
    pub const TSC: u32 = 1 << 4;
    pub const MSR: u32 = 1 << 5;
    pub const PAE: u32 = 1 << 6;
    pub const CX8: u32 = 1 << 8;
    pub const PGE: u32 = 1 << 13;
    pub const CMOV: u32 = 1 << 15;
    pub const PAT: u32 = 1 << 16;
}

/// CPUID.01H:ECX.
pub mod ecx1 {
    pub const PCID: u32 = 1 << 17;
}

/// CPUID.(EAX=07H,ECX=0):EBX.
pub mod ebx7 {
    pub const SMEP: u32 = 1 << 7;
    pub const INVPCID: u32 = 1 << 10;
}

/// CPUID.80000001H:EDX / ECX.
pub mod ext1 {
    pub const SYSCALL: u32 = 1 << 11;
    pub const NX: u32 = 1 << 20;
    pub const PAGE1GB: u32 = 1 << 26;
    pub const RDTSCP: u32 = 1 << 27;
    pub const LM: u32 = 1 << 29;
    /// ECX: LAHF/SAHF in 64-bit mode.
    pub const LAHF_LM: u32 = 1 << 0;
}

/// The guest's physical-address width.
pub const MAXPHYADDR: u32 = 40;
/// The guest's linear-address width.
pub const LINEAR_BITS: u32 = 48;

const MAX_BASIC_LEAF: u32 = 0x7;
const MAX_EXT_LEAF: u32 = 0x8000_0008;

/// "GenuineIntel" in EBX, EDX, ECX order.
const VENDOR: [u32; 3] = [0x756e_6547, 0x4965_6e69, 0x6c65_746e];

/// 48 bytes, NUL padded.
const BRAND: &[u8; 48] =
    b"capvisor software vCPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn brand_regs(part: usize) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, r) in out.iter_mut().enumerate() {
        let at = part * 16 + i * 4;
        *r = u32::from_le_bytes([BRAND[at], BRAND[at + 1], BRAND[at + 2], BRAND[at + 3]]);
    }
    out
}

/// CPUID for `leaf` / `subleaf`: `[eax, ebx, ecx, edx]`. Leaves above the maximum
/// report the highest basic leaf's values, as Intel CPUs do (SDM Vol. 2A CPUID).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        0 => [MAX_BASIC_LEAF, VENDOR[0], VENDOR[2], VENDOR[1]],
        // Family 6, model 0x3a (an Ivy Bridge-era signature), stepping 9; one logical
        // processor; CLFLUSH line size 8 (64 bytes) in EBX[15:8].
        1 => [
            0x0003_06a9,
            (1 << 16) | (8 << 8),
            ecx1::PCID,
            edx1::PSE
                | edx1::TSC
                | edx1::MSR
                | edx1::PAE
                | edx1::CX8
                | edx1::PGE
                | edx1::CMOV
                | edx1::PAT,
        ],
        7 if subleaf == 0 => [0, ebx7::SMEP | ebx7::INVPCID, 0, 0],
        2..=MAX_BASIC_LEAF => [0; 4],
        0x8000_0000 => [MAX_EXT_LEAF, 0, 0, 0],
        0x8000_0001 => [
            0,
            0,
            ext1::LAHF_LM,
            ext1::SYSCALL | ext1::NX | ext1::PAGE1GB | ext1::RDTSCP | ext1::LM,
        ],
        0x8000_0002..=0x8000_0004 => brand_regs((leaf - 0x8000_0002) as usize),
        0x8000_0005..=0x8000_0007 => [0; 4],
        0x8000_0008 => [MAXPHYADDR | (LINEAR_BITS << 8), 0, 0, 0],
        _ => cpuid(MAX_BASIC_LEAF, 0),
    }
}

/// CR4 bits a guest may set on this model (SDM 2.5 with the CPUID gates above).
pub fn allowed_cr4() -> u64 {
    use crate::cr::cr4::*;
    VME | PVI | TSD | DE | PSE | PAE | MCE | PGE | PCE | PCIDE | SMEP
}

/// MSRs the guest may access directly (the vCPU implements them; no exit).
pub const PASSTHROUGH_MSRS: [u32; 13] = [
    0x10,        // IA32_TIME_STAMP_COUNTER
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x277,       // IA32_PAT
    0xc000_0081, // IA32_STAR
    0xc000_0082, // IA32_LSTAR
    0xc000_0083, // IA32_CSTAR
    0xc000_0084, // IA32_FMASK
    0xc000_0100, // IA32_FS_BASE
    0xc000_0101, // IA32_GS_BASE
    0xc000_0102, // IA32_KERNEL_GS_BASE
    0xc000_0103, // IA32_TSC_AUX
];

/// IA32_EFER: reads go straight to the vCPU, writes exit (the MMU must see them).
pub const MSR_EFER: u32 = 0xc000_0080;
/// IA32_APIC_BASE: readable (the vCPU reports the reset value), writes exit.
pub const MSR_APIC_BASE: u32 = 0x1b;
