//! The mmu-server PD. At start it describes the memory the spec mapped into it as a
//! `physmem::PhysMap` (the page-table pool at `layout::POOL_VADDR`, VM *i*'s guest RAM at
//! `layout::mmu_guest_ram_vaddr(i)`, at the host-physical addresses the root task wrote
//! into the boot parameters), builds the `MmuServer` in place in .bss, and then serves
//! its endpoint with one `seL4_ReplyRecv` loop:
//!
//! - a call carries `ipc` request bytes; the badge of the caller's capability names its
//!   VM (`badge::decode_mmu_badge`). The server sees the VM's ordinary badge whichever
//!   of its two capabilities was used, so a VM is one VM to it;
//! - `DisableNxHugePages` is the invocation of the `NxHugePageControl` capability: it is
//!   refused with `PermissionDenied` unless it came through a capability with the
//!   `NX_HUGE_PAGE_CONTROL` badge bit, which the root task mints only for granted VMs;
//! - a signal on the bound notification is the timer PD's NX-huge-page recovery tick.
#![no_std]
#![no_main]

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

sel4_pd::declare_main!(main);

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

fn main(params: &'static BootParams) -> ! {
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
    info!(
        "mmu-server: pool of {pool_frames} frames at hpa {:#x}, {} VM(s) mapped, serving",
        params.pool.hpa.get(),
        params.vm_count.get()
    );
    serve(server)
}

fn serve(server: &mut MmuServer) -> ! {
    let ep = Sel4Server::new(Cap::from_bits(slot::mmu::MMU_EP));
    let is_signal = |b: u64| matches!(decode_mmu_badge(b), MmuCaller::Notification(_));
    let mut req = [0u8; ipc::MAX_MSG_BYTES];
    let mut reply = [0u8; ipc::MAX_MSG_BYTES];
    let mut ticks = 0u64;
    let mut incoming = ep.recv(&mut req, is_signal);
    loop {
        let n = match incoming {
            Incoming::Signal { bits } => {
                if bits & badge::RECOVERY_TICK != 0 {
                    ticks += 1;
                    if ticks == 1 {
                        info!("mmu-server: first NX-huge-page recovery tick");
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
                MmuCaller::Vm { vm_id, nx_control } => {
                    if is_nx_control(bytes) && !nx_control {
                        ipc::encode_error_reply(ipc::Error::PermissionDenied, &mut reply)
                    } else {
                        server.handle(badge::mmu_client(vm_id), bytes, &mut reply)
                    }
                }
                MmuCaller::Notification(_) => {
                    ipc::encode_error_reply(ipc::Error::Transport, &mut reply)
                }
            },
        };
        incoming = ep.reply_recv(&reply[..n], &mut req, is_signal);
    }
}

/// The request is an invocation of NxHugePageControl.
fn is_nx_control(bytes: &[u8]) -> bool {
    bytes
        .get(..4)
        .map(|l| u32::from_le_bytes([l[0], l[1], l[2], l[3]]))
        == Some(Label::DisableNxHugePages.code())
}
