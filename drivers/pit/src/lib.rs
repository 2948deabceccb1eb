//! The 8254 programmable interval timer (PC PIT), channel 0, as a periodic interrupt
//! source: the register logic over an abstract I/O-port bus (host-testable), and the
//! arithmetic that turns the NX-huge-page recovery period into a PIT interval and a
//! count of interrupts per recovery tick.
//!
//! Facts from the Intel 8254 data sheet: the input clock is 1.193182 MHz; the mode/
//! command register is port base + 3; a counter is loaded low byte then high byte
//! through its data port (channel 0 at base + 0); a count of 0 means 65536. Mode 2
//! (rate generator) makes OUT0, wired to ISA IRQ 0 on a PC, pulse once per count.
#![no_std]

/// Access to 8-bit I/O ports.
pub trait PortBus {
    type Error;
    fn in8(&mut self, port: u16) -> Result<u8, Self::Error>;
    fn out8(&mut self, port: u16, value: u8) -> Result<(), Self::Error>;
}

/// The PIT's input clock in Hz.
pub const CLOCK_HZ: u64 = 1_193_182;
/// The longest interval one count covers: 65536 clocks, about 54.9 ms.
pub const MAX_COUNT: u64 = 65_536;
/// The longest interval between interrupts this driver programs; longer periods are
/// counted in several interrupts.
pub const MAX_INTERVAL_US: u64 = 50_000;
/// Channel 0 data port offset.
pub const CHANNEL0: u16 = 0;
/// Mode/command register offset.
pub const COMMAND: u16 = 3;
/// Command: channel 0, access low byte then high byte, mode 2 (rate generator), binary.
pub const CMD_CH0_LOHI_RATE: u8 = 0b0011_0100;

/// The PIT count for an interval of `us` microseconds (rounded to the nearest clock),
/// or None if the interval is shorter than one clock or longer than [`MAX_COUNT`].
pub fn count_for_us(us: u64) -> Option<u16> {
    let clocks = (us.checked_mul(CLOCK_HZ)? + 500_000) / 1_000_000;
    match clocks {
        0 => None,
        MAX_COUNT => Some(0), // 0 means 65536
        c if c < MAX_COUNT => Some(c as u16),
        _ => None,
    }
}

/// A recovery period split into equal PIT intervals: every `irqs_per_tick` interrupts
/// the timer PD sends one recovery tick.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TickPlan {
    /// The PIT interval in microseconds.
    pub interval_us: u64,
    /// Interrupts per recovery tick.
    pub irqs_per_tick: u64,
    /// The count loaded into channel 0.
    pub count: u16,
}

/// Why a period cannot be timed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlanError {
    /// A zero period.
    ZeroPeriod,
    /// The period overflows microseconds.
    TooLong,
}

/// Plans `period_ms`: the fewest interrupts per tick with intervals of at most
/// [`MAX_INTERVAL_US`].
pub fn plan(period_ms: u64) -> Result<TickPlan, PlanError> {
    if period_ms == 0 {
        return Err(PlanError::ZeroPeriod);
    }
    let period_us = period_ms.checked_mul(1000).ok_or(PlanError::TooLong)?;
    let irqs_per_tick = period_us.div_ceil(MAX_INTERVAL_US);
    let interval_us = period_us / irqs_per_tick;
    // interval_us is between 500 us (1 ms / 2, never: 1 ms fits one interval) and
    // MAX_INTERVAL_US, always a valid count.
    let count = count_for_us(interval_us).ok_or(PlanError::TooLong)?;
    Ok(TickPlan {
        interval_us,
        irqs_per_tick,
        count,
    })
}

/// Counts interrupts and says when a recovery tick is due.
#[derive(Clone, Copy, Debug)]
pub struct TickCounter {
    irqs_per_tick: u64,
    irqs: u64,
    ticks: u64,
}

