//! The High Precision Event Timer (IA-PC HPET Specification 1.0a), timer 0 as a
//! periodic interrupt source: the register logic over an abstract 64-bit register
//! bus, so it runs against a fake register file in host tests and against the
//! uncached mapping of the HPET's register page in the timer PD.
//!
//! Registers (offsets from the base, spec section 2.3): general capabilities and ID
//! (0x000; bits 63:32 the counter's period in femtoseconds, bit 15 legacy replacement
//! capable, bit 13 64-bit counter, bits 12:8 the number of timers - 1), general
//! configuration (0x010; bit 0 enable, bit 1 legacy replacement route: timer 0 drives
//! ISA IRQ 0, timer 1 IRQ 8), general interrupt status (0x020), main counter (0x0F0),
//! and per timer N: configuration and capabilities (0x100 + 0x20 N) and comparator
//! (0x108 + 0x20 N).
#![no_std]

/// Access to the HPET's 64-bit registers.
pub trait RegBus {
    fn read(&mut self, offset: u64) -> u64;
    fn write(&mut self, offset: u64, value: u64);
}

pub mod reg {
    pub const CAPS: u64 = 0x000;
    pub const CONFIG: u64 = 0x010;
    pub const INT_STATUS: u64 = 0x020;
    pub const COUNTER: u64 = 0x0f0;
    pub const fn timer_config(n: u64) -> u64 {
        0x100 + 0x20 * n
    }
    pub const fn timer_comparator(n: u64) -> u64 {
        0x108 + 0x20 * n
    }
}

pub mod caps {
    pub const LEGACY_ROUTE_CAPABLE: u64 = 1 << 15;
}

pub mod config {
    pub const ENABLE: u64 = 1 << 0;
    pub const LEGACY_ROUTE: u64 = 1 << 1;
}

/// Timer configuration and capability bits.
pub mod timer {
    /// Level-triggered (else edge).
    pub const LEVEL: u64 = 1 << 1;
    pub const INT_ENABLE: u64 = 1 << 2;
    /// Periodic (else one-shot).
    pub const PERIODIC: u64 = 1 << 3;
    pub const PERIODIC_CAPABLE: u64 = 1 << 4;
    pub const SIZE_64: u64 = 1 << 5;
    /// The next comparator write sets the period's accumulator.
    pub const VAL_SET: u64 = 1 << 6;
    /// Force 32-bit mode.
    pub const MODE_32: u64 = 1 << 8;
    pub const ROUTE_SHIFT: u64 = 9;
    pub const ROUTE_MASK: u64 = 0x1f << ROUTE_SHIFT;
    /// Bits 63:32: the I/O APIC inputs this timer may be routed to.
    pub const ROUTE_CAP_SHIFT: u64 = 32;
}

/// The counter period the specification allows at most: 100 ns (10 MHz).
pub const MAX_PERIOD_FS: u64 = 100_000_000;

/// Why the HPET cannot do what was asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpetError {
    /// The capabilities register reads as nothing sane (no HPET at this address).
    Absent { caps: u64 },
    /// Timer 0 cannot run periodically.
    NotPeriodic,
    /// Timer 0 cannot reach the asked-for interrupt line.
    CannotRoute { irq: u8 },
    /// A zero or overflowing period.
    BadPeriod,
}

/// A recovery period split into equal HPET intervals (the comparator of a 32-bit
/// timer bounds an interval).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HpetPlan {
    /// Counter ticks per interrupt.
    pub ticks: u64,
    /// Interrupts per recovery tick.
    pub irqs_per_tick: u64,
    /// The interval in microseconds (rounded down).
    pub interval_us: u64,
}

/// How timer 0 reaches its interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Legacy replacement: timer 0 drives ISA IRQ 0 (I/O APIC pin 2 on a PC).
    Legacy,
    /// Routed to I/O APIC input `n`.
    IoApic(u8),
}

pub struct Hpet<B: RegBus> {
    bus: B,
}

impl<B: RegBus> Hpet<B> {
    pub fn new(bus: B) -> Self {
        Hpet { bus }
    }
    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// The counter period in femtoseconds, checked against the specification's bound.
    pub fn period_fs(&mut self) -> Result<u64, HpetError> {
        let caps = self.bus.read(reg::CAPS);
        let fs = caps >> 32;
        if fs == 0 || fs > MAX_PERIOD_FS {
            return Err(HpetError::Absent { caps });
        }
        Ok(fs)
    }

