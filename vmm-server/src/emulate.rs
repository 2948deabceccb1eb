//! The instruction emulator of the vmm-server: just enough of x86 to complete an
//! instruction the hardware could not (a write to a write-tracked guest page table under
//! shadow paging, when the mmu-server says Emulate) and to read INVPCID's memory
//! operand. Instructions are decoded with iced-x86; guest-linear addresses are
//! translated by the mmu-server's software walk of the guest's tables (`GvaToGpa`),
//! which applies the guest's own permissions, so a write the guest may not do becomes
//! the #PF the guest expects.
//!
//! Supported writes: MOV, XCHG, CMPXCHG, AND/OR/XOR/ADD/SUB, BTS/BTR/BTC with an
//! immediate bit offset, and STOS / MOVS (one element per exit, with REP continuing at
//! the same RIP so every element is checked and tracked). Anything else stops the VM
//! with a diagnostic naming the instruction.

use crate::outcome::StopReason;
use crate::vm::{Handled, Next, Vm};
use iced_x86::{Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use ipc::Transport;
use vcpu::exit::VmExit;
use vcpu::regs::{rflags, Gpr, SegReg};

/// #PF error-code bits for GvaToGpa accesses.
const PF_WRITE: u32 = 1 << 1;
const PF_USER: u32 = 1 << 2;
const PF_FETCH: u32 = 1 << 4;

const PAGE: u64 = 4096;

/// A guest-linear access that faulted: the #PF to inject.
pub(crate) struct PageFault {
    pub linear: u64,
    pub error_code: u32,
}

pub(crate) enum Xlate {
    Gpa(u64),
    Fault(PageFault),
}

/// Translates `linear` for an access with #PF bits `access` (W / I/D; U is added at
/// CPL 3).
pub(crate) fn translate<T: Transport>(
    vm: &mut Vm<T>,
    linear: u64,
    access: u32,
) -> Result<Xlate, StopReason> {
    vm.sync_mmu_cr3()?;
    let mut access = access;
    if vm.cpu.cpl() == 3 {
        access |= PF_USER;
    }
    let flags = vm.request_flags(false);
    let t = vm
        .mmu
        .call(&ipc::GvaToGpa {
            gva: linear,
            access,
            flags,
            pkru: vm.cpu.pkru(),
            reserved: 0,
        })
        .map_err(StopReason::from)?;
    Ok(if t.faulted != 0 {
        Xlate::Fault(PageFault {
            linear,
            error_code: t.error_code,
        })
    } else {
        Xlate::Gpa(t.gpa)
    })
}

/// Reads up to `buf.len()` bytes of code at `rip` (CS-relative); returns how many could
/// be read (stops at the first untranslatable page).
pub(crate) fn fetch_code<T: Transport>(
    vm: &mut Vm<T>,
    rip: u64,
    buf: &mut [u8],
) -> Result<usize, StopReason> {
    let base = vm.cpu.segment(SegReg::Cs).base;
    let mut done = 0;
    while done < buf.len() {
        let linear = base.wrapping_add(rip).wrapping_add(done as u64);
        let gpa = match translate(vm, linear, PF_FETCH)? {
            Xlate::Gpa(g) => g,
            Xlate::Fault(_) => break,
        };
        let in_page = (PAGE - (linear % PAGE)) as usize;
        let n = in_page.min(buf.len() - done);
        if vm
            .ram
            .hpa(gpa, n as u64)
            .ok()
            .and_then(|hpa| vm.ram.map().read(hpa, &mut buf[done..done + n]))
            .is_none()
        {
            break;
        }
        done += n;
    }
    Ok(done)
}

fn bitness<T: Transport>(vm: &Vm<T>) -> u32 {
    if vm.mode_64() {
        64
    } else if vm.cpu.segment(SegReg::Cs).access & vcpu::regs::access::DB != 0 {
        32
    } else {
        16
    }
}

/// Decodes the instruction at RIP.
fn decode_at_rip<T: Transport>(vm: &mut Vm<T>) -> Result<Instruction, StopReason> {
    let rip = vm.cpu.rip();
    let mut bytes = [0u8; 15];
    let n = fetch_code(vm, rip, &mut bytes)?;
    let mut d = Decoder::with_ip(bitness(vm), &bytes[..n], rip, DecoderOptions::NONE);
    let insn = d.decode();
    if insn.is_invalid() {
        return Err(StopReason::CannotEmulate {
            what: "the faulting instruction cannot be decoded",
            mnemonic: Mnemonic::INVALID,
        });
    }
    Ok(insn)
}

/// Maps an iced register to (vCPU GPR, bit shift, width in bytes).
fn gpr_of(r: Register) -> Option<(Gpr, u32, u32)> {
    let full = r.full_register();
    let n = match full {
        Register::RAX => 0,
        Register::RCX => 1,
        Register::RDX => 2,
        Register::RBX => 3,
        Register::RSP => 4,
        Register::RBP => 5,
        Register::RSI => 6,
        Register::RDI => 7,
        Register::R8 => 8,
        Register::R9 => 9,
        Register::R10 => 10,
        Register::R11 => 11,
        Register::R12 => 12,
        Register::R13 => 13,
        Register::R14 => 14,
        Register::R15 => 15,
        _ => return None,
    };
    let shift = if matches!(r, Register::AH | Register::CH | Register::DH | Register::BH) {
        8
    } else {
        0
    };
    Some((Gpr::from_number(n)?, shift, r.size() as u32))
}

fn mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

fn read_reg<T: Transport>(vm: &Vm<T>, r: Register) -> Option<u64> {
    let (g, shift, size) = gpr_of(r)?;
    Some((vm.cpu.gpr(g) >> shift) & mask(size))
}

/// Writes a register the way the CPU does: 32-bit writes zero-extend, 8/16-bit writes
/// merge.
fn write_reg<T: Transport>(vm: &mut Vm<T>, r: Register, value: u64) {
    if let Some((g, shift, size)) = gpr_of(r) {
        let old = vm.cpu.gpr(g);
        let new = match size {
            8 => value,
            4 => value & 0xffff_ffff,
            _ => (old & !(mask(size) << shift)) | ((value & mask(size)) << shift),
        };
        vm.cpu.set_gpr(g, new);
    }
}

/// The guest-linear address of the memory operand of `insn` (segment base included;
/// in 64-bit mode only FS and GS have one, SDM 3.2.4).
fn memory_linear<T: Transport>(vm: &Vm<T>, insn: &Instruction) -> Option<u64> {
    let long = vm.mode_64();
    insn.virtual_address(0, 0, |reg, _, _| {
        let seg = match reg {
            Register::None => return Some(0),
            Register::ES => SegReg::Es,
            Register::CS => SegReg::Cs,
            Register::SS => SegReg::Ss,
            Register::DS => SegReg::Ds,
            Register::FS => SegReg::Fs,
            Register::GS => SegReg::Gs,
            _ => return read_reg(vm, reg),
        };
        if long && !matches!(seg, SegReg::Fs | SegReg::Gs) {
            return Some(0);
        }
        Some(vm.cpu.segment(seg).base)
    })
}

/// The base a segment contributes to a linear address: in 64-bit mode only FS and GS
/// have one (SDM 3.2.4).
fn segment_base<T: Transport>(vm: &Vm<T>, seg: SegReg) -> u64 {
    if vm.mode_64() && !matches!(seg, SegReg::Fs | SegReg::Gs) {
        0
    } else {
        vm.cpu.segment(seg).base
    }
}

/// Reads `len` bytes of guest memory at `gpa` (a little-endian value).
fn read_gpa<T: Transport>(vm: &Vm<T>, gpa: u64, len: u32) -> Option<u64> {
    let mut b = [0u8; 8];
    let hpa = vm.ram.hpa(gpa, len as u64).ok()?;
    vm.ram.map().read(hpa, &mut b[..len as usize])?;
    Some(u64::from_le_bytes(b))
}

/// One checked guest write: translate (with the guest's permissions), write the RAM,
/// tell the mmu-server (`EmulatedWrite`), apply the root/flush it answers. Returns
/// `Ok(None)` when the guest must get a #PF instead.
fn guest_write<T: Transport>(
    vm: &mut Vm<T>,
    linear: u64,
    value: u64,
    len: u32,
) -> Result<Option<PageFault>, StopReason> {
    // Split at page boundaries, then into power-of-two pieces for EmulatedWrite. Every
    // piece is translated before any is written: a write that crosses into a page it
    // may not write faults without having changed the first page (SDM 4.7 delivers
    // the #PF before the instruction has any effect).
    let mut pieces: heapless::Vec<(u64, u64, u32, u32), 8> = heapless::Vec::new();
    let mut done = 0u32;
    while done < len {
        let at = linear.wrapping_add(done as u64);
        let room = (PAGE - at % PAGE) as u32;
        let mut piece = (len - done).min(room);
        while !matches!(piece, 1 | 2 | 4 | 8) {
            piece -= 1;
        }
        let gpa = match translate(vm, at, PF_WRITE)? {
            Xlate::Gpa(g) => g,
            Xlate::Fault(pf) => return Ok(Some(pf)),
        };
        // At most 8 pieces: len <= 8 and every piece is at least one byte.
        let _ = pieces.push((at, gpa, done, piece));
        done += piece;
    }
    for (at, gpa, offset, piece) in pieces {
        let bytes = (value >> (8 * offset)).to_le_bytes();
        let hpa = vm
            .ram
            .hpa(gpa, piece as u64)
            .map_err(|_| StopReason::UnbackedAccess { gpa })?;
        vm.ram
            .map()
            .write(hpa, &bytes[..piece as usize])
            .ok_or(StopReason::UnbackedAccess { gpa })?;
        let data = u64::from_le_bytes(bytes) & mask(piece);
        let reply = vm
            .mmu
            .call(&ipc::EmulatedWrite {
                gpa,
                data,
                len: piece,
                reserved: 0,
            })
            .map_err(StopReason::from)?;
        vm.apply_root(reply.root_hpa, reply.root_level, reply.flush, Some(at))?;
    }
    Ok(None)
}

/// Reads a guest-linear value for a read-modify-write (translated for write, so the
/// permission check is the write's).
fn guest_read_for_write<T: Transport>(
    vm: &mut Vm<T>,
    linear: u64,
    len: u32,
) -> Result<Result<u64, PageFault>, StopReason> {
    guest_read_as(vm, linear, len, PF_WRITE)
}

fn guest_read<T: Transport>(
    vm: &mut Vm<T>,
    linear: u64,
    len: u32,
) -> Result<Result<u64, PageFault>, StopReason> {
    guest_read_as(vm, linear, len, 0)
}

/// Reads `len` bytes at `linear`, each translated as an access of kind `access`
/// (#PF error-code bits).
fn guest_read_as<T: Transport>(
    vm: &mut Vm<T>,
    linear: u64,
    len: u32,
    access: u32,
) -> Result<Result<u64, PageFault>, StopReason> {
    let mut v = 0u64;
    for i in 0..len {
        let at = linear.wrapping_add(i as u64);
        let gpa = match translate(vm, at, access)? {
            Xlate::Gpa(g) => g,
            Xlate::Fault(pf) => return Ok(Err(pf)),
        };
        let b = read_gpa(vm, gpa, 1).ok_or(StopReason::UnbackedAccess { gpa })?;
        v |= b << (8 * i);
    }
    Ok(Ok(v))
}

fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

/// SF, ZF, PF of a result (SDM Vol. 1 3.4.3.1).
fn szp(result: u64, size: u32) -> u64 {
    let r = result & mask(size);
    let mut f = 0;
    if r == 0 {
        f |= rflags::ZF;
    }
    if r >> (size * 8 - 1) & 1 != 0 {
        f |= rflags::SF;
    }
    if parity(r) {
        f |= rflags::PF;
    }
    f
}

/// The flags of `a + b` or `a - b` (with `sub`) at `size` bytes.
fn arith_flags(a: u64, b: u64, sub: bool, size: u32) -> (u64, u64) {
    let m = mask(size);
    let (a, b) = (a & m, b & m);
    let r = if sub {
        a.wrapping_sub(b)
    } else {
        a.wrapping_add(b)
    } & m;
    let sign = 1u64 << (size * 8 - 1);
    let mut f = szp(r, size);
    let carry = if sub {
        a < b
    } else {
        (a as u128 + b as u128) > m as u128
    };
    if carry {
        f |= rflags::CF;
    }
    let overflow = if sub {
        (a ^ b) & (a ^ r) & sign != 0
    } else {
        !(a ^ b) & (a ^ r) & sign != 0
    };
    if overflow {
        f |= rflags::OF;
    }
    if (a ^ b ^ r) & 0x10 != 0 {
        f |= rflags::AF;
    }
    (r, f)
}

fn set_status_flags<T: Transport>(vm: &mut Vm<T>, flags: u64, which: u64) {
    let rf = (vm.cpu.rflags() & !which) | (flags & which);
    vm.cpu.set_rflags(rf);
}

fn source_value<T: Transport>(vm: &Vm<T>, insn: &Instruction, op: u32) -> Option<u64> {
    match insn.op_kind(op) {
        OpKind::Register => read_reg(vm, insn.op_register(op)),
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Some(insn.immediate(op)),
        _ => None,
    }
}

fn cannot(what: &'static str, insn: &Instruction) -> StopReason {
    StopReason::CannotEmulate {
        what,
        mnemonic: insn.mnemonic(),
    }
}

/// Completes the faulting write the mmu-server could not let through (Emulate).
pub(crate) fn emulate_faulting_write<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let insn = decode_at_rip(vm)?;
    let len = insn.len() as u8;
    // The address size of string instructions shows in their operand kind.
    let addr_mask = match insn.op0_kind() {
        OpKind::MemoryESDI => 0xffff,
        OpKind::MemoryESEDI => 0xffff_ffff,
        _ => u64::MAX,
    };
    let mut complete = true;
    let fault = match insn.mnemonic() {
        Mnemonic::Mov
        | Mnemonic::Xchg
        | Mnemonic::Cmpxchg
        | Mnemonic::And
        | Mnemonic::Or
        | Mnemonic::Xor
        | Mnemonic::Add
        | Mnemonic::Sub
        | Mnemonic::Bts
        | Mnemonic::Btr
        | Mnemonic::Btc => {
            if insn.op0_kind() != OpKind::Memory {
                return Err(cannot("the write is not to the first operand", &insn));
            }
            let size = insn.memory_size().size() as u32;
            if !matches!(size, 1 | 2 | 4 | 8) {
                return Err(cannot("unsupported operand size", &insn));
            }
            let linear =
                memory_linear(vm, &insn).ok_or_else(|| cannot("bad memory operand", &insn))?;
            let src =
                source_value(vm, &insn, 1).ok_or_else(|| cannot("bad source operand", &insn))?;
            match insn.mnemonic() {
                Mnemonic::Mov => guest_write(vm, linear, src, size)?,
                m => {
                    let old = match guest_read_for_write(vm, linear, size)? {
                        Ok(v) => v,
                        Err(pf) => {
                            vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
                            return Ok(Next::Resume);
                        }
                    };
                    let status = rflags::STATUS;
                    let (new, flags, which) = match m {
                        Mnemonic::Xchg => {
                            write_reg(vm, insn.op1_register(), old);
                            (src, 0, 0)
                        }
                        Mnemonic::Cmpxchg => {
                            let acc_reg = match size {
                                1 => Register::AL,
                                2 => Register::AX,
                                4 => Register::EAX,
                                _ => Register::RAX,
                            };
                            let acc = read_reg(vm, acc_reg).unwrap_or(0);
                            let (_, f) = arith_flags(acc, old, true, size);
                            if acc & mask(size) == old & mask(size) {
                                (src, f, status)
                            } else {
                                write_reg(vm, acc_reg, old);
                                // The processor writes the old value back (SDM CMPXCHG).
                                (old, f, status)
                            }
                        }
                        Mnemonic::And => {
                            let r = old & src;
                            (r, szp(r, size), status)
                        }
                        Mnemonic::Or => {
                            let r = old | src;
                            (r, szp(r, size), status)
                        }
                        Mnemonic::Xor => {
                            let r = old ^ src;
                            (r, szp(r, size), status)
                        }
                        Mnemonic::Add => {
                            let (r, f) = arith_flags(old, src, false, size);
                            (r, f, status)
                        }
                        Mnemonic::Sub => {
                            let (r, f) = arith_flags(old, src, true, size);
                            (r, f, status)
                        }
                        _ => {
                            // BTS/BTR/BTC with an immediate offset (modulo the size).
                            if insn.op1_kind() == OpKind::Register {
                                return Err(cannot("bit offset in a register", &insn));
                            }
                            let bit = src % (size as u64 * 8);
                            let was = (old >> bit) & 1;
                            let r = match m {
                                Mnemonic::Bts => old | (1 << bit),
                                Mnemonic::Btr => old & !(1 << bit),
                                _ => old ^ (1 << bit),
                            };
                            (r, was * rflags::CF, rflags::CF)
                        }
                    };
                    let pf = guest_write(vm, linear, new, size)?;
                    if pf.is_none() && which != 0 {
                        set_status_flags(vm, flags, which);
                    }
                    pf
                }
            }
        }
        Mnemonic::Stosb
        | Mnemonic::Stosw
        | Mnemonic::Stosd
        | Mnemonic::Stosq
        | Mnemonic::Movsb
        | Mnemonic::Movsw
        | Mnemonic::Movsd
        | Mnemonic::Movsq => {
            let size = match insn.mnemonic() {
                Mnemonic::Stosb | Mnemonic::Movsb => 1,
                Mnemonic::Stosw | Mnemonic::Movsw => 2,
                Mnemonic::Stosd | Mnemonic::Movsd => 4,
                _ => 8,
            };
            let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
            let count = vm.cpu.gpr(Gpr::Rcx) & addr_mask;
            if rep && count == 0 {
                None
            } else {
                let es = segment_base(vm, SegReg::Es);
                let dst = es.wrapping_add(vm.cpu.gpr(Gpr::Rdi) & addr_mask);
                let is_movs = matches!(
                    insn.mnemonic(),
                    Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq
                );
                let value = if is_movs {
                    let seg = match insn.segment_prefix() {
                        Register::FS => SegReg::Fs,
                        Register::GS => SegReg::Gs,
                        Register::ES => SegReg::Es,
                        Register::SS => SegReg::Ss,
                        Register::CS => SegReg::Cs,
                        _ => SegReg::Ds,
                    };
                    let src = segment_base(vm, seg).wrapping_add(vm.cpu.gpr(Gpr::Rsi) & addr_mask);
                    match guest_read(vm, src, size)? {
                        Ok(v) => v,
                        Err(pf) => {
                            vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
                            return Ok(Next::Resume);
                        }
                    }
                } else {
                    vm.cpu.gpr(Gpr::Rax) & mask(size)
                };
                let pf = guest_write(vm, dst, value, size)?;
                if pf.is_none() {
                    let step = if vm.cpu.rflags() & rflags::DF != 0 {
                        (size as u64).wrapping_neg()
                    } else {
                        size as u64
                    };
                    let bump = |v: u64| (v & !addr_mask) | (v.wrapping_add(step) & addr_mask);
                    let rdi = vm.cpu.gpr(Gpr::Rdi);
                    vm.cpu.set_gpr(Gpr::Rdi, bump(rdi));
                    if is_movs {
                        let rsi = vm.cpu.gpr(Gpr::Rsi);
                        vm.cpu.set_gpr(Gpr::Rsi, bump(rsi));
                    }
                    if rep {
                        let rcx = vm.cpu.gpr(Gpr::Rcx);
                        let left = count - 1;
                        vm.cpu.set_gpr(Gpr::Rcx, (rcx & !addr_mask) | left);
                        // More elements: re-execute the instruction (each element's
                        // write is checked and tracked on its own).
                        complete = left == 0;
                    }
                }
                pf
            }
        }
        _ => return Err(cannot("not a write this emulator supports", &insn)),
    };
    if let Some(pf) = fault {
        vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
        return Ok(Next::Resume);
    }
    if complete {
        vm.cpu.advance_rip(len);
    }
    vm.emulated += 1;
    Ok(Next::Resume)
}

