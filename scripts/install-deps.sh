#!/usr/bin/env bash
# Installs what the build and the tests need on a fresh Debian machine. Idempotent and
# quick when everything is already there. Called by `make deps` (and so by `make test`
# and `make run`).
set -euo pipefail

need_apt=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need_apt+=(qemu-system-x86)
command -v xmllint >/dev/null 2>&1 || need_apt+=(libxml2-utils)
command -v objcopy >/dev/null 2>&1 || need_apt+=(binutils)
command -v make >/dev/null 2>&1 || need_apt+=(make)
command -v gcc >/dev/null 2>&1 || need_apt+=(gcc)
# The kernel build's virtualenv needs pip inside it. Debian ships the `venv` module with
# Python itself but `ensurepip` (which venv uses to install pip) only in python3-venv,
# so `import venv` alone would pass on a machine where `python3 -m venv` fails.
command -v python3 >/dev/null 2>&1 || need_apt+=(python3)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3-venv)

if [ ${#need_apt[@]} -gt 0 ]; then
    echo "install-deps: installing Debian packages: ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The bare-metal target for guests and seL4 PDs (rust-toolchain.toml lists it too;
# this covers a rustup that does not add targets to an already-installed toolchain).
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none \
        || rustup target add x86_64-unknown-none
fi
