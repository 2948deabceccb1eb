//! Ending the QEMU run through its isa-debug-exit device (I/O port 0xf4): a write of v
//! makes QEMU exit with status (v << 1) | 1.

use core::sync::atomic::{AtomicU64, Ordering};
use sel4::cap_type::IoPort;
use sel4::Cap;

/// The isa-debug-exit port.
pub const PORT: u16 = 0xf4;
/// Written on success: QEMU exits with status 33.
pub const SUCCESS: u32 = 0x10;
/// Written on failure: QEMU exits with status 35.
pub const FAILURE: u32 = 0x11;

/// The cap for the exit port, once minted (0: not yet, then fall back to the global
/// I/O-port cap so that an early failure still ends the run).
static PORT_CAP: AtomicU64 = AtomicU64::new(0);

pub fn set_port(cap: Cap<IoPort>) {
    PORT_CAP.store(cap.bits(), Ordering::Release);
}

fn exit(code: u32) {
    let cap = match PORT_CAP.load(Ordering::Acquire) {
        0 => sel4::init_thread::IO_PORT,
        c => Cap::from_bits(c),
    };
    if let Err(e) = cap.ioport_out32(PORT, code) {
        sel4::debug_println!("cannot write the isa-debug-exit port: {e}");
    }
}

pub fn success() -> ! {
    exit(SUCCESS);
    // Without the device (QEMU started without it) the write does nothing.
    loop {
        sel4::debug::debug_halt();
    }
}

pub fn failure() {
    exit(FAILURE);
}
