//! One VM: the vCPU, guest RAM, the devices, and the connection to the mmu-server.
//! [`Vm::run`] is the exit-handling loop; the handlers live in [`crate::exits`].

use crate::config::{ConfigError, VmConfig};
use crate::cr::{cr0, GuestCrs};
use crate::devices::{IoBus, SerialSink};
use crate::guest_ram::{GuestRam, PhysRam};
use crate::hw;
use crate::loader::{self, BootArgs, LoadError, LoadedKernel};
use crate::mmu_client::{MmuCallError, MmuClient};
use crate::outcome::{Failure, StopReason, VmOutcome};
use crate::stats::{Checkpoint, ExitCounts, VmStats, WatchedMapping, MAX_CHECKPOINTS};
use ipc::{flush, vcpu_flags, MmuMode, Transport};
use vcpu::controls::EventInjection;
use vcpu::exit::{event_type, interruption};
use vcpu::paging::{Fault, PagingContext};
use vcpu::regs::{access, rflags, Gpr, SegReg};
use vcpu::Vcpu;

/// MMU faults in a row without any progress (no retired instruction, no REP element)
/// after which the VM is stopped: one instruction or string element touches a handful
/// of pages (code, operands, descriptor tables, stack, each with its table path), so
/// thousands of faults there mean the MMU cannot keep that working set (a frame pool
/// too small for it) and would otherwise livelock.
pub const NO_PROGRESS_FAULTS: u32 = 10_000;

/// The VPID every vCPU of this server runs with (one vCPU per VM, one VM per server).
pub const VPID: u16 = 1;

/// What the runtime provides to a running VM.
pub trait VmHost: SerialSink {
    /// The guest asked to be paused for `ms` milliseconds (port 0x81).
    fn wait(&mut self, ms: u32);
    /// The guest reached a checkpoint (port 0x80); the record is also kept by the VM.
    fn checkpoint(&mut self, _record: &Checkpoint) {}
    /// Every VM exit, before it is handled (for `--trace-exits`).
    fn trace_exit(&mut self, _exit: &vcpu::exit::VmExit, _cpu: &mut Vcpu, _mem: &physmem::PhysMap) {
    }
    /// The mmu-server's answer to a fault (for `--trace-exits`).
    fn trace_fault(&mut self, _reply: &ipc::FaultReply) {}
}

/// Why a VM could not be created or loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmError {
    Config(ConfigError),
    Mmu(MmuCallError),
    Load(LoadError),
}

impl core::fmt::Display for VmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            VmError::Config(e) => write!(f, "{e}"),
            VmError::Mmu(e) => write!(f, "{e}"),
            VmError::Load(e) => write!(f, "cannot load the guest: {e}"),
        }
    }
}

impl From<MmuCallError> for VmError {
    fn from(e: MmuCallError) -> Self {
        VmError::Mmu(e)
    }
}

/// Capabilities a VM may hold besides its channel to the mmu-server (on seL4: badged
/// endpoint capabilities the root task minted for it; on the host: mailboxes the
/// runtime created with those badges).
pub struct Capabilities<T: Transport> {
    /// `NxHugePageControl`: the right to disable the NX-huge-page mitigation for this
    /// VM (a channel whose badge carries `ipc::badge::NX_HUGE_PAGE_CONTROL`).
    pub nx_huge_page_control: Option<T>,
}

/// How often a PDPTE load may meet an EPT violation before the VM stops: the
/// PDPT is one 32-byte block inside one page, so one mapping suffices.
const PDPTE_LOAD_ATTEMPTS: usize = 3;

/// The root the vCPU runs on (from the last `RootReply` / `FaultReply`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Root {
    pub hpa: u64,
    pub level: u32,
}

/// What an exit handler decided.
pub(crate) enum Next {
    Resume,
    Exit(u32),
}

pub(crate) type Handled = Result<Next, StopReason>;