/// INVPCID exit (SDM Vol. 2A INVPCID; exit qualification/instruction information
/// are re-derived by decoding). Checks the descriptor like the CPU (#GP) and forwards
/// it to the mmu-server; the TLB invalidation the guest asked for is always performed.
pub(crate) fn invpcid<T: Transport>(vm: &mut Vm<T>, exit: &VmExit) -> Handled {
    let insn = decode_at_rip(vm)?;
    if insn.mnemonic() != Mnemonic::Invpcid {
        return Err(cannot("INVPCID exit on another instruction", &insn));
    }
    let kind =
        read_reg(vm, insn.op0_register()).ok_or_else(|| cannot("bad type operand", &insn))?;
    let linear = memory_linear(vm, &insn).ok_or_else(|| cannot("bad memory operand", &insn))?;
    let (lo, hi) = match (
        guest_read(vm, linear, 8)?,
        guest_read(vm, linear.wrapping_add(8), 8)?,
    ) {
        (Ok(lo), Ok(hi)) => (lo, hi),
        (Err(pf), _) | (_, Err(pf)) => {
            vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
            return Ok(Next::Resume);
        }
    };
    let pcid = lo & 0xfff;
    let pcide = vm.guest.cr4 & crate::cr::cr4::PCIDE != 0;
    let canonical = ((hi as i64) << 16 >> 16) as u64 == hi;
    let bad = kind > 3
        || lo >> 12 != 0
        || (kind == 0 && !canonical)
        || (kind <= 1 && !pcide && pcid != 0);
    if bad {
        vm.inject_gp0();
        return Ok(Next::Resume);
    }
    let reply = vm
        .mmu
        .call(&ipc::Invpcid {
            gva: hi,
            pcid: pcid as u32,
            kind: kind as u32,
        })
        .map_err(StopReason::from)?;
    let extra = if kind == 0 {
        ipc::flush::ADDRESS
    } else {
        ipc::flush::GUEST
    };
    vm.apply_root(
        reply.root_hpa,
        reply.root_level,
        reply.flush | extra,
        Some(hi),
    )?;
    vm.cpu.advance_rip(exit.instruction_len.max(len_of(&insn)));
    vm.emulated += 1;
    Ok(Next::Resume)
}

