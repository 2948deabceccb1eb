//! Differential tests against the host CPU: each ALU / shift / rotate / multiply /
//! divide / bit instruction, at each operand size, runs natively (the encoded bytes,
//! wrapped in a load/store trampoline and called from Rust) and in the model with the
//! same random registers and flags; results and the *defined* flags must agree.
//! The host may be AMD or Intel: only architecturally defined flags are compared.

#![cfg(target_arch = "x86_64")]

mod support;

use iced_x86::code_asm::*;
use iced_x86::IcedError;
use support::*;
use vcpu::{ExitReason, Gpr};

const CF: u64 = 1;
const PF: u64 = 4;
const AF: u64 = 0x10;
const ZF: u64 = 0x40;
const SF: u64 = 0x80;
const OF: u64 = 0x800;
const ALL: u64 = CF | PF | AF | ZF | SF | OF;
const LOGIC: u64 = ALL & !AF;

/// rax, rbx, rcx, rdx, rflags.
type State = [u64; 5];

type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

struct Case {
    name: &'static str,
    emit: Emit,
    /// Defined flags for these inputs; `None`: the result itself is undefined (skip).
    defined: fn(&State) -> Option<u64>,
    /// The model must raise #DE for these inputs (and the host is not run).
    faults: fn(&State) -> bool,
}

fn all(_: &State) -> Option<u64> {
    Some(ALL)
}
fn logic(_: &State) -> Option<u64> {
    Some(LOGIC)
}
fn cf_of(_: &State) -> Option<u64> {
    Some(CF | OF)
}
fn cf_only(_: &State) -> Option<u64> {
    Some(CF)
}
fn zf_only(_: &State) -> Option<u64> {
    Some(ZF)
}
fn cf_zf(_: &State) -> Option<u64> {
    Some(CF | ZF)
}
fn none(_: &State) -> Option<u64> {
    Some(0)
}
fn never(_: &State) -> bool {
    false
}

/// Flags of SHL/SHR/SAR by CL at `bits` width (SDM Vol. 2B SAL/SAR/SHL/SHR).
fn shift_flags(s: &State, bits: u32, sar: bool) -> Option<u64> {
    let c = (s[2] & if bits == 64 { 63 } else { 31 }) as u32;
    Some(match c {
        0 => ALL,
        1 => ALL & !AF,
        _ if c >= bits && !sar => SF | ZF | PF,
        _ => CF | SF | ZF | PF,
    })
}

fn rot_flags(s: &State, bits: u32, through_carry: bool) -> Option<u64> {
    let c = (s[2] & if bits == 64 { 63 } else { 31 }) as u32;
    let effective = if through_carry && bits < 32 {
        c % (bits + 1)
    } else {
        c
    };
    Some(match (c, effective) {
        (0, _) => ALL,
        // RCL/RCR by a multiple of width + 1: nothing rotates, OF is undefined.
        (c, 0) if through_carry && c != 1 => ALL & !OF,
        (1, _) => ALL,
        _ => ALL & !OF,
    })
}

fn shxd_flags(s: &State, bits: u32) -> Option<u64> {
    let c = (s[2] & if bits == 64 { 63 } else { 31 }) as u32;
    match c {
        0 => Some(ALL),
        _ if c > bits => None,
        1 => Some(ALL & !AF),
        _ => Some(CF | SF | ZF | PF),
    }
}

/// Whether DIV/IDIV of the accumulator pair by rbx at `bits` raises #DE.
fn div_faults(s: &State, bits: u32, signed: bool) -> bool {
    let m = if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    let d = s[1] & m;
    if d == 0 {
        return true;
    }
    let (lo, hi) = if bits == 8 {
        (s[0] & 0xff, (s[0] >> 8) & 0xff)
    } else {
        (s[0] & m, s[3] & m)
    };
    let n = ((hi as u128) << bits) | lo as u128;
    if signed {
        let sh = 128 - 2 * bits;
        let n = ((n << sh) as i128) >> sh;
        let dsh = 128 - bits;
        let d = (((d as u128) << dsh) as i128) >> dsh;
        match n.checked_div(d) {
            Some(q) => q < -(1i128 << (bits - 1)) || q >= (1i128 << (bits - 1)),
            None => true,
        }
    } else {
        n / d as u128 > m as u128
    }
}

