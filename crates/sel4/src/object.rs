//! What `Untyped_Retype` can make, and how big it is.

use sel4_sys::ObjectType;

/// An object to create from untyped memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectBlueprint {
    /// Untyped memory of 2^size_bits bytes.
    Untyped {
        size_bits: usize,
    },
    Tcb,
    Endpoint,
    Notification,
    /// A CNode of 2^size_bits slots.
    CNode {
        size_bits: usize,
    },
    /// An x86_64 VSpace root (PML4).
    VSpace,
    Pdpt,
    PageDirectory,
    PageTable,
    /// A 4 KiB frame.
    Granule,
    /// A 2 MiB frame.
    LargePage,
}

impl ObjectBlueprint {
    /// The kernel's object type.
    pub fn ty(self) -> ObjectType {
        match self {
            ObjectBlueprint::Untyped { .. } => ObjectType::Untyped,
            ObjectBlueprint::Tcb => ObjectType::TCB,
            ObjectBlueprint::Endpoint => ObjectType::Endpoint,
            ObjectBlueprint::Notification => ObjectType::Notification,
            ObjectBlueprint::CNode { .. } => ObjectType::CapTable,
            ObjectBlueprint::VSpace => ObjectType::X64_PML4,
            ObjectBlueprint::Pdpt => ObjectType::X86_PDPT,
            ObjectBlueprint::PageDirectory => ObjectType::X86_PageDirectory,
            ObjectBlueprint::PageTable => ObjectType::X86_PageTable,
            ObjectBlueprint::Granule => ObjectType::X86_4K,
            ObjectBlueprint::LargePage => ObjectType::X86_LargePage,
        }
    }

    /// The `size_bits` argument of `Untyped_Retype`: meaningful only for the
    /// variable-sized objects (untyped: bytes, CNode: slots), 0 otherwise.
    pub fn api_size_bits(self) -> usize {
        match self {
            ObjectBlueprint::Untyped { size_bits } | ObjectBlueprint::CNode { size_bits } => {
                size_bits
            }
            _ => 0,
        }
    }

    /// log2 of the memory the object takes.
    pub fn physical_size_bits(self) -> usize {
        use sel4_sys as s;
        match self {
            ObjectBlueprint::Untyped { size_bits } => size_bits,
            ObjectBlueprint::Tcb => s::TCB_BITS,
            ObjectBlueprint::Endpoint => s::ENDPOINT_BITS,
            ObjectBlueprint::Notification => s::NOTIFICATION_BITS,
            ObjectBlueprint::CNode { size_bits } => size_bits + s::SLOT_BITS,
            ObjectBlueprint::VSpace => s::PML4_BITS,
            ObjectBlueprint::Pdpt => s::PDPT_BITS,
            ObjectBlueprint::PageDirectory => s::PAGE_DIR_BITS,
            ObjectBlueprint::PageTable => s::PAGE_TABLE_BITS,
            ObjectBlueprint::Granule => s::PAGE_BITS,
            ObjectBlueprint::LargePage => s::LARGE_PAGE_BITS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_come_from_the_kernel_constants() {
        assert_eq!(ObjectBlueprint::Tcb.physical_size_bits(), 11);
        assert_eq!(
            ObjectBlueprint::CNode { size_bits: 4 }.physical_size_bits(),
            9
        );
        assert_eq!(ObjectBlueprint::CNode { size_bits: 4 }.api_size_bits(), 4);
        assert_eq!(ObjectBlueprint::Endpoint.api_size_bits(), 0);
        assert_eq!(ObjectBlueprint::LargePage.physical_size_bits(), 21);
        assert_eq!(ObjectBlueprint::Granule.ty(), ObjectType::X86_4K);
    }
}
