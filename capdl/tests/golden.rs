//! The capDL text of a small valid system, against a checked-in, reviewed expected
//! file. `UPDATE_GOLDEN=1 cargo test -p capdl --test golden` rewrites it (review the
//! diff before committing it).

use std::path::Path;

#[test]
fn small_system_prints_the_reviewed_capdl() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let toml = std::fs::read_to_string(dir.join("small.toml")).unwrap();
    let spec = capdl::spec_from_toml(&toml).unwrap();
    let text = capdl::to_capdl(&spec);
    let expected_path = dir.join("small.cdl");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
    }
    let expected = std::fs::read_to_string(&expected_path).unwrap();
    if text != expected {
        for (i, (got, want)) in text.lines().zip(expected.lines()).enumerate() {
            assert_eq!(got, want, "first difference at line {}", i + 1);
        }
        assert_eq!(
            text.lines().count(),
            expected.lines().count(),
            "line counts differ"
        );
    }
}

#[test]
fn printing_is_deterministic() {
    let toml =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("system.toml")).unwrap();
    let a = capdl::to_capdl(&capdl::spec_from_toml(&toml).unwrap());
    let b = capdl::to_capdl(&capdl::spec_from_toml(&toml).unwrap());
    assert_eq!(a, b);
}
