//! Writing to the 16550 UART at COM1 directly, through an I/O-port capability narrowed
//! to its eight registers: the way a driver PD will reach its device.

use sel4::cap_type::IoPort;
use sel4::Cap;

/// COM1's base port; its registers are base..base+7.
pub const BASE: u16 = 0x3f8;
/// Line status register; bit 5: the transmit holding register is empty.
const LSR: u16 = BASE + 5;
const LSR_THR_EMPTY: u8 = 1 << 5;

/// Writes `text` byte by byte (In8 on the status register, Out8 on the data register).
pub fn write(port: Cap<IoPort>, text: &str) -> sel4::Result<()> {
    for b in text.bytes() {
        // The UART under QEMU is always ready; bound the wait anyway.
        for _ in 0..10_000 {
            if port.ioport_in8(LSR)? & LSR_THR_EMPTY != 0 {
                break;
            }
        }
        port.ioport_out8(BASE, b)?;
    }
    Ok(())
}
