//! Structural rules every spec must keep, checked on the spec itself (so the same
//! checks run on what the builder made and on what a blob decodes to).
//!
//! - every capability's holder and target is a declared object, and the holder can
//!   hold that target in that slot (a CNode slot within its radix, a TCB's CSpace /
//!   VSpace / IPC buffer / bound-notification slot, a paging structure's entry pointing
//!   at the next level or at a frame of the level's size, an IRQ's notification);
//! - no slot holds two capabilities, and no two objects share a capDL name;
//! - an untyped covers its children, each aligned to its size;
//! - badges fit the kernel's 28 bits;
//! - each vmm-server holds exactly one ordinary mmu-server capability, badged with its
//!   VM id, and the VM ids are unique;
//! - only VMs granted `NxHugePageControl` hold a capability with that badge bit, and
//!   each of them holds exactly one, for its own VM id;
//! - every PD's TCB has its CSpace, VSpace and IPC buffer.

use crate::cdl::{Kind, ObjId, PdKind, Spec};
use capdl_spec::{badge, tcb_slot, vm_flags};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    DanglingCap {
        cap: usize,
    },
    DuplicateSlot {
        holder: String,
        slot: u64,
    },
    /// `holder` cannot hold `target` in `slot`.
    BadSlot {
        holder: String,
        slot: u64,
        target: String,
    },
    DuplicateName {
        name: String,
    },
    /// `name[k]` without `name[k - 1]` right before it (capDL arrays are contiguous).
    BrokenArray {
        name: String,
    },
    BadUntyped {
        object: String,
    },
    UntypedOverflow {
        untyped: String,
    },
    BadgeTooWide {
        holder: String,
        slot: u64,
        badge: u64,
    },
    MissingTcbSlot {
        pd: String,
        slot: &'static str,
    },
    NoMmuEndpoint,
    /// A vmm-server without exactly one ordinary mmu-server capability.
    MmuCapCount {
        vm: String,
        count: usize,
    },
    MmuBadgeMismatch {
        vm: String,
        badge: u64,
    },
    DuplicateVmBadge {
        vm: String,
        other: String,
    },
    /// A holder that is not a granted vmm-server has a capability with the
    /// NxHugePageControl badge bit.
    NxCapNotGranted {
        holder: String,
    },
    NxCapMissing {
        vm: String,
    },
    NxBadgeMismatch {
        vm: String,
        badge: u64,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Violation::*;
        match self {
            DanglingCap { cap } => write!(f, "capability #{cap} refers to an undeclared object"),
            DuplicateSlot { holder, slot } => {
                write!(f, "{holder} slot {slot:#x} holds two capabilities")
            }
            BadSlot {
                holder,
                slot,
                target,
            } => write!(f, "{holder} cannot hold {target} in slot {slot:#x}"),
            DuplicateName { name } => write!(f, "two objects are named {name}"),
            BrokenArray { name } => write!(
                f,
                "{name} does not follow the previous element of its array"
            ),
            BadUntyped { object } => write!(
                f,
                "{object} is retyped from something that is not an untyped"
            ),
            UntypedOverflow { untyped } => {
                write!(f, "the children of {untyped} do not fit in it, aligned")
            }
            BadgeTooWide {
                holder,
                slot,
                badge,
            } => {
                write!(
                    f,
                    "{holder} slot {slot:#x}: badge {badge:#x} does not fit in 28 bits"
                )
            }
            MissingTcbSlot { pd, slot } => write!(f, "PD {pd}: its TCB has no {slot}"),
            NoMmuEndpoint => write!(f, "no object mmu_ep"),
            MmuCapCount { vm, count } => {
                write!(
                    f,
                    "vm {vm}: its vmm-server holds {count} ordinary mmu-server capabilities, not 1"
                )
            }
            MmuBadgeMismatch { vm, badge } => {
                write!(f, "vm {vm}: mmu-server badge {badge:#x} is not its id's")
            }
            DuplicateVmBadge { vm, other } => {
                write!(f, "vm {vm}: same mmu-server badge as vm {other}")
            }
            NxCapNotGranted { holder } => {
                write!(
                    f,
                    "{holder} holds an NxHugePageControl capability it was not granted"
                )
            }
            NxCapMissing { vm } => write!(
                f,
                "vm {vm}: granted NxHugePageControl but holds no such capability"
            ),
            NxBadgeMismatch { vm, badge } => {
                write!(
                    f,
                    "vm {vm}: NxHugePageControl badge {badge:#x} is not for its own id"
                )
            }
        }
    }
}

