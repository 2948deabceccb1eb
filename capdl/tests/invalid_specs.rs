//! One small invalid system.toml per error message (tests/invalid/*.toml). Each file
//! says in its first lines which field the error must name (`# expect-path:`) and what
//! the message must say (`# expect:`).

use capdl::{SpecError, System};
use std::collections::BTreeSet;
use std::path::Path;

fn header<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(str::trim)
}

fn variant(e: &SpecError) -> String {
    let d = format!("{e:?}");
    d.split([' ', '{', '('])
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn every_invalid_spec_fails_naming_its_field() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/invalid");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(
        files.len() >= 20,
        "expected the invalid-spec corpus in {}",
        dir.display()
    );
    let mut variants = BTreeSet::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let want_path = header(&text, "# expect-path:").expect("expect-path header");
        let want_msg = header(&text, "# expect:").expect("expect header");
        let err = match System::from_toml(&text) {
            Ok(_) => panic!("{}: accepted", file.display()),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert_eq!(
            err.path(),
            want_path,
            "{}: wrong field in {msg:?}",
            file.display()
        );
        assert!(
            msg.contains(want_msg),
            "{}: {msg:?} does not say {want_msg:?}",
            file.display()
        );
        if !want_path.is_empty() {
            assert!(
                msg.contains(want_path) || msg.starts_with("vm \""),
                "{}: {msg:?} does not name {want_path}",
                file.display()
            );
        }
        variants.insert(variant(&err));
    }
    // Every error the validator can produce has its own invalid spec.
    let all = [
        "Toml",
        "UnknownKey",
        "Missing",
        "NotASize",
        "NotPageAligned",
        "ZeroSize",
        "TooLarge",
        "BadChoice",
        "InvalidName",
        "InvalidText",
        "OutOfRange",
        "NoVms",
        "TooManyVms",
        "DuplicateVmName",
        "IdCollision",
        "UnknownCapability",
        "DuplicateCapability",
        "Cr0WpNeedsTdp",
        "BadPorts",
        "PortOverlap",
        "IrqCollision",
        "NotForKind",
    ];
    let missing: Vec<_> = all.iter().filter(|v| !variants.contains(**v)).collect();
    assert!(missing.is_empty(), "no invalid spec for {missing:?}");
}

#[test]
fn the_checked_in_system_is_valid() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("system.toml")).unwrap();
    let system = System::from_toml(&text).unwrap();
    assert!(!system.vms.is_empty());
}

#[test]
fn defaults_fill_a_minimal_vm() {
    let s = System::from_toml("[[vm]]\nname = \"a\"\nimage = \"hello\"\n").unwrap();
    let vm = &s.vms[0];
    assert_eq!(vm.memory, 128 << 20);
    assert_eq!(vm.id, 1);
    assert!(vm.cr0_wp && vm.root_reuse && vm.caps.is_empty() && !vm.debug_exit);
    assert_eq!(s.frame_pool, 16 << 20);
    assert_eq!(s.nx.recovery_ratio, 60);
    assert_eq!(s.nx.recovery_period_ms, 60_000);
    assert_eq!(s.uart.ports.first, 0x3f8);
}

#[test]
fn unset_ids_skip_the_ids_others_ask_for() {
    let text = "[[vm]]\nname = \"a\"\nimage = \"x\"\n[[vm]]\nname = \"b\"\nimage = \"x\"\nid = 1\n";
    let s = System::from_toml(text).unwrap();
    assert_eq!((s.vms[0].id, s.vms[1].id), (2, 1));
}

#[test]
fn recovery_period_defaults_from_the_ratio_like_kvm() {
    let s = System::from_toml(
        "[nx_huge_pages]\nrecovery_ratio = 10\n[[vm]]\nname = \"a\"\nimage = \"x\"\n",
    )
    .unwrap();
    assert_eq!(s.nx.recovery_period_ms, 360_000);
}
