//! An interrupt delivered through seL4: COM1's IRQ (ISA IRQ 4, I/O APIC 0 pin 4) bound
//! to a notification. The UART raises it as soon as its "transmit holding register
//! empty" interrupt is enabled, since the register is empty.

use crate::com1;
use sel4::cap_type::{IoPort, IrqHandler, Notification};
use sel4::{AbsoluteCPtr, Cap};

/// I/O APIC input of COM1 (no interrupt source override in QEMU's MADT).
const PIN: u64 = 4;
/// The seL4 IRQ number the handler cap stands for (vector 0x30 + IRQ). Not 4, though
/// that would mirror the ISA number: under QEMU 7.2 TCG with `-cpu max` and the
/// qemu-tcg kernel, delivering vector 0x34 to user mode right after a `sysret` (rsp
/// still 0) intermittently raised #GP (error 0x342) instead, about 1 boot in 10 with 8
/// QEMUs running at once; with vector 0x30 no failure showed in 144 such boots.
const IRQ: u64 = 0;
/// Interrupt enable register: bit 1 = transmit holding register empty.
const IER: u16 = com1::BASE + 1;
const IER_THRI: u8 = 1 << 1;
/// Modem control register: OUT2 gates the UART's IRQ line on PC hardware.
const MCR: u16 = com1::BASE + 4;
const MCR_OUT2: u8 = 1 << 3;

/// Gets a handler cap for COM1's IRQ into `slot`, binds it to `ntfn`, makes the UART
/// interrupt, and waits (bounded) for the notification. Returns the notification word.
pub fn com1_round_trip(
    slot: AbsoluteCPtr,
    port: Cap<IoPort>,
    ntfn: Cap<Notification>,
) -> sel4::Result<Option<u64>> {
    let handler: Cap<IrqHandler> = Cap::from_bits(slot.index());
    // Edge-triggered, active high: an ISA interrupt.
    sel4::init_thread::IRQ_CONTROL.irq_control_get_ioapic(&slot, 0, PIN, false, false, IRQ)?;
    handler.irq_handler_set_notification(ntfn)?;
    handler.irq_handler_ack()?;
    port.ioport_out8(MCR, MCR_OUT2)?;
    port.ioport_out8(IER, IER_THRI)?;
    let mut got = None;
    for _ in 0..100_000 {
        let word = ntfn.poll();
        if word != 0 {
            got = Some(word);
            break;
        }
        sel4_sys::syscalls::yield_now();
    }
    port.ioport_out8(IER, 0)?;
    handler.irq_handler_ack()?;
    handler.irq_handler_clear()?;
    Ok(got)
}
