//! Every malformed or refused message gets an error reply and leaves every VM's state
//! exactly as it was (through `ipc::InProcess`, as a vmm-server would send it).

mod support;

use ipc::*;
use proptest::prelude::*;
use support::*;
use zerocopy::IntoBytes;

const TDP_VM: Badge = 10;
const SHADOW_VM: Badge = 11;

/// Everything a request could disturb: stats, registers, root caches, free frames, and
/// the contents of every table frame.
#[derive(Debug, PartialEq)]
struct Snapshot {
    stats: Vec<Stats>,
    roots: Vec<String>,
    free: usize,
    pool_sum: u64,
}

fn snapshot(m: &Machine) -> Snapshot {
    let server = m.server.borrow();
    let phys = server.phys();
    let mut pool_sum = 0u64;
    for i in 0..(m.pool.len() as u64) {
        let v = phys.read_u64(POOL_HPA + 8 * i).unwrap();
        pool_sum = pool_sum.rotate_left(7) ^ v;
    }
    let badges = [TDP_VM, SHADOW_VM];
    Snapshot {
        stats: badges.iter().map(|&b| server.stats(b).unwrap()).collect(),
        roots: badges
            .iter()
            .map(|&b| {
                let vm = server.vm(b).unwrap();
                format!(
                    "{:?} {:?} {:x} {:?}",
                    vm.roots, vm.regs, vm.cr3, vm.last_retry
                )
            })
            .collect(),
        free: server.free_frames(),
        pool_sum,
    }
}

fn machine() -> Box<Machine> {
    let m = Machine::new(8 << 20, 64);
    m.vm(TDP_VM, MmuMode::Tdp, true);
    m.long_mode(TDP_VM, 0x1000);
    m.tdp_fault(TDP_VM, 0x5000, Q_WRITE);
    m.vm(SHADOW_VM, MmuMode::Shadow, true);
    let mut next = 0x10000;
    m.map4(0x1000, 0x40_0000, 0x20_0000, P | RW | A | D, &mut next);
    m.long_mode(SHADOW_VM, 0x1000);
    m.shadow_fault(SHADOW_VM, 0x40_0000, 0, 0);
    m
}

