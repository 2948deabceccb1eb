//! The capDL spec in memory: kernel objects, capabilities in object slots, and the
//! capvisor tables (PDs, VMs) the root task needs beside them. The builder makes one,
//! `text` prints it in the capDL syntax, `binary` encodes it for the root task.

use crate::system::{NxConfig, PortRange};
pub use capdl_spec::{ObjectKind as Kind, PdKind, TimerKind};

/// An object's position in [`Spec::objects`].
pub type ObjId = u32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcbParams {
    pub ipc_buffer_vaddr: u64,
    pub sp: u64,
    pub prio: u8,
    pub max_prio: u8,
    pub affinity: u8,
    /// CPtr of the fault endpoint in the thread's own CSpace.
    pub fault_ep: u64,
    /// ELF the root task loads; the entry point comes from it.
    pub elf: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Endpoint,
    Notification,
    Tcb(TcbParams),
    CNode { size_bits: u8 },
    Untyped { size_bits: u8 },
    Pml4,
    Pdpt,
    Pd,
    Pt,
    Frame { size_bits: u8, paddr: Option<u64> },
    IoPorts(PortRange),
    Irq { irq: u8 },
}

impl ObjectKind {
    pub fn kind(&self) -> Kind {
        match self {
            ObjectKind::Endpoint => Kind::Endpoint,
            ObjectKind::Notification => Kind::Notification,
            ObjectKind::Tcb(_) => Kind::Tcb,
            ObjectKind::CNode { .. } => Kind::CNode,
            ObjectKind::Untyped { .. } => Kind::Untyped,
            ObjectKind::Pml4 => Kind::Pml4,
            ObjectKind::Pdpt => Kind::Pdpt,
            ObjectKind::Pd => Kind::Pd,
            ObjectKind::Pt => Kind::Pt,
            ObjectKind::Frame { .. } => Kind::Frame,
            ObjectKind::IoPorts(_) => Kind::IoPorts,
            ObjectKind::Irq { .. } => Kind::Irq,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Object {
    /// capDL name; with `index`, an element of the array `name[..]`.
    pub name: String,
    pub index: Option<u32>,
    pub kind: ObjectKind,
    /// The untyped it is retyped from, in table order (so the untyped's frames are
    /// physically contiguous).
    pub untyped: Option<ObjId>,
}

impl Object {
    /// The name as capDL refers to it: `name` or `name[3]`.
    pub fn reference(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}]", self.name),
            None => self.name.clone(),
        }
    }
}

/// Rights bits, as in the binary format.
pub use capdl_spec::rights;

/// A capability to `target` in `slot` of `holder`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cap {
    pub holder: ObjId,
    pub slot: u64,
    pub target: ObjId,
    pub rights: u8,
    pub badge: u64,
    pub guard: u32,
    pub guard_size: u8,
    pub uncached: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pd {
    pub name: String,
    pub kind: PdKind,
    /// For a vmm-server, its VM's index in [`Spec::vms`].
    pub vm: Option<u32>,
    pub tcb: ObjId,
    pub cnode: ObjId,
    pub vspace: ObjId,
    pub boot_params: ObjId,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub image: String,
    pub cmdline: String,
    pub id: u16,
    /// `ipc::MmuMode` number.
    pub mmu: u8,
    /// Bits of `capdl_spec::vm_flags`.
    pub flags: u8,
    pub memory: u64,
    pub pd: u32,
    pub ram_untyped: ObjId,
}

/// A comment heading in the printed objects: the builder step that made them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Section {
    pub first_object: ObjId,
    pub title: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    pub nx: NxConfig,
    pub timer_kind: TimerKind,
    pub frame_pool: u64,
    pub objects: Vec<Object>,
    pub caps: Vec<Cap>,
    pub pds: Vec<Pd>,
    pub vms: Vec<VmInfo>,
    /// Only for printing; not part of the binary form.
    pub sections: Vec<Section>,
}

impl Spec {
    pub fn object(&self, id: ObjId) -> Option<&Object> {
        self.objects.get(id as usize)
    }

    /// The first object called `name` (without index).
    pub fn find(&self, name: &str) -> Option<ObjId> {
        self.objects
            .iter()
            .position(|o| o.name == name && o.index.is_none())
            .map(|i| i as ObjId)
    }

    /// Capabilities held by `holder`, in slot order of insertion.
    pub fn caps_of(&self, holder: ObjId) -> impl Iterator<Item = &Cap> {
        self.caps.iter().filter(move |c| c.holder == holder)
    }
}
