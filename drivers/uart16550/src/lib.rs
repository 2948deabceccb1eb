//! The 16550 UART (PC COM ports): register logic only, over an abstract I/O-port bus,
//! so that it runs against a fake bus in host tests and against an seL4 I/O-port
//! capability in the UART driver PD.
//!
//! Registers are at `base + offset` (offsets below); with DLAB (LCR bit 7) set, offsets
//! 0 and 1 are the baud-rate divisor latch instead of the data and interrupt-enable
//! registers. The reference is the National Semiconductor PC16550D data sheet.
#![no_std]

/// Access to 8-bit I/O ports. `E` is the transport's error (an seL4 error for a
/// capability, never for a fake bus).
pub trait PortBus {
    type Error;
    fn in8(&mut self, port: u16) -> Result<u8, Self::Error>;
    fn out8(&mut self, port: u16, value: u8) -> Result<(), Self::Error>;
}

/// Register offsets from the base port.
pub mod reg {
    /// Receive buffer (read) / transmit holding (write); divisor low with DLAB.
    pub const DATA: u16 = 0;
    /// Interrupt enable; divisor high with DLAB.
    pub const IER: u16 = 1;
    /// FIFO control (write) / interrupt identification (read).
    pub const FCR: u16 = 2;
    /// Line control: word length, stop bits, parity, DLAB.
    pub const LCR: u16 = 3;
    /// Modem control: DTR, RTS, OUT2 (gates the IRQ line on PCs), loopback.
    pub const MCR: u16 = 4;
    /// Line status.
    pub const LSR: u16 = 5;
    /// Scratch register (no function; used to probe that a UART is there).
    pub const SCRATCH: u16 = 7;
}

/// Line-status bits.
pub mod lsr {
    /// A received byte is waiting.
    pub const DATA_READY: u8 = 1 << 0;
    /// The transmit holding register is empty: a byte may be written.
    pub const THR_EMPTY: u8 = 1 << 5;
}

/// LCR: 8 data bits, no parity, 1 stop bit.
pub const LCR_8N1: u8 = 0b0000_0011;
/// LCR: divisor latch access.
pub const LCR_DLAB: u8 = 1 << 7;
/// FCR: enable and clear both FIFOs, trigger at 14 bytes.
pub const FCR_ENABLE_CLEAR: u8 = 0b1100_0111;
/// MCR: DTR | RTS | OUT2.
pub const MCR_DTR_RTS_OUT2: u8 = 0b0000_1011;
/// The UART's input clock divided by 16: the highest baud rate.
pub const MAX_BAUD: u32 = 115_200;
/// How many line-status reads a byte may wait for the transmitter before giving up.
pub const TX_SPIN_LIMIT: u32 = 100_000;

/// Why the UART could not do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartError<E> {
    /// The transport refused the access.
    Bus(E),
    /// The baud rate is zero, above [`MAX_BAUD`], or does not divide it into 16 bits.
    BadBaud(u32),
    /// The scratch register did not hold what was written: no UART at this base.
    Absent,
    /// The transmitter stayed busy for [`TX_SPIN_LIMIT`] status reads.
    TxTimeout,
}

/// One 16550 at `base`.
pub struct Uart16550<B: PortBus> {
    bus: B,
    base: u16,
}

/// The divisor latch value for `baud`.
pub fn divisor(baud: u32) -> Option<u16> {
    if baud == 0 || baud > MAX_BAUD || !MAX_BAUD.is_multiple_of(baud) {
        return None;
    }
    u16::try_from(MAX_BAUD / baud).ok()
}

impl<B: PortBus> Uart16550<B> {
    pub fn new(bus: B, base: u16) -> Self {
        Uart16550 { bus, base }
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    fn out(&mut self, offset: u16, v: u8) -> Result<(), UartError<B::Error>> {
        self.bus.out8(self.base + offset, v).map_err(UartError::Bus)
    }

    fn inp(&mut self, offset: u16) -> Result<u8, UartError<B::Error>> {
        self.bus.in8(self.base + offset).map_err(UartError::Bus)
    }

    /// Probes the scratch register, then sets `baud`, 8N1, FIFOs on, interrupts off
    /// (the driver polls the transmitter) and DTR/RTS/OUT2.
    pub fn init(&mut self, baud: u32) -> Result<(), UartError<B::Error>> {
        let div = divisor(baud).ok_or(UartError::BadBaud(baud))?;
        for probe in [0x5a, 0xa5] {
            self.out(reg::SCRATCH, probe)?;
            if self.inp(reg::SCRATCH)? != probe {
                return Err(UartError::Absent);
            }
        }
        self.out(reg::IER, 0)?;
        self.out(reg::LCR, LCR_DLAB)?;
        let [lo, hi] = div.to_le_bytes();
        self.out(reg::DATA, lo)?;
        self.out(reg::IER, hi)?;
        self.out(reg::LCR, LCR_8N1)?;
        self.out(reg::FCR, FCR_ENABLE_CLEAR)?;
        self.out(reg::MCR, MCR_DTR_RTS_OUT2)
    }

    /// Writes one byte once the transmitter has room.
    pub fn put(&mut self, byte: u8) -> Result<(), UartError<B::Error>> {
        for _ in 0..TX_SPIN_LIMIT {
            if self.inp(reg::LSR)? & lsr::THR_EMPTY != 0 {
                return self.out(reg::DATA, byte);
            }
        }
        Err(UartError::TxTimeout)
    }

    /// Writes `bytes`, turning "\n" into "\r\n" as a serial terminal expects (a "\r"
    /// already before the "\n" is kept as it is).
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), UartError<B::Error>> {
        let mut prev = 0u8;
        for &b in bytes {
            if b == b'\n' && prev != b'\r' {
                self.put(b'\r')?;
            }
            self.put(b)?;
            prev = b;
        }
        Ok(())
    }

