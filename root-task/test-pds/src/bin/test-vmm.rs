//! Test PD in a vmm-server's place, talking to the real mmu-server PD over seL4 IPC
//! with the `ipc` protocol (`sel4_pd::ipc_transport::Sel4Transport`). Its command line
//! picks its part:
//!
//! - `first`: creates its VM with one RAM slot (its guest RAM, at the hpa from its boot
//!   parameters), loads a root (`SetGuestRegs`, paging off), takes an EPT violation on a
//!   guest-physical page and walks the resulting EPT itself, through the read-only
//!   mapping of the page-table pool, to check that the leaf maps that page of its RAM;
//!   reads its statistics; invokes `NxHugePageControl` through the capability the spec
//!   granted it, which succeeds;
//! - `second`: first asks for statistics before creating a VM: the server has a VM
//!   (the first client's), but this badge names none, so the answer is `NoSuchVm`;
//!   then creates its own VM, invokes `DisableNxHugePages` for it through its ordinary
//!   capability (it was not granted the NxHugePageControl one) and is refused; reads
//!   its statistics, and ends QEMU;
//! - `restart` (with the `mmu_server_faulty` server, which dies on its first EPT
//!   violation): writes a marker into its guest RAM, creates its VM and takes an EPT
//!   violation; the server dies, the supervisor restarts it, and the restarted server
//!   answers the interrupted call with `Transport`; the VM's MMU state is gone
//!   (`NoSuchVm`), so the client re-creates it from what it holds (RAM slot, registers)
//!   and takes the EPT violation again: the new EPT maps the same RAM, where the
//!   marker still is. Then it ends QEMU.
#![no_std]
#![no_main]

use capvisor_test_pds::EXIT_PASS;
use ipc::{call, Error, MmuMode, SlotKind};
use log::{error, info};
use sel4::cap_type::IoPort;
use sel4::Cap;
use sel4_pd::ipc_transport::Sel4Transport;
use sel4_pd::layout::{GUEST_RAM_VADDR, POOL_VADDR};
use sel4_pd::{slot, BootParams};

/// Yields of the second client before it probes the server (see `second`).
const YIELDS: u32 = 2000;
const EXIT_PORTS: Cap<IoPort> = Cap::from_bits(slot::vmm::DEBUG_EXIT_PORTS);

sel4_pd::declare_main!(main);

fn main(params: &'static BootParams) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    let vm = match params.own_vm() {
        Some(vm) => *vm,
        None => {
            error!("test-vmm: no VM in the boot parameters");
            sel4_pd::fault();
        }
    };
    let id = vm.id.get();
    let mmu = Sel4Transport(Cap::from_bits(slot::vmm::MMU_EP));
    let result = match params.cmdline() {
        "first" => first(params, id, mmu),
        "second" => second(id, mmu),
        "restart" => restart(params, id, mmu),
        other => {
            error!("test-vmm: unknown part {other:?}");
            Err("command line")
        }
    };
    match result {
        Ok(()) if params.cmdline() != "first" => {
            info!("test-vmm {id}: done, exiting QEMU");
            if let Err(e) = EXIT_PORTS.ioport_out32(0xf4, EXIT_PASS) {
                error!("test-vmm {id}: isa-debug-exit: {e}");
            }
            sel4_pd::fault()
        }
        Ok(()) => {
            info!("test-vmm {id}: done");
            // Nothing left to do: give the CPU to the other client, forever.
            loop {
                sel4_sys::syscalls::yield_now();
            }
        }
        Err(what) => {
            error!("test-vmm {id}: FAILED at {what}");
            sel4_pd::fault()
        }
    }
}

fn create(mmu: &mut Sel4Transport, params: &BootParams) -> Result<(), Error> {
    let vm = params.own_vm().ok_or(Error::InvalidState)?;
    call(
        mmu,
        &ipc::CreateVm {
            mmu_mode: MmuMode::Tdp as u32,
            root_reuse: 1,
            flags: 0,
            reserved: 0,
        },
    )?;
    call(
        mmu,
        &ipc::AddMemSlot {
            base_gfn: 0,
            npages: vm.ram.bytes.get() / 4096,
            host_base: vm.ram.hpa.get(),
            kind: SlotKind::Ram as u32,
            reserved: 0,
        },
    )?;
    Ok(())
}

