//! The multiboot loader against hand-built images and against what QEMU hands a real
//! multiboot kernel (the `mbprobe` fixture and its recorded QEMU output).

mod common;

use common::{elf32, mb_header, Ph, VecRam};
use vmm_server::loader::{self, info, BootArgs, LoadError, BOOT_MAGIC};

const MIB: usize = 1 << 20;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

fn args() -> BootArgs<'static> {
    BootArgs {
        kernel_name: "k.elf",
        append: "iters=3 ws=4",
    }
}

/// The fixture `tests/fixtures/mbprobe.elf` (source next to it) prints what it got at
/// entry; `mbprobe.qemu-m128.txt` is its output under `qemu-system-x86_64 -m 128
/// -kernel mbprobe.elf -append "iters=3 ws=4"`. Our loader must produce the same.
#[test]
fn matches_qemu_for_the_probe_kernel() {
    let image = include_bytes!("fixtures/mbprobe.elf");
    let qemu = include_str!("fixtures/mbprobe.qemu-m128.txt");
    let mut ram = VecRam::new(128 * MIB);
    let k = loader::load(
        image,
        BootArgs {
            kernel_name: "mbprobe.elf",
            append: "iters=3 ws=4",
        },
        &mut ram,
    )
    .expect("loads");

    let field = |name: &str| -> u32 {
        let line = qemu
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("{name} in the QEMU output"));
        u32::from_str_radix(line, 16).unwrap()
    };
    assert_eq!(k.boot.eax, field("eax"));
    assert_eq!(k.boot.ebx, field("ebx"));
    assert_eq!(k.boot.eflags, field("eflags"));
    assert_eq!(k.boot.cr0, field("cr0"));
    assert_eq!(k.boot.cs as u32, field("cs"));
    assert_eq!(k.boot.data_selector as u32, field("ds"));
    assert_eq!(k.boot.data_selector as u32, field("ss"));
    assert_eq!(k.boot.esp, field("esp"));

    // The 22 words of the information structure, byte for byte.
    let mut words = 0;
    for l in qemu.lines().filter_map(|l| l.strip_prefix("mbi")) {
        let (idx, val) = l.split_once(':').unwrap();
        let idx = u64::from_str_radix(idx, 16).unwrap();
        let val = u32::from_str_radix(val, 16).unwrap();
        assert_eq!(
            ram.u32_at(k.boot.ebx as u64 + 4 * idx),
            val,
            "mbi word {idx}"
        );
        words += 1;
    }
    assert_eq!(words, 22);

    // The memory map, entry by entry.
    let mmap_addr = ram.u32_at(k.boot.ebx as u64 + 48) as u64;
    let mmap_len = ram.u32_at(k.boot.ebx as u64 + 44) as u64;
    let expected: Vec<(u64, u64, u32)> = qemu
        .lines()
        .filter_map(|l| l.strip_prefix("mmap "))
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (
                u64::from_str_radix(f[0], 16).unwrap(),
                u64::from_str_radix(f[1], 16).unwrap(),
                u32::from_str_radix(f[2], 16).unwrap(),
            )
        })
        .collect();
    assert_eq!(mmap_len, 24 * expected.len() as u64);
    for (i, (base, len, kind)) in expected.iter().enumerate() {
        let e = mmap_addr + 24 * i as u64;
        assert_eq!(ram.u32_at(e), 20);
        assert_eq!(
            (ram.u64_at(e + 4), ram.u64_at(e + 12), ram.u32_at(e + 20)),
            (*base, *len, *kind)
        );
    }

    let cmdline = qemu
        .lines()
        .find_map(|l| l.strip_prefix("cmdline="))
        .unwrap();
    assert_eq!(
        ram.cstr_at(ram.u32_at(k.boot.ebx as u64 + 16) as u64),
        cmdline
    );
    let name = qemu
        .lines()
        .find_map(|l| l.strip_prefix("loader="))
        .unwrap();
    assert_eq!(ram.cstr_at(ram.u32_at(k.boot.ebx as u64 + 64) as u64), name);
    assert_eq!(field("bss"), 0);
}

