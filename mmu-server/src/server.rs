//! The mmu-server: the [`ipc::Server`] that decodes a request, finds the VM its badge
//! names, runs it, and always replies. A request that fails to decode never reaches a
//! VM, so a malformed message cannot disturb any state.

use crate::memslot::MemSlot;
use crate::mmu::{Mmu, VmCounters, MAX_VMS};
use crate::nx::NxPolicy;
use crate::pool::{FramePool, PoolError};
use crate::shadow_page::SpTable;
use crate::tdp::Fault;
use crate::vm::Vm;
use core::mem::MaybeUninit;
use core::ptr::addr_of_mut;
use ipc::{
    encode_error_reply, encode_reply, Badge, CrRegister, Empty, Error, FaultReply, InvpcidKind,
    MmuRequest, NxHugePagesState, NxMode, NxRecoveryReport, RootReply, SlotKind, Stats,
    MAX_MSG_BYTES,
};
use physmem::PhysMap;

/// What the server is given at start-up.
pub struct ServerConfig {
    /// Every host-physical range the server may touch: guest RAM of its VMs (to read
    /// and A/D-update guest page tables) and the frame pool.
    pub phys: PhysMap,
    /// Host-physical address of the first pool frame.
    pub pool_base: u64,
    /// Frames in the pool (at most [`crate::pool::MAX_FRAMES`]).
    pub pool_frames: usize,
}

pub struct MmuServer {
    mmu: Mmu,
    vms: [Option<Vm>; MAX_VMS],
}

impl MmuServer {
    /// Builds the server in `slot` without ever holding it on the stack: it is large
    /// (the frame metadata is sized for [`crate::pool::MAX_FRAMES`] at compile time, so
    /// that nothing is allocated later). A PD passes a static; tests a heap slot.
    pub fn init_in_place(
        slot: &mut MaybeUninit<MmuServer>,
        config: ServerConfig,
    ) -> Result<&mut MmuServer, PoolError> {
        let pool = FramePool::new(&config.phys, config.pool_base, config.pool_frames)?;
        let p = slot.as_mut_ptr();
        // SAFETY: `p` is valid for writes of an MmuServer; every field is written
        // exactly once through raw pointers before the slot is assumed initialised.
        unsafe {
            SpTable::init_at(addr_of_mut!((*p).mmu.sps));
            addr_of_mut!((*p).mmu.phys).write(config.phys);
            addr_of_mut!((*p).mmu.pool).write(pool);
            addr_of_mut!((*p).mmu.vms).write([VmCounters::default(); MAX_VMS]);
            addr_of_mut!((*p).mmu.tick).write(0);
            addr_of_mut!((*p).mmu.nx).write(NxPolicy::default());
            addr_of_mut!((*p).vms).write([const { None }; MAX_VMS]);
            Ok(slot.assume_init_mut())
        }
    }

    /// Builds the server by value (needs a few hundred KiB of stack; see
    /// [`MmuServer::init_in_place`]).
    pub fn new(config: ServerConfig) -> Result<MmuServer, PoolError> {
        let pool = FramePool::new(&config.phys, config.pool_base, config.pool_frames)?;
        Ok(MmuServer {
            mmu: Mmu {
                phys: config.phys,
                pool,
                sps: SpTable::new(),
                vms: [VmCounters::default(); MAX_VMS],
                tick: 0,
                nx: NxPolicy::default(),
            },
            vms: [const { None }; MAX_VMS],
        })
    }

    /// Frames not used by any table.
    pub fn free_frames(&self) -> usize {
        self.mmu.pool.free_frames()
    }

    /// The host-physical map the tables live in (tests walk our tables through it).
    pub fn phys(&self) -> &PhysMap {
        &self.mmu.phys
    }

    /// The VM a badge names, for inspection.
    pub fn vm(&self, badge: Badge) -> Option<&Vm> {
        let badge = ipc::badge::vm_of(badge);
        self.vms.iter().flatten().find(|v| v.badge == badge)
    }

    /// The system-wide NX-huge-page setting.
    pub fn nx_policy(&self) -> &NxPolicy {
        &self.mmu.nx
    }