fn frame_bits(spec: &Spec, id: ObjId) -> Option<u8> {
    match spec.object(id).map(|o| &o.kind) {
        Some(crate::cdl::ObjectKind::Frame { size_bits, .. }) => Some(*size_bits),
        _ => None,
    }
}

/// Whether an object of kind `holder` may hold `target` in `slot`.
fn slot_ok(spec: &Spec, holder: ObjId, slot: u64, target: ObjId) -> bool {
    let (Some(h), Some(t)) = (spec.object(holder), spec.object(target)) else {
        return false;
    };
    let tk = t.kind.kind();
    match (&h.kind, h.kind.kind()) {
        (crate::cdl::ObjectKind::CNode { size_bits }, _) => slot < (1u64 << size_bits) && slot != 0,
        (_, Kind::Tcb) => {
            matches!(
                (slot, tk),
                (tcb_slot::CSPACE, Kind::CNode)
                    | (tcb_slot::VSPACE, Kind::Pml4)
                    | (tcb_slot::BOUND_NOTIFICATION, Kind::Notification)
            ) || (slot == tcb_slot::IPC_BUFFER && frame_bits(spec, target) == Some(12))
        }
        (_, Kind::Pml4) => slot < 512 && tk == Kind::Pdpt,
        (_, Kind::Pdpt) => slot < 512 && tk == Kind::Pd,
        (_, Kind::Pd) => slot < 512 && (tk == Kind::Pt || frame_bits(spec, target) == Some(21)),
        (_, Kind::Pt) => slot < 512 && frame_bits(spec, target) == Some(12),
        (_, Kind::Irq) => slot == 0 && tk == Kind::Notification,
        _ => false,
    }
}

/// Every rule the spec breaks (empty when it is sound).
pub fn check(spec: &Spec) -> Vec<Violation> {
    let mut out = Vec::new();
    let name = |id: ObjId| {
        spec.object(id)
            .map(|o| o.reference())
            .unwrap_or_else(|| format!("#{id}"))
    };

    let mut names = BTreeMap::new();
    for (i, o) in spec.objects.iter().enumerate() {
        if names.insert(o.reference(), ()).is_some() {
            out.push(Violation::DuplicateName {
                name: o.reference(),
            });
        }
        if let Some(k) = o.index.filter(|&k| k > 0) {
            let prev = i.checked_sub(1).and_then(|p| spec.objects.get(p));
            if !prev.is_some_and(|p| p.name == o.name && p.index == Some(k - 1)) {
                out.push(Violation::BrokenArray {
                    name: o.reference(),
                });
            }
        }
    }

    let mut slots = BTreeMap::new();
    for (i, c) in spec.caps.iter().enumerate() {
        if spec.object(c.holder).is_none() || spec.object(c.target).is_none() {
            out.push(Violation::DanglingCap { cap: i });
            continue;
        }
        if slots.insert((c.holder, c.slot), ()).is_some() {
            out.push(Violation::DuplicateSlot {
                holder: name(c.holder),
                slot: c.slot,
            });
        }
        if !slot_ok(spec, c.holder, c.slot, c.target) {
            out.push(Violation::BadSlot {
                holder: name(c.holder),
                slot: c.slot,
                target: name(c.target),
            });
        }
        if c.badge >> badge::BADGE_BITS != 0 {
            out.push(Violation::BadgeTooWide {
                holder: name(c.holder),
                slot: c.slot,
                badge: c.badge,
            });
        }
    }

    // Untyped coverage: children are retyped in table order, each aligned to its size.
    let mut used: BTreeMap<ObjId, u64> = BTreeMap::new();
    for (i, o) in spec.objects.iter().enumerate() {
        let Some(ut) = o.untyped else { continue };
        let ut_bits = match spec.object(ut).map(|u| &u.kind) {
            Some(crate::cdl::ObjectKind::Untyped { size_bits }) => *size_bits,
            _ => {
                out.push(Violation::BadUntyped {
                    object: name(i as ObjId),
                });
                continue;
            }
        };
        let Some(bits) = frame_bits(spec, i as ObjId) else {
            continue;
        };
        let offset = used.entry(ut).or_insert(0);
        let size = 1u64 << bits;
        let end = offset.checked_add(size);
        if *offset % size != 0 || end.is_none_or(|e| e > 1u64 << ut_bits) {
            out.push(Violation::UntypedOverflow { untyped: name(ut) });
        }
        *offset = end.unwrap_or(u64::MAX);
    }

    for pd in &spec.pds {
        for (s, what) in [
            (tcb_slot::CSPACE, "CSpace"),
            (tcb_slot::VSPACE, "VSpace"),
            (tcb_slot::IPC_BUFFER, "IPC buffer"),
        ] {
            if !spec.caps_of(pd.tcb).any(|c| c.slot == s) {
                out.push(Violation::MissingTcbSlot {
                    pd: pd.name.clone(),
                    slot: what,
                });
            }
        }
    }

    check_mmu_authority(spec, &mut out);
    out
}

