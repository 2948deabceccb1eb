//! Step 6: the threads: each PD's TCB configured from the spec, its registers set to
//! the ELF entry and the stack top; and restarting a PD that faulted.

use super::Builder;
use crate::error::{Error, Step};
use alloc::vec::Vec;
use capdl_spec::layout::BOOT_PARAMS_VADDR;
use capdl_spec::{tcb_slot, PdKind};
use sel4::cap_type::*;
use sel4::{Cap, PrioProps, UserContext};
use zerocopy::IntoBytes;

/// A started (or about to be started) protection domain.
#[derive(Clone, Copy, Debug)]
pub struct Pd {
    pub name: &'static str,
    pub elf: &'static str,
    pub kind: PdKind,
    pub tcb: Cap<Tcb>,
    pub entry: u64,
    /// Initial stack pointer.
    pub sp: u64,
    /// Its VSpace root (object index).
    pub vspace: u32,
    /// How many times the supervisor restarted it.
    pub restarts: u64,
}

impl Builder {
    /// Steps 5 and 6: loads, fills and configures every PD (not yet resumed).
    pub fn prepare_pds(&mut self) -> Result<Vec<Pd>, Error> {
        let spec = self.spec;
        let mut out = Vec::new();
        for (index, pd) in spec.pds().iter().enumerate() {
            let name = spec.str(pd.name);
            let tcb_obj = pd.tcb.get();
            let t = spec
                .tcb(&spec.objects()[tcb_obj as usize])
                .ok_or(Error::Malformed("TCB record"))?;
            let elf = spec.str(t.elf);
            let entry = self.load_image(name, pd.vspace.get(), elf, true)?;
            let params = self.boot_params(index)?;
            self.with_scratch(pd.boot_params.get(), |dst| {
                let b = params.as_bytes();
                dst[..b.len()].copy_from_slice(b);
            })?;
            // The boot-parameter frame is mapped in the PD at BOOT_PARAMS_VADDR: check.
            if !self
                .maps
                .iter()
                .any(|m| m.frame == pd.boot_params.get() && m.vaddr == BOOT_PARAMS_VADDR)
            {
                return Err(Error::Malformed("boot-parameter mapping"));
            }

            let tcb: Cap<Tcb> = self.cap(tcb_obj);
            let tname = self.name(tcb_obj);
            let (mut cspace, mut guard, mut ipc, mut bound) = (None, 0, None, None);
            for c in spec.caps_of(tcb_obj) {
                match c.slot.get() {
                    tcb_slot::CSPACE => {
                        cspace = Some(c.target.get());
                        guard =
                            sel4_sys::cap_data::guard(c.guard.get() as u64, c.guard_size as u32)
                                .ok_or(Error::Unsupported {
                                    object: tname,
                                    what: "this CSpace guard",
                                })?;
                    }
                    tcb_slot::IPC_BUFFER => ipc = Some(c.target.get()),
                    tcb_slot::BOUND_NOTIFICATION => bound = Some(c.target.get()),
                    _ => {}
                }
            }
            let cspace = cspace.ok_or(Error::Malformed("TCB CSpace"))?;
            let ipc = ipc.ok_or(Error::Malformed("TCB IPC buffer"))?;
            tcb.tcb_configure(
                t.fault_ep.get(),
                PrioProps::new(t.max_prio, t.prio),
                self.cap(cspace),
                guard,
                self.cap(pd.vspace.get()),
                0,
                t.ipc_buffer_vaddr.get(),
                self.cap(ipc),
            )
            .step("TCB_Configure", tname)?;
            if let Some(n) = bound {
                tcb.tcb_bind_notification(self.cap(n))
                    .step("TCB_BindNotification", tname)?;
            }
            let regs = UserContext {
                rip: entry,
                rsp: t.sp.get(),
                ..Default::default()
            };
            tcb.tcb_write_registers(false, UserContext::WORDS, &regs)
                .step("TCB_WriteRegisters", tname)?;
            out.push(Pd {
                name,
                elf,
                kind: spec.pd_kind(pd),
                tcb,
                entry,
                sp: t.sp.get(),
                vspace: pd.vspace.get(),
                restarts: 0,
            });
        }
        Ok(out)
    }

    /// Restarts `pd` from scratch: stops it (a faulted thread is blocked on the fault
    /// endpoint; suspending cancels that), reloads its image (code, data, a zeroed
    /// .bss), and starts it at its entry on a fresh stack with rdi = its restart count.
    /// Its capabilities, boot parameters and the memory it shares with other PDs stay
    /// as they are; so does the reply capability of a call it was serving, which the
    /// restarted PD may answer.
    pub fn restart(&mut self, pd: &mut Pd) -> Result<(), Error> {
        let what = crate::error::ObjName {
            name: pd.name,
            index: None,
        };
        pd.tcb.tcb_suspend().step("TCB_Suspend", what)?;
        let entry = self.load_image(pd.name, pd.vspace, pd.elf, false)?;
        pd.restarts += 1;
        let regs = UserContext {
            rip: entry,
            rsp: pd.sp,
            rdi: pd.restarts,
            ..Default::default()
        };
        pd.tcb
            .tcb_write_registers(true, UserContext::WORDS, &regs)
            .step("TCB_WriteRegisters", what)
    }
}
