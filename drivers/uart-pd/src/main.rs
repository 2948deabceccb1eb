//! The UART driver PD: owns the 16550's I/O ports (CSpace slot `uart::PORTS`, a
//! capability the root task narrowed to the UART's eight ports) and serves the console
//! endpoint: every other PD prints by calling it (`sel4_pd::console`). Its own log
//! lines go straight to the device.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU16, Ordering};
use log::{error, info};
use sel4::cap_type::{Endpoint, IoPort};
use sel4::{Cap, MessageInfo};
use sel4_pd::console::{self, CHUNK, LABEL_ERROR};
use sel4_pd::{slot, BootParams};
use uart16550::{PortBus, Uart16550};

/// The UART's I/O ports as the PortBus of the register logic.
struct CapBus(Cap<IoPort>);

impl PortBus for CapBus {
    type Error = sel4::Error;
    fn in8(&mut self, port: u16) -> sel4::Result<u8> {
        self.0.ioport_in8(port)
    }
    fn out8(&mut self, port: u16, value: u8) -> sel4::Result<()> {
        self.0.ioport_out8(port, value)
    }
}

const PORTS: Cap<IoPort> = Cap::from_bits(slot::uart::PORTS);
/// The base port, from the boot parameters (the spec's port range).
static BASE: AtomicU16 = AtomicU16::new(0);

fn uart() -> Uart16550<CapBus> {
    Uart16550::new(CapBus(PORTS), BASE.load(Ordering::Relaxed))
}

/// The logger's sink: this PD writes its own lines to the device.
fn own_sink(bytes: &[u8]) {
    let _ = uart().write(bytes);
}

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    let (first, last) = (params.ports_first.get(), params.ports_last.get());
    if last.wrapping_sub(first) != 7 {
        sel4::debug_println!("uart: the spec gave ports {first:#x}..={last:#x}, not 8 ports");
        sel4_pd::fault();
    }
    BASE.store(first, Ordering::Relaxed);
    if let Err(e) = uart().init(115_200) {
        sel4::debug_println!("uart: cannot initialize the 16550 at {first:#x}: {e:?}");
        sel4_pd::fault();
    }
    sel4_pd::logger::init(own_sink, log::LevelFilter::Info);
    info!("16550 at {first:#x} ready, serving the console");
    serve(Cap::from_bits(slot::common::CONSOLE_EP))
}

/// The console loop: one request, one reply, the next request (seL4_ReplyRecv).
fn serve(ep: Cap<Endpoint>) -> ! {
    let (mut msg, mut badge) = ep.recv();
    loop {
        let mut buf = [0u8; CHUNK];
        let reply = match console::decode(
            msg.label(),
            msg.length() as usize,
            |i| sel4::get_mr(i).unwrap_or(0),
            &mut buf,
        ) {
            Ok(bytes) => match uart().write(bytes) {
                Ok(()) => {
                    sel4::set_mr(0, bytes.len() as u64);
                    MessageInfo::new(0, 0, 0, 1)
                }
                Err(e) => {
                    error!("device error for PD badge {badge}: {e:?}");
                    MessageInfo::new(LABEL_ERROR, 0, 0, 0)
                }
            },
            Err(e) => {
                error!("malformed console request from PD badge {badge}: {e:?}");
                MessageInfo::new(LABEL_ERROR, 0, 0, 0)
            }
        };
        (msg, badge) = ep.reply_recv(reply);
    }
}
