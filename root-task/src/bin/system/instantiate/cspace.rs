//! Steps 2 and 3: an ASID for every VSpace; the capabilities CNodes and IRQs hold.

use super::Builder;
use crate::error::{Error, Step};
use capdl_spec::{rights, slot, CapRecord, ObjectKind};
use sel4::cap_type::*;
use sel4::{init_thread, Cap, CapRights};

/// The capability rights of a record (capDL R, W, G).
pub(super) fn cap_rights(r: u8) -> CapRights {
    CapRights::new(
        r & rights::GRANT != 0,
        r & rights::READ != 0,
        r & rights::WRITE != 0,
    )
}

impl Builder {
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
}
