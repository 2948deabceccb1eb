//! Event delivery through the guest IDT (SDM 6.12, 6.14 for IA-32e mode), the
//! exception bitmap and nested-fault rules (SDM 6.15 Table 6-5: #DF, triple fault),
//! VM-entry event injection (SDM 27.6) and IDT-vectoring information (SDM 28.2.4).

use physmem::PhysMap;

use crate::controls::EventInjection;
use crate::exit::{event_type, interruption, ExitReason, VmExit};
use crate::regs::{access, rflags, SegReg, Segment};
use crate::vcpu::{vector, Raised, Step, Stop, Vcpu};

/// One event being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Event {
    pub vector: u8,
    /// VT-x event type (`exit::event_type`).
    pub ty: u32,
    pub error_code: Option<u32>,
    /// For a #PF raised by the model: the address to load into CR2 on delivery.
    pub cr2: Option<u64>,
    /// The RIP pushed on the handler's stack.
    pub return_rip: u64,
    /// Instruction length for software interrupts/exceptions.
    pub instruction_len: u8,
}

impl Event {
    fn info(&self) -> u32 {
        interruption::info(self.vector, self.ty, self.error_code.is_some())
    }

    fn is_hardware_exception(&self) -> bool {
        self.ty == event_type::HARDWARE_EXCEPTION
    }

    /// SDM Table 6-4 classes, for hardware exceptions only.
    fn contributory(&self) -> bool {
        self.is_hardware_exception() && matches!(self.vector, 0 | 10 | 11 | 12 | 13)
    }

    fn page_fault(&self) -> bool {
        self.is_hardware_exception() && self.vector == vector::PF
    }

    fn software(&self) -> bool {
        matches!(
            self.ty,
            event_type::SOFTWARE_INTERRUPT | event_type::SOFTWARE_EXCEPTION
        )
    }
}

/// A descriptor-limit #GP from `read_descriptor` becomes `vector(code)` (the
/// delivery's own error code, with EXT); a #PF or an exit while reading the
/// descriptor is reported as itself.
fn retag(s: Stop, vector: u8, code: u32) -> Stop {
    match s {
        Stop::Exception(r) if r.vector == crate::vcpu::vector::GP => {
            Stop::fault(vector, Some(code))
        }
        other => other,
    }
}

impl Vcpu {
    /// An instruction faulted with `e`: exit through the exception bitmap or deliver.
    pub(crate) fn raise(&mut self, mem: &PhysMap, e: Raised) -> Result<(), VmExit> {
        let ev = Event {
            vector: e.vector,
            ty: event_type::HARDWARE_EXCEPTION,
            error_code: e.error_code(),
            cr2: if e.vector == vector::PF {
                Some(self.pf_linear)
            } else {
                None
            },
            return_rip: self.rip,
            instruction_len: 0,
        };
        self.deliver(mem, ev, true)
    }

    /// Delivers an event injected by the VMM (no exception-bitmap check for it).
    pub(crate) fn inject_event(
        &mut self,
        mem: &PhysMap,
        inj: EventInjection,
    ) -> Result<(), VmExit> {
        let ty = (inj.info >> interruption::TYPE_SHIFT) & 7;
        let software = matches!(
            ty,
            event_type::SOFTWARE_INTERRUPT
                | event_type::PRIVILEGED_SOFTWARE_EXCEPTION
                | event_type::SOFTWARE_EXCEPTION
        );
        let ev = Event {
            vector: (inj.info & interruption::VECTOR_MASK) as u8,
            ty,
            error_code: if inj.info & interruption::ERROR_CODE_VALID != 0 {
                Some(inj.error_code)
            } else {
                None
            },
            cr2: None,
            return_rip: if software {
                self.wrap_ip(self.rip.wrapping_add(inj.instruction_len as u64))
            } else {
                self.rip
            },
            instruction_len: inj.instruction_len,
        };
        self.deliver(mem, ev, false)
    }

