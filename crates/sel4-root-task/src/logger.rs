//! A [`log`] logger that prints through a byte sink: on seL4 the kernel's debug
//! console (`seL4_DebugPutChar`).

use core::fmt::Write;
use log::{LevelFilter, Log, Metadata, Record};
use sel4::debug::DebugWriter;

/// Formats records as `[LEVEL target] message` into `sink`.
pub struct Logger {
    pub level: LevelFilter,
    pub sink: fn(u8),
}

impl Logger {
    /// Writes one record (public so that it can be tested with any sink).
    pub fn write_record(&self, record: &Record<'_>, out: &mut impl Write) {
        let _ = writeln!(
            out,
            "[{:<5} {}] {}",
            record.level(),
            record.target(),
            record.args()
        );
    }
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }
    fn log(&self, record: &Record<'_>) {
        if self.enabled(record.metadata()) {
            self.write_record(record, &mut DebugWriter(self.sink));
        }
    }
    fn flush(&self) {}
}

/// The logger over `seL4_DebugPutChar`.
#[cfg(target_arch = "x86_64")]
pub static DEBUG_LOGGER: Logger = Logger {
    level: LevelFilter::Trace,
    sink: sel4::debug::debug_put_char,
};

/// Installs [`DEBUG_LOGGER`] with `level` as the maximum level.
#[cfg(target_arch = "x86_64")]
pub fn init(level: LevelFilter) {
    // A second call keeps the first logger; only the level changes.
    let _ = log::set_logger(&DEBUG_LOGGER);
    log::set_max_level(level);
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use log::Level;
    use std::string::String;

    #[test]
    fn records_carry_level_and_target() {
        let logger = Logger {
            level: LevelFilter::Info,
            sink: |_| {},
        };
        let mut s = String::new();
        let args = format_args!("hello {}", 5);
        let rec = Record::builder()
            .level(Level::Warn)
            .target("root")
            .args(args)
            .build();
        logger.write_record(&rec, &mut s);
        assert_eq!(s, "[WARN  root] hello 5\n");
        assert!(logger.enabled(&Metadata::builder().level(Level::Info).build()));
        assert!(!logger.enabled(&Metadata::builder().level(Level::Debug).build()));
    }
}
