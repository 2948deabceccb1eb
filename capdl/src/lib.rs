//! capvisor's system description, from `system.toml` to a capDL spec.
//!
//! ```text
//! system.toml --System::from_toml--> System --build--> Spec --to_capdl--> capDL text
//!                                                          \--encode----> binary spec (capdl_spec)
//! ```
//! [`System::from_toml`] rejects a malformed file with a [`SpecError`] naming the field;
//! [`build`] runs the numbered builder steps; [`check::check`] holds the structural
//! rules every spec keeps. The `capdl` binary wraps these (`capdl print`,
//! `capdl check`, `capdl binary`).

pub mod binary;
pub mod builder;
pub mod cdl;
pub mod check;
pub mod error;
mod raw;
pub mod size;
pub mod system;
pub mod text;

pub use binary::{decode, encode, DecodeError};
pub use builder::{build, BuildError};
pub use cdl::Spec;
pub use error::SpecError;
pub use system::System;
pub use text::to_capdl;

/// Any failure between a system.toml and its spec.
#[derive(Debug)]
pub enum Error {
    Spec(SpecError),
    Build(BuildError),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Spec(e) => e.fmt(f),
            Error::Build(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {}

/// system.toml text -> validated, built spec.
pub fn spec_from_toml(text: &str) -> Result<Spec, Error> {
    let system = System::from_toml(text).map_err(Error::Spec)?;
    build(&system).map_err(Error::Build)
}
