//! The child thread: runs `child_main` on its own stack in the root task's VSpace and
//! CSpace, with its own IPC buffer (set by TCB_Configure).

use crate::{LABEL_MULTIPLY, LABEL_REPORT};
use sel4::cap_type::{Endpoint, Notification, Tcb};
use sel4::{Cap, MessageInfo, UserContext};

const STACK_SIZE: usize = 16 * 1024;

#[repr(C, align(4096))]
struct Stack([u8; STACK_SIZE]);

static mut STACK: Stack = Stack([0; STACK_SIZE]);

/// The addresses of the child's stack.
pub fn stack_range() -> core::ops::Range<u64> {
    let base = core::ptr::addr_of!(STACK) as u64;
    base..base + STACK_SIZE as u64
}

/// Sets the child's registers and resumes it: rip = `child_main`, rdi/rsi/rdx its
/// arguments (the SysV ABI), rsp at the top of its stack less the 8 bytes a `call`
/// would have pushed, so the stack is aligned as at any function entry.
pub fn start(tcb: Cap<Tcb>, ep: Cap<Endpoint>, ntfn: Cap<Notification>) -> sel4::Result<()> {
    let stack_top = stack_range().end;
    let regs = UserContext {
        rip: child_main as *const () as u64,
        rsp: stack_top - 8,
        rdi: ep.bits(),
        rsi: ntfn.bits(),
        rdx: tcb.bits(),
        ..Default::default()
    };
    tcb.tcb_write_registers(false, UserContext::WORDS, &regs)?;
    tcb.tcb_resume()
}

extern "C" fn child_main(ep: u64, ntfn: u64, tcb: u64) -> ! {
    let ep: Cap<Endpoint> = Cap::from_bits(ep);
    let ntfn: Cap<Notification> = Cap::from_bits(ntfn);
    sel4::debug_println!("child: running on its own stack, calling the root task");
    sel4::set_mr(0, 6);
    sel4::set_mr(1, 7);
    let reply = ep.call(MessageInfo::new(LABEL_MULTIPLY, 0, 0, 2));
    let product = sel4::get_mr(0).unwrap_or(0);
    sel4::debug_println!(
        "child: reply label {} length {}: 6 * 7 = {product}",
        reply.label(),
        reply.length()
    );
    sel4::set_mr(0, product);
    ep.call(MessageInfo::new(LABEL_REPORT, 0, 0, 1));
    ntfn.signal();
    // Done: stop this thread (its TCB cap is in the CSpace it shares with the root).
    let tcb: Cap<Tcb> = Cap::from_bits(tcb);
    let _ = tcb.tcb_suspend();
    loop {
        sel4_sys::syscalls::yield_now();
    }
}
