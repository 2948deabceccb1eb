//! Step 1: every object of the spec, from untyped memory (or, for I/O ports and IRQs,
//! from the root task's device authority).

use super::Builder;
use crate::error::{Error, Step};
use crate::untyped::{self, DeviceRegion, Region};
use alloc::vec;
use alloc::vec::Vec;
use capdl_spec::{ObjectKind, ObjectRecord, NONE};
use sel4::cap_type::Untyped;
use sel4::{init_thread, Cap, CapRights, ObjectBlueprint};

fn blueprint(o: &ObjectRecord, kind: ObjectKind) -> Option<ObjectBlueprint> {
    Some(match kind {
        ObjectKind::Endpoint => ObjectBlueprint::Endpoint,
        ObjectKind::Notification => ObjectBlueprint::Notification,
        ObjectKind::Tcb => ObjectBlueprint::Tcb,
        ObjectKind::CNode => ObjectBlueprint::CNode {
            size_bits: o.size_bits as usize,
        },
        ObjectKind::Untyped => ObjectBlueprint::Untyped {
            size_bits: o.size_bits as usize,
        },
        ObjectKind::Pml4 => ObjectBlueprint::VSpace,
        ObjectKind::Pdpt => ObjectBlueprint::Pdpt,
        ObjectKind::Pd => ObjectBlueprint::PageDirectory,
        ObjectKind::Pt => ObjectBlueprint::PageTable,
        ObjectKind::Frame if o.size_bits == 12 => ObjectBlueprint::Granule,
        ObjectKind::Frame if o.size_bits == 21 => ObjectBlueprint::LargePage,
        _ => return None,
    })
}

/// The I/O APIC pin of an ISA IRQ: QEMU's (and most PCs') MADT overrides ISA IRQ 0 (the
/// PIT) to GSI 2; the other ISA IRQs are identity-mapped.
fn isa_irq_pin(irq: u64) -> u64 {
    if irq == 0 {
        2
    } else {
        irq
    }
}

