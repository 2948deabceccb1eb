//! The mmu-server PD. At start it describes the memory the spec mapped into it as a
//! `physmem::PhysMap` (the page-table pool at `layout::POOL_VADDR`, VM *i*'s guest RAM at
//! `layout::mmu_guest_ram_vaddr(i)`, at the host-physical addresses the root task wrote
//! into the boot parameters), builds the `MmuServer` in place in .bss, and then serves
//! its endpoint with one `seL4_ReplyRecv` loop:
//!
//! - a call carries `ipc` request bytes and goes to `MmuServer::handle` with the badge
//!   of the caller's capability, as the root task minted it: `MMU_CALL | vm id`, plus
//!   the `NX_HUGE_PAGE_CONTROL` bit on a granted VM's second capability. The server
//!   names the VM with that bit masked off and reads the bit as holding
//!   `NxHugePageControl` (`ipc::badge`, the same bit as `capdl_spec::badge`);
//! - a signal on the bound notification is the timer PD's NX-huge-page recovery tick:
//!   `MmuServer::recovery_tick`.
//!
//! The NX-huge-page mode and recovery settings come from the spec (boot parameters).
//!
//! After a restart by the supervisor (`sel4_pd::restarts() > 0`) the server starts
//! empty; first it answers the call it was serving when it died (its reply capability
//! survives in its TCB) with `ipc::Error::Transport`, so that caller is not left
//! blocked; every VM then gets `NoSuchVm` and re-creates its state.
//!
//! Three binaries: `mmu_server`, and for test specs `mmu_server_faulty`, which dies on
//! its first `TdpFault` request of its first life, and `mmu_server_faulty_late`, which
//! dies on the 400th request of its first life, in the middle of a guest's run (faults
//! injected to exercise the supervisor's restart and the VMs' re-creation of their MMU
//! state).
#![no_std]

use core::mem::MaybeUninit;
use core::ptr::NonNull;
use ipc::{Label, Server};
use log::{error, info};
use mmu_server::{MmuServer, ServerConfig};
use physmem::PhysMap;
use sel4::Cap;
use sel4_pd::badge::{self, decode_mmu_badge, MmuCaller};
use sel4_pd::ipc_transport::{Incoming, Sel4Server};
use sel4_pd::layout::{mmu_guest_ram_vaddr, PAGE_SIZE, POOL_VADDR};
use sel4_pd::{slot, BootParams};

/// The server, built in place: it is large and never moves.
struct Slot(core::cell::UnsafeCell<MaybeUninit<MmuServer>>);
// SAFETY: this PD has one thread; the slot is borrowed once, in `main`.
unsafe impl Sync for Slot {}
static SERVER: Slot = Slot(core::cell::UnsafeCell::new(MaybeUninit::uninit()));

/// The memory the spec mapped into this PD, as host-physical regions.
fn phys_map(params: &BootParams) -> Result<PhysMap, physmem::MapError> {
    let mut map = PhysMap::new();
    let pool = params.pool;
    // SAFETY: the spec maps the pool read-write at POOL_VADDR and VM i's RAM read-write
    // at mmu_guest_ram_vaddr(i), each physically contiguous (the root task retypes
    // them in order from one untyped) and mapped for this PD's lifetime; other PDs
    // (vmm-servers) touch them only as hardware would, through atomics.
    unsafe {
        map.add_region(
            pool.hpa.get(),
            NonNull::new_unchecked(POOL_VADDR as *mut u8),
            pool.bytes.get(),
            true,
        )?;
        for (i, vm) in params.vms().iter().enumerate() {
            map.add_region(
                vm.ram.hpa.get(),
                NonNull::new_unchecked(mmu_guest_ram_vaddr(i) as *mut u8),
                vm.ram.bytes.get(),
                true,
            )?;
        }
    }
    Ok(map)
}

/// A request that kills the server (test builds only), in its first life: the first
/// request with `label` (any label if `None`) once `after` requests were served.
#[derive(Clone, Copy, Debug)]
pub struct InjectFault {
    pub label: Option<Label>,
    pub after: u64,
}

