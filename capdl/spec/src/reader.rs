//! Reading a binary spec in place: one up-front check, then infallible access.

use crate::format::*;
use zerocopy::FromBytes;

/// Why a blob is not a spec this reader accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatError {
    /// The blob ends before a table does.
    Truncated,
    /// Bytes follow the string table.
    TrailingBytes,
    BadMagic,
    UnsupportedVersion(u32),
    /// A record's enum field (object kind, PD kind, mode, flags) is out of range.
    BadField {
        table: Table,
        index: u32,
    },
    /// A record refers to a missing record, or to one of the wrong kind.
    BadReference {
        table: Table,
        index: u32,
    },
    /// A string reference is out of the string table or not UTF-8.
    BadString {
        table: Table,
        index: u32,
    },
}

/// The tables of a spec, for error reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    Header,
    Objects,
    Caps,
    Tcbs,
    Pds,
    Vms,
}

/// A checked spec, borrowed from its bytes.
#[derive(Clone, Copy, Debug)]
pub struct SpecView<'a> {
    header: &'a Header,
    objects: &'a [ObjectRecord],
    caps: &'a [CapRecord],
    tcbs: &'a [TcbRecord],
    pds: &'a [PdRecord],
    vms: &'a [VmRecord],
    strings: &'a [u8],
}

/// A table of `count` records at the start of `bytes`, and what follows it.
fn table<T: FromBytes + zerocopy::KnownLayout + zerocopy::Immutable + zerocopy::Unaligned>(
    bytes: &[u8],
    count: u32,
) -> Result<(&[T], &[u8]), FormatError> {
    <[T]>::ref_from_prefix_with_elems(bytes, count as usize).map_err(|_| FormatError::Truncated)
}

impl<'a> SpecView<'a> {
    /// Checks `bytes` and returns a view of it.
    pub fn parse(bytes: &'a [u8]) -> Result<Self, FormatError> {
        let (header, rest) = Header::ref_from_prefix(bytes).map_err(|_| FormatError::Truncated)?;
        if header.magic != MAGIC {
            return Err(FormatError::BadMagic);
        }
        if header.version.get() != VERSION {
            return Err(FormatError::UnsupportedVersion(header.version.get()));
        }
        let (objects, rest) = table::<ObjectRecord>(rest, header.object_count.get())?;
        let (caps, rest) = table::<CapRecord>(rest, header.cap_count.get())?;
        let (tcbs, rest) = table::<TcbRecord>(rest, header.tcb_count.get())?;
        let (pds, rest) = table::<PdRecord>(rest, header.pd_count.get())?;
        let (vms, rest) = table::<VmRecord>(rest, header.vm_count.get())?;
        let len = header.strings_len.get() as usize;
        let strings = rest.get(..len).ok_or(FormatError::Truncated)?;
        if rest.len() > len {
            return Err(FormatError::TrailingBytes);
        }
        let view = SpecView {
            header,
            objects,
            caps,
            tcbs,
            pds,
            vms,
            strings,
        };
        view.check()?;
        Ok(view)
    }

