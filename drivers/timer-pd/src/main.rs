//! The timer driver PD: programs the 8254 PIT's channel 0 as a periodic interrupt,
//! takes ISA IRQ 0 on a notification (the root task bound the IRQ handler to it) and,
//! every NX-huge-page recovery period, signals the mmu-server's notification with the
//! `RECOVERY_TICK` badge (the capability in slot `timer::MMU_NTFN` carries it).
#![no_std]
#![no_main]

use log::{error, info};
use pit8254::{Pit, PortBus, TickCounter};
use sel4::cap_type::{IoPort, IrqHandler, Notification};
use sel4::Cap;
use sel4_pd::{slot, BootParams, TimerKind};

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

const PORTS: Cap<IoPort> = Cap::from_bits(slot::timer::PORTS);
const IRQ: Cap<IrqHandler> = Cap::from_bits(slot::timer::IRQ);
const IRQ_NTFN: Cap<Notification> = Cap::from_bits(slot::timer::IRQ_NTFN);
const MMU_NTFN: Cap<Notification> = Cap::from_bits(slot::timer::MMU_NTFN);

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    if params.timer_kind() != TimerKind::Pit {
        error!(
            "this driver runs the PIT only; the spec asks for {:?}",
            params.timer_kind()
        );
        sel4_pd::fault();
    }
    let period_ms = params.nx_recovery_period_ms.get();
    let ratio = params.nx_recovery_ratio.get();
    if ratio == 0 {
        info!("NX-huge-page recovery is off (ratio 0): no ticks to send");
        loop {
            IRQ_NTFN.wait();
        }
    }
    let plan = match pit8254::plan(period_ms) {
        Ok(p) => p,
        Err(e) => {
            error!("cannot time a recovery period of {period_ms} ms: {e:?}");
            sel4_pd::fault();
        }
    };
    let mut pit = Pit::new(CapBus(PORTS), params.ports_first.get());
    if let Err(e) = IRQ
        .irq_handler_ack()
        .and_then(|()| pit.start_periodic(plan.count))
    {
        error!("cannot start the PIT: {e}");
        sel4_pd::fault();
    }
    info!(
        "PIT channel 0 every {} us, recovery tick every {} ms ({} interrupts)",
        plan.interval_us, period_ms, plan.irqs_per_tick
    );
    let mut counter = TickCounter::new(&plan);
    loop {
        IRQ_NTFN.wait();
        if let Err(e) = IRQ.irq_handler_ack() {
            error!("IRQHandler_Ack: {e}");
        }
        if counter.irq() {
            MMU_NTFN.signal();
            if counter.ticks() == 1 {
                info!("first recovery tick sent to the mmu-server");
            }
        }
    }
}
