//! Step 5: what a PD finds in memory at start: its ELF's PT_LOAD segments in its
//! image frames, and its boot parameters.

use super::{Builder, FrameMap};
use crate::error::{Error, Step};
use alloc::vec::Vec;
use capdl_spec::boot::{self, BootParams};
use capdl_spec::layout::{IMAGE_MAX, IMAGE_VADDR, PAGE_SIZE};
use capdl_spec::{slot, ObjectKind, PdKind};
use pd_image::{Image, ImageError};
use sel4::cap_type::Granule;
use zerocopy::little_endian::{U16, U32, U64};

impl Builder {
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

    fn image(&self, pd: &'static str, elf: &'static str) -> Result<&'static [u8], Error> {
        self.images
            .iter()
            .find(|(n, _)| *n == elf)
            .map(|(_, b)| *b)
            .ok_or(Error::MissingImage { pd, elf })
    }

    /// Step 5 for one PD: its ELF segments; returns the entry point.
    ///
    /// `fresh`: the image frames are as `Untyped_Retype` made them (zero), so only the
    /// pages with file bytes are written; otherwise (a restart) every page is zeroed
    /// first, which also resets .bss and the rest of the image region.
    pub(super) fn load_image(
        &mut self,
        pd: &'static str,
        vspace: u32,
        elf_name: &'static str,
        fresh: bool,
    ) -> Result<u64, Error> {
        let bytes = self.image(pd, elf_name)?;
        let frames: Vec<FrameMap> = self
            .maps
            .iter()
            .filter(|m| {
                m.vspace == vspace && (IMAGE_VADDR..IMAGE_VADDR + IMAGE_MAX).contains(&m.vaddr)
            })
            .copied()
            .collect();
        let image = Image::new(bytes, IMAGE_VADDR, frames.len() as u64 * PAGE_SIZE).map_err(
            |e| match e {
                ImageError::Elf(err) => Error::BadElf { elf: elf_name, err },
                ImageError::OutsideRegion {
                    vaddr,
                    end,
                    region_end,
                } => Error::SegmentOutsideImage {
                    elf: elf_name,
                    vaddr,
                    end,
                    image_end: region_end,
                },
                ImageError::TooManySegments => Error::BadElf {
                    elf: elf_name,
                    err: pd_image::ElfError::BadSegment,
                },
            },
        )?;
        for m in frames {
            if fresh && !image.has_file_bytes(m.vaddr) {
                continue;
            }
            self.with_scratch(m.frame, |dst| {
                if !fresh {
                    dst.fill(0);
                }
                image.fill_page(m.vaddr, dst);
            })?;
        }
        Ok(image.entry())
    }

    /// Step 5: the boot parameters of PD `index`.
    pub(super) fn boot_params(&self, index: usize) -> Result<BootParams, Error> {
        let spec = self.spec;
        let pd = &spec.pds()[index];
        let kind = spec.pd_kind(pd);
        let h = spec.header();
        let mut p = BootParams::new(index as u32, kind);
        p.nx_mode = h.nx_mode;
        p.timer_kind = h.timer_kind;
        p.nx_recovery_ratio = h.nx_recovery_ratio;
        p.nx_recovery_period_ms = h.nx_recovery_period_ms;
        p.tsc_mhz = U32::new(self.tsc_mhz);
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
                let record = &spec.vms()[vm];
                p.set_cmdline(spec.str(record.cmdline));
                p.set_names(spec.str(record.name), spec.str(record.image));
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
                // And their IRQ handler in slot 4 (`slot::uart::IRQ`, `slot::timer::IRQ`).
                let irq = spec.caps_of(pd.cnode.get()).find(|c| {
                    c.slot.get() == slot::uart::IRQ
                        && spec.object_kind(&spec.objects()[c.target.get() as usize])
                            == ObjectKind::Irq
                });
                if let Some(c) = irq {
                    let o = &spec.objects()[c.target.get() as usize];
                    p.irq = u8::try_from(o.arg0.get()).unwrap_or(boot::NO_IRQ);
                }
            }
        }
        Ok(p)
    }
}