    fn check(&self) -> Result<(), FormatError> {
        if NxMode::from_u8(self.header.nx_mode).is_none()
            || TimerKind::from_u8(self.header.timer_kind).is_none()
        {
            return Err(FormatError::BadField {
                table: Table::Header,
                index: 0,
            });
        }
        for (i, o) in self.objects.iter().enumerate() {
            let i = i as u32;
            let kind = ObjectKind::from_u8(o.kind).ok_or(FormatError::BadField {
                table: Table::Objects,
                index: i,
            })?;
            if o.flags & !object_flags::ALL != 0 {
                return Err(FormatError::BadField {
                    table: Table::Objects,
                    index: i,
                });
            }
            self.check_str(o.name, Table::Objects, i)?;
            let bad = FormatError::BadReference {
                table: Table::Objects,
                index: i,
            };
            if o.untyped.get() != NONE && self.kind_of(o.untyped.get()) != Some(ObjectKind::Untyped)
            {
                return Err(bad);
            }
            if kind == ObjectKind::Tcb {
                let t = self.tcbs.get(o.arg0.get() as usize).ok_or(bad)?;
                if t.object.get() != i {
                    return Err(bad);
                }
            }
        }
        for (i, c) in self.caps.iter().enumerate() {
            let i = i as u32;
            if self.kind_of(c.holder.get()).is_none() || self.kind_of(c.target.get()).is_none() {
                return Err(FormatError::BadReference {
                    table: Table::Caps,
                    index: i,
                });
            }
            if c.rights & !rights::ALL != 0 || c.flags & !cap_flags::ALL != 0 {
                return Err(FormatError::BadField {
                    table: Table::Caps,
                    index: i,
                });
            }
        }
        for (i, t) in self.tcbs.iter().enumerate() {
            let i = i as u32;
            if self.kind_of(t.object.get()) != Some(ObjectKind::Tcb) {
                return Err(FormatError::BadReference {
                    table: Table::Tcbs,
                    index: i,
                });
            }
            self.check_str(t.elf, Table::Tcbs, i)?;
        }
        for (i, p) in self.pds.iter().enumerate() {
            let i = i as u32;
            let kind = PdKind::from_u8(p.kind).ok_or(FormatError::BadField {
                table: Table::Pds,
                index: i,
            })?;
            self.check_str(p.name, Table::Pds, i)?;
            let bad = FormatError::BadReference {
                table: Table::Pds,
                index: i,
            };
            let refs_ok = self.kind_of(p.tcb.get()) == Some(ObjectKind::Tcb)
                && self.kind_of(p.cnode.get()) == Some(ObjectKind::CNode)
                && self.kind_of(p.vspace.get()) == Some(ObjectKind::Pml4)
                && self.kind_of(p.boot_params.get()) == Some(ObjectKind::Frame);
            let vm_ok = match kind {
                PdKind::VmmServer => (p.vm.get() as usize) < self.vms.len(),
                _ => p.vm.get() == NONE,
            };
            if !refs_ok || !vm_ok {
                return Err(bad);
            }
        }
        for (i, v) in self.vms.iter().enumerate() {
            let i = i as u32;
            self.check_str(v.name, Table::Vms, i)?;
            self.check_str(v.image, Table::Vms, i)?;
            self.check_str(v.cmdline, Table::Vms, i)?;
            if v.mmu > 1 || v.flags & !vm_flags::ALL != 0 {
                return Err(FormatError::BadField {
                    table: Table::Vms,
                    index: i,
                });
            }
            let pd_ok = self
                .pds
                .get(v.pd.get() as usize)
                .is_some_and(|p| p.kind == PdKind::VmmServer as u8 && p.vm.get() == i);
            if !pd_ok || self.kind_of(v.ram_untyped.get()) != Some(ObjectKind::Untyped) {
                return Err(FormatError::BadReference {
                    table: Table::Vms,
                    index: i,
                });
            }
        }
        Ok(())
    }

    fn kind_of(&self, object: u32) -> Option<ObjectKind> {
        self.objects
            .get(object as usize)
            .and_then(|o| ObjectKind::from_u8(o.kind))
    }

    fn check_str(&self, s: StrRef, table: Table, index: u32) -> Result<(), FormatError> {
        self.try_str(s)
            .map(|_| ())
            .ok_or(FormatError::BadString { table, index })
    }

    fn try_str(&self, s: StrRef) -> Option<&'a str> {
        let start = s.offset.get() as usize;
        let end = start.checked_add(s.len.get() as usize)?;
        core::str::from_utf8(self.strings.get(start..end)?).ok()
    }

    pub fn header(&self) -> &'a Header {
        self.header
    }
    pub fn objects(&self) -> &'a [ObjectRecord] {
        self.objects
    }
    pub fn caps(&self) -> &'a [CapRecord] {
        self.caps
    }
    pub fn tcbs(&self) -> &'a [TcbRecord] {
        self.tcbs
    }
    pub fn pds(&self) -> &'a [PdRecord] {
        self.pds
    }
    pub fn vms(&self) -> &'a [VmRecord] {
        self.vms
    }
    pub fn nx_mode(&self) -> NxMode {
        NxMode::from_u8(self.header.nx_mode).unwrap_or(NxMode::Auto)
    }
    pub fn timer_kind(&self) -> TimerKind {
        TimerKind::from_u8(self.header.timer_kind).unwrap_or(TimerKind::Pit)
    }

    /// The kind of a checked object record.
    pub fn object_kind(&self, object: &ObjectRecord) -> ObjectKind {
        // Every record of this view passed `check`, so the fallback is never taken.
        ObjectKind::from_u8(object.kind).unwrap_or(ObjectKind::Endpoint)
    }

    /// The kind of a checked PD record.
    pub fn pd_kind(&self, pd: &PdRecord) -> PdKind {
        PdKind::from_u8(pd.kind).unwrap_or(PdKind::MmuServer)
    }

    /// The capabilities held by object `holder` (its CNode slots, its paging entries,
    /// its TCB slots), in table order.
    pub fn caps_of(&self, holder: u32) -> impl Iterator<Item = &'a CapRecord> {
        self.caps.iter().filter(move |c| c.holder.get() == holder)
    }

    /// The TCB parameters of a TCB object record (None for other kinds).
    pub fn tcb(&self, object: &ObjectRecord) -> Option<&'a TcbRecord> {
        if object.kind != ObjectKind::Tcb as u8 {
            return None;
        }
        self.tcbs.get(object.arg0.get() as usize)
    }

    /// A string of this spec (every reference in the tables was checked). A reference
    /// made up by the caller that is out of range reads as "".
    pub fn str(&self, s: StrRef) -> &'a str {
        self.try_str(s).unwrap_or("")
    }
}
