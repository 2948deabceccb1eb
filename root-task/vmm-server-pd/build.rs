//! Embeds the guest images: `$CAPVISOR_GUEST_DIR/<name>.elf` (default
//! `../../build/guests`, what `make guests` writes) for every name of `GUESTS`. A
//! spec names its VM's image (`image = "hello"`); the vmm-server PD finds it in this
//! table by name. Embedding keeps the image in the PD's ELF, which the root task
//! already carries (seL4 5.0.0 loads only one multiboot module).
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

/// The guests every vmm-server PD carries (small: about 150 KiB together; hugeexec,
/// 6 MiB, stays on the host runtime).
const GUESTS: [&str; 4] = ["hello", "kernexec", "ptwrite", "faults"];

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rerun-if-env-changed=CAPVISOR_GUEST_DIR");
    let guests = env::var("CAPVISOR_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(&dir).join("../../build/guests"));
    let mut code = String::from("pub static GUESTS: &[(&str, &[u8])] = &[\n");
    for name in GUESTS {
        let path = guests.join(format!("{name}.elf"));
        let path = std::fs::canonicalize(&path)
            .unwrap_or_else(|e| panic!("guest image {}: {e} (run `make guests`)", path.display()));
        println!("cargo:rerun-if-changed={}", path.display());
        writeln!(code, "    ({name:?}, include_bytes!({path:?})),").unwrap();
    }
    code.push_str("];\n");
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("guests.rs");
    std::fs::write(out, code).expect("write guests.rs");
}
