//! The validated system: what system.toml describes, with every default filled in and
//! every rule checked. [`System::from_toml`] is the only way to make one from text.

use crate::error::SpecError;
use crate::raw::{RawDevice, RawMmuServer, RawNx, RawPd, RawSystem, RawVm};
use crate::size::parse_size;
use capdl_spec::badge::MAX_VM_ID;
use capdl_spec::layout::{
    GUEST_RAM_WINDOW, IMAGE_MAX, LARGE_PAGE_SIZE, MAX_VMS, PAGE_SIZE, POOL_MAX, STACK_MAX,
};
pub use capdl_spec::{NxMode, TimerKind};

/// How a VM's guest-physical memory is translated (numbered as `ipc::MmuMode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MmuMode {
    Tdp = 0,
    Shadow = 1,
}

/// Capabilities a VM can be granted beyond the ordinary ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Capability {
    /// May turn the NX-huge-page mitigation off for its own VM.
    NxHugePageControl,
}

impl Capability {
    pub const ALL: [(&'static str, Capability); 1] =
        [("NxHugePageControl", Capability::NxHugePageControl)];
    pub fn name(self) -> &'static str {
        match self {
            Capability::NxHugePageControl => "NxHugePageControl",
        }
    }
}

/// The NX-huge-page mitigation, system-wide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NxConfig {
    pub mode: NxMode,
    /// Each recovery zaps ceil(splits / ratio) split pages; 0 turns recovery off.
    pub recovery_ratio: u32,
    pub recovery_period_ms: u64,
}

/// What every protection domain has: its program and its resources.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PdConfig {
    /// Name of the ELF the root task loads (a capDL identifier).
    pub elf: String,
    pub image_size: u64,
    pub stack_size: u64,
    pub priority: u8,
}

/// An inclusive I/O port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

