//! Why the spec could not be instantiated. Each variant names the object or image at
//! fault, so a bad or too-large spec is a message, never a hang.

use capdl_spec::FormatError;
use core::fmt;
use pd_image::ElfError;

/// An object of the spec, for messages: `name` or `name[index]`.
#[derive(Clone, Copy, Debug)]
pub struct ObjName {
    pub name: &'static str,
    pub index: Option<u32>,
}

impl fmt::Display for ObjName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "{}[{i}]", self.name),
            None => f.write_str(self.name),
        }
    }
}

#[derive(Debug)]
pub enum Error {
    /// The root task was built without CAPVISOR_SPEC.
    NoSpec,
    /// The embedded blob is not a valid spec.
    BadSpec(FormatError),
    /// The kernel refused an invocation.
    Kernel {
        step: &'static str,
        object: ObjName,
        err: sel4::Error,
    },
    /// No untyped has room for the object.
    OutOfUntyped {
        object: ObjName,
        size_bits: usize,
    },
    /// No device untyped covers a device object's physical address (or it is used).
    NoDeviceMemory {
        object: ObjName,
        paddr: u64,
    },
    /// The root CNode has too few free slots.
    OutOfSlots {
        needed: u64,
        free: u64,
    },
    /// The spec asks for something this root task does not build.
    Unsupported {
        object: ObjName,
        what: &'static str,
    },
    /// A TCB names an ELF that was not embedded.
    MissingImage {
        pd: &'static str,
        elf: &'static str,
    },
    BadElf {
        elf: &'static str,
        err: ElfError,
    },
    /// A PT_LOAD segment lies outside the image region the spec maps.
    SegmentOutsideImage {
        elf: &'static str,
        vaddr: u64,
        end: u64,
        image_end: u64,
    },
    /// The spec is missing a structure the root task relies on.
    Malformed(&'static str),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NoSpec => write!(f, "no spec embedded (build with CAPVISOR_SPEC=<file.capdl.bin>)"),
            Error::BadSpec(e) => write!(f, "the embedded spec is malformed: {e:?}"),
            Error::Kernel { step, object, err } => write!(f, "{step} of {object}: {err}"),
            Error::OutOfUntyped { object, size_bits } => write!(
                f,
                "not enough untyped memory for {object} (2^{size_bits} bytes): the spec needs more RAM than the machine has"
            ),
            Error::NoDeviceMemory { object, paddr } => write!(
                f,
                "{object}: no free device memory at physical address {paddr:#x} (is the device there?)"
            ),
            Error::OutOfSlots { needed, free } => {
                write!(f, "the spec needs {needed} CNode slots, the root CNode has {free} free")
            }
            Error::Unsupported { object, what } => write!(f, "{object}: {what} is not supported"),
            Error::MissingImage { pd, elf } => {
                write!(f, "PD {pd}: ELF image {elf:?} was not embedded into the root task")
            }
            Error::BadElf { elf, err } => write!(f, "ELF image {elf:?}: {err}"),
            Error::SegmentOutsideImage { elf, vaddr, end, image_end } => write!(
                f,
                "ELF image {elf:?}: segment {vaddr:#x}..{end:#x} lies outside the image region (ends at {image_end:#x}): raise image_size in system.toml"
            ),
            Error::Malformed(what) => write!(f, "the spec has no {what}"),
        }
    }
}

/// Attaches the step and object to a kernel error.
pub trait Step<T> {
    fn step(self, step: &'static str, object: ObjName) -> Result<T, Error>;
}

impl<T> Step<T> for sel4::Result<T> {
    fn step(self, step: &'static str, object: ObjName) -> Result<T, Error> {
        self.map_err(|err| Error::Kernel { step, object, err })
    }
}