/// Runs the mmu-server PD.
pub fn run(params: &'static BootParams, inject: Option<InjectFault>) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    let phys = match phys_map(params) {
        Ok(m) => m,
        Err(e) => {
            error!("mmu-server: cannot describe its memory: {e:?}");
            sel4_pd::fault();
        }
    };
    let pool_frames = (params.pool.bytes.get() / PAGE_SIZE) as usize;
    let config = ServerConfig {
        phys,
        pool_base: params.pool.hpa.get(),
        pool_frames,
    };
    // SAFETY: the only reference to SERVER's contents, taken once.
    let slot = unsafe { &mut *SERVER.0.get() };
    let server = match MmuServer::init_in_place(slot, config) {
        Ok(s) => s,
        Err(e) => {
            error!("mmu-server: cannot build its frame pool: {e:?}");
            sel4_pd::fault();
        }
    };
    let mode = nx_mode(params.nx_mode());
    if let Err(e) = server.set_nx_huge_pages(mode) {
        error!("mmu-server: NX huge pages mode {mode:?}: {e:?}");
        sel4_pd::fault();
    }
    server.set_nx_recovery(
        params.nx_recovery_ratio.get(),
        params.nx_recovery_period_ms.get(),
    );
    info!(
        "mmu-server: pool of {pool_frames} frames at hpa {:#x}, {} VM(s) mapped, serving",
        params.pool.hpa.get(),
        params.vm_count.get()
    );
    let restarts = sel4_pd::restarts();
    if restarts > 0 {
        info!("mmu-server: restarted ({restarts}), answering the interrupted call");
        let mut reply = [0u8; ipc::MAX_MSG_BYTES];
        let n = ipc::encode_error_reply(ipc::Error::Transport, &mut reply);
        let len = sel4_pd::bytes::set_mrs(&reply[..n]);
        sel4::reply(sel4::MessageInfo::new(
            sel4_pd::ipc_transport::LABEL_IPC,
            0,
            0,
            len as u64,
        ));
    }
    let inject = inject.filter(|_| restarts == 0);
    serve(server, inject)
}

fn serve(server: &mut MmuServer, inject: Option<InjectFault>) -> ! {
    let ep = Sel4Server::new(Cap::from_bits(slot::mmu::MMU_EP));
    let is_signal = |b: u64| matches!(decode_mmu_badge(b), MmuCaller::Notification(_));
    let mut req = [0u8; ipc::MAX_MSG_BYTES];
    let mut reply = [0u8; ipc::MAX_MSG_BYTES];
    let mut ticks = 0u64;
    let mut served = 0u64;
    let mut incoming = ep.recv(&mut req, is_signal);
    loop {
        let n = match incoming {
            Incoming::Signal { bits } => {
                if bits & badge::RECOVERY_TICK != 0 {
                    ticks += 1;
                    let recovered = server.recovery_tick();
                    if ticks == 1 || recovered > 0 {
                        info!("mmu-server: recovery tick {ticks}: {recovered} page(s) recovered");
                    }
                }
                // A signal has no caller to answer.
                incoming = ep.recv(&mut req, is_signal);
                continue;
            }
            Incoming::Malformed { badge } => {
                error!("mmu-server: malformed message from badge {badge:#x}");
                ipc::encode_error_reply(ipc::Error::Transport, &mut reply)
            }
            Incoming::Request { badge, bytes } => match decode_mmu_badge(badge) {
                MmuCaller::Vm { vm_id, .. } => {
                    served += 1;
                    if let Some(InjectFault { label, after }) = inject {
                        let code = label_of(bytes);
                        let hit = match label {
                            Some(l) => code == Some(l.code()),
                            None => true,
                        };
                        if hit && served > after {
                            match label {
                                Some(l) => {
                                    error!("mmu-server: injected fault on {l:?} from VM {vm_id}")
                                }
                                None => error!(
                                    "mmu-server: injected fault on request {served} (label {:#x}) from VM {vm_id}",
                                    code.unwrap_or(0)
                                ),
                            }
                            sel4_pd::fault();
                        }
                    }
                    server.handle(badge, bytes, &mut reply)
                }
                MmuCaller::Notification(_) => {
                    ipc::encode_error_reply(ipc::Error::Transport, &mut reply)
                }
            },
        };
        incoming = ep.reply_recv(&reply[..n], &mut req, is_signal);
    }
}

/// The spec's NX-huge-page mode as the protocol names it.
fn nx_mode(m: sel4_pd::capdl_spec::NxMode) -> ipc::NxMode {
    use sel4_pd::capdl_spec::NxMode as Spec;
    match m {
        Spec::Auto => ipc::NxMode::Auto,
        Spec::On => ipc::NxMode::On,
        Spec::Off => ipc::NxMode::Off,
        Spec::Force => ipc::NxMode::Force,
        Spec::Never => ipc::NxMode::Never,
    }
}

/// The label of a request (its first 4 bytes).
fn label_of(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
}