    /// Sets the system-wide NX-huge-page mode, at start-up (before any VM: the only
    /// time `Never` is accepted) or later through `SetNxHugePages` from the system
    /// controller. Once `Never` is set every change is `PermissionDenied`; `Never`
    /// with a VM present is `InvalidState`. When the mitigation turns on or off, every
    /// VM's tables become obsolete and are zapped (KVM's `kvm_mmu_zap_all_fast`); each
    /// VM rebuilds on demand, and its next reply with a `flush` field flushes its
    /// whole guest TLB.
    pub fn set_nx_huge_pages(&mut self, mode: NxMode) -> Result<(), Error> {
        let vms_exist = self.vms.iter().any(Option::is_some);
        if self.mmu.nx.set_mode(mode, vms_exist)? {
            for vm in self.vms.iter().flatten() {
                self.mmu.zap_vm_obsolete(vm.index);
            }
        }
        Ok(())
    }

    /// Sets the recovery ratio (0: no recovery) and period (0: derived from the ratio).
    pub fn set_nx_recovery(&mut self, ratio: u32, period_ms: u64) {
        self.mmu.nx.set_recovery(ratio, period_ms);
    }

    /// One NX-huge-page recovery period has passed: every VM zaps ceil(splits / ratio)
    /// of its oldest split pages (none while the mode is off or the ratio is 0).
    /// Returns how many pages were recovered. The entry point for the timer: on seL4
    /// the mmu-server PD calls it for each `RECOVERY_TICK` signal on its bound
    /// notification; the host runtime's timer thread sends `NxRecoveryTick`.
    pub fn recovery_tick(&mut self) -> u64 {
        let mut total = 0;
        for vm in self.vms.iter().flatten() {
            let splits = self.mmu.vms[vm.index as usize].stats.nx_lpage_splits;
            let n = self.mmu.nx.to_zap(splits);
            total += self.mmu.recover_nx(vm.index, n);
        }
        self.mmu.nx.recovered_total += total;
        total
    }

    fn nx_state(&self) -> NxHugePagesState {
        let p = &self.mmu.nx;
        NxHugePagesState {
            mode: p.mode() as u32,
            enabled: p.enabled() as u32,
            ratio: p.ratio(),
            reserved: 0,
            period_ms: p.period_ms(),
            recovered_total: p.recovered_total,
        }
    }

    /// The requests of the system controller (`badge::SYSTEM_CONTROL`).
    fn dispatch_control(
        &mut self,
        badge: Badge,
        req: MmuRequest,
        reply: &mut [u8; MAX_MSG_BYTES],
    ) -> Option<Result<usize, Error>> {
        let control = ipc::badge::is_system_control(badge);
        let result = match req {
            MmuRequest::SetNxHugePages(_)
            | MmuRequest::SetNxRecovery(_)
            | MmuRequest::GetNxHugePages(_)
            | MmuRequest::NxRecoveryTick(_)
                if !control =>
            {
                Err(Error::PermissionDenied)
            }
            MmuRequest::SetNxHugePages(m) => NxMode::try_from(m.mode)
                .and_then(|mode| self.set_nx_huge_pages(mode))
                .and_then(|()| encode_reply(&Empty {}, reply)),
            MmuRequest::SetNxRecovery(r) => {
                self.set_nx_recovery(r.ratio, r.period_ms);
                encode_reply(&Empty {}, reply)
            }
            MmuRequest::GetNxHugePages(_) => encode_reply(&self.nx_state(), reply),
            MmuRequest::NxRecoveryTick(_) => {
                let recovered = self.recovery_tick();
                encode_reply(&NxRecoveryReport { recovered }, reply)
            }
            // The controller is no VM: it may neither make one nor speak for one.
            _ if control => Err(Error::PermissionDenied),
            _ => return None,
        };
        Some(result)
    }

    /// `DisableNxHugePages`, an invocation of the `NxHugePageControl` capability. The
    /// checks come in MMU_REFERENCE.md's order (KVM's
    /// `KVM_CAP_VM_DISABLE_NX_HUGE_PAGES`): flags, then the capability, then the
    /// argument, then the vCPU. (The issue lists "non-zero flags or argument" first;
    /// the two orders differ only for a caller without the capability and a non-zero
    /// argument, which gets `PermissionDenied` here, as in KVM.)
    fn disable_nx_huge_pages(
        vm: &mut Vm,
        badge: Badge,
        d: &ipc::DisableNxHugePages,
    ) -> Result<(), Error> {
        if d.flags != 0 || d.reserved != 0 {
            return Err(Error::InvalidArgument);
        }
        if !ipc::badge::holds_nx_huge_page_control(badge) {
            return Err(Error::PermissionDenied);
        }
        if d.arg != 0 {
            return Err(Error::InvalidArgument);
        }
        if vm.vcpu_created {
            return Err(Error::InvalidArgument);
        }
        // Without effect while the system mode is off: `nx_huge_pages_apply` asks both.
        vm.nx_disabled = true;
        Ok(())
    }

