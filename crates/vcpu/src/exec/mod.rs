//! The instruction engine: one `step` fetches, decodes (through the cache) and executes
//! one instruction. Handlers are grouped by what they do: `alu` (arithmetic, logic,
//! shifts, multiply/divide, bit operations), `data` (moves, stack, strings), `control`
//! (branches, calls, software interrupts, IRET, SYSCALL/SYSRET), `system` (control
//! and model-specific registers, descriptor tables, I/O, TLB maintenance).

mod alu;
mod control;
mod data;
mod system;

use iced_x86::{ConditionCode, Mnemonic, OpKind, Register};
use physmem::PhysMap;

use crate::decode::{Decoded, OpClass, NO_REG};
use crate::exit::{ExitReason, UnimplementedInsn};
use crate::regs::{rflags, size_mask, RegSlot, SegReg, REG_SLOTS};
use crate::vcpu::{Step, Stop, Vcpu};

/// Where an operand lives once its address is computed.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loc {
    Reg(Register),
    /// A linear address (segmentation already applied).
    Mem(u64),
    Imm(u64),
}

/// What an instruction did to RIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Flow {
    /// Fall through to the next instruction.
    Next,
    /// RIP was set by the instruction.
    Jumped,
}

#[inline(always)]
pub(crate) fn seg_of(r: Register) -> SegReg {
    SegReg::from_iced(r)
}

impl Vcpu {
    /// Executes one instruction.
    #[inline(always)]
    pub(crate) fn step(&mut self, mem: &PhysMap) -> Step {
        let d = self.fetch(mem)?;
        // SAFETY: `fetch` guarantees the decoded instruction stays put until the
        // next fetch; executing never writes the decode cache's entries.
        let d = unsafe { &*d };
        self.cur_len = d.ins.len() as u8;
        let blocking = self.interruptibility;
        let single_step = self.rflags & rflags::TF != 0;
        match self.exec(mem, d)? {
            Flow::Next => self.rip = self.wrap_ip(d.ins.next_ip()),
            Flow::Jumped => {}
        }
        if single_step {
            // TF at the start of an instruction: a single-step trap after it
            // (SDM 17.3.1.4), delivered by the run loop once the instruction retires.
            self.dr[4] |= 1 << 14; // DR6.BS
            self.post_step |= crate::vcpu::post_step::SINGLE_STEP;
        }
        if blocking != 0 {
            // STI / MOV SS blocking lasts for one instruction (SDM 6.8.3).
            self.interruptibility &= !blocking;
        }
        Ok(())
    }

    // ----- registers -----

    #[inline(always)]
    pub(crate) fn reg(&self, r: Register) -> u64 {
        self.slot_get(REG_SLOTS[r as usize])
    }

    /// Writes a GPR with the architectural width rules: 32-bit writes zero the upper
    /// half, 8/16-bit writes merge (SDM Vol. 1 3.4.1.1).
    #[inline(always)]
    pub(crate) fn set_reg(&mut self, r: Register, v: u64) {
        self.slot_set(REG_SLOTS[r as usize], v)
    }

    /// Writes the low `size` bytes of GPR `idx` with the same width rules.
    #[inline(always)]
    pub(crate) fn set_gpr_sized(&mut self, idx: usize, size: u8, v: u64) {
        let g = &mut self.gpr[idx & 15];
        match size {
            8 => *g = v,
            4 => *g = v & 0xffff_ffff,
            2 => *g = (*g & !0xffff) | (v & 0xffff),
            _ => *g = (*g & !0xff) | (v & 0xff),
        }
    }

    // ----- pre-classified operands (the fast paths) -----

    #[inline(always)]
    pub(crate) fn slot_get(&self, s: RegSlot) -> u64 {
        let v = self.gpr[s.idx as usize & 15];
        if s.high8 {
            (v >> 8) & 0xff
        } else {
            v & size_mask(s.size)
        }
    }