/// QEMU's isa-debug-exit device (iobase 0xf4, iosize 4).
pub const DEBUG_EXIT_PORTS: PortRange = PortRange {
    first: 0xf4,
    last: 0xf7,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uart {
    pub pd: PdConfig,
    pub ports: PortRange,
    pub irq: Option<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimerDevice {
    /// The 8254 PIT: its I/O ports and IRQ.
    Pit { ports: PortRange, irq: u8 },
    /// The HPET: its register page and the IRQ it is routed to.
    Hpet { paddr: u64, irq: u8 },
}

impl TimerDevice {
    pub fn kind(&self) -> TimerKind {
        match self {
            TimerDevice::Pit { .. } => TimerKind::Pit,
            TimerDevice::Hpet { .. } => TimerKind::Hpet,
        }
    }
    pub fn irq(&self) -> u8 {
        match *self {
            TimerDevice::Pit { irq, .. } | TimerDevice::Hpet { irq, .. } => irq,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub pd: PdConfig,
    pub device: TimerDevice,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    /// A capDL identifier, unique among VMs.
    pub name: String,
    /// Unique, non-zero: the low bits of the vmm-server's mmu-server badge.
    pub id: u16,
    /// Guest RAM bytes (page aligned), at guest-physical 0.
    pub memory: u64,
    pub mmu: MmuMode,
    /// Name of the guest image (a multiboot kernel).
    pub image: String,
    pub cmdline: String,
    /// CR0.WP is guest-owned (its writes do not exit); TDP only.
    pub cr0_wp: bool,
    pub root_reuse: bool,
    /// Granted capabilities, sorted.
    pub caps: Vec<Capability>,
    /// Holds the isa-debug-exit I/O ports.
    pub debug_exit: bool,
    /// The vmm-server asks the mmu-server to disable the NX-huge-page mitigation for
    /// this VM (through `NxHugePageControl` when granted; refused otherwise).
    pub disable_nx_huge_pages: bool,
    /// This VM's vmm-server priority, instead of `[vmm_server] priority`.
    pub priority: Option<u8>,
}

impl Vm {
    pub fn has(&self, cap: Capability) -> bool {
        self.caps.contains(&cap)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct System {
    pub nx: NxConfig,
    pub mmu_server: PdConfig,
    /// Bytes of the mmu-server's page-table pool (page aligned).
    pub frame_pool: u64,
    /// Settings shared by every VM's vmm-server.
    pub vmm_server: PdConfig,
    pub uart: Uart,
    pub timer: Timer,
    pub vms: Vec<Vm>,
}

/// Most characters of a name.
const NAME_MAX: usize = 32;
/// Multiboot command lines are NUL-terminated; keep them to one page-friendly size.
const CMDLINE_MAX: usize = 255;
const IMAGE_NAME_MAX: usize = 128;
/// The root task runs at the highest priority; PDs below it.
const PRIORITY_MAX: i64 = 254;
/// ISA IRQs and the first I/O APIC's pins.
const IRQ_MAX: i64 = 23;
/// A recovery period of more than a day is a typo.
const PERIOD_MAX_MS: i64 = 86_400_000;

impl System {
    /// Parses and validates system.toml.
    pub fn from_toml(text: &str) -> Result<System, SpecError> {
        let raw = parse_raw(text)?;
        validate(raw)
    }
}

/// Byte offset -> 1-based line.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset).map_or(0, |t| t.matches('\n').count()) + 1
}

fn parse_raw(text: &str) -> Result<RawSystem, SpecError> {
    let de = match toml::Deserializer::parse(text) {
        Ok(de) => de,
        Err(e) => {
            return Err(SpecError::Toml {
                path: String::new(),
                line: e.span().map(|s| line_of(text, s.start)),
                message: e.message().trim().to_string(),
            })
        }
    };
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text, s.start));
        let message = inner.message().trim().to_string();
        // serde words it "unknown field `colour`, expected one of ...": the key is
        // between the first pair of backquotes.
        if let Some(rest) = message.strip_prefix("unknown field `") {
            if let Some(key) = rest.split('`').next() {
                // The path usually ends at the key already (the key is being read).
                let path = if path == key || path.ends_with(&format!(".{key}")) {
                    path
                } else if path == "." || path.is_empty() {
                    key.to_string()
                } else {
                    format!("{path}.{key}")
                };
                return SpecError::UnknownKey { path, line };
            }
        }
        let path = if path == "." { String::new() } else { path };
        SpecError::Toml {
            path,
            line,
            message,
        }
    })
}

fn size(path: &str, value: Option<&String>, default: u64, max: u64) -> Result<u64, SpecError> {
    let bytes = match value {
        None => default,
        Some(v) => parse_size(v).ok_or_else(|| SpecError::NotASize {
            path: path.into(),
            value: v.clone(),
        })?,
    };
    if bytes == 0 {
        return Err(SpecError::ZeroSize { path: path.into() });
    }
    if bytes % PAGE_SIZE != 0 {
        return Err(SpecError::NotPageAligned {
            path: path.into(),
            bytes,
        });
    }
    if bytes > max {
        return Err(SpecError::TooLarge {
            path: path.into(),
            bytes,
            max,
        });
    }
    Ok(bytes)
}

fn ranged(
    path: &str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, SpecError> {
    let v = value.unwrap_or(default);
    if v < min || v > max {
        return Err(SpecError::OutOfRange {
            path: path.into(),
            value: v,
            min,
            max,
        });
    }
    Ok(v)
}

fn choice<T: Copy>(
    path: &str,
    value: Option<&String>,
    default: T,
    table: &[(&'static str, T)],
    expected: &'static [&'static str],
) -> Result<T, SpecError> {
    let Some(v) = value else { return Ok(default) };
    table
        .iter()
        .find(|(word, _)| word == v)
        .map(|(_, t)| *t)
        .ok_or_else(|| SpecError::BadChoice {
            path: path.into(),
            value: v.clone(),
            expected,
        })
}

/// Names become parts of capDL identifiers (`vm_<name>_tcb`).
fn name(path: &str, value: &str) -> Result<String, SpecError> {
    let mut chars = value.chars();
    let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && value.len() <= NAME_MAX;
    if ok {
        Ok(value.to_string())
    } else {
        Err(SpecError::InvalidName {
            path: path.into(),
            value: value.into(),
        })
    }
}

/// Free text: printable ASCII without quotes, so it survives capDL comments and the
/// multiboot command line unchanged.
fn text(path: &str, value: &str, max: usize, allow_empty: bool) -> Result<String, SpecError> {
    if value.is_empty() && !allow_empty {
        return Err(SpecError::InvalidText {
            path: path.into(),
            reason: "must not be empty",
        });
    }
    if value.len() > max {
        let reason = if max == CMDLINE_MAX {
            "longer than 255 bytes"
        } else {
            "longer than 128 bytes"
        };
        return Err(SpecError::InvalidText {
            path: path.into(),
            reason,
        });
    }
    if !value
        .bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"')
    {
        return Err(SpecError::InvalidText {
            path: path.into(),
            reason: "only printable ASCII without '\"' is allowed",
        });
    }
    Ok(value.to_string())
}

struct PdDefaults {
    elf: &'static str,
    image_size: u64,
    stack_size: u64,
    priority: i64,
}

fn pd(
    path: &str,
    elf: Option<&String>,
    image_size: Option<&String>,
    stack_size: Option<&String>,
    priority: Option<i64>,
    d: PdDefaults,
) -> Result<PdConfig, SpecError> {
    Ok(PdConfig {
        elf: match elf {
            Some(e) => name(&format!("{path}.elf"), e)?,
            None => d.elf.to_string(),
        },
        image_size: size(
            &format!("{path}.image_size"),
            image_size,
            d.image_size,
            IMAGE_MAX,
        )?,
        stack_size: size(
            &format!("{path}.stack_size"),
            stack_size,
            d.stack_size,
            STACK_MAX,
        )?,
        priority: ranged(
            &format!("{path}.priority"),
            priority,
            d.priority,
            1,
            PRIORITY_MAX,
        )? as u8,
    })
}

const NX_MODES: [(&str, NxMode); 5] = [
    ("auto", NxMode::Auto),
    ("on", NxMode::On),
    ("off", NxMode::Off),
    ("force", NxMode::Force),
    ("never", NxMode::Never),
];
const NX_WORDS: &[&str] = &["auto", "on", "off", "force", "never"];
const MMU_MODES: [(&str, MmuMode); 2] = [("tdp", MmuMode::Tdp), ("shadow", MmuMode::Shadow)];
const MMU_WORDS: &[&str] = &["tdp", "shadow"];
/// `cr0_wp`: who owns CR0.WP (the per-VM setting); `true` = guest-owned.
const CR0_WP_MODES: [(&str, bool); 2] = [("guest-owned", true), ("intercept", false)];
const CR0_WP_WORDS: &[&str] = &["guest-owned", "intercept"];

fn nx(raw: RawNx) -> Result<NxConfig, SpecError> {
    let mode = choice(
        "nx_huge_pages.mode",
        raw.mode.as_ref(),
        NxMode::Auto,
        &NX_MODES,
        NX_WORDS,
    )?;
    let ratio = ranged(
        "nx_huge_pages.recovery_ratio",
        raw.recovery_ratio,
        60,
        0,
        u32::MAX as i64,
    )?;
    // KVM's default period: one hour spread over `ratio` runs, 60 s for the default 60.
    let default_period = if ratio == 0 {
        60_000
    } else {
        3_600_000 / ratio.min(3600)
    };
    let period = ranged(
        "nx_huge_pages.recovery_period_ms",
        raw.recovery_period_ms,
        default_period,
        1,
        PERIOD_MAX_MS,
    )?;
    Ok(NxConfig {
        mode,
        recovery_ratio: ratio as u32,
        recovery_period_ms: period as u64,
    })
}

fn ports(
    path: &str,
    value: Option<&Vec<i64>>,
    default: PortRange,
    count: u32,
    device: &str,
) -> Result<PortRange, SpecError> {
    let Some(v) = value else { return Ok(default) };
    let bad = |reason: String| SpecError::BadPorts {
        path: path.into(),
        reason,
    };
    let [first, last] = v.as_slice() else {
        return Err(bad(format!(
            "write the range as [first, last], got {} numbers",
            v.len()
        )));
    };
    let in_range = |p: i64| (0..=0xffff).contains(&p);
    if !in_range(*first) || !in_range(*last) {
        return Err(bad("I/O ports are 0..=0xffff".into()));
    }
    if first > last {
        return Err(bad(format!(
            "first port {first:#x} is above last port {last:#x}"
        )));
    }
    let n = (last - first + 1) as u32;
    if n != count {
        return Err(bad(format!(
            "a {device} has {count} ports, the range has {n}"
        )));
    }
    Ok(PortRange {
        first: *first as u16,
        last: *last as u16,
    })
}

fn uart(raw: RawDevice) -> Result<Uart, SpecError> {
    choice(
        "drivers.uart.kind",
        raw.kind.as_ref(),
        (),
        &[("uart16550", ())],
        &["uart16550"],
    )?;
    if raw.paddr.is_some() {
        return Err(SpecError::NotForKind {
            path: "drivers.uart.paddr".into(),
            kind: "uart16550".into(),
        });
    }
    let com1 = PortRange {
        first: 0x3f8,
        last: 0x3ff,
    };
    Ok(Uart {
        ports: ports(
            "drivers.uart.ports",
            raw.ports.as_ref(),
            com1,
            8,
            "16550 UART",
        )?,
        irq: match raw.irq {
            None => None,
            Some(i) => Some(ranged("drivers.uart.irq", Some(i), 0, 0, IRQ_MAX)? as u8),
        },
        pd: pd(
            "drivers.uart",
            raw.elf.as_ref(),
            raw.image_size.as_ref(),
            raw.stack_size.as_ref(),
            raw.priority,
            PdDefaults {
                elf: "uart",
                image_size: 256 << 10,
                stack_size: 16 << 10,
                priority: 250,
            },
        )?,
    })
}

/// The HPET's usual register page on PCs.
const HPET_PADDR: u64 = 0xfed0_0000;
/// Physical addresses on x86-64 have at most 52 bits.
const PADDR_MAX: i64 = (1 << 52) - 1;

fn timer(raw: RawDevice) -> Result<Timer, SpecError> {
    let kind = choice(
        "drivers.timer.kind",
        raw.kind.as_ref(),
        TimerKind::Pit,
        &[("pit", TimerKind::Pit), ("hpet", TimerKind::Hpet)],
        &["pit", "hpet"],
    )?;
    // Both the PIT and the HPET (in legacy replacement mode) interrupt on ISA IRQ 0.
    let irq = ranged("drivers.timer.irq", raw.irq, 0, 0, IRQ_MAX)? as u8;
    let device = match kind {
        TimerKind::Pit => {
            if raw.paddr.is_some() {
                return Err(SpecError::NotForKind {
                    path: "drivers.timer.paddr".into(),
                    kind: "pit".into(),
                });
            }
            let pit = PortRange {
                first: 0x40,
                last: 0x43,
            };
            TimerDevice::Pit {
                ports: ports("drivers.timer.ports", raw.ports.as_ref(), pit, 4, "PIT")?,
                irq,
            }
        }
        TimerKind::Hpet => {
            if raw.ports.is_some() {
                return Err(SpecError::NotForKind {
                    path: "drivers.timer.ports".into(),
                    kind: "hpet".into(),
                });
            }
            let paddr = ranged(
                "drivers.timer.paddr",
                raw.paddr,
                HPET_PADDR as i64,
                0,
                PADDR_MAX,
            )? as u64;
            if paddr % PAGE_SIZE != 0 {
                return Err(SpecError::NotPageAligned {
                    path: "drivers.timer.paddr".into(),
                    bytes: paddr,
                });
            }
            TimerDevice::Hpet { paddr, irq }
        }
    };
    Ok(Timer {
        device,
        pd: pd(
            "drivers.timer",
            raw.elf.as_ref(),
            raw.image_size.as_ref(),
            raw.stack_size.as_ref(),
            raw.priority,
            PdDefaults {
                elf: "timer",
                image_size: 256 << 10,
                stack_size: 16 << 10,
                priority: 251,
            },
        )?,
    })
}

/// One VM without its id (ids are assigned once every VM is read).
fn vm(i: usize, raw: &RawVm) -> Result<(Vm, Option<u16>), SpecError> {
    let p = |key: &str| format!("vm[{i}].{key}");
    let name = match &raw.name {
        Some(n) => name(&p("name"), n)?,
        None => return Err(SpecError::Missing { path: p("name") }),
    };
    let id = match raw.id {
        None => None,
        Some(id) => Some(ranged(&p("id"), Some(id), 1, 1, MAX_VM_ID as i64)? as u16),
    };
    let memory = size(
        &p("memory"),
        raw.memory.as_ref(),
        128 << 20,
        GUEST_RAM_WINDOW,
    )?;
    let mmu = choice(
        &p("mmu"),
        raw.mmu.as_ref(),
        MmuMode::Tdp,
        &MMU_MODES,
        MMU_WORDS,
    )?;
    let image = match &raw.image {
        Some(img) => text(&p("image"), img, IMAGE_NAME_MAX, false)?,
        None => return Err(SpecError::Missing { path: p("image") }),
    };
    let cmdline = text(
        &p("cmdline"),
        raw.cmdline.as_deref().unwrap_or(""),
        CMDLINE_MAX,
        true,
    )?;
    // Under TDP CR0.WP is guest-owned by default, as in KVM; shadow paging must trap
    // it (hardware WP is forced to 1 and the shadow role depends on the guest's WP).
    let cr0_wp = choice(
        &p("cr0_wp"),
        raw.cr0_wp.as_ref(),
        mmu == MmuMode::Tdp,
        &CR0_WP_MODES,
        CR0_WP_WORDS,
    )?;
    if cr0_wp && mmu == MmuMode::Shadow {
        return Err(SpecError::Cr0WpNeedsTdp { path: p("cr0_wp") });
    }
    let mut caps = Vec::new();
    for cap in &raw.caps {
        let Some((_, c)) = Capability::ALL.iter().find(|(n, _)| n == cap) else {
            return Err(SpecError::UnknownCapability {
                vm: name,
                path: p("caps"),
                capability: cap.clone(),
            });
        };
        if caps.contains(c) {
            return Err(SpecError::DuplicateCapability {
                vm: name,
                path: p("caps"),
                capability: cap.clone(),
            });
        }
        caps.push(*c);
    }
    caps.sort();
    let vm = Vm {
        name,
        id: 0,
        memory,
        mmu,
        image,
        cmdline,
        cr0_wp,
        root_reuse: raw.root_reuse.unwrap_or(true),
        caps,
        debug_exit: raw.debug_exit.unwrap_or(false),
        disable_nx_huge_pages: raw.disable_nx_huge_pages.unwrap_or(false),
        priority: match raw.priority {
            None => None,
            Some(prio) => Some(ranged(&p("priority"), Some(prio), 1, 1, PRIORITY_MAX)? as u8),
        },
    };
    Ok((vm, id))
}

fn vms(raw: &[RawVm]) -> Result<Vec<Vm>, SpecError> {
    if raw.is_empty() {
        return Err(SpecError::NoVms);
    }
    if raw.len() > MAX_VMS {
        return Err(SpecError::TooManyVms {
            count: raw.len(),
            max: MAX_VMS,
        });
    }
    let mut vms: Vec<(Vm, Option<u16>)> = Vec::new();
    for (i, r) in raw.iter().enumerate() {
        let (vm, id) = vm(i, r)?;
        if let Some(first) = vms.iter().position(|(v, _)| v.name == vm.name) {
            return Err(SpecError::DuplicateVmName {
                path: format!("vm[{i}].name"),
                name: vm.name,
                first,
            });
        }
        if let Some(id) = id {
            if let Some((other, _)) = vms.iter().find(|(_, o)| *o == Some(id)) {
                return Err(SpecError::IdCollision {
                    path: format!("vm[{i}].id"),
                    id,
                    other: other.name.clone(),
                });
            }
        }
        vms.push((vm, id));
    }
    // VMs without an id get the smallest ids no VM asked for, in order.
    let taken: Vec<u16> = vms.iter().filter_map(|(_, id)| *id).collect();
    let mut free = (1..=MAX_VM_ID).filter(|id| !taken.contains(id));
    let mut out = Vec::with_capacity(vms.len());
    for (mut vm, id) in vms {
        // At most MAX_VMS VMs take ids out of 65535, so `free` never runs dry.
        vm.id = match id.or_else(|| free.next()) {
            Some(id) => id,
            None => {
                return Err(SpecError::TooManyVms {
                    count: raw.len(),
                    max: MAX_VMS,
                })
            }
        };
        out.push(vm);
    }
    Ok(out)
}

fn check_devices(uart: &Uart, timer: &Timer, vms: &[Vm]) -> Result<(), SpecError> {
    if let TimerDevice::Pit { ports, .. } = timer.device {
        if ports.overlaps(&uart.ports) {
            return Err(SpecError::PortOverlap {
                path: "drivers.timer.ports".into(),
                other: "drivers.uart".into(),
            });
        }
        if vms.iter().any(|v| v.debug_exit) && ports.overlaps(&DEBUG_EXIT_PORTS) {
            return Err(SpecError::PortOverlap {
                path: "drivers.timer.ports".into(),
                other: "isa-debug-exit (0xf4..=0xf7)".into(),
            });
        }
    }
    if let Some(i) = vms.iter().position(|v| v.debug_exit) {
        if uart.ports.overlaps(&DEBUG_EXIT_PORTS) {
            return Err(SpecError::PortOverlap {
                path: "drivers.uart.ports".into(),
                other: format!("isa-debug-exit (0xf4..=0xf7) of vm[{i}]"),
            });
        }
    }
    if uart.irq == Some(timer.device.irq()) {
        return Err(SpecError::IrqCollision {
            path: "drivers.uart.irq".into(),
            irq: timer.device.irq(),
            other: "drivers.timer".into(),
        });
    }
    Ok(())
}

fn mmu_server(raw: RawMmuServer) -> Result<(PdConfig, u64), SpecError> {
    let pool = size(
        "mmu_server.frame_pool",
        raw.frame_pool.as_ref(),
        16 << 20,
        POOL_MAX,
    )?;
    let pd = pd(
        "mmu_server",
        raw.elf.as_ref(),
        raw.image_size.as_ref(),
        raw.stack_size.as_ref(),
        raw.priority,
        PdDefaults {
            elf: "mmu_server",
            image_size: 1 << 20,
            stack_size: 64 << 10,
            priority: 200,
        },
    )?;
    Ok((pd, pool))
}

fn vmm_server(raw: RawPd) -> Result<PdConfig, SpecError> {
    pd(
        "vmm_server",
        raw.elf.as_ref(),
        raw.image_size.as_ref(),
        raw.stack_size.as_ref(),
        raw.priority,
        PdDefaults {
            elf: "vmm_server",
            image_size: 2 << 20,
            stack_size: 256 << 10,
            priority: 100,
        },
    )
}

fn validate(raw: RawSystem) -> Result<System, SpecError> {
    let nx = nx(raw.nx_huge_pages.unwrap_or_default())?;
    let (mmu_server, frame_pool) = mmu_server(raw.mmu_server.unwrap_or_default())?;
    let vmm_server = vmm_server(raw.vmm_server.unwrap_or_default())?;
    let drivers = raw.drivers.unwrap_or_default();
    let uart = uart(drivers.uart.unwrap_or_default())?;
    let timer = timer(drivers.timer.unwrap_or_default())?;
    let vms = vms(&raw.vm)?;
    check_devices(&uart, &timer, &vms)?;
    Ok(System {
        nx,
        mmu_server,
        frame_pool,
        vmm_server,
        uart,
        timer,
        vms,
    })
}

/// Frames a region of `bytes` is made of: as many 2M frames as fit when the region
/// may use them, then 4K frames. Returns (large, small).
pub fn frame_split(bytes: u64, large_allowed: bool) -> (u64, u64) {
    if large_allowed {
        (
            bytes / LARGE_PAGE_SIZE,
            (bytes % LARGE_PAGE_SIZE) / PAGE_SIZE,
        )
    } else {
        (0, bytes / PAGE_SIZE)
    }
}
