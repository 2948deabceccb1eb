//! A 32-bit guest with PAE paging (3-level, PDPTE registers; SDM 4.4), built here
//! as a multiboot image with the a.out-kludge header (flag 16), so no toolchain is
//! needed. Its PDPT lives in a 2 MiB region the guest never touches before it turns
//! paging on: under TDP the PDPTE load at MOV CR0 is therefore the first access to
//! that region through EPT, an EPT violation the VMM must resolve with the
//! mmu-server before the load completes (SDM 28.2.1), not a reason to stop the VM.

use capvisor::ipc::MmuMode;
use capvisor::runtime::{self, CapturingHost, RunConfig};
use capvisor::vmm_server::{VmConfig, VmOutcome};

const LOAD: u32 = 0x10_0000;
const PDPT: u32 = 0x20_0000;
const PD: u32 = 0x20_1000;

fn image() -> Vec<u8> {
    let mut code: Vec<u8> = Vec::new();
    code.extend([0x0f, 0x20, 0xe0]); // mov eax, cr4
    code.extend([0x83, 0xc8, 0x20]); // or eax, CR4.PAE
    code.extend([0x0f, 0x22, 0xe0]); // mov cr4, eax
    code.push(0xb8); // mov eax, PDPT
    code.extend(PDPT.to_le_bytes());
    code.extend([0x0f, 0x22, 0xd8]); // mov cr3, eax
    code.extend([0x0f, 0x20, 0xc0]); // mov eax, cr0
    code.extend([0x0d, 0x00, 0x00, 0x00, 0x80]); // or eax, CR0.PG
    code.extend([0x0f, 0x22, 0xc0]); // mov cr0, eax  (loads the PDPTEs)
    code.extend([0x8b, 0x1d]); // mov ebx, [0x10_0000]: a read through the new tables
    code.extend(LOAD.to_le_bytes());
    code.extend([0x66, 0xba, 0xf8, 0x03]); // mov dx, 0x3f8
    for b in *b"PAE\n" {
        code.extend([0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    code.extend([0x31, 0xc0]); // xor eax, eax
    code.extend([0x66, 0xba, 0xf4, 0x00]); // mov dx, 0xf4
    code.extend([0xef, 0xf4]); // out dx, eax (isa-debug-exit 0); hlt

    let end = PD + 0x1000;
    let (magic, flags) = (0x1bad_b002u32, 1u32 << 16);
    let header = [
        magic,
        flags,
        0u32.wrapping_sub(magic.wrapping_add(flags)),
        LOAD,      // header_addr
        LOAD,      // load_addr
        end,       // load_end_addr
        end,       // bss_end_addr
        LOAD + 32, // entry_addr
    ];
    let mut img = vec![0u8; (end - LOAD) as usize];
    for (i, w) in header.iter().enumerate() {
        img[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    img[32..32 + code.len()].copy_from_slice(&code);
    // PDPTE 0 -> the page directory; PDE 0 -> a 2 MiB identity page (PS | RW | P).
    let at = |a: u32| (a - LOAD) as usize;
    img[at(PDPT)..at(PDPT) + 8].copy_from_slice(&(u64::from(PD) | 1).to_le_bytes());
    img[at(PD)..at(PD) + 8].copy_from_slice(&0x83u64.to_le_bytes());
    img
}

fn run(mode: MmuMode) -> (VmOutcome, String) {
    let mut vm = VmConfig::new(mode);
    vm.max_instructions = Some(100_000);
    let cfg = RunConfig {
        mem: 16 << 20,
        ..RunConfig::new(image(), "pae.bin", vm)
    };
    let mut host = CapturingHost::default();
    let r = runtime::run(&cfg, &mut host).expect("the PAE guest starts");
    (r.outcome, String::from_utf8(host.serial).unwrap())
}

#[test]
fn pae_guest_whose_pdpt_is_not_yet_mapped_runs_under_tdp() {
    let (outcome, serial) = run(MmuMode::Tdp);
    assert_eq!(
        outcome,
        VmOutcome::Exited { status: 1 },
        "serial: {serial:?}"
    );
    assert_eq!(serial, "PAE\n");
}

#[test]
fn pae_guest_runs_under_shadow_paging() {
    let (outcome, serial) = run(MmuMode::Shadow);
    assert_eq!(
        outcome,
        VmOutcome::Exited { status: 1 },
        "serial: {serial:?}"
    );
    assert_eq!(serial, "PAE\n");
}
