//! The UART driver PD: owns the 16550's I/O ports (CSpace slot `uart::PORTS`, a
//! capability the root task narrowed to the UART's eight ports) and serves the console
//! endpoint: every other PD prints by calling it (`sel4_pd::console`). Its own log
//! lines go straight to the device.
//!
//! After a restart by the supervisor (`sel4_pd::restarts() > 0`) it re-initialises the
//! device and first answers the console call it died serving (its reply capability
//! survives in its TCB) with `LABEL_ERROR`, so that caller is not left blocked.
//!
//! Two binaries: `uart`, and `uart_faulty` for test specs, which dies on a given
//! console request of its first life (a fault injected to exercise the supervisor).
#![no_std]

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

/// Runs the UART PD; with `die_on_request = Some(n)`, the n-th console request of its
/// first life kills it (test builds only).
pub fn run(params: &'static BootParams, die_on_request: Option<u64>) -> ! {
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
    let restarts = sel4_pd::restarts();
    if restarts > 0 {
        info!("restarted ({restarts}), answering the interrupted call");
        sel4::reply(MessageInfo::new(LABEL_ERROR, 0, 0, 0));
    }
    let die_on_request = die_on_request.filter(|_| restarts == 0);
    serve(Cap::from_bits(slot::common::CONSOLE_EP), die_on_request)
}

/// The console loop: one request, one reply, the next request (seL4_ReplyRecv).
fn serve(ep: Cap<Endpoint>, die_on_request: Option<u64>) -> ! {
    let (mut msg, mut badge) = ep.recv();
    let mut requests = 0u64;
    loop {
        requests += 1;
        if die_on_request == Some(requests) {
            error!("injected fault on console request {requests} (from PD badge {badge})");
            sel4_pd::fault();
        }
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
