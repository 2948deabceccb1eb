//! Exceptions: the IDT, the TSS, the assembly entry stubs and the dispatcher.
//!
//! A fault is handled in one of three ways:
//! - at a *probe* instruction (`probe_read_u64` and friends): recorded, and the probe
//!   returns "faulted" (the way a test expects a fault and recovers);
//! - in user mode (CPL 3): recorded, and [`crate::user::run`] returns to its caller;
//! - anywhere else: printed (vector, RIP, error code, CR2) and the VM exits with
//!   [`EXIT_UNEXPECTED_TRAP`](crate::exit::EXIT_UNEXPECTED_TRAP).

use crate::cpu::{self, KERNEL_CS, TSS_SEL};
use crate::exit::{exit, EXIT_UNEXPECTED_TRAP};
use core::ptr::{addr_of, addr_of_mut};

/// Page fault.
pub const VECTOR_PF: u64 = 14;
/// General protection.
pub const VECTOR_GP: u64 = 13;

/// #PF error code bits (SDM vol. 3 4.7).
pub const PF_PRESENT: u64 = 1 << 0;
pub const PF_WRITE: u64 = 1 << 1;
pub const PF_USER: u64 = 1 << 2;
pub const PF_FETCH: u64 = 1 << 4;

/// What the stubs push: general registers (RAX lowest), the vector, the error code
/// (0 when the CPU pushes none), then the CPU's interrupt frame (SDM vol. 3 6.14.2).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TrapFrame {
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
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// A recorded fault.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fault {
    pub vector: u64,
    pub error: u64,
    pub rip: u64,
    /// CR2 at the time of the fault (meaningful for #PF only).
    pub cr2: u64,
}

static mut LAST_FAULT: Fault = Fault {
    vector: 0,
    error: 0,
    rip: 0,
    cr2: 0,
};

/// The last fault a probe or user mode caught.
pub fn last_fault() -> Fault {
    // SAFETY: single CPU; written only by the trap handler, which does not nest with this.
    unsafe { core::ptr::read_volatile(addr_of!(LAST_FAULT)) }
}

#[repr(C, align(16))]
struct Idt([u64; 512]);
static mut IDT: Idt = Idt([0; 512]);

#[repr(C, align(16))]
struct Tss([u32; 26]);
static mut TSS: Tss = Tss([0; 26]);

/// Stack for exceptions taken from user mode (TSS.RSP0).
#[repr(C, align(16))]
struct TrapStack([u8; 16384]);
static mut TRAP_STACK: TrapStack = TrapStack([0; 16384]);

core::arch::global_asm!(
    r#"
    .section .text.rt_trap, "ax"
    .irp v, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
rt_isr_\v:
    push 0
    push \v
    jmp rt_isr_common
    .endr
    .irp v, 8,10,11,12,13,14,17,21,29,30
rt_isr_\v:
    push \v
    jmp rt_isr_common
    .endr

rt_isr_common:
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
    mov rdi, rsp
    cld
    call rt_trap
    test eax, eax
    jnz 1f
    pop rax
    pop rbx
    pop rcx
    pop rdx
    pop rsi
    pop rdi
    pop rbp
    pop r8
    pop r9
    pop r10
    pop r11
    pop r12
    pop r13
    pop r14
    pop r15
    add rsp, 16
    iretq
1:
    /* A fault in user mode: the state is saved in the user context; resume the
       kernel where it entered user mode. */
    mov eax, 2
    jmp rt_return_to_kernel

    .section .rodata.rt_isr_table, "a"
    .balign 8
    .global rt_isr_table
rt_isr_table:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad rt_isr_\v
    .endr

    /* Probes: an access that may fault. Each returns rax = the value read (or 0) and
       rdx = 0 if the access completed, 1 if it faulted; rt_probe_sites pairs each
       access instruction with the instruction to resume at. */
    .section .text.rt_probe, "ax"
    .global rt_probe_read_u8
rt_probe_read_u8:
    xor edx, edx
    xor eax, eax
rt_probe_read_u8_insn:
    mov al, byte ptr [rdi]
rt_probe_read_u8_done:
    ret

    .global rt_probe_read_u64
rt_probe_read_u64:
    xor edx, edx
    xor eax, eax
rt_probe_read_u64_insn:
    mov rax, qword ptr [rdi]
rt_probe_read_u64_done:
    ret

    .global rt_probe_write_u8
rt_probe_write_u8:
    xor edx, edx
    xor eax, eax
rt_probe_write_u8_insn:
    mov byte ptr [rdi], sil
rt_probe_write_u8_done:
    ret

    .global rt_probe_write_u64
rt_probe_write_u64:
    xor edx, edx
    xor eax, eax
rt_probe_write_u64_insn:
    mov qword ptr [rdi], rsi
rt_probe_write_u64_done:
    ret

    /* Calls rdi (code returning with RET). A #PF fetching rdi itself (e.g. NX) returns
       here with rdx = 1, as if the callee had returned. */
    .global rt_probe_call
rt_probe_call:
    xor edx, edx
    mov [rip + RT_EXEC_PROBE_TARGET], rdi
    call rdi
    mov qword ptr [rip + RT_EXEC_PROBE_TARGET], 0
    ret

    .section .rodata.rt_probe_sites, "a"
    .balign 8
    .global rt_probe_sites
rt_probe_sites:
    .quad rt_probe_read_u8_insn, rt_probe_read_u8_done
    .quad rt_probe_read_u64_insn, rt_probe_read_u64_done
    .quad rt_probe_write_u8_insn, rt_probe_write_u8_done
    .quad rt_probe_write_u64_insn, rt_probe_write_u64_done
"#
);

