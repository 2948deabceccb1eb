//! Invocation encodings: label, message registers and extra caps of each kernel
//! invocation, following the marshalling of libsel4's `syscall_stub_gen.py`:
//! - capability parameters (CNode, CPtr and the typed cap parameters) travel as extra
//!   caps, in parameter order;
//! - every other input parameter is packed into message words in order, each aligned
//!   to its own size (so a `seL4_Uint8` after a word starts a new word, and a bool
//!   followed by a `seL4_Uint8` share one word at bits 0 and 8);
//! - output parameters come back in the reply's message registers, in order.
//!
//! These are pure functions so they can be tested on the host.

use crate::{AbsoluteCPtr, CapRights, ObjectBlueprint, UserContext, VmAttributes};
use sel4_sys::{CPtr, InvocationLabel as L, Word};

/// Longest encoding we produce: `TCB_WriteRegisters` with a full context (2 + 19).
pub const MAX_WORDS: usize = 2 + UserContext::WORDS;
const _: () = assert!(
    MAX_WORDS <= sel4_sys::MSG_MAX_LENGTH,
    "every encoding fits one message"
);

/// One kernel invocation, ready to be sent with `seL4_Call` to the invoked capability.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invocation {
    pub label: L,
    words: [Word; MAX_WORDS],
    len: usize,
    caps: [CPtr; sel4_sys::MSG_MAX_EXTRA_CAPS],
    ncaps: usize,
}

impl Invocation {
    fn new(label: L, words: &[Word], caps: &[CPtr]) -> Invocation {
        let mut inv = Invocation {
            label,
            words: [0; MAX_WORDS],
            len: words.len(),
            caps: [0; 3],
            ncaps: caps.len(),
        };
        // Callers in this module pass fixed-size slices that fit (checked by the tests).
        inv.words[..words.len()].copy_from_slice(words);
        inv.caps[..caps.len()].copy_from_slice(caps);
        inv
    }
    /// The message words (message registers 0..).
    pub fn words(&self) -> &[Word] {
        &self.words[..self.len]
    }
    /// The extra caps.
    pub fn caps(&self) -> &[CPtr] {
        &self.caps[..self.ncaps]
    }
}

/// `seL4_Untyped_Retype(service, type, size_bits, root, node_index, node_depth,
/// node_offset, num_objects)`.
pub fn untyped_retype(
    blueprint: ObjectBlueprint,
    dst: &AbsoluteCPtr,
    dst_offset: Word,
    num_objects: Word,
) -> Invocation {
    Invocation::new(
        L::UntypedRetype,
        &[
            blueprint.ty() as Word,
            blueprint.api_size_bits() as Word,
            dst.index(),
            dst.depth() as Word,
            dst_offset,
            num_objects,
        ],
        &[dst.root().bits()],
    )
}

/// `seL4_CNode_Copy(dest root, dest_index, dest_depth, src_root, src_index, src_depth,
/// rights)`; invoked on `dst.root()`.
pub fn cnode_copy(dst: &AbsoluteCPtr, src: &AbsoluteCPtr, rights: CapRights) -> Invocation {
    Invocation::new(
        L::CNodeCopy,
        &[
            dst.index(),
            dst.depth() as Word,
            src.index(),
            src.depth() as Word,
            rights.0,
        ],
        &[src.root().bits()],
    )
}

/// `seL4_CNode_Mint(..., rights, badge)`: a copy with fewer rights and the given data
/// word (a badge, a CNode guard, or an I/O-port range; see `sel4_sys::cap_data`).
pub fn cnode_mint(
    dst: &AbsoluteCPtr,
    src: &AbsoluteCPtr,
    rights: CapRights,
    data: Word,
) -> Invocation {
    Invocation::new(
        L::CNodeMint,
        &[
            dst.index(),
            dst.depth() as Word,
            src.index(),
            src.depth() as Word,
            rights.0,
            data,
        ],
        &[src.root().bits()],
    )
}

/// `seL4_CNode_Move(dest root, dest_index, dest_depth, src_root, src_index, src_depth)`.
pub fn cnode_move(dst: &AbsoluteCPtr, src: &AbsoluteCPtr) -> Invocation {
    Invocation::new(
        L::CNodeMove,
        &[
            dst.index(),
            dst.depth() as Word,
            src.index(),
            src.depth() as Word,
        ],
        &[src.root().bits()],
    )
}

