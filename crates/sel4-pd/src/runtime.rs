//! Entry and panic handler (bare metal only).

use crate::BootParams;
use capdl_spec::layout::{BOOT_PARAMS_VADDR, PAGE_SIZE};

// The root task starts the thread at the ELF entry with rsp = the top of the stack
// the spec gives it (16-byte aligned, but re-align: the ABI wants rsp % 16 == 0 before
// the call) and rdi = how many times the supervisor restarted this PD, which reaches
// rust_entry as its first argument. rbp = 0 ends backtraces.
core::arch::global_asm!(
    ".section .text._start, \"ax\"",
    ".global _start",
    "_start:",
    "    and rsp, -16",
    "    xor ebp, ebp",
    "    call {entry}",
    "    ud2",
    entry = sym rust_entry,
);

extern "Rust" {
    /// Defined by `declare_main!`.
    fn __sel4_pd_main(params: &'static BootParams) -> !;
}

extern "C" fn rust_entry(restarts: u64) -> ! {
    crate::RESTARTS.store(restarts, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: the spec maps the boot-parameter frame read-only at BOOT_PARAMS_VADDR in
    // every PD, and the root task filled it before starting this thread; it never
    // changes afterwards.
    let frame: &'static [u8] =
        unsafe { core::slice::from_raw_parts(BOOT_PARAMS_VADDR as *const u8, PAGE_SIZE as usize) };
    match BootParams::read(frame) {
        // SAFETY: provided by the program through declare_main!.
        Ok(params) => unsafe { __sel4_pd_main(params) },
        Err(e) => {
            sel4::debug_println!("PD: bad boot parameters: {:?}", e);
            crate::fault()
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    sel4::debug_println!("PD panicked: {}", info);
    crate::fault()
}
