//! Multiboot (v1) header, the 32-bit entry stub and the switch to long mode.
//!
//! The loader enters `rt_start32` in 32-bit protected mode, paging off, EAX = 0x2BADB002
//! and EBX = the multiboot info address (Multiboot spec 3.2). The stub follows SDM vol. 3
//! 10.8.5 ("Initializing IA-32e Mode"): PAE on, CR3 = a PML4, EFER.LME = 1, CR0.PG = 1,
//! then a far jump to a 64-bit code segment.
//!
//! The early identity map covers the first GiB: the first 2 MiB (the guest image, its
//! stack and page tables) with 4 KiB pages and the rest with 2 MiB pages. Small pages at
//! the bottom keep the image out of huge mappings, which hugeexec's page counts rely on.

use crate::exit::{exit, EXIT_BAD_BOOT};

/// Multiboot header flags: bit 0 = page-align modules, bit 1 = pass memory information.
/// Not bit 16 (the a.out kludge): the loader reads our ELF program headers.
pub const MULTIBOOT_HEADER_FLAGS: u32 = 0x3;
/// The value the loader leaves in EAX.
pub const MULTIBOOT_BOOT_MAGIC: u32 = 0x2BAD_B002;

core::arch::global_asm!(
    r#"
    .section .multiboot, "a"
    .balign 4
rt_multiboot_header:
    .long 0x1BADB002
    .long {flags}
    .long -(0x1BADB002 + {flags})

    .section .bss.rt_boot, "aw", @nobits
    .balign 4096
rt_boot_pml4: .zero 4096
rt_boot_pdpt: .zero 4096
rt_boot_pd:   .zero 4096
rt_boot_pt:   .zero 4096
rt_boot_stack: .zero 65536
    .global rt_boot_stack_top
rt_boot_stack_top:

    .section .text.boot, "ax"
    .code32
    .global rt_start32
rt_start32:
    cli
    cld
    movl $rt_boot_stack_top, %esp
    movl %eax, rt_boot_magic
    movl %ebx, rt_boot_info

    /* Long mode is required: CPUID.80000001H:EDX.LM[bit 29]. */
    movl $0x80000000, %eax
    cpuid
    cmpl $0x80000001, %eax
    jb rt_no_long_mode
    movl $0x80000001, %eax
    cpuid
    testl $0x20000000, %edx
    jz rt_no_long_mode

    /* PML4[0] -> PDPT, PDPT[0] -> PD, PD[0] -> PT: present + writable. */
    movl $rt_boot_pdpt + 3, %edx
    movl %edx, rt_boot_pml4
    movl $rt_boot_pd + 3, %edx
    movl %edx, rt_boot_pdpt
    movl $rt_boot_pt + 3, %edx
    movl %edx, rt_boot_pd

    /* PT[i] = i * 4 KiB | P | W: the first 2 MiB. */
    xorl %ecx, %ecx
1:  movl %ecx, %edx
    shll $12, %edx
    orl $3, %edx
    movl %edx, rt_boot_pt(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jb 1b

    /* PD[i] = i * 2 MiB | P | W | PS for i = 1..511: up to 1 GiB. */
    movl $1, %ecx
2:  movl %ecx, %edx
    shll $21, %edx
    orl $0x83, %edx
    movl %edx, rt_boot_pd(,%ecx,8)
    incl %ecx
    cmpl $512, %ecx
    jb 2b

    movl %cr4, %eax
    orl $0x20, %eax             /* CR4.PAE */
    movl %eax, %cr4
    movl $rt_boot_pml4, %eax
    movl %eax, %cr3
    movl $0xC0000080, %ecx      /* IA32_EFER */
    rdmsr
    orl $0x100, %eax            /* EFER.LME */
    wrmsr
    movl %cr0, %eax
    orl $0x80000001, %eax       /* CR0.PG | CR0.PE */
    movl %eax, %cr0
    lgdt rt_gdt_ptr
    ljmp $0x08, $rt_start64

    /* Say why on COM1, then isa-debug-exit with EXIT_BAD_BOOT. */
rt_no_long_mode:
    movl $rt_no_long_mode_msg, %esi
4:  movb (%esi), %cl
    testb %cl, %cl
    jz 6f
    movw $0x3fd, %dx
5:  inb %dx, %al
    testb $0x20, %al
    jz 5b
    movw $0x3f8, %dx
    movb %cl, %al
    outb %al, %dx
    incl %esi
    jmp 4b
6:  movw $0xf4, %dx
    movl ${bad_boot}, %eax
    outl %eax, %dx
7:  cli
    hlt
    jmp 7b

    .code64
rt_start64:
    movw $0x10, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    xorl %eax, %eax
    movw %ax, %fs
    movw %ax, %gs
    movq $rt_boot_stack_top, %rsp
    xorl %ebp, %ebp
    call rt_main64
3:  cli
    hlt
    jmp 3b

    .section .rodata.rt_boot, "a"
rt_no_long_mode_msg:
    .asciz "rt: this CPU has no long mode\n"
"#,
    flags = const MULTIBOOT_HEADER_FLAGS,
    bad_boot = const EXIT_BAD_BOOT,
    options(att_syntax)
);

/// EAX at entry, stored by the stub.
#[no_mangle]
static mut rt_boot_magic: u32 = 0;
/// EBX at entry (the multiboot info address), stored by the stub.
#[no_mangle]
static mut rt_boot_info: u32 = 0;

/// The multiboot info address the loader passed.
pub fn multiboot_info_addr() -> u32 {
    // SAFETY: written once by the boot stub before any Rust code runs.
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(rt_boot_info)) }
}

/// The first Rust code: checks the boot protocol, installs the IDT/TSS, turns on
/// EFER.NXE when the CPU has it, runs the guest and exits with its result.
#[no_mangle]
extern "C" fn rt_main64() -> ! {
    // SAFETY: written once by the boot stub.
    let magic = unsafe { core::ptr::read_volatile(core::ptr::addr_of!(rt_boot_magic)) };
    crate::trap::init();
    if magic != MULTIBOOT_BOOT_MAGIC {
        crate::println!("rt: not booted by a multiboot loader (eax={:#x})", magic);
        exit(EXIT_BAD_BOOT);
    }
    crate::cpu::enable_nx_if_present();
    extern "C" {
        fn rt_guest_main() -> u32;
    }
    // SAFETY: defined by the guest with `rt::entry!`.
    let code = unsafe { rt_guest_main() };
    exit(code)
}
