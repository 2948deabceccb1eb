//! One method per kernel invocation, on the capability it is invoked on.

use crate::cap::cap_type::*;
use crate::encode::{self, IoWidth};
use crate::invoke::invoke;
use crate::{AbsoluteCPtr, Cap, CapRights, ObjectBlueprint, Result, UserContext, VmAttributes};
use sel4_sys::{PrioProps, Word};

impl Cap<Untyped> {
    /// `seL4_Untyped_Retype`: makes `num_objects` objects of `blueprint` from this
    /// untyped, with their caps in consecutive slots from `dst_offset` of the CNode
    /// that `dst` names (`dst` resolves to the CNode itself, not a slot in it).
    pub fn untyped_retype(
        self,
        blueprint: ObjectBlueprint,
        dst: &AbsoluteCPtr,
        dst_offset: usize,
        num_objects: usize,
    ) -> Result<()> {
        invoke(
            self.bits(),
            &encode::untyped_retype(blueprint, dst, dst_offset as Word, num_objects as Word),
        )
        .map(drop)
    }
}

impl AbsoluteCPtr {
    /// `seL4_CNode_Copy`: copies the cap at `src` into this (empty) slot with at most
    /// `rights`.
    pub fn copy(&self, src: &AbsoluteCPtr, rights: CapRights) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_copy(self, src, rights)).map(drop)
    }
    /// `seL4_CNode_Mint`: like `copy`, also setting the cap's data word (a badge, a
    /// CNode guard, an I/O-port range: see `sel4_sys::cap_data`).
    pub fn mint(&self, src: &AbsoluteCPtr, rights: CapRights, data: Word) -> Result<()> {
        invoke(
            self.root().bits(),
            &encode::cnode_mint(self, src, rights, data),
        )
        .map(drop)
    }
    /// `seL4_CNode_Move`: moves the cap at `src` into this (empty) slot.
    pub fn move_(&self, src: &AbsoluteCPtr) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_move(self, src)).map(drop)
    }
    /// `seL4_CNode_Mutate`: moves the cap at `src` here, setting its data word.
    pub fn mutate(&self, src: &AbsoluteCPtr, data: Word) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_mutate(self, src, data)).map(drop)
    }
    /// `seL4_CNode_Delete`: empties this slot.
    pub fn delete(&self) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_delete(self)).map(drop)
    }
    /// `seL4_CNode_Revoke`: deletes every cap derived from the one in this slot.
    pub fn revoke(&self) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_revoke(self)).map(drop)
    }
    /// `seL4_CNode_SaveCaller`: moves this thread's reply cap into this slot.
    pub fn save_caller(&self) -> Result<()> {
        invoke(self.root().bits(), &encode::cnode_save_caller(self)).map(drop)
    }
}

