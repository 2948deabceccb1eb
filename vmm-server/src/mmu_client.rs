//! The vmm-server's side of the mmu-server protocol: typed calls over any
//! [`ipc::Transport`], counted (the `ipc_calls` statistic), and re-creation of the
//! VM's MMU state when the mmu-server restarts under it.
//!
//! **Restarts.** MMU state is derived: every table can be rebuilt from guest memory
//! and the guest's registers. On seL4 the supervisor restarts a faulting mmu-server
//! from a fresh image; the call it died serving fails with `Transport`, and every later
//! call with `NoSuchVm` (the new server knows no VM). The client therefore remembers
//! what it told the server that the server keeps (a [`Replay`]: `CreateVm`, the memory
//! slots, a successful `DisableNxHugePages`, `VcpuCreated`, and the paging registers of
//! the last `SetGuestRegs` and `CrWrite`s), and when a call fails that way it
//! re-creates the VM in the original order and sends the call again. The new server's
//! view of the guest then equals the old one's, so nothing else in the vmm-server
//! changes, except the root: the re-created VM has a new one, which the retried reply
//! carries if it is a root-bearing reply that named none, and which
//! [`MmuClient::take_recreated`] hands to the VM to load (with a full TLB flush)
//! before the guest runs again.

use core::any::TypeId;
use ipc::{flush, Label, Request, Transport};
use zerocopy::{FromBytes, IntoBytes};

/// Re-creations tried for one call before its error is returned: a server that dies
/// again on the same request must not make the VM loop.
pub const MAX_RECREATIONS_PER_CALL: u32 = 2;

/// Memory slots remembered for re-creation (the vmm-server adds one, RAM).
pub const MAX_REPLAY_SLOTS: usize = 8;

/// A counted connection to the mmu-server, with the VM's `NxHugePageControl`
/// capability when it holds one.
pub struct MmuClient<T: Transport> {
    transport: T,
    nx_cap: Option<T>,
    calls: u64,
    replay: Replay,
    recreated: Option<ipc::RootReply>,
    recreations: u32,
}

/// What the mmu-server was told that it keeps: enough to build the same VM again.
#[derive(Clone, Debug, Default)]
pub struct Replay {
    pub create: Option<ipc::CreateVm>,
    pub slots: heapless::Vec<ipc::AddMemSlot, MAX_REPLAY_SLOTS>,
    /// `DisableNxHugePages` succeeded through the capability.
    pub nx_disabled: bool,
    pub vcpu_created: bool,
    /// CR0, CR3, CR4 and EFER as the server last heard them.
    pub regs: Option<ipc::SetGuestRegs>,
}

/// A failed call: which request, and the protocol error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MmuCallError {
    pub request: ipc::Label,
    pub error: ipc::Error,
}

impl core::fmt::Display for MmuCallError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "mmu-server refused {:?}: {}", self.request, self.error)
    }
}

/// CR3 bit 63 with CR4.PCIDE: "do not flush"; not part of the register's value.
const CR3_NOFLUSH: u64 = 1 << 63;

impl<T: Transport> MmuClient<T> {
    pub fn new(transport: T) -> Self {
        Self::with_nx_capability(transport, None)
    }

    /// A client that also holds the `NxHugePageControl` capability (a channel whose
    /// badge carries `ipc::badge::NX_HUGE_PAGE_CONTROL`).
    pub fn with_nx_capability(transport: T, nx_cap: Option<T>) -> Self {
        MmuClient {
            transport,
            nx_cap,
            calls: 0,
            replay: Replay::default(),
            recreated: None,
            recreations: 0,
        }
    }

    /// Sends `req` and waits for its reply. If the mmu-server restarted (the call
    /// fails with `Transport` or `NoSuchVm` after the VM was created), re-creates the
    /// VM's MMU state and sends `req` again (module docs).
    pub fn call<R: Request + 'static>(&mut self, req: &R) -> Result<R::Reply, MmuCallError>
    where
        R::Reply: 'static,
    {
        let mut recreated = false;
        let mut attempts = 0;
        loop {
            self.calls += 1;
            match ipc::call(&mut self.transport, req) {
                Ok(mut reply) => {
                    self.note(req);
                    if recreated {
                        self.patch_root(&mut reply);
                    }
                    return Ok(reply);
                }
                // The server died serving the VM's creation: a restarted one knows
                // nothing of it yet, so the request alone is sent again.
                Err(ipc::Error::Transport)
                    if R::LABEL == Label::CreateVm && attempts < MAX_RECREATIONS_PER_CALL =>
                {
                    attempts += 1;
                }
                Err(error @ (ipc::Error::Transport | ipc::Error::NoSuchVm))
                    if R::LABEL != Label::CreateVm
                        && self.replay.create.is_some()
                        && attempts < MAX_RECREATIONS_PER_CALL =>
                {
                    attempts += 1;
                    if self.recreate().is_err() {
                        return Err(MmuCallError {
                            request: R::LABEL,
                            error,
                        });
                    }
                    recreated = true;
                }
                Err(error) => {
                    return Err(MmuCallError {
                        request: R::LABEL,
                        error,
                    })
                }
            }
        }
    }

    /// Invokes the `NxHugePageControl` capability with `request`, or, without it,
    /// sends the request over the ordinary channel, whose badge lacks the capability
    /// (the mmu-server then answers `PermissionDenied` after its flags check, as seL4
    /// would refuse the invocation of a capability the caller does not hold).
    pub fn invoke_nx_control(
        &mut self,
        request: &ipc::DisableNxHugePages,
    ) -> Result<(), MmuCallError> {
        let Some(cap) = self.nx_cap.as_mut() else {
            return self.call(request).map(|_| ());
        };
        self.calls += 1;
        ipc::call(cap, request)
            .map_err(|error| MmuCallError {
                request: Label::DisableNxHugePages,
                error,
            })
            .map(|_| {
                self.replay.nx_disabled = true;
            })
    }