/// One VM.
pub struct Vm<T: Transport> {
    pub(crate) cfg: VmConfig,
    pub(crate) mmu: MmuClient<T>,
    pub(crate) ram: PhysRam,
    pub(crate) cpu: Vcpu,
    pub(crate) io: IoBus,
    /// CR0/CR3/CR4/EFER as the guest sees them. Under TDP with a guest-owned WP,
    /// `cr0.WP` may be stale: [`Vm::sync_guest_cr0`] refreshes it from the vCPU.
    pub(crate) guest: GuestCrs,
    pub(crate) root: Root,
    pub(crate) exits: ExitCounts,
    /// Instructions the vmm-server completed on the guest's behalf (emulation).
    pub(crate) emulated: u64,
    pub(crate) checkpoints: heapless::Vec<Checkpoint, MAX_CHECKPOINTS>,
    /// The live CR0.WP read for the current exit (at most one read per exit).
    pub(crate) live_wp: Option<bool>,
    /// The guest's paging registers changed since the hardware view was programmed.
    pub(crate) paging_dirty: bool,
    /// The CR3 the mmu-server was last told (see [`Vm::sync_mmu_cr3`]).
    pub(crate) mmu_cr3: u64,
    nx_disable: Option<Result<(), MmuCallError>>,
}

impl<T: Transport> Vm<T> {
    /// Creates the VM's MMU state (`CreateVm`, one RAM slot covering `ram`), makes the
    /// NX-huge-page request when configured, then creates the vCPU (`VcpuCreated`:
    /// per-VM policy is frozen from here on). The VM holds no capability beyond its
    /// channel to the mmu-server; see [`Vm::with_capabilities`].
    pub fn new(cfg: VmConfig, transport: T, ram: PhysRam) -> Result<Vm<T>, VmError> {
        Self::with_capabilities(
            cfg,
            transport,
            Capabilities {
                nx_huge_page_control: None,
            },
            ram,
        )
    }

    /// [`Vm::new`] for a VM that may hold more capabilities than its mmu-server channel.
    pub fn with_capabilities(
        cfg: VmConfig,
        transport: T,
        caps: Capabilities<T>,
        ram: PhysRam,
    ) -> Result<Vm<T>, VmError> {
        cfg.validate().map_err(VmError::Config)?;
        // The client also holds the NxHugePageControl capability, if granted.
        let mut mmu = MmuClient::with_nx_capability(transport, caps.nx_huge_page_control);
        mmu.call(&ipc::CreateVm {
            mmu_mode: cfg.mmu_mode as u32,
            root_reuse: cfg.root_reuse as u32,
            flags: 0,
            reserved: 0,
        })?;
        mmu.call(&ipc::AddMemSlot {
            base_gfn: 0,
            npages: ram.size() / physmem::PAGE_SIZE,
            host_base: ram.hpa_base(),
            kind: ipc::SlotKind::Ram as u32,
            reserved: 0,
        })?;
        // An invocation of the NxHugePageControl capability, before the vCPU exists.
        // Refusals are reported to the user (`nx_disable_result`), and the VM goes on
        // with the mitigation.
        let nx_disable = cfg.disable_nx_huge_pages.then(|| {
            mmu.invoke_nx_control(&ipc::DisableNxHugePages {
                flags: cfg.nx_disable_flags,
                reserved: 0,
                arg: cfg.nx_disable_arg,
            })
        });
        let cpu = Vcpu::new();
        mmu.call(&ipc::VcpuCreated {})?;
        Ok(Vm {
            cfg,
            mmu,
            ram,
            cpu,
            io: IoBus::new(),
            guest: GuestCrs::default(),
            root: Root::default(),
            exits: ExitCounts::default(),
            emulated: 0,
            checkpoints: heapless::Vec::new(),
            live_wp: None,
            mmu_cr3: 0,
            paging_dirty: true,
            nx_disable,
        })
    }

    /// Invokes the `NxHugePageControl` capability with `request` (any flags and
    /// argument, at any time: the mmu-server checks them in the order). A VM
    /// that does not hold the capability can only ask through its ordinary channel,
    /// whose badge lacks it, so the mmu-server answers `PermissionDenied` (after the
    /// flags check), as seL4 would refuse an invocation of a capability it lacks.
    pub fn invoke_nx_huge_page_control(
        &mut self,
        request: &ipc::DisableNxHugePages,
    ) -> Result<(), MmuCallError> {
        self.mmu.invoke_nx_control(request)
    }

