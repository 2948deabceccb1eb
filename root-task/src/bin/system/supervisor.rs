//! The supervisor: the root task receives every PD's faults on the fault endpoint
//! (each PD's fault capability carries its PD index + 1 as badge), logs the PD, the
//! fault and its registers, and then:
//! - restarts the mmu-server and the drivers (at most [`MAX_RESTARTS`] times each):
//!   the mmu-server's state is derived (every table can be rebuilt from guest memory
//!   and registers, which the vmm-servers hold), so a fresh mmu-server loses no VM and
//!   the vmm-servers re-create their MMU state when it answers `NoSuchVm`; a driver's
//!   state is its device's, which it initialises at start;
//! - leaves a vmm-server stopped (it holds its VM; it is not replied to). Once no
//!   vmm-server can run any more (each one finished or stopped) and one of them died,
//!   nothing will ever end the run: the supervisor ends QEMU through isa-debug-exit
//!   with [`EXIT_VMM_DIED`].
//!
//! A PD that has finished tells the supervisor with a message of its own on the same
//! endpoint (`capdl_spec::supervisor::LABEL_PD_DONE`), which is logged, never answered.
//!
//! Fault messages (seL4 5.0.0, libsel4 `shared_types.bf` and the x86_64
//! `constants.h`): the label is the fault type; a VM fault carries IP, address,
//! prefetch flag and FSR; a user exception IP, SP, RFLAGS, exception number and code.

use crate::instantiate::Running;
use capdl_spec::PdKind;
use log::{error, info};
use sel4::cap_type::Endpoint;
use sel4::Cap;

/// `seL4_FaultType` labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Cap {
        ip: u64,
        addr: u64,
    },
    UnknownSyscall {
        number: u64,
    },
    UserException {
        ip: u64,
        sp: u64,
        number: u64,
        code: u64,
    },
    Vm {
        ip: u64,
        addr: u64,
        prefetch: bool,
        fsr: u64,
    },
    Other(u64),
}

impl Fault {
    /// Decodes the message just received (label and message registers).
    fn decode(label: u64) -> Fault {
        let mr = |i| sel4::get_mr(i).unwrap_or(0);
        match label {
            1 => Fault::Cap {
                ip: mr(0),
                addr: mr(1),
            },
            // UnknownSyscall: the registers first, the syscall number in MR 18 on
            // x86_64 (seL4_UnknownSyscall_Syscall).
            2 => Fault::UnknownSyscall { number: mr(18) },
            3 => Fault::UserException {
                ip: mr(0),
                sp: mr(1),
                number: mr(3),
                code: mr(4),
            },
            5 => Fault::Vm {
                ip: mr(0),
                addr: mr(1),
                prefetch: mr(2) != 0,
                fsr: mr(3),
            },
            l => Fault::Other(l),
        }
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Fault::Cap { ip, addr } => write!(f, "capability fault at ip {ip:#x} (cptr {addr:#x})"),
            Fault::UnknownSyscall { number } => write!(f, "unknown syscall {number:#x}"),
            Fault::UserException {
                ip,
                sp,
                number,
                code,
            } => write!(
                f,
                "user exception {number} (code {code:#x}) at ip {ip:#x}, sp {sp:#x}"
            ),
            Fault::Vm {
                ip,
                addr,
                prefetch,
                fsr,
            } => write!(
                f,
                "VM fault at address {addr:#x} ({}, error code {fsr:#x}) at ip {ip:#x}",
                if prefetch {
                    "instruction fetch"
                } else if fsr & 2 != 0 {
                    "write"
                } else {
                    "read"
                }
            ),
            Fault::Other(l) => write!(f, "fault of unknown type {l}"),
        }
    }
}

/// Restarts of one PD before the supervisor gives up on it.
pub const MAX_RESTARTS: u64 = 3;

/// Written to isa-debug-exit when every vmm-server has finished or stopped and one
/// died: QEMU exits with (0x12 << 1) | 1 = 37.
pub const EXIT_VMM_DIED: u32 = 0x12;

/// Where each vmm-server is (other PDs are not tracked).
#[derive(Clone, Copy, PartialEq, Eq)]
enum VmmState {
    Running,
    Finished,
    Died,
}

