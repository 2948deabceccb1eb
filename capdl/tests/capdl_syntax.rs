//! Reads the printed capDL back with a small, independent parser of the capDL grammar
//! subset we emit (capDL-tool's `doc/capDL.md`: `arch`, `objects { name[n] = type
//! (params) { children } }`, `caps { holder { slot: target[a..b] (params) } }`,
//! `irq maps { n: irq }`, `--` comments) and checks that it denotes exactly the spec:
//! every object once with its kind and parameters, every capability once with its
//! slot, rights and badge, every IRQ mapping. This tests the printer's array and range
//! compression and the untyped nesting without trusting the printer's own helpers.

use capdl::cdl::{ObjectKind, Spec};
use capdl_spec::{rights, tcb_slot};
use std::collections::BTreeMap;
use std::path::Path;

mod common;
use proptest::prelude::*;

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    Num(u64),
    Sym(char),
    DotDot,
}

fn lex(text: &str) -> Vec<Tok> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split("--").next().unwrap();
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            let c = b[i] as char;
            if c.is_whitespace() {
                i += 1;
            } else if c == '.' && b.get(i + 1) == Some(&b'.') {
                out.push(Tok::DotDot);
                i += 2;
            } else if c.is_ascii_digit() {
                let start = i;
                while i < b.len() && (b[i] as char).is_ascii_alphanumeric() {
                    i += 1;
                }
                let s = &line[start..i];
                // "4k" / "2M" sizes lex as a number followed by a unit word.
                let digits_end = if s.starts_with("0x") {
                    s.len()
                } else {
                    s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len())
                };
                let (num, unit) = s.split_at(digits_end);
                let n = match num.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16).unwrap(),
                    None => num.parse().unwrap(),
                };
                out.push(Tok::Num(n));
                if !unit.is_empty() {
                    out.push(Tok::Ident(unit.to_string()));
                }
            } else if c.is_ascii_alphabetic() || c == '_' {
                let start = i;
                while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                    i += 1;
                }
                out.push(Tok::Ident(line[start..i].to_string()));
            } else {
                out.push(Tok::Sym(c));
                i += 1;
            }
        }
    }
    out
}

struct P {
    toks: Vec<Tok>,
    at: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }
    fn next(&mut self) -> Tok {
        let t = self.toks[self.at].clone();
        self.at += 1;
        t
    }
    fn sym(&mut self, c: char) {
        assert_eq!(self.next(), Tok::Sym(c), "at token {}", self.at);
    }
    fn is_sym(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Sym(c))
    }
    fn ident(&mut self) -> String {
        match self.next() {
            Tok::Ident(s) => s,
            t => panic!("expected a name, got {t:?} at token {}", self.at),
        }
    }
    fn num(&mut self) -> u64 {
        match self.next() {
            Tok::Num(n) => n,
            t => panic!("expected a number, got {t:?} at token {}", self.at),
        }
    }
    fn keyword(&mut self, k: &str) {
        assert_eq!(self.ident(), k);
    }
    /// `( item, item, ... )` as lists of tokens.
    fn params(&mut self) -> Vec<Vec<Tok>> {
        if !self.is_sym('(') {
            return Vec::new();
        }
        self.sym('(');
        let mut out = vec![Vec::new()];
        let mut depth = 0;
        loop {
            match self.next() {
                Tok::Sym(')') if depth == 0 => break,
                Tok::Sym(',') if depth == 0 => out.push(Vec::new()),
                t => {
                    if t == Tok::Sym('[') {
                        depth += 1;
                    }
                    if t == Tok::Sym(']') {
                        depth -= 1;
                    }
                    out.last_mut().unwrap().push(t);
                }
            }
        }
        out
    }
}

/// (name, index) -> (type keyword, params, parent untyped reference).
type Objects = BTreeMap<String, (String, Vec<Vec<Tok>>, Option<String>)>;

fn parse_decls(p: &mut P, parent: Option<String>, out: &mut Objects) {
    while !p.is_sym('}') {
        let name = p.ident();
        let count = if p.is_sym('[') {
            p.sym('[');
            let n = p.num();
            p.sym(']');
            Some(n)
        } else {
            None
        };
        p.sym('=');
        let ty = p.ident();
        let params = p.params();
        let refs: Vec<String> = match count {
            Some(n) => (0..n).map(|i| format!("{name}[{i}]")).collect(),
            None => vec![name.clone()],
        };
        for r in &refs {
            let dup = out.insert(r.clone(), (ty.clone(), params.clone(), parent.clone()));
            assert!(dup.is_none(), "{r} declared twice");
        }
        if p.is_sym('{') {
            p.sym('{');
            parse_decls(p, Some(name), out);
            p.sym('}');
        }
    }
}

