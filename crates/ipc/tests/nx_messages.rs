//! The NX-huge-page messages (issue 5): stable labels, range checks, round trips, and
//! the badge bits the server reads.

mod common;

use common::{encode, framed};
use ipc::*;
use zerocopy::IntoBytes;

#[test]
fn labels_are_stable_and_follow_the_old_ones() {
    let labels = [
        (Label::SetNxHugePages, 16),
        (Label::SetNxRecovery, 17),
        (Label::GetNxHugePages, 18),
        (Label::NxRecoveryTick, 19),
        (Label::SyncMmu, 20),
        (Label::GetMapping, 21),
    ];
    for (l, n) in labels {
        assert_eq!(l.code(), n, "{l:?}");
    }
    assert_eq!(Label::DisableNxHugePages.code(), 13);
    assert_eq!(
        MmuRequest::decode(&framed(22, &[])),
        Err(Error::UnknownLabel)
    );
}

#[test]
fn nx_requests_round_trip() {
    let cases = [
        MmuRequest::SetNxHugePages(SetNxHugePages {
            mode: NxMode::Never as u32,
            reserved: 0,
        }),
        MmuRequest::SetNxRecovery(SetNxRecovery {
            ratio: 1,
            reserved: 0,
            period_ms: 100,
        }),
        MmuRequest::GetNxHugePages(GetNxHugePages {}),
        MmuRequest::NxRecoveryTick(NxRecoveryTick {}),
        MmuRequest::SyncMmu(SyncMmu {}),
        MmuRequest::GetMapping(GetMapping { addr: 0x400_0000 }),
        MmuRequest::DisableNxHugePages(DisableNxHugePages {
            flags: 0,
            reserved: 0,
            arg: 0,
        }),
    ];
    for want in cases {
        let bytes = match want {
            MmuRequest::SetNxHugePages(r) => encode(&r),
            MmuRequest::SetNxRecovery(r) => encode(&r),
            MmuRequest::GetNxHugePages(r) => encode(&r),
            MmuRequest::NxRecoveryTick(r) => encode(&r),
            MmuRequest::SyncMmu(r) => encode(&r),
            MmuRequest::GetMapping(r) => encode(&r),
            MmuRequest::DisableNxHugePages(r) => encode(&r),
            _ => unreachable!("only NX requests are listed"),
        };
        assert_eq!(MmuRequest::decode(&bytes), Ok(want));
    }
}

#[test]
fn nx_modes_and_reserved_fields_are_range_checked() {
    for (v, mode) in [
        (0, NxMode::Auto),
        (1, NxMode::On),
        (2, NxMode::Off),
        (3, NxMode::Force),
        (4, NxMode::Never),
    ] {
        assert_eq!(NxMode::try_from(v), Ok(mode));
    }
    assert!(NxMode::Auto.enabled() && NxMode::On.enabled() && NxMode::Force.enabled());
    assert!(!NxMode::Off.enabled() && !NxMode::Never.enabled());
    let bad_mode = SetNxHugePages {
        mode: 5,
        reserved: 0,
    };
    assert_eq!(
        MmuRequest::decode(&framed(16, bad_mode.as_bytes())),
        Err(Error::InvalidArgument)
    );
    let bad_reserved = SetNxHugePages {
        mode: 1,
        reserved: 1,
    };
    assert_eq!(
        MmuRequest::decode(&framed(16, bad_reserved.as_bytes())),
        Err(Error::InvalidArgument)
    );
    let bad = SetNxRecovery {
        ratio: 0,
        reserved: 9,
        period_ms: 0,
    };
    assert_eq!(
        MmuRequest::decode(&framed(17, bad.as_bytes())),
        Err(Error::InvalidArgument)
    );
    // DisableNxHugePages decodes whatever its fields hold: the server orders the
    // checks (flags, permission, arg, vCPU state), so decoding must not pre-empt them.
    let odd = DisableNxHugePages {
        flags: 1,
        reserved: 0,
        arg: 7,
    };
    assert_eq!(
        MmuRequest::decode(&framed(13, odd.as_bytes())),
        Ok(MmuRequest::DisableNxHugePages(odd))
    );
    // Sizes are exact.
    assert_eq!(
        MmuRequest::decode(&framed(21, &[0; 7])),
        Err(Error::Truncated)
    );
    assert_eq!(
        MmuRequest::decode(&framed(20, &[0; 1])),
        Err(Error::TrailingBytes)
    );
}

#[test]
fn nx_replies_decode() {
    let state = NxHugePagesState {
        mode: 1,
        enabled: 1,
        ratio: 60,
        reserved: 0,
        period_ms: 60_000,
        recovered_total: 3,
    };
    let mut buf = [0u8; MAX_MSG_BYTES];
    let n = encode_reply(&state, &mut buf).unwrap();
    assert_eq!(decode_reply::<GetNxHugePages>(&buf[..n]), Ok(state));
    let n = encode_error_reply(Error::PermissionDenied, &mut buf);
    assert_eq!(
        decode_reply::<SetNxHugePages>(&buf[..n]),
        Err(Error::PermissionDenied)
    );
    let m = Mapping {
        level: 2,
        flags: mapping_flags::WRITE,
        hpa: 0x1_0400_0000,
    };
    let n = encode_reply(&m, &mut buf).unwrap();
    assert_eq!(decode_reply::<GetMapping>(&buf[..n]), Ok(m));
}

#[test]
fn badge_bits() {
    use ipc::badge::*;
    assert_eq!(NX_HUGE_PAGE_CONTROL, 1 << 26);
    assert_eq!(vm_of(NX_HUGE_PAGE_CONTROL | 5), 5);
    assert_eq!(vm_of(5), 5);
    assert!(holds_nx_huge_page_control(NX_HUGE_PAGE_CONTROL | 1));
    assert!(!holds_nx_huge_page_control(1));
    assert!(is_system_control(SYSTEM_CONTROL));
    assert!(!is_system_control(1 | NX_HUGE_PAGE_CONTROL));
    assert_eq!(SYSTEM_CONTROL & NX_HUGE_PAGE_CONTROL, 0);
}