    fn exception_exit(&self, ev: &Event, vectoring: Option<&Event>) -> VmExit {
        let mut x = VmExit::new(ExitReason::ExceptionOrNmi, self.rip);
        x.interruption_info = ev.info();
        x.interruption_error_code = ev.error_code.unwrap_or(0);
        if ev.page_fault() {
            // SDM 28.2.1: a #PF exit's qualification is the linear address; CR2 is
            // not written.
            x.qualification = ev.cr2.unwrap_or(0);
        }
        if ev.software() {
            x.instruction_len = ev.instruction_len;
        }
        if let Some(v) = vectoring {
            x.idt_vectoring_info = v.info();
            x.idt_vectoring_error_code = v.error_code.unwrap_or(0);
        }
        x
    }

    /// Delivers `ev`, applying the exception bitmap (`check_bitmap`) and the
    /// nested-fault rules: a fault while delivering a contributory exception or #PF
    /// becomes #DF, a fault while delivering #DF is a triple fault (an exit).
    pub(crate) fn deliver(
        &mut self,
        mem: &PhysMap,
        ev: Event,
        check_bitmap: bool,
    ) -> Result<(), VmExit> {
        let mut cur = ev;
        let mut check = check_bitmap;
        // The event whose delivery was interrupted, for IDT-vectoring information.
        let mut prev: Option<Event> = None;
        loop {
            let bitmap_applies =
                cur.is_hardware_exception() || cur.ty == event_type::SOFTWARE_EXCEPTION;
            if check
                && bitmap_applies
                && self
                    .controls
                    .exception_exits(cur.vector, cur.error_code.unwrap_or(0))
            {
                return Err(self.exception_exit(&cur, prev.as_ref()));
            }
            match self.deliver_through_idt(mem, &cur) {
                Ok(()) => {
                    self.halted = false;
                    return Ok(());
                }
                Err(Stop::Exit) => {
                    let mut x = self.exit;
                    x.idt_vectoring_info = cur.info();
                    x.idt_vectoring_error_code = cur.error_code.unwrap_or(0);
                    return Err(x);
                }
                Err(Stop::Exception(f)) => {
                    let second = Event {
                        vector: f.vector,
                        ty: event_type::HARDWARE_EXCEPTION,
                        error_code: f.error_code(),
                        cr2: if f.vector == vector::PF {
                            Some(self.pf_linear)
                        } else {
                            None
                        },
                        return_rip: self.rip,
                        instruction_len: 0,
                    };
                    if self
                        .controls
                        .exception_exits(second.vector, second.error_code.unwrap_or(0))
                    {
                        return Err(self.exception_exit(&second, Some(&cur)));
                    }
                    let second_contrib_or_pf = second.contributory() || second.page_fault();
                    if cur.is_hardware_exception()
                        && cur.vector == vector::DF
                        && second_contrib_or_pf
                    {
                        return Err(VmExit::new(ExitReason::TripleFault, self.rip));
                    }
                    if (cur.contributory() && second.contributory())
                        || (cur.page_fault() && second_contrib_or_pf)
                    {
                        prev = Some(cur);
                        cur = Event {
                            vector: vector::DF,
                            ty: event_type::HARDWARE_EXCEPTION,
                            error_code: Some(0),
                            cr2: None,
                            return_rip: self.rip,
                            instruction_len: 0,
                        };
                    } else {
                        // Benign combinations are handled serially (Table 6-5).
                        prev = Some(cur);
                        cur = second;
                    }
                    check = true;
                }
            }
        }
    }