    #[inline(always)]
    pub(crate) fn slot_set(&mut self, s: RegSlot, v: u64) {
        let g = &mut self.gpr[s.idx as usize & 15];
        match s.size {
            8 => *g = v,
            4 => *g = v & 0xffff_ffff,
            2 => *g = (*g & !0xffff) | (v & 0xffff),
            _ => {
                if s.high8 {
                    *g = (*g & !0xff00) | ((v & 0xff) << 8)
                } else {
                    *g = (*g & !0xff) | (v & 0xff)
                }
            }
        }
    }

    /// Reads a source operand (`i` = 0 or 1) that is a GPR, memory or an immediate.
    #[inline(always)]
    pub(crate) fn read_src(&mut self, mem: &PhysMap, d: &Decoded, i: usize, size: u8) -> Step<u64> {
        match d.kind[i] {
            OpClass::Gpr => Ok(self.slot_get(d.slot[i])),
            OpClass::Imm => Ok(d.imm & size_mask(size)),
            OpClass::Mem => {
                let lin = self.mem_linear(d, size, false)?;
                self.read_linear(mem, lin, size)
            }
            OpClass::Other => self.src(mem, d, i as u32, size),
        }
    }

    /// Read-modify-write of operand 0 (a GPR or memory): `f` gets the old value and
    /// returns the new one (`None`: no write) and the flags to commit after the write.
    #[inline(always)]
    pub(crate) fn rmw0(
        &mut self,
        mem: &PhysMap,
        d: &Decoded,
        size: u8,
        f: impl FnOnce(&mut Self, u64) -> (Option<u64>, u64),
    ) -> Step<Flow> {
        match d.kind[0] {
            OpClass::Gpr => {
                let a = self.slot_get(d.slot[0]);
                let (r, fl) = f(self, a);
                if let Some(r) = r {
                    self.slot_set(d.slot[0], r);
                }
                self.rflags = fl;
            }
            OpClass::Mem => {
                let lin = self.mem_linear(d, size, true)?;
                let a = self.read_linear(mem, lin, size)?;
                let (r, fl) = f(self, a);
                if let Some(r) = r {
                    self.write_linear(mem, lin, size, r)?;
                }
                self.rflags = fl;
            }
            _ => return Err(self.unimplemented(mem, d)),
        }
        Ok(Flow::Next)
    }

    // ----- operands through iced (the general paths) -----

    /// Operand size in bytes of operand `op` (register width or memory size).
    #[inline(always)]
    pub(crate) fn op_size(&self, d: &Decoded, op: u32) -> u8 {
        match d.ins.op_kind(op) {
            OpKind::Register => REG_SLOTS[d.ins.op_register(op) as usize].size,
            OpKind::Memory => d.ins.memory_size().size() as u8,
            _ => 0,
        }
    }

    /// The effective address (segment offset) of the memory operand.
    #[inline(always)]
    pub(crate) fn ea(&self, d: &Decoded) -> u64 {
        let mut a = d.disp;
        if d.mem_base != NO_REG {
            a = a.wrapping_add(self.gpr[d.mem_base as usize & 15]);
        }
        if d.mem_index != NO_REG {
            // The sum is truncated to the address size below, so the index can be
            // taken at full width.
            a = a.wrapping_add(self.gpr[d.mem_index as usize & 15] << d.mem_scale);
        }
        a & size_mask(d.addr_size)
    }

    /// The linear address of the memory operand for a `size`-byte access.
    #[inline(always)]
    pub(crate) fn mem_linear(&self, d: &Decoded, size: u8, write: bool) -> Step<u64> {
        self.seg_linear(d.mem_seg, self.ea(d), size.max(1), write)
    }

