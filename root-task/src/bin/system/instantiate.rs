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

use crate::elf::Elf;
use crate::error::{Error, ObjName, Step};
use crate::untyped::{self, Pool, Region, Slots};
use alloc::vec;
use alloc::vec::Vec;
use capdl_spec::boot::{self, BootParams};
use capdl_spec::layout::{BOOT_PARAMS_VADDR, IMAGE_MAX, IMAGE_VADDR, PAGE_SIZE};
use capdl_spec::{
    rights, slot, tcb_slot, CapRecord, ObjectKind, ObjectRecord, PdKind, SpecView, NONE,
};
use sel4::cap_type::*;
use sel4::{init_thread, Cap, CapRights, ObjectBlueprint, PrioProps, UserContext, VmAttributes};
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// Where the root task maps a PD's frame to write into it: PML4 slot 1, above
/// anything the kernel mapped for the root task (its image, boot info, IPC buffer).
const SCRATCH: u64 = 0x80_0000_0000;

/// A frame mapped into a PD.
#[derive(Clone, Copy, Debug)]
pub struct FrameMap {
    pub vspace: u32,
    pub vaddr: u64,
    pub frame: u32,
}

/// A started (or about to be started) protection domain.
#[derive(Clone, Copy, Debug)]
pub struct Pd {
    pub name: &'static str,
    pub elf: &'static str,
    pub tcb: Cap<Tcb>,
    pub entry: u64,
}

/// What instantiation leaves to the supervisor.
pub struct Running {
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
    /// Per object: its address in its VSpace (paging structures and frames) and the
    /// VSpace (PML4 object) it belongs to.
    vaddr: Vec<u64>,
    vroot: Vec<u32>,
    maps: Vec<FrameMap>,
    /// The root slot for the frame copy mapped at SCRATCH.
    scratch_slot: u64,
}

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

