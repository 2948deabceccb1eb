//! The decoder never trusts its input: any bytes decode to a request or an error,
//! never a panic; every well-formed request round-trips; errors are specific.

mod common;

use common::{encode, framed};
use ipc::*;
use proptest::prelude::*;
use zerocopy::IntoBytes;

#[test]
fn round_trip_every_request_kind() {
    let reqs: Vec<(Vec<u8>, MmuRequest)> = vec![
        (
            encode(&CreateVm {
                mmu_mode: 1,
                root_reuse: 1,
                flags: vm_flags::EPT_AD,
                reserved: 0,
            }),
            MmuRequest::CreateVm(CreateVm {
                mmu_mode: 1,
                root_reuse: 1,
                flags: 1,
                reserved: 0,
            }),
        ),
        (
            encode(&AddMemSlot {
                base_gfn: 0,
                npages: 512,
                host_base: 0x10_0000,
                kind: 0,
                reserved: 0,
            }),
            MmuRequest::AddMemSlot(AddMemSlot {
                base_gfn: 0,
                npages: 512,
                host_base: 0x10_0000,
                kind: 0,
                reserved: 0,
            }),
        ),
        (
            encode(&CrWrite {
                value: 0x8000_0011,
                reg: 0,
                reserved: 0,
            }),
            MmuRequest::CrWrite(CrWrite {
                value: 0x8000_0011,
                reg: 0,
                reserved: 0,
            }),
        ),
        (encode(&GetStats {}), MmuRequest::GetStats(GetStats {})),
        (
            encode(&Invpcid {
                gva: 0x1000,
                pcid: 7,
                kind: 1,
            }),
            MmuRequest::Invpcid(Invpcid {
                gva: 0x1000,
                pcid: 7,
                kind: 1,
            }),
        ),
    ];
    let reqs = {
        let mut reqs = reqs;
        reqs.push((
            encode(&RemoveMemSlot { base_gfn: 0x100 }),
            MmuRequest::RemoveMemSlot(RemoveMemSlot { base_gfn: 0x100 }),
        ));
        reqs
    };
    for (bytes, want) in reqs {
        assert_eq!(MmuRequest::decode(&bytes), Ok(want));
        assert_eq!(MmuRequest::decode(&bytes).unwrap().label(), want.label());
    }
}

#[test]
fn specific_errors() {
    assert_eq!(MmuRequest::decode(&[]), Err(Error::Truncated));
    assert_eq!(MmuRequest::decode(&[1, 0]), Err(Error::Truncated));
    assert_eq!(
        MmuRequest::decode(&framed(999, &[])),
        Err(Error::UnknownLabel)
    );
    assert_eq!(
        MmuRequest::decode(&framed(0, &[])),
        Err(Error::UnknownLabel)
    );
    // CreateVm with a body one byte short, and one byte long.
    let good = CreateVm {
        mmu_mode: 0,
        root_reuse: 1,
        flags: 0,
        reserved: 0,
    };
    let body = good.as_bytes();
    assert_eq!(
        MmuRequest::decode(&framed(1, &body[..body.len() - 1])),
        Err(Error::Truncated)
    );
    let mut long = body.to_vec();
    long.push(0);
    assert_eq!(
        MmuRequest::decode(&framed(1, &long)),
        Err(Error::TrailingBytes)
    );
    // Out-of-range enum, non-zero reserved field.
    let bad_mode = CreateVm {
        mmu_mode: 2,
        ..good
    };
    assert_eq!(
        MmuRequest::decode(&encode(&bad_mode)),
        Err(Error::InvalidArgument)
    );
    let bad_reserved = CreateVm {
        reserved: 1,
        ..good
    };
    assert_eq!(
        MmuRequest::decode(&encode(&bad_reserved)),
        Err(Error::InvalidArgument)
    );
    let bad_reg = CrWrite {
        value: 0,
        reg: 2,
        reserved: 0,
    };
    assert_eq!(
        MmuRequest::decode(&encode(&bad_reg)),
        Err(Error::InvalidArgument)
    );
    let bad_len = EmulatedWrite {
        gpa: 0,
        data: 0,
        len: 3,
        reserved: 0,
    };
    assert_eq!(
        MmuRequest::decode(&encode(&bad_len)),
        Err(Error::InvalidArgument)
    );
    let mmio_with_backing = AddMemSlot {
        base_gfn: 0,
        npages: 1,
        host_base: 0x1000,
        kind: 2,
        reserved: 0,
    };
    assert_eq!(
        MmuRequest::decode(&encode(&mmio_with_backing)),
        Err(Error::InvalidArgument)
    );
}

