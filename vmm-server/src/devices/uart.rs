//! COM1: a 16550A UART at I/O ports 0x3f8-0x3ff, as QEMU's `serial` device models it
//! for a guest that only transmits: THR bytes go to the output sink at once, so the
//! line status always reports the transmitter empty (LSR.THRE | LSR.TEMT); every other
//! register is readable and writable with QEMU's reset values and side effects that a
//! polling driver can observe (divisor latch via LCR.DLAB, scratch register, loopback).

/// Where transmitted bytes go (the host prints them; the seL4 runtime hands them to the
/// console driver).
pub trait SerialSink {
    fn put(&mut self, byte: u8);
}

/// The first port of COM1.
pub const COM1_BASE: u16 = 0x3f8;
/// Ports the UART decodes.
pub const COM1_PORTS: core::ops::RangeInclusive<u16> = COM1_BASE..=COM1_BASE + 7;

const LCR_DLAB: u8 = 0x80;
const MCR_LOOP: u8 = 0x10;
const LSR_DR: u8 = 0x01;
const LSR_THRE: u8 = 0x20;
const LSR_TEMT: u8 = 0x40;
/// IIR: no interrupt pending.
const IIR_NO_INT: u8 = 0x01;
/// IIR bits 7:6 read as 11 when the FIFOs are enabled.
const IIR_FIFO_ENABLED: u8 = 0xc0;
/// MSR with the modem lines QEMU reports when nothing is attached: DCD, DSR, CTS.
const MSR_RESET: u8 = 0xb0;
/// MCR after reset: OUT2 (QEMU's reset value).
const MCR_RESET: u8 = 0x08;

/// The register file of one 16550A.
#[derive(Clone, Debug)]
pub struct Uart16550 {
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    fcr: u8,
    divisor: u16,
    /// The receive buffer (only loopback fills it: the host sends no input).
    rbr: Option<u8>,
    /// Bytes transmitted to the sink.
    transmitted: u64,
}

impl Default for Uart16550 {
    fn default() -> Self {
        Self::new()
    }
}

impl Uart16550 {
    pub const fn new() -> Self {
        Uart16550 {
            ier: 0,
            lcr: 0,
            mcr: MCR_RESET,
            scr: 0,
            fcr: 0,
            divisor: 0x0c,
            rbr: None,
            transmitted: 0,
        }
    }

    /// Bytes the guest has sent to the sink so far.
    pub fn transmitted(&self) -> u64 {
        self.transmitted
    }

    fn loopback(&self) -> bool {
        self.mcr & MCR_LOOP != 0
    }

    /// A one-byte read of register `offset` (0..=7).
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset & 7 {
            0 if dlab => self.divisor as u8,
            0 => self.rbr.take().unwrap_or(0),
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            2 => {
                let fifo = if self.fcr & 1 != 0 {
                    IIR_FIFO_ENABLED
                } else {
                    0
                };
                IIR_NO_INT | fifo
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let dr = if self.rbr.is_some() { LSR_DR } else { 0 };
                LSR_THRE | LSR_TEMT | dr
            }
            6 => {
                if self.loopback() {
                    // In loopback the modem inputs follow the outputs (16550A data
                    // sheet): RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD.
                    let m = self.mcr;
                    ((m & 0x02) << 3) | ((m & 0x01) << 5) | ((m & 0x04) << 4) | ((m & 0x08) << 4)
                } else {
                    MSR_RESET
                }
            }
            _ => self.scr,
        }
    }

    /// A one-byte write of register `offset` (0..=7).
    pub fn write(&mut self, offset: u16, value: u8, sink: &mut impl SerialSink) {
        let dlab = self.lcr & LCR_DLAB != 0;
        match offset & 7 {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | value as u16,
            0 if self.loopback() => self.rbr = Some(value),
            0 => {
                sink.put(value);
                self.transmitted += 1;
            }
            1 if dlab => self.divisor = (self.divisor & 0x00ff) | ((value as u16) << 8),
            1 => self.ier = value & 0x0f,
            2 => self.fcr = value & 0xc9,
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1f,
            // LSR and MSR are read-only (writes are factory test registers: ignored).
            5 | 6 => {}
            _ => self.scr = value,
        }
    }
}
