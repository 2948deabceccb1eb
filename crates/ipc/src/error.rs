//! The closed set of protocol errors. The numbers are stable: they travel on the wire
//! and tests and tools match on them.

/// Every error a request can get back. `#[non_exhaustive]` is deliberately *not* used:
/// the set is closed, and a new variant is a protocol change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Error {
    /// The message is shorter than its label says (or shorter than a label).
    Truncated = 1,
    /// The label names no known message.
    UnknownLabel = 2,
    /// The message is longer than the message its label names.
    TrailingBytes = 3,
    /// A field holds a value outside its range (an unknown enum value, a flag that must
    /// be zero, a misaligned address, ...).
    InvalidArgument = 4,
    /// The caller does not hold the authority the request needs.
    PermissionDenied = 5,
    /// The badge names no VM (CreateVm was never sent for it).
    NoSuchVm = 6,
    /// The VM already exists.
    VmExists = 7,
    /// The server ran out of a fixed resource (frames, slots) even after reclaiming.
    OutOfMemory = 8,
    /// The request is well formed but not allowed in the VM's current state.
    InvalidState = 9,
    /// A guest-physical or guest-virtual address is outside every memory slot.
    BadAddress = 10,
    /// The reply buffer of the caller was too small, or the transport failed.
    Transport = 11,
    /// The request is valid but the server does not implement it.
    NotSupported = 12,
}

impl Error {
    /// Every variant, in wire-number order.
    pub const ALL: [Error; 12] = [
        Error::Truncated,
        Error::UnknownLabel,
        Error::TrailingBytes,
        Error::InvalidArgument,
        Error::PermissionDenied,
        Error::NoSuchVm,
        Error::VmExists,
        Error::OutOfMemory,
        Error::InvalidState,
        Error::BadAddress,
        Error::Transport,
        Error::NotSupported,
    ];

    /// The stable wire number.
    pub const fn code(self) -> u32 {
        self as u32
    }

    /// The error a wire number stands for; `None` for 0 (success) and unknown numbers.
    pub fn from_code(code: u32) -> Option<Error> {
        Error::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// A short human-readable description, for diagnostics.
    pub const fn describe(self) -> &'static str {
        match self {
            Error::Truncated => "message truncated",
            Error::UnknownLabel => "unknown message label",
            Error::TrailingBytes => "message longer than its label allows",
            Error::InvalidArgument => "invalid argument",
            Error::PermissionDenied => "permission denied (capability not held)",
            Error::NoSuchVm => "no such VM",
            Error::VmExists => "VM already exists",
            Error::OutOfMemory => "out of memory",
            Error::InvalidState => "request not allowed in the current state",
            Error::BadAddress => "address outside every memory slot",
            Error::Transport => "transport failure",
            Error::NotSupported => "not supported",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} (error {})", self.describe(), self.code())
    }
}