    /// Plans `period_ms` for timer 0: the fewest interrupts per period whose intervals
    /// fit the comparator (32 bits unless the timer is 64-bit capable).
    pub fn plan(&mut self, period_ms: u64) -> Result<HpetPlan, HpetError> {
        let fs = self.period_fs()?;
        let total = (period_ms as u128 * 1_000_000_000_000) / fs as u128;
        if total == 0 {
            return Err(HpetError::BadPeriod);
        }
        let cfg = self.bus.read(reg::timer_config(0));
        let max = if cfg & timer::SIZE_64 != 0 {
            u64::MAX as u128
        } else {
            u32::MAX as u128
        };
        let irqs = total.div_ceil(max);
        let ticks = u64::try_from(total / irqs).map_err(|_| HpetError::BadPeriod)?;
        let irqs_per_tick = u64::try_from(irqs).map_err(|_| HpetError::BadPeriod)?;
        Ok(HpetPlan {
            ticks,
            irqs_per_tick,
            interval_us: ((ticks as u128 * fs as u128) / 1_000_000_000) as u64,
        })
    }

    /// Starts timer 0 periodic every `ticks`, edge-triggered, on `route`: halt the
    /// counter, route, set periodic mode and the accumulator (VAL_SET, then the
    /// comparator: first write the next expiry, then the period; spec 2.3.9.2.2),
    /// restart the counter.
    pub fn start_periodic(&mut self, ticks: u64, route: Route) -> Result<(), HpetError> {
        if ticks == 0 {
            return Err(HpetError::BadPeriod);
        }
        let caps = self.bus.read(reg::CAPS);
        let cfg0 = self.bus.read(reg::timer_config(0));
        if cfg0 & timer::PERIODIC_CAPABLE == 0 {
            return Err(HpetError::NotPeriodic);
        }
        let mut general = self.bus.read(reg::CONFIG) & !(config::ENABLE | config::LEGACY_ROUTE);
        let mut t = cfg0 & !(timer::LEVEL | timer::ROUTE_MASK | timer::MODE_32);
        match route {
            Route::Legacy => {
                if caps & caps::LEGACY_ROUTE_CAPABLE == 0 {
                    return Err(HpetError::CannotRoute { irq: 0 });
                }
                general |= config::LEGACY_ROUTE;
            }
            Route::IoApic(n) => {
                if n >= 32 || (cfg0 >> timer::ROUTE_CAP_SHIFT) & (1 << n) == 0 {
                    return Err(HpetError::CannotRoute { irq: n });
                }
                t |= (n as u64) << timer::ROUTE_SHIFT;
            }
        }
        self.bus.write(reg::CONFIG, general);
        t |= timer::INT_ENABLE | timer::PERIODIC | timer::VAL_SET;
        if cfg0 & timer::SIZE_64 == 0 {
            t |= timer::MODE_32;
        }
        self.bus.write(reg::timer_config(0), t);
        let now = self.bus.read(reg::COUNTER);
        self.bus
            .write(reg::timer_comparator(0), now.wrapping_add(ticks));
        self.bus.write(reg::timer_comparator(0), ticks);
        self.bus.write(reg::CONFIG, general | config::ENABLE);
        Ok(())
    }

    /// The main counter.
    pub fn counter(&mut self) -> u64 {
        self.bus.read(reg::COUNTER)
    }

