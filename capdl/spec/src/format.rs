//! The binary spec: fixed-layout little-endian records, readable in place.
//!
//! ```text
//! Header
//! ObjectRecord[object_count]   every kernel object, in creation order
//! CapRecord[cap_count]         every capability, as (holder object, slot) -> target object
//! TcbRecord[tcb_count]         the parameters of each TCB object
//! PdRecord[pd_count]           each protection domain: its TCB, CNode, VSpace root
//! VmRecord[vm_count]           each VM's configuration (for the vmm-server and mmu-server)
//! u8[strings_len]              UTF-8 names, referred to by StrRef
//! ```
//! Every record is `Unaligned` (bytes and little-endian integers), so the blob needs no
//! alignment and has no padding. Indices are `u32` positions in their table; [`NONE`]
//! means "no such reference".
//!
//! Capabilities held by non-CNode objects have the capDL meaning of a slot in that
//! object: a page-table entry (slot = index in the pml4/pdpt/pd/pt), a TCB slot
//! ([`tcb_slot`]), or slot 0 of an IRQ object (the notification the IRQ is delivered
//! to).

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// First bytes of every spec blob.
pub const MAGIC: [u8; 8] = *b"CVCAPDL\0";
/// Version this crate reads and writes.
pub const VERSION: u32 = 1;
/// "No reference" in an index field.
pub const NONE: u32 = u32::MAX;

/// A string in the string table.
#[derive(
    FromBytes,
    IntoBytes,
    KnownLayout,
    Immutable,
    Unaligned,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
)]
#[repr(C)]
pub struct StrRef {
    pub offset: U32,
    pub len: U32,
}

#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub version: U32,
    pub object_count: U32,
    pub cap_count: U32,
    pub tcb_count: U32,
    pub pd_count: U32,
    pub vm_count: U32,
    pub strings_len: U32,
    /// An [`NxMode`].
    pub nx_mode: u8,
    /// A [`TimerKind`].
    pub timer_kind: u8,
    pub reserved0: [u8; 2],
    /// Recovery zaps ceil(splits / ratio) pages per period; 0 turns recovery off.
    pub nx_recovery_ratio: U32,
    pub nx_recovery_period_ms: U64,
    pub frame_pool_bytes: U64,
    pub reserved1: [u8; 4],
}

/// One kernel object.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct ObjectRecord {
    pub name: StrRef,
    /// Index within a capDL object array (`name[index]`), or [`NONE`].
    pub index: U32,
    /// An [`ObjectKind`].
    pub kind: u8,
    /// CNode radix, untyped size, or frame size (12 or 21), as log2; else 0.
    pub size_bits: u8,
    /// Bits of [`object_flags`].
    pub flags: u8,
    pub reserved0: u8,
    /// The untyped this object is retyped from (in table order), or [`NONE`].
    pub untyped: U32,
    /// Physical address when [`object_flags::HAS_PADDR`] (device frames).
    pub paddr: U64,
    /// Kind-specific: io_ports first port; irq number; tcb index in the TCB table.
    pub arg0: U64,
    /// Kind-specific: io_ports last port (inclusive).
    pub arg1: U64,
    pub reserved1: [u8; 4],
}

pub mod object_flags {
    /// `paddr` is fixed (a device frame at a known physical address).
    pub const HAS_PADDR: u8 = 1 << 0;
    pub const ALL: u8 = HAS_PADDR;
}

/// One capability: `target`, held in `slot` of `holder`.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct CapRecord {
    pub holder: U32,
    pub target: U32,
    pub slot: U64,
    pub badge: U64,
    /// Bits of [`rights`].
    pub rights: u8,
    /// CNode capabilities: guard size in bits.
    pub guard_size: u8,
    /// Bits of [`cap_flags`].
    pub flags: u8,
    pub reserved0: u8,
    /// CNode capabilities: guard value.
    pub guard: U32,
}

pub mod rights {
    pub const READ: u8 = 1 << 0;
    pub const WRITE: u8 = 1 << 1;
    pub const GRANT: u8 = 1 << 2;
    pub const ALL: u8 = READ | WRITE | GRANT;
}

pub mod cap_flags {
    /// Frame mapped uncached (device registers).
    pub const UNCACHED: u8 = 1 << 0;
    pub const ALL: u8 = UNCACHED;
}

/// Slots of a TCB object as capDL numbers them.
pub mod tcb_slot {
    pub const CSPACE: u64 = 0;
    pub const VSPACE: u64 = 1;
    pub const IPC_BUFFER: u64 = 4;
    pub const BOUND_NOTIFICATION: u64 = 8;
}