/// (holder, slot) -> (target reference, params).
type Caps = BTreeMap<(String, u64), (String, Vec<Vec<Tok>>)>;

fn parse_caps(p: &mut P, out: &mut Caps) {
    while !p.is_sym('}') {
        let holder = p.ident();
        p.sym('{');
        while !p.is_sym('}') {
            let slot = match p.next() {
                Tok::Num(n) => n,
                Tok::Ident(s) if s == "cspace" => tcb_slot::CSPACE,
                Tok::Ident(s) if s == "vspace" => tcb_slot::VSPACE,
                Tok::Ident(s) if s == "ipc_buffer_slot" => tcb_slot::IPC_BUFFER,
                t => panic!("bad slot {t:?}"),
            };
            p.sym(':');
            let target = p.ident();
            let mut targets = vec![target.clone()];
            if p.is_sym('[') {
                p.sym('[');
                let a = p.num();
                let b = if p.peek() == Some(&Tok::DotDot) {
                    p.next();
                    p.num()
                } else {
                    a
                };
                p.sym(']');
                targets = (a..=b).map(|i| format!("{target}[{i}]")).collect();
            }
            let params = p.params();
            for (k, t) in targets.into_iter().enumerate() {
                let dup = out.insert((holder.clone(), slot + k as u64), (t, params.clone()));
                assert!(dup.is_none(), "{holder} slot {} twice", slot + k as u64);
            }
        }
        p.sym('}');
    }
}

fn parse(text: &str) -> (Objects, Caps, BTreeMap<u64, String>) {
    let mut p = P {
        toks: lex(text),
        at: 0,
    };
    p.keyword("arch");
    p.keyword("x86_64");
    p.keyword("objects");
    p.sym('{');
    let mut objects = Objects::new();
    parse_decls(&mut p, None, &mut objects);
    p.sym('}');
    p.keyword("caps");
    p.sym('{');
    let mut caps = Caps::new();
    parse_caps(&mut p, &mut caps);
    p.sym('}');
    let mut irqs = BTreeMap::new();
    if p.peek().is_some() {
        p.keyword("irq");
        p.keyword("maps");
        p.sym('{');
        while !p.is_sym('}') {
            let n = p.num();
            p.sym(':');
            irqs.insert(n, p.ident());
        }
        p.sym('}');
    }
    assert!(p.peek().is_none(), "tokens after the last section");
    (objects, caps, irqs)
}

/// `key: value` parameters as a map, bare words (`R`, `uncached`, `4`,`k`) as a list.
fn split_params(params: &[Vec<Tok>]) -> (BTreeMap<String, Vec<Tok>>, Vec<Vec<Tok>>) {
    let mut keyed = BTreeMap::new();
    let mut bare = Vec::new();
    for p in params {
        match p.as_slice() {
            [Tok::Ident(k), Tok::Sym(':'), rest @ ..] => {
                keyed.insert(k.clone(), rest.to_vec());
            }
            _ => bare.push(p.clone()),
        }
    }
    (keyed, bare)
}

fn num_param(keyed: &BTreeMap<String, Vec<Tok>>, key: &str) -> Option<u64> {
    match keyed.get(key).map(Vec::as_slice) {
        Some([Tok::Num(n)]) => Some(*n),
        _ => None,
    }
}

