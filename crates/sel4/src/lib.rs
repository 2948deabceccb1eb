//! Typed seL4 5.0.0 capabilities and invocations for x86_64, in the shape of the
//! rust-sel4 API: a [`Cap<T>`] names a capability of object type `T` by its CPtr, and each
//! kernel invocation is a method on the capability it is invoked on, returning
//! [`Result`]. [`AbsoluteCPtr`] names a slot for the CNode operations.
//!
//! Every invocation is encoded by a pure function (module `encode`, host-tested against
//! the marshalling rules of libsel4's stub generator) and sent with `seL4_Call`.
//!
//! The methods that talk to the kernel assume the calling thread has an IPC buffer
//! (the root task has one; give every thread you create one with
//! [`Cap::<Tcb>::tcb_configure`](Cap::tcb_configure)).
#![no_std]

mod cap;
pub mod debug;
mod encode;
mod error;
mod object;

#[cfg(target_arch = "x86_64")]
mod invoke;
#[cfg(target_arch = "x86_64")]
mod ipc;
#[cfg(target_arch = "x86_64")]
mod methods;

pub use cap::{cap_type, AbsoluteCPtr, Cap, CapType};
pub use encode::Invocation;
pub use error::{Error, Result};
#[cfg(target_arch = "x86_64")]
pub use ipc::{reply, Badge};
pub use object::ObjectBlueprint;
/// Message registers and extra caps of the current thread's IPC buffer.
#[cfg(target_arch = "x86_64")]
pub use sel4_sys::ipc_buffer::{get_badge, get_mr, set_cap, set_cap_receive_path, set_mr};
pub use sel4_sys::{
    BootInfo, CPtr, CapRights, MessageInfo, PrioProps, UntypedDesc, UserContext, VmAttributes, Word,
};

/// The capabilities the kernel puts in fixed slots of the root task's CNode.
pub mod init_thread {
    use crate::cap::{cap_type::*, Cap};
    use sel4_sys::InitialCap as I;

    /// The root task's TCB.
    pub const TCB: Cap<Tcb> = Cap::from_bits(I::CapInitThreadTCB as u64);
    /// The root task's CNode (its CSpace root).
    pub const CNODE: Cap<CNode> = Cap::from_bits(I::CapInitThreadCNode as u64);
    /// The root task's VSpace root (a PML4).
    pub const VSPACE: Cap<VSpace> = Cap::from_bits(I::CapInitThreadVSpace as u64);
    /// Authority over every IRQ.
    pub const IRQ_CONTROL: Cap<IrqControl> = Cap::from_bits(I::CapIRQControl as u64);
    /// Authority to create ASID pools.
    pub const ASID_CONTROL: Cap<AsidControl> = Cap::from_bits(I::CapASIDControl as u64);
    /// The root task's ASID pool.
    pub const ASID_POOL: Cap<AsidPool> = Cap::from_bits(I::CapInitThreadASIDPool as u64);
    /// Every I/O port (seL4 5.0.0 has no IOPortControl; narrow it with `CNode_Mint`).
    pub const IO_PORT: Cap<IoPort> = Cap::from_bits(I::CapIOPort as u64);
    /// The frame holding the boot info.
    pub const BOOT_INFO_FRAME: Cap<Granule> = Cap::from_bits(I::CapBootInfoFrame as u64);
    /// The root task's IPC buffer frame.
    pub const IPC_BUFFER: Cap<Granule> = Cap::from_bits(I::CapInitThreadIPCBuffer as u64);

    /// The depth that resolves a CPtr in the root CNode: its guard makes it consume
    /// all 64 bits (`seL4_WordBits`).
    pub const CNODE_DEPTH: u8 = sel4_sys::WORD_BITS as u8;

    /// Slot `slot` of the root CNode, for the CNode operations.
    pub const fn slot(slot: u64) -> crate::AbsoluteCPtr {
        crate::AbsoluteCPtr::new(CNODE, slot, CNODE_DEPTH)
    }
}
