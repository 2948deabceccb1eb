//! Ending the VM and talking to capvisor: isa-debug-exit (0xf4), checkpoints (0x80) and
//! wait hints (0x81). QEMU ignores ports 0x80 and 0x81.

use crate::port::outl;

/// isa-debug-exit: writing v ends the VM with status `(v << 1) | 1`.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
/// capvisor records MMU statistics when a guest writes a step number here.
pub const CHECKPOINT_PORT: u16 = 0x80;
/// capvisor pauses the VM for this many milliseconds.
pub const WAIT_HINT_PORT: u16 = 0x81;

/// The guest's checks passed (QEMU status 1).
pub const EXIT_SUCCESS: u32 = 0;
/// A check failed (QEMU status 3).
pub const EXIT_FAILURE: u32 = 1;
/// An exception nobody expected (QEMU status 5).
pub const EXIT_UNEXPECTED_TRAP: u32 = 2;
/// A Rust panic (QEMU status 7).
pub const EXIT_PANIC: u32 = 3;
/// The loader did not pass the multiboot magic (QEMU status 9).
pub const EXIT_BAD_BOOT: u32 = 4;

/// Ends the VM with `value`; if no isa-debug-exit device is present, halts forever.
pub fn exit(value: u32) -> ! {
    outl(DEBUG_EXIT_PORT, value);
    loop {
        // SAFETY: stops this CPU; interrupts stay disabled so it never resumes.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) }
    }
}

/// Marks the end of step `step` (1, 2, ...) for capvisor's statistics.
pub fn checkpoint(step: u32) {
    outl(CHECKPOINT_PORT, step);
}

/// Asks capvisor to pause the VM for `ms` milliseconds (e.g. for NX huge page recovery).
pub fn wait_hint(ms: u32) {
    outl(WAIT_HINT_PORT, ms);
}