    #[inline(always)]
    pub(crate) fn loc(&self, d: &Decoded, op: u32, size: u8, write: bool) -> Step<Loc> {
        match d.ins.op_kind(op) {
            OpKind::Register => Ok(Loc::Reg(d.ins.op_register(op))),
            OpKind::Memory => Ok(Loc::Mem(self.mem_linear(d, size, write)?)),
            _ => Ok(Loc::Imm(d.ins.immediate(op))),
        }
    }

    #[inline(always)]
    pub(crate) fn get(&mut self, mem: &PhysMap, l: Loc, size: u8) -> Step<u64> {
        match l {
            Loc::Reg(r) => Ok(self.reg(r)),
            Loc::Mem(lin) => self.read_linear(mem, lin, size),
            Loc::Imm(v) => Ok(v & size_mask(size)),
        }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, mem: &PhysMap, l: Loc, size: u8, v: u64) -> Step {
        match l {
            Loc::Reg(r) => {
                self.set_reg(r, v);
                Ok(())
            }
            Loc::Mem(lin) => self.write_linear(mem, lin, size, v),
            Loc::Imm(_) => Err(Stop::ud()),
        }
    }

    /// Reads source operand `op`.
    #[inline(always)]
    pub(crate) fn src(&mut self, mem: &PhysMap, d: &Decoded, op: u32, size: u8) -> Step<u64> {
        let l = self.loc(d, op, size, false)?;
        self.get(mem, l, size)
    }

    // ----- flags -----

    #[inline(always)]
    pub(crate) fn set_status(&mut self, f: u64) {
        self.rflags = (self.rflags & !rflags::STATUS) | f;
    }

    #[inline(always)]
    pub(crate) fn cf(&self) -> bool {
        self.rflags & rflags::CF != 0
    }

    /// Evaluates a condition code (SDM Vol. 1 Appendix B).
    #[inline(always)]
    pub(crate) fn cond(&self, cc: ConditionCode) -> bool {
        let f = self.rflags;
        let cf = f & rflags::CF != 0;
        let zf = f & rflags::ZF != 0;
        let sf = f & rflags::SF != 0;
        let of = f & rflags::OF != 0;
        let pf = f & rflags::PF != 0;
        match cc {
            ConditionCode::o => of,
            ConditionCode::no => !of,
            ConditionCode::b => cf,
            ConditionCode::ae => !cf,
            ConditionCode::e => zf,
            ConditionCode::ne => !zf,
            ConditionCode::be => cf || zf,
            ConditionCode::a => !cf && !zf,
            ConditionCode::s => sf,
            ConditionCode::ns => !sf,
            ConditionCode::p => pf,
            ConditionCode::np => !pf,
            ConditionCode::l => sf != of,
            ConditionCode::ge => sf == of,
            ConditionCode::le => zf || sf != of,
            ConditionCode::g => !zf && sf == of,
            ConditionCode::None => true,
        }
    }

    // ----- stack -----

    /// Stack address size in bytes (SDM 6.2.3: SS.B, or 8 in 64-bit mode).
    #[inline(always)]
    pub(crate) fn stack_addr_size(&self) -> u8 {
        if self.bitness == 64 {
            8
        } else if self.seg[SegReg::Ss as usize].access & crate::regs::access::DB != 0 {
            4
        } else {
            2
        }
    }

    /// RSP adjusted by `delta`, wrapped to the stack address size.
    #[inline(always)]
    pub(crate) fn sp_plus(&self, delta: i64) -> u64 {
        let m = size_mask(self.stack_addr_size());
        self.gpr[4].wrapping_add(delta as u64) & m
    }