    /// Times the VM's MMU state was re-created because the mmu-server restarted.
    pub fn mmu_recreations(&self) -> u32 {
        self.mmu.recreations()
    }

    /// The result of the `--disable-nx-huge-pages` request, if one was made.
    pub fn nx_disable_result(&self) -> Option<Result<(), MmuCallError>> {
        self.nx_disable
    }

    /// Loads a multiboot kernel and puts the vCPU at its entry point, in the state
    /// QEMU's loader leaves (see [`loader::BootState`]).
    pub fn load(&mut self, image: &[u8], args: BootArgs<'_>) -> Result<LoadedKernel, VmError> {
        let k = loader::load(image, args, &mut self.ram).map_err(VmError::Load)?;
        let b = k.boot;
        self.cpu.reset_multiboot(b.eip, b.ebx);
        self.cpu.set_gpr(Gpr::Rax, b.eax as u64);
        self.cpu.set_gpr(Gpr::Rsp, b.esp as u64);
        self.cpu.set_rflags(b.eflags as u64);
        self.cpu.flush_decode_cache();
        self.guest = GuestCrs {
            cr0: b.cr0 as u64,
            cr3: 0,
            cr4: 0,
            efer: 0,
        };
        let reply = self.mmu.call(&ipc::SetGuestRegs {
            cr0: self.guest.cr0,
            cr3: 0,
            cr4: 0,
            efer: 0,
        })?;
        self.program_controls();
        self.paging_dirty = true;
        self.apply_root(
            reply.root_hpa,
            reply.root_level,
            reply.flush | flush::GUEST,
            None,
        )
        .map_err(|_| {
            VmError::Mmu(MmuCallError {
                request: ipc::Label::SetGuestRegs,
                error: ipc::Error::InvalidState,
            })
        })?;
        Ok(k)
    }

    /// The vCPU (for tests and diagnostics).
    pub fn vcpu(&mut self) -> &mut Vcpu {
        &mut self.cpu
    }

    /// The guest's view of its paging registers.
    pub fn guest_crs(&mut self) -> GuestCrs {
        self.sync_guest_cr0();
        self.guest
    }

    /// Runs the guest until it exits through isa-debug-exit or the vmm-server stops it.
    pub fn run(&mut self, host: &mut impl VmHost) -> VmOutcome {
        // Consecutive MMU faults without a retired instruction (see NO_PROGRESS_FAULTS).
        let mut stalled_faults = 0u32;
        let mut last_progress = self.progress_mark();
        loop {
            if let Some(limit) = self.cfg.max_instructions {
                let done = self.instructions();
                if done >= limit {
                    return VmOutcome::Failed(
                        self.failure(StopReason::InstructionBudget { limit }),
                    );
                }
                self.cpu.controls.budget = Some(limit - done);
            }
            // The mmu-server restarted and the VM's MMU state was re-created (during
            // the last exit's requests): run on the new root, with a clean TLB.
            if let Some(root) = self.mmu.take_recreated() {
                self.paging_dirty = true;
                if let Err(reason) =
                    self.apply_root(root.root_hpa, root.root_level, root.flush, None)
                {
                    return VmOutcome::Failed(self.failure(reason));
                }
            }
            let exit = self.cpu.run(self.ram.map());
            self.exits.record(exit.reason);
            let mark = self.progress_mark();
            let fault = matches!(
                exit.reason,
                vcpu::exit::ExitReason::EptViolation | vcpu::exit::ExitReason::ExceptionOrNmi
            );
            if fault && mark == last_progress {
                stalled_faults += 1;
                if stalled_faults >= NO_PROGRESS_FAULTS {
                    let mut f = self.failure(StopReason::NoProgress {
                        faults: stalled_faults,
                    });
                    f.rip = exit.rip;
                    return VmOutcome::Failed(f);
                }
            } else {
                stalled_faults = 0;
            }
            last_progress = mark;
            host.trace_exit(&exit, &mut self.cpu, self.ram.map());
            self.live_wp = None;
            // The guest-owned CR0 bits (TS, and WP when guest-owned) changed without
            // exits: one read of the real CR0 per exit brings the guest's view up to
            // date before any handler uses or rewrites it.
            self.sync_guest_cr0();
            match crate::exits::handle(self, &exit, host) {
                Ok(Next::Resume) => {}
                Ok(Next::Exit(status)) => return VmOutcome::Exited { status },
                Err(reason) => {
                    let mut f = self.failure(reason);
                    if let Some(u) = exit.unimplemented {
                        f.bytes = u.bytes;
                        f.len = u.len.min(15);
                    }
                    f.rip = exit.rip;
                    return VmOutcome::Failed(f);
                }
            }
        }
    }

