//! The VM survives a restart of the mmu-server, as on seL4 when the supervisor restarts
//! a faulting mmu-server PD: the call the server died serving fails with `Transport`,
//! the new server knows no VM (`NoSuchVm`), and the vmm-server re-creates its MMU
//! state (CreateVm, the RAM slot, VcpuCreated, SetGuestRegs with the registers the old
//! server had) and goes on. The guest (kernexec, `make guests`) must finish with
//! exactly the output and status it has without a restart.
//!
//! The vmm-server's view of the page-table pool is read-only here, as the seL4 spec
//! maps it: the vCPU walks the mmu-server's tables and never writes them.

use mmu_server::{MmuServer, ServerConfig};
use physmem::PhysMap;
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::ptr::NonNull;
use std::rc::Rc;
use vmm_server::config::MmuMode;
use vmm_server::devices::SerialSink;
use vmm_server::guest_ram::PhysRam;
use vmm_server::loader::BootArgs;
use vmm_server::{Vm, VmConfig, VmHost, VmOutcome};

const RAM_HPA: u64 = 1 << 32;
const RAM_BYTES: u64 = 48 << 20;
const POOL_HPA: u64 = 1 << 30;
const POOL_BYTES: u64 = 4 << 20;
const BADGE: ipc::Badge = 1;

