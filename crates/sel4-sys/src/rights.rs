//! `seL4_CapRights` and `seL4_PrioProps` (libsel4 `shared_types_64.bf`).

use crate::Word;

/// Access rights of a capability: bit 2 grant, bit 1 read, bit 0 write.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct CapRights(pub Word);

impl CapRights {
    /// `seL4_CapRights_new(grant, read, write)`.
    pub const fn new(grant: bool, read: bool, write: bool) -> CapRights {
        CapRights((grant as Word) << 2 | (read as Word) << 1 | write as Word)
    }
    /// `seL4_AllRights`
    pub const ALL: CapRights = CapRights::new(true, true, true);
    /// `seL4_ReadWrite`
    pub const READ_WRITE: CapRights = CapRights::new(false, true, true);
    /// `seL4_CanRead`
    pub const READ: CapRights = CapRights::new(false, true, false);
    /// `seL4_CanWrite`
    pub const WRITE: CapRights = CapRights::new(false, false, true);
    /// `seL4_NoRights`
    pub const NONE: CapRights = CapRights::new(false, false, false);

    pub const fn grant(self) -> bool {
        self.0 & 4 != 0
    }
    pub const fn read(self) -> bool {
        self.0 & 2 != 0
    }
    pub const fn write(self) -> bool {
        self.0 & 1 != 0
    }
}

/// A thread's priority and maximum controlled priority (the highest priority it may
/// give other threads): bits 15..8 mcp, 7..0 priority.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct PrioProps(pub Word);

impl PrioProps {
    /// `seL4_PrioProps_new(mcp, prio)`.
    pub const fn new(mcp: u8, prio: u8) -> PrioProps {
        PrioProps((mcp as Word) << 8 | prio as Word)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rights_bits_match_the_bitfield() {
        assert_eq!(CapRights::ALL.0, 0b111);
        assert_eq!(CapRights::READ_WRITE.0, 0b011);
        assert_eq!(CapRights::new(true, false, false).0, 0b100);
        let r = CapRights::new(true, false, true);
        assert!(r.grant() && !r.read() && r.write());
    }

    #[test]
    fn prio_props_pack_mcp_above_prio() {
        assert_eq!(PrioProps::new(0xfe, 0x12).0, 0xfe12);
    }
}