    /// What changes when the guest makes progress: retired instructions, and the
    /// registers a REP string instruction advances element by element (a long REP
    /// STOS may fault on every page it reaches without retiring).
    fn progress_mark(&self) -> [u64; 5] {
        [
            self.instructions(),
            self.cpu.rip(),
            self.cpu.gpr(Gpr::Rcx),
            self.cpu.gpr(Gpr::Rsi),
            self.cpu.gpr(Gpr::Rdi),
        ]
    }

    /// Guest instructions so far (vCPU plus emulated).
    pub fn instructions(&self) -> u64 {
        self.cpu.stats().instructions + self.emulated
    }

    /// The VM's counters, with the mmu-server's statistics for it (one `GetStats`).
    pub fn stats(&mut self) -> VmStats {
        let mmu = self.mmu.call(&ipc::GetStats {}).unwrap_or_default();
        VmStats {
            instructions: self.instructions(),
            exits: self.exits.clone(),
            ipc_calls: self.mmu.calls(),
            mmu,
        }
    }

    /// The checkpoints the guest reached, in order.
    pub fn checkpoints(&self) -> &[Checkpoint] {
        &self.checkpoints
    }

    pub(crate) fn record_checkpoint(&mut self, step: u32, host: &mut impl VmHost) {
        let mut mappings = heapless::Vec::new();
        for addr in self.cfg.watch.iter().flatten().copied() {
            // A refused query (an old mmu-server) leaves the address out.
            if let Ok(mapping) = self.mmu.call(&ipc::GetMapping { addr }) {
                let _ = mappings.push(WatchedMapping { addr, mapping });
            }
        }
        let record = Checkpoint {
            step,
            stats: self.stats(),
            mappings,
        };
        host.checkpoint(&record);
        // Beyond MAX_CHECKPOINTS the host still sees every one; the VM keeps the first.
        let _ = self.checkpoints.push(record);
    }

    /// A diagnostic for `reason` at the current RIP, with the instruction bytes.
    pub(crate) fn failure(&mut self, reason: StopReason) -> Failure {
        let rip = self.cpu.rip();
        let mut bytes = [0u8; 15];
        let len = crate::emulate::fetch_code(self, rip, &mut bytes).unwrap_or(0);
        Failure {
            reason,
            rip,
            bytes,
            len: len as u8,
        }
    }

    // ----- register helpers -----

    pub(crate) fn mode_64(&self) -> bool {
        self.cpu.efer() & crate::cr::efer::LMA != 0
            && self.cpu.segment(SegReg::Cs).access & access::L != 0
    }

    pub(crate) fn cs_long(&self) -> bool {
        self.cpu.segment(SegReg::Cs).access & access::L != 0
    }

    /// The guest's CR0 with the live values of its guest-owned bits.
    pub(crate) fn sync_guest_cr0(&mut self) {
        self.guest.cr0 = self.cpu.guest_visible_cr0();
    }

    /// The live CR0.WP, read from the vCPU at most once per exit (the cost model of
    /// MMU_REFERENCE.md section 4: one VMREAD of GUEST_CR0 per exit).
    pub(crate) fn live_cr0_wp(&mut self) -> bool {
        if let Some(wp) = self.live_wp {
            return wp;
        }
        let wp = self.cpu.cr0() & cr0::WP != 0;
        self.live_wp = Some(wp);
        wp
    }

    /// `vcpu_flags` for requests that need the live vCPU state.
    pub(crate) fn request_flags(&mut self, implicit: bool) -> u32 {
        let mut f = 0;
        if self.cpu.rflags() & rflags::AC != 0 {
            f |= vcpu_flags::EFLAGS_AC;
        }
        if implicit {
            f |= vcpu_flags::IMPLICIT;
        }
        if self.cfg.wp_guest_owned() {
            f |= vcpu_flags::LIVE_CR0_WP_VALID;
            if self.live_cr0_wp() {
                f |= vcpu_flags::LIVE_CR0_WP;
            }
        }
        f
    }

