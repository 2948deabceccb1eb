//! Random sequences of well-formed requests over random guest memory: the server never
//! panics, always replies, and keeps its books (frames in use = shadow pages counted,
//! huge-page counters match the tables). A crash here would be a crashed server.

mod support;

use ipc::*;
use proptest::prelude::*;
use support::*;

const VM: Badge = 2;
const RAM: u64 = 4 << 20;

#[derive(Clone, Debug)]
enum Op {
    Cr(u32, u64),
    Regs(u64, u64, u64, u64),
    Tdp(u64, u64),
    Shadow(u64, u32, u32, u32),
    Write(u64, u64, u32),
    Invlpg(u64),
    Invpcid(u64, u32, u32),
    Gva(u64, u32, u32),
    Slot(u64, u64, u32),
    Remove(u64),
    Poke(u64, u64),
}

fn reg() -> impl Strategy<Value = u32> {
    prop_oneof![Just(0u32), Just(3), Just(4), Just(0xC000_0080)]
}

/// Register values built from the bits that matter, plus noise.
fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        (any::<bool>(), any::<bool>(), any::<bool>())
            .prop_map(|(pg, wp, pe)| { (pg as u64) << 31 | (wp as u64) << 16 | pe as u64 }),
        (0u64..0x80).prop_map(|b| {
            // CR4-like: PSE, PAE, PGE, PCIDE, SMEP, SMAP, PKE, LA57 from the bits of b.
            let bits = [4, 5, 7, 17, 20, 21, 22, 12];
            bits.iter()
                .enumerate()
                .filter(|(i, _)| b >> i & 1 != 0)
                .map(|(_, s)| 1u64 << s)
                .sum()
        }),
        (0u64..0x400).prop_map(|p| p << 12),
        (0u64..0x400, 0u64..0x1000, any::<bool>())
            .prop_map(|(p, pcid, nf)| p << 12 | pcid | (nf as u64) << 63),
        any::<u64>(),
        Just(EFER_LME | EFER_NX),
    ]
}

fn addr() -> impl Strategy<Value = u64> {
    prop_oneof![
        4 => 0u64..0x20_0000,
        // The guest's own tables (PML4, PDPT, PD, PT), mapped at the same addresses.
        3 => (prop_oneof![Just(0x1000u64), Just(0x10000), Just(0x11000), Just(0x12000)], 0u64..0x1000)
            .prop_map(|(t, o)| t + o),
        2 => 0u64..RAM,
        1 => any::<u64>(),
        1 => (0u64..0x10).prop_map(|g| g << 30 | 0x1234),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (reg(), value()).prop_map(|(r, v)| Op::Cr(r, v)),
        1 => (value(), value(), value(), value()).prop_map(|(a, b, c, d)| Op::Regs(a, b, c, d)),
        4 => (addr(), 0u64..0x200).prop_map(|(a, q)| Op::Tdp(a, q)),
        6 => (addr(), 0u32..0x40, 0u32..0x20, any::<u32>()).prop_map(|(a, e, f, k)| Op::Shadow(a, e, f, k)),
        3 => (addr(), any::<u64>(), prop_oneof![Just(1u32), Just(2), Just(4), Just(8)]).prop_map(|(a, d, l)| Op::Write(a, d, l)),
        1 => addr().prop_map(Op::Invlpg),
        1 => (addr(), 0u32..0x1000, 0u32..4).prop_map(|(a, p, k)| Op::Invpcid(a, p, k)),
        2 => (addr(), prop_oneof![Just(0u32), Just(2), Just(4), Just(6), Just(16)], 0u32..0x20).prop_map(|(a, x, f)| Op::Gva(a, x, f)),
        1 => (0u64..0x2000, 1u64..600, 0u32..3).prop_map(|(g, n, k)| Op::Slot(g, n, k)),
        1 => prop_oneof![Just(0u64), 0u64..0x2000].prop_map(Op::Remove),
        3 => (0u64..RAM / 8, any::<u64>()).prop_map(|(i, v)| Op::Poke(i * 8, v)),
        // Entries that look like page-table entries, into the table area.
        6 => (0u64..0x20000 / 8, 0u64..64, 0u64..0x200, any::<bool>())
            .prop_map(|(i, page, flags, xd)| Op::Poke(i * 8, page << 12 | flags | (xd as u64) << 63)),
    ]
}

