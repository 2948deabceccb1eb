//! Typed capability pointers.

use core::fmt;
use core::marker::PhantomData;
use sel4_sys::CPtr;

/// The kind of object a capability refers to.
pub trait CapType: Copy {
    /// For diagnostics.
    const NAME: &'static str;
}

/// Marker types for [`Cap`].
pub mod cap_type {
    macro_rules! cap_types {
        ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
            $(#[$doc])*
            #[derive(Clone, Copy, Debug, PartialEq, Eq)]
            pub struct $name;
            impl super::CapType for $name {
                const NAME: &'static str = stringify!($name);
            }
        )*};
    }
    cap_types! {
        /// Untyped memory.
        Untyped,
        /// A thread control block.
        Tcb,
        /// An IPC endpoint.
        Endpoint,
        /// A notification (a word of signal bits).
        Notification,
        /// A CNode (a table of capability slots).
        CNode,
        /// An x86_64 VSpace root: a PML4.
        VSpace,
        /// A page-directory-pointer table.
        Pdpt,
        /// A page directory.
        PageDirectory,
        /// A page table.
        PageTable,
        /// A 4 KiB frame.
        Granule,
        /// A 2 MiB frame.
        LargePage,
        /// A 1 GiB frame (kernels with CONFIG_HUGE_PAGE).
        HugePage,
        /// Authority to create ASID pools.
        AsidControl,
        /// An ASID pool.
        AsidPool,
        /// A range of x86 I/O ports.
        IoPort,
        /// Authority over all IRQs.
        IrqControl,
        /// One IRQ.
        IrqHandler,
        /// A capability of a type the program does not track.
        Unspecified,
    }
}

/// A capability to an object of type `T`, named by its CPtr in the current thread's
/// CSpace. Copying a `Cap` copies the name, not the capability.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Cap<T: CapType> {
    cptr: CPtr,
    _type: PhantomData<T>,
}

impl<T: CapType> Cap<T> {
    /// The capability at `cptr`.
    pub const fn from_bits(cptr: CPtr) -> Cap<T> {
        Cap {
            cptr,
            _type: PhantomData,
        }
    }
    /// Its CPtr.
    pub const fn bits(self) -> CPtr {
        self.cptr
    }
    /// The same slot seen as another type (no check: the kernel checks on use).
    pub const fn cast<U: CapType>(self) -> Cap<U> {
        Cap::from_bits(self.cptr)
    }
}

impl<T: CapType> fmt::Debug for Cap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cap<{}>({:#x})", T::NAME, self.cptr)
    }
}

/// A slot addressed from a CNode: `index` resolved with `depth` bits from `root`. The
/// CNode operations (`CNode_Copy`, `Mint`, `Move`, `Delete`, `Revoke`...) take these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AbsoluteCPtr {
    root: Cap<cap_type::CNode>,
    index: CPtr,
    depth: u8,
}

impl AbsoluteCPtr {
    pub const fn new(root: Cap<cap_type::CNode>, index: CPtr, depth: u8) -> AbsoluteCPtr {
        AbsoluteCPtr { root, index, depth }
    }
    pub const fn root(&self) -> Cap<cap_type::CNode> {
        self.root
    }
    pub const fn index(&self) -> CPtr {
        self.index
    }
    pub const fn depth(&self) -> u8 {
        self.depth
    }
}