/// The capability rights of a record (capDL R, W, G).
fn cap_rights(r: u8) -> CapRights {
    CapRights::new(
        r & rights::GRANT != 0,
        r & rights::READ != 0,
        r & rights::WRITE != 0,
    )
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
            vaddr: vec![0; n as usize],
            vroot: vec![NONE; n as usize],
            maps: Vec::new(),
            scratch_slot,
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
                return Err(Error::Unsupported {
                    object: self.name(i),
                    what: "a device frame at a fixed physical address (HPET)",
                });
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

    /// Steps 2 and 3.
    pub fn fill_cspaces(&mut self) -> Result<(), Error> {
        let spec = self.spec;
        for pd in spec.pds() {
            let vspace = pd.vspace.get();
            init_thread::ASID_POOL
                .asid_pool_assign(self.cap(vspace))
                .step("ASIDPool_Assign", self.name(vspace))?;
        }
        for c in spec.caps() {
            match self.kind(c.holder.get()) {
                ObjectKind::CNode => self.cnode_cap(c)?,
                ObjectKind::Irq => {
                    let handler: Cap<IrqHandler> = self.cap(c.holder.get());
                    handler
                        .irq_handler_set_notification(self.cap(c.target.get()))
                        .step("IRQHandler_SetNotification", self.name(c.holder.get()))?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn cnode_cap(&mut self, c: &CapRecord) -> Result<(), Error> {
        let target = c.target.get();
        let cnode: Cap<CNode> = self.cap(c.holder.get());
        let dst = sel4::AbsoluteCPtr::new(cnode, c.slot.get(), slot::CNODE_SIZE_BITS);
        let src = init_thread::slot(self.base + target as u64);
        let kind = self.kind(target);
        let r = match kind {
            ObjectKind::Endpoint | ObjectKind::Notification => {
                let badge = sel4_sys::cap_data::badge(c.badge.get()).ok_or(Error::Unsupported {
                    object: self.name(target),
                    what: "a badge wider than 28 bits",
                })?;
                dst.mint(&src, cap_rights(c.rights), badge)
            }
            ObjectKind::CNode => {
                let guard = sel4_sys::cap_data::guard(c.guard.get() as u64, c.guard_size as u32)
                    .ok_or(Error::Unsupported {
                        object: self.name(target),
                        what: "this CNode guard",
                    })?;
                dst.mint(&src, CapRights::ALL, guard)
            }
            ObjectKind::Frame => dst.copy(&src, cap_rights(c.rights)),
            // I/O ports, IRQ handlers, TCBs...: rights do not restrict them.
            _ => dst.copy(&src, CapRights::ALL),
        };
        r.step("CNode_Mint into a PD's CSpace", self.name(target))
    }

    /// Step 4.
    pub fn map_vspaces(&mut self) -> Result<(), Error> {
        let spec = self.spec;
        for pd in spec.pds() {
            let v = pd.vspace.get();
            self.vroot[v as usize] = v;
        }
        // Level by level, so that a table's address and VSpace are known before the
        // entries it holds are mapped.
        for (level, shift) in [
            (ObjectKind::Pml4, 39),
            (ObjectKind::Pdpt, 30),
            (ObjectKind::Pd, 21),
            (ObjectKind::Pt, 12),
        ] {
            for c in spec.caps() {
                let holder = c.holder.get();
                if self.kind(holder) != level {
                    continue;
                }
                let target = c.target.get();
                let vspace = self.vroot[holder as usize];
                if vspace == NONE {
                    return Err(Error::Malformed(
                        "paging structure reachable from a PD's VSpace",
                    ));
                }
                let vaddr = self.vaddr[holder as usize] + (c.slot.get() << shift);
                self.vaddr[target as usize] = vaddr;
                self.vroot[target as usize] = vspace;
                let vs: Cap<VSpace> = self.cap(vspace);
                let attr = VmAttributes::WriteBack;
                let name = self.name(target);
                match self.kind(target) {
                    ObjectKind::Pdpt => self
                        .cap::<Pdpt>(target)
                        .pdpt_map(vs, vaddr, attr)
                        .step("PDPT_Map", name)?,
                    ObjectKind::Pd => self
                        .cap::<PageDirectory>(target)
                        .page_directory_map(vs, vaddr, attr)
                        .step("PageDirectory_Map", name)?,
                    ObjectKind::Pt => self
                        .cap::<PageTable>(target)
                        .page_table_map(vs, vaddr, attr)
                        .step("PageTable_Map", name)?,
                    ObjectKind::Frame => {
                        // A frame capability maps one place: map a copy.
                        let copy = self.new_slot()?;
                        init_thread::slot(copy)
                            .copy(
                                &init_thread::slot(self.base + target as u64),
                                CapRights::ALL,
                            )
                            .step("CNode_Copy of a frame", name)?;
                        let attr = if c.flags & capdl_spec::cap_flags::UNCACHED != 0 {
                            VmAttributes::CacheDisabled
                        } else {
                            VmAttributes::WriteBack
                        };
                        Cap::<Granule>::from_bits(copy)
                            .frame_map(vs, vaddr, cap_rights(c.rights), attr)
                            .step("Page_Map", name)?;
                        self.maps.push(FrameMap {
                            vspace,
                            vaddr,
                            frame: target,
                        });
                    }
                    _ => {
                        return Err(Error::Malformed(
                            "paging structure holding a non-paging object",
                        ))
                    }
                }
            }
        }
        Ok(())
    }

    /// The physical address of the first frame retyped from spec untyped `ut`.
    fn region_hpa(&self, ut: u32) -> Result<u64, Error> {
        let first = self
            .spec
            .objects()
            .iter()
            .position(|o| o.untyped.get() == ut && o.kind == ObjectKind::Frame as u8)
            .ok_or(Error::Malformed("frame in a memory region"))? as u32;
        self.cap::<Granule>(first)
            .frame_get_address()
            .step("Page_GetAddress", self.name(first))
    }

    /// Paging structures for SCRATCH in the root task's own VSpace.
    pub fn prepare_scratch(&mut self) -> Result<(), Error> {
        let what = ObjName {
            name: "root task scratch mapping",
            index: None,
        };
        let vs = init_thread::VSPACE;
        let attr = VmAttributes::WriteBack;
        for bp in [
            ObjectBlueprint::Pdpt,
            ObjectBlueprint::PageDirectory,
            ObjectBlueprint::PageTable,
        ] {
            let bits = bp.physical_size_bits();
            let ut = self.pool.take(bits).ok_or(Error::OutOfUntyped {
                object: what,
                size_bits: bits,
            })?;
            let slot = self.new_slot()?;
            untyped::retype::<Untyped>(ut, bp, slot).step("Untyped_Retype", what)?;
            let r = match bp {
                ObjectBlueprint::Pdpt => Cap::<Pdpt>::from_bits(slot).pdpt_map(vs, SCRATCH, attr),
                ObjectBlueprint::PageDirectory => {
                    Cap::<PageDirectory>::from_bits(slot).page_directory_map(vs, SCRATCH, attr)
                }
                _ => Cap::<PageTable>::from_bits(slot).page_table_map(vs, SCRATCH, attr),
            };
            match r {
                // A level the kernel already created for the root task is fine.
                Ok(()) | Err(sel4::Error::DeleteFirst) => {}
                Err(err) => {
                    return Err(Error::Kernel {
                        step: "mapping a paging structure",
                        object: what,
                        err,
                    })
                }
            }
        }
        Ok(())
    }

    /// Maps 4K frame `frame` at SCRATCH in the root task, runs `f` on its bytes, and
    /// unmaps it again.
    fn with_scratch(&mut self, frame: u32, f: impl FnOnce(&mut [u8])) -> Result<(), Error> {
        let copy = self.scratch_slot;
        let name = self.name(frame);
        init_thread::slot(copy)
            .copy(&init_thread::slot(self.base + frame as u64), CapRights::ALL)
            .step("CNode_Copy of a frame", name)?;
        let page: Cap<Granule> = Cap::from_bits(copy);
        page.frame_map(
            init_thread::VSPACE,
            SCRATCH,
            CapRights::READ_WRITE,
            VmAttributes::WriteBack,
        )
        .step("Page_Map into the root task", name)?;
        // SAFETY: the frame is mapped read-write at SCRATCH, 4 KiB, and nothing else
        // refers to that address until it is unmapped below.
        let bytes =
            unsafe { core::slice::from_raw_parts_mut(SCRATCH as *mut u8, PAGE_SIZE as usize) };
        f(bytes);
        page.frame_unmap().step("Page_Unmap", name)?;
        init_thread::slot(copy)
            .delete()
            .step("CNode_Delete", name)?;
        Ok(())
    }

    fn image(&self, pd: &'static str, elf: &'static str) -> Result<&'static [u8], Error> {
        self.images
            .iter()
            .find(|(n, _)| *n == elf)
            .map(|(_, b)| *b)
            .ok_or(Error::MissingImage { pd, elf })
    }

    /// Step 5 for one PD: its ELF segments; returns the entry point.
    fn load_image(
        &mut self,
        pd: &'static str,
        vspace: u32,
        elf_name: &'static str,
    ) -> Result<u64, Error> {
        let bytes = self.image(pd, elf_name)?;
        let elf = Elf::parse(bytes).map_err(|err| Error::BadElf { elf: elf_name, err })?;
        let frames: Vec<FrameMap> = self
            .maps
            .iter()
            .filter(|m| {
                m.vspace == vspace && (IMAGE_VADDR..IMAGE_VADDR + IMAGE_MAX).contains(&m.vaddr)
            })
            .copied()
            .collect();
        let image_end = IMAGE_VADDR + frames.len() as u64 * PAGE_SIZE;
        let mut segments = Vec::new();
        for s in elf.segments() {
            let s = s.map_err(|err| Error::BadElf { elf: elf_name, err })?;
            if s.memsz == 0 {
                continue;
            }
            let end = s.vaddr + s.memsz;
            if s.vaddr < IMAGE_VADDR || end > image_end {
                return Err(Error::SegmentOutsideImage {
                    elf: elf_name,
                    vaddr: s.vaddr,
                    end,
                    image_end,
                });
            }
            segments.push(s);
        }
        for m in frames {
            let page = m.vaddr..m.vaddr + PAGE_SIZE;
            // Frames come zeroed from Untyped_Retype: copy only the file bytes.
            let any = segments
                .iter()
                .any(|s| s.filesz > 0 && s.vaddr < page.end && s.vaddr + s.filesz > page.start);
            if !any {
                continue;
            }
            self.with_scratch(m.frame, |dst| {
                for s in &segments {
                    let lo = s.vaddr.max(page.start);
                    let hi = (s.vaddr + s.filesz).min(page.end);
                    if lo >= hi {
                        continue;
                    }
                    let src = (s.offset + (lo - s.vaddr)) as usize;
                    let n = (hi - lo) as usize;
                    let at = (lo - page.start) as usize;
                    dst[at..at + n].copy_from_slice(&bytes[src..src + n]);
                }
            })?;
        }
        Ok(elf.entry)
    }

    /// Step 5: the boot parameters of PD `index`.
    fn boot_params(&self, index: usize) -> Result<BootParams, Error> {
        let spec = self.spec;
        let pd = &spec.pds()[index];
        let kind = spec.pd_kind(pd);
        let h = spec.header();
        let mut p = BootParams::new(index as u32, kind);
        p.nx_mode = h.nx_mode;
        p.timer_kind = h.timer_kind;
        p.nx_recovery_ratio = h.nx_recovery_ratio;
        p.nx_recovery_period_ms = h.nx_recovery_period_ms;
        if matches!(kind, PdKind::MmuServer | PdKind::VmmServer) {
            if let Some(pool) = spec
                .objects()
                .iter()
                .position(|o| spec.str(o.name) == "pool_ut")
            {
                p.pool = boot::Region {
                    hpa: U64::new(self.region_hpa(pool as u32)?),
                    bytes: h.frame_pool_bytes,
                };
            }
        }
        let add_vm = |p: &mut BootParams, vm_index: usize| -> Result<(), Error> {
            let vm = &spec.vms()[vm_index];
            let n = p.vm_count.get() as usize;
            let slot = p
                .vms
                .get_mut(n)
                .ok_or(Error::Malformed("room for every VM"))?;
            slot.id = U16::new(vm.id.get());
            slot.mmu = vm.mmu;
            slot.flags = vm.flags;
            slot.ram = boot::Region {
                hpa: U64::new(self.region_hpa(vm.ram_untyped.get())?),
                bytes: vm.memory_bytes,
            };
            p.vm_count = U32::new(n as u32 + 1);
            Ok(())
        };
        match kind {
            PdKind::MmuServer => {
                for i in 0..spec.vms().len() {
                    add_vm(&mut p, i)?;
                }
            }
            PdKind::VmmServer => {
                let vm = pd.vm.get() as usize;
                add_vm(&mut p, vm)?;
                p.vm_index = U32::new(0);
                p.set_cmdline(spec.str(spec.vms()[vm].cmdline));
            }
            PdKind::UartDriver | PdKind::TimerDriver => {
                // Both drivers hold their I/O ports in slot 3 (`slot::uart::PORTS`,
                // `slot::timer::PORTS`).
                let ports = spec.caps_of(pd.cnode.get()).find(|c| {
                    c.slot.get() == slot::uart::PORTS
                        && spec.object_kind(&spec.objects()[c.target.get() as usize])
                            == ObjectKind::IoPorts
                });
                if let Some(c) = ports {
                    let o = &spec.objects()[c.target.get() as usize];
                    p.ports_first = U16::new(o.arg0.get() as u16);
                    p.ports_last = U16::new(o.arg1.get() as u16);
                }
            }
        }
        Ok(p)
    }

    /// Steps 5 and 6: loads, fills and configures every PD (not yet resumed).
    pub fn prepare_pds(&mut self) -> Result<Vec<Pd>, Error> {
        let spec = self.spec;
        let mut out = Vec::new();
        for (index, pd) in spec.pds().iter().enumerate() {
            let name = spec.str(pd.name);
            let tcb_obj = pd.tcb.get();
            let t = spec
                .tcb(&spec.objects()[tcb_obj as usize])
                .ok_or(Error::Malformed("TCB record"))?;
            let elf = spec.str(t.elf);
            let entry = self.load_image(name, pd.vspace.get(), elf)?;
            let params = self.boot_params(index)?;
            self.with_scratch(pd.boot_params.get(), |dst| {
                let b = params.as_bytes();
                dst[..b.len()].copy_from_slice(b);
            })?;
            // The boot-parameter frame is mapped in the PD at BOOT_PARAMS_VADDR: check.
            if !self
                .maps
                .iter()
                .any(|m| m.frame == pd.boot_params.get() && m.vaddr == BOOT_PARAMS_VADDR)
            {
                return Err(Error::Malformed("boot-parameter mapping"));
            }

            let tcb: Cap<Tcb> = self.cap(tcb_obj);
            let tname = self.name(tcb_obj);
            let (mut cspace, mut guard, mut ipc, mut bound) = (None, 0, None, None);
            for c in spec.caps_of(tcb_obj) {
                match c.slot.get() {
                    tcb_slot::CSPACE => {
                        cspace = Some(c.target.get());
                        guard =
                            sel4_sys::cap_data::guard(c.guard.get() as u64, c.guard_size as u32)
                                .ok_or(Error::Unsupported {
                                    object: tname,
                                    what: "this CSpace guard",
                                })?;
                    }
                    tcb_slot::IPC_BUFFER => ipc = Some(c.target.get()),
                    tcb_slot::BOUND_NOTIFICATION => bound = Some(c.target.get()),
                    _ => {}
                }
            }
            let cspace = cspace.ok_or(Error::Malformed("TCB CSpace"))?;
            let ipc = ipc.ok_or(Error::Malformed("TCB IPC buffer"))?;
            tcb.tcb_configure(
                t.fault_ep.get(),
                PrioProps::new(t.max_prio, t.prio),
                self.cap(cspace),
                guard,
                self.cap(pd.vspace.get()),
                0,
                t.ipc_buffer_vaddr.get(),
                self.cap(ipc),
            )
            .step("TCB_Configure", tname)?;
            if let Some(n) = bound {
                tcb.tcb_bind_notification(self.cap(n))
                    .step("TCB_BindNotification", tname)?;
            }
            let regs = UserContext {
                rip: entry,
                rsp: t.sp.get(),
                ..Default::default()
            };
            tcb.tcb_write_registers(false, UserContext::WORDS, &regs)
                .step("TCB_WriteRegisters", tname)?;
            out.push(Pd {
                name,
                elf,
                tcb,
                entry,
            });
        }
        Ok(out)
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
        pds,
        fault_ep,
        objects,
        caps,
        mappings,
        bytes,
    })
}
