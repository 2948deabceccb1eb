//! Guest input must never panic the model: random machine code (with random
//! registers, in 64-bit and 32-bit mode, CPL 0 and 3) runs until an exit, and every
//! exit is one of the defined reasons. Debug builds check arithmetic overflow, so this
//! also finds overflows that guest values can reach.

mod support;

use support::*;
use vcpu::{ExitReason, Gpr, SegReg, Segment};

const EPT: u64 = 0x70_0000;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn random_program(m: &mut Machine, rng: &mut Rng) {
    let mut code = [0u8; 256];
    for chunk in code.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    m.write(CODE, &code);
    for g in Gpr::ALL {
        // Mostly small values (addresses inside RAM), sometimes anything.
        let v = rng.next();
        let v = if v.is_multiple_of(4) {
            v
        } else {
            (v >> 40) & 0x7f_fff8
        };
        m.cpu.set_gpr(g, v);
    }
}

#[test]
fn random_code_never_panics() {
    let mut m = Machine::new();
    m.write_u64(EPT, (EPT + 0x1000) | 7);
    m.write_u64(EPT + 0x1000, (EPT + 0x2000) | 7);
    for i in 0..4u64 {
        let perms = if i == 3 { 1 } else { 7 };
        m.write_u64(
            EPT + 0x2000 + 8 * i,
            (i << 21) | (6 << 3) | (1 << 7) | perms,
        );
    }
    let seed = std::env::var("ROBUSTNESS_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x9e37_79b9_7f4a_7c15u64);
    let mut rng = Rng(seed);
    let mut reasons = std::collections::BTreeMap::new();
    // More with ROBUSTNESS_PROGRAMS=n for a longer hunt.
    let programs = std::env::var("ROBUSTNESS_PROGRAMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000u64);
    for i in 0..programs {
        random_program(&mut m, &mut rng);
        match i % 3 {
            0 => m.long_mode(CODE),
            1 => {
                m.long_mode(CODE);
                m.cpu
                    .set_segment(SegReg::Cs, Segment::flat(UCODE64 | 3, true, 3, true));
                m.cpu
                    .set_segment(SegReg::Ss, Segment::flat(UDATA | 3, false, 3, false));
            }
            _ => {
                m.cpu.reset_multiboot(CODE as u32, 0);
                m.cpu.set_gdtr(vcpu::DescriptorTable {
                    base: GDT,
                    limit: 0x47,
                });
            }
        }
        // Every fourth program runs under EPT (identity for the first 6 MiB,
        // read-only for 6..8 MiB so EPT violations happen too).
        m.cpu.controls.enable_ept = i % 4 == 3;
        m.cpu.controls.eptp = EPT | (3 << 3) | 6;
        // Keep the stack inside RAM whatever the program does to it first.
        m.cpu.set_gpr(Gpr::Rsp, STACK_TOP - 0x100);
        m.cpu.controls.exception_bitmap = if i % 2 == 0 { u32::MAX } else { 0 };
        // Keep going past each exit (skipping the instruction, as a VMM that
        // emulates it would) so the random stream exercises many instructions.
        for _ in 0..30 {
            m.cpu.controls.budget = Some(200);
            let exit = m.run();
            assert!(
                !matches!(exit.reason, ExitReason::BadHpa) || exit.guest_physical.is_some(),
                "{exit:?}"
            );
            *reasons.entry(format!("{:?}", exit.reason)).or_insert(0) += 1;
            m.cpu.controls.injection.info = 0;
            match exit.reason {
                ExitReason::TripleFault | ExitReason::InvalidGuestState => break,
                ExitReason::PreemptionTimer => {}
                _ => {
                    m.cpu.set_halted(false);
                    m.cpu.advance_rip(exit.instruction_len.max(1));
                }
            }
            if m.cpu.rip().wrapping_sub(CODE) >= 256 {
                break;
            }
        }
    }
    println!("{reasons:?}");
    // The programs reached a variety of outcomes (not all one early #UD).
    assert!(reasons.len() >= 5, "{reasons:?}");
}
