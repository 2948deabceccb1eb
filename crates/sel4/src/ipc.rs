//! IPC on endpoints and notifications. Message registers live in the IPC buffer
//! ([`get_mr`](crate::get_mr)/[`set_mr`](crate::set_mr)); these calls move the first
//! four between the buffer and the CPU registers the kernel uses for them, as libsel4
//! does, so a message is always read and written through the buffer.

use crate::cap::cap_type::{Endpoint, Notification};
use crate::Cap;
use sel4_sys::{
    ipc_buffer, syscalls, syscalls::FastMrs, MessageInfo, Word, FAST_MESSAGE_REGISTERS,
};

/// The badge of the capability a message or signal came through (0: unbadged); for a
/// notification, the OR of the badges of every signal since the last wait.
pub type Badge = Word;

fn load_fast(info: MessageInfo) -> FastMrs {
    let mut mrs = [0; FAST_MESSAGE_REGISTERS];
    for (i, m) in mrs.iter_mut().enumerate().take(info.length() as usize) {
        *m = ipc_buffer::get_mr(i).unwrap_or(0);
    }
    mrs
}

fn store_fast(info: MessageInfo, mrs: FastMrs) {
    for (i, m) in mrs.iter().enumerate().take(info.length() as usize) {
        ipc_buffer::set_mr(i, *m);
    }
}

impl Cap<Endpoint> {
    /// `seL4_Send`: sends the message in the IPC buffer, waiting for a receiver.
    pub fn send(self, info: MessageInfo) {
        syscalls::send(self.bits(), info, load_fast(info))
    }
    /// `seL4_NBSend`: sends only if a receiver is waiting (else drops the message).
    pub fn nb_send(self, info: MessageInfo) {
        syscalls::nb_send(self.bits(), info, load_fast(info))
    }
    /// `seL4_Call`: sends, then waits for the reply, which replaces the message in the
    /// IPC buffer.
    pub fn call(self, info: MessageInfo) -> MessageInfo {
        let (reply, mrs) = syscalls::call(self.bits(), info, load_fast(info));
        store_fast(reply, mrs);
        reply
    }
    /// `seL4_Recv`: waits for a message; returns its info and the sender's badge.
    pub fn recv(self) -> (MessageInfo, Badge) {
        let (badge, info, mrs) = syscalls::recv(self.bits());
        store_fast(info, mrs);
        (info, badge)
    }
    /// `seL4_NBRecv`: a message if one is waiting (else a zero-length info, badge 0).
    pub fn nb_recv(self) -> (MessageInfo, Badge) {
        let (badge, info, mrs) = syscalls::nb_recv(self.bits());
        store_fast(info, mrs);
        (info, badge)
    }
    /// `seL4_ReplyRecv`: replies to the last caller with the message in the buffer,
    /// then waits on this endpoint for the next one.
    pub fn reply_recv(self, reply: MessageInfo) -> (MessageInfo, Badge) {
        let (badge, info, mrs) = syscalls::reply_recv(self.bits(), reply, load_fast(reply));
        store_fast(info, mrs);
        (info, badge)
    }
}

/// `seL4_Reply`: replies to the last caller with the message in the IPC buffer.
pub fn reply(info: MessageInfo) {
    syscalls::reply(info, load_fast(info))
}

impl Cap<Notification> {
    /// `seL4_Signal`: ORs this cap's badge into the notification word.
    pub fn signal(self) {
        syscalls::send(self.bits(), MessageInfo::new(0, 0, 0, 0), [0; 4])
    }
    /// `seL4_Wait`: waits for a signal; returns the accumulated badges.
    pub fn wait(self) -> Badge {
        syscalls::recv(self.bits()).0
    }
    /// `seL4_Poll`: the accumulated badges, 0 if none.
    pub fn poll(self) -> Badge {
        syscalls::nb_recv(self.bits()).0
    }
}