macro_rules! cases {
    ($($name:literal => $emit:expr, $defined:expr, $faults:expr;)*) => {
        vec![$(Case { name: $name, emit: $emit, defined: $defined, faults: $faults }),*]
    };
}

fn all_cases() -> Vec<Case> {
    cases! {
        "add8" => |a| a.add(al, bl), all, never;
        "add16" => |a| a.add(ax, bx), all, never;
        "add32" => |a| a.add(eax, ebx), all, never;
        "add64" => |a| a.add(rax, rbx), all, never;
        "add64_imm" => |a| a.add(rax, -5), all, never;
        "adc8" => |a| a.adc(al, bl), all, never;
        "adc16" => |a| a.adc(ax, bx), all, never;
        "adc32" => |a| a.adc(eax, ebx), all, never;
        "adc64" => |a| a.adc(rax, rbx), all, never;
        "sub8" => |a| a.sub(al, bl), all, never;
        "sub16" => |a| a.sub(ax, bx), all, never;
        "sub32" => |a| a.sub(eax, ebx), all, never;
        "sub64" => |a| a.sub(rax, rbx), all, never;
        "sbb8" => |a| a.sbb(al, bl), all, never;
        "sbb16" => |a| a.sbb(ax, bx), all, never;
        "sbb32" => |a| a.sbb(eax, ebx), all, never;
        "sbb64" => |a| a.sbb(rax, rbx), all, never;
        "cmp8" => |a| a.cmp(al, bl), all, never;
        "cmp16" => |a| a.cmp(ax, bx), all, never;
        "cmp32" => |a| a.cmp(eax, ebx), all, never;
        "cmp64" => |a| a.cmp(rax, rbx), all, never;
        "and8" => |a| a.and(al, bl), logic, never;
        "and16" => |a| a.and(ax, bx), logic, never;
        "and32" => |a| a.and(eax, ebx), logic, never;
        "and64" => |a| a.and(rax, rbx), logic, never;
        "or8" => |a| a.or(al, bl), logic, never;
        "or16" => |a| a.or(ax, bx), logic, never;
        "or32" => |a| a.or(eax, ebx), logic, never;
        "or64" => |a| a.or(rax, rbx), logic, never;
        "xor8" => |a| a.xor(al, bl), logic, never;
        "xor16" => |a| a.xor(ax, bx), logic, never;
        "xor32" => |a| a.xor(eax, ebx), logic, never;
        "xor64" => |a| a.xor(rax, rbx), logic, never;
        "test8" => |a| a.test(al, bl), logic, never;
        "test16" => |a| a.test(ax, bx), logic, never;
        "test32" => |a| a.test(eax, ebx), logic, never;
        "test64" => |a| a.test(rax, rbx), logic, never;
        "inc8" => |a| a.inc(al), all, never;
        "inc16" => |a| a.inc(ax), all, never;
        "inc32" => |a| a.inc(eax), all, never;
        "inc64" => |a| a.inc(rax), all, never;
        "dec8" => |a| a.dec(al), all, never;
        "dec16" => |a| a.dec(ax), all, never;
        "dec32" => |a| a.dec(eax), all, never;
        "dec64" => |a| a.dec(rax), all, never;
        "neg8" => |a| a.neg(al), all, never;
        "neg16" => |a| a.neg(ax), all, never;
        "neg32" => |a| a.neg(eax), all, never;
        "neg64" => |a| a.neg(rax), all, never;
        "not8" => |a| a.not(al), all, never;
        "not16" => |a| a.not(ax), all, never;
        "not32" => |a| a.not(eax), all, never;
        "not64" => |a| a.not(rax), all, never;
        "add_ah_bh" => |a| a.add(ah, bh), all, never;
        "shl8" => |a| a.shl(al, cl), |s| shift_flags(s, 8, false), never;
        "shl16" => |a| a.shl(ax, cl), |s| shift_flags(s, 16, false), never;
        "shl32" => |a| a.shl(eax, cl), |s| shift_flags(s, 32, false), never;
        "shl64" => |a| a.shl(rax, cl), |s| shift_flags(s, 64, false), never;
        "shr8" => |a| a.shr(al, cl), |s| shift_flags(s, 8, false), never;
        "shr16" => |a| a.shr(ax, cl), |s| shift_flags(s, 16, false), never;
        "shr32" => |a| a.shr(eax, cl), |s| shift_flags(s, 32, false), never;
        "shr64" => |a| a.shr(rax, cl), |s| shift_flags(s, 64, false), never;
        "sar8" => |a| a.sar(al, cl), |s| shift_flags(s, 8, true), never;
        "sar16" => |a| a.sar(ax, cl), |s| shift_flags(s, 16, true), never;
        "sar32" => |a| a.sar(eax, cl), |s| shift_flags(s, 32, true), never;
        "sar64" => |a| a.sar(rax, cl), |s| shift_flags(s, 64, true), never;
        "shl64_1" => |a| a.shl(rax, 1), |_| Some(ALL & !AF), never;
        "sar32_imm" => |a| a.sar(eax, 7), |_| Some(CF | SF | ZF | PF), never;
        "rol8" => |a| a.rol(al, cl), |s| rot_flags(s, 8, false), never;
        "rol16" => |a| a.rol(ax, cl), |s| rot_flags(s, 16, false), never;
        "rol32" => |a| a.rol(eax, cl), |s| rot_flags(s, 32, false), never;
        "rol64" => |a| a.rol(rax, cl), |s| rot_flags(s, 64, false), never;
        "ror8" => |a| a.ror(al, cl), |s| rot_flags(s, 8, false), never;
        "ror16" => |a| a.ror(ax, cl), |s| rot_flags(s, 16, false), never;
        "ror32" => |a| a.ror(eax, cl), |s| rot_flags(s, 32, false), never;
        "ror64" => |a| a.ror(rax, cl), |s| rot_flags(s, 64, false), never;
        "rcl8" => |a| a.rcl(al, cl), |s| rot_flags(s, 8, true), never;
        "rcl16" => |a| a.rcl(ax, cl), |s| rot_flags(s, 16, true), never;
        "rcl32" => |a| a.rcl(eax, cl), |s| rot_flags(s, 32, true), never;
        "rcl64" => |a| a.rcl(rax, cl), |s| rot_flags(s, 64, true), never;
        "rcr8" => |a| a.rcr(al, cl), |s| rot_flags(s, 8, true), never;
        "rcr16" => |a| a.rcr(ax, cl), |s| rot_flags(s, 16, true), never;
        "rcr32" => |a| a.rcr(eax, cl), |s| rot_flags(s, 32, true), never;
        "rcr64" => |a| a.rcr(rax, cl), |s| rot_flags(s, 64, true), never;
        "shld16" => |a| a.shld(ax, bx, cl), |s| shxd_flags(s, 16), never;
        "shld32" => |a| a.shld(eax, ebx, cl), |s| shxd_flags(s, 32), never;
        "shld64" => |a| a.shld(rax, rbx, cl), |s| shxd_flags(s, 64), never;
        "shrd16" => |a| a.shrd(ax, bx, cl), |s| shxd_flags(s, 16), never;
        "shrd32" => |a| a.shrd(eax, ebx, cl), |s| shxd_flags(s, 32), never;
        "shrd64" => |a| a.shrd(rax, rbx, cl), |s| shxd_flags(s, 64), never;
        "mul8" => |a| a.mul(bl), cf_of, never;
        "mul16" => |a| a.mul(bx), cf_of, never;
        "mul32" => |a| a.mul(ebx), cf_of, never;
        "mul64" => |a| a.mul(rbx), cf_of, never;
        "imul8" => |a| a.imul(bl), cf_of, never;
        "imul16" => |a| a.imul(bx), cf_of, never;
        "imul32" => |a| a.imul(ebx), cf_of, never;
        "imul64" => |a| a.imul(rbx), cf_of, never;
        "imul16_2" => |a| a.imul_2(ax, bx), cf_of, never;
        "imul32_2" => |a| a.imul_2(eax, ebx), cf_of, never;
        "imul64_2" => |a| a.imul_2(rax, rbx), cf_of, never;
        "imul16_3" => |a| a.imul_3(ax, bx, -300), cf_of, never;
        "imul32_3" => |a| a.imul_3(eax, ebx, 100_000), cf_of, never;
        "imul64_3" => |a| a.imul_3(rax, rbx, -7), cf_of, never;
        "div8" => |a| a.div(bl), none, |s| div_faults(s, 8, false);
        "div16" => |a| a.div(bx), none, |s| div_faults(s, 16, false);
        "div32" => |a| a.div(ebx), none, |s| div_faults(s, 32, false);
        "div64" => |a| a.div(rbx), none, |s| div_faults(s, 64, false);
        "idiv8" => |a| a.idiv(bl), none, |s| div_faults(s, 8, true);
        "idiv16" => |a| a.idiv(bx), none, |s| div_faults(s, 16, true);
        "idiv32" => |a| a.idiv(ebx), none, |s| div_faults(s, 32, true);
        "idiv64" => |a| a.idiv(rbx), none, |s| div_faults(s, 64, true);
        "bt16" => |a| a.bt(ax, bx), cf_only, never;
        "bt32" => |a| a.bt(eax, ebx), cf_only, never;
        "bt64" => |a| a.bt(rax, rbx), cf_only, never;
        "bts16" => |a| a.bts(ax, bx), cf_only, never;
        "bts32" => |a| a.bts(eax, ebx), cf_only, never;
        "bts64" => |a| a.bts(rax, rbx), cf_only, never;
        "btr32" => |a| a.btr(eax, ebx), cf_only, never;
        "btr64" => |a| a.btr(rax, rbx), cf_only, never;
        "btc16" => |a| a.btc(ax, bx), cf_only, never;
        "btc64" => |a| a.btc(rax, rbx), cf_only, never;
        "bt32_imm" => |a| a.bt(eax, 37), cf_only, never;
        "bsf16" => |a| a.bsf(ax, bx), zf_only, never;
        "bsf32" => |a| a.bsf(eax, ebx), zf_only, never;
        "bsf64" => |a| a.bsf(rax, rbx), zf_only, never;
        "bsr16" => |a| a.bsr(ax, bx), zf_only, never;
        "bsr32" => |a| a.bsr(eax, ebx), zf_only, never;
        "bsr64" => |a| a.bsr(rax, rbx), zf_only, never;
        "tzcnt16" => |a| a.tzcnt(ax, bx), cf_zf, never;
        "tzcnt32" => |a| a.tzcnt(eax, ebx), cf_zf, never;
        "tzcnt64" => |a| a.tzcnt(rax, rbx), cf_zf, never;
        "lzcnt16" => |a| a.lzcnt(ax, bx), cf_zf, never;
        "lzcnt32" => |a| a.lzcnt(eax, ebx), cf_zf, never;
        "lzcnt64" => |a| a.lzcnt(rax, rbx), cf_zf, never;
        "popcnt16" => |a| a.popcnt(ax, bx), all, never;
        "popcnt32" => |a| a.popcnt(eax, ebx), all, never;
        "popcnt64" => |a| a.popcnt(rax, rbx), all, never;
        "xadd8" => |a| a.xadd(al, bl), all, never;
        "xadd16" => |a| a.xadd(ax, bx), all, never;
        "xadd32" => |a| a.xadd(eax, ebx), all, never;
        "xadd64" => |a| a.xadd(rax, rbx), all, never;
        "cmpxchg8" => |a| a.cmpxchg(cl, bl), all, never;
        "cmpxchg16" => |a| a.cmpxchg(cx, bx), all, never;
        "cmpxchg32" => |a| a.cmpxchg(ecx, ebx), all, never;
        "cmpxchg64" => |a| a.cmpxchg(rcx, rbx), all, never;
        "bswap32" => |a| a.bswap(eax), all, never;
        "bswap64" => |a| a.bswap(rax), all, never;
        "movsx64_8" => |a| a.movsx(rax, bl), all, never;
        "movsx32_16" => |a| a.movsx(eax, bx), all, never;
        "movsxd" => |a| a.movsxd(rax, ebx), all, never;
        "movzx32_8" => |a| a.movzx(eax, bh), all, never;
        "cbw" => |a| a.cbw(), all, never;
        "cwde" => |a| a.cwde(), all, never;
        "cdqe" => |a| a.cdqe(), all, never;
        "cwd" => |a| a.cwd(), all, never;
        "cdq" => |a| a.cdq(), all, never;
        "cqo" => |a| a.cqo(), all, never;
        "setl" => |a| a.setl(cl), all, never;
        "setbe" => |a| a.setbe(dl), all, never;
        "cmovg32" => |a| a.cmovg(eax, ebx), all, never;
        "cmovp64" => |a| a.cmovp(rax, rbx), all, never;
        "lahf" => |a| a.lahf(), all, never;
        "sahf" => |a| a.sahf(), all, never;
        "cmc" => |a| a.cmc(), all, never;
    }
}

