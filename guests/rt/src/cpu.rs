//! Control registers, MSRs, CPUID and the GDT/TSS.

use core::arch::asm;

/// CR0.WP (SDM vol. 3 2.5): supervisor writes honour read-only pages.
pub const CR0_WP: u64 = 1 << 16;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.PCIDE: process-context identifiers (SDM vol. 3 4.10.1).
pub const CR4_PCIDE: u64 = 1 << 17;
/// MOV to CR3 with bit 63 set keeps the PCID's cached translations (SDM vol. 3 4.10.4.1).
pub const CR3_NOFLUSH: u64 = 1 << 63;

pub const MSR_EFER: u32 = 0xC000_0080;
pub const MSR_STAR: u32 = 0xC000_0081;
pub const MSR_LSTAR: u32 = 0xC000_0082;
pub const MSR_FMASK: u32 = 0xC000_0084;
pub const EFER_SCE: u64 = 1 << 0;
pub const EFER_NXE: u64 = 1 << 11;

/// Kernel code selector (64-bit).
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data/stack selector.
pub const KERNEL_DS: u16 = 0x10;
/// User data/stack selector, RPL 3.
pub const USER_DS: u16 = 0x18 | 3;
/// User code selector (64-bit), RPL 3.
pub const USER_CS: u16 = 0x20 | 3;
/// Task state segment selector.
pub const TSS_SEL: u16 = 0x28;

core::arch::global_asm!(
    r#"
    .section .data.rt_gdt, "aw"
    .balign 16
    .global rt_gdt
rt_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF    /* 0x08: code, DPL 0, L = 1 */
    .quad 0x00CF92000000FFFF    /* 0x10: data, DPL 0 */
    .quad 0x00CFF2000000FFFF    /* 0x18: data, DPL 3 */
    .quad 0x00AFFA000000FFFF    /* 0x20: code, DPL 3, L = 1 */
    .quad 0, 0                  /* 0x28: 64-bit TSS, filled by trap::init */
rt_gdt_end:
    .balign 8
    .global rt_gdt_ptr
rt_gdt_ptr:
    .word rt_gdt_end - rt_gdt - 1
    .quad rt_gdt
"#
);

#[inline]
pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// The caller keeps the CPU in a consistent state (paging, protection) with the value.
#[inline]
pub unsafe fn write_cr0(v: u64) {
    asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags));
}

#[inline]
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

#[inline]
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// `v` must name page tables that map the running code, its stack and its data.
#[inline]
pub unsafe fn write_cr3(v: u64) {
    asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags));
}

#[inline]
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading a control register has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// # Safety
/// Only features the CPU reports may be enabled (else #GP), with their preconditions.
#[inline]
pub unsafe fn write_cr4(v: u64) {
    asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags));
}

/// Invalidates the TLB entries for the page containing `va` (SDM vol. 2, INVLPG).
#[inline]
pub fn invlpg(va: u64) {
    // SAFETY: only drops cached translations.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

#[inline]
pub fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only architectural MSRs are read by the runtime.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// # Safety
/// The value must be valid for the MSR and keep the CPU consistent.
#[inline]
pub unsafe fn wrmsr(msr: u32, v: u64) {
    asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32, options(nostack, preserves_flags));
}

/// CPUID leaf `leaf`, subleaf 0: (eax, ebx, ecx, edx).
pub fn cpuid(leaf: u32) -> (u32, u32, u32, u32) {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    (r.eax, r.ebx, r.ecx, r.edx)
}

/// The CPU features the guests adapt to. Never printed: QEMU's CPU models and capvisor's
/// differ, and guest output must not.
#[derive(Clone, Copy, Debug)]
pub struct Features {
    /// CPUID.01H:ECX.PCID[bit 17].
    pub pcid: bool,
    /// CPUID.01H:EDX.PGE[bit 13].
    pub pge: bool,
    /// CPUID.80000001H:EDX.NX[bit 20].
    pub nx: bool,
    /// CPUID.80000001H:EDX.SYSCALL[bit 11].
    pub syscall: bool,
}

/// Reads the feature bits the guests use.
pub fn features() -> Features {
    let (_, _, ecx1, edx1) = cpuid(1);
    let (max_ext, _, _, _) = cpuid(0x8000_0000);
    let edx_ext = if max_ext >= 0x8000_0001 {
        cpuid(0x8000_0001).3
    } else {
        0
    };
    Features {
        pcid: ecx1 & (1 << 17) != 0,
        pge: edx1 & (1 << 13) != 0,
        nx: edx_ext & (1 << 20) != 0,
        syscall: edx_ext & (1 << 11) != 0,
    }
}

/// Sets EFER.NXE when the CPU has NX, so page tables may use bit 63.
pub fn enable_nx_if_present() {
    if features().nx {
        // SAFETY: NXE is supported (CPUID) and only widens what page tables may say.
        unsafe { wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_NXE) };
    }
}

/// Whether EFER.NXE is on (so [`crate::paging::NX`] may be used).
pub fn nx_enabled() -> bool {
    rdmsr(MSR_EFER) & EFER_NXE != 0
}