    #[inline(always)]
    pub(crate) fn set_sp(&mut self, sp: u64) {
        let sz = self.stack_addr_size();
        self.set_gpr_sized(4, sz, sp);
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, mem: &PhysMap, size: u8, v: u64) -> Step {
        let sp = self.sp_plus(-(size as i64));
        let lin = self.seg_linear(SegReg::Ss, sp, size, true)?;
        self.write_linear(mem, lin, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Reads `size` bytes at RSP + `offset` without moving RSP.
    #[inline(always)]
    pub(crate) fn peek(&mut self, mem: &PhysMap, offset: i64, size: u8) -> Step<u64> {
        let sp = self.sp_plus(offset);
        let lin = self.seg_linear(SegReg::Ss, sp, size, false)?;
        self.read_linear(mem, lin, size)
    }

    #[inline(always)]
    pub(crate) fn pop(&mut self, mem: &PhysMap, size: u8) -> Step<u64> {
        let v = self.peek(mem, 0, size)?;
        let sp = self.sp_plus(size as i64);
        self.set_sp(sp);
        Ok(v)
    }

    // ----- privilege -----

    /// #GP(0) unless CPL = 0 (privileged instructions, SDM 5.9).
    #[inline]
    pub(crate) fn require_cpl0(&self) -> Step {
        if self.cpl() != 0 {
            Err(Stop::gp0())
        } else {
            Ok(())
        }
    }

    /// IOPL-sensitive instructions (CLI, STI, IN, OUT): CPL <= IOPL.
    #[inline]
    pub(crate) fn iopl_ok(&self) -> bool {
        self.cpl() as u64 <= (self.rflags & rflags::IOPL) >> 12
    }

    /// The non-architectural exit for an instruction this model does not implement.
    #[cold]
    pub(crate) fn unimplemented(&mut self, mem: &PhysMap, d: &Decoded) -> Stop {
        let bytes = self.current_bytes(mem, d.ins.len());
        let mut e =
            crate::exit::VmExit::new(ExitReason::Unimplemented, self.rip).with_len(d.ins.len());
        e.unimplemented = Some(UnimplementedInsn {
            bytes,
            len: d.ins.len() as u8,
            mnemonic: d.mnemonic,
        });
        self.exit = e;
        Stop::Exit
    }

    /// Dispatches on the mnemonic.
    #[inline(always)]
    fn exec(&mut self, mem: &PhysMap, d: &Decoded) -> Step<Flow> {
        use crate::flags::{AluOp, ShiftOp};
        use Mnemonic as M;
        match d.mnemonic {
            M::Mov | M::Movnti => self.mov(mem, d),
            M::Add => self.alu2(mem, d, AluOp::Add, true),
            M::Or => self.alu2(mem, d, AluOp::Or, true),
            M::Adc => self.alu2(mem, d, AluOp::Adc, true),
            M::Sbb => self.alu2(mem, d, AluOp::Sbb, true),
            M::And => self.alu2(mem, d, AluOp::And, true),
            M::Sub => self.alu2(mem, d, AluOp::Sub, true),
            M::Xor => self.alu2(mem, d, AluOp::Xor, true),
            M::Cmp => self.alu2(mem, d, AluOp::Sub, false),
            M::Test => self.alu2(mem, d, AluOp::And, false),
            M::Inc => self.inc_dec(mem, d, false),
            M::Dec => self.inc_dec(mem, d, true),
            M::Neg => self.neg(mem, d),
            M::Not => self.not(mem, d),
            M::Jo
            | M::Jno
            | M::Jb
            | M::Jae
            | M::Je
            | M::Jne
            | M::Jbe
            | M::Ja
            | M::Js
            | M::Jns
            | M::Jp
            | M::Jnp
            | M::Jl
            | M::Jge
            | M::Jle
            | M::Jg => self.jcc(d),
            M::Jmp => self.jmp(mem, d),
            M::Call => self.call(mem, d),
            M::Ret => self.ret(mem, d),
            M::Push => self.push_op(mem, d),
            M::Pop => self.pop_op(mem, d),
            M::Lea => self.lea(d),
            M::Movzx => self.movzx(mem, d),
            M::Movsx | M::Movsxd => self.movsx(mem, d),
            M::Xchg => self.xchg(mem, d),
            M::Shl | M::Sal => self.shift(mem, d, ShiftOp::Shl),
            M::Shr => self.shift(mem, d, ShiftOp::Shr),
            M::Sar => self.shift(mem, d, ShiftOp::Sar),
            M::Rol => self.shift(mem, d, ShiftOp::Rol),
            M::Ror => self.shift(mem, d, ShiftOp::Ror),
            M::Rcl => self.shift(mem, d, ShiftOp::Rcl),
            M::Rcr => self.shift(mem, d, ShiftOp::Rcr),
            M::Shld => self.shxd(mem, d, true),
            M::Shrd => self.shxd(mem, d, false),
            M::Cmovo
            | M::Cmovno
            | M::Cmovb
            | M::Cmovae
            | M::Cmove
            | M::Cmovne
            | M::Cmovbe
            | M::Cmova
            | M::Cmovs
            | M::Cmovns
            | M::Cmovp
            | M::Cmovnp
            | M::Cmovl
            | M::Cmovge
            | M::Cmovle
            | M::Cmovg => self.cmov(mem, d),
            M::Seto
            | M::Setno
            | M::Setb
            | M::Setae
            | M::Sete
            | M::Setne
            | M::Setbe
            | M::Seta
            | M::Sets
            | M::Setns
            | M::Setp
            | M::Setnp
            | M::Setl
            | M::Setge
            | M::Setle
            | M::Setg => self.setcc(mem, d),
            M::Mul => self.mul(mem, d),
            M::Imul => self.imul(mem, d),
            M::Div => self.div(mem, d, false),
            M::Idiv => self.div(mem, d, true),
            M::Bt => self.bit_test(mem, d, 0),
            M::Bts => self.bit_test(mem, d, 1),
            M::Btr => self.bit_test(mem, d, 2),
            M::Btc => self.bit_test(mem, d, 3),
            M::Bsf | M::Bsr => self.bit_scan(mem, d),
            M::Tzcnt | M::Lzcnt | M::Popcnt => self.bit_count(mem, d),
            M::Xadd => self.xadd(mem, d),
            M::Cmpxchg => self.cmpxchg(mem, d),
            M::Cmpxchg8b | M::Cmpxchg16b => self.cmpxchg_double(mem, d),
            M::Bswap => self.bswap(d),
            M::Movbe => self.movbe(mem, d),
            M::Cbw | M::Cwde | M::Cdqe => self.convert_acc(d),
            M::Cwd | M::Cdq | M::Cqo => self.convert_dx(d),
            M::Nop
            | M::Pause
            | M::Lfence
            | M::Mfence
            | M::Sfence
            | M::Endbr64
            | M::Endbr32
            | M::Prefetchnta
            | M::Prefetcht0
            | M::Prefetcht1
            | M::Prefetcht2
            | M::Prefetchw
            | M::Prefetch => self.nop(d),
            M::Clc => self.flag_op(rflags::CF, Some(false)),
            M::Stc => self.flag_op(rflags::CF, Some(true)),
            M::Cmc => self.flag_op(rflags::CF, None),
            M::Cld => self.flag_op(rflags::DF, Some(false)),
            M::Std => self.flag_op(rflags::DF, Some(true)),
            M::Lahf => self.lahf(),
            M::Sahf => self.sahf(),
            M::Pushf | M::Pushfd | M::Pushfq => self.pushf(mem, d),
            M::Popf | M::Popfd | M::Popfq => self.popf(mem, d),
            M::Leave => self.leave(mem, d),
            M::Enter => self.enter(mem, d),
            M::Loop | M::Loope | M::Loopne | M::Jcxz | M::Jecxz | M::Jrcxz => self.loop_op(d),
            M::Movsb
            | M::Movsw
            | M::Movsd
            | M::Movsq
            | M::Stosb
            | M::Stosw
            | M::Stosd
            | M::Stosq
            | M::Lodsb
            | M::Lodsw
            | M::Lodsd
            | M::Lodsq
            | M::Cmpsb
            | M::Cmpsw
            | M::Cmpsd
            | M::Cmpsq
            | M::Scasb
            | M::Scasw
            | M::Scasd
            | M::Scasq => self.string_op(mem, d),
            M::Insb | M::Insw | M::Insd | M::Outsb | M::Outsw | M::Outsd => self.string_io(mem, d),
            M::Xlatb => self.xlat(mem, d),
            M::Cpuid => Err(self.instruction_exit(ExitReason::Cpuid, 0)),
            M::Vmcall => Err(self.instruction_exit(ExitReason::Vmcall, 0)),
            // VMX instructions exit unconditionally in VMX non-root operation (SDM
            // 26.1.2); the VMM emulates them (or injects #UD).
            M::Vmclear => Err(self.instruction_exit(ExitReason::Vmclear, 0)),
            M::Vmlaunch => Err(self.instruction_exit(ExitReason::Vmlaunch, 0)),
            M::Vmptrld => Err(self.instruction_exit(ExitReason::Vmptrld, 0)),
            M::Vmptrst => Err(self.instruction_exit(ExitReason::Vmptrst, 0)),
            M::Vmread => Err(self.instruction_exit(ExitReason::Vmread, 0)),
            M::Vmresume => Err(self.instruction_exit(ExitReason::Vmresume, 0)),
            M::Vmwrite => Err(self.instruction_exit(ExitReason::Vmwrite, 0)),
            M::Vmxoff => Err(self.instruction_exit(ExitReason::Vmxoff, 0)),
            M::Vmxon => Err(self.instruction_exit(ExitReason::Vmxon, 0)),
            M::Invept => Err(self.instruction_exit(ExitReason::Invept, 0)),
            M::Invvpid => Err(self.instruction_exit(ExitReason::Invvpid, 0)),
            M::Vmfunc => Err(self.instruction_exit(ExitReason::Vmfunc, 0)),
            M::Sysenter => self.sysenter(),
            M::Sysexit | M::Sysexitq => self.sysexit(d),
            M::Pushad | M::Pusha => self.pusha(mem, d),
            M::Popad | M::Popa => self.popa(mem, d),
            M::Clflush | M::Clflushopt | M::Clwb => self.nop(d),
            M::Wait => self.fwait(),
            M::Hlt => self.hlt(),
            M::Cli => self.cli_sti(false),
            M::Sti => self.cli_sti(true),
            M::In | M::Out => self.in_out(mem, d),
            M::Int | M::Int3 | M::Into | M::Int1 => self.soft_int(mem, d),
            M::Iret | M::Iretd | M::Iretq => self.iret(mem, d),
            M::Retf => self.retf(mem, d),
            M::Syscall => self.syscall(),
            M::Sysret | M::Sysretq => self.sysret(d),
            M::Swapgs => self.swapgs(),
            M::Clts => self.clts(),
            M::Lmsw => self.lmsw(mem, d),
            M::Smsw => self.smsw(mem, d),
            M::Lgdt | M::Lidt => self.load_dtr(mem, d),
            M::Sgdt | M::Sidt => self.store_dtr(mem, d),
            M::Ltr | M::Lldt => self.load_system_segment(mem, d),
            M::Str | M::Sldt => self.store_system_selector(mem, d),
            M::Invlpg => self.invlpg(d),
            M::Invpcid => self.invpcid(mem, d),
            M::Wbinvd | M::Invd => self.wbinvd(d),
            M::Rdmsr => self.rdmsr(),
            M::Wrmsr => self.wrmsr(mem),
            M::Rdtsc => self.rdtsc(false),
            M::Rdtscp => self.rdtsc(true),
            M::Rdpid => self.rdpid(d),
            M::Rdpkru => self.rdpkru(),
            M::Wrpkru => self.wrpkru(),
            M::Xgetbv => self.xgetbv(),
            M::Xsetbv => Err(self.instruction_exit(ExitReason::Xsetbv, 0)),
            M::Stac | M::Clac => self.stac_clac(d),
            M::Lss | M::Lfs | M::Lgs | M::Lds | M::Les => self.load_far_pointer(mem, d),
            M::Ud0 | M::Ud1 | M::Ud2 => Err(Stop::ud()),
            _ => Err(self.not_modelled(mem, d)),
        }
    }

    /// An instruction outside the model: x87/MMX/SSE/AVX instructions first take the
    /// #NM / #UD faults CR0.EM, CR0.TS, CR4.OSFXSR and CR4.OSXSAVE give them (SDM
    /// Vol. 3A 2.5, Table 2-2, EM/MP/TS combinations), so a
    /// lazy-FPU kernel sees its #NM; otherwise it is the unimplemented exit.
    #[cold]
    fn not_modelled(&mut self, mem: &PhysMap, d: &Decoded) -> Stop {
        use crate::vcpu::{cr0, cr4, vector};
        use iced_x86::{CpuidFeature as F, EncodingKind};
        let ins = &d.ins;
        let features = ins.cpuid_features();
        let x87 = features.iter().any(|f| {
            matches!(
                f,
                F::FPU | F::FPU287 | F::FPU287XL_ONLY | F::FPU387 | F::FPU387SL_ONLY
            )
        });
        let vector_reg = (0..ins.op_count()).any(|i| {
            ins.op_kind(i) == OpKind::Register && {
                let r = ins.op_register(i);
                r.is_xmm() || r.is_ymm() || r.is_zmm() || r.is_mm() || r.is_k()
            }
        });
        // VEX/EVEX instructions on vector state (not the VEX-encoded GPR ones such
        // as BMI1/BMI2, which need no OS support).
        let vex = ins.encoding() != EncodingKind::Legacy
            && (vector_reg
                || features
                    .iter()
                    .any(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C)));
        let simd = vex
            || vector_reg
            || features.iter().any(|f| {
                matches!(
                    f,
                    F::MMX | F::SSE | F::SSE2 | F::SSE3 | F::SSSE3 | F::SSE4_1 | F::SSE4_2
                )
            });
        if x87 && self.cr0 & (cr0::EM | cr0::TS) != 0 {
            return Stop::fault(vector::NM, None);
        }
        // FXSAVE/FXRSTOR work without CR4.OSFXSR (SDM Vol. 2A FXSAVE) but not with
        // CR0.EM or CR0.TS; the XSAVE family needs CR4.OSXSAVE.
        if features.contains(&F::FXSR) && self.cr0 & (cr0::EM | cr0::TS) != 0 {
            return Stop::fault(vector::NM, None);
        }
        if features
            .iter()
            .any(|f| matches!(f, F::XSAVE | F::XSAVEOPT | F::XSAVEC | F::XSAVES))
        {
            if self.cr4 & cr4::OSXSAVE == 0 {
                return Stop::ud();
            }
            if self.cr0 & cr0::TS != 0 {
                return Stop::fault(vector::NM, None);
            }
        }
        if simd {
            if vex && self.cr4 & cr4::OSXSAVE == 0 {
                return Stop::ud();
            }
            if !vex && (self.cr0 & cr0::EM != 0 || self.cr4 & cr4::OSFXSR == 0) {
                return Stop::ud();
            }
            if self.cr0 & cr0::TS != 0 {
                return Stop::fault(vector::NM, None);
            }
        }
        self.unimplemented(mem, d)
    }

    /// WAIT/FWAIT: #NM when CR0.MP and CR0.TS are both set; no x87 state otherwise.
    fn fwait(&mut self) -> Step<Flow> {
        use crate::vcpu::{cr0, vector};
        if self.cr0 & cr0::MP != 0 && self.cr0 & cr0::TS != 0 {
            return Err(Stop::fault(vector::NM, None));
        }
        Ok(Flow::Next)
    }
}
