//! The spec in the binary format of `capdl_spec::format`, and back.

use crate::cdl::*;
use crate::system::{NxConfig, PortRange};
use capdl_spec::{
    cap_flags, object_flags, CapRecord, FormatError, Header, ObjectRecord, PdRecord, SpecView,
    StrRef, TcbRecord, VmRecord, MAGIC, NONE, VERSION,
};
use std::collections::BTreeMap;
use std::fmt;
use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::IntoBytes;

/// A decoded blob that the in-memory model cannot represent (never produced by
/// [`encode`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    Format(FormatError),
    /// A value outside what the model allows (a port above 0xffff, an IRQ above 255).
    OutOfRange {
        object: u32,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Format(e) => write!(f, "not a capvisor spec: {e:?}"),
            DecodeError::OutOfRange { object } => {
                write!(f, "object #{object} has an out-of-range value")
            }
        }
    }
}

impl std::error::Error for DecodeError {}

/// Interns strings: each distinct string is stored once.
#[derive(Default)]
struct Strings {
    bytes: Vec<u8>,
    seen: BTreeMap<String, StrRef>,
}

impl Strings {
    fn add(&mut self, s: &str) -> StrRef {
        if let Some(r) = self.seen.get(s) {
            return *r;
        }
        let r = StrRef {
            offset: U32::new(self.bytes.len() as u32),
            len: U32::new(s.len() as u32),
        };
        self.bytes.extend_from_slice(s.as_bytes());
        self.seen.insert(s.to_string(), r);
        r
    }
}

fn opt(v: Option<u32>) -> U32 {
    U32::new(v.unwrap_or(NONE))
}

/// Encodes `spec` (its `sections` are for printing only and are not stored).
pub fn encode(spec: &Spec) -> Vec<u8> {
    let mut strings = Strings::default();
    let mut tcbs = Vec::new();
    let objects: Vec<ObjectRecord> = spec
        .objects
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let (mut size_bits, mut flags, mut paddr, mut arg0, mut arg1) =
                (0u8, 0u8, 0u64, 0u64, 0u64);
            match &o.kind {
                ObjectKind::Tcb(t) => {
                    arg0 = tcbs.len() as u64;
                    tcbs.push(TcbRecord {
                        object: U32::new(i as u32),
                        prio: t.prio,
                        max_prio: t.max_prio,
                        affinity: t.affinity,
                        reserved0: 0,
                        ipc_buffer_vaddr: U64::new(t.ipc_buffer_vaddr),
                        sp: U64::new(t.sp),
                        fault_ep: U64::new(t.fault_ep),
                        elf: strings.add(&t.elf),
                    });
                }
                ObjectKind::CNode { size_bits: b } | ObjectKind::Untyped { size_bits: b } => {
                    size_bits = *b
                }
                ObjectKind::Frame {
                    size_bits: b,
                    paddr: p,
                } => {
                    size_bits = *b;
                    if let Some(p) = p {
                        flags |= object_flags::HAS_PADDR;
                        paddr = *p;
                    }
                }
                ObjectKind::IoPorts(r) => {
                    arg0 = r.first as u64;
                    arg1 = r.last as u64;
                }
                ObjectKind::Irq { irq } => arg0 = *irq as u64,
                ObjectKind::Endpoint
                | ObjectKind::Notification
                | ObjectKind::Pml4
                | ObjectKind::Pdpt
                | ObjectKind::Pd
                | ObjectKind::Pt => {}
            }
            ObjectRecord {
                name: strings.add(&o.name),
                index: opt(o.index),
                kind: o.kind.kind() as u8,
                size_bits,
                flags,
                reserved0: 0,
                untyped: opt(o.untyped),
                paddr: U64::new(paddr),
                arg0: U64::new(arg0),
                arg1: U64::new(arg1),
                reserved1: [0; 4],
            }
        })
        .collect();
    let caps: Vec<CapRecord> = spec
        .caps
        .iter()
        .map(|c| CapRecord {
            holder: U32::new(c.holder),
            target: U32::new(c.target),
            slot: U64::new(c.slot),
            badge: U64::new(c.badge),
            rights: c.rights,
            guard_size: c.guard_size,
            flags: if c.uncached { cap_flags::UNCACHED } else { 0 },
            reserved0: 0,
            guard: U32::new(c.guard),
        })
        .collect();
    let pds: Vec<PdRecord> = spec
        .pds
        .iter()
        .map(|p| PdRecord {
            name: strings.add(&p.name),
            kind: p.kind as u8,
            reserved0: [0; 3],
            vm: opt(p.vm),
            tcb: U32::new(p.tcb),
            cnode: U32::new(p.cnode),
            vspace: U32::new(p.vspace),
            boot_params: U32::new(p.boot_params),
        })
        .collect();
    let vms: Vec<VmRecord> = spec
        .vms
        .iter()
        .map(|v| VmRecord {
            name: strings.add(&v.name),
            image: strings.add(&v.image),
            cmdline: strings.add(&v.cmdline),
            id: U16::new(v.id),
            mmu: v.mmu,
            flags: v.flags,
            memory_bytes: U64::new(v.memory),
            pd: U32::new(v.pd),
            ram_untyped: U32::new(v.ram_untyped),
            reserved0: [0; 4],
        })
        .collect();
    let header = Header {
        magic: MAGIC,
        version: U32::new(VERSION),
        object_count: U32::new(objects.len() as u32),
        cap_count: U32::new(caps.len() as u32),
        tcb_count: U32::new(tcbs.len() as u32),
        pd_count: U32::new(pds.len() as u32),
        vm_count: U32::new(vms.len() as u32),
        strings_len: U32::new(strings.bytes.len() as u32),
        nx_mode: spec.nx.mode as u8,
        timer_kind: spec.timer_kind as u8,
        reserved0: [0; 2],
        nx_recovery_ratio: U32::new(spec.nx.recovery_ratio),
        nx_recovery_period_ms: U64::new(spec.nx.recovery_period_ms),
        frame_pool_bytes: U64::new(spec.frame_pool),
        reserved1: [0; 4],
    };
    let mut out = Vec::new();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(objects.as_bytes());
    out.extend_from_slice(caps.as_bytes());
    out.extend_from_slice(tcbs.as_bytes());
    out.extend_from_slice(pds.as_bytes());
    out.extend_from_slice(vms.as_bytes());
    out.extend_from_slice(&strings.bytes);
    out
}

