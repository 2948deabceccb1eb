//! The `ipc` protocol over seL4 IPC: the same request and reply bytes as every other
//! transport, carried as a byte message (`crate::bytes`) with label [`LABEL_IPC`] in an
//! `seL4_Call` on the server's endpoint; the reply comes back the same way. The
//! caller's identity is the badge of its endpoint capability, which the kernel
//! delivers to the server; no field of the message names the caller.

/// seL4 message label of a message carrying `ipc` bytes.
pub const LABEL_IPC: u64 = 0x1c;

/// The client end: an endpoint capability to the server (badged by the root task).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub struct Sel4Transport(pub sel4::Cap<sel4::cap_type::Endpoint>);

#[cfg(target_arch = "x86_64")]
impl ipc::Transport for Sel4Transport {
    fn call(
        &mut self,
        request: &[u8],
        reply: &mut [u8; ipc::MAX_MSG_BYTES],
    ) -> Result<usize, ipc::Error> {
        if request.len() > ipc::MAX_MSG_BYTES {
            return Err(ipc::Error::Transport);
        }
        let len = crate::bytes::set_mrs(request);
        let info = self
            .0
            .call(sel4::MessageInfo::new(LABEL_IPC, 0, 0, len as u64));
        if info.label() != LABEL_IPC {
            return Err(ipc::Error::Transport);
        }
        crate::bytes::get_mrs(info.length() as usize, reply).map_err(|_| ipc::Error::Transport)
    }
}

/// The server end: receives requests on `ep` and answers each one with
/// `seL4_ReplyRecv`.
#[cfg(target_arch = "x86_64")]
pub struct Sel4Server {
    ep: sel4::Cap<sel4::cap_type::Endpoint>,
}

/// What arrived on a server's endpoint.
#[cfg(target_arch = "x86_64")]
pub enum Incoming<'a> {
    /// A call with `ipc` bytes, from the capability with this badge.
    Request { badge: u64, bytes: &'a [u8] },
    /// A call that is not a well-formed byte message: answer with an error reply.
    Malformed { badge: u64 },
    /// A signal on the notification bound to the server's TCB (not a call: no reply).
    Signal { bits: u64 },
}

#[cfg(target_arch = "x86_64")]
impl Sel4Server {
    pub const fn new(ep: sel4::Cap<sel4::cap_type::Endpoint>) -> Self {
        Sel4Server { ep }
    }

    fn classify(
        info: sel4::MessageInfo,
        badge: u64,
        is_signal: bool,
        buf: &mut [u8; ipc::MAX_MSG_BYTES],
    ) -> Incoming<'_> {
        if is_signal {
            return Incoming::Signal { bits: badge };
        }
        if info.label() != LABEL_IPC {
            return Incoming::Malformed { badge };
        }
        match crate::bytes::get_mrs(info.length() as usize, buf) {
            Ok(n) => Incoming::Request {
                badge,
                bytes: &buf[..n],
            },
            Err(_) => Incoming::Malformed { badge },
        }
    }

    /// Waits for the first message. `is_signal(badge)` tells a bound notification's
    /// signal from a call (the badge schemes keep them apart, see
    /// `capdl_spec::badge`).
    pub fn recv<'b>(
        &self,
        buf: &'b mut [u8; ipc::MAX_MSG_BYTES],
        is_signal: impl Fn(u64) -> bool,
    ) -> Incoming<'b> {
        let (info, badge) = self.ep.recv();
        Self::classify(info, badge, is_signal(badge), buf)
    }

    /// Replies to the current caller with `reply` bytes, then waits for the next
    /// message.
    pub fn reply_recv<'b>(
        &self,
        reply: &[u8],
        buf: &'b mut [u8; ipc::MAX_MSG_BYTES],
        is_signal: impl Fn(u64) -> bool,
    ) -> Incoming<'b> {
        let len = crate::bytes::set_mrs(&reply[..reply.len().min(ipc::MAX_MSG_BYTES)]);
        let (info, badge) = self
            .ep
            .reply_recv(sel4::MessageInfo::new(LABEL_IPC, 0, 0, len as u64));
        Self::classify(info, badge, is_signal(badge), buf)
    }
}
