//! `seL4_Error`: why the kernel refused an invocation.

use core::fmt;
use sel4_sys::ErrorCode;

/// The error of a failed invocation (`seL4_Error` without `seL4_NoError`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// `seL4_InvalidArgument`
    InvalidArgument,
    /// `seL4_InvalidCapability`
    InvalidCapability,
    /// `seL4_IllegalOperation`
    IllegalOperation,
    /// `seL4_RangeError`
    RangeError,
    /// `seL4_AlignmentError`
    AlignmentError,
    /// `seL4_FailedLookup`
    FailedLookup,
    /// `seL4_TruncatedMessage`
    TruncatedMessage,
    /// `seL4_DeleteFirst`
    DeleteFirst,
    /// `seL4_RevokeFirst`
    RevokeFirst,
    /// `seL4_NotEnoughMemory`
    NotEnoughMemory,
    /// A reply label that is no seL4 5.0.0 error code.
    Unknown(u64),
}

/// The result of an invocation.
pub type Result<T> = core::result::Result<T, Error>;

const ALL: [(Error, ErrorCode); 10] = [
    (Error::InvalidArgument, ErrorCode::InvalidArgument),
    (Error::InvalidCapability, ErrorCode::InvalidCapability),
    (Error::IllegalOperation, ErrorCode::IllegalOperation),
    (Error::RangeError, ErrorCode::RangeError),
    (Error::AlignmentError, ErrorCode::AlignmentError),
    (Error::FailedLookup, ErrorCode::FailedLookup),
    (Error::TruncatedMessage, ErrorCode::TruncatedMessage),
    (Error::DeleteFirst, ErrorCode::DeleteFirst),
    (Error::RevokeFirst, ErrorCode::RevokeFirst),
    (Error::NotEnoughMemory, ErrorCode::NotEnoughMemory),
];

impl Error {
    /// The error a reply label reports: None for `seL4_NoError` (0).
    pub fn from_code(code: u64) -> Option<Error> {
        if code == ErrorCode::NoError as u64 {
            return None;
        }
        Some(
            ALL.iter()
                .find(|(_, c)| *c as u64 == code)
                .map_or(Error::Unknown(code), |(e, _)| *e),
        )
    }

    /// The kernel's number for this error.
    pub fn code(self) -> u64 {
        match self {
            Error::Unknown(c) => c,
            e => ALL
                .iter()
                .find(|(x, _)| *x == e)
                .map_or(0, |(_, c)| *c as u64),
        }
    }

    /// Turns a reply label into a result.
    pub fn check(code: u64) -> Result<()> {
        match Error::from_code(code) {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Unknown(c) => write!(f, "unknown seL4 error {c}"),
            e => write!(f, "seL4_{e:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_against_the_generated_enum() {
        assert_eq!(Error::from_code(0), None);
        for code in 1..=10u64 {
            let e = Error::from_code(code).expect("nonzero is an error");
            assert_eq!(e.code(), code);
            assert!(!matches!(e, Error::Unknown(_)));
        }
        assert_eq!(
            Error::from_code(ErrorCode::NotEnoughMemory as u64),
            Some(Error::NotEnoughMemory)
        );
        assert_eq!(Error::from_code(11), Some(Error::Unknown(11)));
        assert_eq!(Error::check(3), Err(Error::IllegalOperation));
    }
}