#[test]
fn replies_decode_and_errors_surface() {
    let mut buf = [0u8; MAX_MSG_BYTES];
    let n = encode_reply(
        &RootReply {
            root_hpa: 0x5000,
            flush: flush::CURRENT,
            root_level: 4,
        },
        &mut buf,
    )
    .unwrap();
    let r = decode_reply::<CrWrite>(&buf[..n]).unwrap();
    assert_eq!(r.root_hpa, 0x5000);
    for e in Error::ALL {
        let n = encode_error_reply(e, &mut buf);
        assert_eq!(decode_reply::<CrWrite>(&buf[..n]), Err(e));
        assert_eq!(Error::from_code(e.code()), Some(e));
    }
    // An unknown status is a transport error, not a panic.
    assert_eq!(
        decode_reply::<CrWrite>(&framed(77, &[])),
        Err(Error::Transport)
    );
    assert_eq!(decode_reply::<CrWrite>(&[0, 0]), Err(Error::Truncated));
    assert_eq!(
        decode_reply::<GetStats>(&framed(0, &[0; 8])),
        Err(Error::Truncated)
    );
}

#[test]
fn error_numbers_are_stable() {
    let numbers: Vec<u32> = Error::ALL.iter().map(|e| e.code()).collect();
    assert_eq!(numbers, (1..=12).collect::<Vec<_>>());
    assert_eq!(Label::CreateVm.code(), 1);
    assert_eq!(Label::DestroyVm.code(), 14);
    assert_eq!(Label::RemoveMemSlot.code(), 15);
    assert_eq!(STAT_NAMES.len(), Stats::default().entries().len());
}

/// A toy server: replies to GetStats with a counter keyed by badge, errors otherwise.
struct Echo;
impl Server for Echo {
    fn handle(&mut self, badge: Badge, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize {
        match MmuRequest::decode(request) {
            Ok(MmuRequest::GetStats(_)) => encode_reply(
                &Stats {
                    roots_allocated: badge,
                    ..Default::default()
                },
                reply,
            )
            .unwrap(),
            Ok(_) => encode_error_reply(Error::NotSupported, reply),
            Err(e) => encode_error_reply(e, reply),
        }
    }
}

#[test]
fn in_process_transport_carries_the_badge() {
    let server = core::cell::RefCell::new(Echo);
    let mut a = InProcess::new(&server, 7);
    let mut b = InProcess::new(&server, 9);
    assert_eq!(call(&mut a, &GetStats {}).unwrap().roots_allocated, 7);
    assert_eq!(call(&mut b, &GetStats {}).unwrap().roots_allocated, 9);
    assert_eq!(call(&mut a, &VcpuCreated {}), Err(Error::NotSupported));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// Arbitrary bytes: decoding returns, and an Ok re-encodes to the same bytes.
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = MmuRequest::decode(&bytes);
        let _ = decode_reply::<CrWrite>(&bytes);
        let _ = decode_reply::<GetStats>(&bytes);
    }

    /// A known label with a random body: length mismatches are precise errors.
    #[test]
    fn known_label_random_body(label in 1u32..=21, body in proptest::collection::vec(any::<u8>(), 0..80)) {
        match MmuRequest::decode(&framed(label, &body)) {
            Ok(req) => prop_assert_eq!(req.label().code(), label),
            Err(e) => prop_assert!(matches!(e, Error::Truncated | Error::TrailingBytes | Error::InvalidArgument)),
        }
    }

    /// Truncating any valid request at any point yields Truncated.
    #[test]
    fn truncation_is_detected(gpa in any::<u64>(), q in any::<u64>(), cut in 0usize..36) {
        let bytes = encode(&TdpFault { gpa, gla: 0, qualification: q, rip: 0 });
        prop_assume!(cut < bytes.len());
        prop_assert_eq!(MmuRequest::decode(&bytes[..cut]), Err(Error::Truncated));
    }
}

#[test]
fn fault_reply_carries_flush_and_root() {
    let mut buf = [0u8; MAX_MSG_BYTES];
    let sent = FaultReply {
        outcome: FaultOutcome::Retry as u32,
        error_code: 0,
        gpa: 0,
        flush: flush::CURRENT,
        root_level: 4,
        root_hpa: 0x7000,
    };
    let n = encode_reply(&sent, &mut buf).unwrap();
    let got = decode_reply::<ShadowFault>(&buf[..n]).unwrap();
    assert_eq!(got, sent);
    assert_eq!(got.outcome(), Ok(FaultOutcome::Retry));
    // The old 16-byte reply is now short: a precise error, not a misread.
    assert_eq!(
        decode_reply::<ShadowFault>(&buf[..4 + 16]),
        Err(Error::Truncated)
    );
    // EmulatedWrite answers with the root to run on.
    let n = encode_reply(
        &RootReply {
            root_hpa: 0x9000,
            flush: flush::CURRENT,
            root_level: 3,
        },
        &mut buf,
    )
    .unwrap();
    assert_eq!(
        decode_reply::<EmulatedWrite>(&buf[..n]).unwrap().root_level,
        3
    );
}