/// `seL4_CNode_Mutate(..., badge)`: a move that also sets the data word.
pub fn cnode_mutate(dst: &AbsoluteCPtr, src: &AbsoluteCPtr, data: Word) -> Invocation {
    Invocation::new(
        L::CNodeMutate,
        &[
            dst.index(),
            dst.depth() as Word,
            src.index(),
            src.depth() as Word,
            data,
        ],
        &[src.root().bits()],
    )
}

/// `seL4_CNode_Delete(root, index, depth)`.
pub fn cnode_delete(slot: &AbsoluteCPtr) -> Invocation {
    Invocation::new(L::CNodeDelete, &[slot.index(), slot.depth() as Word], &[])
}

/// `seL4_CNode_Revoke(root, index, depth)`.
pub fn cnode_revoke(slot: &AbsoluteCPtr) -> Invocation {
    Invocation::new(L::CNodeRevoke, &[slot.index(), slot.depth() as Word], &[])
}

/// `seL4_CNode_SaveCaller(root, index, depth)`: moves the reply capability into a slot.
pub fn cnode_save_caller(slot: &AbsoluteCPtr) -> Invocation {
    Invocation::new(
        L::CNodeSaveCaller,
        &[slot.index(), slot.depth() as Word],
        &[],
    )
}

/// `seL4_TCB_Configure(service, fault_ep, priority, cspace_root, cspace_root_data,
/// vspace_root, vspace_root_data, buffer, bufferFrame)`.
#[allow(clippy::too_many_arguments)]
pub fn tcb_configure(
    fault_ep: CPtr,
    prio: sel4_sys::PrioProps,
    cspace_root: CPtr,
    cspace_root_data: Word,
    vspace_root: CPtr,
    vspace_root_data: Word,
    ipc_buffer: Word,
    ipc_buffer_frame: CPtr,
) -> Invocation {
    Invocation::new(
        L::TCBConfigure,
        &[
            fault_ep,
            prio.0,
            cspace_root_data,
            vspace_root_data,
            ipc_buffer,
        ],
        &[cspace_root, vspace_root, ipc_buffer_frame],
    )
}

/// `seL4_TCB_WriteRegisters(service, resume_target, arch_flags, count, regs)`.
/// `count` is clamped to the context's 19 words.
pub fn tcb_write_registers(resume: bool, count: usize, regs: &UserContext) -> Invocation {
    let count = count.min(UserContext::WORDS);
    let mut words = [0; MAX_WORDS];
    // resume_target is bit 0, arch_flags (unused on x86) bits 8..15 of word 0.
    words[0] = resume as Word;
    words[1] = count as Word;
    words[2..2 + count].copy_from_slice(&regs.to_words()[..count]);
    Invocation::new(L::TCBWriteRegisters, &words[..2 + count], &[])
}

/// `seL4_TCB_ReadRegisters(service, suspend_source, arch_flags, count)`; the registers
/// come back in message registers 0..count.
pub fn tcb_read_registers(suspend: bool, count: usize) -> Invocation {
    Invocation::new(
        L::TCBReadRegisters,
        &[suspend as Word, count.min(UserContext::WORDS) as Word],
        &[],
    )
}

/// `seL4_TCB_SetPriority(service, priority)`.
pub fn tcb_set_priority(prio: u8) -> Invocation {
    Invocation::new(L::TCBSetPriority, &[prio as Word], &[])
}

/// `seL4_TCB_SetMCPriority(service, mcp)`.
pub fn tcb_set_mc_priority(mcp: u8) -> Invocation {
    Invocation::new(L::TCBSetMCPriority, &[mcp as Word], &[])
}

/// `seL4_TCB_SetSpace(service, fault_ep, cspace_root, cspace_root_data, vspace_root,
/// vspace_root_data)`.
pub fn tcb_set_space(
    fault_ep: CPtr,
    cspace_root: CPtr,
    cspace_root_data: Word,
    vspace_root: CPtr,
    vspace_root_data: Word,
) -> Invocation {
    Invocation::new(
        L::TCBSetSpace,
        &[fault_ep, cspace_root_data, vspace_root_data],
        &[cspace_root, vspace_root],
    )
}