/// Serves the fault endpoint forever.
pub fn run(mut running: Running) -> ! {
    let fault_ep: Cap<Endpoint> = running.fault_ep;
    let mut vmms: alloc::vec::Vec<Option<VmmState>> = running
        .pds
        .iter()
        .map(|pd| (pd.kind == PdKind::VmmServer).then_some(VmmState::Running))
        .collect();
    loop {
        let (msg, badge) = fault_ep.recv();
        let index = (badge as usize).checked_sub(1);
        let pd = index.and_then(|i| running.pds.get_mut(i));
        if msg.label() == capdl_spec::supervisor::LABEL_PD_DONE {
            // A PD that finished its work (a vmm-server whose VM ended): it waits for
            // a reply that never comes, so it never runs again.
            let status = sel4::get_mr(0).unwrap_or(0);
            match pd {
                Some(pd) => info!("supervisor: PD {} finished (status {status})", pd.name),
                None => error!("supervisor: finish message from unknown badge {badge:#x}"),
            }
            if let Some(Some(state)) = index.and_then(|i| vmms.get_mut(i)) {
                *state = VmmState::Finished;
            }
            end_if_no_vm_can_run(&vmms);
            continue;
        }
        let fault = Fault::decode(msg.label());
        let Some(pd) = pd else {
            error!("supervisor: fault from unknown badge {badge:#x}: {fault}");
            continue;
        };
        error!("supervisor: PD {} ({}) faulted: {fault}", pd.name, pd.elf);
        match pd.tcb.tcb_read_registers(false) {
            Ok(r) => {
                error!(
                    "supervisor: {} registers: rip {:#x} rsp {:#x} rflags {:#x} rax {:#x} rbx {:#x} rcx {:#x} rdx {:#x}",
                    pd.name, r.rip, r.rsp, r.rflags, r.rax, r.rbx, r.rcx, r.rdx
                );
                error!(
                    "supervisor: {} registers: rsi {:#x} rdi {:#x} rbp {:#x} r8 {:#x} r9 {:#x} r10 {:#x} r11 {:#x}",
                    pd.name, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11
                );
                error!(
                    "supervisor: {} registers: r12 {:#x} r13 {:#x} r14 {:#x} r15 {:#x}",
                    pd.name, r.r12, r.r13, r.r14, r.r15
                );
            }
            Err(e) => error!("supervisor: TCB_ReadRegisters of {}: {e}", pd.name),
        }
        if restartable(pd.kind) && pd.restarts < MAX_RESTARTS {
            match running.builder.restart(pd) {
                Ok(()) => info!(
                    "supervisor: restarted PD {} (restart {} of at most {MAX_RESTARTS})",
                    pd.name, pd.restarts
                ),
                Err(e) => error!("supervisor: cannot restart {}: {e}", pd.name),
            }
        } else {
            info!("supervisor: PD {} stays stopped", pd.name);
            if let Some(Some(state)) = index.and_then(|i| vmms.get_mut(i)) {
                *state = VmmState::Died;
            }
            end_if_no_vm_can_run(&vmms);
        }
    }
}

/// Ends QEMU when no vmm-server runs any more and one of them died (the run would
/// otherwise never end: only a vmm-server ends it, through its guest's isa-debug-exit).
fn end_if_no_vm_can_run(vmms: &[Option<VmmState>]) {
    let states = || vmms.iter().flatten();
    if states().any(|s| *s == VmmState::Running) || !states().any(|s| *s == VmmState::Died) {
        return;
    }
    error!("supervisor: no VM can run any more and a vmm-server died: ending QEMU");
    if let Err(e) = sel4::init_thread::IO_PORT.ioport_out32(0xf4, EXIT_VMM_DIED) {
        error!("supervisor: cannot write the isa-debug-exit port: {e}");
    }
}

/// The PDs the supervisor restarts after a fault.
fn restartable(kind: PdKind) -> bool {
    match kind {
        PdKind::MmuServer | PdKind::UartDriver | PdKind::TimerDriver => true,
        PdKind::VmmServer => false,
    }
}