impl Cap<Tcb> {
    /// `seL4_TCB_Configure`: sets the fault endpoint, priority and MCP, CSpace, VSpace
    /// and IPC buffer (at `ipc_buffer` in the VSpace, backed by `ipc_buffer_frame`).
    #[allow(clippy::too_many_arguments)]
    pub fn tcb_configure(
        self,
        fault_ep: Word,
        prio: PrioProps,
        cspace_root: Cap<CNode>,
        cspace_root_data: Word,
        vspace_root: Cap<VSpace>,
        vspace_root_data: Word,
        ipc_buffer: Word,
        ipc_buffer_frame: Cap<Granule>,
    ) -> Result<()> {
        let inv = encode::tcb_configure(
            fault_ep,
            prio,
            cspace_root.bits(),
            cspace_root_data,
            vspace_root.bits(),
            vspace_root_data,
            ipc_buffer,
            ipc_buffer_frame.bits(),
        );
        invoke(self.bits(), &inv).map(drop)
    }
    /// `seL4_TCB_WriteRegisters`: sets the first `count` registers of `regs` (in
    /// `UserContext` order), then resumes the thread if `resume`.
    pub fn tcb_write_registers(self, resume: bool, count: usize, regs: &UserContext) -> Result<()> {
        invoke(
            self.bits(),
            &encode::tcb_write_registers(resume, count, regs),
        )
        .map(drop)
    }
    /// `seL4_TCB_ReadRegisters`: the thread's whole register context, suspending it
    /// first if `suspend`. The first four words come back in registers, the rest in
    /// this thread's IPC buffer.
    pub fn tcb_read_registers(self, suspend: bool) -> Result<UserContext> {
        let fast = invoke(
            self.bits(),
            &encode::tcb_read_registers(suspend, UserContext::WORDS),
        )?;
        let mut words = [0; UserContext::WORDS];
        for (i, w) in words.iter_mut().enumerate() {
            *w = match fast.get(i) {
                Some(v) => *v,
                None => sel4_sys::ipc_buffer::get_mr(i).unwrap_or(0),
            };
        }
        Ok(UserContext::from_words(&words))
    }
    /// `seL4_TCB_Resume`.
    pub fn tcb_resume(self) -> Result<()> {
        invoke(self.bits(), &encode::tcb_resume()).map(drop)
    }
    /// `seL4_TCB_Suspend`.
    pub fn tcb_suspend(self) -> Result<()> {
        invoke(self.bits(), &encode::tcb_suspend()).map(drop)
    }
    /// `seL4_TCB_SetPriority` (at most the invoker's MCP).
    pub fn tcb_set_priority(self, prio: u8) -> Result<()> {
        invoke(self.bits(), &encode::tcb_set_priority(prio)).map(drop)
    }
    /// `seL4_TCB_SetMCPriority`.
    pub fn tcb_set_mc_priority(self, mcp: u8) -> Result<()> {
        invoke(self.bits(), &encode::tcb_set_mc_priority(mcp)).map(drop)
    }
    /// `seL4_TCB_SetSpace`: fault endpoint, CSpace and VSpace.
    pub fn tcb_set_space(
        self,
        fault_ep: Word,
        cspace_root: Cap<CNode>,
        cspace_root_data: Word,
        vspace_root: Cap<VSpace>,
        vspace_root_data: Word,
    ) -> Result<()> {
        invoke(
            self.bits(),
            &encode::tcb_set_space(
                fault_ep,
                cspace_root.bits(),
                cspace_root_data,
                vspace_root.bits(),
                vspace_root_data,
            ),
        )
        .map(drop)
    }
    /// `seL4_TCB_SetIPCBuffer`.
    pub fn tcb_set_ipc_buffer(self, buffer: Word, frame: Cap<Granule>) -> Result<()> {
        invoke(
            self.bits(),
            &encode::tcb_set_ipc_buffer(buffer, frame.bits()),
        )
        .map(drop)
    }
    /// `seL4_TCB_BindNotification`: signals on `notification` also wake the thread's
    /// receive on an endpoint.
    pub fn tcb_bind_notification(self, notification: Cap<Notification>) -> Result<()> {
        invoke(
            self.bits(),
            &encode::tcb_bind_notification(notification.bits()),
        )
        .map(drop)
    }
}

impl Cap<Pdpt> {
    /// `seL4_X86_PDPT_Map`: installs this PDPT in `vspace` to cover `vaddr`.
    pub fn pdpt_map(self, vspace: Cap<VSpace>, vaddr: Word, attr: VmAttributes) -> Result<()> {
        invoke(self.bits(), &encode::pdpt_map(vspace.bits(), vaddr, attr)).map(drop)
    }
}

impl Cap<PageDirectory> {
    /// `seL4_X86_PageDirectory_Map`.
    pub fn page_directory_map(
        self,
        vspace: Cap<VSpace>,
        vaddr: Word,
        attr: VmAttributes,
    ) -> Result<()> {
        invoke(
            self.bits(),
            &encode::page_directory_map(vspace.bits(), vaddr, attr),
        )
        .map(drop)
    }
}

impl Cap<PageTable> {
    /// `seL4_X86_PageTable_Map`.
    pub fn page_table_map(
        self,
        vspace: Cap<VSpace>,
        vaddr: Word,
        attr: VmAttributes,
    ) -> Result<()> {
        invoke(
            self.bits(),
            &encode::page_table_map(vspace.bits(), vaddr, attr),
        )
        .map(drop)
    }
}

macro_rules! frame_methods {
    ($($t:ty),*) => {$(
        impl Cap<$t> {
            /// `seL4_X86_Page_Map`: maps this frame at `vaddr` of `vspace` (the paging
            /// structures above it must be mapped already: else `FailedLookup`).
            pub fn frame_map(self, vspace: Cap<VSpace>, vaddr: Word, rights: CapRights, attr: VmAttributes) -> Result<()> {
                invoke(self.bits(), &encode::page_map(vspace.bits(), vaddr, rights, attr)).map(drop)
            }
            /// `seL4_X86_Page_Unmap`.
            pub fn frame_unmap(self) -> Result<()> {
                invoke(self.bits(), &encode::page_unmap()).map(drop)
            }
            /// `seL4_X86_Page_GetAddress`: the frame's physical address.
            pub fn frame_get_address(self) -> Result<Word> {
                invoke(self.bits(), &encode::page_get_address()).map(|m| m[0])
            }
        }
    )*};
}
frame_methods!(Granule, LargePage, HugePage);

