//! The guest images embedded at build time (`build.rs`), by name.

mod table {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// The image named `name` (the spec's `image`).
pub fn find(name: &str) -> Option<&'static [u8]> {
    table::GUESTS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

/// The names of the embedded images, for a message.
pub struct Names;

impl core::fmt::Display for Names {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, (name, _)) in table::GUESTS.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}
