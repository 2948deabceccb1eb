//! `seL4_MessageInfo` (libsel4 `shared_types_64.bf`): the tag of every message.
//! Word layout, most significant first: 32 bits padding, label 20, capsUnwrapped 3,
//! extraCaps 2, length 7.

use crate::Word;

/// The tag of a message: its label, how many message registers and extra caps it
/// carries, and (on receipt) which of the caps were unwrapped into badges.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
#[repr(transparent)]
pub struct MessageInfo(pub Word);

const LENGTH_BITS: u32 = 7;
const EXTRA_CAPS_SHIFT: u32 = 7;
const EXTRA_CAPS_BITS: u32 = 2;
const UNWRAPPED_SHIFT: u32 = 9;
const UNWRAPPED_BITS: u32 = 3;
const LABEL_SHIFT: u32 = 12;
const LABEL_BITS: u32 = 20;

const fn field(v: Word, bits: u32) -> Word {
    v & ((1 << bits) - 1)
}

impl MessageInfo {
    /// `seL4_MessageInfo_new`: fields wider than their bit field are truncated, as in C.
    pub const fn new(
        label: Word,
        caps_unwrapped: Word,
        extra_caps: Word,
        length: Word,
    ) -> MessageInfo {
        MessageInfo(
            field(label, LABEL_BITS) << LABEL_SHIFT
                | field(caps_unwrapped, UNWRAPPED_BITS) << UNWRAPPED_SHIFT
                | field(extra_caps, EXTRA_CAPS_BITS) << EXTRA_CAPS_SHIFT
                | field(length, LENGTH_BITS),
        )
    }
    /// The label: an invocation label on a kernel invocation, the error on its reply,
    /// free for user-level protocols.
    pub const fn label(self) -> Word {
        field(self.0 >> LABEL_SHIFT, LABEL_BITS)
    }
    /// Bit i set: extra cap i was a badged endpoint cap of the receiver's endpoint and
    /// arrived as its badge.
    pub const fn caps_unwrapped(self) -> Word {
        field(self.0 >> UNWRAPPED_SHIFT, UNWRAPPED_BITS)
    }
    /// Number of extra capabilities.
    pub const fn extra_caps(self) -> Word {
        field(self.0 >> EXTRA_CAPS_SHIFT, EXTRA_CAPS_BITS)
    }
    /// Number of message registers.
    pub const fn length(self) -> Word {
        field(self.0, LENGTH_BITS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_in_their_bits() {
        let m = MessageInfo::new(0xabcde, 0b101, 0b10, 0x55);
        assert_eq!(m.0, 0xabcde << 12 | 0b101 << 9 | 0b10 << 7 | 0x55);
        assert_eq!(
            (m.label(), m.caps_unwrapped(), m.extra_caps(), m.length()),
            (0xabcde, 0b101, 0b10, 0x55)
        );
    }

    #[test]
    fn oversized_fields_are_truncated_not_spilled() {
        let m = MessageInfo::new(0x1f_ffff, 0, 0, 0x80);
        assert_eq!(m.label(), 0xf_ffff);
        assert_eq!(m.length(), 0);
        assert_eq!(m.0 >> 32, 0, "the upper half is padding");
    }

    #[test]
    fn length_field_holds_the_longest_message() {
        let max = crate::MSG_MAX_LENGTH as Word;
        assert_eq!(MessageInfo::new(0, 0, 0, max).length(), max);
        assert_eq!(crate::MSG_LENGTH_BITS as u32, LENGTH_BITS);
        assert_eq!(crate::MSG_EXTRA_CAP_BITS as u32, EXTRA_CAPS_BITS);
    }
}