#[test]
fn elf_segments_go_to_physical_addresses_with_bss_zeroed() {
    let mut text = mb_header(0x3, None);
    text.extend_from_slice(&[0x90, 0x90, 0xf4]);
    let data = vec![1, 2, 3, 4, 5];
    // Text linked at a high virtual address, loaded at 1 MiB (vaddr != paddr).
    let image = elf32(
        0xc010_000c,
        &[
            (
                Ph {
                    kind: PT_LOAD,
                    vaddr: 0xc010_0000,
                    paddr: 0x10_0000,
                    memsz: 0x100,
                    flags: PF_X | 4,
                },
                text.clone(),
            ),
            (
                Ph {
                    kind: PT_LOAD,
                    vaddr: 0x20_0000,
                    paddr: 0x20_0000,
                    memsz: 0x3000,
                    flags: 6,
                },
                data.clone(),
            ),
            // Not PT_LOAD: ignored.
            (
                Ph {
                    kind: 4,
                    vaddr: 0,
                    paddr: 0x50_0000,
                    memsz: 0x10,
                    flags: 4,
                },
                vec![9; 16],
            ),
        ],
    );
    let mut ram = VecRam::new(16 * MIB);
    let k = loader::load(&image, args(), &mut ram).unwrap();
    assert_eq!(
        k.boot.eip, 0x10_000c,
        "entry translated to its physical address"
    );
    assert_eq!(k.boot.eax, BOOT_MAGIC);
    assert_eq!(k.load_start, 0x10_0000);
    assert_eq!(k.kernel_end, 0x20_3000);
    assert_eq!(&ram.0[0x10_0000..0x10_0000 + text.len()], &text[..]);
    assert_eq!(&ram.0[0x20_0000..0x20_0005], &data[..]);
    assert!(
        ram.0[0x10_0000 + text.len()..0x20_0000]
            .iter()
            .all(|&b| b == 0),
        "gap zeroed"
    );
    assert!(
        ram.0[0x20_0005..0x20_3000].iter().all(|&b| b == 0),
        "bss zeroed"
    );
    assert_eq!(ram.0[0x50_0000], 0xAA, "non-PT_LOAD segment not loaded");
    // Command line after the page-aligned kernel, then the boot-loader name.
    assert_eq!(k.info.cmdline, 0x20_3000);
    assert_eq!(ram.cstr_at(0x20_3000), "k.elf iters=3 ws=4");
    assert_eq!(ram.cstr_at(k.info.boot_loader_name as u64), "qemu");
    assert_eq!(k.load_end, 0x20_4000);
    // Memory lower/upper for 16 MiB: 639 KiB and up to 128 KiB below the top.
    assert_eq!(ram.u32_at(0x9504), 639);
    assert_eq!(
        ram.u32_at(0x9508),
        ((16 * MIB - 0x2_0000 - MIB) / 1024) as u32
    );
    assert_eq!(ram.u32_at(0x9500), info::INFO_FLAGS);
}

#[test]
fn aout_kludge_addresses_are_honoured() {
    // File: 0x40 bytes of junk, then the header (at file offset 0x40, header_addr
    // 0x10_0040), then code; loaded from file offset 0 to 0x10_0000.
    let mut image = vec![0x11u8; 0x40];
    let load_end = 0x10_0000 + 0x40 + 32 + 4;
    image.extend(mb_header(
        0x1_0003,
        Some([0x10_0040, 0x10_0000, load_end, 0x10_2000, 0x10_0060]),
    ));
    image.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
    image.extend_from_slice(&[0x77; 64]); // after load_end_addr: not loaded
    let mut ram = VecRam::new(4 * MIB);
    let k = loader::load(&image, args(), &mut ram).unwrap();
    assert_eq!(k.boot.eip, 0x10_0060);
    assert_eq!(k.load_start, 0x10_0000);
    assert_eq!(k.kernel_end, 0x10_2000);
    let loaded = (load_end - 0x10_0000) as usize;
    assert_eq!(&ram.0[0x10_0000..0x10_0000 + loaded], &image[..loaded]);
    assert!(ram.0[0x10_0000 + loaded..0x10_2000].iter().all(|&b| b == 0));
    assert_eq!(ram.cstr_at(0x10_2000), "k.elf iters=3 ws=4");
}