/// A small deterministic generator that favours edge values.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn operand(&mut self) -> u64 {
        const EDGES: [u64; 10] = [
            0,
            1,
            u64::MAX,
            0x7f,
            0x80,
            0x7fff,
            0x8000,
            0x7fff_ffff,
            0x8000_0000,
            0x8000_0000_0000_0000,
        ];
        let r = self.next();
        match r % 8 {
            0 => EDGES[(r >> 8) as usize % EDGES.len()],
            1 => (r >> 8) & 0xff,
            2 => EDGES[(r >> 8) as usize % EDGES.len()]
                .wrapping_add((r >> 40) % 3)
                .wrapping_sub(1),
            _ => self.next(),
        }
    }
}

mod native {
    use super::State;

    /// Executable copy of: load rax/rbx/rcx/rdx and RFLAGS from *rdi, the instruction,
    /// store them back.
    /// State as the trampoline sees it: rax, rbx, rcx, rdx, rflags, rsi.
    pub type Frame = [u64; 6];

    pub struct Trampoline {
        page: *mut u8,
    }

    impl Trampoline {
        pub fn new(insn: &[u8]) -> Trampoline {
            let pre: &[u8] = &[
                0x53, // push rbx
                0x41, 0x57, // push r15
                0x49, 0x89, 0xff, // mov r15, rdi
                0x49, 0x8b, 0x07, // mov rax, [r15]
                0x49, 0x8b, 0x5f, 0x08, // mov rbx, [r15+8]
                0x49, 0x8b, 0x4f, 0x10, // mov rcx, [r15+16]
                0x49, 0x8b, 0x57, 0x18, // mov rdx, [r15+24]
                0x49, 0x8b, 0x77, 0x28, // mov rsi, [r15+40]
                0x41, 0xff, 0x77, 0x20, // push qword [r15+32]
                0x9d, // popfq
            ];
            let post: &[u8] = &[
                0x9c, // pushfq
                0x41, 0x8f, 0x47, 0x20, // pop qword [r15+32]
                0x49, 0x89, 0x07, // mov [r15], rax
                0x49, 0x89, 0x5f, 0x08, // mov [r15+8], rbx
                0x49, 0x89, 0x4f, 0x10, // mov [r15+16], rcx
                0x49, 0x89, 0x57, 0x18, // mov [r15+24], rdx
                0x41, 0x5f, // pop r15
                0x5b, // pop rbx
                0xc3, // ret
            ];
            // SAFETY: a fresh anonymous mapping, checked below.
            let page = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            assert_ne!(page, libc::MAP_FAILED);
            let code: Vec<u8> = [pre, insn, post].concat();
            // SAFETY: the page is 4096 writable bytes; the code is far smaller.
            unsafe {
                std::ptr::copy_nonoverlapping(code.as_ptr(), page as *mut u8, code.len());
                assert_eq!(
                    libc::mprotect(page, 4096, libc::PROT_READ | libc::PROT_EXEC),
                    0
                );
            }
            Trampoline {
                page: page as *mut u8,
            }
        }

