//! `seL4_UserContext` for x86_64 (libsel4 x86_64 `types.h`): the register order of
//! `TCB_ReadRegisters`/`TCB_WriteRegisters`.

use crate::Word;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct UserContext {
    pub rip: Word,
    pub rsp: Word,
    pub rflags: Word,
    pub rax: Word,
    pub rbx: Word,
    pub rcx: Word,
    pub rdx: Word,
    pub rsi: Word,
    pub rdi: Word,
    pub rbp: Word,
    pub r8: Word,
    pub r9: Word,
    pub r10: Word,
    pub r11: Word,
    pub r12: Word,
    pub r13: Word,
    pub r14: Word,
    pub r15: Word,
    /// The FS base (thread-local storage).
    pub tls_base: Word,
}

impl UserContext {
    /// Number of words, the `count` of a full register write.
    pub const WORDS: usize = core::mem::size_of::<UserContext>() / 8;

    /// The context from words in the kernel's order (missing trailing words are 0).
    pub fn from_words(w: &[Word]) -> UserContext {
        let g = |i: usize| w.get(i).copied().unwrap_or(0);
        UserContext {
            rip: g(0),
            rsp: g(1),
            rflags: g(2),
            rax: g(3),
            rbx: g(4),
            rcx: g(5),
            rdx: g(6),
            rsi: g(7),
            rdi: g(8),
            rbp: g(9),
            r8: g(10),
            r9: g(11),
            r10: g(12),
            r11: g(13),
            r12: g(14),
            r13: g(15),
            r14: g(16),
            r15: g(17),
            tls_base: g(18),
        }
    }

    /// The context as words in the kernel's order.
    pub fn to_words(&self) -> [Word; UserContext::WORDS] {
        [
            self.rip,
            self.rsp,
            self.rflags,
            self.rax,
            self.rbx,
            self.rcx,
            self.rdx,
            self.rsi,
            self.rdi,
            self.rbp,
            self.r8,
            self.r9,
            self.r10,
            self.r11,
            self.r12,
            self.r13,
            self.r14,
            self.r15,
            self.tls_base,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nineteen_words_in_kernel_order() {
        assert_eq!(UserContext::WORDS, 19);
        let c = UserContext {
            rip: 1,
            rsp: 2,
            rdi: 9,
            tls_base: 19,
            ..Default::default()
        };
        let w = c.to_words();
        assert_eq!((w[0], w[1], w[8], w[18]), (1, 2, 9, 19));
        assert_eq!(UserContext::from_words(&w), c);
        assert_eq!(
            UserContext::from_words(&w[..2]).rdi,
            0,
            "missing words are zero"
        );
    }
}
