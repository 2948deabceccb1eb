//! Guest MIPS: a compute loop (registers only, decode cache hot) and a
//! page-table-heavy loop (a store to a different 4 KiB page every few instructions,
//! through 4-level guest paging and EPT, so the TLB misses and walks).

use std::ptr::NonNull;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use iced_x86::code_asm::*;
use physmem::PhysMap;
use vcpu::{cr0, cr4, efer, DescriptorTable, ExitReason, Gpr, SegReg, Segment, Vcpu};

const RAM: usize = 64 << 20;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
/// 4 KiB page tables for the 32 MiB at 16 MiB (16 PTs).
const PT: u64 = 0x10_0000;
const EPT_PML4: u64 = 0x20_0000;
const EPT_PDPT: u64 = 0x20_1000;
const EPT_PD: u64 = 0x20_2000;
const CODE: u64 = 0x40_0000;
const DATA: u64 = 0x100_0000;
const DATA_PAGES: u64 = 8192;

struct Bench {
    _ram: Vec<u64>,
    mem: PhysMap,
}

impl Bench {
    fn new() -> Bench {
        let mut ram = vec![0u64; RAM / 8];
        let mut mem = PhysMap::new();
        unsafe {
            mem.add_region(
                0,
                NonNull::new(ram.as_mut_ptr().cast()).unwrap(),
                RAM as u64,
                true,
            )
            .unwrap()
        };
        let b = Bench { _ram: ram, mem };
        // Guest tables: 2 MiB identity pages, except 16..48 MiB mapped with 4 KiB pages.
        b.mem.write_u64(PML4, PDPT | 7).unwrap();
        b.mem.write_u64(PDPT, PD | 7).unwrap();
        for i in 0..32u64 {
            let gpa = i << 21;
            if (DATA..DATA + (DATA_PAGES << 12)).contains(&gpa) {
                let pt = PT + ((gpa - DATA) >> 21) * 0x1000;
                b.mem.write_u64(PD + 8 * i, pt | 7).unwrap();
                for j in 0..512u64 {
                    b.mem.write_u64(pt + 8 * j, (gpa + (j << 12)) | 7).unwrap();
                }
            } else {
                b.mem.write_u64(PD + 8 * i, gpa | 0x87).unwrap();
            }
        }
        // EPT: identity for the 64 MiB of RAM, 2 MiB leaves, RWX, write-back.
        b.mem.write_u64(EPT_PML4, EPT_PDPT | 7).unwrap();
        b.mem.write_u64(EPT_PDPT, EPT_PD | 7).unwrap();
        for i in 0..32u64 {
            b.mem
                .write_u64(EPT_PD + 8 * i, (i << 21) | (6 << 3) | (1 << 7) | 7)
                .unwrap();
        }
        b
    }

    fn vcpu(&self, code: &[u8], ept: bool) -> Vcpu {
        self.mem.write(CODE, code).unwrap();
        let mut c = Vcpu::new();
        c.set_control_registers(
            cr0::PE | cr0::ET | cr0::PG | cr0::WP,
            PML4,
            cr4::PAE,
            efer::LME | efer::LMA | efer::NXE,
        );
        c.set_segment(SegReg::Cs, Segment::flat(8, true, 0, true));
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es] {
            c.set_segment(s, Segment::flat(0x10, false, 0, false));
        }
        c.set_gdtr(DescriptorTable { base: 0, limit: 0 });
        c.set_rip(CODE);
        c.set_gpr(Gpr::Rsp, 0x8_0000);
        if ept {
            c.controls.enable_ept = true;
            c.controls.eptp = EPT_PML4 | (3 << 3) | 6;
            c.controls.enable_vpid = true;
            c.controls.vpid = 1;
        }
        c
    }
}

fn asm(f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.assemble(CODE).unwrap()
}

/// A register-only loop typical of compiled code: arithmetic, a shift, a compare and
/// a conditional branch, plus a load and a store to a stack slot.
fn compute_loop() -> Vec<u8> {
    asm(|a| {
        let mut top = a.create_label();
        a.xor(eax, eax)?;
        a.mov(rdx, 0x9e37_79b9_7f4a_7c15u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.imul_3(rbx, rax, 13)?;
        a.xor(rax, rbx)?;
        a.shr(rbx, 3)?;
        a.mov(qword_ptr(rsp - 8), rax)?;
        a.add(rax, qword_ptr(rsp - 8))?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.jmp(top)?;
        Ok(())
    })
}

/// Touches one qword in each of DATA_PAGES pages, round and round.
fn page_loop() -> Vec<u8> {
    asm(|a| {
        let mut outer = a.create_label();
        let mut inner = a.create_label();
        a.set_label(&mut outer)?;
        a.mov(rsi, DATA)?;
        a.mov(rcx, DATA_PAGES)?;
        a.set_label(&mut inner)?;
        a.add(qword_ptr(rsi), rcx)?;
        a.add(rsi, 4096)?;
        a.dec(rcx)?;
        a.jnz(inner)?;
        a.jmp(outer)?;
        Ok(())
    })
}

/// CPU time of this thread: the machine is shared, so wall-clock time understates
/// what the vCPU achieves on a core of its own.
fn thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Runs `n` instructions; returns guest MIPS per wall-clock second and per second of
/// the thread's CPU time.
fn mips(c: &mut Vcpu, mem: &PhysMap, n: u64) -> (f64, f64) {
    c.controls.budget = Some(n);
    let t = Instant::now();
    let cpu0 = thread_cpu_seconds();
    let exit = c.run(mem);
    let cpu = thread_cpu_seconds() - cpu0;
    let dt = t.elapsed().as_secs_f64();
    assert_eq!(exit.reason, ExitReason::PreemptionTimer, "{exit:?}");
    (n as f64 / dt / 1e6, n as f64 / cpu / 1e6)
}

fn benches(cr: &mut Criterion) {
    let b = Bench::new();
    // MIPS_INSTRUCTIONS=n shortens the printed runs (e.g. under a profiler).
    let n_env = std::env::var("MIPS_INSTRUCTIONS")
        .ok()
        .and_then(|v| v.parse().ok());
    let n: u64 = n_env.unwrap_or(10_000_000);
    let mut compute = b.vcpu(&compute_loop(), false);
    compute.set_gpr(Gpr::Rcx, u64::MAX);
    mips(&mut compute, &b.mem, n / 10);
    let (wall, cpu) = mips(&mut compute, &b.mem, n);
    println!("compute loop: {wall:.1} MIPS wall-clock, {cpu:.1} MIPS per CPU-second");
    if std::env::var("MIPS_ONLY").is_ok_and(|v| v == "compute") {
        return;
    }
    let mut pages = b.vcpu(&page_loop(), true);
    mips(&mut pages, &b.mem, n / 10);
    let (wall, cpu) = mips(&mut pages, &b.mem, n);
    println!(
        "page loop (EPT, {DATA_PAGES} 4 KiB pages): {wall:.1} MIPS wall-clock, {cpu:.1} MIPS per CPU-second"
    );

    let mut g = cr.benchmark_group("guest");
    g.throughput(Throughput::Elements(1_000_000));
    g.sample_size(10);
    g.bench_function("compute_loop_1M_instructions", |bn| {
        bn.iter(|| {
            compute.controls.budget = Some(1_000_000);
            compute.run(&b.mem)
        })
    });
    g.bench_function("page_loop_ept_1M_instructions", |bn| {
        bn.iter(|| {
            pages.controls.budget = Some(1_000_000);
            pages.run(&b.mem)
        })
    });
    g.finish();
}

criterion_group!(mips_benches, benches);
criterion_main!(mips_benches);
