//! capvisor's seL4 root task. For now it proves the seL4 plumbing end to end on the
//! real kernel: it prints the boot info, makes objects from untyped memory, maps a
//! frame through paging structures it creates, starts a second thread in its own
//! VSpace, exchanges messages with it by seL4_Call / seL4_ReplyRecv, and ends QEMU
//! through the isa-debug-exit port with an I/O-port capability narrowed to that port.
//! (Instantiating the capDL spec and running the servers as PDs come later.)
#![no_std]
#![no_main]

mod child;
mod com1;
mod exit;
mod irq;
mod mapping;
mod slots;

use log::{error, info};
use sel4::cap_type::{
    Endpoint, Granule, IoPort, Notification, PageDirectory, PageTable, Pdpt, Tcb, Untyped, VSpace,
};
use sel4::{init_thread, Cap, CapRights, Error, MessageInfo, ObjectBlueprint, PrioProps};
use sel4_root_task::BootInfo;
use slots::Slots;

/// What the child thread asks for, and the labels of the protocol between the two.
const LABEL_MULTIPLY: u64 = 1;
const LABEL_REPORT: u64 = 2;
/// The badge the child's endpoint capability carries.
const CHILD_BADGE: u64 = 0x61;
/// The notification badge the child signals with at the end.
const DONE_BADGE: u64 = 0b100;
/// The badge COM1's interrupt signals with.
const IRQ_BADGE: u64 = 0x10;
/// Where the child's IPC buffer is mapped: PML4 slot 1, so the PDPT, page directory
/// and page table under it all have to be created.
const CHILD_IPC_BUFFER: u64 = 0x80_0000_0000;

sel4_root_task::declare_main!(main);

fn main(bi: &'static BootInfo) -> ! {
    sel4_root_task::logger::init(log::LevelFilter::Info);
    sel4_root_task::set_panic_hook(exit::failure);
    sel4::debug_println!(
        "capvisor root task: seL4 5.0.0 x86_64, kernel config {}",
        sel4_sys::KERNEL_CONFIG
    );
    let mut summary = heapless_line::Line::new();
    let _ = sel4_root_task::summarize(bi, &mut summary);
    info!("boot info: {}", summary.as_str());

    match run(bi) {
        Ok(()) => {
            sel4::debug_println!("capvisor root task: all checks passed");
            exit::success()
        }
        Err(e) => {
            error!("root task failed: {e}");
            exit::failure();
            loop {
                sel4::debug::debug_halt();
            }
        }
    }
}

/// Why a step failed: the step's name and the kernel's error.
struct Failure(&'static str, Error);

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.0, self.1)
    }
}

