//! Runs one VM on the host: one mmu-server thread and one vmm-server (the calling
//! thread), joined by [`crate::channel`] mailboxes that carry the ipc bytes, each with
//! the badge the runtime fixed for it (the VM's, its `NxHugePageControl` capability's
//! when granted, the system controller's). Guest RAM and the frame pool are allocated
//! once ([`HostMemory`]) and both servers see them through the same
//! [`physmem::PhysMap`] layout. Before the VM exists the runtime sets the system-wide
//! NX-huge-page policy; a timer thread then delivers the recovery ticks.

use crate::channel::{self, Doorbell};
use crate::memory::{HostMemory, MemoryError, GUEST_RAM_HPA};
use mmu_server::{MmuServer, ServerConfig};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use vmm_server::guest_ram::PhysRam;
use vmm_server::loader::{BootArgs, LoadedKernel};
use vmm_server::mmu_client::MmuCallError;
use vmm_server::stats::{Checkpoint, VmStats};
use vmm_server::{Capabilities, Vm, VmConfig, VmError, VmHost, VmOutcome};

/// The badge the runtime mints for the VM's endpoint to the mmu-server.
pub const VM_BADGE: ipc::Badge = 1;

/// The badge of the VM's `NxHugePageControl` capability (a second mailbox, created
/// only when the capability is granted).
pub const VM_NX_CONTROL_BADGE: ipc::Badge = VM_BADGE | ipc::badge::NX_HUGE_PAGE_CONTROL;

/// The badge of the runtime's own channels to the mmu-server (system-wide policy and
/// the recovery timer).
pub const SYSTEM_BADGE: ipc::Badge = ipc::badge::SYSTEM_CONTROL;

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
    /// NX-huge-page recovery ratio (`None`: the mmu-server's default, 60).
    pub nx_recovery_ratio: Option<u32>,
    /// NX-huge-page recovery period in milliseconds (`None` or 0: derived from the
    /// ratio, 60 s for the default ratio).
    pub nx_recovery_period_ms: Option<u64>,
    /// Invocations of the `NxHugePageControl` capability made once the vCPU exists,
    /// before the guest runs (to exercise the capability's error order; the CLI makes
    /// none). Their results are in [`RunResult::nx_control_after_vcpu`].
    pub nx_control_after_vcpu: Vec<ipc::DisableNxHugePages>,
}

