//! Runtime shared by the capvisor test guests.
//!
//! Every guest is a multiboot (v1) kernel: the loader enters [`boot`]'s 32-bit stub with
//! paging off; the stub switches to long mode on early identity tables and calls the
//! guest's `main` (declared with [`entry!`]). The rest are small building blocks the
//! guests combine: COM1 output, isa-debug-exit, the capvisor checkpoint/wait ports,
//! multiboot info, an IDT whose handlers report or recover from faults, 4-level page
//! tables and a user mode reached by IRETQ and left by SYSCALL.
//!
//! Everything here must run on capvisor's software CPU, which has no SSE/x87: the target
//! is soft-float, and only integer and system instructions are used.
#![no_std]

pub mod boot;
pub mod cpu;
pub mod exit;
pub mod multiboot;
pub mod paging;
pub mod port;
pub mod serial;
pub mod trap;
pub mod user;

/// Defines the guest's entry point: `fn main() -> u32`, returning the value written to
/// isa-debug-exit (0 = success, so QEMU exits with status 1).
#[macro_export]
macro_rules! entry {
    ($main:path) => {
        #[no_mangle]
        pub extern "C" fn rt_guest_main() -> u32 {
            let f: fn() -> u32 = $main;
            f()
        }
    };
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    println!("guest panic: {}", info);
    exit::exit(exit::EXIT_PANIC)
}
