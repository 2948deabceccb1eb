//! Step 4: the paging structures and frame mappings of every VSpace; and the root
//! task's own scratch mapping through which it writes into PD frames.

use super::cspace::cap_rights;
use super::{Builder, FrameMap};
use crate::error::{Error, ObjName, Step};
use crate::untyped;
use capdl_spec::layout::PAGE_SIZE;
use capdl_spec::{ObjectKind, NONE};
use sel4::cap_type::*;
use sel4::{init_thread, Cap, CapRights, ObjectBlueprint, VmAttributes};

/// Where the root task maps a PD's frame to write into it: PML4 slot 1, above
/// anything the kernel mapped for the root task (its image, boot info, IPC buffer).
const SCRATCH: u64 = 0x80_0000_0000;

impl Builder {
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
    pub(super) fn with_scratch(
        &mut self,
        frame: u32,
        f: impl FnOnce(&mut [u8]),
    ) -> Result<(), Error> {
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
}
