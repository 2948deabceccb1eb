//! Framing helpers shared by the ipc tests.
#![allow(dead_code)]

use ipc::{encode_request, Request, MAX_MSG_BYTES};

/// A request frame by hand: `label` (u32 LE) then `body`.
pub fn framed(label: u32, body: &[u8]) -> Vec<u8> {
    let mut v = label.to_le_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// The frame `encode_request` makes for `r`.
pub fn encode<R: Request>(r: &R) -> Vec<u8> {
    let mut buf = [0u8; MAX_MSG_BYTES];
    let n = encode_request(r, &mut buf).unwrap();
    buf[..n].to_vec()
}