fn framed(label: u32, body: &[u8]) -> Vec<u8> {
    let mut v = label.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

fn status(reply: &[u8]) -> u32 {
    u32::from_le_bytes(reply[..4].try_into().unwrap())
}

/// A valid body for each label (fields in range).
fn valid_bodies() -> Vec<(u32, Vec<u8>)> {
    vec![
        (
            1,
            CreateVm {
                mmu_mode: 0,
                root_reuse: 1,
                flags: 0,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            2,
            AddMemSlot {
                base_gfn: 0x9000,
                npages: 1,
                host_base: 0,
                kind: 2,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            3,
            SetGuestRegs {
                cr0: 1,
                cr3: 0,
                cr4: 0,
                efer: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            4,
            CrWrite {
                value: 0x2000,
                reg: 3,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            5,
            TdpFault {
                gpa: 0x6000,
                gla: 0,
                qualification: 1,
                rip: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            6,
            ShadowFault {
                gva: 0x40_1000,
                rip: 0,
                error_code: 0,
                flags: 0,
                pkru: 0,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (7, Invlpg { gva: 0 }.as_bytes().to_vec()),
        (
            8,
            Invpcid {
                gva: 0,
                pcid: 0,
                kind: 2,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            9,
            EmulatedWrite {
                gpa: 0x12000,
                data: 0,
                len: 8,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (
            10,
            GvaToGpa {
                gva: 0,
                access: 0,
                flags: 0,
                pkru: 0,
                reserved: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (11, vec![]),
        (12, vec![]),
        (
            13,
            DisableNxHugePages {
                flags: 0,
                reserved: 0,
                arg: 0,
            }
            .as_bytes()
            .to_vec(),
        ),
        (14, vec![]),
        (15, RemoveMemSlot { base_gfn: 0 }.as_bytes().to_vec()),
    ]
}

#[test]
fn truncated_trailing_and_unknown_messages_change_nothing() {
    let m = machine();
    let before = snapshot(&m);
    let mut sent = 0;
    for badge in [TDP_VM, SHADOW_VM, 99] {
        for (label, body) in valid_bodies() {
            if !body.is_empty() {
                let r = m.raw(badge, &framed(label, &body[..body.len() - 1]));
                assert_eq!(status(&r), Error::Truncated.code(), "label {label}");
                let r = m.raw(badge, &framed(label, &body[..body.len() / 2]));
                assert_eq!(status(&r), Error::Truncated.code(), "label {label}");
            }
            let mut long = body.clone();
            long.push(0);
            let r = m.raw(badge, &framed(label, &long));
            assert_eq!(status(&r), Error::TrailingBytes.code(), "label {label}");
            sent += 3;
        }
        for bytes in [
            vec![],
            vec![1],
            vec![1, 0, 0],
            framed(0, &[]),
            framed(16, &[]),
            framed(u32::MAX, &[0; 8]),
        ] {
            let r = m.raw(badge, &bytes);
            assert_ne!(status(&r), 0);
            assert_eq!(r.len(), 4, "an error reply is the status alone");
        }
    }
    assert!(sent > 100);
    assert_eq!(snapshot(&m), before);
}

#[test]
fn out_of_range_fields_change_nothing() {
    let m = machine();
    let before = snapshot(&m);
    let bad: Vec<Vec<u8>> = vec![
        framed(
            1,
            CreateVm {
                mmu_mode: 2,
                root_reuse: 1,
                flags: 0,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            1,
            CreateVm {
                mmu_mode: 0,
                root_reuse: 2,
                flags: 0,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            1,
            CreateVm {
                mmu_mode: 0,
                root_reuse: 1,
                flags: 2,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            2,
            AddMemSlot {
                base_gfn: 0x9000,
                npages: 0,
                host_base: 0,
                kind: 2,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            2,
            AddMemSlot {
                base_gfn: 0x9000,
                npages: 1,
                host_base: 0x123,
                kind: 0,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            2,
            AddMemSlot {
                base_gfn: 0x9000,
                npages: 1,
                host_base: 0,
                kind: 3,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            2,
            AddMemSlot {
                base_gfn: 0x9000,
                npages: 1,
                host_base: 0x1000,
                kind: 2,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            4,
            CrWrite {
                value: 0,
                reg: 1,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            4,
            CrWrite {
                value: 0,
                reg: 0,
                reserved: 5,
            }
            .as_bytes(),
        ),
        framed(
            6,
            ShadowFault {
                gva: 0,
                rip: 0,
                error_code: 0,
                flags: 1 << 9,
                pkru: 0,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            8,
            Invpcid {
                gva: 0,
                pcid: 0x1000,
                kind: 0,
            }
            .as_bytes(),
        ),
        framed(
            8,
            Invpcid {
                gva: 0,
                pcid: 0,
                kind: 4,
            }
            .as_bytes(),
        ),
        framed(
            9,
            EmulatedWrite {
                gpa: 0,
                data: 0,
                len: 3,
                reserved: 0,
            }
            .as_bytes(),
        ),
        framed(
            10,
            GvaToGpa {
                gva: 0,
                access: 1,
                flags: 0,
                pkru: 0,
                reserved: 0,
            }
            .as_bytes(),
        ),
    ];
    for badge in [TDP_VM, SHADOW_VM] {
        for msg in &bad {
            let r = m.raw(badge, msg);
            assert_eq!(status(&r), Error::InvalidArgument.code(), "{msg:?}");
        }
    }
    assert_eq!(snapshot(&m), before);
}

/// Well-formed requests the server refuses: also error replies, also harmless.
#[test]
fn refused_requests_change_nothing() {
    let m = machine();
    let before = snapshot(&m);
    let nobody = 12345;
    assert_eq!(m.call(nobody, &GetStats {}), Err(Error::NoSuchVm));
    assert_eq!(
        m.call(
            nobody,
            &TdpFault {
                gpa: 0,
                gla: 0,
                qualification: 1,
                rip: 0
            }
        ),
        Err(Error::NoSuchVm)
    );
    assert_eq!(m.call(nobody, &DestroyVm {}), Err(Error::NoSuchVm));
    assert_eq!(
        m.call(
            TDP_VM,
            &CreateVm {
                mmu_mode: 0,
                root_reuse: 1,
                flags: 0,
                reserved: 0
            }
        ),
        Err(Error::VmExists)
    );
    assert_eq!(
        m.call(
            TDP_VM,
            &DisableNxHugePages {
                flags: 0,
                reserved: 0,
                arg: 0
            }
        ),
        // Sent without the NxHugePageControl badge bit: the capability is not held.
        Err(Error::PermissionDenied)
    );
    assert_eq!(
        m.call(
            TDP_VM,
            &ShadowFault {
                gva: 0,
                rip: 0,
                error_code: 0,
                flags: 0,
                pkru: 0,
                reserved: 0
            }
        ),
        Err(Error::InvalidState)
    );
    assert_eq!(
        m.call(
            SHADOW_VM,
            &TdpFault {
                gpa: 0,
                gla: 0,
                qualification: 1,
                rip: 0
            }
        ),
        Err(Error::InvalidState)
    );
    // Addresses outside every slot, and beyond the guest's physical address width.
    assert_eq!(
        m.call(
            TDP_VM,
            &TdpFault {
                gpa: 1 << 45,
                gla: 0,
                qualification: 1,
                rip: 0
            }
        ),
        Err(Error::BadAddress)
    );
    assert_eq!(
        m.call(
            TDP_VM,
            &AddMemSlot {
                base_gfn: u64::MAX - 1,
                npages: 5,
                host_base: 0,
                kind: 2,
                reserved: 0
            }
        ),
        Err(Error::BadAddress)
    );
    assert_eq!(
        m.call(
            TDP_VM,
            &AddMemSlot {
                base_gfn: 0,
                npages: 1,
                host_base: RAM_HPA,
                kind: 0,
                reserved: 0
            }
        ),
        Err(Error::InvalidArgument),
        "overlaps the RAM slot"
    );
    assert_eq!(
        m.call(TDP_VM, &RemoveMemSlot { base_gfn: 0x777 }),
        Err(Error::BadAddress)
    );
    // A CR3 with reserved bits in long mode.
    assert_eq!(
        m.call(
            SHADOW_VM,
            &CrWrite {
                value: 1 << 50,
                reg: 3,
                reserved: 0
            }
        ),
        Err(Error::InvalidArgument)
    );
    assert_eq!(snapshot(&m), before);
    // The server is still fine.
    assert_eq!(
        outcome(&m.tdp_fault(TDP_VM, 0x5000, Q_READ)),
        FaultOutcome::Fixed
    );
}

#[test]
fn vm_table_capacity_and_destroy() {
    let m = Machine::new(1 << 20, 64);
    for b in 0..8 {
        m.call(
            b,
            &CreateVm {
                mmu_mode: 1,
                root_reuse: 1,
                flags: 0,
                reserved: 0,
            },
        )
        .unwrap();
        m.regs(b, PE, 0, 0, 0);
    }
    assert_eq!(
        m.call(
            8,
            &CreateVm {
                mmu_mode: 1,
                root_reuse: 1,
                flags: 0,
                reserved: 0
            }
        ),
        Err(Error::OutOfMemory)
    );
    let free = m.server.borrow().free_frames();
    m.call(3, &DestroyVm {}).unwrap();
    assert_eq!(
        m.server.borrow().free_frames(),
        free + 1,
        "its root went back to the pool"
    );
    assert_eq!(m.call(3, &GetStats {}), Err(Error::NoSuchVm));
    m.call(
        8,
        &CreateVm {
            mmu_mode: 1,
            root_reuse: 1,
            flags: 0,
            reserved: 0,
        },
    )
    .unwrap();
    assert_eq!(m.stats(8), Stats::default(), "fresh counters");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Arbitrary bytes behind any label: a reply always comes back, and when the bytes
    /// do not decode, nothing changed.
    #[test]
    fn arbitrary_bytes_never_disturb_state(label in 0u32..=16, body in proptest::collection::vec(any::<u8>(), 0..64)) {
        let m = machine();
        let before = snapshot(&m);
        let bytes = framed(label, &body);
        let r = m.raw(SHADOW_VM, &bytes);
        prop_assert!(r.len() >= 4);
        if MmuRequest::decode(&bytes).is_err() {
            prop_assert_ne!(status(&r), 0);
            prop_assert_eq!(snapshot(&m), before);
        }
    }
}