#[test]
fn aout_kludge_without_load_end_loads_the_rest_of_the_file() {
    let mut image = mb_header(0x1_0000, Some([0x20_0000, 0x20_0000, 0, 0, 0x20_0020]));
    image.extend_from_slice(&[0x55; 100]);
    let mut ram = VecRam::new(4 * MIB);
    let k = loader::load(
        &image,
        BootArgs {
            kernel_name: "x",
            append: "",
        },
        &mut ram,
    )
    .unwrap();
    assert_eq!(k.kernel_end, 0x20_0000 + image.len() as u64);
    assert_eq!(&ram.0[0x20_0000..0x20_0000 + image.len()], &image[..]);
    assert_eq!(
        ram.cstr_at(k.info.cmdline as u64),
        "x ",
        "QEMU's \"%s %s\" with empty append"
    );
}

#[test]
fn header_beyond_8k_or_with_bad_checksum_is_not_found() {
    let mut image = vec![0u8; 8192];
    image.extend(mb_header(
        0x1_0000,
        Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000]),
    ));
    let mut ram = VecRam::new(4 * MIB);
    let err = loader::load(&image, args(), &mut ram).unwrap_err();
    assert_eq!(
        err,
        LoadError::NoMultibootHeader {
            image_len: image.len()
        }
    );
    assert!(err.to_string().contains("0x1BADB002"));

    let mut bad = mb_header(0x1_0000, Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000]));
    bad[8] ^= 1;
    assert!(matches!(
        loader::load(&bad, args(), &mut ram),
        Err(LoadError::NoMultibootHeader { .. })
    ));
    // Misaligned magic is not found either.
    let mut mis = vec![0u8; 2];
    mis.extend(mb_header(
        0x1_0000,
        Some([0x10_0000, 0x10_0000, 0, 0, 0x10_0000]),
    ));
    assert!(matches!(
        loader::load(&mis, args(), &mut ram),
        Err(LoadError::NoMultibootHeader { .. })
    ));
    assert!(ram.0.iter().all(|&b| b == 0xAA), "nothing written on error");
}

fn simple_elf(paddr: u32, memsz: u32) -> Vec<u8> {
    elf32(
        paddr,
        &[(
            Ph {
                kind: PT_LOAD,
                vaddr: paddr,
                paddr,
                memsz,
                flags: PF_X | 4,
            },
            mb_header(0x3, None),
        )],
    )
}

#[test]
fn elf_errors_name_what_is_wrong() {
    let mut ram = VecRam::new(4 * MIB);
    // ELF64: QEMU refuses it.
    let mut e64 = simple_elf(0x10_0000, 0x100);
    e64[4] = 2;
    let err = loader::load(&e64, args(), &mut ram).unwrap_err();
    assert_eq!(err, LoadError::Elf64);
    assert!(err.to_string().contains("elf32-i386"));

    let mut wrong = simple_elf(0x10_0000, 0x100);
    wrong[18] = 62; // EM_X86_64
    assert_eq!(
        loader::load(&wrong, args(), &mut ram).unwrap_err(),
        LoadError::WrongMachine { e_machine: 62 }
    );

    let mut not_elf = mb_header(0x3, None);
    not_elf.extend_from_slice(&[0; 64]);
    assert_eq!(
        loader::load(&not_elf, args(), &mut ram).unwrap_err(),
        LoadError::NotElf
    );

    let mut big = simple_elf(0x10_0000, 0x100);
    big[52 + 16..52 + 20].copy_from_slice(&0x1000u32.to_le_bytes()); // p_filesz
    assert!(matches!(
        loader::load(&big, args(), &mut ram).unwrap_err(),
        LoadError::SegmentOutsideFile { index: 0, .. }
    ));

    let mut fs = simple_elf(0x10_0000, 0x4); // memsz 4 < filesz 12
    let _ = &mut fs;
    assert_eq!(
        loader::load(&fs, args(), &mut ram).unwrap_err(),
        LoadError::SegmentFileSizeAboveMemSize { index: 0 }
    );

    let mut phdrs = simple_elf(0x10_0000, 0x100);
    phdrs[28..32].copy_from_slice(&0xffff_0000u32.to_le_bytes()); // e_phoff
    assert_eq!(
        loader::load(&phdrs, args(), &mut ram).unwrap_err(),
        LoadError::BadProgramHeaders
    );

    let none = elf32(
        0x10_0000,
        &[(
            Ph {
                kind: 4,
                vaddr: 0,
                paddr: 0,
                memsz: 0x10,
                flags: 4,
            },
            mb_header(0x3, None),
        )],
    );
    assert_eq!(
        loader::load(&none, args(), &mut ram).unwrap_err(),
        LoadError::NoLoadableSegment
    );
    assert!(ram.0.iter().all(|&b| b == 0xAA), "nothing written on error");
}

