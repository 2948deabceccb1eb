//! The IPC buffer (`seL4_IPCBuffer`, libsel4 `shared_types.h`) and access to the
//! current thread's buffer. On x86_64 the kernel sets the GS base to the running
//! thread's IPC buffer on every return to user mode, so each thread reaches its own
//! buffer with `%gs`-relative moves and needs no pointer (libsel4 does the same).
//!
//! A thread whose TCB has no IPC buffer faults on these accesses (GS base 0).

use crate::{CPtr, Word, MSG_MAX_EXTRA_CAPS, MSG_MAX_LENGTH};

/// The layout of the IPC buffer (1 KiB, naturally aligned).
#[derive(Clone, Copy)]
#[repr(C, align(1024))]
pub struct IpcBuffer {
    pub tag: Word,
    pub msg: [Word; MSG_MAX_LENGTH],
    pub user_data: Word,
    /// Extra caps to send, or badges of received unwrapped caps.
    pub caps_or_badges: [Word; MSG_MAX_EXTRA_CAPS],
    /// Where a received capability goes: CNode, index and depth (`seL4_SetCapReceivePath`).
    pub receive_cnode: CPtr,
    pub receive_index: CPtr,
    pub receive_depth: Word,
}

/// Word index of message register 0 in the buffer.
const MSG_WORD: usize = 1;
/// Word index of `caps_or_badges[0]`.
const CAPS_WORD: usize = MSG_WORD + MSG_MAX_LENGTH + 1;
/// Word index of `receive_cnode`.
const RECEIVE_WORD: usize = CAPS_WORD + MSG_MAX_EXTRA_CAPS;

#[cfg(target_arch = "x86_64")]
mod gs {
    use crate::Word;

    /// Reads word `index` of the current thread's IPC buffer.
    #[inline(always)]
    pub fn read(index: usize) -> Word {
        let v: Word;
        // SAFETY: a %gs-relative load from the running thread's IPC buffer, which the
        // kernel maps and points GS at; it touches no memory Rust knows about.
        unsafe {
            core::arch::asm!("mov {v}, gs:[{off}]", v = out(reg) v, off = in(reg) index * 8, options(nostack, readonly, preserves_flags))
        };
        v
    }

    /// Writes word `index` of the current thread's IPC buffer.
    #[inline(always)]
    pub fn write(index: usize, v: Word) {
        // SAFETY: as for `read`; the IPC buffer belongs to this thread and is accessed
        // only through %gs, never through Rust references.
        unsafe {
            core::arch::asm!("mov gs:[{off}], {v}", v = in(reg) v, off = in(reg) index * 8, options(nostack, preserves_flags))
        };
    }
}

/// Message register `i` of the current thread (`seL4_GetMR`); None past the last one.
#[cfg(target_arch = "x86_64")]
pub fn get_mr(i: usize) -> Option<Word> {
    (i < MSG_MAX_LENGTH).then(|| gs::read(MSG_WORD + i))
}

/// Sets message register `i` (`seL4_SetMR`); false past the last one.
#[cfg(target_arch = "x86_64")]
pub fn set_mr(i: usize, v: Word) -> bool {
    let ok = i < MSG_MAX_LENGTH;
    if ok {
        gs::write(MSG_WORD + i, v);
    }
    ok
}

/// Sets the extra capability `i` of the next message (`seL4_SetCap`); false past the last.
#[cfg(target_arch = "x86_64")]
pub fn set_cap(i: usize, cptr: CPtr) -> bool {
    let ok = i < MSG_MAX_EXTRA_CAPS;
    if ok {
        gs::write(CAPS_WORD + i, cptr);
    }
    ok
}

/// The badge of unwrapped capability `i` of the last received message (`seL4_GetBadge`).
#[cfg(target_arch = "x86_64")]
pub fn get_badge(i: usize) -> Option<Word> {
    (i < MSG_MAX_EXTRA_CAPS).then(|| gs::read(CAPS_WORD + i))
}

/// Where the next received capability is stored (`seL4_SetCapReceivePath`).
#[cfg(target_arch = "x86_64")]
pub fn set_cap_receive_path(cnode: CPtr, index: CPtr, depth: Word) {
    gs::write(RECEIVE_WORD, cnode);
    gs::write(RECEIVE_WORD + 1, index);
    gs::write(RECEIVE_WORD + 2, depth);
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn layout_is_one_aligned_kibibyte() {
        assert_eq!(size_of::<IpcBuffer>(), 1024);
        assert_eq!(align_of::<IpcBuffer>(), 1024);
        assert_eq!(offset_of!(IpcBuffer, msg), MSG_WORD * 8);
        assert_eq!(offset_of!(IpcBuffer, caps_or_badges), CAPS_WORD * 8);
        assert_eq!(offset_of!(IpcBuffer, receive_cnode), RECEIVE_WORD * 8);
        assert_eq!(offset_of!(IpcBuffer, receive_depth), 1016);
    }
}