        pub fn run(&self, s: &mut State) {
            let mut f: Frame = [s[0], s[1], s[2], s[3], s[4], 0];
            self.run_frame(&mut f);
            s.copy_from_slice(&f[..5]);
        }

        /// Runs with RSI set (memory-operand forms); the instruction may only touch
        /// memory the caller owns at RSI.
        pub fn run_frame(&self, s: &mut Frame) {
            // SAFETY: the page holds a complete function with the C ABI that only
            // touches *s, the registers it saves, and whatever the instruction
            // addresses through RSI, which the caller points at its own buffer.
            let f: extern "C" fn(*mut Frame) = unsafe { std::mem::transmute(self.page) };
            f(s);
        }
    }

    impl Drop for Trampoline {
        fn drop(&mut self) {
            // SAFETY: mapped in new.
            unsafe { libc::munmap(self.page as *mut libc::c_void, 4096) };
        }
    }
}

/// Runs one instruction in the model. `Err(vector)` for an exception.
fn model(m: &mut Machine, s: &mut State) -> Result<(), u8> {
    m.long_mode(CODE);
    for (g, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
        .iter()
        .zip(s.iter())
    {
        m.cpu.set_gpr(*g, *v);
    }
    m.cpu.set_rflags(s[4]);
    m.cpu.controls.exception_bitmap = u32::MAX;
    m.cpu.controls.budget = Some(1);
    let exit = m.run();
    match exit.reason {
        ExitReason::PreemptionTimer => {}
        ExitReason::ExceptionOrNmi => return Err(exit.interruption_info as u8),
        other => panic!("unexpected exit {other:?}: {exit:?}"),
    }
    for (i, g) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].iter().enumerate() {
        s[i] = m.cpu.gpr(*g);
    }
    s[4] = m.cpu.rflags();
    Ok(())
}

