//! Instantiating the capDL spec from the boot info's untyped memory, in steps:
//!
//! 1. objects: the spec's untypeds first (largest first), then the objects carved out
//!    of them in table order (so the page-table pool and each VM's RAM are physically
//!    contiguous), then every other object, largest first, from the boot untypeds;
//!    I/O-port ranges are minted from the global I/O-port capability (seL4 5.0.0 has no
//!    IOPortControl: a range-restricted copy), IRQ handlers come from IRQControl. Object
//!    i's capability lives in root slot `base + i`;
//! 2. an ASID for every VSpace;
//! 3. CSpaces: each capability a CNode holds, minted with its rights and badge (or, for
//!    a CNode target, its guard); an IRQ's notification;
//! 4. VSpaces: the paging structures level by level (PML4 -> PDPT -> PD -> PT), each
//!    frame mapped through its own copy of the frame capability (one capability maps
//!    one place);
//! 5. contents: the PT_LOAD segments of each PD's ELF copied into its image frames,
//!    and its boot-parameter frame filled, through a scratch mapping in the root task;
//! 6. TCBs: CSpace root with its guard, VSpace, IPC buffer, priority, fault endpoint,
//!    bound notification, rip = ELF entry, rsp = the spec's stack top;
//!
//! and the caller resumes the threads.

mod cspace;
mod load;
mod objects;
mod threads;
mod vspace;

use crate::error::{Error, ObjName};
use crate::untyped::{Devices, Pool, Slots};
use alloc::vec;
use alloc::vec::Vec;
use capdl_spec::{slot, ObjectKind, SpecView, NONE};
use sel4::cap_type::*;
use sel4::Cap;

pub use threads::Pd;

/// A frame mapped into a PD.
#[derive(Clone, Copy, Debug)]
pub struct FrameMap {
    pub vspace: u32,
    pub vaddr: u64,
    pub frame: u32,
}

/// What instantiation leaves to the supervisor.
pub struct Running {
    /// Kept for restarts: it knows every PD's frames and image.
    pub builder: Builder,
    pub pds: Vec<Pd>,
    pub fault_ep: Cap<Endpoint>,
    pub objects: usize,
    pub caps: usize,
    pub mappings: usize,
    pub bytes: u64,
}

pub struct Builder {
    spec: SpecView<'static>,
    images: &'static [(&'static str, &'static [u8])],
    /// Root slot of object 0.
    base: u64,
    slots: Slots,
    pool: Pool,
    /// Device memory, for frames at fixed physical addresses.
    devices: Devices,
    /// Per object: its address in its VSpace (paging structures and frames) and the
    /// VSpace (PML4 object) it belongs to.
    vaddr: Vec<u64>,
    vroot: Vec<u32>,
    maps: Vec<FrameMap>,
    /// The root slot for the frame copy mapped at SCRATCH.
    scratch_slot: u64,
    /// The TSC frequency the kernel measured (boot info), for the boot parameters.
    tsc_mhz: u32,
}

impl Builder {
    pub fn new(
        spec: SpecView<'static>,
        images: &'static [(&'static str, &'static [u8])],
        bi: &sel4::BootInfo,
    ) -> Result<Builder, Error> {
        let mut slots = Slots::new(bi);
        let n = spec.objects().len() as u64;
        // Objects, one copy per frame mapping, and a few scratch slots.
        let needed = n + spec.caps().len() as u64 + 16;
        let free = slots.free();
        let base = slots.take(n).ok_or(Error::OutOfSlots { needed, free })?;
        if slots.free() < needed - n {
            return Err(Error::OutOfSlots { needed, free });
        }
        let scratch_slot = slots.take(1).ok_or(Error::OutOfSlots { needed, free })?;
        Ok(Builder {
            spec,
            images,
            base,
            slots,
            pool: Pool::from_bootinfo(bi),
            devices: Devices::from_bootinfo(bi),
            vaddr: vec![0; n as usize],
            vroot: vec![NONE; n as usize],
            maps: Vec::new(),
            scratch_slot,
            tsc_mhz: u32::try_from(bi.arch_info).unwrap_or(0),
        })
    }

    fn name(&self, i: u32) -> ObjName {
        let o = &self.spec.objects()[i as usize];
        ObjName {
            name: self.spec.str(o.name),
            index: (o.index.get() != NONE).then_some(o.index.get()),
        }
    }

    fn cap<T: sel4::CapType>(&self, object: u32) -> Cap<T> {
        Cap::from_bits(self.base + object as u64)
    }

    fn kind(&self, object: u32) -> ObjectKind {
        self.spec.object_kind(&self.spec.objects()[object as usize])
    }

    fn new_slot(&mut self) -> Result<u64, Error> {
        let free = self.slots.free();
        self.slots.take(1).ok_or(Error::OutOfSlots {
            needed: free + 1,
            free,
        })
    }

    /// The supervisor's fault endpoint: what every PD's CSpace holds in slot
    /// `common::FAULT_EP`.
    pub fn fault_ep(&self) -> Result<Cap<Endpoint>, Error> {
        let spec = self.spec;
        let pd = spec
            .pds()
            .first()
            .ok_or(Error::Malformed("protection domain"))?;
        spec.caps_of(pd.cnode.get())
            .find(|c| c.slot.get() == slot::common::FAULT_EP)
            .map(|c| self.cap(c.target.get()))
            .ok_or(Error::Malformed("fault endpoint"))
    }

    pub fn summary(&self) -> (usize, usize, usize, u64) {
        (
            self.spec.objects().len(),
            self.spec.caps().len(),
            self.maps.len(),
            self.pool.bytes_used,
        )
    }
}

/// Runs every step; returns what the supervisor needs.
pub fn instantiate(
    spec: SpecView<'static>,
    images: &'static [(&'static str, &'static [u8])],
    bi: &sel4::BootInfo,
) -> Result<Running, Error> {
    let mut b = Builder::new(spec, images, bi)?;
    b.create_objects()?;
    b.fill_cspaces()?;
    b.map_vspaces()?;
    b.prepare_scratch()?;
    let pds = b.prepare_pds()?;
    let fault_ep = b.fault_ep()?;
    let (objects, caps, mappings, bytes) = b.summary();
    Ok(Running {
        builder: b,
        pds,
        fault_ep,
        objects,
        caps,
        mappings,
        bytes,
    })
}