/// `seL4_TCB_SetIPCBuffer(service, buffer, bufferFrame)`.
pub fn tcb_set_ipc_buffer(buffer: Word, frame: CPtr) -> Invocation {
    Invocation::new(L::TCBSetIPCBuffer, &[buffer], &[frame])
}

/// `seL4_TCB_Resume(service)`.
pub fn tcb_resume() -> Invocation {
    Invocation::new(L::TCBResume, &[], &[])
}

/// `seL4_TCB_Suspend(service)`.
pub fn tcb_suspend() -> Invocation {
    Invocation::new(L::TCBSuspend, &[], &[])
}

/// `seL4_TCB_BindNotification(service, notification)`.
pub fn tcb_bind_notification(notification: CPtr) -> Invocation {
    Invocation::new(L::TCBBindNotification, &[], &[notification])
}

/// `seL4_X86_PDPT_Map(service, pml4, vaddr, attr)`.
pub fn pdpt_map(vspace: CPtr, vaddr: Word, attr: VmAttributes) -> Invocation {
    Invocation::new(L::X86PDPTMap, &[vaddr, attr as Word], &[vspace])
}

/// `seL4_X86_PageDirectory_Map(service, vroot, vaddr, attr)`.
pub fn page_directory_map(vspace: CPtr, vaddr: Word, attr: VmAttributes) -> Invocation {
    Invocation::new(L::X86PageDirectoryMap, &[vaddr, attr as Word], &[vspace])
}

/// `seL4_X86_PageTable_Map(service, vroot, vaddr, attr)`.
pub fn page_table_map(vspace: CPtr, vaddr: Word, attr: VmAttributes) -> Invocation {
    Invocation::new(L::X86PageTableMap, &[vaddr, attr as Word], &[vspace])
}

/// `seL4_X86_Page_Map(service, vroot, vaddr, rights, attr)`.
pub fn page_map(vspace: CPtr, vaddr: Word, rights: CapRights, attr: VmAttributes) -> Invocation {
    Invocation::new(L::X86PageMap, &[vaddr, rights.0, attr as Word], &[vspace])
}

/// `seL4_X86_Page_Unmap(service)`.
pub fn page_unmap() -> Invocation {
    Invocation::new(L::X86PageUnmap, &[], &[])
}

/// `seL4_X86_Page_GetAddress(service)`; the physical address comes back in MR 0.
pub fn page_get_address() -> Invocation {
    Invocation::new(L::X86PageGetAddress, &[], &[])
}

/// `seL4_X86_ASIDControl_MakePool(service, untyped, root, index, depth)`.
pub fn asid_control_make_pool(untyped: CPtr, dst: &AbsoluteCPtr) -> Invocation {
    Invocation::new(
        L::X86ASIDControlMakePool,
        &[dst.index(), dst.depth() as Word],
        &[untyped, dst.root().bits()],
    )
}

/// `seL4_X86_ASIDPool_Assign(service, vroot)`.
pub fn asid_pool_assign(vspace: CPtr) -> Invocation {
    Invocation::new(L::X86ASIDPoolAssign, &[], &[vspace])
}

/// `seL4_X86_IOPort_In8/In16/In32(service, port)`; the value comes back in MR 0.
pub fn io_port_in(width: IoWidth, port: u16) -> Invocation {
    let label = match width {
        IoWidth::Byte => L::X86IOPortIn8,
        IoWidth::Word => L::X86IOPortIn16,
        IoWidth::Dword => L::X86IOPortIn32,
    };
    Invocation::new(label, &[port as Word], &[])
}

/// `seL4_X86_IOPort_Out8/Out16/Out32(service, port, data)`.
pub fn io_port_out(width: IoWidth, port: u16, data: u32) -> Invocation {
    let label = match width {
        IoWidth::Byte => L::X86IOPortOut8,
        IoWidth::Word => L::X86IOPortOut16,
        IoWidth::Dword => L::X86IOPortOut32,
    };
    Invocation::new(label, &[port as Word, data as Word], &[])
}

/// Width of an I/O-port access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoWidth {
    Byte,
    Word,
    Dword,
}