fn index(v: U32) -> Option<u32> {
    (v.get() != NONE).then(|| v.get())
}

/// Decodes a blob into the in-memory spec (with no `sections`).
pub fn decode(bytes: &[u8]) -> Result<Spec, DecodeError> {
    let view = SpecView::parse(bytes).map_err(DecodeError::Format)?;
    let h = view.header();
    let mut objects = Vec::with_capacity(view.objects().len());
    for (i, o) in view.objects().iter().enumerate() {
        let range = DecodeError::OutOfRange { object: i as u32 };
        let kind = match view.object_kind(o) {
            Kind::Endpoint => ObjectKind::Endpoint,
            Kind::Notification => ObjectKind::Notification,
            Kind::Tcb => {
                // `parse` checked that arg0 names this object's TCB record.
                let t = view
                    .tcbs()
                    .get(o.arg0.get() as usize)
                    .ok_or(range.clone())?;
                ObjectKind::Tcb(TcbParams {
                    ipc_buffer_vaddr: t.ipc_buffer_vaddr.get(),
                    sp: t.sp.get(),
                    prio: t.prio,
                    max_prio: t.max_prio,
                    affinity: t.affinity,
                    fault_ep: t.fault_ep.get(),
                    elf: view.str(t.elf).to_string(),
                })
            }
            Kind::CNode => ObjectKind::CNode {
                size_bits: o.size_bits,
            },
            Kind::Untyped => ObjectKind::Untyped {
                size_bits: o.size_bits,
            },
            Kind::Pml4 => ObjectKind::Pml4,
            Kind::Pdpt => ObjectKind::Pdpt,
            Kind::Pd => ObjectKind::Pd,
            Kind::Pt => ObjectKind::Pt,
            Kind::Frame => ObjectKind::Frame {
                size_bits: o.size_bits,
                paddr: (o.flags & object_flags::HAS_PADDR != 0).then(|| o.paddr.get()),
            },
            Kind::IoPorts => {
                let first = u16::try_from(o.arg0.get()).map_err(|_| range.clone())?;
                let last = u16::try_from(o.arg1.get()).map_err(|_| range.clone())?;
                ObjectKind::IoPorts(PortRange { first, last })
            }
            Kind::Irq => ObjectKind::Irq {
                irq: u8::try_from(o.arg0.get()).map_err(|_| range)?,
            },
        };
        objects.push(Object {
            name: view.str(o.name).to_string(),
            index: index(o.index),
            kind,
            untyped: index(o.untyped),
        });
    }
    let caps = view
        .caps()
        .iter()
        .map(|c| Cap {
            holder: c.holder.get(),
            slot: c.slot.get(),
            target: c.target.get(),
            rights: c.rights,
            badge: c.badge.get(),
            guard: c.guard.get(),
            guard_size: c.guard_size,
            uncached: c.flags & cap_flags::UNCACHED != 0,
        })
        .collect();
    let pds = view
        .pds()
        .iter()
        .map(|p| Pd {
            name: view.str(p.name).to_string(),
            kind: view.pd_kind(p),
            vm: index(p.vm),
            tcb: p.tcb.get(),
            cnode: p.cnode.get(),
            vspace: p.vspace.get(),
            boot_params: p.boot_params.get(),
        })
        .collect();
    let vms = view
        .vms()
        .iter()
        .map(|v| VmInfo {
            name: view.str(v.name).to_string(),
            image: view.str(v.image).to_string(),
            cmdline: view.str(v.cmdline).to_string(),
            id: v.id.get(),
            mmu: v.mmu,
            flags: v.flags,
            memory: v.memory_bytes.get(),
            pd: v.pd.get(),
            ram_untyped: v.ram_untyped.get(),
        })
        .collect();
    let nx = NxConfig {
        mode: view.nx_mode(),
        recovery_ratio: h.nx_recovery_ratio.get(),
        recovery_period_ms: h.nx_recovery_period_ms.get(),
    };
    Ok(Spec {
        nx,
        timer_kind: view.timer_kind(),
        frame_pool: h.frame_pool_bytes.get(),
        objects,
        caps,
        pds,
        vms,
        sections: Vec::new(),
    })
}