fn run(tdp: bool, reuse: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let m = Machine::new(RAM, 24);
    m.vm(VM, if tdp { MmuMode::Tdp } else { MmuMode::Shadow }, reuse);
    // A long-mode guest with the first 2 MiB identity-mapped (its own tables included,
    // so that writes through them hit write-tracked gfns), then random requests.
    let mut next = 0x10000;
    for page in 0..512u64 {
        m.map4(0x1000, page << 12, page << 12, P | RW | A | D, &mut next);
    }
    m.long_mode(VM, 0x1000);
    for op in ops {
        let reply: Result<(), Error> = match op {
            Op::Cr(reg, value) => m
                .call(
                    VM,
                    &CrWrite {
                        value,
                        reg,
                        reserved: 0,
                    },
                )
                .map(drop),
            Op::Regs(cr0, cr3, cr4, efer) => m
                .call(
                    VM,
                    &SetGuestRegs {
                        cr0,
                        cr3,
                        cr4,
                        efer,
                    },
                )
                .map(drop),
            Op::Tdp(gpa, qualification) => m
                .call(
                    VM,
                    &TdpFault {
                        gpa,
                        gla: 0,
                        qualification,
                        rip: 0,
                    },
                )
                .map(drop),
            Op::Shadow(gva, error_code, flags, pkru) => m
                .call(
                    VM,
                    &ShadowFault {
                        gva,
                        rip: gva ^ 0x55,
                        error_code,
                        flags,
                        pkru,
                        reserved: 0,
                    },
                )
                .map(drop),
            Op::Write(gpa, data, len) => m
                .call(
                    VM,
                    &EmulatedWrite {
                        gpa,
                        data,
                        len,
                        reserved: 0,
                    },
                )
                .map(drop),
            Op::Invlpg(gva) => m.call(VM, &Invlpg { gva }).map(drop),
            Op::Invpcid(gva, pcid, kind) => m.call(VM, &Invpcid { gva, pcid, kind }).map(drop),
            Op::Gva(gva, access, flags) => m
                .call(
                    VM,
                    &GvaToGpa {
                        gva,
                        access,
                        flags,
                        pkru: 0,
                        reserved: 0,
                    },
                )
                .map(drop),
            Op::Slot(base_gfn, npages, kind) => {
                let host_base = if kind == 2 {
                    0
                } else {
                    RAM_HPA + (base_gfn % 512) * 4096
                };
                m.call(
                    VM,
                    &AddMemSlot {
                        base_gfn: base_gfn + 0x400,
                        npages,
                        host_base,
                        kind,
                        reserved: 0,
                    },
                )
                .map(drop)
            }
            Op::Remove(g) => m.call(VM, &RemoveMemSlot { base_gfn: g }).map(drop),
            Op::Poke(gpa, v) => {
                m.write64(gpa, v);
                Ok(())
            }
        };
        // Any error is fine; only a closed set may appear.
        if let Err(e) = reply {
            prop_assert!(Error::ALL.contains(&e));
        }
        let s = m.stats(VM);
        let free = m.server.borrow().free_frames() as u64;
        prop_assert_eq!(
            s.shadow_pages + free,
            24,
            "every frame is free or a counted page"
        );
    }
    if std::env::var("SEQ_STATS").is_ok() {
        eprintln!("SEQ {:?}", m.stats(VM));
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_request_sequences_never_break_the_server(
        tdp in any::<bool>(),
        reuse in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..60),
    ) {
        run(tdp, reuse, ops)?;
    }
}
