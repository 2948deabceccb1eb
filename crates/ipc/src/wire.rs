//! Framing: how a typed message becomes bytes and back.

use crate::Error;
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// The largest request or reply in bytes (label/status included). It fits in the seL4
/// IPC buffer's 120 message registers (960 bytes) with room to spare.
pub const MAX_MSG_BYTES: usize = 256;

/// Size of the leading label (requests) or status (replies).
const HEADER_BYTES: usize = 4;

/// Message labels. The numbers are stable wire values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Label {
    CreateVm = 1,
    AddMemSlot = 2,
    SetGuestRegs = 3,
    CrWrite = 4,
    TdpFault = 5,
    ShadowFault = 6,
    Invlpg = 7,
    Invpcid = 8,
    EmulatedWrite = 9,
    GvaToGpa = 10,
    GetStats = 11,
    VcpuCreated = 12,
    DisableNxHugePages = 13,
    DestroyVm = 14,
    RemoveMemSlot = 15,
    // NX huge pages (MMU_REFERENCE.md section 5). 16..=19 come only from the system
    // controller's badge ([`crate::badge::SYSTEM_CONTROL`]); 20 and 21 from a VM.
    SetNxHugePages = 16,
    SetNxRecovery = 17,
    GetNxHugePages = 18,
    NxRecoveryTick = 19,
    SyncMmu = 20,
    GetMapping = 21,
}

impl Label {
    /// The stable wire number.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// A request type: its label, the layout of its reply, and the range checks its
/// fields need beyond the layout (enum-like fields, must-be-zero fields).
pub trait Request: IntoBytes + FromBytes + Immutable + KnownLayout + Sized {
    const LABEL: Label;
    type Reply: IntoBytes + FromBytes + Immutable + KnownLayout + Sized;

    /// Checks every field whose layout admits values the protocol does not.
    fn validate(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Writes `label ++ bytes(req)` into `buf`, returning the length.
pub fn encode_request<R: Request>(req: &R, buf: &mut [u8]) -> Result<usize, Error> {
    encode_framed(R::LABEL.code(), req, buf)
}

/// Writes a success reply (`0 ++ bytes(payload)`) into `buf`, returning the length.
pub fn encode_reply<P: IntoBytes + Immutable>(payload: &P, buf: &mut [u8]) -> Result<usize, Error> {
    encode_framed(0, payload, buf)
}

/// Writes an error reply into `buf` (at least 4 bytes), returning the length.
pub fn encode_error_reply(err: Error, buf: &mut [u8]) -> usize {
    match buf.get_mut(..HEADER_BYTES) {
        Some(header) => {
            header.copy_from_slice(&err.code().to_le_bytes());
            HEADER_BYTES
        }
        None => 0,
    }
}

fn encode_framed<P: IntoBytes + Immutable + ?Sized>(
    header: u32,
    payload: &P,
    buf: &mut [u8],
) -> Result<usize, Error> {
    let body = payload.as_bytes();
    let total = HEADER_BYTES + body.len();
    let out = buf.get_mut(..total).ok_or(Error::Transport)?;
    out[..HEADER_BYTES].copy_from_slice(&header.to_le_bytes());
    out[HEADER_BYTES..].copy_from_slice(body);
    Ok(total)
}

/// Splits a message into its leading u32 (label or status) and the rest.
pub(crate) fn split_header(bytes: &[u8]) -> Result<(u32, &[u8]), Error> {
    if bytes.len() < HEADER_BYTES {
        return Err(Error::Truncated);
    }
    let (head, rest) = bytes.split_at(HEADER_BYTES);
    let mut word = [0u8; HEADER_BYTES];
    word.copy_from_slice(head);
    Ok((u32::from_le_bytes(word), rest))
}

/// Reads exactly one `T` from `body`: shorter is `Truncated`, longer is `TrailingBytes`.
pub(crate) fn read_exact<T: FromBytes + KnownLayout + Immutable + Sized>(
    body: &[u8],
) -> Result<T, Error> {
    let want = core::mem::size_of::<T>();
    if body.len() < want {
        return Err(Error::Truncated);
    }
    if body.len() > want {
        return Err(Error::TrailingBytes);
    }
    T::read_from_bytes(body).map_err(|_| Error::Truncated)
}

/// Decodes the reply to a request of type `R`: an error status becomes `Err`, an
/// unknown status is a transport error, a wrong-sized payload `Truncated`/`TrailingBytes`.
pub fn decode_reply<R: Request>(bytes: &[u8]) -> Result<R::Reply, Error> {
    let (status, body) = split_header(bytes)?;
    if status != 0 {
        return Err(Error::from_code(status).unwrap_or(Error::Transport));
    }
    read_exact::<R::Reply>(body)
}