fn first(params: &BootParams, id: u16, mut mmu: Sel4Transport) -> Result<(), &'static str> {
    create(&mut mmu, params).map_err(|e| report(id, "CreateVm/AddMemSlot", e))?;
    info!(
        "test-vmm {id}: created VM with {} KiB of RAM at hpa {:#x}",
        params.own_vm().map_or(0, |v| v.ram.bytes.get() / 1024),
        params.own_vm().map_or(0, |v| v.ram.hpa.get())
    );
    let root = call(
        &mut mmu,
        &ipc::SetGuestRegs {
            cr0: 0x11, // PE | ET, paging off: the state QEMU's multiboot loader leaves
            cr3: 0,
            cr4: 0,
            efer: 0,
        },
    )
    .map_err(|e| report(id, "SetGuestRegs", e))?;
    let gpa = 0x5000u64;
    let fault = call(
        &mut mmu,
        &ipc::TdpFault {
            gpa,
            gla: 0,
            qualification: 0b010, // a write, to a not-present EPT entry
            rip: 0x10_0000,
        },
    )
    .map_err(|e| report(id, "TdpFault", e))?;
    info!(
        "test-vmm {id}: root {:#x} (level {}), EPT violation at gpa {gpa:#x}: outcome {}, root {:#x}",
        root.root_hpa, root.root_level, fault.outcome, fault.root_hpa
    );
    let ram_hpa = params.own_vm().map_or(0, |v| v.ram.hpa.get());
    match walk_ept(params, fault.root_hpa, gpa) {
        Some(hpa) if hpa == ram_hpa + gpa => {
            info!("test-vmm {id}: the EPT in the shared pool maps gpa {gpa:#x} to hpa {hpa:#x} = RAM + {gpa:#x}")
        }
        other => {
            error!(
                "test-vmm {id}: EPT walk of gpa {gpa:#x} gave {other:?}, RAM is at {ram_hpa:#x}"
            );
            return Err("EPT walk");
        }
    }
    let stats = call(&mut mmu, &ipc::GetStats {}).map_err(|e| report(id, "GetStats", e))?;
    info!(
        "test-vmm {id}: stats: roots allocated {}, page faults fixed {}, sptes created {}",
        stats.roots_allocated, stats.page_faults_fixed, stats.sptes_created
    );
    // The capability's invocation, in MMU_REFERENCE.md section 5's order: non-zero
    // flags, then (permission is held here) a non-zero argument, are invalid; a valid
    // request succeeds; once the VM has a vCPU it is invalid again.
    let mut nx = Sel4Transport(Cap::from_bits(slot::vmm::NX_HUGE_PAGE_CONTROL));
    let mut disable = |flags: u32, arg: u64| {
        call(
            &mut nx,
            &ipc::DisableNxHugePages {
                flags,
                reserved: 0,
                arg,
            },
        )
    };
    let r = disable(1, 0);
    info!("test-vmm {id}: DisableNxHugePages with flags 1: {r:?}");
    if r.err() != Some(Error::InvalidArgument) {
        return Err("NxHugePageControl flags check");
    }
    let r = disable(0, 1);
    info!("test-vmm {id}: DisableNxHugePages with argument 1: {r:?}");
    if r.err() != Some(Error::InvalidArgument) {
        return Err("NxHugePageControl argument check");
    }
    let r = disable(0, 0);
    info!("test-vmm {id}: DisableNxHugePages through the granted capability: {r:?}");
    if r.is_err() {
        return Err("NxHugePageControl grant");
    }
    call(&mut mmu, &ipc::VcpuCreated {}).map_err(|e| report(id, "VcpuCreated", e))?;
    let r = disable(0, 0);
    info!("test-vmm {id}: DisableNxHugePages after the vCPU exists: {r:?}");
    if r.err() != Some(Error::InvalidArgument) {
        return Err("NxHugePageControl after the vCPU");
    }
    Ok(())
}

fn second(id: u16, mut mmu: Sel4Transport) -> Result<(), &'static str> {
    // Let the first client create its VM first: both clients have the same priority,
    // so each yield runs the other one (seL4 round robin) until it blocks for good or
    // has done its part. The test checks the order in the output.
    info!("test-vmm {id}: yielding to the other client");
    for _ in 0..YIELDS {
        sel4_sys::syscalls::yield_now();
    }
    let r = call(&mut mmu, &ipc::GetStats {});
    info!("test-vmm {id}: GetStats before CreateVm: {r:?}");
    if r.err() != Some(Error::NoSuchVm) {
        return Err("badge isolation");
    }
    call(
        &mut mmu,
        &ipc::CreateVm {
            mmu_mode: MmuMode::Shadow as u32,
            root_reuse: 1,
            flags: 0,
            reserved: 0,
        },
    )
    .map_err(|e| report(id, "CreateVm", e))?;
    let r = call(
        &mut mmu,
        &ipc::DisableNxHugePages {
            flags: 0,
            reserved: 0,
            arg: 0,
        },
    );
    info!("test-vmm {id}: DisableNxHugePages of its own VM without the capability: {r:?}");
    if r.err() != Some(Error::PermissionDenied) {
        return Err("NxHugePageControl denial");
    }
    let stats = call(&mut mmu, &ipc::GetStats {}).map_err(|e| report(id, "GetStats", e))?;
    info!(
        "test-vmm {id}: own VM created, stats: roots allocated {}, page faults fixed {}",
        stats.roots_allocated, stats.page_faults_fixed
    );
    Ok(())
}