#[test]
fn alu_matches_host_cpu() {
    let mut m = Machine::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut checked = 0;
    for case in all_cases() {
        let bytes = asm(64, CODE, |a| (case.emit)(a));
        m.write(CODE, &bytes);
        let tramp = native::Trampoline::new(&bytes);
        for _ in 0..1500 {
            let input: State = [
                rng.operand(),
                rng.operand(),
                rng.operand(),
                rng.operand(),
                (rng.next() & ALL) | 0x202,
            ];
            let mut got = input;
            let r = model(&mut m, &mut got);
            if (case.faults)(&input) {
                assert_eq!(r, Err(0), "{}: expected #DE for {input:x?}", case.name);
                continue;
            }
            assert_eq!(
                r,
                Ok(()),
                "{}: unexpected exception for {input:x?}",
                case.name
            );
            let Some(defined) = (case.defined)(&input) else {
                continue;
            };
            let mut want = input;
            tramp.run(&mut want);
            assert_eq!(
                &got[..4],
                &want[..4],
                "{}: registers differ for input {input:x?}",
                case.name
            );
            assert_eq!(
                got[4] & defined,
                want[4] & defined,
                "{}: flags differ (mask {defined:#x}) for input {input:x?}: model {:#x} host {:#x}",
                case.name,
                got[4],
                want[4]
            );
            checked += 1;
        }
    }
    assert!(checked > 100_000, "only {checked} comparisons");
}

