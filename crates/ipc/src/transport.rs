//! Transports carry request bytes to a server and reply bytes back. The server side is
//! one trait, [`Server`]; the client side another, [`Transport`]. [`InProcess`] joins
//! them directly (unit tests); the host runtime joins them over a shared-memory
//! channel and the seL4 runtime over an endpoint, with the same bytes.

use crate::wire::{decode_reply, encode_request, Request, MAX_MSG_BYTES};
use crate::Error;
use core::cell::RefCell;

/// The identity of a caller, supplied by the transport (on seL4: the endpoint badge
/// the root task minted). Never read from the message body.
pub type Badge = u64;

/// A server: one request in, one reply out. `handle` must never panic on any input
/// and must always produce a reply (an error reply for a bad request).
pub trait Server {
    /// Handles `request` from the caller named by `badge`, writes the reply into
    /// `reply` and returns its length.
    fn handle(&mut self, badge: Badge, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> usize;
}

/// The client end of a call/reply channel.
pub trait Transport {
    /// Sends `request`, blocks for the reply, copies it into `reply` and returns its
    /// length.
    fn call(&mut self, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> Result<usize, Error>;
}

/// Calls the server directly in the same address space, with a fixed badge. Several
/// `InProcess` clients with different badges may share one server.
pub struct InProcess<'s, S: Server> {
    server: &'s RefCell<S>,
    badge: Badge,
}

impl<'s, S: Server> InProcess<'s, S> {
    pub fn new(server: &'s RefCell<S>, badge: Badge) -> Self {
        InProcess { server, badge }
    }
}

impl<S: Server> Transport for InProcess<'_, S> {
    fn call(&mut self, request: &[u8], reply: &mut [u8; MAX_MSG_BYTES]) -> Result<usize, Error> {
        let mut server = self.server.try_borrow_mut().map_err(|_| Error::Transport)?;
        Ok(server.handle(self.badge, request, reply))
    }
}

/// Sends a typed request over any transport and decodes the typed reply.
pub fn call<T: Transport + ?Sized, R: Request>(
    transport: &mut T,
    request: &R,
) -> Result<R::Reply, Error> {
    let mut out = [0u8; MAX_MSG_BYTES];
    let len = encode_request(request, &mut out)?;
    let mut reply = [0u8; MAX_MSG_BYTES];
    let got = transport.call(&out[..len], &mut reply)?;
    let bytes = reply.get(..got).ok_or(Error::Transport)?;
    decode_reply::<R>(bytes)
}
