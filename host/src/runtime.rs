//! Runs one VM on the host: one mmu-server thread and one vmm-server (the calling
//! thread), joined by a [`crate::channel`] mailbox that carries the ipc bytes. Guest RAM
//! and the frame pool are allocated once ([`HostMemory`]) and both servers see them
//! through the same [`physmem::PhysMap`] layout.

use crate::channel::{self, Doorbell};
use crate::memory::{HostMemory, MemoryError, GUEST_RAM_HPA};
use mmu_server::{MmuServer, ServerConfig};
use std::thread;
use vmm_server::guest_ram::PhysRam;
use vmm_server::loader::{BootArgs, LoadedKernel};
use vmm_server::mmu_client::MmuCallError;
use vmm_server::stats::{Checkpoint, VmStats};
use vmm_server::{Vm, VmConfig, VmError, VmHost, VmOutcome};

/// The badge the runtime mints for the VM's endpoint to the mmu-server.
pub const VM_BADGE: ipc::Badge = 1;

/// The system-wide NX-huge-page mode (issue 5), passed to the mmu-server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NxHugePages {
    Auto,
    On,
    Off,
    Force,
    Never,
}

/// Everything `capvisor run` needs.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The guest image bytes.
    pub image: Vec<u8>,
    /// The guest's name on the multiboot command line (QEMU uses the path as given).
    pub kernel_name: String,
    /// The rest of the command line (`--append`).
    pub append: String,
    pub vm: VmConfig,
    /// Guest RAM in bytes.
    pub mem: u64,
    /// Page-table frame pool in bytes.
    pub pool: u64,
    pub nx_huge_pages: NxHugePages,
    /// The VM holds the NxHugePageControl capability.
    pub grant_nx_huge_page_control: bool,
}

/// How a run ended.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub outcome: VmOutcome,
    /// Counters at the end of the run (mmu statistics included).
    pub stats: VmStats,
    pub checkpoints: Vec<Checkpoint>,
    pub kernel: LoadedKernel,
    /// The answer to `--disable-nx-huge-pages`, if it was asked.
    pub nx_disable: Option<Result<(), MmuCallError>>,
}

/// Why a run could not start.
#[derive(Debug)]
pub enum RunError {
    Memory(MemoryError),
    /// The mmu-server could not be built (bad pool size).
    MmuServer(String),
    /// The mmu-server died under the running VM.
    MmuServerDied(String),
    Vm(VmError),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Memory(e) => write!(f, "host memory: {e}"),
            RunError::MmuServer(e) => write!(f, "mmu-server: {e}"),
            RunError::MmuServerDied(e) => write!(f, "mmu-server: {e}"),
            RunError::Vm(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for RunError {}

/// Stack of the mmu-server thread (the server itself lives on the heap).
const MMU_STACK: usize = 16 << 20;

/// Boots the guest and runs it to the end. COM1 output and checkpoints go to `host`.
pub fn run(cfg: &RunConfig, host: &mut impl VmHost) -> Result<RunResult, RunError> {
    let memory = HostMemory::new(cfg.mem, cfg.pool).map_err(RunError::Memory)?;
    let map = memory.phys_map().map_err(RunError::Memory)?;
    let pool = memory.pool_range();
    let bell = Doorbell::new();
    let (client, server_end) = channel::channel(&bell, VM_BADGE);

    thread::scope(|scope| {
        let mmu_map = map.clone();
        let mmu_bell = bell.clone();
        let mmu_thread = thread::Builder::new()
            .name("mmu-server".into())
            .stack_size(MMU_STACK)
            .spawn_scoped(scope, move || -> Result<(), RunError> {
                let frames = ((pool.end - pool.start) / physmem::PAGE_SIZE) as usize;
                // Built in place on the heap: the server is large and fixed-size.
                let mut slot = Box::new(std::mem::MaybeUninit::<MmuServer>::uninit());
                let ends = [server_end];
                let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let server = MmuServer::init_in_place(
                        &mut slot,
                        ServerConfig {
                            phys: mmu_map,
                            pool_base: pool.start,
                            pool_frames: frames,
                        },
                    )
                    .map_err(|e| {
                        RunError::MmuServer(format!(
                            "cannot build the frame pool of {frames} frames ({e:?}): the pool \
                             must be 4 KiB to {} KiB",
                            mmu_server::pool::MAX_FRAMES * 4
                        ))
                    })?;
                    channel::serve(server, &mmu_bell, &ends, |_| {});
                    Ok(())
                }));
                // Whatever happened, no call may wait for this server any more.
                for end in &ends {
                    end.server_gone();
                }
                match served {
                    Ok(r) => r,
                    Err(panic) => Err(RunError::MmuServerDied(format!(
                        "the mmu-server panicked: {}",
                        panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_default()
                    ))),
                }
            })
            .map_err(|e| RunError::MmuServer(e.to_string()))?;

        let result = run_vmm(cfg, client, map, host);
        // The client is gone (moved into the VM and dropped): the server loop ends.
        bell.stop();
        match mmu_thread.join() {
            Ok(Ok(())) => result,
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RunError::MmuServerDied("the mmu-server thread died".into())),
        }
    })
}

fn run_vmm(
    cfg: &RunConfig,
    client: channel::Client,
    map: physmem::PhysMap,
    host: &mut impl VmHost,
) -> Result<RunResult, RunError> {
    let ram = PhysRam::new(map, GUEST_RAM_HPA, cfg.mem)
        .map_err(|_| RunError::Memory(MemoryError::TooLarge { len: cfg.mem }))?;
    let mut vm = Vm::new(cfg.vm, client, ram).map_err(RunError::Vm)?;
    let kernel = vm
        .load(
            &cfg.image,
            BootArgs {
                kernel_name: &cfg.kernel_name,
                append: &cfg.append,
            },
        )
        .map_err(RunError::Vm)?;
    let outcome = vm.run(host);
    let stats = vm.stats();
    Ok(RunResult {
        outcome,
        stats,
        checkpoints: vm.checkpoints().to_vec(),
        kernel,
        nx_disable: vm.nx_disable_result(),
    })
}

/// A [`VmHost`] that collects COM1 output in memory (tests) and sleeps on wait hints.
#[derive(Default)]
pub struct CapturingHost {
    pub serial: Vec<u8>,
    pub waited_ms: u64,
}

impl vmm_server::devices::SerialSink for CapturingHost {
    fn put(&mut self, byte: u8) {
        self.serial.push(byte);
    }
}

impl VmHost for CapturingHost {
    fn wait(&mut self, ms: u32) {
        self.waited_ms += ms as u64;
        thread::sleep(std::time::Duration::from_millis(ms as u64));
    }
}