#[test]
fn oversized_or_misplaced_images_are_refused() {
    let mut ram = VecRam::new(4 * MIB);
    // 8 MiB of bss in 4 MiB of RAM.
    let err = loader::load(&simple_elf(0x10_0000, 8 << 20), args(), &mut ram).unwrap_err();
    assert!(
        matches!(err, LoadError::OutsideRam { start: 0x10_0000, ram_size, .. } if ram_size == 4 << 20)
    );
    assert!(err.to_string().contains("does not fit in guest RAM"));
    // Fits exactly, but the command line after it does not.
    let err = loader::load(&simple_elf(0x10_0000, 3 << 20), args(), &mut ram).unwrap_err();
    assert!(matches!(err, LoadError::OutsideRam { .. }));
    // Over the multiboot information at 0x9000.
    let err = loader::load(&simple_elf(0x8000, 0x2000), args(), &mut ram).unwrap_err();
    assert_eq!(
        err,
        LoadError::OverlapsBootInfo {
            start: 0x8000,
            end: 0xb000
        }
    );
    // Wraps the 32-bit space.
    assert_eq!(
        loader::load(&simple_elf(0xffff_f000, 0x2000), args(), &mut ram).unwrap_err(),
        LoadError::SegmentWraps { index: 0 }
    );
    // RAM sizes QEMU's map cannot describe.
    let mut tiny = VecRam::new(MIB);
    assert_eq!(
        loader::load(&simple_elf(0x10_0000, 0x100), args(), &mut tiny).unwrap_err(),
        LoadError::UnsupportedRamSize {
            ram_size: MIB as u64
        }
    );
    assert!(ram.0.iter().all(|&b| b == 0xAA), "nothing written on error");
}

#[test]
fn aout_kludge_errors() {
    let mut ram = VecRam::new(4 * MIB);
    let load = |a: [u32; 5], tail: usize, ram: &mut VecRam| {
        let mut image = mb_header(0x1_0000, Some(a));
        image.extend(vec![0u8; tail]);
        loader::load(&image, args(), ram).unwrap_err()
    };
    assert_eq!(
        load([0x10_0000, 0x10_1000, 0, 0, 0], 0, &mut ram),
        LoadError::HeaderAddrBelowLoadAddr {
            header_addr: 0x10_0000,
            load_addr: 0x10_1000
        }
    );
    assert!(matches!(
        load([0x10_0010, 0x10_0000, 0, 0, 0], 0, &mut ram),
        LoadError::HeaderAddrBeforeFileStart {
            header_offset: 0,
            ..
        }
    ));
    assert!(matches!(
        load([0x10_0000, 0x10_0000, 0xf_0000, 0, 0], 0, &mut ram),
        LoadError::LoadEndBelowLoadAddr { .. }
    ));
    assert!(matches!(
        load([0x10_0000, 0x10_0000, 0x10_0020, 0x10_0010, 0], 0, &mut ram),
        LoadError::BssEndBelowLoadEnd { .. }
    ));
    let err = load([0x10_0000, 0x10_0000, 0x10_1000, 0, 0], 16, &mut ram);
    assert_eq!(
        err,
        LoadError::ImageTruncated {
            needed: 0x1000,
            available: 48
        }
    );
    assert!(err.to_string().contains("truncated"));
}

#[test]
fn memory_map_scales_with_ram_like_qemu() {
    // Recorded from QEMU 7.2 at -m 64 / 256 / 1024: usable from 1 MiB to 128 KiB below
    // the top of RAM, the rest fixed.
    for (mib, usable_len, upper) in [
        (64u64, 0x3ee_0000u64, 0xfb80u32),
        (256, 0xfee_0000, 0x3_fb80),
        (1024, 0x3fee_0000, 0xf_fb80),
    ] {
        let map = info::memory_map(mib << 20);
        assert_eq!(map[3].base, 0x10_0000);
        assert_eq!(map[3].len, usable_len);
        assert_eq!(map[4].base, (mib << 20) - 0x2_0000);
        assert_eq!(info::mem_lower_upper(mib << 20), (639, upper));
    }
}
