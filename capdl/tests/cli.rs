//! The `capdl` binary as `make capdl` runs it.

use std::process::Command;

fn capdl(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_capdl"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

#[test]
fn print_emits_the_capdl_of_system_toml() {
    let out = capdl(&["print", "system.toml"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("arch x86_64"));
    assert!(text.contains("objects {") && text.contains("caps {"));
}

#[test]
fn check_accepts_system_toml_and_rejects_an_invalid_one_naming_the_field() {
    let ok = capdl(&["check", "system.toml"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = capdl(&["check", "tests/invalid/not_a_size.toml"]);
    assert!(!bad.status.success());
    let err = String::from_utf8(bad.stderr).unwrap();
    assert!(err.contains("vm[1].memory: \"12X\" is not a size"), "{err}");
}

#[test]
fn binary_writes_a_blob_the_reader_accepts() {
    let path = std::env::temp_dir().join(format!("capdl-test-{}.bin", std::process::id()));
    let out = capdl(&["binary", "system.toml", "-o", path.to_str().unwrap()]);
    assert!(out.status.success());
    let bytes = std::fs::read(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(capdl_spec::SpecView::parse(&bytes).is_ok());
}