    /// Under TDP, MOV to CR3 does not exit, so the mmu-server's copy of CR3 (used only
    /// by its software walks of the guest's tables) can be stale. Before a request
    /// that walks them, tell it the live value (with NOFLUSH when PCIDs are on, so
    /// this costs no TLB flush; without PCIDs the flush it asks for is harmless).
    pub(crate) fn sync_mmu_cr3(&mut self) -> Result<(), StopReason> {
        if self.cfg.mmu_mode != MmuMode::Tdp {
            return Ok(());
        }
        let live = self.cpu.cr3();
        if live == self.mmu_cr3 {
            return Ok(());
        }
        let pcide = self.guest.cr4 & crate::cr::cr4::PCIDE != 0;
        let value = if pcide {
            live | crate::cr::CR3_NOFLUSH
        } else {
            live
        };
        self.paging_dirty = true;
        let reply = self
            .mmu
            .call(&ipc::CrWrite {
                value,
                reg: ipc::CrRegister::Cr3 as u32,
                reserved: 0,
            })
            .map_err(StopReason::from)?;
        self.mmu_cr3 = live;
        self.apply_root(reply.root_hpa, reply.root_level, reply.flush, None)
    }

    // ----- VMCS-like controls and the hardware view of the paging registers -----

    /// Sets the execution controls of the MMU mode and the CR0.WP policy.
    pub(crate) fn program_controls(&mut self) {
        let shadow = self.cfg.mmu_mode == MmuMode::Shadow;
        let c = &mut self.cpu.controls;
        c.hlt_exiting = true;
        c.unconditional_io_exiting = true;
        c.io_bitmap = None;
        c.enable_vpid = true;
        c.vpid = VPID;
        c.enable_invpcid = true;
        c.enable_rdtscp = true;
        c.enable_ept = !shadow;
        c.unrestricted_guest = !shadow;
        // Shadow paging: every guest CR3 access, INVLPG/INVPCID and #PF goes through
        // the VMM (the CPU walks our tables, not the guest's).
        c.cr3_load_exiting = shadow;
        c.cr3_store_exiting = shadow;
        c.invlpg_exiting = shadow;
        c.exception_bitmap = if shadow { 1 << 14 } else { 0 };
        c.pfec_mask = 0;
        c.pfec_match = 0;
        // CR0: TS is guest-owned (lazy FPU switching never matters to the MMU); WP is
        // guest-owned only with TDP and the guest-owned policy (section 4). Every
        // other CR0 bit and every CR4 bit is host-owned: the MMU must see it.
        let mut owned = cr0::TS;
        if self.cfg.wp_guest_owned() {
            owned |= cr0::WP;
        }
        c.cr0_guest_host_mask = !owned;
        c.cr4_guest_host_mask = !0;
        for msr in crate::cpu_model::PASSTHROUGH_MSRS {
            c.set_msr_exiting(msr, false, false);
        }
        // Under shadow paging the vCPU's EFER is the hardware one (NXE, LME/LMA follow
        // the root), so guest reads must see the guest's value: they exit too.
        c.set_msr_exiting(crate::cpu_model::MSR_EFER, shadow, true);
        c.set_msr_exiting(crate::cpu_model::MSR_APIC_BASE, false, true);
    }

    /// Loads the hardware CR0/CR3/CR4/EFER, the read shadows and the EPTP from the
    /// guest's view and the current root.
    pub(crate) fn program_paging(&mut self) -> Result<(), StopReason> {
        let tdp = self.cfg.mmu_mode == MmuMode::Tdp;
        if tdp {
            // Under TDP the guest loads CR3 without exiting: the vCPU holds the truth.
            self.guest.cr3 = self.cpu.cr3();
        }
        let g = self.guest;
        // `guest.cr0` holds the live guest-owned bits (synchronised at every exit) or
        // the value a CR0 write just gave them all.
        let hw = if tdp {
            hw::tdp(&g)
        } else {
            hw::shadow(&g, self.root.hpa, self.root.level)
        };
        self.cpu.controls.cr0_read_shadow = g.cr0;
        self.cpu.controls.cr4_read_shadow = g.cr4;
        if tdp {
            self.cpu.controls.eptp = hw::eptp(self.root.hpa, self.root.level, false);
        }
        self.cpu
            .set_control_registers(hw.cr0, hw.cr3, hw.cr4, hw.efer);
        self.reload_pdptes()
    }