fn compare(spec: &Spec, text: &str) {
    let (objects, caps, irqs) = parse(text);
    assert_eq!(objects.len(), spec.objects.len());
    for o in &spec.objects {
        let (ty, params, parent) = objects
            .get(&o.reference())
            .unwrap_or_else(|| panic!("{} not declared", o.reference()));
        let (keyed, bare) = split_params(params);
        let want_parent = o.untyped.map(|u| spec.objects[u as usize].name.clone());
        assert_eq!(parent, &want_parent, "{}", o.reference());
        match &o.kind {
            ObjectKind::Endpoint => assert_eq!(ty, "ep"),
            ObjectKind::Notification => assert_eq!(ty, "notification"),
            ObjectKind::Pml4 => assert_eq!(ty, "pml4"),
            ObjectKind::Pdpt => assert_eq!(ty, "pdpt"),
            ObjectKind::Pd => assert_eq!(ty, "pd"),
            ObjectKind::Pt => assert_eq!(ty, "pt"),
            ObjectKind::Irq { .. } => assert_eq!(ty, "irq"),
            ObjectKind::Tcb(t) => {
                assert_eq!(ty, "tcb");
                assert_eq!(num_param(&keyed, "addr"), Some(t.ipc_buffer_vaddr));
                assert_eq!(num_param(&keyed, "sp"), Some(t.sp));
                assert_eq!(num_param(&keyed, "prio"), Some(t.prio as u64));
                assert_eq!(num_param(&keyed, "max_prio"), Some(t.max_prio as u64));
                assert_eq!(num_param(&keyed, "fault_ep"), Some(t.fault_ep));
                assert_eq!(keyed.get("elf"), Some(&vec![Tok::Ident(t.elf.clone())]));
            }
            ObjectKind::CNode { size_bits } | ObjectKind::Untyped { size_bits } => {
                assert_eq!(
                    ty,
                    if matches!(o.kind, ObjectKind::CNode { .. }) {
                        "cnode"
                    } else {
                        "ut"
                    }
                );
                assert_eq!(
                    bare,
                    vec![vec![Tok::Num(*size_bits as u64), Tok::Ident("bits".into())]]
                );
            }
            ObjectKind::Frame { size_bits, paddr } => {
                assert_eq!(ty, "frame");
                let size = match bare.first().map(Vec::as_slice) {
                    Some([Tok::Num(n), Tok::Ident(u)]) if u == "k" => n << 10,
                    Some([Tok::Num(n), Tok::Ident(u)]) if u == "M" => n << 20,
                    other => panic!("{}: frame size {other:?}", o.reference()),
                };
                assert_eq!(size, 1 << size_bits);
                assert_eq!(num_param(&keyed, "paddr"), *paddr);
            }
            ObjectKind::IoPorts(r) => {
                assert_eq!(ty, "io_ports");
                let want = vec![
                    Tok::Sym('['),
                    Tok::Num(r.first as u64),
                    Tok::DotDot,
                    Tok::Num(r.last as u64),
                    Tok::Sym(']'),
                ];
                assert_eq!(keyed.get("ports"), Some(&want));
            }
        }
    }

    assert_eq!(caps.len(), spec.caps.len());
    for c in &spec.caps {
        let holder = spec.objects[c.holder as usize].reference();
        let (target, params) = caps
            .get(&(holder.clone(), c.slot))
            .unwrap_or_else(|| panic!("{holder} slot {:#x} not printed", c.slot));
        assert_eq!(target, &spec.objects[c.target as usize].reference());
        let (keyed, bare) = split_params(params);
        let mut want_rights = String::new();
        for (bit, ch) in [
            (rights::READ, 'R'),
            (rights::WRITE, 'W'),
            (rights::GRANT, 'G'),
        ] {
            if c.rights & bit != 0 {
                want_rights.push(ch);
            }
        }
        let got_rights = bare.iter().find_map(|b| match b.as_slice() {
            [Tok::Ident(s)] if s.chars().all(|ch| "RWG".contains(ch)) => Some(s.clone()),
            _ => None,
        });
        let kind = spec.objects[c.target as usize].kind.kind();
        if !matches!(kind, capdl::cdl::Kind::CNode) {
            assert_eq!(
                got_rights.unwrap_or_default(),
                want_rights,
                "{holder} slot {:#x}",
                c.slot
            );
            assert_eq!(num_param(&keyed, "badge").unwrap_or(0), c.badge);
        } else {
            assert_eq!(num_param(&keyed, "guard_size"), Some(c.guard_size as u64));
        }
        let uncached = bare
            .iter()
            .any(|b| b == &vec![Tok::Ident("uncached".into())]);
        assert_eq!(uncached, c.uncached);
    }

    let want_irqs: BTreeMap<u64, String> = spec
        .objects
        .iter()
        .filter_map(|o| match o.kind {
            ObjectKind::Irq { irq } => Some((irq as u64, o.reference())),
            _ => None,
        })
        .collect();
    assert_eq!(irqs, want_irqs);
}

#[test]
fn printed_capdl_reads_back_as_the_same_spec() {
    for file in ["system.toml", "tests/golden/small.toml"] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
        let spec = capdl::spec_from_toml(&text).unwrap();
        compare(&spec, &capdl::to_capdl(&spec));
    }
}

#[test]
fn the_comparison_notices_a_dropped_or_changed_capability() {
    // The reader is only worth something if it can fail.
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/small.toml"),
    )
    .unwrap();
    let spec = capdl::spec_from_toml(&text).unwrap();
    let printed = capdl::to_capdl(&spec);
    let nx_line = "    4: mmu_ep (WG, badge: 0xc000007)\n";
    assert!(printed.contains(nx_line));
    for broken in [
        printed.replace(nx_line, ""),
        printed.replace("badge: 0xc000007", "badge: 0xc000001"),
    ] {
        let result = std::panic::catch_unwind(|| compare(&spec, &broken));
        assert!(result.is_err(), "a damaged text compared equal");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn printed_capdl_of_random_systems_reads_back(text in common::arb_system()) {
        let spec = capdl::spec_from_toml(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        compare(&spec, &capdl::to_capdl(&spec));
    }
}
