//! System -> capDL spec, in numbered steps.
//!
//! Each step adds one kind of thing to the spec, in a fixed order, so the output is a
//! pure function of the system (no hash maps, no addresses of host memory):
//!
//! 1. shared IPC objects: the supervisor's fault endpoint, the console endpoint, the
//!    mmu-server endpoint and notification;
//! 2. one protection domain per server and driver and per VM (TCB, CNode, VSpace root,
//!    ELF image frames, stack, IPC buffer, boot-parameter frame);
//! 3. the mmu-server's page-table pool (an untyped and its frames);
//! 4. each VM's guest RAM (an untyped and its frames);
//! 5. devices: I/O port ranges, IRQs and their notifications, the HPET page;
//! 6. CSpaces: every capability a PD holds, in the slots of `capdl_spec::slot`;
//! 7. VSpaces: the paging structures that map each PD's regions at the addresses of
//!    `capdl_spec::layout`;
//! 8. TCBs: CSpace, VSpace, IPC buffer and bound notification of each thread;
//!
//! and finally the structural checks of `check` (a failure there is a builder bug,
//! reported as an error rather than printed as a broken spec).

use crate::cdl::*;
use crate::check;
use crate::system::{
    frame_split, Capability, MmuMode, PdConfig, System, TimerDevice, DEBUG_EXIT_PORTS,
};
use capdl_spec::layout::*;
use capdl_spec::{badge, slot, tcb_slot, vm_flags};
use std::collections::BTreeMap;
use std::fmt;

