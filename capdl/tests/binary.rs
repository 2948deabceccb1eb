//! The binary spec: round trips, and a reader that rejects (never panics on) damage.

use capdl_spec::{FormatError, SpecView};
use proptest::prelude::*;
use std::path::Path;

mod common;
use common::arb_system;

fn spec_of(file: &str) -> capdl::Spec {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    capdl::spec_from_toml(&text).unwrap()
}

fn without_sections(mut s: capdl::Spec) -> capdl::Spec {
    s.sections.clear();
    s
}

#[test]
fn round_trip_of_the_shipped_and_golden_systems() {
    for file in ["system.toml", "tests/golden/small.toml"] {
        let spec = spec_of(file);
        let bytes = capdl::encode(&spec);
        let back = capdl::decode(&bytes).unwrap();
        assert_eq!(back, without_sections(spec.clone()), "{file}");
        // The decoded spec prints the same capDL objects and caps (only the step
        // headings, which the binary does not keep, differ).
        let strip = |t: String| -> Vec<String> {
            t.lines()
                .filter(|l| !l.trim_start().starts_with("-- step") && !l.is_empty())
                .map(str::to_string)
                .collect()
        };
        let (got, want) = (strip(capdl::to_capdl(&back)), strip(capdl::to_capdl(&spec)));
        assert!(got == want, "{file}: decoded spec prints differently");
    }
}

#[test]
fn the_root_task_view_reads_the_tables_in_place() {
    let spec = spec_of("system.toml");
    let bytes = capdl::encode(&spec);
    let view = SpecView::parse(&bytes).unwrap();
    assert_eq!(view.objects().len(), spec.objects.len());
    assert_eq!(view.caps().len(), spec.caps.len());
    assert_eq!(view.pds().len(), spec.pds.len());
    let vm = &view.vms()[0];
    assert_eq!(view.str(vm.name), spec.vms[0].name);
    assert_eq!(vm.memory_bytes.get(), spec.vms[0].memory);
    let pd = &view.pds()[vm.pd.get() as usize];
    assert_eq!(view.pd_kind(pd), capdl_spec::PdKind::VmmServer);
    assert_eq!(view.nx_mode(), spec.nx.mode);
    // What the root task does per PD: its TCB parameters and its CNode's capabilities.
    let tcb = view.tcb(&view.objects()[pd.tcb.get() as usize]).unwrap();
    assert_eq!(view.str(tcb.elf), "vmm_server");
    assert_eq!(
        tcb.ipc_buffer_vaddr.get(),
        capdl_spec::layout::IPC_BUFFER_VADDR
    );
    let mmu = view
        .caps_of(pd.cnode.get())
        .find(|c| c.slot.get() == capdl_spec::slot::vmm::MMU_EP)
        .unwrap();
    assert_eq!(
        mmu.badge.get(),
        capdl_spec::badge::mmu_client(spec.vms[0].id)
    );
    assert!(view.tcb(&view.objects()[pd.cnode.get() as usize]).is_none());
}

#[test]
fn damaged_blobs_are_rejected() {
    let bytes = capdl::encode(&spec_of("tests/golden/small.toml"));
    assert_eq!(
        SpecView::parse(&bytes[..10]).unwrap_err(),
        FormatError::Truncated
    );
    assert_eq!(
        SpecView::parse(&bytes[..bytes.len() - 1]).unwrap_err(),
        FormatError::Truncated
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(
        SpecView::parse(&longer).unwrap_err(),
        FormatError::TrailingBytes
    );
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    assert_eq!(SpecView::parse(&magic).unwrap_err(), FormatError::BadMagic);
    let mut version = bytes.clone();
    version[8] = 9;
    assert_eq!(
        SpecView::parse(&version).unwrap_err(),
        FormatError::UnsupportedVersion(9)
    );
    // The first capability's holder (right after the header and the object table).
    let header = 64;
    let objects = spec_of("tests/golden/small.toml").objects.len() * 48;
    let mut holder = bytes.clone();
    holder[header + objects..header + objects + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        SpecView::parse(&holder).unwrap_err(),
        FormatError::BadReference { .. }
    ));
}

#[test]
fn record_sizes_are_what_the_format_documents() {
    use std::mem::size_of;
    assert_eq!(size_of::<capdl_spec::Header>(), 64);
    assert_eq!(size_of::<capdl_spec::ObjectRecord>(), 48);
    assert_eq!(size_of::<capdl_spec::CapRecord>(), 32);
    assert_eq!(size_of::<capdl_spec::TcbRecord>(), 40);
    assert_eq!(size_of::<capdl_spec::PdRecord>(), 32);
    assert_eq!(size_of::<capdl_spec::VmRecord>(), 48);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn random_systems_build_check_and_round_trip(text in arb_system()) {
        let spec = capdl::spec_from_toml(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(capdl::check::check(&spec), vec![]);
        let back = capdl::decode(&capdl::encode(&spec)).unwrap();
        prop_assert_eq!(back, without_sections(spec.clone()));
        prop_assert_eq!(capdl::to_capdl(&spec), capdl::to_capdl(&capdl::spec_from_toml(&text).unwrap()));
    }

    #[test]
    fn the_reader_never_panics_on_damaged_blobs(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
                                                cut in any::<prop::sample::Index>()) {
        let mut bytes = capdl::encode(&spec_of("tests/golden/small.toml"));
        for (at, v) in flips {
            let i = at.index(bytes.len());
            bytes[i] ^= v;
        }
        let len = cut.index(bytes.len() + 1);
        // Either it is rejected or it decodes into something the checks can look at.
        if let Ok(spec) = capdl::decode(&bytes[..len]) {
            let _ = capdl::check::check(&spec);
            let _ = capdl::to_capdl(&spec);
        }
    }
}