/// Scheduling and start parameters of one TCB.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct TcbRecord {
    /// The TCB object.
    pub object: U32,
    pub prio: u8,
    pub max_prio: u8,
    pub affinity: u8,
    pub reserved0: u8,
    pub ipc_buffer_vaddr: U64,
    /// Initial stack pointer.
    pub sp: U64,
    /// CPtr (in the thread's CSpace) of its fault endpoint.
    pub fault_ep: U64,
    /// Name of the ELF the root task loads into the image frames; the entry point
    /// comes from that ELF.
    pub elf: StrRef,
}

/// One protection domain.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct PdRecord {
    pub name: StrRef,
    /// A [`PdKind`].
    pub kind: u8,
    pub reserved0: [u8; 3],
    /// For a vmm-server, its VM's index in the VM table; else [`NONE`].
    pub vm: U32,
    pub tcb: U32,
    pub cnode: U32,
    pub vspace: U32,
    /// The frame the root task fills with the PD's boot parameters.
    pub boot_params: U32,
}

/// One VM.
#[derive(
    FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug, PartialEq, Eq,
)]
#[repr(C)]
pub struct VmRecord {
    pub name: StrRef,
    /// Name of the guest image (a multiboot kernel).
    pub image: StrRef,
    /// Multiboot command line.
    pub cmdline: StrRef,
    /// The VM id, which is the mmu-server badge's low bits.
    pub id: U16,
    /// An `ipc::MmuMode` number (0 TDP, 1 shadow).
    pub mmu: u8,
    /// Bits of [`vm_flags`].
    pub flags: u8,
    pub memory_bytes: U64,
    /// Its vmm-server in the PD table.
    pub pd: U32,
    /// The untyped its RAM frames are retyped from.
    pub ram_untyped: U32,
    pub reserved0: [u8; 4],
}

pub mod vm_flags {
    /// CR0.WP is a guest-owned bit (writes to it do not exit).
    pub const CR0_WP_GUEST_OWNED: u8 = 1 << 0;
    /// The mmu-server's RootReuse policy is on.
    pub const ROOT_REUSE: u8 = 1 << 1;
    /// Granted `NxHugePageControl`.
    pub const NX_HUGE_PAGE_CONTROL: u8 = 1 << 2;
    /// Holds the isa-debug-exit I/O port capability.
    pub const DEBUG_EXIT: u8 = 1 << 3;
    /// The vmm-server asks to disable the NX-huge-page mitigation for its VM (an
    /// invocation of `NxHugePageControl` when granted, refused otherwise).
    pub const DISABLE_NX_HUGE_PAGES: u8 = 1 << 4;
    pub const ALL: u8 =
        CR0_WP_GUEST_OWNED | ROOT_REUSE | NX_HUGE_PAGE_CONTROL | DEBUG_EXIT | DISABLE_NX_HUGE_PAGES;
}

macro_rules! byte_enum {
    ($(#[$m:meta])* pub enum $name:ident { $($(#[$vm:meta])* $variant:ident = $value:expr),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $variant = $value),* }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
            pub const fn from_u8(v: u8) -> Option<$name> {
                match v {
                    $($value => Some($name::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

byte_enum! {
    /// Kinds of kernel object (capDL object types).
    pub enum ObjectKind {
        Endpoint = 1,
        Notification = 2,
        Tcb = 3,
        CNode = 4,
        Untyped = 5,
        Pml4 = 6,
        Pdpt = 7,
        Pd = 8,
        Pt = 9,
        Frame = 10,
        IoPorts = 11,
        /// An IRQ slot: holds (slot 0) the notification its IRQ is delivered to.
        Irq = 12,
    }
}

byte_enum! {
    /// What a protection domain runs.
    pub enum PdKind {
        MmuServer = 1,
        VmmServer = 2,
        UartDriver = 3,
        TimerDriver = 4,
    }
}

byte_enum! {
    /// The system-wide NX-huge-page mitigation mode.
    pub enum NxMode {
        /// On (every CPU here is treated as affected by iTLB multihit).
        Auto = 0,
        On = 1,
        Off = 2,
        /// On whether or not the CPU is affected.
        Force = 3,
        /// Off, and can never be turned on.
        Never = 4,
    }
}

byte_enum! {
    pub enum TimerKind {
        Pit = 0,
        Hpet = 1,
    }
}