/// The badge rules of the mmu-server endpoint (see `capdl_spec::badge`).
fn check_mmu_authority(spec: &Spec, out: &mut Vec<Violation>) {
    let Some(mmu_ep) = spec.find("mmu_ep") else {
        out.push(Violation::NoMmuEndpoint);
        return;
    };
    // cnode -> the VM whose vmm-server owns it.
    let vm_of_cnode: BTreeMap<ObjId, usize> = spec
        .pds
        .iter()
        .filter(|p| p.kind == PdKind::VmmServer)
        .filter_map(|p| p.vm.map(|vm| (p.cnode, vm as usize)))
        .collect();
    let mut seen_ids: BTreeMap<u64, String> = BTreeMap::new();

    for c in spec.caps.iter().filter(|c| c.target == mmu_ep) {
        let granted_vm = vm_of_cnode
            .get(&c.holder)
            .and_then(|&vm| spec.vms.get(vm))
            .filter(|vm| vm.flags & vm_flags::NX_HUGE_PAGE_CONTROL != 0);
        if c.badge & badge::NX_HUGE_PAGE_CONTROL != 0 && granted_vm.is_none() {
            let holder = spec
                .object(c.holder)
                .map(|o| o.reference())
                .unwrap_or_default();
            out.push(Violation::NxCapNotGranted { holder });
        }
    }

    for (&cnode, &vm_index) in &vm_of_cnode {
        let Some(vm) = spec.vms.get(vm_index) else {
            continue;
        };
        let caps: Vec<_> = spec.caps_of(cnode).filter(|c| c.target == mmu_ep).collect();
        let ordinary: Vec<_> = caps
            .iter()
            .filter(|c| c.badge & badge::NX_HUGE_PAGE_CONTROL == 0)
            .collect();
        let nx: Vec<_> = caps
            .iter()
            .filter(|c| c.badge & badge::NX_HUGE_PAGE_CONTROL != 0)
            .collect();
        if ordinary.len() != 1 {
            out.push(Violation::MmuCapCount {
                vm: vm.name.clone(),
                count: ordinary.len(),
            });
        }
        for c in &ordinary {
            if c.badge != badge::mmu_client(vm.id) {
                out.push(Violation::MmuBadgeMismatch {
                    vm: vm.name.clone(),
                    badge: c.badge,
                });
            }
            if let Some(other) = seen_ids.insert(c.badge & badge::VM_ID_MASK, vm.name.clone()) {
                out.push(Violation::DuplicateVmBadge {
                    vm: vm.name.clone(),
                    other,
                });
            }
        }
        let granted = vm.flags & vm_flags::NX_HUGE_PAGE_CONTROL != 0;
        if granted && nx.is_empty() {
            out.push(Violation::NxCapMissing {
                vm: vm.name.clone(),
            });
        }
        if granted {
            for c in &nx {
                if c.badge != badge::nx_huge_page_control(vm.id) {
                    out.push(Violation::NxBadgeMismatch {
                        vm: vm.name.clone(),
                        badge: c.badge,
                    });
                }
            }
        }
    }
}