/// A spec the builder produced fails its own checks (a bug in the builder, or a system
/// whose regions collide).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildError {
    /// Two regions of one PD want the same page-table slot.
    MappingCollision { pd: String, vaddr: u64 },
    /// The finished spec breaks a structural rule.
    Check(Vec<check::Violation>),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::MappingCollision { pd, vaddr } => {
                write!(f, "PD {pd}: two regions map {vaddr:#x}")
            }
            BuildError::Check(v) => {
                write!(f, "the built spec breaks {} structural rule(s)", v.len())?;
                for x in v {
                    write!(f, "\n  {x}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for BuildError {}

/// Rights shorthands.
const R: u8 = rights::READ;
const W: u8 = rights::WRITE;
const RW: u8 = rights::READ | rights::WRITE;
/// A client of a server: seL4 5.0 needs Grant on the capability used for seL4_Call
/// (without it the caller gets no reply capability and blocks forever) and on a fault
/// endpoint (`handleFault` requires CanSend and CanGrant).
const WG: u8 = rights::WRITE | rights::GRANT;

/// One frame mapped into a PD.
#[derive(Clone, Copy, Debug)]
struct Mapping {
    vaddr: u64,
    frame: ObjId,
    size_bits: u8,
    rights: u8,
    uncached: bool,
}

/// A PD while it is being built.
struct PdBuild {
    pd: Pd,
    prefix: String,
    mappings: Vec<Mapping>,
    ipc_buffer: ObjId,
}

struct Builder {
    spec: Spec,
    pds: Vec<PdBuild>,
}

fn size_bits_for(bytes: u64) -> u8 {
    // The smallest power of two that holds `bytes`, at least one page.
    let bits = 64 - (bytes.max(PAGE_SIZE) - 1).leading_zeros();
    bits as u8
}

impl Builder {
    fn section(&mut self, title: &str) {
        let first_object = self.spec.objects.len() as ObjId;
        self.spec.sections.push(Section {
            first_object,
            title: title.to_string(),
        });
    }

    fn object(&mut self, name: &str, kind: ObjectKind) -> ObjId {
        self.object_at(name, None, kind, None)
    }

    fn object_at(
        &mut self,
        name: &str,
        index: Option<u32>,
        kind: ObjectKind,
        untyped: Option<ObjId>,
    ) -> ObjId {
        self.spec.objects.push(Object {
            name: name.to_string(),
            index,
            kind,
            untyped,
        });
        (self.spec.objects.len() - 1) as ObjId
    }

    /// `count` frames `name[0..count]` of 2^size_bits bytes each.
    fn frames(
        &mut self,
        name: &str,
        count: u64,
        size_bits: u8,
        untyped: Option<ObjId>,
    ) -> Vec<ObjId> {
        (0..count)
            .map(|i| {
                self.object_at(
                    name,
                    Some(i as u32),
                    ObjectKind::Frame {
                        size_bits,
                        paddr: None,
                    },
                    untyped,
                )
            })
            .collect()
    }

    /// A region of `bytes` as frames, 2M ones first when `large`, retyped in order from
    /// a fresh untyped named `<name>_ut` so the region is physically contiguous.
    fn contiguous_region(
        &mut self,
        name: &str,
        bytes: u64,
        large: bool,
    ) -> (ObjId, Vec<(ObjId, u8)>) {
        let ut = self.object(
            &format!("{name}_ut"),
            ObjectKind::Untyped {
                size_bits: size_bits_for(bytes),
            },
        );
        let (big, small) = frame_split(bytes, large);
        let mut frames: Vec<(ObjId, u8)> = self
            .frames(name, big, 21, Some(ut))
            .into_iter()
            .map(|f| (f, 21))
            .collect();
        let small_name = if big > 0 {
            format!("{name}_4k")
        } else {
            name.to_string()
        };
        frames.extend(
            self.frames(&small_name, small, 12, Some(ut))
                .into_iter()
                .map(|f| (f, 12)),
        );
        (ut, frames)
    }

    fn cap(&mut self, holder: ObjId, slot: u64, target: ObjId, rights: u8, badge: u64) {
        self.spec.caps.push(Cap {
            holder,
            slot,
            target,
            rights,
            badge,
            guard: 0,
            guard_size: 0,
            uncached: false,
        });
    }

    fn map_region(&mut self, pd: usize, vaddr: u64, frames: &[(ObjId, u8)], rights: u8) {
        let mut va = vaddr;
        for &(frame, size_bits) in frames {
            self.pds[pd].mappings.push(Mapping {
                vaddr: va,
                frame,
                size_bits,
                rights,
                uncached: false,
            });
            va += 1 << size_bits;
        }
    }

    /// Step 2 for one PD.
    fn protection_domain(
        &mut self,
        prefix: &str,
        kind: PdKind,
        vm: Option<u32>,
        cfg: &PdConfig,
    ) -> usize {
        let tcb = self.object(
            &format!("{prefix}_tcb"),
            ObjectKind::Tcb(TcbParams {
                ipc_buffer_vaddr: IPC_BUFFER_VADDR,
                sp: STACK_TOP,
                prio: cfg.priority,
                max_prio: cfg.priority,
                affinity: 0,
                fault_ep: slot::common::FAULT_EP,
                elf: cfg.elf.clone(),
            }),
        );
        let cnode = self.object(
            &format!("{prefix}_cnode"),
            ObjectKind::CNode {
                size_bits: slot::CNODE_SIZE_BITS,
            },
        );
        let vspace = self.object(&format!("{prefix}_pml4"), ObjectKind::Pml4);
        let image: Vec<_> = self
            .frames(
                &format!("{prefix}_image"),
                cfg.image_size / PAGE_SIZE,
                12,
                None,
            )
            .into_iter()
            .map(|f| (f, 12))
            .collect();
        let stack: Vec<_> = self
            .frames(
                &format!("{prefix}_stack"),
                cfg.stack_size / PAGE_SIZE,
                12,
                None,
            )
            .into_iter()
            .map(|f| (f, 12))
            .collect();
        let ipc_buffer = self.object(
            &format!("{prefix}_ipc_buffer"),
            ObjectKind::Frame {
                size_bits: 12,
                paddr: None,
            },
        );
        let boot_params = self.object(
            &format!("{prefix}_boot_params"),
            ObjectKind::Frame {
                size_bits: 12,
                paddr: None,
            },
        );
        let name = prefix.to_string();
        self.pds.push(PdBuild {
            pd: Pd {
                name,
                kind,
                vm,
                tcb,
                cnode,
                vspace,
                boot_params,
            },
            prefix: prefix.to_string(),
            mappings: Vec::new(),
            ipc_buffer,
        });
        let pd = self.pds.len() - 1;
        // The ELF image is writable: the root task does not know the segment layout at
        // spec time and loads PT_LOAD segments into these frames.
        self.map_region(pd, IMAGE_VADDR, &image, RW);
        self.map_region(pd, STACK_TOP - cfg.stack_size, &stack, RW);
        self.map_region(pd, IPC_BUFFER_VADDR, &[(ipc_buffer, 12)], RW);
        self.map_region(pd, BOOT_PARAMS_VADDR, &[(boot_params, 12)], R);
        pd
    }

    /// Step 7 for one PD: the x86-64 4-level paging structures (Intel SDM Vol. 3A
    /// 4.5: PML4 -> PDPT -> PD -> PT, 9 index bits each; a 2M frame is a PD entry).
    fn vspace(&mut self, pd: usize) -> Result<(), BuildError> {
        let mut mappings = std::mem::take(&mut self.pds[pd].mappings);
        mappings.sort_by_key(|m| m.vaddr);
        let prefix = self.pds[pd].prefix.clone();
        let pml4 = self.pds[pd].pd.vspace;
        // (holder, slot) -> what the slot holds: a table (Some) or a frame (None).
        let mut slots: BTreeMap<(ObjId, u64), Option<ObjId>> = BTreeMap::new();
        let collision = |vaddr| BuildError::MappingCollision {
            pd: prefix.clone(),
            vaddr,
        };
        for m in &mappings {
            let idx = |shift: u32| (m.vaddr >> shift) & 0x1ff;
            let mut table = pml4;
            let levels: &[(u32, &str, ObjectKind, u64)] = &[
                (39, "pdpt", ObjectKind::Pdpt, 1 << 39),
                (30, "pd", ObjectKind::Pd, 1 << 30),
                (21, "pt", ObjectKind::Pt, 1 << 21),
            ];
            let depth = if m.size_bits == 21 { 2 } else { 3 };
            for (shift, what, kind, span) in &levels[..depth] {
                let key = (table, idx(*shift));
                table = match slots.get(&key) {
                    Some(Some(next)) => *next,
                    Some(None) => return Err(collision(m.vaddr)),
                    None => {
                        let base = m.vaddr & !(span - 1);
                        let next = self.object(&format!("{prefix}_{what}_{base:x}"), kind.clone());
                        slots.insert(key, Some(next));
                        self.cap(table, key.1, next, 0, 0);
                        next
                    }
                };
            }
            let key = (table, idx(if m.size_bits == 21 { 21 } else { 12 }));
            if slots.insert(key, None).is_some() {
                return Err(collision(m.vaddr));
            }
            self.spec.caps.push(Cap {
                holder: table,
                slot: key.1,
                target: m.frame,
                rights: m.rights,
                badge: 0,
                guard: 0,
                guard_size: 0,
                uncached: m.uncached,
            });
        }
        Ok(())
    }
}

/// Builds the capDL spec of `system`.
pub fn build(system: &System) -> Result<Spec, BuildError> {
    let mut b = Builder {
        spec: Spec {
            nx: system.nx,
            timer_kind: system.timer.device.kind(),
            frame_pool: system.frame_pool,
            objects: Vec::new(),
            caps: Vec::new(),
            pds: Vec::new(),
            vms: Vec::new(),
            sections: Vec::new(),
        },
        pds: Vec::new(),
    };

    // Step 1: shared IPC objects. The root task keeps its own capability to the fault
    // endpoint and receives every PD's faults on it (it is the supervisor).
    b.section("step 1: shared endpoints and notifications");
    let fault_ep = b.object("fault_ep", ObjectKind::Endpoint);
    let console_ep = b.object("console_ep", ObjectKind::Endpoint);
    let mmu_ep = b.object("mmu_ep", ObjectKind::Endpoint);
    let mmu_ntfn = b.object("mmu_ntfn", ObjectKind::Notification);

    // Step 2: protection domains, in a fixed order: mmu-server, UART, timer, then one
    // vmm-server per VM in spec order. A PD's index is its fault and console badge.
    b.section("step 2: protection domains (TCB, CNode, VSpace root, image, stack, IPC buffer, boot parameters)");
    let mmu_pd = b.protection_domain("mmu_server", PdKind::MmuServer, None, &system.mmu_server);
    let uart_pd = b.protection_domain("uart", PdKind::UartDriver, None, &system.uart.pd);
    let timer_pd = b.protection_domain("timer", PdKind::TimerDriver, None, &system.timer.pd);
    let vmm_pds: Vec<usize> = system
        .vms
        .iter()
        .enumerate()
        .map(|(i, vm)| {
            let mut cfg = system.vmm_server.clone();
            if let Some(prio) = vm.priority {
                cfg.priority = prio;
            }
            b.protection_domain(
                &format!("vmm_{}", vm.name),
                PdKind::VmmServer,
                Some(i as u32),
                &cfg,
            )
        })
        .collect();

    // Step 3: the page-table pool. The mmu-server writes EPT and shadow tables into it;
    // each vmm-server's software vCPU walks them as hardware would, so it reads them
    // but never writes them.
    b.section("step 3: the mmu-server's page-table pool");
    let (_, pool) = b.contiguous_region("pool", system.frame_pool, true);
    b.map_region(mmu_pd, POOL_VADDR, &pool, RW);
    for &pd in &vmm_pds {
        b.map_region(pd, POOL_VADDR, &pool, R);
    }

    // Step 4: guest RAM. The vmm-server loads the guest and its vCPU runs it; the
    // mmu-server reads and A/D-updates guest page tables when it shadows them, so it
    // sees every VM's RAM too, each in its own window.
    b.section("step 4: guest RAM");
    for (i, vm) in system.vms.iter().enumerate() {
        let (ut, ram) = b.contiguous_region(&format!("vm_{}_ram", vm.name), vm.memory, true);
        b.map_region(vmm_pds[i], GUEST_RAM_VADDR, &ram, RW);
        b.map_region(mmu_pd, mmu_guest_ram_vaddr(i), &ram, RW);
        let mut flags = 0;
        if vm.cr0_wp {
            flags |= vm_flags::CR0_WP_GUEST_OWNED;
        }
        if vm.root_reuse {
            flags |= vm_flags::ROOT_REUSE;
        }
        if vm.has(Capability::NxHugePageControl) {
            flags |= vm_flags::NX_HUGE_PAGE_CONTROL;
        }
        if vm.debug_exit {
            flags |= vm_flags::DEBUG_EXIT;
        }
        if vm.disable_nx_huge_pages {
            flags |= vm_flags::DISABLE_NX_HUGE_PAGES;
        }
        b.spec.vms.push(VmInfo {
            name: vm.name.clone(),
            image: vm.image.clone(),
            cmdline: vm.cmdline.clone(),
            id: vm.id,
            mmu: match vm.mmu {
                MmuMode::Tdp => 0,
                MmuMode::Shadow => 1,
            },
            flags,
            memory: vm.memory,
            pd: vmm_pds[i] as u32,
            ram_untyped: ut,
        });
    }

    // Step 5: devices.
    b.section("step 5: devices");
    let uart_ports = b.object("uart_ports", ObjectKind::IoPorts(system.uart.ports));
    let uart_irq = system.uart.irq.map(|irq| {
        let handler = b.object("uart_irq", ObjectKind::Irq { irq });
        let ntfn = b.object("uart_irq_ntfn", ObjectKind::Notification);
        (handler, ntfn)
    });
    let timer_ports = match system.timer.device {
        TimerDevice::Pit { ports, .. } => Some(b.object("timer_ports", ObjectKind::IoPorts(ports))),
        TimerDevice::Hpet { .. } => None,
    };
    let timer_irq = b.object(
        "timer_irq",
        ObjectKind::Irq {
            irq: system.timer.device.irq(),
        },
    );
    let timer_irq_ntfn = b.object("timer_irq_ntfn", ObjectKind::Notification);
    if let TimerDevice::Hpet { paddr, .. } = system.timer.device {
        let regs = b.object(
            "timer_hpet",
            ObjectKind::Frame {
                size_bits: 12,
                paddr: Some(paddr),
            },
        );
        b.pds[timer_pd].mappings.push(Mapping {
            vaddr: DEVICE_VADDR,
            frame: regs,
            size_bits: 12,
            rights: RW,
            uncached: true,
        });
    }
    let debug_exit = system
        .vms
        .iter()
        .any(|v| v.debug_exit)
        .then(|| b.object("debug_exit_ports", ObjectKind::IoPorts(DEBUG_EXIT_PORTS)));
    // An IRQ object's slot 0 holds the notification its IRQ signals (seL4
    // IRQHandler_SetNotification needs the send right).
    if let Some((handler, ntfn)) = uart_irq {
        b.cap(handler, 0, ntfn, W, 0);
    }
    b.cap(timer_irq, 0, timer_irq_ntfn, W, 0);

    // Step 6: CSpaces.
    for pd in 0..b.pds.len() {
        let cnode = b.pds[pd].pd.cnode;
        b.cap(
            cnode,
            slot::common::FAULT_EP,
            fault_ep,
            WG,
            badge::fault(pd as u32),
        );
        if pd == uart_pd {
            b.cap(cnode, slot::common::CONSOLE_EP, console_ep, R, 0);
        } else {
            b.cap(
                cnode,
                slot::common::CONSOLE_EP,
                console_ep,
                WG,
                badge::console(pd as u32),
            );
        }
    }
    let mmu_cnode = b.pds[mmu_pd].pd.cnode;
    b.cap(mmu_cnode, slot::mmu::MMU_EP, mmu_ep, R, 0);
    b.cap(mmu_cnode, slot::mmu::MMU_NTFN, mmu_ntfn, R, 0);
    let uart_cnode = b.pds[uart_pd].pd.cnode;
    b.cap(uart_cnode, slot::uart::PORTS, uart_ports, 0, 0);
    if let Some((handler, ntfn)) = uart_irq {
        b.cap(uart_cnode, slot::uart::IRQ, handler, 0, 0);
        b.cap(uart_cnode, slot::uart::IRQ_NTFN, ntfn, R, 0);
    }
    let timer_cnode = b.pds[timer_pd].pd.cnode;
    if let Some(ports) = timer_ports {
        b.cap(timer_cnode, slot::timer::PORTS, ports, 0, 0);
    }
    b.cap(timer_cnode, slot::timer::IRQ, timer_irq, 0, 0);
    b.cap(timer_cnode, slot::timer::IRQ_NTFN, timer_irq_ntfn, R, 0);
    b.cap(
        timer_cnode,
        slot::timer::MMU_NTFN,
        mmu_ntfn,
        W,
        badge::RECOVERY_TICK,
    );
    for (i, vm) in system.vms.iter().enumerate() {
        let cnode = b.pds[vmm_pds[i]].pd.cnode;
        b.cap(
            cnode,
            slot::vmm::MMU_EP,
            mmu_ep,
            WG,
            badge::mmu_client(vm.id),
        );
        // The NxHugePageControl capability exists only for the VMs the spec grants it.
        if vm.has(Capability::NxHugePageControl) {
            b.cap(
                cnode,
                slot::vmm::NX_HUGE_PAGE_CONTROL,
                mmu_ep,
                WG,
                badge::nx_huge_page_control(vm.id),
            );
        }
        if let (true, Some(ports)) = (vm.debug_exit, debug_exit) {
            b.cap(cnode, slot::vmm::DEBUG_EXIT_PORTS, ports, 0, 0);
        }
    }

    // Step 7: VSpaces.
    b.section("step 7: paging structures");
    for pd in 0..b.pds.len() {
        b.vspace(pd)?;
    }

    // Step 8: TCBs. The CNode capability's guard makes a slot number a whole 64-bit
    // CPtr; only the mmu-server has a bound notification (timer ticks arrive in its
    // seL4_Recv loop).
    for pd in 0..b.pds.len() {
        let p = b.pds[pd].pd.clone();
        b.spec.caps.push(Cap {
            holder: p.tcb,
            slot: tcb_slot::CSPACE,
            target: p.cnode,
            rights: 0,
            badge: 0,
            guard: 0,
            guard_size: slot::CNODE_GUARD_SIZE,
            uncached: false,
        });
        b.cap(p.tcb, tcb_slot::VSPACE, p.vspace, 0, 0);
        let ipc = b.pds[pd].ipc_buffer;
        b.cap(p.tcb, tcb_slot::IPC_BUFFER, ipc, RW, 0);
        if pd == mmu_pd {
            b.cap(p.tcb, tcb_slot::BOUND_NOTIFICATION, mmu_ntfn, R, 0);
        }
    }

    b.spec.pds = b.pds.into_iter().map(|p| p.pd).collect();
    let violations = check::check(&b.spec);
    if !violations.is_empty() {
        return Err(BuildError::Check(violations));
    }
    Ok(b.spec)
}
