//! Mapping a frame into the root task's VSpace, creating the x86_64 paging structures
//! (PDPT, page directory, page table) under the PML4 as the kernel asks for them.

use sel4::cap_type::{Granule, PageDirectory, PageTable, Pdpt};
use sel4::{init_thread, Cap, CapRights, Error, VmAttributes};

/// Fresh paging structures to map if the address has none yet.
pub struct Structures {
    pub pdpt: Cap<Pdpt>,
    pub page_directory: Cap<PageDirectory>,
    pub page_table: Cap<PageTable>,
}

/// `X86_Page_Map` of `frame` at `vaddr`, read-write, write-back.
pub fn map_frame_only(frame: Cap<Granule>, vaddr: u64) -> sel4::Result<()> {
    frame.frame_map(
        init_thread::VSPACE,
        vaddr,
        CapRights::READ_WRITE,
        VmAttributes::WriteBack,
    )
}

/// Maps `frame` at `vaddr`, first mapping whichever of the structures are missing
/// (the kernel answers FailedLookup while a level is missing; the mapping calls of
/// the levels that already exist answer DeleteFirst, which is fine).
pub fn map_frame(frame: Cap<Granule>, vaddr: u64, s: &Structures) -> sel4::Result<()> {
    let vspace = init_thread::VSPACE;
    let attr = VmAttributes::WriteBack;
    for level in [
        s.pdpt.pdpt_map(vspace, vaddr, attr),
        s.page_directory.page_directory_map(vspace, vaddr, attr),
        s.page_table.page_table_map(vspace, vaddr, attr),
    ] {
        match level {
            Ok(()) | Err(Error::DeleteFirst) => {}
            Err(e) => return Err(e),
        }
    }
    map_frame_only(frame, vaddr)
}
