//! Whatever the bytes, the loader answers with a `LoadError` or a kernel that lies
//! inside guest RAM: it never panics and never writes outside RAM (`VecRam` would
//! refuse, and the loader must have refused first).

mod common;

use common::{elf32, mb_header, Ph, VecRam};
use proptest::prelude::*;
use vmm_server::loader::{self, BootArgs};

const RAM: usize = 4 << 20;

fn check(image: &[u8]) {
    let mut ram = VecRam::new(RAM);
    let args = BootArgs {
        kernel_name: "fuzz",
        append: "x=1",
    };
    if let Ok(k) = loader::load(image, args, &mut ram) {
        assert!(k.load_start < k.load_end && k.load_end <= RAM as u64);
        assert!(k.kernel_end <= k.load_end);
        assert_eq!(ram.u32_at(0x9500), 0x24f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        check(&bytes);
    }

    /// A valid header with arbitrary a.out-kludge addresses and flags, at an arbitrary
    /// aligned offset, in arbitrary surroundings.
    #[test]
    fn arbitrary_aout_headers(
        pre in 0usize..64,
        flags in any::<u32>(),
        addrs in proptest::array::uniform5(prop_oneof![any::<u32>(), 0u32..0x50_0000]),
        tail in proptest::collection::vec(any::<u8>(), 0..2048),
    ) {
        let mut image = vec![0u8; pre * 4];
        image.extend(mb_header(flags | 0x1_0000, Some(addrs)));
        image.extend(tail);
        check(&image);
    }

    /// ELF images with arbitrary program headers.
    #[test]
    fn arbitrary_elf_segments(
        segs in proptest::collection::vec(
            (any::<u32>(), prop_oneof![any::<u32>(), 0u32..0x50_0000], any::<u32>(), 0u32..0x10_0000, 0usize..64),
            1..5,
        ),
        entry in any::<u32>(),
        corrupt in proptest::option::of((0usize..200, any::<u8>())),
    ) {
        let segs: Vec<(Ph, Vec<u8>)> = segs
            .into_iter()
            .enumerate()
            .map(|(i, (vaddr, paddr, flags, memsz, len))| {
                let mut data = if i == 0 { mb_header(3, None) } else { Vec::new() };
                data.resize(data.len() + len, 0x90);
                (Ph { kind: 1, vaddr, paddr, memsz, flags }, data)
            })
            .collect();
        let mut image = elf32(entry, &segs);
        if let Some((at, b)) = corrupt {
            if at < image.len() {
                image[at] = b;
            }
        }
        check(&image);
    }
}
