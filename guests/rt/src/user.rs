//! User mode (CPL 3), entered by IRETQ or SYSRET and left by SYSCALL or by a fault.
//!
//! [`run`] behaves like a function call into user mode: it loads a [`UserRegs`], runs
//! until the user code executes SYSCALL (or faults), saves the user state back into the
//! same `UserRegs` and returns why it stopped. The kernel handles the system call, sets
//! the result in `regs.rax` and calls `run` again to resume. Scheduling several
//! processes is then a loop in ordinary Rust.
//!
//! SYSCALL (SDM vol. 2): RCX = return RIP, R11 = RFLAGS, CS/SS from IA32_STAR, RIP from
//! IA32_LSTAR, RFLAGS &= ~IA32_FMASK; the stack is not switched, so the entry stub
//! saves the user RSP and works on the user context itself.

use crate::cpu::{self, EFER_SCE, KERNEL_CS, MSR_EFER, MSR_FMASK, MSR_LSTAR, MSR_STAR};
use crate::trap::{Fault, TrapFrame};
use core::ptr::{addr_of, addr_of_mut};

/// A user thread's registers. Layout is shared with the assembly below.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct UserRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
    pub rsp: u64,
    /// Set by the SYSCALL entry, cleared by a fault: the next [`run`] may return with
    /// SYSRET (RCX and R11 are clobbered by SYSCALL anyway); otherwise it uses IRETQ.
    pub after_syscall: u64,
}

/// RFLAGS for user code: reserved bit 1 only. IF stays clear (no interrupt sources are
/// programmed, and the loader left the PIC's vectors overlapping the exceptions').
pub const USER_RFLAGS: u64 = 0x2;

/// Why [`run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserExit {
    /// The user executed SYSCALL; the number is in `regs.rax`, arguments in RDI, RSI, RDX.
    Syscall,
    /// The user faulted; `regs` holds the state at the faulting instruction.
    Fault(Fault),
}

#[no_mangle]
static mut RT_KERNEL_RSP: u64 = 0;
#[no_mangle]
static mut RT_USER_CTX: u64 = 0;
#[no_mangle]
static mut RT_USER_RSP_SCRATCH: u64 = 0;

core::arch::global_asm!(
    r#"
    .section .text.rt_user, "ax"
    /* rdi = *mut UserRegs, esi = 1 to return with SYSRET, 0 with IRETQ. */
    .global rt_enter_user
rt_enter_user:
    push rbx
    push rbp
    push r12
    push r13
    push r14
    push r15
    mov [rip + RT_KERNEL_RSP], rsp
    mov [rip + RT_USER_CTX], rdi
    test esi, esi
    jnz 2f
    push {user_ds}
    push qword ptr [rdi + 136]
    push qword ptr [rdi + 128]
    push {user_cs}
    push qword ptr [rdi + 120]
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rcx, [rdi + 16]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r11, [rdi + 80]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rdi, [rdi + 40]
    iretq
2:
    /* SYSRET (SDM vol. 2): RIP = RCX, RFLAGS = R11, CS/SS from IA32_STAR[63:48]. */
    mov rcx, [rdi + 120]
    mov r11, [rdi + 128]
    mov rax, [rdi + 0]
    mov rbx, [rdi + 8]
    mov rdx, [rdi + 24]
    mov rsi, [rdi + 32]
    mov rbp, [rdi + 48]
    mov r8, [rdi + 56]
    mov r9, [rdi + 64]
    mov r10, [rdi + 72]
    mov r12, [rdi + 88]
    mov r13, [rdi + 96]
    mov r14, [rdi + 104]
    mov r15, [rdi + 112]
    mov rsp, [rdi + 136]
    mov rdi, [rdi + 40]
    sysretq

    .global rt_syscall_entry
rt_syscall_entry:
    mov [rip + RT_USER_RSP_SCRATCH], rsp
    mov rsp, [rip + RT_USER_CTX]
    add rsp, 120
    push r15
    push r14
    push r13
    push r12
    push r11
    push r10
    push r9
    push r8
    push rbp
    push rdi
    push rsi
    push rdx
    push rcx
    push rbx
    push rax
    mov [rsp + 120], rcx
    mov [rsp + 128], r11
    mov rcx, [rip + RT_USER_RSP_SCRATCH]
    mov [rsp + 136], rcx
    mov qword ptr [rsp + 144], 1
    mov eax, 1

    .global rt_return_to_kernel
rt_return_to_kernel:
    mov rsp, [rip + RT_KERNEL_RSP]
    pop r15
    pop r14
    pop r13
    pop r12
    pop rbp
    pop rbx
    ret
"#,
    user_ds = const crate::cpu::USER_DS,
    user_cs = const crate::cpu::USER_CS,
);