impl Cap<AsidControl> {
    /// `seL4_X86_ASIDControl_MakePool`: turns a 4 KiB untyped into an ASID pool at `dst`.
    pub fn asid_control_make_pool(self, untyped: Cap<Untyped>, dst: &AbsoluteCPtr) -> Result<()> {
        invoke(
            self.bits(),
            &encode::asid_control_make_pool(untyped.bits(), dst),
        )
        .map(drop)
    }
}

impl Cap<AsidPool> {
    /// `seL4_X86_ASIDPool_Assign`: gives `vspace` an ASID from this pool (a VSpace
    /// needs one before anything can be mapped in it).
    pub fn asid_pool_assign(self, vspace: Cap<VSpace>) -> Result<()> {
        invoke(self.bits(), &encode::asid_pool_assign(vspace.bits())).map(drop)
    }
}

impl Cap<IoPort> {
    /// `seL4_X86_IOPort_In8`.
    pub fn ioport_in8(self, port: u16) -> Result<u8> {
        invoke(self.bits(), &encode::io_port_in(IoWidth::Byte, port)).map(|m| m[0] as u8)
    }
    /// `seL4_X86_IOPort_In16`.
    pub fn ioport_in16(self, port: u16) -> Result<u16> {
        invoke(self.bits(), &encode::io_port_in(IoWidth::Word, port)).map(|m| m[0] as u16)
    }
    /// `seL4_X86_IOPort_In32`.
    pub fn ioport_in32(self, port: u16) -> Result<u32> {
        invoke(self.bits(), &encode::io_port_in(IoWidth::Dword, port)).map(|m| m[0] as u32)
    }
    /// `seL4_X86_IOPort_Out8`.
    pub fn ioport_out8(self, port: u16, value: u8) -> Result<()> {
        invoke(
            self.bits(),
            &encode::io_port_out(IoWidth::Byte, port, value as u32),
        )
        .map(drop)
    }
    /// `seL4_X86_IOPort_Out16`.
    pub fn ioport_out16(self, port: u16, value: u16) -> Result<()> {
        invoke(
            self.bits(),
            &encode::io_port_out(IoWidth::Word, port, value as u32),
        )
        .map(drop)
    }
    /// `seL4_X86_IOPort_Out32`.
    pub fn ioport_out32(self, port: u16, value: u32) -> Result<()> {
        invoke(
            self.bits(),
            &encode::io_port_out(IoWidth::Dword, port, value),
        )
        .map(drop)
    }
}

impl Cap<IrqControl> {
    /// `seL4_IRQControl_GetIOAPIC`: an IRQ handler cap at `dst` for `pin` of
    /// `ioapic`, delivered at `vector` (level-triggered if `level`, active-low if
    /// `polarity_low`).
    pub fn irq_control_get_ioapic(
        self,
        dst: &AbsoluteCPtr,
        ioapic: Word,
        pin: Word,
        level: bool,
        polarity_low: bool,
        vector: Word,
    ) -> Result<()> {
        invoke(
            self.bits(),
            &encode::irq_control_get_ioapic(dst, ioapic, pin, level, polarity_low, vector),
        )
        .map(drop)
    }
}

impl Cap<IrqHandler> {
    /// `seL4_IRQHandler_Ack`: the IRQ may fire again.
    pub fn irq_handler_ack(self) -> Result<()> {
        invoke(self.bits(), &encode::irq_handler_ack()).map(drop)
    }
    /// `seL4_IRQHandler_SetNotification`: the IRQ signals `notification`.
    pub fn irq_handler_set_notification(self, notification: Cap<Notification>) -> Result<()> {
        invoke(
            self.bits(),
            &encode::irq_handler_set_notification(notification.bits()),
        )
        .map(drop)
    }
    /// `seL4_IRQHandler_Clear`.
    pub fn irq_handler_clear(self) -> Result<()> {
        invoke(self.bits(), &encode::irq_handler_clear()).map(drop)
    }
}
