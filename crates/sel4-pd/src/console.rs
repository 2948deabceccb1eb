//! The console protocol: PDs ask the UART driver PD to print bytes.
//!
//! One request is an `seL4_Call` on the console endpoint (CSpace slot
//! `slot::common::CONSOLE_EP`, badged with the caller's PD index + 1) with label
//! [`LABEL_PUT`], MR0 = the byte count (at most [`CHUNK`]) and the bytes packed
//! little-endian, eight per word, from MR1. The reply has label 0 and MR0 = the number
//! of bytes written, or label [`LABEL_ERROR`] if the request was malformed or the
//! device failed. Longer writes are split into chunks; since each chunk is a Call,
//! output from one PD is never reordered, and chunks of different PDs interleave only
//! at chunk boundaries.

/// Label of a print request.
pub const LABEL_PUT: u64 = 1;
/// Label of a refused request's reply.
pub const LABEL_ERROR: u64 = 0xe;
/// Most bytes in one request.
pub const CHUNK: usize = 128;
/// Message registers of the largest request: the count and CHUNK / 8 words.
pub const MAX_WORDS: usize = crate::bytes::words_for(CHUNK);

/// Why a request cannot be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleError {
    /// Not [`LABEL_PUT`].
    BadLabel(u64),
    /// The count is larger than [`CHUNK`] or than the words sent.
    BadLength(u64),
}

/// Encodes `bytes` (at most [`CHUNK`]) into `words`; returns the message length.
pub fn encode(bytes: &[u8], words: &mut [u64; MAX_WORDS]) -> usize {
    let n = bytes.len().min(CHUNK);
    // MAX_WORDS holds words_for(CHUNK).
    crate::bytes::pack(&bytes[..n], words).unwrap_or(0)
}

/// Decodes a request of `label` whose message registers are `mr(0..length)` into
/// `out`; returns the bytes.
pub fn decode(
    label: u64,
    length: usize,
    mr: impl Fn(usize) -> u64,
    out: &mut [u8; CHUNK],
) -> Result<&[u8], ConsoleError> {
    if label != LABEL_PUT {
        return Err(ConsoleError::BadLabel(label));
    }
    match crate::bytes::unpack(length, mr, out) {
        Ok(n) => Ok(&out[..n]),
        Err(crate::bytes::BytesError::Empty) => Err(ConsoleError::BadLength(0)),
        Err(crate::bytes::BytesError::BadLength(n)) => Err(ConsoleError::BadLength(n)),
    }
}

/// A client of the console: the endpoint capability in this PD's CSpace.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
pub struct Console(pub sel4::Cap<sel4::cap_type::Endpoint>);

#[cfg(target_arch = "x86_64")]
impl Console {
    /// The console at the standard slot.
    pub const fn standard() -> Console {
        Console(sel4::Cap::from_bits(crate::slot::common::CONSOLE_EP))
    }

    /// Prints `bytes` (each chunk one Call). False if the driver refused a chunk.
    pub fn write(&self, bytes: &[u8]) -> bool {
        let mut ok = true;
        for chunk in bytes.chunks(CHUNK) {
            let len = crate::bytes::set_mrs(chunk);
            let reply = self
                .0
                .call(sel4::MessageInfo::new(LABEL_PUT, 0, 0, len as u64));
            ok &= reply.label() == 0;
        }
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(bytes: &[u8]) -> ([u8; CHUNK], usize) {
        let mut words = [0u64; MAX_WORDS];
        let len = encode(bytes, &mut words);
        let mut out = [0u8; CHUNK];
        let n = decode(LABEL_PUT, len, |i| words[i], &mut out)
            .unwrap()
            .len();
        (out, n)
    }

    #[test]
    fn bytes_survive_encoding() {
        for len in [0usize, 1, 7, 8, 9, 100, CHUNK] {
            let bytes: [u8; CHUNK] = core::array::from_fn(|i| (i * 7 + 3) as u8);
            let (out, n) = round_trip(&bytes[..len]);
            assert_eq!(n, len);
            assert_eq!(&out[..n], &bytes[..len]);
        }
    }

    #[test]
    fn only_one_chunk_is_encoded() {
        let big = [b'x'; CHUNK + 10];
        let mut words = [0u64; MAX_WORDS];
        assert_eq!(encode(&big, &mut words), MAX_WORDS);
        assert_eq!(words[0], CHUNK as u64);
    }

    #[test]
    fn malformed_requests_are_refused() {
        let mut out = [0u8; CHUNK];
        assert_eq!(
            decode(7, 2, |_| 1, &mut out).err(),
            Some(ConsoleError::BadLabel(7))
        );
        assert_eq!(
            decode(LABEL_PUT, 0, |_| 0, &mut out).err(),
            Some(ConsoleError::BadLength(0))
        );
        // Claims 9 bytes but sends one word of them.
        assert_eq!(
            decode(LABEL_PUT, 2, |i| if i == 0 { 9 } else { 0 }, &mut out).err(),
            Some(ConsoleError::BadLength(9))
        );
        assert_eq!(
            decode(
                LABEL_PUT,
                MAX_WORDS,
                |i| if i == 0 { 999 } else { 0 },
                &mut out
            )
            .err(),
            Some(ConsoleError::BadLength(999))
        );
    }
}
