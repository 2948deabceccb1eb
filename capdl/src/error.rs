//! Why a system.toml was rejected. Every error names the field it is about, in the
//! path notation people read in the file: `vm[1].memory`, `drivers.timer.ports`.

use crate::size::format_size;
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// Not TOML, or a value of the wrong TOML type for its key.
    Toml {
        path: String,
        line: Option<usize>,
        message: String,
    },
    /// A key this format does not have.
    UnknownKey {
        path: String,
        line: Option<usize>,
    },
    /// A required key is absent.
    Missing {
        path: String,
    },
    NotASize {
        path: String,
        value: String,
    },
    NotPageAligned {
        path: String,
        bytes: u64,
    },
    ZeroSize {
        path: String,
    },
    TooLarge {
        path: String,
        bytes: u64,
        max: u64,
    },
    /// A string that must be one of a few words.
    BadChoice {
        path: String,
        value: String,
        expected: &'static [&'static str],
    },
    /// A name used in capDL identifiers.
    InvalidName {
        path: String,
        value: String,
    },
    /// A free-text field (image, command line) with a forbidden character or length.
    InvalidText {
        path: String,
        reason: &'static str,
    },
    OutOfRange {
        path: String,
        value: i64,
        min: i64,
        max: i64,
    },
    NoVms,
    TooManyVms {
        count: usize,
        max: usize,
    },
    DuplicateVmName {
        path: String,
        name: String,
        first: usize,
    },
    /// Two VMs with one id: the id is the VM's mmu-server badge.
    IdCollision {
        path: String,
        id: u16,
        other: String,
    },
    UnknownCapability {
        vm: String,
        path: String,
        capability: String,
    },
    DuplicateCapability {
        vm: String,
        path: String,
        capability: String,
    },
    /// `cr0_wp = "guest-owned"` under shadow paging.
    Cr0WpNeedsTdp {
        path: String,
    },
    /// A `ports` value that is not a valid range for its device.
    BadPorts {
        path: String,
        reason: String,
    },
    PortOverlap {
        path: String,
        other: String,
    },
    IrqCollision {
        path: String,
        irq: u8,
        other: String,
    },
    /// A key that the chosen `kind` does not use.
    NotForKind {
        path: String,
        kind: String,
    },
}

impl SpecError {
    /// The field the error is about (`vm` for whole-table errors).
    pub fn path(&self) -> &str {
        use SpecError::*;
        match self {
            Toml { path, .. }
            | UnknownKey { path, .. }
            | Missing { path }
            | NotASize { path, .. }
            | NotPageAligned { path, .. }
            | ZeroSize { path }
            | TooLarge { path, .. }
            | BadChoice { path, .. }
            | InvalidName { path, .. }
            | InvalidText { path, .. }
            | OutOfRange { path, .. }
            | DuplicateVmName { path, .. }
            | IdCollision { path, .. }
            | UnknownCapability { path, .. }
            | DuplicateCapability { path, .. }
            | Cr0WpNeedsTdp { path }
            | BadPorts { path, .. }
            | PortOverlap { path, .. }
            | IrqCollision { path, .. }
            | NotForKind { path, .. } => path,
            NoVms | TooManyVms { .. } => "vm",
        }
    }
}

fn at_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use SpecError::*;
        match self {
            Toml { path, line, message } if path.is_empty() => {
                match line {
                    Some(l) => write!(f, "line {l}: {message}"),
                    None => write!(f, "{message}"),
                }
            }
            Toml { path, line, message } => write!(f, "{path}: {message}{}", at_line(line)),
            UnknownKey { path, line } => write!(f, "{path}: unknown key{}", at_line(line)),
            Missing { path } => write!(f, "{path}: missing (it is required)"),
            NotASize { path, value } => {
                write!(f, "{path}: {value:?} is not a size (write e.g. \"128M\", \"64K\" or \"1G\")")
            }
            NotPageAligned { path, bytes } => {
                write!(f, "{path}: {bytes:#x} is not page aligned (a multiple of 4K = 0x1000)")
            }
            ZeroSize { path } => write!(f, "{path}: must not be zero"),
            TooLarge { path, bytes, max } => write!(
                f,
                "{path}: {} is larger than the maximum {}",
                format_size(*bytes),
                format_size(*max)
            ),
            BadChoice { path, value, expected } => {
                write!(f, "{path}: {value:?} is not one of {}", expected.join(", "))
            }
            InvalidName { path, value } => write!(
                f,
                "{path}: {value:?} is not a valid name (a letter, then letters, digits or _; at most 32)"
            ),
            InvalidText { path, reason } => write!(f, "{path}: {reason}"),
            OutOfRange { path, value, min, max } => {
                write!(f, "{path}: {value} is out of range ({min}..={max})")
            }
            NoVms => write!(f, "vm: the system has no VM (add a [[vm]] table)"),
            TooManyVms { count, max } => write!(f, "vm: {count} VMs, at most {max}"),
            DuplicateVmName { path, name, first } => {
                write!(f, "{path}: duplicate VM name {name:?} (also vm[{first}].name)")
            }
            IdCollision { path, id, other } => write!(
                f,
                "{path}: id {id} collides with vm {other:?} (a VM id is its mmu-server badge and must be unique)"
            ),
            UnknownCapability { vm, path, capability } => write!(
                f,
                "vm {vm:?}: unknown capability {capability:?} in {path} (known: NxHugePageControl)"
            ),
            DuplicateCapability { vm, path, capability } => {
                write!(f, "vm {vm:?}: capability {capability:?} is granted twice in {path}")
            }
            Cr0WpNeedsTdp { path } => write!(
                f,
                "{path}: a guest-owned CR0.WP needs mmu = \"tdp\" (shadow paging must trap CR0.WP writes)"
            ),
            BadPorts { path, reason } => write!(f, "{path}: {reason}"),
            PortOverlap { path, other } => write!(f, "{path}: overlaps the ports of {other}"),
            IrqCollision { path, irq, other } => write!(f, "{path}: IRQ {irq} is already used by {other}"),
            NotForKind { path, kind } => write!(f, "{path}: not used by kind {kind:?}"),
        }
    }
}

impl std::error::Error for SpecError {}
