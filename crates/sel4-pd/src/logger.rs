//! A [`log`] logger for PDs: each record is formatted as `[LEVEL target] message\n`
//! into a line buffer and handed to a byte sink in pieces of at most a buffer: the
//! console (the UART driver PD) for ordinary PDs, the device itself for the UART PD.

use core::fmt::{self, Write};
use log::{LevelFilter, Log, Metadata, Record};

/// Bytes formatted before a flush to the sink.
pub const LINE: usize = 256;

/// A fixed buffer that flushes to `sink` when full.
pub struct LineWriter<F: FnMut(&[u8])> {
    buf: [u8; LINE],
    len: usize,
    sink: F,
}

impl<F: FnMut(&[u8])> LineWriter<F> {
    pub fn new(sink: F) -> Self {
        LineWriter {
            buf: [0; LINE],
            len: 0,
            sink,
        }
    }
    pub fn flush(&mut self) {
        if self.len > 0 {
            (self.sink)(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<F: FnMut(&[u8])> Write for LineWriter<F> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == LINE {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

/// Writes one record to `sink`.
pub fn write_record(record: &Record<'_>, sink: impl FnMut(&[u8])) {
    let mut w = LineWriter::new(sink);
    let _ = writeln!(
        w,
        "[{:<5} {}] {}",
        record.level(),
        record.target(),
        record.args()
    );
    w.flush();
}

/// The logger; its sink is fixed at [`init`].
pub struct PdLogger {
    sink: core::sync::atomic::AtomicUsize,
}

impl PdLogger {
    fn sink(&self) -> Option<fn(&[u8])> {
        match self.sink.load(core::sync::atomic::Ordering::Acquire) {
            0 => None,
            // SAFETY: only `init` stores a non-zero value, and it stores a `fn(&[u8])`.
            p => Some(unsafe { core::mem::transmute::<usize, fn(&[u8])>(p) }),
        }
    }
}

impl Log for PdLogger {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &Record<'_>) {
        if let Some(sink) = self.sink() {
            write_record(record, sink);
        }
    }
    fn flush(&self) {}
}

static LOGGER: PdLogger = PdLogger {
    sink: core::sync::atomic::AtomicUsize::new(0),
};

/// Installs the logger with `sink` and `level`.
pub fn init(sink: fn(&[u8]), level: LevelFilter) {
    LOGGER
        .sink
        .store(sink as usize, core::sync::atomic::Ordering::Release);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// The sink of ordinary PDs: the console at its standard slot.
#[cfg(target_arch = "x86_64")]
pub fn console_sink(bytes: &[u8]) {
    crate::console::Console::standard().write(bytes);
}

/// A sink over the kernel's debug console (`seL4_DebugPutChar`), "\n" -> "\r\n".
#[cfg(target_arch = "x86_64")]
pub fn debug_sink(bytes: &[u8]) {
    for &b in bytes {
        if b == b'\n' {
            sel4::debug::debug_put_char(b'\r');
        }
        sel4::debug::debug_put_char(b);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use log::Level;
    use std::vec::Vec;

    #[test]
    fn a_record_is_one_line_with_level_and_target() {
        let mut out = Vec::new();
        let args = format_args!("tick {}", 3);
        let rec = Record::builder()
            .level(Level::Info)
            .target("timer")
            .args(args)
            .build();
        write_record(&rec, |b| out.extend_from_slice(b));
        assert_eq!(out, b"[INFO  timer] tick 3\n");
    }

    #[test]
    fn long_records_arrive_in_buffer_sized_pieces() {
        let mut pieces = Vec::new();
        let long = "x".repeat(600);
        let args = format_args!("{long}");
        let rec = Record::builder()
            .level(Level::Warn)
            .target("t")
            .args(args)
            .build();
        write_record(&rec, |b| pieces.push(b.to_vec()));
        assert!(pieces.iter().all(|p| p.len() <= LINE));
        let all: Vec<u8> = pieces.concat();
        assert_eq!(all.len(), "[WARN  t] ".len() + 600 + 1);
        assert_eq!(pieces.len(), all.len().div_ceil(LINE));
    }
}