const PROBE_SITES: usize = 4;

extern "C" {
    static rt_isr_table: [u64; 32];
    static rt_probe_sites: [[u64; 2]; PROBE_SITES];
    static mut rt_gdt: [u64; 7];
    fn rt_probe_read_u8(addr: u64) -> ProbeResult;
    fn rt_probe_read_u64(addr: u64) -> ProbeResult;
    fn rt_probe_write_u8(addr: u64, value: u8) -> ProbeResult;
    fn rt_probe_write_u64(addr: u64, value: u64) -> ProbeResult;
    fn rt_probe_call(addr: u64) -> ProbeResult;
}

/// The address `rt_probe_call` is calling, 0 when none.
#[no_mangle]
static mut RT_EXEC_PROBE_TARGET: u64 = 0;

/// Returned in RAX:RDX by the probes.
#[repr(C)]
struct ProbeResult {
    value: u64,
    faulted: u64,
}

impl ProbeResult {
    fn into_result(self) -> Result<u64, Fault> {
        if self.faulted == 0 {
            Ok(self.value)
        } else {
            Err(last_fault())
        }
    }
}

/// Reads a byte at `addr`, or returns the fault it raised.
pub fn probe_read_u8(addr: u64) -> Result<u8, Fault> {
    // SAFETY: the probe recovers from any fault at its access instruction.
    unsafe { rt_probe_read_u8(addr) }
        .into_result()
        .map(|v| v as u8)
}

/// Reads a u64 at `addr`, or returns the fault it raised.
pub fn probe_read_u64(addr: u64) -> Result<u64, Fault> {
    // SAFETY: as for `probe_read_u8`.
    unsafe { rt_probe_read_u64(addr) }.into_result()
}

/// Writes a byte at `addr`, or returns the fault it raised.
///
/// # Safety
/// If the write completes it may change any memory, as a raw pointer write would.
pub unsafe fn probe_write_u8(addr: u64, value: u8) -> Result<(), Fault> {
    rt_probe_write_u8(addr, value).into_result().map(|_| ())
}

/// Writes a u64 at `addr`, or returns the fault it raised.
///
/// # Safety
/// As for [`probe_write_u8`].
pub unsafe fn probe_write_u64(addr: u64, value: u64) -> Result<(), Fault> {
    rt_probe_write_u64(addr, value).into_result().map(|_| ())
}

/// Calls the code at `addr`, or returns the fault raised by fetching its first
/// instruction (the callee must be a function that only returns, e.g. a lone RET).
///
/// # Safety
/// If the fetch succeeds, the code at `addr` runs as an `extern "C" fn()`.
pub unsafe fn probe_call(addr: u64) -> Result<(), Fault> {
    rt_probe_call(addr).into_result().map(|_| ())
}

