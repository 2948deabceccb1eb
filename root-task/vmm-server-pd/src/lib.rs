//! The vmm-server PD: one VM, its guest running on the software vCPU inside this PD
//! (QEMU's TCG has no VT-x), exactly as the host runtime runs it (`host/src/runtime.rs`)
//! but with seL4 for a runtime:
//!
//! - **memory**: the spec maps this VM's guest RAM read-write at
//!   `layout::GUEST_RAM_VADDR` and the mmu-server's page-table pool read-only at
//!   `layout::POOL_VADDR`, each physically contiguous; the boot parameters give their
//!   host-physical addresses, so this PD describes them as one `physmem::PhysMap` with
//!   the same hpa naming as the mmu-server PD, and the vCPU walks the server's tables
//!   as hardware would (reading them, never writing them);
//! - **the guest**: the image the spec names (`image = "kernexec"`) is embedded in this
//!   PD at build time (`build.rs`, from `build/guests/`), loaded as `qemu -kernel`
//!   does, with the spec's command line;
//! - **the mmu-server**: `vmm_server::Vm` over `Sel4Transport` on the badged endpoint
//!   capability the root task minted for this VM (`slot::vmm::MMU_EP`), plus the
//!   `NxHugePageControl` capability when the spec grants it; if the mmu-server is
//!   restarted under the VM, the vmm-server re-creates its MMU state and goes on
//!   (`vmm_server::mmu_client`);
//! - **devices**: COM1 output goes line by line to the UART driver PD (the shared
//!   console), as `[vm <name>] <line>`; the wait hint (port 0x81) waits on the TSC,
//!   yielding the CPU; the guest's isa-debug-exit value `v` ends QEMU with the same
//!   status as under QEMU itself, `(v << 1) | 1`, through the real isa-debug-exit port
//!   when the spec gives this VM its capability (`debug_exit = true`);
//! - **the end**: a VM the vmm-server stops (or cannot start) is a diagnostic (reason,
//!   RIP, instruction bytes) and a distinct QEMU status, [`EXIT_VM_STOPPED`] or
//!   [`EXIT_VM_NOT_STARTED`]; then the PD tells the supervisor it finished and never
//!   runs again (`sel4_pd::done`).
#![no_std]

mod console;
mod guests;

use console::PdHost;
use log::{error, info};
use sel4::cap_type::IoPort;
use sel4::Cap;
use sel4_pd::capdl_spec::vm_flags;
use sel4_pd::heap::BumpHeap;
use sel4_pd::ipc_transport::Sel4Transport;
use sel4_pd::layout::{GUEST_RAM_VADDR, POOL_VADDR};
use sel4_pd::{slot, BootParams};
use vmm_server::guest_ram::PhysRam;
use vmm_server::loader::BootArgs;
use vmm_server::{Capabilities, Cr0WpPolicy, Vm, VmConfig, VmOutcome};

/// Written to isa-debug-exit when the vmm-server stopped the VM (a `Failure`): QEMU
/// exits with `(0x30 << 1) | 1` = 97, which no guest value 0..=4 gives.
pub const EXIT_VM_STOPPED: u32 = 0x30;
/// Written when the VM could not start (unknown image, bad image, the mmu-server
/// refused to create it): QEMU exits with `(0x31 << 1) | 1` = 99.
pub const EXIT_VM_NOT_STARTED: u32 = 0x31;

const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Runs this PD's VM to its end.
pub fn run<const N: usize>(params: &'static BootParams, heap: &'static BumpHeap<N>) -> ! {
    sel4_pd::logger::init(sel4_pd::logger::console_sink, log::LevelFilter::Info);
    let name = params.vm_name();
    let Some(vm) = params.own_vm().copied() else {
        error!("vmm-server: no VM in the boot parameters");
        sel4_pd::fault();
    };
    let debug_exit = vm.flags & vm_flags::DEBUG_EXIT != 0;
    let status = match start_and_run(params, &vm, heap) {
        Ok(VmOutcome::Exited { status }) => {
            info!(
                "vmm-server {name}: guest exited with status {status} (isa-debug-exit value {})",
                status >> 1
            );
            status >> 1
        }
        Ok(VmOutcome::Failed(failure)) => {
            error!("vmm-server {name}: {failure}");
            EXIT_VM_STOPPED
        }
        Err(()) => EXIT_VM_NOT_STARTED,
    };
    if debug_exit {
        let ports: Cap<IoPort> = Cap::from_bits(slot::vmm::DEBUG_EXIT_PORTS);
        if let Err(e) = ports.ioport_out32(DEBUG_EXIT_PORT, status) {
            error!("vmm-server {name}: isa-debug-exit: {e}");
        }
    }
    // Without the debug-exit capability (or without the device) the run goes on for the
    // other VMs; this one is over.
    sel4_pd::done(((status as u64) << 1) | 1)
}

