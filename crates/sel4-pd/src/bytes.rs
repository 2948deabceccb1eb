//! Byte strings in message registers: a message of bytes is MR0 = the byte count, then
//! the bytes packed little-endian, eight per word, from MR1. The console protocol and
//! the `ipc` transport both carry their bytes this way.

/// Why a byte message cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BytesError {
    /// No count word.
    Empty,
    /// The count is larger than the buffer or than the words the message carries.
    BadLength(u64),
}

/// Message registers a message of `n` bytes takes.
pub const fn words_for(n: usize) -> usize {
    1 + n.div_ceil(8)
}

/// Packs `bytes` into `words` (which must hold `words_for(bytes.len())`); returns the
/// message length in words, or None if `words` is too short.
pub fn pack(bytes: &[u8], words: &mut [u64]) -> Option<usize> {
    let len = words_for(bytes.len());
    let out = words.get_mut(..len)?;
    out[0] = bytes.len() as u64;
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        out[1 + i] = u64::from_le_bytes(w);
    }
    Some(len)
}

/// Unpacks a message of `length` words, read through `mr`, into `out`; returns the
/// byte count.
pub fn unpack(
    length: usize,
    mr: impl Fn(usize) -> u64,
    out: &mut [u8],
) -> Result<usize, BytesError> {
    if length == 0 {
        return Err(BytesError::Empty);
    }
    let n = mr(0);
    if n > out.len() as u64 || words_for(n as usize) > length {
        return Err(BytesError::BadLength(n));
    }
    let n = n as usize;
    for i in 0..n.div_ceil(8) {
        let w = mr(1 + i).to_le_bytes();
        let take = (n - i * 8).min(8);
        out[i * 8..i * 8 + take].copy_from_slice(&w[..take]);
    }
    Ok(n)
}

/// Writes `bytes` into this thread's message registers; returns the length in words.
#[cfg(target_arch = "x86_64")]
pub fn set_mrs(bytes: &[u8]) -> usize {
    sel4::set_mr(0, bytes.len() as u64);
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        sel4::set_mr(1 + i, u64::from_le_bytes(w));
    }
    words_for(bytes.len())
}

/// Reads the message just received (`length` words) into `out`.
#[cfg(target_arch = "x86_64")]
pub fn get_mrs(length: usize, out: &mut [u8]) -> Result<usize, BytesError> {
    unpack(length, |i| sel4::get_mr(i).unwrap_or(0), out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_length() {
        let src: [u8; 64] = core::array::from_fn(|i| (i * 13 + 1) as u8);
        for n in 0..=64 {
            let mut words = [0u64; 9];
            let len = pack(&src[..n], &mut words).unwrap();
            assert_eq!(len, words_for(n));
            let mut out = [0u8; 64];
            assert_eq!(unpack(len, |i| words[i], &mut out), Ok(n));
            assert_eq!(&out[..n], &src[..n]);
        }
    }

    #[test]
    fn refuses_what_does_not_fit() {
        let mut words = [0u64; 2];
        assert_eq!(pack(&[1; 9], &mut words), None);
        let mut out = [0u8; 4];
        assert_eq!(unpack(0, |_| 0, &mut out), Err(BytesError::Empty));
        // Longer than the buffer.
        assert_eq!(
            unpack(2, |i| if i == 0 { 5 } else { 0 }, &mut out),
            Err(BytesError::BadLength(5))
        );
        // Claims more bytes than the words sent.
        let mut big = [0u8; 64];
        assert_eq!(
            unpack(2, |i| if i == 0 { 9 } else { 0 }, &mut big),
            Err(BytesError::BadLength(9))
        );
    }
}
