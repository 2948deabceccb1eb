//! The kernel's debug console (`seL4_DebugPutChar`; kernels built with CONFIG_PRINTING).

use core::fmt;

/// `seL4_DebugPutChar`.
#[cfg(target_arch = "x86_64")]
pub fn debug_put_char(c: u8) {
    sel4_sys::syscalls::debug_put_char(c)
}

/// `seL4_DebugHalt`: stops the machine.
#[cfg(target_arch = "x86_64")]
pub fn debug_halt() {
    sel4_sys::syscalls::debug_halt()
}

/// Writes text through a byte sink, turning "\n" into "\r\n" for the serial console.
pub struct DebugWriter<F: FnMut(u8)>(pub F);

impl<F: FnMut(u8)> fmt::Write for DebugWriter<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                (self.0)(b'\r');
            }
            (self.0)(b);
        }
        Ok(())
    }
}

/// Prints to the kernel's debug console.
#[cfg(target_arch = "x86_64")]
pub fn print(args: fmt::Arguments<'_>) {
    let _ = fmt::write(&mut DebugWriter(debug_put_char), args);
}

/// `print!` to the kernel's debug console.
#[macro_export]
macro_rules! debug_print {
    ($($arg:tt)*) => { $crate::debug::print(format_args!($($arg)*)) };
}

/// `println!` to the kernel's debug console.
#[macro_export]
macro_rules! debug_println {
    () => { $crate::debug::print(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::debug::print(format_args!("{}\n", format_args!($($arg)*))) };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    #[test]
    fn newlines_become_crlf() {
        let mut out = Vec::new();
        write!(DebugWriter(|b| out.push(b)), "a\nb {}\n", 7).unwrap();
        assert_eq!(out, b"a\r\nb 7\r\n");
    }
}