/// Page-aligned zeroed host memory.
struct Block {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl Block {
    fn new(bytes: u64) -> Block {
        let layout = Layout::from_size_align(bytes as usize, 1 << 21).unwrap();
        // SAFETY: a non-zero size.
        let ptr = NonNull::new(unsafe { alloc_zeroed(layout) }).expect("memory");
        Block { ptr, layout }
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `new`.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// The mmu-server, which a test can kill: the next call is answered by a fresh server
/// built in the same place (as the supervisor reloads the PD's image).
struct Restartable {
    slot: Box<MaybeUninit<MmuServer>>,
    phys: PhysMap,
    /// Requests served so far, and the label of the request to die on (once).
    served: u64,
    die_on: Option<(ipc::Label, u64)>,
    deaths: u32,
}

impl Restartable {
    fn start(&mut self) {
        let config = ServerConfig {
            phys: self.phys.clone(),
            pool_base: POOL_HPA,
            pool_frames: (POOL_BYTES / 4096) as usize,
        };
        MmuServer::init_in_place(&mut self.slot, config).expect("pool");
    }
}

#[derive(Clone)]
struct Channel(Rc<RefCell<Restartable>>);

impl ipc::Transport for Channel {
    fn call(
        &mut self,
        request: &[u8],
        reply: &mut [u8; ipc::MAX_MSG_BYTES],
    ) -> Result<usize, ipc::Error> {
        let mut s = self.0.borrow_mut();
        s.served += 1;
        let label = request
            .get(..4)
            .map(|l| u32::from_le_bytes(l.try_into().unwrap()));
        if let Some((die_label, after)) = s.die_on {
            if label == Some(die_label.code()) && s.served > after {
                // It dies serving this request; the supervisor restarts it and it
                // answers the interrupted call with Transport.
                s.die_on = None;
                s.deaths += 1;
                s.start();
                return Err(ipc::Error::Transport);
            }
        }
        // SAFETY: `start` initialised the slot before the first call.
        let server = unsafe { s.slot.assume_init_mut() };
        Ok(ipc::Server::handle(server, BADGE, request, reply))
    }
}

#[derive(Default)]
struct Host {
    serial: Vec<u8>,
}

impl SerialSink for Host {
    fn put(&mut self, byte: u8) {
        self.serial.push(byte);
    }
}

impl VmHost for Host {
    fn wait(&mut self, _ms: u32) {}
}

fn guest(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../build/guests")
        .join(format!("{name}.elf"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}: run `make guests` first", path.display()))
}

struct Run {
    outcome: VmOutcome,
    serial: String,
    deaths: u32,
    recreations: u32,
}

fn run(mode: MmuMode, die_on: Option<(ipc::Label, u64)>) -> Run {
    let ram = Block::new(RAM_BYTES);
    let pool = Block::new(POOL_BYTES);
    let map = |pool_writable: bool| {
        let mut m = PhysMap::new();
        // SAFETY: both blocks outlive every map (dropped at the end of this function,
        // after the VM and the server).
        unsafe {
            m.add_region(RAM_HPA, ram.ptr, RAM_BYTES, true).unwrap();
            m.add_region(POOL_HPA, pool.ptr, POOL_BYTES, pool_writable)
                .unwrap();
        }
        m
    };
    let server = Rc::new(RefCell::new(Restartable {
        slot: Box::new(MaybeUninit::uninit()),
        phys: map(true),
        served: 0,
        die_on,
        deaths: 0,
    }));
    server.borrow_mut().start();
    let vm_ram = PhysRam::new(map(false), RAM_HPA, RAM_BYTES).unwrap();
    let mut vm = Vm::new(VmConfig::new(mode), Channel(server.clone()), vm_ram).expect("VM");
    vm.load(
        &guest("kernexec"),
        BootArgs {
            kernel_name: "kernexec",
            append: "iters=20 ws=8",
        },
    )
    .expect("load");
    let mut host = Host::default();
    let outcome = vm.run(&mut host);
    let recreations = vm.mmu_recreations();
    drop(vm);
    let deaths = server.borrow().deaths;
    Run {
        outcome,
        serial: String::from_utf8_lossy(&host.serial).into_owned(),
        deaths,
        recreations,
    }
}

/// Runs kernexec without and with the server dying once on `die_on`; `recreations`:
/// how often the VM must re-create its MMU state (0 when it died creating it).
fn check_recreations(mode: MmuMode, die_on: (ipc::Label, u64), recreations: u32) {
    let reference = run(mode, None);
    assert_eq!(
        reference.outcome,
        VmOutcome::Exited { status: 1 },
        "{}",
        reference.serial
    );
    assert!(
        reference.serial.contains("kernexec: PASS"),
        "{}",
        reference.serial
    );
    assert_eq!((reference.deaths, reference.recreations), (0, 0));

    let r = run(mode, Some(die_on));
    assert_eq!(r.deaths, 1, "the server died once ({mode:?}, {die_on:?})");
    assert_eq!(
        r.recreations, recreations,
        "the VM re-created its MMU state {recreations} time(s)"
    );
    assert_eq!(r.outcome, VmOutcome::Exited { status: 1 }, "{}", r.serial);
    assert_eq!(
        r.serial, reference.serial,
        "same output as without the restart"
    );
}

fn check(mode: MmuMode, die_on: (ipc::Label, u64)) {
    check_recreations(mode, die_on, 1);
}

#[test]
fn a_tdp_vm_finishes_after_the_mmu_server_dies_on_an_ept_violation() {
    // Late enough that the guest runs in long mode with its own tables (kernexec
    // makes about 14 calls under TDP: its RAM is mapped by huge pages).
    check(MmuMode::Tdp, (ipc::Label::TdpFault, 6));
}

#[test]
fn a_shadow_vm_finishes_after_the_mmu_server_dies_on_a_page_fault() {
    check(MmuMode::Shadow, (ipc::Label::ShadowFault, 200));
}

#[test]
fn a_shadow_vm_finishes_after_the_mmu_server_dies_on_a_cr_write() {
    check(MmuMode::Shadow, (ipc::Label::CrWrite, 10));
}

#[test]
fn a_vm_is_created_when_the_mmu_server_dies_on_its_create_vm() {
    // Nothing to re-create: CreateVm alone is sent again.
    check_recreations(MmuMode::Tdp, (ipc::Label::CreateVm, 0), 0);
}

#[test]
fn a_vm_whose_server_stays_dead_stops_with_a_diagnostic() {
    // A server that fails every call after creation: re-creation fails too, and the
    // VM stops naming the request, instead of looping.
    struct Dead(Channel, u32);
    impl ipc::Transport for Dead {
        fn call(
            &mut self,
            request: &[u8],
            reply: &mut [u8; ipc::MAX_MSG_BYTES],
        ) -> Result<usize, ipc::Error> {
            self.1 += 1;
            if self.1 > 2 {
                return Err(ipc::Error::Transport);
            }
            self.0.call(request, reply)
        }
    }
    let ram = Block::new(RAM_BYTES);
    let pool = Block::new(POOL_BYTES);
    let mut m = PhysMap::new();
    // SAFETY: the blocks outlive the map's users (dropped last).
    unsafe {
        m.add_region(RAM_HPA, ram.ptr, RAM_BYTES, true).unwrap();
        m.add_region(POOL_HPA, pool.ptr, POOL_BYTES, true).unwrap();
    }
    let server = Rc::new(RefCell::new(Restartable {
        slot: Box::new(MaybeUninit::uninit()),
        phys: m.clone(),
        served: 0,
        die_on: None,
        deaths: 0,
    }));
    server.borrow_mut().start();
    let vm_ram = PhysRam::new(m, RAM_HPA, RAM_BYTES).unwrap();
    // CreateVm and AddMemSlot pass; VcpuCreated fails, and so does every re-creation.
    let err = match Vm::new(
        VmConfig::new(MmuMode::Tdp),
        Dead(Channel(server.clone()), 0),
        vm_ram,
    ) {
        Err(e) => e,
        Ok(_) => panic!("a dead server cannot finish creating the VM"),
    };
    assert_eq!(
        err.to_string(),
        "mmu-server refused VcpuCreated: transport failure (error 11)"
    );
}