extern "C" {
    fn rt_enter_user(regs: *mut UserRegs, sysret: u32) -> u32;
    fn rt_syscall_entry();
}

/// User mode cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserModeError {
    /// CPUID.80000001H:EDX.SYSCALL[bit 11] is clear.
    NoSyscall,
}

/// Enables SYSCALL/SYSRET: EFER.SCE, STAR (kernel CS 0x08 / SS 0x10; SYSRET bases at
/// 0x10 so user SS = 0x1b and user CS = 0x23), LSTAR, and FMASK clearing IF, TF, DF, AC.
pub fn init() -> Result<(), UserModeError> {
    if !cpu::features().syscall {
        return Err(UserModeError::NoSyscall);
    }
    // SAFETY: the selectors match the GDT in `cpu`; the entry stub is ours.
    unsafe {
        cpu::wrmsr(MSR_STAR, (0x10u64 << 48) | (u64::from(KERNEL_CS) << 32));
        cpu::wrmsr(MSR_LSTAR, rt_syscall_entry as *const () as u64);
        cpu::wrmsr(MSR_FMASK, (1 << 9) | (1 << 8) | (1 << 10) | (1 << 18));
        cpu::wrmsr(MSR_EFER, cpu::rdmsr(MSR_EFER) | EFER_SCE);
    }
    Ok(())
}

/// Runs user code from `regs` until it makes a system call or faults. Returns to user
/// mode with SYSRET after a system call, with IRETQ otherwise.
///
/// # Safety
/// The current page tables must map `regs.rip` and `regs.rsp` as the user code expects,
/// `regs.rip` must be canonical, and [`init`] must have run.
pub unsafe fn run(regs: &mut UserRegs) -> UserExit {
    let sysret = u32::from(regs.after_syscall != 0);
    let why = rt_enter_user(regs as *mut UserRegs, sysret);
    *addr_of_mut!(RT_USER_CTX) = 0;
    if why == 1 {
        UserExit::Syscall
    } else {
        UserExit::Fault(crate::trap::last_fault())
    }
}

/// Called by the trap handler for a fault at CPL 3: saves the user state into the
/// context being run. False if no user context is active (a bug: reported as unexpected).
pub(crate) fn save_from_trap(frame: &TrapFrame) -> bool {
    // SAFETY: single CPU; the context pointer is set by `rt_enter_user` and stays valid
    // for the duration of `run`.
    unsafe {
        let ctx = *addr_of!(RT_USER_CTX) as *mut UserRegs;
        if ctx.is_null() {
            return false;
        }
        let r = &mut *ctx;
        r.rax = frame.rax;
        r.rbx = frame.rbx;
        r.rcx = frame.rcx;
        r.rdx = frame.rdx;
        r.rsi = frame.rsi;
        r.rdi = frame.rdi;
        r.rbp = frame.rbp;
        r.r8 = frame.r8;
        r.r9 = frame.r9;
        r.r10 = frame.r10;
        r.r11 = frame.r11;
        r.r12 = frame.r12;
        r.r13 = frame.r13;
        r.r14 = frame.r14;
        r.r15 = frame.r15;
        r.rip = frame.rip;
        r.rflags = frame.rflags;
        r.rsp = frame.rsp;
        r.after_syscall = 0;
    }
    true
}
