//! Entry, stack and panic handler (bare metal only).

use crate::{panic_hook, BootInfo, BOOTINFO, STACK_SIZE};
use core::sync::atomic::Ordering;

#[repr(C, align(4096))]
struct Stack([u8; STACK_SIZE]);

/// The root task's stack (in .bss: the kernel's ELF loader zero-fills it).
#[no_mangle]
static mut __sel4_root_task_stack: Stack = Stack([0; STACK_SIZE]);

// The kernel starts the root task at the ELF entry with rdi = boot info and rsp
// unusable. Switch to our stack (16-byte aligned before the call, as the SysV ABI
// wants at a call site) and enter Rust with rdi untouched. rbp = 0 ends backtraces.
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    lea rsp, [rip + {stack} + {size}]",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    stack = sym __sel4_root_task_stack,
    size = const STACK_SIZE,
    entry = sym rust_entry,
);

extern "Rust" {
    /// Defined by `declare_main!`.
    fn __sel4_root_task_main(bootinfo: &'static BootInfo) -> !;
}

unsafe extern "C" fn rust_entry(bootinfo: *mut BootInfo) -> ! {
    BOOTINFO.store(bootinfo, Ordering::Release);
    // SAFETY: the kernel passes a valid boot info that stays mapped; the main function
    // is provided by the program through declare_main!.
    unsafe { __sel4_root_task_main(&*bootinfo) }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    sel4::debug_println!("root task panicked: {}", info);
    if let Some(hook) = panic_hook() {
        hook();
    }
    loop {
        sel4::debug::debug_halt();
    }
}
