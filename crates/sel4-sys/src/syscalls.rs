//! The seL4 5.0.0 x86_64 system calls through the `syscall` instruction.
//!
//! Register convention (the kernel's `traps.S` entry and `c_traps.c` exit):
//! rdx = syscall number, rdi = capability (on return: the sender's badge), rsi =
//! message info, message registers 0..3 in r10, r8, r9, r15; the rest of a message
//! stays in the IPC buffer. The kernel returns with `sysret`, which clobbers rcx and
//! r11, and zeroes rsp; every other register comes back as it was (or as the message
//! set it). So rsp is kept in r12 across the instruction (libsel4 uses rbx, which Rust
//! reserves).

use crate::{CPtr, MessageInfo, Syscall, Word};

/// Message registers passed in CPU registers: r10, r8, r9, r15.
pub type FastMrs = [Word; 4];

/// A syscall that sends and does not wait (Send, NBSend, Reply, DebugPutChar...).
#[inline(always)]
fn send_only(sys: Syscall, dest: Word, info: Word, mrs: FastMrs) {
    // SAFETY: the syscall reads only registers (and the IPC buffer, which Rust never
    // references); rsp is restored from r12, which the kernel preserves.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "syscall",
            "mov rsp, r12",
            inout("rdx") sys as i64 => _,
            inout("rdi") dest => _,
            inout("rsi") info => _,
            inout("r10") mrs[0] => _,
            inout("r8") mrs[1] => _,
            inout("r9") mrs[2] => _,
            inout("r15") mrs[3] => _,
            out("rcx") _,
            out("r11") _,
            out("r12") _,
        );
    }
}

/// A syscall that sends and then waits (Call, ReplyRecv), or only waits (Recv,
/// NBRecv: `info` and `mrs` are ignored). Returns (badge, info, mrs).
#[inline(always)]
fn send_recv(sys: Syscall, dest: Word, info: Word, mrs: FastMrs) -> (Word, MessageInfo, FastMrs) {
    let (badge, out_info, m0, m1, m2, m3);
    // SAFETY: as for `send_only`; the kernel writes only the registers named here and
    // this thread's IPC buffer.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "syscall",
            "mov rsp, r12",
            inout("rdx") sys as i64 => _,
            inout("rdi") dest => badge,
            inout("rsi") info => out_info,
            inout("r10") mrs[0] => m0,
            inout("r8") mrs[1] => m1,
            inout("r9") mrs[2] => m2,
            inout("r15") mrs[3] => m3,
            out("rcx") _,
            out("r11") _,
            out("r12") _,
        );
    }
    (badge, MessageInfo(out_info), [m0, m1, m2, m3])
}

/// `seL4_Send`: send to `dest` (blocking until it is received, for an endpoint).
pub fn send(dest: CPtr, info: MessageInfo, mrs: FastMrs) {
    send_only(Syscall::Send, dest, info.0, mrs)
}

/// `seL4_NBSend`: send only if a receiver is waiting.
pub fn nb_send(dest: CPtr, info: MessageInfo, mrs: FastMrs) {
    send_only(Syscall::NBSend, dest, info.0, mrs)
}

/// `seL4_Call`: send and wait for the reply. Also the way to invoke a kernel object.
/// Returns the reply's info and its first message registers.
pub fn call(dest: CPtr, info: MessageInfo, mrs: FastMrs) -> (MessageInfo, FastMrs) {
    let (_, info, mrs) = send_recv(Syscall::Call, dest, info.0, mrs);
    (info, mrs)
}

/// `seL4_Recv`: wait on an endpoint or notification. Returns (badge, info, mrs).
pub fn recv(src: CPtr) -> (Word, MessageInfo, FastMrs) {
    send_recv(Syscall::Recv, src, 0, [0; 4])
}

/// `seL4_NBRecv`: poll an endpoint or notification.
pub fn nb_recv(src: CPtr) -> (Word, MessageInfo, FastMrs) {
    send_recv(Syscall::NBRecv, src, 0, [0; 4])
}

/// `seL4_Reply`: reply to the last caller.
pub fn reply(info: MessageInfo, mrs: FastMrs) {
    send_only(Syscall::Reply, 0, info.0, mrs)
}

/// `seL4_ReplyRecv`: reply to the last caller, then wait on `src`.
pub fn reply_recv(src: CPtr, info: MessageInfo, mrs: FastMrs) -> (Word, MessageInfo, FastMrs) {
    send_recv(Syscall::ReplyRecv, src, info.0, mrs)
}

/// `seL4_Yield`: give up the rest of the time slice.
pub fn yield_now() {
    send_only(Syscall::Yield, 0, 0, [0; 4])
}

/// `seL4_DebugPutChar`: the kernel prints one byte on its serial console.
pub fn debug_put_char(c: u8) {
    send_only(Syscall::DebugPutChar, c as Word, 0, [0; 4])
}

/// `seL4_DebugHalt`: stop the machine (the kernel halts with interrupts off).
pub fn debug_halt() {
    send_only(Syscall::DebugHalt, 0, 0, [0; 4])
}
