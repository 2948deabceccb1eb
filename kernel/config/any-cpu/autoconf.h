/*
 * capvisor's seL4 5.0.0 kernel configuration for x86_64 pc99 under QEMU TCG with
 * any CPU model (the default qemu64 too). Derived from the kernel's shipped
 * include/plat/pc99/autoconf.h, keeping
 * only the options the kernel build reads (the shipped file also configures the
 * userland libraries of the seL4 test suite, which we do not build). An -I of this
 * directory shadows the shipped file. Changes from the shipped configuration:
 *   - CONFIG_XAPIC instead of CONFIG_X2APIC: TCG emulates only the xAPIC.
 *   - no CONFIG_SUPPORT_PCID: the kernel then checks for PCID and INVPCID at boot
 *     and halts without them; not every QEMU CPU model has them.
 *   - CONFIG_MULTIBOOT_GRAPHICS_MODE_NONE: text console only (we use COM1).
 *   - no CONFIG_HUGE_PAGE: 1 GiB pages need PDPE1GB, which qemu64 lacks.
 *   - CONFIG_FSGSBASE_MSR instead of CONFIG_FSGSBASE_INST: RDFSBASE/WRGSBASE need
 *     CR4.FSGSBASE, which qemu64 lacks; the MSRs always work.
 */
#define AUTOCONF_INCLUDED

/* architecture and platform */
#define CONFIG_ARCH_X86 1
#define CONFIG_ARCH_X86_64 1
#define CONFIG_PLAT_PC99 1
#define CONFIG_WORD_SIZE 64
#define CONFIG_CACHE_LN_SZ 64
#define CONFIG_MAX_NUM_NODES 1
#define CONFIG_KERNEL_STACK_BITS 12

/* CPU features the kernel may use */
#define CONFIG_SYSCALL 1
#define CONFIG_FSGSBASE_MSR 1
#define CONFIG_HAVE_FPU 1
#define CONFIG_FXSAVE 1
#define CONFIG_XSAVE_SIZE 512
#define CONFIG_FPU_MAX_RESTORES_SINCE_SWITCH 64

/* interrupts, timer, IOMMU */
#define CONFIG_XAPIC 1
#define CONFIG_IRQ_IOAPIC 1
#define CONFIG_MAX_NUM_IOAPIC 1
#define CONFIG_TIMER_TICK_MS 2
#define CONFIG_IOMMU 1
#define CONFIG_MAX_RMRR_ENTRIES 32
#define CONFIG_MULTIBOOT_GRAPHICS_MODE_NONE 1

/* scheduling */
#define CONFIG_NUM_PRIORITIES 256
#define CONFIG_NUM_DOMAINS 1
#define CONFIG_DOMAIN_SCHEDULE ""
#define CONFIG_TIME_SLICE 1

/* objects and boot */
#define CONFIG_ROOT_CNODE_SIZE_BITS 16
#define CONFIG_MAX_NUM_BOOTINFO_UNTYPED_CAPS 230
#define CONFIG_RETYPE_FAN_OUT_LIMIT 256
#define CONFIG_MAX_NUM_WORK_UNITS_PER_PREEMPTION 100
#define CONFIG_FASTPATH 1
#define CONFIG_VERIFICATION_BUILD 1

/* build */
#define CONFIG_KERNEL_CFLAGS ""
#define CONFIG_KERNEL_COMPILER ""
#define CONFIG_KERNEL_EXTRA_CPPFLAGS ""
#define CONFIG_LIB_SEL4_INLINE_INVOCATIONS 1
