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
    }
}
