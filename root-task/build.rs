//! Relinks when the linker script changes and lets the linker find it; and, for the
//! `capvisor-system` binary, embeds the system: the binary capDL spec named by
//! `CAPVISOR_SPEC` and, for every ELF the spec's TCBs name, `$CAPVISOR_PD_DIR/<elf>.elf`
//! (the Makefile strips the PD binaries into build/pd/). Without `CAPVISOR_SPEC` the
//! system binary embeds nothing and says so at boot.
use std::env;
use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-env-changed=CAPVISOR_SPEC");
    println!("cargo:rerun-if-env-changed=CAPVISOR_PD_DIR");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("system.rs");
    let mut code = String::new();
    match env::var("CAPVISOR_SPEC") {
        Err(_) => {
            code.push_str("pub static SPEC_PATH: &str = \"\";\n");
            code.push_str("pub static SPEC: &[u8] = &[];\n");
            code.push_str("pub static IMAGES: &[(&str, &[u8])] = &[];\n");
        }
        Ok(spec_path) => {
            let spec_path = std::fs::canonicalize(&spec_path)
                .unwrap_or_else(|e| panic!("CAPVISOR_SPEC={spec_path}: {e}"));
            println!("cargo:rerun-if-changed={}", spec_path.display());
            let bytes = std::fs::read(&spec_path)
                .unwrap_or_else(|e| panic!("{}: {e}", spec_path.display()));
            let view = capdl_spec::SpecView::parse(&bytes)
                .unwrap_or_else(|e| panic!("{}: not a valid spec: {e:?}", spec_path.display()));
            let pd_dir = env::var("CAPVISOR_PD_DIR")
                .expect("CAPVISOR_PD_DIR names the directory of the PD images");
            let mut names: Vec<&str> = view.tcbs().iter().map(|t| view.str(t.elf)).collect();
            names.sort();
            names.dedup();
            writeln!(
                code,
                "pub static SPEC_PATH: &str = {:?};",
                spec_path.display().to_string()
            )
            .unwrap();
            writeln!(
                code,
                "pub static SPEC: &[u8] = include_bytes!({:?});",
                spec_path
            )
            .unwrap();
            code.push_str("pub static IMAGES: &[(&str, &[u8])] = &[\n");
            for name in names {
                let elf = std::fs::canonicalize(PathBuf::from(&pd_dir).join(format!("{name}.elf")))
                    .unwrap_or_else(|e| {
                        panic!("the spec names ELF {name:?}: {pd_dir}/{name}.elf: {e}")
                    });
                println!("cargo:rerun-if-changed={}", elf.display());
                writeln!(code, "    ({name:?}, include_bytes!({elf:?})),").unwrap();
            }
            code.push_str("];\n");
        }
    }
    std::fs::write(&out, code).expect("write system.rs");
}
