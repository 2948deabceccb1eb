//! Numbering from libsel4's C headers: enums (object types, errors, initial caps) and
//! `#define`d constants.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::read;

/// A C enum spread over several headers (each continuing the previous one), with
/// `#ifdef`/`#ifndef`/`#if`/`#endif` evaluated; `rename` maps a C name to the Rust
/// variant (None: skip the name but still count it).
pub fn gen_c_enum(
    out: &mut String,
    files: &[PathBuf],
    config: &Config,
    name: &str,
    what: &str,
    rename: impl Fn(&str) -> Option<String>,
) {
    let mut values: BTreeMap<String, i64> = BTreeMap::new();
    let mut variants: Vec<(String, String, i64)> = Vec::new();
    for f in files {
        let text = read(f);
        let mut in_enum = false;
        let mut next = 0i64;
        let mut stack: Vec<bool> = Vec::new();
        let mut in_comment = false;
        for raw in text.lines() {
            let line = strip_comments(raw, &mut in_comment);
            let line = line.trim();
            if let Some(rest) = line.strip_prefix("#ifdef") {
                stack.push(config.defines.contains_key(rest.trim()));
                continue;
            }
            if let Some(rest) = line.strip_prefix("#ifndef") {
                stack.push(!config.defines.contains_key(rest.trim()));
                continue;
            }
            if let Some(rest) = line.strip_prefix("#if") {
                stack.push(config.eval(rest));
                continue;
            }
            if line.starts_with("#else") {
                if let Some(top) = stack.last_mut() {
                    *top = !*top;
                }
                continue;
            }
            if line.starts_with("#endif") {
                stack.pop();
                continue;
            }
            if stack.iter().any(|active| !active) {
                continue;
            }
            if line.starts_with("typedef enum") || line == "enum {" {
                in_enum = true;
                next = 0;
                continue;
            }
            if !in_enum {
                continue;
            }
            if line.starts_with('}') {
                in_enum = false;
                continue;
            }
            let item = line.trim_end_matches(',').trim();
            if item.is_empty() || item.starts_with('#') || item.starts_with("SEL4_FORCE_LONG_ENUM")
            {
                continue;
            }
            let (cname, value) = match item.split_once('=') {
                Some((n, v)) => {
                    let v = v.trim();
                    let value = v
                        .parse()
                        .ok()
                        .or_else(|| values.get(v).copied())
                        .unwrap_or_else(|| panic!("unknown value {v} in {}", f.display()));
                    (n.trim().to_string(), value)
                }
                None => (item.to_string(), next),
            };
            values.insert(cname.clone(), value);
            next = value + 1;
            if let Some(rust) = rename(&cname) {
                variants.push((rust, cname, value));
            }
        }
    }
    writeln!(out, "/// seL4 {what}.").unwrap();
    writeln!(out, "#[allow(non_camel_case_types)]\n#[derive(Clone, Copy, Debug, PartialEq, Eq)]\n#[repr(u64)]\npub enum {name} {{").unwrap();
    for (rust, cname, value) in &variants {
        writeln!(out, "    /// `{cname}`\n    {rust} = {value},").unwrap();
    }
    writeln!(out, "}}\n").unwrap();
}

/// `line` without C comments; `in_comment` carries an open `/* ... */` across lines.
fn strip_comments(line: &str, in_comment: &mut bool) -> String {
    let mut out = String::new();
    let mut rest = line;
    loop {
        if *in_comment {
            match rest.find("*/") {
                Some(end) => {
                    rest = &rest[end + 2..];
                    *in_comment = false;
                }
                None => return out,
            }
        } else {
            match (rest.find("/*"), rest.find("//")) {
                (_, Some(l)) if rest.find("/*").is_none_or(|b| l < b) => {
                    out.push_str(&rest[..l]);
                    return out;
                }
                (Some(b), _) => {
                    out.push_str(&rest[..b]);
                    rest = &rest[b + 2..];
                    *in_comment = true;
                }
                _ => {
                    out.push_str(rest);
                    return out;
                }
            }
        }
    }
}

/// `seL4_*Bits` object sizes of x86_64 and the message limits.
pub fn gen_constants(out: &mut String, api_constants: &Path, arch_constants: &Path) {
    for line in read(arch_constants).lines() {
        let mut w = line.split_whitespace();
        if w.next() != Some("#define") {
            continue;
        }
        let (Some(cname), Some(value)) = (w.next(), w.next()) else {
            continue;
        };
        let Some(stem) = cname.strip_prefix("seL4_").filter(|n| n.ends_with("Bits")) else {
            continue;
        };
        if value.parse::<u64>().is_ok() {
            writeln!(
                out,
                "/// `{cname}`\npub const {}: usize = {value};",
                screaming(stem)
            )
            .unwrap();
        }
    }
    let text = read(api_constants);
    for cname in [
        "seL4_MsgMaxLength",
        "seL4_MsgLengthBits",
        "seL4_MsgExtraCapBits",
    ] {
        let value = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix(cname))
            .find_map(|rest| {
                rest.trim()
                    .strip_prefix('=')
                    .map(|v| v.trim().trim_end_matches(',').trim().to_string())
            })
            .unwrap_or_else(|| panic!("{cname} not found in {}", api_constants.display()));
        writeln!(
            out,
            "/// `{cname}`\npub const {}: usize = {value};",
            screaming(cname.strip_prefix("seL4_").unwrap_or(cname))
        )
        .unwrap();
    }
}

/// `PageDirBits` -> `PAGE_DIR_BITS`, `TCBBits` -> `TCB_BITS`, `X86_VCPUBits` -> `X86_VCPU_BITS`.
fn screaming(camel: &str) -> String {
    let c: Vec<char> = camel.chars().collect();
    let mut s = String::new();
    for (i, &ch) in c.iter().enumerate() {
        if i > 0 && ch.is_uppercase() {
            let prev = c[i - 1];
            let next_lower = c.get(i + 1).is_some_and(|n| n.is_lowercase());
            if prev != '_'
                && (prev.is_lowercase()
                    || prev.is_ascii_digit()
                    || (prev.is_uppercase() && next_lower))
            {
                s.push('_');
            }
        }
        s.push(ch.to_ascii_uppercase());
    }
    s
}
