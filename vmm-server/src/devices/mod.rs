//! The devices every VM has, behind one I/O-port dispatch:
//! - COM1 16550 UART at 0x3f8-0x3ff ([`uart`]);
//! - QEMU's isa-debug-exit at 0xf4 (iosize 4): a write of `v` ends the VM with status
//!   `(v << 1) | 1`, reads return 0;
//! - the capvisor checkpoint port 0x80 and wait-hint port 0x81 (a 32-bit OUT each;
//!   QEMU ignores them, so guests run unmodified there too). Byte-sized writes to 0x80
//!   are the classic I/O delay and stay ignored.
//!
//! Any other port behaves like an unassigned port on QEMU's ISA bus: reads return all
//! ones, writes are ignored.

pub mod uart;

pub use uart::{SerialSink, Uart16550};

/// isa-debug-exit's first port and size.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const DEBUG_EXIT_SIZE: u16 = 4;
/// Checkpoint: `out 0x80, eax` with the step number.
pub const CHECKPOINT_PORT: u16 = 0x80;
/// Wait hint: `out 0x81, eax` with a number of milliseconds.
pub const WAIT_HINT_PORT: u16 = 0x81;

/// What an OUT asks of the VMM beyond the device's own state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoEffect {
    /// Nothing: resume the guest.
    None,
    /// isa-debug-exit: the VM ends with this status (`(v << 1) | 1`, truncated to 32
    /// bits; a process exit status keeps its low 8 bits, as QEMU's does).
    Exit { status: u32 },
    /// The guest reached checkpoint `step`.
    Checkpoint { step: u32 },
    /// The guest asks to be paused for `ms` milliseconds.
    WaitHint { ms: u32 },
}

/// The I/O-port devices of one VM.
#[derive(Clone, Debug, Default)]
pub struct IoBus {
    pub com1: Uart16550,
}

fn all_ones(size: u8) -> u32 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        _ => 0xffff_ffff,
    }
}

impl IoBus {
    pub const fn new() -> Self {
        IoBus {
            com1: Uart16550::new(),
        }
    }

    /// An IN of `size` (1, 2 or 4) bytes from `port`. Multi-byte accesses to byte-wide
    /// devices are split into byte accesses at consecutive ports, as QEMU's memory core
    /// does for a device with 1-byte access size.
    pub fn read(&mut self, port: u16, size: u8) -> u32 {
        if (DEBUG_EXIT_PORT..DEBUG_EXIT_PORT + DEBUG_EXIT_SIZE).contains(&port) {
            return 0;
        }
        let mut value = 0u32;
        for i in 0..size.clamp(1, 4) as u16 {
            let p = port.wrapping_add(i);
            let byte = if uart::COM1_PORTS.contains(&p) {
                self.com1.read(p - uart::COM1_BASE)
            } else {
                0xff
            };
            value |= (byte as u32) << (8 * i);
        }
        value & all_ones(size)
    }

    /// An OUT of the low `size` bytes of `value` to `port`.
    pub fn write(
        &mut self,
        port: u16,
        size: u8,
        value: u32,
        sink: &mut impl SerialSink,
    ) -> IoEffect {
        let value = value & all_ones(size);
        if (DEBUG_EXIT_PORT..DEBUG_EXIT_PORT + DEBUG_EXIT_SIZE).contains(&port) {
            return IoEffect::Exit {
                status: (value << 1) | 1,
            };
        }
        match (port, size) {
            (CHECKPOINT_PORT, 4) => return IoEffect::Checkpoint { step: value },
            (WAIT_HINT_PORT, 4) => return IoEffect::WaitHint { ms: value },
            _ => {}
        }
        for i in 0..size.clamp(1, 4) as u16 {
            let p = port.wrapping_add(i);
            if uart::COM1_PORTS.contains(&p) {
                self.com1
                    .write(p - uart::COM1_BASE, (value >> (8 * i)) as u8, sink);
            }
        }
        IoEffect::None
    }
}