/// The memory this PD sees, named by host-physical address: the VM's RAM and the
/// mmu-server's page-table pool (read-only).
fn phys_map(
    params: &BootParams,
    vm: &sel4_pd::capdl_spec::boot::BootVm,
) -> Option<physmem::PhysMap> {
    let mut map = physmem::PhysMap::new();
    let ram = core::ptr::NonNull::new(GUEST_RAM_VADDR as *mut u8)?;
    let pool = core::ptr::NonNull::new(POOL_VADDR as *mut u8)?;
    // SAFETY: the spec maps this VM's RAM read-write at GUEST_RAM_VADDR and the pool
    // read-only at POOL_VADDR, for this PD's lifetime, each one physically contiguous
    // range starting at the hpa the root task wrote into the boot parameters. The
    // mmu-server writes the pool and this VM's RAM concurrently only as hardware and
    // an OS would (atomic entries), which is how PhysMap accesses them.
    unsafe {
        map.add_region(vm.ram.hpa.get(), ram, vm.ram.bytes.get(), true)
            .ok()?;
        if params.pool.bytes.get() != 0 {
            map.add_region(params.pool.hpa.get(), pool, params.pool.bytes.get(), false)
                .ok()?;
        }
    }
    Some(map)
}

fn start_and_run<const N: usize>(
    params: &'static BootParams,
    vm: &sel4_pd::capdl_spec::boot::BootVm,
    heap: &'static BumpHeap<N>,
) -> Result<VmOutcome, ()> {
    let name = params.vm_name();
    let image_name = params.image();
    let Some(image) = guests::find(image_name) else {
        error!(
            "vmm-server {name}: no guest image {image_name:?} in this PD (it carries {})",
            guests::Names
        );
        return Err(());
    };
    let Some(map) = phys_map(params, vm) else {
        error!("vmm-server {name}: cannot describe its RAM and the page-table pool");
        return Err(());
    };
    let ram = PhysRam::new(map, vm.ram.hpa.get(), vm.ram.bytes.get()).map_err(|_| {
        error!("vmm-server {name}: guest RAM is not mapped");
    })?;
    let mut mmu = Sel4Transport(Cap::from_bits(slot::vmm::MMU_EP));
    // Isolation, as the mmu-server sees it: this badge names only this VM, which does
    // not exist yet, whatever other VMs the server holds.
    let probe = ipc::call(&mut mmu, &ipc::GetStats {});
    info!(
        "vmm-server {name}: VM {} before CreateVm: GetStats with its badge: {}",
        vm.id.get(),
        match probe {
            Ok(_) => "Ok (a VM already exists for this badge)",
            Err(ipc::Error::NoSuchVm) => "NoSuchVm (no other VM's MMU state is reachable)",
            Err(_) => "refused",
        }
    );
    let cfg = config(vm);
    let granted = vm.flags & vm_flags::NX_HUGE_PAGE_CONTROL != 0;
    let caps = Capabilities {
        nx_huge_page_control: granted
            .then(|| Sel4Transport(Cap::from_bits(slot::vmm::NX_HUGE_PAGE_CONTROL))),
    };
    let mut v = Vm::with_capabilities(cfg, mmu, caps, ram).map_err(|e| {
        error!("vmm-server {name}: cannot create the VM: {e}");
    })?;
    if let Some(result) = v.nx_disable_result() {
        match result {
            Ok(()) => info!(
                "vmm-server {name}: NX huge pages disabled for this VM through its NxHugePageControl capability"
            ),
            Err(e) => info!(
                "vmm-server {name}: NxHugePageControl refused ({}): {}; the VM runs with the mitigation",
                e.error,
                if granted {
                    "the request was invalid"
                } else {
                    "this VM does not hold the capability"
                }
            ),
        }
    }
    let kernel = v
        .load(
            image,
            BootArgs {
                kernel_name: image_name,
                append: params.cmdline(),
            },
        )
        .map_err(|e| {
            error!("vmm-server {name}: {e}");
        })?;
    info!(
        "vmm-server {name}: {image_name} loaded ({} bytes, entry {:#x}), {} MiB of RAM, {} paging, heap {} KiB used; running",
        image.len(),
        kernel.boot.eip,
        vm.ram.bytes.get() >> 20,
        if vm.mmu == 0 { "TDP" } else { "shadow" },
        heap.used() / 1024
    );
    let mut host = PdHost::new(name, params.tsc_mhz.get());
    let outcome = v.run(&mut host);
    host.flush();
    let stats = v.stats();
    info!(
        "vmm-server {name}: {} instructions, {} exits, {} mmu-server calls, MMU state re-created {} time(s); mmu: pages_2m {}, nx_lpage_splits {}",
        stats.instructions,
        stats.exits.total(),
        stats.ipc_calls,
        v.mmu_recreations(),
        stats.mmu.pages_2m,
        stats.mmu.nx_lpage_splits
    );
    Ok(outcome)
}

/// The VM's settings from the spec.
fn config(vm: &sel4_pd::capdl_spec::boot::BootVm) -> VmConfig {
    let mode = if vm.mmu == 0 {
        ipc::MmuMode::Tdp
    } else {
        ipc::MmuMode::Shadow
    };
    let mut cfg = VmConfig::new(mode);
    cfg.cr0_wp = if vm.flags & vm_flags::CR0_WP_GUEST_OWNED != 0 {
        Cr0WpPolicy::GuestOwned
    } else {
        Cr0WpPolicy::Intercept
    };
    cfg.root_reuse = vm.flags & vm_flags::ROOT_REUSE != 0;
    cfg.disable_nx_huge_pages = vm.flags & vm_flags::DISABLE_NX_HUGE_PAGES != 0;
    cfg
}