    /// PAE paging outside IA-32e mode uses the PDPTE registers (SDM 4.4.1). They are
    /// loaded with CR3, and on VM entry from the guest's CR3 when EPT is off (SDM
    /// 27.3.2.4): under shadow paging that CR3 is our PAE root, whose entries the
    /// mmu-server may have filled since, so this runs before every entry that follows
    /// an MMU reply.
    fn reload_pdptes(&mut self) -> Result<(), StopReason> {
        let tdp = self.cfg.mmu_mode == MmuMode::Tdp;
        let (cr0, cr3, cr4, efer) = (
            self.cpu.cr0(),
            self.cpu.cr3(),
            self.cpu.cr4(),
            self.cpu.efer(),
        );
        let pae_legacy = cr0 & cr0::PG != 0
            && cr4 & crate::cr::cr4::PAE != 0
            && efer & crate::cr::efer::LMA == 0;
        if !pae_legacy {
            return Ok(());
        }
        // Under TDP the PDPTE loads are guest-physical reads through EPT (SDM 28.2.1):
        // a PDPT the mmu-server has not mapped yet is an EPT violation, resolved like
        // any other, after which the load is retried.
        for _ in 0..PDPTE_LOAD_ATTEMPTS {
            let ctx = PagingContext {
                cr0,
                cr3,
                cr4,
                efer,
                pdptes: [0; 4],
                cpl: self.cpu.cpl(),
                rflags_ac: self.cpu.rflags() & rflags::AC != 0,
                pkru: self.cpu.pkru(),
                eptp: tdp.then_some(self.cpu.controls.eptp),
                vpid: VPID,
            };
            match self.cpu.mmu().load_pdptes(self.ram.map(), &ctx) {
                Ok(p) => {
                    if p != self.cpu.pdptes() {
                        self.cpu.set_pdptes(p);
                    }
                    return Ok(());
                }
                Err(Fault::EptViolation {
                    gpa,
                    linear,
                    qualification,
                }) if tdp => self.map_for_pdpte_load(gpa, linear, qualification)?,
                Err(_) if tdp => {
                    return Err(StopReason::Unsupported {
                        what: "PAE paging with invalid PDPTEs",
                    })
                }
                Err(_) => return Err(StopReason::BadHostPhysical { hpa: cr3 }),
            }
        }
        Err(StopReason::Unsupported {
            what: "the PDPTE load kept faulting after the mmu-server mapped the PDPT",
        })
    }

    /// Asks the mmu-server to map the guest-physical page a PDPTE load faulted on.
    fn map_for_pdpte_load(
        &mut self,
        gpa: u64,
        linear: Option<u64>,
        qualification: u64,
    ) -> Result<(), StopReason> {
        let reply = self
            .mmu
            .call(&ipc::TdpFault {
                gpa,
                gla: linear.unwrap_or(0),
                qualification,
                rip: self.cpu.rip(),
            })
            .map_err(StopReason::from)?;
        match reply.outcome() {
            Ok(ipc::FaultOutcome::Fixed | ipc::FaultOutcome::Retry) => {}
            Ok(ipc::FaultOutcome::Mmio) => return Err(StopReason::UnbackedAccess { gpa }),
            _ => {
                return Err(StopReason::Unsupported {
                    what: "the mmu-server could not map the PAE page-directory-pointer table",
                })
            }
        }
        if reply.root_hpa != 0 {
            self.root = Root {
                hpa: reply.root_hpa,
                level: reply.root_level,
            };
            self.cpu.controls.eptp = hw::eptp(self.root.hpa, self.root.level, false);
        }
        // The new mapping replaces a not-present one, which no TLB caches; a changed
        // root is a new EPTP, which tags its own mappings.
        Ok(())
    }

