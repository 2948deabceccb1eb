//! The wire protocol between a vmm-server and the mmu-server.
//!
//! Every request is a fixed-layout [`zerocopy`] struct with a [`Label`]. On the wire a
//! request is `label: u32 (LE)` followed by the struct's bytes; a reply is
//! `status: u32 (LE)` (0 = ok, otherwise an [`Error`] number) followed, when ok, by the
//! request's reply struct. No Rust object ever crosses a protection-domain boundary: the
//! seL4 runtime copies these bytes into message registers / the IPC buffer, the host
//! runtime into a shared-memory channel.
//!
//! The sender of a request is never named inside it: the transport supplies the
//! [`Badge`] (on seL4 the kernel-provided endpoint badge), and the server trusts nothing
//! else to decide which VM a request is about.
//!
//! Decoding never trusts the bytes: anything truncated, oversized, with an unknown label
//! or with an out-of-range field decodes to an [`Error`], never a panic.
#![no_std]
#![forbid(unsafe_code)]

pub mod badge;
mod error;
mod messages;
mod transport;
mod wire;

pub use error::Error;
pub use messages::*;
pub use transport::{call, Badge, InProcess, Server, Transport};
pub use wire::{
    decode_reply, encode_error_reply, encode_reply, encode_request, Label, Request, MAX_MSG_BYTES,
};
