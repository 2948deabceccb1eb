//! Guest RAM as the vmm-server sees it: guest-physical addresses `[0, size)` backed by
//! one contiguous host-physical range in the [`PhysMap`] (the layout the runtime chose
//! and also gave the mmu-server in `AddMemSlot`).

use physmem::PhysMap;

/// An access outside guest RAM (or to memory the map does not back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutsideRam {
    pub gpa: u64,
    pub len: u64,
}

/// What the loader and the device models need from guest memory.
pub trait GuestRam {
    /// Bytes of RAM, starting at guest-physical 0.
    fn size(&self) -> u64;
    /// Copies `bytes` to `gpa`.
    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OutsideRam>;
    /// Copies from `gpa` into `buf`.
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam>;
    /// Fills `[gpa, gpa + len)` with zeroes.
    fn zero(&mut self, gpa: u64, len: u64) -> Result<(), OutsideRam> {
        let zeroes = [0u8; 256];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64);
            self.write(gpa + done, &zeroes[..n as usize])?;
            done += n;
        }
        Ok(())
    }
}

/// Guest RAM backed by `[hpa_base, hpa_base + size)` of a [`PhysMap`].
#[derive(Clone, Debug)]
pub struct PhysRam {
    map: PhysMap,
    hpa_base: u64,
    size: u64,
}

impl PhysRam {
    /// `map` must back the whole hpa range (checked: an unbacked range is refused).
    pub fn new(map: PhysMap, hpa_base: u64, size: u64) -> Result<PhysRam, OutsideRam> {
        if size == 0 || map.local(hpa_base, size, true).is_none() {
            return Err(OutsideRam { gpa: 0, len: size });
        }
        Ok(PhysRam {
            map,
            hpa_base,
            size,
        })
    }

    /// The host-physical address backing `gpa`, if `[gpa, gpa + len)` is RAM.
    pub fn hpa(&self, gpa: u64, len: u64) -> Result<u64, OutsideRam> {
        match gpa.checked_add(len) {
            Some(end) if end <= self.size => Ok(self.hpa_base + gpa),
            _ => Err(OutsideRam { gpa, len }),
        }
    }

    pub fn hpa_base(&self) -> u64 {
        self.hpa_base
    }

    pub fn map(&self) -> &PhysMap {
        &self.map
    }
}

impl GuestRam for PhysRam {
    fn size(&self) -> u64 {
        self.size
    }

    fn write(&mut self, gpa: u64, bytes: &[u8]) -> Result<(), OutsideRam> {
        let hpa = self.hpa(gpa, bytes.len() as u64)?;
        self.map.write(hpa, bytes).ok_or(OutsideRam {
            gpa,
            len: bytes.len() as u64,
        })
    }

    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), OutsideRam> {
        let hpa = self.hpa(gpa, buf.len() as u64)?;
        self.map.read(hpa, buf).ok_or(OutsideRam {
            gpa,
            len: buf.len() as u64,
        })
    }
}
