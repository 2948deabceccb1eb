//! Numbering from the XML interface files: invocation labels and syscall numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::read;

/// Invocation labels, numbered as invocation_header_gen.py numbers them: the generic
/// methods from 1 (0 is InvalidInvocation), then the x86_64 ones, then the x86 ones,
/// skipping methods whose `condition` is false in our configuration.
pub fn gen_invocation_labels(out: &mut String, files: &[PathBuf], config: &Config) {
    let mut labels: Vec<(String, String)> =
        vec![("InvalidInvocation".into(), "(not a method)".into())];
    let mut all_methods = Vec::new();
    for f in files {
        let text = read(f);
        let doc = roxmltree::Document::parse(&text)
            .unwrap_or_else(|e| panic!("parsing {}: {e}", f.display()));
        for iface in doc.descendants().filter(|n| n.has_tag_name("interface")) {
            let iface_name = iface.attribute("name").unwrap_or("?");
            for m in iface.children().filter(|n| n.has_tag_name("method")) {
                let id = m
                    .attribute("id")
                    .unwrap_or_else(|| panic!("a method without id in {}", f.display()));
                let included = config.eval(m.attribute("condition").unwrap_or(""));
                all_methods.push((id.to_string(), included));
                if included {
                    let name = m.attribute("name").unwrap_or(id);
                    labels.push((id.to_string(), format!("{iface_name}_{name}")));
                }
            }
        }
    }
    writeln!(
        out,
        "/// seL4 invocation labels (the message label of a kernel object invocation)."
    )
    .unwrap();
    writeln!(
        out,
        "#[derive(Clone, Copy, Debug, PartialEq, Eq)]\n#[repr(u64)]\npub enum InvocationLabel {{"
    )
    .unwrap();
    for (i, (id, what)) in labels.iter().enumerate() {
        writeln!(out, "    /// `{what}`\n    {id} = {i},").unwrap();
    }
    writeln!(out, "}}\n").unwrap();
    writeln!(
        out,
        "/// Every label with its number, in order (for tests and diagnostics)."
    )
    .unwrap();
    writeln!(out, "pub const INVOCATION_LABELS: &[(&str, u64)] = &[").unwrap();
    for (i, (id, _)) in labels.iter().enumerate() {
        writeln!(out, "    ({id:?}, {i}),").unwrap();
    }
    writeln!(out, "];\n").unwrap();
    writeln!(
        out,
        "/// Every method id of the three interface files in file order, and whether our"
    )
    .unwrap();
    writeln!(out, "/// configuration includes it.").unwrap();
    writeln!(out, "pub const INTERFACE_METHODS: &[(&str, bool)] = &[").unwrap();
    for (id, inc) in &all_methods {
        writeln!(out, "    ({id:?}, {inc}),").unwrap();
    }
    writeln!(out, "];\n").unwrap();
}

/// Syscall numbers, as syscall_header_gen.py numbers them: -1 downwards over the API
/// syscalls and then the debug syscalls whose config condition holds.
pub fn gen_syscalls(out: &mut String, file: &Path, config: &Config) {
    let text = read(file);
    let doc = roxmltree::Document::parse(&text)
        .unwrap_or_else(|e| panic!("parsing {}: {e}", file.display()));
    let mut n = -1i64;
    writeln!(out, "/// seL4 system call numbers (passed in rdx).").unwrap();
    writeln!(
        out,
        "#[derive(Clone, Copy, Debug, PartialEq, Eq)]\n#[repr(i64)]\npub enum Syscall {{"
    )
    .unwrap();
    for section in ["api", "debug"] {
        for sect in doc.descendants().filter(|n| n.has_tag_name(section)) {
            for cfg in sect.children().filter(|n| n.has_tag_name("config")) {
                if !config.eval(cfg.attribute("condition").unwrap_or("")) {
                    continue;
                }
                for sc in cfg.children().filter(|n| n.has_tag_name("syscall")) {
                    let name = sc.attribute("name").expect("a syscall has a name");
                    writeln!(out, "    /// `seL4_Sys{name}`\n    {name} = {n},").unwrap();
                    n -= 1;
                }
            }
        }
    }
    writeln!(out, "}}\n").unwrap();
}