    /// Clears timer 0's level-interrupt status bit (harmless for edge interrupts).
    pub fn acknowledge(&mut self) {
        self.bus.write(reg::INT_STATUS, 1);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::collections::BTreeMap;
    use std::vec::Vec;

    /// QEMU's HPET as far as these registers go: 10 ns period, legacy capable, timer 0
    /// periodic and 64-bit capable, routable to I/O APIC inputs 20..=23.
    struct FakeHpet {
        regs: BTreeMap<u64, u64>,
        writes: Vec<(u64, u64)>,
    }

    fn qemu_hpet() -> FakeHpet {
        let mut regs = BTreeMap::new();
        regs.insert(
            reg::CAPS,
            (10_000_000u64 << 32) | caps::LEGACY_ROUTE_CAPABLE | (1 << 13) | (2 << 8) | 1,
        );
        regs.insert(
            reg::timer_config(0),
            (0x00f0_0000u64 << timer::ROUTE_CAP_SHIFT) | timer::PERIODIC_CAPABLE | timer::SIZE_64,
        );
        regs.insert(reg::COUNTER, 1000);
        FakeHpet {
            regs,
            writes: Vec::new(),
        }
    }

    impl RegBus for FakeHpet {
        fn read(&mut self, offset: u64) -> u64 {
            self.regs.get(&offset).copied().unwrap_or(0)
        }
        fn write(&mut self, offset: u64, value: u64) {
            self.writes.push((offset, value));
            self.regs.insert(offset, value);
        }
    }

    #[test]
    fn plans_in_counter_ticks() {
        let mut h = Hpet::new(qemu_hpet());
        assert_eq!(h.period_fs(), Ok(10_000_000));
        // 20 ms at 100 MHz: 2,000,000 ticks, one interrupt.
        assert_eq!(
            h.plan(20),
            Ok(HpetPlan {
                ticks: 2_000_000,
                irqs_per_tick: 1,
                interval_us: 20_000
            })
        );
        // 60 s fits a 64-bit comparator...
        assert_eq!(h.plan(60_000).map(|p| p.irqs_per_tick), Ok(1));
    }

    #[test]
    fn a_32_bit_timer_splits_long_periods() {
        let mut f = qemu_hpet();
        f.regs.insert(reg::timer_config(0), timer::PERIODIC_CAPABLE);
        let mut h = Hpet::new(f);
        // 60 s = 6e9 ticks > u32::MAX: two interrupts of 3e9 ticks.
        let p = h.plan(60_000).unwrap();
        assert_eq!(
            (p.irqs_per_tick, p.ticks, p.interval_us),
            (2, 3_000_000_000, 30_000_000)
        );
    }

    #[test]
    fn absent_or_broken_hpets_are_errors() {
        let mut h = Hpet::new(FakeHpet {
            regs: BTreeMap::new(),
            writes: Vec::new(),
        });
        assert_eq!(h.period_fs(), Err(HpetError::Absent { caps: 0 }));
        let mut f = qemu_hpet();
        f.regs.insert(reg::CAPS, u64::MAX);
        assert!(matches!(
            Hpet::new(f).plan(10),
            Err(HpetError::Absent { .. })
        ));
        let mut h = Hpet::new(qemu_hpet());
        assert_eq!(h.plan(0), Err(HpetError::BadPeriod));
        assert_eq!(
            h.start_periodic(0, Route::Legacy),
            Err(HpetError::BadPeriod)
        );
    }

    #[test]
    fn legacy_start_sequence() {
        let mut h = Hpet::new(qemu_hpet());
        h.start_periodic(2_000_000, Route::Legacy).unwrap();
        let w = &h.bus().writes;
        // Counter halted with legacy routing, timer 0 periodic + VAL_SET, comparator =
        // now + period then the period, counter enabled last.
        assert_eq!(w[0], (reg::CONFIG, config::LEGACY_ROUTE));
        let t = w[1].1;
        assert_eq!(w[1].0, reg::timer_config(0));
        assert_eq!(
            t & (timer::INT_ENABLE | timer::PERIODIC | timer::VAL_SET),
            timer::INT_ENABLE | timer::PERIODIC | timer::VAL_SET
        );
        assert_eq!(
            t & (timer::LEVEL | timer::MODE_32 | timer::ROUTE_MASK),
            0,
            "edge, 64-bit, no I/O APIC route"
        );
        assert_eq!(
            &w[2..],
            &[
                (reg::timer_comparator(0), 1000 + 2_000_000),
                (reg::timer_comparator(0), 2_000_000),
                (reg::CONFIG, config::LEGACY_ROUTE | config::ENABLE),
            ]
        );
    }

    #[test]
    fn io_apic_routes_must_be_in_the_route_capability() {
        let mut h = Hpet::new(qemu_hpet());
        assert_eq!(
            h.start_periodic(100, Route::IoApic(4)),
            Err(HpetError::CannotRoute { irq: 4 })
        );
        h.start_periodic(100, Route::IoApic(21)).unwrap();
        let t = h.bus().regs[&reg::timer_config(0)];
        assert_eq!((t & timer::ROUTE_MASK) >> timer::ROUTE_SHIFT, 21);
        assert_eq!(h.bus().regs[&reg::CONFIG] & config::LEGACY_ROUTE, 0);
    }

    #[test]
    fn a_timer_without_periodic_mode_is_refused() {
        let mut f = qemu_hpet();
        f.regs.insert(reg::timer_config(0), timer::SIZE_64);
        assert_eq!(
            Hpet::new(f).start_periodic(100, Route::Legacy),
            Err(HpetError::NotPeriodic)
        );
    }
}
