//! Raw bindings to the seL4 5.0.0 kernel on x86_64 (pc99), written for capvisor.
//!
//! - [`syscalls`]: the `syscall`-instruction ABI (x86_64 only).
//! - [`ipc_buffer`]: the IPC buffer layout and access to the current thread's buffer
//!   through `%gs`, where the kernel points the GS base.
//! - [`bootinfo`]: the boot info the kernel hands the root task.
//! - [`MessageInfo`], [`CapRights`], [`cap_data`], [`PrioProps`], [`UserContext`]: the
//!   word layouts of `shared_types_64.bf`, `types_64.bf` and the x86_64 `types.h`.
//! - Everything numbered ([`InvocationLabel`], [`Syscall`], [`ObjectType`], [`ErrorCode`],
//!   [`InitialCap`], object sizes, message limits) is generated at build time from the
//!   kernel's interface files (see `build.rs`), never typed by hand.
#![no_std]

mod generated {
    include!(concat!(env!("OUT_DIR"), "/generated.rs"));
}
pub use generated::*;

pub mod bootinfo;
pub mod cap_data;
mod context;
pub mod ipc_buffer;
mod message_info;
mod rights;
#[cfg(target_arch = "x86_64")]
pub mod syscalls;

pub use bootinfo::{BootInfo, SlotRegion, UntypedDesc};
pub use context::UserContext;
pub use message_info::MessageInfo;
pub use rights::{CapRights, PrioProps};

/// A machine word (`seL4_Word`).
pub type Word = u64;
/// A capability pointer: an address in a thread's CSpace (`seL4_CPtr`).
pub type CPtr = u64;

/// Number of message registers passed in CPU registers on x86_64 (r10, r8, r9, r15);
/// the rest travel in the IPC buffer.
pub const FAST_MESSAGE_REGISTERS: usize = 4;
/// `seL4_MsgMaxExtraCaps`: capabilities one message can carry.
pub const MSG_MAX_EXTRA_CAPS: usize = (1 << MSG_EXTRA_CAP_BITS) - 1;

/// x86 mapping attributes (`seL4_X86_VMAttributes`): the PAT cache type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum VmAttributes {
    /// Write-back, the default (`seL4_X86_Default_VMAttributes`, `seL4_X86_WriteBack`).
    WriteBack = 0,
    /// `seL4_X86_WriteThrough`
    WriteThrough = 1,
    /// `seL4_X86_CacheDisabled`
    CacheDisabled = 2,
    /// `seL4_X86_Uncacheable`
    Uncacheable = 3,
    /// `seL4_X86_WriteCombining`
    WriteCombining = 4,
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::String;
    use std::vec::Vec;

    /// The `id`s of the `<method>` elements of an interface file, found by plain text
    /// scanning (independent of the XML parser the build script uses).
    fn method_ids(rel: &str) -> Vec<String> {
        let path = std::path::Path::new(env!("SEL4_LIBSEL4_DIR")).join(rel);
        let text = std::fs::read_to_string(&path).expect("the interface file is readable");
        text.split("<method ")
            .skip(1)
            .map(|m| {
                let start = m.find("id=\"").expect("a method has an id") + 4;
                let len = m[start..].find('"').expect("the id is quoted");
                String::from(&m[start..start + len])
            })
            .collect()
    }

    #[test]
    fn labels_follow_the_xml_order_generic_then_x86_64_then_x86() {
        let mut ids = method_ids("include/interfaces/sel4.xml");
        ids.extend(method_ids(
            "sel4_arch_include/x86_64/interfaces/sel4arch.xml",
        ));
        ids.extend(method_ids("arch_include/x86/interfaces/sel4arch.xml"));
        let generated: Vec<&str> = INTERFACE_METHODS.iter().map(|(id, _)| *id).collect();
        assert_eq!(generated, ids);
        // Labels number the included methods consecutively after InvalidInvocation.
        let included: Vec<&str> = INTERFACE_METHODS
            .iter()
            .filter(|(_, inc)| *inc)
            .map(|(id, _)| *id)
            .collect();
        assert_eq!(INVOCATION_LABELS[0], ("InvalidInvocation", 0));
        for (i, (id, n)) in INVOCATION_LABELS.iter().enumerate().skip(1) {
            assert_eq!((*id, *n), (included[i - 1], i as u64));
        }
    }

    #[test]
    fn configuration_dependent_methods_are_left_out() {
        let excluded = |name: &str| {
            INTERFACE_METHODS
                .iter()
                .any(|(id, inc)| *id == name && !inc)
        };
        // Uniprocessor, no hardware debug API, no VT-x in our kernel configuration.
        assert!(excluded("TCBSetAffinity"));
        assert!(excluded("TCBSetBreakpoint"));
        assert!(excluded("X86VCPUSetTCB"));
        assert!(!INVOCATION_LABELS
            .iter()
            .any(|(id, _)| *id == "X86PageMapEPT"));
    }

    #[test]
    fn labels_agree_with_the_kernel_build() {
        // The kernel's own generated invocation headers give these numbers for our
        // configuration (checked against build/kernel/{api,arch/api}/invocation.h).
        assert_eq!(InvocationLabel::UntypedRetype as u64, 1);
        assert_eq!(InvocationLabel::TCBSetSpace as u64, 9);
        assert_eq!(InvocationLabel::X86PDPTMap as u64, 28);
        assert_eq!(InvocationLabel::X86IOPortOut32 as u64, 49);
        assert_eq!(InvocationLabel::X86IRQIssueIRQHandlerMSI as u64, 51);
    }

    #[test]
    fn syscalls_count_down_from_minus_one() {
        assert_eq!(Syscall::Call as i64, -1);
        assert_eq!(Syscall::NBRecv as i64, -8);
        // Debug syscalls exist because the kernel is built with DEBUG=1.
        assert_eq!(Syscall::DebugPutChar as i64, -9);
        assert_eq!(Syscall::DebugHalt as i64, -10);
    }

    #[test]
    fn object_types_continue_across_the_three_headers() {
        assert_eq!(ObjectType::Untyped as u64, 0);
        assert_eq!(ObjectType::CapTable as u64, 4);
        assert_eq!(
            ObjectType::X86_PDPT as u64,
            5,
            "the x86_64 types follow the generic ones"
        );
        let huge = KERNEL_CONFIG == "qemu-tcg";
        // CONFIG_HUGE_PAGE adds a type and shifts the x86 ones after it.
        assert_eq!(ObjectType::X86_4K as u64, if huge { 8 } else { 7 });
        assert_eq!(
            ObjectType::X86_PageDirectory as u64,
            ObjectType::X86_4K as u64 + 3
        );
    }

    #[test]
    fn errors_and_initial_caps() {
        assert_eq!(ErrorCode::NotEnoughMemory as u64, 10);
        assert_eq!(InitialCap::CapIOPort as u64, 7);
        assert_eq!(InitialCap::CapDomain as u64, 11);
        assert_eq!(MSG_MAX_EXTRA_CAPS, 3);
        assert_eq!(
            (PAGE_BITS, TCB_BITS, ENDPOINT_BITS, NOTIFICATION_BITS),
            (12, 11, 4, 5)
        );
    }
}