/// `seL4_IRQControl_GetIOAPIC(service, root, index, depth, ioapic, pin, level,
/// polarity, vector)`.
pub fn irq_control_get_ioapic(
    dst: &AbsoluteCPtr,
    ioapic: Word,
    pin: Word,
    level: bool,
    polarity_low: bool,
    vector: Word,
) -> Invocation {
    Invocation::new(
        L::X86IRQIssueIRQHandlerIOAPIC,
        &[
            dst.index(),
            dst.depth() as Word,
            ioapic,
            pin,
            level as Word,
            polarity_low as Word,
            vector,
        ],
        &[dst.root().bits()],
    )
}

/// `seL4_IRQHandler_Ack(service)`.
pub fn irq_handler_ack() -> Invocation {
    Invocation::new(L::IRQAckIRQ, &[], &[])
}

/// `seL4_IRQHandler_SetNotification(service, notification)`.
pub fn irq_handler_set_notification(notification: CPtr) -> Invocation {
    Invocation::new(L::IRQSetIRQHandler, &[], &[notification])
}

/// `seL4_IRQHandler_Clear(service)`.
pub fn irq_handler_clear() -> Invocation {
    Invocation::new(L::IRQClearIRQHandler, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init_thread;

    #[test]
    fn retype_puts_the_cnode_in_the_extra_caps() {
        let dst = init_thread::slot(0);
        let inv = untyped_retype(ObjectBlueprint::CNode { size_bits: 6 }, &dst, 200, 3);
        assert_eq!(inv.label as u64, 1);
        assert_eq!(
            inv.words(),
            &[sel4_sys::ObjectType::CapTable as Word, 6, 0, 64, 200, 3]
        );
        assert_eq!(inv.caps(), &[init_thread::CNODE.bits()]);
    }

    #[test]
    fn cnode_mint_packs_depths_in_their_own_words() {
        let dst = init_thread::slot(300);
        let src = AbsoluteCPtr::new(crate::Cap::from_bits(77), 7, 16);
        let inv = cnode_mint(&dst, &src, CapRights::READ, 0xbad);
        assert_eq!(inv.words(), &[300, 64, 7, 16, CapRights::READ.0, 0xbad]);
        assert_eq!(inv.caps(), &[77]);
        assert_eq!(cnode_move(&dst, &src).words().len(), 4);
        assert_eq!(cnode_delete(&dst).words(), &[300, 64]);
    }

    #[test]
    fn tcb_configure_has_five_words_and_three_caps() {
        let inv = tcb_configure(
            0,
            sel4_sys::PrioProps::new(254, 100),
            2,
            0,
            3,
            0,
            0x5000,
            10,
        );
        assert_eq!(inv.words(), &[0, 254 << 8 | 100, 0, 0, 0x5000]);
        assert_eq!(inv.caps(), &[2, 3, 10]);
    }

    #[test]
    fn write_registers_flags_count_then_context() {
        let ctx = UserContext {
            rip: 0x1000,
            rsp: 0x2000,
            rdi: 42,
            ..Default::default()
        };
        let inv = tcb_write_registers(true, UserContext::WORDS, &ctx);
        assert_eq!(inv.words().len(), 21);
        assert_eq!(&inv.words()[..4], &[1, 19, 0x1000, 0x2000]);
        assert_eq!(inv.words()[2 + 8], 42, "rdi is the 9th register");
        assert_eq!(
            tcb_write_registers(false, 99, &ctx).words().len(),
            21,
            "count is clamped"
        );
    }

    #[test]
    fn page_map_and_io_ports() {
        let inv = page_map(3, 0x40_0000, CapRights::READ_WRITE, VmAttributes::WriteBack);
        assert_eq!(
            (inv.words(), inv.caps()),
            (&[0x40_0000, 0b011, 0][..], &[3][..])
        );
        let out = io_port_out(IoWidth::Dword, 0xf4, 0x31);
        assert_eq!(
            (out.label, out.words()),
            (L::X86IOPortOut32, &[0xf4, 0x31][..])
        );
        assert_eq!(io_port_in(IoWidth::Byte, 0x3fd).words(), &[0x3fd]);
    }

    #[test]
    fn every_encoding_fits_a_message() {
        let ctx = UserContext::default();
        assert_eq!(
            tcb_write_registers(true, UserContext::WORDS, &ctx)
                .words()
                .len(),
            MAX_WORDS
        );
    }
}
