//! Free slots of the root CNode, handed out in order from the boot info's empty range.

use sel4::cap_type::Untyped;
use sel4::{init_thread, Cap, CapType, ObjectBlueprint};
use sel4_root_task::BootInfo;

pub struct Slots {
    next: u64,
    end: u64,
}

impl Slots {
    pub fn new(bi: &BootInfo) -> Slots {
        let empty = bi.empty;
        Slots {
            next: empty.start,
            end: empty.end,
        }
    }

    /// The next free slot; `RangeError` once the boot info's empty range is used up.
    pub fn alloc(&mut self) -> sel4::Result<u64> {
        if self.next >= self.end {
            return Err(sel4::Error::RangeError);
        }
        self.next += 1;
        Ok(self.next - 1)
    }

    /// Retypes one object of `blueprint` from `ut` into the next free slot.
    pub fn retype<T: CapType>(
        &mut self,
        ut: Cap<Untyped>,
        blueprint: ObjectBlueprint,
    ) -> sel4::Result<Cap<T>> {
        let slot = self.alloc()?;
        // The destination CNode is the root CNode itself, named from the root CNode.
        let root = init_thread::slot(init_thread::CNODE.bits());
        ut.untyped_retype(blueprint, &root, slot as usize, 1)?;
        Ok(Cap::from_bits(slot))
    }
}