    /// Reads an IDT gate and delivers through it.
    fn deliver_through_idt(&mut self, mem: &PhysMap, ev: &Event) -> Step {
        // EXT (bit 0 of error codes) is set for faults during delivery of an event
        // external to the program (SDM 6.13).
        let ext = u32::from(!matches!(
            ev.ty,
            event_type::SOFTWARE_INTERRUPT | event_type::SOFTWARE_EXCEPTION
        ));
        let idt_code = (ev.vector as u32) * 8 + 2 + ext;
        if let Some(a) = ev.cr2 {
            self.cr2 = a;
        }
        let long = self.long_mode_active();
        let gate_size: u64 = if long { 16 } else { 8 };
        let off = ev.vector as u64 * gate_size;
        if off + gate_size - 1 > self.idtr.limit as u64 {
            return Err(Stop::gp(idt_code));
        }
        let base = self.idtr.base.wrapping_add(off);
        let lo = self.read_linear_implicit(mem, base, 8)?;
        let hi = if long {
            self.read_linear_implicit(mem, base.wrapping_add(8), 8)?
        } else {
            0
        };
        let ty = ((lo >> 40) & 0x1f) as u8;
        let gate_dpl = ((lo >> 45) & 3) as u8;
        let present = lo & (1 << 47) != 0;
        let (gate32, trap) = match (long, ty) {
            (true, 0x0e) => (true, false),
            (true, 0x0f) => (true, true),
            (false, 0x0e) => (true, false),
            (false, 0x0f) => (true, true),
            (false, 0x06) => (false, false),
            (false, 0x07) => (false, true),
            (false, 0x05) => {
                // Task gates need a task switch: not modelled.
                self.exit = VmExit::new(ExitReason::Unimplemented, self.rip);
                return Err(Stop::Exit);
            }
            _ => return Err(Stop::gp(idt_code)),
        };
        if ev.software() && gate_dpl < self.cpl() {
            return Err(Stop::gp(idt_code));
        }
        if !present {
            return Err(Stop::fault(vector::NP, Some(idt_code)));
        }
        let sel = ((lo >> 16) & 0xffff) as u16;
        let mut target = (lo & 0xffff) | (((lo >> 48) & 0xffff) << 16);
        if long {
            target |= (hi & 0xffff_ffff) << 32;
        }
        if sel & !3 == 0 {
            return Err(Stop::gp(ext));
        }
        let sel_code = (sel as u32 & 0xfffc) + ext;
        let (dlow, _) = self
            .read_descriptor(mem, sel)
            .map_err(|e| retag(e, vector::GP, sel_code))?;
        let cs = Segment::from_descriptor(sel, dlow, None);
        let cpl = self.cpl();
        if cs.access & access::S == 0 || cs.access & access::CODE == 0 || cs.dpl() > cpl {
            return Err(Stop::gp(sel_code));
        }
        if long && (cs.access & access::L == 0 || cs.access & access::DB != 0) {
            return Err(Stop::gp(sel_code));
        }
        if cs.access & access::P == 0 {
            return Err(Stop::fault(vector::NP, Some(sel_code)));
        }
        let conforming = cs.access & access::DC != 0;
        let new_cpl = if conforming { cpl } else { cs.dpl() };
        let push_rflags = self.rflags;
        let old_cs = self.seg[SegReg::Cs as usize].selector as u64;
        let old_ss = self.seg[SegReg::Ss as usize];
        let old_rsp = self.gpr[4];
        let ec = ev.error_code;
        if long {
            let ist = (lo >> 32) & 7;
            let mut rsp = old_rsp;
            if new_cpl < cpl || ist != 0 {
                let tss_off = if ist != 0 {
                    0x24 + 8 * (ist - 1)
                } else {
                    4 + 8 * new_cpl as u64
                };
                if tss_off + 7 > self.tr.limit as u64 {
                    return Err(Stop::fault(
                        vector::TS,
                        Some((self.tr.selector as u32 & 0xfffc) + ext),
                    ));
                }
                rsp = self.read_linear_implicit(mem, self.tr.base.wrapping_add(tss_off), 8)?;
            }
            rsp &= !0xf;
            let mut frame = [0u64; 6];
            let mut n = 0;
            if let Some(c) = ec {
                frame[n] = c as u64;
                n += 1;
            }
            for v in [
                ev.return_rip,
                old_cs,
                push_rflags,
                old_rsp,
                old_ss.selector as u64,
            ] {
                frame[n] = v;
                n += 1;
            }
            let bottom = rsp.wrapping_sub(8 * n as u64);
            if !crate::regs::is_canonical(bottom, self.cr4 & crate::vcpu::cr4::LA57 != 0) {
                return Err(Stop::ss(ext));
            }
            self.probe_write(mem, bottom, 8 * n as u64, true)?;
            for (i, v) in frame[..n].iter().enumerate() {
                self.write_linear_implicit(mem, bottom + 8 * i as u64, 8, *v)?;
            }
            if new_cpl != cpl {
                self.seg[SegReg::Ss as usize] = Segment {
                    selector: new_cpl as u16,
                    access: access::UNUSABLE | ((new_cpl as u32) << access::DPL_SHIFT),
                    ..Segment::UNUSABLE
                };
            }
            self.gpr[4] = bottom;
        } else {
            let (ss, esp, changed) = if new_cpl < cpl {
                let tss_off = 4 + 8 * new_cpl as u64;
                if tss_off + 5 > self.tr.limit as u64 {
                    return Err(Stop::fault(
                        vector::TS,
                        Some((self.tr.selector as u32 & 0xfffc) + ext),
                    ));
                }
                let esp = self.read_linear_implicit(mem, self.tr.base.wrapping_add(tss_off), 4)?;
                let ss_sel =
                    self.read_linear_implicit(mem, self.tr.base.wrapping_add(tss_off + 4), 2)?
                        as u16;
                let ts = |s: u16| Stop::fault(vector::TS, Some((s as u32 & 0xfffc) + ext));
                if ss_sel & !3 == 0 {
                    return Err(ts(ss_sel));
                }
                let (sl, _) = self
                    .read_descriptor(mem, ss_sel)
                    .map_err(|e| retag(e, vector::TS, (ss_sel as u32 & 0xfffc) + ext))?;
                let ss = Segment::from_descriptor(ss_sel, sl, None);
                if (ss_sel & 3) as u8 != new_cpl
                    || ss.dpl() != new_cpl
                    || ss.access & access::S == 0
                    || ss.access & access::CODE != 0
                    || ss.access & access::RW == 0
                {
                    return Err(ts(ss_sel));
                }
                if ss.access & access::P == 0 {
                    return Err(Stop::ss((ss_sel as u32 & 0xfffc) + ext));
                }
                (ss, esp, true)
            } else {
                (old_ss, old_rsp, false)
            };
            let w: u64 = if gate32 { 4 } else { 2 };
            let mut frame = [0u64; 6];
            let mut n = 0;
            if let Some(c) = ec {
                frame[n] = c as u64;
                n += 1;
            }
            frame[n] = ev.return_rip;
            frame[n + 1] = old_cs;
            frame[n + 2] = push_rflags;
            n += 3;
            if changed {
                frame[n] = old_rsp & 0xffff_ffff;
                frame[n + 1] = old_ss.selector as u64;
                n += 2;
            }
            let sp_mask: u64 = if ss.access & access::DB != 0 {
                0xffff_ffff
            } else {
                0xffff
            };
            let bottom = esp.wrapping_sub(w * n as u64) & sp_mask;
            let lin = ss.base.wrapping_add(bottom) & 0xffff_ffff;
            self.probe_write(mem, lin, w * n as u64, true)?;
            for (i, v) in frame[..n].iter().enumerate() {
                self.write_linear_implicit(
                    mem,
                    lin.wrapping_add(w * i as u64) & 0xffff_ffff,
                    w as u8,
                    *v,
                )?;
            }
            if changed {
                self.seg[SegReg::Ss as usize] = ss;
                self.gpr[4] = bottom;
            } else {
                self.set_sp(bottom);
            }
        }
        self.seg[SegReg::Cs as usize] = Segment {
            selector: (sel & !3) | new_cpl as u16,
            ..cs
        };
        self.rip = if long { target } else { target & 0xffff_ffff };
        self.rflags &= !(rflags::TF | rflags::NT | rflags::RF | rflags::VM);
        if !trap {
            self.rflags &= !rflags::IF;
        }
        self.interruptibility = 0;
        self.update_bitness();
        if new_cpl != cpl {
            self.cpl_changed(push_rflags);
        }
        Ok(())
    }
}