impl Builder {
    /// Step 1.
    pub fn create_objects(&mut self) -> Result<(), Error> {
        let spec = self.spec;
        let objects = spec.objects();
        // 1a: the spec's untypeds, largest first.
        let mut uts: Vec<u32> = (0..objects.len() as u32)
            .filter(|&i| self.kind(i) == ObjectKind::Untyped)
            .collect();
        uts.sort_by_key(|&i| core::cmp::Reverse(objects[i as usize].size_bits));
        let mut children: Vec<Option<Region>> = vec![None; objects.len()];
        for &i in &uts {
            let bits = objects[i as usize].size_bits as usize;
            let from = self.pool.take(bits).ok_or(Error::OutOfUntyped {
                object: self.name(i),
                size_bits: bits,
            })?;
            let cap: Cap<Untyped> = untyped::retype(
                from,
                ObjectBlueprint::Untyped { size_bits: bits },
                self.base + i as u64,
            )
            .step("Untyped_Retype", self.name(i))?;
            children[i as usize] = Some(Region::new(cap, bits));
        }
        // 1b: objects carved from a spec untyped, in table order; 1c: the rest, largest
        // first.
        let mut rest: Vec<(usize, u32)> = Vec::new();
        for (i, o) in objects.iter().enumerate() {
            let i = i as u32;
            let kind = self.kind(i);
            if kind == ObjectKind::Untyped {
                continue;
            }
            match kind {
                ObjectKind::IoPorts => {
                    let range =
                        sel4_sys::cap_data::io_port_range(o.arg0.get() as u16, o.arg1.get() as u16);
                    init_thread::slot(self.base + i as u64)
                        .mint(
                            &init_thread::slot(init_thread::IO_PORT.bits()),
                            CapRights::ALL,
                            range,
                        )
                        .step("CNode_Mint of an I/O-port range", self.name(i))?;
                    continue;
                }
                ObjectKind::Irq => {
                    let irq = o.arg0.get();
                    init_thread::IRQ_CONTROL
                        .irq_control_get_ioapic(
                            &init_thread::slot(self.base + i as u64),
                            0,
                            isa_irq_pin(irq),
                            false, // ISA interrupts are edge-triggered,
                            false, // active high
                            irq,
                        )
                        .step("IRQControl_GetIOAPIC", self.name(i))?;
                    continue;
                }
                _ => {}
            }
            if o.flags & capdl_spec::object_flags::HAS_PADDR != 0 {
                if kind != ObjectKind::Frame || o.size_bits != 12 {
                    return Err(Error::Unsupported {
                        object: self.name(i),
                        what: "a device object other than a 4 KiB frame",
                    });
                }
                self.device_frame(i, o.paddr.get())?;
                continue;
            }
            let bp = blueprint(o, kind).ok_or(Error::Unsupported {
                object: self.name(i),
                what: "this object size",
            })?;
            if o.untyped.get() != NONE {
                let parent = children[o.untyped.get() as usize]
                    .as_mut()
                    .ok_or(Error::Malformed("untyped parent"))?;
                let bits = bp.physical_size_bits();
                if !parent.reserve(bits) {
                    return Err(Error::OutOfUntyped {
                        object: self.name(i),
                        size_bits: bits,
                    });
                }
                let ut = parent.cap;
                untyped::retype::<Untyped>(ut, bp, self.base + i as u64)
                    .step("Untyped_Retype", self.name(i))?;
            } else {
                rest.push((bp.physical_size_bits(), i));
            }
        }
        rest.sort_by_key(|&(bits, i)| (core::cmp::Reverse(bits), i));
        for (bits, i) in rest {
            let bp = blueprint(&objects[i as usize], self.kind(i))
                .ok_or(Error::Malformed("object kind"))?;
            let from = self.pool.take(bits).ok_or(Error::OutOfUntyped {
                object: self.name(i),
                size_bits: bits,
            })?;
            untyped::retype::<Untyped>(from, bp, self.base + i as u64)
                .step("Untyped_Retype", self.name(i))?;
        }
        Ok(())
    }

    /// A 4 KiB frame at physical address `paddr` (device registers, e.g. the HPET's)
    /// into object `i`'s slot: the device untyped that covers it is split in halves,
    /// keeping the half that holds `paddr`, down to one page (each split is one
    /// `Untyped_Retype` into two untypeds, which the kernel places in address order),
    /// and that page is retyped into the frame. The other halves stay available for
    /// further device frames.
    fn device_frame(&mut self, i: u32, paddr: u64) -> Result<(), Error> {
        let name = self.name(i);
        let Some(mut region) = self.devices.take_containing(paddr) else {
            return Err(Error::NoDeviceMemory {
                object: name,
                paddr,
            });
        };
        while region.size_bits > 12 {
            let half = region.size_bits - 1;
            let slot = self.new_slot()?;
            let _second = self.new_slot()?; // the kernel fills slot and slot + 1
            let root = init_thread::slot(init_thread::CNODE.bits());
            region
                .cap
                .untyped_retype(
                    ObjectBlueprint::Untyped { size_bits: half },
                    &root,
                    slot as usize,
                    2,
                )
                .step("Untyped_Retype of device memory", name)?;
            let low = DeviceRegion {
                cap: Cap::from_bits(slot),
                paddr: region.paddr,
                size_bits: half,
            };
            let high = DeviceRegion {
                cap: Cap::from_bits(slot + 1),
                paddr: region.paddr + (1 << half),
                size_bits: half,
            };
            let (keep, spare) = if paddr < high.paddr {
                (low, high)
            } else {
                (high, low)
            };
            self.devices.give(spare);
            region = keep;
        }
        untyped::retype::<Untyped>(region.cap, ObjectBlueprint::Granule, self.base + i as u64)
            .step("Untyped_Retype of a device frame", name)?;
        Ok(())
    }
}