#[test]
fn idiv64_of_the_most_negative_dividend_by_minus_one_is_a_divide_error() {
    let mut m = Machine::new();
    m.write(CODE, &asm(64, CODE, |a| a.idiv(rbx)));
    let mut s: State = [0, u64::MAX, 0, 0x8000_0000_0000_0000, 0x202];
    assert_eq!(model(&mut m, &mut s), Err(0));
    assert!(div_faults(
        &[0, u64::MAX, 0, 0x8000_0000_0000_0000, 0x202],
        64,
        true
    ));
}

/// Memory-operand forms: the operand lives in a 64-byte buffer (RSI points at its
/// middle), natively a host buffer and in the model guest memory at DATA.
struct MemCase {
    name: &'static str,
    emit: Emit,
    defined: fn(&State) -> Option<u64>,
    faults: fn(&State) -> bool,
    /// Bit-string forms: keep the register bit offset within the buffer.
    small_bit_offset: bool,
}

const DATA: u64 = 0x3_0000;

macro_rules! mem_cases {
    ($($name:literal => $emit:expr, $defined:expr, $faults:expr, $small:expr;)*) => {
        vec![$(MemCase { name: $name, emit: $emit, defined: $defined, faults: $faults, small_bit_offset: $small }),*]
    };
}

fn mem_cases() -> Vec<MemCase> {
    mem_cases! {
        "add_m8_r" => |a| a.add(byte_ptr(rsi), bl), all, never, false;
        "add_m64_r" => |a| a.add(qword_ptr(rsi), rbx), all, never, false;
        "adc_r32_m" => |a| a.adc(eax, dword_ptr(rsi)), all, never, false;
        "sub_m16_imm" => |a| a.sub(word_ptr(rsi), 0x1234), all, never, false;
        "sbb_m32_r" => |a| a.sbb(dword_ptr(rsi), ebx), all, never, false;
        "cmp_m64_r" => |a| a.cmp(qword_ptr(rsi), rbx), all, never, false;
        "and_m32_r" => |a| a.and(dword_ptr(rsi), ebx), logic, never, false;
        "or_r16_m" => |a| a.or(ax, word_ptr(rsi)), logic, never, false;
        "xor_m8_imm" => |a| a.xor(byte_ptr(rsi), 0x5a), logic, never, false;
        "test_m64_r" => |a| a.test(qword_ptr(rsi), rbx), logic, never, false;
        "inc_m16" => |a| a.inc(word_ptr(rsi)), all, never, false;
        "dec_m64" => |a| a.dec(qword_ptr(rsi)), all, never, false;
        "neg_m32" => |a| a.neg(dword_ptr(rsi)), all, never, false;
        "not_m8" => |a| a.not(byte_ptr(rsi)), all, never, false;
        "shl_m32_cl" => |a| a.shl(dword_ptr(rsi), cl), |s| shift_flags(s, 32, false), never, false;
        "sar_m8_cl" => |a| a.sar(byte_ptr(rsi), cl), |s| shift_flags(s, 8, true), never, false;
        "shr_m64_cl" => |a| a.shr(qword_ptr(rsi), cl), |s| shift_flags(s, 64, false), never, false;
        "rol_m16_cl" => |a| a.rol(word_ptr(rsi), cl), |s| rot_flags(s, 16, false), never, false;
        "rcr_m32_cl" => |a| a.rcr(dword_ptr(rsi), cl), |s| rot_flags(s, 32, true), never, false;
        "shld_m64_cl" => |a| a.shld(qword_ptr(rsi), rbx, cl), |s| shxd_flags(s, 64), never, false;
        "shrd_m32_cl" => |a| a.shrd(dword_ptr(rsi), ebx, cl), |s| shxd_flags(s, 32), never, false;
        "mul_m64" => |a| a.mul(qword_ptr(rsi)), cf_of, never, false;
        "imul_r32_m" => |a| a.imul_2(eax, dword_ptr(rsi)), cf_of, never, false;
        "imul_r16_m_imm" => |a| a.imul_3(ax, word_ptr(rsi), 77), cf_of, never, false;
        "bt_m32_r" => |a| a.bt(dword_ptr(rsi), ebx), cf_only, never, true;
        "bts_m64_r" => |a| a.bts(qword_ptr(rsi), rbx), cf_only, never, true;
        "btr_m16_r" => |a| a.btr(word_ptr(rsi), bx), cf_only, never, true;
        "btc_m64_imm" => |a| a.btc(qword_ptr(rsi), 45), cf_only, never, false;
        "xadd_m32_r" => |a| a.xadd(dword_ptr(rsi), ebx), all, never, false;
        "cmpxchg_m64_r" => |a| a.cmpxchg(qword_ptr(rsi), rbx), all, never, false;
        "movzx_r32_m8" => |a| a.movzx(eax, byte_ptr(rsi)), all, never, false;
        "movsx_r64_m16" => |a| a.movsx(rax, word_ptr(rsi)), all, never, false;
        "xchg_m16_r" => |a| a.xchg(word_ptr(rsi), bx), all, never, false;
        "bswap_via_movbe" => |a| a.movbe(eax, dword_ptr(rsi)), all, never, false;
        "setcc_m8" => |a| a.setg(byte_ptr(rsi)), all, never, false;
        "cmovb_r64_m" => |a| a.cmovb(rax, qword_ptr(rsi)), all, never, false;
    }
}

