//! COM1 output (16550 at 0x3f8). Only the transmit path: poll the line status register's
//! "transmitter holding register empty" bit, then write the byte. No initialisation, so
//! a UART model that implements only THR and LSR is enough.

use crate::port::{inb, outb};

const COM1: u16 = 0x3f8;
const LSR: u16 = COM1 + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Sends one byte.
pub fn write_byte(b: u8) {
    while inb(LSR) & LSR_THR_EMPTY == 0 {
        core::hint::spin_loop();
    }
    outb(COM1, b);
}

/// Sends a string as is (`\n` stays `\n`: QEMU and capvisor pass raw bytes through and
/// the tests compare lines).
pub fn write_str(s: &str) {
    for b in s.bytes() {
        write_byte(b);
    }
}

/// `core::fmt` sink for [`print!`](crate::print).
pub struct Serial;

impl core::fmt::Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        write_str(s);
        Ok(())
    }
}

/// Prints to COM1.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::serial::Serial, $($arg)*);
    }};
}

/// Prints a line to COM1.
#[macro_export]
macro_rules! println {
    () => { $crate::serial::write_str("\n") };
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = writeln!($crate::serial::Serial, $($arg)*);
    }};
}