trait Step<T> {
    fn step(self, what: &'static str) -> Result<T, Failure>;
}

impl<T> Step<T> for sel4::Result<T> {
    fn step(self, what: &'static str) -> Result<T, Failure> {
        self.map_err(|e| Failure(what, e))
    }
}

/// An expected refusal: `Ok` if the kernel answered `expected`.
fn expect_err<T>(r: sel4::Result<T>, expected: Error, what: &'static str) -> Result<(), Failure> {
    match r {
        Err(e) if e == expected => {
            info!("{what}: refused with {e}, as it must be");
            Ok(())
        }
        Err(e) => Err(Failure(what, e)),
        Ok(_) => Err(Failure(what, Error::Unknown(0))),
    }
}

fn run(bi: &'static BootInfo) -> Result<(), Failure> {
    let mut slots = Slots::new(bi);
    let ut =
        largest_ram_untyped(bi).ok_or(Failure("find untyped memory", Error::NotEnoughMemory))?;

    // Objects from untyped memory.
    let ep: Cap<Endpoint> = slots
        .retype(ut, ObjectBlueprint::Endpoint)
        .step("retype endpoint")?;
    let ntfn: Cap<Notification> = slots
        .retype(ut, ObjectBlueprint::Notification)
        .step("retype notification")?;
    let tcb: Cap<Tcb> = slots.retype(ut, ObjectBlueprint::Tcb).step("retype TCB")?;
    let frame: Cap<Granule> = slots
        .retype(ut, ObjectBlueprint::Granule)
        .step("retype frame")?;
    info!("retyped endpoint {ep:?}, notification {ntfn:?}, TCB {tcb:?}, frame {frame:?}");
    expect_err(
        ut.untyped_retype(
            ObjectBlueprint::Endpoint,
            &init_thread::slot(init_thread::CNODE.bits()),
            ep.bits() as usize,
            1,
        ),
        Error::DeleteFirst,
        "retype into an occupied slot",
    )?;

    // CNode operations: copy, move, mint a badge, delete, revoke.
    let copy = slots.alloc().step("allocate a slot")?;
    init_thread::slot(copy)
        .copy(&init_thread::slot(ep.bits()), CapRights::ALL)
        .step("CNode_Copy")?;
    let moved = slots.alloc().step("allocate a slot")?;
    init_thread::slot(moved)
        .move_(&init_thread::slot(copy))
        .step("CNode_Move")?;
    init_thread::slot(moved).delete().step("CNode_Delete")?;
    let child_ep: Cap<Endpoint> = Cap::from_bits(slots.alloc().step("allocate a slot")?);
    let badge =
        sel4_sys::cap_data::badge(CHILD_BADGE).ok_or(Failure("badge", Error::InvalidArgument))?;
    init_thread::slot(child_ep.bits())
        .mint(&init_thread::slot(ep.bits()), CapRights::ALL, badge)
        .step("CNode_Mint badge")?;
    let child_ntfn: Cap<Notification> = Cap::from_bits(slots.alloc().step("allocate a slot")?);
    init_thread::slot(child_ntfn.bits())
        .mint(
            &init_thread::slot(ntfn.bits()),
            CapRights::WRITE,
            DONE_BADGE,
        )
        .step("CNode_Mint notification")?;
    info!("CNode copy, move, delete and mint done");

    // Map a fresh frame where nothing is mapped yet: the kernel first refuses for lack of
    // paging structures, then we create and map them.
    let structures = mapping::Structures {
        pdpt: slots
            .retype::<Pdpt>(ut, ObjectBlueprint::Pdpt)
            .step("retype PDPT")?,
        page_directory: slots
            .retype::<PageDirectory>(ut, ObjectBlueprint::PageDirectory)
            .step("retype page directory")?,
        page_table: slots
            .retype::<PageTable>(ut, ObjectBlueprint::PageTable)
            .step("retype page table")?,
    };
    expect_err(
        mapping::map_frame_only(frame, CHILD_IPC_BUFFER),
        Error::FailedLookup,
        "map a frame without page tables",
    )?;
    mapping::map_frame(frame, CHILD_IPC_BUFFER, &structures).step("map the child's IPC buffer")?;
    let paddr = frame.frame_get_address().step("X86_Page_GetAddress")?;
    // SAFETY: the frame was just mapped read-write at CHILD_IPC_BUFFER, 4 KiB, and
    // nothing else in this program refers to that address.
    let readback = unsafe {
        let p = CHILD_IPC_BUFFER as *mut u64;
        p.add(511).write_volatile(0x5eed_cafe);
        p.add(511).read_volatile()
    };
    info!("frame at paddr {paddr:#x} mapped at {CHILD_IPC_BUFFER:#x}, wrote and read back {readback:#x}");
    if readback != 0x5eed_cafe {
        return Err(Failure(
            "read back the mapped frame",
            Error::Unknown(readback),
        ));
    }

    // A child thread in our own VSpace and CSpace, on its own stack.
    tcb.tcb_configure(
        0,
        PrioProps::new(0, 200),
        init_thread::CNODE,
        0,
        init_thread::VSPACE,
        0,
        CHILD_IPC_BUFFER,
        frame,
    )
    .step("TCB_Configure")?;
    tcb.tcb_set_priority(200).step("TCB_SetPriority")?;
    tcb.tcb_set_space(0, init_thread::CNODE, 0, init_thread::VSPACE, 0)
        .step("TCB_SetSpace")?;
    tcb.tcb_set_ipc_buffer(CHILD_IPC_BUFFER, frame)
        .step("TCB_SetIPCBuffer")?;
    child::start(tcb, child_ep, child_ntfn).step("start the child")?;
    info!("child thread started");

    // Serve it: a multiplication request, then its report of the answer.
    let (req, badge) = ep.recv();
    let (a, b) = (sel4::get_mr(0).unwrap_or(0), sel4::get_mr(1).unwrap_or(0));
    sel4::debug_println!(
        "root: request label {} from badge {badge:#x}: {a} * {b}",
        req.label()
    );
    if req.label() != LABEL_MULTIPLY || badge != CHILD_BADGE || req.length() != 2 {
        return Err(Failure("the child's request", Error::InvalidArgument));
    }
    sel4::set_mr(0, a * b);
    let (report, badge) = ep.reply_recv(MessageInfo::new(0, 0, 0, 1));
    let answer = sel4::get_mr(0).unwrap_or(0);
    sel4::debug_println!(
        "root: report label {} from badge {badge:#x}: child received {answer}",
        report.label()
    );
    if report.label() != LABEL_REPORT || answer != a * b {
        return Err(Failure("the child's report", Error::InvalidArgument));
    }
    sel4::reply(MessageInfo::new(0, 0, 0, 0));
    let signalled = ntfn.wait();
    sel4::debug_println!("root: IPC round trip ok, child signalled {signalled:#x}");
    if signalled != DONE_BADGE {
        return Err(Failure("the child's signal", Error::InvalidArgument));
    }
    let regs = tcb.tcb_read_registers(true).step("TCB_ReadRegisters")?;
    // The child is stopped inside a syscall, where the kernel keeps no user rsp (it
    // returns with rsp = 0); our syscall wrappers hold the stack pointer in r12.
    let stack = child::stack_range();
    info!(
        "child stopped at rip {:#x} with its stack pointer {:#x} (r12) in its stack {:#x}..{:#x}",
        regs.rip, regs.r12, stack.start, stack.end
    );
    if !stack.contains(&regs.r12) {
        return Err(Failure(
            "the child ran on its own stack",
            Error::InvalidArgument,
        ));
    }

    // Revoking the endpoint deletes the badged copy we gave the child.
    init_thread::slot(ep.bits()).revoke().step("CNode_Revoke")?;
    let probe = slots.alloc().step("allocate a slot")?;
    expect_err(
        init_thread::slot(probe).move_(&init_thread::slot(child_ep.bits())),
        Error::FailedLookup,
        "move the revoked badged endpoint",
    )?;

    // A second VSpace gets an ASID from the root task's pool.
    let vspace: Cap<VSpace> = slots
        .retype(ut, ObjectBlueprint::VSpace)
        .step("retype a PML4")?;
    init_thread::ASID_POOL
        .asid_pool_assign(vspace)
        .step("X86_ASIDPool_Assign")?;
    info!("new VSpace {vspace:?} assigned an ASID");

    // A driver's view of COM1: its eight ports only.
    let com1: Cap<IoPort> = Cap::from_bits(slots.alloc().step("allocate a slot")?);
    init_thread::slot(com1.bits())
        .mint(
            &init_thread::slot(init_thread::IO_PORT.bits()),
            CapRights::ALL,
            sel4_sys::cap_data::io_port_range(com1::BASE, com1::BASE + 7),
        )
        .step("mint the COM1 port cap")?;
    com1::write(com1, "root: hello through the COM1 I/O-port cap\r\n").step("write COM1")?;

    // COM1's interrupt, delivered to a notification.
    let irq_ntfn: Cap<Notification> = slots
        .retype(ut, ObjectBlueprint::Notification)
        .step("retype the IRQ notification")?;
    // The IRQ signals with the badge of the cap it is bound to: a badge of 0 would
    // leave the word 0, indistinguishable from no signal.
    let irq_badged: Cap<Notification> = Cap::from_bits(slots.alloc().step("allocate a slot")?);
    init_thread::slot(irq_badged.bits())
        .mint(
            &init_thread::slot(irq_ntfn.bits()),
            CapRights::ALL,
            IRQ_BADGE,
        )
        .step("mint the IRQ notification badge")?;
    let handler_slot = init_thread::slot(slots.alloc().step("allocate a slot")?);
    match irq::com1_round_trip(handler_slot, com1, irq_badged).step("COM1 IRQ")? {
        Some(word) => sel4::debug_println!(
            "root: COM1 interrupt delivered to its notification (word {word:#x})"
        ),
        None => return Err(Failure("COM1 interrupt never arrived", Error::Unknown(0))),
    }

    // The I/O ports: narrow the global I/O-port cap to the isa-debug-exit ports.
    let exit_port: Cap<IoPort> = Cap::from_bits(slots.alloc().step("allocate a slot")?);
    init_thread::slot(exit_port.bits())
        .mint(
            &init_thread::slot(init_thread::IO_PORT.bits()),
            CapRights::ALL,
            sel4_sys::cap_data::io_port_range(exit::PORT, exit::PORT + 3),
        )
        .step("mint the isa-debug-exit port cap")?;
    expect_err(
        exit_port.ioport_in8(0x3f8),
        Error::IllegalOperation,
        "read COM1 through the exit-port cap",
    )?;
    exit::set_port(exit_port);
    Ok(())
}

/// The largest untyped of ordinary memory.
fn largest_ram_untyped(bi: &BootInfo) -> Option<Cap<Untyped>> {
    let start = { bi.untyped.start };
    bi.untypeds()
        .iter()
        .enumerate()
        .filter(|(_, u)| u.is_device == 0)
        .max_by_key(|(_, u)| u.size_bits)
        .map(|(i, _)| Cap::from_bits(start + i as u64))
}

/// A fixed-capacity line buffer for formatting without an allocator.
mod heapless_line {
    pub struct Line {
        buf: [u8; 256],
        len: usize,
    }
    impl Line {
        pub fn new() -> Line {
            Line {
                buf: [0; 256],
                len: 0,
            }
        }
        pub fn as_str(&self) -> &str {
            core::str::from_utf8(&self.buf[..self.len]).unwrap_or("<invalid utf-8>")
        }
    }
    impl core::fmt::Write for Line {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let n = s.len().min(self.buf.len() - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            if n < s.len() {
                return Err(core::fmt::Error);
            }
            Ok(())
        }
    }
}