    /// The root of a VM re-created since the last call of this function: the VM must
    /// load it and flush every translation before the guest runs again.
    pub fn take_recreated(&mut self) -> Option<ipc::RootReply> {
        self.recreated.take()
    }

    /// Times the VM's MMU state was re-created on a restarted mmu-server.
    pub fn recreations(&self) -> u32 {
        self.recreations
    }

    /// What a re-creation would send.
    pub fn replay(&self) -> &Replay {
        &self.replay
    }

    /// Calls made so far.
    pub fn calls(&self) -> u64 {
        self.calls
    }

    /// Counts calls made over another channel of the same VM.
    pub fn add_calls(&mut self, n: u64) {
        self.calls += n;
    }

    pub fn transport_mut(&mut self) -> &mut T {
        &mut self.transport
    }

    /// Records what a successful `req` told the server that the server keeps.
    fn note<R: Request>(&mut self, req: &R) {
        let bytes = req.as_bytes();
        let r = &mut self.replay;
        match R::LABEL {
            Label::CreateVm => {
                r.create = ipc::CreateVm::read_from_bytes(bytes).ok();
                r.slots.clear();
                r.nx_disabled = false;
                r.vcpu_created = false;
                r.regs = None;
            }
            Label::AddMemSlot => {
                if let Ok(slot) = ipc::AddMemSlot::read_from_bytes(bytes) {
                    // Beyond MAX_REPLAY_SLOTS a re-created VM would lack memory: it
                    // then faults on it and stops with a diagnostic.
                    let _ = r.slots.push(slot);
                }
            }
            Label::RemoveMemSlot => {
                if let Ok(gone) = ipc::RemoveMemSlot::read_from_bytes(bytes) {
                    r.slots.retain(|s| s.base_gfn != gone.base_gfn);
                }
            }
            Label::VcpuCreated => r.vcpu_created = true,
            Label::SetGuestRegs => {
                r.regs = ipc::SetGuestRegs::read_from_bytes(bytes).ok().map(|mut g| {
                    g.cr3 &= !CR3_NOFLUSH;
                    g
                });
            }
            Label::CrWrite => {
                let (Ok(w), Some(regs)) = (ipc::CrWrite::read_from_bytes(bytes), r.regs.as_mut())
                else {
                    return;
                };
                match ipc::CrRegister::try_from(w.reg) {
                    Ok(ipc::CrRegister::Cr0) => regs.cr0 = w.value,
                    Ok(ipc::CrRegister::Cr3) => regs.cr3 = w.value & !CR3_NOFLUSH,
                    Ok(ipc::CrRegister::Cr4) => regs.cr4 = w.value,
                    Ok(ipc::CrRegister::Efer) => regs.efer = w.value,
                    Err(_) => {}
                }
            }
            _ => {}
        }
    }

    /// Builds the VM again on a restarted server, in the order it was first built.
    fn recreate(&mut self) -> Result<(), ipc::Error> {
        let replay = self.replay.clone();
        let create = replay.create.ok_or(ipc::Error::NoSuchVm)?;
        self.recreations += 1;
        self.raw(&create)?;
        for slot in &replay.slots {
            self.raw(slot)?;
        }
        if replay.nx_disabled {
            if let Some(cap) = self.nx_cap.as_mut() {
                self.calls += 1;
                ipc::call(
                    cap,
                    &ipc::DisableNxHugePages {
                        flags: 0,
                        reserved: 0,
                        arg: 0,
                    },
                )?;
            }
        }
        if replay.vcpu_created {
            self.raw(&ipc::VcpuCreated {})?;
        }
        if let Some(regs) = replay.regs {
            let mut root = self.raw(&regs)?;
            // The new root holds no translation any TLB may have cached, but the old
            // root's do linger under the same VPID: flush them all.
            root.flush |= flush::GUEST;
            self.recreated = Some(root);
        }
        Ok(())
    }

    /// One call without recording or recovery.
    fn raw<R: Request>(&mut self, req: &R) -> Result<R::Reply, ipc::Error> {
        self.calls += 1;
        ipc::call(&mut self.transport, req)
    }

    /// A reply to a call retried on a re-created VM that names no root ("unchanged")
    /// would leave the VM on the dead server's root: name the re-created one.
    fn patch_root<P: IntoBytes + FromBytes + 'static>(&self, reply: &mut P) {
        let Some(root) = self.recreated else {
            return;
        };
        if TypeId::of::<P>() == TypeId::of::<ipc::RootReply>() {
            if let Ok(r) = ipc::RootReply::mut_from_bytes(reply.as_mut_bytes()) {
                if r.root_hpa == 0 {
                    r.root_hpa = root.root_hpa;
                    r.root_level = root.root_level;
                }
                r.flush |= flush::GUEST;
            }
        } else if TypeId::of::<P>() == TypeId::of::<ipc::FaultReply>() {
            if let Ok(r) = ipc::FaultReply::mut_from_bytes(reply.as_mut_bytes()) {
                if r.root_hpa == 0 {
                    r.root_hpa = root.root_hpa;
                    r.root_level = root.root_level;
                }
                r.flush |= flush::GUEST;
            }
        }
    }
}