/// Installs the IDT (vectors 0-31) and the TSS (RSP0 = the trap stack).
pub fn init() {
    // SAFETY: runs once at boot on the only CPU, before anything can trap into these.
    unsafe {
        let idt = &mut *addr_of_mut!(IDT);
        for (v, &handler) in rt_isr_table.iter().enumerate() {
            // 64-bit interrupt gate (SDM vol. 3 6.14.1): present, DPL 0, type 0xE.
            let low = (handler & 0xffff)
                | (u64::from(KERNEL_CS) << 16)
                | (0x8E << 40)
                | ((handler >> 16) & 0xffff) << 48;
            idt.0[2 * v] = low;
            idt.0[2 * v + 1] = handler >> 32;
        }
        let tss = &mut *addr_of_mut!(TSS);
        let rsp0 = addr_of!(TRAP_STACK) as u64 + core::mem::size_of::<TrapStack>() as u64;
        tss.0[1] = rsp0 as u32;
        tss.0[2] = (rsp0 >> 32) as u32;
        // I/O map base beyond the limit: no I/O permission bitmap.
        tss.0[25] = 104 << 16;
        let base = addr_of!(TSS) as u64;
        let limit = 103u64;
        // 64-bit available TSS descriptor (SDM vol. 3 8.2.3), 16 bytes.
        let low = (limit & 0xffff)
            | (base & 0xff_ffff) << 16
            | (0x89 << 40)
            | ((limit >> 16) & 0xf) << 48
            | ((base >> 24) & 0xff) << 56;
        let gdt = &mut *addr_of_mut!(rt_gdt);
        gdt[5] = low;
        gdt[6] = base >> 32;

        #[repr(C, packed)]
        struct Pointer {
            limit: u16,
            base: u64,
        }
        let idtr = Pointer {
            limit: (core::mem::size_of::<Idt>() - 1) as u16,
            base: addr_of!(IDT) as u64,
        };
        core::arch::asm!("lidt [{}]", in(reg) &idtr, options(readonly, nostack, preserves_flags));
        core::arch::asm!("ltr {0:x}", in(reg) TSS_SEL, options(nostack, preserves_flags));
    }
}

fn exception_name(vector: u64) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        _ => "reserved",
    }
}

/// Called by `rt_isr_common`. Returns 0 to resume at `frame.rip`, 1 when a user-mode
/// fault was saved and the kernel should resume after `user::run`.
#[no_mangle]
extern "C" fn rt_trap(frame: &mut TrapFrame) -> u32 {
    let fault = Fault {
        vector: frame.vector,
        error: frame.error,
        rip: frame.rip,
        cr2: cpu::read_cr2(),
    };
    if frame.cs & 3 == 3 {
        // SAFETY: single CPU, handler does not nest.
        unsafe { *addr_of_mut!(LAST_FAULT) = fault };
        return if crate::user::save_from_trap(frame) {
            1
        } else {
            unexpected(frame, &fault)
        };
    }
    // SAFETY: the table is immutable data from the assembly above.
    let sites = unsafe { &rt_probe_sites };
    if let Some(site) = sites.iter().find(|s| s[0] == frame.rip) {
        // SAFETY: as above.
        unsafe { *addr_of_mut!(LAST_FAULT) = fault };
        frame.rip = site[1];
        frame.rdx = 1;
        frame.rax = 0;
        return 0;
    }
    // SAFETY: single CPU; set and cleared by `rt_probe_call` around its CALL.
    let exec_target = unsafe { *addr_of!(RT_EXEC_PROBE_TARGET) };
    if exec_target != 0 && frame.rip == exec_target && frame.vector == VECTOR_PF {
        // The CALL pushed its return address; complete the "return" the callee could
        // not execute.
        // SAFETY: the CALL that just faulted wrote this stack slot.
        let ret = unsafe { (frame.rsp as *const u64).read() };
        // SAFETY: as above.
        unsafe { *addr_of_mut!(LAST_FAULT) = fault };
        frame.rip = ret;
        frame.rsp += 8;
        frame.rdx = 1;
        return 0;
    }
    unexpected(frame, &fault)
}

fn unexpected(frame: &TrapFrame, fault: &Fault) -> ! {
    crate::println!(
        "rt: unexpected exception vector={} ({}) rip={:#x} error={:#x} cr2={:#x} cs={:#x} rsp={:#x}",
        fault.vector,
        exception_name(fault.vector),
        fault.rip,
        fault.error,
        fault.cr2,
        frame.cs,
        frame.rsp
    );
    exit(EXIT_UNEXPECTED_TRAP)
}