    /// Statistics of the VM a badge names.
    pub fn stats(&self, badge: Badge) -> Option<Stats> {
        let vm = self.vm(badge)?;
        Some(self.mmu.vms[vm.index as usize].stats)
    }

    fn slot_of(&self, badge: Badge) -> Result<usize, Error> {
        self.vms
            .iter()
            .position(|v| v.as_ref().is_some_and(|v| v.badge == badge))
            .ok_or(Error::NoSuchVm)
    }

    /// Runs one decoded request, writing a success reply; errors are the caller's.
    pub fn dispatch(
        &mut self,
        badge: Badge,
        req: MmuRequest,
        reply: &mut [u8; MAX_MSG_BYTES],
    ) -> Result<usize, Error> {
        self.mmu.tick += 1;
        if let Some(result) = self.dispatch_control(badge, req, reply) {
            return result;
        }
        let nx_badge = badge;
        let badge = ipc::badge::vm_of(badge);
        if let MmuRequest::CreateVm(c) = req {
            if self.slot_of(badge).is_ok() {
                return Err(Error::VmExists);
            }
            let i = self
                .vms
                .iter()
                .position(Option::is_none)
                .ok_or(Error::OutOfMemory)?;
            let vm = Vm::new(i as u8, badge, &c)?;
            // A fresh VM starts with fresh counters and generation.
            self.mmu.vms[i] = VmCounters::default();
            self.vms[i] = Some(vm);
            return encode_reply(&Empty {}, reply);
        }
        let i = self.slot_of(badge)?;
        let mmu = &mut self.mmu;
        let Some(vm) = self.vms[i].as_mut() else {
            return Err(Error::NoSuchVm);
        };
        // The VM's vCPU is stopped at an exit now: what recovery unlinked can go.
        mmu.free_zombies(vm.index);
        let mut fl = 0u32;
        match req {
            MmuRequest::CreateVm(_) => Err(Error::VmExists),
            MmuRequest::AddMemSlot(a) => {
                let kind = SlotKind::try_from(a.kind)?;
                if kind != SlotKind::Mmio {
                    let len = a.npages.checked_mul(4096).ok_or(Error::BadAddress)?;
                    // Guest memory must be memory we can reach, and never our own tables.
                    if mmu.pool.overlaps(a.host_base, len) {
                        return Err(Error::PermissionDenied);
                    }
                    if mmu.phys.local(a.host_base, len, false).is_none() {
                        return Err(Error::BadAddress);
                    }
                }
                vm.add_slot(MemSlot {
                    base_gfn: a.base_gfn,
                    npages: a.npages,
                    host_base: a.host_base,
                    kind,
                })?;
                encode_reply(&Empty {}, reply)
            }
            MmuRequest::RemoveMemSlot(r) => {
                vm.remove_slot(mmu, r.base_gfn, &mut fl)?;
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::SetGuestRegs(r) => {
                vm.set_guest_regs(mmu, r.cr0, r.cr3, r.cr4, r.efer, &mut fl)?;
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::CrWrite(w) => {
                match CrRegister::try_from(w.reg)? {
                    CrRegister::Cr0 => vm.set_cr0(mmu, w.value, &mut fl)?,
                    CrRegister::Cr3 => vm.set_cr3(mmu, w.value, &mut fl)?,
                    CrRegister::Cr4 => vm.set_cr4(mmu, w.value, &mut fl)?,
                    CrRegister::Efer => vm.set_efer(mmu, w.value, &mut fl)?,
                }
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::TdpFault(f) => {
                let fault = vm.tdp_fault(mmu, &f, &mut fl)?;
                fault_reply(mmu, vm, fault, fl, reply)
            }
            MmuRequest::ShadowFault(f) => {
                let fault = vm.shadow_fault(mmu, &f, &mut fl)?;
                fault_reply(mmu, vm, fault, fl, reply)
            }
            MmuRequest::Invlpg(_) => {
                vm.invlpg(mmu, &mut fl)?;
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::Invpcid(p) => {
                vm.invpcid(mmu, InvpcidKind::try_from(p.kind)?, p.pcid as u64, &mut fl)?;
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::EmulatedWrite(w) => {
                vm.emulated_write(mmu, &w, &mut fl)?;
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::GvaToGpa(g) => {
                let t = vm.gva_to_gpa(mmu, &g)?;
                encode_reply(&t, reply)
            }
            MmuRequest::GetStats(_) => encode_reply(&mmu.vms[i].stats, reply),
            MmuRequest::VcpuCreated(_) => {
                vm.vcpu_created = true;
                encode_reply(&Empty {}, reply)
            }
            MmuRequest::DisableNxHugePages(d) => {
                Self::disable_nx_huge_pages(vm, nx_badge, &d)?;
                encode_reply(&Empty {}, reply)
            }
            MmuRequest::SyncMmu(_) => {
                // A root the vCPU still runs on may have gone obsolete (a mode change):
                // replace it now that the vCPU is stopped.
                let had_root = vm.roots.current.page.is_some();
                vm.free_obsolete_roots(mmu);
                if had_root {
                    vm.load_root(mmu, &mut fl)?;
                }
                root_reply(mmu, vm, fl, reply)
            }
            MmuRequest::GetMapping(g) => encode_reply(&vm.mapping(mmu, g.addr), reply),
            MmuRequest::SetNxHugePages(_)
            | MmuRequest::SetNxRecovery(_)
            | MmuRequest::GetNxHugePages(_)
            | MmuRequest::NxRecoveryTick(_) => Err(Error::PermissionDenied),
            MmuRequest::DestroyVm(_) => {
                vm.destroy(mmu);
                self.vms[i] = None;
                encode_reply(&Empty {}, reply)
            }
        }
    }
}

fn root_reply(
    mmu: &mut Mmu,
    vm: &Vm,
    fl: u32,
    reply: &mut [u8; MAX_MSG_BYTES],
) -> Result<usize, Error> {
    let fl = fl | mmu.take_pending_flush(vm.index);
    if fl != 0 {
        mmu.stats(vm.index).tlb_flushes += 1;
    }
    let r: RootReply = vm.root_reply(mmu, fl);
    encode_reply(&r, reply)
}

fn fault_reply(
    mmu: &mut Mmu,
    vm: &Vm,
    f: Fault,
    fl: u32,
    reply: &mut [u8; MAX_MSG_BYTES],
) -> Result<usize, Error> {
    let fl = fl | mmu.take_pending_flush(vm.index);
    if fl != 0 {
        mmu.stats(vm.index).tlb_flushes += 1;
    }
    let root = vm.root_reply(mmu, fl);
    let r = FaultReply {
        outcome: f.outcome as u32,
        error_code: f.error_code,
        gpa: f.gpa,
        flush: fl,
        root_level: root.root_level,
        root_hpa: root.root_hpa,
    };
    encode_reply(&r, reply)
}

impl ipc::Server for MmuServer {
    fn handle(&mut self, badge: Badge, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize {
        let result = MmuRequest::decode(request).and_then(|req| self.dispatch(badge, req, reply));
        match result {
            Ok(n) => n,
            Err(e) => encode_error_reply(e, reply),
        }
    }
}

#[cfg(test)]
mod tests {
    //! Write tracking under TDP: nothing in this server tracks gfns of a TDP VM yet
    //! (no nested paging, no external tracker), so the paths that honour tracking in
    //! the TDP fault are exercised by tracking a gfn by hand.
    extern crate std;
    use super::*;
    use crate::role::PageRole;
    use crate::spte::Format;
    use crate::tdp::qual;
    use core::ptr::NonNull;
    use ipc::{AddMemSlot, CreateVm, FaultOutcome, SetGuestRegs, TdpFault};
    use std::boxed::Box;
    use std::vec;

    const RAM_HPA: u64 = 0x1_0000_0000;
    const POOL_HPA: u64 = 0x80_0000_0000;

    fn fault(s: &mut MmuServer, gpa: u64, q: u64) -> FaultReply {
        let mut reply = [0u8; MAX_MSG_BYTES];
        let req = MmuRequest::TdpFault(TdpFault {
            gpa,
            gla: gpa,
            qualification: q,
            rip: 0x1000,
        });
        let n = s.dispatch(1, req, &mut reply).unwrap();
        ipc::decode_reply::<TdpFault>(&reply[..n]).unwrap()
    }

    #[test]
    fn tracked_gfns_limit_tdp_mappings_and_follow_the_direct_retry_rule() {
        let mut ram = vec![0u64; (4 << 20) / 8];
        let mut pool = vec![0u64; 32 * 512];
        let mut phys = PhysMap::new();
        unsafe {
            phys.add_region(
                RAM_HPA,
                NonNull::new(ram.as_mut_ptr().cast()).unwrap(),
                4 << 20,
                true,
            )
            .unwrap();
            phys.add_region(
                POOL_HPA,
                NonNull::new(pool.as_mut_ptr().cast()).unwrap(),
                32 * 4096,
                true,
            )
            .unwrap();
        }
        let mut slot = Box::<MmuServer>::new_uninit();
        let config = ServerConfig {
            phys,
            pool_base: POOL_HPA,
            pool_frames: 32,
        };
        MmuServer::init_in_place(&mut slot, config).unwrap();
        let mut s = unsafe { slot.assume_init() };
        let mut reply = [0u8; MAX_MSG_BYTES];
        let create = CreateVm {
            mmu_mode: 0,
            root_reuse: 1,
            flags: 0,
            reserved: 0,
        };
        s.dispatch(1, MmuRequest::CreateVm(create), &mut reply)
            .unwrap();
        let slot = AddMemSlot {
            base_gfn: 0,
            npages: 1024,
            host_base: RAM_HPA,
            kind: 0,
            reserved: 0,
        };
        s.dispatch(1, MmuRequest::AddMemSlot(slot), &mut reply)
            .unwrap();
        let regs = SetGuestRegs {
            cr0: 0x8001_0001,
            cr3: 0x1000,
            cr4: 0x20,
            efer: 0xD00,
        };
        s.dispatch(1, MmuRequest::SetGuestRegs(regs), &mut reply)
            .unwrap();

        // Untracked: a 2M page.
        assert_eq!(
            fault(&mut s, 0x20_5000, qual::WRITE).outcome,
            FaultOutcome::Fixed as u32
        );
        assert_eq!(s.stats(1).unwrap().pages_2m, 1);

        // Track gfn 0x105 (as a shadow of a guest table would): its 2M range maps 4K,
        // and it is never writable.
        let mut fl = 0;
        let role = PageRole::default().with_level(1).with_access(7);
        let id = s
            .mmu
            .new_page(
                0,
                0x105,
                role,
                Format::Ia32e,
                true,
                Some(RAM_HPA + 0x10_5000),
                &mut fl,
            )
            .unwrap();
        assert!(s.mmu.sps.get(id).has_gptes());
        let r = fault(&mut s, 0x10_6000, qual::WRITE);
        assert_eq!(r.outcome, FaultOutcome::Fixed as u32);
        assert_eq!(
            s.stats(1).unwrap().pages_2m,
            1,
            "no 2M page over a tracked gfn"
        );
        // A write to the tracked gfn itself: a plain data write is emulated ...
        let r = fault(
            &mut s,
            0x10_5008,
            qual::WRITE | qual::GLA_VALID | qual::GLA_TRANSLATED,
        );
        assert_eq!(r.outcome, FaultOutcome::Emulate as u32);
        // ... a write the CPU made while walking the guest's tables retries after
        // unprotecting (KVM's is_write_to_guest_page_table).
        let r = fault(&mut s, 0x10_5010, qual::WRITE | qual::GLA_VALID);
        assert_eq!(r.outcome, FaultOutcome::Retry as u32);
        assert!(!s.mmu.sps.get(id).in_use, "unprotected");
        let st = s.stats(1).unwrap();
        assert_eq!(
            (st.write_protect_faults, st.unprotect_retries, st.emulations),
            (2, 1, 1)
        );
        // Untracked again: the write maps writable, and the 4K table gives way to a
        // 2M page.
        let r = fault(&mut s, 0x10_5010, qual::WRITE);
        assert_eq!(r.outcome, FaultOutcome::Fixed as u32);
        assert_eq!(
            r.flush & ipc::flush::GUEST,
            ipc::flush::GUEST,
            "a table was freed"
        );
        assert_eq!(s.stats(1).unwrap().pages_2m, 2);
        // A fault on a root that went obsolete behind the vCPU's back (another
        // generation) is retried on a fresh root, named in the reply
        // (`is_page_fault_stale`).
        s.mmu.vms[0].gen ^= 1;
        let r = fault(&mut s, 0x10_5010, qual::READ);
        assert_eq!(r.outcome, FaultOutcome::Retry as u32);
        assert_eq!(r.flush & ipc::flush::CURRENT, ipc::flush::CURRENT);
        let st = s.stats(1).unwrap();
        assert_eq!((st.roots_allocated, st.roots_freed), (2, 1));
        assert_ne!(s.vm(1).unwrap().roots.current.page, None);
        assert_eq!(
            fault(&mut s, 0x10_5010, qual::READ).outcome,
            FaultOutcome::Fixed as u32
        );
        drop(s);
        drop((ram, pool));
    }
}