fn len_of(insn: &Instruction) -> u8 {
    insn.len() as u8
}

/// INS / OUTS (with or without REP), one element per exit like the write emulator:
/// the element's memory access is translated with the guest's permissions (a #PF is
/// injected when it faults), RSI/RDI step by the element size in the direction of
/// EFLAGS.DF, and with REP the instruction is re-executed until RCX reaches 0 (SDM
/// Vol. 2B INS/OUTS, 28.2.1 Table 28-5 for the exit qualification).
pub(crate) fn string_io<T: Transport>(
    vm: &mut Vm<T>,
    exit: &VmExit,
    port: u16,
    size: u8,
    input: bool,
    sink: &mut impl crate::devices::SerialSink,
) -> Result<crate::devices::IoEffect, StopReason> {
    use crate::devices::IoEffect;
    let insn = decode_at_rip(vm)?;
    // The operand kinds carry the address size (and OUTS's segment).
    let (mem_kind, index) = if input {
        (insn.op0_kind(), Gpr::Rdi)
    } else {
        (insn.op1_kind(), Gpr::Rsi)
    };
    let addr_mask = match mem_kind {
        OpKind::MemoryESDI | OpKind::MemorySegSI => 0xffff,
        OpKind::MemoryESEDI | OpKind::MemorySegESI => 0xffff_ffff,
        OpKind::MemoryESRDI | OpKind::MemorySegRSI => u64::MAX,
        _ => return Err(cannot("string I/O without a string operand", &insn)),
    };
    let ilen = insn.len() as u8;
    let rep = insn.has_rep_prefix() || insn.has_repe_prefix() || insn.has_repne_prefix();
    let count = vm.cpu.gpr(Gpr::Rcx) & addr_mask;
    if rep && count == 0 {
        vm.cpu.advance_rip(ilen);
        return Ok(IoEffect::None);
    }
    let seg = if input {
        SegReg::Es
    } else {
        SegReg::from_iced(insn.memory_segment())
    };
    let linear = segment_base(vm, seg).wrapping_add(vm.cpu.gpr(index) & addr_mask);
    let len = size as u32;
    let mut effect = IoEffect::None;
    if input {
        let value = vm.io.read(port, size) as u64;
        if let Some(pf) = guest_write(vm, linear, value, len)? {
            vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
            return Ok(IoEffect::None);
        }
    } else {
        let value = match guest_read(vm, linear, len)? {
            Ok(v) => v,
            Err(pf) => {
                vm.inject_page_fault(exit, pf.linear, pf.error_code)?;
                return Ok(IoEffect::None);
            }
        };
        effect = vm.io.write(port, size, value as u32, sink);
    }
    let step = if vm.cpu.rflags() & rflags::DF != 0 {
        (size as u64).wrapping_neg()
    } else {
        size as u64
    };
    let v = vm.cpu.gpr(index);
    vm.cpu
        .set_gpr(index, (v & !addr_mask) | (v.wrapping_add(step) & addr_mask));
    let mut complete = true;
    if rep {
        let rcx = vm.cpu.gpr(Gpr::Rcx);
        let left = count - 1;
        vm.cpu.set_gpr(Gpr::Rcx, (rcx & !addr_mask) | left);
        complete = left == 0;
    }
    if complete {
        vm.cpu.advance_rip(ilen);
    }
    vm.emulated += 1;
    Ok(effect)
}
