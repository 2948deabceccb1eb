//! Sending an encoded invocation to the kernel.

use crate::{Error, Invocation, Result};
use sel4_sys::{ipc_buffer, syscalls, CPtr, MessageInfo, Word, FAST_MESSAGE_REGISTERS};

/// Invokes `service` with `inv` by `seL4_Call`: words past the fourth and the extra
/// caps go through the IPC buffer, the first four in registers. Returns the reply's
/// first message registers (where output parameters are), or the kernel's error.
pub(crate) fn invoke(service: CPtr, inv: &Invocation) -> Result<[Word; FAST_MESSAGE_REGISTERS]> {
    let words = inv.words();
    let mut fast = [0; FAST_MESSAGE_REGISTERS];
    for (i, w) in words.iter().enumerate() {
        if i < FAST_MESSAGE_REGISTERS {
            fast[i] = *w;
        } else {
            ipc_buffer::set_mr(i, *w);
        }
    }
    for (i, c) in inv.caps().iter().enumerate() {
        ipc_buffer::set_cap(i, *c);
    }
    let info = MessageInfo::new(
        inv.label as Word,
        0,
        inv.caps().len() as Word,
        words.len() as Word,
    );
    let (reply, mrs) = syscalls::call(service, info, fast);
    Error::check(reply.label())?;
    Ok(mrs)
}