impl TickCounter {
    pub fn new(plan: &TickPlan) -> Self {
        TickCounter {
            irqs_per_tick: plan.irqs_per_tick.max(1),
            irqs: 0,
            ticks: 0,
        }
    }
    /// One interrupt; true when it completes a recovery period.
    pub fn irq(&mut self) -> bool {
        self.irqs += 1;
        if self.irqs == self.irqs_per_tick {
            self.irqs = 0;
            self.ticks += 1;
            true
        } else {
            false
        }
    }
    /// Recovery ticks so far.
    pub fn ticks(&self) -> u64 {
        self.ticks
    }
}

/// Channel 0 of the PIT at `base`.
pub struct Pit<B: PortBus> {
    bus: B,
    base: u16,
}

impl<B: PortBus> Pit<B> {
    pub fn new(bus: B, base: u16) -> Self {
        Pit { bus, base }
    }
    pub fn bus(&self) -> &B {
        &self.bus
    }
    /// Programs channel 0 as a rate generator with `count` (0 = 65536).
    pub fn start_periodic(&mut self, count: u16) -> Result<(), B::Error> {
        let [lo, hi] = count.to_le_bytes();
        self.bus.out8(self.base + COMMAND, CMD_CH0_LOHI_RATE)?;
        self.bus.out8(self.base + CHANNEL0, lo)?;
        self.bus.out8(self.base + CHANNEL0, hi)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    #[derive(Default)]
    struct Recorder(Vec<(u16, u8)>);
    impl PortBus for Recorder {
        type Error = ();
        fn in8(&mut self, _: u16) -> Result<u8, ()> {
            Ok(0)
        }
        fn out8(&mut self, port: u16, value: u8) -> Result<(), ()> {
            self.0.push((port, value));
            Ok(())
        }
    }

    #[test]
    fn counts_round_to_the_nearest_clock() {
        assert_eq!(count_for_us(10_000), Some(11_932)); // 11931.82
        assert_eq!(count_for_us(1_000), Some(1_193));
        assert_eq!(count_for_us(0), None);
        assert_eq!(count_for_us(54_900), Some(65_506));
        assert_eq!(
            count_for_us(54_925),
            Some(0),
            "65536 clocks is written as 0"
        );
        assert_eq!(count_for_us(54_926), None);
        assert_eq!(count_for_us(60_000), None);
    }

    #[test]
    fn short_periods_take_one_interrupt() {
        let p = plan(10).unwrap();
        assert_eq!(
            (p.interval_us, p.irqs_per_tick, p.count),
            (10_000, 1, 11_932)
        );
        let p = plan(50).unwrap();
        assert_eq!((p.interval_us, p.irqs_per_tick), (50_000, 1));
    }

    #[test]
    fn long_periods_are_split_into_equal_intervals() {
        // KVM's default for ratio 60: 60 s.
        let p = plan(60_000).unwrap();
        assert_eq!((p.interval_us, p.irqs_per_tick), (50_000, 1200));
        let p = plan(75).unwrap();
        assert_eq!((p.interval_us, p.irqs_per_tick), (37_500, 2));
        for ms in [1, 7, 51, 99, 1000, 3_600_000] {
            let p = plan(ms).unwrap();
            assert!(p.interval_us <= MAX_INTERVAL_US);
            assert_eq!(p.interval_us * p.irqs_per_tick, ms * 1000, "{ms} ms exact");
        }
    }

    #[test]
    fn bad_periods_are_errors() {
        assert_eq!(plan(0), Err(PlanError::ZeroPeriod));
        assert_eq!(plan(u64::MAX), Err(PlanError::TooLong));
    }

    #[test]
    fn the_counter_ticks_every_n_interrupts() {
        let p = plan(75).unwrap();
        let mut c = TickCounter::new(&p);
        let fired: Vec<bool> = (0..6).map(|_| c.irq()).collect();
        assert_eq!(fired, [false, true, false, true, false, true]);
        assert_eq!(c.ticks(), 3);
    }

    #[test]
    fn start_writes_command_then_low_then_high() {
        let mut pit = Pit::new(Recorder::default(), 0x40);
        pit.start_periodic(11_932).unwrap();
        assert_eq!(pit.bus().0, [(0x43, 0x34), (0x40, 0x9c), (0x40, 0x2e)]);
    }
}