#[test]
fn memory_operand_forms_match_host_cpu() {
    let mut m = Machine::new();
    let mut rng = Rng(0x0bad_cafe_1234_5678);
    let mut checked = 0;
    for case in mem_cases() {
        let bytes = asm(64, CODE, |a| (case.emit)(a));
        m.write(CODE, &bytes);
        let tramp = native::Trampoline::new(&bytes);
        for _ in 0..600 {
            let mut input: State = [
                rng.operand(),
                rng.operand(),
                rng.operand(),
                rng.operand(),
                (rng.next() & ALL) | 0x202,
            ];
            if case.small_bit_offset {
                // Within +-128 bits of the operand: inside the 64-byte buffer.
                input[1] = ((input[1] % 256) as i64 - 128) as u64;
            }
            let buf: [u64; 8] = std::array::from_fn(|_| rng.operand());
            // Model: buffer at DATA, RSI at its middle.
            for (i, v) in buf.iter().enumerate() {
                m.write_u64(DATA + 8 * i as u64, *v);
            }
            let mut got = input;
            m.long_mode(CODE);
            for (g, v) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx]
                .iter()
                .zip(got.iter())
            {
                m.cpu.set_gpr(*g, *v);
            }
            m.cpu.set_gpr(Gpr::Rsi, DATA + 32);
            m.cpu.set_rflags(got[4]);
            m.cpu.controls.exception_bitmap = u32::MAX;
            m.cpu.controls.budget = Some(1);
            let exit = m.run();
            if (case.faults)(&input) {
                continue;
            }
            assert_eq!(
                exit.reason,
                ExitReason::PreemptionTimer,
                "{}: {exit:?}",
                case.name
            );
            for (i, g) in [Gpr::Rax, Gpr::Rbx, Gpr::Rcx, Gpr::Rdx].iter().enumerate() {
                got[i] = m.cpu.gpr(*g);
            }
            got[4] = m.cpu.rflags();
            let got_buf: [u64; 8] = std::array::from_fn(|i| m.read_u64(DATA + 8 * i as u64));
            let Some(defined) = (case.defined)(&input) else {
                continue;
            };
            // Host: the same on a host buffer.
            let mut host_buf = buf;
            let mut frame: native::Frame = [
                input[0],
                input[1],
                input[2],
                input[3],
                input[4],
                host_buf.as_mut_ptr() as u64 + 32,
            ];
            tramp.run_frame(&mut frame);
            assert_eq!(
                &got[..4],
                &frame[..4],
                "{}: registers differ for {input:x?} {buf:x?}",
                case.name
            );
            assert_eq!(
                got_buf, host_buf,
                "{}: memory differs for {input:x?}",
                case.name
            );
            assert_eq!(
                got[4] & defined,
                frame[4] & defined,
                "{}: flags differ (mask {defined:#x}) for {input:x?} {buf:x?}",
                case.name
            );
            checked += 1;
        }
    }
    assert!(checked > 15_000, "only {checked} comparisons");
}
