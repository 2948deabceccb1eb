//! The timer driver PD: programs a periodic interrupt — the 8254 PIT's channel 0
//! (I/O ports in slot `timer::PORTS`), or the HPET's timer 0 (its register page mapped
//! uncached at `layout::DEVICE_VADDR`), as the spec says — takes the IRQ on a
//! notification (the root task bound the IRQ handler to it) and, every NX-huge-page
//! recovery period, signals the mmu-server's notification with the `RECOVERY_TICK`
//! badge (the capability in slot `timer::MMU_NTFN` carries it).
#![no_std]
#![no_main]

use hpet::{Hpet, RegBus, Route};
use log::{error, info};
use pit8254::{Pit, PortBus, TickCounter, TickPlan};
use sel4::cap_type::{IoPort, IrqHandler, Notification};
use sel4::Cap;
use sel4_pd::layout::DEVICE_VADDR;
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
/// Interrupts over which the HPET driver measures its interrupt interval.
const MEASURED_IRQS: u64 = 10;

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    let period_ms = params.nx_recovery_period_ms.get();
    let ratio = params.nx_recovery_ratio.get();
    if ratio == 0 {
        info!("NX-huge-page recovery is off (ratio 0): no ticks to send");
        loop {
            IRQ_NTFN.wait();
        }
    }
    let started = match params.timer_kind() {
        TimerKind::Pit => start_pit(params, period_ms),
        TimerKind::Hpet => start_hpet(params, period_ms),
    };
    let plan = match started {
        Ok(plan) => plan,
        Err(()) => sel4_pd::fault(),
    };
    let mut counter = TickCounter::new(&plan);
    let mut irqs = 0u64;
    let mut first_irq_at = 0u64;
    loop {
        IRQ_NTFN.wait();
        irqs += 1;
        if params.timer_kind() == TimerKind::Hpet {
            let mut hpet = Hpet::new(HpetRegs);
            hpet.acknowledge();
            // Where the interrupts come from, measured on the HPET's own counter: its
            // period, not the 50 ms the kernel left the PIT at (which the legacy
            // replacement route disconnects).
            if irqs == 1 {
                first_irq_at = hpet.counter();
            } else if irqs == MEASURED_IRQS {
                let fs = hpet.period_fs().unwrap_or(0) as u128;
                let elapsed = hpet.counter().wrapping_sub(first_irq_at) as u128;
                let us = elapsed * fs / 1_000_000_000 / (MEASURED_IRQS as u128 - 1);
                info!("HPET: interrupts 1 to {MEASURED_IRQS} came {us} us apart on average");
            }
        }
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

/// Starts the PIT; the plan in PIT terms.
fn start_pit(params: &BootParams, period_ms: u64) -> Result<TickPlan, ()> {
    let plan = pit8254::plan(period_ms)
        .map_err(|e| error!("cannot time a recovery period of {period_ms} ms: {e:?}"))?;
    let mut pit = Pit::new(CapBus(PORTS), params.ports_first.get());
    IRQ.irq_handler_ack()
        .and_then(|()| pit.start_periodic(plan.count))
        .map_err(|e| error!("cannot start the PIT: {e}"))?;
    info!(
        "PIT channel 0 every {} us, recovery tick every {} ms ({} interrupts)",
        plan.interval_us, period_ms, plan.irqs_per_tick
    );
    Ok(plan)
}

/// The HPET's register page, which the spec maps uncached at DEVICE_VADDR.
struct HpetRegs;

impl RegBus for HpetRegs {
    fn read(&mut self, offset: u64) -> u64 {
        // SAFETY: offsets of the HPET register block (< 0x400) inside the 4 KiB page the
        // spec maps at DEVICE_VADDR; device registers want volatile, aligned accesses.
        unsafe { core::ptr::read_volatile((DEVICE_VADDR + offset) as *const u64) }
    }
    fn write(&mut self, offset: u64, value: u64) {
        // SAFETY: as for `read`.
        unsafe { core::ptr::write_volatile((DEVICE_VADDR + offset) as *mut u64, value) }
    }
}

/// Starts the HPET's timer 0: through the legacy replacement route for IRQ 0 (as the
/// PIT's line), else routed to the I/O APIC input the spec names.
fn start_hpet(params: &BootParams, period_ms: u64) -> Result<TickPlan, ()> {
    let mut hpet = Hpet::new(HpetRegs);
    let plan = hpet
        .plan(period_ms)
        .map_err(|e| error!("HPET: cannot time {period_ms} ms: {e:?}"))?;
    let route = match params.irq() {
        Some(0) | None => Route::Legacy,
        Some(n) => Route::IoApic(n),
    };
    IRQ.irq_handler_ack()
        .map_err(|e| error!("IRQHandler_Ack: {e}"))?;
    hpet.start_periodic(plan.ticks, route)
        .map_err(|e| error!("HPET: cannot start timer 0: {e:?}"))?;
    info!(
        "HPET timer 0 every {} ticks ({} us, {route:?} route), recovery tick every {} ms ({} interrupts)",
        plan.ticks, plan.interval_us, period_ms, plan.irqs_per_tick
    );
    Ok(TickPlan {
        interval_us: plan.interval_us,
        irqs_per_tick: plan.irqs_per_tick,
        count: 0,
    })
}