/// Creates the VM, loads a root and takes a write EPT violation at `gpa`: the
/// fault's reply.
fn fault_in(
    mmu: &mut Sel4Transport,
    params: &BootParams,
    gpa: u64,
) -> Result<ipc::FaultReply, (&'static str, Error)> {
    create(mmu, params).map_err(|e| ("CreateVm/AddMemSlot", e))?;
    call(
        mmu,
        &ipc::SetGuestRegs {
            cr0: 0x11,
            cr3: 0,
            cr4: 0,
            efer: 0,
        },
    )
    .map_err(|e| ("SetGuestRegs", e))?;
    call(
        mmu,
        &ipc::TdpFault {
            gpa,
            gla: 0,
            qualification: 0b010,
            rip: 0x10_0000,
        },
    )
    .map_err(|e| ("TdpFault", e))
}

fn restart(params: &BootParams, id: u16, mut mmu: Sel4Transport) -> Result<(), &'static str> {
    const MARKER: u64 = 0x005e_ed0f_7e57;
    let gpa = 0x5000u64;
    let ram = (GUEST_RAM_VADDR + gpa) as *mut u64;
    // SAFETY: the spec maps this VM's RAM read-write at GUEST_RAM_VADDR in this PD;
    // the gpa lies well inside its 4 MiB.
    unsafe { ram.write_volatile(MARKER) };
    match fault_in(&mut mmu, params, gpa) {
        Err(("TdpFault", Error::Transport)) => {
            info!("test-vmm {id}: TdpFault: Err(Transport): the mmu-server died serving it")
        }
        other => {
            error!("test-vmm {id}: expected the injected fault, got {other:?}");
            return Err("fault injection");
        }
    }
    let r = call(&mut mmu, &ipc::GetStats {});
    info!("test-vmm {id}: GetStats after the restart: {r:?}");
    if r.err() != Some(Error::NoSuchVm) {
        return Err("fresh server");
    }
    let fault = fault_in(&mut mmu, params, gpa).map_err(|(what, e)| report(id, what, e))?;
    let ram_hpa = params.own_vm().map_or(0, |v| v.ram.hpa.get());
    match walk_ept(params, fault.root_hpa, gpa) {
        Some(hpa) if hpa == ram_hpa + gpa => info!(
            "test-vmm {id}: re-created its MMU state; the new EPT maps gpa {gpa:#x} to RAM + {gpa:#x}"
        ),
        other => {
            error!("test-vmm {id}: EPT walk after the restart gave {other:?}");
            return Err("EPT walk after the restart");
        }
    }
    // SAFETY: as above.
    let kept = unsafe { ram.read_volatile() };
    info!("test-vmm {id}: guest RAM marker after the restart: {kept:#x}");
    if kept != MARKER {
        return Err("guest RAM");
    }
    Ok(())
}

fn report(id: u16, what: &'static str, e: Error) -> &'static str {
    error!("test-vmm {id}: {what}: {e:?}");
    what
}

/// Walks the 4-level EPT at `root_hpa` for `gpa` through the pool's read-only mapping
/// (SDM Vol. 3C 29.3.2: bits 51:12 of each entry address the next table; bit 7 in a
/// PDPTE/PDE maps a 1G/2M page; bits 2:0 = X/W/R, zero = not present). Returns the hpa.
fn walk_ept(params: &BootParams, root_hpa: u64, gpa: u64) -> Option<u64> {
    let pool = params.pool;
    let local = |hpa: u64| -> Option<*const u64> {
        let off = hpa.checked_sub(pool.hpa.get())?;
        (off < pool.bytes.get()).then_some((POOL_VADDR + off) as *const u64)
    };
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let mut table = root_hpa & ADDR;
    for (level, shift) in [(4u32, 39u32), (3, 30), (2, 21), (1, 12)] {
        let idx = (gpa >> shift) & 0x1ff;
        // SAFETY: `local` only yields addresses inside the pool, which the spec maps
        // read-only into this PD; the mmu-server writes entries atomically.
        let entry = unsafe { core::ptr::read_volatile(local(table + idx * 8)?) };
        if entry & 0b111 == 0 {
            return None;
        }
        let page_size = 1u64 << shift;
        if level == 1 || (level <= 3 && entry & (1 << 7) != 0) {
            return Some((entry & ADDR & !(page_size - 1)) + (gpa & (page_size - 1)));
        }
        table = entry & ADDR;
    }
    None
}