impl RunConfig {
    /// The defaults of `capvisor run` for `image`: 128 MiB of RAM, a 16 MiB frame
    /// pool, no command line, NX huge pages `auto`, no capability granted.
    pub fn new(image: Vec<u8>, kernel_name: impl Into<String>, vm: VmConfig) -> RunConfig {
        RunConfig {
            image,
            kernel_name: kernel_name.into(),
            append: String::new(),
            vm,
            mem: 128 << 20,
            pool: 16 << 20,
            nx_huge_pages: NxHugePages::Auto,
            grant_nx_huge_page_control: false,
            nx_recovery_ratio: None,
            nx_recovery_period_ms: None,
            nx_control_after_vcpu: Vec::new(),
        }
    }
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
    /// The answers to [`RunConfig::nx_control_after_vcpu`], in order.
    pub nx_control_after_vcpu: Vec<Result<(), ipc::Error>>,
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

impl NxHugePages {
    fn wire(self) -> ipc::NxMode {
        match self {
            NxHugePages::Auto => ipc::NxMode::Auto,
            NxHugePages::On => ipc::NxMode::On,
            NxHugePages::Off => ipc::NxMode::Off,
            NxHugePages::Force => ipc::NxMode::Force,
            NxHugePages::Never => ipc::NxMode::Never,
        }
    }
}

/// Sets the system-wide NX-huge-page policy through the system controller's channel,
/// before any VM exists, and returns the recovery period to tick at (`None`: no
/// recovery). An mmu-server without NX-huge-page support is fine as long as nothing
/// but the defaults was asked of it.
fn configure_nx(
    cfg: &RunConfig,
    system: &mut channel::Client,
) -> Result<Option<Duration>, RunError> {
    let refused = |what: &str, e: ipc::Error| RunError::MmuServer(format!("{what}: {e}"));
    let asked = cfg.nx_huge_pages != NxHugePages::Auto
        || cfg.nx_recovery_ratio.is_some()
        || cfg.nx_recovery_period_ms.is_some();
    let mode = ipc::SetNxHugePages {
        mode: cfg.nx_huge_pages.wire() as u32,
        reserved: 0,
    };
    match ipc::call(system, &mode) {
        Ok(_) => {}
        Err(ipc::Error::NotSupported | ipc::Error::UnknownLabel) if !asked => return Ok(None),
        Err(e) => return Err(refused("cannot set the NX-huge-page mode", e)),
    }
    if cfg.nx_recovery_ratio.is_some() || cfg.nx_recovery_period_ms.is_some() {
        let recovery = ipc::SetNxRecovery {
            ratio: cfg.nx_recovery_ratio.unwrap_or(60),
            reserved: 0,
            period_ms: cfg.nx_recovery_period_ms.unwrap_or(0),
        };
        ipc::call(system, &recovery).map_err(|e| refused("cannot set NX-huge-page recovery", e))?;
    }
    let state = ipc::call(system, &ipc::GetNxHugePages {})
        .map_err(|e| refused("cannot read the NX-huge-page state", e))?;
    Ok(
        (state.enabled != 0 && state.ratio != 0 && state.period_ms != 0)
            .then(|| Duration::from_millis(state.period_ms)),
    )
}

/// The host analogue of the seL4 timer driver's recovery notification: every `period`
/// an `NxRecoveryTick` to the mmu-server, until `stop` is set.
fn recovery_timer(mut timer: channel::Client, period: Duration, stop: &AtomicBool) {
    loop {
        let due = Instant::now() + period;
        while Instant::now() < due {
            if stop.load(Ordering::Acquire) {
                return;
            }
            thread::park_timeout(due.saturating_duration_since(Instant::now()));
        }
        if stop.load(Ordering::Acquire) || ipc::call(&mut timer, &ipc::NxRecoveryTick {}).is_err() {
            return;
        }
    }
}

/// Stack of the mmu-server thread (the server itself lives on the heap).
const MMU_STACK: usize = 16 << 20;

/// Boots the guest and runs it to the end. COM1 output and checkpoints go to `host`.
pub fn run(cfg: &RunConfig, host: &mut impl VmHost) -> Result<RunResult, RunError> {
    let memory = HostMemory::new(cfg.mem, cfg.pool).map_err(RunError::Memory)?;
    let map = memory.phys_map().map_err(RunError::Memory)?;
    let pool = memory.pool_range();
    let bell = Doorbell::new();
    // The VM's channel, its NxHugePageControl capability (only if granted: without it
    // the VM cannot name the capability, as on seL4), and the runtime's own two.
    let (client, vm_end) = channel::channel(&bell, VM_BADGE);
    let (nx_cap, nx_end) = if cfg.grant_nx_huge_page_control {
        let (c, e) = channel::channel(&bell, VM_NX_CONTROL_BADGE);
        (Some(c), Some(e))
    } else {
        (None, None)
    };
    let (mut system, system_end) = channel::channel(&bell, SYSTEM_BADGE);
    let (timer, timer_end) = channel::channel(&bell, SYSTEM_BADGE);
    let mut ends = vec![vm_end, system_end, timer_end];
    ends.extend(nx_end);

    let stop_timer = AtomicBool::new(false);
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

        let result = configure_nx(cfg, &mut system).and_then(|period| {
            drop(system);
            let timer_thread = match period {
                Some(p) => {
                    let stop = &stop_timer;
                    Some(
                        thread::Builder::new()
                            .name("nx-recovery-timer".into())
                            .spawn_scoped(scope, move || recovery_timer(timer, p, stop))
                            .map_err(|e| RunError::MmuServer(e.to_string()))?,
                    )
                }
                None => {
                    drop(timer);
                    None
                }
            };
            let result = run_vmm(cfg, client, nx_cap, map, host);
            stop_timer.store(true, Ordering::Release);
            if let Some(t) = timer_thread {
                t.thread().unpark();
                let _ = t.join();
            }
            result
        });
        // Every client is gone: the server loop ends (stop covers an early error).
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
    nx_cap: Option<channel::Client>,
    map: physmem::PhysMap,
    host: &mut impl VmHost,
) -> Result<RunResult, RunError> {
    let ram = PhysRam::new(map, GUEST_RAM_HPA, cfg.mem)
        .map_err(|_| RunError::Memory(MemoryError::TooLarge { len: cfg.mem }))?;
    let caps = Capabilities {
        nx_huge_page_control: nx_cap,
    };
    let mut vm = Vm::with_capabilities(cfg.vm, client, caps, ram).map_err(RunError::Vm)?;
    let nx_control_after_vcpu = cfg
        .nx_control_after_vcpu
        .iter()
        .map(|req| vm.invoke_nx_huge_page_control(req).map_err(|e| e.error))
        .collect();
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
        nx_control_after_vcpu,
    })
}

/// A [`VmHost`] that collects COM1 output in memory (tests) and sleeps on wait hints.
#[derive(Default)]
pub struct CapturingHost {
    pub serial: Vec<u8>,
    pub waited_ms: u64,
}

impl CapturingHost {
    /// The COM1 output as text (invalid UTF-8 replaced).
    pub fn serial_text(&self) -> String {
        String::from_utf8_lossy(&self.serial).into_owned()
    }
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
