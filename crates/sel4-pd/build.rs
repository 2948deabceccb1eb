//! Lets the linker of every PD binary find this crate's `link.ld` (the PD image
//! layout); a dependency's link-search path reaches its dependents' final link.
fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rerun-if-changed=link.ld");
}