    /// Switches to the root a reply names and performs the TLB flushes it asks for
    /// (`flush` bits of ipc; the INVVPID / INVEPT a VMM does before VM entry).
    /// `address` is the linear address of an INVLPG-like request.
    pub(crate) fn apply_root(
        &mut self,
        root_hpa: u64,
        root_level: u32,
        flush_bits: u32,
        address: Option<u64>,
    ) -> Result<(), StopReason> {
        let mut changed = false;
        if root_hpa != 0 {
            let root = Root {
                hpa: root_hpa,
                level: root_level,
            };
            changed = root != self.root;
            self.root = root;
        }
        if self.root.hpa == 0 {
            return Err(StopReason::Mmu {
                request: ipc::Label::SetGuestRegs,
                error: ipc::Error::InvalidState,
            });
        }
        // Rewriting the registers drops the vCPU's translation fast path, so only do
        // it when the root or the guest's paging registers changed.
        if changed || self.paging_dirty {
            self.paging_dirty = false;
            self.program_paging()?;
        } else if self.cfg.mmu_mode == MmuMode::Shadow {
            self.reload_pdptes()?;
        }
        let tdp = self.cfg.mmu_mode == MmuMode::Tdp;
        if flush_bits & flush::GUEST != 0 {
            // All linear and combined mappings of this VPID, every PCID and globals.
            let _ = self.cpu.invvpid(1, VPID, 0);
        }
        if flush_bits & flush::CURRENT != 0 {
            if tdp {
                let eptp = self.cpu.controls.eptp;
                let _ = self.cpu.invept(1, eptp);
            } else {
                let _ = self.cpu.invvpid(1, VPID, 0);
            }
        }
        if flush_bits & flush::ADDRESS != 0 {
            if let Some(a) = address {
                let _ = self.cpu.invvpid(0, VPID, a);
            }
        }
        Ok(())
    }

    // ----- event injection (SDM 24.8.3) -----

    pub(crate) fn inject_exception(&mut self, vector: u8, error_code: Option<u32>) {
        self.cpu.controls.injection = EventInjection {
            info: interruption::info(vector, event_type::HARDWARE_EXCEPTION, error_code.is_some()),
            error_code: error_code.unwrap_or(0),
            instruction_len: 0,
        };
    }

    pub(crate) fn inject_gp0(&mut self) {
        self.inject_exception(13, Some(0));
    }

    pub(crate) fn inject_ud(&mut self) {
        self.inject_exception(6, None);
    }

    /// Re-injects the event whose delivery the exit interrupted (IDT-vectoring
    /// information), so that resolving a fault during delivery does not lose it.
    pub(crate) fn reinject(&mut self, exit: &vcpu::exit::VmExit) {
        if exit.idt_vectoring_info & interruption::VALID != 0 {
            self.cpu.controls.injection = EventInjection {
                info: exit.idt_vectoring_info & !(1 << 12),
                error_code: exit.idt_vectoring_error_code,
                instruction_len: exit.instruction_len,
            };
        }
    }

    /// Delivers a #PF at `cr2`, or the double fault / triple fault that the SDM's
    /// exception classes (SDM 6.15, Table 6-5) demand if the exit interrupted the
    /// delivery of another exception.
    pub(crate) fn inject_page_fault(
        &mut self,
        exit: &vcpu::exit::VmExit,
        cr2: u64,
        error_code: u32,
    ) -> Result<(), StopReason> {
        let vectoring = exit.idt_vectoring_info;
        if vectoring & interruption::VALID != 0
            && (vectoring >> interruption::TYPE_SHIFT) & 7 == event_type::HARDWARE_EXCEPTION
        {
            let first = (vectoring & interruption::VECTOR_MASK) as u8;
            match first {
                8 => return Err(StopReason::TripleFault),
                // #PF or a contributory exception, then #PF: double fault.
                0 | 10 | 11 | 12 | 13 | 14 => {
                    self.inject_exception(8, Some(0));
                    return Ok(());
                }
                _ => {}
            }
        }
        self.cpu.set_cr2(cr2);
        self.inject_exception(14, Some(error_code));
        Ok(())
    }
}
