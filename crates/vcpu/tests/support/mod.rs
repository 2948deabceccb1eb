//! A small machine for the engine tests: guest RAM at gpa/hpa 0, identity page tables,
//! a GDT/IDT/TSS, and helpers to assemble code with iced's CodeAssembler.
#![allow(dead_code)]

use std::ptr::NonNull;

use iced_x86::code_asm::CodeAssembler;
use iced_x86::IcedError;
use physmem::PhysMap;
use vcpu::{cr0, cr4, efer, DescriptorTable, SegReg, Segment, Vcpu, VmExit};

pub const RAM_SIZE: usize = 8 << 20;
pub const PML4: u64 = 0x1000;
pub const PDPT: u64 = 0x2000;
pub const PD: u64 = 0x3000;
pub const GDT: u64 = 0x4000;
pub const IDT: u64 = 0x5000;
pub const TSS: u64 = 0x6000;
pub const CODE: u64 = 0x10000;
pub const HANDLERS: u64 = 0x20000;
pub const STACK_TOP: u64 = 0x80000;
pub const IST1_TOP: u64 = 0x90000;
pub const USER_STACK_TOP: u64 = 0xa0000;

pub const KCODE64: u16 = 0x08;
pub const KDATA: u16 = 0x10;
/// SYSRET layout: STAR[63:48] = 0x18 -> user SS 0x20, user CS64 0x28.
pub const UCODE32: u16 = 0x18;
pub const UDATA: u16 = 0x20;
pub const UCODE64: u16 = 0x28;
pub const TSS_SEL: u16 = 0x30;
pub const KCODE32: u16 = 0x40;

/// Descriptor: base 0, limit 4 GiB, with the access byte and flags nibble given.
pub fn desc(access: u8, flags: u8) -> u64 {
    0xffff | (0xf << 48) | ((access as u64) << 40) | ((flags as u64) << 52)
}

pub struct Machine {
    ram: Vec<u64>,
    pub mem: PhysMap,
    pub cpu: Vcpu,
}

impl Machine {
    pub fn new() -> Machine {
        let mut ram = vec![0u64; RAM_SIZE / 8];
        let mut mem = PhysMap::new();
        unsafe {
            mem.add_region(
                0,
                NonNull::new(ram.as_mut_ptr().cast()).unwrap(),
                RAM_SIZE as u64,
                true,
            )
            .unwrap();
        }
        let mut m = Machine {
            ram,
            mem,
            cpu: Vcpu::new(),
        };
        m.build_tables();
        m
    }

    fn build_tables(&mut self) {
        // Identity map of the first 1 GiB with 2 MiB pages (P | RW | US | PS).
        self.write_u64(PML4, PDPT | 0x7);
        self.write_u64(PDPT, PD | 0x7);
        for i in 0..512u64 {
            self.write_u64(PD + 8 * i, (i << 21) | 0x87);
        }
        let gdt = [
            0,
            desc(0x9a, 0xa), // 0x08 kernel code 64
            desc(0x92, 0xc), // 0x10 kernel data
            desc(0xfa, 0xc), // 0x18 user code 32
            desc(0xf2, 0xc), // 0x20 user data
            desc(0xfa, 0xa), // 0x28 user code 64
            // 0x30: 64-bit available TSS (16 bytes), limit 0x67.
            0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | (((TSS >> 24) & 0xff) << 56),
            TSS >> 32,
            desc(0x9a, 0xc), // 0x40 kernel code 32
        ];
        for (i, d) in gdt.iter().enumerate() {
            self.write_u64(GDT + 8 * i as u64, *d);
        }
        // TSS: RSP0 and IST1.
        self.write_u64(TSS + 4, STACK_TOP);
        self.write_u64(TSS + 0x24, IST1_TOP);
    }

    pub fn write(&mut self, gpa: u64, bytes: &[u8]) {
        self.mem.write(gpa, bytes).unwrap();
        self.cpu.note_guest_write(gpa, bytes.len() as u64);
    }
    pub fn write_u64(&mut self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }
    pub fn read_u64(&self, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.mem.read(gpa, &mut b).unwrap();
        u64::from_le_bytes(b)
    }
    pub fn read_u32(&self, gpa: u64) -> u32 {
        self.read_u64(gpa) as u32
    }

    /// An IDT gate (64-bit interrupt gate, DPL `dpl`, IST `ist`) for `vector`.
    pub fn set_gate64(&mut self, vector: u8, handler: u64, dpl: u8, ist: u8) {
        let lo = (handler & 0xffff)
            | ((KCODE64 as u64) << 16)
            | ((ist as u64) << 32)
            | ((0x8e | (dpl << 5)) as u64) << 40
            | ((handler >> 16) & 0xffff) << 48;
        self.write_u64(IDT + 16 * vector as u64, lo);
        self.write_u64(IDT + 16 * vector as u64 + 8, handler >> 32);
    }

    /// 64-bit mode, CPL 0, paging on with the identity map, RIP = `rip`.
    pub fn long_mode(&mut self, rip: u64) {
        let c = &mut self.cpu;
        c.set_control_registers(
            cr0::PE | cr0::ET | cr0::NE | cr0::WP | cr0::PG,
            PML4,
            cr4::PAE,
            efer::LME | efer::LMA | efer::SCE | efer::NXE,
        );
        c.set_segment(SegReg::Cs, Segment::flat(KCODE64, true, 0, true));
        for s in [SegReg::Ss, SegReg::Ds, SegReg::Es, SegReg::Fs, SegReg::Gs] {
            c.set_segment(s, Segment::flat(KDATA, false, 0, false));
        }
        c.set_gdtr(DescriptorTable {
            base: GDT,
            limit: 0x47,
        });
        c.set_idtr(DescriptorTable {
            base: IDT,
            limit: 0xfff,
        });
        c.set_tr(Segment {
            selector: TSS_SEL,
            base: TSS,
            limit: 0x67,
            access: 0x8b,
        });
        c.set_rip(rip);
        c.set_gpr(vcpu::Gpr::Rsp, STACK_TOP);
        c.set_rflags(0x2);
    }

    /// 32-bit protected mode at [`CODE`] as a multiboot loader leaves the CPU, with CS
    /// the flat [`KCODE32`] descriptor of the GDT at [`GDT`] (limit `gdt_limit`).
    pub fn protected_mode32(&mut self, gdt_limit: u16) {
        self.cpu.reset_multiboot(CODE as u32, 0);
        self.cpu
            .set_segment(SegReg::Cs, Segment::flat(KCODE32, true, 0, false));
        self.cpu.set_gdtr(DescriptorTable {
            base: GDT,
            limit: gdt_limit,
        });
    }

    /// Assembles 64-bit code at `at`, writes it, returns its length.
    pub fn code64(
        &mut self,
        at: u64,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> usize {
        let bytes = asm(64, at, f);
        self.write(at, &bytes);
        bytes.len()
    }

    pub fn code32(
        &mut self,
        at: u64,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
    ) -> usize {
        let bytes = asm(32, at, f);
        self.write(at, &bytes);
        bytes.len()
    }

    pub fn run(&mut self) -> VmExit {
        self.cpu.run(&self.mem)
    }

    pub fn ram_len(&self) -> usize {
        self.ram.len() * 8
    }
}

/// A machine in 64-bit mode about to run the code `f` assembles at [`CODE`].
pub fn machine(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Machine {
    let mut m = Machine::new();
    m.code64(CODE, f);
    m.long_mode(CODE);
    m
}

pub fn asm(
    bitness: u32,
    at: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bitness).unwrap();
    f(&mut a).unwrap();
    a.assemble(at).unwrap()
}
