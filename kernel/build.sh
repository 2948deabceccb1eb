#!/usr/bin/env bash
# Builds the seL4 5.0.0 kernel (x86_64, pc99) out of tree for QEMU.
#
#   kernel/build.sh [CONFIG [OUT_DIR]]
#
# CONFIG names a directory under kernel/config/ holding our autoconf.h (default
# qemu-tcg); OUT_DIR defaults to build/kernel. Produces OUT_DIR/kernel.elf and
# OUT_DIR/kernel32.elf (the same image as ELF32, which QEMU's -kernel accepts).
#
# The kernel sources come from the `sel4-sys` 0.0.28 crate (its seL4/ directory is the
# complete 5.0.0 kernel), pinned in kernel/fetch/Cargo.lock and unpacked by cargo into
# its registry cache; they are read, never modified or copied into the repository.
# Idempotent: a rebuild with the same sources, configuration and flags is a no-op for
# make; a change to any of them starts from an empty build directory.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"
config="${1:-qemu-tcg}"
out="$(realpath -m "${2:-$repo/build/kernel}")"
venv="$repo/build/venv"
config_dir="$here/config/$config"
[ -f "$config_dir/autoconf.h" ] || { echo "kernel/build.sh: no $config_dir/autoconf.h" >&2; exit 2; }

# 1. The kernel sources, through cargo (download + checksum check against Cargo.lock).
src="$("$here/locate-sources.sh")"
echo "kernel: sources $src (seL4 $(cat "$src/VERSION"))"

# 2. The Python virtualenv for the kernel's generator scripts. They start with
# `#!/usr/bin/env python`, so the venv's bin/ (which has a `python`) goes first on PATH.
if ! "$venv/bin/python" -c 'import six, ply, tempita' >/dev/null 2>&1; then
    echo "kernel: creating the Python virtualenv in $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
export PATH="$venv/bin:$PATH"

# 3. The build. The kernel Makefile appends to CFLAGS, CPPFLAGS and DEFINES, so they are
# passed in the environment (on the make command line they would replace its values).
#  - gcc 12 turns two warnings of this older tree into errors: a packed-member address
#    in vspace.c and a false array-bounds positive on the BIOS data area in cmdline.c.
#  - -I of our config directory shadows the shipped include/plat/pc99/autoconf.h.
#  - CONFIG_PRINTING: the Makefile means to set it for DEBUG builds but misspells the
#    variable; the kernel boot log and seL4_DebugPutChar need it.
export CFLAGS="-Wno-address-of-packed-member -Wno-array-bounds"
export CPPFLAGS="-I$config_dir"
export DEFINES="CONFIG_PRINTING"
make_args=(-f "$src/Makefile" "SOURCE_ROOT=$src" ARCH=x86 SEL4_ARCH=x86_64 PLAT=pc99 DEBUG=1
    # tools/circular_includes.py does not understand gcc >= 10's line markers.
    CIRCULAR_INCLUDES=true)

# Start afresh whenever the inputs make cannot see change (our autoconf.h is outside
# the kernel's dependency lists; the flags are in the environment).
stamp="$(printf '%s\n' "$src" "$CFLAGS" "$CPPFLAGS" "$DEFINES" "${make_args[*]}" \
    | cat - "$config_dir/autoconf.h" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$out/.inputs" 2>/dev/null)" != "$stamp" ]; then
    rm -rf "$out"
    mkdir -p "$out"
fi

start=$(date +%s%N)
make -C "$out" --no-print-directory -s -j"$(nproc)" "${make_args[@]}" kernel.elf
echo "$stamp" >"$out/.inputs"

# QEMU's multiboot loader refuses ELF64 images.
objcopy -O elf32-i386 "$out/kernel.elf" "$out/kernel32.elf.tmp"
mv "$out/kernel32.elf.tmp" "$out/kernel32.elf"
echo "kernel: $out/kernel32.elf (config $config), make took $(( ($(date +%s%N) - start) / 1000000 )) ms"