    /// A received byte, if one is waiting.
    pub fn try_get(&mut self) -> Result<Option<u8>, UartError<B::Error>> {
        if self.inp(reg::LSR)? & lsr::DATA_READY == 0 {
            return Ok(None);
        }
        self.inp(reg::DATA).map(Some)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    /// A fake 16550: records every access, models the scratch register, DLAB, and a
    /// transmitter that is busy for `busy` status reads after each byte.
    #[derive(Default)]
    struct FakeUart {
        base: u16,
        regs: [u8; 8],
        divisor: [u8; 2],
        sent: Vec<u8>,
        writes: Vec<(u16, u8)>,
        busy: u32,
        busy_left: u32,
        stuck: bool,
        rx: Vec<u8>,
    }

    impl PortBus for FakeUart {
        type Error = ();
        fn in8(&mut self, port: u16) -> Result<u8, ()> {
            let off = port.checked_sub(self.base).filter(|o| *o < 8).ok_or(())?;
            Ok(match off {
                reg::LSR => {
                    let mut v = 0;
                    if self.busy_left > 0 {
                        self.busy_left -= 1;
                    } else if !self.stuck {
                        v |= lsr::THR_EMPTY;
                    }
                    if !self.rx.is_empty() {
                        v |= lsr::DATA_READY;
                    }
                    v
                }
                reg::DATA => {
                    if self.rx.is_empty() {
                        0
                    } else {
                        self.rx.remove(0)
                    }
                }
                o => self.regs[o as usize],
            })
        }
        fn out8(&mut self, port: u16, value: u8) -> Result<(), ()> {
            let off = port.checked_sub(self.base).filter(|o| *o < 8).ok_or(())?;
            self.writes.push((off, value));
            let dlab = self.regs[reg::LCR as usize] & LCR_DLAB != 0;
            match off {
                reg::DATA | reg::IER if dlab => self.divisor[off as usize] = value,
                reg::DATA => {
                    assert_eq!(self.busy_left, 0, "wrote while the transmitter was busy");
                    self.sent.push(value);
                    self.busy_left = self.busy;
                }
                o => self.regs[o as usize] = value,
            }
            Ok(())
        }
    }

    fn fake() -> FakeUart {
        FakeUart {
            base: 0x3f8,
            ..Default::default()
        }
    }

    #[test]
    fn divisors_of_common_rates() {
        assert_eq!(divisor(115_200), Some(1));
        assert_eq!(divisor(38_400), Some(3));
        assert_eq!(divisor(9_600), Some(12));
        assert_eq!(divisor(0), None);
        assert_eq!(divisor(230_400), None);
        assert_eq!(divisor(7), None);
    }

    #[test]
    fn init_programs_divisor_line_and_fifo() {
        let mut u = Uart16550::new(fake(), 0x3f8);
        u.init(38_400).unwrap();
        let f = u.bus();
        assert_eq!(f.divisor, [3, 0]);
        assert_eq!(f.regs[reg::LCR as usize], LCR_8N1, "DLAB cleared again");
        assert_eq!(f.regs[reg::IER as usize], 0, "interrupts off");
        assert_eq!(f.regs[reg::FCR as usize], FCR_ENABLE_CLEAR);
        assert_eq!(f.regs[reg::MCR as usize], MCR_DTR_RTS_OUT2);
        assert!(f.sent.is_empty(), "init transmits nothing");
    }

    #[test]
    fn init_refuses_a_bad_rate_without_touching_the_device() {
        let mut u = Uart16550::new(fake(), 0x3f8);
        assert_eq!(u.init(1234), Err(UartError::BadBaud(1234)));
        assert!(u.bus().writes.is_empty());
    }

    #[test]
    fn a_missing_uart_is_detected_by_the_scratch_register() {
        struct Floating;
        impl PortBus for Floating {
            type Error = ();
            fn in8(&mut self, _: u16) -> Result<u8, ()> {
                Ok(0xff)
            }
            fn out8(&mut self, _: u16, _: u8) -> Result<(), ()> {
                Ok(())
            }
        }
        let mut u = Uart16550::new(Floating, 0x2f8);
        assert_eq!(u.init(115_200), Err(UartError::Absent));
    }

    #[test]
    fn write_waits_for_the_transmitter_and_expands_newlines() {
        let mut f = fake();
        f.busy = 3;
        let mut u = Uart16550::new(f, 0x3f8);
        u.write(b"a\nb\r\n").unwrap();
        assert_eq!(u.bus().sent, b"a\r\nb\r\n");
    }

    #[test]
    fn a_stuck_transmitter_times_out() {
        let mut f = fake();
        f.stuck = true;
        let mut u = Uart16550::new(f, 0x3f8);
        assert_eq!(u.put(b'x'), Err(UartError::TxTimeout));
        assert!(u.bus().sent.is_empty());
    }

    #[test]
    fn bus_errors_propagate() {
        let mut u = Uart16550::new(fake(), 0x2f8); // the fake answers only at 0x3f8
        assert_eq!(u.put(b'x'), Err(UartError::Bus(())));
    }

    #[test]
    fn receive_reads_only_when_data_is_ready() {
        let mut f = fake();
        f.rx = b"k".to_vec();
        let mut u = Uart16550::new(f, 0x3f8);
        assert_eq!(u.try_get(), Ok(Some(b'k')));
        assert_eq!(u.try_get(), Ok(None));
    }
}
